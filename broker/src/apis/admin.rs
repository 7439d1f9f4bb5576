//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{code, KafkaApis};
use crate::replica::{topic_config, TopicError};
use crate::storage::Storage;

/// Config source DEFAULT_CONFIG / TOPIC_CONFIG as Kafka numbers them.
pub(crate) const CONFIG_SOURCE_TOPIC: i8 = 1;
pub(crate) const CONFIG_SOURCE_DEFAULT: i8 = 5;

pub(crate) fn topic_error_code(e: &TopicError) -> i16 {
    code(match e {
        TopicError::AlreadyExists => ResponseError::TopicAlreadyExists,
        TopicError::UnknownTopic => ResponseError::UnknownTopicOrPartition,
        TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
        TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
        TopicError::Storage(_) => ResponseError::KafkaStorageError,
    })
}

/// The config overrides a CreateTopics entry asks for (entries without a value are skipped).
pub(crate) fn requested_configs(t: &CreatableTopic) -> BTreeMap<String, String> {
    t.configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
        })
        .collect()
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let now_ms = self.now_ms();
        let node = self.advertised.node_id;
        let results = request
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.as_str().to_string();
                let configs = requested_configs(&t);
                let mut partitions = t.num_partitions;
                let outcome = if t.replication_factor != -1 && t.replication_factor != 1 {
                    Err((
                        code(ResponseError::InvalidReplicationFactor),
                        format!(
                            "replication factor {} is larger than the 1 available broker",
                            t.replication_factor
                        ),
                    ))
                } else if !t.assignments.is_empty()
                    && t.assignments
                        .iter()
                        .any(|a| a.broker_ids.iter().any(|b| b.0 != node))
                {
                    Err((
                        code(ResponseError::InvalidReplicaAssignment),
                        format!("only broker {node} exists"),
                    ))
                } else {
                    if !t.assignments.is_empty() {
                        partitions = t.assignments.len() as i32;
                    }
                    let result = if request.validate_only {
                        self.replicas
                            .validate_create(&name, partitions, &configs)
                            .map(|n| n as i32)
                    } else {
                        self.replicas
                            .create_topic(&name, partitions, configs.clone(), now_ms)
                            .map(|topic| topic.partition_count() as i32)
                    };
                    result.map_err(|e| (topic_error_code(&e), e.message()))
                };
                let mut r = CreatableTopicResult::default().with_name(t.name);
                match outcome {
                    Ok(count) => {
                        if version >= 5 {
                            let described = topic_config::names()
                                .map(|n| {
                                    let (value, source) = self.topic_config_value(&configs, n);
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(n))
                                        .with_value(Some(StrBytes::from_string(value)))
                                        .with_config_source(source)
                                })
                                .collect();
                            r = r
                                .with_num_partitions(count)
                                .with_replication_factor(1)
                                .with_configs(Some(described));
                        }
                        if version >= 7 && !request.validate_only {
                            if let Some(topic) = self.replicas.topic(&name) {
                                r = r.with_topic_id(topic.id);
                            }
                        }
                    }
                    Err((error, message)) => {
                        tracing::info!(topic = %name, error = %message, "create topic refused");
                        r = r
                            .with_error_code(error)
                            .with_error_message(Some(StrBytes::from_string(message)));
                        if version >= 5 {
                            r = r.with_num_partitions(-1).with_replication_factor(-1);
                        }
                    }
                }
                r
            })
            .collect();
        CreateTopicsResponse::default().with_topics(results)
    }

    pub(super) fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let responses = request
            .topic_names
            .into_iter()
            .map(|name| {
                let mut r = DeletableTopicResult::default().with_name(Some(name.clone()));
                if let Err(e) = self.replicas.delete_topic(name.0.as_str()) {
                    r = r.with_error_code(topic_error_code(&e));
                    if version >= 5 {
                        r = r.with_error_message(Some(StrBytes::from_string(e.message())));
                    }
                }
                r
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(super) fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
        _version: i16,
    ) -> CreatePartitionsResponse {
        let now_ms = self.now_ms();
        let results = request
            .topics
            .into_iter()
            .map(|t| {
                let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                if let Err(e) = self.replicas.create_partitions(
                    t.name.0.as_str(),
                    t.count,
                    request.validate_only,
                    now_ms,
                ) {
                    r = r
                        .with_error_code(topic_error_code(&e))
                        .with_error_message(Some(StrBytes::from_string(e.message())));
                }
                r
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}
