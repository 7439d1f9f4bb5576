//! The metadata records the cluster will replicate and [`MetadataImage`], the state machine that
//! applies committed records deterministically. Records use a small versioned binary encoding
//! (version byte, type byte, length-prefixed fields); every decode is length-checked and refuses
//! trailing bytes. An image encodes to the records that rebuild it, which is what a snapshot
//! holds.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::types::NodeId;
use crate::planted::{self, PlantedBug};

const VERSION: u8 = 1;
/// Snapshot header versions: 2 holds exact partition epochs; 1 (from before them) does not.
const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_NO_PARTITION_EPOCHS: u8 = 1;
/// Bound on any decoded string or list, so hostile bytes cannot allocate much.
const MAX_LEN: usize = 1 << 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: u16,
        epoch: i64,
        /// The broker fsyncs before it acknowledges, so a restart kept every record it reported
        /// durable. A broker without this leaves every ELR when it restarts.
        logs_intact: bool,
        /// Its rack (Kafka's `broker.rack`), if it has one: replicas are spread across racks.
        rack: Option<String>,
        /// Its data directory's id (`meta.properties`, drawn when the directory was first
        /// used); None in records from before directory ids. A restart with an id other than
        /// the one registered means the directory was replaced (a wiped or new disk): the
        /// broker holds none of the records it held, so it leaves every ISR and ELR.
        directory_id: Option<[u8; 16]>,
    },
    CreateTopic {
        name: String,
        id: [u8; 16],
        partitions: u32,
    },
    PartitionChange {
        topic_id: [u8; 16],
        partition: u32,
        leader: NodeId,
        leader_epoch: i32,
        isr: Vec<NodeId>,
        replicas: Vec<NodeId>,
        /// Eligible leader replicas (KIP-966): replicas out of the ISR that still hold every
        /// committed record, because they left it when the ISR was already below
        /// min.insync.replicas, where the high watermark stops.
        elr: Vec<NodeId>,
        /// A reassignment in progress (Kafka's addingReplicas / removingReplicas): `replicas`
        /// is then the target followed by the original replicas it drops; `adding` are the
        /// target's new members (catching up), `removing` the original members the target
        /// drops. Both empty when no reassignment runs.
        adding: Vec<NodeId>,
        removing: Vec<NodeId>,
    },
    /// Appended by every new quorum leader (Kafka's LeaderChangeMessage control record).
    LeaderChange {
        epoch: i32,
        leader: NodeId,
    },
    NoOp,
    /// Replaces a topic's config overrides (Kafka's ConfigRecord, per topic).
    TopicConfig {
        topic_id: [u8; 16],
        configs: Vec<(String, String)>,
    },
    /// Kafka's RemoveTopicRecord.
    DeleteTopic {
        topic_id: [u8; 16],
    },
    /// Kafka's FenceBrokerRecord / UnfenceBrokerRecord: a fenced broker is left out of Metadata
    /// and may not lead or join an ISR.
    BrokerFence {
        node_id: NodeId,
        fenced: bool,
    },
    /// Grows a topic to `count` partitions (Kafka's PartitionRecord for the new ones); the new
    /// partitions start empty like those of [`MetadataRecord::CreateTopic`]. Never shrinks.
    CreatePartitions {
        topic_id: [u8; 16],
        count: u32,
    },
    /// Replaces the cluster-level dynamic configs (Kafka's ConfigRecord for the default broker
    /// resource): today only `min.insync.replicas`, which the active controller writes from its
    /// own flag when the log has none, so every node and the controller read one value.
    ClusterConfig {
        configs: Vec<(String, String)>,
    },
    /// Replaces one broker's dynamic configs (Kafka's ConfigRecord for a broker resource): the
    /// replication throttle rates ([`crate::replica::quota::BROKER_CONFIGS`]). No configs
    /// removes the broker's entry. The broker need not be registered, as in Kafka.
    BrokerConfig {
        node_id: NodeId,
        configs: Vec<(String, String)>,
    },
    /// A block of producer ids handed to broker `node_id` (Kafka's ProducerIdsRecord,
    /// KIP-730): every id below `next_producer_id` has been handed out, and the next block
    /// starts there. Ids only go up, so no producer id is ever handed out twice, whatever
    /// happens to the brokers' disks. A snapshot writes it with `node_id` -1.
    ProducerIds {
        node_id: NodeId,
        next_producer_id: i64,
    },
    /// Sets a partition's partition epoch (see [`PartitionImage::partition_epoch`]). Only
    /// snapshots write it, after the partition's [`MetadataRecord::PartitionChange`]: the log
    /// itself carries the epoch implicitly, one step per change.
    PartitionEpoch {
        topic_id: [u8; 16],
        partition: u32,
        partition_epoch: i32,
    },
    /// Records that apply together or not at all is not needed here: they apply in order within
    /// one log entry, so a controller failover never leaves half of them (Kafka's metadata
    /// transactions, simplified). Batches do not nest.
    Batch(Vec<MetadataRecord>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "metadata record: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A bounds-checked big-endian reader, shared with `cluster::requests`.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_LEN || n > self.buf.len() {
            return Err(DecodeError("length out of bounds"));
        }
        Ok(n)
    }
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError("invalid utf-8"))
    }
    /// A `u8` that must be 0 or 1; `what` names the field when it is neither.
    pub(crate) fn boolean(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError(what)),
        }
    }
    pub(crate) fn id(&mut self) -> Result<[u8; 16], DecodeError> {
        Ok(self.take(16)?.try_into().unwrap())
    }
    pub(crate) fn ids(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let n = self.len()?;
        if n * 4 > self.buf.len() {
            return Err(DecodeError("list longer than the record"));
        }
        (0..n).map(|_| self.i32()).collect()
    }
    /// Name/value pairs as [`put_configs`] writes them.
    pub(crate) fn configs(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.len()?;
        if n.saturating_mul(8) > self.buf.len() {
            return Err(DecodeError("list longer than the record"));
        }
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
}

pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    assert!(n <= MAX_LEN, "metadata field too long");
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Name/value pairs: a count, then each name and value as strings.
pub(crate) fn put_configs(out: &mut Vec<u8>, configs: &[(String, String)]) {
    put_len(out, configs.len());
    for (k, v) in configs {
        put_string(out, k);
        put_string(out, v);
    }
}

/// The end of a broker registration that carries a data directory id (record type 17, and
/// the controller request kind 20): `u8 logs_intact`, the id, then `u8 0`, or `u8 1` and the
/// rack.
pub(crate) fn put_registration_tail(
    out: &mut Vec<u8>,
    logs_intact: bool,
    directory_id: &[u8; 16],
    rack: Option<&str>,
) {
    out.push(u8::from(logs_intact));
    out.extend_from_slice(directory_id);
    match rack {
        None => out.push(0),
        Some(rack) => {
            out.push(1);
            put_string(out, rack);
        }
    }
}

/// Reads what [`put_registration_tail`] writes.
pub(crate) fn read_registration_tail(
    r: &mut Reader<'_>,
) -> Result<(bool, [u8; 16], Option<String>), DecodeError> {
    let logs_intact = r.boolean("logs_intact is not a boolean")?;
    let id = r.id()?;
    let rack = if r.boolean("rack flag is not a boolean")? {
        Some(r.string()?)
    } else {
        None
    };
    Ok((logs_intact, id, rack))
}

pub(crate) fn put_ids(out: &mut Vec<u8>, ids: &[NodeId]) {
    put_len(out, ids.len());
    for i in ids {
        out.extend_from_slice(&i.to_be_bytes());
    }
}

