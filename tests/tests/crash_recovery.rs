//! Crash recovery: `kill -9` the broker and start it again on the same data directory.
//!
//! What users rely on that this proves: a message acknowledged with acks=all survives a
//! broker crash at the offset the broker reported and with the same bytes, whether the crash
//! comes right after the last acknowledgement or in the middle of a produce stream; after
//! recovery the log is readable end to end and new produces continue after it. A second broker
//! on a running broker's data directory is refused.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rdkafka::Offset;

const SIZE: usize = 1024;

fn msg(i: usize) -> Outgoing {
    Outgoing {
        key: format!("c{i}").into_bytes(),
        value: payload(i as u64, SIZE),
        partition: None,
    }
}

/// Every acknowledged message is in `got` at its reported (partition, offset) with its bytes;
/// every consumed message (acknowledged or not) is intact.
fn check_after_recovery(got: &[Consumed], reports: &[Delivery]) {
    let mut found = vec![false; reports.len()];
    for m in got {
        let k = String::from_utf8(m.key.clone().expect("key")).expect("utf8 key");
        let i: usize = k
            .strip_prefix('c')
            .and_then(|s| s.parse().ok())
            .expect("key c{i}");
        assert!(
            m.value.as_deref() == Some(&payload(i as u64, SIZE)[..]),
            "message {k} at {}:{} has wrong bytes after recovery",
            m.partition,
            m.offset
        );
        if let Ok(at) = &reports[i] {
            if *at == (m.partition, m.offset) {
                found[i] = true;
            }
        }
    }
    let lost: Vec<_> = reports
        .iter()
        .enumerate()
        .filter(|(i, r)| r.is_ok() && !found[*i])
        .map(|(i, r)| (i, r.clone().unwrap()))
        .take(10)
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages missing after kill -9 + restart; first (index, (partition, offset)): {lost:?}",
        reports.iter().enumerate().filter(|(i, r)| r.is_ok() && !found[*i]).count()
    );
}

fn ends(reports: &[Delivery]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for (p, o) in reports.iter().filter_map(|r| r.as_ref().ok()) {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    m
}

/// After recovery, a new message goes after everything that is there.
fn produce_after_recovery(bs: &str, topic: &str, partition: i32) {
    let (_, high) = watermarks(bs, topic, partition);
    let r = produce(bs, topic, "all", &[], 1, |_| Outgoing {
        key: b"after".to_vec(),
        value: b"after-recovery".to_vec(),
        partition: Some(partition),
    });
    assert_eq!(
        all_ok(&r),
        vec![(partition, high)],
        "offset of the first produce after recovery"
    );
}

#[test]
fn kill9_right_after_last_ack_loses_nothing() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("crash-after-ack");
    create_topic(&bs, &topic, 3, &[]);
    let n = 20_000;
    let reports = produce(&bs, &topic, "all", &[], n, msg);
    all_ok(&reports);
    broker.kill9();

    broker.restart();
    let bs = broker.bootstrap();
    let want = ends(&reports);
    for (&p, &end) in &want {
        assert_eq!(
            watermarks(&bs, &topic, p),
            (0, end),
            "partition {p} watermarks after kill -9 + restart (every message was acknowledged)"
        );
    }
    let got = consume_until(
        &bs,
        &topic,
        Offset::Beginning,
        &want,
        Duration::from_secs(120),
    );
    assert_eq!(got.len(), n, "consumed count after recovery");
    check_after_recovery(&got, &reports);
    produce_after_recovery(&bs, &topic, 0);
    broker.assert_alive();
}

