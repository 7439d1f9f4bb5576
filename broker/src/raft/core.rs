//! RaftCore: one voter's KRaft state machine (KIP-595 elections and pull replication, KIP-996
//! pre-vote, KIP-630 snapshots), sans-IO. Inputs: [`RaftCore::step`] (a message),
//! [`RaftCore::tick`] (time), [`RaftCore::synced`] (storage durable), [`RaftCore::propose`] and
//! [`RaftCore::create_snapshot`]. Outputs: [`RaftCore::poll_storage`] (operations to perform in
//! order), [`RaftCore::poll_message`] (messages, released only once what they promise is
//! durable) and [`RaftCore::poll_timeout`] (the next deadline). It never reads a clock, sleeps
//! or does IO; its only randomness is a SplitMix64 stream seeded by the caller.
//!
//! Observers (Kafka's broker-only nodes) run the same core with a node id outside the voters:
//! they find the leader by fetching from any voter, follow it, and never vote, stand or count
//! toward the high watermark. The leader tracks at most [`OBSERVERS_MAX`] of them, for
//! DescribeQuorum.
//!
//! Rejoining: a voter that starts with nothing stored cannot tell a first start from a wiped or
//! replaced disk, and a wiped voter that voted or granted as if it still held what it
//! acknowledged could elect a leader missing committed entries. So it neither votes nor stands
//! until every other voter has answered its own probes with its epoch and log end, and it
//! follows no leader before then either (its old directory may have voted in a newer epoch than
//! the first leader it hears of, which must not count its fetches); it then moves to the
//! highest epoch heard and follows, counting toward the high watermark by what it truly holds.
//! It votes again once, also, either
//! every log was empty (nothing can have been committed: a first start) or it holds, durably, a
//! leader's high watermark in an epoch at least the highest it heard, with the entry below it
//! from that epoch (so every committed entry). It then moves past the highest epoch it heard,
//! so it never votes where its old directory may have. The first election always asks for
//! pre-votes, so the epoch stays 0 until a majority can vote. A leader resets a voter's progress when a fetch comes from another
//! process (its incarnation), and ignores fetches from incarnations it replaced, so an old
//! directory's acknowledgements never count after a new one is heard.
//!
//! Durability rules: a new epoch, a vote, or leadership is written with `PersistQuorumState`
//! and every message sent after it waits for the `Sync` that covers it; a follower's Fetch waits
//! for every earlier storage operation (so its fetch offset is its durable log end); the
//! leader counts only its own durable log end toward the high watermark.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::log::RaftLog;
use super::metadata::MetadataRecord;
use super::types::*;
use crate::planted::{self, PlantedBug};

/// Observers a leader tracks for DescribeQuorum; past this, the one heard from least recently
/// is forgotten.
pub const OBSERVERS_MAX: usize = 256;
/// An observer not heard from for this long is left out of DescribeQuorum (Kafka's observer
/// session, five minutes).
pub const OBSERVER_SESSION_MS: u64 = 300_000;

/// A node's role (Kafka's quorum states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Knows the epoch but no leader (may have voted: Kafka's "Voted").
    Unattached,
    /// Asking for pre-votes (KIP-996); the epoch is not bumped yet.
    Prospective,
    Candidate,
    Leader,
    Follower,
    /// Was leader of the current epoch and stepped down.
    Resigned,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Unattached => "unattached",
            Role::Prospective => "prospective",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Resigned => "resigned",
        }
    }
}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    NotLeader {
        leader: Option<NodeId>,
        epoch: i32,
    },
    /// Too many uncommitted entries: retry later.
    Backpressure,
    TooLarge,
}

/// What the caller's state machine should apply next (see [`RaftCore::committed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Load this snapshot (the applied offset is behind the log start).
    Snapshot(Snapshot),
    /// Apply these committed entries, in order.
    Entries(Vec<Entry>),
}

#[derive(Clone, Debug)]
struct Progress {
    /// The voter's durable log end, as far as it matches ours.
    end_offset: i64,
    last_fetch_ms: u64,
    fetched_in_epoch: bool,
    /// The last time the voter was known to have every entry the leader had (Kafka's
    /// lastCaughtUpTimestamp): at a fetch from the leader's log end, or at its previous fetch
    /// when this one starts at or past the log end the leader had then.
    last_caught_up_ms: Option<u64>,
    /// The leader's log end at the voter's last valid fetch (-1 before one).
    leader_end_at_last_fetch: i64,
    /// The process (broker incarnation) whose fetches `end_offset` counts; -1 before one that
    /// carries an incarnation.
    incarnation: i64,
    /// Incarnations replaced by a later one in this epoch: their late fetches count for
    /// nothing (that process may have been a wiped directory's).
    retired: Vec<i64>,
}

/// The election backoff's range doubles at most this many times (then stays at the election
/// timeout).
const ELECTION_BACKOFF_DOUBLINGS_MAX: u32 = 8;

/// Incarnations of one voter a leader remembers as replaced, per epoch.
const RETIRED_INCARNATIONS_MAX: usize = 8;

/// What a rejoining voter has learned (see the module doc); empty once it votes.
#[derive(Clone, Debug, Default)]
struct Rejoin {
    /// Each other voter's highest answered epoch, and whether its latest answer had an empty
    /// log, from answers to this process's own requests.
    heard: BTreeMap<NodeId, (i32, bool)>,
    /// When unanswered voters are probed next.
    next_probe_ms: u64,
    /// The latest leader high watermark this voter's log reached: (leader epoch, high
    /// watermark), where the entry below that high watermark is of that epoch.
    caught_up: Option<(i32, i64)>,
}

