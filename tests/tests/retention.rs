//! Retention: size- and time-based deletion of old segments.
//!
//! What users rely on that this proves: a topic created with `segment.bytes` and
//! `retention.bytes` (or `retention.ms`) does not grow without bound: old segment files are
//! deleted from disk, ListOffsets earliest (the log start) moves forward to the first
//! remaining segment, and a consumer reading "from the beginning" starts at the new log start
//! and reads the rest intact. Broker-wide defaults (`--log-segment-bytes`,
//! `--retention-bytes`) apply to auto-created topics the same way.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use common::*;
use rdkafka::Offset;

const SIZE: usize = 1024;
const N: usize = 2048; // ~2 MiB of values
const SEGMENT: u64 = 64 * 1024;
const RETAIN: u64 = 256 * 1024;

fn fill(bs: &str, topic: &str) -> Vec<(i32, i64)> {
    // Small producer batches so a 64 KiB segment holds several of them.
    let r = produce(
        bs,
        topic,
        "all",
        &[("batch.size", "16384"), ("linger.ms", "2")],
        N,
        |i| Outgoing {
            key: format!("r{i}").into_bytes(),
            value: payload(3_000_000 + i as u64, SIZE),
            partition: Some(0),
        },
    );
    let ok = all_ok(&r);
    for (i, d) in ok.iter().enumerate() {
        assert_eq!(*d, (0, i as i64));
    }
    ok
}

struct State {
    low: i64,
    high: i64,
    segments: Vec<(i64, u64)>,
}

fn state(broker: &Broker, topic: &str) -> State {
    let (low, high) = watermarks(&broker.bootstrap(), topic, 0);
    let segments = segment_files(&broker.partition_dir(topic, 0))
        .into_iter()
        .map(|(base, p)| (base, fs::metadata(&p).map(|m| m.len()).unwrap_or(0)))
        .collect();
    State {
        low,
        high,
        segments,
    }
}

/// Waits until the log start moved past 0 and segment 0 is gone, then checks consistency and
/// that consuming from the beginning starts at the new log start.
fn wait_and_check(broker: &Broker, topic: &str, what: &str) -> State {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(20), || {
        let s = state(broker, topic);
        let done = s.low > 0 && s.segments.first().map(|(b, _)| *b > 0).unwrap_or(false);
        last = Some(s);
        done
    });
    let s = last.unwrap();
    assert!(
        ok,
        "{what}: after 20 s log start is {} (high {}) and segments are {:?} (base offset, bytes); \
         expected old segments deleted and log start > 0",
        s.low, s.high, s.segments
    );
    // Let retention settle (no more produces come), then look again.
    std::thread::sleep(Duration::from_millis(1500));
    let s = state(broker, topic);
    assert_eq!(
        s.high, N as i64,
        "{what}: high watermark unchanged by retention"
    );
    assert!(
        !broker
            .partition_dir(topic, 0)
            .join("00000000000000000000.log")
            .exists(),
        "{what}: first segment file still on disk"
    );
    if let Some((base, _)) = s.segments.first() {
        assert_eq!(
            s.low, *base,
            "{what}: log start should be the base offset of the first remaining segment {:?}",
            s.segments
        );
    }

    eprintln!(
        "{what}: log start {} high {} segments (base, bytes) {:?}",
        s.low, s.high, s.segments
    );
    let bs = broker.bootstrap();
    if s.low == s.high {
        // Everything expired (a broker may roll and delete the active segment too): a new
        // message must then be the first thing a from-the-beginning reader sees.
        let r = produce(&bs, topic, "all", &[], 1, |_| Outgoing {
            key: b"late".to_vec(),
            value: b"late".to_vec(),
            partition: Some(0),
        });
        assert_eq!(
            all_ok(&r),
            vec![(0, s.high)],
            "{what}: offset after full expiry"
        );
        let got = consume_until(
            &bs,
            topic,
            Offset::Beginning,
            &BTreeMap::from([(0, s.high + 1)]),
            Duration::from_secs(60),
        );
        assert_eq!(
            got.len(),
            1,
            "{what}: from-beginning read after full expiry"
        );
        assert_eq!(got[0].offset, s.high);
        return s;
    }
    let got = consume_until(
        &bs,
        topic,
        Offset::Beginning,
        &BTreeMap::from([(0, s.high)]),
        Duration::from_secs(60),
    );
    let first = got.first().expect("something left to read").offset;
    assert!(
        first >= s.low,
        "{what}: consumer from beginning got offset {first}, below log start {}",
        s.low
    );
    // The log start may have moved again while we read; re-read it to bound the first offset.
    let low_now = watermarks(&bs, topic, 0).0;
    assert!(
        first <= low_now,
        "{what}: first consumed offset {first} skips past log start {low_now}"
    );
    for (j, m) in got.iter().enumerate() {
        let off = first + j as i64;
        assert_eq!(m.offset, off, "{what}: offsets dense from the log start");
        assert_eq!(m.key.as_deref(), Some(format!("r{off}").as_bytes()));
        assert!(
            m.value.as_deref() == Some(&payload(3_000_000 + off as u64, SIZE)[..]),
            "{what}: value at {off}"
        );
    }
    s
}

