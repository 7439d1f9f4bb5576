//! The binary encoding of [`ControllerRequest`]s and [`ControllerResponse`]s as they travel
//! inside `raft::wire` frames between nodes (the payload of a ControllerRequest frame, and the
//! error code, message and payload of a ControllerResponse frame).
//!
//! Request payload: `u8 version (1)`, `u8 kind`, then the fields big-endian; strings and lists
//! are `u32 length` + items (the metadata records' reader and writers). Every length is checked
//! against the bytes left and bounded; trailing bytes are refused. Response: error code (this
//! module's numbering, not Kafka's), the error's text as the message, and as the payload
//! nothing, or `1` + the created topic's id (16 bytes), or `2` + `u32 count` + per partition
//! an id, `u32 partition` and `u8 outcome` (an ElectLeaders answer), or `3` + `u32 count` +
//! per partition an id, `u32 partition`, `u8 outcome` and, for an invalid target, its reason
//! (an AlterReassignments answer).
//!
//! RegisterBroker with a rack is kind 17: the fields of kinds 1 and 8, `u8 logs_intact`, then
//! the rack. With a data directory id it is kind 20: the fields of kind 1, `u8 logs_intact`,
//! the id (16 bytes), then `u8 0`, or `u8 1` and the rack.
//! CreateTopic and CreatePartitions with an operator's replica lists travel as kinds 12 and
//! 13: the fields of kinds 3 and 5, then `u32 count` + per new partition its broker ids.
//! ReplicasOffline is kind 18 (failed copies) or 25 (full ones): `i32 node_id`, `i64
//! incarnation`, then `u32 count` + per partition a topic id (16 bytes) and `u32 partition`.
//! AllocateProducerIds is kind 21: `i32 node_id`, `i64 incarnation`; its answer is `6` +
//! `i64 first` + `i64 count` (the block).
//! DescribeQuorum is kind 15, with no fields; its answer is `4` + `i32 leader`, `i32 epoch`,
//! `i64 high watermark`, `u32 count` + per voter `i32 id`, `i64 log end`, `i64 last fetch`,
//! `i64 last caught up`.
//! AlterBrokerConfigs is kind 14: `i32 node_id`, then the configs. Those are config changes
//! that replace the whole set; one made of operations travels as its kind plus 10 (16, 19,
//! 24) with `u32 count` + per operation `u8 op` (Kafka's code), `key` and `value` in place of
//! the configs. A config change's answer carries `5` + the set it wrote.

use bytes::Bytes;

use super::config_change::{ConfigChange, ConfigOp};
use super::controller::{
    ControllerError, ControllerRequest, ControllerResponse, ElectionOutcome, ProducerIdBlock,
    ReassignOutcome, ELECT_PARTITIONS_MAX, REASSIGN_PARTITIONS_MAX,
};
use crate::raft::metadata::{
    put_configs, put_ids, put_registration_tail, put_string, read_registration_tail, DecodeError,
    Reader, MAX_PARTITIONS,
};
use crate::raft::{NodeId, QuorumDescription, ReplicaDescription, OBSERVERS_MAX};

const VERSION: u8 = 1;

