//! Broker configuration: command-line flags, `BROKER_*` environment variables and an optional TOML
//! file, merged with embedded defaults. Precedence: flag > environment > file > default.
//!
//! Every limit the server enforces lives here, with its unit last in the name.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

use crate::group::GroupConfig;
use crate::log::LogConfig;
use crate::replica::selector::ReplicaSelector;

/// When appended data is fsynced, and so when acks=1/all are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every acknowledged batch is fsynced before its ack (group commit). The default.
    Always,
    /// A background flush every `ms`; acks do not wait for it.
    Interval { ms: u64 },
    /// Never fsync explicitly; the OS writes back when it likes.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(FsyncPolicy::Interval { ms }),
                    _ => Err(format!(
                        "bad fsync interval {ms:?}: want a positive number of ms"
                    )),
                },
                None => Err(format!(
                    "bad fsync policy {s:?}: want always, never or interval:MS"
                )),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Never => write!(f, "never"),
            FsyncPolicy::Interval { ms } => write!(f, "interval:{ms}"),
        }
    }
}

/// Flags of the `broker` binary. Each is also read from `BROKER_<NAME>` and from the TOML file
/// (`--config`), using the long flag name with `-` replaced by `_` as the key.
#[derive(Debug, Parser, Default)]
#[command(
    name = "broker",
    version,
    about = "A Kafka-compatible broker on a durable, sans-IO log"
)]
pub struct Flags {
    /// Address to listen on for Kafka clients [default: 127.0.0.1:9092]. Port 0 picks a free port.
    #[arg(long, env = "BROKER_LISTEN")]
    pub listen: Option<String>,
    /// HOST:PORT that clients are told to connect to (Metadata) [default: the bound listen address].
    #[arg(long, env = "BROKER_ADVERTISE")]
    pub advertise: Option<String>,
    /// HOST:PORT serving Prometheus metrics (OpenMetrics text) at `/metrics` [default: off].
    #[arg(long, env = "BROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Directory holding the partition logs and the topic registry [default: ./data].
    #[arg(long, env = "BROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional TOML file with any of these settings; flags and environment win over it.
    #[arg(long, env = "BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// When to fsync: `always` (acks=1/all wait for fsync, group commit), `interval:MS` (flush every
    /// MS milliseconds, acks do not wait), or `never` (leave it to the OS) [default: always].
    #[arg(long, env = "BROKER_FSYNC")]
    pub fsync: Option<FsyncPolicy>,
    /// This broker's node id [default: 1].
    #[arg(long, env = "BROKER_NODE_ID")]
    pub node_id: Option<i32>,
    /// Partitions of an auto-created topic, and of CreateTopics with num_partitions=-1 [default: 1].
    #[arg(long, env = "BROKER_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Create a topic when a client asks for metadata or produces to one that does not exist
    /// [default: true].
    #[arg(long, env = "BROKER_AUTO_CREATE_TOPICS")]
    pub auto_create_topics: Option<bool>,
    /// Default `retention.ms` of topics: delete segments older than this; -1 keeps forever
    /// [default: 604800000, 7 days].
    #[arg(long, env = "BROKER_RETENTION_MS", allow_hyphen_values = true)]
    pub retention_ms: Option<i64>,
    /// Default `retention.bytes` of each partition; -1 means no size limit [default: -1].
    #[arg(long, env = "BROKER_RETENTION_BYTES", allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// Default `segment.bytes`: roll to a new segment file past this size [default: 1073741824].
    #[arg(long, env = "BROKER_LOG_SEGMENT_BYTES")]
    pub log_segment_bytes: Option<u64>,
    /// Default `segment.ms`: roll a segment older than this [default: 604800000].
    #[arg(long, env = "BROKER_LOG_SEGMENT_MS")]
    pub log_segment_ms: Option<i64>,
    /// Default `max.message.bytes`: largest record batch accepted [default: 1048588].
    #[arg(long, env = "BROKER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<u32>,
    /// How often retention runs, in ms [default: 300000].
    #[arg(long, env = "BROKER_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Largest request frame accepted; larger frames close the connection [default: 104857600].
    #[arg(long, env = "BROKER_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Request bytes a connection may have in flight before the broker stops reading from it
    /// [default: 67108864].
    #[arg(long, env = "BROKER_MAX_INFLIGHT_BYTES")]
    pub max_inflight_bytes: Option<u32>,
    /// Requests a connection may have in flight before the broker stops reading from it
    /// [default: 1024].
    #[arg(long, env = "BROKER_MAX_INFLIGHT_REQUESTS")]
    pub max_inflight_requests: Option<u32>,
    /// Close a connection that sends nothing for this long, in ms [default: 600000].
    #[arg(long, env = "BROKER_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Most connections served at once; further ones are refused [default: 10000].
    #[arg(long, env = "BROKER_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Cluster id reported to clients [default: a fixed local id].
    #[arg(long, env = "BROKER_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Shortest consumer session timeout a group member may ask for, in ms [default: 6000].
    #[arg(long, env = "BROKER_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Longest consumer session timeout a group member may ask for, in ms [default: 1800000].
    #[arg(long, env = "BROKER_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// How long the first rebalance of an empty group waits for more members, in ms
    /// [default: 3000].
    #[arg(long, env = "BROKER_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<i64>,
    /// The controller quorum, `ID@HOST:PORT,...` (Kafka's controller.quorum.voters). Each voter
    /// is also a broker (combined mode); PORT is its controller listener. Unset: a single
    /// broker with no quorum.
    #[arg(long, env = "BROKER_VOTERS")]
    pub voters: Option<String>,
    /// Address the controller listener binds [default: this node's entry in --voters].
    #[arg(long, env = "BROKER_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// Replicas of an auto-created topic, and of CreateTopics with replication_factor=-1
    /// [default: min(3, number of voters)].
    #[arg(long, env = "BROKER_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<i16>,
    /// Default `min.insync.replicas` of topics: acks=all needs at least this many in-sync
    /// replicas, else NOT_ENOUGH_REPLICAS. In a cluster, the first active controller writes
    /// its value to the metadata log as the cluster-level config, which every node then uses
    /// [default: 1].
    #[arg(long, env = "BROKER_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
    /// A follower that has not caught up with the leader's log end for this long leaves the ISR
    /// (Kafka's replica.lag.time.max.ms) [default: 10000].
    #[arg(long, env = "BROKER_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// A broker the active controller has not heard from for this long is fenced: it leaves
    /// every ISR and loses its leaderships (Kafka's broker.session.timeout.ms) [default: 1000].
    /// A broker whose controller connection closes (its process died) is fenced 300 ms later
    /// unless it reconnects.
    #[arg(long, env = "BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Quorum election timeout base, in ms; each election adds up to as much jitter again
    /// [default: 300].
    #[arg(long, env = "BROKER_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Move leadership back to each partition's preferred (first) replica every
    /// leader-imbalance-check-interval-ms, once it is in the ISR (Kafka's
    /// auto.leader.rebalance.enable). Off, it moves back only when an operator asks
    /// (`kafka-leader-election.sh --election-type preferred`, AdminClient.electLeaders)
    /// [default: true].
    #[arg(long, env = "BROKER_AUTO_LEADER_REBALANCE_ENABLE")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// Period of automatic preferred-leader elections, in ms [default: 10000].
    #[arg(long, env = "BROKER_LEADER_IMBALANCE_CHECK_INTERVAL_MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// Let a partition whose ISR and eligible leader replicas are all gone elect any live
    /// replica: it comes back sooner, and loses the acknowledged records that replica lacks
    /// (Kafka's unclean.leader.election.enable). An operator can ask for one such election
    /// without this (ElectLeaders, election type unclean) [default: false].
    #[arg(long, env = "BROKER_UNCLEAN_LEADER_ELECTION_ENABLE")]
    pub unclean_leader_election_enable: Option<bool>,
    /// This broker's rack or availability zone (Kafka's broker.rack): new topics and
    /// partitions spread their replicas across racks, and Metadata names each broker's rack
    /// [default: none].
    #[arg(long, env = "BROKER_RACK")]
    pub rack: Option<String>,
    /// Which replica serves consumers (Kafka's replica.selector.class): `leader`, or `rack`
    /// to let a consumer that names its rack (client.rack) read from an in-sync replica in
    /// that rack (KIP-392, fetch from follower). Kafka's class names are accepted too
    /// [default: leader].
    #[arg(long, env = "BROKER_REPLICA_SELECTOR")]
    pub replica_selector: Option<ReplicaSelector>,
    /// What this cluster node runs (Kafka's process.roles): `broker,controller`, a voter of the
    /// controller quorum that is also a broker (combined mode); or `broker`, a broker-only node
    /// whose --node-id is not among --voters: it follows the quorum as an observer, never
    /// votes, and hosts partitions and serves clients like any broker. A cluster grows by
    /// starting broker-only nodes [default: broker,controller].
    #[arg(long, env = "BROKER_PROCESS_ROLES")]
    pub process_roles: Option<ProcessRoles>,
    /// A tool instead of a broker (`broker dev-cluster ...`); none runs the broker.
    #[command(subcommand)]
    pub command: Option<crate::dev_cluster::Command>,
}

