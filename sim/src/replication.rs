//! Deterministic simulation of partition replication with the real sans-IO pieces: N broker
//! nodes (3 or 5), each with its own [`MemStorage`] and one [`PartitionCore`] per partition
//! (replication factor N, min ISR 2), the real [`Controller`] over a single always-available
//! metadata log (a commit delay, failover to a fresh controller), metadata propagated to each
//! node with random delays and applied the way the shell's `reconcile`/`Partition::set_role`
//! do, follower fetches as lossy delayed messages (fetch offset = durable end, fsync before the
//! next fetch), AlterPartition from leaders' `isr_change`, heartbeats, re-registration under a
//! new incarnation after a crash, and acks=all producers that follow a client metadata cache.
//!
//! Faults: node crashes (torn or dropped unsynced writes), network partitions of a node, slow
//! disks, slow metadata delivery, controller failover; operators' elections, reassignments and
//! DeleteRecords (followers take the leader's log start from fetch answers). A quarter of the
//! seeds also run with unclean leader elections (the controller's setting and operators'
//! requests). Checks: acknowledged batches survive
//! (online at every leadership change, and in the final leader's log, except those an
//! operator deleted or an unclean election forfeited; no log starts past every deletion; no
//! leader from outside the ISR and ELR unless unclean elections are on), replicas byte-identical
//! below the final high watermark, a consumer reading from a follower (KIP-392) gets only
//! committed batches, byte for byte, the high watermark never goes back within a leader epoch,
//! one leader per (partition, epoch), leader epochs never go back on a node, and liveness after
//! the final heal (which also ends message loss). See [`run_replication_seed`] and, for a byte-driven program of actions (the
//! fuzz target), [`run_replication_actions`].
//!
//! Self-contained on purpose (only `broker`, `bytes` and std): `fuzz/src/lib.rs` includes this
//! file by path. Determinism: a SplitMix64 stream per seed, events ordered by (virtual ms,
//! sequence), BTreeMaps only; every trace line is hashed with FNV-1a.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use broker::cluster::config_change::ConfigChange;
use broker::cluster::controller::{
    effective_min_isr, Controller, ControllerConfig, ControllerRequest, CLUSTER_MIN_ISR,
};
use broker::cluster::replication::isr_change_refused_for_good;
use broker::log::testutil::simple_batch;
use broker::log::{FlushTicket, Log, LogConfig};
use broker::raft::metadata::{MetadataImage, MetadataRecord};
use broker::replica::core::{
    AckPolicy, NodeId, PartitionCore, ReplicaFetchError, ReplicaFetchPosition, ReplicaRole,
};
use broker::storage::{MemFile, MemStorage, TornWrite};
use bytes::Bytes;

/// Bytes a simulated consumer asks for per fetch from a follower.
const FOLLOWER_READ_BYTES: usize = 4096;

#[derive(Clone, Debug)]
pub struct ReplSimConfig {
    /// Broker nodes (3 or 5); every partition has them all as replicas.
    pub nodes: usize,
    /// Events processed with faults on; then the world heals.
    pub steps: u64,
    /// Virtual time after the final heal before liveness is judged (ms).
    pub quiet_ms: u64,
    /// Keep the trace lines (they are hashed either way).
    pub trace: bool,
}

impl Default for ReplSimConfig {
    fn default() -> Self {
        ReplSimConfig {
            nodes: 3,
            steps: DEFAULT_STEPS,
            quiet_ms: QUIET_MS,
            trace: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ReplRunResult {
    pub seed: u64,
    /// Safety violations (and panics inside the cores). Empty: the seed passed safety.
    pub violations: Vec<String>,
    /// Liveness problems after the final heal.
    pub liveness: Vec<String>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub events: u64,
    pub sim_ms: u64,
    /// Statistics, for judging coverage.
    pub acked: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub failovers: u64,
    pub leader_epochs: u64,
    pub truncations: u64,
    /// Leaders elected from an ELR (KIP-966) because no ISR member could lead.
    pub elr_elections: u64,
    /// Requests to change the cluster-level min.insync.replicas.
    pub min_isr_changes: u64,
    /// Operators' preferred-leader elections (ElectLeaders) asked.
    pub elections_asked: u64,
    /// Operators' reassignments (AlterPartitionReassignments) asked, cancellations included.
    pub reassignments_asked: u64,
    /// Copies deleted by nodes a reassignment removed.
    pub replicas_removed: u64,
    /// Operators' DeleteRecords a leader carried out.
    pub records_deleted: u64,
    /// Batches a consumer read from followers (KIP-392) and found committed.
    pub follower_reads: u64,
    /// Crashes that replaced the node's disk with an empty one.
    pub wipes: u64,
    /// Unclean elections asked by operators (ElectLeaders, election type unclean).
    pub unclean_asked: u64,
    /// Leaders elected from outside the ISR and ELR: what the partition had committed
    /// before may be gone (the unclean seeds only).
    pub unclean_elections: u64,
}

impl ReplRunResult {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.liveness.is_empty()
    }

    /// Every problem, liveness prefixed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.violations.clone();
        p.extend(self.liveness.iter().map(|l| format!("liveness: {l}")));
        p
    }
}

/// Runs one seed: random workload and faults for `config.steps` events, then heal and check.
pub fn run_replication_seed(seed: u64, config: &ReplSimConfig) -> ReplRunResult {
    let mut w = World::new(seed, config, true);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        w.start();
        while w.events < config.steps && w.step() {}
        w.heal_and_check(config.quiet_ms);
    }));
    w.finish(seed, outcome)
}

/// One step of a byte-driven program (the fuzz target's alphabet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A producer sends a batch to partition `p` (mod the partition count).
    Append(u8),
    /// Process the next `n` events in time order (fetches, flushes, deliveries, ticks).
    Run(u8),
    /// Deliver the earliest pending network message to or from node `n` now.
    FetchRound(u8),
    /// Complete the earliest pending fsync of node `n` now.
    Flush(u8),
    /// Deliver the earliest pending metadata update to node `n` now.
    Metadata(u8),
    Crash(u8),
    Partition(u8),
    Heal(u8),
    ControllerFailover,
    /// An operator's unclean election of every leaderless partition, through the first node
    /// that is up and connected.
    UncleanElection,
    /// An operator sets the cluster-level min.insync.replicas to `1 + v % 3` (`v` below 128).
    MinIsr(u8),
    /// An operator reassigns a partition (`a`, below 128): partition `a >> 3 & 1`, target the
    /// nodes in the mask `a & 7` (node i for bit i) rotated by `a >> 4`, or, for an empty mask,
    /// a cancellation.
    Reassign(u8),
    /// An operator's DeleteRecords on partition `a % partitions` through its leader, up to
    /// `a >> 2` 63rds of the way from the log start to the high watermark.
    DeleteRecords(u8),
}

impl Action {
    /// Decodes one action from the front of `data` (two bytes), or None at the end.
    pub fn decode(data: &mut &[u8]) -> Option<Action> {
        let (&op, rest) = data.split_first()?;
        let (&arg, rest) = rest.split_first().unwrap_or((&0, &[]));
        *data = rest;
        Some(match op % 16 {
            0..=2 => Action::Append(arg),
            3 => Action::DeleteRecords(arg),
            4..=7 => Action::Run(arg),
            8 => Action::FetchRound(arg),
            9 => Action::Flush(arg),
            10 => Action::Metadata(arg),
            11 => Action::Crash(arg),
            12 => Action::Partition(arg),
            13 => Action::Heal(arg),
            14 if arg < 128 => Action::ControllerFailover,
            14 => Action::UncleanElection,
            _ if arg < 128 => Action::MinIsr(arg),
            _ => Action::Reassign(arg - 128),
        })
    }
}

impl Action {
    /// The two bytes [`Action::decode`] reads back as this action.
    pub fn encode(self, out: &mut Vec<u8>) {
        let (op, arg) = match self {
            Action::Append(p) => (0, p),
            Action::Run(n) => (4, n),
            Action::FetchRound(n) => (8, n),
            Action::Flush(n) => (9, n),
            Action::Metadata(n) => (10, n),
            Action::Crash(n) => (11, n),
            Action::Partition(n) => (12, n),
            Action::Heal(n) => (13, n),
            Action::ControllerFailover => (14, 0),
            Action::UncleanElection => (14, 0x80),
            Action::MinIsr(v) => (15, v & 0x7f),
            Action::Reassign(a) => (15, 0x80 | (a & 0x7f)),
            Action::DeleteRecords(a) => (3, a),
        };
        out.extend_from_slice(&[op, arg]);
    }
}

/// Runs a program of actions (no random faults or producers; random delays from `seed`), then
/// heals and applies the same checks as a seed.
pub fn run_replication_actions(
    seed: u64,
    actions: &[Action],
    quiet_ms: u64,
    trace: bool,
) -> ReplRunResult {
    let config = ReplSimConfig {
        trace,
        quiet_ms,
        ..ReplSimConfig::default()
    };
    let mut w = World::new(seed, &config, false);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        w.start();
        for &a in actions {
            w.action(a);
        }
        w.heal_and_check(config.quiet_ms);
    }));
    w.finish(seed, outcome)
}

/// SplitMix64: small, fast, and fully specified here (no dependency can change it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// FNV-1a over every trace line; the text only when asked for.
struct Trace {
    hash: u64,
    text: Option<Vec<String>>,
    buf: String,
}

impl Trace {
    fn line(&mut self, now_ms: u64, args: fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = write!(self.buf, "{now_ms:>9} ");
        let _ = self.buf.write_fmt(args);
        for b in self.buf.as_bytes() {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.hash ^= u64::from(b'\n');
        self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        if let Some(t) = &mut self.text {
            t.push(self.buf.clone());
        }
    }
}

macro_rules! tr {
    ($w:expr, $($arg:tt)*) => {
        $w.trace.line($w.now, format_args!($($arg)*))
    };
}

/// Per-seed parameters (swarm testing): each seed draws its own mix.
#[derive(Debug)]
struct Params {
    partitions: usize,
    net_ms: (u64, u64),
    loss: f64,
    disk_ms: (u64, u64),
    slow_disk_ms: (u64, u64),
    meta_ms: (u64, u64),
    slow_meta_ms: (u64, u64),
    commit_ms: (u64, u64),
    session_ms: u64,
    lag_max_ms: u64,
    produce_gap_ms: (u64, u64),
    fault_gap_ms: (u64, u64),
    down_ms: (u64, u64),
    partition_ms: (u64, u64),
    slow_for_ms: (u64, u64),
    fetch_bytes: usize,
    batch_records: u64,
    drop_unsynced: f64,
    /// Relative weights: crash, partition, failover, slow disk, slow metadata, a new
    /// cluster-level min.insync.replicas, an operator's preferred-leader election, an
    /// operator's reassignment, an operator's DeleteRecords.
    weights: [u64; 9],
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        let session_ms = rng.range(800, 3000);
        Params {
            partitions: rng.range(2, 3) as usize,
            net_ms: (1, rng.range(2, 20)),
            loss: [0.0, 0.01, 0.05][rng.pick(3)],
            disk_ms: (1, rng.range(2, 10)),
            slow_disk_ms: (50, rng.range(100, 800)),
            meta_ms: (1, rng.range(5, 60)),
            slow_meta_ms: (200, rng.range(300, 3000)),
            commit_ms: (1, rng.range(2, 15)),
            session_ms,
            lag_max_ms: rng.range(300, 3000),
            produce_gap_ms: (1, rng.range(3, 40)),
            fault_gap_ms: (100, rng.range(300, 3000)),
            down_ms: (20, rng.range(100, 4000)),
            partition_ms: (50, rng.range(200, 6000)),
            slow_for_ms: (100, rng.range(200, 3000)),
            fetch_bytes: [200, 2_000, 1 << 20][rng.pick(3)],
            batch_records: rng.range(1, 4),
            drop_unsynced: [0.0, 0.5, 1.0][rng.pick(3)],
            weights: [
                rng.range(0, 4),
                rng.range(0, 4),
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 1),
                rng.range(0, 1),
                rng.range(0, 2),
                rng.range(0, 1),
            ],
        }
    }
}

