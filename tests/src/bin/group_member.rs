//! A consumer-group member as its own process, for the consumer-group tests
//! (`tests/tests/consumer_groups.rs`) that need to `kill -9` a consumer.
//!
//! ```text
//! group_member --bootstrap HOST:PORT --group G --topic T
//!              [--instance-id ID] [--assignor range|roundrobin|cooperative-sticky]
//!              [--session-timeout-ms MS] [--commit-every N] [--commit-idle-ms MS]
//!              [--set key=value]...
//! ```
//!
//! It subscribes to one topic with librdkafka (rdkafka's `BaseConsumer`), auto-commit off, and
//! writes one line per event to stdout, flushed at once so a reader sees it even if the
//! process is then killed:
//!
//! - `STARTED <pid>` once, before subscribing;
//! - `ASSIGNED <p,p,...> @<us>` when partitions are assigned (all of them after an eager
//!   rebalance, the added ones after a cooperative one); written before the assignment is
//!   applied;
//! - `REVOKED <p,p,...> @<us> [lost]` when partitions are taken away; written after the
//!   assignment has been dropped (after the offsets of revoked partitions were committed);
//! - `RECORD <partition> <offset> <value>` for every record (value as lossy UTF-8);
//! - `COMMITTED <p:next,...>` after a synchronous OffsetCommit succeeded;
//! - `COMMIT_FAILED <error>` when one did not; `REBALANCE_ERROR <error>`;
//! - `CLOSED` after a clean shutdown.
//!
//! `<us>` is `CLOCK_MONOTONIC` in microseconds, one clock for every process on the machine,
//! so the test can order the rebalance events of different members. An assigned partition
//! counts as owned from its ASSIGNED time to its REVOKED time, which brackets the interval
//! in which the consumer can fetch it.
//!
//! Offsets are committed after every `--commit-every` records (default 10), when a poll comes
//! back empty and the last commit is at least `--commit-idle-ms` old (default 0: at every
//! empty poll), and for the revoked partitions before they are given up. SIGTERM or
//! SIGINT: commit, close the consumer (LeaveGroup for dynamic members), print `CLOSED`, exit
//! 0. The process also exits when its parent goes away, so a crashed test leaves nothing
//! behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v
}

