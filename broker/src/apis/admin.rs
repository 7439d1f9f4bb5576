//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions (on a single broker),
//! and the checks of an operator's replica lists both modes share.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
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
use crate::config::VOTERS_MAX;
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

/// Most brokers one partition's replica list may name: a cluster has at most this many.
const ASSIGNED_REPLICAS_MAX: usize = VOTERS_MAX;

type Refusal = (ResponseError, String);

/// Replica lists by partition, with the partition count and replication factor they imply.
type Placed = (Vec<Vec<i32>>, i32, i16);

/// A CreateTopics entry's replica lists (Kafka's manual assignment), by partition index, with
/// the partition count and replication factor they imply; `None` without lists. Refused as
/// Kafka does: INVALID_REQUEST when `num_partitions` or `replication_factor` is set to
/// something else (clients send -1), INVALID_REPLICA_ASSIGNMENT when the indexes are not 0,
/// 1, 2, ... or a list is empty, longer than a cluster, or of another length than the first.
/// Whether the brokers exist is the controller's to say.
pub(crate) fn creatable_assignments(t: &CreatableTopic) -> Result<Option<Placed>, Refusal> {
    if t.assignments.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<(i32, Vec<i32>)> = t
        .assignments
        .iter()
        .map(|a| {
            (
                a.partition_index,
                a.broker_ids.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    rows.sort_by_key(|(p, _)| *p);
    let count = rows.len() as i32;
    let rf = rows[0].1.len();
    if (t.num_partitions != -1 && t.num_partitions != count)
        || (t.replication_factor != -1 && t.replication_factor as usize != rf)
    {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "{count} replica lists of {rf} brokers, with num_partitions {} and \
                 replication_factor {}: set both to -1 with a manual assignment",
                t.num_partitions, t.replication_factor
            ),
        ));
    }
    let mut lists = Vec::with_capacity(rows.len());
    for (i, (p, brokers)) in rows.into_iter().enumerate() {
        if p != i as i32 {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("partition indexes must be 0..{count} without gaps; found {p}"),
            ));
        }
        check_replica_list(p, &brokers, Some(rf))?;
        lists.push(brokers);
    }
    Ok(Some((lists, count, rf as i16)))
}

/// A CreatePartitions entry's replica lists, one per new partition (the first new partition
/// first); `None` without lists. Their number and the brokers are the controller's (or the
/// single broker's) to check.
pub(crate) fn new_partition_assignments(
    t: &CreatePartitionsTopic,
    existing: Option<usize>,
) -> Result<Option<Vec<Vec<i32>>>, Refusal> {
    let Some(assignments) = &t.assignments else {
        return Ok(None);
    };
    let first = existing.unwrap_or(0) as i32;
    let mut lists = Vec::with_capacity(assignments.len());
    for (i, a) in assignments.iter().enumerate() {
        let brokers: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
        check_replica_list(first + i as i32, &brokers, None)?;
        lists.push(brokers);
    }
    Ok(Some(lists))
}

fn check_replica_list(partition: i32, brokers: &[i32], rf: Option<usize>) -> Result<(), Refusal> {
    let refuse = |m: String| Err((ResponseError::InvalidReplicaAssignment, m));
    if brokers.is_empty() || brokers.len() > ASSIGNED_REPLICAS_MAX {
        return refuse(format!(
            "partition {partition}: {} replicas; need 1..={ASSIGNED_REPLICAS_MAX}",
            brokers.len()
        ));
    }
    if rf.is_some_and(|rf| rf != brokers.len()) {
        return refuse(format!(
            "partition {partition} has {} replicas; the first has {}",
            brokers.len(),
            rf.unwrap_or(0)
        ));
    }
    Ok(())
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
                let manual = creatable_assignments(&t).map_err(|(e, m)| (code(e), m));
                let elsewhere = |lists: &[Vec<i32>]| lists.iter().any(|l| l[..] != [node]);
                let outcome = if let Err(refused) = manual {
                    Err(refused)
                } else if t.replication_factor != -1 && t.replication_factor != 1 {
                    Err((
                        code(ResponseError::InvalidReplicationFactor),
                        format!(
                            "replication factor {} is larger than the 1 available broker",
                            t.replication_factor
                        ),
                    ))
                } else if matches!(&manual, Ok(Some((lists, ..))) if elsewhere(lists)) {
                    Err((
                        code(ResponseError::InvalidReplicaAssignment),
                        format!("only broker {node} exists"),
                    ))
                } else {
                    if let Ok(Some((_, count, _))) = &manual {
                        partitions = *count;
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
                let node = self.advertised.node_id;
                let existing = self.replicas.topic(t.name.0.as_str());
                let existing = existing.map(|topic| topic.partition_count());
                let manual = new_partition_assignments(&t, existing);
                let outcome = match manual {
                    Err((e, m)) => Err((code(e), m)),
                    Ok(Some(lists)) if lists.iter().any(|l| l[..] != [node]) => Err((
                        code(ResponseError::InvalidReplicaAssignment),
                        format!("only broker {node} exists"),
                    )),
                    Ok(Some(lists))
                        if existing.is_some_and(|n| {
                            n as i64 + lists.len() as i64 != i64::from(t.count)
                        }) =>
                    {
                        Err((
                            code(ResponseError::InvalidReplicaAssignment),
                            format!(
                                "{} replica lists for growing to {} partitions from {}",
                                lists.len(),
                                t.count,
                                existing.unwrap_or(0)
                            ),
                        ))
                    }
                    Ok(_) => self
                        .replicas
                        .create_partitions(
                            t.name.0.as_str(),
                            t.count,
                            request.validate_only,
                            now_ms,
                        )
                        .map_err(|e| (topic_error_code(&e), e.message())),
                };
                if let Err((error, message)) = outcome {
                    r = r
                        .with_error_code(error)
                        .with_error_message(Some(StrBytes::from_string(message)));
                }
                r
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}
