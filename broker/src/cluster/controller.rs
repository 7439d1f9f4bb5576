//! The KRaft active controller's decisions, sans-IO: it reads the committed [`MetadataImage`]
//! and liveness reports and produces the metadata records to propose. The shell runs it on the
//! node that leads the metadata quorum, proposes each [`Controller::step`] result as one raft
//! entry, and calls [`Controller::committed`] once that entry is committed and applied.
//!
//! Each round folds, in this order, into one [`MetadataRecord::Batch`]: registrations, fencing
//! of silent brokers (and unfencing of returning ones), controlled shutdowns, partition
//! reconciliation (leaders lost to fencing are replaced from the ISR, fenced members leave
//! ISRs, offline partitions come back), AlterPartition, topic administration, and periodic
//! preferred-leader elections. Every decision is made against a working copy of the image with
//! the round's earlier records applied, so later rules see earlier ones, and every emitted
//! partition record is checked (leader in ISR, ISR within replicas, epochs never go back).
//!
//! Eligible leader replicas (KIP-966): a replica that leaves an ISR which is then smaller than
//! the topic's min.insync.replicas joins the partition's ELR. Leaders advance the high
//! watermark only while their ISR has min.insync.replicas members, so an ELR member holds
//! every committed record and may be elected when no ISR member can lead. Every ISR change
//! goes through [`Round::partition_change`], which derives the ELR; it empties once the ISR is
//! back to min.insync.replicas, and on an unclean election.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config_change::{ConfigChange, Scope};
use crate::planted::{self, PlantedBug};
use crate::raft::metadata::{MetadataImage, MetadataRecord, PartitionImage, MAX_PARTITIONS};
use crate::raft::{NodeId, QuorumDescription};
use crate::replica::quota;

/// Requests waiting for a round; more are answered [`ControllerError::QueueFull`] at once.
pub const REQUESTS_QUEUED_MAX: usize = 10_000;
/// Responses waiting for [`Controller::poll_response`]; more are dropped and counted.
pub const RESPONSES_QUEUED_MAX: usize = 2 * REQUESTS_QUEUED_MAX;
/// Records in one round's batch; the rest waits for the next round.
pub const RECORDS_PER_ROUND_MAX: usize = 20_000;
/// Encoded bytes in one round's batch, below the quorum's default 1 MiB entry limit.
pub const ROUND_BYTES_MAX: usize = 768 << 10;
/// Registered brokers, voters and broker-only nodes together.
pub const BROKERS_MAX: usize = 1024;
/// Kafka's topic name limit.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
pub const HOST_BYTES_MAX: usize = 255;
pub const TOPIC_CONFIGS_MAX: usize = 1_000;
/// Per config key and per config value.
pub const CONFIG_BYTES_MAX: usize = 4_096;
/// Fresh topic ids drawn before giving up (a collision needs a reused seed).
const TOPIC_ID_ATTEMPTS_MAX: usize = 16;

/// After a peer's connection closes, how long it has to be heard from again before its session
/// ends.
pub const CONNECTION_LOST_GRACE_MS: u64 = 300;
/// A broker that registered a new incarnation less than this long ago is elected leader only
/// when no settled ISR member is usable, and preferred-leader elections wait this long for it.
/// Clients back off reconnecting to a broker they saw die (librdkafka doubles the pause up to
/// `reconnect.backoff.max.ms`, 10 s by default, and resets it only once it connects again), so
/// leadership handed to a just-restarted broker can stall producers for seconds (7 s seen in the
/// failover benchmark, and rolling restarts do exactly this).
pub const LEADER_SETTLE_MS: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// A registered broker not heard from for this long is fenced.
    pub session_timeout_ms: u64,
    /// Run preferred-leader elections every `leader_imbalance_check_ms` (Kafka's
    /// auto.leader.rebalance.enable); off, leadership moves back only when an operator asks
    /// (ElectLeaders).
    pub auto_leader_rebalance: bool,
    /// Period of preferred-leader elections.
    pub leader_imbalance_check_ms: u64,
    /// Let an offline partition elect a replica outside its ISR (may lose committed data).
    pub unclean_leader_election: bool,
    /// The cluster-level min.insync.replicas this controller writes to the log when the log
    /// has none ([`CLUSTER_MIN_ISR`]); once there, the log's value rules.
    pub min_insync_replicas: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout_ms: 9_000,
            auto_leader_rebalance: true,
            leader_imbalance_check_ms: 10_000,
            unclean_leader_election: false,
            min_insync_replicas: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerRequest {
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: u16,
        incarnation: i64,
        /// It fsyncs before it acknowledges (`--fsync always`): see
        /// [`MetadataRecord::RegisterBroker`].
        logs_intact: bool,
        /// Its rack (`--rack`), if it has one.
        rack: Option<String>,
        /// Its data directory's id: see [`MetadataRecord::RegisterBroker`].
        directory_id: Option<[u8; 16]>,
    },
    /// The leader asks for a new ISR. The controller applies it only to the partition as the
    /// leader saw it: same leader epoch, ISR and partition epoch (-1 from brokers before
    /// partition epochs, which are checked by the rest alone).
    AlterPartition {
        topic_id: [u8; 16],
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        current_isr: Vec<NodeId>,
        new_isr: Vec<NodeId>,
    },
    /// A new topic. `assignments` empty: the controller places `replication_factor` replicas
    /// of each of `partitions` partitions on the unfenced brokers. Otherwise the operator's
    /// replicas per partition, in order (Kafka's manual assignment): `partitions` must be
    /// their count and `replication_factor` their length.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        configs: Vec<(String, String)>,
        assignments: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows the topic to `count` partitions; the new ones' replicas placed by the controller
    /// (`assignments` empty) or named, one list per new partition.
    CreatePartitions {
        name: String,
        count: u32,
        assignments: Vec<Vec<NodeId>>,
    },
    /// Changes the topic's config overrides: operations on the set in the log, or a new set.
    AlterTopicConfigs {
        name: String,
        change: ConfigChange,
    },
    ControlledShutdown {
        node_id: NodeId,
        incarnation: i64,
    },
    /// The broker's copies of these partitions failed (a sync or write error; they serve and
    /// take nothing until it restarts and recovers them), or with `full` their disk is full
    /// (they refuse appends until there is room). Each leaves the ISR, and where it leads,
    /// leadership goes to another in-sync (else eligible) usable replica, if there is one; a
    /// new leader epoch each time, so no leader counts its old progress. A failed copy leaves
    /// the ELR too, since what it holds is unknown. A full copy holds every record it has, so
    /// one leaving an ISR below min.insync.replicas becomes eligible (ELR), as a fenced member
    /// would: it may be the last copy of what was committed. At most [`ELECT_PARTITIONS_MAX`]
    /// partitions.
    ReplicasOffline {
        node_id: NodeId,
        incarnation: i64,
        partitions: Vec<([u8; 16], u32)>,
        full: bool,
    },
    /// Changes the cluster-level dynamic configs ([`CLUSTER_CONFIGS`]); `min.insync.replicas`
    /// must stay set.
    AlterClusterConfigs {
        change: ConfigChange,
    },
    /// Changes one broker's dynamic configs ([`crate::replica::quota::BROKER_CONFIGS`], the
    /// replication throttle rates); an empty set removes them.
    AlterBrokerConfigs {
        node_id: NodeId,
        change: ConfigChange,
    },
    /// An operator's election (Kafka's ElectLeaders): preferred (leadership to the first
    /// replica, if it is in the ISR and alive) or unclean (a leaderless partition takes any
    /// live replica when no ISR or ELR member can lead). At most
    /// [`ELECT_PARTITIONS_MAX`] partitions; a partition named twice is decided once.
    ElectLeaders {
        unclean: bool,
        partitions: Vec<([u8; 16], u32)>,
    },
    /// An operator's replica moves (Kafka's AlterPartitionReassignments): each partition gets
    /// its target replicas (`Some`) or its reassignment in progress cancelled (`None`). At most
    /// [`REASSIGN_PARTITIONS_MAX`] partitions; a partition named twice is decided once, by its
    /// first entry.
    AlterReassignments {
        partitions: Vec<([u8; 16], u32, Option<Vec<NodeId>>)>,
    },
    /// A block of [`PRODUCER_IDS_PER_BLOCK`] producer ids for the broker to hand out (Kafka's
    /// AllocateProducerIds, KIP-730). The block is taken from the metadata log's next id, so
    /// no two blocks overlap, across controller failovers and brokers' disk replacements.
    AllocateProducerIds {
        node_id: NodeId,
        incarnation: i64,
    },
    /// The quorum as its leader sees it (Kafka's DescribeQuorum). Answered by the leader's
    /// quorum shell from its [`crate::raft::RaftCore`], not by the controller: the controller
    /// refuses it.
    DescribeQuorum,
}

/// Producer ids in one [`ControllerRequest::AllocateProducerIds`] block (Kafka's 1,000).
pub const PRODUCER_IDS_PER_BLOCK: i64 = 1_000;

/// Producer ids `first..first + count`, handed to one broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub count: i64,
}

/// Most partitions one AlterReassignments request names.
pub const REASSIGN_PARTITIONS_MAX: usize = 1_000;

/// Most partitions one ElectLeaders request names.
pub const ELECT_PARTITIONS_MAX: usize = 1_000;

/// What an operator's election did to one partition (Kafka's per-partition ElectLeaders
/// errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionOutcome {
    /// A new leader was elected.
    Elected,
    /// Preferred: the first replica leads already. Unclean: the partition has a leader.
    NotNeeded,
    /// Preferred: the first replica is not in the ISR or not alive.
    PreferredNotAvailable,
    /// Unclean: no live replica can lead.
    EligibleNotAvailable,
    UnknownPartition,
}

/// What an operator's reassignment request did to one partition (Kafka's per-partition
/// AlterPartitionReassignments errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReassignOutcome {
    /// The reassignment started (new replicas catch up, then the old ones leave), or finished
    /// at once (the target was in sync already, or only reorders the replicas), or the
    /// cancellation took effect.
    Accepted,
    /// A cancellation for a partition with no reassignment in progress.
    NoReassignmentInProgress,
    UnknownPartition,
    /// The target is empty, names a broker twice or an unregistered broker, or leaves no
    /// in-sync replica that can lead (Kafka's INVALID_REPLICA_ASSIGNMENT).
    InvalidReplicas(String),
}

/// The configs that can be set cluster-wide, in the metadata log (Kafka's dynamic default
/// broker configs). `min.insync.replicas` is always set there: the controller writes its own
/// flag's value when the log has none (as Kafka does once ELRs are on), so the controller's
/// ELR decisions and every leader's high-watermark rule read the same value.
pub const CLUSTER_CONFIGS: &[&str] = &[
    CLUSTER_MIN_ISR,
    quota::LEADER_RATE,
    quota::FOLLOWER_RATE,
    quota::LOG_DIRS_RATE,
];
pub const CLUSTER_MIN_ISR: &str = "min.insync.replicas";

/// The min.insync.replicas that applies to a topic: its override, else the cluster-level
/// value, else `fallback` (a flag, until the log holds a value). The controller's ELR rule and
/// every leader's high-watermark rule read it through this one function.
pub fn effective_min_isr(
    topic_configs: &BTreeMap<String, String>,
    cluster_configs: &BTreeMap<String, String>,
    fallback: usize,
) -> usize {
    let value = topic_configs.get(CLUSTER_MIN_ISR);
    let value = value.or_else(|| cluster_configs.get(CLUSTER_MIN_ISR));
    let value = value.and_then(|v| v.parse::<i32>().ok());
    value.map_or(fallback, |v| v.max(1) as usize)
}

/// A valid min.insync.replicas value: a whole number from 1.
pub fn parse_min_isr(value: &str) -> Option<usize> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&v| v >= 1)
        .map(|v| v as usize)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerError {
    None,
    NotController,
    /// The request was based on metadata that has changed (Kafka's FENCED_LEADER_EPOCH,
    /// INVALID_UPDATE_VERSION, STALE_BROKER_EPOCH).
    StaleRequest,
    UnknownTopic,
    TopicExists,
    InvalidReplicationFactor(String),
    InvalidPartitions(String),
    InvalidRequest(String),
    IneligibleReplica(String),
    /// A manual replica assignment Kafka would refuse (INVALID_REPLICA_ASSIGNMENT).
    InvalidReplicaAssignment(String),
    /// The request queue is full (Kafka's THROTTLING_QUOTA_EXCEEDED): retry later.
    QueueFull,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerResponse {
    pub error: ControllerError,
    /// The new topic's id, for a successful CreateTopic.
    pub topic_id: Option<[u8; 16]>,
    /// Each partition an ElectLeaders request named, once, in the order named.
    pub elections: Vec<([u8; 16], u32, ElectionOutcome)>,
    /// Each partition an AlterReassignments request named, once, in the order named.
    pub reassignments: Vec<([u8; 16], u32, ReassignOutcome)>,
    /// A DescribeQuorum answer, its times in milliseconds since the Unix epoch.
    pub quorum: Option<QuorumDescription>,
    /// The set a config change wrote.
    pub configs: Option<Vec<(String, String)>>,
    /// The block an AllocateProducerIds request got.
    pub producer_ids: Option<ProducerIdBlock>,
}

impl ControllerResponse {
    fn ok() -> Self {
        Self::err(ControllerError::None)
    }

    pub fn err(error: ControllerError) -> Self {
        ControllerResponse {
            error,
            topic_id: None,
            elections: Vec::new(),
            reassignments: Vec::new(),
            quorum: None,
            configs: None,
            producer_ids: None,
        }
    }

    fn with_configs(configs: &[(String, String)]) -> Self {
        ControllerResponse {
            configs: Some(configs.to_vec()),
            ..Self::ok()
        }
    }
}

/// (correlation, to, response)
pub type Answer = (u64, NodeId, ControllerResponse);

#[derive(Clone, Debug)]
struct Queued {
    correlation: u64,
    from: NodeId,
    req: ControllerRequest,
}

/// The active controller's state: liveness, queued requests, responses.
#[derive(Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    node_id: NodeId,
    /// SplitMix64 state for topic ids.
    rng: u64,
    /// The quorum epoch while active.
    active: Option<i32>,
    activated_at_ms: u64,
    /// The quorum leader before this one, fenced at once unless heard from.
    presumed_dead: Option<NodeId>,
    /// Last time each node was heard from while this controller was active.
    heard: BTreeMap<NodeId, u64>,
    /// When this controller saw each broker register a new incarnation (a restart). Brokers
    /// registered before it became active are taken as settled.
    registered_at: BTreeMap<NodeId, u64>,
    /// Brokers in controlled shutdown, by incarnation: they stay fenced while heard from, until
    /// they register a new incarnation.
    shutting_down: BTreeMap<NodeId, i64>,
    requests: VecDeque<Queued>,
    /// The answers of the outstanding proposal; `Some` between `step` returning a record and
    /// `committed`.
    in_flight: Option<Vec<Answer>>,
    responses: VecDeque<Answer>,
    responses_dropped: u64,
    next_rebalance_ms: u64,
    /// A preferred-leader pass is due or was cut short by the round limits.
    rebalance_pending: bool,
    /// Registered brokers after the last round that are unfenced, or in controlled shutdown and
    /// still alive (they may go on leading): their session expiries wake `step`.
    watched: BTreeSet<NodeId>,
    /// Fenced brokers after the last round: hearing from one wakes `step`.
    fenced: BTreeSet<NodeId>,
    /// Work is waiting (requests, a round cut short): `step` is due now.
    wake: bool,
    /// The last `step` saw this epoch's LeaderChange applied: the image holds everything
    /// committed before this controller's term.
    caught_up: bool,
    last_now_ms: u64,
    /// Per node, the process last heard fetching this term's metadata log: its incarnation
    /// and the offset it fetched from (it holds every entry below). This tells a registered
    /// process that still runs from a registration whose process is gone, perhaps with its
    /// disk (liveness alone is per node: a restarted process keeps its node alive).
    fetched: BTreeMap<NodeId, (i64, i64)>,
    /// Per partition under reassignment, the offset of the entry with which this controller
    /// began (or last changed) its reassignment: a target counts as holding its copy only
    /// once its registered process has fetched past it.
    reassign_anchors: BTreeMap<([u8; 16], u32), i64>,
    /// The last entry at this term's first round (this term's LeaderChange or later): the
    /// anchor of reassignments begun before.
    term_anchor: Option<i64>,
    /// Targets a reassignment waits to hear from: a fetch from one wakes `step`.
    awaiting: BTreeSet<NodeId>,
}

/// One round's working state: the image with the round's records applied so far.
struct Round {
    /// The log end the round started from: its records, one entry, go there.
    anchor: i64,
    view: MetadataImage,
    records: Vec<MetadataRecord>,
    bytes: usize,
    /// A limit was hit: the rest waits for the next round.
    full: bool,
    unclean: bool,
    min_insync_replicas: usize,
}

/// A new partition's replicas and its first ISR.
type Placement = (Vec<NodeId>, Vec<NodeId>);

/// Encoded size of a partition record with `rf` replicas inside a batch.
fn partition_record_bytes(rf: usize) -> usize {
    50 + 8 * rf
}

