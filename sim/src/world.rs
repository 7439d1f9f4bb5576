//! The core stepper: one broker node, its partitions and its clients, driven by a seeded event
//! queue. See [`run`].
//!
//! Determinism: all randomness comes from one `ChaCha8Rng` seeded from the seed; time is a
//! virtual nanosecond clock; events are ordered by (time, sequence number); no hash maps, no
//! threads, no wall clock. Every event is appended to the [`Trace`], whose hash identifies the
//! run.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use broker::log::testutil::simple_batch;
use broker::log::{AppendError, FlushTicket, Log, LogConfig, ReadError};
use broker::replica::{AckPolicy, PartitionCore};
use broker::storage::{MemFile, MemStorage, Storage, TornWrite};
use invariants::{
    check_all, Call, CheckOptions, History, HistoryBuilder, LogSample, OpId, Outcome, PollResult,
    Record, ReplicaLog, Report, SendResult,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::decode::decode_fetch;
use crate::trace::Trace;

/// The one topic of the workload.
pub const TOPIC: &str = "sim";
/// The node id in log samples and replica logs.
const NODE: u32 = 0;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
/// Virtual wall-clock epoch for record timestamps (ms).
const EPOCH_MS: i64 = 1_700_000_000_000;
/// Consumer process ids start here (producers count from 0).
const CONSUMER_PROCESS_BASE: u64 = 1000;

/// Which fault families are injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Node crashes (torn writes, lost unsynced data) and restarts with recovery.
    pub crash: bool,
    /// Disk-full windows (appends fail) and read-error windows (fetches fail).
    pub disk: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            crash: true,
            disk: true,
        }
    }
}

impl Faults {
    pub const NONE: Faults = Faults {
        crash: false,
        disk: false,
    };

    /// Parses a comma-separated list: `crash`, `disk`, `all`, `none`.
    pub fn parse(s: &str) -> Result<Faults, String> {
        let mut f = Faults::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "crash" => f.crash = true,
                "disk" => f.disk = true,
                "all" => f = Faults::default(),
                "none" => {}
                "net" | "clock" => {
                    return Err(format!(
                        "fault '{part}' does not apply to the single-node core stepper: network \
                         and clock faults arrive with the replication and turmoil layers \
                         (supported now: crash, disk)"
                    ))
                }
                other => {
                    return Err(format!(
                        "unknown fault '{other}' (supported: crash, disk, all, none)"
                    ))
                }
            }
        }
        Ok(f)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.crash, self.disk) {
            (true, true) => write!(f, "crash,disk"),
            (true, false) => write!(f, "crash"),
            (false, true) => write!(f, "disk"),
            (false, false) => write!(f, "none"),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub faults: Faults,
    /// Events processed before the workload stops and the world heals and drains.
    pub steps: u64,
    /// Keep the trace text (it is hashed either way).
    pub trace: bool,
}

impl RunConfig {
    pub const DEFAULT_STEPS: u64 = 4000;

    pub fn new(seed: u64) -> Self {
        RunConfig {
            seed,
            faults: Faults::default(),
            steps: Self::DEFAULT_STEPS,
            trace: false,
        }
    }
}

/// The outcome of one seed.
pub struct RunResult {
    pub seed: u64,
    pub trace_hash: u64,
    pub trace: Option<String>,
    /// Events processed.
    pub events: u64,
    /// Virtual time at the end (ns).
    pub sim_ns: u64,
    /// Failures found by the simulator itself: a panic inside the broker, corrupt data served
    /// to a consumer, a consumer position past the log end, a failed restart, ...
    pub failures: Vec<String>,
    /// The history checkers' report (None if the run panicked).
    pub report: Option<Report>,
    pub history: Option<History>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.report.as_ref().is_some_and(Report::is_valid)
    }

    /// A one-line reason for a failure, for `plants --check`.
    pub fn headline(&self) -> String {
        if let Some(f) = self.failures.first() {
            return f.lines().next().unwrap_or("").to_string();
        }
        match &self.report {
            Some(r) if !r.is_valid() => {
                let counts: Vec<String> = r
                    .counts()
                    .iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect();
                format!("history check: {}", counts.join(", "))
            }
            _ => "passed".into(),
        }
    }

    /// Failures and the report, at most `max_lines` lines of violations.
    pub fn describe(&self, max_lines: usize) -> String {
        let mut out = String::new();
        for f in self.failures.iter().take(max_lines) {
            out.push_str(&format!("  sim: {f}\n"));
        }
        if self.failures.len() > max_lines {
            out.push_str(&format!(
                "  sim: … {} more\n",
                self.failures.len() - max_lines
            ));
        }
        if let Some(r) = &self.report {
            let text = match &self.history {
                Some(h) if !r.is_valid() => r.explain(h),
                _ => r.to_string(),
            };
            let lines: Vec<&str> = text.lines().collect();
            for l in lines.iter().take(max_lines * 4) {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
            if lines.len() > max_lines * 4 {
                out.push_str(&format!("  … {} more lines\n", lines.len() - max_lines * 4));
            }
        }
        out
    }
}

