//! Consumer groups through real clients: librdkafka consumers in `group_member` processes
//! (`tests/src/bin/group_member.rs`, one per member, so a member can be `kill -9`ed) and
//! in-process rdkafka consumers and admin clients.
//!
//! What users rely on that this proves: the members of a group share a topic's partitions
//! (every partition owned by exactly one member, never by two at once, also across the
//! rebalance when a member joins); a member that dies without a word loses its partitions to
//! the survivors within the session timeout and they continue from its committed offsets,
//! so every record is processed at least once; groups are independent (pub/sub); committed
//! offsets survive a clean restart and `kill -9` of the broker; cooperative-sticky consumers
//! rebalance incrementally while members come and go; a static member (group.instance.id)
//! restarted within its session timeout gets its partitions back without a rebalance of the
//! others; a lone consumer's first join waits about the initial rebalance delay and no more;
//! and ListGroups/DescribeGroups, OffsetFetch and DeleteGroups show and manage groups as
//! Kafka does.
//!
//! Member processes print their rebalance events with `CLOCK_MONOTONIC` timestamps, so the
//! no-double-ownership check compares times from one clock: a partition is owned from the
//! moment before its assignment is applied until the moment after its revocation completed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

const MEMBER_BIN: &str = env!("CARGO_BIN_EXE_group_member");

/// Session timeout of the dynamic members; the broker's minimum is lowered to allow it.
const SESSION_MS: u64 = 3000;

/// A broker with group timing suited to tests: no initial rebalance delay, short sessions.
fn group_broker() -> Broker {
    Broker::builder()
        .arg("group-initial-rebalance-delay-ms", 0)
        .arg("group-min-session-timeout-ms", 1000)
        .start()
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

// ---------------------------------------------------------------------------------------
// Member processes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Started,
    /// Partitions, monotonic µs.
    Assigned(Vec<i32>, u64),
    /// Partitions, monotonic µs, lost.
    Revoked(Vec<i32>, u64, bool),
    Record(i32, i64, String),
    Committed(Vec<(i32, i64)>),
    CommitFailed(String),
    RebalanceError(String),
    Closed,
    Other(String),
}

fn parse_parts(s: &str) -> Vec<i32> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("partition number"))
        .collect()
}

fn parse_ts(s: Option<&str>) -> u64 {
    s.and_then(|t| t.strip_prefix('@'))
        .and_then(|t| t.parse().ok())
        .expect("@timestamp")
}

fn parse_line(line: &str) -> Ev {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "STARTED" => Ev::Started,
        "CLOSED" => Ev::Closed,
        "ASSIGNED" | "REVOKED" => {
            // The partition list may be empty: "ASSIGNED  @123".
            let mut words = rest.split(' ');
            let parts = parse_parts(words.next().unwrap_or(""));
            let ts = parse_ts(words.next());
            if kind == "ASSIGNED" {
                Ev::Assigned(parts, ts)
            } else {
                Ev::Revoked(parts, ts, words.next() == Some("lost"))
            }
        }
        "RECORD" => {
            let mut w = rest.splitn(3, ' ');
            let p = w.next().unwrap().parse().expect("record partition");
            let o = w.next().unwrap().parse().expect("record offset");
            Ev::Record(p, o, w.next().unwrap_or("").to_string())
        }
        "COMMITTED" => Ev::Committed(
            rest.split(',')
                .filter(|x| !x.is_empty())
                .map(|x| {
                    let (p, o) = x.split_once(':').expect("p:o");
                    (p.parse().unwrap(), o.parse().unwrap())
                })
                .collect(),
        ),
        "COMMIT_FAILED" => Ev::CommitFailed(rest.to_string()),
        "REBALANCE_ERROR" => Ev::RebalanceError(rest.to_string()),
        _ => Ev::Other(line.to_string()),
    }
}

#[derive(Clone)]
struct MemberOpts {
    group: String,
    topic: String,
    instance_id: Option<String>,
    assignor: &'static str,
    session_ms: u64,
    commit_every: usize,
    commit_idle_ms: u64,
}

impl MemberOpts {
    fn new(group: &str, topic: &str) -> Self {
        MemberOpts {
            group: group.to_string(),
            topic: topic.to_string(),
            instance_id: None,
            assignor: "range",
            session_ms: SESSION_MS,
            commit_every: 10,
            commit_idle_ms: 0,
        }
    }
    fn assignor(mut self, a: &'static str) -> Self {
        self.assignor = a;
        self
    }
    fn instance_id(mut self, id: &str) -> Self {
        self.instance_id = Some(id.to_string());
        self
    }
    fn session_ms(mut self, ms: u64) -> Self {
        self.session_ms = ms;
        self
    }
    /// Commit after every `n` records, and when idle only every `idle_ms`.
    fn commit_every(mut self, n: usize, idle_ms: u64) -> Self {
        self.commit_every = n;
        self.commit_idle_ms = idle_ms;
        self
    }
}

