//! The `broker` binary: parse configuration, set up logging, run the server until SIGTERM or
//! Ctrl-C, then shut down cleanly. `broker dev-cluster` supervises a local cluster instead.

use std::io::Write;

use clap::Parser;

use broker::config::{BrokerConfig, Flags};

fn main() -> anyhow::Result<()> {
    let mut flags = Flags::parse();
    if let Some(broker::dev_cluster::Command::DevCluster(args)) = flags.command.take() {
        return broker::dev_cluster::run(args);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = BrokerConfig::from_flags(flags)?;
    keep_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(broker::server::run(config, shutdown_signal(), |addr| {
        // Scripts and tests read this line to learn the port (useful with --listen HOST:0).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }))
}

/// Request frames and follower fetch responses are megabytes each, allocated and freed many
/// times a second. glibc's default hands such blocks back to the kernel when freed (mmap'd
/// chunks, heap trimming), so every new one page-faults and the kernel zeroes it again: ~8%
/// of a broker's CPU in RF=3 profiles. Blocks up to 64 MiB now come from the heap, and freed
/// heap memory is kept for reuse. Memory held stays bounded by what was in use at the peak,
/// which the connection and replication budgets bound.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD_BYTES: libc::c_int = 64 * 1024 * 1024;
        const TRIM_THRESHOLD_BYTES: libc::c_int = 512 * 1024 * 1024;
        // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        };
        if !ok {
            tracing::warn!("mallopt refused the allocator tuning; running with glibc defaults");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the broker cleanly");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