impl MetadataRecord {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(32);
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        match self {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                epoch,
                logs_intact,
                rack,
                directory_id,
            } => {
                // Type 1 is the record from before ELRs existed, when nothing depended on it;
                // type 16 carries a rack, after the fields of 1 and 12 and `u8 logs_intact`;
                // type 17 carries a directory id: the fields of 1, `u8 logs_intact`, the id,
                // then `u8 0` or `u8 1` + the rack.
                out.push(match (directory_id, rack, logs_intact) {
                    (Some(_), _, _) => 17,
                    (None, Some(_), _) => 16,
                    (None, None, true) => 1,
                    (None, None, false) => 12,
                });
                out.extend_from_slice(&node_id.to_be_bytes());
                put_string(out, host);
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                if let Some(id) = directory_id {
                    put_registration_tail(out, *logs_intact, id, rack.as_deref());
                } else if let Some(rack) = rack {
                    out.push(u8::from(*logs_intact));
                    put_string(out, rack);
                }
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
            } => {
                out.push(2);
                put_string(out, name);
                out.extend_from_slice(id);
                out.extend_from_slice(&partitions.to_be_bytes());
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                leader_epoch,
                isr,
                replicas,
                elr,
                adding,
                removing,
            } => {
                // Type 3 is the record before ELRs existed and type 11 the one before
                // reassignments; logs written then still decode.
                let reassigning = !adding.is_empty() || !removing.is_empty();
                out.push(match (reassigning, elr.is_empty()) {
                    (true, _) => 14,
                    (false, true) => 3,
                    (false, false) => 11,
                });
                out.extend_from_slice(topic_id);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&leader.to_be_bytes());
                out.extend_from_slice(&leader_epoch.to_be_bytes());
                put_ids(out, isr);
                put_ids(out, replicas);
                if reassigning || !elr.is_empty() {
                    put_ids(out, elr);
                }
                if reassigning {
                    put_ids(out, adding);
                    put_ids(out, removing);
                }
            }
            MetadataRecord::LeaderChange { epoch, leader } => {
                out.push(4);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&leader.to_be_bytes());
            }
            MetadataRecord::NoOp => out.push(5),
            MetadataRecord::TopicConfig { topic_id, configs } => {
                out.push(6);
                out.extend_from_slice(topic_id);
                put_configs(out, configs);
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                out.push(7);
                out.extend_from_slice(topic_id);
            }
            MetadataRecord::BrokerFence { node_id, fenced } => {
                out.push(8);
                out.extend_from_slice(&node_id.to_be_bytes());
                out.push(u8::from(*fenced));
            }
            MetadataRecord::Batch(records) => {
                out.push(9);
                put_len(out, records.len());
                for r in records {
                    assert!(
                        !matches!(r, MetadataRecord::Batch(_)),
                        "metadata batches do not nest"
                    );
                    let mut one = Vec::new();
                    r.encode_into(&mut one);
                    put_len(out, one.len());
                    out.extend_from_slice(&one);
                }
            }
            MetadataRecord::CreatePartitions { topic_id, count } => {
                out.push(10);
                out.extend_from_slice(topic_id);
                out.extend_from_slice(&count.to_be_bytes());
            }
            MetadataRecord::ClusterConfig { configs } => {
                out.push(13);
                put_configs(out, configs);
            }
            MetadataRecord::BrokerConfig { node_id, configs } => {
                out.push(15);
                out.extend_from_slice(&node_id.to_be_bytes());
                put_configs(out, configs);
            }
            MetadataRecord::ProducerIds {
                node_id,
                next_producer_id,
            } => {
                out.push(18);
                out.extend_from_slice(&node_id.to_be_bytes());
                out.extend_from_slice(&next_producer_id.to_be_bytes());
            }
            MetadataRecord::PartitionEpoch {
                topic_id,
                partition,
                partition_epoch,
            } => {
                out.push(19);
                out.extend_from_slice(topic_id);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&partition_epoch.to_be_bytes());
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<MetadataRecord, DecodeError> {
        let mut r = Reader { buf };
        let rec = Self::decode_from(&mut r)?;
        if !r.buf.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(rec)
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<MetadataRecord, DecodeError> {
        Self::decode_nested(r, true)
    }

    fn decode_nested(r: &mut Reader<'_>, top: bool) -> Result<MetadataRecord, DecodeError> {
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        Ok(match r.u8()? {
            kind @ (1 | 12) => MetadataRecord::RegisterBroker {
                node_id: r.i32()?,
                host: r.string()?,
                port: r.u16()?,
                epoch: r.i64()?,
                logs_intact: kind == 1,
                rack: None,
                directory_id: None,
            },
            16 => MetadataRecord::RegisterBroker {
                node_id: r.i32()?,
                host: r.string()?,
                port: r.u16()?,
                epoch: r.i64()?,
                logs_intact: r.boolean("logs_intact is not a boolean")?,
                rack: Some(r.string()?),
                directory_id: None,
            },
            17 => {
                let (node_id, host, port, epoch) = (r.i32()?, r.string()?, r.u16()?, r.i64()?);
                let (logs_intact, id, rack) = read_registration_tail(r)?;
                MetadataRecord::RegisterBroker {
                    node_id,
                    host,
                    port,
                    epoch,
                    logs_intact,
                    rack,
                    directory_id: Some(id),
                }
            }
            2 => MetadataRecord::CreateTopic {
                name: r.string()?,
                id: r.id()?,
                partitions: r.u32()?,
            },
            kind @ (3 | 11 | 14) => {
                let topic_id = r.id()?;
                let partition = r.u32()?;
                let leader = r.i32()?;
                let leader_epoch = r.i32()?;
                let isr = r.ids()?;
                let replicas = r.ids()?;
                let elr = if kind == 3 { Vec::new() } else { r.ids()? };
                let (adding, removing) = if kind == 14 {
                    (r.ids()?, r.ids()?)
                } else {
                    (Vec::new(), Vec::new())
                };
                if kind == 11 && elr.is_empty() {
                    return Err(DecodeError("empty ELR in a record type that carries one"));
                }
                if kind == 14 && adding.is_empty() && removing.is_empty() {
                    return Err(DecodeError(
                        "no reassignment in a record type that carries one",
                    ));
                }
                MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    leader,
                    leader_epoch,
                    isr,
                    replicas,
                    elr,
                    adding,
                    removing,
                }
            }
            4 => MetadataRecord::LeaderChange {
                epoch: r.i32()?,
                leader: r.i32()?,
            },
            5 => MetadataRecord::NoOp,
            6 => MetadataRecord::TopicConfig {
                topic_id: r.id()?,
                configs: r.configs()?,
            },
            7 => MetadataRecord::DeleteTopic { topic_id: r.id()? },
            8 => MetadataRecord::BrokerFence {
                node_id: r.i32()?,
                fenced: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("bad bool")),
                },
            },
            9 if top => {
                let n = r.len()?;
                if n * 6 > r.buf.len() {
                    return Err(DecodeError("list longer than the record"));
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.len()?;
                    let mut inner = Reader { buf: r.take(len)? };
                    let rec = Self::decode_nested(&mut inner, false)?;
                    if !inner.buf.is_empty() {
                        return Err(DecodeError("trailing bytes in batch member"));
                    }
                    records.push(rec);
                }
                MetadataRecord::Batch(records)
            }
            9 => return Err(DecodeError("nested batch")),
            10 => MetadataRecord::CreatePartitions {
                topic_id: r.id()?,
                count: r.u32()?,
            },
            13 => MetadataRecord::ClusterConfig {
                configs: r.configs()?,
            },
            15 => MetadataRecord::BrokerConfig {
                node_id: r.i32()?,
                configs: r.configs()?,
            },
            18 => MetadataRecord::ProducerIds {
                node_id: r.i32()?,
                next_producer_id: r.i64()?,
            },
            19 => MetadataRecord::PartitionEpoch {
                topic_id: r.id()?,
                partition: r.u32()?,
                partition_epoch: r.i32()?,
            },
            _ => return Err(DecodeError("unknown record type")),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub host: String,
    pub port: u16,
    /// The broker's incarnation: a new value at every start.
    pub epoch: i64,
    /// Fenced brokers are left out of Metadata and may not lead or join an ISR.
    pub fenced: bool,
    pub rack: Option<String>,
    /// The id of the data directory it registered with (None from brokers before ids).
    pub directory_id: Option<[u8; 16]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub isr: Vec<NodeId>,
    pub replicas: Vec<NodeId>,
    /// Eligible leader replicas (KIP-966), disjoint from the ISR; see
    /// [`MetadataRecord::PartitionChange`].
    pub elr: Vec<NodeId>,
    /// A reassignment in progress; see [`MetadataRecord::PartitionChange`].
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
    /// Kafka's partition epoch: one more with every change to the partition (each
    /// [`MetadataRecord::PartitionChange`], and the changes a broker's registration makes).
    /// AlterPartition names the one its leader saw, and the controller refuses any other, so
    /// a late copy of an old request cannot apply after the ISR changed and changed back.
    pub partition_epoch: i32,
}