pub fn encode_request(request: &ControllerRequest) -> Bytes {
    let mut out = vec![VERSION];
    match request {
        ControllerRequest::RegisterBroker {
            node_id,
            host,
            port,
            incarnation,
            logs_intact,
            rack,
            directory_id,
        } => {
            out.push(match (directory_id, rack, logs_intact) {
                (Some(_), _, _) => 20,
                (None, Some(_), _) => 17,
                (None, None, true) => 1,
                (None, None, false) => 8,
            });
            out.extend_from_slice(&node_id.to_be_bytes());
            put_string(&mut out, host);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
            if let Some(id) = directory_id {
                put_registration_tail(&mut out, *logs_intact, id, rack.as_deref());
            } else if let Some(rack) = rack {
                out.push(u8::from(*logs_intact));
                put_string(&mut out, rack);
            }
        }
        ControllerRequest::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            current_isr,
            new_isr,
        } => {
            // Type 2 is the request before partition epochs.
            out.push(if *partition_epoch < 0 { 2 } else { 26 });
            out.extend_from_slice(topic_id);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&leader.to_be_bytes());
            out.extend_from_slice(&leader_epoch.to_be_bytes());
            if *partition_epoch >= 0 {
                out.extend_from_slice(&partition_epoch.to_be_bytes());
            }
            put_ids(&mut out, current_isr);
            put_ids(&mut out, new_isr);
        }
        ControllerRequest::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
            assignments,
        } => {
            out.push(if assignments.is_empty() { 3 } else { 12 });
            put_string(&mut out, name);
            out.extend_from_slice(&partitions.to_be_bytes());
            out.extend_from_slice(&replication_factor.to_be_bytes());
            put_configs(&mut out, configs);
            if !assignments.is_empty() {
                put_assignments(&mut out, assignments);
            }
        }
        ControllerRequest::DeleteTopic { name } => {
            out.push(4);
            put_string(&mut out, name);
        }
        ControllerRequest::CreatePartitions {
            name,
            count,
            assignments,
        } => {
            out.push(if assignments.is_empty() { 5 } else { 13 });
            put_string(&mut out, name);
            out.extend_from_slice(&count.to_be_bytes());
            if !assignments.is_empty() {
                put_assignments(&mut out, assignments);
            }
        }
        ControllerRequest::AlterTopicConfigs { name, change } => {
            out.push(change_kind(6, change));
            put_string(&mut out, name);
            put_change(&mut out, change);
        }
        ControllerRequest::ControlledShutdown {
            node_id,
            incarnation,
        } => {
            out.push(7);
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
        }
        ControllerRequest::ReplicasOffline {
            node_id,
            incarnation,
            partitions,
            full,
        } => {
            out.push(if *full { 25 } else { 18 });
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
            put_partitions(&mut out, partitions.iter().map(|&(id, p)| (id, p, None)));
        }
        ControllerRequest::AlterClusterConfigs { change } => {
            out.push(change_kind(9, change));
            put_change(&mut out, change);
        }
        ControllerRequest::AlterBrokerConfigs { node_id, change } => {
            out.push(change_kind(14, change));
            out.extend_from_slice(&node_id.to_be_bytes());
            put_change(&mut out, change);
        }
        ControllerRequest::ElectLeaders {
            unclean,
            partitions,
        } => {
            out.push(10);
            out.push(u8::from(*unclean));
            put_partitions(&mut out, partitions.iter().map(|&(id, p)| (id, p, None)));
        }
        ControllerRequest::AllocateProducerIds {
            node_id,
            incarnation,
        } => {
            out.push(21);
            out.extend_from_slice(&node_id.to_be_bytes());
            out.extend_from_slice(&incarnation.to_be_bytes());
        }
        ControllerRequest::DescribeQuorum => out.push(15),
        ControllerRequest::AlterReassignments { partitions } => {
            out.push(11);
            put_rows(&mut out, partitions, |out, target| match target {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    put_ids(out, t);
                }
            });
        }
    }
    Bytes::from(out)
}