fn distinct(ids: &[NodeId]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

impl Round {
    /// Whether `records` more records of about `bytes` fit; an empty round takes anything the
    /// validation let through.
    fn room(&mut self, records: usize, bytes: usize) -> bool {
        let fits = self.records.is_empty()
            || (self.records.len() + records <= RECORDS_PER_ROUND_MAX
                && self.bytes + bytes <= ROUND_BYTES_MAX);
        if !fits {
            self.full = true;
        }
        fits
    }

    /// The topic's effective min.insync.replicas for a partition of `rf` replicas: its
    /// override, else the cluster-level value in the log, else this controller's flag (before
    /// it wrote one), at most `rf` (as leaders use it for the high watermark; a larger value
    /// would stop it for good). Brokers read it the same way (`ReplicaManager`).
    fn min_isr(&self, topic_id: &[u8; 16], rf: usize) -> usize {
        let empty = BTreeMap::new();
        let topic = self
            .view
            .topics
            .get(topic_id)
            .map_or(&empty, |t| &t.configs);
        effective_min_isr(topic, &self.view.cluster_configs, self.min_insync_replicas).min(rf)
    }

    /// The ELR partition `old` of `topic_id` gets when its ISR becomes `isr`: empty while
    /// `isr` has min.insync.replicas members (the high watermark moves, and those outside may
    /// miss what it passes) or after an unclean election; otherwise the earlier ELR plus those
    /// leaving the ISR now, in replica order.
    fn next_elr(
        &self,
        topic_id: &[u8; 16],
        old: &PartitionImage,
        isr: &[NodeId],
        clean: bool,
    ) -> Vec<NodeId> {
        if !clean || isr.len() >= self.min_isr(topic_id, old.replicas.len()) {
            return Vec::new();
        }
        let replicas = old.replicas.iter().copied();
        replicas
            .filter(|r| !isr.contains(r) && (old.isr.contains(r) || old.elr.contains(r)))
            .collect()
    }

    /// Emits partition `partition` of `topic_id` with this leader, epoch and ISR, and the ELR
    /// that follows (`clean`: the leader comes from the ISR or ELR, or stays).
    fn partition_change(
        &mut self,
        topic_id: [u8; 16],
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        isr: Vec<NodeId>,
        clean: bool,
    ) {
        let change = Change {
            leader,
            leader_epoch,
            isr,
            clean,
        };
        self.partition_change_without(topic_id, partition, change, None);
    }

    /// [`Self::partition_change`], with `failed` (a replica whose copy failed) kept out of the
    /// ELR too.
    fn partition_change_without(
        &mut self,
        topic_id: [u8; 16],
        partition: u32,
        change: Change,
        failed: Option<NodeId>,
    ) {
        let Change {
            leader,
            leader_epoch,
            isr,
            clean,
        } = change;
        let old = self
            .view
            .topics
            .get(&topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .expect("partition changes name existing partitions")
            .clone();
        let mut elr = self.next_elr(&topic_id, &old, &isr, clean);
        elr.retain(|&n| Some(n) != failed);
        self.emit(MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            leader_epoch,
            isr,
            replicas: old.replicas,
            elr,
            adding: old.adding,
            removing: old.removing,
        });
    }

    /// Emits partition `partition` of `topic_id` with the replicas (and reassignment state) of
    /// `to`, its ISR and ELR cut to them, the leader kept if it stays a replica or else the
    /// first in-sync, usable replica of `to`, and a new leader epoch when a replica leaves or
    /// the leader changes (a removed replica learns it no longer follows from that epoch).
    /// `Err` when no in-sync replica of `to` is left, or none that can lead.
    fn reassign_to(
        &mut self,
        topic_id: [u8; 16],
        partition: u32,
        to: Assignment,
        usable: impl Fn(&Round, NodeId) -> bool,
    ) -> Result<(), String> {
        let old = self
            .view
            .topics
            .get(&topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .expect("reassignments name existing partitions")
            .clone();
        let isr: Vec<NodeId> = old
            .isr
            .iter()
            .copied()
            .filter(|n| to.replicas.contains(n))
            .collect();
        if isr.is_empty() {
            return Err(format!(
                "none of the replicas {:?} is in sync (ISR {:?})",
                to.replicas, old.isr
            ));
        }
        let leader = if old.leader == -1 || to.replicas.contains(&old.leader) {
            old.leader
        } else {
            let candidates = to.replicas.iter().copied();
            let mut candidates = candidates.filter(|&r| isr.contains(&r) && usable(self, r));
            candidates.next().ok_or_else(|| {
                format!(
                    "no in-sync replica of {:?} can take over from leader {}",
                    to.replicas, old.leader
                )
            })?
        };
        let dropped = old.replicas.iter().any(|r| !to.replicas.contains(r));
        let leader_epoch = old.leader_epoch + i32::from(dropped || leader != old.leader);
        let elr = self.next_elr(&topic_id, &old, &isr, true);
        let mut elr: Vec<NodeId> = elr
            .into_iter()
            .filter(|n| to.replicas.contains(n))
            .collect();
        if isr.len() >= self.min_isr(&topic_id, to.replicas.len()) {
            elr.clear();
        }
        self.emit(MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            leader_epoch,
            isr,
            replicas: to.replicas,
            elr,
            adding: to.adding,
            removing: to.removing,
        });
        Ok(())
    }

    /// After `topic_id`'s configs change: a partition whose ISR now reaches min.insync.replicas
    /// drops its ELR in the same batch, before any leader can advance past what it holds.
    fn recheck_elr(&mut self, topic_id: [u8; 16]) {
        let n = self
            .view
            .topics
            .get(&topic_id)
            .map_or(0, |t| t.partitions.len());
        for i in 0..n {
            let p = &self.view.topics[&topic_id].partitions[i];
            if !p.elr.is_empty() && p.isr.len() >= self.min_isr(&topic_id, p.replicas.len()) {
                let (leader, epoch, isr) = (p.leader, p.leader_epoch, p.isr.clone());
                self.partition_change(topic_id, i as u32, leader, epoch, isr, true);
            }
        }
    }

    /// The registration of broker `node_id` when `from` is that broker in its current
    /// incarnation; otherwise the error to answer (unknown or another node: invalid; an older
    /// incarnation: stale).
    fn speaking_for_itself(
        &self,
        from: NodeId,
        node_id: NodeId,
        incarnation: i64,
    ) -> Result<&crate::raft::metadata::BrokerRegistration, ControllerError> {
        let Some(b) = self.view.brokers.get(&node_id).filter(|_| from == node_id) else {
            return Err(ControllerError::InvalidRequest(format!(
                "unknown broker {node_id} (from {from})"
            )));
        };
        if b.epoch != incarnation {
            return Err(ControllerError::StaleRequest);
        }
        Ok(b)
    }

    fn registered_unfenced(&self, n: NodeId) -> bool {
        self.view.brokers.get(&n).is_some_and(|b| !b.fenced)
    }

    /// Sorted registered, unfenced brokers: the candidates for new replicas.
    fn assignable(&self) -> Vec<NodeId> {
        let ids = self.view.brokers.iter().filter(|(_, b)| !b.fenced);
        ids.map(|(&n, _)| n).collect()
    }

    /// Kafka's checks of an operator's replica lists for new partitions `first..`: each list
    /// non-empty, without a repeated broker, of registered brokers only, all as long as
    /// `rf` (the topic's, when it has partitions already) or as the first list. Each
    /// partition starts with its unfenced replicas, in the operator's order, as its ISR, led
    /// by the first of them; a partition with none is refused. Returns (replicas, ISR) per
    /// partition.
    fn manual_assignment(
        &self,
        lists: &[Vec<NodeId>],
        rf: Option<usize>,
        first: usize,
    ) -> Result<Vec<Placement>, ControllerError> {
        let refuse = |m: String| Err(ControllerError::InvalidReplicaAssignment(m));
        let rf = rf.or_else(|| lists.first().map(Vec::len));
        let mut placed = Vec::with_capacity(lists.len());
        for (i, replicas) in lists.iter().enumerate() {
            let p = first + i;
            if replicas.is_empty() {
                return refuse(format!("partition {p}: an empty replica list"));
            }
            if !distinct(replicas) {
                return refuse(format!(
                    "partition {p}: a broker named twice in {replicas:?}"
                ));
            }
            if let Some(b) = replicas.iter().find(|b| !self.view.brokers.contains_key(b)) {
                return refuse(format!("partition {p}: broker {b} is not registered"));
            }
            if Some(replicas.len()) != rf {
                return refuse(format!(
                    "partition {p} has {} replicas; the topic's partitions have {}",
                    replicas.len(),
                    rf.unwrap_or(0)
                ));
            }
            let isr: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|&b| self.registered_unfenced(b))
                .collect();
            if isr.is_empty() {
                return refuse(format!(
                    "partition {p}: every broker of {replicas:?} is fenced or shutting down"
                ));
            }
            placed.push((replicas.clone(), isr));
        }
        Ok(placed)
    }

    /// The first record of a new partition: its replicas, in-sync as given, led by the first
    /// in-sync one, in leader epoch 0.
    fn new_partition(
        &mut self,
        topic_id: [u8; 16],
        partition: usize,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
    ) {
        assert!(!isr.is_empty() && isr.iter().all(|n| replicas.contains(n)));
        self.emit(MetadataRecord::PartitionChange {
            topic_id,
            partition: partition as u32,
            leader: isr[0],
            leader_epoch: 0,
            isr,
            replicas,
            elr: Vec::new(),
            adding: Vec::new(),
            removing: Vec::new(),
        });
    }

    fn emit(&mut self, rec: MetadataRecord) {
        self.check(&rec);
        let enc = rec.encode();
        let rejected = self.view.rejected;
        let offset = self.view.applied_offset;
        self.view.apply(offset, &enc);
        assert_eq!(
            self.view.rejected, rejected,
            "controller record does not apply: {rec:?}"
        );
        self.bytes += enc.len() + 4;
        self.records.push(rec);
    }

    /// The invariants of every partition record this controller emits.
    fn check(&self, rec: &MetadataRecord) {
        let MetadataRecord::PartitionChange {
            topic_id,
            partition,
            leader,
            leader_epoch,
            isr,
            replicas,
            elr,
            adding,
            removing,
        } = rec
        else {
            return;
        };
        let old = self
            .view
            .topics
            .get(topic_id)
            .and_then(|t| t.partitions.get(*partition as usize));
        let Some(old) = old else {
            panic!("partition record for an unknown partition: {rec:?}");
        };
        assert!(
            !replicas.is_empty() && distinct(replicas) && distinct(isr),
            "replicas and ISR are non-empty sets: {rec:?}"
        );
        assert!(
            !isr.is_empty() && isr.iter().all(|n| replicas.contains(n)),
            "ISR is a non-empty subset of the replicas: {rec:?}"
        );
        assert!(
            *leader == -1 || isr.contains(leader),
            "the leader is in the ISR: {rec:?}"
        );
        assert!(
            distinct(elr) && elr.iter().all(|n| replicas.contains(n) && !isr.contains(n)),
            "the ELR is a set of replicas outside the ISR: {rec:?}"
        );
        assert!(
            elr.is_empty() || isr.len() < self.min_isr(topic_id, replicas.len()),
            "an ELR only while the ISR is below min.insync.replicas: {rec:?}"
        );
        assert!(
            elr.iter()
                .all(|n| old.isr.contains(n) || old.elr.contains(n)),
            "only ISR or ELR members join the ELR: {old:?} -> {rec:?}"
        );
        assert!(
            *leader_epoch >= old.leader_epoch,
            "leader epochs never decrease: {old:?} -> {rec:?}"
        );
        let created = old.replicas.is_empty();
        assert!(
            distinct(adding)
                && distinct(removing)
                && adding
                    .iter()
                    .all(|n| replicas.contains(n) && !removing.contains(n))
                && removing.iter().all(|n| replicas.contains(n)),
            "adding and removing are disjoint sets of replicas: {rec:?}"
        );
        assert!(
            removing.len() < replicas.len(),
            "a reassignment keeps a target replica: {rec:?}"
        );
        if *replicas != old.replicas && !created {
            assert!(
                old.reassigning() || !adding.is_empty() || !removing.is_empty() || {
                    let (mut a, mut b) = (old.replicas.clone(), replicas.clone());
                    a.sort_unstable();
                    b.sort_unstable();
                    a == b
                },
                "replicas change only by a reassignment or a reorder: {old:?} -> {rec:?}"
            );
        }
        if !created && old.replicas.iter().any(|r| !replicas.contains(r)) {
            assert!(
                *leader_epoch > old.leader_epoch,
                "a replica leaves only with a new leader epoch: {old:?} -> {rec:?}"
            );
        }
        if *leader != old.leader && !created {
            assert!(
                *leader_epoch > old.leader_epoch,
                "a leader change bumps the leader epoch: {old:?} -> {rec:?}"
            );
        }
        if *leader != old.leader && *leader != -1 {
            assert!(
                self.registered_unfenced(*leader),
                "a new leader is registered and unfenced: {rec:?}"
            );
            let eligible = old.isr.contains(leader) || old.elr.contains(leader);
            assert!(
                created
                    || eligible
                    || self.unclean
                    || planted::enabled(PlantedBug::OutOfIsrElection),
                "a new leader comes from the previous ISR or ELR: {old:?} -> {rec:?}"
            );
            assert!(
                created || eligible || elr.is_empty(),
                "an unclean election empties the ELR: {old:?} -> {rec:?}"
            );
        }
    }
}

/// `leader` (from the ISR or ELR) takes over `p` in the next epoch; the ISR keeps its unfenced
/// members and gains the leader.
fn clean_election(round: &Round, p: &PartitionImage, leader: NodeId) -> Change {
    let mut isr: Vec<NodeId> = p.isr.clone();
    isr.retain(|&n| n == leader || round.registered_unfenced(n));
    if !isr.contains(&leader) {
        isr.push(leader);
    }
    Change {
        leader,
        leader_epoch: p.leader_epoch + 1,
        isr,
        clean: true,
    }
}

/// SplitMix64: the next output of the stream at `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Replicas of partition `p`: `rf` consecutive brokers from `(start + p) % n`.
fn assign(brokers: &[NodeId], start: usize, p: usize, rf: usize) -> Vec<NodeId> {
    assert!(
        rf >= 1 && rf <= brokers.len(),
        "validated replication factor"
    );
    (0..rf)
        .map(|i| brokers[(start + p + i) % brokers.len()])
        .collect()
}

/// Replicas of partition `p` on `brokers` (registered in `view`): [`assign`] when no broker
/// has a rack; else spread across racks, as Kafka's rack-aware placement does. Brokers are
/// ordered rack by rack in turn (racks by name, brokers by id within a rack, those without a
/// rack as one rack of their own), and from position `start + p` each replica is the next
/// broker whose rack has no replica yet, until every rack has one; then the next broker not
/// yet chosen. So `rf` replicas span min(`rf`, racks) racks, and leaderships (first replicas)
/// rotate over the order.
fn place(
    view: &MetadataImage,
    brokers: &[NodeId],
    start: usize,
    p: usize,
    rf: usize,
) -> Vec<NodeId> {
    let rack_of = |b: &NodeId| view.brokers.get(b).and_then(|r| r.rack.as_deref());
    if brokers.iter().all(|b| rack_of(b).is_none()) {
        return assign(brokers, start, p, rf);
    }
    assert!(
        rf >= 1 && rf <= brokers.len(),
        "validated replication factor"
    );
    let mut racks: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for b in brokers {
        racks.entry(rack_of(b)).or_default().push(*b);
    }
    let deepest = racks.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(brokers.len());
    for i in 0..deepest {
        order.extend(racks.values().filter_map(|members| members.get(i).copied()));
    }
    let mut chosen: Vec<NodeId> = Vec::with_capacity(rf);
    let mut used: BTreeSet<Option<&str>> = BTreeSet::new();
    let mut i = (start + p) % order.len();
    while chosen.len() < rf {
        let b = order[i];
        let rack = rack_of(&b);
        let fresh_rack = used.len() == racks.len() || !used.contains(&rack);
        if !chosen.contains(&b) && fresh_rack {
            // Once every rack has a replica, any broker not chosen may take the next.
            chosen.push(b);
            used.insert(rack);
        }
        i = (i + 1) % order.len();
    }
    chosen
}

fn assignment_start(topic_id: &[u8; 16], n: usize) -> usize {
    let mut head = [0u8; 8];
    head.copy_from_slice(&topic_id[..8]);
    (u64::from_be_bytes(head) % n as u64) as usize
}

fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX || !legal || name == "." || name == ".."
    {
        return Err(ControllerError::InvalidRequest(format!(
            "invalid topic name {name:?}"
        )));
    }
    Ok(())
}

fn validate_configs(configs: &[(String, String)]) -> Result<(), ControllerError> {
    let keys: BTreeSet<&str> = configs.iter().map(|(k, _)| k.as_str()).collect();
    let sized = configs
        .iter()
        .all(|(k, v)| !k.is_empty() && k.len() <= CONFIG_BYTES_MAX && v.len() <= CONFIG_BYTES_MAX);
    if configs.len() > TOPIC_CONFIGS_MAX || keys.len() != configs.len() || !sized {
        return Err(ControllerError::InvalidRequest(
            "configs: too many, duplicate keys, or too long".into(),
        ));
    }
    Ok(())
}

/// Checks the values of the replication throttle rates among `configs`.
fn validate_rates(configs: &[(String, String)]) -> Result<(), ControllerError> {
    for (k, v) in configs {
        if quota::BROKER_CONFIGS.contains(&k.as_str()) {
            quota::validate_rate(v)
                .map_err(|e| ControllerError::InvalidRequest(format!("{k}: {e}")))?;
        }
    }
    Ok(())
}

/// `change` applied to `current` (none: an empty set) under `scope`'s rules: the new set,
/// checked as every set the log holds.
fn changed_configs(
    scope: Scope,
    change: &ConfigChange,
    current: Option<&BTreeMap<String, String>>,
) -> Result<Vec<(String, String)>, ControllerError> {
    let empty = BTreeMap::new();
    let next = scope
        .apply(change, current.unwrap_or(&empty))
        .map_err(|r| ControllerError::InvalidRequest(r.message().to_string()))?;
    let configs: Vec<(String, String)> = next.into_iter().collect();
    validate_configs(&configs)?;
    Ok(configs)
}

fn configs_bytes(configs: &[(String, String)]) -> usize {
    configs.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
}

/// A partition's replicas and reassignment state, as a reassignment sets them.
struct Assignment {
    replicas: Vec<NodeId>,
    adding: Vec<NodeId>,
    removing: Vec<NodeId>,
}

impl Assignment {
    /// Moving from `original` to `target`: the target first, then the original replicas it
    /// drops (Kafka's merged order, so the target's first replica is the preferred leader
    /// while it runs). A target that only reorders `original` is no reassignment.
    fn moving(original: &[NodeId], target: &[NodeId]) -> Assignment {
        let removing: Vec<NodeId> = original
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        let adding: Vec<NodeId> = target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect();
        let mut replicas = target.to_vec();
        replicas.extend(&removing);
        Assignment {
            replicas,
            adding,
            removing,
        }
    }

    /// No reassignment: exactly these replicas.
    fn settled(replicas: Vec<NodeId>) -> Assignment {
        Assignment {
            replicas,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }
}

/// What one partition should become this round, if anything.
#[derive(Debug)]
struct Change {
    leader: NodeId,
    leader_epoch: i32,
    isr: Vec<NodeId>,
    /// Whether the leader stays or comes from the ISR or ELR (not an unclean election).
    clean: bool,
}

impl Controller {
    /// `node_id` is this node: while active it counts as alive whatever it hears. `seed` seeds
    /// the topic ids (give each node its own).
    pub fn new(cfg: ControllerConfig, node_id: NodeId, seed: u64) -> Self {
        Controller {
            cfg,
            node_id,
            rng: seed,
            active: None,
            activated_at_ms: 0,
            presumed_dead: None,
            heard: BTreeMap::new(),
            registered_at: BTreeMap::new(),
            shutting_down: BTreeMap::new(),
            requests: VecDeque::new(),
            in_flight: None,
            responses: VecDeque::new(),
            responses_dropped: 0,
            next_rebalance_ms: 0,
            rebalance_pending: false,
            watched: BTreeSet::new(),
            fenced: BTreeSet::new(),
            wake: false,
            caught_up: false,
            last_now_ms: 0,
            fetched: BTreeMap::new(),
            reassign_anchors: BTreeMap::new(),
            term_anchor: None,
            awaiting: BTreeSet::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Responses dropped because nobody polled them.
    pub fn responses_dropped(&self) -> u64 {
        self.responses_dropped
    }

    /// This node just became the raft leader (quorum epoch `epoch`) at `now_ms`.
    /// `previous_leader` is presumed dead (a majority stopped hearing from it) and is fenced at
    /// the first round unless heard from; every other node gets a full session timeout of grace.
    /// Nothing is decided until the image has applied this epoch's LeaderChange entry (the raft
    /// leader's first), so no decision rests on an image missing earlier terms' entries.
    pub fn activate(&mut self, now_ms: u64, epoch: i32, previous_leader: Option<NodeId>) {
        self.deactivate();
        self.last_now_ms = self.last_now_ms.max(now_ms);
        self.active = Some(epoch);
        self.activated_at_ms = now_ms;
        self.presumed_dead = previous_leader.filter(|&n| n != self.node_id);
        self.next_rebalance_ms = now_ms.saturating_add(self.cfg.leader_imbalance_check_ms);
        self.rebalance_pending = false;
        self.wake = true;
    }

    /// Lost leadership: queued and in-flight requests are answered NotController and liveness
    /// is forgotten.
    pub fn deactivate(&mut self) {
        self.active = None;
        let in_flight = self.in_flight.take().unwrap_or_default();
        let queued: Vec<Answer> = self
            .requests
            .drain(..)
            .map(|q| (q.correlation, q.from, ControllerResponse::ok()))
            .collect();
        for (correlation, to, _) in in_flight.into_iter().chain(queued) {
            self.respond(
                correlation,
                to,
                ControllerResponse::err(ControllerError::NotController),
            );
        }
        self.heard.clear();
        self.registered_at.clear();
        self.shutting_down.clear();
        self.fetched.clear();
        self.reassign_anchors.clear();
        self.term_anchor = None;
        self.awaiting.clear();
        self.presumed_dead = None;
        self.watched.clear();
        self.fenced.clear();
        self.rebalance_pending = false;
        self.wake = false;
        self.caught_up = false;
    }

    /// A raft Fetch or any request from `node`.
    pub fn heard_from(&mut self, node: NodeId, now_ms: u64) {
        if self.active.is_none() {
            return;
        }
        self.last_now_ms = self.last_now_ms.max(now_ms);
        let t = self.heard.entry(node).or_insert(now_ms);
        *t = (*t).max(now_ms);
        if self.fenced.contains(&node) && !self.shutting_down.contains_key(&node) {
            self.wake = true;
        }
    }

    /// `node`'s process `incarnation` fetched the metadata log from `fetch_offset`, its last
    /// entry being of `last_fetched_epoch`. Counted only when that entry is of this term (the
    /// quorum leader's own entries, so the fetcher holds this log up to `fetch_offset`).
    /// The quorum leader reports itself too, with its log end.
    pub fn fetched(
        &mut self,
        node: NodeId,
        incarnation: i64,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) {
        if self.active != Some(last_fetched_epoch) || incarnation < 0 {
            return;
        }
        if !self.fetched.contains_key(&node) && self.fetched.len() >= BROKERS_MAX {
            return;
        }
        let was = self.fetched.get(&node).copied();
        let now = match was {
            Some((i, offset)) if i == incarnation => (i, offset.max(fetch_offset)),
            _ => (incarnation, fetch_offset),
        };
        self.fetched.insert(node, now);
        // Caught-up nodes fetch from the same offset again and again: only news wakes.
        if was != Some(now) && self.awaiting.contains(&node) {
            self.wake = true;
        }
    }

    /// Whether `node`'s registered process fetched past `anchor`: it ran, with the disk its
    /// registration describes, after the entry at `anchor` was written.
    fn holds_since(&self, round: &Round, node: NodeId, anchor: i64) -> bool {
        if planted::enabled(PlantedBug::ReassignTrustsIsr) {
            return true;
        }
        let Some(b) = round.view.brokers.get(&node) else {
            return false;
        };
        let fetched = self.fetched.get(&node);
        fetched.is_some_and(|&(incarnation, offset)| incarnation == b.epoch && offset > anchor)
    }

    /// The anchor of the reassignment of partition `partition` of `topic_id` (see
    /// `reassign_anchors`).
    fn reassign_anchor(&self, topic_id: [u8; 16], partition: u32) -> i64 {
        let anchor = self.reassign_anchors.get(&(topic_id, partition)).copied();
        anchor.or(self.term_anchor).unwrap_or(i64::MAX)
    }

    /// The connection `node` sends frames on closed (its process died, or it is reconnecting).
    /// Unless it is heard from again within [`CONNECTION_LOST_GRACE_MS`], its session ends
    /// then instead of a full session timeout after it was last heard: a killed broker's
    /// partitions fail over sooner; a broker that merely reconnects keeps its session.
    pub fn connection_lost(&mut self, node: NodeId, now_ms: u64) {
        if self.active.is_none() || node == self.node_id {
            return;
        }
        self.last_now_ms = self.last_now_ms.max(now_ms);
        let expires = now_ms
            .saturating_add(CONNECTION_LOST_GRACE_MS)
            .saturating_sub(self.cfg.session_timeout_ms);
        if let Some(t) = self.heard.get_mut(&node) {
            *t = (*t).min(expires);
        }
        self.wake = true;
    }

    /// Queues a request for the next round (or answers it at once when this node is not the
    /// controller or the queue is full).
    pub fn submit(&mut self, correlation: u64, from: NodeId, req: ControllerRequest) {
        let error = if self.active.is_none() {
            ControllerError::NotController
        } else if self.requests.len() >= REQUESTS_QUEUED_MAX {
            ControllerError::QueueFull
        } else {
            self.requests.push_back(Queued {
                correlation,
                from,
                req,
            });
            self.wake = true;
            return;
        };
        self.respond(correlation, from, ControllerResponse::err(error));
    }

    /// The last record `step` returned is committed and applied: its requests are answered.
    pub fn committed(&mut self) {
        for (correlation, to, resp) in self.in_flight.take().unwrap_or_default() {
            self.respond(correlation, to, resp);
        }
    }

    pub fn poll_response(&mut self) -> Option<Answer> {
        self.responses.pop_front()
    }

    /// When `step` is due even without new input: now (work is waiting), the next session
    /// expiry, or the next preferred-leader check. `None` while inactive or until a `step` has
    /// seen the image catch up with this epoch (the shell calls `step` after applying entries).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.active.is_none() || !self.caught_up {
            return None;
        }
        if self.wake || !self.requests.is_empty() || self.rebalance_pending {
            return Some(self.last_now_ms);
        }
        let expiry = self
            .watched
            .iter()
            .filter(|&&n| n != self.node_id)
            .map(|&n| self.deadline(n))
            .min();
        let rebalance = self
            .cfg
            .auto_leader_rebalance
            .then_some(self.next_rebalance_ms);
        expiry.into_iter().chain(rebalance).min()
    }

