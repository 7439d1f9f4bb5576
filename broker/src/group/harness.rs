//! [`GroupHarness`]: the group coordinator driven by simulated consumers, a virtual clock and a
//! model of the offsets log, checking after every [`GroupAction`] what a Kafka user relies on.
//!
//! Shared by the unit tests, the `group_actions` fuzz target and the `sim` crate, so it is
//! compiled always and depends on nothing but the broker (no `rand`): actions come from bytes
//! ([`GroupAction::decode`]) or from a caller's chooser ([`GroupAction::choose`]).
//!
//! The harness owns:
//!
//! - a [`GroupCoordinator`] and a virtual clock (`now_ms`, moved only by [`GroupAction::Advance`]);
//! - the **offsets log model**: every record `poll_record` hands out is pending until an action
//!   makes a prefix of them durable ([`GroupAction::Persist`]) or failed
//!   ([`GroupAction::PersistFail`]; a failed record is not in the log). [`GroupAction::Crash`]
//!   loses everything pending and builds a new coordinator from the durable records
//!   (`replay` + `loaded`);
//! - [`CLIENTS`] simulated consumers over [`GROUPS`] groups (clients 3, 4, 5 are static members
//!   with a `group.instance.id`). They behave like Kafka's classic consumer: rejoin on
//!   REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION, forget their member id on UNKNOWN_MEMBER_ID /
//!   FENCED_INSTANCE_ID, and the leader assigns partitions `0..PARTITIONS` of [`TOPIC`]
//!   round-robin in a format the harness decodes ([`Assignment`]).
//!
//! Invariants (the coordinator's own `check_invariants` panics; the rest return a [`Violation`]):
//!
//! - **durability**: a success that needs persistence (OffsetCommit, OffsetDelete, DeleteGroups,
//!   JoinGroup of a replaced static member, SyncGroup) arrives only after the records its request
//!   produced are durable, and a SyncGroup's assignment is in a durable Group record of that
//!   generation;
//! - **generation**: a group's generation never decreases while the coordinator runs, and never
//!   falls below a generation some member completed SyncGroup in (across crashes too) unless the
//!   group was deleted;
//! - **assignment**: in one generation, the assignments members received decode, name that
//!   generation and the leader the member was told about, and are disjoint;
//! - **offsets**: every OffsetFetch returns, per partition, the last acknowledged commit or
//!   something written after it (a later commit whose outcome is open, a delete): no
//!   acknowledged commit is ever lost, and nothing never written is returned;
//! - **fencing**: a commit from a generation below a completed one, from a generation never
//!   handed out, or from a static member id replaced durably by a newer instance is never
//!   acknowledged; the replaced member's requests get FENCED_INSTANCE_ID or UNKNOWN_MEMBER_ID;
//! - **liveness** ([`GroupHarness::finish`]): once everything persists and time passes, every
//!   request is answered, exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{
    GroupConfig, GroupCoordinator, GroupRecord, GroupRequest, GroupResponse, PersistId, RequestId,
};

/// Simulated consumers. Client `c` is in group `c % GROUPS`.
pub const CLIENTS: usize = 6;
/// Groups, named `g0`, `g1`, ...
pub const GROUPS: usize = 2;
/// Clients from this index on are static members (`group.instance.id` = `i{c}`).
pub const STATIC_CLIENTS_FROM: usize = 3;
/// The topic the groups consume.
pub const TOPIC: &str = "t";
/// Partitions of [`TOPIC`].
pub const PARTITIONS: i32 = 4;
/// Largest clock step of one [`GroupAction::Advance`].
pub const ADVANCE_MS_MAX: u32 = 120_000;
/// Most records one [`GroupAction::Persist`] or [`GroupAction::PersistFail`] settles (0: all).
pub const PERSIST_RECORDS_MAX: u8 = 8;
/// The clients' `session.timeout.ms`.
pub const SESSION_TIMEOUT_MS: i32 = 10_000;
/// The clients' `max.poll.interval.ms` (the rebalance timeout).
pub const REBALANCE_TIMEOUT_MS: i32 = 15_000;
/// The assignor the clients use.
pub const PROTOCOL: &str = "rr";
/// Old member ids a client remembers (to send zombie requests with).
const ZOMBIE_IDS_MAX: usize = 4;
/// The virtual clock's start.
const START_MS: i64 = 1_000_000;

/// Clock steps [`GroupAction::choose`] picks from: within a session, just past one, past a
/// rebalance timeout, far past everything.
pub const ADVANCE_CHOICES_MS: [u32; 10] = [
    1, 50, 500, 1_000, 3_000, 5_000, 9_000, 11_000, 16_000, 60_000,
];

/// The group of client `client`.
pub fn client_group(client: usize) -> usize {
    client % GROUPS
}

/// The name of group `group`.
pub fn group_name(group: usize) -> String {
    format!("g{group}")
}

/// The `group.instance.id` of client `client`, if it is a static member.
pub fn client_instance(client: usize) -> Option<String> {
    (client >= STATIC_CLIENTS_FROM).then(|| format!("i{client}"))
}

/// The client a member id belongs to: member ids start with the client id (`c{n}`) or the
/// instance id (`i{n}`) the member joined with. (The harness cannot always learn ids from
/// responses: a static member's replacement id stays in memory even if its JoinGroup failed.)
pub fn member_id_client(member_id: &str) -> Option<usize> {
    let prefix = member_id.split('-').next()?;
    let n: usize = prefix.strip_prefix(['c', 'i'])?.parse().ok()?;
    (n < CLIENTS).then_some(n)
}

/// What identity an OffsetCommit is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitAs {
    /// The client's member id and generation.
    Current,
    /// Its member id with the generation before its own.
    PreviousGeneration,
    /// Its member id with a generation after its own.
    NextGeneration,
    /// The last member id it forgot (and the generation it had), with its instance id.
    Zombie,
    /// A standalone consumer: generation -1, no member id.
    Standalone,
}

impl CommitAs {
    const ALL: [CommitAs; 5] = [
        CommitAs::Current,
        CommitAs::PreviousGeneration,
        CommitAs::NextGeneration,
        CommitAs::Zombie,
        CommitAs::Standalone,
    ];
}

/// One step of a harness run. Client and group indexes are reduced modulo [`CLIENTS`] and
/// [`GROUPS`], sizes are clamped, so every value is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAction {
    /// The client does what a real consumer does next: join, sync, heartbeat or commit.
    Act {
        client: u8,
    },
    /// JoinGroup with the client's member id (empty if it has none).
    Join {
        client: u8,
    },
    /// The client restarts: it forgets its member id without leaving (a static member's next
    /// join takes over its old member, fencing it).
    Restart {
        client: u8,
    },
    /// SyncGroup for the client's generation (the leader sends its assignment).
    Sync {
        client: u8,
    },
    Heartbeat {
        client: u8,
    },
    /// LeaveGroup; the client forgets its member id.
    Leave {
        client: u8,
    },
    /// OffsetCommit of the client's assigned partitions (or one partition) with fresh offsets.
    Commit {
        client: u8,
        commit_as: CommitAs,
    },
    /// OffsetFetch of every partition of the group.
    Fetch {
        group: u8,
    },
    OffsetDelete {
        group: u8,
        partition: u8,
    },
    Describe {
        group: u8,
    },
    List,
    DeleteGroup {
        group: u8,
    },
    /// Move the clock and tick.
    Advance {
        ms: u32,
    },
    /// The oldest `records` pending records become durable (0: all of them).
    Persist {
        records: u8,
    },
    /// The oldest `records` pending records fail (0: all of them).
    PersistFail {
        records: u8,
    },
    /// The coordinator crashes and restarts from the durable records.
    Crash,
}

/// Relative weights of the action kinds for [`GroupAction::choose_weighted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionWeights {
    pub act: u32,
    pub join: u32,
    pub restart: u32,
    pub sync: u32,
    pub heartbeat: u32,
    pub leave: u32,
    pub commit: u32,
    pub fetch: u32,
    pub offset_delete: u32,
    pub describe: u32,
    pub list: u32,
    pub delete_group: u32,
    pub advance: u32,
    pub persist: u32,
    pub persist_fail: u32,
    pub crash: u32,
}

