//! The cluster layer: four real broker nodes (`server::run_cluster_with`) under turmoil: three
//! in combined mode (each a metadata-quorum voter and a broker) and one broker-only node (an
//! observer of the quorum, reached by the voters only over the connections it dials). Each has
//! its own `MemStorage` and its own skewable clock; topics are replicated on all four (min ISR
//! 2, acks=all, fsync always), so the broker-only node leads and follows partitions too. The
//! Jepsen workload (`workload.rs`) finds partition leaders through Metadata and follows them
//! across failovers. A seeded fault schedule power-cuts nodes (no FIN; unsynced writes lost or
//! torn) and restarts them (once per run at most, on a replaced, empty disk), isolates a node from its peers and/or the clients, wedges the
//! connections between two nodes (a link drops segments; nothing resets), fails a node's log
//! syncs until it is restarted, fills a node's disk (all of it, or only its topic logs' volume)
//! for a while and then makes room without a restart, skews clocks, and
//! sometimes isolates a follower long enough to leave the ISR and then crashes another node (the
//! lagging replica must not be elected); rarely two nodes go down at once.
//!
//! At the end every fault is healed, every node restarted, the clients wait for every ISR to be
//! full again and read every partition from its leader up to a high watermark covering every
//! acknowledged offset. Then the history is checked (`invariants`), plus checks that need the
//! cluster: one leader per (partition, leader epoch) across every Metadata response; high
//! watermarks from one leader epoch never go back in real time; and every in-sync replica's log,
//! opened with the broker's own `Log` over that node's storage, holds the same bytes below the
//! final high watermark.
//!
//! Determinism as in `system.rs`: one thread drives turmoil; every choice comes from ChaCha
//! seeded by the run's seed; each start of a node gets its own seed (run seed, node, start
//! count), so incarnations differ per start.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use broker::cluster::quorum::DialFuture;
use broker::config::{BrokerConfig, ClusterConfig, FsyncPolicy, ProcessRoles, Voter};
use broker::log::Log;
use broker::replica::selector::ReplicaSelector;
use broker::server::{Acceptor, ClusterIo, Dialer, ShellEnv};
use broker::storage::{MemStorage, TornWrite};
use invariants::{check_all, CheckOptions, History, Op, OpKind, ReplicaLog, OBSERVER};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::system::{note, SimClock, SimConnector, SystemFaults, EPOCH_SECS, FSYNC_MS};
use crate::trace::Trace;
use crate::workload::{self, HighWatermarkSeen, LeaderSeen, Router, WorkloadConfig};

/// Broker nodes: the voters first, then the broker-only node.
const NODES: usize = 4;
/// Nodes 1..=VOTERS vote (combined mode); the others are broker-only observers.
const VOTERS: usize = 3;
const CLIENTS: &str = "clients";
const KAFKA_PORT: u16 = 9092;
const CONTROLLER_PORT: u16 = 9093;
const TOPIC: &str = "jepsen";
/// The consumer's rack (client.rack): node 2's, so it reads from node 2 where node 2 follows
/// (KIP-392).
const CLIENT_RACK: &str = "r2";
const DATA_DIR: &str = "/data";
/// One fault decision per this many simulated ms, on average.
const FAULT_EVERY_MS: u32 = 400;
/// Chance that a single-node crash also replaces the node's disk (at most once per run).
const WIPE_P: f64 = 0.3;
/// A disk is replaced only this long after the last node came back.
const WIPE_SETTLED_MS: u64 = 1_500;
/// No fault before the cluster has had this long to elect a controller and create the topic.
const FAULTS_FROM_MS: u64 = 1_500;
/// Largest node clock step, either way.
const CLOCK_SKEW_MS_MAX: i64 = 5_000;
/// A follower this far behind leaves the ISR (short, so isolations shrink ISRs).
const REPLICA_LAG_MS: u64 = 1_000;
/// After healing, how long the clients wait for every ISR to hold every replica.
const SETTLE_MS_MAX: u64 = 30_000;
/// An operator's reassignment of a random partition every this many simulated ms, on average
/// (moves start after the faults may, and stop when healing starts).
const MOVE_EVERY_MS: u64 = 2_500;
/// How long the clients try to put every partition back on all nodes after healing.
const RESTORE_MS_MAX: u64 = 60_000;
/// How long the final read may take.
const FINAL_READ_MS_MAX: u64 = 120_000;
/// Simulated time allowed on top of the run for healing and the final read.
const DRAIN_MS_MAX: u64 = 600_000;

/// The start of the workload topic's partition directories on each node.
fn topic_logs() -> String {
    format!("{DATA_DIR}/{TOPIC}-")
}

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// One cluster run.
#[derive(Clone, Debug)]
pub struct ClusterSimConfig {
    pub seed: u64,
    /// Simulated time the producers run for.
    pub run_ms: u64,
    pub partitions: i32,
    pub producers: u32,
    /// `disk` is not injected here (a full disk is the system layer's).
    pub faults: SystemFaults,
    /// An operator reassigns partitions while the faults run (and puts every partition back on
    /// all nodes after healing, before the final checks).
    pub moves: bool,
    pub trace: bool,
}

