//! One consumer group: members, the rebalance state machine and its invariants.
//!
//! States follow Kafka's classic `GroupMetadata`:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//!     ▲                 ▲        │                                   │ leader's SyncGroup
//!     │ last member     │        │ nobody left                       ▼ persisted
//!     └─────────────────┼────────┘◀──────── member joins/leaves ── Stable
//! ```
//!
//! A group answers through an [`Outbox`]: responses, records to persist and persist waiters. It
//! keeps parked requests (a member's JoinGroup while PreparingRebalance, its SyncGroup while
//! CompletingRebalance) inside the member, so removing a member always answers them.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::{Outbox, Waiter};
use super::record::{GroupRecord, MemberRecord};
use super::{GroupConfig, GroupResponse, PersistId, RequestId};

/// Kafka's classic group states. A deleted group is simply gone (Kafka's `Dead`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A request parked until the group can answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parked {
    pub request_id: RequestId,
    pub version: i16,
}

/// A member of a group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Set when the group becomes Stable; None while a rebalance is under way.
    pub assignment: Option<Bytes>,
    /// Its JoinGroup, while the group is PreparingRebalance.
    pub awaiting_join: Option<Parked>,
    /// Its SyncGroup, while the group is CompletingRebalance.
    pub awaiting_sync: Option<Parked>,
    /// The member is removed when this passes without a heartbeat (unless a request is parked).
    pub session_deadline_ms: i64,
}

impl Member {
    /// The member's metadata for `protocol` (empty if it does not support it).
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn refresh_session(&mut self, now_ms: i64) {
        self.session_deadline_ms = now_ms.saturating_add(i64::from(self.session_timeout_ms));
    }
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// The initial rebalance delay of a group leaving Empty (Kafka's InitialDelayedJoin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InitialDelay {
    /// How much longer the delay may still be extended, up to the rebalance timeout.
    pub remaining_ms: i64,
    /// A member joined during the current delay: extend once more.
    pub new_member_added: bool,
}

/// What a JoinGroup brings, validated.
#[derive(Clone, Debug)]
pub(crate) struct JoinParams {
    pub parked: Parked,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// One consumer group.
#[derive(Clone, Debug)]
pub struct Group {
    pub(crate) group_id: String,
    pub(crate) state: GroupState,
    pub(crate) protocol_type: Option<String>,
    /// The protocol selected for the current generation.
    pub(crate) protocol: Option<String>,
    pub(crate) generation: i32,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, Member>,
    /// group instance id → member id of static members.
    pub(crate) static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED → deadline to rejoin with them.
    pub(crate) pending_members: BTreeMap<String, i64>,
    /// PreparingRebalance: when the join phase ends (rebalance timeout or initial delay).
    pub(crate) join_deadline_ms: Option<i64>,
    pub(crate) initial_delay: Option<InitialDelay>,
    /// Members of this generation that have not sent their SyncGroup yet.
    pub(crate) pending_sync: BTreeSet<String>,
    /// When the members in `pending_sync` are removed.
    pub(crate) sync_deadline_ms: Option<i64>,
    /// The leader's assignment, waiting for its Group record to be persisted.
    pub(crate) pending_assignment: Option<(PersistId, BTreeMap<String, Bytes>)>,
    pub(crate) offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// OffsetCommits waiting for `persisted` (the group is not dropped under them).
    pub(crate) commits_in_flight: usize,
    /// This group's entry in the coordinator's timer index.
    pub(crate) timer_ms: Option<i64>,
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A JoinGroup error response for `version`.
pub(crate) fn join_error(version: i16, error: ResponseError, member_id: &str) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = error.code();
    r.generation_id = -1;
    r.member_id = str_bytes(member_id);
    // Nullable from v7; an older client needs a string.
    r.protocol_name = if version >= 7 {
        None
    } else {
        Some(StrBytes::default())
    };
    r
}

/// A SyncGroup error response (any version).
pub(crate) fn sync_error(error: ResponseError) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.error_code = error.code();
    r
}