fn join(v: &[i32]) -> String {
    v.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

struct Member {
    topic: String,
    /// Next offset to commit per partition: one past the last record printed.
    pending: Mutex<BTreeMap<i32, i64>>,
}

impl Member {
    /// Commits `pending` entries for `only` (all if None) synchronously; removes those
    /// committed (and, with `drop_anyway`, those attempted) from `pending`.
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[i32]>,
        drop_anyway: bool,
    ) {
        let todo: Vec<(i32, i64)> = {
            let pending = self.pending.lock().unwrap();
            pending
                .iter()
                .filter(|(p, _)| match only {
                    None => true,
                    Some(o) => o.contains(p),
                })
                .map(|(&p, &o)| (p, o))
                .collect()
        };
        if todo.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in &todo {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .expect("add partition offset");
        }
        let res = consumer.commit(&tpl, CommitMode::Sync);
        let mut pending = self.pending.lock().unwrap();
        match &res {
            Ok(()) => say(&format!(
                "COMMITTED {}",
                todo.iter()
                    .map(|(p, o)| format!("{p}:{o}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            Err(e) => say(&format!("COMMIT_FAILED {e}")),
        }
        if res.is_ok() || drop_anyway {
            for (p, o) in todo {
                // A record printed since the snapshot keeps its newer entry.
                if pending.get(&p) == Some(&o) {
                    pending.remove(&p);
                }
            }
        }
    }
}

struct Ctx(Arc<Member>);

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                say(&format!(
                    "ASSIGNED {} @{}",
                    join(&partitions(tpl)),
                    now_us()
                ));
            }
            Rebalance::Revoke(tpl) => {
                // Commit what was processed on the partitions about to go, as applications do.
                let revoked = partitions(tpl);
                if !consumer.assignment_lost() {
                    self.0.commit(consumer, Some(&revoked), true);
                } else {
                    let mut pending = self.0.pending.lock().unwrap();
                    for p in &revoked {
                        pending.remove(p);
                    }
                }
            }
            Rebalance::Error(e) => say(&format!("REBALANCE_ERROR {e}")),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = if consumer.assignment_lost() {
                " lost"
            } else {
                ""
            };
            say(&format!(
                "REVOKED {} @{}{lost}",
                join(&partitions(tpl)),
                now_us()
            ));
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: group_member --bootstrap HOST:PORT --group G --topic T [--instance-id ID] \
         [--assignor range|roundrobin|cooperative-sticky] [--session-timeout-ms MS] \
         [--commit-every N] [--commit-idle-ms MS] [--set key=value]..."
    );
    std::process::exit(2)
}

fn main() {
    let mut bootstrap = None;
    let mut group = None;
    let mut topic = None;
    let mut instance_id = None;
    let mut assignor = None;
    let mut session_timeout_ms: u32 = 6000;
    let mut commit_every: usize = 10;
    let mut commit_idle = Duration::ZERO;
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--bootstrap" => bootstrap = Some(value()),
            "--group" => group = Some(value()),
            "--topic" => topic = Some(value()),
            "--instance-id" => instance_id = Some(value()),
            "--assignor" => assignor = Some(value()),
            "--session-timeout-ms" => {
                session_timeout_ms = value().parse().unwrap_or_else(|_| usage())
            }
            "--commit-every" => commit_every = value().parse().unwrap_or_else(|_| usage()),
            "--commit-idle-ms" => {
                commit_idle = Duration::from_millis(value().parse().unwrap_or_else(|_| usage()))
            }
            "--set" => {
                let kv = value();
                let (k, v) = kv.split_once('=').unwrap_or_else(|| usage());
                extra.push((k.to_string(), v.to_string()));
            }
            _ => usage(),
        }
    }
    let (Some(bootstrap), Some(group), Some(topic)) = (bootstrap, group, topic) else {
        usage()
    };
    let commit_every = commit_every.max(1);

    // SAFETY: installing async-signal-safe handlers that only store to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_term as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    // Exit with the parent (the test), so a panicking or killed test leaves no consumers.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(3);
        }
    });

    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 3).max(100).to_string(),
        )
        .set("log_level", "4");
    if let Some(id) = &instance_id {
        cfg.set("group.instance.id", id);
    }
    if let Some(a) = &assignor {
        cfg.set("partition.assignment.strategy", a);
    }
    for (k, v) in &extra {
        cfg.set(k, v);
    }
    let member = Arc::new(Member {
        topic: topic.clone(),
        pending: Mutex::new(BTreeMap::new()),
    });
    let consumer: BaseConsumer<Ctx> =
        cfg.create_with_context(Ctx(member.clone()))
            .unwrap_or_else(|e| {
                eprintln!("create consumer: {e}");
                std::process::exit(1)
            });
    say(&format!("STARTED {}", std::process::id()));
    consumer.subscribe(&[&topic]).unwrap_or_else(|e| {
        eprintln!("subscribe {topic}: {e}");
        std::process::exit(1)
    });

    let mut since_commit = 0usize;
    let mut last_commit = std::time::Instant::now();
    while !TERM.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = m
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                say(&format!("RECORD {} {} {value}", m.partition(), m.offset()));
                member
                    .pending
                    .lock()
                    .unwrap()
                    .insert(m.partition(), m.offset() + 1);
                since_commit += 1;
                if since_commit >= commit_every {
                    member.commit(&consumer, None, false);
                    since_commit = 0;
                    last_commit = std::time::Instant::now();
                }
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None if last_commit.elapsed() >= commit_idle => {
                member.commit(&consumer, None, false);
                since_commit = 0;
                last_commit = std::time::Instant::now();
            }
            None => {}
        }
    }
    member.commit(&consumer, None, false);
    drop(consumer);
    say("CLOSED");
}
