//! The whole-system layer: the real broker server (tokio shell, TCP framing, dispatch, group
//! manager, group-commit flusher) runs under turmoil, on simulated TCP and the in-memory
//! `MemStorage`, while the Jepsen workload (`workload.rs`) talks the Kafka protocol to it from
//! another simulated host. A seeded fault schedule crashes and restarts the broker (unsynced
//! writes lost or torn), partitions and clogs the link, fills the disk or fails its syncs (each
//! ending in a restart) and skews the broker's clock. At the end every fault is healed, the workload reads every partition to its end, and
//! the history goes through the `invariants` checkers.
//!
//! Determinism: turmoil's network and each host's paused tokio runtime are driven from one
//! thread; the broker runs blocking work inline on a current-thread runtime (see
//! `broker::blocking`) and its `select!`s are biased; every choice here comes from ChaCha seeded
//! by the run's seed. The same seed yields the same trace, byte for byte.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use broker::apis::Clock;
use broker::config::{BrokerConfig, FsyncPolicy};
use broker::server::{Acceptor, ShellEnv};
use broker::storage::{MemStorage, TornWrite};
use invariants::{check_all, CheckOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::Trace;
use crate::workload::{self, Connector, WorkloadConfig, WorkloadOutcome};

const BROKER: &str = "broker";
const CLIENTS: &str = "clients";
const PORT: u16 = 9092;
/// Largest broker clock step, either way. Group timers run on the wall clock (as Kafka's do), so
/// a larger backward step stalls rebalances for that long; 10 s keeps runs short while still
/// moving record timestamps, retention and session deadlines around.
const CLOCK_SKEW_MS_MAX: i64 = 10_000;
/// Simulated duration of every fsync and other blocking storage operation.
pub(crate) const FSYNC_MS: u64 = 2;
/// The simulated wall clock starts here (2024-01-01), so runs do not depend on today's date.
pub(crate) const EPOCH_SECS: u64 = 1_704_067_200;

/// Which faults the schedule may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemFaults {
    /// Link partitions (both directions or one), clogging (messages held), latency spikes.
    pub net: bool,
    /// Broker process crash (unsynced writes lost or torn at 512-byte sectors) and restart.
    pub crash: bool,
    /// Disk full windows (the broker takes the partition offline; an operator restarts it).
    pub disk: bool,
    /// Broker wall-clock jumps forwards and backwards.
    pub clock: bool,
}

impl SystemFaults {
    pub const ALL: SystemFaults = SystemFaults {
        net: true,
        crash: true,
        disk: true,
        clock: true,
    };
    pub const NONE: SystemFaults = SystemFaults {
        net: false,
        crash: false,
        disk: false,
        clock: false,
    };
}

pub(crate) fn note(trace: &mut Trace, step_ms: u64, args: std::fmt::Arguments<'_>) {
    trace.line(step_ms * 1_000_000, args);
}

/// One whole-system run.
#[derive(Clone, Debug)]
pub struct SystemConfig {
    pub seed: u64,
    /// Simulated time the producers run for.
    pub run_ms: u64,
    pub partitions: i32,
    pub producers: u32,
    /// Consumer-group members consuming and committing.
    pub group_members: u32,
    pub faults: SystemFaults,
    /// Keep the trace lines (the hash is always computed).
    pub trace: bool,
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            seed: 0,
            run_ms: 20_000,
            partitions: 3,
            producers: 3,
            group_members: 3,
            faults: SystemFaults::ALL,
            trace: false,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct SystemResult {
    pub violations: Vec<String>,
    /// The checker's one-line summary (counts of sends, reads, unseen, ...).
    pub summary: String,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub sim_ms: u64,
    pub steps: u64,
}

/// The broker's wall clock under simulation: turmoil's logical time plus a skew the fault
/// schedule moves.
pub(crate) struct SimClock {
    pub(crate) skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        sim_wall_ms() + self.skew_ms.load(Ordering::Relaxed)
    }
}

/// turmoil's logical wall clock, in ms since the Unix epoch (the clients' clock: never skewed).
fn sim_wall_ms() -> i64 {
    turmoil::since_epoch()
        .unwrap_or(Duration::from_secs(EPOCH_SECS))
        .as_millis() as i64
}

/// turmoil's listener as the broker shell's [`Acceptor`].
pub(crate) struct SimListener(pub(crate) turmoil::net::TcpListener);

impl Acceptor for SimListener {
    type Read = turmoil::net::tcp::OwnedReadHalf;
    type Write = turmoil::net::tcp::OwnedWriteHalf;
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
    async fn accept(&mut self) -> std::io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let (r, w) = stream.into_split();
        Ok((r, w, peer))
    }
}

