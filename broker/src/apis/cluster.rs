//! The cluster-mode answers: Metadata and DescribeCluster from the committed metadata image
//! (true leaders, leader epochs, replicas, ISRs, the active controller), and topic
//! administration (CreateTopics, DeleteTopics, CreatePartitions, auto-creation) forwarded to the
//! active controller. Each request's `timeout_ms` is its deadline ([`AdminTimeout`]): an accepted
//! change is answered once this broker's image shows it (so the client's next Metadata request
//! here sees it) or the deadline passes, whichever is first.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::describe_partitions::{self, PartitionView, TopicView};
use super::metadata::METADATA_TOPICS_MAX;
use super::{code, KafkaApis, Reply};
use crate::cluster::controller::{ControllerError, ControllerRequest, ControllerResponse};
use crate::cluster::ClusterView;
use crate::config::PARTITIONS_PER_TOPIC_MAX;
use crate::raft::MetadataImage;
use crate::replica::{topic_config, validate_topic_name};
use crate::storage::Storage;

/// Longest an admin request waits, whatever its `timeout_ms` asks (the protocol's default).
pub const ADMIN_TIMEOUT_MS_MAX: u64 = 60_000;

pub(super) fn controller_error(e: &ControllerError) -> (ResponseError, String) {
    match e {
        ControllerError::None => (ResponseError::UnknownServerError, String::new()),
        ControllerError::NotController | ControllerError::QueueFull => (
            ResponseError::NotController,
            "no active controller answered; retry".into(),
        ),
        ControllerError::StaleRequest => (ResponseError::StaleBrokerEpoch, "stale request".into()),
        ControllerError::UnknownTopic => (
            ResponseError::UnknownTopicOrPartition,
            "unknown topic".into(),
        ),
        ControllerError::TopicExists => (
            ResponseError::TopicAlreadyExists,
            "topic already exists".into(),
        ),
        ControllerError::InvalidReplicationFactor(m) => {
            (ResponseError::InvalidReplicationFactor, m.clone())
        }
        ControllerError::InvalidPartitions(m) => (ResponseError::InvalidPartitions, m.clone()),
        ControllerError::InvalidRequest(m) => (ResponseError::InvalidRequest, m.clone()),
        ControllerError::IneligibleReplica(m) => (ResponseError::IneligibleReplica, m.clone()),
        ControllerError::InvalidReplicaAssignment(m) => {
            (ResponseError::InvalidReplicaAssignment, m.clone())
        }
    }
}

/// An admin request's `timeout_ms` (CreateTopics, DeleteTopics, CreatePartitions, ElectLeaders,
/// AlterPartitionReassignments), read as Kafka documents it.
///
/// - Above 0 it is a deadline for the whole request, capped at [`ADMIN_TIMEOUT_MS_MAX`]. A
///   change the controller has not answered by then gets REQUEST_TIMED_OUT: it may or may not
///   happen. One it accepted is answered once this broker's image shows it, or at the
///   deadline: it is committed either way, as KRaft answers at commit.
/// - At 0 or below the client asks not to wait (librdkafka's `operation_timeout` ≤ 0: "return
///   immediately after triggering"). The change is still sent and its errors reported, but an
///   accepted one is answered REQUEST_TIMED_OUT without waiting for it to spread, as
///   ZooKeeper-mode Kafka did, and librdkafka turns that answer into success. (KRaft Kafka
///   instead refuses to do anything with a deadline already past, which leaves librdkafka
///   reporting success for a topic never created.)
#[derive(Clone, Copy, Debug)]
pub(super) struct AdminTimeout {
    deadline: Option<tokio::time::Instant>,
}

