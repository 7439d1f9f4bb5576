//! Produce: validate and append each partition's batches as received, then answer per `acks`:
//! 0 → no response; 1 → after the leader holds the batch (durably under `--fsync always`);
//! -1 (all) → after every ISR member holds it (the high watermark passed it), refused up front
//! with NOT_ENOUGH_REPLICAS when the ISR is smaller than `min.insync.replicas`. Only the leader
//! appends; other replicas answer NOT_LEADER_OR_FOLLOWER.

use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::log::AppendError;
use crate::replica::{DurableError, Partition, ProduceError};
use crate::storage::Storage;

/// Longest a produce waits for durability, whatever the client's timeout says.
pub const PRODUCE_TIMEOUT_MS_MAX: u64 = 300_000;

fn partition_error(
    index: i32,
    error: ResponseError,
    message: Option<String>,
    version: i16,
) -> PartitionProduceResponse {
    let mut r = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code(error))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    if version >= 8 {
        if let Some(m) = message {
            r = r.with_error_message(Some(StrBytes::from_string(m.clone())));
            if error == ResponseError::InvalidRecord {
                r = r.with_record_errors(vec![BatchIndexAndErrorMessage::default()
                    .with_batch_index(0)
                    .with_batch_index_error_message(Some(StrBytes::from_string(m)))]);
            }
        }
    }
    r
}