impl PartitionImage {
    /// A partition just created: no replicas, no leader, epoch 0.
    pub fn empty() -> Self {
        PartitionImage {
            leader: -1,
            leader_epoch: 0,
            isr: Vec::new(),
            replicas: Vec::new(),
            elr: Vec::new(),
            adding: Vec::new(),
            removing: Vec::new(),
            partition_epoch: 0,
        }
    }

    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas a reassignment in progress moves to (all replicas otherwise).
    pub fn target_replicas(&self) -> Vec<NodeId> {
        let replicas = self.replicas.iter().copied();
        replicas.filter(|r| !self.removing.contains(r)).collect()
    }

    /// The replicas before the reassignment in progress (all replicas otherwise).
    pub fn original_replicas(&self) -> Vec<NodeId> {
        let replicas = self.replicas.iter().copied();
        replicas.filter(|r| !self.adding.contains(r)).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub partitions: Vec<PartitionImage>,
    /// Config overrides (`min.insync.replicas`, `retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

/// The cluster metadata after applying every committed record below `applied_offset`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Offset after the last applied record.
    pub applied_offset: i64,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    pub topics: BTreeMap<[u8; 16], TopicImage>,
    pub topic_ids: BTreeMap<String, [u8; 16]>,
    /// Cluster-level dynamic configs; see [`MetadataRecord::ClusterConfig`].
    pub cluster_configs: BTreeMap<String, String>,
    /// Per-broker dynamic configs; see [`MetadataRecord::BrokerConfig`]. No empty entries.
    pub broker_configs: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Last quorum leader change seen: (epoch, leader).
    pub quorum_leader: Option<(i32, NodeId)>,
    /// The first producer id not yet handed out; see [`MetadataRecord::ProducerIds`].
    pub next_producer_id: i64,
    /// Records that decoded but did not apply (unknown topic, duplicate name, ...) or did not
    /// decode: deterministic no-ops, counted.
    pub rejected: u64,
    /// Built on a snapshot from before partition epochs: each partition's epoch counts from
    /// there, so other nodes may count otherwise. Leaders then name none in AlterPartition
    /// and the controller checks none (leader epoch and ISR only, as before), rather than
    /// refuse every ISR change as stale. A snapshot of such an image says so in turn.
    pub partition_epochs_inexact: bool,
}

/// Bound on partitions per topic in the image.
pub const MAX_PARTITIONS: u32 = 10_000;

impl MetadataImage {
    /// Applies the committed entry at `offset`, which must be the next one.
    pub fn apply(&mut self, offset: i64, payload: &[u8]) {
        assert_eq!(offset, self.applied_offset, "records apply in order");
        self.applied_offset += 1;
        match MetadataRecord::decode(payload) {
            Ok(rec) => {
                if !self.apply_record(rec) {
                    self.rejected += 1;
                }
            }
            Err(_) => self.rejected += 1,
        }
    }

    /// `node` came back on a replaced data directory: its copies hold nothing of what they
    /// held, so it leaves every ISR and ELR, and every partition it led goes offline (the
    /// controller elects from what is left). A partition whose only in-sync copy this was
    /// keeps an empty ISR: it stays offline until its ELR can lead or an operator asks for an
    /// unclean election, rather than let the empty copy lead and the other replicas truncate
    /// to it.
    ///
    /// Every partition the node is a replica of moves to a new leader epoch, even where it
    /// only followed: a leader starts each epoch knowing nothing of its followers, so it
    /// cannot add the node back to the ISR on the strength of what its old directory had
    /// fetched, and an ISR change it asks for from an older epoch is refused as stale.
    fn forget_replicas_of(&mut self, node: NodeId) {
        for t in self.topics.values_mut() {
            for p in t
                .partitions
                .iter_mut()
                .filter(|p| p.replicas.contains(&node))
            {
                p.isr.retain(|&n| n != node);
                p.elr.retain(|&n| n != node);
                if p.leader == node {
                    p.leader = -1;
                }
                p.leader_epoch += 1;
                p.partition_epoch += 1;
                debug_assert!(!p.isr.contains(&node) && !p.elr.contains(&node) && p.leader != node);
            }
        }
    }

    /// The partition epoch a leader names in AlterPartition for `p` of this image: -1 when this
    /// image's partition epochs are inexact (see [`Self::partition_epochs_inexact`]).
    pub fn alter_partition_epoch(&self, p: &PartitionImage) -> i32 {
        if self.partition_epochs_inexact {
            -1
        } else {
            p.partition_epoch
        }
    }

    fn partition_mut(
        &mut self,
        topic_id: &[u8; 16],
        partition: u32,
    ) -> Option<&mut PartitionImage> {
        let topic = self.topics.get_mut(topic_id)?;
        topic.partitions.get_mut(partition as usize)
    }

