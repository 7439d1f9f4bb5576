//! Deterministic multi-node simulation of the metadata quorum ([`broker::raft::RaftCore`]): N
//! voters and M observers (broker-only nodes, ids after the voters'), a virtual clock, a network with delay, loss, duplication, reordering and partitions
//! (symmetric and one-way) that heal, crashes that lose whatever was not reported durable (any
//! prefix of the unsynced storage operations may survive), disks wiped at a crash (one node at
//! a time: the node restarts with nothing stored and must rejoin before another disk is lost;
//! some seeds wipe a voter moments after it grants a vote, and restart it at once),
//! per-node clock skew and drift, and a
//! client proposing metadata records to the leader. Safety invariants are checked online and at
//! the end; liveness (a leader and converged high watermarks after the final heal) is reported
//! separately. See [`run_raft_seed`].
//!
//! Determinism: one `ChaCha8Rng` per seed, events ordered by (virtual µs, sequence), BTreeMaps
//! only; every event is a trace line hashed with FNV-1a ([`crate::trace`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use broker::raft::{
    Committed, Entry, Envelope, FetchResult, Message, MetadataImage, MetadataRecord, NodeId,
    QuorumState, RaftConfig, RaftCore, Recovered, Role, Snapshot, SnapshotChunk, StorageOp,
};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::Trace;

const MS: u64 = 1_000; // virtual time is in µs

/// Which fault families are injected before the final heal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftFaults {
    /// Message loss, duplication, partitions (symmetric and one-way), long delays.
    pub net: bool,
    /// Node crashes and restarts; unsynced storage operations are partly lost.
    pub crash: bool,
    /// Slow syncs (latency spikes), which widen the window of undurable state; with `crash`,
    /// disks wiped at a crash.
    pub disk: bool,
    /// Per-node clock skew and drift.
    pub clock: bool,
}

impl RaftFaults {
    pub const ALL: RaftFaults = RaftFaults {
        net: true,
        crash: true,
        disk: true,
        clock: true,
    };
    pub const NONE: RaftFaults = RaftFaults {
        net: false,
        crash: false,
        disk: false,
        clock: false,
    };
}

#[derive(Clone, Debug)]
pub struct RaftSimConfig {
    /// Voters (3 or 5).
    pub nodes: usize,
    /// Observers (broker-only nodes) besides the voters: they must never vote or lead, and
    /// must commit what the voters commit and follow every leader.
    pub observers: usize,
    /// Events processed with faults on; then the world heals.
    pub steps: u64,
    /// Virtual time after the final heal before liveness is judged (ms).
    pub quiet_ms: u64,
    pub faults: RaftFaults,
    /// Keep the trace lines (they are hashed either way).
    pub trace: bool,
}

