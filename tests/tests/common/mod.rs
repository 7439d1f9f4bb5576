//! rdkafka helpers shared by the integration tests (`mod common;` in each test file).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub use tests::*;

/// Base client config: loopback bootstrap, quiet logs, no idempotence (not supported yet).
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "4")
        .set("socket.timeout.ms", "30000");
    c
}

/// Runs one future to completion on a throwaway current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap)
        .create()
        .expect("create AdminClient")
}

/// CreateTopics through the AdminClient; asserts success, then waits until Metadata shows
/// every partition with a leader.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(Duration::from_secs(30))))
        .request_timeout(Some(Timeout::After(Duration::from_secs(30))));
    let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics request failed");
    assert_eq!(res.len(), 1, "one result per topic: {res:?}");
    match &res[0] {
        Ok(name) => assert_eq!(name, topic),
        Err((name, code)) => panic!("CreateTopics {name} (configs {configs:?}) failed: {code:?}"),
    }
    wait_for_topic(bootstrap, topic, partitions);
}

/// Waits until Metadata for `topic` lists `partitions` partitions, each with a leader.
pub fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer = client_config(bootstrap).create().expect("metadata client");
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let t = md.topics().iter().find(|t| t.name() == topic);
                match t {
                    Some(t) => {
                        last = format!(
                            "error={:?} partitions={:?}",
                            t.error(),
                            t.partitions()
                                .iter()
                                .map(|p| (p.id(), p.leader(), p.error()))
                                .collect::<Vec<_>>()
                        );
                        t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    }
                    None => {
                        last = "topic absent".into();
                        false
                    }
                }
            }
            Err(e) => {
                last = format!("{e}");
                false
            }
        }
    });
    assert!(
        ok,
        "topic {topic} not ready with {partitions} partitions in Metadata: {last}"
    );
}

/// (low, high) watermarks via ListOffsets earliest/latest.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    let consumer: BaseConsumer = client_config(bootstrap).create().expect("watermark client");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("ListOffsets {topic}-{partition}: {e}"))
}

/// One message to produce.
pub struct Outgoing {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Explicit partition, or None for the client's key partitioner.
    pub partition: Option<i32>,
}

/// Delivery report of one message: Ok((partition, offset)) or the error text.
pub type Delivery = Result<(i32, i64), String>;

struct Collect {
    reports: Mutex<Vec<Option<Delivery>>>,
    acked: Arc<AtomicUsize>,
}

impl ClientContext for Collect {
    /// With `debug=eos`, librdkafka's idempotence recovery: a drained epoch bump resends what
    /// was not acknowledged under new sequence numbers, which is the one way an idempotent
    /// producer writes a record twice without the broker erring. Printed, so the test harness
    /// shows it when a test fails (and `--nocapture` always).
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if matches!(
            fac,
            "DRAIN" | "IDEMPSTATE" | "ERRSEQ" | "DUPSEQ" | "UNKPID" | "ERRPID"
        ) {
            eprintln!("librdkafka {fac}: {log_message}");
        }
    }
}

impl ProducerContext for Collect {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, idx: usize) {
        let d = match r {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, m)) => Err(format!("{e} (partition {})", m.partition())),
        };
        if d.is_ok() {
            self.acked.fetch_add(1, Ordering::SeqCst);
        }
        // After produce() has taken the reports (e.g. purge on drop) the slot is gone.
        if let Some(slot) = self.reports.lock().unwrap().get_mut(idx) {
            *slot = Some(d);
        }
    }
}

/// Produces `n` messages made by `make(i)` with the given acks and extra producer settings
/// and waits for every delivery report. Returns the reports in production order.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    extra: &[(&str, &str)],
    n: usize,
    make: impl FnMut(usize) -> Outgoing,
) -> Vec<Delivery> {
    produce_tracked(
        bootstrap,
        topic,
        acks,
        extra,
        n,
        make,
        Arc::new(AtomicUsize::new(0)),
        false,
    )
}

