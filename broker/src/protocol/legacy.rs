//! Request versions that Kafka 4 (KIP-896) and the `kafka-protocol` crate with it dropped, but
//! that clients still in service send: decoded here by hand into the crate's types.
//!
//! - **OffsetCommit v1**: Sarama (1.22 as Debian packages it, 1.38 and others) commits with v1
//!   unless `Consumer.Offsets.Retention` is set, whatever `Config.Version` says. Kafka 3.x
//!   answered it; Kafka 4 closes the connection. Its body differs from v2's only in a
//!   per-partition `commit_timestamp` where v2 has one request-level `retention_time_ms`; the
//!   response is v2's layout exactly, so it is encoded as v2 ([`super::body_version`]). The
//!   timestamp is read and ignored: offsets are stamped when the coordinator applies them, as
//!   for `-1`, which is what every client sends.
//!
//! Each count is checked against the bytes left before anything is allocated for it, so a
//! hostile count costs nothing (the request_frame fuzz target reaches this decoder).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

/// Why a hand-decoded body was refused.
pub type LegacyError = String;

/// Smallest encoding of one v1 topic: an empty name and an empty partition array.
const TOPIC_BYTES_MIN: usize = 2 + 4;
/// Smallest encoding of one v1 partition: index, offset, timestamp and a null metadata.
const PARTITION_BYTES_MIN: usize = 4 + 8 + 8 + 2;

/// Decodes an OffsetCommit v1 body (after the request header).
pub fn decode_offset_commit_v1(buf: &mut Bytes) -> Result<OffsetCommitRequest, LegacyError> {
    let group_id = string(buf, "group_id")?;
    let generation = i32_of(buf, "generation_id")?;
    let member_id = string(buf, "member_id")?;
    let topics_n = count(buf, TOPIC_BYTES_MIN, "topics")?;
    let mut topics = Vec::with_capacity(topics_n);
    for _ in 0..topics_n {
        let name = string(buf, "topic name")?;
        let partitions_n = count(buf, PARTITION_BYTES_MIN, "partitions")?;
        let mut partitions = Vec::with_capacity(partitions_n);
        for _ in 0..partitions_n {
            let index = i32_of(buf, "partition_index")?;
            let offset = i64_of(buf, "committed_offset")?;
            let _commit_timestamp = i64_of(buf, "commit_timestamp")?;
            let metadata = nullable_string(buf, "committed_metadata")?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_metadata(metadata),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name))
                .with_partitions(partitions),
        );
    }
    debug_assert_eq!(topics.len(), topics_n);
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_retention_time_ms(-1)
        .with_topics(topics))
}

/// Encodes `r` as an OffsetCommit v1 body, as Sarama does (commit timestamps -1), for tests and
/// the fuzz corpus. Strings longer than `i16::MAX` bytes are an error.
pub fn encode_offset_commit_v1(
    r: &OffsetCommitRequest,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    put_string(out, Some(r.group_id.0.as_str()))?;
    out.put_i32(r.generation_id_or_member_epoch);
    put_string(out, Some(r.member_id.as_str()))?;
    out.put_i32(i32::try_from(r.topics.len()).map_err(|_| "too many topics".to_string())?);
    for t in &r.topics {
        put_string(out, Some(t.name.0.as_str()))?;
        let n = i32::try_from(t.partitions.len()).map_err(|_| "too many partitions".to_string())?;
        out.put_i32(n);
        for p in &t.partitions {
            out.put_i32(p.partition_index);
            out.put_i64(p.committed_offset);
            out.put_i64(-1);
            put_string(out, p.committed_metadata.as_ref().map(|m| m.as_str()))?;
        }
    }
    Ok(())
}

fn put_string(out: &mut BytesMut, s: Option<&str>) -> Result<(), LegacyError> {
    match s {
        None => out.put_i16(-1),
        Some(s) => {
            let len = i16::try_from(s.len()).map_err(|_| format!("string of {} bytes", s.len()))?;
            out.put_i16(len);
            out.put_slice(s.as_bytes());
        }
    }
    Ok(())
}

fn need(buf: &Bytes, bytes: usize, what: &str) -> Result<(), LegacyError> {
    if buf.remaining() < bytes {
        return Err(format!(
            "{what}: {bytes} bytes needed, {} left",
            buf.remaining()
        ));
    }
    Ok(())
}

fn i32_of(buf: &mut Bytes, what: &str) -> Result<i32, LegacyError> {
    need(buf, 4, what)?;
    Ok(buf.get_i32())
}

fn i64_of(buf: &mut Bytes, what: &str) -> Result<i64, LegacyError> {
    need(buf, 8, what)?;
    Ok(buf.get_i64())
}

