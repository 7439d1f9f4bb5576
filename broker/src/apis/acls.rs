//! DescribeAcls, CreateAcls and DeleteAcls, answered as Kafka answers them with no authorizer
//! configured: SECURITY_DISABLED, and nothing stored.
//!
//! This broker has no authentication (every client is the anonymous principal) and so no
//! authorizer; an ACL could be neither stored meaningfully nor enforced. A client that manages
//! ACLs (`kafka-acls.sh`, AdminClient's `describeAcls`/`createAcls`/`deleteAcls`, librdkafka's,
//! kafka-python's, Sarama's) gets Kafka's answer for that case instead of a closed connection:
//! one error on a describe, one per creation and one per delete filter, so a client can pair
//! each result with what it asked. No ACL is ever listed or matched.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
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
