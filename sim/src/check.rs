//! `sim check`: the Jepsen-style workload against a real cluster over real TCP. Idempotent
//! producers send unique values with acks=all, a consumer polls every partition, a final read
//! goes to every high watermark, and the `invariants` checkers judge the history: no lost
//! acknowledged write, one value per offset, no duplicates from idempotent producers, no
//! reordering within a poll, ... Works against this broker, Apache Kafka or Redpanda.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use invariants::{check_all, CheckOptions};
use sim::workload::{self, TcpConnector, WorkloadConfig};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// A broker of the cluster to check.
    #[arg(long)]
    bootstrap: String,
    /// How long producers send, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Topic to create (default: a fresh `jepsen-check-<ms>` per run, so values never mix).
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[arg(long, default_value_t = 1)]
    replication_factor: i16,
    #[arg(long, default_value_t = 3)]
    producers: u32,
    /// Members of a consumer group that consume and commit offsets (0: no group).
    #[arg(long, default_value_t = 2)]
    group_members: u32,
    /// Pause between one producer's sends, in milliseconds.
    #[arg(long, default_value_t = 2)]
    send_interval_ms: u64,
    /// Seeds the workload's key choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the recorded history here, one JSON operation per line.
    #[arg(long)]
    history: Option<std::path::PathBuf>,
    /// Count a commit answered NOT_COORDINATOR as possibly written, as Apache Kafka's
    /// coordinator may have written it (this broker answers it only for commits it did not
    /// write). Use it when checking another broker.
    #[arg(long)]
    not_coordinator_may_write: bool,
}

pub fn main(args: &CheckArgs) -> ExitCode {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let config = WorkloadConfig {
        bootstrap: args.bootstrap.clone(),
        topic: args
            .topic
            .clone()
            .unwrap_or_else(|| format!("jepsen-check-{now_ms}")),
        partitions: args.partitions,
        create_topic: true,
        replication_factor: args.replication_factor,
        producers: args.producers,
        group_members: args.group_members,
        run_for: Duration::from_secs(args.seconds),
        send_interval: Duration::from_millis(args.send_interval_ms),
        request_timeout: Duration::from_secs(10),
        final_read_timeout: Duration::from_secs(60),
        seed: args.seed,
        value_base: 0,
        client_rack: None,
        not_coordinator_may_write: args.not_coordinator_may_write,
    };
    println!(
        "checking {} on topic {} ({} partitions, {} producers, {} s)",
        config.bootstrap, config.topic, config.partitions, config.producers, args.seconds
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sim check: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, workload::run(TcpConnector, config, async {}));
    if let Some(path) = &args.history {
        if let Err(e) = std::fs::write(path, outcome.history.to_json_lines()) {
            eprintln!("sim check: cannot write {}: {e}", path.display());
        }
    }
    let options = CheckOptions {
        final_read_complete: outcome.final_read_complete,
        ..CheckOptions::default()
    };
    let report = check_all(&outcome.history, &options);
    println!("{}", report.explain(&outcome.history));
    if !outcome.final_read_complete {
        println!("the final read did not reach every partition's high watermark in time");
    }
    let stats = &report.stats;
    if stats.sends_ok == 0 {
        println!("no send was acknowledged: the cluster was not reachable or refused every write");
        return ExitCode::FAILURE;
    }
    if report.is_valid() && outcome.final_read_complete {
        println!("check passed");
        ExitCode::SUCCESS
    } else {
        println!("check FAILED");
        ExitCode::FAILURE
    }
}
