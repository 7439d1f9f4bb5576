//! AlterPartitionReassignments and ListPartitionReassignments: an operator's replica moves
//! (`kafka-reassign-partitions.sh`, AdminClient.alterPartitionReassignments), KIP-455.
//!
//! Alter, cluster: topic names become ids from this broker's image; the named partitions go to
//! the active controller in requests of at most [`REASSIGN_PARTITIONS_MAX`], which starts,
//! replaces or cancels each reassignment on the committed metadata (new replicas catch up, then
//! the target becomes the replica set). The answer waits (bounded) until this broker's image
//! shows each accepted change, so the client's next List or Metadata sees it. List answers from
//! this broker's image: the partitions with a reassignment in progress, with their adding and
//! removing replicas. A single broker holds every partition itself: the only target it takes
//! is itself (a no-op), and nothing is ever being reassigned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::{controller_error, AdminTimeout};
use super::{code, KafkaApis, Reply};
use crate::cluster::controller::{
    ControllerError, ControllerRequest, ReassignOutcome, REASSIGN_PARTITIONS_MAX,
};
use crate::cluster::ClusterView;
use crate::config::VOTERS_MAX;
use crate::raft::metadata::PartitionImage;
use crate::raft::{MetadataImage, NodeId};
use crate::storage::Storage;

/// Most partitions one AlterPartitionReassignments request may name (each costs a controller
/// decision; the controller takes them [`REASSIGN_PARTITIONS_MAX`] at a time).
pub const REASSIGN_NAMED_MAX: usize = 100_000;

/// Only voters register as brokers, so a target longer than this cannot be a list of distinct
/// registered brokers; it is refused here, before it costs a controller request.
const TARGET_REPLICAS_MAX: usize = VOTERS_MAX;

/// One partition's answer: (error, message).
type Outcome = Option<(ResponseError, String)>;

/// One named partition: topic, partition, target replicas (`None`: cancel).
type Named = (String, i32, Option<Vec<NodeId>>);

/// One partition as the controller takes it: topic id, partition, target (`None`: cancel).
type Move = ([u8; 16], u32, Option<Vec<NodeId>>);

fn refused(error: ResponseError, message: impl Into<String>) -> Outcome {
    Some((error, message.into()))
}

fn outcome_error(o: &ReassignOutcome) -> Outcome {
    match o {
        ReassignOutcome::Accepted => None,
        ReassignOutcome::NoReassignmentInProgress => refused(
            ResponseError::NoReassignmentInProgress,
            "no reassignment of the partition is in progress",
        ),
        ReassignOutcome::UnknownPartition => unknown(),
        ReassignOutcome::InvalidReplicas(m) => {
            refused(ResponseError::InvalidReplicaAssignment, m.clone())
        }
    }
}

fn unknown() -> Outcome {
    refused(
        ResponseError::UnknownTopicOrPartition,
        "unknown topic or partition",
    )
}

/// The named partitions, in request order, each once (its first entry counts).
fn named(request: &AlterPartitionReassignmentsRequest) -> Vec<Named> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for t in &request.topics {
        for p in &t.partitions {
            let topic = t.name.0.to_string();
            if seen.insert((topic.clone(), p.partition_index)) {
                let target = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                out.push((topic, p.partition_index, target));
            }
        }
    }
    out
}

/// Groups `(topic, partition, outcome)` rows by topic, in the order topics first appear.
fn alter_response(
    rows: Vec<(String, i32, Outcome)>,
    top: Outcome,
    allow_rf_change: bool,
) -> ResponseKind {
    let mut order: Vec<String> = Vec::new();
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for (topic, partition, outcome) in rows {
        if !by_topic.contains_key(&topic) {
            order.push(topic.clone());
        }
        let (error, message) = match outcome {
            None => (0, None),
            Some((e, m)) => (code(e), Some(StrBytes::from_string(m))),
        };
        let row = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(error)
            .with_error_message(message);
        by_topic.entry(topic).or_default().push(row);
    }
    let responses = order
        .into_iter()
        .map(|topic| {
            let rows = by_topic.remove(&topic).unwrap_or_default();
            ReassignableTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(rows)
        })
        .collect();
    let (error, message) = match top {
        None => (0, None),
        Some((e, m)) => (code(e), Some(StrBytes::from_string(m))),
    };
    ResponseKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(allow_rf_change)
            .with_error_code(error)
            .with_error_message(message)
            .with_responses(responses),
    )
}