pub fn decode_request(buf: &[u8]) -> Result<ControllerRequest, DecodeError> {
    let mut r = Reader { buf };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown version"));
    }
    let request = match r.u8()? {
        kind @ (1 | 8) => ControllerRequest::RegisterBroker {
            node_id: r.i32()?,
            host: r.string()?,
            port: r.u16()?,
            incarnation: r.i64()?,
            logs_intact: kind == 1,
            rack: None,
            directory_id: None,
        },
        17 => ControllerRequest::RegisterBroker {
            node_id: r.i32()?,
            host: r.string()?,
            port: r.u16()?,
            incarnation: r.i64()?,
            logs_intact: r.boolean("logs_intact is not a boolean")?,
            rack: Some(r.string()?),
            directory_id: None,
        },
        20 => {
            let (node_id, host, port, incarnation) = (r.i32()?, r.string()?, r.u16()?, r.i64()?);
            let (logs_intact, id, rack) = read_registration_tail(&mut r)?;
            ControllerRequest::RegisterBroker {
                node_id,
                host,
                port,
                incarnation,
                logs_intact,
                rack,
                directory_id: Some(id),
            }
        }
        kind @ (2 | 26) => ControllerRequest::AlterPartition {
            topic_id: r.id()?,
            partition: r.u32()?,
            leader: r.i32()?,
            leader_epoch: r.i32()?,
            partition_epoch: if kind == 26 {
                let e = r.i32()?;
                if e < 0 {
                    return Err(DecodeError("negative partition epoch"));
                }
                e
            } else {
                -1
            },
            current_isr: r.ids()?,
            new_isr: r.ids()?,
        },
        kind @ (3 | 12) => ControllerRequest::CreateTopic {
            name: r.string()?,
            partitions: r.u32()?,
            replication_factor: r.u16()?,
            configs: r.configs()?,
            assignments: if kind == 12 {
                read_assignments(&mut r)?
            } else {
                Vec::new()
            },
        },
        4 => ControllerRequest::DeleteTopic { name: r.string()? },
        15 => ControllerRequest::DescribeQuorum,
        kind @ (5 | 13) => ControllerRequest::CreatePartitions {
            name: r.string()?,
            count: r.u32()?,
            assignments: if kind == 13 {
                read_assignments(&mut r)?
            } else {
                Vec::new()
            },
        },
        kind @ (6 | 16) => ControllerRequest::AlterTopicConfigs {
            name: r.string()?,
            change: read_change(&mut r, kind == 16)?,
        },
        7 => ControllerRequest::ControlledShutdown {
            node_id: r.i32()?,
            incarnation: r.i64()?,
        },
        21 => ControllerRequest::AllocateProducerIds {
            node_id: r.i32()?,
            incarnation: r.i64()?,
        },
        kind @ (18 | 25) => ControllerRequest::ReplicasOffline {
            node_id: r.i32()?,
            incarnation: r.i64()?,
            partitions: read_partitions(&mut r, false)?
                .into_iter()
                .map(|(id, p, _)| (id, p))
                .collect(),
            full: kind == 25,
        },
        kind @ (9 | 19) => ControllerRequest::AlterClusterConfigs {
            change: read_change(&mut r, kind == 19)?,
        },
        kind @ (14 | 24) => ControllerRequest::AlterBrokerConfigs {
            node_id: r.i32()?,
            change: read_change(&mut r, kind == 24)?,
        },
        10 => ControllerRequest::ElectLeaders {
            unclean: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError("unknown election type")),
            },
            partitions: read_partitions(&mut r, false)?
                .into_iter()
                .map(|(id, p, _)| (id, p))
                .collect(),
        },
        11 => ControllerRequest::AlterReassignments {
            partitions: read_reassignments(&mut r)?,
        },
        _ => return Err(DecodeError("unknown request kind")),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(request)
}