/// The same settings as [`Flags`], as read from the TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertise: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    node_id: Option<i32>,
    default_partitions: Option<u32>,
    auto_create_topics: Option<bool>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    log_segment_bytes: Option<u64>,
    log_segment_ms: Option<i64>,
    max_message_bytes: Option<u32>,
    retention_check_interval_ms: Option<u64>,
    max_frame_bytes: Option<u32>,
    max_inflight_bytes: Option<u32>,
    max_inflight_requests: Option<u32>,
    idle_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    cluster_id: Option<String>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_initial_rebalance_delay_ms: Option<i64>,
    voters: Option<String>,
    controller_listen: Option<String>,
    default_replication_factor: Option<i16>,
    min_insync_replicas: Option<i32>,
    replica_lag_time_max_ms: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    auto_leader_rebalance_enable: Option<bool>,
    leader_imbalance_check_interval_ms: Option<u64>,
    unclean_leader_election_enable: Option<bool>,
    rack: Option<String>,
    replica_selector: Option<String>,
    process_roles: Option<String>,
}

/// One controller quorum voter: `ID@HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl Voter {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Most voters a quorum may have.
pub const VOTERS_MAX: usize = 9;

/// Parses `1@HOST:PORT,2@HOST:PORT,...`.
pub fn parse_voters(s: &str) -> anyhow::Result<Vec<Voter>> {
    let mut voters: Vec<Voter> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| anyhow::anyhow!("voter {part:?} is not ID@HOST:PORT"))?;
        let id: i32 = id
            .parse()
            .map_err(|_| anyhow::anyhow!("voter {part:?}: bad id {id:?}"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("voter {part:?} is not ID@HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("voter {part:?}: bad port {port:?}"))?;
        if id < 0 {
            bail!("voter {part:?}: ids are non-negative");
        }
        if voters.iter().any(|v| v.id == id) {
            bail!("voter id {id} appears twice in --voters");
        }
        voters.push(Voter {
            id,
            host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
            port,
        });
    }
    if voters.is_empty() {
        bail!("--voters lists no voter");
    }
    if voters.len() > VOTERS_MAX {
        bail!(
            "--voters lists {} voters; at most {VOTERS_MAX}",
            voters.len()
        );
    }
    voters.sort_by_key(|v| v.id);
    Ok(voters)
}

/// A cluster node's roles (Kafka's process.roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRoles {
    /// A quorum voter that is also a broker (combined mode).
    Combined,
    /// A broker only: an observer of the quorum.
    Broker,
}

