//! `cluster_bench`: replication figures for BENCHMARKS.md, driving the release broker binary
//! with librdkafka (the `rdkafka` crate). A benchmark, not a test: it asserts nothing about
//! speed, but it reports every unacknowledged record, hang or dead node it sees.
//!
//! Subcommands:
//! - `throughput`: acks=all produce of 1 KiB values to a 1- and a 6-partition topic, with the
//!   producer settings of `bench` (linger.ms=5, batch.size=1000000, not idempotent), against
//!   (a) one broker without `--voters`, RF=1; (b) a 3-node cluster on loopback
//!   ([`tests::cluster::Cluster`]), RF=3, min.insync.replicas=2; (c) the same cluster, RF=1;
//!   prints msg/s, MB/s, the brokers' and the client's CPU and the RF=3/RF=1 ratios
//!   (`--setups b` runs only the RF=3 phases, e.g. under a profiler).
//! - `failover`: an idempotent acks=all producer sends a steady stream (default 1,000 msg/s) to
//!   a 1-partition RF=3 topic (min.insync.replicas=2); the partition leader is killed with
//!   `kill -9` (`--runs` times, restarted and back in the ISR between runs), then once stopped
//!   with SIGTERM (controlled shutdown). Per run: time from the signal until Metadata names a
//!   new leader, until the first acknowledgement of a record pending at the signal, until every
//!   pending record is acknowledged, and until the first acknowledgement of a record sent after
//!   the signal.
//! - `nearby`: fetch from follower (KIP-392). Brokers in racks a, b and c with
//!   `--replica-selector rack`, a 1-partition RF=3 topic (min.insync.replicas=2), an acks=all
//!   producer sending `--rate` msg/s (linger.ms=0) for `--seconds`, and two consumers at the
//!   tail: one in a follower's rack (served by that follower), one in the leader's rack.
//!   Prints each consumer's produce-to-consume latency (p50, p99, max) and the broker
//!   librdkafka's statistics say it fetched from.
//! - `floor`: no broker. The kernel's cost per MiB of one replicated copy (loopback `sendfile`
//!   → `read` → CRC-32C → `pwrite` → `fdatasync` → drop-behind, [`tests::copy_floor`]), `--runs`
//!   times over `--mib` MiB, and what that makes the least broker CPU per MB produced at RF=1
//!   (one copy) and RF=3 (three copies and two `sendfile`s), beside `throughput`'s figures.
//! - `all` (default): throughput, failover and nearby.
//!
//! Run: `cargo build --release -p broker && cargo run --release -p tests --bin cluster_bench`
//! (`-- --help` for flags). `CLUSTER_KEEP_LOGS=1` keeps the nodes' logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use tests::cluster::Cluster;
use tests::Broker;

/// How long leadership and ISR changes may take to show in Metadata.
const CONVERGE: Duration = Duration::from_secs(60);
/// How long one failover run may take before it is reported as a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a restarted victim is back in the ISR, before the next signal. librdkafka backs
/// off reconnecting to a broker it saw die (doubling, up to `reconnect.backoff.max.ms`, 10 s by
/// default) and only resets that after it connects again, which it does not need to while the
/// broker leads nothing. Killing again sooner often elects the just-restarted broker, and the
/// client then waits out that backoff (up to 7 s seen with a 2 s pause): a measure of how soon
/// the leaders die one after another, not of the failover. `BETWEEN_KILLS_SECS` overrides it.
const BETWEEN_KILLS: Duration = Duration::from_secs(11);

/// Producer settings for the failover stream, as in the cluster interop tests: retries until
/// the message timeout, metadata refreshed every second while leadership is unknown.
const FAILOVER_PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "0"),
    ("socket.timeout.ms", "10000"),
    ("message.timeout.ms", "60000"),
    ("topic.metadata.refresh.interval.ms", "1000"),
    ("retry.backoff.ms", "200"),
];

#[derive(Clone, Copy, PartialEq)]
enum What {
    Throughput,
    Failover,
    Nearby,
    Floor,
    All,
}

