//! ListOffsets: earliest (-2), latest (-1, the high watermark), max timestamp (-3), or the first
//! offset whose batch timestamp is at or after a given time.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis};
use crate::storage::Storage;

pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.replicas.topic(t.name.0.as_str());
                let partitions = t
                    .partitions
                    .iter()
                    .map(|lp| {
                        let r = ListOffsetsPartitionResponse::default()
                            .with_partition_index(lp.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1);
                        let Some(partition) =
                            topic.as_ref().and_then(|t| t.partition(lp.partition_index))
                        else {
                            return r.with_error_code(code(ResponseError::UnknownTopicOrPartition));
                        };
                        if partition.is_failed() {
                            return r.with_error_code(code(ResponseError::KafkaStorageError));
                        }
                        let client_epoch = if version >= 4 {
                            lp.current_leader_epoch
                        } else {
                            -1
                        };
                        if let Some(error) = super::fetch::leader_check(
                            partition.is_leader(),
                            partition.leader_epoch(),
                            client_epoch,
                        ) {
                            return r.with_error_code(code(error));
                        }
                        let core = partition.core();
                        let (high_watermark, log) = (core.high_watermark(), core.log());
                        let found = match lp.timestamp {
                            EARLIEST_TIMESTAMP => Some((log.log_start_offset(), -1)),
                            LATEST_TIMESTAMP => Some((high_watermark, -1)),
                            MAX_TIMESTAMP if version >= 7 => log
                                .max_timestamp()
                                .filter(|(offset, _)| *offset < high_watermark),
                            ts if ts >= 0 => match log.offset_for_timestamp(ts) {
                                Ok(found) => found.filter(|(offset, _)| *offset < high_watermark),
                                Err(e) => {
                                    tracing::error!(error = %e, "offset for timestamp failed");
                                    return r
                                        .with_error_code(code(ResponseError::KafkaStorageError));
                                }
                            },
                            _ => return r.with_error_code(code(ResponseError::InvalidRequest)),
                        };
                        let (offset, timestamp) = found.unwrap_or((-1, -1));
                        let mut r = r.with_offset(offset).with_timestamp(timestamp);
                        if version >= 4 {
                            r = r.with_leader_epoch(core.leader_epoch());
                        }
                        r
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}
