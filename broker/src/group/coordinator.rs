//! [`GroupCoordinator`]: the entry points of the group coordinator core.
//!
//! It resolves requests to groups (creating a group on its first JoinGroup or standalone
//! OffsetCommit), validates what is group-independent, and keeps three things a [`Group`] cannot:
//!
//! - the **outbox** ([`Outbox`]): responses ready to send, records to persist, and persist
//!   waiters — responses (or effects) held until `persisted(id)` covers their records;
//! - the **timer index**: `(deadline, group)` for every group with an armed timer, so `tick` and
//!   `poll_timeout` never scan all groups;
//! - **committed offsets in flight**: an OffsetCommit's offsets are applied to the group only once
//!   persisted (a failed persist answers COORDINATOR_NOT_AVAILABLE and applies nothing).
//!
//! Ordering with deletes: OffsetDelete and DeleteGroups strip the in-flight offsets they cover, so
//! memory agrees with a replay of the log (where the tombstone follows the offset record).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use super::group::{
    join_error, str_bytes, sync_error, CommittedOffset, Group, GroupState, JoinParams, Parked,
};
use super::record::GroupRecord;
use super::{GroupConfig, GroupRequest, GroupResponse, PersistId, RequestId, PERSIST_WAITERS_MAX};
use crate::planted::PlantedBug;

/// (topic, partition)
type TopicPartition = (String, i32);

/// What happens once a record is persisted (or fails to be).
#[derive(Clone, Debug)]
pub(crate) enum Waiter {
    /// Send `ok`, or `failed` if the persist failed.
    Respond {
        request_id: RequestId,
        ok: GroupResponse,
        failed: GroupResponse,
    },
    /// Apply the offsets to the group and send `ok`; on failure only send `failed`.
    Commit {
        request_id: RequestId,
        group: String,
        /// Counted in the group's `commits_in_flight` (false once the group was deleted).
        counted: bool,
        apply: Vec<(TopicPartition, CommittedOffset)>,
        ok: GroupResponse,
        failed: GroupResponse,
    },
    /// The leader's assignment of `group` (see [`Group::assignment_persisted`]).
    Assignment { group: String },
}

/// Responses, records and persist waiters produced while handling an input.
#[derive(Debug)]
pub(crate) struct Outbox {
    responses: VecDeque<(RequestId, GroupResponse)>,
    records: VecDeque<(PersistId, GroupRecord)>,
    /// The id of the next record.
    next_persist_id: PersistId,
    /// The last id handed to the shell by `poll_record`.
    polled_through: PersistId,
    /// (first record, last record, waiter), in increasing persist id order. A waiter is run
    /// with success only if none of its records failed.
    waiters: VecDeque<(PersistId, PersistId, Waiter)>,
    /// The highest record id settled as failed (0: none).
    failed_through: PersistId,
    seed: u64,
    member_counter: u64,
}

impl Outbox {
    pub(crate) fn respond(&mut self, request_id: RequestId, response: GroupResponse) {
        self.responses.push_back((request_id, response));
    }

    /// Queue a record for persisting; returns its id.
    pub(crate) fn persist(&mut self, record: GroupRecord) -> PersistId {
        let id = self.next_persist_id;
        self.next_persist_id += 1;
        self.records.push_back((id, record));
        id
    }

    /// Run `waiter` once record `id` is persisted.
    pub(crate) fn wait(&mut self, id: PersistId, waiter: Waiter) {
        self.wait_span(id, id, waiter);
    }

    /// Run `waiter` once records `first..=last` are settled: as persisted only if none failed.
    pub(crate) fn wait_span(&mut self, first: PersistId, last: PersistId, waiter: Waiter) {
        assert!(first <= last, "a span of records");
        assert!(
            last < self.next_persist_id,
            "waiting on a record not yet queued"
        );
        assert!(
            first > self.polled_through,
            "waiting on records already handed to the shell"
        );
        assert!(
            !matches!(self.waiters.back(), Some((_, l, _)) if *l >= first),
            "waiters in persist order, their spans disjoint"
        );
        self.waiters.push_back((first, last, waiter));
    }

    fn waiters_full(&self) -> bool {
        self.waiters.len() >= PERSIST_WAITERS_MAX
    }

    /// A fresh member id `{prefix}-{seed:x}-{counter:x}` that `taken` does not know.
    pub(crate) fn new_member_id(&mut self, prefix: &str, taken: impl Fn(&str) -> bool) -> String {
        loop {
            self.member_counter += 1;
            let id = format!("{prefix}-{:x}-{:x}", self.seed, self.member_counter);
            if !taken(&id) {
                return id;
            }
        }
    }
}

