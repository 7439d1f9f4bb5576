//! The quorum shell: one task owns this node's [`RaftCore`], its [`RaftStore`] and, while this
//! node leads the quorum, the [`Controller`]. It feeds the core frames from peers and timer
//! ticks, performs the core's storage operations (fsyncs on a blocking thread), sends its
//! messages, applies committed entries to the [`MetadataImage`] and publishes each new image to
//! the [`ClusterView`].
//!
//! Transport: every voter listens on its controller port; frames (`raft::wire`) between voters
//! travel one way on connections the sender dials, so a response is simply a frame addressed
//! back. Observers (broker-only nodes, `--process-roles broker`) have no controller listener:
//! they dial the voters like a voter does and read the voters' frames back on the same
//! connections, which the voters register as that observer's link (at most
//! [`OBSERVER_LINKS_MAX`]). Each peer has a bounded outbound queue; when it is full, frames are
//! dropped (the quorum protocol resends what matters).
//!
//! A connection can die with no reset and no error (a middlebox that forgot it, a peer whose
//! host vanished): writes into it then succeed, or wait, for good. [`PeerActivity`] records when
//! each voter was last heard from, on any connection. A sender that wrote and heard nothing
//! back for the request timeout redials; so does a sender whose peer dialed this node anew
//! while its own connection is not young, since between voters each direction has its own
//! connection and only the far end may see that one is dead.
//!
//! Controller rounds: the controller proposes at most one entry (a record batch) at a time and
//! only when nothing proposed is uncommitted, so every decision is made on the committed image.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::controller::{
    Controller, ControllerConfig, ControllerError, ControllerRequest, ControllerResponse,
};
use super::requests;
use super::{ClusterView, QuorumInput};
use crate::config::Voter;
use crate::raft::store::RaftStore;
use crate::raft::wire::{decode_body, encode_frame, split_frame, PeerFrame, PEER_FRAME_BYTES_MAX};
use crate::raft::{
    Committed, Message, MetadataImage, NodeId, RaftConfig, RaftCore, Role, StorageOp,
};
use crate::server::{Acceptor, Dialer};
use crate::storage::Storage;

/// Frames queued for one peer before new ones are dropped.
pub const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Observers one voter keeps a connection back to; more are not answered until one leaves.
pub const OBSERVER_LINKS_MAX: usize = crate::raft::OBSERVERS_MAX;
/// Requests this node forwarded to the controller and is still waiting on.
pub const PENDING_REQUESTS_MAX: usize = 1024;
/// Committed entries applied per loop turn.
const APPLY_BATCH_ENTRIES_MAX: usize = 1024;
/// Reconnect backoff bounds for peer connections.
const DIAL_BACKOFF_MS_MIN: u64 = 50;
const DIAL_BACKOFF_MS_MAX: u64 = 1000;
/// Retries of a metadata-log write refused for want of space: from this, doubling, to the max.
const FULL_DISK_BACKOFF_MS_MIN: u64 = 50;
const FULL_DISK_BACKOFF_MS_MAX: u64 = 1000;
/// How often a voter that is still rejoining says which voters it waits for.
const REJOIN_NOTE_MS: u64 = 10_000;

/// When this node last read a frame from each voter, on any connection, and whether a voter
/// dialed this node anew: written by the connections' readers, read by the peer senders.
pub struct PeerActivity {
    peers: BTreeMap<NodeId, PeerHeard>,
}

struct PeerHeard {
    last: Mutex<Option<tokio::time::Instant>>,
    dialed_anew: tokio::sync::Notify,
}

impl PeerActivity {
    /// Activity of `voters` (frames from other nodes are not tracked).
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Arc<Self> {
        let peers = voters
            .into_iter()
            .map(|id| {
                let heard = PeerHeard {
                    last: Mutex::new(None),
                    dialed_anew: tokio::sync::Notify::new(),
                };
                (id, heard)
            })
            .collect();
        Arc::new(PeerActivity { peers })
    }

    fn heard(&self, node: NodeId) {
        if let Some(p) = self.peers.get(&node) {
            *p.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
        }
    }

