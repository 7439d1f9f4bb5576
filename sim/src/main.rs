//! `sim`: the deterministic simulator's command line.
//!
//!   sim [--seeds N] [--start-seed S] [--faults crash,disk] [--plant NAME] [--steps N]
//!   sim --seed N [--trace] [--plant NAME]
//!   sim plants [--check] [--max-seeds 200]
//!   sim determinism [--seed S] [--seeds N]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use broker::planted::{self, PlantedBug};
use clap::{Parser, Subcommand};
use sim::{run, Faults, RunConfig, RunResult};

#[derive(Parser, Debug)]
#[command(
    name = "sim",
    about = "Deterministic simulation of the broker core under faults"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Fault families: crash, disk (comma-separated), all or none.
    #[arg(long, default_value = "crash,disk")]
    faults: String,
    /// Plant a deliberate bug (needs --features planted-bugs); see `sim plants`.
    #[arg(long)]
    plant: Option<String>,
    /// Events per run before the workload stops and the world heals.
    #[arg(long, default_value_t = RunConfig::DEFAULT_STEPS)]
    steps: u64,
}

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sim::install_panic_hook();
    let faults = match Faults::parse(&cli.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
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
    let base = RunConfig {
        seed: 0,
        faults,
        steps: cli.steps,
        trace: false,
    };
    match cli.command {
        Some(Command::Plants { check, max_seeds }) => plants(check, max_seeds, &base),
        Some(Command::Determinism { seed, seeds }) => determinism(seed, seeds, &base),
        None => match cli.seed {
            Some(seed) => single(seed, cli.trace, &base, plant),
            None => sweep(cli.start_seed, cli.seeds, &base, plant),
        },
    }
}

fn replay_command(seed: u64, base: &RunConfig, plant: Option<PlantedBug>) -> String {
    let mut cmd = String::from("cargo run --release -p sim");
    if plant.is_some() {
        cmd.push_str(" --features planted-bugs");
    }
    cmd.push_str(&format!(" -- --seed {seed} --trace"));
    if let Some(p) = plant {
        cmd.push_str(&format!(" --plant {}", p.name()));
    }
    if base.faults != Faults::default() {
        cmd.push_str(&format!(" --faults {}", base.faults));
    }
    if base.steps != RunConfig::DEFAULT_STEPS {
        cmd.push_str(&format!(" --steps {}", base.steps));
    }
    cmd
}

fn single(seed: u64, trace: bool, base: &RunConfig, plant: Option<PlantedBug>) -> ExitCode {
    let config = RunConfig {
        seed,
        trace,
        ..base.clone()
    };
    let start = Instant::now();
    let r = run(&config);
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
    print!("{}", r.describe(usize::MAX / 8));
    if r.passed() {
        println!("seed {seed}: passed");
        ExitCode::SUCCESS
    } else {
        println!("seed {seed}: FAILED");
        println!("replay: {}", replay_command(seed, base, plant));
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
    fn add(&mut self, r: &RunResult) {
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

fn sweep(start: u64, seeds: u64, base: &RunConfig, plant: Option<PlantedBug>) -> ExitCode {
    let progress = Progress::new(seeds);
    let mut speed = Speed::default();
    let mut failures = 0u64;
    let t0 = Instant::now();
    for seed in start..start.saturating_add(seeds) {
        let r = run(&RunConfig {
            seed,
            ..base.clone()
        });
        speed.add(&r);
        if !r.passed() {
            failures += 1;
            progress.clear();
            println!("FAIL seed {seed}: {}", r.headline());
            print!("{}", r.describe(5));
            println!("  replay: {}", replay_command(seed, base, plant));
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

fn plants(check: bool, max_seeds: u64, base: &RunConfig) -> ExitCode {
    if !check {
        for b in PlantedBug::ALL {
            println!("{:<22} {}", b.name(), b.describe());
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
    for b in PlantedBug::ALL {
        planted::plant(&[b]);
        let mut caught = None;
        for seed in 0..max_seeds {
            let r = run(&RunConfig {
                seed,
                ..base.clone()
            });
            speed.add(&r);
            if !r.passed() {
                caught = Some((seed, r));
                break;
            }
        }
        match caught {
            Some((seed, r)) => println!(
                "caught {:<22} at seed {seed} ({} seeds): {}\n  replay: {}",
                b.name(),
                seed + 1,
                r.headline(),
                replay_command(seed, base, Some(b))
            ),
            None => {
                missed += 1;
                println!("MISSED {:<22} in {max_seeds} seeds", b.name());
            }
        }
    }
    planted::plant(&[]);
    println!("{}", speed.line(t0.elapsed().as_secs_f64()));
    println!(
        "{} plants, {} caught, {missed} missed",
        PlantedBug::ALL.len(),
        PlantedBug::ALL.len() - missed
    );
    if missed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn determinism(start: u64, seeds: u64, base: &RunConfig) -> ExitCode {
    let mut diffs = 0;
    for seed in start..start.saturating_add(seeds) {
        let config = RunConfig {
            seed,
            trace: true,
            ..base.clone()
        };
        let a = run(&config);
        let b = run(&config);
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
