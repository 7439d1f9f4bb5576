//! The replicated cluster (combined mode: every node is a quorum voter and a broker).
//!
//! - [`config_change`]: a change to a set of dynamic configs and its rules, applied by brokers
//!   (to answer at once) and by the controller (to the log's set).
//! - [`controller`]: the active controller's decisions, sans-IO (registrations, fencing,
//!   leader election from the ISR, ISR changes, topic creation and deletion).
//! - [`requests`]: the binary encoding of controller requests and responses between nodes.
//! - [`quorum`]: the tokio shell around `raft::RaftCore`, its durable store, the peer transport
//!   and, on the quorum leader, the controller; it publishes the committed [`MetadataImage`].
//! - [`producer_ids`]: producer ids for InitProducerId, from blocks the controller allocates.
//! - [`replication`]: applies the image to this broker's partitions (lead, follow, create,
//!   delete), runs the follower fetchers and asks the controller for ISR changes.
//!
//! [`ClusterView`] is what request handlers see: the latest image, this node's identity and a
//! way to send requests to the active controller.

pub mod config_change;
pub mod controller;
pub mod producer_ids;
pub mod quorum;
pub mod replication;
pub mod requests;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::raft::metadata::BrokerRegistration;
use crate::raft::{MetadataImage, NodeId};
use crate::sync::Watch;
use controller::{ControllerError, ControllerRequest, ControllerResponse};

/// The metadata quorum's directory under the data dir (no `-N` suffix, so the partition-log
/// orphan sweep leaves it alone).
pub const METADATA_DIR: &str = "__cluster_metadata";
/// Longest a controlled shutdown waits for this broker's leaderships to move away.
pub const CONTROLLED_SHUTDOWN_MS_MAX: u64 = 5_000;

/// This start's incarnation: positive, and different at every start (mixes the shell's seed
/// with the wall clock).
pub fn incarnation(seed: u64, now_ms: i64) -> u64 {
    let mut z = seed ^ (now_ms as u64).rotate_left(21);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 1
}

/// Kafka's controlled shutdown: ask the controller to move this broker's leaderships away and
/// wait (bounded) until the image shows none, so producers fail over without waiting for a
/// session timeout.
pub async fn controlled_shutdown(view: &ClusterView) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CONTROLLED_SHUTDOWN_MS_MAX);
    let leads = |image: &MetadataImage| {
        image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader == view.me)
            .count()
    };
    let request = ControllerRequest::ControlledShutdown {
        node_id: view.me,
        incarnation: view.incarnation,
    };
    let outcome = tokio::time::timeout_at(deadline, async {
        loop {
            let r = view.controller_request(request.clone()).await;
            if r.error == ControllerError::None {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            // The image first, then its version (published in that order), so the version
            // is at least the image's.
            let image = view.image();
            let seen = view.version();
            if leads(&image) == 0 {
                // The image says so; wait until the partitions do too, or producers waiting
                // for acks in the old epoch would only be answered by the drain timeout (the
                // replication task stops with the connections).
                view.roles_applied_through(seen).await;
                break;
            }
            view.changed_since(seen).await;
        }
    })
    .await;
    match outcome {
        Ok(()) => tracing::info!("controlled shutdown: leaderships moved away"),
        Err(_) => tracing::warn!(
            still_leading = leads(&view.image()),
            "controlled shutdown incomplete after {CONTROLLED_SHUTDOWN_MS_MAX} ms; stopping anyway"
        ),
    }
}

/// Longest a broker waits for the active controller to answer one request.
pub const CONTROLLER_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Requests to the controller queued in this node's quorum task.
pub const QUORUM_INBOX_MAX: usize = 4096;