/// The quorum as its leader sees it (Kafka's DescribeQuorum): times are in the core's clock,
/// -1 where unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader: NodeId,
    pub epoch: i32,
    pub high_watermark: i64,
    /// Every voter, the leader included, by id.
    pub voters: Vec<ReplicaDescription>,
    /// Observers (broker-only nodes) that fetched within [`OBSERVER_SESSION_MS`], by id.
    pub observers: Vec<ReplicaDescription>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaDescription {
    pub id: NodeId,
    /// Its durable log end as far as it matches the leader's; -1 before its first fetch in
    /// this epoch.
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

#[derive(Clone, Debug)]
struct LeaderState {
    /// Offset of this epoch's LeaderChange entry: the high watermark may only pass it.
    epoch_start_offset: i64,
    progress: BTreeMap<NodeId, Progress>,
    /// Observers' fetches, at most [`OBSERVERS_MAX`]; never counted toward anything.
    observers: BTreeMap<NodeId, Progress>,
    /// Next time BeginQuorumEpoch is resent to voters that have not fetched.
    begin_resend_ms: u64,
}

#[derive(Clone, Debug)]
struct SnapshotDownload {
    id: SnapshotId,
    buf: Vec<u8>,
}

#[derive(Clone, Debug)]
struct FollowerState {
    leader: NodeId,
    /// Correlation id and send time of the outstanding Fetch / FetchSnapshot.
    in_flight: Option<(u64, u64)>,
    next_fetch_ms: u64,
    download: Option<SnapshotDownload>,
}

#[derive(Clone, Debug)]
enum State {
    Unattached,
    Prospective { granted: BTreeSet<NodeId> },
    Candidate { granted: BTreeSet<NodeId> },
    Leader(LeaderState),
    Follower(FollowerState),
    Resigned,
}

pub struct RaftCore {
    cfg: RaftConfig,
    now: u64,
    rng: u64,
    /// The latest quorum state (durable once `qs_token` is synced).
    qs: QuorumState,
    state: State,
    log: RaftLog,
    snapshot: Option<Snapshot>,
    high_watermark: i64,
    /// Entries below this are durable in our log.
    durable_end: i64,
    next_token: u64,
    synced_token: u64,
    qs_token: u64,
    /// Issued syncs and the log end each will make durable.
    pending_syncs: VecDeque<(u64, i64)>,
    storage_out: VecDeque<StorageOp>,
    /// Messages and the sync token each waits for.
    outbox: VecDeque<(u64, Envelope)>,
    /// Election timeout (non-followers) or fetch timeout (followers).
    election_deadline: u64,
    last_leader_contact: Option<u64>,
    next_correlation: u64,
    /// This process's first correlation id: answers carrying an id from here up to
    /// `next_correlation` answer this process's requests.
    first_correlation: u64,
    rejoin: Rejoin,
    /// Elections in a row that timed out without a leader (see `election_backoff`).
    failed_elections: u32,
}

impl RaftCore {
    /// A core over what storage holds. Everything recovered is durable. Panics if the recovered
    /// state is inconsistent (the same checks that ran before it was persisted).
    pub fn new(cfg: RaftConfig, recovered: Recovered, now_ms: u64) -> RaftCore {
        cfg.validate();
        let snap_id = recovered
            .snapshot
            .as_ref()
            .map(|s| s.id)
            .unwrap_or_default();
        if let Some(first) = recovered.entries.first() {
            assert_eq!(
                first.offset, snap_id.end_offset,
                "log does not follow snapshot"
            );
        }
        let log = RaftLog::new(snap_id, recovered.entries);
        let qs = recovered.quorum_state;
        check_quorum_state(&cfg, &qs);
        assert!(
            qs.epoch >= log.last_epoch(),
            "log has epoch {} above the persisted epoch {}",
            log.last_epoch(),
            qs.epoch
        );
        let mut core = RaftCore {
            // Mix the node id in non-linearly: a caller seeding every node alike (or with a
            // multiple of the same constant) must still get different jitter per node.
            rng: {
                let mut x = cfg.seed;
                splitmix64(&mut x) ^ splitmix64(&mut (cfg.node_id as u64 ^ 0x5EED))
            },
            now: now_ms,
            high_watermark: log.start_offset(),
            durable_end: log.end_offset(),
            state: State::Unattached,
            qs,
            log,
            snapshot: recovered.snapshot,
            next_token: 1,
            synced_token: 0,
            qs_token: 0,
            pending_syncs: VecDeque::new(),
            storage_out: VecDeque::new(),
            outbox: VecDeque::new(),
            election_deadline: 0,
            last_leader_contact: None,
            next_correlation: 1,
            first_correlation: 1,
            rejoin: Rejoin::default(),
            failed_elections: 0,
            cfg,
        };
        // Correlation ids start at a random point so responses to an earlier incarnation's
        // requests (still in the network) do not match this one's.
        core.next_correlation = splitmix64(&mut core.rng) >> 1;
        core.first_correlation = core.next_correlation;
        let nothing_stored = core.qs == QuorumState::default()
            && core.snapshot.is_none()
            && core.log.end_offset() == 0;
        if nothing_stored
            && !core.is_observer()
            && core.cfg.voters.len() > 1
            && !planted::enabled(PlantedBug::WipedVoterVotes)
        {
            // Written before anything else this process sends, so no message of ours goes out
            // before a crash could forget that we are rejoining.
            core.set_quorum_state(QuorumState {
                rejoining: true,
                ..QuorumState::default()
            });
        }
        if core.qs.rejoining {
            core.rejoin.next_probe_ms = core.now;
        }
        core.election_deadline = core.now + core.random_election_timeout();
        match core.qs.leader {
            Some(l) if l == core.cfg.node_id => {
                // A leader that restarted does not know who followed it: resign and let the
                // others elect quickly.
                core.state = State::Resigned;
                core.send_end_quorum_epoch(Vec::new());
            }
            Some(l) => {
                let epoch = core.qs.epoch;
                core.become_follower(epoch, l);
            }
            None => {
                if core.is_observer() {
                    // Nothing to wait for: ask the voters who leads at the first tick.
                    core.election_deadline = core.now;
                }
            }
        }
        core.check_invariants();
        core
    }

    // ---- accessors ----

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    pub fn role(&self) -> Role {
        match self.state {
            State::Unattached => Role::Unattached,
            State::Prospective { .. } => Role::Prospective,
            State::Candidate { .. } => Role::Candidate,
            State::Leader(_) => Role::Leader,
            State::Follower(_) => Role::Follower,
            State::Resigned => Role::Resigned,
        }
    }

    pub fn epoch(&self) -> i32 {
        self.qs.epoch
    }

    /// The leader of the current epoch, if known.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.state {
            State::Leader(_) => Some(self.cfg.node_id),
            State::Follower(f) => Some(f.leader),
            _ => None,
        }
    }

    pub fn quorum_state(&self) -> &QuorumState {
        &self.qs
    }

    /// A voter that started with nothing stored and may not vote or stand yet (see the module
    /// doc): it follows and fetches, and counts toward the high watermark by what it holds.
    pub fn is_rejoining(&self) -> bool {
        self.qs.rejoining && !self.is_observer()
    }

    /// The other voters a rejoining voter has not yet heard from (empty otherwise).
    pub fn rejoin_unheard(&self) -> Vec<NodeId> {
        if !self.is_rejoining() {
            return Vec::new();
        }
        self.other_voters()
            .into_iter()
            .filter(|v| !self.rejoin.heard.contains_key(v))
            .collect()
    }

    /// The quorum as this leader sees it; `None` unless this node leads. The leader is caught
    /// up and has fetched now, by definition.
    pub fn describe_quorum(&self) -> Option<QuorumDescription> {
        let State::Leader(l) = &self.state else {
            return None;
        };
        let now = self.now as i64;
        let describe = |(&id, p): (&NodeId, &Progress)| ReplicaDescription {
            id,
            log_end_offset: if p.fetched_in_epoch { p.end_offset } else { -1 },
            last_fetch_ms: if p.fetched_in_epoch {
                p.last_fetch_ms as i64
            } else {
                -1
            },
            last_caught_up_ms: p.last_caught_up_ms.map_or(-1, |t| t as i64),
        };
        let mut voters: Vec<ReplicaDescription> = l.progress.iter().map(describe).collect();
        let observers: Vec<ReplicaDescription> = l
            .observers
            .iter()
            .filter(|(_, p)| p.last_fetch_ms + OBSERVER_SESSION_MS > self.now)
            .map(describe)
            .collect();
        voters.push(ReplicaDescription {
            id: self.cfg.node_id,
            log_end_offset: self.log.end_offset(),
            last_fetch_ms: now,
            last_caught_up_ms: now,
        });
        voters.sort_by_key(|v| v.id);
        assert_eq!(
            voters.len(),
            self.cfg.voters.len(),
            "every voter described once"
        );
        Some(QuorumDescription {
            leader: self.cfg.node_id,
            epoch: self.qs.epoch,
            high_watermark: self.high_watermark,
            voters,
            observers,
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.end_offset()
    }

    pub fn durable_end_offset(&self) -> i64 {
        self.durable_end
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    fn majority(&self) -> usize {
        self.cfg.voters.len() / 2 + 1
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.cfg.voters.contains(&id)
    }

    /// A broker-only node: follows the quorum, never votes or stands.
    pub fn is_observer(&self) -> bool {
        !self.is_voter(self.cfg.node_id)
    }

    // ---- outputs ----

    /// The next storage operation, in order.
    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage_out.pop_front()
    }

    /// The next message whose preconditions are durable.
    pub fn poll_message(&mut self) -> Option<Envelope> {
        match self.outbox.front() {
            Some((gate, _)) if *gate <= self.synced_token => self.outbox.pop_front().map(|m| m.1),
            _ => None,
        }
    }

    /// When [`RaftCore::tick`] must next be called (ms, the caller's clock).
    pub fn poll_timeout(&self) -> u64 {
        let probe = if self.is_rejoining() && !self.rejoin_unheard().is_empty() {
            self.rejoin.next_probe_ms
        } else {
            u64::MAX
        };
        probe.min(match &self.state {
            State::Leader(l) => self.quorum_deadline(l).min(l.begin_resend_ms),
            State::Follower(f) => {
                let fetch = match f.in_flight {
                    Some((_, sent)) => sent + self.cfg.request_timeout_ms,
                    None => f.next_fetch_ms,
                };
                fetch.min(self.election_deadline)
            }
            _ => self.election_deadline,
        })
    }

    /// What to apply after `applied_end` (the offset after the caller's last applied entry):
    /// the snapshot when the caller is behind the log start, else up to `max` committed entries.
    pub fn committed(&self, applied_end: i64, max: usize) -> Option<Committed> {
        if applied_end < self.log.start_offset() {
            let snap = self
                .snapshot
                .clone()
                .expect("log start above 0 without a snapshot");
            return Some(Committed::Snapshot(snap));
        }
        if applied_end >= self.high_watermark {
            return None;
        }
        let n = ((self.high_watermark - applied_end) as usize).min(max);
        let entries = self.log.read(applied_end, n, usize::MAX);
        assert_eq!(entries.len(), n, "committed entries missing from the log");
        Some(Committed::Entries(entries))
    }

    /// The offset to snapshot at, when the log holds more than `max_log_entries` and committed
    /// entries can be dropped.
    pub fn snapshot_hint(&self) -> Option<i64> {
        (self.log.len() > self.cfg.max_log_entries && self.high_watermark > self.log.start_offset())
            .then_some(self.high_watermark)
    }

    // ---- inputs ----

    fn advance(&mut self, now_ms: u64) {
        // Clocks the core sees never go back.
        self.now = self.now.max(now_ms);
    }

    /// The caller finished the `Sync { token }` and everything before it is durable.
    pub fn synced(&mut self, now_ms: u64, token: u64) {
        self.advance(now_ms);
        assert!(token < self.next_token, "sync token {token} never issued");
        if token <= self.synced_token {
            return;
        }
        self.synced_token = token;
        while let Some(&(t, end)) = self.pending_syncs.front() {
            if t > token {
                break;
            }
            self.durable_end = end;
            self.pending_syncs.pop_front();
        }
        if matches!(self.state, State::Leader(_)) {
            self.update_leader_high_watermark();
        }
        self.maybe_rejoined();
        self.check_invariants();
    }

    /// Time passed: elections, fetch retries, check-quorum.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
        let now = self.now;
        if self.is_rejoining() && now >= self.rejoin.next_probe_ms {
            self.probe_unheard_voters();
        }
        match &self.state {
            State::Leader(l) => {
                if now >= self.quorum_deadline_of(l) {
                    // Check-quorum: a majority has not fetched within the fetch timeout.
                    self.resign_inner();
                } else if now >= l.begin_resend_ms {
                    self.resend_begin_quorum_epoch();
                }
            }
            State::Follower(f) => {
                let due = match f.in_flight {
                    Some((_, sent)) => sent + self.cfg.request_timeout_ms <= now,
                    None => f.next_fetch_ms <= now,
                };
                if now >= self.election_deadline {
                    if self.is_observer() {
                        // The leader went quiet: look for the current one among the voters.
                        self.state = State::Unattached;
                        self.last_leader_contact = None;
                        self.discover_leader();
                    } else {
                        self.become_prospective();
                    }
                } else if due {
                    self.send_fetch();
                }
            }
            _ => {
                if now >= self.election_deadline {
                    if self.is_observer() {
                        // Observers never stand: they ask a voter who leads.
                        self.discover_leader();
                    } else {
                        if matches!(
                            self.state,
                            State::Prospective { .. } | State::Candidate { .. }
                        ) {
                            self.failed_elections = self.failed_elections.saturating_add(1);
                        }
                        self.become_prospective();
                    }
                }
            }
        }
        self.maybe_rejoined();
        self.check_invariants();
    }

    /// The transport's connection from `node` closed (a killed process closes all of its
    /// connections at once). A follower of `node` stops vouching for it, so it grants
    /// pre-votes, and stands after a short randomized wait instead of a full election timeout.
    /// This only speeds up an election: if the leader lives, voters still hearing from it
    /// refuse the pre-vote, and its next message makes this node its follower again.
    pub fn peer_lost(&mut self, node: NodeId, now_ms: u64) {
        self.advance(now_ms);
        let State::Follower(f) = &self.state else {
            return;
        };
        if f.leader != node {
            return;
        }
        self.last_leader_contact = None;
        let wait = splitmix64(&mut self.rng) % (self.cfg.election_timeout_ms / 2).max(1);
        self.election_deadline = self.election_deadline.min(self.now + wait);
        self.check_invariants();
    }

    /// BeginQuorumEpoch again to voters that have not fetched lately (it may have been lost).
    fn resend_begin_quorum_epoch(&mut self) {
        let (now, rt) = (self.now, self.cfg.request_timeout_ms);
        let (epoch, leader) = (self.qs.epoch, self.cfg.node_id);
        let State::Leader(l) = &mut self.state else {
            return;
        };
        l.begin_resend_ms = now + rt;
        let stale: Vec<NodeId> = l
            .progress
            .iter()
            .filter(|(_, p)| !p.fetched_in_epoch || p.last_fetch_ms + rt <= now)
            .map(|(&id, _)| id)
            .collect();
        for to in stale {
            self.send(to, Message::BeginQuorumEpoch { epoch, leader });
        }
    }

    /// Leader only: appends `payload` at the log end in the current epoch; returns its offset.
    /// It is committed once the high watermark passes it.
    pub fn propose(&mut self, now_ms: u64, payload: Bytes) -> Result<i64, ProposeError> {
        self.advance(now_ms);
        if !matches!(self.state, State::Leader(_)) {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
                epoch: self.qs.epoch,
            });
        }
        if payload.len() > self.cfg.max_payload_bytes {
            return Err(ProposeError::TooLarge);
        }
        if (self.log.end_offset() - self.high_watermark) as usize
            >= self.cfg.max_uncommitted_entries
        {
            return Err(ProposeError::Backpressure);
        }
        let offset = self.append_local(payload);
        self.check_invariants();
        Ok(offset)
    }

    /// Leader only: steps down gracefully (EndQuorumEpoch), so the others elect quickly.
    pub fn resign(&mut self, now_ms: u64) {
        self.advance(now_ms);
        if matches!(self.state, State::Leader(_)) {
            self.resign_inner();
        }
        self.check_invariants();
    }

    /// The caller's state machine, applied through `end_offset - 1` (at or below the high
    /// watermark), encoded as `data`: write it as a snapshot and drop the entries below it.
    pub fn create_snapshot(&mut self, now_ms: u64, end_offset: i64, data: Bytes) {
        self.advance(now_ms);
        assert!(
            end_offset <= self.high_watermark,
            "snapshot at {end_offset} above the high watermark {}",
            self.high_watermark
        );
        if end_offset <= self.log.start_offset() {
            return;
        }
        let epoch = self
            .log
            .epoch_at(end_offset - 1)
            .expect("snapshot offset in the log");
        let snap = Snapshot {
            id: SnapshotId { end_offset, epoch },
            data,
        };
        self.log.compact(snap.id);
        self.storage_out
            .push_back(StorageOp::WriteSnapshot(snap.clone()));
        self.snapshot = Some(snap);
        self.sync();
        self.check_invariants();
    }

    /// A message arrived.
    pub fn step(&mut self, now_ms: u64, env: Envelope) {
        self.advance(now_ms);
        let from = env.from;
        let msg = env.message;
        let epoch = msg.epoch();
        if self.is_rejoining() && from != self.cfg.node_id && self.is_voter(from) {
            // Only an answer to this process's own request tells what `from` holds now: a
            // request, or an answer to an earlier process, may be older than this one's start.
            let ours = |c: u64| c >= self.first_correlation && c < self.next_correlation;
            let answered = match &msg {
                Message::FetchResponse {
                    correlation,
                    log_end_offset,
                    ..
                } if ours(*correlation) => Some(*log_end_offset == 0),
                _ => None,
            };
            if let Some(empty) = answered {
                let heard = self.rejoin.heard.entry(from).or_insert((epoch, empty));
                *heard = (heard.0.max(epoch), empty);
            }
        }
        if self.is_rejoining() && self.rejoin_holds(&msg) {
            self.check_invariants();
            return;
        }
        if let Message::VoteRequest {
            pre_vote: true,
            epoch,
            candidate,
            last_epoch,
            last_offset,
        } = msg
        {
            // A pre-vote never changes the receiver's state.
            self.handle_pre_vote(from, epoch, candidate, last_epoch, last_offset);
            self.check_invariants();
            return;
        }
        if epoch > self.qs.epoch {
            let hint = match &msg {
                Message::BeginQuorumEpoch { leader, .. } => Some(*leader),
                Message::FetchResponse { leader, .. }
                | Message::FetchSnapshotResponse { leader, .. }
                | Message::VoteResponse { leader, .. } => *leader,
                _ => None,
            };
            match hint {
                Some(l) if l != self.cfg.node_id => self.become_follower(epoch, l),
                _ => self.become_unattached(epoch),
            }
        } else if epoch == self.qs.epoch {
            // A response that names the current epoch's leader. A granted vote is not a hint:
            // a voter that grants a pre-vote has stopped hearing from its leader, yet still
            // names it; taking that as "the leader is alive" sent every prospective back to
            // following a dead leader before it could count the grant, so no election could
            // win until timing happened to line up.
            let hint = match &msg {
                Message::VoteResponse { granted: true, .. } => None,
                Message::FetchResponse { leader, .. }
                | Message::FetchSnapshotResponse { leader, .. }
                | Message::VoteResponse { leader, .. } => *leader,
                _ => None,
            };
            if let Some(l) = hint {
                let following = matches!(&self.state, State::Follower(f) if f.leader == l);
                let leading = matches!(self.state, State::Leader(_) | State::Resigned);
                if l != self.cfg.node_id && !following && !leading {
                    self.become_follower(epoch, l);
                    // Another voter's hint, not the leader itself: if that leader is gone, the
                    // voters that timed out together would otherwise retry together and refuse
                    // each other's pre-votes forever (each still heard from the leader a few ms
                    // more recently than the other). A randomized timeout breaks the lockstep.
                    self.election_deadline = self.now + self.random_election_timeout();
                }
            }
        }
        match msg {
            Message::VoteRequest {
                epoch,
                candidate,
                last_epoch,
                last_offset,
                ..
            } => self.handle_vote(from, epoch, candidate, last_epoch, last_offset),
            Message::VoteResponse {
                epoch,
                granted,
                pre_vote,
                ..
            } => self.handle_vote_response(from, epoch, granted, pre_vote),
            Message::BeginQuorumEpoch { epoch, leader } => {
                if epoch == self.qs.epoch {
                    if let State::Leader(_) = self.state {
                        assert_eq!(
                            leader, self.cfg.node_id,
                            "two leaders in epoch {epoch}: {} and {leader}",
                            self.cfg.node_id
                        );
                    } else if !matches!(&self.state, State::Follower(f) if f.leader == leader) {
                        self.become_follower(epoch, leader);
                    }
                    self.last_leader_contact = Some(self.now);
                    self.send(from, Message::BeginQuorumEpochResponse { epoch });
                } else if epoch < self.qs.epoch {
                    // A leader of an epoch this voter has moved past (a rejoining voter moves
                    // past every epoch its old directory may have voted in): tell it, or, with
                    // pre-vote, nothing ever makes it step down and this voter never follows.
                    let epoch = self.qs.epoch;
                    self.send(from, Message::BeginQuorumEpochResponse { epoch });
                }
            }
            Message::BeginQuorumEpochResponse { .. } => {}
            Message::EndQuorumEpoch {
                epoch,
                leader,
                preferred_successors,
            } => self.handle_end_quorum_epoch(epoch, leader, &preferred_successors),
            Message::FetchRequest {
                correlation,
                epoch,
                replica,
                fetch_offset,
                last_fetched_epoch,
                replica_incarnation,
            } => self.handle_fetch(
                from,
                correlation,
                epoch,
                (replica, replica_incarnation),
                fetch_offset,
                last_fetched_epoch,
            ),
            Message::FetchResponse {
                correlation,
                epoch,
                leader,
                high_watermark,
                result,
                ..
            } => self.handle_fetch_response(correlation, epoch, leader, high_watermark, result),
            Message::FetchSnapshotRequest {
                correlation,
                epoch,
                replica,
                snapshot_id,
                position,
            } => {
                self.handle_fetch_snapshot(from, correlation, epoch, replica, snapshot_id, position)
            }
            Message::FetchSnapshotResponse {
                correlation,
                epoch,
                snapshot_id,
                chunk,
                ..
            } => self.handle_fetch_snapshot_response(correlation, epoch, snapshot_id, chunk),
        }
        self.maybe_rejoined();
        self.check_invariants();
    }

    // ---- transitions ----

    /// Extra wait before the next try after elections that did not end in a leader: random,
    /// and up to twice as long after each one (Kafka's `quorum.election.backoff.max.ms`), so
    /// two voters that keep standing at once (with a third that cannot vote yet, say) stop
    /// splitting the vote.
    fn election_backoff(&mut self) -> u64 {
        if self.failed_elections == 0 {
            return 0;
        }
        let shift = self.failed_elections.min(ELECTION_BACKOFF_DOUBLINGS_MAX);
        let span = (self.cfg.election_jitter_ms.max(1) << shift).min(self.cfg.election_timeout_ms);
        splitmix64(&mut self.rng) % span.max(1)
    }

    fn random_election_timeout(&mut self) -> u64 {
        let r = splitmix64(&mut self.rng);
        self.cfg.election_timeout_ms + r % self.cfg.election_jitter_ms.max(1)
    }

    fn set_quorum_state(&mut self, qs: QuorumState) {
        if qs == self.qs {
            return;
        }
        // Paired with the checks in `new` on what was loaded.
        check_quorum_state(&self.cfg, &qs);
        assert!(qs.epoch >= self.qs.epoch, "epoch goes back");
        if qs.epoch == self.qs.epoch {
            if let (Some(a), Some(b)) = (self.qs.voted_for, qs.voted_for) {
                assert!(
                    a == b || planted::enabled(PlantedBug::VoteTwice),
                    "second vote in epoch {}: {a} then {b}",
                    qs.epoch
                );
            }
            if let (Some(a), Some(b)) = (self.qs.leader, qs.leader) {
                assert_eq!(a, b, "second leader in epoch {}", qs.epoch);
            }
        }
        self.qs = qs;
        self.storage_out
            .push_back(StorageOp::PersistQuorumState(self.qs.clone()));
        self.qs_token = self.sync();
    }

    fn become_unattached(&mut self, epoch: i32) {
        assert!(epoch > self.qs.epoch);
        self.set_quorum_state(QuorumState {
            epoch,
            voted_for: None,
            leader: None,
            rejoining: self.qs.rejoining,
        });
        // Seeing a higher epoch is not hearing from a leader: keep a pending election timeout
        // (else a candidate with a stale log, refused by all, resets everyone's timer with each
        // new epoch and no one else ever stands).
        let was_leading = matches!(self.state, State::Leader(_) | State::Resigned);
        self.state = State::Unattached;
        if was_leading || self.election_deadline <= self.now {
            self.election_deadline = self.now + self.random_election_timeout();
        }
    }

    fn become_follower(&mut self, epoch: i32, leader: NodeId) {
        assert_ne!(leader, self.cfg.node_id);
        let voted_for = if epoch == self.qs.epoch {
            self.qs.voted_for
        } else {
            None
        };
        self.set_quorum_state(QuorumState {
            epoch,
            voted_for,
            leader: Some(leader),
            rejoining: self.qs.rejoining,
        });
        self.state = State::Follower(FollowerState {
            leader,
            in_flight: None,
            next_fetch_ms: self.now,
            download: None,
        });
        self.failed_elections = 0;
        // Only the leader itself (BeginQuorumEpoch, fetch responses) counts as leader contact,
        // not another node's hint.
        self.election_deadline = self.now + self.cfg.fetch_timeout_ms;
        self.send_fetch();
    }

    fn become_prospective(&mut self) {
        if self.is_rejoining() {
            // No leader to follow, and no standing yet: keep asking the voters who leads.
            self.state = State::Unattached;
            self.last_leader_contact = None;
            self.election_deadline = self.now + self.random_election_timeout();
            self.probe_voters(self.other_voters());
            return;
        }
        // The first election of a cluster always asks for pre-votes: a voter still rejoining
        // refuses them without the epoch moving, and an epoch that stays 0 is what lets the
        // others see that no election happened yet and stop rejoining themselves. A candidate
        // in epoch 1 would leave them all waiting for a leader they cannot help elect.
        if !self.cfg.pre_vote && self.qs.epoch > 0 {
            self.become_candidate();
            return;
        }
        let mut granted = BTreeSet::new();
        granted.insert(self.cfg.node_id);
        self.state = State::Prospective { granted };
        self.election_deadline =
            self.now + self.random_election_timeout() + self.election_backoff();
        if self.majority() <= 1 {
            self.become_candidate();
            return;
        }
        for to in self.other_voters() {
            let m = Message::VoteRequest {
                epoch: self.qs.epoch + 1,
                candidate: self.cfg.node_id,
                last_epoch: self.log.last_epoch(),
                last_offset: self.log.end_offset(),
                pre_vote: true,
            };
            self.send(to, m);
        }
    }

    fn become_candidate(&mut self) {
        let me = self.cfg.node_id;
        assert!(!self.qs.rejoining, "a rejoining voter stands");
        self.set_quorum_state(QuorumState {
            epoch: self.qs.epoch + 1,
            voted_for: Some(me),
            leader: None,
            rejoining: false,
        });
        let mut granted = BTreeSet::new();
        granted.insert(me);
        self.state = State::Candidate { granted };
        self.election_deadline =
            self.now + self.random_election_timeout() + self.election_backoff();
        if self.majority() <= 1 {
            self.become_leader();
            return;
        }
        for to in self.other_voters() {
            let m = Message::VoteRequest {
                epoch: self.qs.epoch,
                candidate: me,
                last_epoch: self.log.last_epoch(),
                last_offset: self.log.end_offset(),
                pre_vote: false,
            };
            self.send(to, m);
        }
    }

    fn become_leader(&mut self) {
        let me = self.cfg.node_id;
        assert_eq!(self.qs.voted_for, Some(me), "a leader voted for itself");
        self.set_quorum_state(QuorumState {
            leader: Some(me),
            ..self.qs.clone()
        });
        let progress = self
            .other_voters()
            .into_iter()
            .map(|id| {
                let p = Progress {
                    end_offset: 0,
                    last_fetch_ms: self.now,
                    fetched_in_epoch: false,
                    last_caught_up_ms: None,
                    leader_end_at_last_fetch: -1,
                    incarnation: -1,
                    retired: Vec::new(),
                };
                (id, p)
            })
            .collect();
        self.failed_elections = 0;
        self.state = State::Leader(LeaderState {
            epoch_start_offset: self.log.end_offset(),
            progress,
            observers: BTreeMap::new(),
            begin_resend_ms: self.now + self.cfg.request_timeout_ms,
        });
        self.last_leader_contact = Some(self.now);
        let record = MetadataRecord::LeaderChange {
            epoch: self.qs.epoch,
            leader: me,
        };
        self.append_local(record.encode());
        for to in self.other_voters() {
            let m = Message::BeginQuorumEpoch {
                epoch: self.qs.epoch,
                leader: me,
            };
            self.send(to, m);
        }
        self.update_leader_high_watermark();
    }

    fn resign_inner(&mut self) {
        // Preferred successors: most up to date first (by matched log end, then id), as Kafka.
        let mut successors: Vec<(i64, NodeId)> = match &self.state {
            State::Leader(l) => l
                .progress
                .iter()
                .map(|(&id, p)| (p.end_offset, id))
                .collect(),
            _ => Vec::new(),
        };
        successors.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.state = State::Resigned;
        self.last_leader_contact = None;
        self.election_deadline = self.now + self.random_election_timeout();
        self.send_end_quorum_epoch(successors.into_iter().map(|x| x.1).collect());
    }

    /// `successors` in preference order; empty when unknown (after a restart), then by id.
    fn send_end_quorum_epoch(&mut self, successors: Vec<NodeId>) {
        let successors = if successors.is_empty() {
            self.other_voters()
        } else {
            successors
        };
        for &to in &successors {
            let m = Message::EndQuorumEpoch {
                epoch: self.qs.epoch,
                leader: self.cfg.node_id,
                preferred_successors: successors.clone(),
            };
            self.send(to, m);
        }
    }

    // ---- handlers ----

    fn up_to_date(&self, last_epoch: i32, last_offset: i64) -> bool {
        (last_epoch, last_offset) >= (self.log.last_epoch(), self.log.end_offset())
    }

    fn handle_pre_vote(
        &mut self,
        from: NodeId,
        epoch: i32,
        candidate: NodeId,
        last_epoch: i32,
        last_offset: i64,
    ) {
        let heard_from_leader = matches!(self.state, State::Leader(_))
            || self
                .last_leader_contact
                .is_some_and(|t| self.now < t + self.cfg.fetch_timeout_ms);
        let granted = epoch > self.qs.epoch
            && !heard_from_leader
            && !self.is_observer()
            && !self.is_rejoining()
            && self.is_voter(candidate)
            && self.up_to_date(last_epoch, last_offset);
        let m = Message::VoteResponse {
            epoch: self.qs.epoch,
            leader: self.leader(),
            granted,
            pre_vote: true,
        };
        self.send(from, m);
    }

    fn handle_vote(
        &mut self,
        from: NodeId,
        epoch: i32,
        candidate: NodeId,
        last_epoch: i32,
        last_offset: i64,
    ) {
        let mut granted = false;
        if epoch == self.qs.epoch
            && self.qs.leader.is_none()
            && !self.is_observer()
            && !self.is_rejoining()
            && self.is_voter(candidate)
        {
            let free = match self.qs.voted_for {
                None => true,
                Some(v) => v == candidate || planted::enabled(PlantedBug::VoteTwice),
            };
            if free && self.up_to_date(last_epoch, last_offset) {
                granted = true;
                if self.qs.voted_for != Some(candidate) {
                    self.set_quorum_state(QuorumState {
                        voted_for: Some(candidate),
                        ..self.qs.clone()
                    });
                    self.state = State::Unattached;
                }
                self.election_deadline = self.now + self.random_election_timeout();
            }
        }
        let m = Message::VoteResponse {
            epoch: self.qs.epoch,
            leader: self.leader(),
            granted,
            pre_vote: false,
        };
        // Sent only once the vote is durable (the outbox waits for the quorum-state sync).
        self.send(from, m);
    }

    fn handle_vote_response(&mut self, from: NodeId, epoch: i32, granted: bool, pre_vote: bool) {
        if epoch != self.qs.epoch || !granted || !self.is_voter(from) {
            return;
        }
        let majority = self.majority();
        match &mut self.state {
            State::Prospective { granted: g } if pre_vote => {
                g.insert(from);
                if g.len() >= majority {
                    self.become_candidate();
                }
            }
            State::Candidate { granted: g } if !pre_vote => {
                g.insert(from);
                if g.len() >= majority {
                    self.become_leader();
                }
            }
            _ => {}
        }
    }

    fn handle_end_quorum_epoch(&mut self, epoch: i32, leader: NodeId, successors: &[NodeId]) {
        if epoch != self.qs.epoch {
            return;
        }
        if let State::Follower(f) = &self.state {
            if f.leader != leader {
                return;
            }
            self.last_leader_contact = None;
            // Preferred successors time out sooner, in order (KIP-595).
            let rank = successors
                .iter()
                .position(|&s| s == self.cfg.node_id)
                .unwrap_or(successors.len()) as u64;
            let backoff = rank * (self.cfg.election_timeout_ms / 4)
                + splitmix64(&mut self.rng) % (self.cfg.election_jitter_ms / 4).max(1);
            self.election_deadline = self.election_deadline.min(self.now + backoff);
        }
    }

    fn fetch_response(&self, correlation: u64, hw: i64, result: FetchResult) -> Message {
        Message::FetchResponse {
            correlation,
            epoch: self.qs.epoch,
            leader: self.leader(),
            high_watermark: hw,
            log_start_offset: self.log.start_offset(),
            log_end_offset: self.log.end_offset(),
            result,
        }
    }

    fn handle_fetch(
        &mut self,
        from: NodeId,
        correlation: u64,
        epoch: i32,
        (replica, incarnation): (NodeId, i64),
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) {
        let State::Leader(_) = self.state else {
            let m = self.fetch_response(correlation, -1, FetchResult::NotLeader);
            self.send(from, m);
            return;
        };
        if epoch != self.qs.epoch {
            let m = self.fetch_response(correlation, -1, FetchResult::NotLeader);
            self.send(from, m);
            return;
        }
        let start = self.log.start_offset();
        let result = if fetch_offset < start
            || (fetch_offset == start
                && start > 0
                && last_fetched_epoch != self.log.snapshot_id().epoch)
        {
            FetchResult::SnapshotNeeded(self.log.snapshot_id())
        } else {
            match self.log.end_offset_for_epoch(last_fetched_epoch) {
                None => FetchResult::SnapshotNeeded(self.log.snapshot_id()),
                Some((e, end)) if e != last_fetched_epoch || end < fetch_offset => {
                    FetchResult::Diverging {
                        epoch: e,
                        end_offset: end.min(fetch_offset),
                    }
                }
                Some(_) => FetchResult::Entries(Vec::new()),
            }
        };
        let now = self.now;
        let valid = matches!(result, FetchResult::Entries(_));
        let leader_end = self.log.end_offset();
        if let State::Leader(l) = &mut self.state {
            let p = fetcher_progress(l, &self.cfg, replica, now)
                .and_then(|p| same_process(p, incarnation).then_some(p));
            if let Some(p) = p {
                if valid {
                    // Before the fetch time moves: a fetch from at least the log end the
                    // previous fetch saw means the voter had all of it at that fetch.
                    let caught_up_at = if fetch_offset >= leader_end {
                        Some(now)
                    } else if p.leader_end_at_last_fetch > 0
                        && fetch_offset >= p.leader_end_at_last_fetch
                        && p.fetched_in_epoch
                    {
                        Some(p.last_fetch_ms)
                    } else {
                        None
                    };
                    p.last_caught_up_ms = p.last_caught_up_ms.max(caught_up_at);
                    p.leader_end_at_last_fetch = leader_end;
                }
                p.last_fetch_ms = p.last_fetch_ms.max(now);
                p.fetched_in_epoch = true;
                if valid {
                    // The follower's log matches ours below fetch_offset and is durable there.
                    // A reordered older fetch reports less: keep the maximum.
                    p.end_offset = p.end_offset.max(fetch_offset);
                }
            }
        }
        if valid {
            self.update_leader_high_watermark();
        }
        let result = match result {
            FetchResult::Entries(_) => FetchResult::Entries(self.log.read(
                fetch_offset,
                self.cfg.max_fetch_entries,
                self.cfg.max_fetch_bytes,
            )),
            other => other,
        };
        let m = self.fetch_response(correlation, self.high_watermark, result);
        self.send(from, m);
    }

    fn handle_fetch_response(
        &mut self,
        correlation: u64,
        epoch: i32,
        leader: Option<NodeId>,
        leader_hw: i64,
        result: FetchResult,
    ) {
        if epoch != self.qs.epoch {
            return;
        }
        let now = self.now;
        let State::Follower(f) = &mut self.state else {
            return;
        };
        if f.in_flight.map(|x| x.0) != Some(correlation) {
            return; // stale or duplicated
        }
        f.in_flight = None;
        if result == FetchResult::NotLeader {
            f.next_fetch_ms = now + self.cfg.fetch_backoff_ms;
            if leader != Some(f.leader) {
                // Our leader says it no longer leads this epoch (it resigned or restarted):
                // stop vouching for it, so pre-vote hints do not send others back to it.
                self.state = State::Unattached;
                self.last_leader_contact = None;
                // An observer asks the voters at once; a voter waits to stand.
                let wait = if self.is_observer() {
                    self.cfg.fetch_backoff_ms
                } else {
                    self.cfg.election_timeout_ms
                };
                self.election_deadline = self.election_deadline.min(now + wait);
            }
            return;
        }
        self.last_leader_contact = Some(now);
        self.election_deadline = now + self.cfg.fetch_timeout_ms;
        match result {
            FetchResult::NotLeader => unreachable!(),
            FetchResult::Entries(entries) => {
                let got = !entries.is_empty();
                if got {
                    assert_eq!(
                        entries[0].offset,
                        self.log.end_offset(),
                        "fetched entries not at the log end"
                    );
                    for e in &entries {
                        assert!(e.epoch <= self.qs.epoch, "entry from a future epoch");
                        self.log.append(e.clone());
                    }
                    self.storage_out.push_back(StorageOp::Append(entries));
                    self.sync();
                }
                self.advance_high_watermark(leader_hw.min(self.log.end_offset()));
                if self.is_rejoining()
                    && leader_hw > 0
                    && leader_hw <= self.log.end_offset()
                    && self.log.epoch_at(leader_hw - 1) == Some(epoch)
                {
                    // The leader committed an entry of its own epoch, so everything committed
                    // before it is below `leader_hw`, which this log now holds.
                    self.rejoin.caught_up = Some((epoch, leader_hw));
                }
                if let State::Follower(f) = &mut self.state {
                    f.next_fetch_ms = if got {
                        now
                    } else {
                        now + self.cfg.fetch_backoff_ms
                    };
                }
                if got {
                    self.send_fetch();
                }
            }
            FetchResult::Diverging { epoch, end_offset } => {
                let own = self
                    .log
                    .end_offset_for_epoch(epoch)
                    .map_or(self.log.start_offset(), |(_, end)| end);
                let to = end_offset.min(own).min(self.log.end_offset());
                assert!(
                    to >= self.high_watermark,
                    "diverging epoch truncates to {to}, below the high watermark {}",
                    self.high_watermark
                );
                self.truncate(to);
                self.send_fetch();
            }
            FetchResult::SnapshotNeeded(id) => {
                if let State::Follower(f) = &mut self.state {
                    f.download = Some(SnapshotDownload {
                        id,
                        buf: Vec::new(),
                    });
                }
                self.send_fetch();
            }
        }
    }

    fn handle_fetch_snapshot(
        &mut self,
        from: NodeId,
        correlation: u64,
        epoch: i32,
        replica: NodeId,
        snapshot_id: SnapshotId,
        position: u64,
    ) {
        let now = self.now;
        let chunk = match &mut self.state {
            State::Leader(l) if epoch == self.qs.epoch => {
                if let Some(p) = fetcher_progress(l, &self.cfg, replica, now) {
                    p.last_fetch_ms = p.last_fetch_ms.max(now);
                    p.fetched_in_epoch = true;
                }
                match &self.snapshot {
                    Some(s) if s.id == snapshot_id && position <= s.data.len() as u64 => {
                        let start = position as usize;
                        let end = (start + self.cfg.snapshot_chunk_bytes).min(s.data.len());
                        SnapshotChunk::Chunk {
                            size: s.data.len() as u64,
                            position,
                            bytes: s.data.slice(start..end),
                        }
                    }
                    _ => SnapshotChunk::NotFound,
                }
            }
            _ => SnapshotChunk::NotLeader,
        };
        let m = Message::FetchSnapshotResponse {
            correlation,
            epoch: self.qs.epoch,
            leader: self.leader(),
            snapshot_id,
            chunk,
        };
        self.send(from, m);
    }

    fn handle_fetch_snapshot_response(
        &mut self,
        correlation: u64,
        epoch: i32,
        snapshot_id: SnapshotId,
        chunk: SnapshotChunk,
    ) {
        if epoch != self.qs.epoch {
            return;
        }
        let now = self.now;
        let State::Follower(f) = &mut self.state else {
            return;
        };
        if f.in_flight.map(|x| x.0) != Some(correlation) {
            return;
        }
        f.in_flight = None;
        match chunk {
            SnapshotChunk::NotLeader => {
                f.download = None;
                f.next_fetch_ms = now + self.cfg.fetch_backoff_ms;
                return;
            }
            SnapshotChunk::NotFound => {
                f.download = None;
            }
            SnapshotChunk::Chunk {
                size,
                position,
                bytes,
            } => {
                let mut complete = None;
                let max_snapshot = self.cfg.max_snapshot_bytes as u64;
                match f.download.as_mut().filter(|d| d.id == snapshot_id) {
                    None => {}
                    Some(d) => {
                        if size > max_snapshot {
                            // Refuse to buffer it: the follower stays behind (visible) rather
                            // than running out of memory.
                            d.buf.clear();
                        } else if position != d.buf.len() as u64
                            || size < position + bytes.len() as u64
                        {
                            d.buf.clear();
                        } else {
                            d.buf.extend_from_slice(&bytes);
                        }
                        if d.buf.len() as u64 == size {
                            complete = f.download.take();
                        }
                    }
                }
                self.last_leader_contact = Some(now);
                self.election_deadline = now + self.cfg.fetch_timeout_ms;
                if let Some(d) = complete {
                    self.install_snapshot(Snapshot {
                        id: d.id,
                        data: Bytes::from(d.buf),
                    });
                }
            }
        }
        self.send_fetch();
    }

    fn install_snapshot(&mut self, snap: Snapshot) {
        assert!(
            snap.id.end_offset >= self.high_watermark,
            "snapshot at {} below the high watermark {}",
            snap.id.end_offset,
            self.high_watermark
        );
        assert!(snap.id.epoch <= self.qs.epoch);
        self.log.reset(snap.id);
        self.durable_end = 0;
        for p in self.pending_syncs.iter_mut() {
            p.1 = 0;
        }
        self.storage_out
            .push_back(StorageOp::InstallSnapshot(snap.clone()));
        self.snapshot = Some(snap);
        self.sync();
        // A snapshot holds only committed state.
        self.advance_high_watermark(self.log.end_offset());
    }

    // ---- helpers ----

    fn other_voters(&self) -> Vec<NodeId> {
        self.cfg
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.cfg.node_id)
            .collect()
    }

    /// Rejoining: probes the voters not heard from yet.
    fn probe_unheard_voters(&mut self) {
        let unheard = self.rejoin_unheard();
        self.probe_voters(unheard);
    }

    /// Rejoining: a Fetch to each of `to`. The answer tells each one's epoch (and the leader it
    /// knows, which [`RaftCore::step`] follows). Released, like a follower's Fetch, only once
    /// every storage operation so far is durable, since a leader counts its offset.
    fn probe_voters(&mut self, to: Vec<NodeId>) {
        debug_assert!(self.is_rejoining());
        self.rejoin.next_probe_ms = self.now + self.cfg.request_timeout_ms.max(1);
        let gate = self.next_token - 1;
        for v in to {
            let message = self.leaderless_fetch();
            let env = Envelope {
                from: self.cfg.node_id,
                to: v,
                message,
            };
            self.outbox.push_back((gate, env));
        }
    }

    /// Rejoining: until every other voter has answered, this voter follows no leader. A leader
    /// counts a follower's fetches toward its high watermark, and this voter's old directory
    /// may have voted in a newer epoch than the leader it would find first: counted, its
    /// fetches could let a deposed leader commit entries the newer leader (elected with that
    /// old vote) never had. So a message that would make it follow (a fetch or vote answer, a
    /// BeginQuorumEpoch) is dropped until then; the answer that completes the set moves it to
    /// the highest epoch heard first, where no deposed leader can count it. Returns whether
    /// `msg` is dropped. Found by the quorum model with wiped voters.
    fn rejoin_holds(&mut self, msg: &Message) -> bool {
        debug_assert!(self.is_rejoining());
        if self.rejoin_unheard().is_empty() {
            let highest = self.rejoin.heard.values().map(|h| h.0).max().unwrap_or(0);
            if highest > self.qs.epoch {
                self.become_unattached(highest);
            }
            return false;
        }
        matches!(
            msg,
            Message::BeginQuorumEpoch { .. }
                | Message::FetchResponse { .. }
                | Message::FetchSnapshotResponse { .. }
                | Message::VoteResponse { .. }
        )
    }

    /// Rejoining: votes again once every other voter answered, and either every one's log was
    /// empty (nothing can have been committed: a first start, or a cluster that never got
    /// going), or this log durably holds a leader's high watermark from an epoch at least the
    /// highest any of them answered with (so it holds every committed entry). See the module
    /// doc.
    fn maybe_rejoined(&mut self) {
        if !self.is_rejoining() || !self.rejoin_unheard().is_empty() {
            return;
        }
        let highest = self.rejoin.heard.values().map(|h| h.0).max().unwrap_or(0);
        let all_empty = self.rejoin.heard.values().all(|h| h.1);
        let caught_up = matches!(
            self.rejoin.caught_up,
            Some((epoch, hw)) if epoch >= highest && self.durable_end >= hw
        );
        if !all_empty && !caught_up {
            return;
        }
        // A wiped directory may have voted in any epoch up to `highest` (the voter it voted for
        // is at least there). Vote only above it: move past it unless this voter already
        // follows a leader of `highest` (then it votes in no epoch up to there).
        let may_vote_in_highest =
            self.qs.epoch < highest || (self.qs.epoch == highest && self.qs.leader.is_none());
        if highest > 0 && may_vote_in_highest {
            self.become_unattached(highest + 1);
        }
        self.set_quorum_state(QuorumState {
            rejoining: false,
            ..self.qs.clone()
        });
        self.rejoin = Rejoin::default();
    }

    /// Observer without a leader: a Fetch to one voter, chosen at random. Any voter's answer
    /// names the leader it knows (the epoch checks in [`RaftCore::step`] follow it); the next
    /// try comes after the fetch backoff.
    fn discover_leader(&mut self) {
        debug_assert!(self.is_observer());
        let voters = &self.cfg.voters;
        let to = voters[(splitmix64(&mut self.rng) % voters.len() as u64) as usize];
        let m = self.leaderless_fetch();
        self.send(to, m);
        self.election_deadline = self.now + self.cfg.fetch_backoff_ms.max(1);
    }

    /// A Fetch from this log's end under a new correlation id, for a voter that may not lead:
    /// any voter's answer names the leader it knows, its epoch and its log end.
    fn leaderless_fetch(&mut self) -> Message {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        Message::FetchRequest {
            correlation,
            epoch: self.qs.epoch,
            replica: self.cfg.node_id,
            fetch_offset: self.log.end_offset(),
            last_fetched_epoch: self.log.last_epoch(),
            replica_incarnation: self.cfg.incarnation,
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        let env = Envelope {
            from: self.cfg.node_id,
            to,
            message,
        };
        self.outbox.push_back((self.qs_token, env));
    }

    /// Issues a `Sync` covering every operation so far; returns its token.
    fn sync(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.storage_out.push_back(StorageOp::Sync { token });
        self.pending_syncs.push_back((token, self.log.end_offset()));
        token
    }

    fn append_local(&mut self, payload: Bytes) -> i64 {
        let entry = Entry {
            offset: self.log.end_offset(),
            epoch: self.qs.epoch,
            payload,
        };
        let offset = entry.offset;
        self.log.append(entry.clone());
        self.storage_out.push_back(StorageOp::Append(vec![entry]));
        self.sync();
        offset
    }

    fn truncate(&mut self, to: i64) {
        if to >= self.log.end_offset() {
            return;
        }
        self.log.truncate(to);
        self.durable_end = self.durable_end.min(to);
        for p in self.pending_syncs.iter_mut() {
            p.1 = p.1.min(to);
        }
        self.storage_out
            .push_back(StorageOp::Truncate { end_offset: to });
        self.sync();
    }

    /// Follower: sends the next Fetch (or FetchSnapshot), released once all storage operations
    /// so far are durable.
    fn send_fetch(&mut self) {
        let now = self.now;
        let corr = self.next_correlation;
        let State::Follower(f) = &mut self.state else {
            return;
        };
        self.next_correlation += 1;
        f.in_flight = Some((corr, now));
        let message = match &f.download {
            Some(d) => Message::FetchSnapshotRequest {
                correlation: corr,
                epoch: self.qs.epoch,
                replica: self.cfg.node_id,
                snapshot_id: d.id,
                position: d.buf.len() as u64,
            },
            None => Message::FetchRequest {
                correlation: corr,
                epoch: self.qs.epoch,
                replica: self.cfg.node_id,
                fetch_offset: self.log.end_offset(),
                last_fetched_epoch: self.log.last_epoch(),
                replica_incarnation: self.cfg.incarnation,
            },
        };
        let env = Envelope {
            from: self.cfg.node_id,
            to: f.leader,
            message,
        };
        let gate = self.next_token - 1;
        self.outbox.push_back((gate, env));
    }

    fn quorum_deadline(&self, l: &LeaderState) -> u64 {
        self.quorum_deadline_of(l)
    }

    /// When check-quorum fires: the majority-th most recent fetch (the leader counts as now)
    /// plus the fetch timeout.
    fn quorum_deadline_of(&self, l: &LeaderState) -> u64 {
        if self.majority() <= 1 {
            return u64::MAX;
        }
        let mut times: Vec<u64> = l.progress.values().map(|p| p.last_fetch_ms).collect();
        times.push(self.now);
        times.sort_unstable_by(|a, b| b.cmp(a));
        times[self.majority() - 1] + self.cfg.fetch_timeout_ms
    }

    fn update_leader_high_watermark(&mut self) {
        let State::Leader(l) = &self.state else {
            return;
        };
        if planted::enabled(PlantedBug::HwFromLeader) {
            self.advance_high_watermark(self.log.end_offset());
            return;
        }
        let mut ends: Vec<i64> = l.progress.values().map(|p| p.end_offset).collect();
        if planted::enabled(PlantedBug::ObserverCounts) {
            ends.extend(l.observers.values().map(|p| p.end_offset));
        }
        ends.push(self.durable_end);
        ends.sort_unstable_by(|a, b| b.cmp(a));
        let m = ends[self.majority() - 1];
        // Only an entry of the leader's own epoch commits (Raft §5.4.2).
        if m > l.epoch_start_offset {
            self.advance_high_watermark(m);
        }
    }

    fn advance_high_watermark(&mut self, hw: i64) {
        assert!(
            hw <= self.log.end_offset(),
            "high watermark past the log end"
        );
        self.high_watermark = self.high_watermark.max(hw);
    }

    fn check_invariants(&self) {
        let (start, end) = (self.log.start_offset(), self.log.end_offset());
        assert!(
            start <= self.high_watermark && self.high_watermark <= end,
            "node {}: high watermark {} outside [{start}, {end}]",
            self.cfg.node_id,
            self.high_watermark
        );
        assert!(self.durable_end <= end, "durable end past the log end");
        assert!(
            self.log.last_epoch() <= self.qs.epoch,
            "log epoch {} above the current epoch {}",
            self.log.last_epoch(),
            self.qs.epoch
        );
        assert!(self.storage_out.len() < 100_000 && self.outbox.len() < 100_000);
        if self.is_observer() {
            assert!(
                matches!(self.state, State::Unattached | State::Follower(_)),
                "observer {} in role {:?}",
                self.cfg.node_id,
                self.role()
            );
            assert_eq!(self.qs.voted_for, None, "an observer voted");
        }
        if let State::Leader(l) = &self.state {
            assert!(l.observers.len() <= OBSERVERS_MAX);
            assert!(l.observers.keys().all(|id| !self.cfg.voters.contains(id)));
        }
        match &self.state {
            State::Leader(_) | State::Resigned => {
                assert_eq!(self.qs.leader, Some(self.cfg.node_id));
                assert_eq!(self.qs.voted_for, Some(self.cfg.node_id));
            }
            State::Follower(f) => assert_eq!(self.qs.leader, Some(f.leader)),
            State::Candidate { .. } => {
                assert_eq!(self.qs.voted_for, Some(self.cfg.node_id));
                assert_eq!(self.qs.leader, None);
            }
            State::Unattached | State::Prospective { .. } => {}
        }
    }
}