impl AdminTimeout {
    pub(super) fn new(timeout_ms: i32) -> AdminTimeout {
        let deadline = u64::try_from(timeout_ms)
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| {
                tokio::time::Instant::now() + Duration::from_millis(ms.min(ADMIN_TIMEOUT_MS_MAX))
            });
        AdminTimeout { deadline }
    }

    /// Sends `request` to the active controller. REQUEST_TIMED_OUT if the deadline passes
    /// first; nothing is sent once it has passed.
    pub(super) async fn controller_request(
        &self,
        view: &ClusterView,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, (ResponseError, String)> {
        let Some(deadline) = self.deadline else {
            return Ok(view.controller_request(request).await);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err((
                ResponseError::RequestTimedOut,
                "timeout_ms passed before this change was sent; nothing was changed".to_string(),
            ));
        }
        tokio::time::timeout_at(deadline, view.controller_request(request))
            .await
            .map_err(|_| {
                let why = "the controller did not answer within timeout_ms; the change may still \
                           be made";
                (ResponseError::RequestTimedOut, why.to_string())
            })
    }

    /// After the controller accepted a change: waits until `shown(image)` holds on this broker
    /// or the deadline passes. The error to answer with, if any: REQUEST_TIMED_OUT when the
    /// client asked not to wait.
    pub(super) async fn accepted(
        &self,
        view: &ClusterView,
        shown: impl Fn(&MetadataImage) -> bool,
    ) -> Option<(ResponseError, String)> {
        let Some(deadline) = self.deadline else {
            return Some((
                ResponseError::RequestTimedOut,
                "made, not awaited: timeout_ms is not above 0".to_string(),
            ));
        };
        let wait = async {
            loop {
                let seen = view.version();
                if shown(&view.image()) {
                    return;
                }
                view.changed_since(seen).await;
            }
        };
        if tokio::time::timeout_at(deadline, wait).await.is_err() {
            tracing::info!("an accepted admin change did not reach this broker within timeout_ms");
        }
        None
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn cluster_metadata(
        &self,
        view: &Arc<ClusterView>,
        request: MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        let image = view.image();
        let brokers = listed_brokers(&image, true)
            .map(|(id, host, port, rack)| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(host)
                    .with_port(port)
                    .with_rack(rack)
            })
            .collect();
        let requested: Option<Vec<String>> = match request.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .take(METADATA_TOPICS_MAX)
                    .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                    .collect(),
            ),
        };
        let auto_create = (version < 4 || request.allow_auto_topic_creation)
            && self.replicas.config().auto_create_topics;
        let names: Vec<String> = match requested {
            None => image
                .topic_ids
                .keys()
                .filter(|n| !n.starts_with("__"))
                .cloned()
                .collect(),
            Some(names) => names,
        };
        let topics = names
            .into_iter()
            .map(|name| match image.topic_ids.get(&name) {
                Some(id) => describe(&image, &name, *id, version),
                None => {
                    let error = if validate_topic_name(&name).is_err() {
                        ResponseError::InvalidTopicException
                    } else if auto_create {
                        self.auto_create(view, &name);
                        ResponseError::LeaderNotAvailable
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    MetadataResponseTopic::default()
                        .with_error_code(code(error))
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                }
            })
            .collect();
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(StrBytes::from_string(
                self.replicas.config().cluster_id.clone(),
            )))
            .with_controller_id(BrokerId(controller_for_clients(view, &image)))
            .with_topics(topics)
    }

    /// DescribeTopicPartitions from the image: Metadata's view plus each partition's ELR.
    pub(super) fn cluster_describe_topic_partitions(
        &self,
        view: &Arc<ClusterView>,
        request: DescribeTopicPartitionsRequest,
    ) -> DescribeTopicPartitionsResponse {
        let image = view.image();
        let names = describe_partitions::requested(&request).unwrap_or_else(|| {
            let names = image.topic_ids.keys().filter(|n| !n.starts_with("__"));
            names.cloned().collect()
        });
        let fenced = |n: &i32| image.brokers.get(n).is_none_or(|b| b.fenced);
        let topics = names
            .into_iter()
            .map(|name| {
                let id = image.topic_ids.get(&name).copied();
                let topic = id.and_then(|id| image.topics.get(&id).map(|t| (id, t)));
                let view = topic.map(|(id, t)| TopicView {
                    id: Uuid::from_bytes(id),
                    partitions: t
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(index, p)| PartitionView {
                            index: index as i32,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                            elr: p.elr.clone(),
                            offline: p.replicas.iter().copied().filter(fenced).collect(),
                        })
                        .collect(),
                });
                (name, view)
            })
            .collect();
        describe_partitions::page(&request, topics)
    }

    /// Asks the controller to create `name` with the broker defaults, in the background.
    fn auto_create(&self, view: &Arc<ClusterView>, name: &str) {
        let request = ControllerRequest::CreateTopic {
            name: name.to_string(),
            partitions: self.replicas.config().default_partitions,
            replication_factor: self.replicas.config().cluster.default_replication_factor as u16,
            configs: Vec::new(),
            assignments: Vec::new(),
        };
        let view = Arc::clone(view);
        let name = name.to_string();
        tokio::spawn(async move {
            let r = view.controller_request(request).await;
            match r.error {
                ControllerError::None => tracing::info!(topic = %name, "auto-created topic"),
                ControllerError::TopicExists => {}
                e => tracing::info!(topic = %name, error = ?e, "auto-creating topic failed"),
            }
        });
    }

    pub(super) fn cluster_describe(
        &self,
        _request: DescribeClusterRequest,
        _version: i16,
    ) -> DescribeClusterResponse {
        let view = self.cluster.as_ref().expect("cluster mode");
        let image = view.image();
        let brokers = listed_brokers(&image, false)
            .map(|(id, host, port, rack)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(id))
                    .with_host(host)
                    .with_port(port)
                    .with_rack(rack)
            })
            .collect();
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(
                self.replicas.config().cluster_id.clone(),
            ))
            .with_controller_id(BrokerId(controller_for_clients(view, &image)))
            .with_brokers(brokers)
    }

    pub(super) fn cluster_create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> Reply {
        let view = Arc::clone(self.cluster.as_ref().expect("cluster mode"));
        let config = self.replicas.config().clone();
        let timeout = AdminTimeout::new(request.timeout_ms);
        Reply::Later(Box::pin(async move {
            let mut results = Vec::with_capacity(request.topics.len());
            for t in request.topics {
                let name = t.name.0.as_str().to_string();
                let configs = super::admin::requested_configs(&t);
                let manual = super::admin::creatable_assignments(&t);
                let (partitions, rf) = match (&manual, t.num_partitions, t.replication_factor) {
                    (Ok(Some((_, count, rf))), ..) => (*count, *rf),
                    (_, p, rf) => (
                        if p == -1 {
                            config.default_partitions as i32
                        } else {
                            p
                        },
                        if rf == -1 {
                            config.cluster.default_replication_factor
                        } else {
                            rf
                        },
                    ),
                };
                let assignments = match &manual {
                    Ok(Some((lists, ..))) => lists.clone(),
                    _ => Vec::new(),
                };
                let local_check = manual
                    .map(|_| ())
                    .and_then(|_| validate_topic_name(&name)
                    .map_err(|e| (ResponseError::InvalidTopicException, e.message()))
                    .and_then(|_| {
                        if partitions < 1 || partitions as u32 > PARTITIONS_PER_TOPIC_MAX {
                            return Err((
                                ResponseError::InvalidPartitions,
                                format!("number of partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}"),
                            ));
                        }
                        if rf < 1 {
                            return Err((
                                ResponseError::InvalidReplicationFactor,
                                format!("replication factor {rf} is below 1"),
                            ));
                        }
                        let image = view.image();
                        let unknown = assignments.iter().flatten();
                        if let Some(b) = unknown.copied().find(|b| !image.brokers.contains_key(b)) {
                            return Err((
                                ResponseError::InvalidReplicaAssignment,
                                format!("broker {b} is not registered"),
                            ));
                        }
                        for (k, v) in &configs {
                            topic_config::validate(k, v)
                                .map_err(|m| (ResponseError::InvalidConfig, m))?;
                        }
                        Ok(())
                    }));
                let outcome = match local_check {
                    Err(e) => Err(e),
                    Ok(()) if request.validate_only => Ok(None),
                    Ok(()) => {
                        let request = ControllerRequest::CreateTopic {
                            name: name.clone(),
                            partitions: partitions as u32,
                            replication_factor: rf as u16,
                            configs: configs.clone().into_iter().collect(),
                            assignments,
                        };
                        match timeout.controller_request(&view, request).await {
                            Err(timed_out) => Err(timed_out),
                            Ok(r) if r.error != ControllerError::None => {
                                Err(controller_error(&r.error))
                            }
                            Ok(r) => {
                                let id = r.topic_id;
                                let shown = |img: &MetadataImage| {
                                    img.topic_ids.get(&name).is_some_and(|i| Some(*i) == id)
                                };
                                match timeout.accepted(&view, shown).await {
                                    Some(not_awaited) => Err(not_awaited),
                                    None => Ok(id),
                                }
                            }
                        }
                    }
                };
                let mut r = CreatableTopicResult::default().with_name(t.name);
                match outcome {
                    Ok(id) => {
                        if version >= 5 {
                            r = r
                                .with_num_partitions(partitions)
                                .with_replication_factor(rf);
                        }
                        if let (true, Some(id)) = (version >= 7, id) {
                            r = r.with_topic_id(Uuid::from_bytes(id));
                        }
                    }
                    Err((error, message)) => {
                        tracing::info!(topic = %name, error = %message, "create topic refused");
                        r = r
                            .with_error_code(code(error))
                            .with_error_message(Some(StrBytes::from_string(message)));
                        if version >= 5 {
                            r = r.with_num_partitions(-1).with_replication_factor(-1);
                        }
                    }
                }
                results.push(r);
            }
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
        }))
    }

    pub(super) fn cluster_delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> Reply {
        let view = Arc::clone(self.cluster.as_ref().expect("cluster mode"));
        let timeout = AdminTimeout::new(request.timeout_ms);
        Reply::Later(Box::pin(async move {
            let mut responses = Vec::with_capacity(request.topic_names.len());
            for name in request.topic_names {
                let topic = name.0.as_str().to_string();
                let request = ControllerRequest::DeleteTopic {
                    name: topic.clone(),
                };
                let outcome = match timeout.controller_request(&view, request).await {
                    Err(timed_out) => Some(timed_out),
                    Ok(r) if r.error != ControllerError::None => Some(controller_error(&r.error)),
                    Ok(_) => {
                        let shown = |img: &MetadataImage| !img.topic_ids.contains_key(&topic);
                        timeout.accepted(&view, shown).await
                    }
                };
                let mut out = DeletableTopicResult::default().with_name(Some(name));
                if let Some((error, message)) = outcome {
                    out = out.with_error_code(code(error));
                    if version >= 5 {
                        out = out.with_error_message(Some(StrBytes::from_string(message)));
                    }
                }
                responses.push(out);
            }
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
        }))
    }

    pub(super) fn cluster_create_partitions(
        &self,
        request: CreatePartitionsRequest,
        _version: i16,
    ) -> Reply {
        let view = Arc::clone(self.cluster.as_ref().expect("cluster mode"));
        let timeout = AdminTimeout::new(request.timeout_ms);
        Reply::Later(Box::pin(async move {
            let mut results = Vec::with_capacity(request.topics.len());
            for t in request.topics {
                let topic = t.name.0.as_str().to_string();
                let mut out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                let count = t.count;
                let existing = {
                    let image = view.image();
                    let id = image.topic_ids.get(&topic);
                    id.and_then(|id| image.topics.get(id))
                        .map(|t| t.partitions.len())
                };
                let manual = super::admin::new_partition_assignments(&t, existing);
                let outcome = if count < 1 || count as u32 > PARTITIONS_PER_TOPIC_MAX {
                    Err((
                        ResponseError::InvalidPartitions,
                        format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
                    ))
                } else if let Err(refused) = manual {
                    Err(refused)
                } else if request.validate_only {
                    Ok(())
                } else {
                    let request = ControllerRequest::CreatePartitions {
                        name: topic.clone(),
                        count: count as u32,
                        assignments: manual.ok().flatten().unwrap_or_default(),
                    };
                    match timeout.controller_request(&view, request).await {
                        Err(timed_out) => Err(timed_out),
                        Ok(r) if r.error != ControllerError::None => {
                            Err(controller_error(&r.error))
                        }
                        Ok(_) => {
                            let shown = |img: &MetadataImage| {
                                img.topic_ids
                                    .get(&topic)
                                    .and_then(|id| img.topics.get(id))
                                    .is_some_and(|t| t.partitions.len() >= count as usize)
                            };
                            timeout.accepted(&view, shown).await.map_or(Ok(()), Err)
                        }
                    }
                };
                if let Err((error, message)) = outcome {
                    out = out
                        .with_error_code(code(error))
                        .with_error_message(Some(StrBytes::from_string(message)));
                }
                results.push(out);
            }
            ResponseKind::CreatePartitions(
                CreatePartitionsResponse::default().with_results(results),
            )
        }))
    }
}