/// Replica fetch result as the leader answers it: position, batches, high watermark, log start.
type FetchAnswer = Result<(ReplicaFetchPosition, Bytes, i64, i64), ReplicaFetchError>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum ProduceAnswer {
    Ok,
    NotLeader,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
    Failed(String),
}

#[derive(Debug)]
enum Msg {
    FetchReq {
        from: usize,
        from_life: u64,
        /// The follower's incarnation, as the shell's fetch carries it (a tagged field).
        incarnation: i64,
        to: usize,
        p: usize,
        id: u64,
        epoch: i32,
        offset: i64,
        /// The follower's durable end (at most `offset`): what the high watermark may count.
        durable: i64,
        last_epoch: i32,
        log_start: i64,
    },
    FetchResp {
        from: usize,
        to: usize,
        to_life: u64,
        p: usize,
        id: u64,
        answer: FetchAnswer,
    },
    /// A request to the controller (None: a heartbeat), sent at `sent_ms` (an AlterPartition's
    /// refusal names the ask by it).
    ToController {
        from: usize,
        req: Option<ControllerRequest>,
        sent_ms: i64,
    },
    /// A node's metadata fetch as the quorum leader sees it (the shell's raft Fetch): the
    /// process's incarnation and how much of the metadata log it held when it sent it.
    Heartbeat {
        from: usize,
        incarnation: i64,
        fetch_offset: i64,
    },
    ProduceReq {
        to: usize,
        p: usize,
        id: u64,
        batch: Bytes,
    },
    ProduceResp {
        from: usize,
        p: usize,
        id: u64,
        answer: ProduceAnswer,
    },
}