/// Runs one seed to completion. A panic inside the broker (or the simulator) is caught and
/// reported as a failure of this seed.
pub fn run(config: &RunConfig) -> RunResult {
    let mut world = World::new(config);
    let outcome = catch_unwind(AssertUnwindSafe(|| world.run_to_end()));
    let (report, history) = match outcome {
        Ok((report, history)) => (Some(report), Some(history)),
        Err(payload) => {
            let msg = crate::panic_message(&payload);
            world.trace.line(world.now, format_args!("PANIC {msg}"));
            world.failures.push(format!("panic: {msg}"));
            (None, Some(world.history.clone().build()))
        }
    };
    RunResult {
        seed: config.seed,
        trace_hash: world.trace.hash(),
        trace: world.trace.take_text(),
        events: world.events,
        sim_ns: world.now,
        failures: std::mem::take(&mut world.failures),
        report,
        history,
    }
}

/// Per-seed workload and fault parameters (swarm testing: every seed draws its own).
#[derive(Debug)]
struct Params {
    partitions: usize,
    producers: usize,
    consumers: usize,
    max_in_flight: usize,
    batch_max: usize,
    send_gap: (u64, u64),
    net_latency: (u64, u64),
    flush_delay: (u64, u64),
    disk_latency: (u64, u64),
    poll_gap: (u64, u64),
    poll_after_append: f64,
    segment_bytes: u64,
    crash_gap: (u64, u64),
    restart_delay: (u64, u64),
    drop_unsynced: f64,
    disk_full_gap: (u64, u64),
    disk_full_len: (u64, u64),
    read_fail_gap: (u64, u64),
    read_fail_len: (u64, u64),
}

