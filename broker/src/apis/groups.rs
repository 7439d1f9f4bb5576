//! Consumer-group APIs: FindCoordinator answers with the coordinator (a single broker: itself;
//! a cluster: the leader of the `__consumer_offsets` partition, created on first use);
//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete,
//! DescribeGroups, ListGroups and DeleteGroups go to the group coordinator, which answers when
//! the rebalance or the persistence they wait for completes.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::group::{GroupRequest, GroupResponse};
use crate::server::group_manager::OFFSETS_TOPIC;
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let (node, host, port, error) = self.coordinator_address();
        let node = BrokerId(node);
        let host = StrBytes::from_string(host);
        // Group (0) and transaction (1) keys both live here; transactions themselves are refused
        // later, by InitProducerId, with a clear error.
        let known_type = matches!(request.key_type, 0 | 1);
        if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let c = Coordinator::default().with_key(key);
                    if let (true, Some(error)) = (known_type, error) {
                        c.with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code(error))
                    } else if known_type {
                        c.with_node_id(node).with_host(host.clone()).with_port(port)
                    } else {
                        c.with_node_id(BrokerId(-1))
                            .with_port(-1)
                            .with_error_code(code(ResponseError::InvalidRequest))
                            .with_error_message(Some(StrBytes::from_static_str(
                                "unknown coordinator key type",
                            )))
                    }
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        if !known_type {
            let mut r = FindCoordinatorResponse::default()
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                r = r.with_error_message(Some(StrBytes::from_static_str(
                    "unknown coordinator key type",
                )));
            }
            return r;
        }
        if let Some(error) = error {
            let mut r = FindCoordinatorResponse::default()
                .with_error_code(code(error))
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                r = r.with_error_message(Some(StrBytes::from_static_str(
                    "the group coordinator is not available yet",
                )));
            }
            return r;
        }
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(port)
    }

    /// (node, host, port) of the group coordinator, or the error to answer with.
    fn coordinator_address(&self) -> (i32, String, i32, Option<ResponseError>) {
        let Some(view) = &self.cluster else {
            let a = &self.advertised;
            return (a.node_id, a.host.clone(), a.port, None);
        };
        let image = view.image();
        let leader = image
            .topic_ids
            .get(OFFSETS_TOPIC)
            .and_then(|id| image.topics.get(id))
            .and_then(|t| t.partitions.first())
            .map(|p| p.leader);
        match leader {
            None => {
                self.create_offsets_topic(view);
                (
                    -1,
                    String::new(),
                    -1,
                    Some(ResponseError::CoordinatorNotAvailable),
                )
            }
            Some(l) => match image.brokers.get(&l).filter(|b| !b.fenced) {
                Some(b) => (l, b.host.clone(), i32::from(b.port), None),
                None => (
                    -1,
                    String::new(),
                    -1,
                    Some(ResponseError::CoordinatorNotAvailable),
                ),
            },
        }
    }

    /// Asks the controller for the offsets topic (one partition, default replication, kept
    /// forever), in the background.
    fn create_offsets_topic(&self, view: &std::sync::Arc<crate::cluster::ClusterView>) {
        let request = crate::cluster::controller::ControllerRequest::CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: 1,
            replication_factor: self.replicas.config().cluster.default_replication_factor as u16,
            configs: vec![
                ("retention.ms".into(), "-1".into()),
                ("retention.bytes".into(), "-1".into()),
            ],
            assignments: Vec::new(),
        };
        let view = std::sync::Arc::clone(view);
        tokio::spawn(async move {
            let r = view.controller_request(request).await;
            tracing::info!(error = ?r.error, "asked for the offsets topic");
        });
    }

    /// Hands a group request to the coordinator now; the reply waits for its answer.
    pub(super) fn group_request(
        &self,
        version: i16,
        client_id: &str,
        client_host: &str,
        request: GroupRequest,
    ) -> Reply {
        // Kept to answer NOT_COORDINATOR if this broker is not (or stops being) the
        // coordinator before the answer comes; a single broker always coordinates.
        let fallback = self.cluster.as_ref().map(|_| request.clone());
        let include_operations =
            matches!(&request, GroupRequest::Describe(r) if r.include_authorized_operations);
        let answer = self.groups.submit(version, client_id, client_host, request);
        Reply::Later(Box::pin(async move {
            match (answer.await, fallback) {
                (Ok(GroupResponse::Describe(mut r)), _) => {
                    super::acls::describe_groups_operations(&mut r, include_operations);
                    ResponseKind::DescribeGroups(r)
                }
                (Ok(response), _) => group_response(response),
                (Err(_), Some(request)) => group_response(crate::group::coordinator_error(
                    &request,
                    version,
                    ResponseError::NotCoordinator,
                )),
                // A single broker's coordinator answers every request it accepts, and lives as
                // long as any connection; a dropped answer is a broken contract.
                (Err(_), None) => {
                    unreachable!("group coordinator dropped a request without answering")
                }
            }
        }))
    }
}

fn group_response(response: GroupResponse) -> ResponseKind {
    match response {
        GroupResponse::Join(r) => ResponseKind::JoinGroup(r),
        GroupResponse::Sync(r) => ResponseKind::SyncGroup(r),
        GroupResponse::Heartbeat(r) => ResponseKind::Heartbeat(r),
        GroupResponse::Leave(r) => ResponseKind::LeaveGroup(r),
        GroupResponse::OffsetCommit(r) => ResponseKind::OffsetCommit(r),
        GroupResponse::OffsetFetch(r) => ResponseKind::OffsetFetch(r),
        GroupResponse::OffsetDelete(r) => ResponseKind::OffsetDelete(r),
        GroupResponse::Describe(r) => ResponseKind::DescribeGroups(r),
        GroupResponse::List(r) => ResponseKind::ListGroups(r),
        GroupResponse::Delete(r) => ResponseKind::DeleteGroups(r),
    }
}