/// One `group_member` process and everything it has printed so far.
struct Member {
    name: String,
    child: Option<Child>,
    events: Arc<Mutex<Vec<Ev>>>,
    reader: Option<JoinHandle<()>>,
    /// Monotonic µs at which the process was known dead (killed or exited).
    ended_at: Option<u64>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Must be called from the test's own thread (the member exits when its parent does).
    fn spawn(name: &str, bootstrap: &str, o: &MemberOpts) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("group-member-")
            .tempdir()
            .expect("temp dir");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(MEMBER_BIN);
        cmd.args(["--bootstrap", bootstrap])
            .args(["--group", &o.group])
            .args(["--topic", &o.topic])
            .args(["--assignor", o.assignor])
            .args(["--session-timeout-ms", &o.session_ms.to_string()])
            .args(["--commit-every", &o.commit_every.to_string()])
            .args(["--commit-idle-ms", &o.commit_idle_ms.to_string()]);
        if let Some(id) = &o.instance_id {
            cmd.args(["--instance-id", id]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {MEMBER_BIN}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                ev.lock().unwrap().push(parse_line(&line));
            }
        });
        Member {
            name: name.to_string(),
            child: Some(child),
            events,
            reader: Some(reader),
            ended_at: None,
            stderr,
            _dir: dir,
        }
    }

    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    fn event_count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Partitions currently owned according to the ASSIGNED/REVOKED lines.
    fn owned(&self) -> BTreeSet<i32> {
        let mut owned = BTreeSet::new();
        for e in self.events.lock().unwrap().iter() {
            match e {
                Ev::Assigned(ps, _) => owned.extend(ps.iter().copied()),
                Ev::Revoked(ps, _, _) => {
                    for p in ps {
                        owned.remove(p);
                    }
                }
                _ => {}
            }
        }
        if self.ended_at.is_some() {
            owned.clear();
        }
        owned
    }

    /// (partition, offset, value) of every record, in the order consumed.
    fn records(&self) -> Vec<(i32, i64, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Ev::Record(p, o, v) => Some((*p, *o, v.clone())),
                _ => None,
            })
            .collect()
    }

    /// Last successfully committed next-offset per partition.
    fn committed(&self) -> BTreeMap<i32, i64> {
        let mut m = BTreeMap::new();
        for e in self.events.lock().unwrap().iter() {
            if let Ev::Committed(v) = e {
                m.extend(v.iter().copied());
            }
        }
        m
    }

    fn rebalance_events(&self) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|e| matches!(e, Ev::Assigned(..) | Ev::Revoked(..)))
            .collect()
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().expect("member running");
        let _ = child.kill();
        self.ended_at = Some(now_us());
        let _ = child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGTERM, then waits for a clean exit (commit, close, `CLOSED`).
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("member running");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "member {} did not exit within 30 s of SIGTERM; stderr:\n{}",
                    self.name,
                    tail(&self.stderr, 30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.ended_at = Some(now_us());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        assert!(
            status.success(),
            "member {} exited with {status} after SIGTERM; stderr:\n{}",
            self.name,
            tail(&self.stderr, 30)
        );
        assert_eq!(
            self.events().last(),
            Some(&Ev::Closed),
            "member {} did not print CLOSED",
            self.name
        );
    }

    /// A one-paragraph summary for failure messages.
    fn summary(&self) -> String {
        let ev = self.events();
        let records = ev.iter().filter(|e| matches!(e, Ev::Record(..))).count();
        let notable: Vec<String> = ev
            .iter()
            .filter(|e| !matches!(e, Ev::Record(..) | Ev::Committed(..)))
            .map(|e| format!("{e:?}"))
            .collect();
        format!(
            "member {} (pid {:?}, ended {:?}): owned {:?}, {records} records, committed {:?}, events {notable:?}",
            self.name,
            self.child.as_ref().map(|c| c.id()),
            self.ended_at,
            self.owned(),
            self.committed()
        )
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- {} ----\n---- stderr tail ----\n{}",
                self.summary(),
                tail(&self.stderr, 20)
            );
        }
    }
}

fn summaries(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.summary())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Ok(owned sets) if every member owns at least one partition and the sets are a disjoint
/// cover of `0..partitions`.
fn cover(members: &[&Member], partitions: i32) -> Result<Vec<BTreeSet<i32>>, String> {
    let sets: Vec<BTreeSet<i32>> = members.iter().map(|m| m.owned()).collect();
    let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
    for (m, s) in members.iter().zip(&sets) {
        if s.is_empty() {
            return Err(format!("{} owns nothing", m.name));
        }
        for p in s {
            if let Some(other) = seen.insert(*p, &m.name) {
                return Err(format!("partition {p} owned by {other} and {}", m.name));
            }
        }
    }
    let all: BTreeSet<i32> = (0..partitions).collect();
    let got: BTreeSet<i32> = seen.keys().copied().collect();
    if got != all {
        return Err(format!(
            "partitions {:?} unowned",
            all.difference(&got).collect::<Vec<_>>()
        ));
    }
    Ok(sets)
}