/// Checked before a quorum state is persisted and again when it is loaded.
fn check_quorum_state(cfg: &RaftConfig, qs: &QuorumState) {
    assert!(qs.epoch >= 0, "negative epoch");
    if qs.leader == Some(cfg.node_id) {
        assert_eq!(
            qs.voted_for,
            Some(cfg.node_id),
            "leader without its own vote"
        );
    }
    if let Some(v) = qs.voted_for {
        assert!(cfg.voters.contains(&v), "voted for non-voter {v}");
        assert!(qs.epoch > 0, "vote in epoch 0");
        assert!(
            !qs.rejoining,
            "a rejoining voter voted in epoch {}",
            qs.epoch
        );
    }
}

/// The leader's record of the replica that fetched: a voter's progress, or an observer's (made
/// room for when new); none for the leader itself.
fn fetcher_progress<'a>(
    l: &'a mut LeaderState,
    cfg: &RaftConfig,
    replica: NodeId,
    now: u64,
) -> Option<&'a mut Progress> {
    if cfg.voters.contains(&replica) {
        l.progress.get_mut(&replica)
    } else if replica != cfg.node_id {
        Some(observer_progress(&mut l.observers, replica, now))
    } else {
        None
    }
}

/// Whether a fetch from process `incarnation` may count for `p`. A fetch from a new process
/// (a restart, possibly on a wiped disk) resets what `p` counts to what that process reports;
/// a late fetch from a process already replaced counts for nothing.
fn same_process(p: &mut Progress, incarnation: i64) -> bool {
    if incarnation == -1 || incarnation == p.incarnation {
        return true;
    }
    if p.retired.contains(&incarnation) {
        return false;
    }
    if p.incarnation != -1 {
        if p.retired.len() >= RETIRED_INCARNATIONS_MAX {
            p.retired.remove(0);
        }
        p.retired.push(p.incarnation);
        p.end_offset = 0;
        p.last_caught_up_ms = None;
        p.leader_end_at_last_fetch = -1;
    }
    p.incarnation = incarnation;
    true
}

/// The leader's record of observer `id`, made room for when new: the observer heard from least
/// recently (then the lowest id) is forgotten when [`OBSERVERS_MAX`] are tracked.
fn observer_progress(
    observers: &mut BTreeMap<NodeId, Progress>,
    id: NodeId,
    now: u64,
) -> &mut Progress {
    if !observers.contains_key(&id) && observers.len() >= OBSERVERS_MAX {
        let oldest = observers
            .iter()
            .min_by_key(|(&n, p)| (p.last_fetch_ms, n))
            .map(|(&n, _)| n)
            .expect("observers is full, so not empty");
        observers.remove(&oldest);
    }
    observers.entry(id).or_insert(Progress {
        end_offset: 0,
        last_fetch_ms: now,
        fetched_in_epoch: false,
        last_caught_up_ms: None,
        leader_end_at_last_fetch: -1,
        incarnation: -1,
        retired: Vec::new(),
    })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