impl Default for ClusterSimConfig {
    fn default() -> Self {
        ClusterSimConfig {
            seed: 0,
            run_ms: 20_000,
            partitions: 3,
            producers: 3,
            faults: SystemFaults::ALL,
            moves: true,
            trace: false,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct ClusterSimResult {
    pub violations: Vec<String>,
    pub summary: String,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub sim_ms: u64,
}

/// Both halves of one turmoil stream. turmoil answers data that reaches a dropped read half
/// with a reset, where a kernel keeps the socket open until both halves are gone (tokio's
/// `OwnedReadHalf` drops silently; its `OwnedWriteHalf` sends a FIN). The peer transport
/// drops the half it does not use, so the halves here behave as tokio's do: the read half
/// lives as long as either wrapper, the write half (and its FIN) goes with its wrapper.
struct Halves {
    read: turmoil::net::tcp::OwnedReadHalf,
    write: Option<turmoil::net::tcp::OwnedWriteHalf>,
}

/// The read side of [`Halves`].
pub(crate) struct SimRead(Arc<Mutex<Halves>>);
/// The write side of [`Halves`].
pub(crate) struct SimWrite(Arc<Mutex<Halves>>);

fn split(stream: turmoil::net::TcpStream) -> (SimRead, SimWrite) {
    let (read, write) = stream.into_split();
    let halves = Arc::new(Mutex::new(Halves {
        read,
        write: Some(write),
    }));
    (SimRead(Arc::clone(&halves)), SimWrite(halves))
}

fn lock(h: &Mutex<Halves>) -> std::sync::MutexGuard<'_, Halves> {
    h.lock().unwrap_or_else(|p| p.into_inner())
}

impl AsyncRead for SimRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut lock(&self.0).read).poll_read(cx, buf)
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "write half closed")
}

impl AsyncWrite for SimWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match lock(&self.0).write.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match lock(&self.0).write.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Err(closed())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match lock(&self.0).write.as_mut() {
            Some(w) => Pin::new(w).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl Drop for SimWrite {
    fn drop(&mut self) {
        let write = lock(&self.0).write.take();
        drop(write);
    }
}

/// turmoil's listener, handing out [`SimRead`]/[`SimWrite`] halves.
struct NodeListener(turmoil::net::TcpListener);

impl Acceptor for NodeListener {
    type Read = SimRead;
    type Write = SimWrite;
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
    async fn accept(&mut self) -> std::io::Result<(SimRead, SimWrite, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let (r, w) = split(stream);
        Ok((r, w, peer))
    }
}

/// turmoil's TCP as the broker's outbound [`Dialer`].
struct SimDialer;

impl Dialer for SimDialer {
    type Read = SimRead;
    type Write = SimWrite;
    fn dial(&self, addr: String) -> DialFuture<SimRead, SimWrite> {
        Box::pin(async move {
            let stream = tokio::time::timeout(
                Duration::from_millis(broker::server::DIAL_TIMEOUT_MS),
                turmoil::net::TcpStream::connect(addr),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
            Ok(split(stream))
        })
    }
}

fn node_config(i: usize) -> BrokerConfig {
    let mut config = BrokerConfig {
        listen: format!("0.0.0.0:{KAFKA_PORT}"),
        advertise: Some(format!("{}:{KAFKA_PORT}", node_name(i))),
        data_dir: PathBuf::from(DATA_DIR),
        fsync: FsyncPolicy::Always,
        node_id: i as i32 + 1,
        default_partitions: 1,
        ..BrokerConfig::default()
    };
    config.log.segment_bytes = 64 * 1024;
    config.group.initial_rebalance_delay_ms = 300;
    config.cluster = ClusterConfig {
        voters: (0..VOTERS)
            .map(|v| Voter {
                id: v as i32 + 1,
                host: node_name(v),
                port: CONTROLLER_PORT,
            })
            .collect(),
        default_replication_factor: NODES as i16,
        min_insync_replicas: 2,
        replica_lag_time_max_ms: REPLICA_LAG_MS,
        // Node i+1 in rack r{i+1}; the consumer in rack r2 reads from node 2 when it follows.
        rack: Some(format!("r{}", i + 1)),
        replica_selector: ReplicaSelector::RackAware,
        process_roles: if i < VOTERS {
            ProcessRoles::Combined
        } else {
            ProcessRoles::Broker
        },
        ..ClusterConfig::default()
    };
    config
}

/// One node's fault state.
struct Node {
    storage: MemStorage,
    skew_ms: Arc<AtomicI64>,
    down_until: Option<u64>,
    isolated_until: Option<u64>,
    /// The isolation also cuts the node from the clients.
    isolated_from_clients: bool,
    /// When the isolation heals, crash another node (the lagging one must not be elected).
    failover_on_heal: bool,
    /// The node's topic logs fail every sync until then; then it is power-cut and restarted
    /// (what an operator does about a failing disk).
    syncs_failing_until: Option<u64>,
    /// The node's disk is full until then (appends fail with ENOSPC): the whole disk, or
    /// (`false`) only the volume under its topic logs, the metadata log having room. Then
    /// space returns, with no restart.
    full_until: Option<(u64, bool)>,
}

/// A link that drops segments, one way or both, until a step.
#[derive(Clone, Copy)]
struct Dropping {
    from: usize,
    to: usize,
    both: bool,
    until: u64,
}

/// The fault schedule: what is broken and when it heals. Host index `NODES` is the clients.
struct Faults {
    rng: ChaCha8Rng,
    /// Draws whether a crash also replaces the node's disk, apart from `rng` so that runs
    /// without a wipe keep the schedule they had before wipes existed.
    wipe_rng: ChaCha8Rng,
    /// At most one disk is replaced per run.
    wiped: bool,
    /// The last step at which a node came back (restarted, or rejoined its peers): its copies
    /// may be out of the ISR until they catch up.
    came_back_at: u64,
    enabled: SystemFaults,
    nodes: Vec<Node>,
    /// Host pairs (a < b) whose links currently hold their messages.
    held: BTreeSet<(usize, usize)>,
    /// Two nodes whose link drops every segment from the first to the second (and back, if
    /// `both`) until a step: a middlebox that forgot its connections. turmoil's TCP does not
    /// retransmit, so every connection between them with a segment lost stays wedged for good
    /// (no reset, no error): only the nodes' own timeouts can end it.
    dropping: Option<Dropping>,
}

impl Faults {
    fn host(i: usize) -> String {
        if i == NODES {
            CLIENTS.to_string()
        } else {
            node_name(i)
        }
    }

