//! The tokio shell: opens the logs, binds the listener, runs one task per connection plus the
//! background loops (retention, interval flush), and shuts down cleanly: stop accepting, answer
//! what is in flight, fsync, mark every log clean.

pub mod connection;
pub mod group_manager;
mod sendfile;

/// Runs `work` on a blocking thread once every `period` (the first time after one period)
/// until `stop` changes.
fn every<F>(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    work: F,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    F: Fn() + Send + Sync + 'static,
{
    let work = Arc::new(work);
    async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    let w = Arc::clone(&work);
                    let _ = crate::blocking::run_blocking(move || w()).await;
                }
            }
        }
    }
}

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
use crate::metrics::BrokerMetrics;
use crate::replica::ReplicaManager;
use crate::storage::{DataDirLock, FileStorage, Storage};
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
    /// Where to serve `/metrics` (production only: the simulator has none).
    pub metrics_listener: Option<TcpListener>,
}

/// A source of client connections: tokio's `TcpListener` in production, turmoil's simulated
/// one in the simulator.
pub trait Acceptor {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Read, Self::Write, SocketAddr)>> + Send;
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

/// A way to open outbound connections (peer controllers, leaders' Kafka listeners): tokio TCP
/// in production, turmoil's simulated TCP in the simulator.
pub trait Dialer: Send + Sync + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn dial(&self, addr: String) -> crate::cluster::quorum::DialFuture<Self::Read, Self::Write>;
}

/// Outbound connections over tokio TCP.
pub struct TcpDialer;

/// How long an outbound connection attempt may take.
pub const DIAL_TIMEOUT_MS: u64 = 2_000;

impl Dialer for TcpDialer {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn dial(&self, addr: String) -> crate::cluster::quorum::DialFuture<Self::Read, Self::Write> {
        Box::pin(async move {
            let stream = tokio::time::timeout(
                Duration::from_millis(DIAL_TIMEOUT_MS),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
            let _ = stream.set_nodelay(true);
            Ok(stream.into_split())
        })
    }
}

/// The cluster's network: the controller listener (a voter's; broker-only nodes have none) and
/// the dialer. Absent for a single broker.
pub struct ClusterIo<C, D> {
    pub controller_listener: Option<C>,
    pub dialer: Arc<D>,
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
    // Held until this function returns, after the shutdown.
    let _data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the metrics listener {addr}: {e}"))?,
        ),
        None => None,
    };
    let env = ShellEnv {
        storage: FileStorage,
        clock: Arc::new(SystemClock),
        seed,
        metrics_listener,
    };
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the Kafka listener {}: {e}", config.listen))?;
    if config.cluster.is_clustered() {
        let voter = config
            .cluster
            .voters
            .iter()
            .find(|v| v.id == config.node_id);
        let controller_listener = match (&config.cluster.controller_listen, voter) {
            (Some(addr), _) => Some(addr.clone()),
            (None, Some(v)) => Some(v.addr()),
            // A broker-only node: it dials the voters and needs no listener.
            (None, None) => None,
        };
        let controller_listener = match controller_listener {
            Some(addr) => Some(
                TcpListener::bind(&addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding the controller listener {addr}: {e}"))?,
            ),
            None => None,
        };
        let io = ClusterIo {
            controller_listener,
            dialer: Arc::new(TcpDialer),
        };
        run_cluster_with(config, env, listener, io, shutdown, on_listening).await
    } else {
        run_with(config, env, listener, shutdown, on_listening).await
    }
}

/// Refuses a data directory written in the other mode: a single broker's topics are not in any
/// cluster's metadata, so a cluster node would delete them as removed topics; and a cluster
/// node's data served by a single broker would drift from the cluster. A fresh directory is
/// claimed for the mode it starts in.
fn check_data_dir_mode<S: Storage>(storage: &S, config: &BrokerConfig) -> anyhow::Result<()> {
    let metadata = config.data_dir.join(crate::cluster::METADATA_DIR);
    let registry = config.data_dir.join("meta");
    let clustered = config.cluster.is_clustered();
    if clustered && !storage.exists(&metadata) && storage.exists(&registry) {
        anyhow::bail!(
            "{} holds a single broker's data (no {}); a cluster node would treat its topics as \
             deleted. Start it without --voters, or give this node an empty --data-dir",
            config.data_dir.display(),
            crate::cluster::METADATA_DIR
        );
    }
    if !clustered && storage.exists(&metadata) {
        anyhow::bail!(
            "{} belongs to a cluster node ({} exists); start it with --node-id and --voters",
            config.data_dir.display(),
            crate::cluster::METADATA_DIR
        );
    }
    if clustered {
        storage.create_dir_all(&metadata)?;
        storage.sync_dir(&config.data_dir)?;
    }
    Ok(())
}

