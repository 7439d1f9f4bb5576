//! `bench`: drives the release broker binary with librdkafka (the `rdkafka` crate) and prints
//! figures for BENCHMARKS.md. A benchmark, not a test: it asserts nothing about speed.
//!
//! Phases, each against a fresh broker started with `--fsync always` (group commit):
//! 1. produce throughput, 1 KiB values, acks=all, to a 1-partition and a 6-partition topic;
//! 2. consume throughput of what phase 1 wrote (assign + read from the beginning);
//! 3. end-to-end latency at a fixed rate (default 1,000 msg/s) with librdkafka's default
//!    fetch.wait.max.ms=500 and linger.ms=0, measured from send to receipt;
//! 4. a consumer group of `--group-members` members: time until every partition is assigned,
//!    and from one member leaving until the group is stable again;
//! 5. throughout, the broker's peak resident memory (VmHWM / VmRSS from /proc).
//!
//! Run: `cargo build --release -p broker && cargo run --release -p tests --bin bench -- --help`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use tests::Broker;

struct Args {
    messages: u64,
    value_bytes: usize,
    latency_seconds: u64,
    latency_rate: u64,
    group_members: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        messages: 1_000_000,
        value_bytes: 1024,
        latency_seconds: 10,
        latency_rate: 1000,
        group_members: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage(&flag))
        };
        match flag.as_str() {
            "--messages" => a.messages = value(),
            "--value-bytes" => a.value_bytes = value() as usize,
            "--latency-seconds" => a.latency_seconds = value(),
            "--latency-rate" => a.latency_rate = value(),
            "--group-members" => a.group_members = value(),
            _ => usage(&flag),
        }
    }
    a
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bench: bad flag {flag:?}\n\
         usage: bench [--messages N (per produce phase, default 1000000)] [--value-bytes N (1024)]\n\
         \x20            [--latency-seconds N (10)] [--latency-rate MSG_PER_S (1000)]\n\
         \x20            [--group-members N (50; 0 skips the group phase)]\n\
         The broker binary is target/release/broker (or BROKER_BIN)."
    );
    std::process::exit(2)
}

/// Peak and current resident memory of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// An acks=all, non-idempotent producer that counts delivery reports, with `extra` settings.
fn counting_producer(bootstrap: &str, extra: &[(&str, &str)]) -> ThreadedProducer<Counting> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let ctx = Counting {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    config.create_with_context(ctx).expect("producer")
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics(&[topic], &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// Produces `n` messages of `value_bytes` with acks=all; returns (seconds, messages/s, MB/s).
fn produce(bootstrap: &str, topic: &str, n: u64, value_bytes: usize) -> (f64, f64, f64) {
    let producer = counting_producer(
        bootstrap,
        &[
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ],
    );
    let value = vec![0x5au8; value_bytes];
    let start = Instant::now();
    for i in 0..n {
        let key = format!("key-{i}");
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let ctx = producer.context();
    let ok = ctx.ok.load(Ordering::Relaxed);
    let failed = ctx.failed.load(Ordering::Relaxed);
    assert_eq!((ok, failed), (n, 0), "every message must be acknowledged");
    (
        secs,
        n as f64 / secs,
        n as f64 * value_bytes as f64 / secs / 1e6,
    )
}

fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

/// Reads `n` messages from every partition of `topic` from the beginning; returns
/// (seconds, messages/s, MB/s).
fn consume(bootstrap: &str, topic: &str, partitions: i32, n: u64) -> (f64, f64, f64) {
    let c = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let start = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    while count < n {
        match c.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                count += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => panic!("consume error: {e}"),
            None => panic!("no message for 10 s after {count} of {n}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    (secs, count as f64 / secs, bytes as f64 / secs / 1e6)
}

/// Sends `rate` msg/s for `seconds` and measures send-to-receive latency of each message.
fn latency(
    bootstrap: &str,
    topic: &str,
    seconds: u64,
    rate: u64,
    value_bytes: usize,
) -> Vec<Duration> {
    let base = Instant::now();
    let total = seconds * rate;
    let done = Arc::new(AtomicBool::new(false));
    let c = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End).unwrap();
    c.assign(&tpl).expect("assign");
    // Let the consumer resolve the end offset before the first send.
    let _ = c.poll(Duration::from_millis(1500));
    let reader = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut seen = Vec::with_capacity(total as usize);
            while (seen.len() as u64) < total && !done.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let now = base.elapsed();
                    let p = m.payload().unwrap_or(&[]);
                    let sent = Duration::from_nanos(u64::from_be_bytes(p[..8].try_into().unwrap()));
                    seen.push(now.saturating_sub(sent));
                }
            }
            seen
        })
    };
    let producer = counting_producer(bootstrap, &[("linger.ms", "0")]);
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    let mut value = vec![0u8; value_bytes.max(8)];
    for i in 0..total {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        value[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(&value[..]))
            .expect("send");
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    let mut seen = reader.join().expect("reader");
    assert_eq!(
        seen.len() as u64,
        total,
        "every latency message must arrive"
    );
    seen.sort();
    seen
}

/// Each member's current assignment, updated from the rebalance callbacks.
#[derive(Default)]
struct Assignments(Mutex<BTreeMap<usize, Vec<i32>>>);