impl std::str::FromStr for ProcessRoles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut roles: Vec<&str> = s.split(',').map(str::trim).collect();
        roles.sort_unstable();
        roles.dedup();
        match roles.as_slice() {
            ["broker", "controller"] => Ok(ProcessRoles::Combined),
            ["broker"] => Ok(ProcessRoles::Broker),
            ["controller"] => Err(
                "controller-only nodes are not supported: a voter is also a \
                                   broker (process roles broker,controller)"
                    .into(),
            ),
            _ => Err(format!(
                "unknown process roles {s:?}: want broker,controller or broker"
            )),
        }
    }
}

/// Replication settings; `voters` empty means a single broker without a quorum.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub voters: Vec<Voter>,
    pub controller_listen: Option<String>,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub replica_lag_time_max_ms: u64,
    pub broker_session_timeout_ms: u64,
    pub election_timeout_ms: u64,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_ms: u64,
    pub unclean_leader_election: bool,
    /// This broker's rack, registered with the controller.
    pub rack: Option<String>,
    /// Which replica this broker, leading, tells consumers to read from.
    pub replica_selector: ReplicaSelector,
    /// A voter and broker, or a broker-only observer of the quorum.
    pub process_roles: ProcessRoles,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            voters: Vec::new(),
            controller_listen: None,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 10_000,
            broker_session_timeout_ms: 1_000,
            election_timeout_ms: 300,
            auto_leader_rebalance: true,
            leader_imbalance_check_ms: 10_000,
            unclean_leader_election: false,
            rack: None,
            replica_selector: ReplicaSelector::Leader,
            process_roles: ProcessRoles::Combined,
        }
    }
}