struct Args {
    what: What,
    messages: u64,
    value_bytes: usize,
    runs: u64,
    rate: u64,
    /// How long the `nearby` stream runs.
    seconds: u64,
    /// Which throughput setups to run, by letter (a, b, c); all by default.
    setups: String,
    /// MiB per `floor` run.
    mib: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        what: What::All,
        messages: 500_000,
        value_bytes: 1024,
        runs: 5,
        rate: 1000,
        seconds: 20,
        setups: "abc".to_string(),
        mib: 2048,
    };
    let mut it = std::env::args().skip(1).peekable();
    if let Some(first) = it.peek() {
        let what = match first.as_str() {
            "throughput" => Some(What::Throughput),
            "failover" => Some(What::Failover),
            "nearby" => Some(What::Nearby),
            "floor" => Some(What::Floor),
            "all" => Some(What::All),
            _ => None,
        };
        if let Some(w) = what {
            a.what = w;
            it.next();
        }
    }
    while let Some(flag) = it.next() {
        if flag == "--setups" {
            a.setups = it
                .next()
                .filter(|v| !v.is_empty() && v.chars().all(|c| "abc".contains(c)))
                .unwrap_or_else(|| usage(&flag));
            continue;
        }
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage(&flag))
        };
        match flag.as_str() {
            "--messages" => a.messages = value(),
            "--value-bytes" => a.value_bytes = value() as usize,
            "--runs" => a.runs = value(),
            "--rate" => a.rate = value().max(1),
            "--seconds" => a.seconds = value().max(1),
            "--mib" => a.mib = value().clamp(1, tests::copy_floor::RUN_MIB_MAX),
            _ => usage(&flag),
        }
    }
    a
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "cluster_bench: bad flag {flag:?}\n\
         usage: cluster_bench [throughput|failover|nearby|floor|all] [--messages N (per produce phase, 500000)]\n\
         \x20            [--value-bytes N (1024)] [--runs N (kill -9 failovers or floor runs, 5)]\n\
         \x20            [--mib N (per floor run, 2048)]\n\
         \x20            [--rate MSG_PER_S (failover and nearby streams, 1000)]\n\
         \x20            [--seconds N (nearby stream, 20)]\n\
         \x20            [--setups LETTERS (throughput setups to run, of abc; all)]\n\
         The broker binary is target/release/broker (or BROKER_BIN)."
    );
    std::process::exit(2)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// CreateTopics with a replication factor and min.insync.replicas.
fn create_topic(bootstrap: &str, name: &str, partitions: i32, rf: i32, min_isr: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(rf))
        .set("min.insync.replicas", min_isr);
    let opts = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE)))
        .request_timeout(Some(Timeout::After(CONVERGE)));
    for r in block_on(admin.create_topics(&[topic], &opts)).expect("create topics") {
        r.unwrap_or_else(|e| panic!("create {name} (rf {rf}): {e:?}"));
    }
}

/// Deletes a topic whose phase is over, then gives the brokers a moment to remove its files.
///
/// Every produce phase starts with the previous phase's data gone. On this VM (virtio-balloon
/// free page reporting) pages the guest has not used recently cost a host fault each, so a
/// phase that could reuse the page cache its predecessor freed ran faster than one that had to
/// grow it: (c) followed the deleted single broker of (a), (b) followed (c)'s topics, which
/// stayed. The RF=3 phases paid for that order.
fn delete_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let opts = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE)))
        .request_timeout(Some(Timeout::After(CONVERGE)));
    for r in block_on(admin.delete_topics(&[name], &opts)).expect("delete topics") {
        r.unwrap_or_else(|e| panic!("delete {name}: {e:?}"));
    }
    thread::sleep(Duration::from_secs(1));
}

/// Creates a topic on the cluster and waits for a leader and a full ISR everywhere.
fn create_on_cluster(c: &Cluster, name: &str, partitions: i32, rf: i32, min_isr: &str) {
    create_topic(&c.bootstrap_live(), name, partitions, rf, min_isr);
    if let Err(e) = c.wait_partitions(name, CONVERGE, |p| {
        p.leader >= 0 && p.replicas.len() == rf as usize && p.isr.len() == rf as usize
    }) {
        panic!("{name}: no leader or ISR not full: {e}");
    }
}

struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

struct Throughput {
    secs: f64,
    msgs: f64,
    mbs: f64,
    cpu_pct: f64,
    /// This process's CPU (the librdkafka producer) over the phase, % of one core.
    client_cpu_pct: f64,
}