impl Msg {
    /// The nodes at either end (a producer or the controller is no node).
    fn ends(&self) -> (Option<usize>, Option<usize>) {
        match self {
            Msg::FetchReq { from, to, .. } | Msg::FetchResp { from, to, .. } => {
                (Some(*from), Some(*to))
            }
            Msg::ToController { from, .. } | Msg::Heartbeat { from, .. } => (Some(*from), None),
            Msg::ProduceReq { to, .. } => (None, Some(*to)),
            Msg::ProduceResp { from, .. } => (Some(*from), None),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver(Msg),
    FetchTimeout {
        node: usize,
        life: u64,
        p: usize,
        id: u64,
    },
    FetchAgain {
        node: usize,
        life: u64,
        p: usize,
    },
    FlushDone {
        node: usize,
        life: u64,
        p: usize,
    },
    MetaDeliver {
        node: usize,
        life: u64,
        upto: usize,
    },
    MetaPoll {
        node: usize,
        life: u64,
    },
    Heartbeat {
        node: usize,
        life: u64,
    },
    Register {
        node: usize,
        life: u64,
    },
    IsrTick {
        node: usize,
        life: u64,
    },
    HwCheckpoint {
        node: usize,
        life: u64,
    },
    CtlTick,
    Commit {
        gen: u64,
    },
    Produce {
        p: usize,
    },
    ProduceTimeout {
        p: usize,
        id: u64,
    },
    Admin,
    Fault,
    Restart {
        node: usize,
    },
    Heal {
        node: usize,
        gen: u64,
    },
}

impl Ev {
    /// Which node an action targeting `node` may pull forward (fetch round, flush, metadata).
    fn kind_for(&self, node: usize) -> Option<u8> {
        match self {
            Ev::Deliver(m) => {
                let (a, b) = m.ends();
                (a == Some(node) || b == Some(node)).then_some(0)
            }
            Ev::FetchAgain { node: n, .. } | Ev::FetchTimeout { node: n, .. } if *n == node => {
                Some(0)
            }
            Ev::FlushDone { node: n, .. } if *n == node => Some(1),
            Ev::MetaDeliver { node: n, .. } | Ev::MetaPoll { node: n, .. } if *n == node => Some(2),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchState {
    Idle,
    InFlight(u64),
    /// Waiting until everything below this offset (or the log end, if lower) is durable, then
    /// fetches: at most one round of a follower's batches is unsynced, and an empty answer
    /// waits for the sync so the next fetch reports it.
    Syncing(i64),
    Backoff,
}

struct Part {
    core: PartitionCore<MemStorage>,
    flush: Option<FlushTicket<MemFile>>,
    fetch: FetchState,
    /// The fetch offset of the last fetch sent.
    fetch_offset: i64,
    /// (leader epoch, high watermark) while this replica leads: must never go back.
    lead_hw: Option<(i32, i64)>,
    /// The highest leader epoch taken in this life.
    max_epoch: i32,
    /// While following: the offset up to which a consumer reading from this replica (KIP-392)
    /// has been checked against the committed batches.
    read_to: i64,
}

/// An acks=all produce waiting for the high watermark.
struct Waiter {
    p: usize,
    id: u64,
    epoch: i32,
    base: i64,
    end: i64,
}

struct Node {
    id: NodeId,
    up: bool,
    /// Bumped at every crash and restart: events of an earlier life are dropped.
    life: u64,
    incarnation: i64,
    storage: MemStorage,
    /// Its data directory's id: a new one with every new (wiped) disk.
    directory_id: [u8; 16],
    parts: Vec<Option<Part>>,
    image: MetadataImage,
    partitioned: bool,
    partition_gen: u64,
    slow_disk_until: u64,
    slow_meta_until: u64,
    waiters: Vec<Waiter>,
}

impl Node {
    fn registered(&self) -> bool {
        self.image
            .brokers
            .get(&self.id)
            .is_some_and(|b| b.epoch == self.incarnation && !b.fenced)
    }
}

struct Producer {
    leader: Option<usize>,
    outstanding: Option<u64>,
    next_id: u64,
}

/// An acknowledged batch: the leader's stored bytes at `base`.
struct Ack {
    p: usize,
    /// The leader epoch in which it was acknowledged (or its high watermark passed it).
    epoch: i32,
    base: i64,
    end: i64,
    bytes: Bytes,
}

struct World {
    rng: Rng,
    p: Params,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    trace: Trace,
    violations: Vec<String>,
    liveness: Vec<String>,
    events: u64,
    /// Faults and producers run (false once healing, and in action mode for random faults).
    running: bool,
    random_faults: bool,
    nodes: Vec<Node>,
    log_config: LogConfig,
    // The metadata quorum, modelled as one always-available log.
    ctl: Controller,
    ctl_id: NodeId,
    ctl_epoch: i32,
    /// Offset of this controller term's LeaderChange in `meta_log`.
    ctl_term_start: usize,
    ctl_gen: u64,
    ctl_next: Option<u64>,
    meta_log: Vec<Bytes>,
    image: MetadataImage,
    in_flight: Option<Bytes>,
    correlation: u64,
    topic_id: Option<[u8; 16]>,
    producers: Vec<Producer>,
    next_fetch_id: u64,
    acks: Vec<Ack>,
    /// Batches some leader's high watermark has passed (consumers may have read them), per
    /// partition in offset order; every later leader must hold them too.
    committed: Vec<Vec<Ack>>,
    /// (partition, leader epoch) -> (node, incarnation) that took leadership.
    leaders: BTreeMap<(usize, i32), (usize, i64)>,
    /// Per partition, the highest log start an operator's DeleteRecords gave a leader: the
    /// records below it may be gone, none above may.
    deleted_to: Vec<i64>,
    /// AlterPartition requests the controller has not answered: correlation -> (node,
    /// partition, new ISR).
    isr_asks: BTreeMap<u64, (usize, usize, Vec<NodeId>, i64)>,
    stats: ReplRunResult,
    /// Draws whether a crash wipes the disk, apart from `rng` so runs without a wipe are
    /// what they were before wipes existed.
    wipe_rng: Rng,
    /// A crash may still wipe a disk: at most one per run, and only while every acknowledged
    /// batch has two durable copies (min.insync.replicas never asked below 2), so one is left.
    wipe_allowed: bool,
    /// Draws late copies of AlterPartition requests, apart from `rng` (as `wipe_rng`).
    late_rng: Rng,
    /// Chance that an AlterPartition also reaches the controller again much later, as a
    /// retry that sat in a connection does: a stale copy must not apply.
    late_copy: f64,
    /// This seed runs with `unclean.leader.election.enable` and operators' unclean
    /// elections. Drawn, with the operators' elections, from `unclean_rng`, apart from `rng`
    /// (as `wipe_rng`).
    unclean: bool,
    unclean_rng: Rng,
    /// Per partition, the leader epoch of its latest unclean election (0: none). Batches
    /// acknowledged or committed in an earlier epoch may be gone; none from this one on may.
    unclean_epoch: Vec<i32>,
    /// Per partition, the batches committed before each unclean election: a follower that
    /// has not truncated yet may still show them (Kafka's followers do too).
    forfeited: Vec<Vec<Ack>>,
}

impl World {
    fn new(seed: u64, config: &ReplSimConfig, random_faults: bool) -> World {
        let mut rng = Rng(seed ^ 0x005e_ed0f_4e91_1ca7);
        let p = Params::draw(&mut rng);
        let log_config = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let n = config.nodes.clamp(3, NODES_MAX);
        let nodes = (0..n)
            .map(|i| Node {
                id: i as NodeId + 1,
                up: false,
                life: 0,
                incarnation: 0,
                storage: MemStorage::new(),
                directory_id: [i as u8 + 1; 16],
                parts: (0..p.partitions).map(|_| None).collect(),
                image: MetadataImage::default(),
                partitioned: false,
                partition_gen: 0,
                slow_disk_until: 0,
                slow_meta_until: 0,
                waiters: Vec::new(),
            })
            .collect();
        let producers = (0..p.partitions)
            .map(|_| Producer {
                leader: None,
                outstanding: None,
                next_id: 0,
            })
            .collect();
        let mut unclean_rng = Rng(seed ^ 0x0c1e_a4e1_ec70_0000);
        let unclean = random_faults && unclean_rng.chance(UNCLEAN_SEEDS);
        let ctl_cfg = controller_config(&p, unclean);
        let mut late_rng = Rng(seed ^ 0x1a7e_c0b1_e5e5_0000);
        let late_copy = if random_faults {
            [0.0, 0.0, 0.2, 0.5][late_rng.pick(4)]
        } else {
            0.0
        };
        World {
            ctl: Controller::new(ctl_cfg, CTL_ID_BASE, seed),
            rng,
            p,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: Trace {
                hash: 0xcbf2_9ce4_8422_2325,
                text: config.trace.then(Vec::new),
                buf: String::with_capacity(256),
            },
            violations: Vec::new(),
            liveness: Vec::new(),
            events: 0,
            running: true,
            random_faults,
            nodes,
            log_config,
            ctl_id: CTL_ID_BASE,
            ctl_epoch: 1,
            ctl_term_start: 0,
            ctl_gen: 0,
            ctl_next: None,
            meta_log: Vec::new(),
            image: MetadataImage::default(),
            in_flight: None,
            correlation: 0,
            topic_id: None,
            producers,
            next_fetch_id: 0,
            acks: Vec::new(),
            committed: Vec::new(),
            deleted_to: Vec::new(),
            isr_asks: BTreeMap::new(),
            leaders: BTreeMap::new(),
            stats: ReplRunResult::default(),
            wipe_rng: Rng(seed ^ 0x0d15_c0ff_ee5e_ed00),
            wipe_allowed: random_faults,
            late_rng,
            late_copy,
            unclean,
            unclean_rng,
            unclean_epoch: Vec::new(),
            forfeited: Vec::new(),
        }
    }

    fn finish(
        mut self,
        seed: u64,
        outcome: Result<(), Box<dyn std::any::Any + Send>>,
    ) -> ReplRunResult {
        if let Err(payload) = outcome {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_string()
            };
            tr!(self, "PANIC {msg}");
            self.violations.push(format!("panic: {msg}"));
        }
        let mut r = std::mem::take(&mut self.stats);
        r.seed = seed;
        r.violations = std::mem::take(&mut self.violations);
        r.liveness = std::mem::take(&mut self.liveness);
        r.trace_hash = self.trace.hash;
        r.trace = self.trace.text.take().unwrap_or_default();
        r.events = self.events;
        r.sim_ms = self.now;
        r.acked = self.acks.len() as u64;
        r.leader_epochs = self.leaders.len() as u64;
        r
    }

    fn schedule(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), ev);
    }

    fn rand_in(&mut self, (lo, hi): (u64, u64)) -> u64 {
        self.rng.range(lo, hi)
    }

    fn violation(&mut self, text: String) {
        tr!(self, "VIOLATION {text}");
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(text);
        }
    }

    // ---- the run ----------------------------------------------------------------------------

    fn start(&mut self) {
        tr!(
            self,
            "start: {} nodes, params {:?}",
            self.nodes.len(),
            self.p
        );
        let ctl_id = self.ctl_id;
        self.ctl.activate(0, self.ctl_epoch, None);
        self.ctl_term_start = self.meta_log.len();
        self.propose(MetadataRecord::LeaderChange {
            epoch: self.ctl_epoch,
            leader: ctl_id,
        });
        for n in 0..self.nodes.len() {
            self.restart(n);
        }
        self.schedule(ADMIN_RETRY_MS, Ev::Admin);
        if self.random_faults {
            for p in 0..self.p.partitions {
                let d = self.rand_in(self.p.produce_gap_ms);
                self.schedule(ADMIN_RETRY_MS + d, Ev::Produce { p });
            }
            let d = self.rand_in(self.p.fault_gap_ms);
            self.schedule(d + 2 * ADMIN_RETRY_MS, Ev::Fault);
        }
    }

    /// Processes the next event; false when the queue is empty.
    fn step(&mut self) -> bool {
        let Some(((t, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.now = self.now.max(t);
        self.events += 1;
        self.handle(ev);
        true
    }

    /// Processes the earliest queued event of `kind` for `node` now, if any.
    fn pull(&mut self, node: usize, kind: u8) {
        let key = self
            .queue
            .iter()
            .find(|(_, ev)| ev.kind_for(node) == Some(kind))
            .map(|(k, _)| *k);
        if let Some(k) = key {
            let ev = self.queue.remove(&k).expect("found");
            self.events += 1;
            self.handle(ev);
        }
    }

    fn action(&mut self, a: Action) {
        let n = self.nodes.len();
        tr!(self, "ACTION {a:?}");
        match a {
            Action::Append(p) => {
                let p = p as usize % self.p.partitions;
                self.produce(p);
            }
            Action::Run(k) => {
                for _ in 0..=k {
                    if !self.step() {
                        break;
                    }
                }
            }
            Action::FetchRound(x) => self.pull(x as usize % n, 0),
            Action::Flush(x) => self.pull(x as usize % n, 1),
            Action::Metadata(x) => self.pull(x as usize % n, 2),
            Action::Crash(x) => {
                let node = x as usize % n;
                if self.nodes[node].up {
                    self.crash(node);
                    let d = self.rand_in(self.p.down_ms);
                    self.schedule(d, Ev::Restart { node });
                }
            }
            Action::Partition(x) => {
                let node = x as usize % n;
                self.nodes[node].partitioned = true;
                self.nodes[node].partition_gen += 1;
                self.stats.partitions += 1;
            }
            Action::Heal(x) => {
                let node = x as usize % n;
                self.nodes[node].partitioned = false;
            }
            Action::ControllerFailover => self.failover(),
            Action::UncleanElection => {
                let up = |i: &usize| self.nodes[*i].up && !self.nodes[*i].partitioned;
                let via = (0..n).find(up).unwrap_or(0);
                self.ask_election(via, true);
            }
            Action::MinIsr(v) => self.ask_min_isr(0, 1 + u64::from(v % 3)),
            Action::Reassign(a) => {
                let p = u32::from(a >> 3 & 1) % self.p.partitions as u32;
                let mut target: Vec<NodeId> = (0..n)
                    .filter(|i| a & (1 << i) != 0)
                    .map(|i| self.nodes[i].id)
                    .collect();
                let turn = usize::from(a >> 4) % target.len().max(1);
                target.rotate_left(turn);
                self.ask_reassignment(0, p, (!target.is_empty()).then_some(target));
            }
            Action::DeleteRecords(a) => {
                let p = usize::from(a) % self.p.partitions;
                self.delete_records(p, u64::from(a >> 2), 63);
            }
        }
    }

    /// Stops faults and producers, heals everything, runs `quiet_ms`, and checks.
    fn heal_and_check(&mut self, quiet_ms: u64) {
        self.running = false;
        tr!(self, "HEAL all");
        // Message loss is a fault like the others: liveness is owed only once it stops. With
        // loss left on, a leader's ISR request lost on every retry (one per
        // ISR_CHANGE_RETRY_MS) leaves the high watermark short after any quiet period.
        self.p.loss = 0.0;
        for n in 0..self.nodes.len() {
            self.nodes[n].partitioned = false;
            self.nodes[n].slow_disk_until = 0;
            self.nodes[n].slow_meta_until = 0;
            if !self.nodes[n].up {
                self.restart(n);
            }
        }
        let end = self.now + quiet_ms;
        let budget = self.events + HEAL_EVENTS_MAX;
        while let Some((&(t, _), _)) = self.queue.first_key_value() {
            if t > end {
                break;
            }
            if self.events >= budget {
                self.liveness.push(format!(
                    "more than {HEAL_EVENTS_MAX} events in {quiet_ms} ms after healing"
                ));
                break;
            }
            self.step();
        }
        // Metadata committed just before the end is still on its way: give it time to land.
        let settle_end = self.now.max(end) + SETTLE_MS;
        while self.lagging() && self.events < budget {
            match self.queue.first_key_value() {
                Some((&(t, _), _)) if t <= settle_end => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
        self.final_checks();
    }

    /// Some up node has not applied all committed metadata.
    fn lagging(&self) -> bool {
        let committed = self.meta_log.len() as i64;
        self.nodes
            .iter()
            .any(|n| n.image.applied_offset != committed)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver(m) => self.deliver(m),
            Ev::FetchTimeout { node, life, p, id } => {
                if let Some(part) = self.part_mut(node, life, p) {
                    if part.fetch == FetchState::InFlight(id) {
                        part.fetch = FetchState::Idle;
                        tr!(self, "n{} p{p} fetch #{id} timed out", self.nodes[node].id);
                        self.send_fetch(node, p);
                    }
                }
            }
            Ev::FetchAgain { node, life, p } => {
                if let Some(part) = self.part_mut(node, life, p) {
                    if part.fetch == FetchState::Backoff {
                        part.fetch = FetchState::Idle;
                        self.send_fetch(node, p);
                    }
                }
            }
            Ev::FlushDone { node, life, p } => self.flush_done(node, life, p),
            Ev::MetaDeliver { node, life, upto } => self.meta_deliver(node, life, upto),
            Ev::MetaPoll { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    let upto = self.meta_log.len();
                    self.meta_deliver(node, life, upto);
                    self.schedule(META_POLL_MS, Ev::MetaPoll { node, life });
                }
            }
            Ev::Heartbeat { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.send(Msg::Heartbeat {
                        from: node,
                        incarnation: self.nodes[node].incarnation,
                        fetch_offset: self.nodes[node].image.applied_offset,
                    });
                    let hb = (self.p.session_ms / HEARTBEATS_PER_SESSION).max(1);
                    self.schedule(hb, Ev::Heartbeat { node, life });
                }
            }
            Ev::Register { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    if !self.nodes[node].registered() {
                        let req = ControllerRequest::RegisterBroker {
                            node_id: self.nodes[node].id,
                            host: format!("n{}", self.nodes[node].id),
                            port: 9092,
                            incarnation: self.nodes[node].incarnation,
                            logs_intact: true,
                            rack: None,
                            directory_id: Some(self.nodes[node].directory_id),
                        };
                        self.send(Msg::ToController {
                            from: node,
                            req: Some(req),
                            sent_ms: T0_MS + self.now as i64,
                        });
                    }
                    self.schedule(REGISTER_RETRY_MS, Ev::Register { node, life });
                }
            }
            Ev::IsrTick { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.isr_tick(node);
                    self.schedule(ISR_CHECK_MS, Ev::IsrTick { node, life });
                }
            }
            Ev::HwCheckpoint { node, life } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.checkpoint_high_watermarks(node);
                    self.schedule(HW_CHECKPOINT_MS, Ev::HwCheckpoint { node, life });
                }
            }
            Ev::CtlTick => {
                if self.ctl_next.is_some_and(|t| t <= self.now) {
                    self.ctl_next = None;
                }
                self.ctl_round();
            }
            Ev::Commit { gen } => {
                if gen == self.ctl_gen {
                    if let Some(entry) = self.in_flight.take() {
                        self.commit(entry);
                        self.ctl.committed();
                        self.ctl_round();
                    }
                }
            }
            Ev::Produce { p } => {
                if self.running && self.random_faults {
                    self.produce(p);
                }
            }
            Ev::ProduceTimeout { p, id } => {
                if self.producers[p].outstanding == Some(id) {
                    tr!(self, "produce p{p} #{id} timed out");
                    self.producers[p].outstanding = None;
                    self.producers[p].leader = None;
                    self.next_produce(p, PRODUCE_BACKOFF_MS);
                }
            }
            Ev::Admin => self.admin(),
            Ev::Fault => {
                if self.running {
                    self.fault();
                    if self.unclean {
                        self.unclean_fault();
                    }
                    let d = self.rand_in(self.p.fault_gap_ms);
                    self.schedule(d, Ev::Fault);
                }
            }
            Ev::Restart { node } => {
                if !self.nodes[node].up {
                    self.restart(node);
                }
            }
            Ev::Heal { node, gen } => {
                if self.nodes[node].partition_gen == gen && self.nodes[node].partitioned {
                    tr!(self, "heal n{}", self.nodes[node].id);
                    self.nodes[node].partitioned = false;
                }
            }
        }
    }

    fn part_mut(&mut self, node: usize, life: u64, p: usize) -> Option<&mut Part> {
        let n = &mut self.nodes[node];
        if !n.up || n.life != life {
            return None;
        }
        n.parts[p].as_mut()
    }

    // ---- network ------------------------------------------------------------------------------

    fn send(&mut self, m: Msg) {
        if let Msg::ToController {
            from,
            req: Some(req @ ControllerRequest::AlterPartition { .. }),
            sent_ms,
        } = &m
        {
            if self.late_copy > 0.0 && self.late_rng.chance(self.late_copy) {
                // Late enough for the ISR to change and change back meanwhile.
                let lag = self.p.lag_max_ms;
                let d = self.late_rng.range(lag, 4 * lag + 2_000);
                tr!(self, "a copy of this AlterPartition arrives in {d} ms");
                let copy = Msg::ToController {
                    from: *from,
                    req: Some(req.clone()),
                    sent_ms: *sent_ms,
                };
                self.schedule(d, Ev::Deliver(copy));
            }
        }
        if self.p.loss > 0.0 && self.rng.chance(self.p.loss) {
            return;
        }
        let d = self.rand_in(self.p.net_ms);
        self.schedule(d, Ev::Deliver(m));
    }

    fn reachable(&self, node: Option<usize>) -> bool {
        match node {
            Some(n) => self.nodes[n].up && !self.nodes[n].partitioned,
            None => true,
        }
    }

    fn deliver(&mut self, m: Msg) {
        let (a, b) = m.ends();
        // The sender may have crashed since: a response from a dead node still arrives
        // (it was on the wire), but nothing reaches or leaves a partitioned node.
        if a.is_some_and(|n| self.nodes[n].partitioned) || !self.reachable(b) {
            return;
        }
        match m {
            Msg::FetchReq {
                from,
                from_life,
                incarnation,
                to,
                p,
                id,
                epoch,
                offset,
                durable,
                last_epoch,
                log_start,
            } => self.leader_fetch(
                from,
                from_life,
                incarnation,
                to,
                p,
                id,
                epoch,
                offset,
                durable,
                last_epoch,
                log_start,
            ),
            Msg::FetchResp {
                from,
                to,
                to_life,
                p,
                id,
                answer,
            } => self.follower_response(from, to, to_life, p, id, answer),
            Msg::ToController { from, req, sent_ms } => {
                let node = self.nodes[from].id;
                self.ctl.heard_from(node, self.now);
                if let Some(req) = req {
                    self.correlation += 1;
                    if let ControllerRequest::AlterPartition {
                        partition, new_isr, ..
                    } = &req
                    {
                        let ask = (from, *partition as usize, new_isr.clone(), sent_ms);
                        self.isr_asks.insert(self.correlation, ask);
                    }
                    self.ctl.submit(self.correlation, node, req);
                    self.ctl_round();
                } else {
                    self.ctl_schedule();
                }
            }
            Msg::Heartbeat {
                from,
                incarnation,
                fetch_offset,
            } => {
                let node = self.nodes[from].id;
                self.ctl.heard_from(node, self.now);
                // The log from this term's LeaderChange on is this controller's.
                let epoch = if fetch_offset > self.ctl_term_start as i64 {
                    self.ctl_epoch
                } else {
                    -1
                };
                self.ctl.fetched(node, incarnation, fetch_offset, epoch);
                self.ctl_schedule();
            }
            Msg::ProduceReq { to, p, id, batch } => self.leader_produce(to, p, id, batch),
            Msg::ProduceResp {
                from,
                p,
                id,
                answer,
            } => self.produce_answer(from, p, id, answer),
        }
    }

    // ---- the metadata quorum and controller ----------------------------------------------------

    fn propose(&mut self, rec: MetadataRecord) {
        debug_assert!(self.in_flight.is_none());
        self.in_flight = Some(rec.encode());
        let d = self.rand_in(self.p.commit_ms);
        let gen = self.ctl_gen;
        self.schedule(d, Ev::Commit { gen });
    }

    /// Appends a committed entry, applies it, and sends it toward every node.
    fn commit(&mut self, entry: Bytes) {
        let offset = self.meta_log.len() as i64;
        let rejected = self.image.rejected;
        let image_before = self.image.clone();
        let before = self
            .topic_id
            .and_then(|id| self.image.topics.get(&id))
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        self.image.apply(offset, &entry);
        let after = self.topic_id.and_then(|id| self.image.topics.get(&id));
        for (old, new) in before
            .iter()
            .zip(after.map_or(&[][..], |t| &t.partitions[..]))
        {
            if new.leader != old.leader && old.elr.contains(&new.leader) {
                self.stats.elr_elections += 1;
            }
        }
        // Every clean election takes an ISR or ELR member, as the record before it left them:
        // step a copy of the image record by record (one entry may change a partition more
        // than once, and a registration on a replaced disk takes the broker out of both).
        let records = match MetadataRecord::decode(&entry) {
            _ if self.image.rejected != rejected => Vec::new(),
            Ok(MetadataRecord::Batch(records)) => records,
            Ok(record) => vec![record],
            Err(_) => Vec::new(),
        };
        let mut stepped = image_before;
        for record in records {
            let part = |image: &MetadataImage, p: u32| {
                let id = self.topic_id?;
                let x = image.topics.get(&id)?.partitions.get(p as usize)?;
                Some((x.leader, x.leader_epoch, [&x.isr[..], &x.elr[..]].concat()))
            };
            let changed = match &record {
                MetadataRecord::PartitionChange { partition, .. } => Some(*partition),
                _ => None,
            };
            let old = changed.and_then(|p| part(&stepped, p));
            stepped.apply(stepped.applied_offset, &record.encode());
            let (Some(p), Some((old_leader, _, eligible))) = (changed, old) else {
                continue;
            };
            let Some((leader, epoch, _)) = part(&stepped, p) else {
                continue;
            };
            if leader >= 0 && leader != old_leader && !eligible.contains(&leader) {
                self.unclean_election(p as usize, leader, epoch);
            }
        }
        if self.image.rejected != rejected {
            tr!(self, "meta @{offset} rejected by the image");
        }
        if let Ok(rec) = MetadataRecord::decode(&entry) {
            tr!(self, "meta @{offset} {rec:?}");
        }
        self.meta_log.push(entry);
        if self.topic_id.is_none() {
            self.topic_id = self.image.topic_ids.get(TOPIC).copied();
        }
        let upto = self.meta_log.len();
        for n in 0..self.nodes.len() {
            if !self.nodes[n].up {
                continue;
            }
            let slow = self.nodes[n].slow_meta_until > self.now;
            let d = if slow {
                self.rand_in(self.p.slow_meta_ms)
            } else {
                self.rand_in(self.p.meta_ms)
            };
            let life = self.nodes[n].life;
            self.schedule(
                d,
                Ev::MetaDeliver {
                    node: n,
                    life,
                    upto,
                },
            );
        }
    }

    fn ctl_round(&mut self) {
        if self.in_flight.is_none() {
            if let Some(rec) = self.ctl.step(self.now, &self.image) {
                self.propose(rec);
            }
        }
        while let Some((c, to, resp)) = self.ctl.poll_response() {
            if resp.error != broker::cluster::controller::ControllerError::None {
                tr!(self, "controller answers n{to} #{c}: {:?}", resp.error);
            }
            // The answer to a leader's AlterPartition reaches it (the shell acts on it the
            // same way); a refusal for good frees it to ask for another change.
            if let Some((node, p, new_isr, asked_ms)) = self.isr_asks.remove(&c) {
                if isr_change_refused_for_good(&resp.error) {
                    if let Some(part) = self.nodes[node].parts[p].as_mut() {
                        part.core.isr_change_refused(&new_isr, asked_ms);
                    }
                    self.after_change(node, p);
                }
            }
        }
        self.ctl_schedule();
    }

    fn ctl_schedule(&mut self) {
        if self.in_flight.is_some() {
            return; // the commit runs the next round
        }
        if let Some(t) = self.ctl.poll_timeout() {
            let t = t.max(self.now);
            if !matches!(self.ctl_next, Some(n) if n <= t) {
                self.ctl_next = Some(t);
                let d = t - self.now;
                self.schedule(d, Ev::CtlTick);
            }
        }
    }

    /// The active controller moves to a fresh one: the old one's uncommitted proposal commits
    /// or is lost, the new one's LeaderChange commits before it decides anything.
    fn failover(&mut self) {
        self.stats.failovers += 1;
        if let Some(entry) = self.in_flight.take() {
            if self.rng.chance(0.5) {
                self.commit(entry);
            }
        }
        self.ctl.deactivate();
        while self.ctl.poll_response().is_some() {}
        self.isr_asks.clear();
        let previous = self.ctl_id;
        self.ctl_gen += 1;
        self.ctl_epoch += 1;
        self.ctl_id = CTL_ID_BASE + self.ctl_gen as NodeId;
        tr!(
            self,
            "FAILOVER controller {previous} -> {} (epoch {})",
            self.ctl_id,
            self.ctl_epoch
        );
        let seed = self.rng.next();
        self.ctl = Controller::new(controller_config(&self.p, self.unclean), self.ctl_id, seed);
        self.ctl_next = None;
        self.ctl.activate(self.now, self.ctl_epoch, Some(previous));
        let (epoch, leader) = (self.ctl_epoch, self.ctl_id);
        self.ctl_term_start = self.meta_log.len();
        self.propose(MetadataRecord::LeaderChange { epoch, leader });
    }

    /// The unclean seeds' extra faults: a partition's leader crashes (so that its ISR and ELR
    /// run out sooner), and operators ask for unclean elections.
    fn unclean_fault(&mut self) {
        let n = self.nodes.len();
        if self.unclean_rng.chance(UNCLEAN_KILL_CHANCE) {
            let p = self.unclean_rng.pick(self.p.partitions);
            let leader = self
                .topic_id
                .and_then(|id| self.image.topics.get(&id))
                .and_then(|t| t.partitions.get(p))
                .map_or(-1, |x| x.leader);
            let impaired = self.nodes.iter().filter(|x| !x.up || x.partitioned).count();
            if let Some(node) = self.nodes.iter().position(|x| x.id == leader) {
                if self.nodes[node].up && impaired < n - 1 {
                    tr!(self, "KILL the leader of p{p}");
                    self.crash(node);
                    let d = self.rand_in(self.p.down_ms);
                    self.schedule(d, Ev::Restart { node });
                }
            }
        }
        if self.unclean_rng.chance(UNCLEAN_ASK_CHANCE) {
            let node = self.unclean_rng.pick(n);
            self.ask_election(node, true);
        }
    }

    /// An unclean election committed: `leader` leads `p` from `epoch` on with whatever it
    /// holds. What was acknowledged or committed before may be gone from now on (Kafka's
    /// contract for an unclean election); everything from this epoch on is owed again.
    fn unclean_election(&mut self, p: usize, leader: NodeId, epoch: i32) {
        if !self.unclean && self.stats.unclean_asked == 0 {
            self.violation(format!(
                "p{p}: n{leader} elected for epoch {epoch} from outside the ISR and ELR, with \
                 unclean elections off and none asked"
            ));
            return;
        }
        self.stats.unclean_elections += 1;
        tr!(self, "UNCLEAN ELECTION p{p}: n{leader} leads epoch {epoch}");
        if self.unclean_epoch.len() <= p {
            self.unclean_epoch.resize(p + 1, 0);
            self.forfeited.resize_with(p + 1, Vec::new);
        }
        self.unclean_epoch[p] = self.unclean_epoch[p].max(epoch);
        if let Some(committed) = self.committed.get_mut(p) {
            self.forfeited[p].append(committed);
        }
    }

    /// The leader epoch of `p`'s latest unclean election (0: none).
    fn unclean_epoch(&self, p: usize) -> i32 {
        self.unclean_epoch.get(p).copied().unwrap_or(0)
    }

    /// Creates the topic until the image has it.
    fn admin(&mut self) {
        if self.topic_id.is_some() {
            return;
        }
        self.correlation += 1;
        let req = ControllerRequest::CreateTopic {
            name: TOPIC.into(),
            partitions: self.p.partitions as u32,
            replication_factor: self.nodes.len() as u16,
            configs: Vec::new(),
            assignments: Vec::new(),
        };
        self.ctl.submit(self.correlation, 1, req);
        self.ctl_round();
        self.schedule(ADMIN_RETRY_MS, Ev::Admin);
    }

    // ---- nodes: crash, restart, metadata --------------------------------------------------------

    fn crash(&mut self, node: usize) {
        self.stats.crashes += 1;
        let torn = if self.rng.chance(self.p.drop_unsynced) {
            TornWrite::DropUnsynced
        } else {
            let sectors = self.rng.range(0, 3);
            let len = self.rng.range(0, 64) as usize;
            let garbage: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
            TornWrite::KeepPrefix { sectors, garbage }
        };
        tr!(self, "CRASH n{} ({torn:?})", self.nodes[node].id);
        let n = &mut self.nodes[node];
        n.storage.crash(torn);
        n.up = false;
        n.life += 1;
        n.partitioned = false;
        n.waiters.clear();
        for p in n.parts.iter_mut() {
            *p = None;
        }
    }

    /// Whether node `id` is the only member of some partition's ISR and ELR: the only copy
    /// known to hold everything committed, which no disk replacement can leave recoverable.
    /// Asked of the committed image and of the image the proposal in flight will make (seed
    /// 9,641,188: a reassignment down to this node alone was in flight when its disk was
    /// replaced, and committed after).
    fn only_eligible_copy(&self, id: NodeId) -> bool {
        let sole = |image: &MetadataImage| {
            let topics = image.topics.values();
            topics.flat_map(|t| t.partitions.iter()).any(|p| {
                let mut holders = p.isr.iter().chain(p.elr.iter()).filter(|&&n| n != id);
                holders.next().is_none()
            })
        };
        let proposed = self.in_flight.as_ref().map(|entry| {
            let mut image = self.image.clone();
            image.apply(self.meta_log.len() as i64, entry);
            image
        });
        sole(&self.image) || proposed.as_ref().is_some_and(sole)
    }

    /// A node's disk was replaced and the committed image does not yet register its new
    /// directory.
    fn replaced_disk_unregistered(&self) -> bool {
        self.nodes.iter().any(|n| {
            self.image
                .brokers
                .get(&n.id)
                .is_some_and(|b| b.directory_id.is_some_and(|d| d != n.directory_id))
        })
    }

    fn restart(&mut self, node: usize) {
        let wipe = self.wipe_allowed
            && self.wipe_rng.chance(WIPE_CHANCE)
            && !self.only_eligible_copy(self.nodes[node].id);
        if wipe {
            // The disk was replaced while the node was down: an empty directory, a new id.
            self.wipe_allowed = false;
            self.stats.wipes += 1;
            let n = &mut self.nodes[node];
            n.storage = MemStorage::new();
            n.directory_id[15] = n.directory_id[15].wrapping_add(1);
            let id = n.id;
            tr!(self, "WIPE n{id}: an empty disk");
        }
        let now = self.now as i64;
        let mut parts = Vec::new();
        for p in 0..self.p.partitions {
            let dir = PathBuf::from(format!("/{TOPIC}-{p}"));
            let storage = self.nodes[node].storage.clone();
            match Log::open(storage, dir, self.log_config.clone(), T0_MS + now) {
                Ok((log, _)) => {
                    let mut core = PartitionCore::new(log, AckPolicy::AfterFsync);
                    core.set_min_insync_replicas(MIN_ISR);
                    // As the shell opens a replicated partition: committed up to the last
                    // high-watermark checkpoint that survived the crash, if any.
                    core.start_as_replica();
                    parts.push(Some(Part {
                        core,
                        flush: None,
                        fetch: FetchState::Idle,
                        fetch_offset: -1,
                        lead_hw: None,
                        max_epoch: -1,
                        read_to: 0,
                    }));
                }
                Err(e) => {
                    self.violation(format!(
                        "n{} cannot reopen partition {p}: {e}",
                        self.nodes[node].id
                    ));
                    parts.push(None);
                }
            }
        }
        let n = &mut self.nodes[node];
        n.up = true;
        n.life += 1;
        n.incarnation += 1;
        n.image = MetadataImage::default();
        n.parts = parts;
        let (life, id, inc) = (n.life, n.id, n.incarnation);
        let ends: Vec<i64> = n
            .parts
            .iter()
            .map(|p| p.as_ref().map_or(-1, |p| p.core.log().log_end_offset()))
            .collect();
        let hws: Vec<i64> = n
            .parts
            .iter()
            .map(|p| p.as_ref().map_or(-1, |p| p.core.high_watermark()))
            .collect();
        tr!(
            self,
            "n{id} up, incarnation {inc}, log ends {ends:?}, high watermarks {hws:?}"
        );
        if wipe && self.running && self.wipe_rng.chance(0.5) {
            // An operator moves a partition onto the node with the new disk (alone, or with
            // one other node) as it comes back, racing its registration (seed 9,731,376).
            let p = self.wipe_rng.pick(self.p.partitions) as u32;
            let mut target = vec![id];
            if self.wipe_rng.chance(0.5) {
                let other =
                    (node + 1 + self.wipe_rng.pick(self.nodes.len() - 1)) % self.nodes.len();
                target.push(self.nodes[other].id);
            }
            self.ask_reassignment(node, p, Some(target));
        }
        self.schedule(0, Ev::Register { node, life });
        self.schedule(1, Ev::Heartbeat { node, life });
        self.schedule(1, Ev::MetaPoll { node, life });
        self.schedule(ISR_CHECK_MS, Ev::IsrTick { node, life });
        self.schedule(HW_CHECKPOINT_MS, Ev::HwCheckpoint { node, life });
    }

    /// As the shell's periodic `checkpoint_high_watermarks`: each open partition records its
    /// high watermark (unsynced), which a restart starts from (`start_as_replica`). A failed
    /// write (a full disk) only leaves the older, lower checkpoint in place.
    fn checkpoint_high_watermarks(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let mut failed = Vec::new();
        for (p, part) in self.nodes[node].parts.iter_mut().enumerate() {
            let Some(part) = part else { continue };
            let hw = part.core.high_watermark();
            if let Err(e) = part.core.log_mut().checkpoint_high_watermark(hw) {
                failed.push(format!("n{id} p{p} high-watermark checkpoint failed: {e}"));
            }
        }
        for f in failed {
            tr!(self, "{f}");
        }
    }

    fn meta_deliver(&mut self, node: usize, life: u64, upto: usize) {
        let n = &mut self.nodes[node];
        if !n.up || n.life != life || n.partitioned {
            return;
        }
        let from = n.image.applied_offset as usize;
        if upto <= from {
            return;
        }
        for (i, entry) in self.meta_log[from..upto].iter().enumerate() {
            n.image.apply((from + i) as i64, entry);
        }
        self.reconcile(node);
    }

    /// The shell's `reconcile` + `Partition::set_role` for every partition of the topic.
    fn reconcile(&mut self, node: usize) {
        let n = &self.nodes[node];
        let Some(t) = n
            .image
            .topic_ids
            .get(TOPIC)
            .and_then(|id| n.image.topics.get(id))
        else {
            return;
        };
        let registered = n.registered();
        let me = n.id;
        // As the shell: the image's min.insync.replicas, applied around each role change.
        let min_isr = effective_min_isr(&t.configs, &n.image.cluster_configs, MIN_ISR);
        let plan: Vec<_> = t
            .partitions
            .iter()
            .enumerate()
            .take(self.p.partitions)
            .map(|(i, pi)| {
                let leader = if pi.leader == me && !registered {
                    -1
                } else {
                    pi.leader
                };
                let epochs = (pi.leader_epoch, n.image.alter_partition_epoch(pi));
                (i, leader, epochs, pi.replicas.clone(), pi.isr.clone())
            })
            .collect();
        for (p, leader, epochs, replicas, isr) in plan {
            // As the shell: a registered node a reassignment removed deletes its copy.
            let removed = registered && !replicas.is_empty() && !replicas.contains(&me);
            self.set_role(node, p, leader, epochs, replicas, isr, min_isr);
            if removed {
                self.drop_removed_replica(node, p);
            }
        }
    }

    /// As `Partition::drop_removed_replica`: an offline copy of a partition this node no
    /// longer replicates starts over empty.
    fn drop_removed_replica(&mut self, node: usize, p: usize) {
        let me = self.nodes[node].id;
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        let log = part.core.log();
        let end = log.log_end_offset();
        let empty = end == log.log_start_offset();
        if empty || !matches!(part.core.role(), ReplicaRole::Offline { .. }) {
            return;
        }
        if let Err(e) = part.core.restart_at(0) {
            self.violation(format!("n{me} p{p}: deleting a removed copy failed: {e}"));
            return;
        }
        self.stats.replicas_removed += 1;
        tr!(
            self,
            "n{me} p{p} removed from the replicas: copy of {end} offsets deleted"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn set_role(
        &mut self,
        node: usize,
        p: usize,
        leader: NodeId,
        (epoch, partition_epoch): (i32, i32),
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        min_isr: usize,
    ) {
        let now = self.now as i64;
        let n = &mut self.nodes[node];
        let me = n.id;
        let inc = n.incarnation;
        let Some(part) = n.parts[p].as_mut() else {
            return;
        };
        let core = &mut part.core;
        // As `Partition::set_role`: the stricter min.insync.replicas during the change, the
        // new one after it.
        let stricter = core.min_insync_replicas().max(min_isr);
        if core.min_insync_replicas() != stricter {
            core.set_min_insync_replicas(stricter);
        }
        let before = core.role().clone();
        if epoch < core.leader_epoch() && !matches!(before, ReplicaRole::Standalone) {
            return;
        }
        let same_epoch = core.leader_epoch() == epoch;
        match before.clone() {
            ReplicaRole::Leader(_) if leader == me && same_epoch => {
                core.update_leader_isr(partition_epoch, replicas, isr, T0_MS + now);
            }
            ReplicaRole::Follower { leader: l, .. }
                if leader != me && l == leader && same_epoch => {}
            _ if leader == me && isr.contains(&me) => {
                core.become_leader(me, epoch, partition_epoch, replicas, isr, T0_MS + now);
            }
            _ if leader >= 0 && leader != me && replicas.contains(&me) => {
                core.become_follower(leader, epoch);
            }
            ReplicaRole::Offline { .. } if same_epoch => {}
            _ => core.become_offline(epoch),
        }
        if core.min_insync_replicas() != min_isr {
            core.set_min_insync_replicas(min_isr);
        }
        let after = core.role().clone();
        let new_epoch = core.leader_epoch();
        let changed = std::mem::discriminant(&before) != std::mem::discriminant(&after)
            || match (&before, &after) {
                (ReplicaRole::Leader(a), ReplicaRole::Leader(b)) => a.epoch != b.epoch,
                (
                    ReplicaRole::Follower {
                        leader: a,
                        epoch: x,
                    },
                    ReplicaRole::Follower {
                        leader: b,
                        epoch: y,
                    },
                ) => a != b || x != y,
                (ReplicaRole::Offline { epoch: x }, ReplicaRole::Offline { epoch: y }) => x != y,
                _ => false,
            };
        if new_epoch < part.max_epoch {
            let prev = part.max_epoch;
            self.violation(format!(
                "n{me} p{p}: leader epoch went back from {prev} to {new_epoch}"
            ));
            return;
        }
        part.max_epoch = new_epoch;
        if !changed {
            self.after_change(node, p);
            return;
        }
        part.fetch = FetchState::Idle;
        let became_leader = matches!(after, ReplicaRole::Leader(_));
        if !became_leader {
            part.lead_hw = None;
        }
        tr!(self, "n{me} p{p} {:?} -> {after:?}", role_name(&before));
        if became_leader {
            let hw = self.nodes[node].parts[p]
                .as_ref()
                .map_or(0, |x| x.core.high_watermark());
            if let Some(part) = self.nodes[node].parts[p].as_mut() {
                part.lead_hw = Some((new_epoch, hw));
            }
            match self.leaders.get(&(p, new_epoch)) {
                Some(&(other, other_inc)) if (other, other_inc) != (node, inc) => {
                    let o = self.nodes[other].id;
                    self.violation(format!(
                        "p{p} epoch {new_epoch}: n{me} (incarnation {inc}) leads, but n{o} \
                         (incarnation {other_inc}) led it already"
                    ));
                }
                _ => {
                    self.leaders.insert((p, new_epoch), (node, inc));
                }
            }
            self.check_holds_acks(node, p, new_epoch, "new leader");
        }
        if matches!(after, ReplicaRole::Follower { .. }) {
            self.send_fetch(node, p);
        }
        self.after_change(node, p);
    }

    /// The acknowledged or committed batches of `p` up to leader epoch `epoch` that `node`
    /// lacks, as (base, end, its log end); `None` when it has no open copy of `p`.
    fn missing_acks(&self, node: usize, p: usize, epoch: i32) -> Option<Vec<(i64, i64, i64)>> {
        let part = self.nodes[node].parts[p].as_ref()?;
        let log = part.core.log();
        let committed = self.committed.get(p).map_or(&[][..], |c| &c[..]);
        // Records an operator deleted are gone on purpose, and so may be those an unclean
        // election forfeited.
        let deleted_to = self.deleted_to.get(p).copied().unwrap_or(0);
        let floor = self.unclean_epoch(p);
        let mine =
            |a: &&Ack| a.p == p && a.epoch <= epoch && a.epoch >= floor && a.base >= deleted_to;
        let mut missing = Vec::new();
        for a in self.acks.iter().chain(committed).filter(mine) {
            let got = if a.end <= log.log_end_offset() {
                log.read(a.base, 1, a.base + 1).ok()
            } else {
                None
            };
            if got.as_ref() != Some(&a.bytes) {
                missing.push((a.base, a.end, log.log_end_offset()));
            }
        }
        Some(missing)
    }

    /// Every batch of `p` acknowledged in leader epoch `epoch` or before, and every batch a
    /// high watermark passed by then, is in `node`'s log, byte for byte. Later epochs' batches
    /// are not a leader of `epoch`'s to hold: a node whose metadata lags can take up an epoch
    /// the controller has already moved past, and it can neither acknowledge nor commit
    /// anything in it, as the other replicas follow the newer epoch.
    fn check_holds_acks(&mut self, node: usize, p: usize, epoch: i32, what: &str) {
        let Some(missing) = self.missing_acks(node, p, epoch) else {
            return;
        };
        if let Some((base, end, log_end)) = missing.first() {
            let id = self.nodes[node].id;
            self.violation(format!(
                "acknowledged or committed batch lost: {what} n{id} p{p} lacks offsets \
                 {base}..{end} (log end {log_end}; {} batches missing)",
                missing.len()
            ));
        }
    }

    /// After anything that may move a partition's high watermark or role on `node`: the
    /// leader's high watermark must not go back within its epoch; waiting produces settle.
    fn after_change(&mut self, node: usize, p: usize) {
        let me = self.nodes[node].id;
        let floor = self.unclean_epoch(p);
        if let Some(part) = self.nodes[node].parts[p].as_mut() {
            if let ReplicaRole::Leader(l) = part.core.role() {
                let hw = part.core.high_watermark();
                let epoch = l.epoch;
                // Record the batches this high watermark passes first. A leader that an
                // unclean election deposed (it has not heard yet) can still commit with
                // followers that have not heard either: the lineage the election forfeited.
                if self.committed.len() <= p {
                    self.committed.resize_with(p + 1, Vec::new);
                }
                let deposed = epoch < floor;
                let ledger = if deposed {
                    &mut self.forfeited[p]
                } else {
                    &mut self.committed[p]
                };
                let log = part.core.log();
                let from = if deposed {
                    let mine = ledger.iter().filter(|a| a.epoch == epoch);
                    mine.map(|a| a.end).max().unwrap_or(0)
                } else {
                    ledger.last().map_or(0, |a| a.end)
                };
                // Past what an operator deleted.
                let mut from = from.max(log.log_start_offset());
                while from < hw {
                    let bytes = log.read(from, 1, from + 1).unwrap_or_default();
                    let Some(end) = batch_end(&bytes) else { break };
                    ledger.push(Ack {
                        p,
                        epoch,
                        base: from,
                        end,
                        bytes,
                    });
                    from = end;
                }
                match part.lead_hw {
                    Some((e, prev)) if e == epoch && hw < prev => {
                        self.violation(format!(
                            "n{me} p{p}: high watermark went back from {prev} to {hw} in \
                             epoch {epoch}"
                        ));
                    }
                    _ => part.lead_hw = Some((epoch, hw)),
                }
            }
        }
        self.settle_waiters(node);
    }

    fn isr_tick(&mut self, node: usize) {
        let now = T0_MS + self.now as i64;
        let lag = self.p.lag_max_ms as i64;
        let Some(topic_id) = self.nodes[node].image.topic_ids.get(TOPIC).copied() else {
            return;
        };
        let me = self.nodes[node].id;
        for p in 0..self.p.partitions {
            let n = &mut self.nodes[node];
            let Some(part) = n.parts[p].as_mut() else {
                continue;
            };
            let epoch = part.core.leader_epoch();
            let partition_epoch = part.core.partition_epoch().unwrap_or(-1);
            let image = &n.image;
            let joinable = |b: NodeId| image.brokers.get(&b).is_some_and(|r| !r.fenced);
            if let Some((current, new)) = part.core.isr_change(now, lag, joinable) {
                tr!(
                    self,
                    "n{me} p{p} asks ISR {current:?} -> {new:?} (epoch {epoch}, partition epoch {partition_epoch})"
                );
                let req = ControllerRequest::AlterPartition {
                    topic_id,
                    partition: p as u32,
                    leader: me,
                    leader_epoch: epoch,
                    partition_epoch,
                    current_isr: current,
                    new_isr: new,
                };
                self.send(Msg::ToController {
                    from: node,
                    req: Some(req),
                    sent_ms: now,
                });
            }
        }
    }

    // ---- replication: fetch, append, flush ------------------------------------------------------

    fn send_fetch(&mut self, node: usize, p: usize) {
        let n = &mut self.nodes[node];
        let life = n.life;
        let Some(part) = n.parts[p].as_mut() else {
            return;
        };
        if part.fetch != FetchState::Idle {
            return;
        }
        let ReplicaRole::Follower { leader, epoch } = *part.core.role() else {
            return;
        };
        self.next_fetch_id += 1;
        let id = self.next_fetch_id;
        part.fetch = FetchState::InFlight(id);
        // From the log end, synced or not; the durable end travels beside it.
        let offset = part.core.log().log_end_offset();
        let durable = part.core.ack_offset();
        part.fetch_offset = offset;
        let last_epoch = part.core.log().latest_epoch().unwrap_or(-1);
        let log_start = part.core.log().log_start_offset();
        let Some(to) = self.nodes.iter().position(|x| x.id == leader) else {
            return;
        };
        let incarnation = self.nodes[node].incarnation;
        self.send(Msg::FetchReq {
            from: node,
            from_life: life,
            incarnation,
            to,
            p,
            id,
            epoch,
            offset,
            durable,
            last_epoch,
            log_start,
        });
        self.schedule(FETCH_TIMEOUT_MS, Ev::FetchTimeout { node, life, p, id });
    }

    #[allow(clippy::too_many_arguments)]
    fn leader_fetch(
        &mut self,
        from: usize,
        from_life: u64,
        incarnation: i64,
        to: usize,
        p: usize,
        id: u64,
        epoch: i32,
        offset: i64,
        durable: i64,
        last_epoch: i32,
        log_start: i64,
    ) {
        let now = T0_MS + self.now as i64;
        let replica = self.nodes[from].id;
        let max_bytes = self.p.fetch_bytes;
        // As the shell's fetch handler: a fetch from another incarnation than the one the
        // leader's image registers for that node counts for nothing (STALE_BROKER_EPOCH
        // there; the follower backs off either way).
        let stale = self.nodes[to]
            .image
            .brokers
            .get(&replica)
            .is_some_and(|b| b.epoch != incarnation);
        let Some(part) = self.nodes[to].parts[p].as_mut() else {
            return;
        };
        let fetched = if stale {
            Err(ReplicaFetchError::NotReplica)
        } else {
            part.core
                .replica_fetch(replica, epoch, offset, Some(durable), last_epoch, now)
        };
        if fetched.is_ok() {
            part.core.note_follower_log_start(replica, log_start);
        }
        let (hw, start) = (
            part.core.high_watermark(),
            part.core.log().log_start_offset(),
        );
        let answer = match fetched {
            // Below the log start the read fails and the follower restarts at the start, as
            // the shell's OFFSET_OUT_OF_RANGE answer makes it.
            Ok(ReplicaFetchPosition::Read) => {
                let records = part
                    .core
                    .read_for_replica(offset, max_bytes)
                    .and_then(|r| Ok(r.to_bytes()?))
                    .unwrap_or_default();
                Ok((ReplicaFetchPosition::Read, records, hw, start))
            }
            Ok(d) => Ok((d, Bytes::new(), hw, start)),
            Err(e) => Err(e),
        };
        self.after_change(to, p);
        self.send(Msg::FetchResp {
            from: to,
            to: from,
            to_life: from_life,
            p,
            id,
            answer,
        });
    }

    fn follower_response(
        &mut self,
        from: usize,
        node: usize,
        life: u64,
        p: usize,
        id: u64,
        answer: FetchAnswer,
    ) {
        self.follower_takes_answer(from, node, life, p, id, answer);
        if self.nodes[node].life == life {
            self.check_follower_reads(node, p);
        }
    }

    /// What a consumer reading from follower `node` (KIP-392) gets, as it would poll from
    /// where it left off, must be batches some leader committed, byte for byte: a follower
    /// shows nothing a leader's high watermark did not pass, and nothing that diverged.
    fn check_follower_reads(&mut self, node: usize, p: usize) {
        let me = self.nodes[node].id;
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        if !part.core.is_follower() {
            return;
        }
        let committed = self.committed.get(p).map_or(&[][..], |c| &c[..]);
        let forfeited = self.forfeited.get(p).map_or(&[][..], |c| &c[..]);
        let hw = part.core.high_watermark();
        // A log restarted or truncated below where the consumer was: it starts over at the
        // high watermark (a real one would be told OFFSET_OUT_OF_RANGE and go to the leader).
        let mut from = part.read_to.min(hw).max(part.core.log().log_start_offset());
        let mut bad = None;
        'poll: loop {
            let read = part.core.fetch(from, FOLLOWER_READ_BYTES);
            let bytes = match read
                .map_err(|e| e.to_string())
                .and_then(|r| r.to_bytes().map_err(|e| e.to_string()))
            {
                Ok(b) if b.is_empty() => break,
                Ok(b) => b,
                Err(e) => {
                    bad = Some(format!("reading offset {from} failed: {e}"));
                    break;
                }
            };
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let Some(len) = batch_len(rest) else {
                    bad = Some(format!("a torn batch at offset {from}"));
                    break 'poll;
                };
                let (batch, after) = rest.split_at(len);
                rest = after;
                let base = i64::from_be_bytes(batch[..8].try_into().expect("8 bytes"));
                let at = base.max(from);
                let i = committed.partition_point(|a| a.end <= at);
                // Committed before an unclean election, and not yet truncated here.
                let earlier = forfeited
                    .iter()
                    .find(|a| a.base <= at && at < a.end && batch == &a.bytes[..]);
                match committed.get(i).filter(|a| a.base <= at) {
                    Some(a) if batch == &a.bytes[..] => {
                        from = a.end;
                        self.stats.follower_reads += 1;
                    }
                    _ if earlier.is_some() => {
                        from = earlier.map_or(from, |a| a.end);
                        self.stats.follower_reads += 1;
                    }
                    Some(a) => {
                        bad = Some(format!(
                            "offsets {}..{} differ from the committed batch",
                            a.base, a.end
                        ));
                        break 'poll;
                    }
                    None => {
                        bad = Some(format!("offset {base} was never committed"));
                        break 'poll;
                    }
                }
            }
        }
        part.read_to = from;
        if let Some(what) = bad {
            self.violation(format!(
                "n{me} p{p}: a consumer reading from this follower (high watermark {hw}): \
                 {what}"
            ));
        }
    }

    fn follower_takes_answer(
        &mut self,
        from: usize,
        node: usize,
        life: u64,
        p: usize,
        id: u64,
        answer: FetchAnswer,
    ) {
        let now = T0_MS + self.now as i64;
        let me = self.nodes[node].id;
        let leader = self.nodes[from].id;
        let Some(part) = self.part_mut(node, life, p) else {
            return;
        };
        if part.fetch != FetchState::InFlight(id) {
            return;
        }
        let ReplicaRole::Follower { epoch, .. } = *part.core.role() else {
            part.fetch = FetchState::Idle;
            return;
        };
        match answer {
            Err(e) => {
                part.fetch = FetchState::Backoff;
                tr!(self, "n{me} p{p} fetch from n{leader} refused: {e:?}");
                self.schedule(FETCH_BACKOFF_MS, Ev::FetchAgain { node, life, p });
            }
            Ok((
                ReplicaFetchPosition::Diverging {
                    epoch: de,
                    end_offset,
                },
                _,
                _,
                _,
            )) if de >= 0 => {
                let from_end = part.core.log().log_end_offset();
                let hw_before = part.core.high_watermark();
                let r = part.core.truncate_diverging(de, end_offset);
                let to = *r.as_ref().unwrap_or(&from_end);
                part.read_to = part.read_to.min(to);
                let hw_after = part.core.high_watermark();
                part.fetch = FetchState::Idle;
                self.stats.truncations += 1;
                tr!(
                    self,
                    "n{me} p{p} truncates {from_end} -> {to} (diverging epoch {de} end \
                     {end_offset}, epoch {epoch}, hw {hw_before} -> {hw_after})"
                );
                if let Err(e) = r {
                    self.violation(format!("n{me} p{p}: truncation failed: {e}"));
                    return;
                }
                self.send_fetch(node, p);
            }
            Ok((_, _, _, leader_start)) if part.fetch_offset < leader_start => {
                let r = part.core.restart_at(leader_start);
                part.fetch = FetchState::Idle;
                tr!(
                    self,
                    "n{me} p{p} restarts at the leader's log start {leader_start}"
                );
                if let Err(e) = r {
                    self.violation(format!("n{me} p{p}: restarting the replica failed: {e}"));
                    return;
                }
                self.send_fetch(node, p);
            }
            Ok((_, records, leader_hw, leader_start)) => {
                if records.is_empty() {
                    part.core.follower_high_watermark(leader_hw);
                    if let Err(e) = part.core.follower_log_start(leader_start) {
                        self.violation(format!("n{me} p{p}: deleting records failed: {e}"));
                        return;
                    }
                    if part.core.ack_offset() < part.core.log().log_end_offset() {
                        let end = part.core.log().log_end_offset();
                        part.fetch = FetchState::Syncing(end);
                        self.start_flush(node, p);
                    } else {
                        part.fetch = FetchState::Backoff;
                        self.schedule(FETCH_IDLE_MS, Ev::FetchAgain { node, life, p });
                    }
                    return;
                }
                if let Err(e) = part.core.append_as_follower(&records, now) {
                    let end = part.core.log().log_end_offset();
                    let sent = part.fetch_offset;
                    part.fetch = FetchState::Backoff;
                    if sent < end {
                        // A demoted leader's unsynced tail: it fetched from its durable end, so
                        // the batches overlap its log end. The shell logs the error and backs
                        // off; once the tail is synced the next fetch (from the log end)
                        // settles any divergence.
                        tr!(
                            self,
                            "n{me} p{p}: follower append failed over an unsynced tail \
                             ({sent}..{end}): {e}"
                        );
                        self.start_flush(node, p);
                    } else {
                        self.violation(format!(
                            "n{me} p{p}: follower append from n{leader} failed at log end \
                             {end}: {e}"
                        ));
                    }
                    self.schedule(FETCH_BACKOFF_MS, Ev::FetchAgain { node, life, p });
                    return;
                }
                part.core.follower_high_watermark(leader_hw);
                if let Err(e) = part.core.follower_log_start(leader_start) {
                    self.violation(format!("n{me} p{p}: deleting records failed: {e}"));
                    return;
                }
                // The next fetch goes out while this round's batches sync, once the round
                // before is synced.
                part.fetch = FetchState::Syncing(part.fetch_offset);
                self.start_flush(node, p);
                self.maybe_fetch_after_sync(node, p);
            }
        }
    }

    fn start_flush(&mut self, node: usize, p: usize) {
        let slow = self.nodes[node].slow_disk_until > self.now;
        let life = self.nodes[node].life;
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        if part.flush.is_some() {
            return;
        }
        match part.core.prepare_flush() {
            Some(t) => {
                part.flush = Some(t);
                let d = if slow {
                    self.rand_in(self.p.slow_disk_ms)
                } else {
                    self.rand_in(self.p.disk_ms)
                };
                self.schedule(d, Ev::FlushDone { node, life, p });
            }
            None => self.flushed(node, p),
        }
    }

    fn flush_done(&mut self, node: usize, life: u64, p: usize) {
        let me = self.nodes[node].id;
        let Some(part) = self.part_mut(node, life, p) else {
            return;
        };
        let Some(ticket) = part.flush.take() else {
            return;
        };
        if let Err(e) = ticket.sync() {
            self.violation(format!("n{me} p{p}: fsync failed: {e}"));
            return;
        }
        part.core.complete_flush(&ticket);
        self.after_change(node, p);
        self.maybe_fetch_after_sync(node, p);
        self.start_flush(node, p);
    }

    /// Nothing left to flush: a follower waiting for its fsync fetches again.
    fn flushed(&mut self, node: usize, p: usize) {
        self.maybe_fetch_after_sync(node, p);
    }

    /// A follower waiting for a sync fetches once what it waits for is durable.
    fn maybe_fetch_after_sync(&mut self, node: usize, p: usize) {
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        if let FetchState::Syncing(upto) = part.fetch {
            let target = upto.min(part.core.log().log_end_offset());
            if part.core.ack_offset() >= target {
                part.fetch = FetchState::Idle;
                self.send_fetch(node, p);
            }
        }
    }

    // ---- producers -----------------------------------------------------------------------------

    fn next_produce(&mut self, p: usize, delay: u64) {
        if self.running && self.random_faults {
            self.schedule(delay, Ev::Produce { p });
        }
    }

    /// The client's metadata: asks a random up node for the partition's leader.
    fn refresh_leader(&mut self, p: usize) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].up && !self.nodes[n].partitioned)
            .collect();
        if up.is_empty() {
            return None;
        }
        let asked = up[self.rng.pick(up.len())];
        let img = &self.nodes[asked].image;
        let leader = img
            .topic_ids
            .get(TOPIC)
            .and_then(|id| img.topics.get(id))
            .and_then(|t| t.partitions.get(p))
            .map_or(-1, |pi| pi.leader);
        self.nodes.iter().position(|x| x.id == leader)
    }

    fn produce(&mut self, p: usize) {
        if self.producers[p].outstanding.is_some() {
            return;
        }
        let leader = match self.producers[p].leader {
            Some(l) => Some(l),
            None => self.refresh_leader(p),
        };
        self.producers[p].leader = leader;
        let Some(to) = leader else {
            self.next_produce(p, PRODUCE_BACKOFF_MS);
            return;
        };
        let id = self.producers[p].next_id;
        self.producers[p].next_id += 1;
        self.producers[p].outstanding = Some(id);
        let values: Vec<Vec<u8>> = (0..self.p.batch_records)
            .map(|i| format!("p{p}-{id}-{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let batch = Bytes::from(simple_batch(T0_MS + self.now as i64, &refs));
        self.send(Msg::ProduceReq { to, p, id, batch });
        self.schedule(PRODUCE_TIMEOUT_MS, Ev::ProduceTimeout { p, id });
    }

    fn leader_produce(&mut self, node: usize, p: usize, id: u64, batch: Bytes) {
        let now = T0_MS + self.now as i64;
        let me = self.nodes[node].id;
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        let answer = if !matches!(part.core.role(), ReplicaRole::Leader(_)) {
            ProduceAnswer::NotLeader
        } else if part.core.isr_len() < part.core.min_insync_replicas() {
            ProduceAnswer::NotEnoughReplicas
        } else {
            let epoch = part.core.leader_epoch();
            match part.core.append(&batch, epoch, now) {
                Ok(info) => {
                    tr!(
                        self,
                        "n{me} p{p} appends #{id} at {}..={} (epoch {epoch})",
                        info.base_offset,
                        info.last_offset
                    );
                    self.nodes[node].waiters.push(Waiter {
                        p,
                        id,
                        epoch,
                        base: info.base_offset,
                        end: info.last_offset + 1,
                    });
                    self.start_flush(node, p);
                    self.after_change(node, p);
                    return;
                }
                Err(e) => ProduceAnswer::Failed(format!("{e}")),
            }
        };
        self.send(Msg::ProduceResp {
            from: node,
            p,
            id,
            answer,
        });
    }

    /// Answers every waiting produce whose fate is known (`Partition::wait_replicated`).
    fn settle_waiters(&mut self, node: usize) {
        if self.nodes[node].waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.nodes[node].waiters);
        let mut keep = Vec::new();
        for w in waiters {
            let Some(part) = self.nodes[node].parts[w.p].as_ref() else {
                continue;
            };
            let core = &part.core;
            let answer = if !core.is_leader() || core.leader_epoch() != w.epoch {
                ProduceAnswer::NotLeader
            } else if core.high_watermark() >= w.end {
                if core.isr_len() < core.min_insync_replicas() {
                    ProduceAnswer::NotEnoughReplicasAfterAppend
                } else {
                    let bytes = core.log().read(w.base, 1, w.base + 1).unwrap_or_default();
                    let me = self.nodes[node].id;
                    tr!(
                        self,
                        "n{me} p{} acks #{} {}..{} (epoch {})",
                        w.p,
                        w.id,
                        w.base,
                        w.end,
                        w.epoch
                    );
                    self.acks.push(Ack {
                        p: w.p,
                        epoch: w.epoch,
                        base: w.base,
                        end: w.end,
                        bytes,
                    });
                    ProduceAnswer::Ok
                }
            } else {
                keep.push(w);
                continue;
            };
            self.send(Msg::ProduceResp {
                from: node,
                p: w.p,
                id: w.id,
                answer,
            });
        }
        self.nodes[node].waiters.extend(keep);
    }

    fn produce_answer(&mut self, from: usize, p: usize, id: u64, answer: ProduceAnswer) {
        if self.producers[p].outstanding != Some(id) {
            return;
        }
        self.producers[p].outstanding = None;
        if answer == ProduceAnswer::Ok {
            let d = self.rand_in(self.p.produce_gap_ms);
            self.next_produce(p, d);
        } else {
            tr!(
                self,
                "produce p{p} #{id} to n{}: {answer:?}",
                self.nodes[from].id
            );
            self.producers[p].leader = None;
            self.next_produce(p, PRODUCE_BACKOFF_MS);
        }
    }

    // ---- faults --------------------------------------------------------------------------------

    fn fault(&mut self) {
        let w = self.p.weights;
        let total: u64 = w.iter().sum();
        if total == 0 {
            return;
        }
        let mut x = self.rng.range(0, total - 1);
        let mut kind = 0;
        while x >= w[kind] {
            x -= w[kind];
            kind += 1;
        }
        let n = self.nodes.len();
        let impaired = self.nodes.iter().filter(|x| !x.up || x.partitioned).count();
        let node = self.rng.pick(n);
        let id = self.nodes[node].id;
        // A majority stays up and connected, except where unclean elections may lose data
        // anyway: there all but one node can be down, so that no ISR member may be left.
        let impaired_max = if self.unclean { n - 1 } else { (n - 1) / 2 };
        match kind {
            0 | 1 if impaired >= impaired_max || !self.nodes[node].up => {}
            0 => {
                self.crash(node);
                let d = self.rand_in(self.p.down_ms);
                self.schedule(d, Ev::Restart { node });
            }
            1 => {
                if self.nodes[node].partitioned {
                    return;
                }
                self.stats.partitions += 1;
                let nd = &mut self.nodes[node];
                nd.partitioned = true;
                nd.partition_gen += 1;
                let gen = nd.partition_gen;
                let d = self.rand_in(self.p.partition_ms);
                tr!(self, "PARTITION n{id} for {d} ms");
                self.schedule(d, Ev::Heal { node, gen });
            }
            2 => self.failover(),
            3 => {
                let d = self.rand_in(self.p.slow_for_ms);
                tr!(self, "SLOW DISK n{id} for {d} ms");
                self.nodes[node].slow_disk_until = self.now + d;
            }
            4 => {
                let d = self.rand_in(self.p.slow_for_ms);
                tr!(self, "SLOW METADATA n{id} for {d} ms");
                self.nodes[node].slow_meta_until = self.now + d;
            }
            5 => {
                let v = self.rng.range(1, 3);
                self.ask_min_isr(node, v);
            }
            6 => self.ask_election(node, false),
            8 => {
                let p = self.rng.pick(self.p.partitions);
                let share = self.rng.range(0, 4);
                self.delete_records(p, share, 4);
            }
            _ => {
                let p = self.rng.pick(self.p.partitions) as u32;
                let target = if self.rng.chance(0.25) {
                    None
                } else {
                    // A random non-empty subset of the nodes, in random order.
                    let mut ids: Vec<NodeId> = self.nodes.iter().map(|x| x.id).collect();
                    for i in (1..ids.len()).rev() {
                        let j = self.rng.pick(i + 1);
                        ids.swap(i, j);
                    }
                    let len = 1 + self.rng.pick(ids.len());
                    ids.truncate(len);
                    Some(ids)
                };
                self.ask_reassignment(node, p, target);
            }
        }
    }

    /// An operator's DeleteRecords for partition `p`, carried out by the node that leads it
    /// in its own view: up to `share / of` of the way from its log start to its high
    /// watermark.
    fn delete_records(&mut self, p: usize, share: u64, of: u64) {
        let Some(node) = self.nodes.iter().position(|n| {
            n.up && n.parts[p]
                .as_ref()
                .is_some_and(|x| matches!(x.core.role(), ReplicaRole::Leader(_)))
        }) else {
            return;
        };
        let id = self.nodes[node].id;
        let Some(part) = self.nodes[node].parts[p].as_mut() else {
            return;
        };
        let start = part.core.log().log_start_offset();
        let hw = part.core.high_watermark();
        let offset = start + (hw - start) * share as i64 / of.max(1) as i64;
        match part.core.delete_records(offset) {
            Ok(new_start) => {
                if self.deleted_to.len() <= p {
                    self.deleted_to.resize(p + 1, 0);
                }
                self.deleted_to[p] = self.deleted_to[p].max(new_start);
                self.stats.records_deleted += 1;
                tr!(
                    self,
                    "DELETE RECORDS p{p} below {offset} on n{id}: log start {new_start}"
                );
            }
            Err(e) => self.violation(format!("n{id} p{p}: DeleteRecords at {offset}: {e:?}")),
        }
    }

    /// An operator's `kafka-reassign-partitions --execute` (or `--cancel`, for `None`) for
    /// partition `p` through `node`.
    fn ask_reassignment(&mut self, node: usize, p: u32, target: Option<Vec<NodeId>>) {
        let Some(topic_id) = self.topic_id else {
            return;
        };
        let id = self.nodes[node].id;
        self.stats.reassignments_asked += 1;
        tr!(self, "REASSIGN p{p} to {target:?} asked through n{id}");
        let req = ControllerRequest::AlterReassignments {
            partitions: vec![(topic_id, p, target)],
        };
        self.send(Msg::ToController {
            from: node,
            req: Some(req),
            sent_ms: T0_MS + self.now as i64,
        });
    }

    /// An operator's `kafka-leader-election --election-type preferred` (or `unclean`)
    /// `--all-topic-partitions` through `node`. Unclean elects only leaderless partitions.
    fn ask_election(&mut self, node: usize, unclean: bool) {
        let Some(topic_id) = self.topic_id else {
            return;
        };
        let id = self.nodes[node].id;
        if unclean {
            self.stats.unclean_asked += 1;
            tr!(self, "UNCLEAN ELECTION asked through n{id}");
        } else {
            self.stats.elections_asked += 1;
            tr!(self, "PREFERRED ELECTION asked through n{id}");
        }
        let partitions = (0..self.p.partitions as u32)
            .map(|p| (topic_id, p))
            .collect();
        let req = ControllerRequest::ElectLeaders {
            unclean,
            partitions,
        };
        self.send(Msg::ToController {
            from: node,
            req: Some(req),
            sent_ms: T0_MS + self.now as i64,
        });
    }

    /// An operator's `kafka-configs --entity-default` through `node`: the cluster-level
    /// min.insync.replicas becomes `v`.
    fn ask_min_isr(&mut self, node: usize, v: u64) {
        let id = self.nodes[node].id;
        if v < 2 && self.replaced_disk_unregistered() {
            // The replaced disk was allowed because another eligible copy existed; lowering
            // min.insync.replicas now would clear that copy's eligibility (the high watermark
            // could pass it) before the replaced node's registration takes its old copies
            // away, leaving nothing eligible: the sim's precondition broken, not the broker
            // (seed 9,902,901 of the 5-node layer).
            tr!(
                self,
                "MIN ISR {v} not asked through n{id}: a replaced disk is not registered yet"
            );
            return;
        }
        self.stats.min_isr_changes += 1;
        if v < 2 {
            // Batches acknowledged from here may have one durable copy: no wipe may take it.
            self.wipe_allowed = false;
        }
        tr!(self, "MIN ISR {v} asked through n{id}");
        let req = ControllerRequest::AlterClusterConfigs {
            change: ConfigChange::Replace(vec![(CLUSTER_MIN_ISR.into(), v.to_string())]),
        };
        self.send(Msg::ToController {
            from: node,
            req: Some(req),
            sent_ms: T0_MS + self.now as i64,
        });
    }

    // ---- final checks --------------------------------------------------------------------------

    fn final_checks(&mut self) {
        let committed = self.meta_log.len() as i64;
        for n in 0..self.nodes.len() {
            let applied = self.nodes[n].image.applied_offset;
            if applied != committed {
                let id = self.nodes[n].id;
                self.liveness.push(format!(
                    "n{id} applied metadata up to {applied} of {committed}"
                ));
            }
        }
        if self.topic_id.is_none() {
            self.liveness.push("the topic was never created".into());
            return;
        }
        for p in 0..self.p.partitions {
            let pi = self
                .topic_id
                .and_then(|id| self.image.topics.get(&id))
                .and_then(|t| t.partitions.get(p))
                .cloned();
            let Some(pi) = pi else { continue };
            if pi.reassigning() {
                self.liveness.push(format!(
                    "p{p}: reassignment still in progress after healing ({pi:?})"
                ));
            }
            let Some(l) = self.nodes.iter().position(|x| x.id == pi.leader) else {
                self.liveness
                    .push(format!("p{p} has no leader after healing ({pi:?})"));
                // Leaderless may still be recoverable (an unclean election); not when no node
                // holds every acknowledged batch any more.
                let holds = |n: usize| {
                    self.missing_acks(n, p, i32::MAX)
                        .is_some_and(|m| m.is_empty())
                };
                if !(0..self.nodes.len()).any(holds) {
                    self.violation(format!(
                        "acknowledged or committed batches of p{p} lost: no node holds them all \
                         (replicas {:?}, ISR {:?}, ELR {:?})",
                        pi.replicas, pi.isr, pi.elr
                    ));
                }
                continue;
            };
            let (hw, end, role_ok) = match self.nodes[l].parts[p].as_ref() {
                Some(part) => (
                    part.core.high_watermark(),
                    part.core.log().log_end_offset(),
                    matches!(part.core.role(), ReplicaRole::Leader(s) if s.epoch == pi.leader_epoch),
                ),
                None => (-1, -1, false),
            };
            if !role_ok {
                self.liveness.push(format!(
                    "p{p}: n{} is the leader of epoch {} in the metadata but does not lead it",
                    pi.leader, pi.leader_epoch
                ));
                continue;
            }
            if hw != end {
                self.liveness.push(format!(
                    "p{p}: leader n{} high watermark {hw} short of its log end {end} after \
                     healing (ISR {:?})",
                    pi.leader, pi.isr
                ));
            }
            self.check_holds_acks(l, p, pi.leader_epoch, "final leader");
            let deleted_to = self.deleted_to.get(p).copied().unwrap_or(0);
            let leader_start = self.nodes[l].parts[p]
                .as_ref()
                .map_or(0, |x| x.core.log().log_start_offset());
            if leader_start > deleted_to {
                self.violation(format!(
                    "p{p}: leader n{} starts at {leader_start}, past every deletion ({deleted_to})",
                    pi.leader
                ));
            }
            for n in 0..self.nodes.len() {
                if n == l {
                    continue;
                }
                let id = self.nodes[n].id;
                let Some(part) = self.nodes[n].parts[p].as_ref() else {
                    continue;
                };
                if !pi.replicas.contains(&id) {
                    // Removed by a reassignment: its copy is gone.
                    let end = part.core.log().log_end_offset();
                    if end != part.core.log().log_start_offset() {
                        self.liveness.push(format!(
                            "p{p}: n{id} is no replica but keeps a copy up to {end}"
                        ));
                    }
                    continue;
                }
                let fend = part.core.log().log_end_offset();
                if fend < hw {
                    self.liveness.push(format!(
                        "p{p}: n{id} log end {fend} behind the high watermark {hw} after healing"
                    ));
                    continue;
                }
                let fstart = part.core.log().log_start_offset();
                if fstart > hw {
                    self.liveness.push(format!(
                        "p{p}: n{id} log starts at {fstart}, past the high watermark {hw}, after \
                         healing"
                    ));
                    continue;
                }
                // Compared where both logs start (DeleteRecords moves log starts).
                let from = leader_start.max(part.core.log().log_start_offset());
                let reference = self.nodes[l].parts[p]
                    .as_ref()
                    .and_then(|x| read_from(x, from, hw));
                if read_from(part, from, hw) != reference {
                    self.violation(format!(
                        "p{p}: n{id}'s log differs from leader n{}'s below the high watermark {hw}",
                        pi.leader
                    ));
                }
            }
        }
    }
}