#[test]
fn retention_bytes_deletes_old_segments() {
    let broker = Broker::builder()
        .arg("retention-check-interval-ms", 200)
        .start();
    let bs = broker.bootstrap();
    let topic = unique_name("ret-bytes");
    let seg = SEGMENT.to_string();
    let ret = RETAIN.to_string();
    create_topic(
        &bs,
        &topic,
        1,
        &[("segment.bytes", &seg), ("retention.bytes", &ret)],
    );
    fill(&bs, &topic);
    let s = wait_and_check(&broker, &topic, "retention.bytes");
    // Retention keeps about retention.bytes: never more than that plus one (active) segment
    // and a producer batch of slack.
    let total: u64 = s.segments.iter().map(|(_, n)| n).sum();
    assert!(
        total <= RETAIN + SEGMENT + 32 * 1024,
        "retention.bytes={RETAIN}: {total} bytes of segments remain: {:?}",
        s.segments
    );
    assert!(
        total >= RETAIN / 2,
        "retention deleted more than needed: {total} bytes left: {:?}",
        s.segments
    );
    assert!(
        s.segments.len() >= 2,
        "expected several 64 KiB segments to remain: {:?}",
        s.segments
    );
}

#[test]
fn retention_ms_deletes_expired_segments() {
    let broker = Broker::builder()
        .arg("retention-check-interval-ms", 200)
        .start();
    let bs = broker.bootstrap();
    let topic = unique_name("ret-ms");
    let seg = SEGMENT.to_string();
    create_topic(
        &bs,
        &topic,
        1,
        &[("segment.bytes", &seg), ("retention.ms", "1000")],
    );
    fill(&bs, &topic);
    let s = wait_and_check(&broker, &topic, "retention.ms");
    let total: u64 = s.segments.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 2 * SEGMENT + 32 * 1024,
        "retention.ms=1000: {total} bytes of segments remain well after expiry: {:?}",
        s.segments
    );
}

#[test]
fn broker_defaults_apply_to_auto_created_topics() {
    let broker = Broker::builder()
        .arg("retention-check-interval-ms", 200)
        .arg("log-segment-bytes", SEGMENT)
        .arg("retention-bytes", RETAIN)
        .arg("auto-create-topics", "true")
        .start();
    let bs = broker.bootstrap();
    let topic = unique_name("ret-auto");
    // No CreateTopics: the producer's Metadata request creates the topic.
    fill(&bs, &topic);
    let s = wait_and_check(&broker, &topic, "broker-default retention");
    let total: u64 = s.segments.iter().map(|(_, n)| n).sum();
    assert!(
        total <= RETAIN + SEGMENT + 32 * 1024,
        "{total} bytes remain: {:?}",
        s.segments
    );
}