/// Produces `n` messages with `bench`'s settings (acks=all, not idempotent, linger.ms=5,
/// batch.size=1000000); `pids` are the brokers whose CPU is summed.
fn produce(bootstrap: &str, topic: &str, n: u64, value_bytes: usize, pids: &[u32]) -> Throughput {
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Counting {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
        .expect("producer");
    let value = vec![0x5au8; value_bytes];
    let cpu0: f64 = pids.iter().map(|&p| cpu_secs(p)).sum();
    let client_cpu0 = cpu_secs(std::process::id());
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
    producer.flush(Duration::from_secs(600)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let cpu: f64 = pids.iter().map(|&p| cpu_secs(p)).sum::<f64>() - cpu0;
    let client_cpu = cpu_secs(std::process::id()) - client_cpu0;
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    if (ok, failed) != (n, 0) {
        println!(
            "FINDING: {topic}: {ok} of {n} acknowledged, {failed} failed; first error: {:?}",
            ctx.first_error.lock().unwrap()
        );
    }
    Throughput {
        secs,
        msgs: ok as f64 / secs,
        mbs: ok as f64 * value_bytes as f64 / secs / 1e6,
        cpu_pct: 100.0 * cpu / secs,
        client_cpu_pct: 100.0 * client_cpu / secs,
    }
}

fn print_throughput(label: &str, partitions: i32, t: &Throughput) {
    println!(
        "produce acks=all {label:<34} partitions={partitions}: {:>8.0} msg/s {:>6.1} MB/s ({:.2} s, brokers' CPU {:.0}% of one core, client {:.0}%, load {})",
        t.msgs,
        t.mbs,
        t.secs,
        t.cpu_pct,
        t.client_cpu_pct,
        loadavg()
    );
    // CPU per MB produced, in the units `floor` prints: % of one core is 10 ms of CPU per s.
    let per_mb = |pct: f64| 10.0 * pct / t.mbs.max(f64::MIN_POSITIVE);
    println!(
        "    CPU per MB produced: brokers {:.2} ms, client {:.2} ms",
        per_mb(t.cpu_pct),
        per_mb(t.client_cpu_pct)
    );
}

fn throughput(args: &Args) {
    let mut results: BTreeMap<(&str, i32), f64> = BTreeMap::new();

    // (a) One broker, no quorum, RF=1.
    if args.setups.contains('a') {
        let broker = Broker::builder().arg("fsync", "always").start();
        let pid = broker.pid().expect("pid");
        for partitions in [1, 6] {
            let topic = format!("single-rf1-p{partitions}");
            create_topic(&broker.bootstrap(), &topic, partitions, 1, "1");
            let t = produce(
                &broker.bootstrap(),
                &topic,
                args.messages,
                args.value_bytes,
                &[pid],
            );
            print_throughput("(a) single broker, RF=1", partitions, &t);
            results.insert(("a", partitions), t.msgs);
            delete_topic(&broker.bootstrap(), &topic);
        }
    }

    // (b) and (c) on one 3-node cluster: RF=1 topics first, then RF=3.
    if args.setups.contains('b') || args.setups.contains('c') {
        let mut c = Cluster::start();
        for id in c.ids() {
            c.assert_alive(id);
        }
        let pids: Vec<u32> = c.ids().iter().filter_map(|&id| c.pid(id)).collect();
        let bootstrap = c.bootstrap_live();
        for (key, rf, min_isr, label) in [
            ("c", 1, "1", "(c) 3-node cluster, RF=1"),
            ("b", 3, "2", "(b) 3-node cluster, RF=3, min.isr=2"),
        ] {
            if !args.setups.contains(key) {
                continue;
            }
            for partitions in [1, 6] {
                let topic = format!("cluster-rf{rf}-p{partitions}");
                create_on_cluster(&c, &topic, partitions, rf, min_isr);
                let leaders: Vec<i32> = c
                    .partitions(&topic)
                    .map(|ps| ps.iter().map(|p| p.leader).collect())
                    .unwrap_or_default();
                let t = produce(&bootstrap, &topic, args.messages, args.value_bytes, &pids);
                print_throughput(label, partitions, &t);
                println!("    leaders by partition: {leaders:?}");
                results.insert((key, partitions), t.msgs);
                for id in c.ids() {
                    c.assert_alive(id);
                }
                delete_topic(&bootstrap, &topic);
            }
        }
    }

    for partitions in [1, 6] {
        let (Some(&a), Some(&b), Some(&cc)) = (
            results.get(&("a", partitions)),
            results.get(&("b", partitions)),
            results.get(&("c", partitions)),
        ) else {
            continue;
        };
        println!(
            "ratio partitions={partitions}: RF=3 / single-broker RF=1 = {:.0}%, RF=3 / cluster RF=1 = {:.0}%, cluster RF=1 / single RF=1 = {:.0}% (target RF=3 >= 60% of RF=1)",
            100.0 * b / a,
            100.0 * b / cc,
            100.0 * cc / a
        );
    }
}

/// Send and acknowledgement times of the failover stream, by sequence number.
#[derive(Default)]
struct Stream {
    sent: Mutex<Vec<Instant>>,
    acked: Mutex<BTreeMap<usize, Instant>>,
    failed: Mutex<Vec<(usize, String)>>,
}

struct Tracking(Arc<Stream>);

/// Seconds since the Unix epoch, to the millisecond, to line up with librdkafka's debug log.
fn wall_clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

impl ClientContext for Tracking {
    /// librdkafka's own log (with `RDKAFKA_DEBUG=<contexts>`), to stderr with a wall-clock time.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("{} rdkafka {level:?} {fac}: {log_message}", wall_clock());
    }
}

impl ProducerContext for Tracking {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<usize>) {
        let now = Instant::now();
        match result {
            Ok(_) => {
                self.0.acked.lock().unwrap().insert(*seq, now);
            }
            Err((e, _)) => self.0.failed.lock().unwrap().push((*seq, e.to_string())),
        }
    }
}