impl Assignments {
    /// True when the members in `alive` own every partition of `0..partitions` exactly once.
    fn covers(&self, partitions: i32, alive: &[bool]) -> bool {
        let map = self.0.lock().unwrap();
        let mut owned: Vec<i32> = map
            .iter()
            .filter(|(member, _)| alive[**member])
            .flat_map(|(_, ps)| ps.iter().copied())
            .collect();
        let dead_own_nothing = map
            .iter()
            .all(|(member, ps)| alive[*member] || ps.is_empty());
        owned.sort_unstable();
        dead_own_nothing && owned == (0..partitions).collect::<Vec<_>>()
    }
}

struct Member {
    index: usize,
    assignments: Arc<Assignments>,
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = match rebalance {
            Rebalance::Assign(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => Vec::new(),
        };
        self.assignments
            .0
            .lock()
            .unwrap()
            .insert(self.index, partitions);
    }
}

/// Joins `members` consumers to one group over a topic with as many partitions; returns the time
/// until every partition is owned exactly once, then the time from one member leaving until the
/// rest own every partition again.
fn group_rebalance(bootstrap: &str, members: usize) -> (Duration, Duration) {
    let topic = "bench-group";
    let partitions = members as i32;
    create_topic(bootstrap, topic, partitions);
    let assignments = Arc::new(Assignments::default());
    let stop: Arc<Vec<AtomicBool>> =
        Arc::new((0..members).map(|_| AtomicBool::new(false)).collect());
    let start = Instant::now();
    let threads: Vec<_> = (0..members)
        .map(|index| {
            let (bootstrap, assignments, stop) = (
                bootstrap.to_string(),
                Arc::clone(&assignments),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                let c: BaseConsumer<Member> = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("group.id", "bench-group")
                    .set("enable.auto.commit", "false")
                    .create_with_context(Member { index, assignments })
                    .expect("group member");
                c.subscribe(&[topic]).expect("subscribe");
                while !stop[index].load(Ordering::Relaxed) {
                    let _ = c.poll(Duration::from_millis(50));
                }
                // Dropping the consumer closes it: LeaveGroup.
            })
        })
        .collect();
    let mut alive = vec![true; members];
    let wait_cover = |alive: &[bool], what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !assignments.covers(partitions, alive) {
            assert!(
                Instant::now() < deadline,
                "{what}: the group did not settle within 120 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_cover(&alive, "join");
    let joined = start.elapsed();
    let left_at = Instant::now();
    stop[0].store(true, Ordering::Relaxed);
    alive[0] = false;
    wait_cover(&alive, "leave");
    let settled = left_at.elapsed();
    for s in stop.iter() {
        s.store(true, Ordering::Relaxed);
    }
    for t in threads {
        t.join().expect("member thread");
    }
    (joined, settled)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let args = parse_args();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "# bench: {} messages per produce phase, {} B values, {cores} cores",
        args.messages, args.value_bytes
    );

    let broker = Broker::builder().arg("fsync", "always").start();
    let pid = broker.pid().expect("pid");
    let bootstrap = broker.bootstrap();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, on) = (Arc::clone(&peak_rss), Arc::clone(&sampling));
        thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid).1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut bytes_through = 0u64;
    for partitions in [1, 6] {
        let topic = format!("bench-p{partitions}");
        create_topic(&bootstrap, &topic, partitions);
        let cpu = cpu_secs(pid);
        let (s, mps, mbps) = produce(&bootstrap, &topic, args.messages, args.value_bytes);
        let used = cpu_secs(pid) - cpu;
        println!(
            "produce  acks=all fsync=always partitions={partitions}: {mps:>9.0} msg/s {mbps:>7.1} MB/s ({s:.2} s, broker CPU {:.0}%)",
            100.0 * used / s
        );
        let cpu = cpu_secs(pid);
        let (s, mps, mbps) = consume(&bootstrap, &topic, partitions, args.messages);
        let used = cpu_secs(pid) - cpu;
        println!(
            "consume                       partitions={partitions}: {mps:>9.0} msg/s {mbps:>7.1} MB/s ({s:.2} s, broker CPU {:.0}%)",
            100.0 * used / s
        );
        bytes_through += 2 * args.messages * args.value_bytes as u64;
    }

    create_topic(&bootstrap, "bench-latency", 1);
    let lat = latency(
        &bootstrap,
        "bench-latency",
        args.latency_seconds,
        args.latency_rate,
        args.value_bytes,
    );
    println!(
        "e2e latency at {} msg/s (acks=all, linger.ms=0, fetch.wait.max.ms=500): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} msgs)",
        args.latency_rate,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        lat.len()
    );

    if args.group_members > 0 {
        let (joined, settled) = group_rebalance(&bootstrap, args.group_members as usize);
        println!(
            "group of {} members (librdkafka defaults, range assignor, initial rebalance delay 3000 ms): \
             all assigned {:.2} s after subscribing; one member leaves -> stable again in {:.2} s",
            args.group_members,
            joined.as_secs_f64(),
            settled.as_secs_f64()
        );
    }

    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let (hwm, _) = rss_kib(pid);
    println!(
        "broker RSS: peak sampled {:.1} MiB, VmHWM {:.1} MiB, after {:.2} GB produced + consumed",
        peak_rss.load(Ordering::Relaxed) as f64 / 1024.0,
        hwm as f64 / 1024.0,
        bytes_through as f64 / 1e9
    );
}
