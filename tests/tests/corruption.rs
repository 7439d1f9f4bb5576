//! Damaged segment files: a torn tail (the file cut mid-batch, as a crash during a write
//! leaves it) and a flipped byte in the last batch (caught by the batch CRC).
//!
//! What users rely on that this proves: a broker whose last write was torn or corrupted still
//! starts, serves every batch before the damaged one byte for byte, drops the damaged batch
//! instead of serving garbage, and gives new messages offsets that continue right after the
//! last valid batch. Recovery validates the files after a crash (kill -9) and whenever the
//! clean-shutdown marker is missing.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rdkafka::Offset;

const ROUNDS: usize = 10;
const PER_ROUND: usize = 50;
const SIZE: usize = 1024;

fn seed(i: usize) -> u64 {
    5_000_000 + i as u64
}

/// Produces ROUNDS flushed rounds (each at least one batch) to partition 0 of a new topic.
fn fill(broker: &Broker, topic: &str) -> Vec<(i32, i64)> {
    let bs = broker.bootstrap();
    create_topic(&bs, topic, 1, &[]);
    let mut delivered = Vec::new();
    for round in 0..ROUNDS {
        let base = round * PER_ROUND;
        let r = produce(&bs, topic, "all", &[("linger.ms", "20")], PER_ROUND, |j| {
            Outgoing {
                key: format!("x{}", base + j).into_bytes(),
                value: payload(seed(base + j), SIZE),
                partition: Some(0),
            }
        });
        delivered.extend(all_ok(&r));
    }
    for (i, d) in delivered.iter().enumerate() {
        assert_eq!(*d, (0, i as i64));
    }
    delivered
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    /// kill -9: no clean-shutdown marker is written.
    Kill9,
    /// SIGTERM, then the `.clean_shutdown` marker is deleted so the files get validated.
    TermWithoutMarker,
}

fn stop(broker: &mut Broker, topic: &str, how: Stop) {
    match how {
        Stop::Kill9 => broker.kill9(),
        Stop::TermWithoutMarker => {
            broker.terminate_ok();
            let marker = broker.partition_dir(topic, 0).join(".clean_shutdown");
            assert!(
                marker.exists(),
                "after SIGTERM the broker should leave {} (contract: clean-shutdown marker per partition dir)",
                marker.display()
            );
            fs::remove_file(&marker).expect("remove clean-shutdown marker");
        }
    }
}

fn last_segment(broker: &Broker, topic: &str) -> PathBuf {
    let segs = segment_files(&broker.partition_dir(topic, 0));
    assert!(
        !segs.is_empty(),
        "no NNNNNNNNNNNNNNNNNNNN.log segment in {}",
        broker.partition_dir(topic, 0).display()
    );
    segs.last().unwrap().1.clone()
}

/// After restart: log ends at `valid_end`, all messages before it are intact, a new message
/// gets offset `valid_end`, and the segment files hold only whole batches.
fn check_recovered(broker: &mut Broker, topic: &str, valid_end: i64, what: &str) {
    let bs = broker.bootstrap();
    assert_eq!(
        watermarks(&bs, topic, 0),
        (0, valid_end),
        "{what}: (low, high) watermarks after restart; expected the log to end after the last valid batch"
    );
    let until = BTreeMap::from([(0, valid_end)]);
    let got = consume_until(
        &bs,
        topic,
        Offset::Beginning,
        &until,
        Duration::from_secs(60),
    );
    assert_eq!(
        got.len() as i64,
        valid_end,
        "{what}: messages readable before the damage"
    );
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset, i as i64, "{what}: offsets dense");
        assert_eq!(
            m.key.as_deref(),
            Some(format!("x{i}").as_bytes()),
            "{what}: key at offset {i}"
        );
        assert!(
            m.value.as_deref() == Some(&payload(seed(i), SIZE)[..]),
            "{what}: value at offset {i} differs"
        );
    }
    // New produce continues right after the last valid batch.
    let r = produce(&bs, topic, "all", &[], 3, |j| Outgoing {
        key: format!("new{j}").into_bytes(),
        value: payload(9_000_000 + j as u64, 200),
        partition: Some(0),
    });
    let ok = all_ok(&r);
    assert_eq!(
        ok,
        vec![(0, valid_end), (0, valid_end + 1), (0, valid_end + 2)],
        "{what}: offsets of new messages after recovery"
    );
    // The whole log, old and new, reads back cleanly.
    let until = BTreeMap::from([(0, valid_end + 3)]);
    let got = consume_until(
        &bs,
        topic,
        Offset::Beginning,
        &until,
        Duration::from_secs(60),
    );
    assert_eq!(
        got.len() as i64,
        valid_end + 3,
        "{what}: full read after recovery + produce"
    );
    for j in 0..3 {
        let m = &got[valid_end as usize + j];
        assert_eq!(m.offset, valid_end + j as i64);
        assert_eq!(m.key.as_deref(), Some(format!("new{j}").as_bytes()));
        assert!(m.value.as_deref() == Some(&payload(9_000_000 + j as u64, 200)[..]));
    }
    // On disk: every segment is a sequence of whole batches with continuous offsets (the torn
    // or corrupt bytes were cut off, not left in the middle of the log).
    broker.terminate_ok();
    let mut next = 0i64;
    for (base, path) in segment_files(&broker.partition_dir(topic, 0)) {
        let bytes = fs::read(&path).unwrap();
        let batches = parse_batches(&bytes);
        let covered: u64 = batches.iter().map(|b| b.size).sum();
        assert_eq!(
            covered,
            bytes.len() as u64,
            "{what}: {} is {} bytes but whole batches cover only {covered}",
            path.display(),
            bytes.len()
        );
        if let Some(first) = batches.first() {
            assert!(
                first.base_offset >= base,
                "{what}: segment {base} starts with offset {}",
                first.base_offset
            );
        }
        for b in &batches {
            assert_eq!(
                b.base_offset,
                next,
                "{what}: batch offsets on disk not continuous in {}",
                path.display()
            );
            assert_eq!(b.magic, 2);
            next = b.next_offset();
        }
    }
    assert_eq!(next, valid_end + 3, "{what}: offsets on disk end at");
    broker.restart();
}