impl Params {
    fn draw(rng: &mut ChaCha8Rng) -> Params {
        let disk = rng.gen_range(100..3000) * US;
        let crash = rng.gen_range(5..40) * MS;
        let gap = rng.gen_range(50..600) * US;
        Params {
            partitions: rng.gen_range(1..=3),
            producers: rng.gen_range(1..=4),
            consumers: rng.gen_range(1..=4),
            max_in_flight: rng.gen_range(1..=5),
            batch_max: rng.gen_range(1..=12),
            send_gap: (gap / 4, gap * 2),
            net_latency: (10 * US, rng.gen_range(20..500) * US),
            flush_delay: (0, rng.gen_range(1..300) * US),
            disk_latency: (disk / 4, disk * 2),
            poll_gap: (100 * US, rng.gen_range(200..3000) * US),
            poll_after_append: rng.gen_range(0.0..0.5),
            segment_bytes: [512, 1024, 4096, 16384, 1 << 20][rng.gen_range(0..5)],
            crash_gap: (crash / 2, crash * 2),
            restart_delay: (100 * US, rng.gen_range(1..10) * MS),
            drop_unsynced: rng.gen_range(0.0..0.5),
            disk_full_gap: (5 * MS, rng.gen_range(10..60) * MS),
            disk_full_len: (100 * US, rng.gen_range(300..3000) * US),
            read_fail_gap: (5 * MS, rng.gen_range(10..60) * MS),
            read_fail_len: (200 * US, rng.gen_range(1..8) * MS),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    ProducerTick(usize),
    /// A produce request reaches the broker.
    Arrive(usize),
    ConsumerTick(usize),
    /// A one-shot poll (a consumer woken right after an append).
    ConsumerPoll(usize),
    FlushStart {
        partition: usize,
        epoch: u64,
    },
    FlushDone {
        partition: usize,
        epoch: u64,
    },
    Crash,
    Restart,
    DiskFull(bool),
    ReadFail {
        partition: usize,
        on: bool,
    },
}

struct Part {
    core: PartitionCore<MemStorage>,
    /// The ticket of the flush in progress.
    flushing: Option<FlushTicket<MemFile>>,
    /// A FlushStart or FlushDone is queued.
    flush_scheduled: bool,
    /// Appended, not yet acknowledged requests: (end offset, request), in offset order.
    pending: VecDeque<(i64, usize)>,
}

struct Producer {
    process: u64,
    in_flight: usize,
}

struct Consumer {
    process: u64,
    partition: usize,
    position: i64,
}

struct Request {
    producer: usize,
    partition: usize,
    values: Vec<u64>,
    ops: Vec<OpId>,
    /// The node incarnation it was sent to.
    epoch: u64,
    appended: bool,
    /// Where it landed once appended.
    base: i64,
    done: bool,
}

struct World {
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    trace: Trace,
    history: HistoryBuilder,
    failures: Vec<String>,
    p: Params,
    faults: Faults,
    steps: u64,
    events: u64,
    running: bool,

    storage: MemStorage,
    log_config: LogConfig,
    up: bool,
    epoch: u64,
    parts: Vec<Option<Part>>,
    disk_full: bool,
    read_fail: Vec<bool>,

    producers: Vec<Producer>,
    consumers: Vec<Consumer>,
    requests: Vec<Request>,
    next_value: u64,
}

macro_rules! tr {
    ($w:expr, $($arg:tt)*) => {
        $w.trace.line($w.now, format_args!($($arg)*))
    };
}

fn dir(partition: usize) -> PathBuf {
    PathBuf::from(format!("/data/{TOPIC}-{partition}"))
}

impl World {
    fn new(config: &RunConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let p = Params::draw(&mut rng);
        let log_config = LogConfig {
            segment_bytes: p.segment_bytes,
            index_interval_bytes: 256,
            ..LogConfig::default()
        };
        let consumers = p.consumers.max(p.partitions);
        let mut w = World {
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            trace: Trace::new(config.trace),
            history: HistoryBuilder::new(),
            failures: Vec::new(),
            faults: config.faults,
            steps: config.steps,
            events: 0,
            running: true,
            storage: MemStorage::new(),
            log_config,
            up: false,
            epoch: 0,
            parts: (0..p.partitions).map(|_| None).collect(),
            disk_full: false,
            read_fail: vec![false; p.partitions],
            producers: (0..p.producers)
                .map(|i| Producer {
                    process: i as u64,
                    in_flight: 0,
                })
                .collect(),
            consumers: (0..consumers)
                .map(|i| Consumer {
                    process: CONSUMER_PROCESS_BASE + i as u64,
                    partition: i % p.partitions,
                    position: 0,
                })
                .collect(),
            requests: Vec::new(),
            next_value: 1,
            p,
        };
        tr!(
            w,
            "seed {} faults {} steps {} params {:?}",
            config.seed,
            w.faults,
            w.steps,
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

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), ev);
    }

    fn now_ms(&self) -> i64 {
        EPOCH_MS + (self.now / MS) as i64
    }

    fn fail(&mut self, msg: String) {
        tr!(self, "FAILURE {msg}");
        if !self.failures.contains(&msg) {
            self.failures.push(msg);
        }
    }

    fn run_to_end(&mut self) -> (Report, History) {
        self.start();
        let drain_limit = self.steps.saturating_mul(4) + 100_000;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            self.events += 1;
            if self.running && self.events >= self.steps {
                self.heal();
            }
            if self.events > drain_limit {
                self.fail(format!(
                    "the world did not quiesce after {} events",
                    self.events
                ));
                break;
            }
            self.handle(ev);
        }
        if self.running {
            self.heal();
        }
        self.finish()
    }

