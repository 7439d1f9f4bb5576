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
//! - **DescribeConfigs v0**: Sarama (1.22, as Debian packages it) describes configs with v0,
//!   and its `ListTopics` describes every topic's configs that way. The request is v1's without
//!   `include_synonyms`; the response has `is_default` where v1 has `config_source`, and no
//!   synonyms. Both are written by hand here. A value is default when it was not set on the
//!   resource itself: for a topic, anything but a topic override; for a broker, the built-in
//!   default or a cluster-wide dynamic default.
//! - **DescribeAcls, CreateAcls and DeleteAcls v0**: Sarama (1.22) sends v0 for `ListAcls`,
//!   `CreateACL` and `DeleteACL`. v0 lacks v1's pattern type, which means a literal resource
//!   name (Kafka's default, 3). The answers this broker gives (SECURITY_DISABLED, nothing
//!   listed or matched) have the same bytes at v0 and v1, so they are encoded as v1.
//!
//! Each count is checked against the bytes left before anything is allocated for it, so a
//! hostile count costs nothing (the request_frame fuzz target reaches these decoders).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest, DescribeConfigsRequest,
    DescribeConfigsResponse, GroupId, OffsetCommitRequest, TopicName,
};
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

/// Smallest encoding of one v0 config resource: type, empty name, null key list.
const RESOURCE_BYTES_MIN: usize = 1 + 2 + 4;
/// Smallest encoding of one config key: an empty string.
const KEY_BYTES_MIN: usize = 2;
/// Kafka's resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's config sources a v0 answer calls default (see the module doc).
const SOURCE_TOPIC_OVERRIDE: i8 = 1;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;

/// Decodes a DescribeConfigs v0 body (after the request header).
pub fn decode_describe_configs_v0(buf: &mut Bytes) -> Result<DescribeConfigsRequest, LegacyError> {
    let resources_n = count(buf, RESOURCE_BYTES_MIN, "resources")?;
    let mut resources = Vec::with_capacity(resources_n);
    for _ in 0..resources_n {
        need(buf, 1, "resource_type")?;
        let resource_type = buf.get_i8();
        let name = string(buf, "resource_name")?;
        let keys = match nullable_count(buf, KEY_BYTES_MIN, "configuration_keys")? {
            None => None,
            Some(n) => {
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(string(buf, "configuration key")?);
                }
                Some(keys)
            }
        };
        resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_configuration_keys(keys),
        );
    }
    debug_assert_eq!(resources.len(), resources_n);
    Ok(DescribeConfigsRequest::default()
        .with_resources(resources)
        .with_include_synonyms(false))
}

/// Encodes a DescribeConfigs v0 response body.
pub fn encode_describe_configs_v0(
    r: &DescribeConfigsResponse,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    out.put_i32(r.throttle_time_ms);
    put_count(out, r.results.len())?;
    for result in &r.results {
        out.put_i16(result.error_code);
        put_string(out, result.error_message.as_ref().map(|m| m.as_str()))?;
        out.put_i8(result.resource_type);
        put_string(out, Some(result.resource_name.as_str()))?;
        put_count(out, result.configs.len())?;
        for c in &result.configs {
            let is_default = if result.resource_type == RESOURCE_TOPIC {
                c.config_source != SOURCE_TOPIC_OVERRIDE
            } else {
                matches!(
                    c.config_source,
                    SOURCE_DEFAULT | SOURCE_DYNAMIC_DEFAULT_BROKER
                )
            };
            put_string(out, Some(c.name.as_str()))?;
            put_string(out, c.value.as_ref().map(|v| v.as_str()))?;
            out.put_u8(u8::from(c.read_only));
            out.put_u8(u8::from(is_default));
            out.put_u8(u8::from(c.is_sensitive));
        }
    }
    Ok(())
}

/// Encodes `r` as a DescribeConfigs v0 request body, as Sarama does, for tests and the fuzz
/// corpus.
pub fn encode_describe_configs_v0_request(
    r: &DescribeConfigsRequest,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    put_count(out, r.resources.len())?;
    for resource in &r.resources {
        out.put_i8(resource.resource_type);
        put_string(out, Some(resource.resource_name.as_str()))?;
        match &resource.configuration_keys {
            None => out.put_i32(-1),
            Some(keys) => {
                put_count(out, keys.len())?;
                for k in keys {
                    put_string(out, Some(k.as_str()))?;
                }
            }
        }
    }
    Ok(())
}

/// Kafka's pattern type for a literal resource name, what v0 of the ACL APIs always means.
const PATTERN_LITERAL: i8 = 3;
/// Smallest encoding of one v0 ACL creation or filter: three one-byte enums and three strings
/// (empty, or null where a filter allows it).
const ACL_BYTES_MIN: usize = 1 + 3 * 2 + 1 + 1;

