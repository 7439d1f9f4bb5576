//! Hostile and malformed frames on a raw TCP socket.
//!
//! What users rely on that this proves: no single client can take the broker down or make it
//! allocate what a frame merely claims. Every malformed frame (absurd element counts, negative
//! or 2 GiB sizes, unknown API keys, unsupported versions, truncated frames, garbage, huge
//! string lengths) gets an error response or a closed connection, promptly, and afterwards the
//! broker process is alive and a normal client (rdkafka) produces and consumes as usual.
//! `ApiVersions` with a version the broker does not know gets the Kafka-mandated v0 response
//! with UNSUPPORTED_VERSION (35) and the API list, on a connection that stays usable.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const PROMPT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- frame building

fn i16b(v: i16) -> [u8; 2] {
    v.to_be_bytes()
}
fn i32b(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}

/// Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
fn header_v1(api_key: i16, version: i16, corr: i32, client_id: Option<&str>) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(i16b(api_key));
    h.extend(i16b(version));
    h.extend(i32b(corr));
    match client_id {
        Some(s) => {
            h.extend(i16b(s.len() as i16));
            h.extend(s.as_bytes());
        }
        None => h.extend(i16b(-1)),
    }
    h
}

/// Request header v2 (flexible versions): header v1 plus an empty tagged-field section.
fn header_v2(api_key: i16, version: i16, corr: i32, client_id: Option<&str>) -> Vec<u8> {
    let mut h = header_v1(api_key, version, corr, client_id);
    h.push(0);
    h
}

/// Size prefix (number of bytes that follow) plus the bytes.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = i32b(body.len() as i32).to_vec();
    f.extend_from_slice(body);
    f
}

fn uvarint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

// ---------------------------------------------------------------- talking to the broker

#[derive(Debug)]
enum Outcome {
    /// EOF or reset: the broker closed the connection.
    Closed,
    /// A whole response frame (without the size prefix).
    Response(Vec<u8>),
    /// Nothing within the deadline and the connection still open.
    Silent,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to broker");
    s.set_nodelay(true).unwrap();
    s
}

/// Writes everything it can; a broker that closes early may make the write fail, which is fine.
fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(bytes);
    let _ = s.flush();
}

fn read_exact_deadline(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), Outcome> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Outcome::Silent);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(Outcome::Closed),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Outcome::Silent)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Outcome::Closed), // reset, broken pipe
        }
    }
    Ok(())
}

/// Reads one response frame, or observes a close, or gives up after `within`.
fn read_outcome(s: &mut TcpStream, within: Duration) -> Outcome {
    let deadline = Instant::now() + within;
    let mut size = [0u8; 4];
    if let Err(o) = read_exact_deadline(s, &mut size, deadline) {
        return o;
    }
    let n = i32::from_be_bytes(size);
    assert!(
        (4..=64 << 20).contains(&n),
        "broker sent a response frame with size {n}"
    );
    let mut body = vec![0u8; n as usize];
    match read_exact_deadline(s, &mut body, deadline) {
        Ok(()) => Outcome::Response(body),
        Err(Outcome::Silent) => panic!("broker sent a partial {n}-byte response frame and stalled"),
        Err(o) => o,
    }
}

/// Sends a complete hostile request and requires an error response for `corr` or a close,
/// within PROMPT. Returns what happened.
fn expect_error_or_close(addr: SocketAddr, bytes: &[u8], corr: Option<i32>, what: &str) -> Outcome {
    let mut s = connect(addr);
    send(&mut s, bytes);
    let o = read_outcome(&mut s, PROMPT);
    match &o {
        Outcome::Closed => eprintln!("{what}: connection closed"),
        Outcome::Response(body) => {
            let got = i32::from_be_bytes(body[0..4].try_into().unwrap());
            eprintln!(
                "{what}: {}-byte response {:02x?}",
                body.len(),
                &body[..body.len().min(24)]
            );
            if let Some(c) = corr {
                assert_eq!(got, c, "{what}: response correlation id");
            }
        }
        Outcome::Silent => panic!(
            "{what}: the broker neither answered nor closed the connection within {PROMPT:?} \
             after a complete malformed request"
        ),
    }
    o
}