/// (id, host, port) of every registered broker, fenced ones only `with_fenced`.
///
/// Metadata lists fenced brokers too (their partitions have other leaders and name them in
/// `offline_replicas`): librdkafka decommissions a broker that drops out of the list, and a
/// partition migrating away from it at that moment is parked leaderless until the client's
/// next one-second scan, which added a second to every kill -9 failover measured. DescribeCluster
/// lists the live brokers only, as Kafka's does by default.
fn listed_brokers(
    image: &MetadataImage,
    with_fenced: bool,
) -> impl Iterator<Item = (i32, StrBytes, i32, Option<StrBytes>)> + '_ {
    image
        .brokers
        .iter()
        .filter(move |(_, b)| with_fenced || !b.fenced)
        .map(|(id, b)| {
            (
                *id,
                StrBytes::from_string(b.host.clone()),
                i32::from(b.port),
                b.rack.clone().map(StrBytes::from_string),
            )
        })
}

/// The controller id clients are told: the active controller when it is a registered broker,
/// else this broker. Clients send admin requests there, and every broker forwards them to the
/// active controller (as KRaft brokers do), so any live broker is a correct answer; -1 would
/// make some clients (librdkafka) wait for their next metadata refresh.
fn controller_for_clients(view: &ClusterView, image: &MetadataImage) -> i32 {
    view.controller_id()
        .filter(|c| image.brokers.get(c).is_some_and(|b| !b.fenced))
        .unwrap_or(view.me)
}

