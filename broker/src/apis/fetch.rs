//! Fetch: serve stored batches up to the high watermark, byte-for-byte as stored. A fetch that
//! finds fewer than `min_bytes` waits, and is answered the moment enough data becomes visible
//! (any high watermark advance wakes it) or when `max_wait_ms` runs out.
//!
//! Fetch sessions (KIP-227) are declined by answering session id 0, so clients send full fetches.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::log::ReadError;
use crate::storage::Storage;

/// Longest a fetch may wait, whatever the client asks.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
/// Most bytes one fetch response carries, whatever the client asks (plus at most one batch).
pub const FETCH_RESPONSE_BYTES_MAX: i32 = 64 * 1024 * 1024;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn fetch(&self, request: FetchRequest, version: i16) -> Reply {
        let max_wait_ms = request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX);
        let min_bytes = request.min_bytes.max(0) as usize;
        let (response, bytes) = self.fetch_once(&request, version);
        if bytes >= min_bytes || max_wait_ms == 0 || bytes_unreachable(&response) {
            return Reply::Now(ResponseKind::Fetch(response));
        }
        let apis = self.clone();
        Reply::Later(Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(max_wait_ms as u64);
            loop {
                let seen = apis.replicas.data_version();
                let (response, bytes) = apis.fetch_once(&request, version);
                if bytes >= min_bytes || tokio::time::Instant::now() >= deadline {
                    return ResponseKind::Fetch(response);
                }
                let changed = apis.replicas.data_changed_since(seen);
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    // Deadline: answer with what there is.
                    return ResponseKind::Fetch(apis.fetch_once(&request, version).0);
                }
            }
        }))
    }

    /// Builds one fetch response from what is visible now; returns it with its record bytes.
    fn fetch_once(&self, request: &FetchRequest, version: i16) -> (FetchResponse, usize) {
        let response_bytes_max = if version >= 3 {
            request.max_bytes
        } else {
            FETCH_RESPONSE_BYTES_MAX
        };
        let mut remaining = response_bytes_max.clamp(0, FETCH_RESPONSE_BYTES_MAX) as usize;
        let mut total = 0usize;
        let mut topics = Vec::with_capacity(request.topics.len());
        for fetch_topic in &request.topics {
            let topic = self.replicas.topic(fetch_topic.topic.0.as_str());
            let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
            for fp in &fetch_topic.partitions {
                let mut data = PartitionData::default()
                    .with_partition_index(fp.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_records(Some(Bytes::new()));
                if version >= 4 {
                    data = data.with_aborted_transactions(Some(Vec::new()));
                }
                let Some(partition) = topic.as_ref().and_then(|t| t.partition(fp.partition)) else {
                    partitions
                        .push(data.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                    continue;
                };
                if partition.is_failed() || partition.is_closed() {
                    partitions.push(data.with_error_code(code(ResponseError::KafkaStorageError)));
                    continue;
                }
                let max_bytes = if remaining == 0 {
                    0
                } else {
                    (fp.partition_max_bytes.max(0) as usize)
                        .min(remaining)
                        .max(1)
                };
                let (result, high_watermark, log_start) =
                    partition.fetch(fp.fetch_offset, max_bytes);
                data = data
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(log_start);
                match result {
                    Ok(records) => {
                        remaining = remaining.saturating_sub(records.len());
                        total += records.len();
                        partitions.push(data.with_records(Some(records)));
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => {
                        partitions
                            .push(data.with_error_code(code(ResponseError::OffsetOutOfRange)));
                    }
                    Err(e) => {
                        tracing::error!(topic = %partition.topic, partition = fp.partition, error = %e, "read failed");
                        partitions
                            .push(data.with_error_code(code(ResponseError::KafkaStorageError)));
                    }
                }
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(fetch_topic.topic.clone())
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default()
                .with_session_id(0)
                .with_responses(topics),
            total,
        )
    }
}

/// True when waiting cannot help: some partition answered with an error the client must act on.
fn bytes_unreachable(response: &FetchResponse) -> bool {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .any(|p| p.error_code != 0)
}
