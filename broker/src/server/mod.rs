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

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::apis::{Advertised, Clock, KafkaApis};
use crate::config::{BrokerConfig, FsyncPolicy};
use crate::replica::ReplicaManager;
use crate::storage::{FileStorage, Storage};
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

/// What the shell runs on: storage, a wall clock and a seed for ids. Production passes the
/// real file system, the OS clock and an OS-derived seed; the simulator passes `MemStorage`, a
/// simulated (possibly skewed) clock and the run's seed.
pub struct ShellEnv<S> {
    pub storage: S,
    pub clock: Arc<dyn Clock>,
    pub seed: u64,
}

/// A source of client connections: tokio's `TcpListener` in production, turmoil's simulated
/// one in the simulator.
pub trait Acceptor {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Read, Self::Write, SocketAddr)>>;
}

impl Acceptor for TcpListener {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
    async fn accept(&mut self) -> std::io::Result<(Self::Read, Self::Write, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok((reader, writer, peer))
    }
}

/// Runs the broker until `shutdown` completes. `on_listening` is told the bound address once
/// clients can connect.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let env = ShellEnv {
        storage: FileStorage::default(),
        clock: Arc::new(SystemClock),
        seed,
    };
    let listener = TcpListener::bind(&config.listen).await?;
    run_with(config, env, listener, shutdown, on_listening).await
}

/// [`run`] over any storage, clock and listener: the body the simulator runs under turmoil.
pub async fn run_with<S, A>(
    config: BrokerConfig,
    env: ShellEnv<S>,
    mut listener: A,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()>
where
    S: Storage + Clone,
    A: Acceptor,
{
    let ShellEnv {
        storage,
        clock,
        seed,
    } = env;
    let replicas = {
        let config = config.clone();
        let now = clock.now_ms();
        Arc::new(ReplicaManager::open(storage.clone(), config, seed, now)?)
    };
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
                    biased;
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        let r = Arc::clone(&replicas);
                        let now = clock.now_ms();
                        let removed = crate::blocking::run_blocking(move || r.apply_retention(now)).await.unwrap_or(0);
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
                    biased;
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        let r = Arc::clone(&replicas);
                        let _ = crate::blocking::run_blocking(move || r.flush_all()).await;
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
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (reader, writer, peer) = match accepted {
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
                tracing::info!(%peer, "connected");
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
    crate::blocking::run_blocking(move || {
        r.flush_all();
        g.close();
        r.close();
    })
    .await?;
    tracing::info!("shut down cleanly");
    Ok(())
}