/// One failover's times, from the signal, in seconds.
#[derive(Clone, Copy, Debug, Default)]
struct Failover {
    victim: i32,
    was_controller: bool,
    new_leader_in_metadata: Option<f64>,
    first_pending_ack: Option<f64>,
    all_pending_acked: Option<f64>,
    first_new_ack: Option<f64>,
    pending: usize,
    exited: Option<f64>,
}

/// The node whose log says last that it became the active controller.
fn active_controller(c: &Cluster) -> Option<i32> {
    c.ids().into_iter().find(|&id| {
        c.is_running(id)
            && c.log_text(id)
                .lines()
                .rev()
                .find(|l| l.contains("active controller"))
                .is_some_and(|l| !l.contains("no longer"))
    })
}

/// Signals the leader of `topic`-0 (SIGKILL, or SIGTERM if `graceful`) while the stream runs
/// and measures until every time is known or [`RUN_TIMEOUT`] passes.
fn one_failover(c: &mut Cluster, topic: &str, stream: &Stream, graceful: bool) -> Failover {
    let victim = c
        .node_for_leader(topic, 0)
        .expect("partition 0 has a leader");
    let mut f = Failover {
        victim,
        was_controller: active_controller(c) == Some(victim),
        ..Failover::default()
    };
    let at = Instant::now();
    if std::env::var_os("RDKAFKA_DEBUG").is_some() {
        eprintln!("{} cluster_bench: signalling node {victim}", wall_clock());
    }
    if graceful {
        c.sigterm(victim);
    } else {
        c.kill9(victim);
        f.exited = Some(at.elapsed().as_secs_f64());
    }
    let secs = |t: Instant| t.saturating_duration_since(at).as_secs_f64();
    let mut last_metadata = Instant::now() - Duration::from_secs(1);
    loop {
        if f.exited.is_none() && c.try_reap(victim).is_some() {
            f.exited = Some(at.elapsed().as_secs_f64());
        }
        if f.new_leader_in_metadata.is_none()
            && last_metadata.elapsed() >= Duration::from_millis(50)
        {
            last_metadata = Instant::now();
            if let Ok(ps) = c.partitions(topic) {
                if ps
                    .first()
                    .is_some_and(|p| p.leader >= 0 && p.leader != victim)
                {
                    f.new_leader_in_metadata = Some(at.elapsed().as_secs_f64());
                }
            }
        }
        {
            let sent = stream.sent.lock().unwrap();
            let acked = stream.acked.lock().unwrap();
            let before = sent.partition_point(|&t| t <= at);
            let pending: Vec<usize> = (0..before)
                .filter(|s| acked.get(s).is_none_or(|&t| t > at))
                .collect();
            f.pending = pending.len();
            let pending_acks: Vec<Instant> = pending
                .iter()
                .filter_map(|s| acked.get(s).copied())
                .collect();
            f.first_pending_ack = pending_acks.iter().min().map(|&t| secs(t));
            f.all_pending_acked = (pending_acks.len() == pending.len())
                .then(|| pending_acks.iter().max().map_or(0.0, |&t| secs(t)));
            f.first_new_ack = acked.range(before..).map(|(_, &t)| t).min().map(secs);
        }
        let done = f.exited.is_some()
            && f.new_leader_in_metadata.is_some()
            && f.all_pending_acked.is_some()
            && f.first_new_ack.is_some();
        if done {
            return f;
        }
        if at.elapsed() > RUN_TIMEOUT {
            println!(
                "FINDING: failover of node {victim} ({}) incomplete after {RUN_TIMEOUT:?}: {f:?}; \
                 failed deliveries so far: {}",
                if graceful { "SIGTERM" } else { "kill -9" },
                stream.failed.lock().unwrap().len()
            );
            for id in c.ids() {
                println!("---- node {id} log tail ----\n{}", c.log_tail(id, 30));
            }
            return f;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.3}"))
}

fn print_failover(label: &str, f: &Failover) {
    println!(
        "{label:<12} victim {} (controller: {}): new leader in Metadata {} s, first pending ack {} s, \
         all {} pending acked {} s, first ack of a post-signal record {} s, process gone {} s (load {})",
        f.victim,
        f.was_controller,
        fmt_s(f.new_leader_in_metadata),
        fmt_s(f.first_pending_ack),
        f.pending,
        fmt_s(f.all_pending_acked),
        fmt_s(f.first_new_ack),
        fmt_s(f.exited),
        loadavg()
    );
}

fn failover(args: &Args) {
    let mut c = Cluster::start();
    let topic = "failover";
    create_on_cluster(&c, topic, 1, 3, "2");
    let stream = Arc::new(Stream::default());
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (stream, stop, bootstrap, rate, size) = (
            Arc::clone(&stream),
            Arc::clone(&stop),
            c.bootstrap(),
            args.rate,
            args.value_bytes,
        );
        thread::spawn(move || {
            let mut config = ClientConfig::new();
            config.set("bootstrap.servers", &bootstrap);
            for (k, v) in FAILOVER_PRODUCER {
                config.set(*k, *v);
            }
            if let Ok(contexts) = std::env::var("RDKAFKA_DEBUG") {
                config.set("debug", &contexts);
                config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
            }
            let producer: ThreadedProducer<Tracking> = config
                .create_with_context(Tracking(Arc::clone(&stream)))
                .expect("producer");
            let interval = Duration::from_nanos(1_000_000_000 / rate);
            let value = vec![0x5au8; size];
            let start = Instant::now();
            let mut seq = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let due = start + interval * seq as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let key = format!("k{seq}");
                // The send time is taken under the lock so `sent` stays sorted.
                let mut sent = stream.sent.lock().unwrap();
                let mut record = BaseRecord::with_opaque_to(topic, Box::new(seq))
                    .key(key.as_bytes())
                    .payload(&value[..]);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => panic!("send failed: {e}"),
                    }
                }
                sent.push(Instant::now());
                drop(sent);
                seq += 1;
            }
            if let Err(e) = producer.flush(Duration::from_secs(120)) {
                println!("FINDING: final flush failed: {e}");
            }
            seq
        })
    };
    // Let the stream settle before the first failover.
    thread::sleep(Duration::from_secs(3));

    let mut runs = Vec::new();
    for run in 0..=args.runs {
        let graceful = run == args.runs;
        let f = one_failover(&mut c, topic, &stream, graceful);
        let label = if graceful {
            "SIGTERM".to_string()
        } else {
            format!("kill-9 #{}", run + 1)
        };
        print_failover(&label, &f);
        if !graceful {
            runs.push(f);
        }
        c.restart(f.victim);
        if let Err(e) = c.wait_partitions(topic, CONVERGE, |p| p.leader >= 0 && p.isr.len() == 3) {
            println!(
                "FINDING: node {} did not rejoin the ISR within {CONVERGE:?}: {e}\n{}",
                f.victim,
                c.log_tail(f.victim, 40)
            );
        }
        let pause = std::env::var("BETWEEN_KILLS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(BETWEEN_KILLS, Duration::from_secs);
        thread::sleep(pause);
    }
    stop.store(true, Ordering::Relaxed);
    let sent = producer_thread.join().expect("producer thread");

    let stat = |name: &str, get: fn(&Failover) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(get).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return;
        }
        println!(
            "kill -9 x{}: {name:<32} median {:.3} s, max {:.3} s (of {} measured; target < 2 s)",
            runs.len(),
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    };
    stat("new leader in Metadata", |f| f.new_leader_in_metadata);
    stat("first ack of a pending record", |f| f.first_pending_ack);
    stat("all pending records acked", |f| {
        f.all_pending_acked.filter(|_| f.pending > 0)
    });
    stat("first ack of a post-kill record", |f| f.first_new_ack);

    // Every record acknowledged exactly once: the idempotent stream leaves no duplicates, so
    // the log end equals the acknowledged count.
    let acked = stream.acked.lock().unwrap().len();
    let failed = stream.failed.lock().unwrap().clone();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_live())
        .create()
        .expect("watermark client");
    let high = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map(|(_, h)| h);
    println!(
        "stream: {sent} sent, {acked} acknowledged, {} failed, high watermark {high:?}",
        failed.len()
    );
    if !failed.is_empty() || high != Ok(acked as i64) || acked != sent {
        println!(
            "FINDING: sent {sent}, acknowledged {acked}, high watermark {high:?}; failed (first 5): {:?}",
            &failed[..failed.len().min(5)]
        );
    }
    println!(
        "cluster dir (kept with CLUSTER_KEEP_LOGS=1): {}",
        c.dir().display()
    );
}