    fn last_heard(&self, node: NodeId) -> Option<tokio::time::Instant> {
        let p = self.peers.get(&node)?;
        *p.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dialed_anew(&self, node: NodeId) {
        if let Some(p) = self.peers.get(&node) {
            p.dialed_anew.notify_one();
        }
    }

    /// Resolves when `node` dials this node anew (never for an untracked node).
    async fn peer_dialed_anew(&self, node: NodeId) {
        match self.peers.get(&node) {
            Some(p) => p.dialed_anew.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// What the quorum task needs.
pub struct QuorumParams<S: Storage + Clone, D: Dialer> {
    pub storage: S,
    pub dir: PathBuf,
    pub me: NodeId,
    pub voters: Vec<Voter>,
    pub raft: RaftConfig,
    pub controller: ControllerConfig,
    pub dialer: Arc<D>,
    pub seed: u64,
    /// This quorum's inbox, for the frames an observer reads back on the connections it dials.
    pub inbox: mpsc::Sender<QuorumInput>,
    /// Shared with [`serve_peers`].
    pub activity: Arc<PeerActivity>,
}

fn monotonic_ms(start: tokio::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// A local request waiting for its answer: the node deciding it (this one, or the leader it was
/// forwarded to) and where the answer goes.
type Parked = (NodeId, oneshot::Sender<ControllerResponse>);

/// Keeps a local request's reply until its answer comes; when too many wait, the oldest
/// waiter gives up (its caller retries).
fn park(
    pending: &mut BTreeMap<u64, Parked>,
    correlation: u64,
    to: NodeId,
    reply: oneshot::Sender<ControllerResponse>,
) {
    if pending.len() >= PENDING_REQUESTS_MAX {
        pending.pop_first();
    }
    pending.insert(correlation, (to, reply));
}

/// Answers NOT_CONTROLLER now to every request forwarded to a node that no longer leads, so
/// its caller retries at the new controller rather than waiting out its timeout (a broker
/// restarting amid elections spent ten seconds per lost registration). Whether the old leader
/// decided it is unknown either way, as with a timeout. Requests this node decides itself are
/// answered by the controller when it steps down.
fn abandon_forwarded(pending: &mut BTreeMap<u64, Parked>, me: NodeId, leader: Option<NodeId>) {
    let stale: Vec<u64> = pending
        .iter()
        .filter(|(_, (to, _))| *to != me && Some(*to) != leader)
        .map(|(c, _)| *c)
        .collect();
    for correlation in stale {
        if let Some((_, reply)) = pending.remove(&correlation) {
            let _ = reply.send(super::error_response(ControllerError::NotController));
        }
    }
}

/// DescribeQuorum, answered from this node's core: the quorum as its leader sees it, with the
/// core's times (`now_ms` is the core's clock now) turned into milliseconds since the Unix
/// epoch; NotController when this node does not lead the quorum.
fn describe_quorum(core: &RaftCore, now_ms: u64) -> ControllerResponse {
    let Some(mut quorum) = core.describe_quorum() else {
        return super::error_response(ControllerError::NotController);
    };
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let now_ms = now_ms as i64;
    let to_wall = |t: i64| {
        if t < 0 {
            -1
        } else {
            wall_ms - (now_ms - t).max(0)
        }
    };
    for v in quorum.voters.iter_mut().chain(quorum.observers.iter_mut()) {
        v.last_fetch_ms = to_wall(v.last_fetch_ms);
        v.last_caught_up_ms = to_wall(v.last_caught_up_ms);
    }
    ControllerResponse {
        quorum: Some(quorum),
        ..super::error_response(ControllerError::None)
    }
}

/// Opens the store and runs the quorum until `stop` turns true. Returns an error when storage
/// fails (the node can no longer vote or replicate safely); a full disk only pauses it until
/// there is room (see [`apply_while_full`]).
pub async fn run<S, D>(
    params: QuorumParams<S, D>,
    view: Arc<ClusterView>,
    mut inbox: mpsc::Receiver<QuorumInput>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    S: Storage + Clone,
    D: Dialer,
{
    let start = tokio::time::Instant::now();
    let QuorumParams {
        storage,
        dir,
        me,
        voters,
        raft,
        controller,
        dialer,
        seed,
        inbox: own_inbox,
        activity,
    } = params;
    let answer_timeout = Duration::from_millis(raft.request_timeout_ms);
    let observer = !voters.iter().any(|v| v.id == me);
    let (store, recovered) = {
        let storage = storage.clone();
        let dir = dir.clone();
        crate::blocking::run_blocking(move || RaftStore::open(storage, dir)).await??
    };
    let store = Arc::new(Mutex::new(store));
    let mut image = match &recovered.snapshot {
        Some(s) => MetadataImage::decode(&s.data)
            .map_err(|e| anyhow::anyhow!("metadata snapshot does not decode: {e}"))?,
        None => MetadataImage::default(),
    };
    if recovered.snapshot.is_none() {
        image.applied_offset = 0;
    }
    tracing::info!(node = me, entries = recovered.entries.len(),
        snapshot = ?recovered.snapshot.as_ref().map(|s| s.id), epoch = recovered.quorum_state.epoch,
        "quorum state recovered");
    // The voter set is static: a quorum state written under another one is refused here with
    // a message, rather than by the core's assertions.
    let qs = &recovered.quorum_state;
    if let Some(v) = qs.voted_for.filter(|v| !voters.iter().any(|x| x.id == *v)) {
        anyhow::bail!(
            "{} records a vote for node {v} in epoch {}, which --voters does not list: the \
             voter set cannot change",
            dir.display(),
            qs.epoch
        );
    }
    if observer && qs.voted_for.is_some() {
        anyhow::bail!(
            "{} records this node's vote in epoch {}: a voter cannot become a broker-only node \
             (the voter set cannot change)",
            dir.display(),
            qs.epoch
        );
    }
    let mut core = RaftCore::new(raft, recovered, monotonic_ms(start));
    let mut ctl = Controller::new(controller, me, seed);
    let peers: BTreeMap<NodeId, mpsc::Sender<Bytes>> = voters
        .iter()
        .filter(|v| v.id != me)
        .map(|v| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
            // An observer reads the voters' answers back on the connections it dials.
            let replies = observer.then(|| own_inbox.clone());
            tokio::spawn(peer_sender(
                PeerLink {
                    me,
                    addr: v.addr(),
                    id: v.id,
                    activity: Arc::clone(&activity),
                    answer_timeout,
                },
                Arc::clone(&dialer),
                rx,
                replies,
            ));
            (v.id, tx)
        })
        .collect();
    drop(own_inbox);
    let voter_ids: BTreeSet<NodeId> = voters.iter().map(|v| v.id).collect();
    // Observers' connections back, by node id (voters only: an observer has none).
    let mut links: BTreeMap<NodeId, mpsc::Sender<Bytes>> = BTreeMap::new();
    let mut pending: BTreeMap<u64, Parked> = BTreeMap::new();
    let mut next_correlation: u64 = 1;
    let mut leading = false;
    let mut last_other_leader: Option<NodeId> = None;
    let mut in_flight: Option<i64> = None;
    let mut published_leader: Option<NodeId> = None;
    let mut published_offset = -1i64;
    let mut last_role = (core.role(), -1, None);
    let mut was_rejoining = false;
    let mut rejoin_note_ms = 0u64;

    let send = |peers: &BTreeMap<NodeId, mpsc::Sender<Bytes>>,
                links: &BTreeMap<NodeId, mpsc::Sender<Bytes>>,
                to: NodeId,
                frame: &PeerFrame| {
        let Some(tx) = peers.get(&to).or_else(|| links.get(&to)) else {
            return;
        };
        let mut out = Vec::new();
        if encode_frame(frame, &mut out).is_ok() {
            if let Err(e) = tx.try_send(Bytes::from(out)) {
                tracing::debug!(to, error = %e, "frame dropped");
            }
        }
    };

    loop {
        let now = monotonic_ms(start);
        // 1. Storage operations, in order; a Sync fsyncs on a blocking thread.
        while let Some(op) = core.poll_storage() {
            match op {
                StorageOp::Sync { token } => {
                    let s = Arc::clone(&store);
                    crate::blocking::run_blocking(move || {
                        s.lock().unwrap_or_else(|p| p.into_inner()).sync()
                    })
                    .await??;
                    core.synced(monotonic_ms(start), token);
                }
                op => {
                    if !apply_while_full(&store, &op, &mut stop).await? {
                        return Ok(());
                    }
                }
            }
        }
        // 2. Messages.
        while let Some(env) = core.poll_message() {
            let to = env.to;
            send(&peers, &links, to, &PeerFrame::Raft(env));
        }
        // 3. Committed entries.
        while let Some(c) = core.committed(image.applied_offset, APPLY_BATCH_ENTRIES_MAX) {
            match c {
                Committed::Snapshot(s) => {
                    image = MetadataImage::decode(&s.data)
                        .map_err(|e| anyhow::anyhow!("metadata snapshot does not decode: {e}"))?;
                }
                Committed::Entries(entries) => {
                    for e in entries {
                        image.apply(e.offset, &e.payload);
                    }
                }
            }
        }
        if let Some(at) = core.snapshot_hint() {
            if image.applied_offset == at {
                core.create_snapshot(now, at, image.encode());
            }
        }
        let role = (core.role(), core.epoch(), core.leader());
        if role != last_role {
            tracing::info!(node = me, role = role.0.name(), epoch = role.1, leader = ?role.2,
                "quorum role");
            last_role = role;
        }
        let rejoining = core.is_rejoining();
        if rejoining && (!was_rejoining || now >= rejoin_note_ms) {
            // Once at start, then every REJOIN_NOTE_MS while it lasts: an operator waiting on
            // a voter that never answers should see which one.
            tracing::info!(node = me, unheard = ?core.rejoin_unheard(),
                "this voter started with an empty metadata log (a new cluster or a replaced \
                 disk): it votes once every voter has answered and it holds what they committed");
            rejoin_note_ms = now + REJOIN_NOTE_MS;
        } else if !rejoining && was_rejoining {
            tracing::info!(node = me, epoch = core.epoch(), "this voter votes again");
        }
        was_rejoining = rejoining;
        let quorum_leader = core.leader();
        if let Some(l) = quorum_leader.filter(|l| *l != me) {
            last_other_leader = Some(l);
        }
        if quorum_leader != published_leader {
            abandon_forwarded(&mut pending, me, quorum_leader);
        }
        if image.applied_offset != published_offset || quorum_leader != published_leader {
            view.publish(Arc::new(image.clone()), quorum_leader);
            published_offset = image.applied_offset;
            published_leader = quorum_leader;
        }
        // 4. The controller, while this node leads.
        let is_leader = core.role() == Role::Leader;
        if is_leader && !leading {
            tracing::info!(node = me, epoch = core.epoch(), "active controller");
            ctl.activate(now, core.epoch(), last_other_leader);
            leading = true;
            in_flight = None;
        } else if !is_leader && leading {
            tracing::info!(node = me, "no longer the active controller");
            ctl.deactivate();
            leading = false;
            in_flight = None;
        }
        if leading {
            ctl.heard_from(me, now);
            ctl.fetched(me, view.incarnation, core.log_end_offset(), core.epoch());
            if in_flight.is_some_and(|off| image.applied_offset > off) {
                ctl.committed();
                in_flight = None;
            }
            if in_flight.is_none() && core.log_end_offset() == image.applied_offset {
                if let Some(record) = ctl.step(now, &image) {
                    match core.propose(now, record.encode()) {
                        Ok(offset) => in_flight = Some(offset),
                        Err(e) => tracing::warn!(error = ?e, "controller proposal refused"),
                    }
                    continue;
                }
            }
        }
        while let Some((correlation, to, response)) = ctl.poll_response() {
            if to == me {
                if let Some((_, reply)) = pending.remove(&correlation) {
                    let _ = reply.send(response);
                }
            } else {
                let (error_code, message, payload) = requests::encode_response(&response);
                send(
                    &peers,
                    &links,
                    to,
                    &PeerFrame::ControllerResponse {
                        correlation,
                        error_code,
                        message,
                        payload,
                    },
                );
            }
        }

        // 5. Wait for input or the next deadline.
        let mut deadline = core.poll_timeout().max(now);
        // The controller's deadline counts only while it may step (step 4's condition): with a
        // proposal in flight, queued requests would make it "now" at every turn, and this loop
        // would spin until the proposal commits (forever under paused time). The commit
        // arrives as input, which wakes the loop.
        if leading && in_flight.is_none() && core.log_end_offset() == image.applied_offset {
            if let Some(t) = ctl.poll_timeout() {
                deadline = deadline.min(t.max(now));
            }
        }
        deadline = deadline.min(now + 100);
        let sleep = tokio::time::sleep_until(start + Duration::from_millis(deadline));
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if *stop.borrow() {
                    if leading {
                        core.resign(monotonic_ms(start));
                        while let Some(env) = core.poll_message() {
                            let to = env.to;
                            send(&peers, &links, to, &PeerFrame::Raft(env));
                        }
                    }
                    return Ok(());
                }
            }
            input = inbox.recv() => {
                let Some(input) = input else { return Ok(()) };
                let now = monotonic_ms(start);
                match input {
                    QuorumInput::Frame(PeerFrame::Raft(env)) => {
                        if env.to == me && env.from != me {
                            if leading {
                                ctl.heard_from(env.from, now);
                                if let Message::FetchRequest {
                                    fetch_offset,
                                    last_fetched_epoch,
                                    replica_incarnation,
                                    ..
                                } = env.message
                                {
                                    ctl.fetched(env.from, replica_incarnation, fetch_offset, last_fetched_epoch);
                                }
                            }
                            core.step(now, env);
                        }
                    }
                    QuorumInput::Frame(PeerFrame::ControllerRequest { correlation, from, payload }) => {
                        if leading {
                            ctl.heard_from(from, now);
                        }
                        match requests::decode_request(&payload) {
                            Ok(ControllerRequest::DescribeQuorum) => {
                                let (error_code, message, payload) =
                                    requests::encode_response(&describe_quorum(&core, now));
                                send(&peers, &links, from, &PeerFrame::ControllerResponse {
                                    correlation, error_code, message, payload,
                                });
                            }
                            Ok(request) if leading => ctl.submit(correlation, from, request),
                            Ok(_) => {
                                let (error_code, message, payload) = requests::encode_response(
                                    &super::error_response(ControllerError::NotController),
                                );
                                send(&peers, &links, from, &PeerFrame::ControllerResponse {
                                    correlation, error_code, message, payload,
                                });
                            }
                            Err(e) => tracing::warn!(from, error = %e, "undecodable controller request"),
                        }
                    }
                    QuorumInput::Frame(PeerFrame::ControllerResponse { correlation, error_code, message, payload }) => {
                        if let Some((_, reply)) = pending.remove(&correlation) {
                            let _ = reply.send(requests::decode_response(error_code, message, &payload));
                        }
                    }
                    QuorumInput::ObserverLink { node, frames } => {
                        if voter_ids.contains(&node) || node == me {
                            tracing::warn!(node, "a voter's id on an observer's connection; ignored");
                        } else if links.len() < OBSERVER_LINKS_MAX || links.contains_key(&node) {
                            tracing::debug!(node = me, observer = node, "observer link");
                            links.insert(node, frames);
                        } else {
                            tracing::warn!(node, observers = links.len(), "too many observers; not answering this one");
                        }
                    }
                    QuorumInput::PeerLost(node) => {
                        // The observer's link closed with its connection (a newer connection's
                        // link stays).
                        if links.get(&node).is_some_and(|l| l.is_closed()) {
                            links.remove(&node);
                        }
                        if leading {
                            ctl.connection_lost(node, now);
                        } else {
                            core.peer_lost(node, now);
                        }
                    }
                    QuorumInput::Local { request, reply } => {
                        let describe = matches!(request, ControllerRequest::DescribeQuorum);
                        let correlation = next_correlation;
                        next_correlation += 1;
                        if describe && core.role() == Role::Leader {
                            let _ = reply.send(describe_quorum(&core, now));
                        } else if leading && !describe {
                            park(&mut pending, correlation, me, reply);
                            ctl.submit(correlation, me, request);
                        } else if let Some(leader) = core.leader().filter(|l| *l != me) {
                            park(&mut pending, correlation, leader, reply);
                            send(&peers, &links, leader, &PeerFrame::ControllerRequest {
                                correlation,
                                from: me,
                                payload: requests::encode_request(&request),
                            });
                        } else {
                            let _ = reply.send(super::error_response(ControllerError::NotController));
                        }
                    }
                }
            }
            _ = sleep => {
                core.tick(monotonic_ms(start));
            }
        }
        // Waiters whose callers gave up (timed out) are dropped here.
        pending.retain(|_, (_, reply)| !reply.is_closed());
    }
}

/// One peer a sender keeps a connection to.
struct PeerLink {
    me: NodeId,
    addr: String,
    id: NodeId,
    activity: Arc<PeerActivity>,
    /// Written frames with nothing heard back for this long mean a dead connection.
    answer_timeout: Duration,
}

/// Keeps one connection to a peer's controller port and writes its queued frames. With
/// `replies` (an observer), it also reads the peer's frames back from that connection into
/// the quorum's inbox; a voter reads it only to notice its end. Either way the end of the
/// connection means redialing, and so does silence: frames written and nothing heard from the
/// peer for the answer timeout, a write that waits that long, or the peer dialing this node
/// anew while this connection is older than the timeout.
async fn peer_sender<D: Dialer>(
    link: PeerLink,
    dialer: Arc<D>,
    mut rx: mpsc::Receiver<Bytes>,
    replies: Option<mpsc::Sender<QuorumInput>>,
) {
    let PeerLink {
        me,
        addr,
        id,
        activity,
        answer_timeout,
    } = link;
    let mut backoff = DIAL_BACKOFF_MS_MIN;
    loop {
        let (r, mut writer) = match dialer.dial(addr.clone()).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(node = me, peer = id, %addr, error = %e, "dialing peer failed");
                // Frames queued meanwhile are stale; drop them rather than send them late.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(DIAL_BACKOFF_MS_MAX);
                continue;
            }
        };
        backoff = DIAL_BACKOFF_MS_MIN;
        let dialed_at = tokio::time::Instant::now();
        // `closed` fires when the reader sees the connection end: the peer is gone (a
        // restarted process answers with resets), so the writer redials rather than write into
        // a dead connection whose errors may never surface.
        let (done_tx, closed) = oneshot::channel::<()>();
        let replies = replies.clone();
        let reader_activity = Arc::clone(&activity);
        let reader_task = tokio::spawn(async move {
            match replies {
                Some(inbox) => {
                    let mut from = None;
                    let read = read_frames(r, &inbox, &reader_activity, &mut from, None).await;
                    if let Err(e) = read {
                        tracing::debug!(node = me, peer = id, error = %e, "peer's answers closed");
                    }
                    if let Some(node) = from {
                        let _ = inbox.try_send(QuorumInput::PeerLost(node));
                    }
                }
                // A voter's peer answers on its own connection and writes nothing on this
                // one: reading only waits for its end.
                None => wait_for_end(r).await,
            }
            let _ = done_tx.send(());
        });
        tokio::pin!(closed);
        // The first write since the peer was last heard from, and the last write.
        let mut unanswered_since: Option<tokio::time::Instant> = None;
        let mut last_write = dialed_at;
        loop {
            let answer_due = unanswered_since.map(|t| t + answer_timeout);
            let due = answer_due.unwrap_or(dialed_at);
            let frame = tokio::select! {
                biased;
                _ = &mut closed => {
                    tracing::debug!(node = me, peer = id, "peer closed the connection; redialing");
                    break;
                }
                _ = activity.peer_dialed_anew(id) => {
                    if dialed_at.elapsed() < answer_timeout {
                        continue;
                    }
                    tracing::info!(node = me, peer = id, "peer dialed anew; redialing it");
                    break;
                }
                _ = tokio::time::sleep_until(due), if answer_due.is_some() => {
                    let since = unanswered_since.unwrap_or(dialed_at);
                    match activity.last_heard(id) {
                        Some(heard) if heard >= last_write => unanswered_since = None,
                        Some(heard) if heard >= since => unanswered_since = Some(last_write),
                        _ => {
                            let timeout_ms = answer_timeout.as_millis() as u64;
                            tracing::info!(node = me, peer = id, timeout_ms,
                                "no answer from peer; redialing");
                            break;
                        }
                    }
                    continue;
                }
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => {
                        reader_task.abort();
                        return;
                    }
                },
            };
            // A write to a peer that is gone may wait for buffer space for good: the reader's
            // end of the connection ends it, and so does waiting for a whole answer timeout.
            let written = tokio::select! {
                biased;
                _ = &mut closed => Err(std::io::Error::other("the peer closed the connection")),
                _ = tokio::time::sleep(answer_timeout) => {
                    Err(std::io::Error::other("a write waited for the whole answer timeout"))
                }
                r = async {
                    writer.write_all(&frame).await?;
                    // Flush only when nothing else is queued, so bursts share a write.
                    if rx.is_empty() {
                        writer.flush().await?;
                    }
                    Ok(())
                } => r,
            };
            if let Err(e) = written {
                tracing::debug!(node = me, peer = id, error = %e, "peer connection lost");
                break;
            }
            last_write = tokio::time::Instant::now();
            let answered = |t| activity.last_heard(id).is_some_and(|heard| heard >= t);
            if unanswered_since.map_or(true, answered) {
                unanswered_since = Some(last_write);
            }
        }
        reader_task.abort();
    }
}

