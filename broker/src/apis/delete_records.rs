//! DeleteRecords: an operator (`kafka-delete-records.sh`, AdminClient.deleteRecords) or Kafka
//! Streams (purging repartition topics) moves partitions' log start forward, deleting the
//! records below it.
//!
//! Each named partition's leader advances its log start to the requested offset (-1: the high
//! watermark; past it: OFFSET_OUT_OF_RANGE, since only committed records may go) and deletes
//! the segments wholly below, durably (the log start is checkpointed first). Followers learn
//! the new log start from their fetch responses and do the same. As in Kafka, the answer waits
//! (up to the request's timeout, at most [`DELETE_RECORDS_WAIT_MS_MAX`]) until the low
//! watermark (the lowest log start over the leader and its in-sync followers) reaches the
//! offset, and carries the low watermark; one that does not get there in time is answered
//! REQUEST_TIMED_OUT. A single broker's low watermark is its log start.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind, TopicName,
};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::replica::core::DeleteRecordsError;
use crate::replica::Partition;
use crate::storage::Storage;

/// Most partitions one request may name; the rest are answered INVALID_REQUEST.
pub const DELETE_RECORDS_PARTITIONS_MAX: usize = 100_000;

/// Longest an answer waits for the followers' log starts, whatever the request's timeout.
pub const DELETE_RECORDS_WAIT_MS_MAX: u64 = 60_000;

/// How often a waiting answer looks at the low watermarks again.
const LOW_WATERMARK_POLL_MS: u64 = 20;

/// One named partition: its row so far, and (once deleted on the leader) the partition and the
/// offset its low watermark must reach.
struct Row<S: Storage> {
    index: i32,
    low_watermark: i64,
    error: Option<ResponseError>,
    wait: Option<(Arc<Partition<S>>, i64)>,
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn delete_records(&self, request: DeleteRecordsRequest) -> Reply {
        let mut named = 0usize;
        let mut topics: Vec<(TopicName, Vec<Row<S>>)> = Vec::with_capacity(request.topics.len());
        for t in request.topics {
            let topic = self.replicas.topic(t.name.0.as_str());
            let mut rows = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                named += 1;
                let mut row = Row {
                    index: p.partition_index,
                    low_watermark: -1,
                    error: None,
                    wait: None,
                };
                let partition = topic.as_ref().and_then(|t| t.partition(p.partition_index));
                match partition {
                    _ if named > DELETE_RECORDS_PARTITIONS_MAX => {
                        row.error = Some(ResponseError::InvalidRequest);
                    }
                    None => row.error = Some(ResponseError::UnknownTopicOrPartition),
                    Some(partition) if partition.is_failed() => {
                        row.error = Some(ResponseError::KafkaStorageError);
                    }
                    Some(partition) => row.wait = Some((partition, p.offset)),
                }
                rows.push(row);
            }
            topics.push((t.name, rows));
        }
        let wait_ms = u64::try_from(request.timeout_ms)
            .unwrap_or(0)
            .min(DELETE_RECORDS_WAIT_MS_MAX);
        Reply::Later(Box::pin(async move {
            // Segment deletions and the log-start checkpoint's fsync: off the runtime.
            let topics = crate::blocking::run_blocking(move || {
                for (_, rows) in &mut topics {
                    for row in rows.iter_mut() {
                        let Some((partition, offset)) = row.wait.take() else {
                            continue;
                        };
                        match partition.delete_records(offset) {
                            Ok(start) => row.wait = Some((partition, start)),
                            Err(DeleteRecordsError::NotLeader) => {
                                row.error = Some(ResponseError::NotLeaderOrFollower);
                            }
                            Err(DeleteRecordsError::BeyondHighWatermark { .. }) => {
                                row.error = Some(ResponseError::OffsetOutOfRange);
                            }
                            Err(DeleteRecordsError::Storage(e)) => {
                                tracing::error!(topic = %partition.topic, partition = partition.index,
                                    error = %e, "deleting records failed");
                                partition.fail();
                                row.error = Some(ResponseError::KafkaStorageError);
                            }
                        }
                    }
                }
                topics
            })
            .await;
            let Ok(mut topics) = topics else {
                return ResponseKind::DeleteRecords(DeleteRecordsResponse::default());
            };
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
            loop {
                let mut waiting = false;
                for (_, rows) in &mut topics {
                    for row in rows.iter_mut() {
                        if let Some((partition, target)) = &row.wait {
                            row.low_watermark = partition.low_watermark();
                            waiting |= row.low_watermark < *target;
                        }
                    }
                }
                if !waiting || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(LOW_WATERMARK_POLL_MS)).await;
            }
            let results = topics
                .into_iter()
                .map(|(name, rows)| {
                    let partitions = rows
                        .into_iter()
                        .map(|row| {
                            let error = match (&row.error, &row.wait) {
                                (Some(e), _) => Some(*e),
                                (None, Some((_, target))) if row.low_watermark < *target => {
                                    Some(ResponseError::RequestTimedOut)
                                }
                                _ => None,
                            };
                            DeleteRecordsPartitionResult::default()
                                .with_partition_index(row.index)
                                .with_low_watermark(row.low_watermark)
                                .with_error_code(error.map_or(0, code))
                        })
                        .collect();
                    DeleteRecordsTopicResult::default()
                        .with_name(name)
                        .with_partitions(partitions)
                })
                .collect();
            ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(results))
        }))
    }
}
