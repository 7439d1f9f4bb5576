//! Consumer-group members for the workload: the classic protocol as a Kafka consumer speaks it
//! (FindCoordinator, JoinGroup with the member-id handshake, SyncGroup with the leader's range
//! assignment, Heartbeat, OffsetFetch, OffsetCommit, LeaveGroup), consuming what they are
//! assigned and committing their positions. Every poll, commit and committed-offset read goes
//! into the history, where the `invariants` checkers judge it (a commit acknowledged and then
//! forgotten is a `lost-commit`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use invariants::{Call, CommitResult, OpKind, Outcome};
use kafka_protocol::messages::{
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    sync_group_request::SyncGroupRequestAssignment,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::workload::{poll, Connector, Router, Shared, WorkloadConfig};

/// The workload's one consumer group.
pub const GROUP_ID: &str = "jepsen-group";
const SESSION_TIMEOUT_MS: i32 = 6_000;
const REBALANCE_TIMEOUT_MS: i32 = 5_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1_000);
const COMMIT_INTERVAL: Duration = Duration::from_millis(300);

const FIND_COORDINATOR_VERSION: i16 = 2;
const JOIN_GROUP_VERSION: i16 = 5;
const SYNC_GROUP_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const OFFSET_FETCH_VERSION: i16 = 7;
const OFFSET_COMMIT_VERSION: i16 = 7;
const LEAVE_GROUP_VERSION: i16 = 3;

// Kafka error codes the member reacts to.
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;

fn group_id() -> GroupId {
    GroupId(StrBytes::from_static_str(GROUP_ID))
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The coordinator's address, from FindCoordinator on any broker.
async fn find_coordinator<C: Connector>(router: &mut Router<C>, attempt: u32) -> Option<String> {
    let addr = router.any_broker(attempt);
    let request = FindCoordinatorRequest::default()
        .with_key(str_bytes(GROUP_ID))
        .with_key_type(0);
    let response = router
        .call(&addr, &request, FIND_COORDINATOR_VERSION)
        .await
        .ok()?;
    (response.error_code == 0).then(|| format!("{}:{}", response.host, response.port))
}

/// Reads the group's committed offsets for `partitions` and records the read.
pub(crate) async fn read_committed<C: Connector>(
    router: &mut Router<C>,
    shared: &Shared,
    process: u64,
    coordinator: &str,
    partitions: &[i32],
) -> Option<BTreeMap<i32, i64>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id())
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(str_bytes(&router.topic)))
            .with_partition_indexes(partitions.to_vec())]))
        .with_require_stable(true);
    let invoke = shared.borrow().now_ns();
    let response = router
        .call(coordinator, &request, OFFSET_FETCH_VERSION)
        .await
        .ok()?;
    if response.error_code != 0 {
        return None;
    }
    let mut offsets = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return None;
            }
            offsets.insert(p.partition_index, p.committed_offset);
        }
    }
    let mut s = shared.borrow_mut();
    let complete = s.now_ns();
    let topic = router.topic.clone();
    s.history.committed_offsets(
        process,
        invoke,
        complete,
        topic,
        offsets.iter().map(|(p, o)| (*p, *o)).collect(),
    );
    Some(offsets)
}

/// The leader's assignment: partitions dealt round-robin over the members sorted by id.
fn assign(members: &[String], partitions: i32) -> Vec<(String, Bytes)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut b = BytesMut::new();
            for p in (0..partitions).filter(|p| *p as usize % sorted.len() == i) {
                b.put_i32(p);
            }
            (m.clone(), b.freeze())
        })
        .collect()
}

fn decode_assignment(mut bytes: Bytes) -> Vec<i32> {
    let mut out = Vec::new();
    while bytes.remaining() >= 4 {
        out.push(bytes.get_i32());
    }
    out
}

/// Why the member left its consume loop.
enum Rejoin {
    /// Rejoin with the same member id.
    Keep,
    /// The coordinator forgot the member: rejoin from scratch.
    Reset,
    /// The coordinator moved or is unreachable: find it again.
    Lost,
}

impl Rejoin {
    /// Forgets what this says is no longer valid: the member id, or the coordinator.
    fn apply(self, member_id: &mut String, coordinator: &mut Option<String>) {
        match self {
            Rejoin::Keep => {}
            Rejoin::Reset => member_id.clear(),
            Rejoin::Lost => *coordinator = None,
        }
    }
}