/// One topic of a Metadata response, from the image.
fn describe(
    image: &MetadataImage,
    name: &str,
    id: [u8; 16],
    version: i16,
) -> MetadataResponseTopic {
    let topic = image.topics.get(&id).expect("topic_ids and topics agree");
    let fenced = |n: &i32| image.brokers.get(n).is_none_or(|b| b.fenced);
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let error = if p.leader < 0 {
                code(ResponseError::LeaderNotAvailable)
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(if version >= 5 {
                    p.replicas
                        .iter()
                        .filter(|r| fenced(r))
                        .map(|r| BrokerId(*r))
                        .collect()
                } else {
                    Vec::new()
                })
        })
        .collect();
    let mut t = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_is_internal(name.starts_with("__"))
        .with_partitions(partitions);
    if version >= 10 {
        t = t.with_topic_id(Uuid::from_bytes(id));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::QuorumInput;

    fn create(name: &str) -> ControllerRequest {
        ControllerRequest::CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            assignments: Vec::new(),
        }
    }

    /// A controller that never answers: a positive timeout_ms ends the wait at its deadline
    /// with REQUEST_TIMED_OUT, and a deadline already past sends nothing.
    #[tokio::test(start_paused = true)]
    async fn a_silent_controller_is_answered_request_timed_out_at_the_deadline() {
        let (inbox, mut quorum) = tokio::sync::mpsc::channel(4);
        let view = ClusterView::new(1, 1, true, [1; 16], inbox);
        let started = tokio::time::Instant::now();
        let timeout = AdminTimeout::new(1_500);
        let answer = timeout.controller_request(&view, create("a")).await;
        let (error, _) = answer.expect_err("no controller answered");
        assert_eq!(error, ResponseError::RequestTimedOut);
        assert_eq!(started.elapsed(), Duration::from_millis(1_500));
        assert!(matches!(quorum.try_recv(), Ok(QuorumInput::Local { .. })));

        // The same request's next change, past its deadline: refused without being sent.
        let (error, message) = timeout
            .controller_request(&view, create("b"))
            .await
            .expect_err("deadline passed");
        assert_eq!(error, ResponseError::RequestTimedOut);
        assert!(message.contains("nothing was changed"), "{message}");
        assert!(
            quorum.try_recv().is_err(),
            "a change was sent after the deadline"
        );
    }

    /// timeout_ms is capped: a huge one waits ADMIN_TIMEOUT_MS_MAX, not 24 days.
    #[tokio::test(start_paused = true)]
    async fn timeout_ms_is_capped() {
        let (inbox, _quorum) = tokio::sync::mpsc::channel(4);
        let view = ClusterView::new(1, 1, true, [1; 16], inbox);
        let started = tokio::time::Instant::now();
        let answer = AdminTimeout::new(i32::MAX).accepted(&view, |_| false).await;
        assert_eq!(answer, None, "an accepted change is answered as made");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(ADMIN_TIMEOUT_MS_MAX)
        );
    }

    /// At 0 or below an accepted change is answered at once, REQUEST_TIMED_OUT ("made, not
    /// awaited"); above 0 it waits for the image to show it.
    #[tokio::test(start_paused = true)]
    async fn zero_answers_an_accepted_change_at_once_and_positive_waits_for_the_image() {
        let (inbox, _quorum) = tokio::sync::mpsc::channel(4);
        let view = ClusterView::new(1, 1, true, [1; 16], inbox);
        for timeout_ms in [0, -1, i32::MIN] {
            let started = tokio::time::Instant::now();
            let answer = AdminTimeout::new(timeout_ms)
                .accepted(&view, |_| false)
                .await;
            let (error, _) = answer.expect("not awaited");
            assert_eq!(
                error,
                ResponseError::RequestTimedOut,
                "timeout_ms {timeout_ms}"
            );
            assert_eq!(started.elapsed(), Duration::ZERO);
        }

        let publisher = Arc::clone(&view);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut image = MetadataImage::default();
            image.topic_ids.insert("t".into(), [7; 16]);
            publisher.publish(Arc::new(image), None);
        });
        let started = tokio::time::Instant::now();
        let shown = |img: &MetadataImage| img.topic_ids.contains_key("t");
        assert_eq!(AdminTimeout::new(30_000).accepted(&view, shown).await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert!(shown(&view.image()));
    }
}
