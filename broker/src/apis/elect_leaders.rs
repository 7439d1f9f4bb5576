//! ElectLeaders: the elections an operator asks for (`kafka-leader-election.sh`,
//! AdminClient.electLeaders). Preferred moves leadership back to each partition's first
//! replica; unclean gives a leaderless partition any live replica.
//!
//! Cluster: the named partitions (every partition that may need one, when the request names
//! none) go to the active controller in requests of at most [`ELECT_PARTITIONS_MAX`], which
//! decides each on the committed metadata; the answer waits (bounded) until this broker's image
//! shows the new leaders, so the client's next Metadata sees them. A single broker leads every
//! partition it has: an existing partition needs no election.
//!
//! As in Kafka, a request that names no partitions is answered only with the partitions an
//! election was tried for (ELECTION_NOT_NEEDED ones are left out); named partitions each get a
//! row.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::cluster::{controller_error, AdminTimeout};
use super::{code, KafkaApis, Reply};
use crate::cluster::controller::{
    ControllerError, ControllerRequest, ElectionOutcome, ELECT_PARTITIONS_MAX,
};
use crate::cluster::ClusterView;
use crate::raft::MetadataImage;
use crate::storage::Storage;

/// Most partitions one ElectLeaders request may name (each costs a controller decision; the
/// controller takes them [`ELECT_PARTITIONS_MAX`] at a time).
pub const ELECT_LEADERS_NAMED_MAX: usize = 100_000;

/// Election types on the wire (v1+); v0 is always preferred.
const ELECTION_PREFERRED: i8 = 0;
const ELECTION_UNCLEAN: i8 = 1;

/// One partition's answer: (error, message).
type Outcome = Option<(ResponseError, String)>;

fn outcome_error(o: ElectionOutcome) -> Outcome {
    let e = match o {
        ElectionOutcome::Elected => return None,
        ElectionOutcome::NotNeeded => ResponseError::ElectionNotNeeded,
        ElectionOutcome::PreferredNotAvailable => ResponseError::PreferredLeaderNotAvailable,
        ElectionOutcome::EligibleNotAvailable => ResponseError::EligibleLeadersNotAvailable,
        ElectionOutcome::UnknownPartition => ResponseError::UnknownTopicOrPartition,
    };
    let message = match o {
        ElectionOutcome::NotNeeded => "the partition's leader needs no election",
        ElectionOutcome::PreferredNotAvailable => {
            "the preferred replica is not in the ISR or not alive"
        }
        ElectionOutcome::EligibleNotAvailable => "no live replica can lead the partition",
        _ => "unknown topic or partition",
    };
    Some((e, message.to_string()))
}

/// Groups `(topic, partition, outcome)` rows by topic, in the order topics first appear.
fn response(rows: Vec<(String, i32, Outcome)>) -> ResponseKind {
    let mut order: Vec<String> = Vec::new();
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, outcome) in rows {
        if !by_topic.contains_key(&topic) {
            order.push(topic.clone());
        }
        let mut row = PartitionResult::default().with_partition_id(partition);
        if let Some((error, message)) = outcome {
            row = row
                .with_error_code(code(error))
                .with_error_message(Some(StrBytes::from_string(message)));
        }
        by_topic.entry(topic).or_default().push(row);
    }
    let results = order
        .into_iter()
        .map(|topic| {
            let rows = by_topic.remove(&topic).unwrap_or_default();
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(topic)))
                .with_partition_result(rows)
        })
        .collect();
    ResponseKind::ElectLeaders(
        ElectLeadersResponse::default().with_replica_election_results(results),
    )
}

/// The named partitions, in request order, each once.
fn named(request: &ElectLeadersRequest) -> Option<Vec<(String, i32)>> {
    let topics = request.topic_partitions.as_ref()?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for t in topics {
        for &p in &t.partitions {
            let key = (t.topic.0.to_string(), p);
            if seen.insert(key.clone()) {
                out.push(key);
            }
        }
    }
    Some(out)
}