fn main() {
    let args = parse_args();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# cluster_bench: {} messages per produce phase, {} B values, {cores} cores, load {}",
        args.messages,
        args.value_bytes,
        loadavg()
    );
    if matches!(args.what, What::Throughput | What::All) {
        throughput(&args);
    }
    if matches!(args.what, What::Failover | What::All) {
        failover(&args);
    }
    if matches!(args.what, What::Nearby | What::All) {
        nearby(&args);
    }
    if args.what == What::Floor {
        floor(&args);
    }
}

/// A tail consumer's view: produce-to-consume latencies (ms) and the broker statistics last
/// showed it fetching from.
#[derive(Default)]
struct Tail {
    latencies_ms: Mutex<Vec<f64>>,
    broker: Mutex<Option<i32>>,
}

struct TailContext(Arc<Tail>);

impl ClientContext for TailContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let broker = statistics
            .topics
            .get(NEARBY_TOPIC)
            .and_then(|t| t.partitions.get(&0))
            .map(|p| p.broker);
        if broker.is_some() {
            *self.0.broker.lock().unwrap() = broker;
        }
    }
}

impl rdkafka::consumer::ConsumerContext for TailContext {}

const NEARBY_TOPIC: &str = "nearby";

/// Reads partition 0 of [`NEARBY_TOPIC`] from its end as a consumer in `rack` until `stop`,
/// recording each record's latency from the send time it carries (ns since `start`).
fn tail_consumer(
    bootstrap: String,
    rack: &'static str,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> (Arc<Tail>, thread::JoinHandle<()>) {
    let tail = Arc::new(Tail::default());
    let context = TailContext(Arc::clone(&tail));
    let mine = Arc::clone(&tail);
    let handle = thread::spawn(move || {
        let consumer: BaseConsumer<TailContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("nearby-{rack}"))
            .set("enable.auto.commit", "false")
            .set("client.rack", rack)
            .set("fetch.wait.max.ms", "500")
            .set("statistics.interval.ms", "1000")
            .create_with_context(context)
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(NEARBY_TOPIC, 0, rdkafka::Offset::End)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                use rdkafka::message::Message;
                let now = start.elapsed().as_nanos() as u64;
                let sent = m
                    .payload()
                    .and_then(|p| p.get(..8))
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                if let Some(sent) = sent {
                    let ms = now.saturating_sub(sent) as f64 / 1e6;
                    mine.latencies_ms.lock().unwrap().push(ms);
                }
            }
        }
    });
    (tail, handle)
}