fn rejoin_for(code: i16) -> Rejoin {
    match code {
        UNKNOWN_MEMBER_ID => Rejoin::Reset,
        NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS => Rejoin::Lost,
        _ => Rejoin::Keep,
    }
}

/// One group member, consuming and committing until `deadline`, then leaving the group.
pub(crate) async fn group_member<C: Connector>(
    connector: C,
    config: WorkloadConfig,
    shared: Shared,
    process: u64,
    deadline: Instant,
) {
    let mut router = Router::new(connector, &config, &format!("member-{process}"));
    {
        let mut s = shared.borrow_mut();
        let t = s.now_ns();
        s.history.push(
            process,
            t,
            OpKind::Subscribe {
                topic: config.topic.clone(),
            },
        );
    }
    let mut coordinator: Option<String> = None;
    let mut member_id = String::new();
    let mut attempt = 0u32;
    while Instant::now() < deadline {
        attempt += 1;
        let coord = match &coordinator {
            Some(c) => c.clone(),
            None => match find_coordinator(&mut router, attempt).await {
                Some(c) => {
                    coordinator = Some(c.clone());
                    c
                }
                None => {
                    shared
                        .borrow_mut()
                        .event(format!("m{process} no coordinator found"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let join = JoinGroupRequest::default()
            .with_group_id(group_id())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(None)
            .with_protocol_type(str_bytes("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(str_bytes("range"))
                .with_metadata(Bytes::from(config.topic.clone().into_bytes()))]);
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 + 3_000);
        let joined = match router
            .call_within(&coord, &join, JOIN_GROUP_VERSION, wait)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                shared.borrow_mut().event(format!("m{process} join: {e}"));
                coordinator = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if joined.error_code != 0 {
            shared
                .borrow_mut()
                .event(format!("m{process} join: error code {}", joined.error_code));
        }
        match joined.error_code {
            0 => {}
            MEMBER_ID_REQUIRED => {
                member_id = joined.member_id.to_string();
                continue;
            }
            code => {
                rejoin_for(code).apply(&mut member_id, &mut coordinator);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        member_id = joined.member_id.to_string();
        let generation = joined.generation_id;
        let assignments = if joined.leader.as_str() == member_id {
            let members: Vec<String> = joined
                .members
                .iter()
                .map(|m| m.member_id.to_string())
                .collect();
            assign(&members, config.partitions)
                .into_iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(&m))
                        .with_assignment(a)
                })
                .collect()
        } else {
            Vec::new()
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(group_id())
            .with_generation_id(generation)
            .with_member_id(str_bytes(&member_id))
            .with_protocol_type(Some(str_bytes("consumer")))
            .with_protocol_name(Some(str_bytes("range")))
            .with_assignments(assignments);
        let synced = match router
            .call_within(&coord, &sync, SYNC_GROUP_VERSION, wait)
            .await
        {
            Ok(r) => r,
            Err(_) => {
                coordinator = None;
                continue;
            }
        };
        if synced.error_code != 0 {
            rejoin_for(synced.error_code).apply(&mut member_id, &mut coordinator);
            continue;
        }
        let mine = decode_assignment(synced.assignment.clone());
        shared.borrow_mut().event(format!(
            "m{process} generation {generation} assigned {mine:?}"
        ));
        match consume(
            &mut router,
            &shared,
            process,
            &coord,
            &member_id,
            generation,
            &mine,
            deadline,
        )
        .await
        {
            None => {
                // Deadline: leave so the group settles before the final read.
                let leave = LeaveGroupRequest::default()
                    .with_group_id(group_id())
                    .with_members(vec![
                        MemberIdentity::default().with_member_id(str_bytes(&member_id))
                    ]);
                let _ = router.call(&coord, &leave, LEAVE_GROUP_VERSION).await;
                return;
            }
            Some(rejoin) => rejoin.apply(&mut member_id, &mut coordinator),
        }
    }
}

/// Consumes `partitions` from their committed offsets, heartbeating and committing, until the
/// group rebalances (returns how to rejoin) or the deadline passes (returns None).
#[allow(clippy::too_many_arguments)]
async fn consume<C: Connector>(
    router: &mut Router<C>,
    shared: &Shared,
    process: u64,
    coordinator: &str,
    member_id: &str,
    generation: i32,
    partitions: &[i32],
    deadline: Instant,
) -> Option<Rejoin> {
    let committed = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        match read_committed(router, shared, process, coordinator, partitions).await {
            Some(c) => c,
            None => return Some(Rejoin::Lost),
        }
    };
    let mut positions: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|p| (*p, committed.get(p).copied().unwrap_or(-1).max(0)))
        .collect();
    let mut last_committed = positions.clone();
    let mut next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        if now >= next_heartbeat {
            next_heartbeat = now + HEARTBEAT_INTERVAL;
            let heartbeat = HeartbeatRequest::default()
                .with_group_id(group_id())
                .with_generation_id(generation)
                .with_member_id(str_bytes(member_id));
            match router
                .call(coordinator, &heartbeat, HEARTBEAT_VERSION)
                .await
            {
                Ok(r) if r.error_code == 0 => {}
                Ok(r) => return Some(rejoin_for(r.error_code)),
                Err(_) => return Some(Rejoin::Lost),
            }
        }
        if now >= next_commit && positions != last_committed {
            next_commit = now + COMMIT_INTERVAL;
            let offsets: Vec<(i32, i64)> = positions.iter().map(|(p, o)| (*p, *o)).collect();
            match commit(
                router,
                shared,
                process,
                coordinator,
                member_id,
                generation,
                &offsets,
            )
            .await
            {
                Ok(()) => last_committed = positions.clone(),
                Err(rejoin) => return Some(rejoin),
            }
        }
        if positions.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            poll(router, shared, process, &mut positions, 100, None).await;
        }
    }
}

