//! `sim`: the deterministic simulator's command line.
//!
//!   sim [--layer core|groups|raft|replication|system|cluster] [--seeds N] [--start-seed S] [--faults ...] [--plant NAME]
//!   sim [--layer core|groups|raft|replication|system|cluster] --seed N [--trace] [--plant NAME]
//!   sim plants [--check] [--max-seeds 200] (25 times that on the replication layer)
//!   sim determinism [--layer core|groups|raft|replication|system|cluster] [--seed S] [--seeds N]
//!   sim check --bootstrap HOST:PORT [--seconds N]
//!
//! Layers: `core` (default) steps the sans-IO partition core over the faulty in-memory disk;
//! `groups` steps the sans-IO group coordinator under simulated consumers, persist failures and
//! coordinator crashes; `raft` steps a cluster of sans-IO metadata-quorum nodes over a faulty
//! network, disks and clocks; `replication` steps partition replication (the real partition
//! cores on every node, the real controller, follower fetches, ISR changes, acks=all producers)
//! under crashes, partitions, slow disks and metadata, and controller failover; `system` runs the real broker server under turmoil with network, crash, disk and clock
//! faults; `cluster` runs three replicating broker nodes under turmoil with crashes,
//! isolations and clock skew. Each layer reduces one seed to a [`SeedOutcome`], so sweeps, replays, the
//! determinism check and the plant check treat them alike.

mod check;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use broker::planted::{self, PlantedBug};
use clap::{Parser, Subcommand, ValueEnum};
use sim::cluster::{run_cluster_seed, ClusterSimConfig};
use sim::groups::run_group_seed;
use sim::raft::{run_raft_seed, RaftFaults, RaftSimConfig};
use sim::replication::{run_replication_seed, ReplSimConfig};
use sim::system::{run_system_seed, SystemConfig, SystemFaults};
use sim::{run, Faults, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sim",
    about = "Deterministic simulation of the broker under faults, and a Jepsen-style checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which simulation layer runs each seed.
    #[arg(long, global = true, value_enum, default_value_t = Layer::Core)]
    layer: Layer,
    /// Number of seeds to sweep.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Run this one seed and print its report (with --trace, its full trace first).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the full event trace (single seed).
    #[arg(long)]
    trace: bool,
    /// Fault families, comma-separated: net, crash, disk, clock, all or none. The core layer
    /// (one node, no network) takes crash and disk; the raft and system layers take all four;
    /// the groups layer always mixes its own.
    #[arg(long, global = true, default_value = "all")]
    faults: String,
    /// Plant a deliberate bug (needs --features planted-bugs); see `sim plants`.
    #[arg(long)]
    plant: Option<String>,
    /// Core, groups and raft layers: events (actions) per run before the world heals and
    /// drains (default: the layer's own).
    #[arg(long, global = true)]
    steps: Option<u64>,
    /// System and cluster layers: simulated milliseconds the producers run before the world heals.
    #[arg(long, global = true, default_value_t = SYSTEM_RUN_MS)]
    run_ms: u64,
    /// Raft and replication layers: voters / broker nodes (3 or 5).
    #[arg(long, global = true, default_value_t = 3)]
    nodes: usize,
}

const SYSTEM_RUN_MS: u64 = 20_000;
/// Group-harness actions per groups-layer seed.
const GROUPS_STEPS: u64 = 1_000;