/// Like [`produce`], but counts successful deliveries in `acked` as they arrive (so another
/// thread can act mid-stream), and with `tolerate_failures` a flush that times out is not
/// fatal: messages without a report are returned as errors.
#[allow(clippy::too_many_arguments)]
pub fn produce_tracked(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    extra: &[(&str, &str)],
    n: usize,
    mut make: impl FnMut(usize) -> Outgoing,
    acked: Arc<AtomicUsize>,
    tolerate_failures: bool,
) -> Vec<Delivery> {
    let mut cfg = client_config(bootstrap);
    cfg.set("acks", acks)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "1048576");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    if extra.iter().any(|(k, _)| *k == "debug") {
        // Debug lines reach the log callback only at this level.
        cfg.set_log_level(RDKafkaLogLevel::Debug);
    }
    let ctx = Collect {
        reports: Mutex::new(vec![None; n]),
        acked,
    };
    let producer: BaseProducer<Collect> = cfg.create_with_context(ctx).expect("create producer");
    for i in 0..n {
        let msg = make(i);
        loop {
            let mut rec = BaseRecord::with_opaque_to(topic, i)
                .key(&msg.key)
                .payload(&msg.value);
            if let Some(p) = msg.partition {
                rec = rec.partition(p);
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) if tolerate_failures => {
                    producer.context().reports.lock().unwrap()[i] =
                        Some(Err(format!("enqueue: {e}")));
                    break;
                }
                Err((e, _)) => panic!("enqueue message {i}: {e}"),
            }
        }
        if i % 256 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    let flushed = producer.flush(Duration::from_secs(180));
    if !tolerate_failures {
        flushed.expect("flush: not all delivery reports arrived in time");
    }
    // flush() serves the delivery callbacks; one last poll for good measure.
    producer.poll(Duration::ZERO);
    let reports = std::mem::take(&mut *producer.context().reports.lock().unwrap());
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => r,
            None if tolerate_failures => Err("no delivery report".to_string()),
            None => panic!("no delivery report for message {i}"),
        })
        .collect()
}

/// Asserts every report succeeded and returns the (partition, offset) pairs.
pub fn all_ok(reports: &[Delivery]) -> Vec<(i32, i64)> {
    let failed: Vec<_> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.clone())))
        .take(10)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} deliveries failed; first: {failed:?}",
        reports.iter().filter(|r| r.is_err()).count(),
        reports.len()
    );
    reports.iter().map(|r| *r.as_ref().unwrap()).collect()
}

/// A consumed message.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A consumer that uses `assign` only (the broker has no consumer groups yet). librdkafka
/// requires a group.id for assign(); nothing is committed.
pub fn assign_consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut cfg = client_config(bootstrap);
    cfg.set("group.id", unique_name("assign-only"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("create consumer")
}

/// Reads each partition from `start` until its next offset reaches `until[p]` (exclusive).
/// Partitions with `until[p] <= 0` are not read. Panics on timeout with what it has.
pub fn consume_until(
    bootstrap: &str,
    topic: &str,
    start: Offset,
    until: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer = assign_consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    for (&p, &end) in until {
        if end > 0 {
            tpl.add_partition_offset(topic, p, start)
                .expect("add partition");
        }
    }
    if tpl.count() == 0 {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let mut next: BTreeMap<i32, i64> = until.keys().map(|&p| (p, -1)).collect();
    let done = |next: &BTreeMap<i32, i64>| until.iter().all(|(p, &end)| end <= 0 || next[p] >= end);
    let mut out = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + timeout;
    while !done(&next) {
        if Instant::now() > deadline {
            panic!(
                "consume {topic}: timed out after {timeout:?}; next offsets {next:?}, wanted {until:?}; \
                 {} messages read; consumer errors (first 10): {errors:?}",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let p = m.partition();
                next.insert(p, m.offset() + 1);
                out.push(Consumed {
                    partition: p,
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                });
            }
            // Coordinator lookups for the (unused) group may fail while the broker has no
            // group support; those are not about fetching. Keep them for the report.
            Some(Err(e)) if errors.len() < 10 => errors.push(e.to_string()),
            Some(Err(_)) => {}
        }
    }
    out
}

/// Reads partitions from the beginning up to their current high watermarks.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Vec<Consumed> {
    let until: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|&p| (p, watermarks(bootstrap, topic, p).1))
        .collect();
    consume_until(bootstrap, topic, Offset::Beginning, &until, timeout)
}