/// Waits until the members' assignments are a disjoint cover of the topic, each member with
/// at least one partition. Returns the owned sets.
fn wait_settled(members: &[&Member], partitions: i32, timeout: Duration) -> Vec<BTreeSet<i32>> {
    let t0 = Instant::now();
    let mut last = String::new();
    loop {
        match cover(members, partitions) {
            Ok(sets) => {
                // Still so a moment later: not a snapshot in the middle of a rebalance.
                thread::sleep(Duration::from_millis(300));
                if let Ok(again) = cover(members, partitions) {
                    if again == sets {
                        return sets;
                    }
                }
            }
            Err(e) => last = e,
        }
        if t0.elapsed() > timeout {
            panic!(
                "assignment not settled into a disjoint cover of {partitions} partitions within {timeout:?}: {last}\n{}",
                summaries(members)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// No partition is owned by two members at once: per partition, the ownership intervals
/// [ASSIGNED time, REVOKED time (or death)] of different members do not intersect.
fn check_no_overlap(members: &[&Member]) {
    let mut intervals: BTreeMap<i32, Vec<(u64, u64, String)>> = BTreeMap::new();
    for m in members {
        let mut open: BTreeMap<i32, u64> = BTreeMap::new();
        for e in m.events() {
            match e {
                Ev::Assigned(ps, t) => {
                    for p in ps {
                        open.entry(p).or_insert(t);
                    }
                }
                Ev::Revoked(ps, t, _) => {
                    for p in ps {
                        if let Some(start) = open.remove(&p) {
                            intervals
                                .entry(p)
                                .or_default()
                                .push((start, t, m.name.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        let end = m.ended_at.unwrap_or(u64::MAX);
        for (p, start) in open {
            intervals
                .entry(p)
                .or_default()
                .push((start, end, m.name.clone()));
        }
    }
    for (p, iv) in &intervals {
        for (i, a) in iv.iter().enumerate() {
            for b in &iv[i + 1..] {
                if a.2 != b.2 && a.0 < b.1 && b.0 < a.1 {
                    panic!(
                        "partition {p} owned by two members at once: {} from {} to {} µs and {} from {} to {} µs\n{}",
                        a.2,
                        a.0,
                        a.1,
                        b.2,
                        b.0,
                        b.1,
                        summaries(members)
                    );
                }
            }
        }
    }
}

/// Every member only consumed partitions it was assigned at some point.
fn check_records_from_assigned(members: &[&Member]) {
    for m in members {
        let ever: BTreeSet<i32> = m
            .events()
            .iter()
            .flat_map(|e| match e {
                Ev::Assigned(ps, _) => ps.clone(),
                _ => vec![],
            })
            .collect();
        for (p, o, _) in m.records() {
            assert!(
                ever.contains(&p),
                "{} consumed {p}@{o} but was never assigned partition {p}",
                m.name
            );
        }
    }
}

/// The checkers themselves, on made-up member output: they accept a clean handover and
/// catch a double owner, a gap in the cover and a line format change.
#[test]
fn checkers_catch_double_ownership() {
    fn fake(name: &str, lines: &[&str], ended_at: Option<u64>) -> Member {
        let dir = tempfile::tempdir().unwrap();
        Member {
            name: name.to_string(),
            child: None,
            events: Arc::new(Mutex::new(lines.iter().map(|l| parse_line(l)).collect())),
            reader: None,
            ended_at,
            stderr: dir.path().join("none"),
            _dir: dir,
        }
    }
    assert_eq!(
        parse_line("REVOKED 1,3 @42 lost"),
        Ev::Revoked(vec![1, 3], 42, true)
    );
    assert_eq!(parse_line("ASSIGNED  @7"), Ev::Assigned(vec![], 7));
    assert_eq!(
        parse_line("RECORD 2 17 a b"),
        Ev::Record(2, 17, "a b".to_string())
    );
    assert_eq!(
        parse_line("COMMITTED 0:5,1:9"),
        Ev::Committed(vec![(0, 5), (1, 9)])
    );
    // a hands partition 1 to b at 20..30: fine. a's 0 ends with its death at 50.
    let a = fake("a", &["ASSIGNED 0,1 @10", "REVOKED 1 @20"], Some(50));
    let b = fake("b", &["ASSIGNED 1 @30", "ASSIGNED 0 @60"], None);
    check_no_overlap(&[&a, &b]);
    assert_eq!(cover(&[&b], 2).map(|_| ()), Ok(()));
    assert!(cover(&[&b], 3).is_err(), "partition 2 unowned");
    // c gets partition 1 at 25, before b gave it up: caught.
    let c = fake("c", &["ASSIGNED 1 @25"], None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_no_overlap(&[&b, &c])));
    assert!(r.is_err(), "overlap of b and c on partition 1 not caught");
    // An eager revoke-all then reassign of the same member is no overlap.
    let d = fake(
        "d",
        &["ASSIGNED 2 @1", "REVOKED 2 @5", "ASSIGNED 2 @9"],
        None,
    );
    let e = fake("e", &["ASSIGNED 2 @6", "REVOKED 2 @8"], None);
    check_no_overlap(&[&d, &e]);
    assert!(cover(&[&b, &c], 2).is_err(), "partition 1 owned twice");
}

// ---------------------------------------------------------------------------------------
// Producing
// ---------------------------------------------------------------------------------------

/// A produced record: (partition, offset, value).
type Produced = (i32, i64, String);

/// Produces `{tag}-{i}` for i in `range`, record i to partition i % `partitions`.
fn produce_tagged(
    bs: &str,
    topic: &str,
    partitions: i32,
    tag: &str,
    range: std::ops::Range<usize>,
) -> Vec<Produced> {
    let values: Vec<String> = range.clone().map(|i| format!("{tag}-{i}")).collect();
    let start = range.start;
    let reports = produce(bs, topic, "all", &[], values.len(), |j| Outgoing {
        key: values[j].clone().into_bytes(),
        value: values[j].clone().into_bytes(),
        partition: Some(((start + j) % partitions as usize) as i32),
    });
    all_ok(&reports)
        .into_iter()
        .zip(values)
        .map(|((p, o), v)| (p, o, v))
        .collect()
}

/// Produces small batches in the background until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Produced>>,
}

impl Feeder {
    fn start(bs: &str, topic: &str, partitions: i32, tag: &str) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let (bs, topic, tag, s) = (
            bs.to_string(),
            topic.to_string(),
            tag.to_string(),
            stop.clone(),
        );
        let handle = thread::spawn(move || {
            let mut all = Vec::new();
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                all.extend(produce_tagged(&bs, &topic, partitions, &tag, i..i + 8));
                i += 8;
                thread::sleep(Duration::from_millis(50));
            }
            all
        });
        Feeder { stop, handle }
    }

    fn stop(self) -> Vec<Produced> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("feeder thread")
    }
}

/// Err(description) unless every produced record was consumed by one of `members` with
/// the value it was produced with.
fn all_consumed(members: &[&Member], want: &[Produced]) -> Result<(), String> {
    let mut got: HashMap<(i32, i64), String> = HashMap::new();
    for m in members {
        for (p, o, v) in m.records() {
            got.insert((p, o), v);
        }
    }
    let mut missing = Vec::new();
    for (p, o, v) in want {
        match got.get(&(*p, *o)) {
            None => missing.push((*p, *o)),
            Some(g) if g != v => {
                return Err(format!(
                    "record {p}@{o} consumed as {g:?}, produced as {v:?}"
                ))
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        missing.sort();
        Err(format!(
            "{} of {} records not consumed yet, first {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(10)]
        ))
    }
}

fn wait_all_consumed(members: &[&Member], want: &[Produced], timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, || match all_consumed(members, want) {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(
        ok,
        "not every record consumed within {timeout:?}: {last}\n{}",
        summaries(members)
    );
}

/// (partition, offset) → how many times members consumed it.
fn consumption_counts(members: &[&Member]) -> BTreeMap<(i32, i64), usize> {
    let mut c = BTreeMap::new();
    for m in members {
        for (p, o, _) in m.records() {
            *c.entry((p, o)).or_insert(0) += 1;
        }
    }
    c
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Three members split six partitions two each; a fourth joins and the group rebalances to
/// 2/2/1/1. Never is a partition owned by two members at once, and every record is consumed.
#[test]
fn members_share_partitions_and_rebalance_on_join() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-cover");
    let group = unique_name("g-cover");
    create_topic(&bs, &topic, 6, &[]);
    let mut want = produce_tagged(&bs, &topic, 6, "a", 0..120);

    let o = MemberOpts::new(&group, &topic);
    let m1 = Member::spawn("m1", &bs, &o);
    let m2 = Member::spawn("m2", &bs, &o);
    let m3 = Member::spawn("m3", &bs, &o);
    let sets = wait_settled(&[&m1, &m2, &m3], 6, Duration::from_secs(30));
    assert!(
        sets.iter().all(|s| s.len() == 2),
        "range over 6 partitions and 3 members gives 2 each: {sets:?}"
    );
    wait_all_consumed(&[&m1, &m2, &m3], &want, Duration::from_secs(30));

    let t_join = Instant::now();
    let m4 = Member::spawn("m4", &bs, &o);
    let all = [&m1, &m2, &m3, &m4];
    let sets = wait_settled(&all, 6, Duration::from_secs(30));
    eprintln!(
        "fourth member: rebalanced to {sets:?} in {:?}",
        t_join.elapsed()
    );
    let mut sizes: Vec<usize> = sets.iter().map(|s| s.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 1, 2, 2], "range over 6 and 4: {sets:?}");
    assert!(
        [&m1, &m2, &m3]
            .iter()
            .any(|m| m.events().iter().any(|e| matches!(e, Ev::Revoked(..)))),
        "no existing member saw a revocation when the fourth joined\n{}",
        summaries(&all)
    );

    want.extend(produce_tagged(&bs, &topic, 6, "b", 0..60));
    wait_all_consumed(&all, &want, Duration::from_secs(30));
    check_no_overlap(&all);
    check_records_from_assigned(&all);
    for m in all {
        let ev = m.events();
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Ev::RebalanceError(_) | Ev::Revoked(_, _, true))),
            "{}: rebalance error or lost assignment: {ev:?}",
            m.name
        );
    }
}

/// A member killed with SIGKILL: the survivor gets its partitions within the session timeout
/// (plus a margin) and continues from the dead member's committed offsets; records produced
/// before and during are all consumed, redelivered only past the dead member's last commit.
#[test]
fn killed_member_partitions_move_and_resume_from_commits() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-kill");
    let group = unique_name("g-kill");
    create_topic(&bs, &topic, 4, &[]);
    // Rare commits, so the killed member has consumed records it never committed.
    let o = MemberOpts::new(&group, &topic).commit_every(25, 1500);
    let mut a = Member::spawn("a", &bs, &o);
    let b = Member::spawn("b", &bs, &o);
    wait_settled(&[&a, &b], 4, Duration::from_secs(30));

    let mut want = produce_tagged(&bs, &topic, 4, "pre", 0..200);
    wait_all_consumed(&[&a, &b], &want, Duration::from_secs(30));
    // Committed: the idle polls commit everything consumed.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut c = a.committed();
            c.extend(b.committed());
            c.values().sum::<i64>() == 200
        }),
        "offsets of the first 200 records not committed\n{}",
        summaries(&[&a, &b])
    );

    let feeder = Feeder::start(&bs, &topic, 4, "during");
    thread::sleep(Duration::from_millis(1500));
    let a_owned = a.owned();
    let b_before = b.owned();
    a.kill9();
    let killed = Instant::now();
    let a_committed = a.committed();
    let mut a_last: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, off, _) in a.records() {
        let e = a_last.entry(p).or_insert(0);
        *e = (*e).max(off + 1);
    }
    let b_seen_before = b.event_count();

    assert!(
        wait_until(Duration::from_secs(SESSION_MS / 1000 + 12), || b
            .owned()
            .len()
            == 4),
        "survivor did not get all 4 partitions within session timeout {SESSION_MS} ms + 12 s\n{}",
        summaries(&[&a, &b])
    );
    let moved = killed.elapsed();
    eprintln!(
        "partitions {a_owned:?} of the killed member moved after {moved:?} (session timeout {SESSION_MS} ms)"
    );
    assert!(
        moved <= Duration::from_millis(SESSION_MS + 7000),
        "takeover took {moved:?}, session timeout is {SESSION_MS} ms"
    );
    thread::sleep(Duration::from_millis(1000));
    want.extend(feeder.stop());
    wait_all_consumed(&[&a, &b], &want, Duration::from_secs(30));

    // Where the survivor started on each of the dead member's partitions.
    let b_after: Vec<(i32, i64)> = b.events()[b_seen_before..]
        .iter()
        .filter_map(|e| match e {
            Ev::Record(p, o, _) => Some((*p, *o)),
            _ => None,
        })
        .collect();
    for p in &a_owned {
        let committed = a_committed.get(p).copied().unwrap_or(0);
        let last = a_last.get(p).copied().unwrap_or(0);
        let first = b_after
            .iter()
            .find(|(q, _)| q == p)
            .map(|&(_, o)| o)
            .unwrap_or_else(|| panic!("survivor consumed nothing from partition {p}"));
        assert!(
            committed <= first && first <= last.max(committed),
            "survivor started partition {p} at offset {first}; the dead member had committed {committed} \
             and consumed up to {last} (exclusive), so it must start in [{committed}, {last}]"
        );
    }
    // Duplicates only past the dead member's last commit (or, for the survivor's own
    // partitions, only if one of its commits failed).
    let b_commit_failed = b.events().iter().any(|e| matches!(e, Ev::CommitFailed(_)));
    let dups: Vec<(i32, i64)> = consumption_counts(&[&a, &b])
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    for &(p, off) in &dups {
        if a_owned.contains(&p) {
            let committed = a_committed.get(&p).copied().unwrap_or(0);
            assert!(
                off >= committed,
                "record {p}@{off} consumed twice although the dead member had committed {committed}"
            );
        } else {
            assert!(
                b_commit_failed,
                "record {p}@{off} of the survivor's own partition {p} (owned {b_before:?}) consumed twice without a failed commit\n{}",
                summaries(&[&a, &b])
            );
        }
    }
    eprintln!(
        "{} records, {} redelivered after the kill (dead member committed {a_committed:?}, consumed to {a_last:?})",
        want.len(),
        dups.len()
    );
    check_no_overlap(&[&a, &b]);
}