#[derive(Subcommand, Debug)]
enum Command {
    /// List the planted bugs; with --check, prove each one is caught.
    Plants {
        #[arg(long)]
        check: bool,
        /// Seeds to try per plant before declaring it not caught.
        #[arg(long, default_value_t = 200)]
        max_seeds: u64,
    },
    /// Run each seed twice and compare trace hashes.
    Determinism {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        seeds: u64,
    },
    /// Run the Jepsen-style workload against a real Kafka-compatible cluster and check the
    /// history (this broker, Apache Kafka, Redpanda, ...).
    Check(check::CheckArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Layer {
    /// The sans-IO partition core, the log and the faulty in-memory disk, stepped directly.
    Core,
    /// The sans-IO group coordinator with simulated consumers, persist faults and crashes.
    Groups,
    /// A 3-node metadata quorum (sans-IO KRaft cores) over a faulty network, disks and clocks.
    Raft,
    /// Partition replication: N nodes of real partition cores, the real controller, follower
    /// fetches, ISR changes and acks=all producers under crashes, partitions and failovers.
    Replication,
    /// The real broker server (tokio shell, TCP, dispatch) under turmoil.
    System,
    /// Three replicating broker nodes (quorum voters and brokers) under turmoil.
    Cluster,
}

/// How one seed of any layer ended.
struct SeedOutcome {
    passed: bool,
    /// One line: why it failed (or a summary when it passed).
    headline: String,
    /// Up to a few lines per violation.
    details: String,
    trace_hash: u64,
    trace: Option<String>,
    events: u64,
    sim_ns: u64,
}

impl SeedOutcome {
    /// An outcome from a layer's problem descriptions (empty: passed): the first line of the
    /// first problem as headline, up to six lines of each of the first `detail_lines`.
    fn from_lines(problems: &[String], summary: String, detail_lines: usize, hash: u64) -> Self {
        let mut details = String::new();
        for p in problems.iter().take(detail_lines) {
            for line in p.lines().take(6) {
                details.push_str(&format!("  {line}\n"));
            }
        }
        SeedOutcome {
            passed: problems.is_empty(),
            headline: match problems.first() {
                Some(p) => p.lines().next().unwrap_or("").to_string(),
                None => summary,
            },
            details,
            trace_hash: hash,
            trace: None,
            events: 0,
            sim_ns: 0,
        }
    }

    fn with_trace(mut self, keep: bool, lines: &[String]) -> Self {
        if keep {
            let mut t = lines.join("\n");
            t.push('\n');
            self.trace = Some(t);
        }
        self
    }

    fn with_time(mut self, events: u64, sim_ms: u64) -> Self {
        self.events = events;
        self.sim_ns = sim_ms * 1_000_000;
        self
    }
}

/// Everything a layer needs besides the seed.
#[derive(Clone, Debug)]
struct Settings {
    layer: Layer,
    core: RunConfig,
    groups_steps: u64,
    raft: RaftSimConfig,
    replication: ReplSimConfig,
    system: SystemConfig,
    cluster: ClusterSimConfig,
    /// --steps as given, for replay commands.
    steps: Option<u64>,
    /// The --faults text as given, for replay commands.
    faults_text: String,
}

impl Settings {
    fn run(&self, seed: u64, trace: bool, detail_lines: usize) -> SeedOutcome {
        match self.layer {
            Layer::Core => {
                let r = run(&RunConfig {
                    seed,
                    trace,
                    ..self.core.clone()
                });
                SeedOutcome {
                    passed: r.passed(),
                    headline: r.headline(),
                    details: r.describe(detail_lines),
                    trace_hash: r.trace_hash,
                    trace: r.trace.clone(),
                    events: r.events,
                    sim_ns: r.sim_ns,
                }
            }
            Layer::Groups => {
                let r = run_group_seed(seed, self.groups_steps as usize, trace);
                let summary = format!("{} events, no violation", r.events);
                SeedOutcome::from_lines(&r.violations, summary, detail_lines, r.trace_hash)
                    .with_trace(trace, &r.trace)
                    .with_time(r.events, r.sim_ms)
            }
            Layer::Raft => {
                let config = RaftSimConfig {
                    trace,
                    ..self.raft.clone()
                };
                let r = run_raft_seed(seed, &config);
                let mut problems: Vec<String> = r.violations.clone();
                problems.extend(r.liveness.iter().map(|l| format!("liveness: {l}")));
                let summary = format!(
                    "{} elections, {} entries committed, {} crashes ({} wiped a disk)",
                    r.elections, r.committed, r.crashes, r.wipes
                );
                SeedOutcome::from_lines(&problems, summary, detail_lines, r.trace_hash)
                    .with_trace(trace, &r.trace)
                    .with_time(r.events, r.sim_ms)
            }
            Layer::Replication => {
                let config = ReplSimConfig {
                    trace,
                    ..self.replication.clone()
                };
                let r = run_replication_seed(seed, &config);
                let summary = format!(
                    "{} batches acknowledged, {} leader epochs, {} crashes, {} partitions, \
                     {} controller failovers, {} truncations, {} ELR elections, \
                     {} min.insync.replicas changes, {} preferred elections asked, \
                     {} reassignments asked, {} removed copies deleted, {} DeleteRecords, \
                     {} batches read from followers, {} disks wiped, \
                     {} unclean elections asked, {} leaders elected uncleanly",
                    r.acked,
                    r.leader_epochs,
                    r.crashes,
                    r.partitions,
                    r.failovers,
                    r.truncations,
                    r.elr_elections,
                    r.min_isr_changes,
                    r.elections_asked,
                    r.reassignments_asked,
                    r.replicas_removed,
                    r.records_deleted,
                    r.follower_reads,
                    r.wipes,
                    r.unclean_asked,
                    r.unclean_elections
                );
                let mut outcome = SeedOutcome::from_lines(
                    &r.problems(),
                    summary.clone(),
                    detail_lines,
                    r.trace_hash,
                )
                .with_trace(trace, &r.trace)
                .with_time(r.events, r.sim_ms);
                if outcome.passed {
                    outcome.details.push_str(&format!("  {summary}\n"));
                }
                outcome
            }
            Layer::System => {
                let r = run_system_seed(&SystemConfig {
                    seed,
                    trace,
                    ..self.system.clone()
                });
                let mut outcome = SeedOutcome::from_lines(
                    &r.violations,
                    r.summary.clone(),
                    detail_lines,
                    r.trace_hash,
                )
                .with_trace(trace, &r.trace)
                .with_time(r.steps, r.sim_ms);
                if outcome.passed {
                    outcome.details.push_str(&format!("  {}\n", r.summary));
                }
                outcome
            }
            Layer::Cluster => {
                let r = run_cluster_seed(&ClusterSimConfig {
                    seed,
                    trace,
                    ..self.cluster.clone()
                });
                let mut outcome = SeedOutcome::from_lines(
                    &r.violations,
                    r.summary.clone(),
                    detail_lines,
                    r.trace_hash,
                )
                .with_trace(trace, &r.trace)
                .with_time(r.sim_ms, r.sim_ms);
                if outcome.passed {
                    outcome.details.push_str(&format!("  {}\n", r.summary));
                }
                outcome
            }
        }
    }

    fn replay_command(&self, seed: u64, plant: Option<PlantedBug>) -> String {
        let mut cmd = String::from("cargo run --release -p sim");
        if plant.is_some() {
            cmd.push_str(" --features planted-bugs");
        }
        cmd.push_str(" --");
        match self.layer {
            Layer::Core => {}
            Layer::Groups => cmd.push_str(" --layer groups"),
            Layer::Raft => cmd.push_str(" --layer raft"),
            Layer::Replication => cmd.push_str(" --layer replication"),
            Layer::System => cmd.push_str(" --layer system"),
            Layer::Cluster => cmd.push_str(" --layer cluster"),
        }
        cmd.push_str(&format!(" --seed {seed} --trace"));
        if let Some(p) = plant {
            cmd.push_str(&format!(" --plant {}", p.name()));
        }
        if self.faults_text != "all" {
            cmd.push_str(&format!(" --faults {}", self.faults_text));
        }
        if let Some(steps) = self.steps {
            cmd.push_str(&format!(" --steps {steps}"));
        }
        if matches!(self.layer, Layer::Replication | Layer::Raft) && self.replication.nodes != 3 {
            cmd.push_str(&format!(" --nodes {}", self.replication.nodes));
        }
        if matches!(self.layer, Layer::System | Layer::Cluster)
            && self.system.run_ms != SYSTEM_RUN_MS
        {
            cmd.push_str(&format!(" --run-ms {}", self.system.run_ms));
        }
        cmd
    }
}

fn parse_system_faults(text: &str) -> Result<SystemFaults, String> {
    let mut f = SystemFaults::NONE;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "net" => f.net = true,
            "crash" => f.crash = true,
            "disk" => f.disk = true,
            "clock" => f.clock = true,
            "all" => f = SystemFaults::ALL,
            "none" => {}
            other => {
                return Err(format!(
                    "unknown fault '{other}' (known: net, crash, disk, clock, all, none)"
                ))
            }
        }
    }
    Ok(f)
}