/// Sends bytes, half-closes, and requires the broker to close its side within PROMPT
/// (answering anything it could parse on the way).
fn expect_close_after_eof(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut s = connect(addr);
    send(&mut s, bytes);
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + PROMPT;
    loop {
        match read_outcome(&mut s, deadline.saturating_duration_since(Instant::now())) {
            Outcome::Closed => return,
            Outcome::Response(_) => continue,
            Outcome::Silent => {
                panic!("{what}: broker kept the connection open {PROMPT:?} after the client's EOF")
            }
        }
    }
}

/// ApiVersions v0 on a fresh connection works: error 0 and a non-empty API list.
fn api_versions_ok(addr: SocketAddr) {
    let mut s = connect(addr);
    api_versions_v0_on(&mut s, 4242, "fresh connection");
}

fn api_versions_v0_on(s: &mut TcpStream, corr: i32, what: &str) {
    send(s, &frame(&header_v1(18, 0, corr, Some("probe"))));
    match read_outcome(s, PROMPT) {
        Outcome::Response(body) => {
            let (c, err, apis) = parse_api_versions_v0(&body);
            assert_eq!(c, corr, "{what}: ApiVersions v0 correlation id");
            assert_eq!(err, 0, "{what}: ApiVersions v0 error code");
            assert!(
                apis.iter().any(|a| a.0 == 18),
                "{what}: ApiVersions not in its own list: {apis:?}"
            );
        }
        o => panic!("{what}: ApiVersions v0 got {o:?}"),
    }
}

/// Response header v0 (correlation id) + ApiVersionsResponse v0 body.
fn parse_api_versions_v0(body: &[u8]) -> (i32, i16, Vec<(i16, i16, i16)>) {
    assert!(body.len() >= 10, "ApiVersions response too short: {body:?}");
    let corr = i32::from_be_bytes(body[0..4].try_into().unwrap());
    let err = i16::from_be_bytes(body[4..6].try_into().unwrap());
    let n = i32::from_be_bytes(body[6..10].try_into().unwrap());
    assert!((0..1000).contains(&n), "ApiVersions api count {n}");
    let mut apis = Vec::new();
    let mut p = 10;
    for _ in 0..n {
        assert!(
            body.len() >= p + 6,
            "ApiVersions response truncated at entry {}",
            apis.len()
        );
        let k = i16::from_be_bytes(body[p..p + 2].try_into().unwrap());
        let lo = i16::from_be_bytes(body[p + 2..p + 4].try_into().unwrap());
        let hi = i16::from_be_bytes(body[p + 4..p + 6].try_into().unwrap());
        apis.push((k, lo, hi));
        p += 6;
    }
    (corr, err, apis)
}

/// The broker survived: process alive, raw ApiVersions works, rdkafka produce+consume works.
fn assert_healthy(broker: &mut Broker) {
    broker.assert_alive();
    api_versions_ok(broker.addr());
    smoke_roundtrip(&broker.bootstrap());
    broker.assert_alive();
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- the hostile frames

/// Metadata v0 declaring i32::MAX topics and carrying none (14 bytes after the size).
fn metadata_v0_i32max_topics() -> Vec<u8> {
    let mut b = header_v1(3, 0, 11, None);
    b.extend(i32b(i32::MAX));
    assert_eq!(b.len(), 14);
    frame(&b)
}

/// Metadata v12 (flexible) whose compact topics array declares 0xFFFFFFF - 1 entries.
fn metadata_v12_huge_compact_count() -> Vec<u8> {
    let mut b = header_v2(3, 12, 12, Some("t"));
    b.extend(uvarint(0x0FFF_FFFF));
    assert_eq!(&b[b.len() - 4..], &[0xFF, 0xFF, 0xFF, 0x7F]);
    frame(&b)
}

/// Metadata v12 whose compact array count is u32::MAX.
fn metadata_v12_u32max_compact_count() -> Vec<u8> {
    let mut b = header_v2(3, 12, 13, Some("t"));
    b.extend(uvarint(u32::MAX as u64));
    frame(&b)
}

/// Metadata v12 with an overlong (10-byte, never-ending) varint count.
fn metadata_v12_overlong_varint() -> Vec<u8> {
    let mut b = header_v2(3, 12, 14, Some("t"));
    b.extend([0xFF; 10]);
    frame(&b)
}

/// Header whose client_id claims 32767 bytes but carries 3.
fn huge_client_id_length() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(i16b(18));
    b.extend(i16b(0));
    b.extend(i32b(15));
    b.extend(i16b(i16::MAX));
    b.extend(b"abc");
    frame(&b)
}