    fn impaired(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                n.down_until.is_some()
                    || n.isolated_until.is_some()
                    || n.syncs_failing_until.is_some()
                    || n.full_until.is_some()
            })
            .count()
            + usize::from(self.dropping.is_some())
    }

    fn stop_dropping(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        if let Some(d) = self.dropping.take() {
            let (a, b) = (node_name(d.from), node_name(d.to));
            if d.both {
                sim.repair(a.clone(), b.clone());
            } else {
                sim.repair_oneway(a.clone(), b.clone());
            }
            note(trace, step, format_args!("{a} to {b} delivers again"));
        }
    }

    fn wants_cut(&self, a: usize, b: usize) -> bool {
        let isolates = |x: usize, other: usize| {
            x < NODES
                && self.nodes[x].isolated_until.is_some()
                && (other < NODES || self.nodes[x].isolated_from_clients)
        };
        isolates(a, b) || isolates(b, a)
    }

    /// Brings every link to its wanted state. An isolation holds a link's messages and
    /// delivers them when it heals, as TCP's retransmissions would: turmoil's TCP does not
    /// retransmit, so a dropped segment would wedge its connection forever.
    fn apply_links(&mut self, sim: &mut turmoil::Sim<'_>) {
        for a in 0..=NODES {
            for b in a + 1..=NODES {
                let want = self.wants_cut(a, b);
                let is = self.held.contains(&(a, b));
                if want && !is {
                    sim.hold(Self::host(a), Self::host(b));
                    self.held.insert((a, b));
                } else if !want && is {
                    sim.release(Self::host(a), Self::host(b));
                    self.held.remove(&(a, b));
                }
            }
        }
    }