/// [`run`] as one node of a replicated cluster, over any storage, clock, listeners and dialer.
pub async fn run_cluster_with<S, A, C, D>(
    config: BrokerConfig,
    env: ShellEnv<S>,
    listener: A,
    io: ClusterIo<C, D>,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()>
where
    S: Storage + Clone,
    A: Acceptor,
    C: Acceptor + Send + 'static,
    D: Dialer,
{
    run_inner(config, env, listener, Some(io), shutdown, on_listening).await
}

/// [`run`] over any storage, clock and listener: the body the simulator runs under turmoil.
pub async fn run_with<S, A>(
    config: BrokerConfig,
    env: ShellEnv<S>,
    listener: A,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()>
where
    S: Storage + Clone,
    A: Acceptor,
{
    run_inner::<S, A, TcpListener, TcpDialer>(config, env, listener, None, shutdown, on_listening)
        .await
}

async fn run_inner<S, A, C, D>(
    config: BrokerConfig,
    env: ShellEnv<S>,
    mut listener: A,
    cluster_io: Option<ClusterIo<C, D>>,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()>
where
    S: Storage + Clone,
    A: Acceptor,
    C: Acceptor + Send + 'static,
    D: Dialer,
{
    let ShellEnv {
        storage,
        clock,
        seed,
        metrics_listener,
    } = env;
    let metrics = Arc::new(BrokerMetrics::new());
    check_data_dir_mode(&storage, &config)?;
    // Before any log is opened: a directory of another node's is refused untouched.
    let directory = match &cluster_io {
        None => None,
        Some(_) => {
            use crate::storage::meta_properties::{self, Loaded};
            let loaded = meta_properties::load_or_create(
                &storage,
                &config.data_dir,
                config.node_id,
                seed.rotate_left(41) ^ clock.now_ms() as u64,
            )?;
            if let Loaded::Created(_) = loaded {
                tracing::info!(
                    dir = %config.data_dir.display(),
                    "new data directory identity ({})",
                    meta_properties::META_PROPERTIES_FILE
                );
            }
            Some(loaded.properties())
        }
    };
    let replicas = {
        let config = config.clone();
        let now = clock.now_ms();
        Arc::new(ReplicaManager::open(storage.clone(), config, seed, now)?)
    };
    let bound = listener.local_addr()?;
    let groups = if cluster_io.is_some() {
        GroupManager::clustered(
            config.group.clone(),
            Arc::clone(&clock),
            seed.rotate_left(17),
        )
    } else {
        GroupManager::open(
            storage.clone(),
            &config.data_dir,
            &config.log,
            replicas.ack_policy(),
            config.group.clone(),
            Arc::clone(&clock),
            seed.rotate_left(17),
        )?
    };
    let advertised = advertised(&config, bound)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut background = JoinSet::new();
    let mut quorum_task = None;
    let cluster = match cluster_io {
        None => None,
        Some(io) => {
            let (inbox_tx, inbox_rx) = tokio::sync::mpsc::channel(crate::cluster::QUORUM_INBOX_MAX);
            let incarnation = (crate::cluster::incarnation(seed, clock.now_ms())) as i64;
            let logs_intact = config.fsync == crate::config::FsyncPolicy::Always;
            let view = crate::cluster::ClusterView::new(
                config.node_id,
                incarnation,
                logs_intact,
                directory.expect("cluster nodes load one").directory_id,
                inbox_tx.clone(),
            );
            let c = &config.cluster;
            let mut raft = crate::raft::RaftConfig::new(
                config.node_id,
                c.voters.iter().map(|v| v.id).collect(),
                seed.rotate_left(29),
            );
            raft.election_timeout_ms = c.election_timeout_ms;
            raft.election_jitter_ms = c.election_timeout_ms;
            raft.fetch_timeout_ms = c.election_timeout_ms * 3;
            raft.request_timeout_ms = c.election_timeout_ms * 3;
            raft.fetch_backoff_ms = 20;
            raft.incarnation = incarnation;
            let activity = crate::cluster::quorum::PeerActivity::new(c.voters.iter().map(|v| v.id));
            let params = crate::cluster::quorum::QuorumParams {
                storage: storage.clone(),
                dir: config.data_dir.join(crate::cluster::METADATA_DIR),
                me: config.node_id,
                voters: c.voters.clone(),
                raft,
                controller: crate::cluster::controller::ControllerConfig {
                    session_timeout_ms: c.broker_session_timeout_ms,
                    min_insync_replicas: c.min_insync_replicas.max(1) as usize,
                    auto_leader_rebalance: c.auto_leader_rebalance,
                    leader_imbalance_check_ms: c.leader_imbalance_check_ms,
                    unclean_leader_election: c.unclean_leader_election,
                },
                dialer: Arc::clone(&io.dialer),
                seed,
                inbox: inbox_tx.clone(),
                activity: Arc::clone(&activity),
            };
            tracing::info!(node = config.node_id, incarnation, voters = ?c.voters.iter().map(|v| v.id).collect::<Vec<_>>(), roles = ?c.process_roles, "joining the cluster");
            quorum_task = Some(tokio::spawn(crate::cluster::quorum::run(
                params,
                Arc::clone(&view),
                inbox_rx,
                stop_rx.clone(),
            )));
            if let Some(controller_listener) = io.controller_listener {
                background.spawn(crate::cluster::quorum::serve_peers(
                    controller_listener,
                    c.voters.iter().map(|v| v.id).collect(),
                    inbox_tx,
                    activity,
                    stop_rx.clone(),
                ));
            }
            background.spawn(crate::cluster::replication::run(
                Arc::clone(&view),
                Arc::clone(&replicas),
                Arc::clone(&io.dialer),
                config.cluster.clone(),
                advertised.clone(),
                Arc::clone(&clock),
                Arc::clone(&metrics),
                stop_rx.clone(),
            ));
            {
                // The group coordinator follows the offsets partition's leadership.
                let groups = Arc::clone(&groups);
                let replicas = Arc::clone(&replicas);
                let view = Arc::clone(&view);
                let mut stop = stop_rx.clone();
                background.spawn(async move {
                    loop {
                        let seen = view.version();
                        groups.follow(replicas.partition(group_manager::OFFSETS_TOPIC, 0));
                        tokio::select! {
                            biased;
                            _ = stop.changed() => break,
                            _ = view.changed_since(seen) => {}
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                });
            }
            Some(view)
        }
    };
    let apis = Arc::new(
        KafkaApis::new(
            Arc::clone(&replicas),
            Arc::clone(&groups),
            Arc::clone(&clock),
            advertised,
            cluster.clone(),
        )
        .with_metrics(Arc::clone(&metrics)),
    );
    tokio::pin!(shutdown);
    let quorum_failed = async {
        match quorum_task.as_mut() {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(quorum_failed);
    let quorum_error = |ended: Result<anyhow::Result<()>, tokio::task::JoinError>| match ended {
        Ok(Ok(())) => anyhow::anyhow!("the quorum task stopped"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("the quorum task panicked: {e}"),
    };
    if let Some(view) = &cluster {
        // As a KRaft broker does, serve clients only once this start is registered with the
        // controller: before that the image may predate the restart, and Metadata would be
        // empty or stale.
        let registered = async {
            loop {
                let seen = view.version();
                if view.registered(&view.image()) {
                    break;
                }
                view.changed_since(seen).await;
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                tracing::info!("shutdown before registration");
                let _ = stop_tx.send(true);
                background.abort_all();
                return Ok(());
            }
            _ = registered => tracing::info!(node = view.me, "registered with the controller"),
            // A quorum that cannot start (storage, a quorum state from another voter set)
            // would otherwise leave the broker waiting here for good.
            ended = &mut quorum_failed => {
                let e = quorum_error(ended);
                tracing::error!(error = %e, "metadata quorum failed before registration");
                let _ = stop_tx.send(true);
                background.abort_all();
                return Err(e);
            }
        }
    }
    if let Some(listener) = metrics_listener {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        let apis = Arc::clone(&apis);
        let metrics = Arc::clone(&metrics);
        let render = Arc::new(move || metrics.render(&crate::metrics::snapshot(&apis)));
        background.spawn(crate::metrics::http::serve(
            listener,
            render,
            stop_rx.clone(),
        ));
    }
    tracing::info!(listen = %bound, data_dir = %config.data_dir.display(), fsync = %config.fsync, "broker started");
    on_listening(bound);

    {
        let replicas = Arc::clone(&replicas);
        let clock = Arc::clone(&clock);
        let period = Duration::from_millis(config.retention_check_interval_ms);
        background.spawn(every(period, stop_rx.clone(), move || {
            let removed = replicas.apply_retention(clock.now_ms());
            if removed > 0 {
                tracing::info!(segments = removed, "retention removed segments");
            }
        }));
    }
    if cluster.is_some() {
        let replicas = Arc::clone(&replicas);
        let period = Duration::from_millis(crate::replica::HIGH_WATERMARK_CHECKPOINT_MS);
        background.spawn(every(period, stop_rx.clone(), move || {
            replicas.checkpoint_high_watermarks()
        }));
    }
    if let FsyncPolicy::Interval { ms } = config.fsync {
        let replicas = Arc::clone(&replicas);
        let period = Duration::from_millis(ms);
        background.spawn(every(period, stop_rx.clone(), move || replicas.flush_all()));
    }

    let limits = ConnectionLimits {
        max_frame_bytes: config.max_frame_bytes,
        max_inflight_bytes: config.max_inflight_bytes,
        max_inflight_requests: config.max_inflight_requests,
        idle_timeout_ms: config.idle_timeout_ms,
    };
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let mut connections = JoinSet::new();
    let mut fatal: Option<anyhow::Error> = None;
    let displaced = async {
        match &cluster {
            Some(view) => view.displaced().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(displaced);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            why = &mut displaced => {
                tracing::error!("{why}; stopping this one (the later keeps the id, as with a \
                    replaced disk)");
                fatal = Some(anyhow::anyhow!(why));
                break;
            }
            ended = &mut quorum_failed => {
                let e = quorum_error(ended);
                tracing::error!(error = %e, "metadata quorum failed; shutting down");
                fatal = Some(e);
                break;
            }
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
                let metrics = Arc::clone(&metrics);
                metrics.connection_opened();
                connections.spawn(async move {
                    connection::serve(reader, writer, peer, apis, limits, stop).await;
                    metrics.connection_closed();
                    drop(slot);
                });
            }
        }
    }

    if let (Some(view), None) = (&cluster, &fatal) {
        crate::cluster::controlled_shutdown(view).await;
    }
    tracing::info!(
        connections = connections.len(),
        "shutting down: no new connections; answering in-flight requests"
    );
    drop(listener);
    apis.begin_stopping();
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
    if let Some(e) = fatal {
        return Err(e);
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

#[cfg(test)]
mod mode_tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_voters, ClusterConfig};
    use crate::storage::MemStorage;

    #[test]
    fn a_data_dir_serves_only_the_mode_it_was_made_in() {
        let s = MemStorage::new();
        let single = BrokerConfig {
            data_dir: "/d".into(),
            ..BrokerConfig::default()
        };
        let node = BrokerConfig {
            cluster: ClusterConfig {
                voters: parse_voters("1@a:1,2@b:2,3@c:3").unwrap(),
                ..ClusterConfig::default()
            },
            ..single.clone()
        };
        // A single broker's directory (it has a topic registry) is refused by a cluster node.
        s.create_dir_all(Path::new("/d/meta")).unwrap();
        assert!(check_data_dir_mode(&s, &single).is_ok());
        let e = check_data_dir_mode(&s, &node).unwrap_err().to_string();
        assert!(e.contains("single broker"), "{e}");
        // A fresh directory is claimed by the cluster node; then a single broker refuses it.
        let fresh = BrokerConfig {
            data_dir: "/e".into(),
            ..node.clone()
        };
        assert!(check_data_dir_mode(&s, &fresh).is_ok());
        s.create_dir_all(Path::new("/e/meta")).unwrap();
        assert!(
            check_data_dir_mode(&s, &fresh).is_ok(),
            "a restart of the node"
        );
        let single_e = BrokerConfig {
            data_dir: "/e".into(),
            ..single
        };
        let e = check_data_dir_mode(&s, &single_e).unwrap_err().to_string();
        assert!(e.contains("cluster node"), "{e}");
    }
}