/// turmoil's TCP as the workload's [`Connector`].
#[derive(Clone)]
pub(crate) struct SimConnector;

impl Connector for SimConnector {
    type Read = turmoil::net::tcp::OwnedReadHalf;
    type Write = turmoil::net::tcp::OwnedWriteHalf;
    async fn connect(&self, addr: String) -> std::io::Result<(Self::Read, Self::Write)> {
        let stream = turmoil::net::TcpStream::connect(addr).await?;
        Ok(stream.into_split())
    }
    fn now_ms(&self) -> i64 {
        sim_wall_ms()
    }
}

fn broker_config() -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: format!("0.0.0.0:{PORT}"),
        advertise: Some(format!("{BROKER}:{PORT}")),
        data_dir: PathBuf::from("/data"),
        fsync: FsyncPolicy::Always,
        default_partitions: 1,
        ..BrokerConfig::default()
    };
    // Small segments so runs roll segments and exercise recovery across several files.
    config.log.segment_bytes = 64 * 1024;
    // A new group waits this long for more members before its first rebalance (Kafka's
    // default is 3 s, which with crashes every few seconds rarely lets a group form).
    config.group.initial_rebalance_delay_ms = 300;
    config
}

/// The fault schedule's state: what is currently broken, and when it heals.
struct Faults {
    rng: ChaCha8Rng,
    enabled: SystemFaults,
    storage: MemStorage,
    skew_ms: Arc<AtomicI64>,
    /// The broker is down until this step (then bounced).
    down_until: Option<u64>,
    partitioned_until: Option<u64>,
    held_until: Option<u64>,
    disk_full_until: Option<u64>,
    /// The disk fault is failing syncs (every file's), not a full disk.
    syncs_failing: bool,
}

impl Faults {
    /// Ends a full disk or failing syncs.
    fn mend_disk(&mut self) {
        self.storage.set_disk_full(false);
        if std::mem::take(&mut self.syncs_failing) {
            self.storage.fail_syncs("/", false);
        }
    }

    /// Maybe injects or heals a fault at `step` (one step = one simulated millisecond).
    fn step(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        if self.down_until.is_some_and(|t| step >= t) {
            self.down_until = None;
            sim.bounce(BROKER);
            note(trace, step, format_args!("broker restarted"));
        }
        if self.partitioned_until.is_some_and(|t| step >= t) {
            self.partitioned_until = None;
            sim.repair(BROKER, CLIENTS);
            note(trace, step, format_args!("link repaired"));
        }
        if self.held_until.is_some_and(|t| step >= t) {
            self.held_until = None;
            sim.release(BROKER, CLIENTS);
            note(trace, step, format_args!("link released"));
        }
        if self.disk_full_until.is_some_and(|t| step >= t) {
            self.disk_full_until = None;
            self.mend_disk();
            note(trace, step, format_args!("disk works again"));
            // The broker took its partitions offline when fsync failed; an operator restarts it.
            if self.down_until.is_none() {
                self.crash(sim, step, trace);
            }
        }
        // About one fault decision per 500 ms of simulated time, a crash or a full disk (which
        // ends in a restart) about every 5 s: faults overlap often, yet the broker stays up
        // long enough between them for groups to rebalance and commit.
        if self.rng.gen_range(0..500u32) != 0 {
            return;
        }
        let kind = match self.rng.gen_range(0..10u32) {
            0 => 0,     // crash
            1 | 2 => 1, // partition
            3..=5 => 2, // clog
            6 => 3,     // disk full
            _ => 4,     // clock step
        };
        match kind {
            0 if self.enabled.crash && self.down_until.is_none() => self.crash(sim, step, trace),
            1 if self.enabled.net && self.partitioned_until.is_none() => {
                let ms = self.rng.gen_range(100..3_000);
                if self.rng.gen_bool(0.5) {
                    sim.partition(BROKER, CLIENTS);
                    note(
                        trace,
                        step,
                        format_args!("partition broker<->clients for {ms} ms"),
                    );
                } else {
                    sim.partition_oneway(BROKER, CLIENTS);
                    note(
                        trace,
                        step,
                        format_args!("partition broker->clients for {ms} ms"),
                    );
                }
                self.partitioned_until = Some(step + ms);
            }
            2 if self.enabled.net && self.held_until.is_none() => {
                let ms = self.rng.gen_range(50..1_500);
                sim.hold(BROKER, CLIENTS);
                note(
                    trace,
                    step,
                    format_args!("clog broker<->clients for {ms} ms"),
                );
                self.held_until = Some(step + ms);
            }
            3 if self.enabled.disk && self.disk_full_until.is_none() => {
                let ms = self.rng.gen_range(100..2_000);
                // Failing syncs only under a running broker (it would not start on them).
                if self.down_until.is_some() || self.rng.gen_bool(0.5) {
                    self.storage.set_disk_full(true);
                    note(trace, step, format_args!("disk full for {ms} ms"));
                } else {
                    // Files created meanwhile (a new segment) sync fine: a failing region.
                    self.storage.fail_syncs("/", true);
                    self.syncs_failing = true;
                    note(
                        trace,
                        step,
                        format_args!("every file's syncs fail for {ms} ms"),
                    );
                }
                self.disk_full_until = Some(step + ms);
            }
            4 if self.enabled.clock => {
                let skew = self.rng.gen_range(-CLOCK_SKEW_MS_MAX..=CLOCK_SKEW_MS_MAX);
                self.skew_ms.store(skew, Ordering::Relaxed);
                note(trace, step, format_args!("broker clock skew now {skew} ms"));
            }
            _ => {}
        }
    }