/// Produces a few messages to a fresh topic and reads them back: "a normal client works".
pub fn smoke_roundtrip(bootstrap: &str) {
    let topic = unique_name("smoke");
    create_topic(bootstrap, &topic, 1, &[]);
    let n = 20;
    let reports = produce(bootstrap, &topic, "all", &[], n, |i| Outgoing {
        key: format!("s{i}").into_bytes(),
        value: payload(1_000_000 + i as u64, 100),
        partition: Some(0),
    });
    let delivered = all_ok(&reports);
    for (i, &(p, off)) in delivered.iter().enumerate() {
        assert_eq!((p, off), (0, i as i64), "smoke delivery {i}");
    }
    let got = consume_all(bootstrap, &topic, &[0], Duration::from_secs(30));
    assert_eq!(got.len(), n, "smoke: consumed count");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.offset, i as i64);
        assert_eq!(m.key.as_deref(), Some(format!("s{i}").as_bytes()));
        assert_eq!(
            m.value.as_deref(),
            Some(&payload(1_000_000 + i as u64, 100)[..])
        );
    }
}

// ---- external tools (kcat, Python and JavaScript clients) -------------------------------------

/// Whether a missing external client fails the test (`REQUIRE_EXTERNAL_CLIENTS=1`, as
/// `tests/run-all.sh` sets) rather than skipping it.
pub fn required() -> bool {
    std::env::var("REQUIRE_EXTERNAL_CLIENTS")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// True if the tool is usable; otherwise panics (required) or prints a skip note.
pub fn have(what: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if required() {
            panic!(
                "{what} is not installed but REQUIRE_EXTERNAL_CLIENTS=1 (tests/run-all.sh installs it)"
            );
        }
        eprintln!(
            "skipped: {what} not installed (set REQUIRE_EXTERNAL_CLIENTS=1 to make this a failure)"
        );
    }
    ok
}

/// `$PYTHON` (default python3) if it can import `module`; otherwise None, after [`have`]
/// skipped the test or failed it.
pub fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let what = format!("python3 with {module}");
    let import = format!("import {module}");
    have(&what, Command::new(&python).args(["-c", &import])).then_some(python)
}

/// `tests/node` if `node` can load kafkajs there (`npm ci` there; run-all.sh does it);
/// otherwise None, after [`have`] skipped the test or failed it.
pub fn kafkajs_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    have(
        "node with kafkajs (npm ci in tests/node)",
        Command::new("node")
            .args(["-e", "require('kafkajs')"])
            .current_dir(&dir),
    )
    .then_some(dir)
}

/// Runs a command with optional stdin, killing it after `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let mut w = child.stdin.take().unwrap();
        thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        thread::sleep(Duration::from_millis(50));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let out = Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    };
    assert!(
        !timed_out,
        "{cmd:?} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}); stdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends one request frame (header and body, without the size prefix) on a fresh connection
/// and returns the response frame after its size prefix (header first). `what` names the
/// request in failures.
pub fn raw_exchange(addr: impl std::net::ToSocketAddrs, frame: &[u8], what: &str) -> Bytes {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    s.write_all(frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .unwrap_or_else(|e| panic!("{what} response length: {e}"));
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp)
        .unwrap_or_else(|e| panic!("{what} response body: {e}"));
    Bytes::from(resp)
}

/// One request on a fresh connection at `version`, its body written by `body` after a header
/// of the version's kind: the response body after its header, whose correlation id is checked.
pub fn raw_request(
    addr: impl std::net::ToSocketAddrs,
    key: ApiKey,
    version: i16,
    body: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let corr = 4712;
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("tests-raw")));
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, key.request_header_version(version))
        .expect("encode header");
    body(&mut frame);
    let what = format!("{key:?} v{version}");
    let mut resp = raw_exchange(addr, &frame, &what);
    let got = ResponseHeader::decode(&mut resp, key.response_header_version(version))
        .unwrap_or_else(|e| panic!("{what} response header: {e}"));
    assert_eq!(got.correlation_id, corr, "{what} correlation id");
    resp
}

/// DescribeLogDirs v4 over a plain socket (kafka-protocol codec), for `topics` (None: all).
pub fn raw_describe_log_dirs(
    addr: impl std::net::ToSocketAddrs,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    const VERSION: i16 = 4;
    let req = DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
        ts.into_iter()
            .map(|(name, partitions)| {
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                    .with_partitions(partitions)
            })
            .collect()
    }));
    let mut resp = raw_request(addr, ApiKey::DescribeLogDirs, VERSION, |b| {
        req.encode(b, VERSION).expect("encode DescribeLogDirs")
    });
    DescribeLogDirsResponse::decode(&mut resp, VERSION).expect("decode DescribeLogDirs response")
}

/// Bytes in the `.log` segment files of a partition directory (0 if it has none).
pub fn segment_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