/// Metadata v1 whose one topic name claims 32767 bytes but carries 4.
fn metadata_v1_huge_topic_name() -> Vec<u8> {
    let mut b = header_v1(3, 1, 16, Some("t"));
    b.extend(i32b(1));
    b.extend(i16b(i16::MAX));
    b.extend(b"abcd");
    frame(&b)
}

/// ApiVersions v3 (flexible) whose client_software_name compact string claims ~2 GiB.
fn api_versions_v3_huge_compact_string() -> Vec<u8> {
    let mut b = header_v2(18, 3, 17, Some("t"));
    b.extend(uvarint(0x7FFF_FFFF));
    b.extend(b"rust");
    frame(&b)
}

/// CreateTopics v5 (flexible) with one topic whose compact name string claims ~256 MiB.
fn create_topics_v5_huge_name() -> Vec<u8> {
    let mut b = header_v2(19, 5, 18, Some("t"));
    b.extend(uvarint(2)); // 1 topic
    b.extend(uvarint(0x0FFF_FFFF));
    b.extend(b"x");
    frame(&b)
}

/// Produce v3 whose records field claims 0x7FFFFFF0 bytes.
fn produce_v3_huge_records() -> Vec<u8> {
    let mut b = header_v1(0, 3, 19, Some("t"));
    b.extend(i16b(-1)); // transactional_id null
    b.extend(i16b(-1)); // acks
    b.extend(i32b(5000)); // timeout
    b.extend(i32b(1)); // 1 topic
    b.extend(i16b(1));
    b.extend(b"p");
    b.extend(i32b(1)); // 1 partition
    b.extend(i32b(0));
    b.extend(i32b(0x7FFF_FFF0)); // records length
    b.extend([0u8; 16]);
    frame(&b)
}

/// Metadata v1 declaring 3 topics but carrying one (body ends mid-array).
fn metadata_v1_short_array() -> Vec<u8> {
    let mut b = header_v1(3, 1, 20, Some("t"));
    b.extend(i32b(3));
    b.extend(i16b(3));
    b.extend(b"abc");
    frame(&b)
}

/// An unknown API key.
fn unknown_api_key() -> Vec<u8> {
    frame(&header_v1(999, 0, 21, Some("t")))
}

/// Negative size prefix.
fn negative_size() -> Vec<u8> {
    let mut f = i32b(-1).to_vec();
    f.extend(header_v1(18, 0, 22, None));
    f
}

/// Size prefix of i32::MAX (2 GiB) followed by a plausible header.
fn two_gib_size() -> Vec<u8> {
    let mut f = i32b(i32::MAX).to_vec();
    f.extend(header_v1(18, 0, 23, None));
    f
}

/// ApiVersions v99 shaped like a v3 request (header v2 + compact strings), the way clients
/// probe a newer version.
fn api_versions_v99(corr: i32) -> Vec<u8> {
    let mut b = header_v2(18, 99, corr, Some("hostile"));
    b.extend(uvarint(5));
    b.extend(b"test");
    b.extend(uvarint(4));
    b.extend(b"1.0");
    b.push(0);
    frame(&b)
}