/// Two groups on one topic each get every record.
#[test]
fn two_groups_each_receive_every_record() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-pubsub");
    create_topic(&bs, &topic, 3, &[]);
    let mut want = produce_tagged(&bs, &topic, 3, "x", 0..150);
    let g1 = MemberOpts::new(&unique_name("g-pub1"), &topic);
    let g2 = MemberOpts::new(&unique_name("g-pub2"), &topic).assignor("roundrobin");
    let a1 = Member::spawn("g1-a", &bs, &g1);
    let a2 = Member::spawn("g1-b", &bs, &g1);
    let b1 = Member::spawn("g2-a", &bs, &g2);
    wait_settled(&[&a1, &a2], 3, Duration::from_secs(30));
    wait_settled(&[&b1], 3, Duration::from_secs(30));
    wait_all_consumed(&[&a1, &a2], &want, Duration::from_secs(30));
    wait_all_consumed(&[&b1], &want, Duration::from_secs(30));
    want.extend(produce_tagged(&bs, &topic, 3, "y", 0..60));
    wait_all_consumed(&[&a1, &a2], &want, Duration::from_secs(30));
    wait_all_consumed(&[&b1], &want, Duration::from_secs(30));
    for (who, counts) in [
        ("group 1", consumption_counts(&[&a1, &a2])),
        ("group 2", consumption_counts(&[&b1])),
    ] {
        let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "{who} consumed records twice: {dups:?}");
    }
}

