//! Metadata and DescribeCluster: who the brokers are and where each partition's leader lives.
//! Metadata also auto-creates a requested topic when the client allows it and the broker is
//! configured to (Kafka's `auto.create.topics.enable`).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_partitions::{self, PartitionView, TopicView};
use super::{code, KafkaApis};
use crate::replica::{Topic, TopicError};
use crate::storage::Storage;

/// Most topics one Metadata request may name.
pub const METADATA_TOPICS_MAX: usize = 10_000;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn metadata(&self, request: MetadataRequest, version: i16) -> MetadataResponse {
        let node = BrokerId(self.advertised.node_id);
        let broker = MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(StrBytes::from_string(self.advertised.host.clone()))
            .with_port(self.advertised.port);
        // v0: an empty list means all topics; v1+: null means all topics.
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
        let auto_create = version < 4 || request.allow_auto_topic_creation;
        let now_ms = self.now_ms();
        let topics = match requested {
            None => self.replicas.topics().iter().map(|t| self.describe_topic(t, version)).collect(),
            Some(names) => names
                .into_iter()
                .map(|name| {
                    let found = if auto_create {
                        self.replicas.get_or_auto_create(&name, now_ms)
                    } else {
                        self.replicas.topic(&name).ok_or(TopicError::UnknownTopic)
                    };
                    match found {
                        Ok(t) => self.describe_topic(&t, version),
                        Err(e) => {
                            let error = match e {
                                TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
                                TopicError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
                                _ => ResponseError::UnknownServerError,
                            };
                            if !matches!(e, TopicError::UnknownTopic) {
                                tracing::info!(topic = %name, error = %e.message(), "metadata for topic failed");
                            }
                            MetadataResponseTopic::default()
                                .with_error_code(code(error))
                                .with_name(Some(TopicName(StrBytes::from_string(name))))
                        }
                    }
                })
                .collect(),
        };
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(Some(StrBytes::from_string(
                self.replicas.config().cluster_id.clone(),
            )))
            .with_controller_id(node)
            .with_topics(topics)
    }

    /// DescribeTopicPartitions on a single broker: it leads every partition alone, no ELR.
    pub(super) fn describe_topic_partitions(
        &self,
        request: DescribeTopicPartitionsRequest,
    ) -> DescribeTopicPartitionsResponse {
        let me = self.advertised.node_id;
        let names = describe_partitions::requested(&request).unwrap_or_else(|| {
            self.replicas
                .topics()
                .iter()
                .map(|t| t.name.clone())
                .collect()
        });
        let topics = names
            .into_iter()
            .map(|name| {
                let view = self.replicas.topic(&name).map(|t| TopicView {
                    id: t.id,
                    partitions: t
                        .partitions()
                        .iter()
                        .map(|p| PartitionView {
                            index: p.index,
                            leader: me,
                            leader_epoch: p.leader_epoch(),
                            replicas: vec![me],
                            isr: vec![me],
                            elr: Vec::new(),
                            offline: if p.is_failed() { vec![me] } else { Vec::new() },
                        })
                        .collect(),
                });
                (name, view)
            })
            .collect();
        describe_partitions::page(&request, topics)
    }

    fn describe_topic(&self, topic: &Topic<S>, version: i16) -> MetadataResponseTopic {
        let node = BrokerId(self.advertised.node_id);
        let partitions = topic
            .partitions()
            .iter()
            .map(|p| {
                let failed = p.is_failed();
                MetadataResponsePartition::default()
                    .with_error_code(if failed {
                        code(ResponseError::KafkaStorageError)
                    } else {
                        0
                    })
                    .with_partition_index(p.index)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_offline_replicas(if failed && version >= 5 {
                        vec![node]
                    } else {
                        Vec::new()
                    })
            })
            .collect();
        let mut t = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
            .with_is_internal(false)
            .with_partitions(partitions);
        if version >= 10 {
            t = t.with_topic_id(topic.id);
        }
        t
    }

    pub(super) fn describe_cluster(
        &self,
        _request: DescribeClusterRequest,
        _version: i16,
    ) -> DescribeClusterResponse {
        let broker = DescribeClusterBroker::default()
            .with_broker_id(BrokerId(self.advertised.node_id))
            .with_host(StrBytes::from_string(self.advertised.host.clone()))
            .with_port(self.advertised.port);
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(
                self.replicas.config().cluster_id.clone(),
            ))
            .with_controller_id(BrokerId(self.advertised.node_id))
            .with_brokers(vec![broker])
    }
}