/// Whether `target` would pass the controller's own checks as far as this broker's image
/// tells: not empty, distinct, registered brokers.
fn plausible(image: &MetadataImage, target: &[NodeId]) -> bool {
    let distinct: BTreeSet<&NodeId> = target.iter().collect();
    !target.is_empty()
        && distinct.len() == target.len()
        && target.iter().all(|b| image.brokers.contains_key(b))
}

fn partition<'a>(image: &'a MetadataImage, id: &[u8; 16], p: u32) -> Option<&'a PartitionImage> {
    image
        .topics
        .get(id)
        .and_then(|t| t.partitions.get(p as usize))
}

/// Whether `image` shows an accepted change: the target (moving to it, or there), or no
/// reassignment after a cancellation. A partition gone (deleted topic) waits for nothing.
fn shows(image: &MetadataImage, id: &[u8; 16], p: u32, target: &Option<Vec<NodeId>>) -> bool {
    match (partition(image, id, p), target) {
        (None, _) => true,
        (Some(p), Some(t)) => p.target_replicas() == *t,
        (Some(p), None) => !p.reassigning(),
    }
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn alter_partition_reassignments(
        &self,
        request: AlterPartitionReassignmentsRequest,
        version: i16,
    ) -> Reply {
        // v0 has no such field: the replication factor may always change.
        let allow_rf_change = version < 1 || request.allow_replication_factor_change;
        let named = named(&request);
        if named.len() > REASSIGN_NAMED_MAX {
            // The whole request is refused: the top-level error and every row.
            let error = refused(
                ResponseError::InvalidRequest,
                format!("at most {REASSIGN_NAMED_MAX} partitions per request"),
            );
            let rows = named
                .into_iter()
                .map(|(t, p, _)| (t, p, error.clone()))
                .collect();
            return Reply::Now(alter_response(rows, error, allow_rf_change));
        }
        match &self.cluster {
            None => Reply::Now(self.single_broker_alter(named, allow_rf_change)),
            Some(view) => {
                let view = Arc::clone(view);
                let timeout = AdminTimeout::new(request.timeout_ms);
                Reply::Later(Box::pin(cluster_alter(
                    view,
                    named,
                    allow_rf_change,
                    timeout,
                )))
            }
        }
    }

    /// A single broker holds every partition: the only target is itself, already in place.
    fn single_broker_alter(&self, named: Vec<Named>, allow_rf_change: bool) -> ResponseKind {
        let me = self.advertised.node_id;
        let rows = named
            .into_iter()
            .map(|(topic, p, target)| {
                let exists = self
                    .replicas
                    .topic(&topic)
                    .is_some_and(|t| p >= 0 && t.partition(p).is_some());
                let o = match target {
                    _ if !exists => unknown(),
                    None => outcome_error(&ReassignOutcome::NoReassignmentInProgress),
                    Some(t) if t == [me] => None,
                    Some(t) => refused(
                        ResponseError::InvalidReplicaAssignment,
                        format!("replicas {t:?}: a single broker's only replica is broker {me}"),
                    ),
                };
                (topic, p, o)
            })
            .collect();
        alter_response(rows, None, allow_rf_change)
    }

    pub(super) fn list_partition_reassignments(
        &self,
        request: ListPartitionReassignmentsRequest,
    ) -> ResponseKind {
        let topics = match &self.cluster {
            None => Vec::new(),
            Some(view) => ongoing(&view.image(), &request),
        };
        ResponseKind::ListPartitionReassignments(
            ListPartitionReassignmentsResponse::default()
                .with_error_message(None)
                .with_topics(topics),
        )
    }
}

