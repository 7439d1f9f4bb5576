//! The Kafka wire protocol at the frame level: which APIs and versions this broker speaks, how a
//! request frame (size prefix already removed) becomes a header plus a typed request, and how a
//! response becomes a frame. Message bodies are the `kafka-protocol` crate's types (the vendored
//! copy with bounded allocation hints, see `vendor/PATCHES.md`).
//!
//! Nothing here does IO; the server shell reads and writes the bytes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Request and response frames start with this many bytes of big-endian size.
pub const FRAME_SIZE_PREFIX_BYTES: usize = 4;
/// The smallest possible request body: api key, api version, correlation id.
pub const REQUEST_HEADER_BYTES_MIN: usize = 8;

/// The APIs this broker answers and the versions of each, as advertised in ApiVersions.
/// Each range lies inside what the `kafka-protocol` crate can decode and encode.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 1, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
];

/// The version a request or response body is decoded and encoded at. Kafka 4 dropped
/// DescribeLogDirs v0 (and `kafka-protocol` with it), but kafka-python still sends it; its body
/// is the same as v1's (v1 only changed how the broker throttles). OffsetCommit v1, which Sarama
/// sends, has v2's response layout; its request is decoded by hand ([`legacy`]). DescribeConfigs
/// v0 (Sarama's too) is decoded and encoded by hand; this names the version its handler serves.
/// The ACL APIs' v0 requests (Sarama's) are decoded by hand, and their answers, which never list
/// an ACL, have v1's bytes.
pub fn body_version(key: ApiKey, version: i16) -> i16 {
    match key {
        ApiKey::DescribeLogDirs
        | ApiKey::DescribeConfigs
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls => version.max(1),
        ApiKey::OffsetCommit => version.max(2),
        _ => version,
    }
}