impl Default for RaftSimConfig {
    fn default() -> Self {
        RaftSimConfig {
            nodes: 3,
            observers: 1,
            steps: 6000,
            quiet_ms: 5000,
            faults: RaftFaults::ALL,
            trace: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RaftRunResult {
    pub seed: u64,
    /// Safety violations (and panics inside the core). Empty means the seed passed.
    pub violations: Vec<String>,
    /// Liveness problems after the final heal, reported apart so they never mask safety.
    pub liveness: Vec<String>,
    pub trace_hash: u64,
    /// The trace lines, when asked for.
    pub trace: Vec<String>,
    pub events: u64,
    pub sim_ms: u64,
    /// Statistics, for judging coverage.
    pub elections: u64,
    pub committed: i64,
    pub snapshots_installed: u64,
    pub crashes: u64,
    /// Crashes that also wiped the node's disk.
    pub wipes: u64,
}

impl RaftRunResult {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one seed to completion.
pub fn run_raft_seed(seed: u64, config: &RaftSimConfig) -> RaftRunResult {
    let mut w = World::new(seed, config);
    let outcome = catch_unwind(AssertUnwindSafe(|| w.run()));
    if let Err(payload) = outcome {
        let msg = crate::panic_message(&payload);
        w.trace.line(w.now, format_args!("PANIC {msg}"));
        w.violations.push(format!("panic: {msg}"));
    }
    let trace = w
        .trace
        .take_text()
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    RaftRunResult {
        seed,
        violations: std::mem::take(&mut w.violations),
        liveness: std::mem::take(&mut w.liveness),
        trace_hash: w.trace.hash(),
        trace,
        events: w.events,
        sim_ms: w.now / MS,
        elections: w.leaders.len() as u64,
        committed: w.committed.len() as i64,
        snapshots_installed: w.snapshots_installed,
        crashes: w.crashes,
        wipes: w.wipes,
    }
}

/// Per-seed parameters (swarm testing).
#[derive(Debug)]
struct Params {
    net_delay: (u64, u64),
    loss: f64,
    dup: f64,
    partition_gap: (u64, u64),
    partition_len: (u64, u64),
    crash_gap: (u64, u64),
    restart_delay: (u64, u64),
    sync_latency: (u64, u64),
    slow_sync: f64,
    /// Chance that a crash also wipes the node's disk.
    wipe: f64,
    /// Chance that a voter that just granted a vote loses its disk moments later and comes
    /// back at once: its old vote may elect a leader while a deposed one still leads the
    /// epoch before, which the rejoining rule must not let the new process help.
    wipe_after_vote: f64,
    propose_gap: (u64, u64),
    max_log_entries: usize,
    max_fetch_entries: usize,
    chunk_bytes: usize,
    resign_p: f64,
    election_timeout_ms: u64,
    election_jitter_ms: u64,
    pre_vote: bool,
}

impl Params {
    fn draw(rng: &mut ChaCha8Rng, f: RaftFaults) -> Params {
        let net_hi = rng.gen_range(1..30) * MS;
        let election_timeout_ms = [100, 150, 300][rng.gen_range(0..3)];
        Params {
            net_delay: (100, net_hi),
            loss: if f.net { rng.gen_range(0.0..0.1) } else { 0.0 },
            dup: if f.net { rng.gen_range(0.0..0.05) } else { 0.0 },
            partition_gap: (100 * MS, rng.gen_range(300..3000) * MS),
            partition_len: (50 * MS, rng.gen_range(200..2000) * MS),
            crash_gap: (100 * MS, rng.gen_range(300..3000) * MS),
            restart_delay: (10 * MS, rng.gen_range(50..1000) * MS),
            sync_latency: (50, rng.gen_range(200..5000)),
            slow_sync: if f.disk {
                rng.gen_range(0.0..0.05)
            } else {
                0.0
            },
            wipe: if f.disk && f.crash {
                [0.0, 0.1, 0.3][rng.gen_range(0..3)]
            } else {
                0.0
            },
            wipe_after_vote: if f.disk && f.crash {
                [0.0, 0.2, 0.5][rng.gen_range(0..3)]
            } else {
                0.0
            },
            propose_gap: (MS, rng.gen_range(2..40) * MS),
            max_log_entries: rng.gen_range(8..80),
            max_fetch_entries: rng.gen_range(2..20),
            chunk_bytes: [1000, 4096, 65536][rng.gen_range(0..3)],
            resign_p: rng.gen_range(0.0..0.01),
            election_timeout_ms,
            // Small jitter makes split votes (and concurrent candidates) common.
            election_jitter_ms: [5, 30, election_timeout_ms][rng.gen_range(0..3)],
            pre_vote: rng.gen_bool(0.5),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver(Envelope),
    Tick {
        node: usize,
        gen: u64,
    },
    SyncDone {
        node: usize,
        inc: u64,
        token: u64,
    },
    Crash(usize),
    /// A crash that also wipes the disk (if one may be wiped now), with a quick restart.
    CrashWiping(usize),
    Restart(usize),
    /// The transport tells `node` that its connection from node index `lost` closed.
    PeerLost {
        node: usize,
        lost: usize,
    },
    Propose,
    NetFault,
    NetHeal(u64),
}

/// A node's storage: what is durable, and the operations issued but not yet synced.
#[derive(Default)]
struct Disk {
    qs: QuorumState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    pending: VecDeque<StorageOp>,
}

impl Disk {
    fn apply(&mut self, op: StorageOp) {
        match op {
            StorageOp::PersistQuorumState(qs) => self.qs = qs,
            StorageOp::Append(es) => {
                for e in es {
                    let next = self
                        .entries
                        .last()
                        .map_or(self.snapshot.as_ref().map_or(0, |s| s.id.end_offset), |l| {
                            l.offset + 1
                        });
                    assert_eq!(e.offset, next, "disk append not at the end");
                    self.entries.push(e);
                }
            }
            StorageOp::Truncate { end_offset } => self.entries.retain(|e| e.offset < end_offset),
            StorageOp::WriteSnapshot(s) => {
                let cur = self.snapshot.as_ref().map_or(0, |s| s.id.end_offset);
                if s.id.end_offset > cur {
                    self.entries.retain(|e| e.offset >= s.id.end_offset);
                    self.snapshot = Some(s);
                }
            }
            StorageOp::InstallSnapshot(s) => {
                self.entries.clear();
                self.snapshot = Some(s);
            }
            StorageOp::Sync { .. } => {}
        }
    }

    /// Applies pending operations through `Sync { token }`.
    fn sync(&mut self, token: u64) {
        while let Some(op) = self.pending.pop_front() {
            let done = matches!(op, StorageOp::Sync { token: t } if t == token);
            self.apply(op);
            if done {
                return;
            }
        }
        panic!("sync {token} not pending");
    }
}

struct Node {
    id: NodeId,
    seed: u64,
    core: Option<RaftCore>,
    disk: Disk,
    inc: u64,
    skew_us: i64,
    drift_ppm: i64,
    tick_gen: u64,
    tick_at: u64,
    sync_free_at: u64,
    image: MetadataImage,
    last_hw: i64,
    last_role: Option<(Role, i32)>,
    last_rejoining: bool,
}

struct World {
    cfg: RaftSimConfig,
    rng: ChaCha8Rng,
    p: Params,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    trace: Trace,
    events: u64,
    faults_on: bool,
    heal_at: Option<u64>,
    nodes: Vec<Node>,
    /// One-way blocked links (from, to).
    blocked: BTreeSet<(usize, usize)>,
    net_gen: u64,
    violations: Vec<String>,
    liveness: Vec<String>,
    /// Epoch → leader.
    leaders: BTreeMap<i32, NodeId>,
    /// Offset → (epoch, payload, epoch in which it was first seen committed).
    committed: BTreeMap<i64, (i32, Bytes, i32)>,
    /// Applied offset → image digest.
    digests: BTreeMap<i64, u64>,
    next_record: u64,
    topics: Vec<[u8; 16]>,
    snapshots_installed: u64,
    crashes: u64,
    /// A node whose disk was wiped and that has not rejoined yet: no other disk is wiped
    /// meanwhile (two lost disks of three lose committed entries whatever the protocol does).
    wiped: Option<usize>,
    wipes: u64,
}

/// A compact, payload-free rendering of a message for the trace.
struct Brief<'a>(&'a Message);

impl std::fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{} e{}", m.kind(), m.epoch())?;
        match m {
            Message::VoteRequest {
                candidate,
                last_epoch,
                last_offset,
                ..
            } => write!(f, " c{candidate} last {last_epoch}/{last_offset}"),
            Message::VoteResponse {
                leader, granted, ..
            } => write!(f, " granted {granted} leader {leader:?}"),
            Message::BeginQuorumEpoch { leader, .. } | Message::EndQuorumEpoch { leader, .. } => {
                write!(f, " leader {leader}")
            }
            Message::BeginQuorumEpochResponse { .. } => Ok(()),
            Message::FetchRequest {
                correlation,
                fetch_offset,
                last_fetched_epoch,
                ..
            } => write!(f, " #{correlation} at {fetch_offset}/{last_fetched_epoch}"),
            Message::FetchResponse {
                correlation,
                leader,
                high_watermark,
                result,
                ..
            } => {
                write!(f, " #{correlation} leader {leader:?} hw {high_watermark} ")?;
                match result {
                    FetchResult::Entries(es) => match (es.first(), es.last()) {
                        (Some(a), Some(b)) => write!(f, "entries {}..={}", a.offset, b.offset),
                        _ => write!(f, "entries none"),
                    },
                    other => write!(f, "{other:?}"),
                }
            }
            Message::FetchSnapshotRequest {
                correlation,
                snapshot_id,
                position,
                ..
            } => write!(f, " #{correlation} {snapshot_id:?} at {position}"),
            Message::FetchSnapshotResponse {
                correlation, chunk, ..
            } => match chunk {
                SnapshotChunk::Chunk {
                    size,
                    position,
                    bytes,
                } => write!(f, " #{correlation} {position}+{} of {size}", bytes.len()),
                other => write!(f, " #{correlation} {other:?}"),
            },
        }
    }
}

macro_rules! tr {
    ($w:expr, $($arg:tt)*) => {
        $w.trace.line($w.now, format_args!($($arg)*))
    };
}

impl World {
    fn new(seed: u64, cfg: &RaftSimConfig) -> World {
        assert!(cfg.nodes >= 1 && cfg.nodes <= 9 && cfg.observers <= 4);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let p = Params::draw(&mut rng, cfg.faults);
        let nodes = (0..cfg.nodes + cfg.observers)
            .map(|i| {
                let (skew_us, drift_ppm) = if cfg.faults.clock {
                    (rng.gen_range(0..10_000_000), rng.gen_range(-50_000..50_000))
                } else {
                    (0, 0)
                };
                Node {
                    id: i as NodeId + 1,
                    seed: 0,
                    core: None,
                    disk: Disk::default(),
                    inc: 0,
                    skew_us,
                    drift_ppm,
                    tick_gen: 0,
                    tick_at: u64::MAX,
                    sync_free_at: 0,
                    image: MetadataImage::default(),
                    last_hw: 0,
                    last_role: None,
                    last_rejoining: false,
                }
            })
            .collect();
        let mut w = World {
            cfg: cfg.clone(),
            rng,
            p,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: Trace::new(cfg.trace),
            events: 0,
            faults_on: true,
            heal_at: None,
            nodes,
            blocked: BTreeSet::new(),
            net_gen: 0,
            violations: Vec::new(),
            liveness: Vec::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            digests: BTreeMap::new(),
            next_record: 0,
            topics: Vec::new(),
            snapshots_installed: 0,
            crashes: 0,
            wiped: None,
            wipes: 0,
        };
        tr!(
            w,
            "raft seed {seed} nodes {} observers {} faults {:?} params {:?}",
            cfg.nodes,
            cfg.observers,
            cfg.faults,
            w.p
        );
        w
    }

    fn rand_in(&mut self, (lo, hi): (u64, u64)) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }

    fn schedule_at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.schedule_at(self.now + delay, ev);
    }

    fn violation(&mut self, msg: String) {
        tr!(self, "VIOLATION {msg}");
        if self.violations.len() < 50 && !self.violations.contains(&msg) {
            self.violations.push(msg);
        }
    }

    // ---- clocks ----

    fn local_ms(&self, n: usize) -> u64 {
        let node = &self.nodes[n];
        let t = self.now as i128;
        let local = t + node.skew_us as i128 + t * node.drift_ppm as i128 / 1_000_000;
        (local.max(0) / 1000) as u64
    }

    /// The first global time at which node `n`'s clock reads at least `ms`.
    fn global_for_local(&self, n: usize, ms: u64) -> u64 {
        let node = &self.nodes[n];
        let local = ms as i128 * 1000;
        let g = (local - node.skew_us as i128) * 1_000_000 / (1_000_000 + node.drift_ppm as i128);
        (g.max(0) as u64 + 2).max(self.now)
    }

    /// The voters' ids: the first `cfg.nodes` nodes; the rest observe.
    fn voter_ids(&self) -> Vec<NodeId> {
        (1..=self.cfg.nodes as NodeId).collect()
    }

    // ---- main loop ----

    fn run(&mut self) {
        let voters = self.voter_ids();
        for i in 0..self.nodes.len() {
            self.start_node(i, &voters);
        }
        let d = self.rand_in(self.p.propose_gap);
        self.schedule(d, Ev::Propose);
        if self.cfg.faults.net {
            let d = self.rand_in(self.p.partition_gap);
            self.schedule(d, Ev::NetFault);
        }
        if self.cfg.faults.crash {
            for i in 0..self.nodes.len() {
                let d = self.rand_in(self.p.crash_gap);
                self.schedule(d, Ev::Crash(i));
            }
        }
        let limit = self.cfg.steps * 20 + 200_000;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            self.events += 1;
            if self.faults_on && self.events >= self.cfg.steps {
                self.heal();
            }
            if let Some(h) = self.heal_at {
                if self.now >= h + self.cfg.quiet_ms * MS {
                    break;
                }
            }
            if self.events > limit {
                self.violation(format!("no quiescence after {} events", self.events));
                break;
            }
            self.handle(ev);
            if self.events % 500 == 0 {
                self.check_logs();
            }
        }
        self.check_logs();
        self.check_liveness();
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.heal_at = Some(self.now);
        self.blocked.clear();
        self.p.loss = 0.0;
        self.p.dup = 0.0;
        self.p.slow_sync = 0.0;
        tr!(self, "HEAL");
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                self.schedule(MS, Ev::Restart(i));
            }
        }
    }

    fn raft_config(&self, i: usize, voters: &[NodeId]) -> RaftConfig {
        let mut c = RaftConfig::new(self.nodes[i].id, voters.to_vec(), self.nodes[i].seed);
        c.election_timeout_ms = self.p.election_timeout_ms;
        c.election_jitter_ms = self.p.election_jitter_ms;
        c.fetch_timeout_ms = 2 * self.p.election_timeout_ms;
        c.fetch_backoff_ms = 10;
        c.request_timeout_ms = 100;
        c.max_fetch_entries = self.p.max_fetch_entries;
        c.max_fetch_bytes = 512;
        c.snapshot_chunk_bytes = self.p.chunk_bytes;
        c.max_log_entries = self.p.max_log_entries;
        c.max_uncommitted_entries = 200;
        c.pre_vote = self.p.pre_vote;
        // One per process, as the broker's: a leader tells a restarted voter's fetches from
        // the previous process's.
        c.incarnation = (self.nodes[i].seed >> 1) as i64;
        c
    }

    fn start_node(&mut self, i: usize, voters: &[NodeId]) {
        // Each incarnation's jitter seed comes from the world's RNG.
        self.nodes[i].seed = self.rng.gen();
        let cfg = self.raft_config(i, voters);
        let now_ms = self.local_ms(i);
        let node = &mut self.nodes[i];
        node.inc += 1;
        let recovered = Recovered {
            quorum_state: node.disk.qs.clone(),
            snapshot: node.disk.snapshot.clone(),
            entries: node.disk.entries.clone(),
        };
        node.image = match &node.disk.snapshot {
            Some(s) => MetadataImage::decode(&s.data).expect("durable snapshot decodes"),
            None => MetadataImage::default(),
        };
        node.last_hw = -1;
        node.last_role = None;
        node.last_rejoining = false;
        node.tick_at = u64::MAX;
        node.core = Some(RaftCore::new(cfg, recovered, now_ms));
        let inc = node.inc;
        tr!(self, "n{} start inc {inc}", i + 1);
        self.after(i);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver(env) => {
                let to = (env.to - 1) as usize;
                if self.nodes[to].core.is_none() {
                    return;
                }
                tr!(
                    self,
                    "deliver {}->{} {}",
                    env.from,
                    env.to,
                    Brief(&env.message)
                );
                let now = self.local_ms(to);
                self.nodes[to].core.as_mut().unwrap().step(now, env);
                self.after(to);
            }
            Ev::Tick { node, gen } => {
                if self.nodes[node].tick_gen != gen || self.nodes[node].core.is_none() {
                    return;
                }
                self.nodes[node].tick_at = u64::MAX;
                let now = self.local_ms(node);
                self.nodes[node].core.as_mut().unwrap().tick(now);
                self.after(node);
            }
            Ev::SyncDone { node, inc, token } => {
                if self.nodes[node].inc != inc || self.nodes[node].core.is_none() {
                    return;
                }
                tr!(self, "n{} synced {token}", node + 1);
                self.nodes[node].disk.sync(token);
                let now = self.local_ms(node);
                self.nodes[node].core.as_mut().unwrap().synced(now, token);
                self.after(node);
            }
            Ev::Crash(i) => {
                if !self.faults_on {
                    return;
                }
                if self.nodes[i].core.is_some() {
                    let wipe = self.p.wipe > 0.0 && self.rng.gen_bool(self.p.wipe);
                    self.crash(i, wipe);
                    let d = self.rand_in(self.p.restart_delay);
                    self.schedule(d, Ev::Restart(i));
                }
                let d = self.rand_in(self.p.crash_gap);
                self.schedule(d, Ev::Crash(i));
            }
            Ev::CrashWiping(i) => {
                if self.faults_on && self.nodes[i].core.is_some() {
                    self.crash(i, true);
                    let d = self.rand_in((MS, 50 * MS));
                    self.schedule(d, Ev::Restart(i));
                }
            }
            Ev::PeerLost { node, lost } => {
                let lost_id = self.nodes[lost].id;
                let now = self.local_ms(node);
                if let Some(core) = self.nodes[node].core.as_mut() {
                    tr!(self, "n{} lost its connection from n{lost_id}", node + 1);
                    core.peer_lost(lost_id, now);
                    self.after(node);
                }
            }
            Ev::Restart(i) => {
                if self.nodes[i].core.is_none() {
                    let voters = self.voter_ids();
                    self.start_node(i, &voters);
                }
            }
            Ev::Propose => {
                let stop_at = self.heal_at.map(|h| h + self.cfg.quiet_ms * MS / 4);
                if stop_at.is_some_and(|s| self.now >= s) {
                    return;
                }
                self.propose();
                let d = self.rand_in(self.p.propose_gap);
                self.schedule(d, Ev::Propose);
            }
            Ev::NetFault => {
                if !self.faults_on {
                    return;
                }
                self.net_fault();
                let d = self.rand_in(self.p.partition_gap);
                self.schedule(d, Ev::NetFault);
            }
            Ev::NetHeal(gen) => {
                if gen == self.net_gen && !self.blocked.is_empty() {
                    self.blocked.clear();
                    tr!(self, "net heal");
                }
            }
        }
    }

    /// Node `i` dies, keeping a random prefix of its unsynced operations; with `wipe`, its
    /// disk is also lost if one may be now ([`Self::wipe_allowed`]).
    fn crash(&mut self, i: usize, wipe: bool) {
        let keep = self.rng.gen_range(0..=self.nodes[i].disk.pending.len());
        let node = &mut self.nodes[i];
        let pending: Vec<StorageOp> = node.disk.pending.drain(..).collect();
        for op in pending.into_iter().take(keep) {
            node.disk.apply(op);
        }
        node.core = None;
        node.tick_gen += 1;
        self.crashes += 1;
        tr!(self, "n{} CRASH (kept {keep} unsynced ops)", i + 1);
        if wipe && self.wipe_allowed(i) {
            self.nodes[i].disk = Disk::default();
            self.wiped = Some(i);
            self.wipes += 1;
            tr!(self, "n{} DISK WIPED", i + 1);
        }
        // A dead process's connections close: most peers hear of it soon (not all: none may
        // have been open).
        for j in 0..self.nodes.len() {
            if j != i && self.rng.gen_bool(0.8) {
                let d = self.rand_in((0, 5 * MS));
                self.schedule(d, Ev::PeerLost { node: j, lost: i });
            }
        }
    }

    /// One stateless voter at a time: no disk is wiped while an earlier wipe has not rejoined,
    /// or another voter is rejoining or holds nothing durable (it would come back rejoining
    /// too, and could not help elect the leader a wiped one needs). Losing the state of two
    /// voters of three loses what they alone acknowledged, whatever the protocol.
    fn wipe_allowed(&self, i: usize) -> bool {
        let durable = |n: &Node| {
            !n.disk.qs.rejoining
                && (n.disk.qs != QuorumState::default()
                    || !n.disk.entries.is_empty()
                    || n.disk.snapshot.is_some())
                && n.core.as_ref().is_none_or(|c| !c.is_rejoining())
        };
        self.wiped.is_none()
            && (0..self.cfg.nodes)
                .filter(|&j| j != i)
                .all(|j| durable(&self.nodes[j]))
    }

    fn net_fault(&mut self) {
        let n = self.nodes.len();
        self.blocked.clear();
        // Connections also reset without anyone dying.
        if self.rng.gen_bool(0.3) {
            let node = self.rng.gen_range(0..n);
            let lost = self.rng.gen_range(0..n);
            if node != lost {
                self.schedule(0, Ev::PeerLost { node, lost });
            }
        }
        match self.rng.gen_range(0..3) {
            0 => {
                // Isolate one node, both directions.
                let x = self.rng.gen_range(0..n);
                for j in (0..n).filter(|&j| j != x) {
                    self.blocked.insert((x, j));
                    self.blocked.insert((j, x));
                }
            }
            1 => {
                // Split into two sides.
                let side: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.5)).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            _ => {
                // One-way links.
                for a in 0..n {
                    for b in 0..n {
                        if a != b && self.rng.gen_bool(0.3) {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
        }
        self.net_gen += 1;
        let len = self.rand_in(self.p.partition_len);
        let gen = self.net_gen;
        tr!(self, "net fault {:?} for {}ms", self.blocked, len / MS);
        self.schedule(len, Ev::NetHeal(gen));
    }

    fn propose(&mut self) {
        // The client finds the leader with the highest epoch among running nodes.
        let leader = (0..self.nodes.len())
            .filter_map(|i| {
                let c = self.nodes[i].core.as_ref()?;
                (c.role() == Role::Leader).then_some((c.epoch(), i))
            })
            .max();
        let Some((_, i)) = leader else { return };
        if self.faults_on && self.rng.gen_bool(self.p.resign_p) {
            tr!(self, "n{} asked to resign", i + 1);
            let now = self.local_ms(i);
            self.nodes[i].core.as_mut().unwrap().resign(now);
            self.after(i);
            return;
        }
        self.next_record += 1;
        let k = self.next_record;
        let rec = match self.rng.gen_range(0..3) {
            0 => MetadataRecord::RegisterBroker {
                node_id: self.rng.gen_range(0..5),
                host: format!("b{k}"),
                port: 9092,
                epoch: k as i64,
                logs_intact: self.rng.gen_bool(0.5),
                rack: None,
                // Varies without a draw, so the run's random stream is what it was.
                directory_id: Some([(k % 3) as u8; 16]),
            },
            1 => {
                let mut id = [0u8; 16];
                self.rng.fill(&mut id[..]);
                self.topics.push(id);
                MetadataRecord::CreateTopic {
                    name: format!("t{k}"),
                    id,
                    partitions: self.rng.gen_range(1..4),
                }
            }
            _ => {
                let topic_id = if self.topics.is_empty() {
                    [0; 16]
                } else {
                    self.topics[self.rng.gen_range(0..self.topics.len())]
                };
                MetadataRecord::PartitionChange {
                    topic_id,
                    partition: self.rng.gen_range(0..3),
                    leader: self.rng.gen_range(1..4),
                    leader_epoch: k as i32,
                    isr: vec![1, 2],
                    replicas: vec![1, 2, 3],
                    elr: if self.rng.gen_bool(0.5) {
                        vec![3]
                    } else {
                        vec![]
                    },
                    adding: vec![],
                    removing: vec![],
                }
            }
        };
        let now = self.local_ms(i);
        let r = self.nodes[i]
            .core
            .as_mut()
            .unwrap()
            .propose(now, rec.encode());
        tr!(self, "propose #{k} to n{} -> {:?}", i + 1, r);
        self.after(i);
    }

    fn send(&mut self, from: usize, env: Envelope) {
        let to = (env.to - 1) as usize;
        if self.blocked.contains(&(from, to)) || self.rng.gen_bool(self.p.loss) {
            tr!(self, "drop {}->{} {}", env.from, env.to, env.message.kind());
            return;
        }
        let copies = if self.rng.gen_bool(self.p.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.rand_in(self.p.net_delay);
            self.schedule(d, Ev::Deliver(env.clone()));
        }
    }

    /// After any input to node `i`: perform its storage operations and sends, apply what it
    /// committed, snapshot if asked, check invariants, schedule its next tick.
    fn after(&mut self, i: usize) {
        loop {
            let mut progressed = false;
            while let Some(op) = self.nodes[i].core.as_mut().unwrap().poll_storage() {
                progressed = true;
                if let StorageOp::Sync { token } = op {
                    let mut lat = self.rand_in(self.p.sync_latency);
                    if self.rng.gen_bool(self.p.slow_sync) {
                        lat += self.rng.gen_range(20..200) * MS;
                    }
                    let at = self.nodes[i].sync_free_at.max(self.now + lat);
                    self.nodes[i].sync_free_at = at;
                    let inc = self.nodes[i].inc;
                    self.schedule_at(
                        at,
                        Ev::SyncDone {
                            node: i,
                            inc,
                            token,
                        },
                    );
                }
                self.nodes[i].disk.pending.push_back(op);
            }
            while let Some(env) = self.nodes[i].core.as_mut().unwrap().poll_message() {
                progressed = true;
                let granted = matches!(
                    env.message,
                    Message::VoteResponse {
                        granted: true,
                        pre_vote: false,
                        ..
                    }
                );
                if granted
                    && self.faults_on
                    && self.p.wipe_after_vote > 0.0
                    && self.rng.gen_bool(self.p.wipe_after_vote)
                {
                    let d = self.rand_in((0, 10 * MS));
                    self.schedule(d, Ev::CrashWiping(i));
                }
                self.send(i, env);
            }
            if self.apply_committed(i) {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        self.observe(i);
        let deadline = self.nodes[i].core.as_ref().unwrap().poll_timeout();
        if deadline != u64::MAX {
            let at = self.global_for_local(i, deadline);
            if at < self.nodes[i].tick_at {
                let node = &mut self.nodes[i];
                node.tick_gen += 1;
                node.tick_at = at;
                let gen = node.tick_gen;
                self.schedule_at(at, Ev::Tick { node: i, gen });
            }
        }
    }

    /// Applies newly committed entries to node `i`'s image; snapshots when the core hints.
    fn apply_committed(&mut self, i: usize) -> bool {
        let mut did = false;
        loop {
            let applied = self.nodes[i].image.applied_offset;
            let c = self.nodes[i].core.as_ref().unwrap().committed(applied, 64);
            match c {
                None => break,
                Some(Committed::Snapshot(s)) => {
                    let img = MetadataImage::decode(&s.data).expect("snapshot decodes");
                    if img.applied_offset != s.id.end_offset {
                        self.violation(format!(
                            "n{} snapshot at {} holds an image at {}",
                            i + 1,
                            s.id.end_offset,
                            img.applied_offset
                        ));
                    }
                    tr!(self, "n{} loads snapshot {:?}", i + 1, s.id);
                    self.snapshots_installed += 1;
                    self.nodes[i].image = img;
                    self.record_digest(i);
                }
                Some(Committed::Entries(es)) => {
                    for e in es {
                        self.nodes[i].image.apply(e.offset, &e.payload);
                        // Digests cost an encode: compare at every 8th offset and wherever a
                        // snapshot load recorded one.
                        let at = self.nodes[i].image.applied_offset;
                        if at % 8 == 0 || self.digests.contains_key(&at) {
                            self.record_digest(i);
                        }
                    }
                }
            }
            did = true;
        }
        let core = self.nodes[i].core.as_ref().unwrap();
        if let Some(at) = core.snapshot_hint() {
            let img = &self.nodes[i].image;
            if img.applied_offset == at {
                let data = img.encode();
                let now = self.local_ms(i);
                tr!(self, "n{} snapshot at {at}", i + 1);
                self.nodes[i]
                    .core
                    .as_mut()
                    .unwrap()
                    .create_snapshot(now, at, data);
                did = true;
            }
        }
        did
    }

    fn record_digest(&mut self, i: usize) {
        let img = &self.nodes[i].image;
        let (at, d) = (img.applied_offset, img.digest());
        match self.digests.get(&at) {
            Some(&x) if x != d => self.violation(format!(
                "n{} applied image at {at} differs from another node's",
                i + 1
            )),
            Some(_) => {}
            None => {
                self.digests.insert(at, d);
            }
        }
    }

    /// Online checks after every input to node `i`: one leader per epoch, leader completeness,
    /// committed entries never change, high watermark monotonic.
    fn observe(&mut self, i: usize) {
        let core = self.nodes[i].core.as_ref().unwrap();
        let (role, epoch, id) = (core.role(), core.epoch(), self.nodes[i].id);
        let rejoining = core.is_rejoining();
        if rejoining != self.nodes[i].last_rejoining {
            self.nodes[i].last_rejoining = rejoining;
            tr!(self, "n{id} rejoining {rejoining}");
        }
        if self.wiped == Some(i) && !rejoining {
            tr!(self, "n{id} rejoined after its wipe");
            self.wiped = None;
        }
        let mut problems = Vec::new();
        if self.nodes[i].last_role != Some((role, epoch)) {
            self.nodes[i].last_role = Some((role, epoch));
            tr!(self, "n{} {} epoch {epoch}", id, role.name());
            if id as usize > self.cfg.nodes && !matches!(role, Role::Unattached | Role::Follower) {
                problems.push(format!(
                    "observer n{id} is {} in epoch {epoch}",
                    role.name()
                ));
            }
            if role == Role::Leader {
                match self.leaders.get(&epoch) {
                    Some(&l) if l != id => {
                        problems.push(format!("two leaders in epoch {epoch}: n{l} and n{id}"))
                    }
                    _ => {
                        self.leaders.insert(epoch, id);
                    }
                }
                // Leader completeness: everything committed in an earlier epoch is here.
                let core = self.nodes[i].core.as_ref().unwrap();
                for (&o, (e, payload, ce)) in &self.committed {
                    if *ce >= epoch || o < core.log_start_offset() {
                        continue;
                    }
                    match core.log().entry(o) {
                        Some(x) if x.epoch == *e && x.payload == *payload => {}
                        other => problems.push(format!(
                            "leader n{id} of epoch {epoch} lacks committed offset {o} \
                             (epoch {e}), has {:?}",
                            other.map(|x| x.epoch)
                        )),
                    }
                }
            }
        }
        let core = self.nodes[i].core.as_ref().unwrap();
        let hw = core.high_watermark();
        let last = self.nodes[i].last_hw;
        if hw < last {
            problems.push(format!(
                "n{id} high watermark went back from {last} to {hw}"
            ));
        }
        if hw > last {
            for o in last.max(core.log_start_offset())..hw {
                let Some(x) = core.log().entry(o) else {
                    problems.push(format!("n{id} committed offset {o} missing from its log"));
                    continue;
                };
                match self.committed.get(&o) {
                    Some((e, p, _)) if *e != x.epoch || *p != x.payload => problems.push(format!(
                        "committed offset {o} changed: epoch {e} then epoch {} on n{id}",
                        x.epoch
                    )),
                    Some(_) => {}
                    None => {
                        self.committed
                            .insert(o, (x.epoch, x.payload.clone(), epoch));
                    }
                }
            }
            tr!(self, "n{id} hw {hw}");
            self.nodes[i].last_hw = hw;
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Log matching across every pair of running nodes.
    fn check_logs(&mut self) {
        let mut problems = Vec::new();
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                let (Some(x), Some(y)) = (&self.nodes[a].core, &self.nodes[b].core) else {
                    continue;
                };
                let (lx, ly) = (x.log(), y.log());
                let lo = lx.start_offset().max(ly.start_offset());
                let hi = lx.end_offset().min(ly.end_offset());
                // The highest offset where both have the same epoch: below it, all must match.
                let Some(top) = (lo..hi)
                    .rev()
                    .find(|&o| lx.entry(o).unwrap().epoch == ly.entry(o).unwrap().epoch)
                else {
                    continue;
                };
                for o in lo..=top {
                    if lx.entry(o) != ly.entry(o) {
                        problems.push(format!(
                            "log matching: n{} and n{} share epoch {} at {top} but differ at {o}",
                            a + 1,
                            b + 1,
                            lx.entry(top).unwrap().epoch
                        ));
                        break;
                    }
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    fn check_liveness(&mut self) {
        let running: Vec<&RaftCore> = self.nodes.iter().filter_map(|n| n.core.as_ref()).collect();
        if running.len() != self.nodes.len() {
            self.liveness.push(format!(
                "{} nodes down at the end",
                self.nodes.len() - running.len()
            ));
            return;
        }
        for c in &running {
            if c.is_rejoining() {
                self.liveness.push(format!(
                    "n{} still rejoining (not heard from {:?})",
                    c.node_id(),
                    c.rejoin_unheard()
                ));
            }
        }
        let leaders: Vec<&&RaftCore> = running
            .iter()
            .filter(|c| c.role() == Role::Leader)
            .collect();
        let max_epoch = running.iter().map(|c| c.epoch()).max().unwrap_or(0);
        match leaders.as_slice() {
            [l] if l.epoch() == max_epoch => {
                let (lid, hw, end) = (l.node_id(), l.high_watermark(), l.log_end_offset());
                if hw != end {
                    self.liveness.push(format!(
                        "leader n{lid} high watermark {hw} below its log end {end}"
                    ));
                }
                for c in &running {
                    if c.leader() != Some(lid) || c.epoch() != max_epoch {
                        self.liveness.push(format!(
                            "n{} follows {:?} in epoch {}, not n{lid} in {max_epoch}",
                            c.node_id(),
                            c.leader(),
                            c.epoch()
                        ));
                    } else if c.high_watermark() != hw {
                        self.liveness.push(format!(
                            "n{} high watermark {} != leader's {hw}",
                            c.node_id(),
                            c.high_watermark()
                        ));
                    }
                }
            }
            _ => self.liveness.push(format!(
                "no single leader in the highest epoch {max_epoch} after the heal ({} leaders)",
                leaders.len()
            )),
        }
        let lines = self.liveness.clone();
        for l in lines {
            tr!(self, "LIVENESS {l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(seeds: std::ops::Range<u64>, cfg: &RaftSimConfig) -> (Vec<String>, u64) {
        let mut bad = Vec::new();
        let mut live = 0;
        for seed in seeds {
            let r = run_raft_seed(seed, cfg);
            if !r.violations.is_empty() {
                bad.push(format!("seed {seed}: {:?}", r.violations));
            }
            if !r.liveness.is_empty() {
                live += 1;
            }
        }
        (bad, live)
    }

    #[test]
    fn raft_sim_300_seeds_clean() {
        crate::install_panic_hook();
        let cfg = RaftSimConfig::default();
        let (bad, live) = sweep(0..300, &cfg);
        assert!(bad.is_empty(), "{} failing seeds: {bad:#?}", bad.len());
        assert!(live <= 3, "{live} seeds without liveness after the heal");
    }

    #[test]
    fn raft_sim_five_nodes_clean() {
        crate::install_panic_hook();
        let cfg = RaftSimConfig {
            nodes: 5,
            ..RaftSimConfig::default()
        };
        let (bad, _) = sweep(1000..1040, &cfg);
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn raft_sim_no_faults_is_live() {
        let cfg = RaftSimConfig {
            faults: RaftFaults::NONE,
            ..RaftSimConfig::default()
        };
        for seed in 0..20 {
            let r = run_raft_seed(seed, &cfg);
            assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
            assert!(r.liveness.is_empty(), "seed {seed}: {:?}", r.liveness);
            assert!(
                r.committed > 50,
                "seed {seed}: only {} committed",
                r.committed
            );
        }
    }

    #[test]
    fn raft_sim_same_seed_same_hash() {
        let cfg = RaftSimConfig {
            trace: true,
            ..RaftSimConfig::default()
        };
        for seed in [1, 7, 42] {
            let a = run_raft_seed(seed, &cfg);
            let b = run_raft_seed(seed, &cfg);
            assert_eq!(a.trace_hash, b.trace_hash);
            assert_eq!(a.trace, b.trace);
            assert!(!a.trace.is_empty());
        }
        assert_ne!(
            run_raft_seed(1, &cfg).trace_hash,
            run_raft_seed(2, &cfg).trace_hash
        );
    }

    /// Both plants in one function: `plant` is process-wide.
    #[cfg(feature = "planted-bugs")]
    #[test]
    fn raft_sim_catches_planted_bugs() {
        use broker::planted::{plant, PlantedBug};
        crate::install_panic_hook();
        let cfg = RaftSimConfig::default();
        for bug in [
            PlantedBug::VoteTwice,
            PlantedBug::HwFromLeader,
            PlantedBug::ObserverCounts,
        ] {
            assert!(plant(&[bug]));
            let caught = (0..200).find(|&s| !run_raft_seed(s, &cfg).violations.is_empty());
            plant(&[]);
            assert!(caught.is_some(), "{} not caught in 200 seeds", bug.name());
            eprintln!("{} caught at seed {}", bug.name(), caught.unwrap());
        }
    }
}