/// The core layer has one node and no network or clock to fault: `all` means crash and disk
/// there, and naming net or clock explicitly is an error rather than a silent no-op.
fn parse_core_faults(text: &str) -> Result<Faults, String> {
    let text = text.replace("all", "crash,disk");
    Faults::parse(&text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulated broker's own logs, on request: SIM_LOG=warn (or info, debug, ...).
    if let Ok(filter) = std::env::var("SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    if let Some(Command::Check(args)) = &cli.command {
        return check::main(args);
    }
    sim::install_panic_hook();
    let mut core = RunConfig::new(0);
    core.steps = cli.steps.unwrap_or(RunConfig::DEFAULT_STEPS);
    let mut raft = RaftSimConfig {
        nodes: cli.nodes,
        ..RaftSimConfig::default()
    };
    if let Some(steps) = cli.steps {
        raft.steps = steps;
    }
    let mut replication = ReplSimConfig {
        nodes: cli.nodes,
        ..ReplSimConfig::default()
    };
    if let Some(steps) = cli.steps {
        replication.steps = steps;
    }
    let mut system = SystemConfig {
        run_ms: cli.run_ms,
        ..SystemConfig::default()
    };
    let mut cluster = ClusterSimConfig {
        run_ms: cli.run_ms,
        ..ClusterSimConfig::default()
    };
    let faults = match cli.layer {
        Layer::Core => parse_core_faults(&cli.faults).map(|f| core.faults = f),
        // The group simulation always mixes its own faults (persist failures, crashes, clock
        // jumps, vanishing members); --faults does not apply.
        Layer::Groups => match cli.faults.as_str() {
            "all" => Ok(()),
            other => Err(format!(
                "--faults {other}: the groups layer always injects its own fault mix"
            )),
        },
        Layer::Raft => parse_system_faults(&cli.faults).map(|f| {
            raft.faults = RaftFaults {
                net: f.net,
                crash: f.crash,
                disk: f.disk,
                clock: f.clock,
            }
        }),
        // The replication layer mixes its own faults per seed (crashes, partitions, slow
        // disks and metadata, controller failover).
        Layer::Replication => match cli.faults.as_str() {
            "all" => Ok(()),
            other => Err(format!(
                "--faults {other}: the replication layer always injects its own fault mix"
            )),
        },
        Layer::System => parse_system_faults(&cli.faults).map(|f| system.faults = f),
        // No full disks in the cluster layer: `all` means net, crash and clock there.
        Layer::Cluster => parse_system_faults(&cli.faults.replace("all", "net,crash,clock"))
            .and_then(|f| {
                if f.disk {
                    Err("--faults disk: the cluster layer does not fill disks".to_string())
                } else {
                    cluster.faults = f;
                    Ok(())
                }
            }),
    };
    if cli.nodes != 3 && cli.nodes != 5 {
        eprintln!("sim: --nodes must be 3 or 5");
        return ExitCode::from(2);
    }
    if let Err(e) = faults {
        eprintln!("sim: {e}");
        return ExitCode::from(2);
    }
    let settings = Settings {
        layer: cli.layer,
        core,
        groups_steps: cli.steps.unwrap_or(GROUPS_STEPS),
        raft,
        replication,
        system,
        cluster,
        steps: cli.steps,
        faults_text: cli.faults.clone(),
    };
    let plant = match &cli.plant {
        None => None,
        Some(name) => match PlantedBug::from_name(name) {
            Some(b) => Some(b),
            None => {
                let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
                eprintln!("sim: unknown plant '{name}' (known: {})", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    let bugs: Vec<PlantedBug> = plant.into_iter().collect();
    if !planted::plant(&bugs) {
        eprintln!(
            "sim: this binary was built without planted bugs; rebuild with \
             `cargo run --release -p sim --features planted-bugs -- ...`"
        );
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Plants { check, max_seeds }) => plants(check, max_seeds, &settings),
        Some(Command::Determinism { seed, seeds }) => determinism(seed, seeds, &settings),
        Some(Command::Check(_)) => unreachable!("handled above"),
        None => match cli.seed {
            Some(seed) => single(seed, cli.trace, &settings, plant),
            None => sweep(cli.start_seed, cli.seeds, &settings, plant),
        },
    }
}

fn single(seed: u64, trace: bool, settings: &Settings, plant: Option<PlantedBug>) -> ExitCode {
    let start = Instant::now();
    let r = settings.run(seed, trace, usize::MAX / 8);
    let wall = start.elapsed().as_secs_f64();
    if let Some(t) = &r.trace {
        print!("{t}");
    }
    println!(
        "seed {seed}: {} events, {:.3} simulated s, trace hash {:016x}, {:.1} ms wall",
        r.events,
        r.sim_ns as f64 / 1e9,
        r.trace_hash,
        wall * 1e3
    );
    print!("{}", r.details);
    if r.passed {
        println!("seed {seed}: passed");
        ExitCode::SUCCESS
    } else {
        println!("seed {seed}: FAILED: {}", r.headline);
        println!("replay: {}", settings.replay_command(seed, plant));
        ExitCode::FAILURE
    }
}

struct Progress {
    tty: bool,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
        }
    }
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of is newer than the MSRV (1.80)
    fn update(&self, done: u64, failures: u64) {
        if self.tty && (done % 10 == 0 || done == self.total) {
            eprint!("\r{done}/{} seeds, {failures} failures", self.total);
            let _ = std::io::stderr().flush();
        }
    }
    fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

#[derive(Default)]
struct Speed {
    events: u64,
    sim_ns: u64,
    runs: u64,
}

impl Speed {
    fn add(&mut self, r: &SeedOutcome) {
        self.events += r.events;
        self.sim_ns += r.sim_ns;
        self.runs += 1;
    }
    fn line(&self, wall: f64) -> String {
        let wall = wall.max(1e-9);
        format!(
            "speed: {:.0} events/s, {:.1} simulated s per wall s, {:.0} seeds/hour \
             ({} runs in {:.2} s, {:.0} events/run)",
            self.events as f64 / wall,
            self.sim_ns as f64 / 1e9 / wall,
            self.runs as f64 / wall * 3600.0,
            self.runs,
            wall,
            self.events as f64 / self.runs.max(1) as f64
        )
    }
}

fn sweep(start: u64, seeds: u64, settings: &Settings, plant: Option<PlantedBug>) -> ExitCode {
    let progress = Progress::new(seeds);
    let mut speed = Speed::default();
    let mut failures = 0u64;
    let t0 = Instant::now();
    for seed in start..start.saturating_add(seeds) {
        let r = settings.run(seed, false, 5);
        speed.add(&r);
        if !r.passed {
            failures += 1;
            progress.clear();
            println!("FAIL seed {seed}: {}", r.headline);
            print!("{}", r.details);
            println!("  replay: {}", settings.replay_command(seed, plant));
        }
        progress.update(seed - start + 1, failures);
    }
    progress.clear();
    println!("{}", speed.line(t0.elapsed().as_secs_f64()));
    println!("{seeds} seeds, {failures} failures");
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The layers that must catch each planted bug: the one whose code it lives in, and the
/// whole-system layer where its effect reaches clients often enough to be caught within the
/// plant check's seed budget.
fn plant_layers(bug: PlantedBug) -> &'static [Layer] {
    match bug {
        PlantedBug::AckBeforeFsync => &[Layer::Core, Layer::System],
        PlantedBug::RecoverySkipsCrc => &[Layer::Core],
        // Consumers read from followers (KIP-392) in the replication layer.
        PlantedBug::FetchPastHighWatermark => &[Layer::Core, Layer::Replication],
        PlantedBug::CommitBeforePersist => &[Layer::Groups, Layer::System],
        PlantedBug::VoteTwice => &[Layer::Raft],
        PlantedBug::WipedVoterVotes => &[Layer::Raft],
        PlantedBug::HwFromLeader => &[Layer::Raft, Layer::Replication, Layer::Cluster],
        // Also caught by the controller's own proptest.
        PlantedBug::OutOfIsrElection => &[Layer::Replication, Layer::Cluster],
        PlantedBug::HwBelowMinIsr => &[Layer::Replication],
        PlantedBug::HwCheckpointLogEnd => &[Layer::Replication],
        PlantedBug::ObserverCounts => &[Layer::Raft],
        PlantedBug::ReplacedDirectoryKept => &[Layer::Replication],
        // Producers ask different brokers for their ids, each broker its own block.
        PlantedBug::ProducerIdsReused => &[Layer::Cluster],
        PlantedBug::ReassignTrustsIsr => &[Layer::Replication],
        // Only the cluster layer fills a disk and then makes room without a restart.
        PlantedBug::FullDiskFailsCopy => &[Layer::Cluster],
        PlantedBug::FullDiskEndsQuorum => &[Layer::Cluster],
        // Only the replication layer delivers late copies of AlterPartition requests.
        PlantedBug::StaleAlterPartition => &[Layer::Replication],
        // Only the replication layer runs unclean elections.
        PlantedBug::TruncationStopsAtLogStart => &[Layer::Replication],
    }
}

fn plants(check: bool, max_seeds: u64, settings: &Settings) -> ExitCode {
    if !check {
        for b in PlantedBug::ALL {
            let layers: Vec<String> = plant_layers(b)
                .iter()
                .map(|l| format!("{l:?}").to_lowercase())
                .collect();
            println!("{:<24} [{}] {}", b.name(), layers.join(", "), b.describe());
        }
        if !planted::plant(&[]) || !planted::plant(&PlantedBug::ALL) {
            println!("(this binary lacks the planted-bugs feature)");
        }
        planted::plant(&[]);
        return ExitCode::SUCCESS;
    }
    if !planted::plant(&PlantedBug::ALL) {
        eprintln!(
            "sim plants --check: this binary was built without planted bugs; run \
             `cargo run --release -p sim --features planted-bugs -- plants --check`"
        );
        return ExitCode::from(2);
    }
    let mut missed = 0;
    let t0 = Instant::now();
    let mut speed = Speed::default();
    let mut checks = 0;
    for b in PlantedBug::ALL {
        planted::plant(&[b]);
        for &layer in plant_layers(b) {
            checks += 1;
            let settings = Settings {
                layer,
                ..settings.clone()
            };
            let mut caught = None;
            // Replication seeds cost milliseconds: the narrow windows its plants need (a leader
            // alone in its ISR with unreplicated batches, then dying; a high-watermark
            // checkpoint read back after a crash, about one seed in 800) get 25 times the seeds.
            let budget = if layer == Layer::Replication {
                max_seeds * 25
            } else {
                max_seeds
            };
            for seed in 0..budget {
                let r = settings.run(seed, false, 3);
                speed.add(&r);
                if !r.passed {
                    caught = Some((seed, r));
                    break;
                }
            }
            let layer = format!("{layer:?}").to_lowercase();
            match caught {
                Some((seed, r)) => println!(
                    "caught {:<24} on {layer:<6} at seed {seed} ({} seeds): {}\n  replay: {}",
                    b.name(),
                    seed + 1,
                    r.headline,
                    settings.replay_command(seed, Some(b))
                ),
                None => {
                    missed += 1;
                    println!("MISSED {:<24} on {layer:<6} in {budget} seeds", b.name());
                }
            }
        }
    }
    planted::plant(&[]);
    println!("{}", speed.line(t0.elapsed().as_secs_f64()));
    println!(
        "{} plants, {checks} checks, {} caught, {missed} missed",
        PlantedBug::ALL.len(),
        checks - missed
    );
    if missed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn determinism(start: u64, seeds: u64, settings: &Settings) -> ExitCode {
    let mut diffs = 0;
    for seed in start..start.saturating_add(seeds) {
        let a = settings.run(seed, true, 3);
        let b = settings.run(seed, true, 3);
        let same = a.trace_hash == b.trace_hash && a.trace == b.trace;
        println!(
            "seed {seed}: {:016x} {:016x} {} ({} events)",
            a.trace_hash,
            b.trace_hash,
            if same { "same" } else { "DIFFERENT" },
            a.events
        );
        if !same {
            diffs += 1;
        }
    }
    println!("{seeds} seeds, {diffs} nondeterministic");
    if diffs > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