impl Default for ActionWeights {
    fn default() -> Self {
        ActionWeights {
            act: 40,
            join: 2,
            restart: 2,
            sync: 2,
            heartbeat: 3,
            leave: 1,
            commit: 6,
            fetch: 3,
            offset_delete: 1,
            describe: 1,
            list: 1,
            delete_group: 1,
            advance: 10,
            persist: 16,
            persist_fail: 2,
            crash: 1,
        }
    }
}

fn byte(data: &mut &[u8]) -> u8 {
    match data.split_first() {
        Some((&b, rest)) => {
            *data = rest;
            b
        }
        None => 0,
    }
}

impl GroupAction {
    /// The next action from fuzzer bytes: one opcode byte, then its arguments (missing bytes read
    /// as 0). None once `data` is empty. Never panics; every byte string is a valid program.
    pub fn decode(data: &mut &[u8]) -> Option<GroupAction> {
        if data.is_empty() {
            return None;
        }
        let op = byte(data);
        let mut arg = || byte(data);
        Some(match op % 16 {
            0 => GroupAction::Act {
                client: arg() % CLIENTS as u8,
            },
            1 => GroupAction::Join {
                client: arg() % CLIENTS as u8,
            },
            2 => GroupAction::Restart {
                client: arg() % CLIENTS as u8,
            },
            3 => GroupAction::Sync {
                client: arg() % CLIENTS as u8,
            },
            4 => GroupAction::Heartbeat {
                client: arg() % CLIENTS as u8,
            },
            5 => GroupAction::Leave {
                client: arg() % CLIENTS as u8,
            },
            6 => {
                let a = arg();
                GroupAction::Commit {
                    client: a % CLIENTS as u8,
                    commit_as: CommitAs::ALL[usize::from(a / CLIENTS as u8) % CommitAs::ALL.len()],
                }
            }
            7 => GroupAction::Fetch {
                group: arg() % GROUPS as u8,
            },
            8 => {
                let a = arg();
                GroupAction::OffsetDelete {
                    group: a % GROUPS as u8,
                    partition: (a / GROUPS as u8) % PARTITIONS as u8,
                }
            }
            9 => GroupAction::Describe {
                group: arg() % GROUPS as u8,
            },
            10 => GroupAction::List,
            11 => GroupAction::DeleteGroup {
                group: arg() % GROUPS as u8,
            },
            12 => {
                let hi = u32::from(arg());
                let lo = u32::from(arg());
                // Small steps are common, large ones reachable: up to ~2^17 ms.
                let ms = (((hi << 8) | lo) * 2).max(1);
                GroupAction::Advance {
                    ms: ms.min(ADVANCE_MS_MAX),
                }
            }
            13 => GroupAction::Persist {
                records: arg() % (PERSIST_RECORDS_MAX + 1),
            },
            14 => GroupAction::PersistFail {
                records: arg() % (PERSIST_RECORDS_MAX + 1),
            },
            _ => GroupAction::Crash,
        })
    }

    /// The inverse of [`GroupAction::decode`] (for writing corpus files).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            GroupAction::Act { client } => out.extend([0, client]),
            GroupAction::Join { client } => out.extend([1, client]),
            GroupAction::Restart { client } => out.extend([2, client]),
            GroupAction::Sync { client } => out.extend([3, client]),
            GroupAction::Heartbeat { client } => out.extend([4, client]),
            GroupAction::Leave { client } => out.extend([5, client]),
            GroupAction::Commit { client, commit_as } => {
                let k = CommitAs::ALL
                    .iter()
                    .position(|c| *c == commit_as)
                    .unwrap_or(0) as u8;
                out.extend([6, client % CLIENTS as u8 + k * CLIENTS as u8]);
            }
            GroupAction::Fetch { group } => out.extend([7, group]),
            GroupAction::OffsetDelete { group, partition } => {
                out.extend([8, group % GROUPS as u8 + partition * GROUPS as u8])
            }
            GroupAction::Describe { group } => out.extend([9, group]),
            GroupAction::List => out.push(10),
            GroupAction::DeleteGroup { group } => out.extend([11, group]),
            GroupAction::Advance { ms } => {
                let v = ms.min(ADVANCE_MS_MAX) / 2;
                out.extend([12, (v >> 8) as u8, v as u8]);
            }
            GroupAction::Persist { records } => out.extend([13, records]),
            GroupAction::PersistFail { records } => out.extend([14, records]),
            GroupAction::Crash => out.push(15),
        }
    }

    /// An action from `pick(n)` (a number in `0..n`) with [`ActionWeights::default`].
    pub fn choose(pick: &mut dyn FnMut(u32) -> u32) -> GroupAction {
        Self::choose_weighted(pick, &ActionWeights::default())
    }

    /// An action from `pick(n)` (a number in `0..n`), kinds drawn by `weights`.
    pub fn choose_weighted(
        pick: &mut dyn FnMut(u32) -> u32,
        weights: &ActionWeights,
    ) -> GroupAction {
        let w = weights;
        let table = [
            w.act,
            w.join,
            w.restart,
            w.sync,
            w.heartbeat,
            w.leave,
            w.commit,
            w.fetch,
            w.offset_delete,
            w.describe,
            w.list,
            w.delete_group,
            w.advance,
            w.persist,
            w.persist_fail,
            w.crash,
        ];
        let total: u32 = table.iter().sum();
        assert!(total > 0, "some action must have weight");
        let mut r = pick(total).min(total - 1);
        let mut kind = 0;
        for (i, weight) in table.iter().enumerate() {
            if r < *weight {
                kind = i;
                break;
            }
            r -= weight;
        }
        let mut pick_u8 = |n: usize| pick(n as u32).min(n as u32 - 1) as u8;
        match kind {
            0 => GroupAction::Act {
                client: pick_u8(CLIENTS),
            },
            1 => GroupAction::Join {
                client: pick_u8(CLIENTS),
            },
            2 => GroupAction::Restart {
                client: pick_u8(CLIENTS),
            },
            3 => GroupAction::Sync {
                client: pick_u8(CLIENTS),
            },
            4 => GroupAction::Heartbeat {
                client: pick_u8(CLIENTS),
            },
            5 => GroupAction::Leave {
                client: pick_u8(CLIENTS),
            },
            6 => GroupAction::Commit {
                client: pick_u8(CLIENTS),
                commit_as: CommitAs::ALL[usize::from(pick_u8(CommitAs::ALL.len()))],
            },
            7 => GroupAction::Fetch {
                group: pick_u8(GROUPS),
            },
            8 => GroupAction::OffsetDelete {
                group: pick_u8(GROUPS),
                partition: pick_u8(PARTITIONS as usize),
            },
            9 => GroupAction::Describe {
                group: pick_u8(GROUPS),
            },
            10 => GroupAction::List,
            11 => GroupAction::DeleteGroup {
                group: pick_u8(GROUPS),
            },
            12 => GroupAction::Advance {
                ms: ADVANCE_CHOICES_MS[usize::from(pick_u8(ADVANCE_CHOICES_MS.len()))],
            },
            13 => GroupAction::Persist {
                records: pick_u8(usize::from(PERSIST_RECORDS_MAX) + 1),
            },
            14 => GroupAction::PersistFail {
                records: pick_u8(3),
            },
            _ => GroupAction::Crash,
        }
    }
}

/// A broken guarantee, found after `step` actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub step: u64,
    /// Which guarantee (a short fixed name).
    pub invariant: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {}: {}: {}", self.step, self.invariant, self.detail)
    }
}

impl std::error::Error for Violation {}

/// The assignment the harness's leader gives a member: which generation and leader made it, and
/// its partitions. Encoded as `[1, generation (i32 BE), leader client, n, partitions (n bytes)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub generation: i32,
    /// The client index of the leader that computed it.
    pub leader_client: u8,
    pub partitions: Vec<i32>,
}