    fn start(&mut self) {
        for i in 0..self.p.partitions {
            self.storage
                .create_dir_all(&dir(i))
                .expect("create partition dir");
        }
        if !self.restart() {
            self.fail("initial open of the partition logs failed".into());
        }
        for i in 0..self.producers.len() {
            let d = self.rand_in(self.p.send_gap);
            self.schedule(d, Ev::ProducerTick(i));
        }
        for c in 0..self.consumers.len() {
            let d = self.rand_in(self.p.poll_gap);
            self.schedule(d, Ev::ConsumerTick(c));
        }
        if self.faults.disk {
            let d = self.rand_in(self.p.disk_full_gap);
            self.schedule(d, Ev::DiskFull(true));
            let d = self.rand_in(self.p.read_fail_gap);
            let partition = self.rng.gen_range(0..self.p.partitions);
            self.schedule(
                d,
                Ev::ReadFail {
                    partition,
                    on: true,
                },
            );
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::ProducerTick(i) => self.producer_tick(i),
            Ev::Arrive(r) => self.arrive(r),
            Ev::ConsumerTick(c) => {
                if self.running {
                    self.poll(c);
                    let d = self.rand_in(self.p.poll_gap);
                    self.schedule(d, Ev::ConsumerTick(c));
                }
            }
            Ev::ConsumerPoll(c) => {
                if self.running {
                    self.poll(c);
                }
            }
            Ev::FlushStart { partition, epoch } => self.flush_start(partition, epoch),
            Ev::FlushDone { partition, epoch } => self.flush_done(partition, epoch),
            Ev::Crash => self.crash(),
            Ev::Restart => {
                if !self.up && !self.restart() {
                    if self.running {
                        let d = self.rand_in(self.p.restart_delay);
                        self.schedule(d, Ev::Restart);
                    } else {
                        self.fail("restart failed with every fault healed".into());
                    }
                }
            }
            Ev::DiskFull(on) => {
                if self.running {
                    self.set_disk_full(on);
                    let d = if on {
                        self.rand_in(self.p.disk_full_len)
                    } else {
                        self.rand_in(self.p.disk_full_gap)
                    };
                    self.schedule(d, Ev::DiskFull(!on));
                }
            }
            Ev::ReadFail { partition, on } => {
                if self.running {
                    self.set_read_fail(partition, on);
                    if on {
                        let d = self.rand_in(self.p.read_fail_len);
                        self.schedule(
                            d,
                            Ev::ReadFail {
                                partition,
                                on: false,
                            },
                        );
                    } else {
                        let d = self.rand_in(self.p.read_fail_gap);
                        let partition = self.rng.gen_range(0..self.p.partitions);
                        self.schedule(
                            d,
                            Ev::ReadFail {
                                partition,
                                on: true,
                            },
                        );
                    }
                }
            }
        }
    }

    // ---- faults -------------------------------------------------------------------------

    fn set_disk_full(&mut self, on: bool) {
        tr!(self, "disk-full {on}");
        self.disk_full = on;
        self.storage.set_disk_full(on);
    }

    fn set_read_fail(&mut self, partition: usize, on: bool) {
        tr!(self, "read-errors p{partition} {on}");
        self.read_fail[partition] = on;
        let d = dir(partition);
        if let Ok(names) = self.storage.list(&d) {
            for n in names {
                let _ = self.storage.fail_reads(&d.join(n), on);
            }
        }
    }

    fn heal(&mut self) {
        tr!(self, "heal: workload stops, faults end");
        self.running = false;
        if self.disk_full {
            self.set_disk_full(false);
        }
        for p in 0..self.p.partitions {
            if self.read_fail[p] {
                self.set_read_fail(p, false);
            }
        }
    }

    fn sample(&mut self, partition: usize, why: &str) {
        let Some(part) = &self.parts[partition] else {
            return;
        };
        let log = part.core.log();
        let s = LogSample {
            node: NODE,
            topic: TOPIC.into(),
            partition: partition as i32,
            log_start_offset: log.log_start_offset(),
            high_watermark: part.core.high_watermark(),
            log_end_offset: log.log_end_offset(),
        };
        tr!(
            self,
            "sample p{partition} {why} start={} hw={} durable={} end={} segments={}",
            s.log_start_offset,
            s.high_watermark,
            log.durable_offset(),
            s.log_end_offset,
            log.segment_count()
        );
        self.history.log_sample(self.now, s);
    }