/// Every stored byte from the batch holding `from` to `hw`.
fn read_from(part: &Part, from: i64, hw: i64) -> Option<Bytes> {
    part.core.log().read(from, usize::MAX / 2, hw).ok()
}

fn role_name(r: &ReplicaRole) -> String {
    match r {
        ReplicaRole::Standalone => "standalone".into(),
        ReplicaRole::Leader(l) => format!("leader e{}", l.epoch),
        ReplicaRole::Follower { leader, epoch } => format!("follower of n{leader} e{epoch}"),
        ReplicaRole::Offline { epoch } => format!("offline e{epoch}"),
    }
}

/// The length of the first record batch in `bytes` (base offset, then batchLength counting
/// what follows it), if all of it is there.
fn batch_len(bytes: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    let total = 12 + usize::try_from(len).ok()?;
    (total >= 61 && total <= bytes.len()).then_some(total)
}

/// The offset after the first record batch in `bytes` (v2 header: base offset, then
/// lastOffsetDelta at byte 23).
fn batch_end(bytes: &[u8]) -> Option<i64> {
    let base = i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
    let delta = i32::from_be_bytes(bytes.get(23..27)?.try_into().ok()?);
    Some(base + i64::from(delta) + 1)
}

fn controller_config(p: &Params, unclean: bool) -> ControllerConfig {
    ControllerConfig {
        session_timeout_ms: p.session_ms,
        auto_leader_rebalance: true,
        leader_imbalance_check_ms: LEADER_IMBALANCE_CHECK_MS,
        unclean_leader_election: unclean,
        min_insync_replicas: MIN_ISR,
    }
}