impl ClusterConfig {
    pub fn is_clustered(&self) -> bool {
        !self.voters.is_empty()
    }
}

/// The merged configuration the server runs with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: String,
    pub advertise: Option<String>,
    /// Where `/metrics` is served; None: nowhere.
    pub metrics_listen: Option<String>,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub node_id: i32,
    pub default_partitions: u32,
    pub auto_create_topics: bool,
    /// Defaults for every topic; per-topic configs override them.
    pub log: LogConfig,
    pub retention_check_interval_ms: u64,
    pub max_frame_bytes: u32,
    pub max_inflight_bytes: u32,
    pub max_inflight_requests: u32,
    pub idle_timeout_ms: u64,
    pub max_connections: u32,
    pub cluster_id: String,
    /// Consumer-group limits and timing.
    pub group: GroupConfig,
    /// Quorum and replication.
    pub cluster: ClusterConfig,
}

/// Upper bound on partitions per topic: keeps one request from creating unbounded state.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".into(),
            advertise: None,
            metrics_listen: None,
            data_dir: PathBuf::from("./data"),
            fsync: FsyncPolicy::Always,
            node_id: 1,
            default_partitions: 1,
            auto_create_topics: true,
            log: LogConfig::default(),
            retention_check_interval_ms: 300_000,
            max_frame_bytes: 100 * 1024 * 1024,
            max_inflight_bytes: 64 * 1024 * 1024,
            max_inflight_requests: 1024,
            idle_timeout_ms: 600_000,
            max_connections: 10_000,
            cluster_id: "broker-local-cluster-0001".into(),
            group: GroupConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// Merges flags (already including environment variables) over the optional file over the
    /// defaults, then validates the result.
    pub fn from_flags(flags: Flags) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_fsync = match file.fsync {
            Some(s) => Some(s.parse::<FsyncPolicy>().map_err(anyhow::Error::msg)?),
            None => None,
        };
        let file_replica_selector = match &file.replica_selector {
            Some(s) => Some(s.parse::<ReplicaSelector>().map_err(anyhow::Error::msg)?),
            None => None,
        };
        let file_process_roles = match &file.process_roles {
            Some(s) => Some(s.parse::<ProcessRoles>().map_err(anyhow::Error::msg)?),
            None => None,
        };
        let d = BrokerConfig::default();
        let mut log = d.log.clone();
        log.retention_ms = flags
            .retention_ms
            .or(file.retention_ms)
            .unwrap_or(log.retention_ms);
        log.retention_bytes = flags
            .retention_bytes
            .or(file.retention_bytes)
            .unwrap_or(log.retention_bytes);
        log.segment_bytes = flags
            .log_segment_bytes
            .or(file.log_segment_bytes)
            .unwrap_or(log.segment_bytes);
        log.segment_ms = flags
            .log_segment_ms
            .or(file.log_segment_ms)
            .unwrap_or(log.segment_ms);
        log.max_message_bytes = flags
            .max_message_bytes
            .or(file.max_message_bytes)
            .unwrap_or(log.max_message_bytes);
        let voters = match flags.voters.or(file.voters) {
            Some(v) => parse_voters(&v)?,
            None => Vec::new(),
        };
        let dc = ClusterConfig::default();
        let cluster = ClusterConfig {
            default_replication_factor: flags
                .default_replication_factor
                .or(file.default_replication_factor)
                .unwrap_or(voters.len().clamp(1, 3) as i16),
            voters,
            controller_listen: flags.controller_listen.or(file.controller_listen),
            min_insync_replicas: flags
                .min_insync_replicas
                .or(file.min_insync_replicas)
                .unwrap_or(dc.min_insync_replicas),
            replica_lag_time_max_ms: flags
                .replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms)
                .unwrap_or(dc.replica_lag_time_max_ms),
            broker_session_timeout_ms: flags
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms)
                .unwrap_or(dc.broker_session_timeout_ms),
            election_timeout_ms: flags
                .election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(dc.election_timeout_ms),
            auto_leader_rebalance: flags
                .auto_leader_rebalance_enable
                .or(file.auto_leader_rebalance_enable)
                .unwrap_or(dc.auto_leader_rebalance),
            leader_imbalance_check_ms: flags
                .leader_imbalance_check_interval_ms
                .or(file.leader_imbalance_check_interval_ms)
                .unwrap_or(dc.leader_imbalance_check_ms),
            unclean_leader_election: flags
                .unclean_leader_election_enable
                .or(file.unclean_leader_election_enable)
                .unwrap_or(dc.unclean_leader_election),
            rack: flags.rack.or(file.rack),
            replica_selector: flags
                .replica_selector
                .or(file_replica_selector)
                .unwrap_or(dc.replica_selector),
            process_roles: flags
                .process_roles
                .or(file_process_roles)
                .unwrap_or(dc.process_roles),
        };
        let config = BrokerConfig {
            cluster,
            listen: flags.listen.or(file.listen).unwrap_or(d.listen),
            advertise: flags.advertise.or(file.advertise),
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            data_dir: flags.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            fsync: flags.fsync.or(file_fsync).unwrap_or(d.fsync),
            node_id: flags.node_id.or(file.node_id).unwrap_or(d.node_id),
            default_partitions: flags
                .default_partitions
                .or(file.default_partitions)
                .unwrap_or(d.default_partitions),
            auto_create_topics: flags
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(d.auto_create_topics),
            log,
            retention_check_interval_ms: flags
                .retention_check_interval_ms
                .or(file.retention_check_interval_ms)
                .unwrap_or(d.retention_check_interval_ms),
            max_frame_bytes: flags
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(d.max_frame_bytes),
            max_inflight_bytes: flags
                .max_inflight_bytes
                .or(file.max_inflight_bytes)
                .unwrap_or(d.max_inflight_bytes),
            max_inflight_requests: flags
                .max_inflight_requests
                .or(file.max_inflight_requests)
                .unwrap_or(d.max_inflight_requests),
            idle_timeout_ms: flags
                .idle_timeout_ms
                .or(file.idle_timeout_ms)
                .unwrap_or(d.idle_timeout_ms),
            max_connections: flags
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            cluster_id: flags.cluster_id.or(file.cluster_id).unwrap_or(d.cluster_id),
            group: GroupConfig {
                session_timeout_ms_min: flags
                    .group_min_session_timeout_ms
                    .or(file.group_min_session_timeout_ms)
                    .unwrap_or(d.group.session_timeout_ms_min),
                session_timeout_ms_max: flags
                    .group_max_session_timeout_ms
                    .or(file.group_max_session_timeout_ms)
                    .unwrap_or(d.group.session_timeout_ms_max),
                initial_rebalance_delay_ms: flags
                    .group_initial_rebalance_delay_ms
                    .or(file.group_initial_rebalance_delay_ms)
                    .unwrap_or(d.group.initial_rebalance_delay_ms),
                ..d.group
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.default_partitions == 0 || self.default_partitions > PARTITIONS_PER_TOPIC_MAX {
            bail!("default-partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}");
        }
        if self.max_frame_bytes < 1024 {
            bail!("max-frame-bytes must be at least 1024");
        }
        if self.max_inflight_bytes < 1024 || self.max_inflight_requests == 0 {
            bail!("max-inflight-bytes must be at least 1024 and max-inflight-requests at least 1");
        }
        if self.retention_check_interval_ms == 0 || self.idle_timeout_ms == 0 {
            bail!("retention-check-interval-ms and idle-timeout-ms must be positive");
        }
        if self.log.segment_bytes < 1024 {
            bail!("log-segment-bytes must be at least 1024");
        }
        self.log
            .validate()
            .map_err(|e| anyhow::anyhow!("log settings: {e}"))?;
        if self.group.session_timeout_ms_min <= 0
            || self.group.session_timeout_ms_min > self.group.session_timeout_ms_max
            || self.group.initial_rebalance_delay_ms < 0
        {
            bail!("group session timeouts must satisfy 0 < min <= max, and the rebalance delay be >= 0");
        }
        if self.max_connections == 0 {
            bail!("max-connections must be positive");
        }
        let c = &self.cluster;
        if c.rack
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > crate::cluster::controller::HOST_BYTES_MAX)
        {
            bail!("rack must be 1 to 255 bytes");
        }
        let voter = c.voters.iter().any(|v| v.id == self.node_id);
        match c.process_roles {
            ProcessRoles::Combined if c.is_clustered() && !voter => bail!(
                "--node-id {} is not among --voters: a voter runs broker,controller; start a \
                 broker-only node with --process-roles broker",
                self.node_id
            ),
            ProcessRoles::Broker if !c.is_clustered() => {
                bail!("--process-roles broker needs --voters: the quorum it joins as a broker")
            }
            ProcessRoles::Broker if voter => bail!(
                "--node-id {} is among --voters, so it runs broker,controller; a broker-only \
                 node has an id outside --voters",
                self.node_id
            ),
            ProcessRoles::Broker if c.controller_listen.is_some() => {
                bail!("a broker-only node has no controller listener; drop --controller-listen")
            }
            _ => {}
        }
        if self.node_id < 0 {
            bail!("--node-id must not be negative");
        }
        let brokers = c.voters.len().max(1) as i16;
        if c.default_replication_factor < 1 || c.default_replication_factor > brokers {
            bail!("default-replication-factor must be 1..={brokers}");
        }
        if c.min_insync_replicas < 1 {
            bail!("min-insync-replicas must be at least 1");
        }
        if c.replica_lag_time_max_ms == 0
            || c.broker_session_timeout_ms == 0
            || c.election_timeout_ms == 0
            || c.leader_imbalance_check_ms == 0
        {
            bail!("replica-lag-time-max-ms, broker-session-timeout-ms, election-timeout-ms and leader-imbalance-check-interval-ms must be positive");
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_each_form() {
        assert_eq!("always".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval:50".parse::<FsyncPolicy>(),
            Ok(FsyncPolicy::Interval { ms: 50 })
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("broker-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broker.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1111\"\nretention_ms = 5\nfsync = \"never\"\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:2222".into()),
            ..Flags::default()
        };
        let config = BrokerConfig::from_flags(flags).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222");
        assert_eq!(config.log.retention_ms, 5);
        assert_eq!(config.fsync, FsyncPolicy::Never);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        let flags = Flags {
            config: Some(file),
            ..Flags::default()
        };
        assert!(
            BrokerConfig::from_flags(flags).is_err(),
            "unknown keys are refused"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn process_roles_make_voters_and_broker_only_nodes() {
        assert_eq!("broker".parse(), Ok(ProcessRoles::Broker));
        assert_eq!("broker,controller".parse(), Ok(ProcessRoles::Combined));
        assert_eq!("controller, broker".parse(), Ok(ProcessRoles::Combined));
        for bad in ["controller", "", "brokers", "broker,observer"] {
            assert!(bad.parse::<ProcessRoles>().is_err(), "{bad:?} accepted");
        }
        let voters = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
        let config = |node_id, roles, voters: Option<&str>| {
            BrokerConfig::from_flags(Flags {
                voters: voters.map(String::from),
                node_id: Some(node_id),
                process_roles: roles,
                ..Flags::default()
            })
        };
        let c = config(4, Some(ProcessRoles::Broker), Some(voters)).unwrap();
        assert_eq!(c.cluster.process_roles, ProcessRoles::Broker);
        // Broker-only nodes are outside the voters; voters are combined; both need a quorum.
        assert!(
            config(4, None, Some(voters)).is_err(),
            "node 4 is not a voter"
        );
        assert!(config(2, Some(ProcessRoles::Broker), Some(voters)).is_err());
        assert!(config(4, Some(ProcessRoles::Broker), None).is_err());
        assert_eq!(
            config(2, None, Some(voters)).unwrap().cluster.process_roles,
            ProcessRoles::Combined
        );
        let with_listener = BrokerConfig::from_flags(Flags {
            voters: Some(voters.into()),
            node_id: Some(4),
            process_roles: Some(ProcessRoles::Broker),
            controller_listen: Some("127.0.0.1:9195".into()),
            ..Flags::default()
        });
        assert!(
            with_listener.is_err(),
            "a broker-only node has no controller listener"
        );
    }

    #[test]
    fn replica_selector_comes_from_flag_or_file_under_either_name() {
        let dir = std::env::temp_dir().join(format!("broker-selector-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("broker.toml");
        let from_file = |text: &str, flag: Option<ReplicaSelector>| {
            std::fs::write(&file, text).unwrap();
            BrokerConfig::from_flags(Flags {
                config: Some(file.clone()),
                replica_selector: flag,
                ..Flags::default()
            })
            .map(|c| c.cluster.replica_selector)
        };
        assert_eq!(from_file("", None).unwrap(), ReplicaSelector::Leader);
        let kafka_name =
            "replica_selector = \"org.apache.kafka.common.replica.RackAwareReplicaSelector\"\n";
        assert_eq!(
            from_file(kafka_name, None).unwrap(),
            ReplicaSelector::RackAware
        );
        assert_eq!(
            from_file(kafka_name, Some(ReplicaSelector::Leader)).unwrap(),
            ReplicaSelector::Leader,
            "the flag wins"
        );
        assert!(from_file("replica_selector = \"nearest\"\n", None).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn voters_parse_and_validate() {
        let v = parse_voters("2@b:9193, 1@a:9192,3@[::1]:9194").unwrap();
        assert_eq!(v.iter().map(|v| v.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(v[2].host, "::1");
        assert_eq!(v[0].addr(), "a:9192");
        for bad in ["", "1@a", "x@a:1", "1@a:99999", "1@a:1,1@b:2", "-1@a:1"] {
            assert!(parse_voters(bad).is_err(), "{bad:?} accepted");
        }
        let flags = Flags {
            voters: Some("1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194".into()),
            node_id: Some(4),
            ..Flags::default()
        };
        assert!(BrokerConfig::from_flags(flags).is_err(), "node not a voter");
        let flags = Flags {
            voters: Some("1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194".into()),
            node_id: Some(2),
            ..Flags::default()
        };
        let c = BrokerConfig::from_flags(flags).unwrap();
        assert_eq!(c.cluster.default_replication_factor, 3);
        assert!(c.cluster.is_clustered());
        // Leadership settings: Kafka's defaults, each overridable.
        assert!(c.cluster.auto_leader_rebalance && !c.cluster.unclean_leader_election);
        assert_eq!(c.cluster.leader_imbalance_check_ms, 10_000);
        let voters = "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194";
        let flags = Flags {
            voters: Some(voters.into()),
            auto_leader_rebalance_enable: Some(false),
            leader_imbalance_check_interval_ms: Some(500),
            unclean_leader_election_enable: Some(true),
            ..Flags::default()
        };
        let c = BrokerConfig::from_flags(flags).unwrap();
        assert!(!c.cluster.auto_leader_rebalance && c.cluster.unclean_leader_election);
        assert_eq!(c.cluster.leader_imbalance_check_ms, 500);
        let flags = Flags {
            voters: Some(voters.into()),
            leader_imbalance_check_interval_ms: Some(0),
            ..Flags::default()
        };
        assert!(BrokerConfig::from_flags(flags).is_err(), "a zero period");
    }
}
