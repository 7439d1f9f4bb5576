//! OffsetForLeaderEpoch (KIP-101/KIP-320): for each partition, the end offset of the requested
//! leader epoch in this leader's log (the start of the next epoch, or the log end for the
//! current one). Consumers use it after a leader change to detect that the log they read was
//! truncated; only the leader answers.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis};
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
        _version: i16,
    ) -> OffsetForLeaderEpochResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.replicas.topic(t.topic.0.as_str());
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition))
                        else {
                            return r.with_error_code(code(ResponseError::UnknownTopicOrPartition));
                        };
                        if partition.is_failed() {
                            return r.with_error_code(code(ResponseError::KafkaStorageError));
                        }
                        if let Some(error) = super::fetch::leader_check(
                            partition.is_leader(),
                            partition.leader_epoch(),
                            p.current_leader_epoch,
                        ) {
                            return r.with_error_code(code(error));
                        }
                        let core = partition.core();
                        match core.log().end_offset_for_epoch(p.leader_epoch) {
                            Some((epoch, end)) => r.with_leader_epoch(epoch).with_end_offset(end),
                            // Nothing cached (an empty log): the log end is the answer.
                            None => r.with_end_offset(core.log().log_end_offset()),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}