/// One v0 ACL entry: a filter (DescribeAcls sends one at the top level, DeleteAcls one per
/// filter; null strings match anything) or a creation (no nulls allowed).
struct AclV0 {
    resource_type: i8,
    resource_name: Option<StrBytes>,
    principal: Option<StrBytes>,
    host: Option<StrBytes>,
    operation: i8,
    permission_type: i8,
}

impl AclV0 {
    fn decode(buf: &mut Bytes) -> Result<AclV0, LegacyError> {
        need(buf, 1, "resource_type")?;
        let resource_type = buf.get_i8();
        let resource_name = nullable_string(buf, "resource_name")?;
        let principal = nullable_string(buf, "principal")?;
        let host = nullable_string(buf, "host")?;
        need(buf, 2, "operation and permission_type")?;
        Ok(AclV0 {
            resource_type,
            resource_name,
            principal,
            host,
            operation: buf.get_i8(),
            permission_type: buf.get_i8(),
        })
    }

    /// A creation's strings: each must be there.
    fn named(self) -> Result<(i8, [StrBytes; 3], i8, i8), LegacyError> {
        let need = |s: Option<StrBytes>, what: &str| s.ok_or_else(|| format!("{what}: null"));
        Ok((
            self.resource_type,
            [
                need(self.resource_name, "resource_name")?,
                need(self.principal, "principal")?,
                need(self.host, "host")?,
            ],
            self.operation,
            self.permission_type,
        ))
    }

    fn encode(
        out: &mut BytesMut,
        resource_type: i8,
        strings: [Option<&str>; 3],
        operation: i8,
        permission_type: i8,
    ) -> Result<(), LegacyError> {
        out.put_i8(resource_type);
        for s in strings {
            put_string(out, s)?;
        }
        out.put_i8(operation);
        out.put_i8(permission_type);
        Ok(())
    }
}

/// Decodes a DescribeAcls v0 body (after the request header).
pub fn decode_describe_acls_v0(buf: &mut Bytes) -> Result<DescribeAclsRequest, LegacyError> {
    let f = AclV0::decode(buf)?;
    Ok(DescribeAclsRequest::default()
        .with_resource_type_filter(f.resource_type)
        .with_resource_name_filter(f.resource_name)
        .with_pattern_type_filter(PATTERN_LITERAL)
        .with_principal_filter(f.principal)
        .with_host_filter(f.host)
        .with_operation(f.operation)
        .with_permission_type(f.permission_type))
}

/// Decodes a CreateAcls v0 body (after the request header).
pub fn decode_create_acls_v0(buf: &mut Bytes) -> Result<CreateAclsRequest, LegacyError> {
    let n = count(buf, ACL_BYTES_MIN, "creations")?;
    let mut creations = Vec::with_capacity(n);
    for _ in 0..n {
        let (resource_type, [name, principal, host], operation, permission_type) =
            AclV0::decode(buf)?.named()?;
        creations.push(
            AclCreation::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_resource_pattern_type(PATTERN_LITERAL)
                .with_principal(principal)
                .with_host(host)
                .with_operation(operation)
                .with_permission_type(permission_type),
        );
    }
    debug_assert_eq!(creations.len(), n);
    Ok(CreateAclsRequest::default().with_creations(creations))
}

/// Decodes a DeleteAcls v0 body (after the request header).
pub fn decode_delete_acls_v0(buf: &mut Bytes) -> Result<DeleteAclsRequest, LegacyError> {
    let n = count(buf, ACL_BYTES_MIN, "filters")?;
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let f = AclV0::decode(buf)?;
        filters.push(
            DeleteAclsFilter::default()
                .with_resource_type_filter(f.resource_type)
                .with_resource_name_filter(f.resource_name)
                .with_pattern_type_filter(PATTERN_LITERAL)
                .with_principal_filter(f.principal)
                .with_host_filter(f.host)
                .with_operation(f.operation)
                .with_permission_type(f.permission_type),
        );
    }
    debug_assert_eq!(filters.len(), n);
    Ok(DeleteAclsRequest::default().with_filters(filters))
}

/// Encodes the ACL requests at v0, as Sarama 1.22 does, for tests and the fuzz corpus. Pattern
/// types are dropped: v0 has none.
pub fn encode_describe_acls_v0_request(
    r: &DescribeAclsRequest,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    let strings = [&r.resource_name_filter, &r.principal_filter, &r.host_filter];
    let strings = strings.map(|s| s.as_deref());
    AclV0::encode(
        out,
        r.resource_type_filter,
        strings,
        r.operation,
        r.permission_type,
    )
}