/// Reads a connection the peer never writes on until it ends (close, reset or error), dropping
/// anything that arrives.
async fn wait_for_end<R: AsyncRead + Unpin>(mut reader: R) {
    let mut scratch = [0u8; 512];
    while let Ok(n) = reader.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}

/// Writes the frames queued for an observer on the connection it dialed.
async fn link_writer<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(frame) = rx.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
}

/// Accepts peers' connections on the controller listener and feeds their frames to the quorum.
/// A connection whose frames come from a node outside `voters` is an observer's: its write half
/// becomes that observer's link.
pub async fn serve_peers<A: Acceptor>(
    mut listener: A,
    voters: BTreeSet<NodeId>,
    inbox: mpsc::Sender<QuorumInput>,
    activity: Arc<PeerActivity>,
    mut stop: watch::Receiver<bool>,
) {
    let voters = Arc::new(voters);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => {
                match accepted {
                    Ok((reader, writer, peer)) => {
                        let inbox = inbox.clone();
                        let voters = Arc::clone(&voters);
                        let activity = Arc::clone(&activity);
                        tokio::spawn(async move {
                            let (link, link_rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
                            let link_task = tokio::spawn(link_writer(writer, link_rx));
                            let mut from = None;
                            let observer = Some((&*voters, &link));
                            if let Err(e) = read_frames(reader, &inbox, &activity, &mut from, observer).await {
                                tracing::debug!(%peer, error = %e, "peer connection closed");
                            }
                            // Closes the link before the quorum hears of the loss.
                            link_task.abort();
                            let _ = link_task.await;
                            if let Some(node) = from {
                                let _ = inbox.try_send(QuorumInput::PeerLost(node));
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "controller accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
}

/// Applies a store op; while it fails because the disk is full, tries again after a backoff,
/// this node's whole quorum role paused meanwhile: it neither votes nor fetches, so the others
/// go on without it (and fence it), as if it were frozen. The store is unchanged by a failed
/// op (`RaftStore::apply`), so the retry is the same op on the same state. Any other error
/// ends the quorum (and the broker). Returns false if asked to stop while waiting.
async fn apply_while_full<S: Storage>(
    store: &Mutex<RaftStore<S>>,
    op: &StorageOp,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    let mut backoff_ms = FULL_DISK_BACKOFF_MS_MIN;
    let mut waiting_since: Option<tokio::time::Instant> = None;
    loop {
        let result = store.lock().unwrap_or_else(|p| p.into_inner()).apply(op);
        match result {
            Ok(_) => {
                if let Some(since) = waiting_since {
                    tracing::info!(
                        waited_ms = since.elapsed().as_millis() as u64,
                        "the metadata log has room again; this node rejoins the quorum"
                    );
                }
                return Ok(true);
            }
            Err(e)
                if crate::storage::is_disk_full(&e)
                    && !crate::planted::enabled(crate::planted::PlantedBug::FullDiskEndsQuorum) =>
            {
                if waiting_since.is_none() {
                    tracing::error!(error = %e,
                        "the metadata log's disk is full: this node stays out of the quorum until there is room");
                    waiting_since = Some(tokio::time::Instant::now());
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Ok(false);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
        }
        backoff_ms = (backoff_ms * 2).min(FULL_DISK_BACKOFF_MS_MAX);
    }
}

/// A bad frame closes its connection, loudly: a peer speaking another wire version (a
/// half-upgraded cluster) would otherwise leave the quorum unformed with nothing said.
fn bad_frame(peer: Option<NodeId>, e: crate::raft::wire::WireError) -> anyhow::Error {
    tracing::warn!(?peer, error = %e, "bad peer frame; closing the connection");
    anyhow::anyhow!("bad peer frame: {e:?}")
}

/// Feeds one connection's frames to the quorum; `from` learns the sender, and `activity` when
/// it was heard from. With `link` (an accepted connection), a sender outside the voters is
/// announced as an observer with the connection's link, before its first frame; a voter's first
/// frame tells its sender here that the voter dialed anew.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    inbox: &mpsc::Sender<QuorumInput>,
    activity: &PeerActivity,
    from: &mut Option<NodeId>,
    link: Option<(&BTreeSet<NodeId>, &mpsc::Sender<Bytes>)>,
) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        while let Some((used, body)) =
            split_frame(&buf[consumed..]).map_err(|e| bad_frame(*from, e))?
        {
            let frame = decode_body(body).map_err(|e| bad_frame(*from, e))?;
            consumed += used;
            let sender = match &frame {
                PeerFrame::Raft(env) => Some(env.from),
                PeerFrame::ControllerRequest { from, .. } => Some(*from),
                PeerFrame::ControllerResponse { .. } => *from,
            };
            if let (Some(node), Some((voters, frames))) = (sender, link) {
                if sender != *from && !voters.contains(&node) {
                    let frames = frames.clone();
                    let _ = inbox.send(QuorumInput::ObserverLink { node, frames }).await;
                } else if sender != *from {
                    activity.dialed_anew(node);
                }
            }
            if let Some(node) = sender {
                activity.heard(node);
            }
            *from = sender;
            // A full inbox drops the frame: the quorum protocol resends.
            let _ = inbox.try_send(QuorumInput::Frame(frame));
        }
        buf.drain(..consumed);
        if buf.len() > PEER_FRAME_BYTES_MAX + 4 {
            anyhow::bail!("peer frame larger than {PEER_FRAME_BYTES_MAX} bytes");
        }
    }
}

/// Boxed future type dialers return.
pub type DialFuture<R, W> =
    Pin<Box<dyn std::future::Future<Output = std::io::Result<(R, W)>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::QuorumState;
    use crate::storage::MemStorage;

    /// A request forwarded to a leader that lost its place is answered at once; one forwarded
    /// to the leader still in place, or decided here, keeps waiting.
    #[test]
    fn a_request_forwarded_to_a_deposed_leader_is_answered_at_once() {
        let mut pending = BTreeMap::new();
        let (to_old, mut old_answer) = oneshot::channel();
        let (to_new, mut new_answer) = oneshot::channel();
        let (to_me, mut my_answer) = oneshot::channel();
        park(&mut pending, 1, 2, to_old);
        park(&mut pending, 2, 3, to_new);
        park(&mut pending, 3, 1, to_me);
        abandon_forwarded(&mut pending, 1, Some(3));
        let answered = old_answer
            .try_recv()
            .expect("the deposed leader's request answered");
        assert_eq!(answered.error, ControllerError::NotController);
        assert!(new_answer.try_recv().is_err() && my_answer.try_recv().is_err());
        assert_eq!(pending.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    }

    /// Runs the quorum task of node `me` over `storage` with `voters`, until it returns.
    async fn run_once(storage: MemStorage, me: NodeId, voters: &[NodeId]) -> anyhow::Result<()> {
        let voters: Vec<Voter> = voters
            .iter()
            .map(|&id| Voter {
                id,
                host: "127.0.0.1".into(),
                port: 1,
            })
            .collect();
        let (inbox_tx, inbox_rx) = mpsc::channel(16);
        let view = ClusterView::new(me, 1, true, [me as u8; 16], inbox_tx.clone());
        let (_stop_tx, stop_rx) = watch::channel(false);
        let activity = PeerActivity::new(voters.iter().map(|v| v.id));
        let params = QuorumParams {
            storage,
            dir: PathBuf::from("/meta"),
            me,
            raft: RaftConfig::new(me, voters.iter().map(|v| v.id).collect(), 1),
            voters,
            controller: crate::cluster::controller::ControllerConfig {
                session_timeout_ms: 1_000,
                min_insync_replicas: 1,
                auto_leader_rebalance: false,
                leader_imbalance_check_ms: 10_000,
                unclean_leader_election: false,
            },
            dialer: Arc::new(crate::server::TcpDialer),
            seed: 1,
            inbox: inbox_tx,
            activity,
        };
        run(params, view, inbox_rx, stop_rx).await
    }

    /// A quorum state written under another voter set is refused with a message: a vote for a
    /// node the voters no longer list, or a vote by a node that now runs broker-only.
    #[tokio::test]
    async fn a_quorum_state_from_another_voter_set_is_refused() {
        let storage = MemStorage::new();
        {
            let (mut store, _) = RaftStore::open(storage.clone(), PathBuf::from("/meta")).unwrap();
            let qs = QuorumState {
                epoch: 3,
                voted_for: Some(2),
                leader: Some(2),
                rejoining: false,
            };
            store.apply(&StorageOp::PersistQuorumState(qs)).unwrap();
            store.sync().unwrap();
        }
        let e = run_once(storage.clone(), 1, &[1, 3, 4]).await.unwrap_err();
        assert!(e.to_string().contains("the voter set cannot change"), "{e}");
        // Node 2 itself, now outside the voters: it voted, so it cannot observe.
        let e = run_once(storage.clone(), 2, &[1, 3, 4]).await.unwrap_err();
        assert!(e.to_string().contains("voter set cannot change"), "{e}");
        // Node 3 as a broker-only node of voters 1, 2, 4: it voted (for 2).
        let e = run_once(storage, 3, &[1, 2, 4]).await.unwrap_err();
        assert!(
            e.to_string().contains("cannot become a broker-only node"),
            "{e}"
        );
    }

    /// A sender to node 2 over real loopback TCP, with `answer_timeout_ms`.
    async fn sender_to_listener(
        answer_timeout_ms: u64,
    ) -> (
        tokio::net::TcpListener,
        Arc<PeerActivity>,
        mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let activity = PeerActivity::new([2]);
        let (tx, rx) = mpsc::channel(16);
        let link = PeerLink {
            me: 1,
            addr: listener.local_addr().unwrap().to_string(),
            id: 2,
            activity: Arc::clone(&activity),
            answer_timeout: Duration::from_millis(answer_timeout_ms),
        };
        let task = tokio::spawn(peer_sender(
            link,
            Arc::new(crate::server::TcpDialer),
            rx,
            None,
        ));
        (listener, activity, tx, task)
    }

    /// Reads `conn` until it ends (the sender gave it up) or `within` passes; true if it ended.
    async fn ends_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut scratch = [0u8; 1024];
        let read_to_end = async { while conn.read(&mut scratch).await.is_ok_and(|n| n > 0) {} };
        tokio::time::timeout(within, read_to_end).await.is_ok()
    }

    /// A connection that takes frames and never brings an answer back (wedged, with no reset
    /// and no error) is given up after the answer timeout: the sender closes it and dials again.
    #[tokio::test]
    async fn a_peer_that_never_answers_is_redialed() {
        let (listener, _activity, tx, task) = sender_to_listener(200).await;
        let (mut first, _) = listener.accept().await.unwrap();
        tx.send(Bytes::from_static(b"a frame")).await.unwrap();
        assert!(
            ends_within(&mut first, Duration::from_secs(10)).await,
            "the silent connection was kept"
        );
        let second = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        assert!(
            second.is_ok(),
            "no second connection after giving up the first"
        );
        task.abort();
    }

    /// Frames that are answered (the peer heard from, on any connection) keep the connection;
    /// the peer dialing this node anew makes the sender redial it, once its connection is older
    /// than the answer timeout.
    #[tokio::test]
    async fn an_answering_peer_keeps_its_connection_until_it_dials_anew() {
        let (listener, activity, tx, task) = sender_to_listener(300).await;
        let (mut first, _) = listener.accept().await.unwrap();
        // Young connection: a new dial from the peer is the same start-up, not a restart.
        activity.dialed_anew(2);
        let answers = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                for _ in 0..40 {
                    tx.send(Bytes::from_static(b"a frame")).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    activity.heard(2);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                tx
            })
        };
        assert!(
            !ends_within(&mut first, Duration::from_millis(900)).await,
            "an answered connection was given up"
        );
        let _tx = answers.await.unwrap();
        activity.dialed_anew(2);
        assert!(
            ends_within(&mut first, Duration::from_secs(10)).await,
            "the peer dialed anew and its old connection was kept"
        );
        let second = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
        assert!(
            second.is_ok(),
            "no new connection after the peer dialed anew"
        );
        task.abort();
    }
}