    /// The time `node` stops counting as alive.
    fn deadline(&self, node: NodeId) -> u64 {
        let timeout = self.cfg.session_timeout_ms;
        match self.heard.get(&node) {
            Some(&t) => t.saturating_add(timeout),
            None if self.presumed_dead == Some(node) => self.activated_at_ms,
            None => self.activated_at_ms.saturating_add(timeout),
        }
    }

    fn alive(&self, node: NodeId, now_ms: u64) -> bool {
        node == self.node_id || now_ms < self.deadline(node)
    }

    /// Heard from within the session timeout (grace alone does not count): what unfences.
    fn heard_recently(&self, node: NodeId, now_ms: u64) -> bool {
        node == self.node_id
            || self
                .heard
                .get(&node)
                .is_some_and(|&t| now_ms < t.saturating_add(self.cfg.session_timeout_ms))
    }

    fn respond(&mut self, correlation: u64, to: NodeId, resp: ControllerResponse) {
        if self.responses.len() >= RESPONSES_QUEUED_MAX {
            self.responses_dropped += 1;
        } else {
            self.responses.push_back((correlation, to, resp));
        }
    }

    /// One round, called when nothing is uncommitted and `image` has everything proposed so far
    /// applied: at most one record (a batch) to propose, or `None`. Requests that fail
    /// validation are answered at once; the others once the returned record is committed (or
    /// at once if the round needs no record). `None`, deciding nothing, until `image` has
    /// applied this epoch's LeaderChange with this node as leader.
    pub fn step(&mut self, now_ms: u64, image: &MetadataImage) -> Option<MetadataRecord> {
        let epoch = self.active?;
        if self.in_flight.is_some() {
            return None;
        }
        self.caught_up = image.quorum_leader == Some((epoch, self.node_id));
        if !self.caught_up {
            return None;
        }
        self.last_now_ms = self.last_now_ms.max(now_ms);
        let now = self.last_now_ms;
        self.wake = false;
        // The last entry applied is this term's (at or after its LeaderChange).
        self.term_anchor.get_or_insert(image.applied_offset - 1);
        let mut round = Round {
            anchor: image.applied_offset,
            view: image.clone(),
            records: Vec::new(),
            bytes: 0,
            full: false,
            unclean: self.cfg.unclean_leader_election,
            min_insync_replicas: self.cfg.min_insync_replicas.max(1),
        };
        if !round.view.cluster_configs.contains_key(CLUSTER_MIN_ISR) {
            // First round of a new log (or one from before cluster configs): the cluster-level
            // value is this controller's flag from now on, whatever other nodes were given.
            let mut configs = round.view.cluster_configs.clone();
            configs.insert(
                CLUSTER_MIN_ISR.into(),
                round.min_insync_replicas.to_string(),
            );
            round.emit(MetadataRecord::ClusterConfig {
                configs: configs.into_iter().collect(),
            });
        }
        let view = &round.view;
        self.shutting_down
            .retain(|n, inc| view.brokers.get(n).is_some_and(|b| b.epoch == *inc));
        let mut pending: Vec<Option<Queued>> = self.requests.drain(..).map(Some).collect();
        let mut answers: Vec<Answer> = Vec::new();

        self.take_requests(&mut round, &mut pending, &mut answers, now, |r| {
            matches!(r, ControllerRequest::RegisterBroker { .. })
        });
        self.liveness(&mut round, now);
        self.take_requests(&mut round, &mut pending, &mut answers, now, |r| {
            matches!(r, ControllerRequest::ControlledShutdown { .. })
        });
        self.reconcile(&mut round, now);
        self.take_requests(&mut round, &mut pending, &mut answers, now, |r| {
            matches!(r, ControllerRequest::AlterPartition { .. })
        });
        self.take_requests(&mut round, &mut pending, &mut answers, now, |_| true);
        if !round.full {
            self.complete_reassignments(&mut round, now);
        }
        if self.cfg.auto_leader_rebalance && now >= self.next_rebalance_ms {
            self.rebalance_pending = true;
            self.next_rebalance_ms = now.saturating_add(self.cfg.leader_imbalance_check_ms.max(1));
        }
        if self.rebalance_pending && !round.full {
            self.rebalance(&mut round, now);
            self.rebalance_pending = round.full;
        }

        for q in pending.into_iter().flatten().rev() {
            self.requests.push_front(q);
        }
        // A round that proposed something is followed by one more, so decisions that depend
        // on it are never left waiting for unrelated input.
        self.wake = round.full || !self.requests.is_empty() || !round.records.is_empty();
        let topics = &round.view.topics;
        self.reassign_anchors.retain(|(id, p), _| {
            let part = topics.get(id).and_then(|t| t.partitions.get(*p as usize));
            part.is_some_and(|p| p.reassigning())
        });
        let brokers = round.view.brokers.iter();
        self.watched = brokers
            .filter(|&(n, b)| {
                !b.fenced || (self.shutting_down.contains_key(n) && self.alive(*n, now))
            })
            .map(|(&n, _)| n)
            .collect();
        self.fenced = round
            .view
            .brokers
            .iter()
            .filter(|(_, b)| b.fenced)
            .map(|(&n, _)| n)
            .collect();
        if round.records.is_empty() {
            for (correlation, to, resp) in answers {
                self.respond(correlation, to, resp);
            }
            return None;
        }
        self.in_flight = Some(answers);
        Some(MetadataRecord::Batch(round.records))
    }

    /// Handles the pending requests `pick` selects, in arrival order, until the round is full.
    fn take_requests(
        &mut self,
        round: &mut Round,
        pending: &mut [Option<Queued>],
        answers: &mut Vec<Answer>,
        now: u64,
        pick: impl Fn(&ControllerRequest) -> bool,
    ) {
        for slot in pending.iter_mut() {
            if round.full {
                return;
            }
            let Some(q) = slot.as_ref() else { continue };
            if !pick(&q.req) {
                continue;
            }
            let Some(result) = self.handle(round, q, now) else {
                return;
            };
            let q = slot.take().expect("checked above");
            match result {
                Ok(resp) => answers.push((q.correlation, q.from, resp)),
                Err(e) => self.respond(q.correlation, q.from, ControllerResponse::err(e)),
            }
        }
    }

