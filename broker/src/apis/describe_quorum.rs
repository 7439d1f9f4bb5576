//! DescribeQuorum: the metadata quorum as its leader sees it, as `kafka-metadata-quorum.sh
//! describe --status / --replication` and AdminClient.describeMetadataQuorum ask for it.
//!
//! Any broker answers: it asks the quorum leader (`ControllerRequest::DescribeQuorum`, answered
//! by the leader's quorum shell from its `RaftCore`) and relays the leader id, epoch, high
//! watermark and, per voter, its log end and its last fetch and caught-up times (milliseconds
//! since the Unix epoch, -1 where unknown). Observers are the broker-only nodes
//! (`--process-roles broker`) that fetched the metadata log within the last five minutes, with
//! the same fields. Version 2 also lists each voter's controller endpoint from `--voters`. The
//! request must name `__cluster_metadata` partition 0 alone, as Kafka requires; a standalone
//! broker (no `--voters`) has no quorum to describe.

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::controller_error;
use super::{code, KafkaApis, Reply};
use crate::cluster::controller::{ControllerError, ControllerRequest};
use crate::cluster::METADATA_DIR;
use crate::config::Voter;
use crate::raft::{QuorumDescription, ReplicaDescription};
use crate::storage::Storage;

/// Kafka's listener name for the controller endpoints in version 2's node list.
const CONTROLLER_LISTENER: &str = "CONTROLLER";

fn metadata_topic() -> TopicName {
    TopicName(StrBytes::from_static_str(METADATA_DIR))
}

/// The answer when the request cannot be served: `error` on every partition it named (or on
/// `__cluster_metadata` 0 when it named none), with `message` from version 2.
fn partition_errors(
    request: &DescribeQuorumRequest,
    version: i16,
    error: ResponseError,
    message: String,
) -> DescribeQuorumResponse {
    let message = (version >= 2).then(|| StrBytes::from_string(message));
    let row = |index: i32| {
        PartitionData::default()
            .with_partition_index(index)
            .with_error_code(code(error))
            .with_error_message(message.clone())
            .with_leader_id(BrokerId(-1))
            .with_leader_epoch(-1)
            .with_high_watermark(-1)
    };
    let mut topics: Vec<TopicData> = request
        .topics
        .iter()
        .map(|t| {
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| row(p.partition_index))
                        .collect(),
                )
        })
        .collect();
    if topics.is_empty() {
        topics.push(
            TopicData::default()
                .with_topic_name(metadata_topic())
                .with_partitions(vec![row(0)]),
        );
    }
    DescribeQuorumResponse::default().with_topics(topics)
}

/// The answer at `version`: fetch and caught-up times from version 1, the voters' endpoints
/// from version 2 (a field a version lacks must keep its default, or the encoding fails).
fn described(quorum: QuorumDescription, voters: &[Voter], version: i16) -> DescribeQuorumResponse {
    let states = |replicas: &[ReplicaDescription]| -> Vec<ReplicaState> {
        replicas
            .iter()
            .map(|v| {
                let state = ReplicaState::default()
                    .with_replica_id(BrokerId(v.id))
                    .with_log_end_offset(v.log_end_offset);
                if version >= 1 {
                    state
                        .with_last_fetch_timestamp(v.last_fetch_ms)
                        .with_last_caught_up_timestamp(v.last_caught_up_ms)
                } else {
                    state
                }
            })
            .collect()
    };
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(quorum.leader))
        .with_leader_epoch(quorum.epoch)
        .with_high_watermark(quorum.high_watermark)
        .with_current_voters(states(&quorum.voters))
        .with_observers(states(&quorum.observers));
    let nodes = voters
        .iter()
        .filter(|_| version >= 2)
        .map(|v| {
            let listener = Listener::default()
                .with_name(StrBytes::from_static_str(CONTROLLER_LISTENER))
                .with_host(StrBytes::from_string(v.host.clone()))
                .with_port(v.port);
            Node::default()
                .with_node_id(BrokerId(v.id))
                .with_listeners(vec![listener])
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(metadata_topic())
            .with_partitions(vec![partition])])
        .with_nodes(nodes)
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn describe_quorum(&self, request: DescribeQuorumRequest, version: i16) -> Reply {
        let Some(view) = self.cluster.clone() else {
            let message = "this broker runs standalone (no --voters): it has no metadata quorum";
            let response = DescribeQuorumResponse::default()
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message((version >= 2).then_some(StrBytes::from_static_str(message)));
            return Reply::Now(ResponseKind::DescribeQuorum(response));
        };
        let only_metadata = matches!(request.topics.as_slice(),
            [t] if t.topic_name.as_str() == METADATA_DIR
                && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0));
        if !only_metadata {
            let message = format!("only {METADATA_DIR} partition 0 has a quorum");
            let response = partition_errors(
                &request,
                version,
                ResponseError::UnknownTopicOrPartition,
                message,
            );
            return Reply::Now(ResponseKind::DescribeQuorum(response));
        }
        let voters = self.replicas.config().cluster.voters.clone();
        Reply::Later(Box::pin(async move {
            let r = view
                .controller_request(ControllerRequest::DescribeQuorum)
                .await;
            let response = match (r.error, r.quorum) {
                (ControllerError::None, Some(quorum)) => described(quorum, &voters, version),
                (ControllerError::NotController, _) => partition_errors(
                    &request,
                    version,
                    ResponseError::NotLeaderOrFollower,
                    "the metadata quorum has no leader this broker can reach; retry".into(),
                ),
                (e, _) => {
                    let (error, message) = controller_error(&e);
                    partition_errors(&request, version, error, message)
                }
            };
            ResponseKind::DescribeQuorum(response)
        }))
    }
}