/// The sans-IO group coordinator. See the module documentation.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    out: Outbox,
    /// (deadline, group id) of every group with an armed timer; mirrors `Group::timer_ms`.
    timers: BTreeSet<(i64, String)>,
}

fn none_if_empty(s: &Option<kafka_protocol::protocol::StrBytes>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).map(|s| s.to_string())
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, seed: u64) -> Self {
        assert!(config.session_timeout_ms_min <= config.session_timeout_ms_max);
        assert!(config.members_max > 0 && config.groups_max > 0);
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            out: Outbox {
                responses: VecDeque::new(),
                records: VecDeque::new(),
                next_persist_id: 1,
                polled_through: 0,
                waiters: VecDeque::new(),
                failed_through: 0,
                seed,
                member_counter: 0,
            },
            timers: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Rebuild state from one persisted record, in log order (before any `handle`).
    pub fn replay(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group));
                let committed = CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms,
                };
                g.offsets.insert((topic, partition), committed);
            }
            GroupRecord::OffsetTombstone {
                group,
                topic,
                partition,
            } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
            GroupRecord::Group {
                group,
                protocol_type,
                protocol,
                generation,
                leader,
                members,
            } => {
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group));
                g.load(protocol_type, protocol, generation, leader, members);
            }
            GroupRecord::GroupTombstone { group } => {
                self.groups.remove(&group);
            }
        }
    }

    /// After replay: loaded members get session deadlines from `now_ms`; timers are armed.
    pub fn loaded(&mut self, now_ms: i64) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            if let Some(g) = self.groups.get_mut(&id) {
                g.loaded(now_ms);
            }
            self.touch(&id);
        }
    }

    /// Handle one request; its response comes out of `poll_response`, now or later.
    pub fn handle(
        &mut self,
        now_ms: i64,
        id: RequestId,
        version: i16,
        client_id: &str,
        client_host: &str,
        request: GroupRequest,
    ) {
        match request {
            GroupRequest::Join(r) => self.join(now_ms, id, version, client_id, client_host, r),
            GroupRequest::Sync(r) => self.sync(now_ms, id, version, r),
            GroupRequest::Heartbeat(r) => self.heartbeat(now_ms, id, r),
            GroupRequest::Leave(r) => self.leave(now_ms, id, version, r),
            GroupRequest::OffsetCommit(r) => self.offset_commit(now_ms, id, version, r),
            GroupRequest::OffsetFetch(r) => self.offset_fetch(id, version, r),
            GroupRequest::OffsetDelete(r) => self.offset_delete(id, r),
            GroupRequest::Describe(r) => self.describe(id, version, r),
            GroupRequest::List(r) => self.list(id, version, r),
            GroupRequest::Delete(r) => self.delete(id, r),
        }
    }

    /// Fire every timer due at `now_ms`.
    pub fn tick(&mut self, now_ms: i64) {
        let due: Vec<String> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now_ms)
            .map(|(_, g)| g.clone())
            .collect();
        for group_id in due {
            if let Some(g) = self.groups.get_mut(&group_id) {
                // One pass normally settles everything due; a few more are cheap insurance.
                for _ in 0..4 {
                    g.tick(&mut self.out, now_ms, &self.config);
                    if !matches!(g.next_deadline(), Some(t) if t <= now_ms) {
                        break;
                    }
                }
            }
            self.touch(&group_id);
        }
    }

    /// The next record to persist.
    pub fn poll_record(&mut self) -> Option<(PersistId, GroupRecord)> {
        let (id, record) = self.out.records.pop_front()?;
        assert!(id > self.out.polled_through);
        self.out.polled_through = id;
        Some((id, record))
    }

    /// Every record up to and including `id` is durable.
    pub fn persisted(&mut self, id: PersistId, now_ms: i64) {
        self.settle(id, now_ms, true);
    }

    /// Records up to `id` could not be persisted: their waiting requests get errors.
    pub fn persist_failed(&mut self, id: PersistId, now_ms: i64) {
        self.settle(id, now_ms, false);
    }

    /// This coordinator is about to be dropped: its offsets partition has another leader now.
    /// Every request waiting for records already handed to the shell is answered as a failed
    /// persist (COORDINATOR_NOT_AVAILABLE for a commit). Those records are in the log and may
    /// survive under the next leader, so NOT_COORDINATOR, which tells a client that nothing was
    /// done, would be wrong for them. Requests with no record out (a join waiting for its
    /// rebalance) stay, for the shell to answer NOT_COORDINATOR. Records this produces are
    /// not for persisting: the shell drops the core next.
    pub fn resign(&mut self, now_ms: i64) {
        self.settle(self.out.polled_through, now_ms, false);
        assert!(
            self.out
                .waiters
                .iter()
                .all(|(first, _, _)| *first > self.out.polled_through),
            "a request waiting for a record in the log outlived the resignation"
        );
    }

    fn settle(&mut self, id: PersistId, now_ms: i64, ok: bool) {
        assert!(
            id <= self.out.polled_through,
            "persisted a record never polled"
        );
        if !ok {
            self.out.failed_through = self.out.failed_through.max(id);
        }
        while self
            .out
            .waiters
            .front()
            .is_some_and(|(_, last, _)| *last <= id)
        {
            let (first, pid, waiter) = self.out.waiters.pop_front().expect("checked");
            // A request whose records straddle a failed persist failed, even if its last record
            // is durable: answering success would acknowledge the failed part.
            let ok = ok && first > self.out.failed_through;
            match waiter {
                Waiter::Respond {
                    request_id,
                    ok: ok_response,
                    failed,
                } => self
                    .out
                    .respond(request_id, if ok { ok_response } else { failed }),
                Waiter::Commit {
                    request_id,
                    group,
                    counted,
                    apply,
                    ok: ok_response,
                    failed,
                } => {
                    if counted {
                        let g = self
                            .groups
                            .get_mut(&group)
                            .expect("in-flight commits pin the group");
                        assert!(g.commits_in_flight > 0);
                        g.commits_in_flight -= 1;
                        if ok {
                            for (tp, committed) in apply {
                                g.offsets.insert(tp, committed);
                            }
                        }
                        self.touch(&group);
                    } else {
                        assert!(apply.is_empty(), "a deleted group's offsets were stripped");
                    }
                    self.out
                        .respond(request_id, if ok { ok_response } else { failed });
                }
                Waiter::Assignment { group } => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.assignment_persisted(&mut self.out, now_ms, &self.config, pid, ok);
                        self.touch(&group);
                    }
                }
            }
        }
    }

    /// The next response to send.
    pub fn poll_response(&mut self) -> Option<(RequestId, GroupResponse)> {
        self.out.responses.pop_front()
    }

    /// The earliest time `tick` must be called, if any timer is armed.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The state name of a group ("Empty", "PreparingRebalance", "CompletingRebalance",
    /// "Stable"), or None if the coordinator does not know it (Kafka calls that "Dead").
    pub fn group_state(&self, group: &str) -> Option<&'static str> {
        self.groups.get(group).map(|g| g.state().name())
    }

    /// The current generation of a group.
    pub fn group_generation(&self, group: &str) -> Option<i32> {
        self.groups.get(group).map(|g| g.generation())
    }

    /// Group ids, in order.
    pub fn group_ids(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// Responses held until their records are persisted.
    pub fn persist_waiters(&self) -> usize {
        self.out.waiters.len()
    }

    /// Assert every invariant of every group and of the timer index (for tests and simulation).
    pub fn check_invariants(&self) {
        let mut armed = 0;
        for (id, g) in &self.groups {
            assert_eq!(id, &g.group_id);
            g.check_invariants();
            assert_eq!(
                g.timer_ms,
                g.next_deadline(),
                "{id}: timer index is current"
            );
            if let Some(t) = g.timer_ms {
                assert!(self.timers.contains(&(t, id.clone())));
                armed += 1;
            }
        }
        assert_eq!(armed, self.timers.len(), "no stale timers");
        assert!(self.groups.len() <= self.config.groups_max);
    }

    /// Re-arm a group's timer after a change, and drop it if it holds nothing.
    fn touch(&mut self, group_id: &str) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if let Some(t) = g.timer_ms.take() {
            let removed = self.timers.remove(&(t, group_id.to_string()));
            assert!(removed, "timer index mirrors the groups");
        }
        if g.is_unused() {
            self.groups.remove(group_id);
            return;
        }
        g.check_invariants();
        g.timer_ms = g.next_deadline();
        if let Some(t) = g.timer_ms {
            self.timers.insert((t, group_id.to_string()));
        }
    }

    fn remove_group(&mut self, group_id: &str) {
        if let Some(g) = self.groups.remove(group_id) {
            if let Some(t) = g.timer_ms {
                self.timers.remove(&(t, group_id.to_string()));
            }
        }
    }

    /// Forget in-flight offsets of `group` matching `strip` (a tombstone follows them).
    fn strip_pending_commits(&mut self, group: &str, strip: impl Fn(&TopicPartition) -> bool) {
        for (_, _, w) in self.out.waiters.iter_mut() {
            if let Waiter::Commit {
                group: g, apply, ..
            } = w
            {
                if g == group {
                    apply.retain(|(tp, _)| !strip(tp));
                }
            }
        }
    }

    /// The group was deleted: its in-flight offsets die with it (its tombstone follows them).
    fn forget_pending_commits(&mut self, group: &str) {
        for (_, _, w) in self.out.waiters.iter_mut() {
            if let Waiter::Commit {
                group: g,
                counted,
                apply,
                ..
            } = w
            {
                if g == group {
                    *counted = false;
                    apply.clear();
                }
            }
        }
    }

    fn has_pending_commit(&self, group: &str, tp: &TopicPartition) -> bool {
        self.out.waiters.iter().any(|(_, _, w)| {
            matches!(w, Waiter::Commit { group: g, apply, .. }
                if g == group && apply.iter().any(|(t, _)| t == tp))
        })
    }

    // ---------------------------------------------------------------------------------------
    // Membership

    fn join(
        &mut self,
        now_ms: i64,
        id: RequestId,
        version: i16,
        client_id: &str,
        client_host: &str,
        r: JoinGroupRequest,
    ) {
        let group_id = r.group_id.0.to_string();
        let member_id = r.member_id.to_string();
        let error = |e: ResponseError| GroupResponse::Join(join_error(version, e, &member_id));
        if group_id.is_empty() {
            return self.out.respond(id, error(ResponseError::InvalidGroupId));
        }
        let session = r.session_timeout_ms;
        if session < self.config.session_timeout_ms_min
            || session > self.config.session_timeout_ms_max
        {
            return self
                .out
                .respond(id, error(ResponseError::InvalidSessionTimeout));
        }
        if !self.groups.contains_key(&group_id) {
            if !member_id.is_empty() {
                return self.out.respond(id, error(ResponseError::UnknownMemberId));
            }
            if self.groups.len() >= self.config.groups_max {
                return self
                    .out
                    .respond(id, error(ResponseError::CoordinatorNotAvailable));
            }
            self.groups
                .insert(group_id.clone(), Group::new(group_id.clone()));
        }
        let rebalance_timeout_ms = if version == 0 || r.rebalance_timeout_ms < 0 {
            session
        } else {
            r.rebalance_timeout_ms
        };
        let params = JoinParams {
            parked: Parked {
                request_id: id,
                version,
            },
            group_instance_id: none_if_empty(&r.group_instance_id),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: session,
            rebalance_timeout_ms,
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
        };
        let g = self.groups.get_mut(&group_id).expect("just ensured");
        g.join(&mut self.out, now_ms, &self.config, &member_id, params);
        self.touch(&group_id);
    }

    fn sync(&mut self, now_ms: i64, id: RequestId, version: i16, r: SyncGroupRequest) {
        let group_id = r.group_id.0.to_string();
        let error = |e: ResponseError| GroupResponse::Sync(sync_error(e));
        if group_id.is_empty() {
            return self.out.respond(id, error(ResponseError::InvalidGroupId));
        }
        let Some(g) = self.groups.get_mut(&group_id) else {
            return self.out.respond(id, error(ResponseError::UnknownMemberId));
        };
        let instance = none_if_empty(&r.group_instance_id);
        let protocol_type = r.protocol_type.as_ref().map(|s| s.to_string());
        let protocol_name = r.protocol_name.as_ref().map(|s| s.to_string());
        let assignments = r
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect();
        g.sync(
            &mut self.out,
            now_ms,
            Parked {
                request_id: id,
                version,
            },
            r.generation_id,
            &r.member_id,
            instance.as_deref(),
            protocol_type.as_deref(),
            protocol_name.as_deref(),
            assignments,
        );
        self.touch(&group_id);
    }

    fn heartbeat(&mut self, now_ms: i64, id: RequestId, r: HeartbeatRequest) {
        let group_id = r.group_id.0.to_string();
        let result = if group_id.is_empty() {
            Err(ResponseError::InvalidGroupId)
        } else if let Some(g) = self.groups.get_mut(&group_id) {
            let instance = none_if_empty(&r.group_instance_id);
            g.heartbeat(now_ms, r.generation_id, &r.member_id, instance.as_deref())
        } else {
            Err(ResponseError::UnknownMemberId)
        };
        let mut response = HeartbeatResponse::default();
        response.error_code = result.err().map_or(0, |e| e.code());
        self.out.respond(id, GroupResponse::Heartbeat(response));
        self.touch(&group_id);
    }

    fn leave(&mut self, now_ms: i64, id: RequestId, version: i16, r: LeaveGroupRequest) {
        let group_id = r.group_id.0.to_string();
        let leaving: Vec<(
            String,
            Option<String>,
            Option<kafka_protocol::protocol::StrBytes>,
        )> = if version < 3 {
            vec![(r.member_id.to_string(), None, None)]
        } else {
            r.members
                .iter()
                .map(|m| {
                    let instance = none_if_empty(&m.group_instance_id);
                    (
                        m.member_id.to_string(),
                        instance,
                        m.group_instance_id.clone(),
                    )
                })
                .collect()
        };
        let mut top_error = 0i16;
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance, raw_instance) in leaving {
            let result = if group_id.is_empty() {
                Err(ResponseError::InvalidGroupId)
            } else if let Some(g) = self.groups.get_mut(&group_id) {
                g.leave(
                    &mut self.out,
                    now_ms,
                    &self.config,
                    &member_id,
                    instance.as_deref(),
                )
            } else {
                Err(ResponseError::UnknownMemberId)
            };
            let code = result.err().map_or(0, |e| e.code());
            if version < 3 {
                top_error = code;
            } else {
                let mut m = MemberResponse::default();
                m.member_id = str_bytes(&member_id);
                m.group_instance_id = raw_instance;
                m.error_code = code;
                results.push(m);
            }
        }
        let mut response = LeaveGroupResponse::default();
        response.error_code = top_error;
        response.members = results;
        self.out.respond(id, GroupResponse::Leave(response));
        self.touch(&group_id);
    }

    // ---------------------------------------------------------------------------------------
    // Offsets

    fn offset_commit(&mut self, now_ms: i64, id: RequestId, version: i16, r: OffsetCommitRequest) {
        let group_id = r.group_id.0.to_string();
        let generation = r.generation_id_or_member_epoch;
        let instance = none_if_empty(&r.group_instance_id);
        let group_error: Option<ResponseError> = if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else if self.out.waiters_full() {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if let Some(g) = self.groups.get_mut(&group_id) {
            g.validate_commit(now_ms, generation, &r.member_id, instance.as_deref())
                .err()
        } else if generation >= 0 {
            // Not a standalone consumer, and the group is unknown: an old generation.
            Some(ResponseError::IllegalGeneration)
        } else if self.groups.len() >= self.config.groups_max {
            Some(ResponseError::CoordinatorNotAvailable)
        } else {
            self.groups
                .insert(group_id.clone(), Group::new(group_id.clone()));
            None
        };
        // Hook: the shell may check that the topics exist before handing the request over
        // (Kafka answers UNKNOWN_TOPIC_OR_PARTITION); the coordinator does not know topics.
        let mut ok = OffsetCommitResponse::default();
        let mut failed = OffsetCommitResponse::default();
        let mut apply = Vec::new();
        let mut first_pid = None;
        let mut last_pid = None;
        for topic in r.topics {
            let name = topic.name.0.to_string();
            let mut ok_topic = OffsetCommitResponseTopic::default();
            ok_topic.name = topic.name.clone();
            let mut failed_topic = ok_topic.clone();
            for p in topic.partitions {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                let error = group_error.or_else(|| {
                    let len = metadata.as_ref().map_or(0, |m| m.len());
                    (len > self.config.offset_metadata_bytes_max)
                        .then_some(ResponseError::OffsetMetadataTooLarge)
                });
                let mut ok_partition = OffsetCommitResponsePartition::default();
                ok_partition.partition_index = p.partition_index;
                let mut failed_partition = ok_partition.clone();
                match error {
                    Some(e) => {
                        ok_partition.error_code = e.code();
                        failed_partition.error_code = e.code();
                    }
                    None => {
                        failed_partition.error_code = ResponseError::CoordinatorNotAvailable.code();
                        let leader_epoch = if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        };
                        let committed = CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch,
                            metadata: metadata.clone(),
                            commit_timestamp_ms: now_ms,
                        };
                        last_pid = Some(self.out.persist(GroupRecord::Offset {
                            group: group_id.clone(),
                            topic: name.clone(),
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms: now_ms,
                        }));
                        first_pid = first_pid.or(last_pid);
                        apply.push(((name.clone(), p.partition_index), committed));
                    }
                }
                ok_topic.partitions.push(ok_partition);
                failed_topic.partitions.push(failed_partition);
            }
            ok.topics.push(ok_topic);
            failed.topics.push(failed_topic);
        }
        match last_pid {
            Some(_) if crate::planted::enabled(PlantedBug::CommitBeforePersist) => {
                // Planted bug: apply and acknowledge now; a crash before the records are
                // durable loses an acknowledged commit.
                let g = self
                    .groups
                    .get_mut(&group_id)
                    .expect("records only for a group");
                for (tp, committed) in apply {
                    g.offsets.insert(tp, committed);
                }
                self.out.respond(id, GroupResponse::OffsetCommit(ok));
            }
            Some(pid) => {
                let g = self
                    .groups
                    .get_mut(&group_id)
                    .expect("records only for a group");
                g.commits_in_flight += 1;
                self.out.wait_span(
                    first_pid.expect("set with last_pid"),
                    pid,
                    Waiter::Commit {
                        request_id: id,
                        group: group_id.clone(),
                        counted: true,
                        apply,
                        ok: GroupResponse::OffsetCommit(ok),
                        failed: GroupResponse::OffsetCommit(failed),
                    },
                )
            }
            None => self.out.respond(id, GroupResponse::OffsetCommit(ok)),
        }
        self.touch(&group_id);
    }

    /// The committed offsets of `group_id` for `topics` (None: every committed partition).
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<(i32, Option<&CommittedOffset>)>)> {
        let group = self.groups.get(group_id);
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| {
                            let c = group.and_then(|g| g.offsets.get(&(name.clone(), p)));
                            (p, c)
                        })
                        .collect();
                    (name, found)
                })
                .collect(),
            None => {
                let mut all: Vec<(String, Vec<(i32, Option<&CommittedOffset>)>)> = Vec::new();
                for ((topic, p), c) in group.iter().flat_map(|g| g.offsets.iter()) {
                    match all.last_mut() {
                        Some((t, ps)) if t == topic => ps.push((*p, Some(c))),
                        _ => all.push((topic.clone(), vec![(*p, Some(c))])),
                    }
                }
                all
            }
        }
    }

    fn offset_fetch(&mut self, id: RequestId, version: i16, r: OffsetFetchRequest) {
        let mut response = OffsetFetchResponse::default();
        if version <= 7 {
            let group_id = r.group_id.0.to_string();
            let topics = r.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let invalid = group_id.is_empty();
            for (name, partitions) in self.fetch_offsets(&group_id, topics) {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = TopicName(str_bytes(&name));
                for (p, c) in partitions {
                    let mut e = OffsetFetchResponsePartition::default();
                    e.partition_index = p;
                    e.committed_offset = c.map_or(-1, |c| c.offset);
                    if version >= 5 {
                        e.committed_leader_epoch = c.map_or(-1, |c| c.leader_epoch);
                    }
                    let metadata = c.and_then(|c| c.metadata.as_deref()).unwrap_or("");
                    e.metadata = Some(str_bytes(metadata));
                    if invalid && version < 2 {
                        e.error_code = ResponseError::InvalidGroupId.code();
                    }
                    topic.partitions.push(e);
                }
                response.topics.push(topic);
            }
            if invalid && version >= 2 {
                response.error_code = ResponseError::InvalidGroupId.code();
            }
        } else {
            for request_group in r.groups {
                let group_id = request_group.group_id.0.to_string();
                let topics = request_group.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let mut group = OffsetFetchResponseGroup::default();
                group.group_id = request_group.group_id;
                if group_id.is_empty() {
                    group.error_code = ResponseError::InvalidGroupId.code();
                } else {
                    for (name, partitions) in self.fetch_offsets(&group_id, topics) {
                        let mut topic = OffsetFetchResponseTopics::default();
                        topic.name = TopicName(str_bytes(&name));
                        for (p, c) in partitions {
                            let mut e = OffsetFetchResponsePartitions::default();
                            e.partition_index = p;
                            e.committed_offset = c.map_or(-1, |c| c.offset);
                            e.committed_leader_epoch = c.map_or(-1, |c| c.leader_epoch);
                            let metadata = c.and_then(|c| c.metadata.as_deref()).unwrap_or("");
                            e.metadata = Some(str_bytes(metadata));
                            topic.partitions.push(e);
                        }
                        group.topics.push(topic);
                    }
                }
                response.groups.push(group);
            }
        }
        self.out.respond(id, GroupResponse::OffsetFetch(response));
    }

    /// Topics the group's members subscribe to, if every member's metadata parses as a
    /// ConsumerProtocolSubscription; None when that cannot be known.
    fn subscribed_topics(g: &Group) -> Option<BTreeSet<String>> {
        if g.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut topics = BTreeSet::new();
        for m in g.members.values() {
            for (_, metadata) in &m.protocols {
                let mut buf: Bytes = metadata.clone();
                if buf.len() < 2 {
                    return None;
                }
                let version = i16::from_be_bytes([buf[0], buf[1]]);
                let _ = bytes::Buf::get_i16(&mut buf);
                if version < 0 {
                    return None;
                }
                // Newer versions only append fields: read them as the newest we know.
                let s = ConsumerProtocolSubscription::decode(&mut buf, version.min(3)).ok()?;
                topics.extend(s.topics.iter().map(|t| t.to_string()));
            }
        }
        Some(topics)
    }

    fn offset_delete(&mut self, id: RequestId, r: OffsetDeleteRequest) {
        let group_id = r.group_id.0.to_string();
        let mut ok = OffsetDeleteResponse::default();
        let Some(g) = self.groups.get(&group_id) else {
            ok.error_code = ResponseError::GroupIdNotFound.code();
            return self.out.respond(id, GroupResponse::OffsetDelete(ok));
        };
        if !g.members.is_empty() && g.protocol_type.as_deref() != Some("consumer") {
            ok.error_code = ResponseError::NonEmptyGroup.code();
            return self.out.respond(id, GroupResponse::OffsetDelete(ok));
        }
        if self.out.waiters_full() {
            ok.error_code = ResponseError::CoordinatorNotAvailable.code();
            return self.out.respond(id, GroupResponse::OffsetDelete(ok));
        }
        // Members subscribed to a topic still use its offsets. Unparseable metadata: assume
        // every topic is subscribed.
        let subscribed: Option<BTreeSet<String>> = if g.members.is_empty() {
            Some(BTreeSet::new())
        } else {
            Self::subscribed_topics(g)
        };
        let mut failed = ok.clone();
        let mut deleted: Vec<TopicPartition> = Vec::new();
        for topic in r.topics {
            let name = topic.name.0.to_string();
            let is_subscribed = !matches!(&subscribed, Some(s) if !s.contains(&name));
            let mut ok_topic = OffsetDeleteResponseTopic::default();
            ok_topic.name = topic.name.clone();
            let mut failed_topic = ok_topic.clone();
            for p in topic.partitions {
                let mut ok_partition = OffsetDeleteResponsePartition::default();
                ok_partition.partition_index = p.partition_index;
                let mut failed_partition = ok_partition.clone();
                if is_subscribed {
                    ok_partition.error_code = ResponseError::GroupSubscribedToTopic.code();
                    failed_partition.error_code = ok_partition.error_code;
                } else {
                    failed_partition.error_code = ResponseError::CoordinatorNotAvailable.code();
                    deleted.push((name.clone(), p.partition_index));
                }
                ok_topic.partitions.push(ok_partition);
                failed_topic.partitions.push(failed_partition);
            }
            ok.topics.push(ok_topic);
            failed.topics.push(failed_topic);
        }
        let mut first_pid = None;
        let mut last_pid = None;
        for tp in &deleted {
            let committed = self
                .groups
                .get_mut(&group_id)
                .expect("checked")
                .offsets
                .remove(tp)
                .is_some();
            if committed || self.has_pending_commit(&group_id, tp) {
                last_pid = Some(self.out.persist(GroupRecord::OffsetTombstone {
                    group: group_id.clone(),
                    topic: tp.0.clone(),
                    partition: tp.1,
                }));
                first_pid = first_pid.or(last_pid);
            }
        }
        let deleted: BTreeSet<TopicPartition> = deleted.into_iter().collect();
        self.strip_pending_commits(&group_id, |tp| deleted.contains(tp));
        match last_pid {
            Some(pid) => self.out.wait_span(
                first_pid.expect("set with last_pid"),
                pid,
                Waiter::Respond {
                    request_id: id,
                    ok: GroupResponse::OffsetDelete(ok),
                    failed: GroupResponse::OffsetDelete(failed),
                },
            ),
            None => self.out.respond(id, GroupResponse::OffsetDelete(ok)),
        }
        self.touch(&group_id);
    }

    // ---------------------------------------------------------------------------------------
    // Administration

    fn describe(&mut self, id: RequestId, version: i16, r: DescribeGroupsRequest) {
        let mut response = DescribeGroupsResponse::default();
        for group_id in r.groups {
            let mut d = DescribedGroup::default();
            d.group_id = group_id.clone();
            match self.groups.get(group_id.0.as_str()) {
                _ if group_id.0.is_empty() => {
                    d.error_code = ResponseError::InvalidGroupId.code();
                    d.group_state = str_bytes("Dead");
                }
                None => d.group_state = str_bytes("Dead"),
                Some(g) => {
                    d.group_state = str_bytes(g.state.name());
                    d.protocol_type = str_bytes(g.protocol_type.as_deref().unwrap_or(""));
                    let stable = g.state == GroupState::Stable;
                    let protocol = g.protocol.as_deref().unwrap_or("");
                    if stable {
                        d.protocol_data = str_bytes(protocol);
                    }
                    for m in g.members.values() {
                        let mut e = DescribedGroupMember::default();
                        e.member_id = str_bytes(&m.member_id);
                        if version >= 4 {
                            e.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                        }
                        e.client_id = str_bytes(&m.client_id);
                        e.client_host = str_bytes(&m.client_host);
                        if stable {
                            e.member_metadata = m.metadata(protocol);
                            e.member_assignment = m.assignment.clone().unwrap_or_default();
                        }
                        d.members.push(e);
                    }
                }
            }
            response.groups.push(d);
        }
        self.out.respond(id, GroupResponse::Describe(response));
    }

    fn list(&mut self, id: RequestId, version: i16, r: ListGroupsRequest) {
        let mut response = ListGroupsResponse::default();
        let states: Vec<String> = r
            .states_filter
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let types: Vec<String> = r
            .types_filter
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        for g in self.groups.values() {
            let state = g.state.name();
            if version >= 4 && !states.is_empty() && !states.contains(&state.to_ascii_lowercase()) {
                continue;
            }
            if version >= 5 && !types.is_empty() && !types.iter().any(|t| t == "classic") {
                continue;
            }
            let mut e = ListedGroup::default();
            e.group_id = GroupId(str_bytes(&g.group_id));
            e.protocol_type = str_bytes(g.protocol_type.as_deref().unwrap_or(""));
            if version >= 4 {
                e.group_state = str_bytes(state);
            }
            if version >= 5 {
                e.group_type = str_bytes("classic");
            }
            response.groups.push(e);
        }
        self.out.respond(id, GroupResponse::List(response));
    }

    fn delete(&mut self, id: RequestId, r: DeleteGroupsRequest) {
        let mut ok = DeleteGroupsResponse::default();
        let mut failed = DeleteGroupsResponse::default();
        let mut first_pid = None;
        let mut last_pid = None;
        for group_id in r.groups_names {
            let name = group_id.0.to_string();
            let error = match self.groups.get(&name) {
                _ if name.is_empty() => Some(ResponseError::InvalidGroupId),
                None => Some(ResponseError::GroupIdNotFound),
                Some(g) if g.state != GroupState::Empty => Some(ResponseError::NonEmptyGroup),
                Some(_) if self.out.waiters_full() => Some(ResponseError::CoordinatorNotAvailable),
                Some(_) => None,
            };
            if error.is_none() {
                self.remove_group(&name);
                self.forget_pending_commits(&name);
                last_pid = Some(self.out.persist(GroupRecord::GroupTombstone {
                    group: name.clone(),
                }));
                first_pid = first_pid.or(last_pid);
            }
            let mut ok_result = DeletableGroupResult::default();
            ok_result.group_id = group_id;
            ok_result.error_code = error.map_or(0, |e| e.code());
            let mut failed_result = ok_result.clone();
            if error.is_none() {
                failed_result.error_code = ResponseError::CoordinatorNotAvailable.code();
            }
            ok.results.push(ok_result);
            failed.results.push(failed_result);
        }
        match last_pid {
            Some(pid) => self.out.wait_span(
                first_pid.expect("set with last_pid"),
                pid,
                Waiter::Respond {
                    request_id: id,
                    ok: GroupResponse::Delete(ok),
                    failed: GroupResponse::Delete(failed),
                },
            ),
            None => self.out.respond(id, GroupResponse::Delete(ok)),
        }
    }
}