fn group_consumer(bs: &str, group: &str) -> BaseConsumer {
    let mut cfg = client_config(bs);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", "100");
    cfg.create().expect("create group consumer")
}

/// OffsetFetch through `committed_offsets` for partitions `0..n`; -1 for none.
fn fetch_committed(c: &BaseConsumer, topic: &str, n: i32) -> BTreeMap<i32, i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(15))
        .expect("OffsetFetch (committed_offsets)");
    got.elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
        })
        .collect()
}

fn commit_offsets(c: &BaseConsumer, topic: &str, offsets: &BTreeMap<i32, i64>) {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync)
        .unwrap_or_else(|e| panic!("OffsetCommit {offsets:?}: {e}"));
}

/// Subscribes and polls until `expect` records arrived (and 500 ms more for stragglers).
fn consume_subscribed(c: &BaseConsumer, topic: &str, expect: usize) -> Vec<(i32, i64)> {
    c.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut extra_until: Option<Instant> = None;
    loop {
        if let Some(t) = extra_until {
            if Instant::now() > t {
                break;
            }
        } else if got.len() >= expect {
            extra_until = Some(Instant::now() + Duration::from_millis(500));
        }
        assert!(
            Instant::now() < deadline,
            "consumed {} of {expect} records in 30 s: {got:?}",
            got.len()
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((m.partition(), m.offset())),
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

/// First offset consumed per partition.
fn first_offsets(got: &[(i32, i64)]) -> BTreeMap<i32, i64> {
    let mut m = BTreeMap::new();
    for &(p, o) in got {
        m.entry(p).or_insert(o);
    }
    m
}

/// Commit; restart the broker; a new consumer in the group finds the offsets (OffsetFetch)
/// and resumes there. Twice, the second time overwriting the first commit.
fn offsets_survive_restart(kill: bool) {
    let mut broker = group_broker();
    let topic = unique_name(if kill { "cg-off-kill" } else { "cg-off-term" });
    let group = unique_name("g-off");
    create_topic(&broker.bootstrap(), &topic, 3, &[]);
    produce_tagged(&broker.bootstrap(), &topic, 3, "r", 0..90); // 30 per partition
    let restart = |broker: &mut Broker| {
        if kill {
            broker.kill9();
            broker.restart();
        } else {
            broker.restart(); // SIGTERM, wait for exit 0, start
        }
    };

    // Round 1: a subscribed member consumes everything, commits chosen offsets, leaves.
    let round1: BTreeMap<i32, i64> = [(0, 10), (1, 20), (2, 30)].into();
    {
        let bs = broker.bootstrap();
        let c = group_consumer(&bs, &group);
        let got = consume_subscribed(&c, &topic, 90);
        assert_eq!(
            got.len(),
            90,
            "first consumer reads all 90 from the beginning"
        );
        commit_offsets(&c, &topic, &round1);
        assert_eq!(
            fetch_committed(&c, &topic, 3),
            round1,
            "OffsetFetch before restart"
        );
        // Dropping closes the consumer: LeaveGroup.
    }
    restart(&mut broker);

    let round2: BTreeMap<i32, i64> = [(0, 25), (1, 5), (2, 30)].into();
    {
        let bs = broker.bootstrap();
        let c = group_consumer(&bs, &group);
        assert_eq!(
            fetch_committed(&c, &topic, 3),
            round1,
            "committed offsets after the restart (kill -9: {kill})"
        );
        let got = consume_subscribed(&c, &topic, 20 + 10);
        assert_eq!(
            first_offsets(&got),
            [(0, 10), (1, 20)].into(),
            "resumed at the committed offsets: {got:?}"
        );
        assert_eq!(
            got.len(),
            30,
            "records after the committed offsets: {got:?}"
        );
        // Overwrite with a mix of higher and lower offsets.
        commit_offsets(&c, &topic, &round2);
        assert_eq!(fetch_committed(&c, &topic, 3), round2);
    }
    restart(&mut broker);

    let bs = broker.bootstrap();
    let c = group_consumer(&bs, &group);
    assert_eq!(
        fetch_committed(&c, &topic, 3),
        round2,
        "overwritten offsets after a second restart (kill -9: {kill})"
    );
    let got = consume_subscribed(&c, &topic, 5 + 25);
    assert_eq!(first_offsets(&got), [(0, 25), (1, 5)].into(), "{got:?}");
    assert_eq!(got.len(), 30, "{got:?}");
    broker.assert_alive();
}

#[test]
fn committed_offsets_survive_clean_restart() {
    offsets_survive_restart(false);
}

#[test]
fn committed_offsets_survive_kill9() {
    offsets_survive_restart(true);
}

/// cooperative-sticky: members join and leave while records flow; rebalances are incremental
/// (a member that stays never gives up all its partitions), and every record is consumed.
#[test]
fn cooperative_sticky_members_join_and_leave() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-coop");
    let group = unique_name("g-coop");
    create_topic(&bs, &topic, 6, &[]);
    let o = MemberOpts::new(&group, &topic).assignor("cooperative-sticky");
    let feeder = Feeder::start(&bs, &topic, 6, "c");
    let t = Duration::from_secs(30);

    let m1 = Member::spawn("m1", &bs, &o);
    wait_settled(&[&m1], 6, t);
    let mut m2 = Member::spawn("m2", &bs, &o);
    wait_settled(&[&m1, &m2], 6, t);
    let mut m3 = Member::spawn("m3", &bs, &o);
    let s = wait_settled(&[&m1, &m2, &m3], 6, t);
    assert!(
        s.iter().all(|x| x.len() == 2),
        "3 members, 6 partitions: {s:?}"
    );
    m2.terminate(); // LeaveGroup
    wait_settled(&[&m1, &m3], 6, t);
    let m4 = Member::spawn("m4", &bs, &o);
    let s = wait_settled(&[&m1, &m3, &m4], 6, t);
    assert!(
        s.iter().all(|x| x.len() == 2),
        "3 members, 6 partitions: {s:?}"
    );
    m3.terminate();
    wait_settled(&[&m1, &m4], 6, t);
    thread::sleep(Duration::from_millis(500));
    let want = feeder.stop();
    let all = [&m1, &m2, &m3, &m4];
    wait_all_consumed(&all, &want, Duration::from_secs(30));
    check_no_overlap(&all);
    check_records_from_assigned(&all);

    // Incremental: m1 stays throughout, so no rebalance takes all its partitions; cooperative
    // rebalances only revoke what moves. m4 joined last and never lost anything.
    let mut owned = BTreeSet::new();
    for e in m1.events() {
        match e {
            Ev::Assigned(ps, _) => owned.extend(ps),
            Ev::Revoked(ps, _, lost) => {
                assert!(!lost, "m1's assignment was lost\n{}", summaries(&all));
                for p in &ps {
                    owned.remove(p);
                }
                assert!(
                    !owned.is_empty(),
                    "m1 gave up all its partitions in one rebalance (eager, not incremental)\n{}",
                    summaries(&all)
                );
            }
            _ => {}
        }
    }
    assert!(
        !m4.events().iter().any(|e| matches!(e, Ev::Revoked(..))),
        "m4 only gained partitions (it joined, then m3 left), yet saw a revocation\n{}",
        summaries(&all)
    );
    eprintln!(
        "cooperative-sticky: {} records; m1 events {:?}",
        want.len(),
        m1.rebalance_events()
    );
}

/// A static member (group.instance.id) killed and restarted within its session timeout gets
/// its partitions back without a rebalance: the other member sees no revocation or
/// assignment, also after the old session would have expired.
#[test]
fn static_member_restart_within_session_keeps_assignment() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-static");
    let group = unique_name("g-static");
    create_topic(&bs, &topic, 4, &[]);
    let session_ms = 6000;
    let oa = MemberOpts::new(&group, &topic)
        .session_ms(session_ms)
        .instance_id("static-a");
    let ob = MemberOpts::new(&group, &topic)
        .session_ms(session_ms)
        .instance_id("static-b");
    let mut a = Member::spawn("a", &bs, &oa);
    let b = Member::spawn("b", &bs, &ob);
    let sets = wait_settled(&[&a, &b], 4, Duration::from_secs(30));
    let mut want = produce_tagged(&bs, &topic, 4, "s", 0..40);
    wait_all_consumed(&[&a, &b], &want, Duration::from_secs(30));
    let a_parts = sets[0].clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let c = a.committed();
            a_parts.iter().all(|p| c.get(p) == Some(&10))
        }),
        "a did not commit its partitions {a_parts:?} to 10\n{}",
        a.summary()
    );
    let b_events = b.event_count();
    let b_rebalances = b.rebalance_events();

    a.kill9();
    let killed = Instant::now();
    let a2 = Member::spawn("a-restarted", &bs, &oa);
    assert!(
        wait_until(Duration::from_secs(session_ms / 1000), || a2.owned()
            == a_parts),
        "restarted static member did not get its partitions {a_parts:?} back within the session timeout\n{}",
        summaries(&[&a, &a2, &b])
    );
    eprintln!(
        "static member back with {a_parts:?} after {:?}",
        killed.elapsed()
    );
    want.extend(produce_tagged(&bs, &topic, 4, "t", 0..40));
    wait_all_consumed(&[&a, &a2, &b], &want, Duration::from_secs(20));
    // Past the old member's session timeout: nothing may happen then either.
    let quiet_until = killed + Duration::from_millis(session_ms + 2000);
    thread::sleep(quiet_until.saturating_duration_since(Instant::now()));

    let b_new: Vec<Ev> = b.events()[b_events..]
        .iter()
        .filter(|e| !matches!(e, Ev::Record(..) | Ev::Committed(..)))
        .cloned()
        .collect();
    assert!(
        b_new.is_empty(),
        "the other member saw {b_new:?} while the static member restarted (before: {b_rebalances:?})\n{}",
        summaries(&[&a, &a2, &b])
    );
    let a2_reb = a2.rebalance_events();
    assert!(
        matches!(&a2_reb[..], [Ev::Assigned(ps, _)] if ps.iter().copied().collect::<BTreeSet<_>>() == a_parts),
        "restarted member: one assignment of {a_parts:?}, got {a2_reb:?}"
    );
    // It resumed after the dead incarnation's commits: only the second batch.
    for (p, o, v) in a2.records() {
        assert!(
            v.starts_with("t-") && o >= 10,
            "restarted member re-read {p}@{o} ({v}) below the committed offset 10"
        );
    }
    assert_eq!(cover(&[&a2, &b], 4).map(|_| ()), Ok(()));
    check_no_overlap(&[&a, &a2, &b]);
}