/// The reassignments in progress that `request` asks about (every one when it names no
/// topics), by topic name then partition. As in Kafka, named partitions that are not being
/// reassigned, and unknown topics, are left out.
fn ongoing(
    image: &MetadataImage,
    request: &ListPartitionReassignmentsRequest,
) -> Vec<OngoingTopicReassignment> {
    let wanted: BTreeMap<&str, Option<BTreeSet<i32>>> = match &request.topics {
        None => image.topic_ids.keys().map(|n| (n.as_str(), None)).collect(),
        Some(topics) => {
            let mut wanted: BTreeMap<&str, Option<BTreeSet<i32>>> = BTreeMap::new();
            for t in topics {
                let set = wanted
                    .entry(t.name.0.as_str())
                    .or_insert(Some(BTreeSet::new()));
                if let Some(set) = set {
                    set.extend(t.partition_indexes.iter().copied());
                }
            }
            wanted
        }
    };
    let ids = |ids: &[NodeId]| ids.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (name, partitions) in wanted {
        let Some(topic) = image
            .topic_ids
            .get(name)
            .and_then(|id| image.topics.get(id))
        else {
            continue;
        };
        let indexes: Box<dyn Iterator<Item = i32>> = match partitions {
            None => Box::new(0..topic.partitions.len() as i32),
            Some(set) => Box::new(set.into_iter().filter(|&p| p >= 0)),
        };
        let rows: Vec<OngoingPartitionReassignment> = indexes
            .filter_map(|i| Some((i, topic.partitions.get(i as usize)?)))
            .filter(|(_, p)| p.reassigning())
            .map(|(i, p)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(i)
                    .with_replicas(ids(&p.replicas))
                    .with_adding_replicas(ids(&p.adding))
                    .with_removing_replicas(ids(&p.removing))
            })
            .collect();
        if !rows.is_empty() {
            out.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_partitions(rows),
            );
        }
    }
    out
}