/// See [`encode_describe_acls_v0_request`].
pub fn encode_create_acls_v0_request(
    r: &CreateAclsRequest,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    put_count(out, r.creations.len())?;
    for c in &r.creations {
        let strings = [&c.resource_name, &c.principal, &c.host].map(|s| Some(s.as_str()));
        AclV0::encode(
            out,
            c.resource_type,
            strings,
            c.operation,
            c.permission_type,
        )?;
    }
    Ok(())
}

/// See [`encode_describe_acls_v0_request`].
pub fn encode_delete_acls_v0_request(
    r: &DeleteAclsRequest,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    put_count(out, r.filters.len())?;
    for f in &r.filters {
        let strings = [&f.resource_name_filter, &f.principal_filter, &f.host_filter];
        let strings = strings.map(|s| s.as_deref());
        AclV0::encode(
            out,
            f.resource_type_filter,
            strings,
            f.operation,
            f.permission_type,
        )?;
    }
    Ok(())
}

fn put_count(out: &mut BytesMut, n: usize) -> Result<(), LegacyError> {
    out.put_i32(i32::try_from(n).map_err(|_| format!("array of {n} elements"))?);
    Ok(())
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
    nullable_count(buf, element_bytes_min, what)?.ok_or_else(|| format!("{what}: null"))
}