    /// A power loss: the process stops without a FIN or RST on its connections (clients find
    /// out by timing out), and the disk keeps only what was synced, maybe torn.
    ///
    /// The link is cut while the process is torn down: dropping its sockets would otherwise
    /// send FINs in the order tokio drops tasks, which depends on process-global task ids, and
    /// the trace would differ between two runs of one seed in one process.
    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        sim.partition(BROKER, CLIENTS);
        sim.crash(BROKER);
        if self.partitioned_until.is_none() {
            sim.repair(BROKER, CLIENTS);
            if self.held_until.is_some() {
                sim.hold(BROKER, CLIENTS);
            }
        }
        let torn = if self.rng.gen_bool(0.5) {
            TornWrite::DropUnsynced
        } else {
            let garbage = (0..self.rng.gen_range(0..64))
                .map(|_| self.rng.gen())
                .collect();
            TornWrite::KeepPrefix {
                sectors: self.rng.gen_range(0..4),
                garbage,
            }
        };
        note(trace, step, format_args!("broker crashed ({torn:?})"));
        self.storage.crash(torn);
        // A broker does not start on a disk whose syncs fail (it reports that and exits); the
        // operator brings it back on a working one.
        if std::mem::take(&mut self.syncs_failing) {
            self.storage.fail_syncs("/", false);
        }
        self.down_until = Some(step + self.rng.gen_range(50..2_000));
    }

    /// Heals everything (for the final read).
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        if self.disk_full_until.take().is_some() {
            self.mend_disk();
            if self.down_until.is_none() {
                self.crash(sim, step, trace);
            }
        }
        if self.down_until.take().is_some() {
            sim.bounce(BROKER);
        }
        if self.partitioned_until.take().is_some() {
            sim.repair(BROKER, CLIENTS);
        }
        if self.held_until.take().is_some() {
            sim.release(BROKER, CLIENTS);
        }
        note(
            trace,
            step,
            format_args!("healed: broker up, links repaired, disk has space"),
        );
    }
}