/// (error code, message, payload) of a response frame.
pub fn encode_response(response: &ControllerResponse) -> (i16, String, Bytes) {
    let (code, message) = match &response.error {
        ControllerError::None => (0, String::new()),
        ControllerError::NotController => (1, String::new()),
        ControllerError::StaleRequest => (2, String::new()),
        ControllerError::UnknownTopic => (3, String::new()),
        ControllerError::TopicExists => (4, String::new()),
        ControllerError::InvalidReplicationFactor(m) => (5, m.clone()),
        ControllerError::InvalidPartitions(m) => (6, m.clone()),
        ControllerError::InvalidRequest(m) => (7, m.clone()),
        ControllerError::IneligibleReplica(m) => (8, m.clone()),
        ControllerError::QueueFull => (9, String::new()),
        ControllerError::InvalidReplicaAssignment(m) => (10, m.clone()),
    };
    let mut payload = Vec::new();
    if let Some(id) = response.topic_id {
        payload.push(PAYLOAD_TOPIC_ID);
        payload.extend_from_slice(&id);
    } else if !response.elections.is_empty() {
        payload.push(PAYLOAD_ELECTIONS);
        let each = response.elections.iter();
        put_partitions(&mut payload, each.map(|&(id, p, o)| (id, p, Some(o))));
    } else if let Some(block) = response.producer_ids {
        payload.push(PAYLOAD_PRODUCER_IDS);
        payload.extend_from_slice(&block.first.to_be_bytes());
        payload.extend_from_slice(&block.count.to_be_bytes());
    } else if let Some(configs) = &response.configs {
        payload.push(PAYLOAD_CONFIGS);
        put_configs(&mut payload, configs);
    } else if let Some(q) = &response.quorum {
        assert!(
            q.voters.len() <= VOTERS_MAX,
            "more voters than a quorum has"
        );
        assert!(
            q.observers.len() <= OBSERVERS_MAX,
            "more observers than a leader tracks"
        );
        payload.push(PAYLOAD_QUORUM);
        payload.extend_from_slice(&q.leader.to_be_bytes());
        payload.extend_from_slice(&q.epoch.to_be_bytes());
        payload.extend_from_slice(&q.high_watermark.to_be_bytes());
        // Voters, then observers: a count and 28 bytes each.
        for list in [&q.voters, &q.observers] {
            payload.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for v in list {
                payload.extend_from_slice(&v.id.to_be_bytes());
                payload.extend_from_slice(&v.log_end_offset.to_be_bytes());
                payload.extend_from_slice(&v.last_fetch_ms.to_be_bytes());
                payload.extend_from_slice(&v.last_caught_up_ms.to_be_bytes());
            }
        }
    } else if !response.reassignments.is_empty() {
        payload.push(PAYLOAD_REASSIGNMENTS);
        put_rows(
            &mut payload,
            &response.reassignments,
            |out, outcome| match outcome {
                ReassignOutcome::Accepted => out.push(0),
                ReassignOutcome::NoReassignmentInProgress => out.push(1),
                ReassignOutcome::UnknownPartition => out.push(2),
                ReassignOutcome::InvalidReplicas(why) => {
                    out.push(3);
                    put_string(out, why);
                }
            },
        );
    }
    (code, message, Bytes::from(payload))
}

const PAYLOAD_TOPIC_ID: u8 = 1;
const PAYLOAD_ELECTIONS: u8 = 2;
const PAYLOAD_REASSIGNMENTS: u8 = 3;
const PAYLOAD_QUORUM: u8 = 4;
const PAYLOAD_CONFIGS: u8 = 5;
const PAYLOAD_PRODUCER_IDS: u8 = 6;
/// Most voters a DescribeQuorum answer may list.
const VOTERS_MAX: usize = 64;

fn read_quorum(r: &mut Reader<'_>) -> Result<QuorumDescription, DecodeError> {
    let (leader, epoch, high_watermark) = (r.i32()?, r.i32()?, r.i64()?);
    let voters = read_replicas(r, VOTERS_MAX)?;
    let observers = read_replicas(r, OBSERVERS_MAX)?;
    Ok(QuorumDescription {
        leader,
        epoch,
        high_watermark,
        voters,
        observers,
    })
}

fn read_replicas(r: &mut Reader<'_>, max: usize) -> Result<Vec<ReplicaDescription>, DecodeError> {
    let n = r.u32()? as usize;
    if n > max || n * 28 > r.buf.len() {
        return Err(DecodeError("replicas out of bounds"));
    }
    (0..n)
        .map(|_| {
            Ok(ReplicaDescription {
                id: r.i32()?,
                log_end_offset: r.i64()?,
                last_fetch_ms: r.i64()?,
                last_caught_up_ms: r.i64()?,
            })
        })
        .collect()
}

type ReassignEntry = ([u8; 16], u32, Option<Vec<NodeId>>);

/// A config change's kind: `replace` for a whole new set, plus 10 for operations.
fn change_kind(replace: u8, change: &ConfigChange) -> u8 {
    match change {
        ConfigChange::Replace(_) => replace,
        ConfigChange::Operations(_) => replace + 10,
    }
}

fn put_change(out: &mut Vec<u8>, change: &ConfigChange) {
    match change {
        ConfigChange::Replace(configs) => put_configs(out, configs),
        ConfigChange::Operations(ops) => {
            out.extend_from_slice(&(ops.len() as u32).to_be_bytes());
            for op in ops {
                out.push(op.code() as u8);
                put_string(out, op.key());
                put_string(out, op.value());
            }
        }
    }
}