/// A nullable array's element count (None for null), bounded as [`count`].
fn nullable_count(
    buf: &mut Bytes,
    element_bytes_min: usize,
    what: &str,
) -> Result<Option<usize>, LegacyError> {
    let n = i32_of(buf, what)?;
    if n == -1 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| format!("{what}: count {n}"))?;
    if n > buf.remaining() / element_bytes_min {
        return Err(format!("{what}: {n} elements in {} bytes", buf.remaining()));
    }
    Ok(Some(n))
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

    /// What Sarama 1.22's DescribeConfig sends: one topic, all keys (null list); then one
    /// broker with two named keys.
    fn sarama_describe() -> Bytes {
        let mut b = BytesMut::new();
        b.put_i32(2);
        b.put_i8(2);
        put_str(&mut b, Some("orders"));
        b.put_i32(-1);
        b.put_i8(4);
        put_str(&mut b, Some("1"));
        b.put_i32(2);
        put_str(&mut b, Some("log.retention.ms"));
        put_str(&mut b, Some("num.partitions"));
        b.freeze()
    }

    #[test]
    fn describe_configs_v0_decodes_and_encodes_back() {
        let mut buf = sarama_describe();
        let r = decode_describe_configs_v0(&mut buf).expect("decodes");
        assert!(buf.is_empty());
        assert!(!r.include_synonyms);
        let got: Vec<_> = r
            .resources
            .iter()
            .map(|x| {
                let keys = x
                    .configuration_keys
                    .as_ref()
                    .map(|k| k.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                (x.resource_type, x.resource_name.to_string(), keys)
            })
            .collect();
        let keys = vec!["log.retention.ms".to_string(), "num.partitions".to_string()];
        assert_eq!(
            got,
            vec![(2, "orders".into(), None), (4, "1".into(), Some(keys))]
        );
        let mut out = BytesMut::new();
        encode_describe_configs_v0_request(&r, &mut out).expect("encodes");
        assert_eq!(out.freeze(), sarama_describe());
        let whole = sarama_describe();
        for len in 0..whole.len() {
            let mut cut = whole.slice(..len);
            assert!(decode_describe_configs_v0(&mut cut).is_err(), "{len} bytes");
        }
    }

    /// The v0 answer: `is_default` from the source (a topic's override is not default, a
    /// static broker value is not default for the broker), no synonyms, no types.
    #[test]
    fn describe_configs_v0_answer_is_written_as_sarama_reads_it() {
        use kafka_protocol::messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult,
        };
        let config = |name: &'static str, source: i8| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(StrBytes::from_static_str("7")))
                .with_config_source(source)
                .with_config_type(5)
        };
        let response = DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_error_message(None)
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configs(vec![config("retention.ms", 1), config("segment.bytes", 4)]),
            DescribeConfigsResult::default()
                .with_error_code(42)
                .with_error_message(Some(StrBytes::from_static_str("no")))
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configs(vec![config("a", 4), config("b", 5), config("c", 3)]),
        ]);
        let mut out = BytesMut::new();
        encode_describe_configs_v0(&response, &mut out).expect("encodes");
        let mut b = out.freeze();
        assert_eq!(b.get_i32(), 0, "throttle");
        assert_eq!(b.get_i32(), 2, "results");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let error = b.get_i16();
            let message = nullable_string(&mut b, "message").unwrap();
            let kind = b.get_i8();
            let name = string(&mut b, "name").unwrap();
            let n = b.get_i32();
            for _ in 0..n {
                let config = string(&mut b, "config").unwrap();
                let value = nullable_string(&mut b, "value").unwrap();
                let flags = (b.get_u8(), b.get_u8(), b.get_u8());
                seen.push((
                    error,
                    message.as_ref().map(|m| m.to_string()),
                    kind,
                    name.to_string(),
                    config.to_string(),
                    value.map(|v| v.to_string()),
                    flags,
                ));
            }
        }
        assert!(b.is_empty(), "{} bytes left", b.len());
        let row = |e, m: Option<&str>, k, n: &str, c: &str, default| {
            let m = m.map(String::from);
            (
                e,
                m,
                k,
                n.to_string(),
                c.to_string(),
                Some("7".to_string()),
                (0, default, 0),
            )
        };
        assert_eq!(
            seen,
            vec![
                row(0, None, 2, "orders", "retention.ms", 0),
                row(0, None, 2, "orders", "segment.bytes", 1),
                row(42, Some("no"), 4, "1", "a", 0),
                row(42, Some("no"), 4, "1", "b", 1),
                row(42, Some("no"), 4, "1", "c", 1),
            ]
        );
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

    /// Sarama 1.22's v0 ACL requests: a filter with a null name and principal, two creations,
    /// one delete filter.
    fn sarama_acl_filter(b: &mut BytesMut) {
        b.put_i8(2);
        put_str(b, None);
        put_str(b, None);
        put_str(b, Some("*"));
        b.put_i8(1);
        b.put_i8(3);
    }

    fn sarama_acl_creations() -> Bytes {
        let mut b = BytesMut::new();
        b.put_i32(2);
        for (name, op) in [("orders", 3), ("payments", 4)] {
            b.put_i8(2);
            put_str(&mut b, Some(name));
            put_str(&mut b, Some("User:alice"));
            put_str(&mut b, Some("*"));
            b.put_i8(op);
            b.put_i8(3);
        }
        b.freeze()
    }

    #[test]
    fn acl_requests_v0_decode_as_literal_patterns_and_encode_back() {
        let mut b = BytesMut::new();
        sarama_acl_filter(&mut b);
        let whole = b.freeze();
        let r = decode_describe_acls_v0(&mut whole.clone()).expect("describe decodes");
        assert_eq!(
            (r.resource_type_filter, r.pattern_type_filter, r.operation),
            (2, PATTERN_LITERAL, 1)
        );
        assert_eq!(r.resource_name_filter, None);
        assert_eq!(r.host_filter.as_deref(), Some("*"));
        let mut out = BytesMut::new();
        encode_describe_acls_v0_request(&r, &mut out).expect("encodes");
        assert_eq!(out.freeze(), whole);
        for len in 0..whole.len() {
            assert!(
                decode_describe_acls_v0(&mut whole.slice(..len)).is_err(),
                "{len}"
            );
        }

        let whole = sarama_acl_creations();
        let r = decode_create_acls_v0(&mut whole.clone()).expect("create decodes");
        let got: Vec<_> = r
            .creations
            .iter()
            .map(|c| {
                (
                    c.resource_name.to_string(),
                    c.resource_pattern_type,
                    c.operation,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("orders".into(), PATTERN_LITERAL, 3),
                ("payments".into(), PATTERN_LITERAL, 4)
            ]
        );
        assert!(r
            .creations
            .iter()
            .all(|c| c.principal.as_str() == "User:alice"));
        let mut out = BytesMut::new();
        encode_create_acls_v0_request(&r, &mut out).expect("encodes");
        assert_eq!(out.freeze(), whole);
        for len in 0..whole.len() {
            assert!(
                decode_create_acls_v0(&mut whole.slice(..len)).is_err(),
                "{len}"
            );
        }

        let mut b = BytesMut::new();
        b.put_i32(1);
        sarama_acl_filter(&mut b);
        let whole = b.freeze();
        let r = decode_delete_acls_v0(&mut whole.clone()).expect("delete decodes");
        assert_eq!(r.filters.len(), 1);
        assert_eq!(r.filters[0].pattern_type_filter, PATTERN_LITERAL);
        let mut out = BytesMut::new();
        encode_delete_acls_v0_request(&r, &mut out).expect("encodes");
        assert_eq!(out.freeze(), whole);
        for len in 0..whole.len() {
            assert!(
                decode_delete_acls_v0(&mut whole.slice(..len)).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn acl_requests_v0_refuse_hostile_counts_and_null_names() {
        for n in [i32::MAX, -1, -5, 1] {
            let mut b = BytesMut::new();
            b.put_i32(n);
            assert!(
                decode_create_acls_v0(&mut b.clone().freeze()).is_err(),
                "{n}"
            );
            assert!(decode_delete_acls_v0(&mut b.freeze()).is_err(), "{n}");
        }
        // A creation names its resource, principal and host; only filters may leave them null.
        let mut b = BytesMut::new();
        b.put_i32(1);
        sarama_acl_filter(&mut b);
        assert!(decode_create_acls_v0(&mut b.freeze()).is_err());
    }
}