fn torn_tail(how: Stop) {
    let mut broker = Broker::start();
    let topic = unique_name("torn");
    fill(&broker, &topic);
    stop(&mut broker, &topic, how);

    let seg = last_segment(&broker, &topic);
    let bytes = fs::read(&seg).unwrap();
    let batches = parse_batches(&bytes);
    let covered: u64 = batches.iter().map(|b| b.size).sum();
    assert_eq!(
        covered,
        bytes.len() as u64,
        "segment {} is not whole batches before damage",
        seg.display()
    );
    assert_eq!(
        batches.last().unwrap().next_offset(),
        (ROUNDS * PER_ROUND) as i64
    );
    let last = batches.last().unwrap().clone();
    eprintln!(
        "{} batches on disk before damage; last {last:?}",
        batches.len()
    );
    assert!(
        last.size > 400,
        "last batch too small to tear mid-batch: {last:?}"
    );
    let new_len = bytes.len() as u64 - 300;
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(new_len)
        .unwrap();
    // Expected: everything up to the last batch that is still whole.
    let valid_end = parse_batches(&bytes[..new_len as usize])
        .last()
        .map(|b| b.next_offset())
        .unwrap_or(0);
    assert_eq!(valid_end, last.base_offset);

    broker.restart();
    check_recovered(
        &mut broker,
        &topic,
        valid_end,
        &format!("torn tail ({how:?})"),
    );
    broker.assert_alive();
}

fn flipped_byte(how: Stop) {
    let mut broker = Broker::start();
    let topic = unique_name("flip");
    fill(&broker, &topic);
    stop(&mut broker, &topic, how);

    let seg = last_segment(&broker, &topic);
    let mut bytes = fs::read(&seg).unwrap();
    let batches = parse_batches(&bytes);
    let last = batches.last().unwrap().clone();
    eprintln!(
        "{} batches on disk before damage; last {last:?}",
        batches.len()
    );
    assert!(batches.len() >= 2, "need at least two batches: {batches:?}");
    // A byte inside the records of the last batch: the CRC covers it, the framing does not.
    let at = (last.position + 61 + (last.size - 61) / 2) as usize;
    bytes[at] ^= 0x5A;
    fs::write(&seg, &bytes).unwrap();

    broker.restart();
    check_recovered(
        &mut broker,
        &topic,
        last.base_offset,
        &format!("flipped byte ({how:?})"),
    );
    broker.assert_alive();
}

#[test]
fn torn_tail_after_kill9() {
    torn_tail(Stop::Kill9);
}

#[test]
fn torn_tail_after_sigterm_without_marker() {
    torn_tail(Stop::TermWithoutMarker);
}

#[test]
fn flipped_byte_in_last_batch_after_kill9() {
    flipped_byte(Stop::Kill9);
}

#[test]
fn flipped_byte_in_last_batch_after_sigterm_without_marker() {
    flipped_byte(Stop::TermWithoutMarker);
}

#[test]
fn clean_restart_keeps_everything() {
    let mut broker = Broker::start();
    let topic = unique_name("clean");
    let delivered = fill(&broker, &topic);
    broker.terminate_ok();
    broker.restart();
    let end = delivered.len() as i64;
    check_recovered(&mut broker, &topic, end, "clean SIGTERM + restart");
}