/// Commits `offsets` for this generation and records the commit with its honest outcome.
async fn commit<C: Connector>(
    router: &mut Router<C>,
    shared: &Shared,
    process: u64,
    coordinator: &str,
    member_id: &str,
    generation: i32,
    offsets: &[(i32, i64)],
) -> Result<(), Rejoin> {
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str_bytes(member_id))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(str_bytes(&router.topic)))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )]);
    let op = {
        let mut s = shared.borrow_mut();
        let t = s.now_ns();
        s.history.invoke(
            process,
            t,
            Call::Commit {
                topic: router.topic.clone(),
                offsets: offsets.to_vec(),
            },
        )
    };
    let result = router
        .call(coordinator, &request, OFFSET_COMMIT_VERSION)
        .await;
    let (outcome, verdict) = match result {
        Err(e) => (
            CommitResult::Indeterminate(e.to_string()),
            Err(Rejoin::Lost),
        ),
        Ok(r) => {
            let code = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            let definite = code != NOT_COORDINATOR || !router.not_coordinator_may_write;
            match code {
                0 => (CommitResult::Ok, Ok(())),
                // Refused before anything was written: fenced, or not the coordinator.
                ILLEGAL_GENERATION
                | UNKNOWN_MEMBER_ID
                | REBALANCE_IN_PROGRESS
                | NOT_COORDINATOR
                    if definite =>
                {
                    (
                        CommitResult::Failed(format!("error code {code}")),
                        Err(rejoin_for(code)),
                    )
                }
                // Anything else may or may not have been written: COORDINATOR_NOT_AVAILABLE
                // answers a commit whose record was appended but not fsynced, and a crash may
                // keep that record.
                code => (
                    CommitResult::Indeterminate(format!("error code {code}")),
                    Err(rejoin_for(code)),
                ),
            }
        }
    };
    let mut s = shared.borrow_mut();
    let t = s.now_ns();
    s.event(format!("m{process} commit {offsets:?}: {outcome:?}"));
    let _ = s.history.complete(op, t, Outcome::Commit(outcome));
    verdict
}

/// After the run: the group's committed offsets for every partition, read by a fresh client
/// once the members have left. Retries until it gets an answer or `deadline` passes.
pub(crate) async fn final_committed<C: Connector>(
    connector: C,
    config: WorkloadConfig,
    shared: Shared,
    process: u64,
    deadline: Instant,
) -> bool {
    let mut router = Router::new(connector, &config, &format!("offsets-{process}"));
    let partitions: Vec<i32> = (0..config.partitions).collect();
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        if let Some(coordinator) = find_coordinator(&mut router, attempt).await {
            if read_committed(&mut router, &shared, process, &coordinator, &partitions)
                .await
                .is_some()
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
