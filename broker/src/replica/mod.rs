//! ReplicaManager: the topics and partitions this broker hosts, their logs, and the operations the
//! request handlers run on them (create, delete, grow, reconfigure, retention, clean close).
//!
//! Single-node today: this broker leads every partition. Topic metadata persists in the
//! [`registry`]; partition logs live in `<data-dir>/<topic>-<partition>/`.

pub mod core;
pub mod partition;
pub mod quota;
pub mod registry;
pub mod selector;
pub mod topic_config;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::cluster::controller::effective_min_isr;
use crate::config::{BrokerConfig, FsyncPolicy, PARTITIONS_PER_TOPIC_MAX};
use crate::log::{Log, LogConfig};
use crate::raft::NodeId;
use crate::storage::Storage;
use crate::sync::Watch;

pub use self::core::{AckPolicy, PartitionCore};
pub use partition::{DurableError, FollowerPosition, Partition, ProduceError, ReplicaRead};
use quota::ReplicationQuota;
use registry::{Registry, RegistryState, TopicRecord};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most topics one broker hosts; CreateTopics past it fails with a clear error.
pub const TOPICS_MAX: usize = 100_000;
/// How often replicated partitions record their high watermark (Kafka: 5 s).
pub const HIGH_WATERMARK_CHECKPOINT_MS: u64 = 1_000;
/// A single broker reserves producer ids durably in blocks of this many, so InitProducerId
/// rarely writes. (A cluster node's ids come from the controller: `cluster::producer_ids`.)
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic and its partitions.
pub struct Topic<S: Storage> {
    pub name: String,
    pub id: Uuid,
    configs: RwLock<BTreeMap<String, String>>,
    partitions: RwLock<Vec<Arc<Partition<S>>>>,
}

impl<S: Storage> Topic<S> {
    pub fn partitions(&self) -> Vec<Arc<Partition<S>>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition<S>>> {
        let partitions = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    pub fn partition_count(&self) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn configs(&self) -> BTreeMap<String, String> {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the topic's throttled-replicas list `key` ([`quota::LEADER_REPLICAS`] or
    /// [`quota::FOLLOWER_REPLICAS`]) names `partition` on `broker`.
    pub fn throttled(&self, key: &str, partition: i32, broker: NodeId) -> bool {
        let configs = self.configs.read().unwrap_or_else(|p| p.into_inner());
        configs
            .get(key)
            .is_some_and(|list| quota::lists(list, partition, broker))
    }
}

/// Which of a broker's two replication throttles: serving followers, or fetching as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleSide {
    Leader,
    Follower,
}

/// Why a topic operation failed; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    AlreadyExists,
    UnknownTopic,
    InvalidName(String),
    InvalidPartitions(String),
    InvalidConfig(String),
    Storage(String),
}

impl TopicError {
    pub fn message(&self) -> String {
        match self {
            TopicError::AlreadyExists => "topic already exists".into(),
            TopicError::UnknownTopic => "unknown topic".into(),
            TopicError::InvalidName(m)
            | TopicError::InvalidPartitions(m)
            | TopicError::InvalidConfig(m)
            | TopicError::Storage(m) => m.clone(),
        }
    }
}