fn read_change(r: &mut Reader<'_>, operations: bool) -> Result<ConfigChange, DecodeError> {
    if !operations {
        return Ok(ConfigChange::Replace(r.configs()?));
    }
    let n = r.u32()? as usize;
    // Each operation is at least its code and two string lengths.
    if n.saturating_mul(9) > r.buf.len() {
        return Err(DecodeError("config operations longer than the request"));
    }
    let ops = (0..n)
        .map(|_| {
            let (code, key, value) = (r.u8()? as i8, r.string()?, r.string()?);
            ConfigOp::from_wire(code, &key, Some(&value))
                .map_err(|_| DecodeError("unknown config operation"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ConfigChange::Operations(ops))
}

/// `u32 count` (1 to [`MAX_PARTITIONS`]) + one id list per partition.
fn put_assignments(out: &mut Vec<u8>, lists: &[Vec<NodeId>]) {
    assert!(
        !lists.is_empty() && lists.len() <= MAX_PARTITIONS as usize,
        "replica lists out of bounds"
    );
    out.extend_from_slice(&(lists.len() as u32).to_be_bytes());
    for ids in lists {
        put_ids(out, ids);
    }
}

/// The inverse of [`put_assignments`]; each list takes at least its 4-byte length.
fn read_assignments(r: &mut Reader<'_>) -> Result<Vec<Vec<NodeId>>, DecodeError> {
    let n = r.u32()? as usize;
    if n == 0 || n > MAX_PARTITIONS as usize || n * 4 > r.buf.len() {
        return Err(DecodeError("replica lists out of bounds"));
    }
    (0..n).map(|_| r.ids()).collect()
}

/// `u32 count` (at most [`REASSIGN_PARTITIONS_MAX`]) + per row: topic id, `u32` partition and
/// what `rest` writes.
fn put_rows<T>(out: &mut Vec<u8>, rows: &[([u8; 16], u32, T)], rest: impl Fn(&mut Vec<u8>, &T)) {
    assert!(
        rows.len() <= REASSIGN_PARTITIONS_MAX,
        "reassignment too large"
    );
    out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    for (id, partition, row) in rows {
        out.extend_from_slice(id);
        out.extend_from_slice(&partition.to_be_bytes());
        rest(out, row);
    }
}

/// The inverse of [`put_rows`]; each row takes at least 21 bytes.
fn read_rows<T>(
    r: &mut Reader<'_>,
    rest: impl Fn(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<([u8; 16], u32, T)>, DecodeError> {
    let n = r.u32()? as usize;
    if n > REASSIGN_PARTITIONS_MAX || n * 21 > r.buf.len() {
        return Err(DecodeError("partition list out of bounds"));
    }
    (0..n).map(|_| Ok((r.id()?, r.u32()?, rest(r)?))).collect()
}

fn read_reassignments(r: &mut Reader<'_>) -> Result<Vec<ReassignEntry>, DecodeError> {
    read_rows(r, |r| match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.ids()?)),
        _ => Err(DecodeError("unknown reassignment target tag")),
    })
}

fn read_reassign_outcomes(
    r: &mut Reader<'_>,
) -> Result<Vec<([u8; 16], u32, ReassignOutcome)>, DecodeError> {
    read_rows(r, |r| {
        Ok(match r.u8()? {
            0 => ReassignOutcome::Accepted,
            1 => ReassignOutcome::NoReassignmentInProgress,
            2 => ReassignOutcome::UnknownPartition,
            3 => ReassignOutcome::InvalidReplicas(r.string()?),
            _ => return Err(DecodeError("unknown reassignment outcome")),
        })
    })
}

fn outcome_code(o: ElectionOutcome) -> u8 {
    match o {
        ElectionOutcome::Elected => 0,
        ElectionOutcome::NotNeeded => 1,
        ElectionOutcome::PreferredNotAvailable => 2,
        ElectionOutcome::EligibleNotAvailable => 3,
        ElectionOutcome::UnknownPartition => 4,
    }
}

fn outcome_from(code: u8) -> Result<ElectionOutcome, DecodeError> {
    Ok(match code {
        0 => ElectionOutcome::Elected,
        1 => ElectionOutcome::NotNeeded,
        2 => ElectionOutcome::PreferredNotAvailable,
        3 => ElectionOutcome::EligibleNotAvailable,
        4 => ElectionOutcome::UnknownPartition,
        _ => return Err(DecodeError("unknown election outcome")),
    })
}

type PartitionEntry = ([u8; 16], u32, Option<ElectionOutcome>);

/// `u32 count` + per partition: topic id, `u32` index and (in answers) the outcome.
fn put_partitions(out: &mut Vec<u8>, partitions: impl ExactSizeIterator<Item = PartitionEntry>) {
    assert!(
        partitions.len() <= ELECT_PARTITIONS_MAX,
        "election too large"
    );
    out.extend_from_slice(&(partitions.len() as u32).to_be_bytes());
    for (id, partition, outcome) in partitions {
        out.extend_from_slice(&id);
        out.extend_from_slice(&partition.to_be_bytes());
        if let Some(o) = outcome {
            out.push(outcome_code(o));
        }
    }
}

fn read_partitions(r: &mut Reader<'_>, outcomes: bool) -> Result<Vec<PartitionEntry>, DecodeError> {
    let n = r.u32()? as usize;
    let each = if outcomes { 21 } else { 20 };
    if n > ELECT_PARTITIONS_MAX || n * each > r.buf.len() {
        return Err(DecodeError("partition list out of bounds"));
    }
    (0..n)
        .map(|_| {
            let id = r.id()?;
            let partition = r.u32()?;
            let outcome = if outcomes {
                Some(outcome_from(r.u8()?)?)
            } else {
                None
            };
            Ok((id, partition, outcome))
        })
        .collect()
}

/// The inverse of [`encode_response`]; an unknown code reads as an invalid request.
pub fn decode_response(code: i16, message: String, payload: &[u8]) -> ControllerResponse {
    let error = match code {
        0 => ControllerError::None,
        1 => ControllerError::NotController,
        2 => ControllerError::StaleRequest,
        3 => ControllerError::UnknownTopic,
        4 => ControllerError::TopicExists,
        5 => ControllerError::InvalidReplicationFactor(message),
        6 => ControllerError::InvalidPartitions(message),
        8 => ControllerError::IneligibleReplica(message),
        9 => ControllerError::QueueFull,
        10 => ControllerError::InvalidReplicaAssignment(message),
        7 => ControllerError::InvalidRequest(message),
        other => ControllerError::InvalidRequest(format!("unknown controller error {other}")),
    };
    let mut response = ControllerResponse::err(error);
    let mut r = Reader { buf: payload };
    match r.u8() {
        Ok(PAYLOAD_TOPIC_ID) => response.topic_id = r.id().ok(),
        Ok(PAYLOAD_ELECTIONS) => {
            let read = read_partitions(&mut r, true).unwrap_or_default();
            response.elections = read
                .into_iter()
                .filter_map(|(id, p, o)| Some((id, p, o?)))
                .collect();
        }
        Ok(PAYLOAD_REASSIGNMENTS) => {
            response.reassignments = read_reassign_outcomes(&mut r).unwrap_or_default();
        }
        Ok(PAYLOAD_QUORUM) => response.quorum = read_quorum(&mut r).ok(),
        Ok(PAYLOAD_CONFIGS) => response.configs = r.configs().ok(),
        Ok(PAYLOAD_PRODUCER_IDS) => {
            response.producer_ids = match (r.i64(), r.i64()) {
                (Ok(first), Ok(count))
                    if first >= 0
                        && count > 0
                        && first.checked_add(count).is_some()
                        && r.buf.is_empty() =>
                {
                    Some(ProducerIdBlock { first, count })
                }
                _ => None,
            }
        }
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<ControllerRequest> {
        vec![
            ControllerRequest::RegisterBroker {
                node_id: 2,
                host: "broker2".into(),
                port: 9092,
                incarnation: 77,
                logs_intact: true,
                rack: None,
                directory_id: None,
            },
            ControllerRequest::RegisterBroker {
                node_id: 2,
                host: "broker2".into(),
                port: 9092,
                incarnation: 79,
                logs_intact: false,
                rack: Some("eu-west-1b".into()),
                directory_id: Some([0xd1; 16]),
            },
            ControllerRequest::RegisterBroker {
                node_id: 2,
                host: "broker2".into(),
                port: 9092,
                incarnation: 80,
                logs_intact: true,
                rack: None,
                directory_id: Some([0xd2; 16]),
            },
            ControllerRequest::RegisterBroker {
                node_id: 3,
                host: "broker3".into(),
                port: 9092,
                incarnation: 78,
                logs_intact: false,
                rack: None,
                directory_id: None,
            },
            ControllerRequest::AlterPartition {
                topic_id: [3; 16],
                partition: 5,
                leader: 1,
                leader_epoch: 9,
                partition_epoch: 14,
                current_isr: vec![1, 2, 3],
                new_isr: vec![1, 3],
            },
            ControllerRequest::AlterPartition {
                topic_id: [3; 16],
                partition: 5,
                leader: 1,
                leader_epoch: 9,
                partition_epoch: -1,
                current_isr: vec![1, 2, 3],
                new_isr: vec![1, 3],
            },
            ControllerRequest::CreateTopic {
                name: "orders".into(),
                partitions: 6,
                replication_factor: 3,
                configs: vec![("min.insync.replicas".into(), "2".into())],
                assignments: vec![],
            },
            ControllerRequest::CreateTopic {
                name: "placed".into(),
                partitions: 2,
                replication_factor: 2,
                configs: vec![],
                assignments: vec![vec![1, 2], vec![2, 3]],
            },
            ControllerRequest::DeleteTopic { name: "x".into() },
            ControllerRequest::CreatePartitions {
                name: "x".into(),
                count: 9,
                assignments: vec![],
            },
            ControllerRequest::CreatePartitions {
                name: "x".into(),
                count: 11,
                assignments: vec![vec![3], vec![1]],
            },
            ControllerRequest::AlterTopicConfigs {
                name: "x".into(),
                change: ConfigChange::Replace(vec![]),
            },
            ControllerRequest::AlterTopicConfigs {
                name: "x".into(),
                change: ConfigChange::Operations(vec![
                    ConfigOp::Set("retention.ms".into(), "9".into()),
                    ConfigOp::Delete("segment.ms".into()),
                    ConfigOp::Append(
                        "follower.replication.throttled.replicas".into(),
                        "0:1".into(),
                    ),
                    ConfigOp::Subtract("leader.replication.throttled.replicas".into(), "*".into()),
                ]),
            },
            ControllerRequest::ControlledShutdown {
                node_id: 3,
                incarnation: -4,
            },
            ControllerRequest::AllocateProducerIds {
                node_id: 2,
                incarnation: 81,
            },
            ControllerRequest::AlterClusterConfigs {
                change: ConfigChange::Replace(vec![("min.insync.replicas".into(), "2".into())]),
            },
            ControllerRequest::AlterClusterConfigs {
                change: ConfigChange::Operations(vec![]),
            },
            ControllerRequest::AlterBrokerConfigs {
                node_id: 2,
                change: ConfigChange::Replace(vec![(
                    "leader.replication.throttled.rate".into(),
                    "10".into(),
                )]),
            },
            ControllerRequest::AlterBrokerConfigs {
                node_id: 2,
                change: ConfigChange::Operations(vec![ConfigOp::Delete(
                    "leader.replication.throttled.rate".into(),
                )]),
            },
            ControllerRequest::ElectLeaders {
                unclean: false,
                partitions: vec![([1; 16], 0), ([2; 16], 7)],
            },
            ControllerRequest::ElectLeaders {
                unclean: true,
                partitions: vec![],
            },
            ControllerRequest::ReplicasOffline {
                node_id: 2,
                incarnation: 9,
                partitions: vec![([3; 16], 1), ([4; 16], 0)],
                full: false,
            },
            ControllerRequest::ReplicasOffline {
                node_id: 3,
                incarnation: 7,
                partitions: vec![([5; 16], 2)],
                full: true,
            },
            ControllerRequest::AlterReassignments {
                partitions: vec![([1; 16], 0, Some(vec![3, 1, 2])), ([2; 16], 4, None)],
            },
            ControllerRequest::DescribeQuorum,
        ]
    }

    #[test]
    fn controller_requests_roundtrip_and_refuse_damage() {
        for r in samples() {
            let b = encode_request(&r);
            assert_eq!(decode_request(&b).unwrap(), r);
            for cut in 0..b.len() {
                assert!(decode_request(&b[..cut]).is_err(), "{r:?} cut at {cut}");
            }
            let mut longer = b.to_vec();
            longer.push(0);
            assert!(decode_request(&longer).is_err());
        }
    }

    #[test]
    fn controller_responses_roundtrip() {
        for error in [
            ControllerError::None,
            ControllerError::NotController,
            ControllerError::StaleRequest,
            ControllerError::UnknownTopic,
            ControllerError::TopicExists,
            ControllerError::InvalidReplicationFactor("rf".into()),
            ControllerError::InvalidPartitions("p".into()),
            ControllerError::InvalidRequest("r".into()),
            ControllerError::IneligibleReplica("e".into()),
            ControllerError::QueueFull,
            ControllerError::InvalidReplicaAssignment("a".into()),
        ] {
            for topic_id in [None, Some([7u8; 16])] {
                let r = ControllerResponse {
                    topic_id,
                    ..ControllerResponse::err(error.clone())
                };
                let (code, message, payload) = encode_response(&r);
                assert_eq!(decode_response(code, message, &payload), r);
            }
            let r = ControllerResponse {
                configs: Some(vec![("retention.ms".into(), "5".into())]),
                ..ControllerResponse::err(error.clone())
            };
            let (code, message, payload) = encode_response(&r);
            assert_eq!(decode_response(code, message, &payload), r);
            let r = ControllerResponse {
                producer_ids: Some(ProducerIdBlock {
                    first: 3_000,
                    count: 1_000,
                }),
                ..ControllerResponse::err(error.clone())
            };
            let (code, message, payload) = encode_response(&r);
            assert_eq!(decode_response(code, message, &payload), r);
            let r = ControllerResponse {
                quorum: Some(QuorumDescription {
                    leader: 2,
                    epoch: 7,
                    high_watermark: 1234,
                    voters: vec![
                        ReplicaDescription {
                            id: 1,
                            log_end_offset: -1,
                            last_fetch_ms: -1,
                            last_caught_up_ms: -1,
                        },
                        ReplicaDescription {
                            id: 2,
                            log_end_offset: 1300,
                            last_fetch_ms: 1_765_000_000_000,
                            last_caught_up_ms: 1_765_000_000_000,
                        },
                    ],
                    observers: vec![ReplicaDescription {
                        id: 4,
                        log_end_offset: 1299,
                        last_fetch_ms: 1_765_000_000_001,
                        last_caught_up_ms: -1,
                    }],
                }),
                ..ControllerResponse::err(error.clone())
            };
            let (code, message, payload) = encode_response(&r);
            assert_eq!(decode_response(code, message, &payload), r);
            let r = ControllerResponse {
                elections: vec![
                    ([1; 16], 0, ElectionOutcome::Elected),
                    ([1; 16], 1, ElectionOutcome::NotNeeded),
                    ([2; 16], 0, ElectionOutcome::PreferredNotAvailable),
                    ([2; 16], 1, ElectionOutcome::EligibleNotAvailable),
                    ([3; 16], 9, ElectionOutcome::UnknownPartition),
                ],
                ..ControllerResponse::err(error.clone())
            };
            let (code, message, payload) = encode_response(&r);
            assert_eq!(decode_response(code, message, &payload), r);
            let r = ControllerResponse {
                reassignments: vec![
                    ([1; 16], 0, ReassignOutcome::Accepted),
                    ([1; 16], 1, ReassignOutcome::NoReassignmentInProgress),
                    ([2; 16], 0, ReassignOutcome::UnknownPartition),
                    (
                        [2; 16],
                        1,
                        ReassignOutcome::InvalidReplicas("unknown broker 9".into()),
                    ),
                ],
                ..ControllerResponse::err(error.clone())
            };
            let (code, message, payload) = encode_response(&r);
            assert_eq!(decode_response(code, message, &payload), r);
        }
    }

    proptest! {
        #[test]
        fn controller_request_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = decode_request(&bytes) {
                prop_assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
            }
        }
    }
}