    fn crash(&mut self) {
        if !self.running || !self.up {
            return;
        }
        for p in 0..self.p.partitions {
            self.sample(p, "before-crash");
        }
        let torn = if self.rng.gen_bool(self.p.drop_unsynced) {
            TornWrite::DropUnsynced
        } else {
            let sectors = self.rng.gen_range(0..=3);
            let n = self.rng.gen_range(0..=512usize);
            let garbage: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
            TornWrite::KeepPrefix { sectors, garbage }
        };
        match &torn {
            TornWrite::DropUnsynced => tr!(self, "CRASH drop-unsynced"),
            TornWrite::KeepPrefix { sectors, garbage } => tr!(
                self,
                "CRASH keep-prefix sectors={sectors} garbage={}B",
                garbage.len()
            ),
        }
        self.storage.crash(torn);
        self.up = false;
        self.epoch += 1;
        for p in &mut self.parts {
            *p = None;
        }
        for r in 0..self.requests.len() {
            if !self.requests[r].done {
                self.complete_request(
                    r,
                    SendResult::Indeterminate {
                        error: "connection lost: node crashed".into(),
                    },
                );
            }
        }
        let d = self.rand_in(self.p.restart_delay);
        self.schedule(d, Ev::Restart);
    }

    /// Opens every partition log (recovery) and wraps it in a fresh core. False on failure.
    fn restart(&mut self) -> bool {
        let mut parts = Vec::with_capacity(self.p.partitions);
        for p in 0..self.p.partitions {
            match Log::open(
                self.storage.clone(),
                dir(p),
                self.log_config.clone(),
                self.now_ms(),
            ) {
                Ok((log, report)) => {
                    tr!(
                        self,
                        "recovered p{p}: clean={} end={} truncated={}B removed={} notes={:?}",
                        report.clean_shutdown,
                        report.log_end_offset,
                        report.truncated_bytes,
                        report.segments_removed,
                        report.notes
                    );
                    parts.push(Part {
                        core: PartitionCore::new(log, AckPolicy::AfterFsync),
                        flushing: None,
                        flush_scheduled: false,
                        pending: VecDeque::new(),
                    });
                }
                Err(e) => {
                    tr!(self, "restart: opening p{p} failed: {e}");
                    return false;
                }
            }
        }
        tr!(self, "node up (epoch {})", self.epoch);
        self.up = true;
        for (i, part) in parts.into_iter().enumerate() {
            self.parts[i] = Some(part);
            self.sample(i, "after-restart");
        }
        if self.running && self.faults.crash {
            let d = self.rand_in(self.p.crash_gap);
            self.schedule(d, Ev::Crash);
        }
        true
    }

    // ---- producers ----------------------------------------------------------------------

    fn producer_tick(&mut self, i: usize) {
        if !self.running {
            return;
        }
        if self.up && self.producers[i].in_flight < self.p.max_in_flight {
            let n = self.rng.gen_range(1..=self.p.batch_max);
            let partition = self.rng.gen_range(0..self.p.partitions);
            let process = self.producers[i].process;
            let values: Vec<u64> = (0..n as u64).map(|k| self.next_value + k).collect();
            self.next_value += n as u64;
            let ops = values
                .iter()
                .map(|&v| self.history.send(process, self.now, TOPIC, None, v, false))
                .collect();
            let r = self.requests.len();
            tr!(
                self,
                "send r{r} producer {i} -> p{partition} values {}..={}",
                values[0],
                values[n - 1]
            );
            self.requests.push(Request {
                producer: i,
                partition,
                values,
                ops,
                epoch: self.epoch,
                appended: false,
                base: -1,
                done: false,
            });
            self.producers[i].in_flight += 1;
            let d = self.rand_in(self.p.net_latency);
            self.schedule(d, Ev::Arrive(r));
        }
        let d = self.rand_in(self.p.send_gap);
        self.schedule(d, Ev::ProducerTick(i));
    }

    /// Completes every op of request `r` with `result` (offsets filled in for `Ok`).
    fn complete_request(&mut self, r: usize, result: SendResult) {
        let req = &mut self.requests[r];
        debug_assert!(!req.done);
        req.done = true;
        let ops = std::mem::take(&mut req.ops);
        let producer = req.producer;
        match &result {
            SendResult::Ok { offset, .. } => tr!(self, "ack r{r} at {offset}"),
            SendResult::Failed { error } => tr!(self, "failed r{r}: {error}"),
            SendResult::Indeterminate { error } => tr!(self, "indeterminate r{r}: {error}"),
        }
        for (k, op) in ops.into_iter().enumerate() {
            let res = match &result {
                SendResult::Ok { partition, offset } => SendResult::Ok {
                    partition: *partition,
                    offset: offset + k as i64,
                },
                other => other.clone(),
            };
            self.history
                .complete_send(op, self.now, res)
                .expect("send completes once");
        }
        self.producers[producer].in_flight -= 1;
    }