/// Every partition of `image` the election may change: preferred, those not led by their
/// first replica; unclean, the leaderless ones.
fn candidates(image: &MetadataImage, unclean: bool) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partitions.iter().enumerate() {
            let needs = if unclean {
                p.leader == -1
            } else {
                p.replicas.first().is_some_and(|&f| f != p.leader)
            };
            if needs {
                out.push((t.name.clone(), i as i32));
            }
        }
    }
    out
}

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn elect_leaders(&self, request: ElectLeadersRequest, version: i16) -> Reply {
        let election = if version >= 1 {
            request.election_type
        } else {
            ELECTION_PREFERRED
        };
        let named = named(&request);
        let too_many = named
            .as_ref()
            .is_some_and(|n| n.len() > ELECT_LEADERS_NAMED_MAX);
        let known_type = election == ELECTION_PREFERRED || election == ELECTION_UNCLEAN;
        if too_many || !known_type {
            // The whole request is refused: the top-level error (v1+) and every named row.
            let message = if too_many {
                format!("at most {ELECT_LEADERS_NAMED_MAX} partitions per request")
            } else {
                format!("unknown election type {election}")
            };
            let rows = named.unwrap_or_default().into_iter();
            let error = Some((ResponseError::InvalidRequest, message));
            let rows = rows.map(|(t, p)| (t, p, error.clone())).collect();
            let mut r = response(rows);
            if let ResponseKind::ElectLeaders(r) = &mut r {
                // v0 has no top-level error (encoding one fails); its rows say it.
                if version >= 1 {
                    r.error_code = code(ResponseError::InvalidRequest);
                }
            }
            return Reply::Now(r);
        }
        let unclean = election == ELECTION_UNCLEAN;
        match &self.cluster {
            None => Reply::Now(self.single_broker_elect(named)),
            Some(view) => {
                let view = Arc::clone(view);
                let timeout = AdminTimeout::new(request.timeout_ms);
                Reply::Later(Box::pin(cluster_elect(view, named, unclean, timeout)))
            }
        }
    }

    /// A single broker leads all it has: nothing to elect.
    fn single_broker_elect(&self, named: Option<Vec<(String, i32)>>) -> ResponseKind {
        let Some(named) = named else {
            return response(Vec::new());
        };
        let rows = named
            .into_iter()
            .map(|(topic, p)| {
                let exists = self
                    .replicas
                    .topic(&topic)
                    .is_some_and(|t| p >= 0 && t.partition(p).is_some());
                let o = if exists {
                    ElectionOutcome::NotNeeded
                } else {
                    ElectionOutcome::UnknownPartition
                };
                (topic, p, outcome_error(o))
            })
            .collect();
        response(rows)
    }
}

async fn cluster_elect(
    view: Arc<ClusterView>,
    named: Option<Vec<(String, i32)>>,
    unclean: bool,
    timeout: AdminTimeout,
) -> ResponseKind {
    let image = view.image();
    let all = named.is_none();
    let wanted = named.unwrap_or_else(|| candidates(&image, unclean));
    // Rows in request order; the known partitions are sent, the others answered here.
    let mut rows: Vec<(String, i32, Outcome)> = Vec::with_capacity(wanted.len());
    let mut send: Vec<(usize, [u8; 16], u32)> = Vec::new();
    for (topic, p) in wanted {
        let id = image.topic_ids.get(&topic).copied().filter(|_| p >= 0);
        let o = match id {
            Some(id) => {
                send.push((rows.len(), id, p as u32));
                None
            }
            None => outcome_error(ElectionOutcome::UnknownPartition),
        };
        rows.push((topic, p, o));
    }
    // Epochs before the elections: an elected partition is visible here once its epoch moves.
    let epoch_of = |img: &MetadataImage, id: &[u8; 16], p: u32| {
        img.topics
            .get(id)
            .and_then(|t| t.partitions.get(p as usize))
            .map(|p| p.leader_epoch)
    };
    let mut elected: Vec<(usize, [u8; 16], u32, Option<i32>)> = Vec::new();
    for chunk in send.chunks(ELECT_PARTITIONS_MAX) {
        let partitions = chunk.iter().map(|&(_, id, p)| (id, p)).collect();
        let request = ControllerRequest::ElectLeaders {
            unclean,
            partitions,
        };
        let r = match timeout.controller_request(&view, request).await {
            Ok(r) if r.error == ControllerError::None => r,
            answer => {
                let failed = Some(answer.map_or_else(|e| e, |r| controller_error(&r.error)));
                for &(row, _, _) in chunk {
                    rows[row].2 = failed.clone();
                }
                continue;
            }
        };
        // The controller answers each distinct partition once, in order; match them up.
        let outcomes: BTreeMap<([u8; 16], u32), ElectionOutcome> =
            r.elections.iter().map(|&(id, p, o)| ((id, p), o)).collect();
        for &(row, id, p) in chunk {
            let o = outcomes
                .get(&(id, p))
                .copied()
                .unwrap_or(ElectionOutcome::UnknownPartition);
            if o == ElectionOutcome::Elected {
                elected.push((row, id, p, epoch_of(&image, &id, p)));
            }
            rows[row].2 = outcome_error(o);
        }
    }
    if !elected.is_empty() {
        let shown = |img: &MetadataImage| {
            elected
                .iter()
                .all(|(_, id, p, before)| epoch_of(img, id, *p) > *before)
        };
        if let Some(not_awaited) = timeout.accepted(&view, shown).await {
            for &(row, ..) in &elected {
                rows[row].2 = Some(not_awaited.clone());
            }
        }
    }
    if all {
        rows.retain(|(_, _, o)| !matches!(o, Some((ResponseError::ElectionNotNeeded, _))));
    }
    response(rows)
}