fn garbage(seed: u64, len: usize) -> Vec<u8> {
    payload(0xBAD_0000 + seed, len)
}

/// Complete frames that must get an error or a close.
fn complete_hostile_frames() -> Vec<(&'static str, Vec<u8>, Option<i32>)> {
    vec![
        (
            "Metadata v0 with i32::MAX topics",
            metadata_v0_i32max_topics(),
            Some(11),
        ),
        (
            "Metadata v12 compact count 0xFFFFFFF",
            metadata_v12_huge_compact_count(),
            Some(12),
        ),
        (
            "Metadata v12 compact count u32::MAX",
            metadata_v12_u32max_compact_count(),
            Some(13),
        ),
        (
            "Metadata v12 overlong varint",
            metadata_v12_overlong_varint(),
            Some(14),
        ),
        ("client_id length 32767", huge_client_id_length(), Some(15)),
        (
            "Metadata v1 topic name length 32767",
            metadata_v1_huge_topic_name(),
            Some(16),
        ),
        (
            "ApiVersions v3 compact string ~2 GiB",
            api_versions_v3_huge_compact_string(),
            Some(17),
        ),
        (
            "CreateTopics v5 compact name ~256 MiB",
            create_topics_v5_huge_name(),
            Some(18),
        ),
        (
            "Produce v3 records length ~2 GiB",
            produce_v3_huge_records(),
            Some(19),
        ),
        (
            "Metadata v1 array shorter than its count",
            metadata_v1_short_array(),
            Some(20),
        ),
        ("unknown api key 999", unknown_api_key(), Some(21)),
    ]
}

// ---------------------------------------------------------------- tests

#[test]
fn metadata_v0_declaring_i32_max_topics() {
    let mut broker = Broker::start();
    expect_error_or_close(
        broker.addr(),
        &metadata_v0_i32max_topics(),
        Some(11),
        "Metadata v0 i32::MAX topics",
    );
    assert_healthy(&mut broker);
}

#[test]
fn negative_size_prefix_is_closed() {
    let mut broker = Broker::start();
    let o = expect_error_or_close(broker.addr(), &negative_size(), None, "negative size");
    assert!(
        matches!(o, Outcome::Closed),
        "negative size: expected a close, got {o:?}"
    );
    assert_healthy(&mut broker);
}

#[test]
fn two_gib_size_prefix_is_refused_not_allocated() {
    let mut broker = Broker::start();
    let pid = broker.pid().unwrap();
    let before = vm_kib(pid, "VmHWM:");
    let o = expect_error_or_close(broker.addr(), &two_gib_size(), None, "2 GiB size");
    assert!(
        matches!(o, Outcome::Closed),
        "2 GiB size: expected a close, got {o:?}"
    );
    // Several at once: still nothing gets allocated.
    let mut conns: Vec<TcpStream> = (0..8).map(|_| connect(broker.addr())).collect();
    for c in &mut conns {
        send(c, &two_gib_size());
    }
    for c in &mut conns {
        let o = read_outcome(c, PROMPT);
        assert!(
            matches!(o, Outcome::Closed),
            "2 GiB size (8 concurrent): expected a close, got {o:?}"
        );
    }
    let after = vm_kib(pid, "VmHWM:");
    eprintln!("broker peak RSS before/after 2 GiB frames: {before:?} / {after:?} KiB");
    if let Some(hwm) = after {
        assert!(
            hwm < 1024 * 1024,
            "broker peak RSS reached {hwm} KiB after 2 GiB size prefixes"
        );
    }
    assert_healthy(&mut broker);
}

#[test]
fn unknown_api_key_gets_error_or_close() {
    let mut broker = Broker::start();
    expect_error_or_close(broker.addr(), &unknown_api_key(), Some(21), "api key 999");
    assert_healthy(&mut broker);
}