/// A lone consumer with the default group.initial.rebalance.delay.ms (3 s) gets its first
/// record after about that delay, not after several rounds of it.
#[test]
fn first_join_is_prompt_with_default_initial_delay() {
    let broker = Broker::start();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-first");
    create_topic(&bs, &topic, 1, &[]);
    produce_tagged(&bs, &topic, 1, "f", 0..1);
    let t0 = Instant::now();
    // The default broker's minimum session timeout is 6000 ms.
    let opts = MemberOpts::new(&unique_name("g-first"), &topic).session_ms(6000);
    let m = Member::spawn("lone", &bs, &opts);
    assert!(
        wait_until(Duration::from_secs(10), || !m.records().is_empty()),
        "no record within 10 s of starting a lone consumer\n{}",
        m.summary()
    );
    let took = t0.elapsed();
    eprintln!("lone consumer: first record after {took:?} (initial rebalance delay 3000 ms)");
    assert_eq!(m.records()[0], (0, 0, "f-0".to_string()));
}

fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Timeout::After(Duration::from_secs(15))))
        .request_timeout(Some(Timeout::After(Duration::from_secs(15))))
}

/// (state, protocol type, protocol, member ids) of `group` via DescribeGroups, None if the
/// broker does not report it.
fn describe(c: &BaseConsumer, group: &str) -> Option<(String, String, String, Vec<String>)> {
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("DescribeGroups (fetch_group_list)");
    list.groups().iter().find(|g| g.name() == group).map(|g| {
        (
            g.state().to_string(),
            g.protocol_type().to_string(),
            g.protocol().to_string(),
            g.members().iter().map(|m| m.id().to_string()).collect(),
        )
    })
}

