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
use crate::raft::{Committed, MetadataImage, NodeId, RaftConfig, RaftCore, Role, StorageOp};
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
}

fn monotonic_ms(start: tokio::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Keeps a local request's reply until its answer comes; when too many wait, the oldest
/// waiter gives up (its caller retries).
fn park(
    pending: &mut BTreeMap<u64, oneshot::Sender<ControllerResponse>>,
    correlation: u64,
    reply: oneshot::Sender<ControllerResponse>,
) {
    if pending.len() >= PENDING_REQUESTS_MAX {
        pending.pop_first();
    }
    pending.insert(correlation, reply);
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
/// fails (the node can no longer vote or replicate safely).
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
    } = params;
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
                me,
                v.addr(),
                v.id,
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
    let mut pending: BTreeMap<u64, oneshot::Sender<ControllerResponse>> = BTreeMap::new();
    let mut next_correlation: u64 = 1;
    let mut leading = false;
    let mut last_other_leader: Option<NodeId> = None;
    let mut in_flight: Option<i64> = None;
    let mut published_leader: Option<NodeId> = None;
    let mut published_offset = -1i64;
    let mut last_role = (core.role(), -1, None);

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
                    store.lock().unwrap_or_else(|p| p.into_inner()).apply(&op)?;
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
        let quorum_leader = core.leader();
        if let Some(l) = quorum_leader.filter(|l| *l != me) {
            last_other_leader = Some(l);
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
                if let Some(reply) = pending.remove(&correlation) {
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
                        if let Some(reply) = pending.remove(&correlation) {
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
                            park(&mut pending, correlation, reply);
                            ctl.submit(correlation, me, request);
                        } else if let Some(leader) = core.leader().filter(|l| *l != me) {
                            park(&mut pending, correlation, reply);
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
        pending.retain(|_, reply| !reply.is_closed());
    }
}

/// Keeps one connection to a peer's controller port and writes its queued frames. With
/// `replies` (an observer), it also reads the peer's frames back from that connection into
/// the quorum's inbox; a voter reads it only to notice its end. Either way the end of the
/// connection means redialing.
async fn peer_sender<D: Dialer>(
    me: NodeId,
    addr: String,
    id: NodeId,
    dialer: Arc<D>,
    mut rx: mpsc::Receiver<Bytes>,
    replies: Option<mpsc::Sender<QuorumInput>>,
) {
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
        // `closed` fires when the reader sees the connection end: the peer is gone (a
        // restarted process answers with resets), so the writer redials rather than write into
        // a dead connection whose errors may never surface.
        let (done_tx, closed) = oneshot::channel::<()>();
        let replies = replies.clone();
        let reader_task = tokio::spawn(async move {
            match replies {
                Some(inbox) => {
                    let mut from = None;
                    if let Err(e) = read_frames(r, &inbox, &mut from, None).await {
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
        loop {
            let frame = tokio::select! {
                biased;
                _ = &mut closed => {
                    tracing::debug!(node = me, peer = id, "peer closed the connection; redialing");
                    break;
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
            // end of the connection ends it too.
            let written = tokio::select! {
                biased;
                _ = &mut closed => Err(std::io::Error::other("the peer closed the connection")),
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
                        tokio::spawn(async move {
                            let (link, link_rx) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
                            let link_task = tokio::spawn(link_writer(writer, link_rx));
                            let mut from = None;
                            let observer = Some((&*voters, &link));
                            if let Err(e) = read_frames(reader, &inbox, &mut from, observer).await {
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

/// Feeds one connection's frames to the quorum; `from` learns the sender. With `link` (an
/// accepted connection), a sender outside the voters is announced as an observer with the
/// connection's link, before its first frame.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    inbox: &mpsc::Sender<QuorumInput>,
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
            split_frame(&buf[consumed..]).map_err(|e| anyhow::anyhow!("bad peer frame: {e:?}"))?
        {
            let frame = decode_body(body).map_err(|e| anyhow::anyhow!("bad peer frame: {e:?}"))?;
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
                }
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
}
