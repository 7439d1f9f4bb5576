//! KafkaApis: turns one decoded request into its response. Work that must happen in request order
//! (appends) runs synchronously in [`KafkaApis::handle`]; waiting (fsync acks, long-poll fetches)
//! is returned as a future, so a connection can pipeline requests and still answer in order.

mod acls;
mod admin;
mod cluster;
mod configs;
mod delete_records;
mod describe_log_dirs;
pub use delete_records::DELETE_RECORDS_PARTITIONS_MAX;
mod describe_partitions;
mod describe_quorum;
mod elect_leaders;
pub use elect_leaders::ELECT_LEADERS_NAMED_MAX;
pub mod fetch;
mod groups;
mod leader_epoch;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod reassignments;
pub use reassignments::REASSIGN_NAMED_MAX;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, RequestKind, ResponseKind};
use kafka_protocol::ResponseError;

use crate::cluster::ClusterView;
use crate::group::GroupRequest;
use crate::metrics::BrokerMetrics;
use crate::protocol::fetch_frame::FetchReply;
use crate::protocol::{Request, SUPPORTED_APIS};
use crate::replica::ReplicaManager;
use crate::server::group_manager::GroupManager;
use crate::storage::Storage;

/// A source of wall-clock time in ms since the epoch. The server passes the system clock; the
/// simulator passes its virtual clock.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// How a request is answered.
pub enum Reply {
    /// The response is ready.
    Now(ResponseKind),
    /// The response is ready when the future completes (after fsync, or when a fetch fills).
    Later(Pin<Box<dyn Future<Output = ResponseKind> + Send + 'static>>),
    /// A fetch response, its records still in storage (sent from there by the writer).
    Fetch(FetchReply),
    /// A fetch answered when enough data arrives or its wait ends (long poll).
    FetchLater(Pin<Box<dyn Future<Output = FetchReply> + Send + 'static>>),
    /// No response at all (produce with acks=0).
    Nothing,
}

/// Where clients reach this broker, as told in Metadata and DescribeCluster.
#[derive(Debug, Clone)]
pub struct Advertised {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

pub struct KafkaApis<S: Storage + Clone> {
    pub(crate) replicas: Arc<ReplicaManager<S>>,
    pub(crate) groups: Arc<GroupManager<S>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) advertised: Advertised,
    /// The cluster, when this broker is one node of a replicated cluster.
    pub(crate) cluster: Option<Arc<ClusterView>>,
    /// True once the broker is shutting down: waiting fetches answer at once.
    pub(crate) stopping: Arc<crate::sync::Watch<bool>>,
    /// Per follower, whether the connection it last fetched on is still open. A leader never
    /// sends a consumer to a follower whose fetch connection closed (a killed broker's close
    /// at once), even before the controller fences it: librdkafka, sent to a dead replica,
    /// may wait out its five-minute lease on it.
    pub(crate) follower_links: Arc<Mutex<BTreeMap<i32, Arc<AtomicBool>>>>,
    /// Counters the request paths bump (`/metrics`).
    pub(crate) metrics: Arc<BrokerMetrics>,
}

/// One client connection, as request handlers see it.
pub struct ClientConnection {
    /// The client's address, without the port.
    pub host: String,
    open: Arc<AtomicBool>,
}

impl ClientConnection {
    pub fn new(host: String) -> Self {
        ClientConnection {
            host,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The client left (or the broker closed the connection): no more requests will come.
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

impl<S: Storage + Clone> Clone for KafkaApis<S> {
    fn clone(&self) -> Self {
        KafkaApis {
            replicas: self.replicas.clone(),
            groups: self.groups.clone(),
            clock: self.clock.clone(),
            advertised: self.advertised.clone(),
            cluster: self.cluster.clone(),
            stopping: self.stopping.clone(),
            follower_links: self.follower_links.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub fn new(
        replicas: Arc<ReplicaManager<S>>,
        groups: Arc<GroupManager<S>>,
        clock: Arc<dyn Clock>,
        advertised: Advertised,
        cluster: Option<Arc<ClusterView>>,
    ) -> Self {
        KafkaApis {
            replicas,
            groups,
            clock,
            advertised,
            cluster,
            stopping: Arc::new(crate::sync::Watch::new(false)),
            follower_links: Arc::new(Mutex::new(BTreeMap::new())),
            metrics: Arc::new(BrokerMetrics::new()),
        }
    }

    /// Counts into `metrics` (shared with the shell's other tasks) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<BrokerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<BrokerMetrics> {
        &self.metrics
    }

    /// The cluster view, when this broker is one node of a replicated cluster.
    pub fn cluster(&self) -> Option<&Arc<ClusterView>> {
        self.cluster.as_ref()
    }

    /// The broker is shutting down: fetches waiting for data answer now with what there is,
    /// so connections drain without waiting out their `max_wait_ms`.
    pub fn begin_stopping(&self) {
        self.stopping.modify(|s| !std::mem::replace(s, true));
    }

    pub fn replicas(&self) -> &Arc<ReplicaManager<S>> {
        &self.replicas
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Handles one request. Appends happen before this returns, so calling it in arrival order
    /// keeps a connection's produce requests in order.
    pub fn handle(&self, request: Request, client: &ClientConnection) -> Reply {
        let client_host = client.host.as_str();
        let version = request.api_version;
        self.metrics.request(request.api_key as i16);
        let client_id = request
            .header
            .client_id
            .as_ref()
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        let group = |r: GroupRequest| self.group_request(version, &client_id, client_host, r);
        match request.body {
            RequestKind::FindCoordinator(r) => Reply::Now(ResponseKind::FindCoordinator(
                self.find_coordinator(r, version),
            )),
            RequestKind::JoinGroup(r) => group(GroupRequest::Join(r)),
            RequestKind::SyncGroup(r) => group(GroupRequest::Sync(r)),
            RequestKind::Heartbeat(r) => group(GroupRequest::Heartbeat(r)),
            RequestKind::LeaveGroup(r) => group(GroupRequest::Leave(r)),
            RequestKind::OffsetCommit(r) => group(GroupRequest::OffsetCommit(r)),
            RequestKind::OffsetFetch(r) => group(GroupRequest::OffsetFetch(r)),
            RequestKind::OffsetDelete(r) => group(GroupRequest::OffsetDelete(r)),
            RequestKind::DescribeGroups(r) => group(GroupRequest::Describe(r)),
            RequestKind::ListGroups(r) => group(GroupRequest::List(r)),
            RequestKind::DeleteGroups(r) => group(GroupRequest::Delete(r)),
            RequestKind::ApiVersions(_) => {
                Reply::Now(ResponseKind::ApiVersions(api_versions(version, 0)))
            }
            RequestKind::DescribeTopicPartitions(r) => {
                let mut response = match &self.cluster {
                    Some(view) => self.cluster_describe_topic_partitions(view, r),
                    None => self.describe_topic_partitions(r),
                };
                acls::describe_topic_partitions_operations(&mut response);
                Reply::Now(ResponseKind::DescribeTopicPartitions(response))
            }
            RequestKind::Metadata(r) => {
                let include_topics = r.include_topic_authorized_operations;
                let include_cluster = r.include_cluster_authorized_operations;
                let mut response = match &self.cluster {
                    Some(view) => self.cluster_metadata(view, r, version),
                    None => self.metadata(r, version),
                };
                acls::metadata_operations(&mut response, include_topics, include_cluster);
                Reply::Now(ResponseKind::Metadata(response))
            }
            RequestKind::CreateTopics(r) if self.cluster.is_some() => {
                self.cluster_create_topics(r, version)
            }
            RequestKind::DeleteTopics(r) if self.cluster.is_some() => {
                self.cluster_delete_topics(r, version)
            }
            RequestKind::CreatePartitions(r) if self.cluster.is_some() => {
                self.cluster_create_partitions(r, version)
            }
            RequestKind::Produce(r) => self.produce(r, version),
            RequestKind::Fetch(r) => self.fetch(r, version, &client.open),
            RequestKind::ListOffsets(r) => {
                Reply::Now(ResponseKind::ListOffsets(self.list_offsets(r, version)))
            }
            RequestKind::OffsetForLeaderEpoch(r) => Reply::Now(ResponseKind::OffsetForLeaderEpoch(
                self.offset_for_leader_epoch(r, version),
            )),
            RequestKind::CreateTopics(r) => {
                Reply::Now(ResponseKind::CreateTopics(self.create_topics(r, version)))
            }
            RequestKind::DeleteTopics(r) => {
                Reply::Now(ResponseKind::DeleteTopics(self.delete_topics(r, version)))
            }
            RequestKind::CreatePartitions(r) => Reply::Now(ResponseKind::CreatePartitions(
                self.create_partitions(r, version),
            )),
            RequestKind::DescribeConfigs(r) => Reply::Now(ResponseKind::DescribeConfigs(
                self.describe_configs(r, version),
            )),
            RequestKind::IncrementalAlterConfigs(r) => self.incremental_alter_configs(r, version),
            RequestKind::AlterConfigs(r) => self.alter_configs(r, version),
            RequestKind::InitProducerId(r) => self.init_producer_id(r, version),
            RequestKind::DescribeCluster(r) => {
                let include = r.include_cluster_authorized_operations;
                let mut response = match &self.cluster {
                    Some(_) => self.cluster_describe(r, version),
                    None => self.describe_cluster(r, version),
                };
                acls::describe_cluster_operations(&mut response, include);
                Reply::Now(ResponseKind::DescribeCluster(response))
            }
            RequestKind::ElectLeaders(r) => self.elect_leaders(r, version),
            RequestKind::AlterPartitionReassignments(r) => {
                self.alter_partition_reassignments(r, version)
            }
            RequestKind::DeleteRecords(r) => self.delete_records(r),
            RequestKind::DescribeLogDirs(r) => {
                Reply::Now(ResponseKind::DescribeLogDirs(self.describe_log_dirs(r)))
            }
            RequestKind::DescribeQuorum(r) => self.describe_quorum(r, version),
            RequestKind::ListPartitionReassignments(r) => {
                Reply::Now(self.list_partition_reassignments(r))
            }
            RequestKind::DescribeAcls(r) => {
                Reply::Now(ResponseKind::DescribeAcls(acls::describe_acls(r)))
            }
            RequestKind::CreateAcls(r) => {
                Reply::Now(ResponseKind::CreateAcls(acls::create_acls(r)))
            }
            RequestKind::DeleteAcls(r) => {
                Reply::Now(ResponseKind::DeleteAcls(acls::delete_acls(r)))
            }
            // decode_request only lets through the APIs in SUPPORTED_APIS, each handled above.
            other => unreachable!("request {other:?} passed the version check but has no handler"),
        }
    }
}

/// The ApiVersions response: every supported API with its range. `error_code` is
/// UNSUPPORTED_VERSION when the client asked with a version we do not speak; the client then
/// retries with one from the list.
pub fn api_versions(version: i16, error_code: i16) -> ApiVersionsResponse {
    let mut keys: Vec<ApiVersion> = SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    let mut response = ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(keys);
    if version >= 3 {
        // No features to advertise; an epoch of -1 means "no finalized features".
        response = response.with_finalized_features_epoch(-1);
    }
    response
}