    fn arrive(&mut self, r: usize) {
        let req = &self.requests[r];
        if req.done {
            return; // already indeterminate: the node crashed while it was on the wire
        }
        assert!(
            self.up && req.epoch == self.epoch,
            "a live request reached a live node"
        );
        let partition = req.partition;
        let values: Vec<[u8; 8]> = req.values.iter().map(|v| v.to_be_bytes()).collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
        let batch = simple_batch(self.now_ms(), &refs);
        let now_ms = self.now_ms();
        let part = self.parts[partition].as_mut().expect("node is up");
        match part.core.append(&batch, 0, now_ms) {
            Ok(info) => {
                part.pending.push_back((info.last_offset + 1, r));
                let (base, last) = (info.base_offset, info.last_offset);
                tr!(self, "append r{r} p{partition} offsets {base}..={last}");
                if info.duplicate || last - base + 1 != values.len() as i64 {
                    self.fail(format!("append of r{r} returned unexpected {info:?}"));
                }
                self.requests[r].appended = true;
                self.requests[r].base = base;
                self.check_acks(partition);
                self.schedule_flush(partition);
                for c in 0..self.consumers.len() {
                    if self.consumers[c].partition == partition
                        && self.rng.gen_bool(self.p.poll_after_append)
                    {
                        let d = self.rng.gen_range(0..50) * US;
                        self.schedule(d, Ev::ConsumerPoll(c));
                    }
                }
            }
            Err(e) => {
                let definite =
                    matches!(&e, AppendError::Storage(io) if io.raw_os_error() == Some(28));
                if !definite {
                    self.fail(format!(
                        "append of r{r} to p{partition} failed unexpectedly: {e}"
                    ));
                }
                self.complete_request(
                    r,
                    SendResult::Failed {
                        error: e.to_string(),
                    },
                );
            }
        }
    }

    /// Acknowledges every appended request the partition's ack offset now covers.
    fn check_acks(&mut self, partition: usize) {
        loop {
            let Some(part) = self.parts[partition].as_mut() else {
                return;
            };
            let ack = part.core.ack_offset();
            match part.pending.front() {
                Some(&(end, r)) if end <= ack => {
                    part.pending.pop_front();
                    let base = self.requests[r].base;
                    self.complete_request(
                        r,
                        SendResult::Ok {
                            partition: partition as i32,
                            offset: base,
                        },
                    );
                }
                _ => return,
            }
        }
    }

    // ---- the flusher --------------------------------------------------------------------

    fn schedule_flush(&mut self, partition: usize) {
        let epoch = self.epoch;
        let part = self.parts[partition].as_mut().expect("node is up");
        if part.flush_scheduled {
            return;
        }
        part.flush_scheduled = true;
        let d = self.rand_in(self.p.flush_delay);
        self.schedule(d, Ev::FlushStart { partition, epoch });
    }

    fn flush_start(&mut self, partition: usize, epoch: u64) {
        if epoch != self.epoch {
            return; // the node crashed since
        }
        let part = self.parts[partition].as_mut().expect("node is up");
        match part.core.prepare_flush() {
            None => {
                part.flush_scheduled = false;
                tr!(self, "flush-start p{partition}: nothing to sync");
            }
            Some(ticket) => {
                let (upto, files) = (ticket.upto(), ticket.files().len());
                part.flushing = Some(ticket);
                tr!(self, "flush-start p{partition} upto {upto} files {files}");
                let d = self.rand_in(self.p.disk_latency);
                self.schedule(d, Ev::FlushDone { partition, epoch });
            }
        }
    }

    fn flush_done(&mut self, partition: usize, epoch: u64) {
        if epoch != self.epoch {
            return; // its ticket died with the crash
        }
        let part = self.parts[partition].as_mut().expect("node is up");
        let ticket = part.flushing.take().expect("a flush is in progress");
        if let Err(e) = ticket.sync() {
            part.flush_scheduled = false;
            self.fail(format!("fsync of p{partition} failed: {e}"));
            return;
        }
        let ack = part.core.complete_flush(&ticket);
        let more = part.core.log().durable_offset() < part.core.log().log_end_offset();
        part.flush_scheduled = false;
        tr!(
            self,
            "flush-done p{partition} upto {} ack {ack}",
            ticket.upto()
        );
        self.sample(partition, "flush");
        self.check_acks(partition);
        if more {
            self.schedule_flush(partition);
        }
    }