/// An array's element count: not null, and each element's smallest encoding must fit in what is
/// left.
fn count(buf: &mut Bytes, element_bytes_min: usize, what: &str) -> Result<usize, LegacyError> {
    let n = i32_of(buf, what)?;
    let n = usize::try_from(n).map_err(|_| format!("{what}: count {n}"))?;
    if n > buf.remaining() / element_bytes_min {
        return Err(format!("{what}: {n} elements in {} bytes", buf.remaining()));
    }
    Ok(n)
}

fn nullable_string(buf: &mut Bytes, what: &str) -> Result<Option<StrBytes>, LegacyError> {
    need(buf, 2, what)?;
    let len = buf.get_i16();
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| format!("{what}: length {len}"))?;
    need(buf, len, what)?;
    let bytes = buf.split_to(len);
    StrBytes::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("{what}: {e}"))
}

fn string(buf: &mut Bytes, what: &str) -> Result<StrBytes, LegacyError> {
    nullable_string(buf, what)?.ok_or_else(|| format!("{what}: null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a string the way Sarama does, independently of the encoder under test.
    fn put_str(b: &mut BytesMut, s: Option<&str>) {
        match s {
            None => b.put_i16(-1),
            Some(s) => {
                b.put_i16(s.len() as i16);
                b.put_slice(s.as_bytes());
            }
        }
    }

    /// What Sarama 1.22 sends: group, generation, member, then per partition the offset, a
    /// commit timestamp (-1) and its metadata.
    fn sarama_commit() -> Bytes {
        let mut b = BytesMut::new();
        put_str(&mut b, Some("g"));
        b.put_i32(3);
        put_str(&mut b, Some("sarama-1"));
        b.put_i32(1);
        put_str(&mut b, Some("t"));
        b.put_i32(2);
        for (p, o, m) in [(0, 174_i64, Some("")), (2, 9, None)] {
            b.put_i32(p);
            b.put_i64(o);
            b.put_i64(-1);
            put_str(&mut b, m);
        }
        b.freeze()
    }

    #[test]
    fn offset_commit_v1_decodes_into_the_v2_request() {
        let mut buf = sarama_commit();
        let r = decode_offset_commit_v1(&mut buf).expect("decodes");
        assert!(buf.is_empty());
        assert_eq!(r.group_id.0.as_str(), "g");
        assert_eq!(r.generation_id_or_member_epoch, 3);
        assert_eq!(r.member_id.as_str(), "sarama-1");
        assert_eq!(r.retention_time_ms, -1);
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].name.0.as_str(), "t");
        let got: Vec<_> = r.topics[0]
            .partitions
            .iter()
            .map(|p| {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
                (p.partition_index, p.committed_offset, metadata)
            })
            .collect();
        assert_eq!(got, vec![(0, 174, Some(String::new())), (2, 9, None)]);
    }

    #[test]
    fn the_v1_encoder_writes_what_sarama_writes() {
        let r = decode_offset_commit_v1(&mut sarama_commit()).expect("decodes");
        let mut out = BytesMut::new();
        encode_offset_commit_v1(&r, &mut out).expect("encodes");
        assert_eq!(out.freeze(), sarama_commit());
    }

    #[test]
    fn every_truncation_of_offset_commit_v1_is_an_error() {
        let whole = sarama_commit();
        for len in 0..whole.len() {
            let mut cut = whole.slice(..len);
            assert!(
                decode_offset_commit_v1(&mut cut).is_err(),
                "{len} of {} bytes decoded",
                whole.len()
            );
        }
    }

    #[test]
    fn hostile_counts_and_lengths_are_errors_before_allocating() {
        for topics in [i32::MAX, -1, -2] {
            let mut b = BytesMut::new();
            put_str(&mut b, Some("g"));
            b.put_i32(0);
            put_str(&mut b, Some(""));
            b.put_i32(topics);
            assert!(
                decode_offset_commit_v1(&mut b.freeze()).is_err(),
                "{topics}"
            );
        }
        let mut b = BytesMut::new();
        put_str(&mut b, None);
        assert!(
            decode_offset_commit_v1(&mut b.freeze()).is_err(),
            "null group id"
        );
        let mut b = BytesMut::new();
        b.put_i16(-7);
        assert!(
            decode_offset_commit_v1(&mut b.freeze()).is_err(),
            "negative length"
        );
        let mut b = BytesMut::new();
        b.put_i16(2);
        b.put_slice(&[0xff, 0xfe]);
        assert!(
            decode_offset_commit_v1(&mut b.freeze()).is_err(),
            "not UTF-8"
        );
    }
}