impl Group {
    pub(crate) fn new(group_id: String) -> Self {
        Group {
            group_id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: None,
            initial_delay: None,
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            pending_assignment: None,
            offsets: BTreeMap::new(),
            commits_in_flight: 0,
            timer_ms: None,
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// A group that never completed a rebalance and holds nothing: dropping it loses nothing.
    pub(crate) fn is_unused(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
            && self.commits_in_flight == 0
            && self.generation == 0
    }

    /// The longest rebalance timeout of the members (how long a join phase may last).
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return BTreeSet::new();
        };
        let mut candidates: BTreeSet<String> =
            first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    /// Kafka's `supportsProtocols`: may a member with these protocols (re)join?
    pub(crate) fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// The protocol all members support with the most first-choice votes (ties: the best summed
    /// preference, then the name).
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut score: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // (votes, rank sum)
        for m in self.members.values() {
            let ranked: Vec<&str> = m
                .protocols
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| candidates.contains(*n))
                .collect();
            for (rank, name) in ranked.iter().enumerate() {
                let e = score.entry(name).or_insert((0, 0));
                if rank == 0 {
                    e.0 += 1;
                }
                e.1 += rank;
            }
        }
        score
            .into_iter()
            .max_by(|a, b| {
                (a.1 .0, std::cmp::Reverse(a.1 .1), std::cmp::Reverse(a.0)).cmp(&(
                    b.1 .0,
                    std::cmp::Reverse(b.1 .1),
                    std::cmp::Reverse(b.0),
                ))
            })
            .map(|(name, _)| name.to_string())
    }

    /// Kafka's `validateCurrentMember` without the generation.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = group_instance_id {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn protocol_name_for(&self, version: i16) -> Option<StrBytes> {
        match (&self.protocol, version >= 7) {
            (Some(p), _) => Some(str_bytes(p)),
            (None, true) => None,
            (None, false) => Some(StrBytes::default()),
        }
    }

    /// A successful JoinGroup response for `member_id` in the current generation.
    fn join_ok(
        &self,
        version: i16,
        member_id: &str,
        with_members: bool,
        skip_assignment: bool,
    ) -> JoinGroupResponse {
        let mut r = JoinGroupResponse::default();
        r.generation_id = self.generation;
        if version >= 7 {
            r.protocol_type = self.protocol_type.as_deref().map(str_bytes);
        }
        r.protocol_name = self.protocol_name_for(version);
        r.leader = str_bytes(self.leader.as_deref().unwrap_or(""));
        r.skip_assignment = skip_assignment && version >= 9;
        r.member_id = str_bytes(member_id);
        if with_members {
            let protocol = self.protocol.as_deref().unwrap_or("");
            r.members = self
                .members
                .values()
                .map(|m| {
                    let mut e = JoinGroupResponseMember::default();
                    e.member_id = str_bytes(&m.member_id);
                    if version >= 5 {
                        e.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                    }
                    e.metadata = m.metadata(protocol);
                    e
                })
                .collect();
        }
        r
    }

    /// A successful SyncGroup response carrying `assignment`.
    fn sync_ok(&self, version: i16, assignment: Bytes) -> SyncGroupResponse {
        let mut r = SyncGroupResponse::default();
        if version >= 5 {
            r.protocol_type = self.protocol_type.as_deref().map(str_bytes);
            r.protocol_name = self.protocol.as_deref().map(str_bytes);
        }
        r.assignment = assignment;
        r
    }

    /// The Group record of the current membership, with `assignments` overriding the members'.
    pub(crate) fn to_record(&self, assignments: Option<&BTreeMap<String, Bytes>>) -> GroupRecord {
        let protocol = self.protocol.as_deref().unwrap_or("");
        GroupRecord::Group {
            group: self.group_id.clone(),
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| {
                    let assignment = match assignments {
                        Some(a) => a.get(&m.member_id).cloned().unwrap_or_default(),
                        None => m.assignment.clone().unwrap_or_default(),
                    };
                    MemberRecord {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        subscription: m.metadata(protocol).to_vec(),
                        assignment: assignment.to_vec(),
                    }
                })
                .collect(),
        }
    }

    /// Replay of a Group record: the membership it describes replaces ours.
    pub(crate) fn load(
        &mut self,
        protocol_type: Option<String>,
        protocol: Option<String>,
        generation: i32,
        leader: Option<String>,
        members: Vec<MemberRecord>,
    ) {
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        self.pending_assignment = None;
        self.protocol_type = protocol_type;
        self.generation = generation;
        for r in members {
            let protocols = match &protocol {
                Some(p) => vec![(p.clone(), Bytes::from(r.subscription))],
                None => Vec::new(),
            };
            if let Some(instance) = &r.group_instance_id {
                self.static_members
                    .insert(instance.clone(), r.member_id.clone());
            }
            self.members.insert(
                r.member_id.clone(),
                Member {
                    member_id: r.member_id,
                    group_instance_id: r.group_instance_id,
                    client_id: r.client_id,
                    client_host: r.client_host,
                    session_timeout_ms: r.session_timeout_ms,
                    rebalance_timeout_ms: r.rebalance_timeout_ms,
                    protocols,
                    assignment: Some(Bytes::from(r.assignment)),
                    awaiting_join: None,
                    awaiting_sync: None,
                    session_deadline_ms: i64::MAX,
                },
            );
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
        } else {
            self.state = GroupState::Stable;
            self.protocol = protocol.or_else(|| self.select_protocol());
            self.leader = match leader {
                Some(l) if self.members.contains_key(&l) => Some(l),
                _ => self.members.keys().next().cloned(),
            };
        }
    }

    /// After replay: loaded members get a full session from now (Kafka's coordinator load).
    pub(crate) fn loaded(&mut self, now_ms: i64) {
        for m in self.members.values_mut() {
            m.refresh_session(now_ms);
        }
    }

    /// The earliest deadline of this group, if any timer is armed.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let pending = self.pending_members.values().copied();
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(|m| m.session_deadline_ms);
        let join = self
            .join_deadline_ms
            .filter(|_| self.state == GroupState::PreparingRebalance);
        let sync = self
            .sync_deadline_ms
            .filter(|_| !self.pending_sync.is_empty());
        pending.chain(sessions).chain(join).chain(sync).min()
    }

    // ---------------------------------------------------------------------------------------
    // JoinGroup

    /// A JoinGroup for this group (group id and session timeout already validated).
    pub(crate) fn join(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: &str,
        p: JoinParams,
    ) {
        if !self.supports_protocols(&p.protocol_type, &p.protocols) {
            let r = join_error(
                p.parked.version,
                ResponseError::InconsistentGroupProtocol,
                member_id,
            );
            out.respond(p.parked.request_id, GroupResponse::Join(r));
            return;
        }
        if member_id.is_empty() {
            self.join_unknown(out, now_ms, config, p);
        } else {
            self.join_known(out, now_ms, config, member_id, p);
        }
    }

    fn join_unknown(&mut self, out: &mut Outbox, now_ms: i64, config: &GroupConfig, p: JoinParams) {
        let version = p.parked.version;
        let known_static = p
            .group_instance_id
            .as_ref()
            .and_then(|i| self.static_members.get(i).cloned());
        if known_static.is_none()
            && self.members.len() + self.pending_members.len() >= config.members_max
        {
            let r = join_error(version, ResponseError::GroupMaxSizeReached, "");
            out.respond(p.parked.request_id, GroupResponse::Join(r));
            return;
        }
        let prefix = p.group_instance_id.as_deref().unwrap_or(&p.client_id);
        let new_id = out.new_member_id(prefix, |id| {
            self.members.contains_key(id) || self.pending_members.contains_key(id)
        });
        if let Some(old_id) = known_static {
            self.replace_static_member(out, now_ms, config, &old_id, new_id, p);
        } else if p.group_instance_id.is_none() && version >= 4 {
            let deadline = now_ms.saturating_add(i64::from(p.session_timeout_ms));
            self.pending_members.insert(new_id.clone(), deadline);
            let r = join_error(version, ResponseError::MemberIdRequired, &new_id);
            out.respond(p.parked.request_id, GroupResponse::Join(r));
        } else {
            self.add_member_and_rebalance(out, now_ms, config, new_id, p);
        }
    }

    fn join_known(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: &str,
        p: JoinParams,
    ) {
        let version = p.parked.version;
        let reply_error = |out: &mut Outbox, e: ResponseError| {
            let r = join_error(version, e, member_id);
            out.respond(p.parked.request_id, GroupResponse::Join(r));
        };
        if self.pending_members.contains_key(member_id) {
            if let Some(instance) = &p.group_instance_id {
                if self.static_members.contains_key(instance) {
                    return reply_error(out, ResponseError::FencedInstanceId);
                }
            }
            self.pending_members.remove(member_id);
            return self.add_member_and_rebalance(out, now_ms, config, member_id.to_string(), p);
        }
        if let Err(e) = self.validate_member(member_id, p.group_instance_id.as_deref()) {
            return reply_error(out, e);
        }
        let member = &self.members[member_id];
        let protocols_changed = member.protocols != p.protocols;
        let is_leader = self.is_leader(member_id);
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(out, now_ms, config, member_id, p)
            }
            GroupState::CompletingRebalance if !protocols_changed => {
                // A repeated join: answer with the generation just formed.
                let m = self.members.get_mut(member_id).expect("validated member");
                m.refresh_session(now_ms);
                let r = self.join_ok(version, member_id, is_leader, false);
                out.respond(p.parked.request_id, GroupResponse::Join(r));
            }
            GroupState::Stable if !protocols_changed && !is_leader => {
                let m = self.members.get_mut(member_id).expect("validated member");
                m.refresh_session(now_ms);
                let r = self.join_ok(version, member_id, false, false);
                out.respond(p.parked.request_id, GroupResponse::Join(r));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(out, now_ms, config, member_id, p)
            }
            GroupState::Empty => unreachable!("an Empty group has no members"),
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: String,
        p: JoinParams,
    ) {
        assert!(!self.members.contains_key(&member_id));
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(instance) = &p.group_instance_id {
            assert!(!self.static_members.contains_key(instance));
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        let mut member = Member {
            member_id: member_id.clone(),
            group_instance_id: p.group_instance_id,
            client_id: p.client_id,
            client_host: p.client_host,
            session_timeout_ms: p.session_timeout_ms,
            rebalance_timeout_ms: p.rebalance_timeout_ms,
            protocols: p.protocols,
            assignment: None,
            awaiting_join: Some(p.parked),
            awaiting_sync: None,
            session_deadline_ms: 0,
        };
        member.refresh_session(now_ms);
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        if let Some(delay) = &mut self.initial_delay {
            delay.new_member_added = true;
        }
        match self.state {
            GroupState::PreparingRebalance => self.check_join_complete(out, now_ms),
            _ => self.prepare_rebalance(out, now_ms, config),
        }
    }

    fn update_member_and_rebalance(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: &str,
        p: JoinParams,
    ) {
        let m = self.members.get_mut(member_id).expect("a member");
        if let Some(old) = m.awaiting_join.replace(p.parked) {
            // The client gave up on its earlier join; answer it so it is not left dangling.
            let r = join_error(old.version, ResponseError::RebalanceInProgress, member_id);
            out.respond(old.request_id, GroupResponse::Join(r));
        }
        m.protocols = p.protocols;
        m.session_timeout_ms = p.session_timeout_ms;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.refresh_session(now_ms);
        match self.state {
            GroupState::PreparingRebalance => self.check_join_complete(out, now_ms),
            _ => self.prepare_rebalance(out, now_ms, config),
        }
    }

    /// A static member restarted: a join with its instance id and no member id takes over the
    /// old member (whose id is fenced from now on).
    fn replace_static_member(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        old_id: &str,
        new_id: String,
        p: JoinParams,
    ) {
        let version = p.parked.version;
        let mut m = self
            .members
            .remove(old_id)
            .expect("static member is a member");
        if let Some(old) = m.awaiting_join.take() {
            let r = join_error(old.version, ResponseError::FencedInstanceId, old_id);
            out.respond(old.request_id, GroupResponse::Join(r));
        }
        if let Some(old) = m.awaiting_sync.take() {
            let r = sync_error(ResponseError::FencedInstanceId);
            out.respond(old.request_id, GroupResponse::Sync(r));
        }
        m.member_id = new_id.clone();
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        m.session_timeout_ms = p.session_timeout_ms;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.refresh_session(now_ms);
        let instance = m.group_instance_id.clone().expect("static member");
        self.members.insert(new_id.clone(), m);
        self.static_members.insert(instance, new_id.clone());
        if self.is_leader(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some((_, assignments)) = &mut self.pending_assignment {
            if let Some(a) = assignments.remove(old_id) {
                assignments.insert(new_id.clone(), a);
            }
        }
        let m = self.members.get_mut(&new_id).expect("just inserted");
        m.protocols = p.protocols;
        let keeps_protocol = self.select_protocol() == self.protocol;
        match self.state {
            GroupState::Stable if keeps_protocol => {
                // No rebalance: persist the new member id, then hand over the current
                // generation (the member gets its assignment with SyncGroup).
                let is_leader = self.is_leader(&new_id);
                let ok = self.join_ok(version, &new_id, is_leader, is_leader);
                let failed = join_error(version, ResponseError::CoordinatorNotAvailable, "");
                let pid = out.persist(self.to_record(None));
                out.wait(
                    pid,
                    Waiter::Respond {
                        request_id: p.parked.request_id,
                        ok: GroupResponse::Join(ok),
                        failed: GroupResponse::Join(failed),
                    },
                );
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.members.get_mut(&new_id).expect("member").awaiting_join = Some(p.parked);
                self.prepare_rebalance(out, now_ms, config);
            }
            GroupState::PreparingRebalance => {
                self.members.get_mut(&new_id).expect("member").awaiting_join = Some(p.parked);
                self.check_join_complete(out, now_ms);
            }
            GroupState::Empty => unreachable!("an Empty group has no static members"),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Rebalance

    /// Start a rebalance: the join phase waits for every member to rejoin.
    fn prepare_rebalance(&mut self, out: &mut Outbox, now_ms: i64, config: &GroupConfig) {
        assert!(self.state != GroupState::PreparingRebalance);
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(parked) = m.awaiting_sync.take() {
                    let r = sync_error(ResponseError::RebalanceInProgress);
                    out.respond(parked.request_id, GroupResponse::Sync(r));
                    // Its session was suspended while we held its request.
                    m.refresh_session(now_ms);
                }
                m.assignment = None;
            }
        }
        self.pending_assignment = None;
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let rebalance_timeout_ms = self.rebalance_timeout_ms();
        let delay_ms = config.initial_rebalance_delay_ms.max(0);
        if was_empty && delay_ms > 0 {
            self.join_deadline_ms = Some(now_ms.saturating_add(delay_ms));
            self.initial_delay = Some(InitialDelay {
                remaining_ms: (rebalance_timeout_ms - delay_ms).max(0),
                new_member_added: false,
            });
        } else {
            self.join_deadline_ms = Some(now_ms.saturating_add(rebalance_timeout_ms));
            self.initial_delay = None;
        }
        self.check_join_complete(out, now_ms);
    }

    /// Complete the join phase early once everyone (including MEMBER_ID_REQUIRED members) is in.
    /// With no members left there is nobody to wait for: the group empties at once, and pending
    /// members start a new rebalance when they join.
    fn check_join_complete(&mut self, out: &mut Outbox, now_ms: i64) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && (self.pending_members.is_empty() || self.members.is_empty())
            && self.members.values().all(|m| m.awaiting_join.is_some())
        {
            self.complete_join(out, now_ms);
        }
    }

    /// End the join phase: drop who did not rejoin, form the next generation, answer the joins.
    fn complete_join(&mut self, out: &mut Outbox, now_ms: i64) {
        assert_eq!(self.state, GroupState::PreparingRebalance);
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in gone {
            self.remove_member(out, &member_id, ResponseError::UnknownMemberId);
        }
        self.join_deadline_ms = None;
        self.initial_delay = None;
        let generation_before = self.generation;
        self.generation = self.generation.checked_add(1).expect("generation overflow");
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            out.persist(self.to_record(None));
        } else {
            let protocol = self.select_protocol().or_else(|| {
                // Unreachable while joins check supports_protocols; stay live regardless.
                let first = self.members.values().next()?;
                first.protocols.first().map(|(n, _)| n.clone())
            });
            self.protocol = protocol;
            if !self
                .leader
                .as_ref()
                .is_some_and(|l| self.members.contains_key(l))
            {
                self.leader = self.members.keys().next().cloned();
            }
            self.state = GroupState::CompletingRebalance;
            let leader = self.leader.clone().expect("a non-empty group has a leader");
            let mut answers = Vec::with_capacity(self.members.len());
            for m in self.members.values() {
                let parked = m.awaiting_join.expect("every remaining member rejoined");
                let is_leader = m.member_id == leader;
                answers.push((
                    parked,
                    self.join_ok(parked.version, &m.member_id, is_leader, false),
                ));
            }
            let mut rebalance_timeout_ms = 0i64;
            for m in self.members.values_mut() {
                m.awaiting_join = None;
                m.assignment = None;
                m.refresh_session(now_ms);
                rebalance_timeout_ms = rebalance_timeout_ms.max(i64::from(m.rebalance_timeout_ms));
            }
            for (parked, r) in answers {
                out.respond(parked.request_id, GroupResponse::Join(r));
            }
            self.pending_sync = self.members.keys().cloned().collect();
            self.sync_deadline_ms = Some(now_ms.saturating_add(rebalance_timeout_ms.max(0)));
        }
        assert!(self.generation > generation_before);
    }

    /// Remove a member, answering its parked requests with `error`. Does not rebalance.
    fn remove_member(&mut self, out: &mut Outbox, member_id: &str, error: ResponseError) {
        let m = self.members.remove(member_id).expect("removing a member");
        if let Some(parked) = m.awaiting_join {
            let r = join_error(parked.version, error, member_id);
            out.respond(parked.request_id, GroupResponse::Join(r));
        }
        if let Some(parked) = m.awaiting_sync {
            out.respond(parked.request_id, GroupResponse::Sync(sync_error(error)));
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Remove a member and let the group react (rebalance, or complete a waiting join phase).
    pub(crate) fn remove_member_and_update(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: &str,
    ) {
        self.remove_member(out, member_id, ResponseError::UnknownMemberId);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(out, now_ms, config)
            }
            GroupState::PreparingRebalance => self.check_join_complete(out, now_ms),
            GroupState::Empty => unreachable!("an Empty group has no members"),
        }
    }

    // ---------------------------------------------------------------------------------------
    // SyncGroup, Heartbeat, LeaveGroup

    /// A SyncGroup (group id already resolved).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sync(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        parked: Parked,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) {
        let reply_error = |out: &mut Outbox, e: ResponseError| {
            out.respond(parked.request_id, GroupResponse::Sync(sync_error(e)));
        };
        if let Err(e) = self.validate_member(member_id, group_instance_id) {
            return reply_error(out, e);
        }
        if generation != self.generation {
            return reply_error(out, ResponseError::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| self.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| self.protocol.as_deref() != Some(n))
        {
            return reply_error(out, ResponseError::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => reply_error(out, ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => reply_error(out, ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(member_id);
                let is_leader = self.is_leader(member_id);
                let m = self.members.get_mut(member_id).expect("validated member");
                m.refresh_session(now_ms);
                if let Some(old) = m.awaiting_sync.replace(parked) {
                    let r = sync_error(ResponseError::RebalanceInProgress);
                    out.respond(old.request_id, GroupResponse::Sync(r));
                }
                if is_leader && self.pending_assignment.is_none() {
                    let mut given: BTreeMap<String, Bytes> = BTreeMap::new();
                    for (id, a) in assignments {
                        if self.members.contains_key(&id) {
                            given.insert(id, a);
                        }
                    }
                    let all: BTreeMap<String, Bytes> = self
                        .members
                        .keys()
                        .map(|id| (id.clone(), given.remove(id).unwrap_or_default()))
                        .collect();
                    let pid = out.persist(self.to_record(Some(&all)));
                    self.pending_assignment = Some((pid, all));
                    out.wait(
                        pid,
                        Waiter::Assignment {
                            group: self.group_id.clone(),
                        },
                    );
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(member_id);
                if self.pending_sync.is_empty() {
                    self.sync_deadline_ms = None;
                }
                let m = self.members.get_mut(member_id).expect("validated member");
                m.refresh_session(now_ms);
                let assignment = m
                    .assignment
                    .clone()
                    .expect("Stable members have assignments");
                let r = self.sync_ok(parked.version, assignment);
                out.respond(parked.request_id, GroupResponse::Sync(r));
            }
        }
    }

    /// The Group record of the leader's assignment was persisted (`ok`) or failed.
    pub(crate) fn assignment_persisted(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        pid: PersistId,
        ok: bool,
    ) {
        let matches = self.state == GroupState::CompletingRebalance
            && self
                .pending_assignment
                .as_ref()
                .is_some_and(|(p, _)| *p == pid);
        if !matches {
            return; // the group moved on (a rebalance answered the parked syncs)
        }
        let (_, assignments) = self.pending_assignment.take().expect("checked");
        if ok {
            self.state = GroupState::Stable;
            let mut answers = Vec::new();
            for m in self.members.values_mut() {
                let a = assignments.get(&m.member_id).cloned().unwrap_or_default();
                m.assignment = Some(a.clone());
                if let Some(parked) = m.awaiting_sync.take() {
                    m.refresh_session(now_ms);
                    answers.push((parked, a));
                }
            }
            for (parked, a) in answers {
                let r = self.sync_ok(parked.version, a);
                out.respond(parked.request_id, GroupResponse::Sync(r));
            }
            if self.pending_sync.is_empty() {
                self.sync_deadline_ms = None;
            }
        } else {
            for m in self.members.values_mut() {
                if let Some(parked) = m.awaiting_sync.take() {
                    let r = sync_error(ResponseError::CoordinatorNotAvailable);
                    out.respond(parked.request_id, GroupResponse::Sync(r));
                    m.refresh_session(now_ms);
                }
            }
            self.prepare_rebalance(out, now_ms, config);
        }
    }

    /// A Heartbeat: Ok to answer NONE.
    pub(crate) fn heartbeat(
        &mut self,
        now_ms: i64,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        self.validate_member(member_id, group_instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let m = self.members.get_mut(member_id).expect("validated member");
        m.refresh_session(now_ms);
        match self.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// One member of a LeaveGroup: Ok to answer NONE.
    pub(crate) fn leave(
        &mut self,
        out: &mut Outbox,
        now_ms: i64,
        config: &GroupConfig,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if member_id.is_empty() {
            // Leave by instance id (admin "remove members from consumer group").
            let found = group_instance_id.and_then(|i| self.static_members.get(i).cloned());
            return match found {
                Some(id) => {
                    self.remove_member_and_update(out, now_ms, config, &id);
                    Ok(())
                }
                None => Err(ResponseError::UnknownMemberId),
            };
        }
        if self.pending_members.remove(member_id).is_some() {
            self.check_join_complete(out, now_ms);
            return Ok(());
        }
        self.validate_member(member_id, group_instance_id)?;
        self.remove_member_and_update(out, now_ms, config, member_id);
        Ok(())
    }

    /// May this OffsetCommit write offsets? (Kafka's `validateOffsetCommit`.)
    pub(crate) fn validate_commit(
        &mut self,
        now_ms: i64,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(()); // a standalone ("simple") consumer, not using group management
        }
        if generation < 0 && member_id.is_empty() && group_instance_id.is_none() {
            return Err(ResponseError::UnknownMemberId); // only members commit to a live group
        }
        self.validate_member(member_id, group_instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        let m = self.members.get_mut(member_id).expect("validated member");
        m.refresh_session(now_ms);
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Timers

    /// Fire every timer due at `now_ms`.
    pub(crate) fn tick(&mut self, out: &mut Outbox, now_ms: i64, config: &GroupConfig) {
        // MEMBER_ID_REQUIRED ids that never came back.
        let expired: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            for id in expired {
                self.pending_members.remove(&id);
            }
            self.check_join_complete(out, now_ms);
        }
        // Silent members. A member with a parked join or sync is waiting on us, not silent.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .filter(|m| m.session_deadline_ms <= now_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            if self.members.contains_key(&id) {
                self.remove_member_and_update(out, now_ms, config, &id);
            }
        }
        // The join phase's end. Each extension of the initial delay counts from the previous
        // deadline, as a timer would have fired then even if tick comes late.
        while self.state == GroupState::PreparingRebalance {
            let Some(deadline) = self.join_deadline_ms.filter(|d| *d <= now_ms) else {
                break;
            };
            match self.initial_delay {
                Some(d) if d.new_member_added && d.remaining_ms > 0 => {
                    let delay_ms = config.initial_rebalance_delay_ms.max(1).min(d.remaining_ms);
                    self.join_deadline_ms = Some(deadline.saturating_add(delay_ms));
                    self.initial_delay = Some(InitialDelay {
                        remaining_ms: d.remaining_ms - delay_ms,
                        new_member_added: false,
                    });
                }
                _ => {
                    self.initial_delay = None;
                    self.complete_join(out, now_ms);
                }
            }
        }
        // Members of the new generation that never sent SyncGroup.
        if matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) && self.sync_deadline_ms.is_some_and(|d| d <= now_ms)
        {
            let laggards: Vec<String> = self.pending_sync.iter().cloned().collect();
            self.pending_sync.clear();
            self.sync_deadline_ms = None;
            for id in laggards {
                if self.members.contains_key(&id) {
                    self.remove_member_and_update(out, now_ms, config, &id);
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Invariants

    /// Assert the group's invariants (cheap enough to run after every operation).
    pub(crate) fn check_invariants(&self) {
        let id = &self.group_id;
        if let Some(leader) = &self.leader {
            assert!(
                self.members.contains_key(leader),
                "{id}: leader is a member"
            );
        }
        match self.state {
            GroupState::Empty => {
                assert!(self.members.is_empty(), "{id}: Empty has no members");
                assert!(self.leader.is_none() && self.join_deadline_ms.is_none());
            }
            GroupState::PreparingRebalance => {
                assert!(
                    self.join_deadline_ms.is_some(),
                    "{id}: join phase has a deadline"
                );
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(!self.members.is_empty(), "{id}: a generation has members");
                assert!(self.leader.is_some() && self.protocol.is_some());
                assert!(self.generation > 0);
            }
        }
        assert!(
            self.initial_delay.is_none() || self.state == GroupState::PreparingRebalance,
            "{id}: initial delay only while preparing"
        );
        assert!(
            self.pending_assignment.is_none() || self.state == GroupState::CompletingRebalance,
            "{id}: pending assignment only while completing"
        );
        for (member_id, m) in &self.members {
            assert_eq!(member_id, &m.member_id);
            assert!(
                m.awaiting_join.is_none() || self.state == GroupState::PreparingRebalance,
                "{id}: parked joins only while preparing"
            );
            assert!(
                m.awaiting_sync.is_none() || self.state == GroupState::CompletingRebalance,
                "{id}: parked syncs only while completing"
            );
            if self.state == GroupState::Stable {
                assert!(
                    m.assignment.is_some(),
                    "{id}: Stable members have assignments"
                );
            }
            if let Some(instance) = &m.group_instance_id {
                assert_eq!(self.static_members.get(instance), Some(member_id));
            }
            assert!(!self.pending_members.contains_key(member_id));
        }
        for (instance, member_id) in &self.static_members {
            let m = self
                .members
                .get(member_id)
                .expect("static member is a member");
            assert_eq!(m.group_instance_id.as_ref(), Some(instance));
        }
        for member_id in &self.pending_sync {
            assert!(
                self.members.contains_key(member_id),
                "{id}: pending sync of a member"
            );
        }
        if !self.pending_sync.is_empty() {
            assert!(matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            ));
            assert!(self.sync_deadline_ms.is_some());
        }
    }
}
