//! The GroupCoordinator: Kafka's classic consumer-group protocol as a sans-IO state machine.
//!
//! The coordinator owns every consumer group hosted by this broker: membership (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup), committed offsets (OffsetCommit, OffsetFetch,
//! OffsetDelete) and administration (DescribeGroups, ListGroups, DeleteGroups). It never reads a
//! clock, sleeps, spawns or touches a file: time comes in as `now_ms`, member ids come from a
//! counter and a seed, and what must survive a restart leaves as [`GroupRecord`]s that the shell
//! appends durably and acknowledges with [`GroupCoordinator::persisted`].
//!
//! - [`coordinator`]: [`GroupCoordinator`], the entry points, request validation, the persist
//!   waiters and the timer index.
//! - [`group`]: one [`group::Group`]: its state machine (Empty → PreparingRebalance →
//!   CompletingRebalance → Stable), members, rebalance and its invariants.
//! - [`record`]: [`GroupRecord`], what is persisted, and how replay rebuilds state from it.
//! - [`harness`]: [`harness::GroupHarness`], simulated consumers, crashes and persist faults
//!   around a coordinator, checking user-visible guarantees (tests, fuzzing, `sim`).
//!
//! Every request handed to [`GroupCoordinator::handle`] produces exactly one response through
//! [`GroupCoordinator::poll_response`], possibly much later (a JoinGroup waits for the rebalance,
//! a follower's SyncGroup for the leader's assignment, an OffsetCommit for `persisted`).

pub mod coordinator;
#[allow(clippy::module_inception)] // Kafka's noun: a group inside the group coordinator
pub mod group;
pub mod harness;
pub mod record;
#[cfg(test)]
mod tests;

pub use coordinator::GroupCoordinator;
pub use record::{GroupRecord, MemberRecord};

use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};

/// The shell's handle on one request; echoed with its response.
pub type RequestId = u64;

/// The position of a [`GroupRecord`] in the persist stream; increasing from 1.
pub type PersistId = u64;

/// Persist waiters (responses held until their records are durable) beyond this are refused
/// with COORDINATOR_NOT_AVAILABLE instead of queued.
pub const PERSIST_WAITERS_MAX: usize = 65_536;

/// The limits and timings of the coordinator (Kafka's `group.*` broker settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`: how long a group leaving Empty waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`: members (including members told MEMBER_ID_REQUIRED) per group.
    pub members_max: usize,
    /// Groups hosted by this coordinator.
    pub groups_max: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: 1_000,
            groups_max: 100_000,
            offset_metadata_bytes_max: 4_096,
        }
    }
}

/// A request the coordinator answers, as decoded by the protocol layer.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupRequest {
    Join(JoinGroupRequest),
    Sync(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    OffsetDelete(OffsetDeleteRequest),
    Describe(DescribeGroupsRequest),
    List(ListGroupsRequest),
    Delete(DeleteGroupsRequest),
}

/// The response to a [`GroupRequest`], filled for the request's API version.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupResponse {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    OffsetDelete(OffsetDeleteResponse),
    Describe(DescribeGroupsResponse),
    List(ListGroupsResponse),
    Delete(DeleteGroupsResponse),
}

/// The answer of a broker that is not (or no longer) the group's coordinator: every group,
/// topic and partition of `request` gets `error` (NOT_COORDINATOR or
/// COORDINATOR_NOT_AVAILABLE), so the client looks the coordinator up again.
pub fn coordinator_error(
    request: &GroupRequest,
    version: i16,
    error: kafka_protocol::ResponseError,
) -> GroupResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    use kafka_protocol::messages::describe_groups_response::DescribedGroup;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
    let code = error.code();
    match request {
        GroupRequest::Join(r) => {
            GroupResponse::Join(group::join_error(version, error, r.member_id.as_str()))
        }
        GroupRequest::Sync(_) => GroupResponse::Sync(group::sync_error(error)),
        GroupRequest::Heartbeat(_) => {
            GroupResponse::Heartbeat(HeartbeatResponse::default().with_error_code(code))
        }
        GroupRequest::Leave(_) => {
            GroupResponse::Leave(LeaveGroupResponse::default().with_error_code(code))
        }
        GroupRequest::OffsetCommit(r) => GroupResponse::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                r.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        ),
        GroupRequest::OffsetFetch(r) => {
            let mut response = OffsetFetchResponse::default().with_error_code(code);
            if version >= 8 {
                response = response.with_groups(
                    r.groups
                        .iter()
                        .map(|g| {
                            OffsetFetchResponseGroup::default()
                                .with_group_id(g.group_id.clone())
                                .with_error_code(code)
                        })
                        .collect(),
                );
            }
            GroupResponse::OffsetFetch(response)
        }
        GroupRequest::OffsetDelete(_) => {
            GroupResponse::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code))
        }
        GroupRequest::Describe(r) => GroupResponse::Describe(
            DescribeGroupsResponse::default().with_groups(
                r.groups
                    .iter()
                    .map(|g| {
                        DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
        GroupRequest::List(_) => {
            GroupResponse::List(ListGroupsResponse::default().with_error_code(code))
        }
        GroupRequest::Delete(r) => GroupResponse::Delete(
            DeleteGroupsResponse::default().with_results(
                r.groups_names
                    .iter()
                    .map(|g| {
                        DeletableGroupResult::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            ),
        ),
    }
}
