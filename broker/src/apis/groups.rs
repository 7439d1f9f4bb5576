//! Consumer-group APIs: FindCoordinator answers with this broker (it coordinates every group);
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
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let node = BrokerId(self.advertised.node_id);
        let host = StrBytes::from_string(self.advertised.host.clone());
        // Group (0) and transaction (1) keys both live here; transactions themselves are refused
        // later, by InitProducerId, with a clear error.
        let known_type = matches!(request.key_type, 0 | 1);
        if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let c = Coordinator::default().with_key(key);
                    if known_type {
                        c.with_node_id(node)
                            .with_host(host.clone())
                            .with_port(self.advertised.port)
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
        FindCoordinatorResponse::default()
            .with_node_id(node)
            .with_host(host)
            .with_port(self.advertised.port)
    }

    /// Hands a group request to the coordinator now; the reply waits for its answer.
    pub(super) fn group_request(
        &self,
        version: i16,
        client_id: &str,
        client_host: &str,
        request: GroupRequest,
    ) -> Reply {
        let answer = self.groups.submit(version, client_id, client_host, request);
        Reply::Later(Box::pin(async move {
            match answer.await {
                Ok(response) => group_response(response),
                // The coordinator answers every request it accepts, and the manager lives as long
                // as any connection; a dropped answer is a broken contract, like an assertion.
                Err(_) => unreachable!("group coordinator dropped a request without answering"),
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