    /// A power loss of node `i` for `ms`: no FIN (its links drop everything while it is torn
    /// down, as in `system.rs`; segments reaching the restarted host are answered with
    /// resets), and its disk keeps only what was synced, maybe torn.
    fn crash(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        i: usize,
        ms: u64,
        step: u64,
        trace: &mut Trace,
    ) {
        for j in (0..=NODES).filter(|&j| j != i) {
            sim.partition(node_name(i), Self::host(j));
        }
        sim.crash(node_name(i));
        for j in (0..=NODES).filter(|&j| j != i) {
            sim.repair(node_name(i), Self::host(j));
            if self.held.contains(&(i.min(j), i.max(j))) {
                sim.hold(node_name(i), Self::host(j));
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
        note(
            trace,
            step,
            format_args!("{} crashed for {ms} ms ({torn:?})", node_name(i)),
        );
        self.nodes[i].storage.crash(torn);
        self.nodes[i].down_until = Some(step + ms);
    }

    fn up_nodes_except(&self, i: usize) -> Vec<usize> {
        (0..NODES)
            .filter(|&j| j != i && self.nodes[j].down_until.is_none())
            .collect()
    }

    fn step(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        if self.dropping.is_some_and(|d| step >= d.until) {
            self.stop_dropping(sim, step, trace);
        }
        for i in 0..NODES {
            if self.nodes[i].syncs_failing_until.is_some_and(|t| step >= t) {
                self.replace_failing_disk(sim, i, step, trace);
            }
            if self.nodes[i].full_until.is_some_and(|(t, _)| step >= t) {
                self.make_room(i, step, trace);
            }
        }
        for i in 0..NODES {
            if self.nodes[i].down_until.is_some_and(|t| step >= t) {
                self.nodes[i].down_until = None;
                self.came_back_at = step;
                sim.bounce(node_name(i));
                note(trace, step, format_args!("{} restarted", node_name(i)));
            }
            if self.nodes[i].isolated_until.is_some_and(|t| step >= t) {
                self.nodes[i].isolated_until = None;
                self.came_back_at = step;
                self.apply_links(sim);
                note(trace, step, format_args!("{} rejoined", node_name(i)));
                if std::mem::take(&mut self.nodes[i].failover_on_heal) {
                    let others = self.up_nodes_except(i);
                    if !others.is_empty() {
                        let j = others[self.rng.gen_range(0..others.len())];
                        let ms = self.rng.gen_range(1_000..4_000);
                        self.crash(sim, j, ms, step, trace);
                    }
                }
            }
        }
        if self.rng.gen_range(0..FAULT_EVERY_MS) != 0 {
            return;
        }
        let calm = self.impaired() == 0;
        // A disk is replaced only once every copy had time to get back in sync: replacing the
        // only eligible copy of a partition (say, while the other one still catches up after a
        // restart) leaves the partition offline for good, as it should (seed 10,601,435).
        let settled = step >= self.came_back_at + WIPE_SETTLED_MS;
        let i = self.rng.gen_range(0..NODES);
        match self.rng.gen_range(0..13u32) {
            0..=2 if self.enabled.crash && calm => {
                let ms = self.rng.gen_range(200..3_000);
                self.crash(sim, i, ms, step, trace);
                if settled && !self.wiped && self.wipe_rng.gen_bool(WIPE_P) {
                    // The disk is replaced while the node is down: it comes back with an empty
                    // data directory (a new directory id, an empty metadata log).
                    self.wiped = true;
                    self.nodes[i].storage.wipe();
                    note(
                        trace,
                        step,
                        format_args!("{}'s disk replaced by an empty one", node_name(i)),
                    );
                }
            }
            3 | 4 if self.enabled.net && calm => {
                let ms = self.rng.gen_range(300..4_000);
                let clients = self.rng.gen_bool(0.5);
                self.nodes[i].isolated_until = Some(step + ms);
                self.nodes[i].isolated_from_clients = clients;
                self.apply_links(sim);
                note(
                    trace,
                    step,
                    format_args!(
                        "{} isolated from its peers{} for {ms} ms",
                        node_name(i),
                        if clients { " and the clients" } else { "" }
                    ),
                );
            }
            5 | 6 if self.enabled.net && self.enabled.crash && calm => {
                // Long enough to leave the ISR while the others take writes; then another node
                // dies before this one can catch up from it.
                let ms = self.rng.gen_range(2 * REPLICA_LAG_MS..4 * REPLICA_LAG_MS);
                self.nodes[i].isolated_until = Some(step + ms);
                self.nodes[i].isolated_from_clients = false;
                self.nodes[i].failover_on_heal = true;
                self.apply_links(sim);
                note(
                    trace,
                    step,
                    format_args!(
                        "{} isolated from its peers for {ms} ms, then another node crashes",
                        node_name(i)
                    ),
                );
            }
            7..=9 if self.enabled.clock => {
                let skew = self.rng.gen_range(-CLOCK_SKEW_MS_MAX..=CLOCK_SKEW_MS_MAX);
                self.nodes[i].skew_ms.store(skew, Ordering::Relaxed);
                note(
                    trace,
                    step,
                    format_args!("{} clock skew now {skew} ms", node_name(i)),
                );
            }
            10 if self.enabled.crash && calm && self.rng.gen_bool(0.3) => {
                // Rarely, two nodes down at once: two voters leave no quorum; a voter and the
                // broker-only node leave a quorum and an ISR of at most 2.
                let j = (i + self.rng.gen_range(1..NODES)) % NODES;
                let ms = self.rng.gen_range(200..1_500);
                self.crash(sim, i, ms, step, trace);
                let ms = self.rng.gen_range(200..1_500);
                self.crash(sim, j, ms, step, trace);
            }
            11 if self.enabled.net && calm => {
                let j = (i + self.rng.gen_range(1..NODES)) % NODES;
                let ms = self.rng.gen_range(20..1_000);
                let both = self.rng.gen_bool(0.5);
                if both {
                    sim.partition(node_name(i), node_name(j));
                } else {
                    sim.partition_oneway(node_name(i), node_name(j));
                }
                self.dropping = Some(Dropping {
                    from: i,
                    to: j,
                    both,
                    until: step + ms,
                });
                note(
                    trace,
                    step,
                    format_args!(
                        "{} to {}{} drops every segment for {ms} ms (connections with a \
                         segment lost stay wedged)",
                        node_name(i),
                        node_name(j),
                        if both { " and back" } else { "" }
                    ),
                );
            }
            12 if self.enabled.crash && calm && self.rng.gen_bool(0.5) => {
                let ms = self.rng.gen_range(500..4_000);
                let whole = self.rng.gen_bool(0.5);
                let storage = &self.nodes[i].storage;
                if whole {
                    storage.set_disk_full(true);
                } else {
                    storage.set_full_under(&topic_logs(), true);
                }
                self.nodes[i].full_until = Some((step + ms, whole));
                note(
                    trace,
                    step,
                    format_args!(
                        "{}'s {} no room for {ms} ms (ENOSPC), then room again with no restart",
                        node_name(i),
                        if whole { "disk has" } else { "topic logs have" }
                    ),
                );
            }
            12 if self.enabled.crash && calm => {
                let ms = self.rng.gen_range(500..4_000);
                self.nodes[i].storage.fail_syncs(&topic_logs(), true);
                self.nodes[i].syncs_failing_until = Some(step + ms);
                note(
                    trace,
                    step,
                    format_args!(
                        "{}'s topic logs fail every sync for {ms} ms, then it restarts",
                        node_name(i)
                    ),
                );
            }
            _ => {}
        }
    }

    /// Ends node `i`'s failing syncs: the operator power-cuts it and starts it again.
    fn replace_failing_disk(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        i: usize,
        step: u64,
        trace: &mut Trace,
    ) {
        if self.nodes[i].syncs_failing_until.take().is_some() {
            self.nodes[i].storage.fail_syncs(&topic_logs(), false);
            let ms = self.rng.gen_range(200..1_000);
            self.crash(sim, i, ms, step, trace);
        }
    }

    /// Ends node `i`'s full disk: an operator made room; the broker runs on.
    fn make_room(&mut self, i: usize, step: u64, trace: &mut Trace) {
        if let Some((_, whole)) = self.nodes[i].full_until.take() {
            if whole {
                self.nodes[i].storage.set_disk_full(false);
            } else {
                self.nodes[i].storage.set_full_under(&topic_logs(), false);
            }
            note(
                trace,
                step,
                format_args!("{}'s disk has room again", node_name(i)),
            );
        }
    }

    /// Heals everything: every node up, every link repaired (clock skews stay).
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, step: u64, trace: &mut Trace) {
        self.stop_dropping(sim, step, trace);
        for i in 0..NODES {
            self.replace_failing_disk(sim, i, step, trace);
            self.make_room(i, step, trace);
        }
        for i in 0..NODES {
            let n = &mut self.nodes[i];
            n.isolated_until = None;
            n.failover_on_heal = false;
            if n.down_until.take().is_some() {
                sim.bounce(node_name(i));
            }
        }
        self.apply_links(sim);
        note(
            trace,
            step,
            format_args!("healed: every node up, links repaired"),
        );
    }
}

/// What the clients hand back: the workload's outcome and the ISRs after the final read.
struct ClientsOutcome {
    workload: workload::WorkloadOutcome,
    /// Whether every ISR held every replica before the final read.
    settled: bool,
    /// The partitions' state as last seen while settling.
    settle_view: String,
    /// Per partition: (leader, leader epoch, ISR) after the final read.
    final_metadata: BTreeMap<i32, (i32, i32, Vec<i32>)>,
}

/// The partitions' leaders, epochs and ISRs as `router` last saw them.
fn describe(router: &Router<SimConnector>, partitions: i32) -> String {
    (0..partitions)
        .map(|p| {
            format!(
                "p{p}: leader {:?} epoch {:?} isr {:?}",
                router.leaders_view().get(&p),
                router.epochs.get(&p),
                router.isrs.get(&p)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asks for metadata until every partition's ISR holds every node (or `within` passes).
async fn wait_for_full_isr(
    router: &mut Router<SimConnector>,
    partitions: i32,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempt = 0u32;
    while tokio::time::Instant::now() < deadline {
        let all = router.refresh_metadata(attempt).await;
        attempt += 1;
        if all && (0..partitions).all(|p| router.isrs.get(&p).is_some_and(|i| i.len() == NODES)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// AlterPartitionReassignments for one partition of the topic (v0): the partition's error code
/// and message, or why the call failed.
async fn reassign(
    router: &mut Router<SimConnector>,
    addr: &str,
    partition: i32,
    target: Option<Vec<i32>>,
) -> Result<(i16, String), String> {
    let replicas = target.map(|t| t.into_iter().map(BrokerId).collect());
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(2_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(replicas)])]);
    let response = router
        .call(addr, &request, 0)
        .await
        .map_err(|e| e.to_string())?;
    if response.error_code != 0 {
        return Ok((response.error_code, "request-level error".into()));
    }
    let row = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or("no row for the partition")?;
    let message = row.error_message.as_ref().map(|m| m.to_string());
    Ok((row.error_code, message.unwrap_or_default()))
}

/// An operator moving replicas while the faults run: every ~[`MOVE_EVERY_MS`] a random
/// partition gets a random target of two or three nodes in random order (or, one time in
/// five, its move cancelled), through a random node, until healing starts.
async fn move_replicas(
    config: WorkloadConfig,
    stop: Rc<Cell<bool>>,
    done: Rc<Cell<bool>>,
    start: tokio::time::Instant,
    events: Rc<RefCell<Vec<(u64, String)>>>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x4D0F_E5EE);
    let mut router = Router::new(SimConnector, &config, "mover");
    tokio::time::sleep(Duration::from_millis(FAULTS_FROM_MS)).await;
    while !stop.get() {
        let pause = rng.gen_range(MOVE_EVERY_MS / 2..MOVE_EVERY_MS * 3 / 2);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if stop.get() {
            break;
        }
        let partition = rng.gen_range(0..config.partitions);
        let target = if rng.gen_bool(0.2) {
            None
        } else {
            let mut ids: Vec<i32> = (1..=NODES as i32).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.gen_range(0..=i));
            }
            ids.truncate(rng.gen_range(2..=NODES));
            Some(ids)
        };
        let addr = format!("{}:{KAFKA_PORT}", node_name(rng.gen_range(0..NODES)));
        let what = format!("{target:?}");
        let answer = reassign(&mut router, &addr, partition, target).await;
        let t = start.elapsed().as_nanos() as u64;
        events.borrow_mut().push((
            t,
            format!("mover: p{partition} to {what} via {addr}: {answer:?}"),
        ));
    }
    done.set(true);
}

/// After healing: every partition back on all nodes (cancelling or replacing any move), until
/// Metadata shows every ISR full, within [`RESTORE_MS_MAX`].
async fn restore_replicas(
    config: &WorkloadConfig,
    start: tokio::time::Instant,
    events: &Rc<RefCell<Vec<(u64, String)>>>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RESTORE_MS_MAX);
    let mut router = Router::new(SimConnector, config, "restore");
    let all: Vec<i32> = (1..=NODES as i32).collect();
    let mut attempt = 0u32;
    while tokio::time::Instant::now() < deadline {
        let addr = router.any_broker(attempt);
        attempt += 1;
        let mut accepted = true;
        for p in 0..config.partitions {
            let answer = reassign(&mut router, &addr, p, Some(all.clone())).await;
            accepted &= matches!(answer, Ok((0, _)));
            let t = start.elapsed().as_nanos() as u64;
            let line = format!("restore: p{p} to {all:?} via {addr}: {answer:?}");
            events.borrow_mut().push((t, line));
        }
        if accepted
            && wait_for_full_isr(&mut router, config.partitions, Duration::from_secs(10)).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs one seed of the cluster and checks it.
pub fn run_cluster_seed(config: &ClusterSimConfig) -> ClusterSimResult {
    let seed = config.seed;
    let _ = crate::take_panic();
    broker::blocking::set_inline_latency(Duration::from_millis(FSYNC_MS));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        // A listener's backlog as tokio's (1024), not turmoil's 64, which panics when full: a
        // node binds its port before it serves (a cluster node registers first), and a kernel
        // queues connections meanwhile.
        .tcp_capacity(1024)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_millis(config.run_ms + DRAIN_MS_MAX))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(5))
        .build();

    let mut nodes = Vec::new();
    for i in 0..NODES {
        let storage = MemStorage::new();
        let skew_ms = Arc::new(AtomicI64::new(0));
        {
            let storage = storage.clone();
            let skew_ms = Arc::clone(&skew_ms);
            let starts = Rc::new(Cell::new(0u64));
            sim.host(node_name(i), move || {
                let storage = storage.clone();
                let skew_ms = Arc::clone(&skew_ms);
                starts.set(starts.get() + 1);
                let start_seed = seed
                    ^ ((i as u64 + 1) << 56)
                    ^ starts.get().wrapping_mul(0x9E37_79B9_7F4A_7C15);
                async move {
                    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", KAFKA_PORT)).await?;
                    // Only voters listen for the quorum; a broker-only node dials out.
                    let controller = if i < VOTERS {
                        let l =
                            turmoil::net::TcpListener::bind(("0.0.0.0", CONTROLLER_PORT)).await?;
                        Some(NodeListener(l))
                    } else {
                        None
                    };
                    let env = ShellEnv {
                        storage,
                        clock: Arc::new(SimClock { skew_ms }),
                        seed: start_seed,
                        metrics_listener: None,
                    };
                    let io = ClusterIo {
                        controller_listener: controller,
                        dialer: Arc::new(SimDialer),
                    };
                    broker::server::run_cluster_with(
                        node_config(i),
                        env,
                        NodeListener(listener),
                        io,
                        std::future::pending::<()>(),
                        |_| {},
                    )
                    .await
                    .map_err(|e| e.to_string().into())
                }
            });
        }
        nodes.push(Node {
            storage,
            skew_ms,
            down_until: None,
            isolated_until: None,
            isolated_from_clients: false,
            failover_on_heal: false,
            syncs_failing_until: None,
            full_until: None,
        });
    }

    let workload_config = WorkloadConfig {
        bootstrap: format!("{}:{KAFKA_PORT}", node_name(0)),
        topic: TOPIC.into(),
        partitions: config.partitions,
        create_topic: true,
        replication_factor: NODES as i16,
        producers: config.producers,
        group_members: 0,
        run_for: Duration::from_millis(config.run_ms),
        send_interval: Duration::from_millis(5),
        request_timeout: Duration::from_millis(2_000),
        final_read_timeout: Duration::from_millis(FINAL_READ_MS_MAX),
        seed,
        value_base: 0,
        client_rack: Some(CLIENT_RACK.into()),
        not_coordinator_may_write: false,
    };
    let quiesced = Rc::new(Cell::new(false));
    let heal_requested = Rc::new(Cell::new(false));
    let outcome: Rc<RefCell<Option<ClientsOutcome>>> = Rc::new(RefCell::new(None));
    let move_events: Rc<RefCell<Vec<(u64, String)>>> = Rc::new(RefCell::new(Vec::new()));
    {
        let quiesced = Rc::clone(&quiesced);
        let heal_requested = Rc::clone(&heal_requested);
        let outcome = Rc::clone(&outcome);
        let move_events = Rc::clone(&move_events);
        let workload_config = workload_config.clone();
        let moves = config.moves;
        sim.client(CLIENTS, async move {
            let settled = Rc::new(Cell::new(false));
            let settle_view = Rc::new(RefCell::new(String::new()));
            let mover_done = Rc::new(Cell::new(!moves));
            // The clients' start, as the workload's event times count from it.
            let start = tokio::time::Instant::now();
            if moves {
                tokio::task::spawn_local(move_replicas(
                    workload_config.clone(),
                    Rc::clone(&heal_requested),
                    Rc::clone(&mover_done),
                    start,
                    Rc::clone(&move_events),
                ));
            }
            let quiesce = {
                let settled = Rc::clone(&settled);
                let settle_view = Rc::clone(&settle_view);
                let config = workload_config.clone();
                async move {
                    heal_requested.set(true);
                    while !quiesced.get() || !mover_done.get() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if moves {
                        restore_replicas(&config, start, &move_events).await;
                    }
                    let mut router = Router::new(SimConnector, &config, "settle");
                    let full = wait_for_full_isr(
                        &mut router,
                        config.partitions,
                        Duration::from_millis(SETTLE_MS_MAX),
                    )
                    .await;
                    settled.set(full);
                    *settle_view.borrow_mut() = describe(&router, config.partitions);
                }
            };
            let result = workload::run(SimConnector, workload_config.clone(), quiesce).await;
            let mut router = Router::new(SimConnector, &workload_config, "final-metadata");
            wait_for_full_isr(
                &mut router,
                workload_config.partitions,
                Duration::from_millis(SETTLE_MS_MAX),
            )
            .await;
            let final_metadata = (0..workload_config.partitions)
                .filter_map(|p| {
                    let leader = *router.leaders_view().get(&p)?;
                    let epoch = *router.epochs.get(&p)?;
                    let isr = router.isrs.get(&p)?.clone();
                    Some((p, (leader, epoch, isr)))
                })
                .collect();
            *outcome.borrow_mut() = Some(ClientsOutcome {
                workload: result,
                settled: settled.get(),
                settle_view: settle_view.take(),
                final_metadata,
            });
            Ok(())
        });
    }

    let mut trace = Trace::new(config.trace);
    let mut faults = Faults {
        rng: ChaCha8Rng::seed_from_u64(seed ^ 0xC105_7E55),
        wipe_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x0D15_C5EE_D000),
        wiped: false,
        came_back_at: 0,
        enabled: config.faults,
        nodes,
        held: BTreeSet::new(),
        dropping: None,
    };
    let mut violations = Vec::new();
    let mut step = 0u64;
    loop {
        if heal_requested.get() && !quiesced.get() {
            faults.heal(&mut sim, step, &mut trace);
            quiesced.set(true);
        } else if !heal_requested.get() && step > FAULTS_FROM_MS {
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
    let taken = outcome.borrow_mut().take();
    if let Some(out) = taken {
        let w = out.workload;
        for (time_ns, line) in &w.events {
            trace.line(*time_ns, format_args!("{line}"));
        }
        for (time_ns, line) in move_events.borrow().iter() {
            trace.line(*time_ns, format_args!("{line}"));
        }
        if !out.settled {
            violations.push(format!(
                "liveness: some ISR was not full {SETTLE_MS_MAX} ms after every fault healed: {}",
                out.settle_view
            ));
        }
        if !w.final_read_complete {
            violations.push(format!(
                "the final read did not reach a high watermark covering every acknowledged \
                 offset: {}",
                final_read_state(&w, config.partitions)
            ));
        }
        violations.extend(w.producer_ids_reused.iter().cloned());
        violations.extend(check_leaders(&w.leaders));
        violations.extend(check_high_watermarks(&w.high_watermarks));
        let storages: Vec<MemStorage> = faults.nodes.iter().map(|n| n.storage.clone()).collect();
        let (logs, problems) = compare_replicas(
            &storages,
            config.partitions,
            &w.final_high_watermarks,
            &out.final_metadata,
        );
        violations.extend(problems);
        let mut ops: Vec<Op> = w.history.into_ops();
        let end = ops
            .iter()
            .map(|o| o.complete.unwrap_or(o.invoke))
            .max()
            .unwrap_or(0);
        for log in logs {
            ops.push(Op {
                id: 0,
                process: OBSERVER,
                invoke: end,
                complete: Some(end),
                kind: OpKind::ReplicaLog(log),
            });
        }
        let history = History::new(ops);
        let history_json = history.to_json_lines();
        let history_hash = crate::trace::fnv1a(0, history_json.as_bytes());
        trace.line(0, format_args!("history {history_hash:016x}"));
        let options = CheckOptions {
            final_read_complete: w.final_read_complete,
            ..CheckOptions::default()
        };
        let report = check_all(&history, &options);
        summary = report
            .explain(&history)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        for v in &report.violations {
            violations.push(v.explain(&history));
        }
        let elections: BTreeSet<(i32, i32)> = w
            .leaders
            .iter()
            .filter(|l| l.leader >= 0)
            .map(|l| (l.partition, l.leader_epoch))
            .collect();
        let broker_only_led = elections
            .iter()
            .filter(|&&(p, e)| {
                w.leaders
                    .iter()
                    .any(|l| (l.partition, l.leader_epoch) == (p, e) && l.leader as usize > VOTERS)
            })
            .count();
        summary.push_str(&format!(
            ", leader epochs seen={} (led by the broker-only node {broker_only_led}), follower reads={}",
            elections.len(),
            w.follower_reads
        ));
    } else if violations.is_empty() {
        violations.push("the workload did not finish".into());
    }
    for v in &violations {
        trace.line(0, format_args!("violation: {v}"));
    }
    ClusterSimResult {
        violations,
        summary,
        trace_hash: trace.hash(),
        trace: trace
            .take_text()
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        sim_ms: step,
    }
}

/// Per partition: one past the highest acknowledged offset, the last high watermark a fetch
/// returned and the last leadership a Metadata response named.
fn final_read_state(w: &workload::WorkloadOutcome, partitions: i32) -> String {
    let mut acked: BTreeMap<i32, i64> = BTreeMap::new();
    for op in w.history.ops() {
        if let OpKind::Send {
            result: invariants::SendResult::Ok { partition, offset },
            ..
        } = &op.kind
        {
            let e = acked.entry(*partition).or_insert(0);
            *e = (*e).max(offset + 1);
        }
    }
    (0..partitions)
        .map(|p| {
            let hw = w.high_watermarks.iter().rev().find(|h| h.partition == p);
            let leader = w.leaders.iter().rev().find(|l| l.partition == p);
            format!(
                "p{p}: acked end {:?}, last hw {:?}, last metadata {:?}",
                acked.get(&p),
                hw.map(|h| (h.high_watermark, h.leader, h.leader_epoch)),
                leader.map(|l| (l.leader, l.leader_epoch, &l.isr, &l.from))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// At most one leader per (partition, leader epoch), across every Metadata response from every
/// node.
pub fn check_leaders(seen: &[LeaderSeen]) -> Vec<String> {
    let mut first: BTreeMap<(i32, i32), &LeaderSeen> = BTreeMap::new();
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for l in seen.iter().filter(|l| l.leader >= 0) {
        let key = (l.partition, l.leader_epoch);
        match first.get(&key) {
            None => {
                first.insert(key, l);
            }
            Some(f) if f.leader != l.leader && reported.insert(key) => out.push(format!(
                "two leaders for partition {} in leader epoch {}: node {} (said {} at {} ns) \
                 and node {} (said {} at {} ns)",
                l.partition,
                l.leader_epoch,
                f.leader,
                f.from,
                f.time_ns,
                l.leader,
                l.from,
                l.time_ns
            )),
            Some(_) => {}
        }
    }
    out
}

/// Within one (partition, leader epoch), a fetch invoked after another completed never returns
/// a lower high watermark: one leader's high watermark only grows while its epoch lasts.
pub fn check_high_watermarks(seen: &[HighWatermarkSeen]) -> Vec<String> {
    let mut groups: BTreeMap<(i32, i32), Vec<&HighWatermarkSeen>> = BTreeMap::new();
    for h in seen {
        groups
            .entry((h.partition, h.leader_epoch))
            .or_default()
            .push(h);
    }
    let mut out = Vec::new();
    for ((partition, epoch), mut obs) in groups {
        // By completion time; a prefix maximum answers "highest HW completed before t".
        obs.sort_by_key(|h| (h.complete_ns, h.invoke_ns));
        let mut best: Vec<&HighWatermarkSeen> = Vec::with_capacity(obs.len());
        for h in &obs {
            let keep = match best.last() {
                Some(b) if b.high_watermark >= h.high_watermark => *b,
                _ => *h,
            };
            best.push(keep);
        }
        for later in &obs {
            let n = obs.partition_point(|h| h.complete_ns < later.invoke_ns);
            if n == 0 {
                continue;
            }
            let earlier = best[n - 1];
            if earlier.high_watermark > later.high_watermark {
                out.push(format!(
                    "high watermark of partition {partition} went back in leader epoch {epoch}: \
                     {} (node {}, fetch done at {} ns) then {} (node {}, fetch begun at {} ns)",
                    earlier.high_watermark,
                    earlier.leader,
                    earlier.complete_ns,
                    later.high_watermark,
                    later.leader,
                    later.invoke_ns
                ));
                break;
            }
        }
    }
    out
}

/// Opens every node's log of every partition with the broker's own `Log` over that node's
/// storage. Every node in the final ISR must reach the final high watermark and hold the same
/// bytes below it. Returns each such replica's records (for the history's replica checks) and
/// the problems found.
fn compare_replicas(
    storages: &[MemStorage],
    partitions: i32,
    final_hws: &BTreeMap<i32, i64>,
    final_metadata: &BTreeMap<i32, (i32, i32, Vec<i32>)>,
) -> (Vec<ReplicaLog>, Vec<String>) {
    let mut logs = Vec::new();
    let mut problems = Vec::new();
    let log_config = node_config(0).log;
    for p in 0..partitions {
        let (Some(&hw), Some((_, _, isr))) = (final_hws.get(&p), final_metadata.get(&p)) else {
            let ends: Vec<String> = storages
                .iter()
                .enumerate()
                .map(|(i, storage)| {
                    let dir = PathBuf::from(DATA_DIR).join(format!("{TOPIC}-{p}"));
                    match Log::open(storage.clone(), dir, log_config.clone(), 0) {
                        Ok((log, _)) => format!("node {} log end {}", i + 1, log.log_end_offset()),
                        Err(e) => format!("node {}: {e}", i + 1),
                    }
                })
                .collect();
            problems.push(format!(
                "partition {p}: no final high watermark or ISR to compare replicas against ({})",
                ends.join(", ")
            ));
            continue;
        };
        let mut reference: Option<(i32, i64, bytes::Bytes)> = None;
        for &node in isr {
            let Some(storage) = usize::try_from(node - 1).ok().and_then(|i| storages.get(i)) else {
                problems.push(format!("partition {p}: ISR names unknown node {node}"));
                continue;
            };
            let dir = PathBuf::from(DATA_DIR).join(format!("{TOPIC}-{p}"));
            let log = match Log::open(storage.clone(), dir, log_config.clone(), 0) {
                Ok((log, _)) => log,
                Err(e) => {
                    problems.push(format!("node {node} partition {p}: log does not open: {e}"));
                    continue;
                }
            };
            if log.log_end_offset() < hw {
                problems.push(format!(
                    "node {node} is in the ISR of partition {p} but its log ends at {} below the \
                     high watermark {hw}",
                    log.log_end_offset()
                ));
                continue;
            }
            let start = log.log_start_offset();
            let bytes = match log.read(start, usize::MAX / 2, hw) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("node {node} partition {p}: read failed: {e:?}"));
                    continue;
                }
            };
            match workload::read_values(&bytes, start) {
                Ok(records) => logs.push(ReplicaLog {
                    node: node as u32,
                    topic: TOPIC.into(),
                    partition: p,
                    log_start_offset: start,
                    high_watermark: hw,
                    records,
                }),
                Err(e) => problems.push(format!("node {node} partition {p}: {e}")),
            }
            match &reference {
                None => reference = Some((node, start, bytes)),
                Some((other, other_start, other_bytes)) => {
                    if *other_start == start && *other_bytes != bytes {
                        let at = other_bytes
                            .iter()
                            .zip(bytes.iter())
                            .position(|(a, b)| a != b)
                            .unwrap_or(other_bytes.len().min(bytes.len()));
                        problems.push(format!(
                            "nodes {other} and {node} (both in the ISR of partition {p}) hold \
                             different bytes below the high watermark {hw}: {} vs {} bytes, \
                             first difference at byte {at}",
                            other_bytes.len(),
                            bytes.len()
                        ));
                    }
                }
            }
        }
    }
    (logs, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(seed: u64, faults: SystemFaults) -> ClusterSimConfig {
        ClusterSimConfig {
            seed,
            run_ms: 5_000,
            faults,
            ..ClusterSimConfig::default()
        }
    }

    #[test]
    fn fault_free_cluster_reads_every_acknowledged_write() {
        let r = run_cluster_seed(&ClusterSimConfig {
            moves: false,
            ..short(1, SystemFaults::NONE)
        });
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert!(!r.summary.contains("sends ok=0 "), "{}", r.summary);
    }

    #[test]
    fn same_seed_same_trace() {
        let a = run_cluster_seed(&short(3, SystemFaults::ALL));
        let b = run_cluster_seed(&short(3, SystemFaults::ALL));
        assert_eq!(a.trace_hash, b.trace_hash);
    }
}
