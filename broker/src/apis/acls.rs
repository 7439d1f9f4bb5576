//! DescribeAcls, CreateAcls and DeleteAcls, answered as Kafka answers them with no authorizer
//! configured: SECURITY_DISABLED, and nothing stored.
//!
//! This broker has no authentication (every client is the anonymous principal) and so no
//! authorizer; an ACL could be neither stored meaningfully nor enforced. A client that manages
//! ACLs (`kafka-acls.sh`, AdminClient's `describeAcls`/`createAcls`/`deleteAcls`, librdkafka's,
//! kafka-python's, Sarama's) gets Kafka's answer for that case instead of a closed connection:
//! one error on a describe, one per creation and one per delete filter, so a client can pair
//! each result with what it asked. No ACL is ever listed or matched.
//!
//! A client may also ask what it is allowed to do with a topic, a group or the cluster
//! (Metadata v8+, DescribeCluster, DescribeGroups v3+; DescribeTopicPartitions always says).
//! With no authorizer everything is allowed, so the answer is every operation Kafka defines for
//! that kind of resource, as Kafka answers without an authorizer; a client that did not ask gets
//! Kafka's "not given" value, `i32::MIN`. kafka-python asks on every admin Metadata and
//! DescribeGroups call and cannot read `i32::MIN` as a set of operations.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse, DescribeClusterResponse, DescribeGroupsResponse,
    DescribeTopicPartitionsResponse, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::code;

/// What every ACL answer says, in the error message clients print.
const NO_AUTHORIZER: &str =
    "no authorizer is configured on this broker: ACLs are neither stored nor enforced";

fn no_authorizer() -> Option<StrBytes> {
    Some(StrBytes::from_static_str(NO_AUTHORIZER))
}

/// DescribeAcls: SECURITY_DISABLED, no resources.
pub fn describe_acls(_request: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(code(ResponseError::SecurityDisabled))
        .with_error_message(no_authorizer())
}

/// CreateAcls: SECURITY_DISABLED for each creation, in the order asked.
pub fn create_acls(request: CreateAclsRequest) -> CreateAclsResponse {
    let results: Vec<AclCreationResult> = request
        .creations
        .iter()
        .map(|_| {
            AclCreationResult::default()
                .with_error_code(code(ResponseError::SecurityDisabled))
                .with_error_message(no_authorizer())
        })
        .collect();
    debug_assert_eq!(results.len(), request.creations.len());
    CreateAclsResponse::default().with_results(results)
}

/// DeleteAcls: SECURITY_DISABLED for each filter, in the order asked, with nothing matched.
pub fn delete_acls(request: DeleteAclsRequest) -> DeleteAclsResponse {
    let results: Vec<DeleteAclsFilterResult> = request
        .filters
        .iter()
        .map(|_| {
            DeleteAclsFilterResult::default()
                .with_error_code(code(ResponseError::SecurityDisabled))
                .with_error_message(no_authorizer())
        })
        .collect();
    debug_assert_eq!(results.len(), request.filters.len());
    DeleteAclsResponse::default().with_filter_results(results)
}

/// Kafka's ACL operation codes (`AclOperation`) used in authorized-operation bit sets.
const READ: u8 = 3;
const WRITE: u8 = 4;
const CREATE: u8 = 5;
const DELETE: u8 = 6;
const ALTER: u8 = 7;
const DESCRIBE: u8 = 8;
const CLUSTER_ACTION: u8 = 9;
const DESCRIBE_CONFIGS: u8 = 10;
const ALTER_CONFIGS: u8 = 11;
const IDEMPOTENT_WRITE: u8 = 12;

/// A set of operations as Kafka's 32-bit field: bit `n` for operation code `n`.
const fn bits(operations: &[u8]) -> i32 {
    let mut field = 0i32;
    let mut i = 0;
    while i < operations.len() {
        assert!(
            operations[i] < 31,
            "an operation code is a bit below the sign bit"
        );
        field |= 1 << operations[i];
        i += 1;
    }
    field
}

/// Every operation Kafka defines on a topic.
pub const TOPIC_OPERATIONS: i32 = bits(&[
    READ,
    WRITE,
    CREATE,
    DESCRIBE,
    DELETE,
    ALTER,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
]);
/// Every operation Kafka defines on a group that this broker serves (group configs, KIP-848's,
/// are not built, so not their operations).
pub const GROUP_OPERATIONS: i32 = bits(&[READ, DESCRIBE, DELETE]);
/// Every operation Kafka defines on the cluster.
pub const CLUSTER_OPERATIONS: i32 = bits(&[
    CREATE,
    CLUSTER_ACTION,
    DESCRIBE_CONFIGS,
    ALTER_CONFIGS,
    IDEMPOTENT_WRITE,
    ALTER,
    DESCRIBE,
]);
/// Kafka's value for authorized operations nobody asked for.
pub const NOT_ASKED: i32 = i32::MIN;