/// The supported version range of `key`, if this broker answers it at all.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// What the first bytes of a frame say, read without trusting anything after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePeek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Why a frame could not become a request. Each variant says how the connection must react.
#[derive(Debug)]
pub enum FrameError {
    /// Fewer bytes than a request header: close the connection.
    TooShort { len: usize },
    /// An API key this broker does not know or answer: close the connection (as Kafka does).
    UnknownApi { peek: FramePeek },
    /// A known API at a version outside our range. ApiVersions gets an UNSUPPORTED_VERSION
    /// answer (the client then retries with v0); others close the connection.
    UnsupportedVersion { peek: FramePeek, key: ApiKey },
    /// The header or body did not decode: close the connection.
    Malformed { peek: FramePeek, reason: String },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort { len } => {
                write!(f, "frame of {len} bytes is shorter than a header")
            }
            FrameError::UnknownApi { peek } => write!(f, "unknown api key {}", peek.api_key),
            FrameError::UnsupportedVersion { peek, key } => {
                write!(f, "unsupported version {} of {:?}", peek.api_version, key)
            }
            FrameError::Malformed { peek, reason } => write!(
                f,
                "malformed request (api key {} v{}): {reason}",
                peek.api_key, peek.api_version
            ),
        }
    }
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Reads api key, version and correlation id from the first eight bytes.
pub fn peek(frame: &[u8]) -> Result<FramePeek, FrameError> {
    if frame.len() < REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooShort { len: frame.len() });
    }
    Ok(FramePeek {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes one request frame (without its size prefix). The body keeps pointing into `frame`, so
/// produce records are not copied.
pub fn decode_request(frame: Bytes) -> Result<Request, FrameError> {
    let peek = peek(&frame)?;
    let key = ApiKey::try_from(peek.api_key).map_err(|_| FrameError::UnknownApi { peek })?;
    let (min, max) = supported_versions(key).ok_or(FrameError::UnknownApi { peek })?;
    if peek.api_version < min || peek.api_version > max {
        return Err(FrameError::UnsupportedVersion { peek, key });
    }
    let mut buf = frame;
    let header_version = key.request_header_version(peek.api_version);
    let header =
        RequestHeader::decode(&mut buf, header_version).map_err(|e| FrameError::Malformed {
            peek,
            reason: format!("header: {e:#}"),
        })?;
    let legacy = |decoded: Result<RequestKind, legacy::LegacyError>| {
        decoded.map_err(|reason| FrameError::Malformed {
            peek,
            reason: format!("body: {reason}"),
        })
    };
    let body = match (key, peek.api_version) {
        (ApiKey::OffsetCommit, 1) => {
            legacy(legacy::decode_offset_commit_v1(&mut buf).map(RequestKind::OffsetCommit))?
        }
        (ApiKey::DescribeConfigs, 0) => {
            legacy(legacy::decode_describe_configs_v0(&mut buf).map(RequestKind::DescribeConfigs))?
        }
        (ApiKey::DescribeAcls, 0) => {
            legacy(legacy::decode_describe_acls_v0(&mut buf).map(RequestKind::DescribeAcls))?
        }
        (ApiKey::CreateAcls, 0) => {
            legacy(legacy::decode_create_acls_v0(&mut buf).map(RequestKind::CreateAcls))?
        }
        (ApiKey::DeleteAcls, 0) => {
            legacy(legacy::decode_delete_acls_v0(&mut buf).map(RequestKind::DeleteAcls))?
        }
        _ => RequestKind::decode(key, &mut buf, body_version(key, peek.api_version)).map_err(
            |e| FrameError::Malformed {
                peek,
                reason: format!("body: {e:#}"),
            },
        )?,
    };
    if !buf.is_empty() {
        // Kafka ignores bytes after the body, and librdkafka 2.12 relies on it: its Metadata v12
        // "all topics" request reserves a 4-byte count, writes a 1-byte null, and leaves 3 zeros.
        tracing::debug!(api = ?key, version = peek.api_version, left_over = buf.len(), "ignoring bytes after the body");
    }
    Ok(Request {
        api_key: key,
        api_version: peek.api_version,
        header,
        body,
    })
}

/// Encodes a response as a whole frame, size prefix included.
pub fn encode_response(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = key.response_header_version(version);
    // A fetch response carries up to tens of MiB of stored batches: size the buffer once
    // rather than let it double (and copy) its way up.
    let body_bytes = match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    let mut buf = BytesMut::with_capacity(256 + body_bytes);
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    match (body, version) {
        (ResponseKind::DescribeConfigs(r), 0) => {
            legacy::encode_describe_configs_v0(r, &mut buf).map_err(anyhow::Error::msg)?
        }
        // v0 has no pattern types: a listed or matched ACL would need its own encoder.
        (ResponseKind::DescribeAcls(r), 0) if !r.resources.is_empty() => {
            anyhow::bail!("DescribeAcls v0 answer with ACLs in it")
        }
        (ResponseKind::DeleteAcls(r), 0)
            if r.filter_results.iter().any(|f| !f.matching_acls.is_empty()) =>
        {
            anyhow::bail!("DeleteAcls v0 answer with matched ACLs in it")
        }
        _ => body.encode(&mut buf, body_version(key, version))?,
    }
    let size = buf.len() - FRAME_SIZE_PREFIX_BYTES;
    let size = i32::try_from(size).map_err(|_| anyhow::anyhow!("response of {size} bytes"))?;
    buf[..FRAME_SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

pub mod client;
pub mod fetch_frame;
pub mod legacy;

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: i16, version: i16, rest: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(key);
        b.put_i16(version);
        b.put_i32(7);
        b.put_slice(rest);
        b.freeze()
    }

    #[test]
    fn supported_ranges_lie_inside_the_crate_ranges() {
        for (key, min, max) in SUPPORTED_APIS {
            let range = key.valid_versions();
            let min = body_version(*key, *min);
            assert!(
                range.min <= min && *max <= range.max,
                "{key:?} {min}..={max}"
            );
        }
    }

    #[test]
    fn metadata_v0_declaring_i32_max_topics_is_an_error_not_an_abort() {
        // client id null (-1), then topics count i32::MAX and nothing else.
        let f = frame(3, 0, &[0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(f.len(), 14);
        assert!(matches!(
            decode_request(f),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn compact_array_with_huge_varint_count_is_an_error() {
        // Metadata v12: flexible header v2 = client id (nullable i16 string) + tagged fields,
        // then topics as a compact array with count 0x0fffffff.
        let f = frame(3, 12, &[0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            decode_request(f),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn bytes_after_the_body_are_ignored_like_kafka_does() {
        // librdkafka 2.12's Metadata v12 for all topics: client id "rdkafka", no header tags,
        // topics = null (compact 0), 3 stray zeros, auto-create, authorized-ops, no body tags.
        let mut rest = vec![0x00, 0x07];
        rest.extend_from_slice(b"rdkafka");
        rest.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]);
        let decoded = decode_request(frame(3, 12, &rest)).unwrap();
        match decoded.body {
            RequestKind::Metadata(m) => assert!(m.topics.is_none(), "null topics means all topics"),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn unknown_key_and_version_are_told_apart() {
        assert!(matches!(
            decode_request(frame(999, 0, &[])),
            Err(FrameError::UnknownApi { .. })
        ));
        assert!(matches!(
            decode_request(frame(18, 99, &[])),
            Err(FrameError::UnsupportedVersion {
                key: ApiKey::ApiVersions,
                ..
            })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3])),
            Err(FrameError::TooShort { .. })
        ));
    }

    #[test]
    fn a_real_request_round_trips() {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))]));
        let header = RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(9)
            .with_correlation_id(42);
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, ApiKey::Metadata.request_header_version(9))
            .unwrap();
        req.encode(&mut buf, 9).unwrap();
        let decoded = decode_request(buf.freeze()).unwrap();
        assert_eq!(decoded.header.correlation_id, 42);
        match decoded.body {
            RequestKind::Metadata(m) => {
                assert_eq!(m.topics.unwrap()[0].name.as_ref().unwrap().0.as_str(), "t")
            }
            other => panic!("decoded {other:?}"),
        }
    }
}