/// An input to the quorum task.
pub enum QuorumInput {
    /// A frame from a peer.
    Frame(crate::raft::wire::PeerFrame),
    /// The connection a peer sent frames on closed.
    PeerLost(NodeId),
    /// An observer (a node outside the voters) connected: frames for it go back on its own
    /// connection, as this node has no address to dial it at.
    ObserverLink {
        node: NodeId,
        frames: mpsc::Sender<bytes::Bytes>,
    },
    /// A request from this node to the active controller.
    Local {
        request: ControllerRequest,
        reply: oneshot::Sender<ControllerResponse>,
    },
}

/// A response carrying only an error.
pub fn error_response(error: ControllerError) -> ControllerResponse {
    ControllerResponse::err(error)
}

/// The cluster as this node sees it.
pub struct ClusterView {
    pub me: NodeId,
    /// A new value at every start: the controller tells restarts apart by it.
    pub incarnation: i64,
    /// This broker fsyncs before it acknowledges (`--fsync always`), so a restart keeps all it
    /// reported durable; it registers so (see `MetadataRecord::RegisterBroker`).
    pub logs_intact: bool,
    /// This node's data directory id (`meta.properties`): it registers with it.
    pub directory_id: [u8; 16],
    image: RwLock<Arc<MetadataImage>>,
    /// Bumped at every published image.
    version: Watch<u64>,
    /// The version of the last image applied to the local partitions' roles.
    roles_version: Watch<u64>,
    quorum_leader: AtomicI32,
    /// Some published image has held this start's registration.
    seen_registered: AtomicBool,
    inbox: mpsc::Sender<QuorumInput>,
    /// The block of producer ids this start hands out.
    pub producer_ids: producer_ids::ProducerIds,
}