    // ---- consumers ----------------------------------------------------------------------

    fn poll(&mut self, c: usize) {
        let (process, partition, position) = {
            let k = &self.consumers[c];
            (k.process, k.partition, k.position)
        };
        if !self.up {
            tr!(self, "poll c{c} p{partition}: node down");
            return;
        }
        let max_bytes = self.rng.gen_range(64..4096);
        let part = self.parts[partition].as_ref().expect("node is up");
        let fetched = part
            .core
            .fetch(position, max_bytes)
            .and_then(|r| Ok(r.to_bytes()?));
        let (log_end, hw) = (part.core.log().log_end_offset(), part.core.high_watermark());
        let result = match fetched {
            Ok(bytes) => match decode_fetch(&bytes, position) {
                Ok(recs) if recs.is_empty() => {
                    tr!(self, "poll c{c} p{partition}@{position}: empty (hw {hw})");
                    return;
                }
                Ok(recs) => {
                    let last = recs.last().expect("non-empty").0;
                    tr!(
                        self,
                        "poll c{c} p{partition}@{position}: {} records ..={last} (hw {hw} end {log_end})",
                        recs.len()
                    );
                    self.consumers[c].position = last + 1;
                    PollResult::Ok(
                        recs.into_iter()
                            .map(|(o, v)| Record::new(partition as i32, o, v))
                            .collect(),
                    )
                }
                Err(e) => {
                    self.fail(format!(
                        "consumer {process} polling p{partition} at {position} received bad data: {e}"
                    ));
                    PollResult::Failed(e)
                }
            },
            Err(ReadError::Storage(e)) => {
                if !self.read_fail[partition] {
                    self.fail(format!(
                        "consumer {process} polling p{partition} at {position}: unexpected storage error {e}"
                    ));
                }
                tr!(self, "poll c{c} p{partition}@{position}: read error {e}");
                PollResult::Failed(e.to_string())
            }
            Err(e @ ReadError::OffsetOutOfRange { .. }) => {
                // A consumer only advances over records below the high watermark, which are
                // durable: after any crash the log still reaches its position.
                self.fail(format!(
                    "consumer {process} at position {position} of p{partition}: {e} \
                     (records it read are gone from the log)"
                ));
                let op = self.history.poll(process, self.now, TOPIC);
                self.history
                    .complete_poll(op, self.now, PollResult::Failed(e.to_string()))
                    .expect("poll completes once");
                self.seek(c, log_end);
                return;
            }
        };
        let op = self.history.poll(process, self.now, TOPIC);
        self.history
            .complete_poll(op, self.now, result)
            .expect("poll completes once");
    }

    fn seek(&mut self, c: usize, offset: i64) {
        let (process, partition) = (self.consumers[c].process, self.consumers[c].partition);
        tr!(self, "seek c{c} p{partition} to {offset}");
        let op = self.history.invoke(
            process,
            self.now,
            Call::Seek {
                topic: TOPIC.into(),
                partition: partition as i32,
                offset,
            },
        );
        self.history
            .complete(op, self.now, Outcome::Done)
            .expect("seek completes once");
        self.consumers[c].position = offset;
    }

    // ---- the end ------------------------------------------------------------------------

    /// Reads partition `p` from its log start to its high watermark.
    fn read_all(&mut self, p: usize) -> Result<Vec<(i64, u64)>, String> {
        let part = self.parts[p].as_ref().expect("node is up");
        let (start, hw) = (
            part.core.log().log_start_offset(),
            part.core.high_watermark(),
        );
        let mut out: Vec<(i64, u64)> = Vec::new();
        let mut pos = start;
        while pos < hw {
            let bytes = part
                .core
                .fetch(pos, 1 << 20)
                .and_then(|r| Ok(r.to_bytes()?))
                .map_err(|e| format!("final read of p{p} at {pos}: {e}"))?;
            let recs = decode_fetch(&bytes, pos).map_err(|e| format!("final read of p{p}: {e}"))?;
            let Some(&(last, _)) = recs.last() else {
                return Err(format!(
                    "final read of p{p}: empty fetch at {pos} below hw {hw}"
                ));
            };
            out.extend(recs);
            pos = last + 1;
        }
        Ok(out)
    }