#[test]
fn kill9_mid_stream_keeps_every_acknowledged_message() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("crash-mid-stream");
    create_topic(&bs, &topic, 3, &[]);
    let n = 60_000;
    let acked = Arc::new(AtomicUsize::new(0));
    let producer = {
        let bs = bs.clone();
        let topic = topic.clone();
        let acked = acked.clone();
        thread::spawn(move || {
            produce_tracked(
                &bs,
                &topic,
                "all",
                // Fail fast once the broker is gone; small batches so acks keep coming.
                &[
                    ("message.timeout.ms", "5000"),
                    ("batch.num.messages", "200"),
                ],
                n,
                msg,
                acked,
                true,
            )
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || acked.load(Ordering::SeqCst)
            >= 5_000),
        "fewer than 5000 acknowledgements after 120 s"
    );
    broker.kill9();
    let reports = producer.join().expect("producer thread");
    let n_ok = reports.iter().filter(|r| r.is_ok()).count();
    assert!(n_ok >= 5_000);
    eprintln!("killed mid-stream: {n_ok} of {n} acknowledged");

    broker.restart();
    let bs = broker.bootstrap();
    let want = ends(&reports);
    for (&p, &end) in &want {
        let (low, high) = watermarks(&bs, &topic, p);
        assert_eq!(low, 0);
        assert!(
            high >= end,
            "partition {p}: high watermark {high} after recovery < acknowledged end {end}"
        );
    }
    // Read everything that is there now (acknowledged or not), then check.
    let now: BTreeMap<i32, i64> = (0..3).map(|p| (p, watermarks(&bs, &topic, p).1)).collect();
    let got = consume_until(
        &bs,
        &topic,
        Offset::Beginning,
        &now,
        Duration::from_secs(120),
    );
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in &got {
        per.entry(m.partition).or_default().push(m.offset);
    }
    for (p, offs) in &per {
        for (j, o) in offs.iter().enumerate() {
            assert_eq!(
                *o, j as i64,
                "partition {p}: recovered offsets not dense from 0"
            );
        }
    }
    check_after_recovery(&got, &reports);
    produce_after_recovery(&bs, &topic, 1);
    broker.assert_alive();
}

#[test]
fn repeated_crashes_keep_accumulating() {
    let mut broker = Broker::start();
    let topic = unique_name("crash-repeat");
    create_topic(&broker.bootstrap(), &topic, 1, &[]);
    let per_round = 500;
    let mut all: Vec<Delivery> = Vec::new();
    for round in 0..4 {
        let bs = broker.bootstrap();
        let base = all.len();
        let r = produce(&bs, &topic, "all", &[], per_round, |i| msg(base + i));
        let ok = all_ok(&r);
        assert_eq!(
            ok[0],
            (0, base as i64),
            "round {round}: first offset continues the log"
        );
        all.extend(r);
        broker.kill9();
        broker.restart();
    }
    let bs = broker.bootstrap();
    assert_eq!(watermarks(&bs, &topic, 0), (0, all.len() as i64));
    let got = consume_all(&bs, &topic, &[0], Duration::from_secs(60));
    assert_eq!(got.len(), all.len());
    check_after_recovery(&got, &all);
}

/// A second broker started on a running broker's data directory (a second service, a script
/// run twice) is refused at once with a message naming the directory, before it touches any
/// file; the running broker keeps serving every acknowledged message and new ones. Once the
/// first broker is gone, even by `kill -9`, the directory is free again.
#[test]
fn a_second_broker_on_the_same_data_dir_is_refused() {
    let mut broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("dir-lock");
    create_topic(&bs, &topic, 1, &[]);
    let n = 1_000;
    let reports = produce(&bs, &topic, "all", &[], n, msg);
    all_ok(&reports);

    let stderr_path = broker.data_dir().with_extension("second-stderr.log");
    let mut second = std::process::Command::new(broker_bin())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(broker.data_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start a second broker");
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = second.try_wait().expect("wait for the second broker");
        status.is_some()
    });
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    let status = status.unwrap_or_else(|| panic!("a second broker kept running: {stderr}"));
    assert!(!status.success(), "a second broker exited 0: {stderr}");
    assert!(
        stderr.contains("is in use by another broker process")
            && stderr.contains(&broker.data_dir().display().to_string()),
        "the refusal names the directory: {stderr}"
    );

    broker.assert_alive();
    let want = ends(&reports);
    let got = consume_until(
        &bs,
        &topic,
        Offset::Beginning,
        &want,
        Duration::from_secs(60),
    );
    assert_eq!(
        got.len(),
        n,
        "consumed count with the second broker refused"
    );
    check_after_recovery(&got, &reports);
    produce_after_recovery(&bs, &topic, 0);

    // kill -9 leaves the lock file behind but not the lock: a restart takes it.
    broker.kill9();
    broker.restart();
    produce_after_recovery(&broker.bootstrap(), &topic, 0);
    broker.assert_alive();
}