impl ClusterView {
    pub fn new(
        me: NodeId,
        incarnation: i64,
        logs_intact: bool,
        directory_id: [u8; 16],
        inbox: mpsc::Sender<QuorumInput>,
    ) -> Arc<Self> {
        Arc::new(ClusterView {
            me,
            incarnation,
            logs_intact,
            directory_id,
            image: RwLock::new(Arc::new(MetadataImage::default())),
            version: Watch::new(0),
            roles_version: Watch::new(0),
            quorum_leader: AtomicI32::new(-1),
            seen_registered: AtomicBool::new(false),
            inbox,
            producer_ids: producer_ids::ProducerIds::default(),
        })
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Waits for an image newer than `seen`.
    pub async fn changed_since(&self, seen: u64) {
        self.version.wait_for(|v| *v != seen).await;
    }

    pub fn roles_version(&self) -> u64 {
        self.roles_version.get()
    }

    /// Waits until partition roles were re-applied after `seen`.
    pub async fn roles_changed_since(&self, seen: u64) {
        self.roles_version.wait_for(|v| *v != seen).await;
    }

    /// Waits until the local partitions' roles follow an image at least as new as `version`.
    pub async fn roles_applied_through(&self, version: u64) {
        self.roles_version.wait_for(|v| *v >= version).await;
    }

    /// The image of `version` has been applied to the local partitions' roles.
    pub(crate) fn roles_applied(&self, version: u64) {
        self.roles_version.modify(|v| {
            let changed = *v != version;
            *v = version;
            changed
        });
    }

    pub(crate) fn publish(&self, image: Arc<MetadataImage>, quorum_leader: Option<NodeId>) {
        if image
            .brokers
            .get(&self.me)
            .is_some_and(|b| b.epoch == self.incarnation)
        {
            self.seen_registered.store(true, Ordering::Release);
        }
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.quorum_leader
            .store(quorum_leader.unwrap_or(-1), Ordering::Release);
        self.version.modify(|v| {
            *v = v.wrapping_add(1);
            true
        });
    }

    /// The quorum leader (the active controller), if known.
    pub fn controller_id(&self) -> Option<NodeId> {
        let l = self.quorum_leader.load(Ordering::Acquire);
        (l >= 0).then_some(l)
    }

    /// Whether the image holds this start's registration: only then does it describe this
    /// incarnation, and only then may this node lead or delete anything.
    pub fn registered(&self, image: &MetadataImage) -> bool {
        image
            .brokers
            .get(&self.me)
            .is_some_and(|b| b.epoch == self.incarnation && !b.fenced)
    }

    /// The registration that replaced this start's, when it came from another data directory:
    /// another process registered this node id after this one did (two processes share
    /// `--node-id`; a replaced disk cannot be under a running process). Before this start's
    /// registration is seen, an image showing another directory is the one this start
    /// replaces, and None.
    pub fn displaced_by<'a>(&self, image: &'a MetadataImage) -> Option<&'a BrokerRegistration> {
        if !self.seen_registered.load(Ordering::Acquire) {
            return None;
        }
        image.brokers.get(&self.me).filter(|b| {
            b.epoch != self.incarnation && b.directory_id.is_some_and(|d| d != self.directory_id)
        })
    }

    /// Waits until another process has registered this node id (see
    /// [`ClusterView::displaced_by`]), and describes it.
    pub async fn displaced(&self) -> String {
        loop {
            let seen = self.version();
            if let Some(b) = self.displaced_by(&self.image()) {
                let dir = b
                    .directory_id
                    .map(|d| uuid::Uuid::from_bytes(d).to_string());
                return format!(
                    "another process registered node id {} after this one (advertising {}:{}, \
                     data directory id {}); two processes share --node-id {}",
                    self.me,
                    b.host,
                    b.port,
                    dir.unwrap_or_default(),
                    self.me
                );
            }
            self.changed_since(seen).await;
        }
    }

    /// Sends one request to the active controller and waits for its answer (bounded).
    pub async fn controller_request(&self, request: ControllerRequest) -> ControllerResponse {
        let (reply, answer) = oneshot::channel();
        let unavailable = |m: &str| {
            tracing::debug!(reason = m, "controller request not answered");
            error_response(ControllerError::NotController)
        };
        if self
            .inbox
            .try_send(QuorumInput::Local { request, reply })
            .is_err()
        {
            return unavailable("the quorum task is busy or stopped");
        }
        match tokio::time::timeout(Duration::from_millis(CONTROLLER_REQUEST_TIMEOUT_MS), answer)
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => unavailable("the quorum task dropped the request"),
            Err(_) => unavailable("the controller did not answer in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::metadata::MetadataRecord;

    fn registered(
        image: &mut MetadataImage,
        incarnation: i64,
        directory: u8,
    ) -> Arc<MetadataImage> {
        let rec = MetadataRecord::RegisterBroker {
            node_id: 4,
            host: "h".into(),
            port: 9092,
            epoch: incarnation,
            logs_intact: true,
            rack: None,
            directory_id: Some([directory; 16]),
        };
        image.apply(image.applied_offset, &rec.encode());
        Arc::new(image.clone())
    }

    /// A registration from another directory displaces this start only once this start's own
    /// has been seen: before, it is the registration this start replaces (a new disk).
    #[test]
    fn another_directory_registered_after_this_start_displaces_it() {
        let (inbox, _rx) = mpsc::channel(1);
        let view = ClusterView::new(4, 20, true, [2; 16], inbox);
        let mut image = MetadataImage::default();
        let old_disk = registered(&mut image, 10, 1);
        view.publish(Arc::clone(&old_disk), None);
        assert!(
            view.displaced_by(&old_disk).is_none(),
            "the disk this start replaced"
        );
        let ours = registered(&mut image, 20, 2);
        view.publish(Arc::clone(&ours), None);
        assert!(view.displaced_by(&ours).is_none());
        // A restart of this node on its own directory is not another process.
        let same_disk = registered(&mut image.clone(), 21, 2);
        assert!(view.displaced_by(&same_disk).is_none());
        let other = registered(&mut image, 30, 3);
        view.publish(Arc::clone(&other), None);
        assert_eq!(view.displaced_by(&other).map(|b| b.epoch), Some(30));
    }
}
