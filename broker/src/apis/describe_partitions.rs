//! DescribeTopicPartitions (KIP-966): Metadata's partition view plus each partition's eligible
//! leader replicas, paged by a cursor (topic, partition) and a partition limit. The pager here
//! is shared by the single broker and the cluster; each builds the topic views it knows.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::code;

/// Most partitions one response describes (Kafka's `max.request.partition.size.limit`).
pub const PARTITIONS_PER_RESPONSE_MAX: usize = 2_000;
/// Most topics one request may name.
pub const TOPICS_PER_REQUEST_MAX: usize = 10_000;

/// One partition as the broker knows it.
pub(super) struct PartitionView {
    pub index: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub elr: Vec<i32>,
    pub offline: Vec<i32>,
}

pub(super) struct TopicView {
    pub id: Uuid,
    pub partitions: Vec<PartitionView>,
}

/// The topic names a request asks about, sorted and deduplicated (the cursor walks this
/// order); `None` for "every topic".
pub(super) fn requested(request: &DescribeTopicPartitionsRequest) -> Option<Vec<String>> {
    if request.topics.is_empty() {
        return None;
    }
    let names = request.topics.iter().take(TOPICS_PER_REQUEST_MAX);
    let mut names: Vec<String> = names.map(|t| t.name.0.as_str().to_string()).collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// One page of `topics` (sorted by name; `None`: unknown topic) from the request's cursor, at
/// most its partition limit; the response's cursor names the first partition left out.
pub(super) fn page(
    request: &DescribeTopicPartitionsRequest,
    topics: BTreeMap<String, Option<TopicView>>,
) -> DescribeTopicPartitionsResponse {
    let limit = usize::try_from(request.response_partition_limit)
        .ok()
        .filter(|&l| l > 0)
        .map_or(PARTITIONS_PER_RESPONSE_MAX, |l| {
            l.min(PARTITIONS_PER_RESPONSE_MAX)
        });
    let (from_topic, from_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.0.as_str().to_string()), c.partition_index),
        None => (None, 0),
    };
    let mut out = Vec::new();
    let mut described = 0usize;
    let mut next = None;
    for (name, view) in topics {
        if from_topic.as_ref().is_some_and(|f| name < *f) {
            continue;
        }
        let topic_name = Some(TopicName(StrBytes::from_string(name.clone())));
        let Some(view) = view else {
            out.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                    .with_name(topic_name),
            );
            continue;
        };
        let first = if from_topic.as_ref() == Some(&name) {
            from_partition.max(0)
        } else {
            0
        };
        let mut partitions = Vec::new();
        for p in view.partitions.into_iter().filter(|p| p.index >= first) {
            if described == limit {
                next = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partition_index(p.index),
                );
                break;
            }
            described += 1;
            partitions.push(describe(p));
        }
        out.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(topic_name)
                .with_topic_id(view.id)
                .with_is_internal(name.starts_with("__"))
                .with_partitions(partitions),
        );
        if next.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(out)
        .with_next_cursor(next)
}

fn describe(p: PartitionView) -> DescribeTopicPartitionsResponsePartition {
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let error = if p.leader < 0 {
        code(ResponseError::LeaderNotAvailable)
    } else {
        0
    };
    DescribeTopicPartitionsResponsePartition::default()
        .with_error_code(error)
        .with_partition_index(p.index)
        .with_leader_id(BrokerId(p.leader))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(ids(p.replicas))
        .with_isr_nodes(ids(p.isr))
        .with_eligible_leader_replicas(Some(ids(p.elr)))
        .with_last_known_elr(Some(Vec::new()))
        .with_offline_replicas(ids(p.offline))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};

    use super::*;

    fn topic(partitions: i32) -> Option<TopicView> {
        Some(TopicView {
            id: Uuid::nil(),
            partitions: (0..partitions)
                .map(|index| PartitionView {
                    index,
                    leader: 1,
                    leader_epoch: 3,
                    replicas: vec![1, 2],
                    isr: vec![1],
                    elr: vec![2],
                    offline: vec![],
                })
                .collect(),
        })
    }

    fn topics() -> BTreeMap<String, Option<TopicView>> {
        [("a", topic(3)), ("b", None), ("c", topic(2))]
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .collect()
    }

    /// (topic, partition) pairs of a response, and its cursor.
    type Listed = (Vec<(String, i32)>, Option<(String, i32)>);

    fn listed(r: &DescribeTopicPartitionsResponse) -> Listed {
        let mut out = Vec::new();
        for t in &r.topics {
            let name = t.name.as_ref().unwrap().0.to_string();
            if t.error_code != 0 {
                out.push((name.clone(), -1));
            }
            for p in &t.partitions {
                out.push((name.clone(), p.partition_index));
            }
        }
        let next = r
            .next_cursor
            .as_ref()
            .map(|c| (c.topic_name.0.to_string(), c.partition_index));
        (out, next)
    }

    #[test]
    fn pages_follow_the_cursor_and_show_the_elr() {
        let mut req = DescribeTopicPartitionsRequest::default().with_response_partition_limit(2);
        let r = page(&req, topics());
        let (got, next) = listed(&r);
        assert_eq!(got, vec![("a".into(), 0), ("a".into(), 1)]);
        assert_eq!(next, Some(("a".into(), 2)));
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.eligible_leader_replicas, Some(vec![BrokerId(2)]));
        assert_eq!(p.isr_nodes, vec![BrokerId(1)]);
        req = req.with_cursor(Some(
            Cursor::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("a")))
                .with_partition_index(2),
        ));
        let (got, next) = listed(&page(&req, topics()));
        assert_eq!(
            got,
            vec![("a".into(), 2), ("b".into(), -1), ("c".into(), 0)]
        );
        assert_eq!(next, Some(("c".into(), 1)));
        // No limit given: the broker's own bound.
        let all = DescribeTopicPartitionsRequest::default();
        let (got, next) = listed(&page(&all, topics()));
        assert_eq!(got.len(), 6);
        assert_eq!(next, None);
    }

    #[test]
    fn requested_names_are_sorted_and_unique() {
        let req = DescribeTopicPartitionsRequest::default().with_topics(
            ["c", "a", "c"]
                .into_iter()
                .map(|n| TopicRequest::default().with_name(TopicName(StrBytes::from_static_str(n))))
                .collect(),
        );
        assert_eq!(requested(&req), Some(vec!["a".into(), "c".into()]));
        assert_eq!(requested(&DescribeTopicPartitionsRequest::default()), None);
    }
}
