//! Produce/consume round trips through a real client (librdkafka via rdkafka).
//!
//! What users rely on that this proves: every message acknowledged with acks=all is stored
//! exactly once at the offset the broker reported, in the partition the client chose, byte
//! for byte; per-partition order is the production order; offsets are dense from 0; and the
//! acks=1 and acks=0 paths store data too.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::*;

const N: usize = 100_000;
const SIZE: usize = 1024;

fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

fn parse_key(k: &[u8], prefix: &str) -> usize {
    std::str::from_utf8(k)
        .ok()
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected key {:?}", String::from_utf8_lossy(k)))
}

/// Checks `got` against the delivery reports `delivered[i] = (partition, offset)` of messages
/// whose key is `{prefix}{i}` and value `payload(seed_base + i, size)`.
fn check_consumed(
    got: &[Consumed],
    delivered: &[(i32, i64)],
    prefix: &str,
    seed_base: u64,
    size: usize,
) {
    let mut seen = vec![false; delivered.len()];
    let mut last: HashMap<i32, (i64, usize)> = HashMap::new();
    for m in got {
        let k = m.key.as_deref().expect("message without key");
        let i = parse_key(k, prefix);
        assert!(i < delivered.len(), "key {prefix}{i} was never produced");
        assert!(
            !seen[i],
            "message {prefix}{i} consumed twice (partition {}, offset {})",
            m.partition, m.offset
        );
        seen[i] = true;
        assert_eq!(
            (m.partition, m.offset),
            delivered[i],
            "message {prefix}{i} found at (partition, offset) {:?} but its delivery report said {:?}",
            (m.partition, m.offset),
            delivered[i]
        );
        let v = m.value.as_deref().expect("message without value");
        let want = payload(seed_base + i as u64, size);
        if v != &want[..] {
            let first_diff = v.iter().zip(want.iter()).position(|(a, b)| a != b);
            panic!(
                "message {prefix}{i} value differs: len {} vs {}, first differing byte at {first_diff:?}",
                v.len(),
                want.len()
            );
        }
        if let Some(&(prev_off, prev_i)) = last.get(&m.partition) {
            assert!(
                m.offset > prev_off,
                "partition {} offsets not increasing: {} after {}",
                m.partition,
                m.offset,
                prev_off
            );
            assert!(
                i > prev_i,
                "partition {} order differs from production order: {prefix}{i} after {prefix}{prev_i}",
                m.partition
            );
        }
        last.insert(m.partition, (m.offset, i));
    }
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| !**s)
        .map(|(i, _)| i)
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages never consumed (first 10): {missing:?}"
    );
}

/// Per partition, delivered offsets must be exactly 0..count (dense, no duplicates).
fn check_dense(delivered: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in delivered {
        per.entry(p).or_default().push(o);
    }
    let mut ends = BTreeMap::new();
    for (p, mut offs) in per {
        offs.sort_unstable();
        for (j, &o) in offs.iter().enumerate() {
            assert_eq!(
                o,
                j as i64,
                "partition {p}: delivered offsets are not exactly 0..{}",
                offs.len()
            );
        }
        ends.insert(p, offs.len() as i64);
    }
    ends
}

#[test]
fn hundred_thousand_keyed_1k_messages_acks_all() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("pc-100k");
    create_topic(&bs, &topic, 3, &[]);

    let t0 = Instant::now();
    let reports = produce(&bs, &topic, "all", &[], N, |i| Outgoing {
        key: key(i),
        value: payload(i as u64, SIZE),
        partition: None,
    });
    let delivered = all_ok(&reports);
    let produce_time = t0.elapsed();

    let ends = check_dense(&delivered);
    assert_eq!(
        ends.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "the key partitioner should have used all 3 partitions: {ends:?}"
    );
    for (&p, &end) in &ends {
        assert_eq!(
            watermarks(&bs, &topic, p),
            (0, end),
            "partition {p} watermarks vs acknowledged count"
        );
    }

    let t1 = Instant::now();
    let got = consume_all(&bs, &topic, &[0, 1, 2], Duration::from_secs(300));
    let consume_time = t1.elapsed();
    assert_eq!(got.len(), N, "consumed message count");
    check_consumed(&got, &delivered, "k", 0, SIZE);
    eprintln!("100k x 1 KiB: produce(acks=all) {produce_time:?}, consume {consume_time:?}, per partition {ends:?}");
}

/// A key always lands in the same partition: produce each of 20 keys 25 times.
fn repeated_keys(acks: &str) {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name(&format!("pc-acks{acks}"));
    create_topic(&bs, &topic, 3, &[]);
    let n = 500;
    let reports = produce(&bs, &topic, acks, &[], n, |i| Outgoing {
        key: format!("r{}", i % 20).into_bytes(),
        value: payload(7_000_000 + i as u64, 300),
        partition: None,
    });
    if acks == "0" {
        // With acks=0 the client learns no offsets; it reports success with offset -1.
        for (i, r) in reports.iter().enumerate() {
            assert!(r.is_ok(), "acks=0 delivery {i} failed: {r:?}");
        }
    }
    // Everything produced must become readable (acks=0 gives no ack, so poll for it).
    let per_partition_expected: BTreeMap<i32, i64> = {
        let mut m = BTreeMap::new();
        for r in &reports {
            *m.entry(r.as_ref().unwrap().0).or_insert(0) += 1;
        }
        m
    };
    let total = || (0..3).map(|p| watermarks(&bs, &topic, p).1).sum::<i64>();
    assert!(
        wait_until(Duration::from_secs(20), || total() == n as i64),
        "acks={acks}: high watermarks sum to {} after 20 s, expected {n}",
        total()
    );
    let got = consume_all(&bs, &topic, &[0, 1, 2], Duration::from_secs(60));
    assert_eq!(got.len(), n, "acks={acks}: consumed count");

    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut next_seq: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for m in &got {
        let k = m.key.clone().unwrap();
        let p = *key_partition.entry(k.clone()).or_insert(m.partition);
        assert_eq!(
            p,
            m.partition,
            "key {:?} found in partitions {p} and {}",
            String::from_utf8_lossy(&k),
            m.partition
        );
        *per_partition.entry(m.partition).or_insert(0) += 1;
        // Per key, values come in production order: i = key + 20*j for j = 0, 1, ...
        let kn = parse_key(&k, "r");
        let j = next_seq.entry(k.clone()).or_insert(0);
        let i = kn + 20 * *j;
        *j += 1;
        assert_eq!(
            m.value.as_deref(),
            Some(&payload(7_000_000 + i as u64, 300)[..]),
            "acks={acks}: value of the {}th message with key r{kn} (message {i}) at {}:{}",
            *j,
            m.partition,
            m.offset
        );
    }
    assert_eq!(key_partition.len(), 20);
    assert!(
        next_seq.values().all(|&c| c == 25),
        "each key consumed 25 times: {next_seq:?}"
    );
    assert_eq!(
        per_partition, per_partition_expected,
        "per-partition counts vs the client's partition choices"
    );
    if acks != "0" {
        let delivered = all_ok(&reports);
        let ends = check_dense(&delivered);
        assert_eq!(ends, per_partition);
        for m in &got {
            // The consumed (partition, offset) pair must be one some delivery report named.
            assert!(delivered.contains(&(m.partition, m.offset)));
        }
    }
}

#[test]
fn acks_1_small_run() {
    repeated_keys("1");
}

#[test]
fn acks_0_small_run() {
    repeated_keys("0");
}