const TOPIC: &str = "t";
/// acks=all needs at least this many ISR members (min.insync.replicas).
const MIN_ISR: usize = 2;
/// The chance that a crash replaces the node's disk (see `World::wipe_allowed`).
const WIPE_CHANCE: f64 = 0.2;
/// The share of seeds run with unclean leader elections (see `World::unclean`).
const UNCLEAN_SEEDS: f64 = 0.25;
/// In an unclean seed, the chance that a fault also brings an operator's unclean election.
const UNCLEAN_ASK_CHANCE: f64 = 0.15;
/// In an unclean seed, the chance that a fault also crashes a partition's leader.
const UNCLEAN_KILL_CHANCE: f64 = 0.3;
/// Node ids of controllers: the first one, and each failover's successor after it; outside the
/// broker ids so the controller's "I am always alive" rule covers no broker.
const CTL_ID_BASE: NodeId = 1000;
/// Most broker nodes.
const NODES_MAX: usize = 5;
/// Most violations kept per run.
const VIOLATIONS_MAX: usize = 20;
/// Default events with faults on per seed.
pub const DEFAULT_STEPS: u64 = 6_000;
/// Most events after the final heal (a storm of events at one instant is a finding).
const HEAL_EVENTS_MAX: u64 = 1_000_000;
/// After the quiet period, at most this long for metadata still in flight to land, in ms.
const SETTLE_MS: u64 = 5_000;
/// Default virtual time after the final heal before liveness is judged, in ms.
pub const QUIET_MS: u64 = 30_000;
/// Base of the cores' wall-clock timestamps, in ms.
const T0_MS: i64 = 1_700_000_000_000;
/// Heartbeats per controller session timeout.
const HEARTBEATS_PER_SESSION: u64 = 5;
/// Retry period of registration, in ms (the shell's REGISTER_RETRY_MS).
const REGISTER_RETRY_MS: u64 = 200;
/// Period of the leaders' ISR checks, in ms (the shell's ISR_CHECK_INTERVAL_MS).
const ISR_CHECK_MS: u64 = 200;
/// Period of each node's high-watermark checkpoints, in ms: a fifth of the shell's
/// (`HIGH_WATERMARK_CHECKPOINT_MS`), so that crashes find recent checkpoints more often.
const HW_CHECKPOINT_MS: u64 = 200;
/// Period of a node's metadata catch-up poll, in ms.
const META_POLL_MS: u64 = 500;
/// Retry period of topic creation, in ms.
const ADMIN_RETRY_MS: u64 = 300;
/// An unanswered follower fetch is given up after this long, in ms.
const FETCH_TIMEOUT_MS: u64 = 1_000;
/// Pause after a refused fetch, in ms (the shell's FETCH_BACKOFF_MS).
const FETCH_BACKOFF_MS: u64 = 100;
/// Pause after an empty fetch answer, in ms (stands in for the leader's long poll).
const FETCH_IDLE_MS: u64 = 20;
/// An unanswered produce is given up after this long, in ms.
const PRODUCE_TIMEOUT_MS: u64 = 3_000;
/// Pause before a producer retries after an error, in ms.
const PRODUCE_BACKOFF_MS: u64 = 50;
/// Period of preferred-leader elections, in ms.
const LEADER_IMBALANCE_CHECK_MS: u64 = 5_000;