#[test]
fn api_versions_v99_gets_v0_unsupported_version_with_api_list() {
    let mut broker = Broker::start();
    let mut s = connect(broker.addr());
    send(&mut s, &api_versions_v99(31));
    let body = match read_outcome(&mut s, PROMPT) {
        Outcome::Response(b) => b,
        o => panic!("ApiVersions v99: expected a v0 response, got {o:?}"),
    };
    let (corr, err, apis) = parse_api_versions_v0(&body);
    // Cross-check the hand parsing with kafka-protocol's v0 decoder: the whole body must be
    // exactly one v0 response.
    let mut rest = Bytes::copy_from_slice(&body[4..]);
    let decoded = ApiVersionsResponse::decode(&mut rest, 0).expect("decode ApiVersionsResponse v0");
    assert!(
        rest.is_empty(),
        "{} trailing bytes after the v0 ApiVersions response",
        rest.len()
    );
    assert_eq!(decoded.error_code, err);
    assert_eq!(decoded.api_keys.len(), apis.len());
    assert_eq!(corr, 31, "correlation id");
    assert_eq!(
        err, 35,
        "ApiVersions v99: error code (expected UNSUPPORTED_VERSION=35)"
    );
    let av = apis
        .iter()
        .find(|a| a.0 == 18)
        .unwrap_or_else(|| panic!("ApiVersions missing from list {apis:?}"));
    assert!(
        av.1 == 0 && av.2 >= 3 && av.2 < 99,
        "ApiVersions range {av:?}"
    );
    for needed in [0i16, 1, 2, 3, 19, 20, 32, 37, 44, 60] {
        assert!(
            apis.iter().any(|a| a.0 == needed),
            "api key {needed} missing from ApiVersions list {apis:?}"
        );
    }
    // Clients retry on the same connection with a version from the list.
    api_versions_v0_on(
        &mut s,
        32,
        "ApiVersions v0 after v99 on the same connection",
    );
    assert_healthy(&mut broker);
}

#[test]
fn compact_array_and_varint_abuse_on_flexible_versions() {
    let mut broker = Broker::start();
    let a = broker.addr();
    expect_error_or_close(
        a,
        &metadata_v12_huge_compact_count(),
        Some(12),
        "Metadata v12 count 0xFFFFFFF",
    );
    expect_error_or_close(
        a,
        &metadata_v12_u32max_compact_count(),
        Some(13),
        "Metadata v12 count u32::MAX",
    );
    expect_error_or_close(
        a,
        &metadata_v12_overlong_varint(),
        Some(14),
        "Metadata v12 overlong varint",
    );
    assert_healthy(&mut broker);
}

#[test]
fn huge_string_and_bytes_lengths() {
    let mut broker = Broker::start();
    let a = broker.addr();
    expect_error_or_close(
        a,
        &huge_client_id_length(),
        Some(15),
        "client_id length 32767",
    );
    expect_error_or_close(
        a,
        &metadata_v1_huge_topic_name(),
        Some(16),
        "topic name length 32767",
    );
    expect_error_or_close(
        a,
        &api_versions_v3_huge_compact_string(),
        Some(17),
        "compact string ~2 GiB",
    );
    expect_error_or_close(
        a,
        &create_topics_v5_huge_name(),
        Some(18),
        "CreateTopics compact name",
    );
    expect_error_or_close(
        a,
        &produce_v3_huge_records(),
        Some(19),
        "Produce records length ~2 GiB",
    );
    assert_healthy(&mut broker);
}

