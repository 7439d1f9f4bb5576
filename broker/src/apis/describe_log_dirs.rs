//! DescribeLogDirs: where this broker keeps its replicas and how large they are, as
//! `kafka-log-dirs.sh --describe`, AdminClient.describeLogDirs and cluster UIs (topic sizes)
//! ask for it.
//!
//! A broker has one log directory (`--data-dir`). Each replica it holds (in a cluster: each
//! partition the metadata names it a replica of), leader or follower, is listed with its size
//! on disk; the offset lag is how far its log end trails its high watermark (Kafka's
//! definition for a current replica, so 0 unless a follower is behind what it knows to be
//! committed). There are no future replicas (no moves between directories), and v4's volume
//! sizes come from the file system (-1 where the storage has none, as under the simulator).
//! A single broker's group log (`__consumer_offsets` partition 0, which the group manager
//! owns rather than the replica manager) is listed like a topic, as Kafka lists its internal
//! topic; a cluster's is a replicated topic and listed with the others.
//! Null topics means every replica; named partitions this broker does not hold are left out,
//! as Kafka does, and one named twice is listed once. Version 0 is version 1 on the wire
//! (Kafka 4 dropped it, but kafka-python still sends it): see
//! [`crate::protocol::body_version`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::KafkaApis;
use crate::replica::{Partition, Topic};
use crate::server::group_manager::OFFSETS_TOPIC;
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn describe_log_dirs(
        &self,
        request: DescribeLogDirsRequest,
    ) -> DescribeLogDirsResponse {
        // In a cluster every broker opens every partition; it holds only those the metadata
        // names it a replica of.
        let image = self.cluster.as_ref().map(|view| (view.me, view.image()));
        let held = |topic: &str, index: i32| match &image {
            None => true,
            Some((me, image)) => image
                .topic_ids
                .get(topic)
                .and_then(|id| image.topics.get(id))
                .and_then(|t| t.partitions.get(usize::try_from(index).ok()?))
                .is_some_and(|p| p.replicas.contains(me)),
        };
        let group_log = match (&self.cluster, &request.topics) {
            (Some(_), _) => None,
            (None, None) => self.groups.log(),
            (None, Some(named)) => self.groups.log().filter(|log| {
                named.iter().any(|w| {
                    w.topic.0.as_str() == OFFSETS_TOPIC && w.partitions.contains(&log.index)
                })
            }),
        };
        let mut topics = Vec::new();
        let wanted: Vec<Asked<S>> = match request.topics {
            None => self
                .replicas
                .topics()
                .into_iter()
                .map(|t| {
                    let all = t.partitions();
                    (t, all)
                })
                .collect(),
            Some(named) => {
                // Each partition once, however often it is named (Kafka asks with a set), so
                // the answer is never larger than what this broker holds.
                let mut asked: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
                for w in &named {
                    asked
                        .entry(w.topic.0.as_str())
                        .or_default()
                        .extend(w.partitions.iter().copied());
                }
                asked
                    .into_iter()
                    .filter_map(|(name, indexes)| {
                        let topic = self.replicas.topic(name)?;
                        let some = indexes
                            .into_iter()
                            .filter_map(|index| topic.partition(index))
                            .collect();
                        Some((topic, some))
                    })
                    .collect()
            }
        };
        for (topic, partitions) in wanted {
            let here: Vec<_> = partitions
                .iter()
                .filter(|p| held(&topic.name, p.index))
                .map(|p| &**p)
                .collect();
            if !here.is_empty() {
                topics.push(described(&topic.name, here.into_iter()));
            }
        }
        if let Some(log) = group_log {
            topics.push(described(OFFSETS_TOPIC, std::iter::once(&*log)));
        }
        let config = self.replicas.config();
        let dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        let space = self.replicas.volume_space();
        let result = DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(space.map_or(-1, |s| clamp_i64(s.total_bytes)))
            .with_usable_bytes(space.map_or(-1, |s| clamp_i64(s.usable_bytes)));
        DescribeLogDirsResponse::default().with_results(vec![result])
    }
}

/// A topic and the partitions of it a request asks about.
type Asked<S> = (Arc<Topic<S>>, Vec<Arc<Partition<S>>>);

/// One topic's row: each of its partitions held here, with its size and lag.
fn described<'a, S: Storage + Clone>(
    name: &str,
    partitions: impl Iterator<Item = &'a Partition<S>>,
) -> DescribeLogDirsTopic {
    let rows = partitions
        .map(|p| {
            let core = p.core();
            let log = core.log();
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(clamp_i64(log.size_bytes()))
                .with_offset_lag((core.high_watermark() - log.log_end_offset()).max(0))
                .with_is_future_key(false)
        })
        .collect();
    DescribeLogDirsTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_partitions(rows)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