    fn finish(&mut self) -> (Report, History) {
        let mut complete = self.up;
        if self.up {
            // Everything appended must be durable and acknowledged by now.
            for p in 0..self.p.partitions {
                let part = self.parts[p].as_mut().expect("node is up");
                let log = part.core.log();
                if log.durable_offset() != log.log_end_offset() || !part.pending.is_empty() {
                    let msg = format!(
                        "p{p} did not quiesce: durable {} end {} hw {} pending acks {}",
                        log.durable_offset(),
                        log.log_end_offset(),
                        part.core.high_watermark(),
                        part.pending.len()
                    );
                    self.fail(msg);
                }
            }
        } else {
            self.fail("the node is down at the end of the run".into());
        }
        for r in 0..self.requests.len() {
            if !self.requests[r].done {
                if self.requests[r].appended {
                    self.fail(format!("request r{r} was appended but never acknowledged"));
                }
                self.complete_request(
                    r,
                    SendResult::Indeterminate {
                        error: "run ended".into(),
                    },
                );
            }
        }
        if self.up {
            let mut reads = Vec::with_capacity(self.p.partitions);
            for p in 0..self.p.partitions {
                let read = self.read_all(p);
                if let Err(e) = &read {
                    self.fail(e.clone());
                    complete = false;
                }
                reads.push(read);
            }
            for c in 0..self.consumers.len() {
                let (process, partition) = (self.consumers[c].process, self.consumers[c].partition);
                self.seek(c, 0);
                let op = self.history.poll(process, self.now, TOPIC);
                let result = match &reads[partition] {
                    Ok(recs) => PollResult::Ok(
                        recs.iter()
                            .map(|&(o, v)| Record::new(partition as i32, o, v))
                            .collect(),
                    ),
                    Err(e) => PollResult::Failed(e.clone()),
                };
                self.history
                    .complete_poll(op, self.now, result)
                    .expect("poll completes once");
            }
            for (p, read) in reads.into_iter().enumerate() {
                let part = self.parts[p].as_ref().expect("node is up");
                let (start, hw) = (
                    part.core.log().log_start_offset(),
                    part.core.high_watermark(),
                );
                let records = read.unwrap_or_default();
                tr!(
                    self,
                    "final p{p}: start={start} hw={hw} records={}",
                    records.len()
                );
                self.history.replica_log(
                    self.now,
                    ReplicaLog {
                        node: NODE,
                        topic: TOPIC.into(),
                        partition: p as i32,
                        log_start_offset: start,
                        high_watermark: hw,
                        records,
                    },
                );
            }
        }
        let history = self.history.clone().build();
        let options = CheckOptions {
            final_read_complete: complete,
            non_idempotent_duplicates_are_violations: true,
            unknown_values_are_violations: true,
            realtime_sends: true,
        };
        let report = check_all(&history, &options);
        tr!(
            self,
            "end: {} events, {} ops, {}",
            self.events,
            history.len(),
            if report.is_valid() {
                "valid"
            } else {
                "INVALID"
            }
        );
        (report, history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!(Faults::parse("crash,disk").unwrap(), Faults::default());
        assert_eq!(Faults::parse("none").unwrap(), Faults::NONE);
        assert_eq!(Faults::parse("disk").unwrap().to_string(), "disk");
        let e = Faults::parse("crash,net").unwrap_err();
        assert!(e.contains("replication and turmoil"), "{e}");
        assert!(Faults::parse("clock").is_err());
        assert!(Faults::parse("bogus").is_err());
    }

    #[test]
    fn same_seed_same_trace() {
        let mut c = RunConfig::new(11);
        c.trace = true;
        let a = run(&c);
        let b = run(&c);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.trace, b.trace);
        c.trace = false;
        assert_eq!(
            run(&c).trace_hash,
            a.trace_hash,
            "hash does not depend on keeping the text"
        );
        c.seed = 12;
        assert_ne!(run(&c).trace_hash, a.trace_hash);
    }

    #[test]
    fn short_sweep_is_clean() {
        for seed in 0..20 {
            let r = run(&RunConfig::new(seed));
            assert!(r.passed(), "seed {seed}:\n{}", r.describe(10));
            let stats = &r.report.as_ref().unwrap().stats;
            assert!(
                stats.sends_ok > 0 && stats.polls_ok > 0,
                "seed {seed}: {stats:?}"
            );
        }
    }
}