/// The Kafka error a failed append maps to, and the text the producer is told.
pub(crate) fn append_error(e: &AppendError) -> (ResponseError, String) {
    match e {
        AppendError::CorruptMessage(m) => (ResponseError::CorruptMessage, m.clone()),
        AppendError::InvalidRecord(m) => (ResponseError::InvalidRecord, m.clone()),
        AppendError::MessageTooLarge(m) => (ResponseError::MessageTooLarge, m.clone()),
        AppendError::Storage(io) => (
            ResponseError::KafkaStorageError,
            format!("storage error: {io}"),
        ),
        AppendError::OutOfOrderSequence(m) => (ResponseError::OutOfOrderSequenceNumber, m.clone()),
        AppendError::InvalidProducerEpoch(m) => (ResponseError::InvalidProducerEpoch, m.clone()),
        // Follower appends only.
        e @ (AppendError::OffsetMismatch { .. } | AppendError::LeaderEpochRegression { .. }) => {
            (ResponseError::UnknownServerError, e.to_string())
        }
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn produce(&self, request: ProduceRequest, version: i16) -> Reply {
        let acks = request.acks;
        let now_ms = self.now_ms();
        let mut topics = Vec::with_capacity(request.topic_data.len());
        // (topic slot, partition slot, partition, end offset) of every append to wait for.
        let mut waits = Vec::new();
        // Leaders named in NOT_LEADER_OR_FOLLOWER answers, whose endpoints v10+ carries.
        let mut new_leaders = std::collections::BTreeSet::new();
        for topic_data in request.topic_data {
            let name = topic_data.name.0.as_str().to_string();
            let topic = self.replicas.topic(&name);
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for data in topic_data.partition_data {
                let index = data.index;
                if request.transactional_id.is_some() {
                    partitions.push(partition_error(
                        index,
                        ResponseError::TransactionalIdAuthorizationFailed,
                        Some("transactions are not supported yet".into()),
                        version,
                    ));
                    continue;
                }
                if !matches!(acks, -1..=1) {
                    partitions.push(partition_error(
                        index,
                        ResponseError::InvalidRequiredAcks,
                        None,
                        version,
                    ));
                    continue;
                }
                let Some(partition) = topic.as_ref().and_then(|t| t.partition(index)) else {
                    partitions.push(partition_error(
                        index,
                        ResponseError::UnknownTopicOrPartition,
                        None,
                        version,
                    ));
                    continue;
                };
                if partition.is_failed() || partition.is_closed() {
                    partitions.push(partition_error(
                        index,
                        ResponseError::KafkaStorageError,
                        None,
                        version,
                    ));
                    continue;
                }
                let records = match data.records {
                    Some(r) if !r.is_empty() => r,
                    _ => {
                        partitions.push(partition_error(
                            index,
                            ResponseError::CorruptMessage,
                            Some("no record batches in the request".into()),
                            version,
                        ));
                        continue;
                    }
                };
                let min_isr = topic
                    .as_ref()
                    .map_or(1, |t| self.replicas.min_insync_replicas(t));
                let required = (acks == -1).then_some(min_isr);
                match partition.produce(&records, required, now_ms) {
                    Ok((info, log_start, epoch)) => {
                        tracing::debug!(topic = %name, partition = index, base = info.base_offset,
                            last = info.last_offset, duplicate = info.duplicate, "appended");
                        let records = if info.duplicate {
                            0
                        } else {
                            (info.last_offset - info.base_offset + 1).max(0) as u64
                        };
                        self.metrics.produced(records, info.bytes as u64);
                        waits.push((
                            topics.len(),
                            partitions.len(),
                            partition,
                            info.last_offset + 1,
                            epoch,
                            min_isr,
                        ));
                        partitions.push(
                            PartitionProduceResponse::default()
                                .with_index(index)
                                .with_base_offset(info.base_offset)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(log_start),
                        );
                    }
                    Err(ProduceError::NotLeader) => {
                        let mut r = partition_error(
                            index,
                            ResponseError::NotLeaderOrFollower,
                            None,
                            version,
                        );
                        // v10+ (KIP-951): where the partition moved, so the producer need not
                        // wait for a metadata refresh.
                        if let (true, Some((leader, epoch))) =
                            (version >= 10, self.known_leader(&name, index))
                        {
                            r = r.with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(BrokerId(leader))
                                    .with_leader_epoch(epoch),
                            );
                            new_leaders.insert(leader);
                        }
                        partitions.push(r);
                    }
                    Err(ProduceError::NotEnoughReplicas { isr, min_isr }) => {
                        partitions.push(partition_error(
                            index,
                            ResponseError::NotEnoughReplicas,
                            Some(format!(
                                "the ISR has {isr} members; min.insync.replicas is {min_isr}"
                            )),
                            version,
                        ));
                    }
                    Err(ProduceError::Append(e)) => {
                        let (error, message) = append_error(&e);
                        if let AppendError::Storage(_) = e {
                            tracing::error!(topic = %name, partition = index, error = %message, "append failed");
                        } else {
                            tracing::info!(topic = %name, partition = index, error = %message, "rejected batch");
                        }
                        partitions.push(partition_error(index, error, Some(message), version));
                    }
                }
            }
            topics.push(
                TopicProduceResponse::default()
                    .with_name(topic_data.name)
                    .with_partition_responses(partitions),
            );
        }
        let failed = topics
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
            .count();
        self.metrics.produce_failed(failed as u64);
        if acks == 0 {
            return Reply::Nothing;
        }
        let mut response = ProduceResponse::default().with_responses(topics);
        if let Some(view) = self.cluster.as_ref().filter(|_| !new_leaders.is_empty()) {
            let image = view.image();
            response.node_endpoints = new_leaders
                .iter()
                .filter_map(|id| image.brokers.get(id).map(|b| (id, b)))
                .map(|(id, b)| {
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(*id))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(i32::from(b.port))
                })
                .collect();
        }
        // acks=all waits for the ISR; on a single broker that is acks=1's wait.
        let all = |p: &Partition<S>| acks == -1 && !p.is_standalone();
        waits.retain(|(_, _, partition, end, _, _)| {
            if all(partition) {
                !partition.replicated(*end)
            } else {
                !partition.acknowledgeable(*end)
            }
        });
        if waits.is_empty() {
            return Reply::Now(ResponseKind::Produce(response));
        }
        let timeout_ms = (request.timeout_ms.max(0) as u64).min(PRODUCE_TIMEOUT_MS_MAX);
        let metrics = std::sync::Arc::clone(&self.metrics);
        Reply::Later(Box::pin(async move {
            let mut response = response;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
            for (t, p, partition, end, epoch, min_isr) in waits {
                let outcome = if acks == -1 && !partition.is_standalone() {
                    tokio::time::timeout_at(
                        deadline,
                        partition.wait_replicated(end, epoch, min_isr),
                    )
                    .await
                } else {
                    tokio::time::timeout_at(deadline, partition.wait_written(end, epoch)).await
                };
                let error = match outcome {
                    Ok(Ok(())) => continue,
                    Ok(Err(DurableError::Storage)) => ResponseError::KafkaStorageError,
                    Ok(Err(DurableError::Closed | DurableError::NotLeader)) => {
                        ResponseError::NotLeaderOrFollower
                    }
                    Ok(Err(DurableError::NotEnoughReplicasAfterAppend)) => {
                        ResponseError::NotEnoughReplicasAfterAppend
                    }
                    Err(_) => ResponseError::RequestTimedOut,
                };
                metrics.produce_failed(1);
                let slot = &mut response.responses[t].partition_responses[p];
                *slot = partition_error(slot.index, error, None, version);
            }
            ResponseKind::Produce(response)
        }))
    }
}