/// Runs one seed of the whole system and checks its history.
pub fn run_system_seed(config: &SystemConfig) -> SystemResult {
    let seed = config.seed;
    let _ = crate::take_panic();
    // An fsync (and other blocking storage work) takes 2 ms of simulated time, so a crash can
    // land between a write and its fsync.
    broker::blocking::set_inline_latency(Duration::from_millis(FSYNC_MS));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        // A listener's backlog as tokio's (1024), not turmoil's 64, which panics when full: a
        // node binds its port before it serves (a cluster node registers first), and a kernel
        // queues connections meanwhile.
        .tcp_capacity(1024)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_millis(config.run_ms + 600_000))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(5))
        .build();

    let storage = MemStorage::new();
    let skew_ms = Arc::new(AtomicI64::new(0));
    {
        let storage = storage.clone();
        let skew_ms = Arc::clone(&skew_ms);
        let boots = Rc::new(Cell::new(0u64));
        sim.host(BROKER, move || {
            let storage = storage.clone();
            let skew_ms = Arc::clone(&skew_ms);
            boots.set(boots.get() + 1);
            let boot_seed = seed ^ boots.get().wrapping_mul(0x9E37_79B9_7F4A_7C15);
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                let env = ShellEnv {
                    storage,
                    clock: Arc::new(SimClock { skew_ms }),
                    seed: boot_seed,
                    metrics_listener: None,
                };
                broker::server::run_with(
                    broker_config(),
                    env,
                    SimListener(listener),
                    std::future::pending::<()>(),
                    |_| {},
                )
                .await
                .map_err(|e| e.to_string().into())
            }
        });
    }

    let quiesced = Rc::new(Cell::new(false));
    let heal_requested = Rc::new(Cell::new(false));
    let outcome: Rc<RefCell<Option<WorkloadOutcome>>> = Rc::new(RefCell::new(None));
    {
        let workload_config = WorkloadConfig {
            bootstrap: format!("{BROKER}:{PORT}"),
            topic: "jepsen".into(),
            partitions: config.partitions,
            create_topic: true,
            replication_factor: 1,
            producers: config.producers,
            group_members: config.group_members,
            run_for: Duration::from_millis(config.run_ms),
            send_interval: Duration::from_millis(5),
            request_timeout: Duration::from_millis(2_000),
            final_read_timeout: Duration::from_secs(120),
            seed,
            value_base: 0,
            client_rack: None,
            not_coordinator_may_write: false,
        };
        let quiesced = Rc::clone(&quiesced);
        let heal_requested = Rc::clone(&heal_requested);
        let outcome = Rc::clone(&outcome);
        sim.client(CLIENTS, async move {
            let quiesce = async move {
                heal_requested.set(true);
                while !quiesced.get() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let result = workload::run(SimConnector, workload_config, quiesce).await;
            *outcome.borrow_mut() = Some(result);
            Ok(())
        });
    }

    let mut trace = Trace::new(config.trace);
    let mut faults = Faults {
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_FA17),
        enabled: config.faults,
        storage,
        skew_ms,
        down_until: None,
        partitioned_until: None,
        held_until: None,
        disk_full_until: None,
        syncs_failing: false,
    };
    let mut violations = Vec::new();
    let mut step = 0u64;
    loop {
        if heal_requested.get() && !quiesced.get() {
            faults.heal(&mut sim, step, &mut trace);
            quiesced.set(true);
        } else if !heal_requested.get() && step > 500 {
            faults.step(&mut sim, step, &mut trace);
        }
        match crate::step_turmoil(&mut sim, step) {
            Ok(true) => break,
            Ok(false) => {}
            Err(violation) => {
                violations.push(violation);
                break;
            }
        }
        step += 1;
    }

    if let Some(panic) = crate::take_panic() {
        violations.push(format!("a broker task panicked: {panic}"));
    }
    let mut summary = String::new();
    if let Some(outcome) = outcome.borrow_mut().take() {
        for (time_ns, line) in &outcome.events {
            trace.line(*time_ns, format_args!("{line}"));
        }
        let history_json = outcome.history.to_json_lines();
        let history_hash = crate::trace::fnv1a(0, history_json.as_bytes());
        trace.line(0, format_args!("history {history_hash:016x}"));
        let options = CheckOptions {
            final_read_complete: outcome.final_read_complete,
            ..CheckOptions::default()
        };
        if !outcome.final_read_complete {
            violations.push("the final read did not reach every high watermark".into());
        }
        violations.extend(outcome.producer_ids_reused.iter().cloned());
        let report = check_all(&outcome.history, &options);
        summary = report
            .explain(&outcome.history)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        for v in &report.violations {
            violations.push(v.explain(&outcome.history));
        }
    } else if violations.is_empty() {
        violations.push("the workload did not finish".into());
    }
    SystemResult {
        violations,
        summary,
        trace_hash: trace.hash(),
        trace: trace
            .take_text()
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        sim_ms: step,
        steps: step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(seed: u64, faults: SystemFaults) -> SystemConfig {
        SystemConfig {
            seed,
            run_ms: 5_000,
            faults,
            ..SystemConfig::default()
        }
    }

    #[test]
    fn fault_free_run_reads_every_acknowledged_write() {
        let r = run_system_seed(&short(1, SystemFaults::NONE));
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(r.summary.contains("sends ok="), "{}", r.summary);
        assert!(
            !r.summary.contains("sends ok=0 "),
            "nothing was acknowledged: {}",
            r.summary
        );
    }

    #[test]
    fn faulty_runs_hold_the_invariants() {
        for seed in 0..4 {
            let r = run_system_seed(&short(seed, SystemFaults::ALL));
            assert!(r.violations.is_empty(), "seed {seed}: {:#?}", r.violations);
        }
    }

    #[test]
    fn same_seed_same_trace() {
        let a = run_system_seed(&short(7, SystemFaults::ALL));
        let b = run_system_seed(&short(7, SystemFaults::ALL));
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.steps, b.steps);
    }
}