/// Checks a topic name the way Kafka does: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicError::InvalidName(format!(
            "topic name must be 1..={TOPIC_NAME_BYTES_MAX} characters"
        )));
    }
    if name == "__consumer_offsets" {
        return Err(TopicError::InvalidName(
            "__consumer_offsets is the broker's internal group log".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(TopicError::InvalidName(
            "topic name cannot be '.' or '..'".into(),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(TopicError::InvalidName(format!(
            "topic name {name:?} has characters other than ASCII letters, digits, '.', '_', '-'"
        )));
    }
    Ok(())
}

pub struct ReplicaManager<S: Storage + Clone> {
    storage: S,
    config: BrokerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic<S>>>>,
    /// Serializes topic creation, deletion and reconfiguration, and owns the registry file.
    registry: Mutex<Registry<S>>,
    data_version: Arc<Watch<u64>>,
    log_end_version: Arc<Watch<u64>>,
    /// Source of topic ids: a SplitMix64 stream seeded by the caller (the shell seeds it from
    /// the OS, the simulator from its seed), so this module reads no randomness itself.
    id_state: Mutex<u64>,
    /// (next producer id to hand out, end of the durably reserved block).
    producer_ids: Mutex<(i64, i64)>,
    /// The cluster-level dynamic configs of the metadata image (a clustered broker's only);
    /// they take the place of this broker's flags for topics without an override.
    cluster_configs: RwLock<BTreeMap<String, String>>,
    /// This broker's replication throttles: (serving as leader, fetching as follower).
    quotas: Mutex<(ReplicationQuota, ReplicationQuota)>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<S: Storage + Clone> ReplicaManager<S> {
    /// Opens every topic in the registry and recovers its logs. Partition directories that the
    /// registry does not name (a deletion or creation cut short by a crash) are removed.
    pub fn open(
        storage: S,
        config: BrokerConfig,
        id_seed: u64,
        now_ms: i64,
    ) -> anyhow::Result<Self> {
        storage.create_dir_all(&config.data_dir)?;
        let (registry, state) = Registry::open(storage.clone(), &config.data_dir.join("meta"))?;
        let records = state.topics;
        let block_end = state.producer_id_block_end.max(0);
        let data_version = Arc::new(Watch::new(0u64));
        let manager = ReplicaManager {
            storage,
            config,
            topics: RwLock::new(BTreeMap::new()),
            registry: Mutex::new(registry),
            data_version,
            log_end_version: Arc::new(Watch::new(0u64)),
            id_state: Mutex::new(id_seed),
            producer_ids: Mutex::new((block_end, block_end)),
            cluster_configs: RwLock::new(BTreeMap::new()),
            quotas: Mutex::new(Default::default()),
        };
        let mut topics = BTreeMap::new();
        for (name, record) in &records {
            let id = Uuid::parse_str(&record.id).unwrap_or_else(|_| manager.next_topic_id());
            let log_config = topic_config::log_config(&manager.config.log, &record.configs);
            let mut partitions = Vec::with_capacity(record.partitions as usize);
            for index in 0..record.partitions as i32 {
                partitions.push(manager.open_partition(name, index, &log_config, now_ms)?);
            }
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name: name.clone(),
                    id,
                    configs: RwLock::new(record.configs.clone()),
                    partitions: RwLock::new(partitions),
                }),
            );
        }
        manager.remove_orphans(&topics)?;
        *manager.topics.write().unwrap_or_else(|p| p.into_inner()) = topics;
        Ok(manager)
    }

    fn remove_orphans(&self, topics: &BTreeMap<String, Arc<Topic<S>>>) -> anyhow::Result<()> {
        for entry in self.storage.list(&self.config.data_dir)? {
            if entry == crate::server::group_manager::OFFSETS_LOG_DIR {
                continue;
            }
            let Some((topic, index)) = entry.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            let known = topics
                .get(topic)
                .is_some_and(|t| index < t.partition_count());
            if !known {
                tracing::warn!(dir = %entry, "removing partition directory of no registered topic");
                self.storage
                    .remove_dir_all(&self.config.data_dir.join(&entry))?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The volume holding the data directory, if the storage has one.
    pub fn volume_space(&self) -> Option<crate::storage::VolumeSpace> {
        self.storage.volume_space(&self.config.data_dir)
    }

    /// Acknowledgements wait for fsync only under `--fsync always`.
    pub fn ack_policy(&self) -> AckPolicy {
        match self.config.fsync {
            FsyncPolicy::Always => AckPolicy::AfterFsync,
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => AckPolicy::AfterWrite,
        }
    }

    /// A counter bumped whenever any partition's high watermark advances.
    pub fn data_version(&self) -> u64 {
        self.data_version.get()
    }

    /// Waits until any partition's high watermark has advanced past `seen`, a value of
    /// [`data_version`](Self::data_version).
    pub async fn data_changed_since(&self, seen: u64) {
        self.data_version.wait_for(|v| *v != seen).await;
    }

    /// The topic's `min.insync.replicas`, else the cluster-level value, else this broker's.
    pub fn min_insync_replicas(&self, topic: &Topic<S>) -> usize {
        let cluster = self.cluster_configs.read().expect("cluster configs lock");
        let fallback = self.config.cluster.min_insync_replicas.max(1) as usize;
        effective_min_isr(&topic.configs(), &cluster, fallback)
    }

    /// Takes the cluster-level configs of a newly applied metadata image.
    pub fn set_cluster_configs(&self, configs: &BTreeMap<String, String>) {
        let mut current = self.cluster_configs.write().expect("cluster configs lock");
        if *current != *configs {
            tracing::info!(?configs, "cluster-level configs");
            current.clone_from(configs);
        }
    }

    /// Takes this broker's replication throttle rates from a newly applied metadata image: its
    /// own configs (`mine`), else the cluster-level ones (apply those first), else none.
    pub fn set_throttle_rates(&self, mine: Option<&BTreeMap<String, String>>, now_ms: i64) {
        let cluster = self.cluster_configs.read().expect("cluster configs lock");
        let rate = |key: &str| {
            let value = mine.and_then(|m| m.get(key)).or_else(|| cluster.get(key));
            quota::parse_rate(value)
        };
        let (leader, follower) = (rate(quota::LEADER_RATE), rate(quota::FOLLOWER_RATE));
        let mut quotas = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        if (quotas.0.rate(), quotas.1.rate()) != (leader, follower) {
            tracing::info!(?leader, ?follower, "replication throttle rates (bytes/s)");
        }
        quotas.0.set_rate(leader, now_ms);
        quotas.1.set_rate(follower, now_ms);
    }

    /// Runs `f` on one of this broker's replication throttles.
    pub fn with_quota<R>(
        &self,
        side: ThrottleSide,
        f: impl FnOnce(&mut ReplicationQuota) -> R,
    ) -> R {
        let mut quotas = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        match side {
            ThrottleSide::Leader => f(&mut quotas.0),
            ThrottleSide::Follower => f(&mut quotas.1),
        }
    }

    /// The cluster-level dynamic configs this broker has applied.
    pub fn cluster_configs(&self) -> BTreeMap<String, String> {
        self.cluster_configs
            .read()
            .expect("cluster configs lock")
            .clone()
    }

    /// The value of topic config `name` for a topic without an override, and whether it is
    /// the cluster-level one (else it is this broker's).
    pub fn topic_default(&self, name: &str) -> (String, bool) {
        let cluster = self.cluster_configs.read().expect("cluster configs lock");
        match cluster.get(name) {
            Some(v) => (v.clone(), true),
            None => (topic_config::default_value(&self.config, name), false),
        }
    }

    /// A counter bumped whenever any leader appends (followers' long polls watch it).
    pub fn log_end_version(&self) -> u64 {
        self.log_end_version.get()
    }

    /// Waits until some leader appended since `seen`, a value of
    /// [`log_end_version`](Self::log_end_version).
    pub async fn log_end_changed_since(&self, seen: u64) {
        self.log_end_version.wait_for(|v| *v != seen).await;
    }

    fn next_topic_id(&self) -> Uuid {
        let mut state = self.id_state.lock().unwrap_or_else(|p| p.into_inner());
        let hi = splitmix64(&mut state) as u128;
        let lo = splitmix64(&mut state) as u128;
        uuid::Builder::from_random_bytes(((hi << 64) | lo).to_be_bytes()).into_uuid()
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    fn open_partition(
        &self,
        topic: &str,
        index: i32,
        log_config: &LogConfig,
        now_ms: i64,
    ) -> anyhow::Result<Arc<Partition<S>>> {
        let dir = self.partition_dir(topic, index);
        let (log, report) = Log::open(self.storage.clone(), dir, log_config.clone(), now_ms)?;
        tracing::info!(topic, partition = index, report = ?report, "opened partition log");
        Ok(Partition::new(
            topic.to_string(),
            index,
            log,
            self.ack_policy(),
            Arc::clone(&self.data_version),
            Arc::clone(&self.log_end_version),
            self.config.cluster.is_clustered(),
        ))
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic<S>>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic<S>>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic<S>>> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition<S>>> {
        self.topic(topic).and_then(|t| t.partition(index))
    }

    /// What the registry must hold now, with `topics` as given.
    fn state(&self, topics: BTreeMap<String, TopicRecord>) -> RegistryState {
        let block_end = self
            .producer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1;
        RegistryState {
            producer_id_block_end: block_end,
            topics,
        }
    }

    fn records(&self) -> BTreeMap<String, TopicRecord> {
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    TopicRecord {
                        id: t.id.to_string(),
                        partitions: t.partition_count() as u32,
                        configs: t.configs(),
                    },
                )
            })
            .collect()
    }

    /// Checks a CreateTopics request without changing anything. `partitions` of -1 means the
    /// broker default.
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<u32, TopicError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.config.default_partitions as i32
        } else {
            partitions
        };
        if partitions < 1 || partitions as u32 > PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "number of partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}, got {partitions}"
            )));
        }
        for (k, v) in configs {
            topic_config::validate(k, v).map_err(TopicError::InvalidConfig)?;
        }
        if self.topic(name).is_some() {
            return Err(TopicError::AlreadyExists);
        }
        if self.topics.read().unwrap_or_else(|p| p.into_inner()).len() >= TOPICS_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "broker already hosts {TOPICS_MAX} topics"
            )));
        }
        Ok(partitions as u32)
    }

    /// Creates a topic durably: logs first, then the registry entry that makes it exist.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic<S>>, TopicError> {
        self.create_topic_as(name, None, partitions, configs, now_ms)
    }

    /// [`create_topic`](Self::create_topic) with the id the cluster metadata chose.
    pub fn create_topic_as(
        &self,
        name: &str,
        id: Option<Uuid>,
        partitions: i32,
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic<S>>, TopicError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // The cluster's offsets topic comes from the controller; clients may not create it.
        let internal = id.is_some() && name == crate::server::group_manager::OFFSETS_TOPIC;
        let count = if internal {
            if self.topic(name).is_some() {
                return Err(TopicError::AlreadyExists);
            }
            partitions.max(1) as u32
        } else {
            self.validate_create(name, partitions, &configs)?
        };
        let log_config = topic_config::log_config(&self.config.log, &configs);
        let mut opened = Vec::with_capacity(count as usize);
        for index in 0..count as i32 {
            match self.open_partition(name, index, &log_config, now_ms) {
                Ok(p) => opened.push(p),
                Err(e) => {
                    for p in &opened {
                        p.close();
                    }
                    return Err(TopicError::Storage(format!(
                        "creating partition {index}: {e:#}"
                    )));
                }
            }
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id: id.unwrap_or_else(|| self.next_topic_id()),
            configs: RwLock::new(configs),
            partitions: RwLock::new(opened),
        });
        let mut records = self.records();
        records.insert(
            name.to_string(),
            TopicRecord {
                id: topic.id.to_string(),
                partitions: count,
                configs: topic.configs(),
            },
        );
        registry
            .write(&self.state(records))
            .map_err(|e| TopicError::Storage(format!("topic registry: {e}")))?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions = count, "created topic");
        Ok(topic)
    }

    /// Returns the topic, creating it with broker defaults when auto-creation is on.
    pub fn get_or_auto_create(&self, name: &str, now_ms: i64) -> Result<Arc<Topic<S>>, TopicError> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(TopicError::UnknownTopic);
        }
        match self.create_topic(name, -1, BTreeMap::new(), now_ms) {
            Ok(t) => Ok(t),
            Err(TopicError::AlreadyExists) => self.topic(name).ok_or(TopicError::UnknownTopic),
            Err(e) => Err(e),
        }
    }

    /// Deletes a topic: the registry forgets it first, then its logs are removed.
    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.topic(name).ok_or(TopicError::UnknownTopic)?;
        let mut records = self.records();
        records.remove(name);
        registry
            .write(&self.state(records))
            .map_err(|e| TopicError::Storage(format!("topic registry: {e}")))?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        for p in topic.partitions() {
            p.close();
            // Waits out a checkpoint write in progress; later ones see the partition closed.
            drop(p.core());
            let dir = self.partition_dir(name, p.index);
            if let Err(e) = self.storage.remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing deleted partition");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks them).
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
        now_ms: i64,
    ) -> Result<(), TopicError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.topic(name).ok_or(TopicError::UnknownTopic)?;
        let current = topic.partition_count() as i32;
        if count <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count {count} must be larger"
            )));
        }
        if count as u32 > PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError::InvalidPartitions(format!(
                "at most {PARTITIONS_PER_TOPIC_MAX} partitions"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic_config::log_config(&self.config.log, &topic.configs());
        let mut added = Vec::new();
        for index in current..count {
            let p = self
                .open_partition(name, index, &log_config, now_ms)
                .map_err(|e| TopicError::Storage(format!("creating partition {index}: {e:#}")))?;
            added.push(p);
        }
        topic
            .partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(added);
        registry
            .write(&self.state(self.records()))
            .map_err(|e| TopicError::Storage(format!("topic registry: {e}")))?;
        tracing::info!(topic = name, partitions = count, "grew topic");
        Ok(())
    }

    /// Replaces a topic's config overrides (already validated) and applies them to its logs.
    pub fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.topic(name).ok_or(TopicError::UnknownTopic)?;
        let previous = std::mem::replace(
            &mut *topic.configs.write().unwrap_or_else(|p| p.into_inner()),
            configs,
        );
        if let Err(e) = registry.write(&self.state(self.records())) {
            *topic.configs.write().unwrap_or_else(|p| p.into_inner()) = previous;
            return Err(TopicError::Storage(format!("topic registry: {e}")));
        }
        let log_config = topic_config::log_config(&self.config.log, &topic.configs());
        for p in topic.partitions() {
            p.core().log_mut().set_config(log_config.clone());
        }
        Ok(())
    }

    /// A single broker's producer id, never handed out before, across restarts: ids are
    /// reserved in durable blocks of [`PRODUCER_ID_BLOCK`]. A cluster node's come from the
    /// controller instead (`cluster::producer_ids`): its disk may be replaced.
    pub fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        assert!(
            !self.config.cluster.is_clustered(),
            "a cluster node takes its producer ids from the controller"
        );
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let (next, end) = *self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        debug_assert!(next <= end);
        if next == end {
            let new_end = end + PRODUCER_ID_BLOCK;
            let state = RegistryState {
                producer_id_block_end: new_end,
                topics: self.records(),
            };
            registry
                .write(&state)
                .map_err(|e| TopicError::Storage(format!("registry: {e}")))?;
            self.producer_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1 = new_end;
        }
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        let id = ids.0;
        ids.0 += 1;
        assert!(
            ids.0 <= ids.1,
            "a producer id is handed out only inside a durable block"
        );
        Ok(id)
    }

    /// Deletes segments past retention in every partition. Returns the segments removed.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let mut removed = 0;
        for topic in self.topics() {
            for p in topic.partitions() {
                if p.is_failed() || p.is_closed() {
                    continue;
                }
                match p.core().log_mut().apply_retention(now_ms) {
                    Ok(report) => removed += report.segments_deleted,
                    Err(e) => {
                        tracing::error!(topic = %topic.name, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
        removed
    }

    /// Flushes every partition (the `interval` fsync policy's tick, and shutdown).
    pub fn flush_all(&self) {
        for topic in self.topics() {
            for p in topic.partitions() {
                if p.is_failed() || p.is_closed() {
                    continue;
                }
                if let Err(e) = p.flush_once() {
                    tracing::error!(topic = %topic.name, partition = p.index, error = %e, "fsync failed");
                    p.fail();
                }
            }
        }
    }

    /// Records every replicated partition's high watermark in its log directory (see
    /// `log::HIGH_WATERMARK_FILE`); run periodically, and at close.
    pub fn checkpoint_high_watermarks(&self) {
        for topic in self.topics() {
            for p in topic.partitions() {
                if let Err(e) = p.checkpoint_high_watermark() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e,
                        "writing the high-watermark checkpoint");
                }
            }
        }
    }

    /// Clean shutdown: fsync every log and mark it clean so the next start skips validation.
    pub fn close(&self) {
        for topic in self.topics() {
            for p in topic.partitions() {
                if let Err(e) = p.checkpoint_high_watermark() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e,
                        "writing the high-watermark checkpoint");
                }
                p.close();
                if p.is_failed() {
                    continue;
                }
                if let Err(e) = p.core().log_mut().close() {
                    tracing::error!(topic = %topic.name, partition = p.index, error = %e, "closing log");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    /// A single broker goes on after its durably reserved block when it restarts, so no id
    /// comes back, even for ids of a block it had not finished.
    #[test]
    fn a_restarted_broker_does_not_hand_out_the_same_producer_ids_again() {
        let storage = MemStorage::new();
        let config = BrokerConfig {
            data_dir: PathBuf::from("/data"),
            ..BrokerConfig::default()
        };
        let replicas = ReplicaManager::open(storage.clone(), config.clone(), 11, 0).unwrap();
        let first: Vec<i64> = (0..3)
            .map(|_| replicas.allocate_producer_id().unwrap())
            .collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(replicas);
        let restarted = ReplicaManager::open(storage, config, 12, 0).unwrap();
        let next = restarted.allocate_producer_id().unwrap();
        assert_eq!(next, PRODUCER_ID_BLOCK, "the unfinished block is skipped");
    }
}