#[test]
fn truncated_frames() {
    let mut broker = Broker::start();
    let a = broker.addr();
    // Size says 20, 10 bytes arrive, then EOF.
    let mut f = i32b(20).to_vec();
    f.extend(&header_v1(18, 0, 41, None)[..6]);
    expect_close_after_eof(a, &f, "10 of 20 announced bytes");
    // Half a size prefix, then EOF.
    expect_close_after_eof(a, &[0, 0], "2-byte size prefix");
    // Every proper prefix of a valid ApiVersions v0 request, then EOF.
    let valid = frame(&header_v1(18, 0, 42, Some("cut")));
    for cut in 1..valid.len() {
        expect_close_after_eof(
            a,
            &valid[..cut],
            &format!("ApiVersions cut at {cut} of {}", valid.len()),
        );
    }
    // Body shorter than the array count says (complete frame).
    expect_error_or_close(
        a,
        &metadata_v1_short_array(),
        Some(20),
        "Metadata v1 short array",
    );
    // Size 0 and sizes too small for a header.
    for n in [0i32, 1, 3, 7] {
        let mut f = i32b(n).to_vec();
        f.extend(vec![0x01u8; n as usize]);
        expect_error_or_close(a, &f, None, &format!("size {n} frame"));
    }
    assert_healthy(&mut broker);
}

#[test]
fn random_garbage() {
    let mut broker = Broker::start();
    let a = broker.addr();
    for seed in 0..16 {
        // Raw garbage (random size prefix), then EOF.
        expect_close_after_eof(a, &garbage(seed, 4096), &format!("garbage seed {seed}"));
        // A plausible size followed by that many garbage bytes (a random api key/version).
        let body = garbage(1000 + seed, 1000);
        if body[0] == 0 && body[1] == 0 {
            continue; // api key 0 (Produce) with acks=0 legitimately gets no answer
        }
        expect_error_or_close(
            a,
            &frame(&body),
            None,
            &format!("framed garbage seed {seed}"),
        );
        broker.assert_alive();
    }
    assert_healthy(&mut broker);
}

#[test]
fn all_of_them_against_one_broker_then_normal_clients_work() {
    let mut broker = Broker::start();
    let a = broker.addr();
    // Some connections stay open mid-frame the whole time (a slow or stuck client).
    let mut stuck: Vec<TcpStream> = (0..4).map(|_| connect(a)).collect();
    for (i, s) in stuck.iter_mut().enumerate() {
        send(s, &i32b(100).to_vec()[..1 + i % 4]);
    }
    for (what, bytes, corr) in complete_hostile_frames() {
        expect_error_or_close(a, &bytes, corr, what);
        broker.assert_alive();
    }
    expect_error_or_close(a, &negative_size(), None, "negative size");
    expect_error_or_close(a, &two_gib_size(), None, "2 GiB size");
    let mut s = connect(a);
    send(&mut s, &api_versions_v99(51));
    assert!(
        matches!(read_outcome(&mut s, PROMPT), Outcome::Response(_)),
        "ApiVersions v99"
    );
    for seed in 0..4 {
        expect_close_after_eof(a, &garbage(seed, 4096), "garbage");
    }
    // Several hostile frames pipelined on one connection: answered or closed, never a hang.
    let mut pipelined = Vec::new();
    for (_, bytes, _) in complete_hostile_frames() {
        pipelined.extend(bytes);
    }
    expect_close_after_eof(a, &pipelined, "pipelined hostile frames");
    assert_healthy(&mut broker);
    drop(stuck);
    assert_healthy(&mut broker);
}

/// The hand-built headers are what kafka-protocol encodes, so the hostile frames are malformed
/// only where they mean to be.
#[test]
fn hand_built_headers_match_kafka_protocol() {
    for (hv, version) in [(1i16, 0i16), (2, 12)] {
        let h = RequestHeader::default()
            .with_request_api_key(3)
            .with_request_api_version(version)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut buf = BytesMut::new();
        h.encode(&mut buf, hv).unwrap();
        let mine = if hv == 1 {
            header_v1(3, version, 77, Some("t"))
        } else {
            header_v2(3, version, 77, Some("t"))
        };
        assert_eq!(&buf[..], &mine[..], "request header v{hv}");
    }
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(3)
        .with_correlation_id(11)
        .with_client_id(None)
        .encode(&mut buf, 1)
        .unwrap();
    assert_eq!(&buf[..], &header_v1(3, 0, 11, None)[..]);
}