    /// One request: `None` when its records do not fit this round.
    fn handle(
        &mut self,
        round: &mut Round,
        q: &Queued,
        now: u64,
    ) -> Option<Result<ControllerResponse, ControllerError>> {
        let ok = Ok(ControllerResponse::ok());
        match &q.req {
            ControllerRequest::RegisterBroker {
                node_id,
                host,
                port,
                incarnation,
                logs_intact,
                rack,
                directory_id,
            } => {
                if q.from != *node_id || *node_id < 0 {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "broker {node_id} (from {}) may not register: a broker registers itself",
                        q.from
                    ))));
                }
                let known = round.view.brokers.contains_key(node_id);
                if !known && round.view.brokers.len() >= BROKERS_MAX {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "broker {node_id} may not register: the cluster has {BROKERS_MAX} brokers"
                    ))));
                }
                if host.len() > HOST_BYTES_MAX {
                    return Some(Err(ControllerError::InvalidRequest("host too long".into())));
                }
                if rack
                    .as_ref()
                    .is_some_and(|r| r.is_empty() || r.len() > HOST_BYTES_MAX)
                {
                    return Some(Err(ControllerError::InvalidRequest(
                        "a rack is 1 to 255 bytes".into(),
                    )));
                }
                let same = round
                    .view
                    .brokers
                    .get(node_id)
                    .is_some_and(|b| b.epoch == *incarnation);
                if !same {
                    let rack_bytes = rack.as_ref().map_or(0, |r| r.len() + 5) + 18;
                    if !round.room(1, host.len() + rack_bytes + 32) {
                        return None;
                    }
                    round.emit(MetadataRecord::RegisterBroker {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        epoch: *incarnation,
                        logs_intact: *logs_intact,
                        rack: rack.clone(),
                        directory_id: *directory_id,
                    });
                    self.shutting_down.remove(node_id);
                    self.registered_at.insert(*node_id, now);
                }
                let t = self.heard.entry(*node_id).or_insert(now);
                *t = (*t).max(now);
                Some(ok)
            }
            ControllerRequest::ControlledShutdown {
                node_id,
                incarnation,
            } => {
                let fenced = match round.speaking_for_itself(q.from, *node_id, *incarnation) {
                    Ok(b) => b.fenced,
                    Err(e) => return Some(Err(e)),
                };
                if !fenced {
                    if !round.room(1, 32) {
                        return None;
                    }
                    round.emit(MetadataRecord::BrokerFence {
                        node_id: *node_id,
                        fenced: true,
                    });
                }
                self.shutting_down.insert(*node_id, *incarnation);
                Some(ok)
            }
            ControllerRequest::ReplicasOffline {
                node_id,
                incarnation,
                partitions,
                full,
            } => {
                if partitions.len() > ELECT_PARTITIONS_MAX {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "at most {ELECT_PARTITIONS_MAX} partitions per offline report"
                    ))));
                }
                if let Err(e) = round.speaking_for_itself(q.from, *node_id, *incarnation) {
                    return Some(Err(e));
                }
                let mut changes = Vec::new();
                let mut bytes = 0;
                let mut seen = BTreeSet::new();
                for &(topic_id, partition) in partitions {
                    let p = round
                        .view
                        .topics
                        .get(&topic_id)
                        .and_then(|t| t.partitions.get(partition as usize));
                    let Some(p) = p.filter(|_| seen.insert((topic_id, partition))) else {
                        continue;
                    };
                    if let Some(change) = self.replica_offline(round, p, *node_id, *full, now) {
                        bytes += partition_record_bytes(p.replicas.len());
                        changes.push((topic_id, partition, change));
                    }
                }
                if !changes.is_empty() && !round.room(changes.len(), bytes) {
                    return None;
                }
                let failed = (!*full).then_some(*node_id);
                for (id, partition, change) in changes {
                    round.partition_change_without(id, partition, change, failed);
                }
                Some(ok)
            }
            ControllerRequest::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                current_isr,
                new_isr,
            } => {
                let Some(p) = round
                    .view
                    .topics
                    .get(topic_id)
                    .and_then(|t| t.partitions.get(*partition as usize))
                    .filter(|p| !p.replicas.is_empty())
                else {
                    return Some(Err(ControllerError::UnknownTopic));
                };
                if q.from != *leader {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "AlterPartition for leader {leader} sent by {}",
                        q.from
                    ))));
                }
                // The partition epoch tells a late copy of an old request from a new one when the
                // ISR changed and changed back since (an expansion judged on a follower's old
                // position would add it back below the high watermark).
                let stale_epoch = *partition_epoch >= 0
                    && !round.view.partition_epochs_inexact
                    && p.partition_epoch != *partition_epoch
                    && !planted::enabled(PlantedBug::StaleAlterPartition);
                if p.leader != *leader
                    || p.leader_epoch != *leader_epoch
                    || p.isr != *current_isr
                    || stale_epoch
                {
                    return Some(Err(ControllerError::StaleRequest));
                }
                if !distinct(new_isr) {
                    return Some(Err(ControllerError::InvalidRequest(
                        "duplicate ISR members".into(),
                    )));
                }
                if !new_isr.contains(leader) || !new_isr.iter().all(|n| p.replicas.contains(n)) {
                    return Some(Err(ControllerError::IneligibleReplica(format!(
                        "ISR {new_isr:?} must hold the leader {leader} and only replicas {:?}",
                        p.replicas
                    ))));
                }
                let added = new_isr.iter().filter(|n| !p.isr.contains(n));
                if let Some(bad) = added.copied().find(|&n| !round.registered_unfenced(n)) {
                    // The refusal moves the partition epoch (a change to the same ISR) and is
                    // answered once that is committed. The leader then stops counting `bad`
                    // for its high watermark, so no other copy of this request (a retry, or
                    // the first copy late) may apply once `bad` is unfenced: they all name
                    // the old epoch now. The replication model found this.
                    let bytes = partition_record_bytes(p.replicas.len());
                    let isr = p.isr.clone();
                    if !round.room(1, bytes) {
                        return None;
                    }
                    round.partition_change(
                        *topic_id,
                        *partition,
                        *leader,
                        *leader_epoch,
                        isr,
                        true,
                    );
                    return Some(Ok(ControllerResponse::err(
                        ControllerError::IneligibleReplica(format!(
                            "broker {bad} is fenced or unregistered"
                        )),
                    )));
                }
                if p.isr != *new_isr {
                    if !round.room(1, partition_record_bytes(p.replicas.len())) {
                        return None;
                    }
                    let isr = new_isr.clone();
                    round.partition_change(
                        *topic_id,
                        *partition,
                        *leader,
                        *leader_epoch,
                        isr,
                        true,
                    );
                }
                Some(ok)
            }
            ControllerRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                assignments,
            } => {
                if let Err(e) = validate_topic_name(name).and(validate_configs(configs)) {
                    return Some(Err(e));
                }
                if round.view.topic_ids.contains_key(name) {
                    return Some(Err(ControllerError::TopicExists));
                }
                if *partitions == 0 || *partitions > MAX_PARTITIONS {
                    return Some(Err(ControllerError::InvalidPartitions(format!(
                        "{partitions} partitions: need 1..={MAX_PARTITIONS}"
                    ))));
                }
                let brokers = round.assignable();
                let rf = usize::from(*replication_factor);
                let n = *partitions as usize;
                let manual = if assignments.is_empty() {
                    None
                } else if assignments.len() != n || assignments[0].len() != rf {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "{n} partitions of {rf} replicas requested with {} replica lists",
                        assignments.len()
                    ))));
                } else {
                    match round.manual_assignment(assignments, None, 0) {
                        Ok(placed) => Some(placed),
                        Err(e) => return Some(Err(e)),
                    }
                };
                if manual.is_none() && (rf == 0 || rf > brokers.len()) {
                    return Some(Err(ControllerError::InvalidReplicationFactor(format!(
                        "replication factor {rf} with {} available brokers",
                        brokers.len()
                    ))));
                }
                let bytes = n * partition_record_bytes(rf) + configs_bytes(configs) + name.len();
                if bytes + 64 > ROUND_BYTES_MAX {
                    return Some(Err(ControllerError::InvalidPartitions(format!(
                        "{n} partitions of {rf} replicas exceed one metadata entry"
                    ))));
                }
                if !round.room(n + 2, bytes + 64) {
                    return None;
                }
                let Some(id) = self.fresh_topic_id(&round.view) else {
                    return Some(Err(ControllerError::InvalidRequest(
                        "no free topic id".into(),
                    )));
                };
                round.emit(MetadataRecord::CreateTopic {
                    name: name.clone(),
                    id,
                    partitions: *partitions,
                });
                if !configs.is_empty() {
                    round.emit(MetadataRecord::TopicConfig {
                        topic_id: id,
                        configs: configs.clone(),
                    });
                }
                match manual {
                    Some(placed) => {
                        for (p, (replicas, isr)) in placed.into_iter().enumerate() {
                            round.new_partition(id, p, replicas, isr);
                        }
                    }
                    None => {
                        let start = assignment_start(&id, brokers.len());
                        for p in 0..n {
                            let replicas = place(&round.view, &brokers, start, p, rf);
                            round.new_partition(id, p, replicas.clone(), replicas);
                        }
                    }
                }
                Some(Ok(ControllerResponse {
                    topic_id: Some(id),
                    ..ControllerResponse::ok()
                }))
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
            } => {
                let Some((&id, t)) = round
                    .view
                    .topic_ids
                    .get(name)
                    .and_then(|id| round.view.topics.get_key_value(id))
                else {
                    return Some(Err(ControllerError::UnknownTopic));
                };
                let have = t.partitions.len();
                if *count as usize <= have || *count > MAX_PARTITIONS {
                    return Some(Err(ControllerError::InvalidPartitions(format!(
                        "{count} partitions: topic has {have}, may grow to {MAX_PARTITIONS}"
                    ))));
                }
                let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                let brokers = round.assignable();
                let n = *count as usize;
                let manual = if assignments.is_empty() {
                    None
                } else if assignments.len() != n - have {
                    return Some(Err(ControllerError::InvalidReplicaAssignment(format!(
                        "{} new partitions with {} replica lists",
                        n - have,
                        assignments.len()
                    ))));
                } else {
                    match round.manual_assignment(assignments, Some(rf), have) {
                        Ok(placed) => Some(placed),
                        Err(e) => return Some(Err(e)),
                    }
                };
                if manual.is_none() && (rf == 0 || rf > brokers.len()) {
                    return Some(Err(ControllerError::InvalidReplicationFactor(format!(
                        "replication factor {rf} with {} available brokers",
                        brokers.len()
                    ))));
                }
                let bytes = (n - have) * partition_record_bytes(rf) + 64;
                if bytes > ROUND_BYTES_MAX {
                    return Some(Err(ControllerError::InvalidPartitions(format!(
                        "{} new partitions of {rf} replicas exceed one metadata entry",
                        n - have
                    ))));
                }
                if !round.room(n - have + 1, bytes) {
                    return None;
                }
                round.emit(MetadataRecord::CreatePartitions {
                    topic_id: id,
                    count: *count,
                });
                match manual {
                    Some(placed) => {
                        for (i, (replicas, isr)) in placed.into_iter().enumerate() {
                            round.new_partition(id, have + i, replicas, isr);
                        }
                    }
                    None => {
                        let start = assignment_start(&id, brokers.len());
                        for p in have..n {
                            let replicas = place(&round.view, &brokers, start, p, rf);
                            round.new_partition(id, p, replicas.clone(), replicas);
                        }
                    }
                }
                Some(ok)
            }
            ControllerRequest::DeleteTopic { name } => {
                let Some(&id) = round.view.topic_ids.get(name) else {
                    return Some(Err(ControllerError::UnknownTopic));
                };
                if !round.room(1, 32) {
                    return None;
                }
                round.emit(MetadataRecord::DeleteTopic { topic_id: id });
                Some(ok)
            }
            ControllerRequest::AlterTopicConfigs { name, change } => {
                let Some(&id) = round.view.topic_ids.get(name) else {
                    return Some(Err(ControllerError::UnknownTopic));
                };
                let current = round.view.topics.get(&id).map(|t| &t.configs);
                let configs = &match changed_configs(Scope::Topic, change, current) {
                    Ok(configs) => configs,
                    Err(e) => return Some(Err(e)),
                };
                // Partitions with an ELR may need a record each (see Round::recheck_elr).
                let with_elr = round.view.topics.get(&id).map_or(0, |t| {
                    let ps = t.partitions.iter().filter(|p| !p.elr.is_empty());
                    ps.map(|p| partition_record_bytes(p.replicas.len())).sum()
                });
                if !round.room(
                    1 + with_elr / partition_record_bytes(1),
                    configs_bytes(configs) + 32 + with_elr,
                ) {
                    return None;
                }
                round.emit(MetadataRecord::TopicConfig {
                    topic_id: id,
                    configs: configs.clone(),
                });
                round.recheck_elr(id);
                Some(Ok(ControllerResponse::with_configs(configs)))
            }
            ControllerRequest::AlterClusterConfigs { change } => {
                let current = Some(&round.view.cluster_configs);
                let configs = &match changed_configs(Scope::Cluster, change, current) {
                    Ok(configs) => configs,
                    Err(e) => return Some(Err(e)),
                };
                if let Some((k, _)) = configs
                    .iter()
                    .find(|(k, _)| !CLUSTER_CONFIGS.contains(&k.as_str()))
                {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "{k} cannot be set cluster-wide"
                    ))));
                }
                if let Err(e) = validate_rates(configs) {
                    return Some(Err(e));
                }
                let min_isr = configs.iter().find(|(k, _)| k == CLUSTER_MIN_ISR);
                if min_isr.is_none_or(|(_, v)| parse_min_isr(v).is_none()) {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "{CLUSTER_MIN_ISR} must stay set cluster-wide, to a whole number from 1"
                    ))));
                }
                // Any partition with an ELR may need a record (see Round::recheck_elr).
                let with_elr: usize = round
                    .view
                    .topics
                    .values()
                    .map(|t| {
                        let ps = t.partitions.iter().filter(|p| !p.elr.is_empty());
                        ps.map(|p| partition_record_bytes(p.replicas.len()))
                            .sum::<usize>()
                    })
                    .sum();
                if !round.room(
                    1 + with_elr / partition_record_bytes(1),
                    configs_bytes(configs) + 32 + with_elr,
                ) {
                    return None;
                }
                round.emit(MetadataRecord::ClusterConfig {
                    configs: configs.clone(),
                });
                let ids: Vec<[u8; 16]> = round.view.topics.keys().copied().collect();
                for id in ids {
                    round.recheck_elr(id);
                }
                Some(Ok(ControllerResponse::with_configs(configs)))
            }
            ControllerRequest::AlterBrokerConfigs { node_id, change } => {
                if *node_id < 0 {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "broker id {node_id} is negative"
                    ))));
                }
                let current = round.view.broker_configs.get(node_id);
                let configs = &match changed_configs(Scope::Broker, change, current) {
                    Ok(configs) => configs,
                    Err(e) => return Some(Err(e)),
                };
                if let Err(e) = validate_rates(configs) {
                    return Some(Err(e));
                }
                if let Some((k, _)) = configs
                    .iter()
                    .find(|(k, _)| !quota::BROKER_CONFIGS.contains(&k.as_str()))
                {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "{k} cannot be set for one broker; only {:?}",
                        quota::BROKER_CONFIGS
                    ))));
                }
                if !round.room(1, configs_bytes(configs) + 32) {
                    return None;
                }
                round.emit(MetadataRecord::BrokerConfig {
                    node_id: *node_id,
                    configs: configs.clone(),
                });
                Some(Ok(ControllerResponse::with_configs(configs)))
            }
            ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            } => {
                if partitions.len() > ELECT_PARTITIONS_MAX {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "at most {ELECT_PARTITIONS_MAX} partitions per election request"
                    ))));
                }
                // Every decision is made on the round's view before any is applied, so the
                // request's changes go into one round together or wait for the next.
                let mut seen = BTreeSet::new();
                let mut elections = Vec::with_capacity(partitions.len());
                let mut changes = Vec::new();
                let mut bytes = 0;
                for &(topic_id, partition) in partitions {
                    if !seen.insert((topic_id, partition)) {
                        continue;
                    }
                    let p = round
                        .view
                        .topics
                        .get(&topic_id)
                        .and_then(|t| t.partitions.get(partition as usize));
                    let outcome = match p.map(|p| self.operator_election(round, p, *unclean, now)) {
                        None => ElectionOutcome::UnknownPartition,
                        Some(Err(outcome)) => outcome,
                        Some(Ok(change)) => {
                            bytes += partition_record_bytes(p.map_or(0, |p| p.replicas.len()));
                            changes.push((topic_id, partition, change));
                            ElectionOutcome::Elected
                        }
                    };
                    elections.push((topic_id, partition, outcome));
                }
                if !changes.is_empty() && !round.room(changes.len(), bytes) {
                    return None;
                }
                // The operator's unclean request lets these records (only) pass the check that
                // a new leader comes from the ISR or ELR.
                let configured = round.unclean;
                round.unclean |= *unclean;
                for (id, partition, c) in changes {
                    round.partition_change(id, partition, c.leader, c.leader_epoch, c.isr, c.clean);
                }
                round.unclean = configured;
                Some(Ok(ControllerResponse {
                    elections,
                    ..ControllerResponse::ok()
                }))
            }
            ControllerRequest::AllocateProducerIds {
                node_id,
                incarnation,
            } => {
                if let Err(e) = round.speaking_for_itself(q.from, *node_id, *incarnation) {
                    return Some(Err(e));
                }
                let first = round.view.next_producer_id;
                let block = ProducerIdBlock {
                    first,
                    count: PRODUCER_IDS_PER_BLOCK,
                };
                if planted::enabled(PlantedBug::ProducerIdsReused) {
                    return Some(Ok(ControllerResponse {
                        producer_ids: Some(block),
                        ..ControllerResponse::ok()
                    }));
                }
                let Some(next) = first.checked_add(PRODUCER_IDS_PER_BLOCK) else {
                    return Some(Err(ControllerError::InvalidRequest(
                        "every producer id has been handed out".into(),
                    )));
                };
                if !round.room(1, 32) {
                    return None;
                }
                round.emit(MetadataRecord::ProducerIds {
                    node_id: *node_id,
                    next_producer_id: next,
                });
                assert_eq!(round.view.next_producer_id, next, "the block is taken");
                Some(Ok(ControllerResponse {
                    producer_ids: Some(block),
                    ..ControllerResponse::ok()
                }))
            }
            ControllerRequest::DescribeQuorum => Some(Err(ControllerError::InvalidRequest(
                "DescribeQuorum is answered by the quorum leader, not the controller".into(),
            ))),
            ControllerRequest::AlterReassignments { partitions } => {
                if partitions.len() > REASSIGN_PARTITIONS_MAX {
                    return Some(Err(ControllerError::InvalidRequest(format!(
                        "at most {REASSIGN_PARTITIONS_MAX} partitions per reassignment request"
                    ))));
                }
                // Room for every named partition first, so the request applies in one round.
                // A record lists at most the current replicas and the target twice over (as
                // replicas, ISR, ELR, adding and removing): twice their sum bounds it.
                let bytes: usize = partitions
                    .iter()
                    .map(|(id, p, t)| {
                        let part = round.view.topics.get(id);
                        let part = part.and_then(|x| x.partitions.get(*p as usize));
                        let now = part.map_or(0, |x| x.replicas.len());
                        partition_record_bytes(2 * (now + t.as_ref().map_or(0, Vec::len)))
                    })
                    .sum();
                if !round.room(partitions.len(), bytes) {
                    return None;
                }
                let mut seen = BTreeSet::new();
                let mut reassignments = Vec::with_capacity(partitions.len());
                for (topic_id, partition, target) in partitions {
                    if !seen.insert((*topic_id, *partition)) {
                        continue;
                    }
                    let records = round.records.len();
                    let outcome =
                        self.reassign(round, *topic_id, *partition, target.as_deref(), now);
                    if round.records.len() > records {
                        // The round's one entry (at `round.anchor`) carries the change.
                        let key = (*topic_id, *partition);
                        self.reassign_anchors.insert(key, round.anchor);
                    }
                    reassignments.push((*topic_id, *partition, outcome));
                }
                Some(Ok(ControllerResponse {
                    reassignments,
                    ..ControllerResponse::ok()
                }))
            }
        }
    }

    /// One partition of an AlterReassignments request, decided and emitted on the round's
    /// view. A new target replaces any reassignment in progress (moving from the original
    /// replicas); `None` cancels one, back to the original replicas. Either way a replica in
    /// the ISR or ELR that the new target leaves out stays, being removed, until that target
    /// is in sync; it then counts among the original replicas.
    fn reassign(
        &self,
        round: &mut Round,
        topic_id: [u8; 16],
        partition: u32,
        target: Option<&[NodeId]>,
        now: u64,
    ) -> ReassignOutcome {
        let Some(p) = round
            .view
            .topics
            .get(&topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .filter(|p| !p.replicas.is_empty())
        else {
            return ReassignOutcome::UnknownPartition;
        };
        let original = p.original_replicas();
        let mut to = match target {
            None if !p.reassigning() => return ReassignOutcome::NoReassignmentInProgress,
            None => Assignment::settled(original),
            Some(target) => {
                if target.is_empty() || !distinct(target) {
                    return ReassignOutcome::InvalidReplicas(format!(
                        "replicas {target:?}: need a non-empty list of distinct brokers"
                    ));
                }
                if let Some(b) = target.iter().find(|b| !round.view.brokers.contains_key(b)) {
                    return ReassignOutcome::InvalidReplicas(format!("unknown broker {b}"));
                }
                Assignment::moving(&original, target)
            }
        };
        // An ISR or ELR member holds every committed record; the new target may not. It stays,
        // as a replica being removed, until the target is in sync (Kafka drops a replica the
        // replaced reassignment was adding at once: replication sim seed 10,200,352 lost every
        // copy that way when the one kept in-sync replica turned out to be on a wiped disk).
        let keep = p
            .replicas
            .iter()
            .copied()
            .filter(|r| !to.replicas.contains(r) && (p.isr.contains(r) || p.elr.contains(r)));
        let keep: Vec<NodeId> = keep.collect();
        to.replicas.extend(&keep);
        to.removing.extend(keep);
        if to.replicas == p.replicas && to.adding == p.adding && to.removing == p.removing {
            return ReassignOutcome::Accepted;
        }
        // Out-of-sync replicas leave at once (a cancellation, or a new target dropping replicas
        // the last one added): some replica that stays in sync must be heard from in its
        // registration since this reassignment began. Otherwise every in-sync copy that stays
        // may belong to a process that is gone, its disk perhaps with it, and the dropped
        // replica may hold the only copy.
        let drops = p.replicas.iter().any(|r| !to.replicas.contains(r));
        if drops {
            let anchor = self.reassign_anchor(topic_id, partition);
            let kept = p.isr.iter().filter(|r| to.replicas.contains(r));
            if !kept.clone().any(|&r| self.holds_since(round, r, anchor)) {
                return ReassignOutcome::InvalidReplicas(format!(
                    "no in-sync replica that stays ({:?}) has been heard from since the \
                     reassignment began; retry once one has",
                    kept.collect::<Vec<_>>()
                ));
            }
        }
        let usable = |round: &Round, r: NodeId| self.usable(round, r, now);
        match round.reassign_to(topic_id, partition, to, usable) {
            Ok(()) => ReassignOutcome::Accepted,
            Err(why) => ReassignOutcome::InvalidReplicas(why),
        }
    }

    /// Finishes every reassignment whose target replicas are all in the ISR and all heard
    /// from, in their registrations, since it began: the replicas become the target, the
    /// removed ones leave (in a new leader epoch), and a leader being removed hands over to
    /// the first in-sync, usable target replica (the reassignment waits while there is none).
    ///
    /// Being in the ISR is not enough: a target whose process died stays there until its
    /// session times out, and one restarted on an empty disk stays there until its new
    /// registration commits. Completing onto it then would delete the only copies left
    /// (replication sim seed 9,731,376). A fetch since the reassignment began shows the
    /// registered process, with its disk, outlived that moment.
    fn complete_reassignments(&mut self, round: &mut Round, now: u64) {
        self.awaiting.clear();
        let ids: Vec<[u8; 16]> = round.view.topics.keys().copied().collect();
        for id in ids {
            let n = round.view.topics.get(&id).map_or(0, |t| t.partitions.len());
            for i in 0..n {
                let Some(p) = round.view.topics.get(&id).map(|t| &t.partitions[i]) else {
                    break;
                };
                let target = p.target_replicas();
                if !p.reassigning() || !target.iter().all(|r| p.isr.contains(r)) {
                    continue;
                }
                let anchor = self.reassign_anchor(id, i as u32);
                let unheard = target
                    .iter()
                    .filter(|&&r| !self.holds_since(round, r, anchor));
                let unheard: Vec<NodeId> = unheard.copied().collect();
                if !unheard.is_empty() {
                    self.awaiting.extend(unheard);
                    continue;
                }
                if !round.room(1, partition_record_bytes(p.replicas.len())) {
                    return;
                }
                let usable = |round: &Round, r: NodeId| self.usable(round, r, now);
                let _ = round.reassign_to(id, i as u32, Assignment::settled(target), usable);
            }
        }
    }

    /// An operator's election for `p`, decided on the round's view. Preferred: the first
    /// replica takes over if it is in the ISR and usable (settled or not: the operator asked).
    /// Unclean: only a leaderless partition, from the ISR, then the ELR, then any usable
    /// replica (which becomes the whole ISR; committed records it lacks are lost, which is
    /// what the operator accepts by asking).
    fn operator_election(
        &self,
        round: &Round,
        p: &PartitionImage,
        unclean: bool,
        now: u64,
    ) -> Result<Change, ElectionOutcome> {
        let Some(&first) = p.replicas.first() else {
            return Err(ElectionOutcome::UnknownPartition);
        };
        if !unclean {
            if p.leader == first {
                return Err(ElectionOutcome::NotNeeded);
            }
            if !p.isr.contains(&first) || !self.usable(round, first, now) {
                return Err(ElectionOutcome::PreferredNotAvailable);
            }
            return Ok(Change {
                leader: first,
                leader_epoch: p.leader_epoch + 1,
                isr: p.isr.clone(),
                clean: true,
            });
        }
        if p.leader != -1 {
            return Err(ElectionOutcome::NotNeeded);
        }
        let clean = self
            .elect(round, p, &p.isr, now)
            .or_else(|| self.elect(round, p, &p.elr, now));
        if let Some(leader) = clean {
            return Ok(clean_election(round, p, leader));
        }
        let usable = |r: &NodeId| self.usable(round, *r, now);
        match p.replicas.iter().copied().find(usable) {
            Some(leader) => Ok(Change {
                leader,
                leader_epoch: p.leader_epoch + 1,
                isr: vec![leader],
                clean: false,
            }),
            None => Err(ElectionOutcome::EligibleNotAvailable),
        }
    }

    /// What partition `p` becomes when `node`'s copy of it failed (or, `full`, has no room):
    /// `node` out of the ISR (a failed copy out of the ELR too) and, where it led (or nobody
    /// did), another usable ISR member, else ELR member, elected. `None` when `node` is in
    /// neither (a full copy: not in the ISR), or when it leads and nothing else can: a sole
    /// copy keeps its place, so that its restart (or room) brings the partition back with
    /// every record.
    fn replica_offline(
        &self,
        round: &Round,
        p: &PartitionImage,
        node: NodeId,
        full: bool,
        now: u64,
    ) -> Option<Change> {
        if !p.isr.contains(&node) && (full || !p.elr.contains(&node)) {
            return None;
        }
        let mut rest = p.clone();
        rest.isr.retain(|&n| n != node);
        rest.elr.retain(|&n| n != node);
        let elected = if p.leader == node || p.leader == -1 {
            self.elect(round, &rest, &rest.isr, now)
                .or_else(|| self.elect(round, &rest, &rest.elr, now))
        } else {
            None
        };
        let change = match elected {
            Some(leader) => clean_election(round, &rest, leader),
            None if p.leader == node || rest.isr.is_empty() => return None,
            None => Change {
                leader: p.leader,
                leader_epoch: p.leader_epoch + 1,
                isr: rest.isr,
                clean: true,
            },
        };
        debug_assert!(!change.isr.contains(&node), "{change:?}");
        Some(change)
    }

    /// A fresh, non-zero topic id from the seeded SplitMix64 stream.
    fn fresh_topic_id(&mut self, view: &MetadataImage) -> Option<[u8; 16]> {
        for _ in 0..TOPIC_ID_ATTEMPTS_MAX {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&splitmix64(&mut self.rng).to_be_bytes());
            id[8..].copy_from_slice(&splitmix64(&mut self.rng).to_be_bytes());
            if id != [0; 16] && !view.topics.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Fences registered brokers gone silent (never this node) and unfences fenced ones heard
    /// from again (unless in controlled shutdown).
    fn liveness(&mut self, round: &mut Round, now: u64) {
        let brokers: Vec<(NodeId, bool)> = round
            .view
            .brokers
            .iter()
            .map(|(&n, b)| (n, b.fenced))
            .collect();
        for (node_id, fenced) in brokers {
            let flip = if fenced {
                !self.shutting_down.contains_key(&node_id) && self.heard_recently(node_id, now)
            } else {
                !self.alive(node_id, now)
            };
            if flip {
                if !round.room(1, 32) {
                    return;
                }
                round.emit(MetadataRecord::BrokerFence {
                    node_id,
                    fenced: !fenced,
                });
            }
        }
    }

    /// Brings every partition in line with the brokers' state: a leader that is fenced (or not
    /// alive) is replaced from the ISR, or the partition goes offline keeping its ISR (a fenced
    /// leader still alive with no ISR member to take over keeps leading, as in a controlled
    /// shutdown); fenced members leave the ISR while the leader leads; an offline partition
    /// elects an ISR member that is back (or, unclean, any usable replica).
    fn reconcile(&mut self, round: &mut Round, now: u64) {
        let ids: Vec<[u8; 16]> = round.view.topics.keys().copied().collect();
        for id in ids {
            let n = round.view.topics.get(&id).map_or(0, |t| t.partitions.len());
            for i in 0..n {
                let Some(p) = round.view.topics.get(&id).map(|t| &t.partitions[i]) else {
                    break;
                };
                let Some(change) = self.reconcile_one(round, p, now) else {
                    continue;
                };
                if !round.room(1, partition_record_bytes(p.replicas.len())) {
                    return;
                }
                let (leader, epoch) = (change.leader, change.leader_epoch);
                round.partition_change(id, i as u32, leader, epoch, change.isr, change.clean);
            }
        }
    }

    fn usable(&self, round: &Round, node: NodeId, now: u64) -> bool {
        round.registered_unfenced(node) && self.alive(node, now)
    }

    /// Registered longer than [`LEADER_SETTLE_MS`] ago (or before this controller's term).
    fn settled(&self, node: NodeId, now: u64) -> bool {
        self.registered_at
            .get(&node)
            .is_none_or(|&t| now >= t.saturating_add(LEADER_SETTLE_MS))
    }

    /// A new leader for `p` other than its current one, from `pool`: the first usable member
    /// in replica order, settled ones first (any usable replica under the planted bug).
    fn elect(
        &self,
        round: &Round,
        p: &PartitionImage,
        pool: &[NodeId],
        now: u64,
    ) -> Option<NodeId> {
        let any = planted::enabled(PlantedBug::OutOfIsrElection);
        let eligible =
            |r: NodeId| r != p.leader && (any || pool.contains(&r)) && self.usable(round, r, now);
        let mut candidates = p.replicas.iter().copied().filter(|&r| eligible(r));
        let first = candidates.clone().find(|&r| self.settled(r, now));
        first.or_else(|| candidates.next())
    }

    fn reconcile_one(&self, round: &Round, p: &PartitionImage, now: u64) -> Option<Change> {
        if p.replicas.is_empty() {
            return None;
        }
        let unfenced_isr = |keep: NodeId| -> Vec<NodeId> {
            let isr = p.isr.iter().copied();
            isr.filter(|&n| n == keep || round.registered_unfenced(n))
                .collect()
        };
        let elected = |leader: NodeId| Some(clean_election(round, p, leader));
        let shrink = |leader: NodeId| {
            let isr = unfenced_isr(leader);
            (isr != p.isr).then_some(Change {
                leader,
                leader_epoch: p.leader_epoch,
                isr,
                clean: true,
            })
        };
        if p.leader != -1 && self.usable(round, p.leader, now) {
            return shrink(p.leader);
        }
        if let Some(c) = self.elect(round, p, &p.isr, now) {
            return elected(c);
        }
        if p.leader != -1 && self.alive(p.leader, now) {
            return shrink(p.leader);
        }
        // No ISR member can lead: an eligible leader replica holds every committed record too.
        if let Some(c) = self.elect(round, p, &p.elr, now) {
            return elected(c);
        }
        if round.unclean {
            let usable = |r: &NodeId| *r != p.leader && self.usable(round, *r, now);
            if let Some(r) = p.replicas.iter().copied().find(usable) {
                return Some(Change {
                    leader: r,
                    leader_epoch: p.leader_epoch + 1,
                    isr: vec![r],
                    clean: false,
                });
            }
        }
        (p.leader != -1).then(|| Change {
            leader: -1,
            leader_epoch: p.leader_epoch + 1,
            isr: p.isr.clone(),
            clean: true,
        })
    }

    /// Preferred-leader election: leadership returns to the first replica where it is in the
    /// ISR and usable.
    fn rebalance(&mut self, round: &mut Round, now: u64) {
        let ids: Vec<[u8; 16]> = round.view.topics.keys().copied().collect();
        for id in ids {
            let n = round.view.topics.get(&id).map_or(0, |t| t.partitions.len());
            for i in 0..n {
                let Some(p) = round.view.topics.get(&id).map(|t| &t.partitions[i]) else {
                    break;
                };
                let Some(&first) = p.replicas.first() else {
                    continue;
                };
                if p.leader == first
                    || !p.isr.contains(&first)
                    || !self.usable(round, first, now)
                    || !self.settled(first, now)
                {
                    continue;
                }
                let (epoch, isr) = (p.leader_epoch + 1, p.isr.clone());
                if !round.room(1, partition_record_bytes(p.replicas.len())) {
                    return;
                }
                round.partition_change(id, i as u32, first, epoch, isr, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{RwLock, RwLockReadGuard};

    use crate::cluster::config_change::ConfigOp;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Planting is process-wide: the planted test holds this for writing, every test whose
    /// elections it would disturb for reading.
    static PLANT_LOCK: RwLock<()> = RwLock::new(());

    fn serial() -> RwLockReadGuard<'static, ()> {
        PLANT_LOCK.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller's own node.
    const ME: NodeId = 1;
    const SESSION_MS: u64 = 1_000;
    const REBALANCE_MS: u64 = 10_000;

    /// The cluster's min.insync.replicas in these tests: ISRs of RF 3 partitions fall below
    /// it, so ELRs form.
    const MIN_ISR: usize = 2;

    fn cfg(unclean: bool) -> ControllerConfig {
        ControllerConfig {
            session_timeout_ms: SESSION_MS,
            auto_leader_rebalance: true,
            leader_imbalance_check_ms: REBALANCE_MS,
            unclean_leader_election: unclean,
            min_insync_replicas: MIN_ISR,
        }
    }

    struct Sim {
        ctl: Controller,
        image: MetadataImage,
        now: u64,
        correlation: u64,
        incarnations: BTreeMap<NodeId, i64>,
        answers: BTreeMap<u64, ControllerResponse>,
    }

    impl Sim {
        fn new(cfg: ControllerConfig, seed: u64) -> Sim {
            Sim {
                ctl: Controller::new(cfg, ME, seed),
                image: MetadataImage::default(),
                now: 0,
                correlation: 0,
                incarnations: BTreeMap::new(),
                answers: BTreeMap::new(),
            }
        }

        /// Nodes `1..=nodes`, all registered and unfenced, this controller active.
        fn cluster(nodes: NodeId) -> Sim {
            Sim::cluster_with(cfg(false), nodes, 7)
        }

        fn cluster_with(cfg: ControllerConfig, nodes: NodeId, seed: u64) -> Sim {
            let mut s = Sim::new(cfg, seed);
            s.activate(1, None);
            for n in 1..=nodes {
                s.register(n);
            }
            s.settle();
            assert_eq!(s.image.brokers.len(), nodes as usize);
            assert!(s.image.brokers.values().all(|b| !b.fenced));
            s
        }

        /// This node becomes the quorum leader in `epoch`; its LeaderChange entry commits.
        fn activate(&mut self, epoch: i32, previous: Option<NodeId>) {
            self.ctl.activate(self.now, epoch, previous);
            self.commit(&MetadataRecord::LeaderChange { epoch, leader: ME });
        }

        /// Applies `rec` as committed (by this controller or an earlier one).
        fn commit(&mut self, rec: &MetadataRecord) {
            let rejected = self.image.rejected;
            self.image.apply(self.image.applied_offset, &rec.encode());
            assert_eq!(self.image.rejected, rejected, "does not apply: {rec:?}");
        }

        /// One round, committed at once.
        fn round(&mut self) -> Option<MetadataRecord> {
            let rec = self.ctl.step(self.now, &self.image);
            if let Some(rec) = &rec {
                self.commit(rec);
                self.ctl.committed();
            }
            self.collect();
            rec
        }

        fn settle(&mut self) -> usize {
            for n in 0..100 {
                if self.round().is_none() {
                    return n;
                }
            }
            panic!("the controller does not settle");
        }

        fn collect(&mut self) {
            while let Some((c, _, r)) = self.ctl.poll_response() {
                assert!(self.answers.insert(c, r).is_none(), "answered twice");
            }
        }

        fn submit(&mut self, from: NodeId, req: ControllerRequest) -> u64 {
            self.correlation += 1;
            self.ctl.submit(self.correlation, from, req);
            self.collect();
            self.correlation
        }

        /// Submits and settles: the answer.
        fn request(&mut self, from: NodeId, req: ControllerRequest) -> ControllerResponse {
            let c = self.submit(from, req);
            self.settle();
            self.answers.remove(&c).expect("answered")
        }

        fn register(&mut self, n: NodeId) -> u64 {
            let inc = self.incarnations.entry(n).or_insert(0);
            *inc += 1;
            let incarnation = *inc;
            self.submit(
                n,
                ControllerRequest::RegisterBroker {
                    node_id: n,
                    host: format!("h{n}"),
                    port: 9092,
                    incarnation,
                    logs_intact: true,
                    rack: None,
                    directory_id: None,
                },
            )
        }

        /// Node `n`'s next process registers with its log directory on disk `disk` (a new disk
        /// takes it out of every ISR), and settles.
        fn register_on_disk(&mut self, n: NodeId, disk: u8) {
            *self.incarnations.entry(n).or_insert(0) += 1;
            let r = self.request(
                n,
                ControllerRequest::RegisterBroker {
                    node_id: n,
                    host: format!("h{n}"),
                    port: 9092,
                    incarnation: self.incarnations[&n],
                    logs_intact: true,
                    rack: None,
                    directory_id: Some([disk; 16]),
                },
            );
            assert_eq!(r.error, ControllerError::None);
        }

        /// Advances the clock by `ms` in steps of at most a tenth of the session, hearing from
        /// `alive` (fetching the whole log) at each and settling.
        fn run(&mut self, ms: u64, alive: &[NodeId]) {
            let end = self.now + ms;
            while self.now < end {
                self.now = (self.now + SESSION_MS / 10).min(end);
                for &n in alive {
                    self.ctl.heard_from(n, self.now);
                }
                self.fetch(alive);
            }
        }

        /// `nodes`' current processes fetch the metadata log from its end; then a settle.
        fn fetch(&mut self, nodes: &[NodeId]) {
            for &n in nodes {
                let incarnation = self.incarnations.get(&n).copied().unwrap_or(0);
                self.fetch_as(n, incarnation);
            }
            self.settle();
        }

        /// Process `incarnation` of node `n` fetches the metadata log from its end.
        fn fetch_as(&mut self, n: NodeId, incarnation: i64) {
            let Some(epoch) = self.ctl.active else {
                return;
            };
            let end = self.image.applied_offset;
            self.ctl.fetched(n, incarnation, end, epoch);
        }

        /// A one-partition topic committed directly, as an earlier controller left it.
        fn seed(&mut self, name: &str, replicas: &[NodeId], isr: &[NodeId], leader: NodeId) {
            let mut id = [0u8; 16];
            id[..name.len()].copy_from_slice(name.as_bytes());
            self.commit(&MetadataRecord::CreateTopic {
                name: name.into(),
                id,
                partitions: 1,
            });
            self.commit(&MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader,
                leader_epoch: 0,
                isr: isr.to_vec(),
                replicas: replicas.to_vec(),
                elr: Vec::new(),
                adding: Vec::new(),
                removing: Vec::new(),
            });
        }

        fn id(&self, name: &str) -> [u8; 16] {
            self.image.topic_ids[name]
        }

        fn part(&self, name: &str, p: usize) -> &PartitionImage {
            &self.image.topics[&self.id(name)].partitions[p]
        }

        fn fenced(&self, n: NodeId) -> bool {
            self.image.brokers[&n].fenced
        }

        /// AlterPartition of partition 0 as `from` sees it now (the current partition epoch).
        fn alter(&mut self, from: NodeId, name: &str, epoch: i32, cur: &[NodeId], new: &[NodeId]) {
            let req = self.alter_request(from, name, epoch, cur, new);
            let r = self.request(from, req);
            self.answers.insert(u64::MAX, r);
        }

        fn alter_request(
            &self,
            from: NodeId,
            name: &str,
            epoch: i32,
            cur: &[NodeId],
            new: &[NodeId],
        ) -> ControllerRequest {
            let topic_id = self.image.topic_ids.get(name).copied().unwrap_or([7; 16]);
            let partition_epoch = self
                .image
                .topics
                .get(&topic_id)
                .map_or(0, |t| t.partitions[0].partition_epoch);
            ControllerRequest::AlterPartition {
                topic_id,
                partition: 0,
                leader: from,
                leader_epoch: epoch,
                partition_epoch,
                current_isr: cur.to_vec(),
                new_isr: new.to_vec(),
            }
        }

        fn last(&mut self) -> ControllerError {
            self.answers.remove(&u64::MAX).expect("answered").error
        }
    }

    /// Four nodes, automatic preferred-leader elections off (operators decide).
    fn manual_cluster() -> Sim {
        let cfg = ControllerConfig {
            auto_leader_rebalance: false,
            ..cfg(false)
        };
        Sim::cluster_with(cfg, 4, 7)
    }

    fn create(name: &str, partitions: u32, rf: u16) -> ControllerRequest {
        ControllerRequest::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: Vec::new(),
            assignments: Vec::new(),
        }
    }

    fn pstate(p: &PartitionImage) -> (NodeId, i32, Vec<NodeId>) {
        (p.leader, p.leader_epoch, p.isr.clone())
    }

    #[test]
    fn controller_registers_brokers_as_themselves() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        let reg = |node_id, incarnation| ControllerRequest::RegisterBroker {
            node_id,
            host: "h".into(),
            port: 1,
            logs_intact: true,
            rack: None,
            directory_id: None,
            incarnation,
        };
        // A broker-only node (not a voter) registers like any broker.
        assert_eq!(s.request(9, reg(9, 1)).error, ControllerError::None);
        assert!(s.image.brokers.contains_key(&9));
        // Nobody registers another broker.
        let e = s.request(2, reg(3, 5)).error;
        assert!(matches!(e, ControllerError::InvalidRequest(_)), "{e:?}");
        assert_ne!(s.image.brokers[&3].epoch, 5);
        // The same incarnation again: answered, nothing proposed.
        let offset = s.image.applied_offset;
        assert_eq!(s.request(2, reg(2, 1)).error, ControllerError::None);
        assert_eq!(s.image.applied_offset, offset);
        assert_eq!(s.request(2, reg(2, 2)).error, ControllerError::None);
        assert_eq!(s.image.brokers[&2].epoch, 2);
        assert_eq!(s.image.applied_offset, offset + 1);
    }

    #[test]
    fn controller_fencing_the_leader_elects_from_the_isr_only() {
        let _g = serial();
        // With min.insync.replicas 1 no ISR is ever below it: no ELR forms.
        let one = ControllerConfig {
            min_insync_replicas: 1,
            ..cfg(false)
        };
        let mut s = Sim::cluster_with(one, 4, 7);
        s.seed("t", &[2, 4, 3], &[2, 3], 2);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        assert!(s.fenced(2) && !s.fenced(3) && !s.fenced(4));
        // 4 comes first in replica order and is alive, but is not in the ISR.
        assert_eq!(pstate(s.part("t", 0)), (3, 1, vec![3]));

        // The only ISR member dies: offline, keeping its ISR; nobody else is elected.
        s.run(SESSION_MS + 200, &[1, 4]);
        assert!(s.fenced(3));
        assert_eq!(pstate(s.part("t", 0)), (-1, 2, vec![3]));
        // 2 returns: unfenced, but out of the ISR, so still offline.
        s.run(300, &[1, 2, 4]);
        assert!(!s.fenced(2));
        assert_eq!(pstate(s.part("t", 0)), (-1, 2, vec![3]));
        // 3 returns: unfenced and elected.
        s.run(300, &[1, 2, 3, 4]);
        assert!(!s.fenced(3));
        assert_eq!(pstate(s.part("t", 0)), (3, 3, vec![3]));
        assert!(s.part("t", 0).elr.is_empty());
    }

    /// KIP-966: with min.insync.replicas 2, a replica that leaves an ISR of fewer members holds
    /// every committed record (leaders stop their high watermark there), so it may lead when
    /// no ISR member can; one that restarts without intact logs may not.
    #[test]
    fn controller_eligible_leader_replicas_lead_when_the_isr_cannot() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 4, 3], &[2, 3], 2);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        // 2 leaves an ISR now below 2 members: eligible. 4 never was in the ISR.
        assert_eq!(pstate(s.part("t", 0)), (3, 1, vec![3]));
        assert_eq!(s.part("t", 0).elr, vec![2]);
        // The only ISR member dies: offline, since the eligible 2 is fenced too.
        s.run(SESSION_MS + 200, &[1, 4]);
        assert_eq!(pstate(s.part("t", 0)), (-1, 2, vec![3]));
        assert_eq!(s.part("t", 0).elr, vec![2]);
        // 2 returns with its logs: it leads, and 3 becomes eligible in its place.
        s.run(300, &[1, 2, 4]);
        assert_eq!(pstate(s.part("t", 0)), (2, 3, vec![2]));
        assert_eq!(s.part("t", 0).elr, vec![3]);
        // The leader takes 4 back into the ISR: at min.insync.replicas, no ELR.
        s.alter(2, "t", 3, &[2], &[2, 4]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 3, vec![2, 4]));
        assert!(s.part("t", 0).elr.is_empty());

        // Again, but the eligible replica restarts without intact logs (no fsync before acks).
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 4, 3], &[2, 3], 2);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        s.run(SESSION_MS + 200, &[1, 4]);
        assert_eq!(s.part("t", 0).elr, vec![2]);
        let incarnation = 99;
        s.submit(
            2,
            ControllerRequest::RegisterBroker {
                node_id: 2,
                host: "h2".into(),
                port: 9092,
                incarnation,
                logs_intact: false,
                rack: None,
                directory_id: None,
            },
        );
        s.run(300, &[1, 2, 4]);
        assert_eq!(s.image.brokers[&2].epoch, incarnation);
        assert!(s.part("t", 0).elr.is_empty());
        assert_eq!(pstate(s.part("t", 0)), (-1, 2, vec![3]), "nobody may lead");
    }

    /// Lowering min.insync.replicas to the ISR's size lets the leader's high watermark move
    /// again: the ELR goes in the same batch as the config.
    #[test]
    fn controller_min_isr_change_clears_the_elr_with_the_config() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 4, 3], &[2, 3], 2);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        assert_eq!(s.part("t", 0).elr, vec![2]);
        let before = s.image.clone();
        let c = s.submit(
            2,
            ControllerRequest::AlterTopicConfigs {
                name: "t".into(),
                change: ConfigChange::Replace(vec![("min.insync.replicas".into(), "3".into())]),
            },
        );
        let rec = s.round().expect("a config record");
        s.collect();
        assert_eq!(s.answers[&c].error, ControllerError::None);
        assert_eq!(s.part("t", 0).elr, vec![2], "raising it keeps the ELR");
        assert!(check_round(&before, &rec, false, &mut Holders::new()).is_ok());
        let c = s.submit(
            2,
            ControllerRequest::AlterTopicConfigs {
                name: "t".into(),
                change: ConfigChange::Replace(vec![("min.insync.replicas".into(), "1".into())]),
            },
        );
        let rec = s.round().expect("a config record");
        s.collect();
        assert_eq!(s.answers[&c].error, ControllerError::None);
        let MetadataRecord::Batch(members) = rec else {
            panic!("rounds are batches")
        };
        assert!(matches!(members[0], MetadataRecord::TopicConfig { .. }));
        assert!(
            matches!(&members[1], MetadataRecord::PartitionChange { elr, .. } if elr.is_empty())
        );
        assert!(s.part("t", 0).elr.is_empty());
    }

    /// Config operations apply to the set in the log, not the sender's copy: two APPENDs
    /// decided in one round (as two brokers would send them at once) both land, for a topic,
    /// the cluster and one broker alike; an operation the set refuses changes nothing; the
    /// answer carries the set written.
    #[test]
    fn controller_applies_config_operations_to_the_set_in_the_log() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.seed("t", &[1, 2, 3], &[1, 2, 3], 1);
        s.run(300, &[1, 2, 3]);
        let list = quota::FOLLOWER_REPLICAS;
        let append = |entry: &str| ControllerRequest::AlterTopicConfigs {
            name: "t".into(),
            change: ConfigChange::Operations(vec![ConfigOp::Append(list.into(), entry.into())]),
        };
        let a = s.submit(2, append("0:1"));
        let b = s.submit(3, append("0:2"));
        s.round().expect("a config record");
        s.collect();
        let configs = |s: &Sim| s.image.topics[&s.image.topic_ids["t"]].configs.clone();
        assert_eq!(s.answers[&a].error, ControllerError::None);
        assert_eq!(s.answers[&b].error, ControllerError::None);
        assert_eq!(configs(&s)[list], "0:1,0:2");
        let written = s.answers[&b].configs.clone().expect("the set written");
        assert_eq!(written, vec![(list.to_string(), "0:1,0:2".to_string())]);

        let r = s.request(
            2,
            ControllerRequest::AlterTopicConfigs {
                name: "t".into(),
                change: ConfigChange::Operations(vec![
                    ConfigOp::Subtract(list.into(), "0:1".into()),
                    ConfigOp::Set("retention.ms".into(), "soon".into()),
                ]),
            },
        );
        assert!(
            matches!(r.error, ControllerError::InvalidRequest(_)),
            "{r:?}"
        );
        assert_eq!(
            configs(&s)[list],
            "0:1,0:2",
            "a refused change changes nothing"
        );

        let rate = |key: &str, v: &str| ConfigOp::Set(key.into(), v.into());
        let cluster = |op: ConfigOp| ControllerRequest::AlterClusterConfigs {
            change: ConfigChange::Operations(vec![op]),
        };
        let a = s.submit(2, cluster(rate(quota::LEADER_RATE, "100")));
        let b = s.submit(3, cluster(rate(quota::FOLLOWER_RATE, "200")));
        s.round().expect("a config record");
        s.collect();
        assert_eq!(s.answers[&a].error, ControllerError::None);
        assert_eq!(s.answers[&b].error, ControllerError::None);
        assert_eq!(s.image.cluster_configs[quota::LEADER_RATE], "100");
        assert_eq!(s.image.cluster_configs[quota::FOLLOWER_RATE], "200");
        assert!(s.image.cluster_configs.contains_key(CLUSTER_MIN_ISR));
        let r = s.request(2, cluster(ConfigOp::Delete(CLUSTER_MIN_ISR.into())));
        assert!(
            matches!(r.error, ControllerError::InvalidRequest(_)),
            "{r:?}"
        );

        let broker = |op: ConfigOp| ControllerRequest::AlterBrokerConfigs {
            node_id: 3,
            change: ConfigChange::Operations(vec![op]),
        };
        let a = s.submit(2, broker(rate(quota::LEADER_RATE, "10")));
        let b = s.submit(1, broker(rate(quota::FOLLOWER_RATE, "20")));
        s.round().expect("a config record");
        s.collect();
        assert_eq!(s.answers[&a].error, ControllerError::None);
        assert_eq!(s.answers[&b].error, ControllerError::None);
        assert_eq!(s.image.broker_configs[&3].len(), 2);
        let r = s.request(2, broker(ConfigOp::Delete(quota::LEADER_RATE.into())));
        assert_eq!(r.error, ControllerError::None);
        let r = s.request(2, broker(ConfigOp::Delete(quota::FOLLOWER_RATE.into())));
        assert_eq!(r.error, ControllerError::None);
        assert!(
            !s.image.broker_configs.contains_key(&3),
            "an emptied set is removed"
        );
    }

    /// With racks, every partition's replicas span as many racks as the replication factor
    /// allows (brokers without a rack count as one rack), and leaderships rotate over every
    /// broker; without racks, placement is the consecutive one.
    #[test]
    fn controller_places_replicas_across_racks() {
        use crate::raft::metadata::BrokerRegistration;
        let mut view = MetadataImage::default();
        let racks = [
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, None),
            (6, Some("c")),
        ];
        for (id, rack) in racks {
            let b = BrokerRegistration {
                host: "h".into(),
                port: 9092,
                epoch: 1,
                fenced: false,
                rack: rack.map(String::from),
                directory_id: None,
            };
            view.brokers.insert(id, b);
        }
        let brokers: Vec<NodeId> = (1..=6).collect();
        let spanned = |replicas: &[NodeId]| -> BTreeSet<Option<String>> {
            replicas
                .iter()
                .map(|b| view.brokers[b].rack.clone())
                .collect()
        };
        for start in 0..6 {
            for rf in 1..=6 {
                let mut leaders = BTreeSet::new();
                for p in 0..12 {
                    let replicas = place(&view, &brokers, start, p, rf);
                    let distinct: BTreeSet<NodeId> = replicas.iter().copied().collect();
                    assert_eq!(distinct.len(), rf, "{replicas:?}");
                    assert_eq!(spanned(&replicas).len(), rf.min(4), "rf {rf}: {replicas:?}");
                    leaders.insert(replicas[0]);
                }
                assert_eq!(leaders.len(), 6, "rf {rf}: leaders {leaders:?}");
            }
        }
        for b in view.brokers.values_mut() {
            b.rack = None;
        }
        for p in 0..6 {
            assert_eq!(place(&view, &brokers, 2, p, 3), assign(&brokers, 2, p, 3));
        }
    }

    /// The first controller writes its min.insync.replicas to the log; a later controller
    /// started with another value reads the log's.
    #[test]
    fn controller_writes_the_cluster_min_isr_once() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        assert_eq!(
            s.image
                .cluster_configs
                .get(CLUSTER_MIN_ISR)
                .map(String::as_str),
            Some("2")
        );
        let other = ControllerConfig {
            min_insync_replicas: 1,
            ..cfg(false)
        };
        s.ctl = Controller::new(other, ME, 9);
        s.activate(2, None);
        s.settle();
        assert_eq!(s.image.cluster_configs[CLUSTER_MIN_ISR], "2");
        // Still 2 for the ELR: a follower leaving an ISR of 2 becomes eligible.
        s.seed("t", &[2, 3, 1], &[2, 3], 2);
        s.alter(2, "t", 0, &[2, 3], &[2]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(s.part("t", 0).elr, vec![3]);
    }

    /// Per-broker configs (the replication throttle rates) go to the log for any broker id,
    /// replace that broker's set, and are refused for other keys and bad values.
    #[test]
    fn controller_keeps_per_broker_throttle_rates() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        let set =
            |node_id: NodeId, configs: &[(&str, &str)]| ControllerRequest::AlterBrokerConfigs {
                node_id,
                change: ConfigChange::Replace(
                    configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            };
        let r = s.request(
            2,
            set(
                3,
                &[(quota::FOLLOWER_RATE, "1000"), (quota::LEADER_RATE, "2000")],
            ),
        );
        assert_eq!(r.error, ControllerError::None);
        assert_eq!(s.image.broker_configs[&3][quota::FOLLOWER_RATE], "1000");
        assert_eq!(s.image.broker_configs[&3][quota::LEADER_RATE], "2000");
        // A broker not (yet) registered may have configs, as in Kafka.
        let r = s.request(2, set(9, &[(quota::LEADER_RATE, "5")]));
        assert_eq!(r.error, ControllerError::None);
        assert_eq!(s.image.broker_configs[&9][quota::LEADER_RATE], "5");
        for bad in [
            set(3, &[(CLUSTER_MIN_ISR, "1")]),
            set(3, &[(quota::LEADER_RATE, "-1")]),
            set(3, &[(quota::LEADER_RATE, "fast")]),
            set(-1, &[(quota::LEADER_RATE, "1")]),
        ] {
            let r = s.request(2, bad.clone());
            assert!(
                matches!(r.error, ControllerError::InvalidRequest(_)),
                "{bad:?}: {r:?}"
            );
        }
        assert_eq!(
            s.image.broker_configs[&3].len(),
            2,
            "refusals changed nothing"
        );
        // Replacing the set drops what it leaves out; an empty set drops the broker's entry.
        let r = s.request(2, set(3, &[(quota::LEADER_RATE, "3000")]));
        assert_eq!(r.error, ControllerError::None);
        assert_eq!(s.image.broker_configs[&3].len(), 1);
        let r = s.request(2, set(3, &[]));
        assert_eq!(r.error, ControllerError::None);
        assert!(!s.image.broker_configs.contains_key(&3));
        // The cluster-wide rates sit beside min.insync.replicas and are checked the same way.
        let cluster = |rate: &str| ControllerRequest::AlterClusterConfigs {
            change: ConfigChange::Replace(vec![
                (CLUSTER_MIN_ISR.into(), "2".into()),
                (quota::FOLLOWER_RATE.into(), rate.into()),
            ]),
        };
        let r = s.request(2, cluster("-5"));
        assert!(
            matches!(r.error, ControllerError::InvalidRequest(_)),
            "{r:?}"
        );
        let r = s.request(2, cluster("1048576"));
        assert_eq!(r.error, ControllerError::None);
        assert_eq!(s.image.cluster_configs[quota::FOLLOWER_RATE], "1048576");
    }

    /// The cluster-level value is dynamic: lowering it to the ISR's size clears the ELR in
    /// the same batch, except where a topic override still holds the high watermark.
    #[test]
    fn controller_cluster_min_isr_change_rechecks_every_elr() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 4, 3], &[2, 3], 2);
        s.seed("u", &[2, 4, 3], &[2, 3], 2);
        let u = ControllerRequest::AlterTopicConfigs {
            name: "u".into(),
            change: ConfigChange::Replace(vec![(CLUSTER_MIN_ISR.into(), "2".into())]),
        };
        s.request(2, u);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        assert_eq!(s.part("t", 0).elr, vec![2]);
        assert_eq!(s.part("u", 0).elr, vec![2]);
        let set = |v: &str| ControllerRequest::AlterClusterConfigs {
            change: ConfigChange::Replace(vec![(CLUSTER_MIN_ISR.into(), v.into())]),
        };
        for bad in [
            ControllerRequest::AlterClusterConfigs {
                change: ConfigChange::Replace(vec![]),
            },
            set("0"),
            set("two"),
            ControllerRequest::AlterClusterConfigs {
                change: ConfigChange::Replace(vec![
                    (CLUSTER_MIN_ISR.into(), "1".into()),
                    ("retention.ms".into(), "1".into()),
                ]),
            },
        ] {
            let r = s.request(2, bad.clone());
            assert!(
                matches!(r.error, ControllerError::InvalidRequest(_)),
                "{bad:?}: {r:?}"
            );
        }
        assert_eq!(s.image.cluster_configs[CLUSTER_MIN_ISR], "2");
        let before = s.image.clone();
        let c = s.submit(2, set("1"));
        let rec = s.round().expect("a config record");
        s.collect();
        assert_eq!(s.answers[&c].error, ControllerError::None);
        assert!(check_round(&before, &rec, false, &mut Holders::new()).is_ok());
        let MetadataRecord::Batch(members) = rec else {
            panic!("rounds are batches")
        };
        assert!(matches!(members[0], MetadataRecord::ClusterConfig { .. }));
        assert_eq!(members.len(), 2, "one ELR change, for t only: {members:?}");
        assert!(s.part("t", 0).elr.is_empty());
        assert_eq!(s.part("u", 0).elr, vec![2], "u's own override still holds");
        assert_eq!(s.image.cluster_configs[CLUSTER_MIN_ISR], "1");
    }

    fn offline(s: &mut Sim, from: NodeId, node_id: NodeId, incarnation: i64) -> ControllerError {
        report(s, from, node_id, incarnation, false)
    }

    fn report(
        s: &mut Sim,
        from: NodeId,
        node_id: NodeId,
        incarnation: i64,
        full: bool,
    ) -> ControllerError {
        let partitions = vec![(s.id("t"), 0)];
        let req = ControllerRequest::ReplicasOffline {
            node_id,
            incarnation,
            partitions,
            full,
        };
        s.request(from, req).error
    }

    /// A broker whose copy failed leaves the ISR (never for the ELR), and leadership moves
    /// where it led, each time with a new leader epoch; a sole copy keeps its place, since its
    /// restart is what brings the records back.
    #[test]
    fn controller_a_failed_copy_leaves_the_isr_and_its_leadership() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        let inc = |s: &Sim, n: NodeId| s.incarnations[&n];
        // The leader's copy failed: the next ISR member in replica order leads.
        let i2 = inc(&s, 2);
        assert_eq!(offline(&mut s, 2, 2, i2), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (3, 1, vec![3, 4]));
        // A follower's: it leaves, and though the ISR is now below min.insync.replicas it
        // does not become eligible (its copy serves nothing).
        let i4 = inc(&s, 4);
        assert_eq!(offline(&mut s, 4, 4, i4), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (3, 2, vec![3]));
        assert!(s.part("t", 0).elr.is_empty(), "{:?}", s.part("t", 0));
        // Reported again: nothing left to change.
        assert_eq!(offline(&mut s, 4, 4, i4), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (3, 2, vec![3]));
        // The last copy in sync: nobody else can lead, so it stays (offline until restart).
        let i3 = inc(&s, 3);
        assert_eq!(offline(&mut s, 3, 3, i3), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (3, 2, vec![3]));
        // Only a broker's current incarnation speaks for it, and only for itself.
        assert_eq!(offline(&mut s, 3, 3, i3 + 1), ControllerError::StaleRequest);
        assert!(matches!(
            offline(&mut s, 2, 3, i3),
            ControllerError::InvalidRequest(_)
        ));
    }

    /// A full copy leaves the ISR, but with its records intact it becomes eligible (ELR) when
    /// the ISR falls below min.insync.replicas, as a fenced member would; so when the last
    /// in-sync copy is lost, it leads with what was committed. Found by the cluster sim (seed
    /// 9,890,349): a full copy was kept out of the ELR, and when the disk of the only in-sync
    /// copy was then replaced, the partition stayed offline for good although the full copy
    /// held every acknowledged record.
    #[test]
    fn controller_a_full_copy_stays_eligible() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[2, 3], &[2, 3], 2);
        let i3 = s.incarnations[&3];
        assert_eq!(report(&mut s, 3, 3, i3, true), ControllerError::None);
        let p = s.part("t", 0).clone();
        assert_eq!((p.leader, p.isr, p.elr), (2, vec![2], vec![3]));
        // Reported again: nothing left to change.
        assert_eq!(report(&mut s, 3, 3, i3, true), ControllerError::None);
        assert_eq!(s.part("t", 0).leader_epoch, p.leader_epoch);
        // The last in-sync copy fails: the full one, eligible, leads.
        let i2 = s.incarnations[&2];
        assert_eq!(offline(&mut s, 2, 2, i2), ControllerError::None);
        let p = s.part("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (3, vec![3]), "{p:?}");
    }

    /// An eligible replica (ELR) whose copy failed leaves the ELR, and an offline partition
    /// whose only ISR member failed goes to an eligible replica.
    #[test]
    fn controller_a_failed_copy_leaves_the_elr() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        // 3 and 4 die: the ISR shrinks below min.insync.replicas and they become eligible.
        s.run(SESSION_MS + 200, &[1, 2]);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2]));
        let mut elr = s.part("t", 0).elr.clone();
        elr.sort_unstable();
        assert_eq!(elr, vec![3, 4]);
        // 3 returns with a failed copy and says so: it leaves the ELR.
        s.register(3);
        s.run(300, &[1, 2, 3]);
        let i3 = s.incarnations[&3];
        assert_eq!(offline(&mut s, 3, 3, i3), ControllerError::None);
        assert_eq!(s.part("t", 0).elr, vec![4]);
        assert_eq!(s.part("t", 0).leader, 2);
        // 4 returns healthy and 2's copy fails: 4, eligible, leads.
        s.register(4);
        s.run(LEADER_SETTLE_MS + 300, &[1, 2, 3, 4]);
        let i2 = s.incarnations[&2];
        assert_eq!(offline(&mut s, 2, 2, i2), ControllerError::None);
        let p = s.part("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (4, vec![4]), "{p:?}");
        assert!(p.elr.is_empty(), "{p:?}");
    }

    fn producer_ids(s: &mut Sim, from: NodeId, node_id: NodeId) -> u64 {
        let incarnation = s.incarnations[&node_id];
        let req = ControllerRequest::AllocateProducerIds {
            node_id,
            incarnation,
        };
        s.submit(from, req)
    }

    /// Producer id blocks come from the log's next id: never overlapping, answered only once
    /// committed, and a new controller (or a snapshot) goes on where the log is.
    #[test]
    fn controller_producer_id_blocks_never_overlap() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        let block = |first| ProducerIdBlock {
            first,
            count: PRODUCER_IDS_PER_BLOCK,
        };
        // Two brokers in one round: consecutive blocks.
        let (a, b) = (producer_ids(&mut s, 2, 2), producer_ids(&mut s, 3, 3));
        let rec = s.ctl.step(s.now, &s.image).expect("a record");
        s.collect();
        assert!(
            !s.answers.contains_key(&a) && !s.answers.contains_key(&b),
            "nothing answered before the commit"
        );
        s.commit(&rec);
        s.ctl.committed();
        s.collect();
        assert_eq!(s.answers[&a].producer_ids, Some(block(0)));
        assert_eq!(
            s.answers[&b].producer_ids,
            Some(block(PRODUCER_IDS_PER_BLOCK))
        );
        // Only a broker in its current incarnation, for itself.
        let stale = ControllerRequest::AllocateProducerIds {
            node_id: 2,
            incarnation: s.incarnations[&2] - 1,
        };
        assert_eq!(s.request(2, stale).error, ControllerError::StaleRequest);
        let c = producer_ids(&mut s, 3, 2);
        s.settle();
        assert!(matches!(
            s.answers[&c].error,
            ControllerError::InvalidRequest(_)
        ));
        assert_eq!(s.image.next_producer_id, 2 * PRODUCER_IDS_PER_BLOCK);
        // A block proposed but never committed is never answered with.
        let lost = producer_ids(&mut s, 2, 2);
        assert!(s.ctl.step(s.now, &s.image).is_some());
        s.ctl.deactivate();
        s.collect();
        assert_eq!(s.answers[&lost].error, ControllerError::NotController);
        // The next controller, from a snapshot of the log, goes on after the last committed
        // block.
        s.image = MetadataImage::decode(&s.image.encode()).unwrap();
        s.ctl = Controller::new(cfg(false), ME, 8);
        s.activate(2, None);
        s.settle();
        let d = producer_ids(&mut s, 2, 2);
        s.settle();
        assert_eq!(
            s.answers[&d].producer_ids,
            Some(block(2 * PRODUCER_IDS_PER_BLOCK))
        );
    }

    #[test]
    fn controller_fenced_follower_leaves_the_isr_without_epoch_bump() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        s.run(SESSION_MS + 200, &[1, 2, 3]);
        assert!(s.fenced(4));
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
        s.run(300, &[1, 2, 3, 4]);
        assert!(!s.fenced(4), "heard again: unfenced");
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]), "not re-added");
        // The controller itself never fences itself, even unheard.
        s.run(3 * SESSION_MS, &[2, 3, 4]);
        assert!(!s.fenced(ME));
    }

    #[test]
    fn controller_a_lost_connection_ends_the_session_unless_the_peer_returns() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.seed("t", &[2, 3, ME], &[2, 3, ME], 2);
        s.run(SESSION_MS, &[2, 3]);
        assert!(!s.fenced(2) && !s.fenced(3));
        // Node 3 reconnects at once: nothing happens.
        s.ctl.connection_lost(3, s.now);
        // Node 2's process died: fenced after the grace, long before a session timeout.
        s.ctl.connection_lost(2, s.now);
        s.run(CONNECTION_LOST_GRACE_MS - 10, &[3]);
        assert!(!s.fenced(2), "within the grace");
        s.run(20, &[3]);
        assert!(s.fenced(2) && !s.fenced(3));
        assert_eq!(s.part("t", 0).leader, 3, "leadership moved within the ISR");
    }

    #[test]
    fn controller_previous_leader_is_presumed_dead_others_get_grace() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.seed("t", &[2, 3], &[2, 3], 2);
        s.ctl.deactivate();
        s.now = 50_000;
        s.activate(2, Some(2));
        assert_eq!(
            s.ctl.poll_timeout(),
            None,
            "no step has seen the image caught up"
        );
        s.settle();
        assert!(s.fenced(2) && !s.fenced(3));
        assert_eq!(pstate(s.part("t", 0)), (3, 1, vec![3]));
        assert_eq!(s.ctl.poll_timeout(), Some(s.now + SESSION_MS));
        s.run(SESSION_MS - 1, &[]);
        assert!(!s.fenced(3), "grace");
        s.run(1, &[]);
        assert!(s.fenced(3) && !s.fenced(ME));
        assert_eq!(pstate(s.part("t", 0)), (-1, 2, vec![3]));
        s.run(100, &[2]);
        assert!(!s.fenced(2), "heard from: unfenced");
    }

    #[test]
    fn controller_controlled_shutdown_moves_leadership() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("a", &[2, 3, 4], &[2, 3, 4], 2);
        s.seed("b", &[3, 2, 4], &[3, 2], 3);
        s.seed("c", &[2, 4], &[2], 2);
        let all = [1, 2, 3, 4];
        let stale = ControllerRequest::ControlledShutdown {
            node_id: 2,
            incarnation: 9,
        };
        assert_eq!(s.request(2, stale).error, ControllerError::StaleRequest);
        let c = s.submit(
            2,
            ControllerRequest::ControlledShutdown {
                node_id: 2,
                incarnation: 1,
            },
        );
        let rec = s.ctl.step(s.now, &s.image).expect("a proposal");
        s.collect();
        assert!(!s.answers.contains_key(&c), "answered only after commit");
        s.commit(&rec);
        s.ctl.committed();
        s.collect();
        assert_eq!(s.answers[&c].error, ControllerError::None);
        assert!(s.fenced(2));
        assert_eq!(pstate(s.part("a", 0)), (3, 1, vec![3, 4]));
        assert_eq!(pstate(s.part("b", 0)), (3, 0, vec![3]));
        assert_eq!(
            pstate(s.part("c", 0)),
            (2, 0, vec![2]),
            "sole ISR member keeps leading"
        );
        // Still heard from: stays fenced while shutting down.
        s.run(2 * SESSION_MS, &all);
        assert!(s.fenced(2));
        assert_eq!(pstate(s.part("c", 0)), (2, 0, vec![2]));
        // Gone: its session expiry wakes the controller and its last partition goes offline.
        let expiry = s.now + SESSION_MS;
        s.now += 100;
        for n in [3, 4] {
            s.ctl.heard_from(n, s.now);
        }
        assert_eq!(
            s.ctl.poll_timeout(),
            Some(expiry),
            "the fenced leader's session"
        );
        s.now = expiry;
        s.settle();
        assert_eq!(pstate(s.part("c", 0)), (-1, 1, vec![2]));
        assert!(!s.fenced(3) && !s.fenced(4));
        assert!(s.ctl.poll_timeout() > Some(s.now), "nothing more is due");
        s.run(2 * SESSION_MS, &[1, 3, 4]);
        assert_eq!(pstate(s.part("c", 0)), (-1, 1, vec![2]));
        // A new incarnation registers: unfenced, leads again.
        s.register(2);
        s.settle();
        assert!(!s.fenced(2));
        assert_eq!(pstate(s.part("c", 0)), (2, 2, vec![2]));
    }

    #[test]
    fn controller_alter_partition_refuses_stale_and_ineligible() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        s.alter(2, "t", 0, &[2, 3, 4], &[2, 3]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
        for (from, epoch, cur) in [
            (2, 0, vec![2, 3, 4]),
            (2, 1, vec![2, 3]),
            (3, 0, vec![2, 3]),
        ] {
            s.alter(from, "t", epoch, &cur, &[2]);
            assert_eq!(
                s.last(),
                ControllerError::StaleRequest,
                "{from} {epoch} {cur:?}"
            );
        }
        for new in [vec![3], vec![2, 1]] {
            s.alter(2, "t", 0, &[2, 3], &new);
            assert!(matches!(s.last(), ControllerError::IneligibleReplica(_)));
        }
        s.alter(2, "t", 0, &[2, 3], &[2, 3, 3]);
        assert!(matches!(s.last(), ControllerError::InvalidRequest(_)));
        s.alter(2, "nope", 0, &[2, 3], &[2]);
        assert_eq!(s.last(), ControllerError::UnknownTopic);
        let topic_id = s.id("t");
        let r = s.request(
            3,
            ControllerRequest::AlterPartition {
                topic_id,
                partition: 0,
                leader: 2,
                leader_epoch: 0,
                partition_epoch: s.part("t", 0).partition_epoch,
                current_isr: vec![2, 3],
                new_isr: vec![2],
            },
        );
        assert!(
            matches!(r.error, ControllerError::InvalidRequest(_)),
            "sent by a non-leader"
        );
        // A fenced broker may not join; once back it may.
        s.run(SESSION_MS + 200, &[1, 2, 3]);
        assert!(s.fenced(4));
        s.alter(2, "t", 0, &[2, 3], &[2, 3, 4]);
        assert!(matches!(s.last(), ControllerError::IneligibleReplica(_)));
        s.run(200, &[1, 2, 3, 4]);
        s.alter(2, "t", 0, &[2, 3], &[2, 3, 4]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3, 4]));
    }

    /// The replication model's counterexample: a leader's expansion is committed, the
    /// follower falls behind and is shrunk out again, and then a late copy of the expansion
    /// (a retry that sat in a connection) arrives. Its leader epoch and current ISR match
    /// again; only the partition epoch tells it is stale. Applied, it would put back into the
    /// ISR a follower that misses what the high watermark passed meanwhile, and the next
    /// election could pick it.
    #[test]
    fn controller_alter_partition_refuses_a_late_copy_after_the_isr_came_back() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3], 2);
        let expand = s.alter_request(2, "t", 0, &[2, 3], &[2, 3, 4]);
        assert_eq!(s.request(2, expand.clone()).error, ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3, 4]));
        s.alter(2, "t", 0, &[2, 3, 4], &[2, 3]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
        assert_eq!(
            s.request(2, expand).error,
            ControllerError::StaleRequest,
            "a late copy of an applied expansion"
        );
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
        // The same change asked afresh, with the partition epoch the leader sees now, applies.
        s.alter(2, "t", 0, &[2, 3], &[2, 3, 4]);
        assert_eq!(s.last(), ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3, 4]));
    }

    /// A controller whose image came from a snapshot older than partition epochs counts them
    /// otherwise than the leaders may: it checks the leader epoch and ISR only, rather than
    /// refuse every ISR change.
    #[test]
    fn controller_on_inexact_partition_epochs_checks_the_isr_only() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        let mut elsewhere = s.alter_request(2, "t", 0, &[2, 3, 4], &[2, 3]);
        if let ControllerRequest::AlterPartition {
            partition_epoch, ..
        } = &mut elsewhere
        {
            *partition_epoch += 5;
        }
        assert_eq!(
            s.request(2, elsewhere.clone()).error,
            ControllerError::StaleRequest
        );
        s.image.partition_epochs_inexact = true;
        assert_eq!(s.request(2, elsewhere).error, ControllerError::None);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
    }

    /// The model's other counterexample: an expansion refused because the broker it adds is
    /// fenced frees the leader to stop counting that broker, so a copy of the same request
    /// (the leader's retry, or the first copy late) must not apply once the broker is back.
    /// The refusal moves the partition epoch, which makes every such copy stale.
    #[test]
    fn controller_a_refused_expansion_cannot_apply_once_the_broker_is_back() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3], 2);
        s.run(SESSION_MS + 200, &[1, 2, 3]);
        assert!(s.fenced(4));
        let expand = s.alter_request(2, "t", 0, &[2, 3], &[2, 3, 4]);
        let before = s.part("t", 0).partition_epoch;
        let refused = s.request(2, expand.clone()).error;
        assert!(
            matches!(refused, ControllerError::IneligibleReplica(_)),
            "{refused:?}"
        );
        assert_eq!(s.part("t", 0).partition_epoch, before + 1);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
        s.run(200, &[1, 2, 3, 4]);
        assert!(!s.fenced(4));
        assert_eq!(s.request(2, expand).error, ControllerError::StaleRequest);
        assert_eq!(pstate(s.part("t", 0)), (2, 0, vec![2, 3]));
    }

    #[test]
    fn controller_create_topic_is_balanced_and_deterministic() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        let r = s.request(2, create("t", 6, 2));
        assert_eq!(r.error, ControllerError::None);
        let id = r.topic_id.expect("an id");
        assert_eq!(s.id("t"), id);
        let mut leads = BTreeMap::new();
        let mut holds = BTreeMap::new();
        for p in &s.image.topics[&id].partitions {
            assert_eq!(
                (p.leader_epoch, &p.isr, p.leader),
                (0, &p.replicas, p.replicas[0])
            );
            assert!(distinct(&p.replicas) && p.replicas.len() == 2);
            *leads.entry(p.leader).or_insert(0) += 1;
            for &r in &p.replicas {
                *holds.entry(r).or_insert(0) += 1;
            }
        }
        assert_eq!(leads.into_values().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(holds.into_values().collect::<Vec<_>>(), vec![4, 4, 4]);

        let mut again = Sim::cluster(3);
        assert_eq!(again.request(2, create("t", 6, 2)).topic_id, Some(id));
        assert_eq!(
            again.image.digest(),
            s.image.digest(),
            "same seed, same image"
        );
        let mut other = Sim::cluster_with(cfg(false), 3, 8);
        assert_ne!(other.request(2, create("t", 6, 2)).topic_id, Some(id));

        // Two creates of one name in a round: the second finds it taken.
        let a = s.submit(2, create("u", 1, 1));
        let b = s.submit(2, create("u", 1, 1));
        s.settle();
        assert_eq!(s.answers[&a].error, ControllerError::None);
        assert_eq!(s.answers[&b].error, ControllerError::TopicExists);
        assert_eq!(
            s.request(2, create("t", 1, 1)).error,
            ControllerError::TopicExists
        );
        for (p, rf) in [(1, 0), (1, 4)] {
            let e = s.request(2, create("v", p, rf)).error;
            assert!(
                matches!(e, ControllerError::InvalidReplicationFactor(_)),
                "{e:?}"
            );
        }
        for p in [0, MAX_PARTITIONS + 1] {
            let e = s.request(2, create("v", p, 1)).error;
            assert!(matches!(e, ControllerError::InvalidPartitions(_)), "{e:?}");
        }
        for name in ["", "a/b", "..", &"x".repeat(TOPIC_NAME_BYTES_MAX + 1)] {
            let e = s.request(2, create(name, 1, 1)).error;
            assert!(
                matches!(e, ControllerError::InvalidRequest(_)),
                "{name:?}: {e:?}"
            );
        }
        let with_configs = ControllerRequest::CreateTopic {
            name: "w".into(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![("retention.ms".into(), "5".into())],
            assignments: Vec::new(),
        };
        assert_eq!(s.request(2, with_configs).error, ControllerError::None);
        assert_eq!(s.image.topics[&s.id("w")].configs["retention.ms"], "5");
        // A fenced broker gets no new replicas.
        s.run(SESSION_MS + 200, &[1, 2]);
        assert!(s.fenced(3));
        let e = s.request(2, create("x", 1, 3)).error;
        assert!(matches!(e, ControllerError::InvalidReplicationFactor(_)));
        s.request(2, create("x", 4, 2));
        let parts = &s.image.topics[&s.id("x")].partitions;
        assert!(parts.iter().all(|p| !p.replicas.contains(&3)));
    }

    #[test]
    fn controller_create_partitions_delete_and_configs() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.request(2, create("t", 2, 2));
        let grow = |count| ControllerRequest::CreatePartitions {
            name: "t".into(),
            count,
            assignments: Vec::new(),
        };
        for count in [2, 1, MAX_PARTITIONS + 1] {
            let e = s.request(2, grow(count)).error;
            assert!(matches!(e, ControllerError::InvalidPartitions(_)), "{e:?}");
        }
        assert_eq!(s.request(2, grow(5)).error, ControllerError::None);
        let id = s.id("t");
        let parts = &s.image.topics[&id].partitions;
        assert_eq!(parts.len(), 5);
        let start = assignment_start(&id, 3);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.replicas, assign(&[1, 2, 3], start, i, 2), "partition {i}");
        }
        let unknown = ControllerRequest::CreatePartitions {
            name: "u".into(),
            count: 3,
            assignments: Vec::new(),
        };
        assert_eq!(s.request(2, unknown).error, ControllerError::UnknownTopic);

        let alter = |configs: Vec<(&str, &str)>| ControllerRequest::AlterTopicConfigs {
            name: "t".into(),
            change: ConfigChange::Replace(
                configs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        };
        let (a, b) = ("retention.ms", "segment.ms");
        s.request(2, alter(vec![(a, "1"), (b, "2")]));
        assert_eq!(s.image.topics[&id].configs.len(), 2);
        s.request(2, alter(vec![(b, "3")]));
        assert_eq!(s.image.topics[&id].configs[b], "3");
        assert_eq!(s.image.topics[&id].configs.len(), 1, "full replacement");
        let e = s.request(2, alter(vec![(b, "3"), (b, "4")])).error;
        assert!(matches!(e, ControllerError::InvalidRequest(_)));
        let e = s.request(2, alter(vec![("no.such.config", "3")])).error;
        assert!(matches!(e, ControllerError::InvalidRequest(_)));

        let delete = |name: &str| ControllerRequest::DeleteTopic { name: name.into() };
        assert_eq!(s.request(2, delete("t")).error, ControllerError::None);
        assert!(s.image.topics.is_empty());
        assert_eq!(
            s.request(2, delete("t")).error,
            ControllerError::UnknownTopic
        );
        assert_eq!(
            s.request(2, alter(vec![])).error,
            ControllerError::UnknownTopic
        );
    }

    #[test]
    fn controller_places_replicas_where_the_operator_asks() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        let placed =
            |name: &str, n: u32, rf: u16, lists: Vec<Vec<NodeId>>| ControllerRequest::CreateTopic {
                name: name.into(),
                partitions: n,
                replication_factor: rf,
                configs: Vec::new(),
                assignments: lists,
            };
        let r = s.request(
            2,
            placed("t", 3, 2, vec![vec![3, 1], vec![2, 3], vec![1, 2]]),
        );
        assert_eq!(r.error, ControllerError::None);
        let states: Vec<_> = s.image.topics[&s.id("t")]
            .partitions
            .iter()
            .map(|p| (p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch))
            .collect();
        assert_eq!(
            states,
            vec![
                (vec![3, 1], vec![3, 1], 3, 0),
                (vec![2, 3], vec![2, 3], 2, 0),
                (vec![1, 2], vec![1, 2], 1, 0),
            ]
        );
        // Refused, and nothing created: an empty list, a broker twice, an unregistered broker,
        // lists of different lengths; counts that disagree with the lists.
        for lists in [
            vec![vec![]],
            vec![vec![1, 1]],
            vec![vec![1, 9]],
            vec![vec![1, 2], vec![3]],
        ] {
            let rf = lists[0].len() as u16;
            let e = s
                .request(2, placed("u", lists.len() as u32, rf, lists.clone()))
                .error;
            assert!(
                matches!(e, ControllerError::InvalidReplicaAssignment(_)),
                "{lists:?}: {e:?}"
            );
        }
        for (n, rf) in [(2, 1), (1, 2)] {
            let e = s.request(2, placed("u", n, rf, vec![vec![1]])).error;
            assert!(matches!(e, ControllerError::InvalidRequest(_)), "{e:?}");
        }
        assert!(!s.image.topic_ids.contains_key("u"));

        // New partitions: as long as the topic's, one list each.
        let grow = |count, lists: Vec<Vec<NodeId>>| ControllerRequest::CreatePartitions {
            name: "t".into(),
            count,
            assignments: lists,
        };
        for (count, lists) in [
            (4, vec![vec![1]]),
            (4, vec![vec![1, 2, 3]]),
            (5, vec![vec![1, 2]]),
            (4, vec![vec![2, 9]]),
        ] {
            let e = s.request(2, grow(count, lists.clone())).error;
            assert!(
                matches!(e, ControllerError::InvalidReplicaAssignment(_)),
                "{count} {lists:?}: {e:?}"
            );
        }
        assert_eq!(s.image.topics[&s.id("t")].partitions.len(), 3);
        let r = s.request(2, grow(5, vec![vec![2, 1], vec![3, 2]]));
        assert_eq!(r.error, ControllerError::None);
        let parts = &s.image.topics[&s.id("t")].partitions;
        assert_eq!(
            (parts[3].replicas.clone(), parts[3].leader),
            (vec![2, 1], 2)
        );
        assert_eq!(
            (parts[4].replicas.clone(), parts[4].leader),
            (vec![3, 2], 3)
        );

        // A fenced broker may be named (as in Kafka): it starts outside the ISR, and the
        // first unfenced replica leads. All fenced: refused.
        s.run(SESSION_MS + 200, &[1, 2]);
        assert!(s.fenced(3));
        let r = s.request(2, placed("v", 2, 2, vec![vec![3, 1], vec![1, 3]]));
        assert_eq!(r.error, ControllerError::None);
        let parts = &s.image.topics[&s.id("v")].partitions;
        for p in parts {
            assert_eq!((p.isr.clone(), p.leader), (vec![1], 1), "{p:?}");
        }
        let e = s.request(2, placed("w", 1, 1, vec![vec![3]])).error;
        assert!(
            matches!(e, ControllerError::InvalidReplicaAssignment(_)),
            "{e:?}"
        );
        let e = s.request(2, grow(6, vec![vec![3, 3]])).error;
        assert!(
            matches!(e, ControllerError::InvalidReplicaAssignment(_)),
            "{e:?}"
        );
    }

    #[test]
    fn controller_preferred_leader_returns_after_the_check_period() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.seed("t", &[2, 3], &[2, 3], 3);
        s.seed("u", &[2, 3], &[3], 3);
        s.run(REBALANCE_MS - 200, &[1, 2, 3]);
        assert_eq!(pstate(s.part("t", 0)), (3, 0, vec![2, 3]));
        s.run(400, &[1, 2, 3]);
        assert_eq!(pstate(s.part("t", 0)), (2, 1, vec![2, 3]));
        assert_eq!(
            pstate(s.part("u", 0)),
            (3, 0, vec![3]),
            "preferred not in ISR"
        );
    }

    fn elect(s: &mut Sim, unclean: bool, parts: &[(&str, u32)]) -> Vec<ElectionOutcome> {
        let partitions = parts.iter().map(|&(n, p)| (s.id(n), p)).collect();
        let r = s.request(
            2,
            ControllerRequest::ElectLeaders {
                unclean,
                partitions,
            },
        );
        assert_eq!(r.error, ControllerError::None);
        r.elections.iter().map(|e| e.2).collect()
    }

    #[test]
    fn controller_operator_preferred_election() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[2, 3], &[2, 3], 3);
        s.seed("u", &[2, 3], &[3], 3);
        s.seed("v", &[4, 3], &[4, 3], 3);
        s.run(3 * REBALANCE_MS, &[1, 2, 3]);
        // No automatic rebalance: t stays with 3 although 2 is in its ISR.
        assert_eq!(pstate(s.part("t", 0)), (3, 0, vec![2, 3]));
        // Node 4 is fenced (never heard from), so v's leader stays; its preferred replica is
        // not available.
        let got = elect(
            &mut s,
            false,
            &[("t", 0), ("u", 0), ("v", 0), ("t", 5), ("t", 0)],
        );
        use ElectionOutcome::*;
        assert_eq!(
            got,
            vec![
                Elected,
                PreferredNotAvailable,
                PreferredNotAvailable,
                UnknownPartition
            ],
            "a partition named twice is decided once"
        );
        assert_eq!(pstate(s.part("t", 0)), (2, 1, vec![2, 3]));
        assert_eq!(pstate(s.part("u", 0)), (3, 0, vec![3]));
        assert_eq!(elect(&mut s, false, &[("t", 0)]), vec![NotNeeded]);
        // Unknown topic ids are unknown partitions, and nothing changes.
        let r = s.request(
            2,
            ControllerRequest::ElectLeaders {
                unclean: false,
                partitions: vec![([9; 16], 0)],
            },
        );
        assert_eq!(r.elections, vec![([9; 16], 0, UnknownPartition)]);
        let too_many = vec![([9; 16], 0); ELECT_PARTITIONS_MAX + 1];
        let r = s.request(
            2,
            ControllerRequest::ElectLeaders {
                unclean: false,
                partitions: too_many,
            },
        );
        assert!(matches!(r.error, ControllerError::InvalidRequest(_)));
    }

    fn reassign(s: &mut Sim, name: &str, target: Option<&[NodeId]>) -> ReassignOutcome {
        let id = s.image.topic_ids.get(name).copied().unwrap_or([9; 16]);
        let partitions = vec![(id, 0, target.map(<[NodeId]>::to_vec))];
        let r = s.request(2, ControllerRequest::AlterReassignments { partitions });
        assert_eq!(r.error, ControllerError::None);
        assert_eq!(r.reassignments.len(), 1);
        r.reassignments[0].2.clone()
    }

    /// (replicas, adding, removing)
    fn assignment(p: &PartitionImage) -> (Vec<NodeId>, Vec<NodeId>, Vec<NodeId>) {
        (p.replicas.clone(), p.adding.clone(), p.removing.clone())
    }

    #[test]
    fn controller_reassignment_adds_catches_up_then_removes() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[1, 2, 3], &[1, 2, 3], 1);
        assert_eq!(
            reassign(&mut s, "t", Some(&[4, 2, 3])),
            ReassignOutcome::Accepted
        );
        // Node 4 joins as a follower; nothing leaves yet, so the epoch stays.
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![4, 2, 3, 1], vec![4], vec![1]));
        assert_eq!(pstate(p), (1, 0, vec![1, 2, 3]));
        // Not in sync yet: the reassignment waits, whatever time passes.
        s.run(3 * SESSION_MS, &[1, 2, 3, 4]);
        assert_eq!(
            assignment(s.part("t", 0)),
            (vec![4, 2, 3, 1], vec![4], vec![1])
        );
        // The leader reports node 4 caught up: the reassignment completes in that round, the
        // removed leader hands over to the first in-sync target replica in a new epoch.
        s.alter(1, "t", 0, &[1, 2, 3], &[1, 2, 3, 4]);
        assert_eq!(s.last(), ControllerError::None);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![4, 2, 3], vec![], vec![]));
        assert_eq!(pstate(p), (4, 1, vec![2, 3, 4]));
        assert!(!p.reassigning());
        // Cancelling now finds nothing in progress.
        let none = reassign(&mut s, "t", None);
        assert_eq!(none, ReassignOutcome::NoReassignmentInProgress);
    }

    /// Replication sim seed 9,731,376: node 1 restarts on an empty disk and, before its new
    /// registration reaches the controller, an operator moves a partition onto node 1 alone.
    /// Its old registration is unfenced and in the ISR, yet the copies the move would delete
    /// are the only ones left.
    #[test]
    fn controller_reassignment_waits_to_hear_from_its_targets_registered_processes() {
        let _g = serial();
        let mut s = manual_cluster();
        s.register_on_disk(1, 1);
        s.seed("t", &[1, 2, 3], &[1, 2, 3], 2);
        s.fetch(&[1, 2, 3]);
        let removing = (vec![1, 2, 3], vec![], vec![2, 3]);
        assert_eq!(reassign(&mut s, "t", Some(&[1])), ReassignOutcome::Accepted);
        assert_eq!(assignment(s.part("t", 0)), removing);
        // Node 1's new process fetches (its registration is yet to come); 2 and 3 fetch too.
        s.fetch_as(1, s.incarnations[&1] + 1);
        s.fetch(&[2, 3]);
        s.run(SESSION_MS / 2, &[2, 3]);
        assert_eq!(assignment(s.part("t", 0)), removing, "old copies kept");
        assert_eq!(s.part("t", 0).isr, vec![1, 2, 3]);
        // The move waits on node 1, but a fetch that tells nothing new wakes nothing.
        s.fetch_as(1, s.incarnations[&1] + 1);
        s.settle();
        s.fetch_as(1, s.incarnations[&1] + 1);
        assert_ne!(s.ctl.poll_timeout(), Some(s.now));
        // Its registration, with the new disk, takes it out of the ISR; the move waits on.
        s.register_on_disk(1, 2);
        s.fetch(&[1, 2, 3]);
        assert_eq!(assignment(s.part("t", 0)), removing);
        assert_eq!(s.part("t", 0).isr, vec![2, 3]);
        // Node 1 copies the log and the leader takes it back in sync: now it completes.
        let epoch = s.part("t", 0).leader_epoch;
        s.alter(2, "t", epoch, &[2, 3], &[2, 3, 1]);
        assert_eq!(s.last(), ControllerError::None);
        s.fetch(&[1]);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1], vec![], vec![]));
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
    }

    #[test]
    fn controller_reassignment_cancel_reorder_shrink_and_refusals() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[1, 2, 3], &[1, 2, 3], 1);
        // Cancelled before node 4 caught up: back to the original replicas (in the merged
        // order, as Kafka reverts), node 4 gone in a new epoch.
        assert_eq!(
            reassign(&mut s, "t", Some(&[4, 1, 2])),
            ReassignOutcome::Accepted
        );
        assert_eq!(
            assignment(s.part("t", 0)),
            (vec![4, 1, 2, 3], vec![4], vec![3])
        );
        // Not before some in-sync replica that stays is heard from since the reassignment
        // began (its process may be gone, and its disk with it).
        let refused = reassign(&mut s, "t", None);
        assert!(
            matches!(refused, ReassignOutcome::InvalidReplicas(_)),
            "{refused:?}"
        );
        s.fetch_as(3, s.incarnations[&3] + 1);
        let refused = reassign(&mut s, "t", None);
        assert!(
            matches!(refused, ReassignOutcome::InvalidReplicas(_)),
            "{refused:?}"
        );
        s.fetch(&[3]);
        assert_eq!(reassign(&mut s, "t", None), ReassignOutcome::Accepted);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1, 2, 3], vec![], vec![]));
        assert_eq!(pstate(p), (1, 1, vec![1, 2, 3]));
        // A target that only reorders applies at once, in the same epoch.
        assert_eq!(
            reassign(&mut s, "t", Some(&[3, 2, 1])),
            ReassignOutcome::Accepted
        );
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![3, 2, 1], vec![], vec![]));
        assert_eq!(pstate(p), (1, 1, vec![1, 2, 3]));
        // A shrink to in-sync replicas completes once node 2 is heard from; the leader leaves.
        assert_eq!(reassign(&mut s, "t", Some(&[2])), ReassignOutcome::Accepted);
        assert_eq!(
            assignment(s.part("t", 0)),
            (vec![2, 3, 1], vec![], vec![3, 1])
        );
        s.fetch(&[1, 3]);
        assert!(s.part("t", 0).reassigning());
        s.fetch(&[2]);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![2], vec![], vec![]));
        assert_eq!(pstate(p), (2, 2, vec![2]));
        // Refusals leave the partition alone.
        for bad in [&[][..], &[2, 2], &[2, 9]] {
            let got = reassign(&mut s, "t", Some(bad));
            assert!(
                matches!(got, ReassignOutcome::InvalidReplicas(_)),
                "{bad:?}: {got:?}"
            );
        }
        let unknown = reassign(&mut s, "nope", Some(&[1]));
        assert_eq!(unknown, ReassignOutcome::UnknownPartition);
        assert_eq!(assignment(s.part("t", 0)), (vec![2], vec![], vec![]));
        let too_many = vec![([9; 16], 0, None); REASSIGN_PARTITIONS_MAX + 1];
        let r = s.request(
            2,
            ControllerRequest::AlterReassignments {
                partitions: too_many,
            },
        );
        assert!(matches!(r.error, ControllerError::InvalidRequest(_)));
    }

    #[test]
    fn controller_reassignment_replaced_midway_and_leader_kept_out_of_removed() {
        let _g = serial();
        let mut s = manual_cluster();
        s.seed("t", &[1, 2], &[1, 2], 1);
        assert_eq!(
            reassign(&mut s, "t", Some(&[3, 4])),
            ReassignOutcome::Accepted
        );
        assert_eq!(
            assignment(s.part("t", 0)),
            (vec![3, 4, 1, 2], vec![3, 4], vec![1, 2])
        );
        // A new target replaces it, computed from the original replicas: 4 is dropped (in a
        // new epoch), 3 still joins.
        s.fetch(&[2]);
        assert_eq!(
            reassign(&mut s, "t", Some(&[3, 1])),
            ReassignOutcome::Accepted
        );
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![3, 1, 2], vec![3], vec![2]));
        assert_eq!(pstate(p), (1, 1, vec![1, 2]));
        s.alter(1, "t", 1, &[1, 2], &[1, 2, 3]);
        assert_eq!(s.last(), ControllerError::None);
        // Both targets in sync; it completes once both are heard from since the new target.
        s.fetch(&[3]);
        assert!(s.part("t", 0).reassigning());
        s.fetch(&[1]);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![3, 1], vec![], vec![]));
        assert_eq!(pstate(p), (1, 2, vec![1, 3]));
    }

    /// Replication sim seed 10,200,352: a move from [1] to [2, 3, 1] has node 2 in sync when
    /// an operator asks for [1, 3] instead, just as node 1 comes back on an empty disk. Dropping
    /// node 2 at once, as Kafka does with a replica the replaced move was adding, would leave
    /// node 1's old registration as the only in-sync copy, and its new one empties the ISR.
    #[test]
    fn controller_reassignment_keeps_an_in_sync_replica_the_new_target_drops() {
        let _g = serial();
        let mut s = manual_cluster();
        s.register_on_disk(1, 1);
        s.seed("t", &[1], &[1], 1);
        assert_eq!(
            reassign(&mut s, "t", Some(&[2, 3, 1])),
            ReassignOutcome::Accepted
        );
        s.alter(1, "t", 0, &[1], &[1, 2]);
        assert_eq!(s.last(), ControllerError::None);
        s.fetch(&[1, 2, 3]);
        assert_eq!(
            reassign(&mut s, "t", Some(&[1, 3])),
            ReassignOutcome::Accepted
        );
        // Node 2 stays, being removed, in the same epoch; node 3 is still being added.
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1, 3, 2], vec![3], vec![2]));
        assert_eq!(pstate(p), (1, 0, vec![1, 2]));
        // Node 1's new disk takes it out of the ISR: node 2 leads with the only copy.
        s.register_on_disk(1, 2);
        s.fetch(&[1, 2, 3]);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1, 3, 2], vec![3], vec![2]));
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
        // Nodes 1 and 3 copy it; once both are in sync the move completes onto them.
        let epoch = p.leader_epoch;
        s.alter(2, "t", epoch, &[2], &[2, 1, 3]);
        assert_eq!(s.last(), ControllerError::None);
        s.fetch(&[1, 3]);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1, 3], vec![], vec![]));
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 3]));
        // A cancellation keeps in-sync replicas the same way: they count as original ones.
        assert_eq!(reassign(&mut s, "t", Some(&[4])), ReassignOutcome::Accepted);
        let epoch = s.part("t", 0).leader_epoch;
        s.alter(1, "t", epoch, &[1, 3], &[1, 3, 4]);
        assert_eq!(reassign(&mut s, "t", None), ReassignOutcome::Accepted);
        let p = s.part("t", 0);
        assert_eq!(assignment(p), (vec![1, 3, 4], vec![], vec![4]));
        assert_eq!(pstate(p), (1, epoch, vec![1, 3, 4]));
    }

    #[test]
    fn controller_operator_unclean_election_even_when_disabled() {
        let _g = serial();
        let mut s = Sim::cluster_with(cfg(false), 4, 7);
        s.seed("t", &[2, 3], &[2], 2);
        s.seed("w", &[4], &[4], 4);
        s.run(SESSION_MS + 200, &[1, 3, 4]);
        assert_eq!(
            pstate(s.part("t", 0)),
            (-1, 1, vec![2]),
            "offline, clean only"
        );
        use ElectionOutcome::*;
        // w has a live leader; t elects 3, outside its ISR, which becomes the whole ISR.
        assert_eq!(
            elect(&mut s, true, &[("w", 0), ("t", 0)]),
            vec![NotNeeded, Elected]
        );
        assert_eq!(pstate(s.part("t", 0)), (3, 2, vec![3]));
        assert!(s.part("t", 0).elr.is_empty());
        // With no live replica at all, nothing can be elected.
        let mut s = Sim::cluster_with(cfg(false), 4, 7);
        s.seed("t", &[2, 3], &[2], 2);
        s.run(SESSION_MS + 200, &[1, 4]);
        assert_eq!(elect(&mut s, true, &[("t", 0)]), vec![EligibleNotAvailable]);
        assert_eq!(pstate(s.part("t", 0)).0, -1);
    }

    #[test]
    fn controller_unclean_election_only_when_enabled() {
        let _g = serial();
        for unclean in [false, true] {
            let mut s = Sim::cluster_with(cfg(unclean), 4, 7);
            s.seed("t", &[2, 3], &[2], 2);
            // Unclean: straight to the out-of-ISR replica in one leader epoch.
            s.run(SESSION_MS + 200, &[1, 3, 4]);
            let want = if unclean {
                (3, 1, vec![3])
            } else {
                (-1, 1, vec![2])
            };
            assert_eq!(pstate(s.part("t", 0)), want, "unclean {unclean}");
        }
    }

    #[test]
    fn controller_not_active_answers_not_controller() {
        let _g = serial();
        let mut s = Sim::new(cfg(false), 7);
        let c = s.submit(2, create("t", 1, 1));
        assert_eq!(s.answers[&c].error, ControllerError::NotController);
        assert_eq!(s.ctl.step(0, &s.image), None);
        assert_eq!(s.ctl.poll_timeout(), None);
        s.ctl.activate(0, 1, None);
        s.register(1);
        assert_eq!(s.ctl.step(0, &s.image), None, "the image is not caught up");
        assert_eq!(s.ctl.poll_timeout(), None);
        s.commit(&MetadataRecord::LeaderChange {
            epoch: 1,
            leader: 2,
        });
        assert_eq!(s.ctl.step(0, &s.image), None, "another node's epoch");
        s.commit(&MetadataRecord::LeaderChange {
            epoch: 2,
            leader: ME,
        });
        assert_eq!(s.ctl.step(0, &s.image), None, "a later epoch: deposed");
        s.ctl.activate(0, 2, None);
        s.collect();
        assert_eq!(s.answers.len(), 2, "re-activation fails what was queued");
        let registering = s.register(1);
        let rec = s.ctl.step(0, &s.image);
        assert!(rec.is_some());
        let queued = s.submit(2, create("t", 1, 1));
        s.ctl.deactivate();
        s.collect();
        assert_eq!(s.answers[&queued].error, ControllerError::NotController);
        let in_flight = &s.answers[&registering].error;
        assert_eq!(*in_flight, ControllerError::NotController, "in flight");
        s.ctl.committed();
        s.collect();
        assert_eq!(s.answers.len(), 4, "each request answered once");
    }

    #[test]
    fn controller_queue_and_round_limits() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.answers.clear();
        let delete = || ControllerRequest::DeleteTopic { name: "x".into() };
        for _ in 0..REQUESTS_QUEUED_MAX {
            s.submit(2, delete());
        }
        assert!(s.answers.is_empty());
        let over = s.submit(2, delete());
        assert_eq!(s.answers[&over].error, ControllerError::QueueFull);
        s.settle();
        assert_eq!(s.answers.len(), REQUESTS_QUEUED_MAX + 1);
        assert!(s.ctl.requests.is_empty());

        // Three topics of the maximum size do not fit one round: one a round.
        for name in ["a", "b", "c"] {
            s.submit(2, create(name, MAX_PARTITIONS, 1));
        }
        for expect in ["a", "b", "c"] {
            let Some(MetadataRecord::Batch(recs)) = s.round() else {
                panic!("a batch");
            };
            assert_eq!(recs.len(), MAX_PARTITIONS as usize + 1);
            let bytes = MetadataRecord::Batch(recs.clone()).encode().len();
            assert!(bytes <= ROUND_BYTES_MAX, "{bytes} bytes");
            assert!(recs.len() <= RECORDS_PER_ROUND_MAX);
            assert!(s.image.topic_ids.contains_key(expect));
            assert!(s.ctl.poll_timeout().is_some());
        }
        assert_eq!(s.round(), None);
        let mut wide = Sim::cluster(5);
        let e = wide.request(2, create("d", MAX_PARTITIONS, 5)).error;
        assert!(
            matches!(e, ControllerError::InvalidPartitions(_)),
            "too big for one entry"
        );
        assert_eq!(
            wide.request(2, create("d", MAX_PARTITIONS, 3)).error,
            ControllerError::None
        );
    }

    /// Leadership avoids a just-restarted broker while a settled ISR member is usable (clients
    /// may still be backing off reconnecting to it), takes it when it is the only one, and
    /// preferred-leader elections wait for it to settle.
    #[test]
    fn elections_prefer_settled_brokers_over_just_restarted_ones() {
        let _g = serial();
        let mut s = Sim::cluster(4);
        s.seed("t", &[2, 3, 4], &[2, 3, 4], 2);
        s.seed("u", &[2, 3], &[2, 3], 2);
        s.run(LEADER_SETTLE_MS + 1_000, &[2, 3, 4]);
        assert_eq!(s.part("t", 0).leader, 2);
        // 3 restarts; then 2 dies.
        s.register(3);
        s.settle();
        let restarted_at = s.now;
        s.seed("v", &[3, 4], &[3, 4], 4);
        s.run(SESSION_MS * 3, &[3, 4]);
        assert!(s.fenced(2));
        assert_eq!(
            s.part("t", 0).leader,
            4,
            "3 is first in order but just restarted"
        );
        assert_eq!(
            s.part("u", 0).leader,
            3,
            "the only usable ISR member, restarted or not"
        );
        assert_eq!(s.part("v", 0).leader, 4, "no preferred election onto 3 yet");
        s.run(
            restarted_at + LEADER_SETTLE_MS + REBALANCE_MS - s.now,
            &[3, 4],
        );
        assert_eq!(s.part("v", 0).leader, 3, "preferred leader once settled");
    }

    #[test]
    fn controller_poll_timeout_tracks_expiry_and_rebalance() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        assert_eq!(s.ctl.poll_timeout(), Some(SESSION_MS));
        s.ctl.heard_from(2, 300);
        s.ctl.heard_from(3, 500);
        assert_eq!(s.ctl.poll_timeout(), Some(SESSION_MS + 300));
        s.submit(2, create("t", 1, 1));
        assert_eq!(s.ctl.poll_timeout(), Some(500), "a request waits: now");
        s.now = 500;
        s.settle();
        s.ctl.heard_from(2, 20_000);
        s.ctl.heard_from(3, 20_000);
        assert_eq!(s.ctl.poll_timeout(), Some(REBALANCE_MS));
    }

    /// The properties of one committed round: `rec` applied to `before`, member by member (a
    /// member may rely on an earlier one, e.g. an ISR expansion then a preferred election).
    /// Per partition, the replicas known to hold every committed record, modelled apart from
    /// the controller: committed data grows only while the ISR has min.insync.replicas members
    /// (and then only ISR members have it), a replica joins the ISR only once caught up, and a
    /// restart without intact logs loses it.
    type Holders = BTreeMap<([u8; 16], u32), BTreeSet<NodeId>>;

    fn check_round(
        before: &MetadataImage,
        rec: &MetadataRecord,
        unclean: bool,
        holders: &mut Holders,
    ) -> Result<(), String> {
        let members = match rec {
            MetadataRecord::Batch(members) => members.clone(),
            one => vec![one.clone()],
        };
        let mut img = before.clone();
        for m in &members {
            if let MetadataRecord::RegisterBroker {
                node_id,
                logs_intact: false,
                ..
            } = m
            {
                for h in holders.values_mut() {
                    h.remove(node_id);
                }
            }
            let old = match m {
                MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    ..
                } => img
                    .topics
                    .get(topic_id)
                    .and_then(|t| t.partitions.get(*partition as usize))
                    .filter(|o| !o.replicas.is_empty())
                    .cloned(),
                _ => None,
            };
            let offset = img.applied_offset;
            img.apply(offset, &m.encode());
            if matches!(
                m,
                MetadataRecord::ClusterConfig { .. } | MetadataRecord::TopicConfig { .. }
            ) {
                // A lower min.insync.replicas lets high watermarks move past those outside
                // the ISR from here on.
                for (&topic_id, t) in &img.topics {
                    for (i, p) in t.partitions.iter().enumerate() {
                        let min_isr = model_min_isr(&img, &topic_id, p.replicas.len());
                        if p.replicas.is_empty() || p.isr.len() < min_isr {
                            continue;
                        }
                        let known = holders
                            .entry((topic_id, i as u32))
                            .or_insert_with(|| p.isr.iter().copied().collect());
                        known.retain(|n| p.isr.contains(n));
                    }
                }
            }
            let (
                Some(old),
                MetadataRecord::PartitionChange {
                    leader,
                    topic_id,
                    partition,
                    isr,
                    replicas,
                    ..
                },
            ) = (old, m)
            else {
                if let MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    isr,
                    ..
                } = m
                {
                    holders.insert((*topic_id, *partition), isr.iter().copied().collect());
                }
                continue;
            };
            let at = format!("{old:?} -> {m:?}");
            let known = holders
                .entry((*topic_id, *partition))
                .or_insert_with(|| old.isr.iter().copied().collect());
            // A replica a reassignment removed deletes its copy.
            known.retain(|n| replicas.contains(n));
            let elected = *leader != old.leader && *leader != -1;
            let lacks = (elected && !unclean && !known.contains(leader)).then(|| {
                format!(
                    "elected a replica that may lack committed records (holders {known:?}): {at}"
                )
            });
            if elected && !old.isr.contains(leader) && !old.elr.contains(leader) {
                // Unclean: whatever was committed is gone; the new ISR starts over.
                known.clear();
            }
            // Joiners are caught up; at min.insync.replicas the high watermark moves past
            // everyone outside the ISR.
            known.extend(isr.iter().copied());
            if isr.len() >= model_min_isr(&img, topic_id, old.replicas.len()) {
                known.retain(|n| isr.contains(n));
            }
            if let MetadataRecord::PartitionChange { leader_epoch, .. } = m {
                if *leader_epoch < old.leader_epoch {
                    return Err(format!("leader epoch went back: {at}"));
                }
            }
            if *leader == old.leader || *leader == -1 {
                continue;
            }
            if img.brokers.get(leader).is_none_or(|b| b.fenced) {
                return Err(format!("fenced broker made leader: {at}"));
            }
            if !unclean && !old.isr.contains(leader) && !old.elr.contains(leader) {
                return Err(format!("out-of-ISR election: {at}"));
            }
            if let Some(e) = lacks {
                return Err(e);
            }
        }
        if img.rejected != before.rejected {
            return Err(format!("a record did not apply: {rec:?}"));
        }
        for t in img.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let at = format!("{}/{i} {p:?}", t.name);
                if p.replicas.is_empty() || !distinct(&p.replicas) || !distinct(&p.isr) {
                    return Err(format!("bad replica or ISR list: {at}"));
                }
                if !p.isr.iter().all(|n| p.replicas.contains(n)) {
                    return Err(format!("ISR not within the replicas: {at}"));
                }
                if p.leader != -1 && !p.isr.contains(&p.leader) {
                    return Err(format!("leader outside the ISR: {at}"));
                }
                if !distinct(&p.elr) || p.elr.iter().any(|n| p.isr.contains(n)) {
                    return Err(format!("ELR not a set apart from the ISR: {at}"));
                }
            }
        }
        Ok(())
    }

    /// min.insync.replicas as the brokers' rule reads it: the topic's override, else the
    /// cluster-level value, else the controllers' flag; at most the replication factor.
    fn model_min_isr(img: &MetadataImage, topic_id: &[u8; 16], rf: usize) -> usize {
        let topic = img
            .topics
            .get(topic_id)
            .and_then(|t| t.configs.get(CLUSTER_MIN_ISR));
        let value = topic.or_else(|| img.cluster_configs.get(CLUSTER_MIN_ISR));
        let min_isr = value.map_or(MIN_ISR, |v| parse_min_isr(v).expect("valid in the log"));
        min_isr.min(rf)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u16),
        Crash(NodeId),
        Restart(NodeId),
        Shutdown(NodeId),
        Shrink(u8),
        Expand(u8),
        Create(u8, u8),
        /// A topic of this many partitions on the operator's replica lists (from the key).
        Place(u8, u8),
        Grow(u8),
        Delete(u8),
        Round,
        /// This node loses and regains leadership (queued requests fail, liveness restarts).
        Failover,
        /// The cluster-level min.insync.replicas becomes this.
        ClusterMinIsr(u8),
        /// An operator's election for the nth partition: preferred, or unclean where the
        /// run allows unclean elections.
        Elect(u8, bool),
        /// An operator's reassignment of the nth partition to the nodes in the mask's low
        /// four bits (1 to 4), or, for an empty mask, its cancellation.
        Reassign(u8, u8),
        /// This node's copy of the nth partition failed, and it says so.
        /// A broker reports its copy of the k-th partition failed, or (true) full.
        Fail(u8, NodeId, bool),
        /// This node asks for a block of producer ids.
        ProducerIds(NodeId),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..1_500).prop_map(Op::Advance),
            2 => (2..=4).prop_map(Op::Crash),
            2 => (2..=4).prop_map(Op::Restart),
            1 => (2..=4).prop_map(Op::Shutdown),
            2 => any::<u8>().prop_map(Op::Shrink),
            2 => any::<u8>().prop_map(Op::Expand),
            1 => (1u8..=4, 1u8..=3).prop_map(|(p, rf)| Op::Create(p, rf)),
            1 => (1u8..=4, any::<u8>()).prop_map(|(p, k)| Op::Place(p, k)),
            1 => any::<u8>().prop_map(Op::Grow),
            1 => any::<u8>().prop_map(Op::Delete),
            5 => Just(Op::Round),
            1 => Just(Op::Failover),
            1 => (1u8..=3).prop_map(Op::ClusterMinIsr),
            1 => (any::<u8>(), any::<bool>()).prop_map(|(k, u)| Op::Elect(k, u)),
            2 => (any::<u8>(), 0u8..16).prop_map(|(k, m)| Op::Reassign(k, m)),
            1 => (any::<u8>(), 2..=4, any::<bool>()).prop_map(|(k, n, full)| Op::Fail(k, n, full)),
            1 => (1..=4).prop_map(Op::ProducerIds),
        ]
    }

    /// `rf` of the brokers 1, 2, 3, starting at the `k`-th (cycling).
    fn rotated(k: usize, rf: usize) -> Vec<NodeId> {
        (0..rf).map(|i| ((k + i) % 3) as NodeId + 1).collect()
    }

    /// The n-th partition of the image, cycling: (name, topic id, index, partition).
    fn nth_partition(image: &MetadataImage, n: u8) -> Option<([u8; 16], u32, PartitionImage)> {
        let all: Vec<_> = image
            .topics
            .iter()
            .flat_map(|(id, t)| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (*id, i as u32, p.clone()))
            })
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[usize::from(n) % all.len()].clone())
    }

    /// Runs `ops` against a 4-node cluster, checking every committed round.
    fn run_ops(ops: &[Op], unclean: bool) -> Result<(), String> {
        let mut s = Sim::cluster_with(cfg(unclean), 4, 11);
        s.request(1, create("t0", 4, 3));
        let mut up: BTreeSet<NodeId> = (1..=4).collect();
        // Nodes asked to shut down, by incarnation: they stay fenced while up.
        let mut shut: BTreeMap<NodeId, i64> = BTreeMap::new();
        let mut epoch = 1;
        let mut topics = 1;
        let mut holders = Holders::new();
        let mut round = |s: &mut Sim| -> Result<(), String> {
            let before = s.image.clone();
            match s.round() {
                Some(rec) => check_round(&before, &rec, unclean, &mut holders),
                None => Ok(()),
            }
        };
        for op in ops {
            match *op {
                Op::Advance(ms) => {
                    s.now += u64::from(ms);
                    for &n in &up {
                        s.ctl.heard_from(n, s.now);
                        s.fetch_as(n, s.incarnations.get(&n).copied().unwrap_or(0));
                    }
                }
                Op::Crash(n) => {
                    up.remove(&n);
                }
                Op::Restart(n) => {
                    up.insert(n);
                    shut.remove(&n);
                    s.register(n);
                }
                Op::Failover => {
                    epoch += 1;
                    shut.clear();
                    s.ctl.deactivate();
                    s.activate(epoch, None);
                    s.collect();
                }
                Op::Shutdown(n) => {
                    let incarnation = s.incarnations[&n];
                    shut.insert(n, incarnation);
                    let node_id = n;
                    s.submit(
                        n,
                        ControllerRequest::ControlledShutdown {
                            node_id,
                            incarnation,
                        },
                    );
                }
                Op::Fail(k, n, full) => {
                    let Some((topic_id, partition, _)) = nth_partition(&s.image, k) else {
                        continue;
                    };
                    let incarnation = s.incarnations[&n];
                    let partitions = vec![(topic_id, partition)];
                    s.submit(
                        n,
                        ControllerRequest::ReplicasOffline {
                            node_id: n,
                            incarnation,
                            partitions,
                            full,
                        },
                    );
                }
                Op::Shrink(k) | Op::Expand(k) => {
                    let Some((topic_id, partition, p)) = nth_partition(&s.image, k) else {
                        continue;
                    };
                    if p.leader == -1 {
                        continue;
                    }
                    let mut new_isr = p.isr.clone();
                    if matches!(op, Op::Shrink(_)) {
                        let victim = p.isr.iter().copied().find(|&n| n != p.leader);
                        new_isr.retain(|&n| Some(n) != victim);
                    } else {
                        let joiner = p
                            .replicas
                            .iter()
                            .copied()
                            .find(|n| !p.isr.contains(n) && up.contains(n) && !s.fenced(*n));
                        new_isr.extend(joiner);
                    }
                    s.submit(
                        p.leader,
                        ControllerRequest::AlterPartition {
                            topic_id,
                            partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            partition_epoch: p.partition_epoch,
                            current_isr: p.isr,
                            new_isr,
                        },
                    );
                }
                Op::Create(p, rf) => {
                    topics += 1;
                    s.submit(2, create(&format!("t{topics}"), p.into(), rf.into()));
                }
                Op::Place(p, k) => {
                    topics += 1;
                    let rf = 1 + usize::from(k % 3);
                    let lists: Vec<Vec<NodeId>> = (0..p)
                        .map(|i| rotated(usize::from(k / 3 + i), rf))
                        .collect();
                    s.submit(
                        2,
                        ControllerRequest::CreateTopic {
                            name: format!("t{topics}"),
                            partitions: p.into(),
                            replication_factor: rf as u16,
                            configs: Vec::new(),
                            assignments: lists,
                        },
                    );
                }
                Op::Grow(k) | Op::Delete(k) => {
                    let names: Vec<String> = s.image.topic_ids.keys().cloned().collect();
                    let Some(name) = names.get(usize::from(k) % names.len().max(1)).cloned() else {
                        continue;
                    };
                    let parts = &s.image.topics[&s.image.topic_ids[&name]].partitions;
                    // From 128 on, the new partition's replicas are named.
                    let assignments = match parts.first() {
                        Some(first) if k >= 128 => {
                            vec![rotated(usize::from(k), first.replicas.len())]
                        }
                        _ => Vec::new(),
                    };
                    let req = match op {
                        Op::Grow(_) => ControllerRequest::CreatePartitions {
                            count: parts.len() as u32 + 1,
                            name,
                            assignments,
                        },
                        _ => ControllerRequest::DeleteTopic { name },
                    };
                    s.submit(2, req);
                }
                Op::ProducerIds(n) => {
                    producer_ids(&mut s, n, n);
                }
                Op::Round => round(&mut s)?,
                Op::Elect(k, u) => {
                    let Some((topic_id, partition, _)) = nth_partition(&s.image, k) else {
                        continue;
                    };
                    s.submit(
                        2,
                        ControllerRequest::ElectLeaders {
                            unclean: u && unclean,
                            partitions: vec![(topic_id, partition)],
                        },
                    );
                }
                Op::Reassign(k, mask) => {
                    let Some((topic_id, partition, _)) = nth_partition(&s.image, k) else {
                        continue;
                    };
                    // Rotated by k, so the target's first replica varies.
                    let mut target: Vec<NodeId> =
                        (1..=4).filter(|n| mask & (1 << (n - 1)) != 0).collect();
                    let turn = usize::from(k) % target.len().max(1);
                    target.rotate_left(turn);
                    let target = (!target.is_empty()).then_some(target);
                    s.submit(
                        2,
                        ControllerRequest::AlterReassignments {
                            partitions: vec![(topic_id, partition, target)],
                        },
                    );
                }
                Op::ClusterMinIsr(v) => {
                    s.submit(
                        2,
                        ControllerRequest::AlterClusterConfigs {
                            change: ConfigChange::Replace(vec![(
                                CLUSTER_MIN_ISR.into(),
                                v.to_string(),
                            )]),
                        },
                    );
                }
            }
        }
        for _ in 0..100 {
            if s.ctl.poll_timeout() != Some(s.now) {
                break;
            }
            round(&mut s)?;
        }
        // Progress: with every up node heard for a while, no partition stays offline while an
        // ISR member (any replica, if unclean) is up and not shutting down.
        for _ in 0..3 {
            s.now += SESSION_MS / 10;
            for &n in &up {
                s.ctl.heard_from(n, s.now);
                s.fetch_as(n, s.incarnations.get(&n).copied().unwrap_or(0));
            }
            round(&mut s)?;
            for _ in 0..100 {
                if s.ctl.poll_timeout() != Some(s.now) {
                    break;
                }
                round(&mut s)?;
            }
        }
        // Producer id blocks answered, across failovers, never overlap, and the log's next id
        // is past every one of them.
        let mut blocks: Vec<ProducerIdBlock> =
            s.answers.values().filter_map(|r| r.producer_ids).collect();
        blocks.sort_by_key(|b| b.first);
        for pair in blocks.windows(2) {
            if pair[0].first + pair[0].count > pair[1].first {
                return Err(format!("producer id blocks overlap: {pair:?}"));
            }
        }
        if let Some(last) = blocks.last() {
            if last.first + last.count > s.image.next_producer_id {
                return Err(format!(
                    "block {last:?} beyond the log's next producer id {}",
                    s.image.next_producer_id
                ));
            }
        }
        let usable = |n: &NodeId| up.contains(n) && !shut.contains_key(n);
        for t in s.image.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let candidates = if unclean { &p.replicas } else { &p.isr };
                if p.leader == -1 && candidates.iter().any(usable) {
                    return Err(format!("{}/{i} stays offline: {p:?}, up {up:?}", t.name));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn controller_proptest_rounds_keep_the_invariants(
            ops in vec(op(), 1..120),
            unclean in any::<bool>(),
        ) {
            let _g = serial();
            let r = run_ops(&ops, unclean);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }

    /// Found by the proptest: a leader lost with unclean election on went offline first and
    /// waited for unrelated input to elect.
    #[test]
    fn controller_proptest_regression_unclean_after_lost_leader() {
        use Op::*;
        let _g = serial();
        let ops = [
            Shrink(0),
            Crash(4),
            Round,
            Advance(1000),
            Round,
            Shutdown(2),
            Advance(0),
            Restart(4),
            Crash(2),
            Shutdown(2),
            Advance(1000),
        ];
        run_ops(&ops, true).expect("invariants and progress hold");
    }

    #[test]
    fn controller_checker_sees_an_out_of_isr_election() {
        let _g = serial();
        let mut s = Sim::cluster(3);
        s.seed("t", &[2, 3], &[2], 2);
        let bad = MetadataRecord::Batch(vec![MetadataRecord::PartitionChange {
            topic_id: s.id("t"),
            partition: 0,
            leader: 3,
            leader_epoch: 1,
            isr: vec![3],
            replicas: vec![2, 3],
            elr: vec![],
            adding: vec![],
            removing: vec![],
        }]);
        let e = check_round(&s.image, &bad, false, &mut Holders::new()).expect_err("caught");
        assert!(e.contains("out-of-ISR"), "{e}");
        assert!(check_round(&s.image, &bad, true, &mut Holders::new()).is_ok());
    }

    /// With the plant, the proptest above fails, on the out-of-ISR check.
    #[cfg(feature = "planted-bugs")]
    #[test]
    fn controller_proptest_catches_out_of_isr_election() {
        use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
        let _g = PLANT_LOCK.write().unwrap_or_else(|e| e.into_inner());
        assert!(planted::plant(&[PlantedBug::OutOfIsrElection]));
        let mut runner = TestRunner::new_with_rng(
            Config::with_cases(256),
            TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        );
        let r = runner.run(&vec(op(), 1..120), |ops| {
            run_ops(&ops, false).map_err(TestCaseError::fail)
        });
        planted::plant(&[]);
        let Err(TestError::Fail(why, ops)) = r else {
            panic!("out-of-isr-election not caught: {r:?}");
        };
        assert!(why.to_string().contains("out-of-ISR"), "{why}: {ops:?}");
    }
}