/// Metadata: each topic's operations and (v8 to v10, the versions with the field) the
/// cluster's, where the request asked for them. Only those versions can ask, so a field is
/// never set at a version that lacks it.
pub fn metadata_operations(
    response: &mut MetadataResponse,
    include_topics: bool,
    include_cluster: bool,
) {
    if include_topics {
        for t in &mut response.topics {
            t.topic_authorized_operations = TOPIC_OPERATIONS;
        }
    }
    if include_cluster {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
}

/// DescribeCluster: the cluster's operations where the request asked for them.
pub fn describe_cluster_operations(response: &mut DescribeClusterResponse, include: bool) {
    if include {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS;
    }
}

/// DescribeTopicPartitions has no flag: every topic described gets its operations.
pub fn describe_topic_partitions_operations(response: &mut DescribeTopicPartitionsResponse) {
    for t in &mut response.topics {
        t.topic_authorized_operations = if t.error_code == 0 {
            TOPIC_OPERATIONS
        } else {
            NOT_ASKED
        };
    }
}

/// DescribeGroups: each group described without error gets its operations, where the request
/// asked for them.
pub fn describe_groups_operations(response: &mut DescribeGroupsResponse, include: bool) {
    if include {
        for g in response.groups.iter_mut().filter(|g| g.error_code == 0) {
            g.authorized_operations = GROUP_OPERATIONS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;

    const SECURITY_DISABLED: i16 = 54;

    #[test]
    fn a_describe_is_refused_as_kafka_refuses_it_without_an_authorizer() {
        let r = describe_acls(DescribeAclsRequest::default());
        assert_eq!(r.error_code, SECURITY_DISABLED);
        assert!(r.error_message.is_some());
        assert!(r.resources.is_empty());
    }

    /// The sets are Kafka's for each resource type, as its codes: topic READ(3) WRITE(4)
    /// CREATE(5) DELETE(6) ALTER(7) DESCRIBE(8) DESCRIBE_CONFIGS(10) ALTER_CONFIGS(11); group
    /// READ DELETE DESCRIBE; cluster CREATE ALTER DESCRIBE CLUSTER_ACTION(9) DESCRIBE_CONFIGS
    /// ALTER_CONFIGS IDEMPOTENT_WRITE(12).
    #[test]
    fn authorized_operations_are_kafkas_sets_without_the_sign_bit() {
        let set = |field: i32| {
            (0..32)
                .filter(|b| field & (1 << b) != 0)
                .collect::<Vec<_>>()
        };
        assert_eq!(set(TOPIC_OPERATIONS), vec![3, 4, 5, 6, 7, 8, 10, 11]);
        assert_eq!(set(GROUP_OPERATIONS), vec![3, 6, 8]);
        assert_eq!(set(CLUSTER_OPERATIONS), vec![5, 7, 8, 9, 10, 11, 12]);
        assert_eq!(set(NOT_ASKED), vec![31]);
    }

    #[test]
    fn operations_are_given_only_where_asked() {
        use kafka_protocol::messages::describe_groups_response::DescribedGroup;
        use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
        let topics = vec![MetadataResponseTopic::default(); 2];
        let mut m = MetadataResponse::default().with_topics(topics);
        metadata_operations(&mut m, false, false);
        assert_eq!(m.cluster_authorized_operations, NOT_ASKED);
        assert!(m
            .topics
            .iter()
            .all(|t| t.topic_authorized_operations == NOT_ASKED));
        metadata_operations(&mut m, true, false);
        assert!(m
            .topics
            .iter()
            .all(|t| t.topic_authorized_operations == TOPIC_OPERATIONS));
        assert_eq!(m.cluster_authorized_operations, NOT_ASKED);
        metadata_operations(&mut m, false, true);
        assert_eq!(m.cluster_authorized_operations, CLUSTER_OPERATIONS);

        let groups = vec![
            DescribedGroup::default(),
            DescribedGroup::default().with_error_code(16),
        ];
        let mut g = DescribeGroupsResponse::default().with_groups(groups);
        describe_groups_operations(&mut g, false);
        assert!(g
            .groups
            .iter()
            .all(|g| g.authorized_operations == NOT_ASKED));
        describe_groups_operations(&mut g, true);
        let got: Vec<i32> = g.groups.iter().map(|g| g.authorized_operations).collect();
        assert_eq!(
            got,
            vec![GROUP_OPERATIONS, NOT_ASKED],
            "not for a group in error"
        );
    }

    #[test]
    fn each_creation_and_each_delete_filter_gets_its_own_refusal() {
        let creations = vec![AclCreation::default(); 3];
        let r = create_acls(CreateAclsRequest::default().with_creations(creations));
        assert_eq!(r.results.len(), 3);
        assert!(r.results.iter().all(|c| c.error_code == SECURITY_DISABLED));

        let filters = vec![DeleteAclsFilter::default(); 2];
        let r = delete_acls(DeleteAclsRequest::default().with_filters(filters));
        assert_eq!(r.filter_results.len(), 2);
        assert!(r
            .filter_results
            .iter()
            .all(|f| f.error_code == SECURITY_DISABLED && f.matching_acls.is_empty()));

        assert!(create_acls(CreateAclsRequest::default()).results.is_empty());
        assert!(delete_acls(DeleteAclsRequest::default())
            .filter_results
            .is_empty());
    }
}