/// ListGroups/DescribeGroups show a Stable group with its members; OffsetFetch shows what
/// they committed; DeleteGroups refuses an active group and deletes an empty one with its
/// offsets.
#[test]
fn admin_list_describe_offsets_and_delete_groups() {
    let broker = group_broker();
    let bs = broker.bootstrap();
    let topic = unique_name("cg-admin");
    let group = unique_name("g-admin");
    create_topic(&bs, &topic, 2, &[]);
    let want = produce_tagged(&bs, &topic, 2, "d", 0..20);
    let o = MemberOpts::new(&group, &topic);
    let mut m1 = Member::spawn("m1", &bs, &o);
    let mut m2 = Member::spawn("m2", &bs, &o);
    wait_settled(&[&m1, &m2], 2, Duration::from_secs(30));
    wait_all_consumed(&[&m1, &m2], &want, Duration::from_secs(30));
    let ends: BTreeMap<i32, i64> = [(0, 10), (1, 10)].into();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let mut c = m1.committed();
            c.extend(m2.committed());
            c == ends
        }),
        "members did not commit {ends:?}\n{}",
        summaries(&[&m1, &m2])
    );

    // A plain client (no group.id) for ListGroups/DescribeGroups.
    let plain: BaseConsumer = client_config(&bs).create().expect("client");
    let d = describe(&plain, &group);
    let (state, ptype, protocol, members) =
        d.unwrap_or_else(|| panic!("DescribeGroups does not report group {group}"));
    assert_eq!(state, "Stable", "group state");
    assert_eq!(ptype, "consumer", "protocol type");
    assert_eq!(protocol, "range", "selected assignor");
    assert_eq!(members.len(), 2, "members: {members:?}");
    assert_ne!(members[0], members[1]);
    let listed = plain
        .fetch_group_list(None, Duration::from_secs(10))
        .expect("ListGroups (fetch_group_list)");
    assert!(
        listed.groups().iter().any(|g| g.name() == group),
        "ListGroups does not list {group}: {:?}",
        listed.groups().iter().map(|g| g.name()).collect::<Vec<_>>()
    );

    // OffsetFetch from a non-member client of the group.
    let reader = group_consumer(&bs, &group);
    assert_eq!(
        fetch_committed(&reader, &topic, 2),
        ends,
        "committed offsets"
    );
    // `committed` asks about the consumer's own assignment (assign() does not join).
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    reader.assign(&tpl).expect("assign");
    let own: BTreeMap<i32, Offset> = reader
        .committed(Duration::from_secs(15))
        .expect("OffsetFetch (committed)")
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    assert_eq!(
        own,
        [(0, Offset::Offset(10)), (1, Offset::Offset(10))].into(),
        "committed() of the assigned partitions"
    );

    let admin = admin(&bs);
    let del = block_on(admin.delete_groups(&[&group], &admin_opts())).expect("DeleteGroups");
    assert_eq!(
        del,
        vec![Err((group.clone(), RDKafkaErrorCode::NonEmptyGroup))],
        "DeleteGroups of a group with members"
    );
    let missing = unique_name("g-missing");
    let del = block_on(admin.delete_groups(&[&missing], &admin_opts())).expect("DeleteGroups");
    assert_eq!(
        del,
        vec![Err((missing.clone(), RDKafkaErrorCode::GroupIdNotFound))],
        "DeleteGroups of a group that never existed"
    );

    m1.terminate();
    m2.terminate();
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = describe(&plain, &group);
            matches!(&last, Some((s, _, _, m)) if s == "Empty" && m.is_empty())
        }),
        "group not Empty after both members left: {last:?}"
    );
    assert_eq!(
        fetch_committed(&reader, &topic, 2),
        ends,
        "offsets of an empty group are kept"
    );
    let del = block_on(admin.delete_groups(&[&group], &admin_opts())).expect("DeleteGroups");
    assert_eq!(
        del,
        vec![Ok(group.clone())],
        "DeleteGroups of an empty group"
    );
    let after = describe(&plain, &group);
    assert!(
        after.is_none() || matches!(&after, Some((s, _, _, m)) if s == "Dead" && m.is_empty()),
        "deleted group still described as {after:?}"
    );
    let listed = plain
        .fetch_group_list(None, Duration::from_secs(10))
        .expect("ListGroups");
    assert!(
        !listed.groups().iter().any(|g| g.name() == group),
        "ListGroups still lists deleted group {group}"
    );
    assert_eq!(
        fetch_committed(&reader, &topic, 2),
        [(0, -1), (1, -1)].into(),
        "offsets of a deleted group"
    );
}