async fn cluster_alter(
    view: Arc<ClusterView>,
    named: Vec<Named>,
    allow_rf_change: bool,
    timeout: AdminTimeout,
) -> ResponseKind {
    let image = view.image();
    // Rows in request order; the known partitions are sent, the others answered here.
    let mut rows: Vec<(String, i32, Outcome)> = Vec::with_capacity(named.len());
    let mut send: Vec<(usize, Move)> = Vec::new();
    for (topic, p, target) in named {
        let id = image.topic_ids.get(&topic).copied().filter(|_| p >= 0);
        let o = match (id, &target) {
            (None, _) => unknown(),
            (Some(_), Some(t)) if t.len() > TARGET_REPLICAS_MAX => refused(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} replicas: a cluster has at most {TARGET_REPLICAS_MAX} brokers",
                    t.len()
                ),
            ),
            (Some(id), Some(t)) => {
                // KIP-860: without leave to change it, the target keeps the replication factor
                // the partition is headed for (checked after the target's own validity, as
                // Kafka does; the controller judges targets that do not look valid here).
                let headed = partition(&image, &id, p as u32).map(|p| p.target_replicas().len());
                match headed {
                    Some(n) if !allow_rf_change && n != t.len() && plausible(&image, t) => refused(
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "the replication factor would change from {n} to {}",
                            t.len()
                        ),
                    ),
                    _ => None,
                }
            }
            (Some(_), None) => None,
        };
        if let (Some(id), None) = (id, &o) {
            send.push((rows.len(), (id, p as u32, target)));
        }
        rows.push((topic, p, o));
    }
    let mut accepted: Vec<(usize, Move)> = Vec::new();
    let mut failed: Outcome = None;
    let mut answered = false;
    for chunk in send.chunks(REASSIGN_PARTITIONS_MAX) {
        let partitions = chunk.iter().map(|(_, m)| m.clone()).collect();
        let request = ControllerRequest::AlterReassignments { partitions };
        let r = match timeout.controller_request(&view, request).await {
            Ok(r) if r.error == ControllerError::None => r,
            answer => {
                let error = Some(answer.map_or_else(|e| e, |r| controller_error(&r.error)));
                for (row, _) in chunk {
                    rows[*row].2 = error.clone();
                }
                failed = failed.or(error);
                continue;
            }
        };
        answered = true;
        // The controller answers each distinct partition once, in order; match them up.
        let outcomes: BTreeMap<([u8; 16], u32), &ReassignOutcome> = r
            .reassignments
            .iter()
            .map(|(id, p, o)| ((*id, *p), o))
            .collect();
        for (row, (id, p, target)) in chunk {
            let o = outcomes
                .get(&(*id, *p))
                .copied()
                .unwrap_or(&ReassignOutcome::UnknownPartition);
            if *o == ReassignOutcome::Accepted {
                accepted.push((*row, (*id, *p, target.clone())));
            }
            rows[*row].2 = outcome_error(o);
        }
    }
    if !accepted.is_empty() {
        let shown =
            |img: &MetadataImage| accepted.iter().all(|(_, (id, p, t))| shows(img, id, *p, t));
        if let Some(not_awaited) = timeout.accepted(&view, shown).await {
            for (row, _) in &accepted {
                rows[*row].2 = Some(not_awaited.clone());
            }
        }
    }
    // The request as a whole failed when no controller request was answered.
    let top = if answered { None } else { failed };
    alter_response(rows, top, allow_rf_change)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;

    use super::*;
    use crate::raft::metadata::{BrokerRegistration, TopicImage};

    fn partition(replicas: &[NodeId], adding: &[NodeId], removing: &[NodeId]) -> PartitionImage {
        PartitionImage {
            leader: replicas[0],
            leader_epoch: 1,
            isr: replicas.to_vec(),
            replicas: replicas.to_vec(),
            elr: Vec::new(),
            adding: adding.to_vec(),
            removing: removing.to_vec(),
            partition_epoch: 0,
        }
    }

    /// Topic "a": partition 0 moving from [1] to [2, 3], partition 1 settled; topic "b":
    /// partition 0 shrinking from [1, 2] to [2]; brokers 1-3.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let topics = [
            (
                "a",
                [1; 16],
                vec![
                    partition(&[2, 3, 1], &[2, 3], &[1]),
                    partition(&[1], &[], &[]),
                ],
            ),
            ("b", [2; 16], vec![partition(&[2, 1], &[], &[1])]),
        ];
        for (name, id, partitions) in topics {
            image.topic_ids.insert(name.to_string(), id);
            let topic = TopicImage {
                name: name.to_string(),
                partitions,
                configs: BTreeMap::new(),
            };
            image.topics.insert(id, topic);
        }
        for b in 1..=3 {
            let registration = BrokerRegistration {
                host: "h".into(),
                port: 9092,
                epoch: 1,
                fenced: false,
                rack: None,
                directory_id: None,
            };
            image.brokers.insert(b, registration);
        }
        image
    }

    /// (topic, partition, replicas, adding, removing) rows.
    fn listed(image: &MetadataImage, topics: Option<Vec<(&str, Vec<i32>)>>) -> Vec<String> {
        let topics = topics.map(|ts| {
            ts.into_iter()
                .map(|(name, ps)| {
                    ListPartitionReassignmentsTopics::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partition_indexes(ps)
                })
                .collect()
        });
        let request = ListPartitionReassignmentsRequest::default().with_topics(topics);
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        let mut out = Vec::new();
        for t in ongoing(image, &request) {
            for p in t.partitions {
                out.push(format!(
                    "{} {} {:?} {:?} {:?}",
                    t.name.0,
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas)
                ));
            }
        }
        out
    }

    #[test]
    fn list_shows_only_reassigning_partitions_of_known_topics() {
        let image = image();
        let a0 = "a 0 [2, 3, 1] [2, 3] [1]".to_string();
        let b0 = "b 0 [2, 1] [] [1]".to_string();
        assert_eq!(listed(&image, None), vec![a0.clone(), b0.clone()]);
        // Named: settled, unknown and negative partitions and unknown topics are left out; a
        // topic named twice is listed once.
        let named = vec![
            ("b", vec![0, 5]),
            ("a", vec![1, -1]),
            ("none", vec![0]),
            ("a", vec![0, 0]),
        ];
        assert_eq!(listed(&image, Some(named)), vec![a0, b0]);
        assert_eq!(
            listed(&image, Some(vec![("a", vec![1])])),
            Vec::<String>::new()
        );
        assert_eq!(listed(&image, Some(vec![])), Vec::<String>::new());
    }

    #[test]
    fn accepted_changes_show_by_target_or_by_no_reassignment() {
        let image = image();
        assert!(shows(&image, &[1; 16], 0, &Some(vec![2, 3])));
        assert!(!shows(&image, &[1; 16], 0, &Some(vec![3, 2])));
        assert!(!shows(&image, &[1; 16], 0, &None));
        assert!(shows(&image, &[1; 16], 1, &Some(vec![1])));
        assert!(shows(&image, &[1; 16], 1, &None));
        // A partition that is gone waits for nothing.
        assert!(shows(&image, &[1; 16], 9, &None));
        assert!(shows(&image, &[7; 16], 0, &Some(vec![1])));
    }

    #[test]
    fn plausible_targets_are_distinct_registered_brokers() {
        let image = image();
        assert!(plausible(&image, &[3, 1]));
        assert!(!plausible(&image, &[]));
        assert!(!plausible(&image, &[1, 1]));
        assert!(!plausible(&image, &[1, 4]));
    }
}