fn nearby(args: &Args) {
    let racks = [(1, "rack", "a"), (2, "rack", "b"), (3, "rack", "c")];
    let c = Cluster::start_with_node_args(&[("replica-selector", "rack")], &racks);
    create_on_cluster(&c, NEARBY_TOPIC, 1, 3, "2");
    let leader = c
        .node_for_leader(NEARBY_TOPIC, 0)
        .expect("a leader in Metadata");
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let rack_of = |id: i32| ["a", "b", "c"][id as usize - 1];
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (near, near_thread) =
        tail_consumer(c.bootstrap(), rack_of(follower), start, Arc::clone(&stop));
    let (local, local_thread) =
        tail_consumer(c.bootstrap(), rack_of(leader), start, Arc::clone(&stop));
    // Let both consumers find their replica before the stream starts.
    thread::sleep(Duration::from_secs(3));
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Counting {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
        .expect("producer");
    let interval = Duration::from_nanos(1_000_000_000 / args.rate);
    let mut value = vec![0x5au8; args.value_bytes.max(8)];
    let begin = Instant::now();
    let mut seq = 0u32;
    while begin.elapsed() < Duration::from_secs(args.seconds) {
        if let Some(wait) = (begin + interval * seq).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let sent = start.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&sent.to_be_bytes());
        let record = BaseRecord::<(), [u8]>::to(NEARBY_TOPIC).payload(&value[..]);
        if let Err((e, _)) = producer.send(record) {
            println!("FINDING: send failed: {e}");
            break;
        }
        seq += 1;
    }
    let _ = producer.flush(Duration::from_secs(30));
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    near_thread.join().expect("consumer thread");
    local_thread.join().expect("consumer thread");
    let acked = producer.context().ok.load(Ordering::Relaxed);
    println!(
        "nearby: {seq} sent at {} msg/s for {} s, {acked} acknowledged; leader {leader}",
        args.rate, args.seconds
    );
    for (label, tail) in [
        (
            format!("consumer in rack {} (a follower's)", rack_of(follower)),
            &near,
        ),
        (
            format!("consumer in rack {} (the leader's)", rack_of(leader)),
            &local,
        ),
    ] {
        let mut v = tail.latencies_ms.lock().unwrap().clone();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)));
        println!(
            "nearby: {label:<36} fetched from broker {:?}: {} records, produce-to-consume \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            *tail.broker.lock().unwrap(),
            v.len(),
            at(0.5).copied().unwrap_or(f64::NAN),
            at(0.99).copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        );
        if v.len() as u64 != acked {
            println!(
                "FINDING: {label} read {} of {acked} acknowledged records",
                v.len()
            );
        }
    }
}