    fn apply_record(&mut self, rec: MetadataRecord) -> bool {
        match rec {
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                epoch,
                logs_intact,
                rack,
                directory_id,
            } => {
                if self.brokers.get(&node_id).is_some_and(|b| b.epoch == epoch) {
                    return false;
                }
                let previous = self.brokers.get(&node_id).map(|b| b.directory_id);
                let restarted = previous.is_some();
                let replaced = matches!(
                    (previous.flatten(), directory_id),
                    (Some(was), Some(now)) if was != now
                );
                self.brokers.insert(
                    node_id,
                    BrokerRegistration {
                        host,
                        port,
                        epoch,
                        fenced: false,
                        rack,
                        directory_id,
                    },
                );
                if replaced && !planted::enabled(PlantedBug::ReplacedDirectoryKept) {
                    self.forget_replicas_of(node_id);
                }
                if restarted && !logs_intact {
                    // It may have lost records it reported durable: no longer an eligible
                    // leader of anything.
                    for t in self.topics.values_mut() {
                        for p in t.partitions.iter_mut() {
                            if p.elr.contains(&node_id) {
                                p.elr.retain(|&n| n != node_id);
                                p.partition_epoch += 1;
                            }
                        }
                    }
                }
                if restarted {
                    // A restarted broker lost whatever it had not fsynced, so it must not go on
                    // leading in an epoch whose unsynced suffix followers may hold: every
                    // partition it leads moves to a new leader epoch, which makes followers
                    // truncate to the restarted leader's log.
                    for t in self.topics.values_mut() {
                        for p in t.partitions.iter_mut().filter(|p| p.leader == node_id) {
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                partitions,
            } => {
                if self.topic_ids.contains_key(&name)
                    || self.topics.contains_key(&id)
                    || partitions == 0
                    || partitions > MAX_PARTITIONS
                {
                    return false;
                }
                let parts = (0..partitions).map(|_| PartitionImage::empty()).collect();
                self.topic_ids.insert(name.clone(), id);
                self.topics.insert(
                    id,
                    TopicImage {
                        name,
                        partitions: parts,
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::TopicConfig { topic_id, configs } => {
                let Some(t) = self.topics.get_mut(&topic_id) else {
                    return false;
                };
                t.configs = configs.into_iter().collect();
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let Some(t) = self.topics.remove(&topic_id) else {
                    return false;
                };
                self.topic_ids.remove(&t.name);
            }
            MetadataRecord::BrokerFence { node_id, fenced } => {
                let Some(b) = self.brokers.get_mut(&node_id) else {
                    return false;
                };
                b.fenced = fenced;
            }
            MetadataRecord::CreatePartitions { topic_id, count } => {
                let Some(t) = self.topics.get_mut(&topic_id) else {
                    return false;
                };
                if count as usize <= t.partitions.len() || count > MAX_PARTITIONS {
                    return false;
                }
                t.partitions.resize(count as usize, PartitionImage::empty());
            }
            MetadataRecord::Batch(records) => {
                let mut all = true;
                for r in records {
                    if matches!(r, MetadataRecord::Batch(_)) || !self.apply_record(r) {
                        all = false;
                    }
                }
                return all;
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                leader_epoch,
                isr,
                replicas,
                elr,
                adding,
                removing,
            } => {
                let Some(p) = self.partition_mut(&topic_id, partition) else {
                    return false;
                };
                let within = |ids: &[NodeId]| ids.iter().all(|n| replicas.contains(n));
                let disjoint = adding.iter().all(|n| !removing.contains(n));
                if leader_epoch < p.leader_epoch
                    || !within(&adding)
                    || !within(&removing)
                    || !disjoint
                {
                    return false;
                }
                *p = PartitionImage {
                    leader,
                    leader_epoch,
                    isr,
                    replicas,
                    elr,
                    adding,
                    removing,
                    partition_epoch: p.partition_epoch + 1,
                };
            }
            MetadataRecord::LeaderChange { epoch, leader } => {
                if self.quorum_leader.is_some_and(|(e, _)| e >= epoch) {
                    return false;
                }
                self.quorum_leader = Some((epoch, leader));
            }
            MetadataRecord::ClusterConfig { configs } => {
                self.cluster_configs = configs.into_iter().collect();
            }
            MetadataRecord::BrokerConfig { node_id, configs } => {
                if node_id < 0 {
                    return false;
                }
                if configs.is_empty() {
                    self.broker_configs.remove(&node_id);
                } else {
                    self.broker_configs
                        .insert(node_id, configs.into_iter().collect());
                }
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                // Going back (or standing still) would hand a block out twice.
                if next_producer_id <= self.next_producer_id {
                    return false;
                }
                self.next_producer_id = next_producer_id;
            }
            MetadataRecord::PartitionEpoch {
                topic_id,
                partition,
                partition_epoch,
            } => {
                let Some(p) = self.partition_mut(&topic_id, partition) else {
                    return false;
                };
                if partition_epoch < 0 {
                    return false;
                }
                p.partition_epoch = partition_epoch;
            }
            MetadataRecord::NoOp => {}
        }
        true
    }

    /// Snapshot bytes: a header (version, applied offset, rejected count) then the records that
    /// rebuild this image, each length-prefixed.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(256);
        out.push(if self.partition_epochs_inexact {
            SNAPSHOT_VERSION_NO_PARTITION_EPOCHS
        } else {
            SNAPSHOT_VERSION
        });
        out.extend_from_slice(&self.applied_offset.to_be_bytes());
        out.extend_from_slice(&self.rejected.to_be_bytes());
        let mut records = Vec::new();
        if let Some((epoch, leader)) = self.quorum_leader {
            records.push(MetadataRecord::LeaderChange { epoch, leader });
        }
        for (&node_id, b) in &self.brokers {
            records.push(MetadataRecord::RegisterBroker {
                node_id,
                host: b.host.clone(),
                port: b.port,
                epoch: b.epoch,
                logs_intact: true,
                rack: b.rack.clone(),
                directory_id: b.directory_id,
            });
            if b.fenced {
                records.push(MetadataRecord::BrokerFence {
                    node_id,
                    fenced: true,
                });
            }
        }
        if !self.cluster_configs.is_empty() {
            records.push(MetadataRecord::ClusterConfig {
                configs: self.cluster_configs.clone().into_iter().collect(),
            });
        }
        for (&node_id, configs) in &self.broker_configs {
            records.push(MetadataRecord::BrokerConfig {
                node_id,
                configs: configs.clone().into_iter().collect(),
            });
        }
        if self.next_producer_id > 0 {
            records.push(MetadataRecord::ProducerIds {
                node_id: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        for (&id, t) in &self.topics {
            records.push(MetadataRecord::CreateTopic {
                name: t.name.clone(),
                id,
                partitions: t.partitions.len() as u32,
            });
            if !t.configs.is_empty() {
                records.push(MetadataRecord::TopicConfig {
                    topic_id: id,
                    configs: t.configs.clone().into_iter().collect(),
                });
            }
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader_epoch != 0
                    || p.leader != -1
                    || !p.replicas.is_empty()
                    || p.partition_epoch != 0
                {
                    records.push(MetadataRecord::PartitionChange {
                        topic_id: id,
                        partition: i as u32,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        isr: p.isr.clone(),
                        replicas: p.replicas.clone(),
                        elr: p.elr.clone(),
                        adding: p.adding.clone(),
                        removing: p.removing.clone(),
                    });
                    records.push(MetadataRecord::PartitionEpoch {
                        topic_id: id,
                        partition: i as u32,
                        partition_epoch: p.partition_epoch,
                    });
                }
            }
        }
        let mut rec = Vec::new();
        for r in records {
            rec.clear();
            r.encode_into(&mut rec);
            out.extend_from_slice(&(rec.len() as u32).to_be_bytes());
            out.extend_from_slice(&rec);
        }
        Bytes::from(out)
    }

    pub fn decode(buf: &[u8]) -> Result<MetadataImage, DecodeError> {
        let mut r = Reader { buf };
        let version = r.u8()?;
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_NO_PARTITION_EPOCHS {
            return Err(DecodeError("unknown image version"));
        }
        let applied_offset = r.i64()?;
        let rejected = r.i64()? as u64;
        if applied_offset < 0 {
            return Err(DecodeError("negative applied offset"));
        }
        let mut image = MetadataImage::default();
        while !r.buf.is_empty() {
            let n = r.u32()? as usize;
            let rec = MetadataRecord::decode(r.take(n)?)?;
            if !image.apply_record(rec) {
                return Err(DecodeError("snapshot record does not apply"));
            }
        }
        image.applied_offset = applied_offset;
        image.rejected = rejected;
        image.partition_epochs_inexact = version == SNAPSHOT_VERSION_NO_PARTITION_EPOCHS;
        Ok(image)
    }

    /// FNV-1a over the encoding: equal images have equal digests.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.encode().iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                node_id: 3,
                host: "h".into(),
                port: 9092,
                epoch: 7,
                logs_intact: true,
                rack: None,
                directory_id: None,
            },
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: [9; 16],
                partitions: 2,
            },
            MetadataRecord::PartitionChange {
                topic_id: [9; 16],
                partition: 1,
                leader: 3,
                leader_epoch: 1,
                isr: vec![3, 1],
                replicas: vec![1, 3],
                elr: vec![],
                adding: vec![],
                removing: vec![],
            },
            MetadataRecord::PartitionChange {
                topic_id: [9; 16],
                partition: 0,
                leader: 1,
                leader_epoch: 2,
                isr: vec![1],
                replicas: vec![1, 3],
                elr: vec![3],
                adding: vec![],
                removing: vec![],
            },
            MetadataRecord::PartitionChange {
                topic_id: [9; 16],
                partition: 0,
                leader: 4,
                leader_epoch: 3,
                isr: vec![4, 1],
                replicas: vec![4, 1, 2],
                elr: vec![],
                adding: vec![4],
                removing: vec![2],
            },
            MetadataRecord::LeaderChange {
                epoch: 4,
                leader: 2,
            },
            MetadataRecord::NoOp,
            MetadataRecord::TopicConfig {
                topic_id: [9; 16],
                configs: vec![("min.insync.replicas".into(), "2".into())],
            },
            MetadataRecord::BrokerFence {
                node_id: 3,
                fenced: true,
            },
            MetadataRecord::CreatePartitions {
                topic_id: [9; 16],
                count: 3,
            },
            MetadataRecord::ClusterConfig {
                configs: vec![("min.insync.replicas".into(), "3".into())],
            },
            MetadataRecord::BrokerConfig {
                node_id: 2,
                configs: vec![("follower.replication.throttled.rate".into(), "1000".into())],
            },
            MetadataRecord::ProducerIds {
                node_id: 2,
                next_producer_id: 2_000,
            },
            MetadataRecord::Batch(vec![
                MetadataRecord::NoOp,
                MetadataRecord::BrokerFence {
                    node_id: 3,
                    fenced: false,
                },
            ]),
            MetadataRecord::RegisterBroker {
                node_id: 4,
                host: "h4".into(),
                port: 9092,
                epoch: 8,
                logs_intact: false,
                rack: Some("us-east-1a".into()),
                directory_id: None,
            },
            MetadataRecord::RegisterBroker {
                node_id: 5,
                host: "h5".into(),
                port: 9092,
                epoch: 9,
                logs_intact: true,
                rack: Some("us-east-1b".into()),
                directory_id: Some([0x5d; 16]),
            },
            MetadataRecord::RegisterBroker {
                node_id: 6,
                host: "h6".into(),
                port: 9092,
                epoch: 10,
                logs_intact: false,
                rack: None,
                directory_id: Some([0x6d; 16]),
            },
        ]
    }

    #[test]
    fn raft_metadata_replaced_directory_leaves_every_isr_and_elr() {
        let reg = |node_id, epoch, dir: Option<u8>| MetadataRecord::RegisterBroker {
            node_id,
            host: format!("h{node_id}"),
            port: 9092,
            epoch,
            logs_intact: true,
            rack: None,
            directory_id: dir.map(|d| [d; 16]),
        };
        let part = |partition, leader, isr: Vec<NodeId>, elr: Vec<NodeId>| {
            MetadataRecord::PartitionChange {
                topic_id: [9; 16],
                partition,
                leader,
                leader_epoch: 4,
                isr,
                replicas: vec![1, 2, 3],
                elr,
                adding: vec![],
                removing: vec![],
            }
        };
        let mut img = MetadataImage::default();
        let setup = [
            reg(1, 1, Some(1)),
            reg(2, 1, Some(2)),
            reg(3, 1, None), // from before directory ids
            MetadataRecord::CreateTopic {
                name: "t".into(),
                id: [9; 16],
                partitions: 3,
            },
            part(0, 3, vec![3], vec![1]),
            part(1, 1, vec![1, 3], vec![]),
            part(2, 2, vec![2], vec![]),
        ];
        for (i, r) in setup.iter().enumerate() {
            img.apply(i as i64, &r.encode());
        }
        let before = img.topics[&[9; 16]].partitions.clone();
        // The first id a broker registers with is taken as its directory's: nothing lost.
        img.apply(7, &reg(3, 2, Some(3)).encode());
        let now = &img.topics[&[9; 16]].partitions;
        assert_eq!(now[0].isr, before[0].isr);
        assert_eq!(now[1].isr, before[1].isr);
        // A restart on the same directory keeps its places too.
        img.apply(8, &reg(3, 3, Some(3)).encode());
        assert_eq!(img.topics[&[9; 16]].partitions[1].isr, vec![1, 3]);
        // On a new directory: out of every ISR and ELR, offline where it led, and a new
        // leader epoch wherever it is a replica.
        img.apply(9, &reg(3, 4, Some(33)).encode());
        let now = &img.topics[&[9; 16]].partitions;
        assert_eq!(img.brokers[&3].directory_id, Some([33; 16]));
        // Epoch 4, bumped by each of its restarts as its leader (5, 6), then by this one.
        assert_eq!(
            (now[0].leader, now[0].leader_epoch),
            (-1, 7),
            "led it: offline"
        );
        assert!(now[0].isr.is_empty(), "its only in-sync copy is gone");
        assert_eq!(
            now[0].elr,
            vec![1],
            "the ELR still holds everything committed"
        );
        assert_eq!((now[1].leader, now[1].isr.clone()), (1, vec![1]));
        assert_eq!(
            now[1].leader_epoch, 5,
            "followed it: a new epoch all the same"
        );
        assert_eq!(now[2].isr, vec![2]);
        assert_eq!(now[2].leader_epoch, 5);
        // And in the snapshot.
        let back = MetadataImage::decode(&img.encode()).unwrap();
        assert_eq!(back.digest(), img.digest());
        assert_eq!(back.brokers[&3].directory_id, Some([33; 16]));
        // Another broker's move of directories touches only its own places.
        img.apply(10, &reg(1, 2, Some(11)).encode());
        let now = &img.topics[&[9; 16]].partitions;
        assert!(now[0].elr.is_empty() && now[1].isr.is_empty() && now[1].leader == -1);
        assert_eq!(now[2].isr, vec![2]);
    }

    #[test]
    fn raft_metadata_roundtrip_and_truncation() {
        let epoch = MetadataRecord::PartitionEpoch {
            topic_id: [9; 16],
            partition: 1,
            partition_epoch: 7,
        };
        for r in samples().into_iter().chain([epoch]) {
            let b = r.encode();
            assert_eq!(MetadataRecord::decode(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(MetadataRecord::decode(&b[..cut]).is_err());
            }
            let mut longer = b.to_vec();
            longer.push(0);
            assert!(MetadataRecord::decode(&longer).is_err());
        }
    }

    /// A snapshot from before partition epochs (header version 1) counts them from where it
    /// was taken, so the image says its epochs are inexact, leaders name none, and its own
    /// snapshots say the same.
    #[test]
    fn raft_metadata_an_old_snapshot_has_inexact_partition_epochs() {
        let mut img = MetadataImage::default();
        for (i, r) in samples().into_iter().enumerate() {
            img.apply(i as i64, &r.encode());
        }
        let p = img.topics[&[9; 16]].partitions[0].clone();
        assert_eq!(img.alter_partition_epoch(&p), 2);
        let mut old = img.encode().to_vec();
        assert_eq!(old[0], SNAPSHOT_VERSION);
        old[0] = SNAPSHOT_VERSION_NO_PARTITION_EPOCHS;
        let back = MetadataImage::decode(&old).unwrap();
        assert!(back.partition_epochs_inexact);
        assert_eq!(back.alter_partition_epoch(&p), -1);
        assert_eq!(back.encode()[0], SNAPSHOT_VERSION_NO_PARTITION_EPOCHS);
        assert!(
            MetadataImage::decode(&back.encode())
                .unwrap()
                .partition_epochs_inexact
        );
        old[0] = 3;
        assert!(MetadataImage::decode(&old).is_err());
    }

    #[test]
    fn raft_metadata_image_snapshot_roundtrip() {
        let mut img = MetadataImage::default();
        for (i, r) in samples().into_iter().enumerate() {
            img.apply(i as i64, &r.encode());
        }
        let n = samples().len() as i64;
        img.apply(n, b"garbage");
        assert_eq!(img.rejected, 1);
        assert!(!img.brokers[&3].fenced);
        assert_eq!(img.topics[&[9; 16]].configs["min.insync.replicas"], "2");
        assert_eq!(img.topics[&[9; 16]].partitions.len(), 3);
        assert_eq!(img.cluster_configs["min.insync.replicas"], "3");
        assert_eq!(
            img.broker_configs[&2]["follower.replication.throttled.rate"],
            "1000"
        );
        assert_eq!(img.next_producer_id, 2_000);
        // One partition epoch per change, and a snapshot keeps them (not one per record it
        // replays).
        let epochs = |img: &MetadataImage| -> Vec<i32> {
            let parts = img.topics[&[9; 16]].partitions.iter();
            parts.map(|p| p.partition_epoch).collect()
        };
        assert_eq!(epochs(&img), vec![2, 1, 0]);
        let back = MetadataImage::decode(&img.encode()).unwrap();
        assert_eq!(epochs(&back), vec![2, 1, 0]);
        assert_eq!(back, img);
        assert_eq!(back.digest(), img.digest());
    }

    #[test]
    fn raft_metadata_create_partitions_only_grows() {
        let mut img = MetadataImage::default();
        let grow = |count| MetadataRecord::CreatePartitions {
            topic_id: [9; 16],
            count,
        };
        img.apply(0, &grow(3).encode());
        assert_eq!(img.rejected, 1, "unknown topic");
        img.apply(1, &samples()[1].encode());
        for (i, (count, len)) in [(2, 2), (1, 2), (4, 4), (MAX_PARTITIONS + 1, 4)]
            .into_iter()
            .enumerate()
        {
            img.apply(2 + i as i64, &grow(count).encode());
            assert_eq!(img.topics[&[9; 16]].partitions.len(), len);
        }
        assert_eq!(img.rejected, 4, "not growing or too many: refused");
        assert!(img.topics[&[9; 16]].partitions[3].replicas.is_empty());
    }

    #[test]
    fn raft_metadata_producer_ids_only_go_up() {
        let mut img = MetadataImage::default();
        let next = |next_producer_id| MetadataRecord::ProducerIds {
            node_id: 1,
            next_producer_id,
        };
        for (i, (to, now)) in [(1_000, 1_000), (1_000, 1_000), (500, 1_000), (2_000, 2_000)]
            .into_iter()
            .enumerate()
        {
            img.apply(i as i64, &next(to).encode());
            assert_eq!(img.next_producer_id, now);
        }
        assert_eq!(img.rejected, 2, "standing still or going back: refused");
        let back = MetadataImage::decode(&img.encode()).unwrap();
        assert_eq!(
            back.next_producer_id, 2_000,
            "a snapshot keeps the next block"
        );
    }

    #[test]
    fn raft_metadata_restart_bumps_led_epochs_and_delete_forgets() {
        let mut img = MetadataImage::default();
        let recs = samples();
        for (i, r) in recs.iter().take(3).enumerate() {
            img.apply(i as i64, &r.encode());
        }
        assert_eq!(img.topics[&[9; 16]].partitions[1].leader_epoch, 1);
        // Same incarnation again: a no-op.
        img.apply(3, &recs[0].encode());
        assert_eq!(img.rejected, 1);
        let restart = MetadataRecord::RegisterBroker {
            node_id: 3,
            host: "h".into(),
            port: 9092,
            epoch: 8,
            logs_intact: true,
            rack: None,
            directory_id: None,
        };
        img.apply(4, &restart.encode());
        assert_eq!(img.topics[&[9; 16]].partitions[1].leader_epoch, 2);
        assert_eq!(img.topics[&[9; 16]].partitions[0].leader_epoch, 0);
        // An eligible leader replica stays one across a restart only if its logs are intact.
        img.apply(5, &recs[3].encode());
        assert_eq!(img.topics[&[9; 16]].partitions[0].elr, vec![3]);
        let again = |epoch, logs_intact| MetadataRecord::RegisterBroker {
            node_id: 3,
            host: "h".into(),
            port: 9092,
            epoch,
            logs_intact,
            rack: None,
            directory_id: None,
        };
        img.apply(6, &again(9, true).encode());
        assert_eq!(img.topics[&[9; 16]].partitions[0].elr, vec![3]);
        img.apply(7, &again(10, false).encode());
        assert!(img.topics[&[9; 16]].partitions[0].elr.is_empty());
        assert_eq!(
            img.topics[&[9; 16]].partitions[0].leader_epoch, 2,
            "led by 1"
        );
        img.apply(
            8,
            &MetadataRecord::DeleteTopic { topic_id: [9; 16] }.encode(),
        );
        assert!(img.topics.is_empty() && img.topic_ids.is_empty());
        let nested = MetadataRecord::Batch(vec![MetadataRecord::NoOp]).encode();
        let mut bad = vec![VERSION, 9];
        put_len(&mut bad, 1);
        put_len(&mut bad, nested.len());
        bad.extend_from_slice(&nested);
        assert!(
            MetadataRecord::decode(&bad).is_err(),
            "nested batch refused"
        );
    }
}
