//! The tokio shell: opens the logs, binds the listener, runs one task per connection plus the
//! background loops (retention, interval flush), and shuts down cleanly: stop accepting, answer
//! what is in flight, fsync, mark every log clean.

pub mod connection;
pub mod group_manager;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::apis::{Advertised, Clock, KafkaApis};
use crate::config::{BrokerConfig, FsyncPolicy};
use crate::replica::ReplicaManager;
use crate::storage::FileStorage;
use connection::ConnectionLimits;
use group_manager::GroupManager;

/// How long shutdown waits for connections to finish their in-flight requests.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;

/// The operating system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

fn advertised(config: &BrokerConfig, bound: SocketAddr) -> anyhow::Result<Advertised> {
    let (host, port) = match &config.advertise {
        Some(a) => {
            let (h, p) = a
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("--advertise {a:?} is not HOST:PORT"))?;
            (
                h.to_string(),
                p.parse::<i32>()
                    .map_err(|_| anyhow::anyhow!("bad port in --advertise {a:?}"))?,
            )
        }
        None => (bound.ip().to_string(), bound.port() as i32),
    };
    Ok(Advertised {
        node_id: config.node_id,
        host,
        port,
    })
}

/// Runs the broker until `shutdown` completes. `on_listening` is told the bound address once
/// clients can connect.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let storage = FileStorage::default();
    let replicas = {
        let config = config.clone();
        let now = clock.now_ms();
        Arc::new(ReplicaManager::open(storage.clone(), config, seed, now)?)
    };
    let listener = TcpListener::bind(&config.listen).await?;
    let bound = listener.local_addr()?;
    let groups = GroupManager::open(
        storage.clone(),
        &config.data_dir,
        &config.log,
        replicas.ack_policy(),
        config.group.clone(),
        Arc::clone(&clock),
        seed.rotate_left(17),
    )?;
    let apis = Arc::new(KafkaApis::new(
        Arc::clone(&replicas),
        Arc::clone(&groups),
        Arc::clone(&clock),
        advertised(&config, bound)?,
    ));
    tracing::info!(listen = %bound, data_dir = %config.data_dir.display(), fsync = %config.fsync, "broker started");
    on_listening(bound);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    {
        let replicas = Arc::clone(&replicas);
        let clock = Arc::clone(&clock);
        let mut stop = stop_rx.clone();
        let every = Duration::from_millis(config.retention_check_interval_ms);
        background.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        let r = Arc::clone(&replicas);
                        let now = clock.now_ms();
                        let removed = tokio::task::spawn_blocking(move || r.apply_retention(now)).await.unwrap_or(0);
                        if removed > 0 {
                            tracing::info!(segments = removed, "retention removed segments");
                        }
                    }
                }
            }
        });
    }
    if let FsyncPolicy::Interval { ms } = config.fsync {
        let replicas = Arc::clone(&replicas);
        let mut stop = stop_rx.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ms));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        let r = Arc::clone(&replicas);
                        let _ = tokio::task::spawn_blocking(move || r.flush_all()).await;
                    }
                }
            }
        });
    }

    let limits = ConnectionLimits {
        max_frame_bytes: config.max_frame_bytes,
        max_inflight_bytes: config.max_inflight_bytes,
        max_inflight_requests: config.max_inflight_requests,
        idle_timeout_ms: config.idle_timeout_ms,
    };
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max = config.max_connections, "refusing connection: too many connections");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tracing::info!(%peer, "connected");
                let (reader, writer) = stream.into_split();
                let apis = Arc::clone(&apis);
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    connection::serve(reader, writer, peer, apis, limits, stop).await;
                    drop(slot);
                });
            }
        }
    }

    tracing::info!(
        connections = connections.len(),
        "shutting down: no new connections; answering in-flight requests"
    );
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {SHUTDOWN_DRAIN_MS_MAX} ms; closing them");
        connections.abort_all();
    }
    background.abort_all();
    let r = Arc::clone(&replicas);
    let g = Arc::clone(&groups);
    tokio::task::spawn_blocking(move || {
        r.flush_all();
        g.close();
        r.close();
    })
    .await?;
    tracing::info!("shut down cleanly");
    Ok(())
}