impl Assignment {
    pub fn encode(&self) -> Bytes {
        let mut out = vec![1u8];
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(self.leader_client);
        out.push(self.partitions.len() as u8);
        out.extend(self.partitions.iter().map(|p| *p as u8));
        Bytes::from(out)
    }

    pub fn decode(b: &[u8]) -> Option<Assignment> {
        if b.len() < 7 || b[0] != 1 {
            return None;
        }
        let generation = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let n = usize::from(b[6]);
        if b.len() != 7 + n {
            return None;
        }
        Some(Assignment {
            generation,
            leader_client: b[5],
            partitions: b[7..].iter().map(|p| i32::from(*p)).collect(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Needs to (re)join.
    Unjoined,
    /// Joined a generation, needs SyncGroup.
    Syncing,
    /// Has its assignment.
    Stable,
}

/// A simulated consumer.
#[derive(Clone, Debug)]
struct Client {
    group: usize,
    instance: Option<String>,
    member_id: String,
    generation: i32,
    /// The leader named in its last successful JoinGroup.
    leader: String,
    /// The members listed in its last successful JoinGroup (the leader gets them).
    members: Vec<String>,
    phase: Phase,
    assignment: Vec<i32>,
    /// Forgotten member ids with the generation they had, newest last.
    zombies: Vec<(String, i32)>,
    join_in_flight: Option<RequestId>,
    sync_in_flight: Option<RequestId>,
    acts: u64,
}

impl Client {
    fn new(index: usize) -> Self {
        Client {
            group: client_group(index),
            instance: client_instance(index),
            member_id: String::new(),
            generation: -1,
            leader: String::new(),
            members: Vec::new(),
            phase: Phase::Unjoined,
            assignment: Vec::new(),
            zombies: Vec::new(),
            join_in_flight: None,
            sync_in_flight: None,
            acts: 0,
        }
    }

    /// Forget the member id (the client starts over with a JoinGroup without one).
    fn forget(&mut self) {
        if !self.member_id.is_empty() {
            let id = std::mem::take(&mut self.member_id);
            self.zombies.push((id, self.generation));
            if self.zombies.len() > ZOMBIE_IDS_MAX {
                self.zombies.remove(0);
            }
        }
        self.generation = -1;
        self.leader.clear();
        self.members.clear();
        self.phase = Phase::Unjoined;
        self.assignment.clear();
        self.join_in_flight = None;
        self.sync_in_flight = None;
    }

    fn rejoin(&mut self) {
        self.phase = Phase::Unjoined;
        self.assignment.clear();
    }
}

/// What the harness knows about one group, from what clients saw.
#[derive(Clone, Debug, Default)]
struct GroupModel {
    /// The coordinator's generation at the last check, in this incarnation.
    seen_generation: i32,
    /// The highest generation a member completed SyncGroup in (its record was durable).
    synced_generation: i32,
    /// The highest generation handed out in a JoinGroup response.
    issued_generation: i32,
    /// generation → client → partitions received in SyncGroup.
    assignments: BTreeMap<i32, BTreeMap<usize, Vec<i32>>>,
    /// Static member ids replaced durably by a newer member of their instance.
    fenced: BTreeSet<String>,
    /// A DeleteGroups of the Empty group is not acknowledged yet: until its tombstone is
    /// durable a crash can bring the deleted group back, with the highest generation the old
    /// group handed out (kept here).
    delete_in_doubt: Option<i32>,
    /// partition → (log sequence, offset) that OffsetFetch may return: the last acknowledged
    /// write and everything written after it (-1: no committed offset).
    offsets: BTreeMap<i32, Vec<(u64, i64)>>,
}

impl GroupModel {
    fn new() -> Self {
        let mut m = GroupModel::default();
        for p in 0..PARTITIONS {
            m.offsets.insert(p, vec![(0, -1)]);
        }
        m
    }
}

/// What a request was, for checking its response.
#[derive(Clone, Debug)]
enum Sent {
    Join,
    Sync {
        generation: i32,
        member_id: String,
        fenced: bool,
    },
    Heartbeat {
        member_id: String,
        fenced: bool,
    },
    Leave,
    Commit {
        generation: i32,
        member_id: String,
        fenced: bool,
        /// The group's synced generation when the commit was sent.
        synced_generation: i32,
        /// The group's highest issued generation when the commit was sent.
        issued_generation: i32,
    },
    Fetch,
    OffsetDelete,
    Describe,
    List,
    Delete,
}

#[derive(Clone, Debug)]
struct Outstanding {
    client: Option<usize>,
    group: usize,
    sent: Sent,
}

/// A record handed out by `poll_record`, not yet durable or failed.
#[derive(Clone, Debug)]
struct PendingRecord {
    id: PersistId,
    seq: u64,
    record: GroupRecord,
}

/// The group coordinator under simulated consumers and faults. See the module documentation.
pub struct GroupHarness {
    config: GroupConfig,
    seed: u64,
    incarnation: u64,
    coordinator: GroupCoordinator,
    now_ms: i64,
    steps: u64,
    events: u64,
    next_request_id: RequestId,
    next_seq: u64,
    next_offset: i64,
    /// The durable log, in order, with each record's sequence number.
    durable: Vec<(u64, GroupRecord)>,
    durable_seqs: BTreeSet<u64>,
    pending: VecDeque<PendingRecord>,
    /// Records (by sequence) each unanswered request produced while it was handled.
    request_records: BTreeMap<RequestId, Vec<(u64, GroupRecord)>>,
    outstanding: BTreeMap<RequestId, Outstanding>,
    clients: Vec<Client>,
    groups: Vec<GroupModel>,
    /// Whether successes that need persistence are checked to arrive after it (turn off to
    /// show that the crash checks catch a planted early acknowledgement on their own).
    pub check_response_durability: bool,
    log: Option<Vec<String>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

fn error_name(code: i16) -> String {
    if code == 0 {
        return "NONE".into();
    }
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

impl GroupHarness {
    /// A harness with the broker's default group settings; `seed` makes member ids.
    pub fn new(seed: u64) -> Self {
        Self::with_config(GroupConfig::default(), seed)
    }

    pub fn with_config(config: GroupConfig, seed: u64) -> Self {
        GroupHarness {
            coordinator: GroupCoordinator::new(config.clone(), seed),
            config,
            seed,
            incarnation: 0,
            now_ms: START_MS,
            steps: 0,
            events: 0,
            next_request_id: 0,
            next_seq: 1,
            next_offset: 100,
            durable: Vec::new(),
            durable_seqs: BTreeSet::new(),
            pending: VecDeque::new(),
            request_records: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            clients: (0..CLIENTS).map(Client::new).collect(),
            groups: (0..GROUPS).map(|_| GroupModel::new()).collect(),
            check_response_durability: true,
            log: None,
        }
    }

    /// Keep a line per action and per response (for traces); off by default.
    pub fn keep_log(&mut self, keep: bool) {
        self.log = keep.then(Vec::new);
    }

    /// The lines logged since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        match &mut self.log {
            Some(l) => std::mem::take(l),
            None => Vec::new(),
        }
    }

    pub fn coordinator(&self) -> &GroupCoordinator {
        &self.coordinator
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Virtual time since the start.
    pub fn elapsed_ms(&self) -> u64 {
        (self.now_ms - START_MS) as u64
    }

    /// Actions applied.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Coordinator inputs (requests, ticks, persist settlements, restarts) so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Coordinator crashes so far.
    pub fn crashes(&self) -> u64 {
        self.incarnation
    }

    /// Records in the durable log.
    pub fn durable_records(&self) -> usize {
        self.durable.len()
    }

    /// Requests not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(l) = &mut self.log {
            l.push(line());
        }
    }

    fn violation(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            step: self.steps,
            invariant,
            detail,
        }
    }

    /// Apply every action in turn, stopping at the first violation.
    pub fn run(&mut self, actions: &[GroupAction]) -> Result<(), Violation> {
        for a in actions {
            self.step(*a)?;
        }
        Ok(())
    }

    /// Apply one action, then check the invariants.
    pub fn step(&mut self, action: GroupAction) -> Result<(), Violation> {
        self.steps += 1;
        self.note(|| format!("{action:?}"));
        match action {
            GroupAction::Act { client } => self.act(usize::from(client) % CLIENTS)?,
            GroupAction::Join { client } => self.join(usize::from(client) % CLIENTS)?,
            GroupAction::Restart { client } => {
                let c = &mut self.clients[usize::from(client) % CLIENTS];
                c.forget();
            }
            GroupAction::Sync { client } => self.sync(usize::from(client) % CLIENTS)?,
            GroupAction::Heartbeat { client } => self.heartbeat(usize::from(client) % CLIENTS)?,
            GroupAction::Leave { client } => self.leave(usize::from(client) % CLIENTS)?,
            GroupAction::Commit { client, commit_as } => {
                self.commit(usize::from(client) % CLIENTS, commit_as)?
            }
            GroupAction::Fetch { group } => self.fetch(usize::from(group) % GROUPS)?,
            GroupAction::OffsetDelete { group, partition } => {
                let partition = i32::from(partition) % PARTITIONS;
                self.offset_delete(usize::from(group) % GROUPS, partition)?
            }
            GroupAction::Describe { group } => {
                let group = usize::from(group) % GROUPS;
                let mut r = DescribeGroupsRequest::default();
                r.groups = vec![GroupId(s(&group_name(group)))];
                self.send(None, group, 5, Sent::Describe, GroupRequest::Describe(r))?;
            }
            GroupAction::List => {
                let r = ListGroupsRequest::default();
                self.send(None, 0, 4, Sent::List, GroupRequest::List(r))?;
            }
            GroupAction::DeleteGroup { group } => self.delete_group(usize::from(group) % GROUPS)?,
            GroupAction::Advance { ms } => self.advance(i64::from(ms.clamp(1, ADVANCE_MS_MAX)))?,
            GroupAction::Persist { records } => self.settle(records, true)?,
            GroupAction::PersistFail { records } => self.settle(records, false)?,
            GroupAction::Crash => self.crash()?,
        }
        self.check()
    }

    /// Drain: persist everything and let time pass until nothing is parked, then check that
    /// every request was answered. Call at the end of a run.
    pub fn finish(&mut self) -> Result<(), Violation> {
        for _ in 0..10 {
            self.settle(0, true)?;
            self.advance(i64::from(REBALANCE_TIMEOUT_MS) + 1)?;
            self.check()?;
        }
        self.settle(0, true)?;
        self.check()?;
        if let Some((id, o)) = self.outstanding.iter().next() {
            return Err(self.violation(
                "liveness",
                format!(
                    "{} requests never answered, e.g. {id}: {:?} from client {:?}",
                    self.outstanding.len(),
                    o.sent,
                    o.client
                ),
            ));
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Clients

    fn act(&mut self, c: usize) -> Result<(), Violation> {
        let cl = &mut self.clients[c];
        cl.acts += 1;
        if cl.join_in_flight.is_some() || cl.sync_in_flight.is_some() {
            return Ok(()); // waiting for the coordinator
        }
        let (phase, acts) = (cl.phase, cl.acts);
        match phase {
            Phase::Unjoined => self.join(c),
            Phase::Syncing => self.sync(c),
            Phase::Stable if acts % 3 == 0 => self.commit(c, CommitAs::Current),
            Phase::Stable => self.heartbeat(c),
        }
    }

    fn join(&mut self, c: usize) -> Result<(), Violation> {
        let cl = &self.clients[c];
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(s(&group_name(cl.group)));
        r.session_timeout_ms = SESSION_TIMEOUT_MS;
        r.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
        r.member_id = s(&cl.member_id);
        r.group_instance_id = cl.instance.as_deref().map(s);
        r.protocol_type = s("consumer");
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s(PROTOCOL);
        p.metadata = Bytes::from(vec![c as u8]);
        r.protocols = vec![p];
        let group = cl.group;
        // The response may come at once: the client waits for the id `send` will use.
        self.clients[c].join_in_flight = Some(self.next_request_id + 1);
        self.send(Some(c), group, 7, Sent::Join, GroupRequest::Join(r))?;
        Ok(())
    }

    fn sync(&mut self, c: usize) -> Result<(), Violation> {
        let cl = &self.clients[c];
        let group = cl.group;
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        r.generation_id = cl.generation;
        r.member_id = s(&cl.member_id);
        r.group_instance_id = cl.instance.as_deref().map(s);
        r.protocol_type = Some(s("consumer"));
        r.protocol_name = Some(s(PROTOCOL));
        if !cl.member_id.is_empty() && cl.leader == cl.member_id {
            // Round-robin: member i of the join response gets partitions i, i+n, ...
            let n = cl.members.len().max(1) as i32;
            r.assignments = cl
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let a = Assignment {
                        generation: cl.generation,
                        leader_client: c as u8,
                        partitions: (0..PARTITIONS).filter(|p| p % n == i as i32).collect(),
                    };
                    let mut x = SyncGroupRequestAssignment::default();
                    x.member_id = s(m);
                    x.assignment = a.encode();
                    x
                })
                .collect();
        }
        let sent = Sent::Sync {
            generation: cl.generation,
            member_id: cl.member_id.clone(),
            fenced: self.groups[group].fenced.contains(&cl.member_id),
        };
        self.clients[c].sync_in_flight = Some(self.next_request_id + 1);
        self.send(Some(c), group, 5, sent, GroupRequest::Sync(r))?;
        Ok(())
    }

    fn heartbeat(&mut self, c: usize) -> Result<(), Violation> {
        let cl = &self.clients[c];
        let group = cl.group;
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        r.generation_id = cl.generation;
        r.member_id = s(&cl.member_id);
        r.group_instance_id = cl.instance.as_deref().map(s);
        let sent = Sent::Heartbeat {
            member_id: cl.member_id.clone(),
            fenced: self.groups[group].fenced.contains(&cl.member_id),
        };
        self.send(Some(c), group, 4, sent, GroupRequest::Heartbeat(r))?;
        Ok(())
    }

    fn leave(&mut self, c: usize) -> Result<(), Violation> {
        let cl = &self.clients[c];
        let group = cl.group;
        let mut r = LeaveGroupRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        let mut m = MemberIdentity::default();
        m.member_id = s(&cl.member_id);
        m.group_instance_id = cl.instance.as_deref().map(s);
        r.members = vec![m];
        self.clients[c].forget();
        self.send(Some(c), group, 4, Sent::Leave, GroupRequest::Leave(r))?;
        Ok(())
    }

    fn commit(&mut self, c: usize, commit_as: CommitAs) -> Result<(), Violation> {
        let cl = &self.clients[c];
        let group = cl.group;
        let (member_id, generation, instance) = match commit_as {
            CommitAs::Current => (cl.member_id.clone(), cl.generation, cl.instance.clone()),
            CommitAs::PreviousGeneration => {
                (cl.member_id.clone(), cl.generation - 1, cl.instance.clone())
            }
            CommitAs::NextGeneration => {
                (cl.member_id.clone(), cl.generation + 1, cl.instance.clone())
            }
            CommitAs::Zombie => match cl.zombies.last() {
                Some((id, g)) => (id.clone(), *g, cl.instance.clone()),
                None => (cl.member_id.clone(), cl.generation, cl.instance.clone()),
            },
            CommitAs::Standalone => (String::new(), -1, None),
        };
        let partitions = if cl.assignment.is_empty() {
            vec![c as i32 % PARTITIONS]
        } else {
            cl.assignment.clone()
        };
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(s(TOPIC));
        for p in partitions {
            let mut x = OffsetCommitRequestPartition::default();
            x.partition_index = p;
            x.committed_offset = self.next_offset;
            self.next_offset += 1;
            x.committed_leader_epoch = 1;
            x.committed_metadata = Some(s(""));
            topic.partitions.push(x);
        }
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        r.generation_id_or_member_epoch = generation;
        r.member_id = s(&member_id);
        r.group_instance_id = instance.as_deref().map(s);
        r.topics = vec![topic];
        let g = &self.groups[group];
        let sent = Sent::Commit {
            generation,
            fenced: g.fenced.contains(&member_id),
            member_id,
            synced_generation: g.synced_generation,
            issued_generation: g.issued_generation,
        };
        self.send(Some(c), group, 8, sent, GroupRequest::OffsetCommit(r))?;
        Ok(())
    }

    fn fetch(&mut self, group: usize) -> Result<(), Violation> {
        let mut t = OffsetFetchRequestTopic::default();
        t.name = TopicName(s(TOPIC));
        t.partition_indexes = (0..PARTITIONS).collect();
        let mut r = OffsetFetchRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        r.topics = Some(vec![t]);
        self.send(None, group, 7, Sent::Fetch, GroupRequest::OffsetFetch(r))?;
        Ok(())
    }

    fn offset_delete(&mut self, group: usize, partition: i32) -> Result<(), Violation> {
        let mut p = OffsetDeleteRequestPartition::default();
        p.partition_index = partition;
        let mut t = OffsetDeleteRequestTopic::default();
        t.name = TopicName(s(TOPIC));
        t.partitions = vec![p];
        let mut r = OffsetDeleteRequest::default();
        r.group_id = GroupId(s(&group_name(group)));
        r.topics = vec![t];
        self.send(
            None,
            group,
            0,
            Sent::OffsetDelete,
            GroupRequest::OffsetDelete(r),
        )?;
        Ok(())
    }

    fn delete_group(&mut self, group: usize) -> Result<(), Violation> {
        let name = group_name(group);
        if self.coordinator.group_state(&name) == Some("Empty") {
            // It will be deleted (from memory at once, from the log once the tombstone is
            // durable): a new group of that name starts over at generation 0.
            let m = &mut self.groups[group];
            let issued = m.issued_generation.max(m.delete_in_doubt.unwrap_or(0));
            m.delete_in_doubt = Some(issued);
            m.seen_generation = 0;
            m.synced_generation = 0;
            m.issued_generation = 0;
            m.assignments.clear();
        }
        let mut r = DeleteGroupsRequest::default();
        r.groups_names = vec![GroupId(s(&name))];
        self.send(None, group, 2, Sent::Delete, GroupRequest::Delete(r))?;
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // The coordinator's inputs

    fn send(
        &mut self,
        client: Option<usize>,
        group: usize,
        version: i16,
        sent: Sent,
        request: GroupRequest,
    ) -> Result<RequestId, Violation> {
        self.next_request_id += 1;
        let id = self.next_request_id;
        self.outstanding.insert(
            id,
            Outstanding {
                client,
                group,
                sent,
            },
        );
        let client_id = match client {
            Some(c) => format!("c{c}"),
            None => "admin".to_string(),
        };
        self.events += 1;
        self.coordinator
            .handle(self.now_ms, id, version, &client_id, "/10.0.0.1", request);
        self.pump(Some(id))?;
        Ok(id)
    }

    fn advance(&mut self, ms: i64) -> Result<(), Violation> {
        self.now_ms += ms;
        self.events += 1;
        self.coordinator.tick(self.now_ms);
        self.pump(None)?;
        if let Some(t) = self.coordinator.poll_timeout() {
            if t <= self.now_ms {
                return Err(self.violation(
                    "timers",
                    format!("a timer at {t} is still due after tick({})", self.now_ms),
                ));
            }
        }
        Ok(())
    }

    /// The oldest `records` pending records (0: all) become durable (`ok`) or fail.
    fn settle(&mut self, records: u8, ok: bool) -> Result<(), Violation> {
        let n = match records {
            0 => self.pending.len(),
            n => usize::from(n).min(self.pending.len()),
        };
        if n == 0 {
            return Ok(());
        }
        let mut last = 0;
        for _ in 0..n {
            let p = self.pending.pop_front().expect("n <= pending");
            last = p.id;
            if ok {
                self.durable_seqs.insert(p.seq);
                self.durable.push((p.seq, p.record));
            }
        }
        self.note(|| {
            format!(
                "  {} records through #{last} {}",
                n,
                if ok { "durable" } else { "failed" }
            )
        });
        self.events += 1;
        if ok {
            self.coordinator.persisted(last, self.now_ms);
        } else {
            self.coordinator.persist_failed(last, self.now_ms);
        }
        self.pump(None)
    }

    /// The coordinator crashes: pending records are lost, requests in flight are never
    /// answered, and a new coordinator replays the durable log. Then an auditor fetches every
    /// group's offsets.
    fn crash(&mut self) -> Result<(), Violation> {
        self.pending.clear();
        self.request_records.clear();
        self.outstanding.clear();
        for c in &mut self.clients {
            c.join_in_flight = None;
            c.sync_in_flight = None;
        }
        self.incarnation += 1;
        let seed = self
            .seed
            .wrapping_add(self.incarnation.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.coordinator = GroupCoordinator::new(self.config.clone(), seed);
        for (_, record) in &self.durable {
            self.coordinator.replay(record.clone());
        }
        self.coordinator.loaded(self.now_ms);
        self.events += 1;
        for g in &mut self.groups {
            g.seen_generation = 0;
            if let Some(issued) = g.delete_in_doubt.take() {
                // The deleted group may be back (its tombstone was lost or failed), or the log
                // may end with a new group of that name: either's generations may follow.
                g.issued_generation = g.issued_generation.max(issued);
                g.synced_generation = 0;
                g.assignments.clear();
            }
        }
        let durable = self.durable.len();
        self.note(|| format!("  restarted from {durable} durable records"));
        self.pump(None)?;
        self.check()?;
        for group in 0..GROUPS {
            self.fetch(group)?;
        }
        Ok(())
    }

    /// Collect the records and responses the coordinator produced; `origin` is the request
    /// being handled, if any.
    fn pump(&mut self, origin: Option<RequestId>) -> Result<(), Violation> {
        while let Some((id, record)) = self.coordinator.poll_record() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.observe_record(seq, &record);
            if let Some(rid) = origin {
                self.request_records
                    .entry(rid)
                    .or_default()
                    .push((seq, record.clone()));
            }
            self.pending.push_back(PendingRecord { id, seq, record });
        }
        while let Some((id, response)) = self.coordinator.poll_response() {
            self.route(id, response)?;
        }
        Ok(())
    }

    fn group_index(name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix('g')?.parse().ok()?;
        (i < GROUPS && group_name(i) == name).then_some(i)
    }

    /// A record was written: OffsetFetch may return what it says from now on.
    fn observe_record(&mut self, seq: u64, record: &GroupRecord) {
        let Some(g) = Self::group_index(record.group()) else {
            return;
        };
        let m = &mut self.groups[g];
        match record {
            GroupRecord::Offset {
                topic,
                partition,
                offset,
                ..
            } if topic == TOPIC => {
                if let Some(c) = m.offsets.get_mut(partition) {
                    c.push((seq, *offset));
                }
            }
            GroupRecord::OffsetTombstone {
                topic, partition, ..
            } if topic == TOPIC => {
                if let Some(c) = m.offsets.get_mut(partition) {
                    c.push((seq, -1));
                }
            }
            GroupRecord::GroupTombstone { .. } => {
                for c in m.offsets.values_mut() {
                    c.push((seq, -1));
                }
            }
            _ => {}
        }
    }

    /// The write at `seq` to `partition` of `group` was acknowledged: what came before it can
    /// never be read again.
    fn acknowledged(&mut self, group: usize, partition: i32, seq: u64) {
        if let Some(c) = self.groups[group].offsets.get_mut(&partition) {
            c.retain(|(s, _)| *s >= seq);
        }
    }

    /// The records of request `id` must be durable before it is answered with success.
    fn require_durable(&self, id: RequestId, what: &str) -> Result<(), Violation> {
        if !self.check_response_durability {
            return Ok(());
        }
        for (seq, record) in self.request_records.get(&id).into_iter().flatten() {
            if !self.durable_seqs.contains(seq) {
                return Err(self.violation(
                    "durability",
                    format!("{what} answered with success before its record #{seq} was durable: {record:?}"),
                ));
            }
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Responses

    fn route(&mut self, id: RequestId, response: GroupResponse) -> Result<(), Violation> {
        let Some(o) = self.outstanding.remove(&id) else {
            return Err(self.violation(
                "exactly-once",
                format!("response to request {id}, which is not outstanding: {response:?}"),
            ));
        };
        let result = self.check_response(id, &o, response);
        self.request_records.remove(&id);
        result
    }

    fn check_response(
        &mut self,
        id: RequestId,
        o: &Outstanding,
        response: GroupResponse,
    ) -> Result<(), Violation> {
        let group = o.group;
        match (&o.sent, response) {
            (Sent::Join, GroupResponse::Join(r)) => {
                let c = o.client.expect("clients join");
                self.note(|| {
                    format!(
                        "  c{c} join {} gen {} member {} leader {}",
                        error_name(r.error_code),
                        r.generation_id,
                        r.member_id,
                        r.leader
                    )
                });
                if r.error_code == 0 {
                    self.require_durable(id, "JoinGroup")?;
                    let m = &mut self.groups[group];
                    m.issued_generation = m.issued_generation.max(r.generation_id);
                    if r.generation_id < m.synced_generation {
                        return Err(self.violation(
                            "generation",
                            format!(
                                "c{c} joined generation {} of {} after generation {} completed",
                                r.generation_id,
                                group_name(group),
                                self.groups[group].synced_generation
                            ),
                        ));
                    }
                }
                let cl = &mut self.clients[c];
                if cl.join_in_flight != Some(id) {
                    return Ok(()); // superseded
                }
                cl.join_in_flight = None;
                match r.error_code {
                    0 => {
                        cl.member_id = r.member_id.to_string();
                        cl.generation = r.generation_id;
                        cl.leader = r.leader.to_string();
                        cl.members = r.members.iter().map(|m| m.member_id.to_string()).collect();
                        cl.phase = Phase::Syncing;
                        cl.assignment.clear();
                    }
                    e if e == code(ResponseError::MemberIdRequired) => {
                        cl.member_id = r.member_id.to_string();
                        cl.phase = Phase::Unjoined;
                    }
                    e if e == code(ResponseError::UnknownMemberId)
                        || e == code(ResponseError::FencedInstanceId) =>
                    {
                        cl.forget()
                    }
                    _ => cl.rejoin(),
                }
            }
            (
                Sent::Sync {
                    generation,
                    member_id,
                    fenced,
                },
                GroupResponse::Sync(r),
            ) => {
                let c = o.client.expect("clients sync");
                self.note(|| {
                    format!(
                        "  c{c} sync {} gen {generation} {:?}",
                        error_name(r.error_code),
                        Assignment::decode(&r.assignment).map(|a| a.partitions)
                    )
                });
                if r.error_code == 0 {
                    self.sync_succeeded(
                        id,
                        c,
                        group,
                        *generation,
                        member_id,
                        *fenced,
                        &r.assignment,
                    )?;
                }
                let cl = &mut self.clients[c];
                if cl.sync_in_flight == Some(id) {
                    cl.sync_in_flight = None;
                }
                if cl.member_id != *member_id || cl.generation != *generation {
                    return Ok(()); // the client moved on
                }
                match r.error_code {
                    0 => {
                        cl.phase = Phase::Stable;
                        cl.assignment = Assignment::decode(&r.assignment)
                            .map(|a| a.partitions)
                            .unwrap_or_default();
                    }
                    e if e == code(ResponseError::UnknownMemberId)
                        || e == code(ResponseError::FencedInstanceId) =>
                    {
                        cl.forget()
                    }
                    _ => cl.rejoin(),
                }
            }
            (Sent::Heartbeat { member_id, fenced }, GroupResponse::Heartbeat(r)) => {
                let c = o.client.expect("clients heartbeat");
                self.note(|| format!("  c{c} heartbeat {}", error_name(r.error_code)));
                if r.error_code == 0 && *fenced {
                    return Err(self.violation(
                        "fencing",
                        format!("c{c}: Heartbeat of replaced static member {member_id} succeeded"),
                    ));
                }
                let cl = &mut self.clients[c];
                if cl.member_id != *member_id {
                    return Ok(());
                }
                match r.error_code {
                    0 => {}
                    e if e == code(ResponseError::UnknownMemberId)
                        || e == code(ResponseError::FencedInstanceId) =>
                    {
                        cl.forget()
                    }
                    e if (e == code(ResponseError::RebalanceInProgress)
                        || e == code(ResponseError::IllegalGeneration))
                        && cl.join_in_flight.is_none() =>
                    {
                        cl.rejoin()
                    }
                    _ => {}
                }
            }
            (Sent::Leave, GroupResponse::Leave(r)) => {
                self.note(|| format!("  leave {}", error_name(r.error_code)));
            }
            (
                Sent::Commit {
                    generation,
                    member_id,
                    fenced,
                    synced_generation,
                    issued_generation,
                },
                GroupResponse::OffsetCommit(r),
            ) => {
                let c = o.client.expect("clients commit");
                let mut errors = BTreeSet::new();
                let mut acked = Vec::new();
                for t in &r.topics {
                    for p in &t.partitions {
                        if p.error_code == 0 {
                            acked.push(p.partition_index);
                        } else {
                            errors.insert(p.error_code);
                        }
                    }
                }
                self.note(|| {
                    format!(
                        "  c{c} commit gen {generation} acked {acked:?} errors {:?}",
                        errors.iter().map(|e| error_name(*e)).collect::<Vec<_>>()
                    )
                });
                if !acked.is_empty() {
                    self.require_durable(id, "OffsetCommit")?;
                    let stale = *generation >= 0
                        && (*generation < *synced_generation || *generation > *issued_generation);
                    // A generation below 0 on an Empty group is a standalone commit, which
                    // Kafka accepts whatever the member id.
                    if stale || (*fenced && *generation >= 0) {
                        return Err(self.violation(
                            "fencing",
                            format!(
                                "c{c}: OffsetCommit by {member_id:?} generation {generation} acknowledged \
                                 (completed generation {synced_generation}, highest issued \
                                 {issued_generation}, replaced static member: {fenced})"
                            ),
                        ));
                    }
                    let records: Vec<(u64, i32)> = self
                        .request_records
                        .get(&id)
                        .into_iter()
                        .flatten()
                        .filter_map(|(seq, r)| match r {
                            GroupRecord::Offset { partition, .. } => Some((*seq, *partition)),
                            _ => None,
                        })
                        .collect();
                    for p in acked {
                        let Some((seq, _)) = records.iter().find(|(_, q)| *q == p) else {
                            return Err(self.violation(
                                "durability",
                                format!("c{c}: OffsetCommit of partition {p} acknowledged without a record"),
                            ));
                        };
                        self.acknowledged(group, p, *seq);
                    }
                }
                if *fenced && *generation >= 0 {
                    let allowed = [
                        ResponseError::FencedInstanceId,
                        ResponseError::UnknownMemberId,
                        ResponseError::IllegalGeneration,
                        ResponseError::CoordinatorNotAvailable,
                    ];
                    if let Some(e) = errors
                        .iter()
                        .find(|e| !allowed.iter().any(|a| a.code() == **e))
                    {
                        return Err(self.violation(
                            "fencing",
                            format!(
                                "c{c}: replaced static member {member_id} got {} for OffsetCommit, \
                                 not FENCED_INSTANCE_ID",
                                error_name(*e)
                            ),
                        ));
                    }
                }
                let cl = &mut self.clients[c];
                if cl.member_id == *member_id && cl.generation == *generation {
                    if errors.contains(&code(ResponseError::UnknownMemberId))
                        || errors.contains(&code(ResponseError::FencedInstanceId))
                    {
                        cl.forget();
                    } else if (errors.contains(&code(ResponseError::RebalanceInProgress))
                        || errors.contains(&code(ResponseError::IllegalGeneration)))
                        && cl.join_in_flight.is_none()
                    {
                        cl.rejoin();
                    }
                }
            }
            (Sent::Fetch, GroupResponse::OffsetFetch(r)) => {
                self.check_fetch(group, &r)?;
            }
            (Sent::OffsetDelete, GroupResponse::OffsetDelete(r)) => {
                let deleted: Vec<i32> = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .filter(|p| r.error_code == 0 && p.error_code == 0)
                    .map(|p| p.partition_index)
                    .collect();
                self.note(|| format!("  offset delete {} {deleted:?}", error_name(r.error_code)));
                if !deleted.is_empty() {
                    self.require_durable(id, "OffsetDelete")?;
                    let tombstones: Vec<(u64, i32)> = self
                        .request_records
                        .get(&id)
                        .into_iter()
                        .flatten()
                        .filter_map(|(seq, r)| match r {
                            GroupRecord::OffsetTombstone { partition, .. } => {
                                Some((*seq, *partition))
                            }
                            _ => None,
                        })
                        .collect();
                    for (seq, p) in tombstones {
                        self.acknowledged(group, p, seq);
                    }
                }
            }
            (Sent::Describe, GroupResponse::Describe(r)) => {
                self.note(|| {
                    let d = r.groups.first();
                    format!(
                        "  describe {} {} members",
                        d.map_or("-".to_string(), |d| d.group_state.to_string()),
                        d.map_or(0, |d| d.members.len())
                    )
                });
            }
            (Sent::List, GroupResponse::List(r)) => {
                self.note(|| format!("  list {} groups", r.groups.len()));
            }
            (Sent::Delete, GroupResponse::Delete(r)) => {
                let ok = r.results.iter().any(|x| x.error_code == 0);
                self.note(|| {
                    format!(
                        "  delete {:?}",
                        r.results
                            .iter()
                            .map(|x| error_name(x.error_code))
                            .collect::<Vec<_>>()
                    )
                });
                if ok {
                    self.require_durable(id, "DeleteGroups")?;
                    self.groups[group].delete_in_doubt = None;
                    let tombstone = self
                        .request_records
                        .get(&id)
                        .into_iter()
                        .flatten()
                        .find(|(_, r)| matches!(r, GroupRecord::GroupTombstone { .. }))
                        .map(|(seq, _)| *seq);
                    if let Some(seq) = tombstone {
                        for p in 0..PARTITIONS {
                            self.acknowledged(group, p, seq);
                        }
                    }
                }
            }
            (sent, response) => {
                return Err(self.violation(
                    "exactly-once",
                    format!("request {id} ({sent:?}) answered with {response:?}"),
                ))
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_succeeded(
        &mut self,
        id: RequestId,
        c: usize,
        group: usize,
        generation: i32,
        member_id: &str,
        fenced: bool,
        assignment: &Bytes,
    ) -> Result<(), Violation> {
        if fenced {
            return Err(self.violation(
                "fencing",
                format!("c{c}: SyncGroup of replaced static member {member_id} succeeded"),
            ));
        }
        self.require_durable(id, "SyncGroup")?;
        let name = group_name(group);
        let durable = self.durable.iter().any(|(_, r)| match r {
            GroupRecord::Group {
                group: g,
                generation: gen,
                members,
                ..
            } => {
                *g == name
                    && *gen == generation
                    && members
                        .iter()
                        .any(|m| m.member_id == member_id && m.assignment[..] == assignment[..])
            }
            _ => false,
        });
        if !durable {
            return Err(self.violation(
                "durability",
                format!(
                    "c{c}: SyncGroup of {name} generation {generation} answered with an assignment \
                     no durable Group record holds"
                ),
            ));
        }
        let Some(a) = Assignment::decode(assignment) else {
            return Err(self.violation(
                "assignment",
                format!("c{c}: {name} generation {generation}: assignment {assignment:?} is not the leader's"),
            ));
        };
        if a.generation != generation {
            return Err(self.violation(
                "assignment",
                format!(
                    "c{c}: {name} generation {generation}: got generation {}'s assignment",
                    a.generation
                ),
            ));
        }
        let cl = &self.clients[c];
        if cl.member_id == member_id && cl.generation == generation {
            let leader_client = member_id_client(&cl.leader);
            if leader_client != Some(usize::from(a.leader_client)) {
                return Err(self.violation(
                    "assignment",
                    format!(
                        "c{c}: {name} generation {generation}: assignment made by c{}, but the \
                         leader was {} (c{leader_client:?})",
                        a.leader_client, cl.leader
                    ),
                ));
            }
        }
        let m = &mut self.groups[group];
        let received = m.assignments.entry(generation).or_default();
        for (other, partitions) in received.iter() {
            if *other != c {
                if let Some(p) = partitions.iter().find(|p| a.partitions.contains(p)) {
                    return Err(Violation {
                        step: self.steps,
                        invariant: "assignment",
                        detail: format!(
                            "{name} generation {generation}: partition {p} assigned to both c{other} and c{c}"
                        ),
                    });
                }
            }
        }
        received.insert(c, a.partitions);
        m.synced_generation = m.synced_generation.max(generation);
        // Older member ids of this static member's instance are fenced for good.
        if self.clients[c].instance.is_some() {
            let zombies: Vec<String> = self.clients[c]
                .zombies
                .iter()
                .map(|(z, _)| z.clone())
                .collect();
            self.groups[group]
                .fenced
                .extend(zombies.into_iter().filter(|z| z != member_id));
        }
        Ok(())
    }

    fn check_fetch(
        &mut self,
        group: usize,
        r: &kafka_protocol::messages::OffsetFetchResponse,
    ) -> Result<(), Violation> {
        let name = group_name(group);
        if r.error_code != 0 {
            return Err(self.violation(
                "offsets",
                format!("OffsetFetch of {name} failed: {}", error_name(r.error_code)),
            ));
        }
        let mut seen = Vec::new();
        for t in &r.topics {
            for p in &t.partitions {
                seen.push((p.partition_index, p.committed_offset));
                let allowed: Vec<i64> = self.groups[group]
                    .offsets
                    .get(&p.partition_index)
                    .map(|c| c.iter().map(|(_, o)| *o).collect())
                    .unwrap_or_default();
                if t.name.0.as_str() != TOPIC || !allowed.contains(&p.committed_offset) {
                    return Err(self.violation(
                        "offsets",
                        format!(
                            "OffsetFetch of {name} {}-{} returned {}; acknowledged history allows {allowed:?}",
                            t.name.0.as_str(),
                            p.partition_index,
                            p.committed_offset
                        ),
                    ));
                }
            }
        }
        self.note(|| format!("  fetch {name} {seen:?}"));
        Ok(())
    }

    // -------------------------------------------------------------------------------------
    // Checks after every action

    fn check(&mut self) -> Result<(), Violation> {
        self.coordinator.check_invariants();
        for group in 0..GROUPS {
            let name = group_name(group);
            let generation = self.coordinator.group_generation(&name);
            let m = &self.groups[group];
            match generation {
                Some(g) if g < m.seen_generation => {
                    return Err(self.violation(
                        "generation",
                        format!("{name}: generation went from {} to {g}", m.seen_generation),
                    ));
                }
                Some(g) if g < m.synced_generation => {
                    return Err(self.violation(
                        "generation",
                        format!(
                            "{name}: generation {g} after members completed generation {}",
                            m.synced_generation
                        ),
                    ));
                }
                None if m.synced_generation > 0 => {
                    return Err(self.violation(
                        "generation",
                        format!(
                            "{name} is gone though members completed generation {} and it was \
                             not deleted",
                            m.synced_generation
                        ),
                    ));
                }
                _ => {}
            }
            self.groups[group].seen_generation = generation.unwrap_or(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use GroupAction::*;

    /// Everyone in group g0 (clients 0, 2, 4) joins, syncs, and is Stable.
    fn stable_g0(h: &mut GroupHarness) {
        h.keep_log(true);
        for c in [0, 2, 4] {
            h.step(Act { client: c }).unwrap(); // join (dynamic: MEMBER_ID_REQUIRED)
        }
        for c in [0, 2] {
            h.step(Act { client: c }).unwrap(); // join with the member id
        }
        h.step(Advance { ms: 3_000 }).unwrap(); // initial rebalance delay
        h.step(Advance { ms: 3_000 }).unwrap();
        for c in [0, 2, 4] {
            h.step(Act { client: c }).unwrap(); // sync
        }
        h.step(Persist { records: 0 }).unwrap();
        let log = h.take_log();
        h.keep_log(false);
        assert_eq!(
            h.coordinator().group_state("g0"),
            Some("Stable"),
            "{log:#?}"
        );
        for c in [0, 2, 4] {
            assert_eq!(h.clients[c].phase, Phase::Stable, "c{c} {log:#?}");
        }
        let mut all: Vec<i32> = [0, 2, 4]
            .iter()
            .flat_map(|c| h.clients[*c].assignment.clone())
            .collect();
        all.sort();
        assert_eq!(all, (0..PARTITIONS).collect::<Vec<_>>());
    }

    #[test]
    fn assignment_round_trips() {
        let a = Assignment {
            generation: 7,
            leader_client: 3,
            partitions: vec![1, 3],
        };
        assert_eq!(Assignment::decode(&a.encode()), Some(a));
        assert_eq!(Assignment::decode(b""), None);
        assert_eq!(member_id_client("i5-8ff3-2"), Some(5));
        assert_eq!(member_id_client("c0-7-1"), Some(0));
        assert_eq!(member_id_client("x1-7-1"), None);
    }

    #[test]
    fn actions_round_trip_through_bytes() {
        let mut pick_state = 12345u64;
        let mut pick = |n: u32| {
            pick_state = pick_state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((pick_state >> 33) % u64::from(n)) as u32
        };
        for _ in 0..2_000 {
            let a = GroupAction::choose(&mut pick);
            let mut bytes = Vec::new();
            a.encode(&mut bytes);
            let mut data = &bytes[..];
            assert_eq!(GroupAction::decode(&mut data), Some(a));
            assert!(data.is_empty());
        }
    }

    #[test]
    fn three_members_share_the_partitions_and_commits_survive_a_crash() {
        let mut h = GroupHarness::new(1);
        stable_g0(&mut h);
        for c in [0, 2, 4] {
            h.step(Commit {
                client: c,
                commit_as: CommitAs::Current,
            })
            .unwrap();
        }
        h.step(Persist { records: 0 }).unwrap();
        h.step(Crash).unwrap();
        h.step(Fetch { group: 0 }).unwrap();
        // Clients carry on in the loaded generation.
        for c in [0u8, 2, 4] {
            h.step(Heartbeat { client: c }).unwrap();
            assert_eq!(h.clients[usize::from(c)].phase, Phase::Stable);
        }
        h.finish().unwrap();
    }

    #[test]
    fn a_commit_lost_in_a_crash_was_never_acknowledged() {
        let mut h = GroupHarness::new(2);
        stable_g0(&mut h);
        h.step(Commit {
            client: 0,
            commit_as: CommitAs::Current,
        })
        .unwrap();
        assert_eq!(h.outstanding(), 1, "the commit waits for its record");
        h.step(Crash).unwrap(); // the auditor's fetch finds no offset: fine, none was acked
        assert_eq!(h.outstanding(), 0);
        let allowed = &h.groups[0].offsets[&h.clients[0].assignment[0]];
        assert!(allowed.iter().any(|(_, o)| *o == -1));
        h.finish().unwrap();
    }

    #[test]
    fn a_failed_persist_answers_the_commit_with_an_error() {
        let mut h = GroupHarness::new(3);
        stable_g0(&mut h);
        h.step(Commit {
            client: 2,
            commit_as: CommitAs::Current,
        })
        .unwrap();
        h.step(PersistFail { records: 0 }).unwrap();
        assert_eq!(h.outstanding(), 0);
        h.step(Fetch { group: 0 }).unwrap();
        h.finish().unwrap();
    }

    /// A commit of two partitions whose first record fails and second persists must not be
    /// acknowledged (found by the proptest: the coordinator answered success).
    #[test]
    fn a_commit_straddling_a_failed_persist_is_not_acknowledged() {
        let mut h = GroupHarness::new(6);
        stable_g0(&mut h);
        assert_eq!(h.clients[0].assignment.len(), 2);
        h.step(Commit {
            client: 0,
            commit_as: CommitAs::Current,
        })
        .unwrap();
        h.step(PersistFail { records: 1 }).unwrap();
        h.step(Persist { records: 1 }).unwrap();
        assert_eq!(h.outstanding(), 0);
        h.step(Crash).unwrap();
        h.finish().unwrap();
    }

    #[test]
    fn stale_and_zombie_commits_are_refused() {
        let mut h = GroupHarness::new(4);
        stable_g0(&mut h);
        h.step(Commit {
            client: 0,
            commit_as: CommitAs::PreviousGeneration,
        })
        .unwrap();
        h.step(Commit {
            client: 0,
            commit_as: CommitAs::NextGeneration,
        })
        .unwrap();
        assert_eq!(h.outstanding(), 0, "refused at once");
        // Static client 4 restarts: its new member takes over, the old id is fenced.
        let old = h.clients[4].member_id.clone();
        h.step(Restart { client: 4 }).unwrap();
        h.step(Act { client: 4 }).unwrap();
        h.step(Persist { records: 0 }).unwrap();
        assert_ne!(h.clients[4].member_id, old);
        h.step(Act { client: 4 }).unwrap(); // sync: the old assignment, same generation
        assert_eq!(h.clients[4].phase, Phase::Stable);
        assert!(h.groups[0].fenced.contains(&old));
        let mut log = Vec::new();
        h.keep_log(true);
        h.step(Commit {
            client: 4,
            commit_as: CommitAs::Zombie,
        })
        .unwrap();
        log.extend(h.take_log());
        assert!(
            log.iter().any(|l| l.contains("FencedInstanceId")),
            "the zombie is fenced: {log:?}"
        );
        h.finish().unwrap();
    }

    #[test]
    fn session_timeouts_and_rebalances_keep_the_invariants() {
        let mut h = GroupHarness::new(5);
        stable_g0(&mut h);
        h.step(Advance { ms: 11_000 }).unwrap(); // everyone's session expires
        assert_eq!(h.coordinator().group_state("g0"), Some("Empty"));
        h.step(Persist { records: 0 }).unwrap();
        h.step(Commit {
            client: 0,
            commit_as: CommitAs::Current,
        })
        .unwrap();
        for _ in 0..40 {
            for c in [0, 2, 4] {
                h.step(Act { client: c }).unwrap();
            }
            h.step(Advance { ms: 1_000 }).unwrap();
            h.step(Persist { records: 0 }).unwrap();
        }
        assert_eq!(h.coordinator().group_state("g0"), Some("Stable"));
        h.step(Crash).unwrap();
        h.step(DeleteGroup { group: 0 }).unwrap();
        h.finish().unwrap();
    }

    fn run_bytes(data: &[u8]) -> Result<(), Violation> {
        let mut h = GroupHarness::new(9);
        let mut data = data;
        while let Some(a) = GroupAction::decode(&mut data) {
            h.step(a)?;
        }
        h.finish()
    }

    fn run_chosen(picks: &[u32]) -> Result<(), Violation> {
        let mut h = GroupHarness::new(11);
        let mut next = picks.iter().copied().cycle();
        let mut pick = |n: u32| next.next().unwrap_or(0) % n;
        // Each action takes at most 3 picks.
        for _ in 0..picks.len() / 3 {
            let a = GroupAction::choose(&mut pick);
            h.step(a)?;
        }
        h.finish()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn arbitrary_bytes_keep_every_guarantee(data in prop::collection::vec(any::<u8>(), 0..800)) {
            if let Err(v) = run_bytes(&data) {
                panic!("{v}");
            }
        }

        #[test]
        fn chosen_actions_keep_every_guarantee(picks in prop::collection::vec(any::<u32>(), 0..1_500)) {
            if let Err(v) = run_chosen(&picks) {
                panic!("{v}");
            }
        }
    }
}