/// `floor`: what the kernel charges for one replicated copy, with no broker in the way.
fn floor(args: &Args) {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "copy floor: loopback sendfile -> read ({} MiB rounds) -> CRC-32C -> pwrite -> fdatasync -> drop-behind, {} MiB per run, in {}",
        tests::copy_floor::ROUND_BYTES >> 20,
        args.mib,
        dir.path().display()
    );
    let runs = args.runs.max(1);
    let mut copies = Vec::new();
    for run in 1..=runs {
        let f = tests::copy_floor::measure(dir.path(), args.mib).expect("floor run");
        println!(
            "  run {run}: ms of CPU per MiB: receive {:.3}, CRC {:.3}, write {:.3}, fdatasync {:.3}, drop-behind {:.3} = one copy {:.3}; sendfile {:.3} ({:.0} MB/s, load {})",
            f.receive_ms,
            f.crc_ms,
            f.write_ms,
            f.sync_ms,
            f.drop_ms,
            f.copy_ms(),
            f.sendfile_ms,
            f.wall_mbs,
            loadavg()
        );
        copies.push(f);
    }
    // Medians, per MB (1e6 bytes) produced, to compare with `throughput`'s broker CPU per MB.
    let median = |pick: &dyn Fn(&tests::copy_floor::Floor) -> f64| {
        let mut v: Vec<f64> = copies.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6 / (1u64 << 20) as f64
    };
    let copy = median(&|f| f.copy_ms());
    let sendfile = median(&|f| f.sendfile_ms);
    println!(
        "least broker CPU per MB produced (medians): RF=1 one copy {copy:.2} ms; RF=3 three copies and two sendfiles {:.2} ms ({:.1}x)",
        3.0 * copy + 2.0 * sendfile,
        (3.0 * copy + 2.0 * sendfile) / copy
    );
}
