//! Replication interop: three real broker processes (`tests::cluster::Cluster`) and librdkafka
//! (plus kafkajs, kafka-python and confluent-kafka where named).
//!
//! What users rely on that this proves: a record acknowledged with acks=all and
//! min.insync.replicas=2 survives `kill -9` of its leader, a restarted node catches up and can
//! take over without losing anything acknowledged, a frozen (SIGSTOPped) node does not stop
//! the cluster, acks=all is refused with NOT_ENOUGH_REPLICAS rather than acknowledged by too
//! few replicas, a consumer group survives the loss of its coordinator (under librdkafka,
//! kafkajs and kafka-python, whose producers also ride through the loss of leaders), Metadata
//! describes the cluster truthfully, admin requests honour `timeout_ms`, and operators place
//! replicas: reassignments move them without losing a record, and replica lists at creation
//! put partitions where asked. Plus `broker dev-cluster` starts and stops cleanly.
//! And a seeded nemesis (crashes, freezes, controlled shutdowns, lost disks, one node at a
//! time) under librdkafka and the simulator's Jepsen workload, judged by its checkers.
//!
//! Run them with `cargo test --release -p tests --test cluster` after
//! `cargo build --release -p broker`; `tests/run-all.sh` runs them with every client installed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request;
use kafka_protocol::messages::describe_quorum_response::PartitionData as QuorumPartition;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{NewPartitions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tests::cluster::{free_ports, Cluster};

/// Record value size.
const SIZE: usize = 1024;
/// Partitions of the test topics.
const PARTITIONS: i32 = 6;
/// How long leadership, ISR and topic changes may take to show in Metadata.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a topic back may take.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

/// Producer settings for a cluster that loses nodes: short socket timeouts so a dead or frozen
/// leader is noticed quickly, retries until the message timeout.
const FAILOVER_PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    // Idempotence recovery (epoch bumps) reaches the log callback: `common::Collect::log`.
    ("debug", "eos"),
    ("socket.timeout.ms", "10000"),
    ("message.timeout.ms", "60000"),
    ("topic.metadata.refresh.interval.ms", "1000"),
    ("retry.backoff.ms", "200"),
];

fn msg(i: usize) -> Outgoing {
    Outgoing {
        key: format!("k{i}").into_bytes(),
        value: payload(i as u64, SIZE),
        partition: None,
    }
}

fn index_of(key: &[u8]) -> usize {
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix('k'))
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("unexpected key {key:?}"))
}

/// CreateTopics with an explicit replication factor and topic configs; waits for leaders.
fn create_replicated(c: &Cluster, topic: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) {
    let admin = admin(&c.bootstrap_live());
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics request failed");
    match &res[0] {
        Ok(name) => assert_eq!(name, topic),
        Err((name, code)) => panic!("CreateTopics {name} (rf {rf}, {configs:?}) failed: {code:?}"),
    }
    if let Err(e) = c.wait_partitions(topic, CONVERGE_TIMEOUT, |p| {
        p.leader >= 0 && p.replicas.len() == rf as usize
    }) {
        panic!("{topic}: partitions without leader or {rf} replicas: {e}");
    }
}

/// High watermarks of every partition, retried while leadership moves.
/// Each partition's high watermark once it covers `at_least` (bounded wait: a new leader's high
/// watermark catches up with the old one's as its followers fetch, as in Kafka).
fn high_watermarks(
    c: &Cluster,
    topic: &str,
    partitions: i32,
    at_least: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = client_config(&c.bootstrap_live())
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("watermark client");
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let mut last = String::new();
        let ok = wait_until(CONVERGE_TIMEOUT, || {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => {
                    out.insert(p, high);
                    let want = at_least.get(&p).copied().unwrap_or(0);
                    last = format!("high watermark {high}, below the acknowledged {want}");
                    high >= want
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        assert!(ok, "ListOffsets {topic}-{p} kept failing: {last}");
    }
    out
}

/// Reads every partition from the beginning to its high watermark, once that covers every
/// acknowledged record in `reports`.
fn read_back(c: &Cluster, topic: &str, partitions: i32, reports: &[Delivery]) -> Vec<Consumed> {
    let mut at_least: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in reports.iter().flatten() {
        let e = at_least.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let until = high_watermarks(c, topic, partitions, &at_least);
    consume_until(
        &c.bootstrap_live(),
        topic,
        Offset::Beginning,
        &until,
        CONSUME_TIMEOUT,
    )
}

/// Every acknowledged record is in `got` at its reported (partition, offset) with its bytes, so
/// per partition in produce order; with `idempotent`, no record appears twice.
fn check_acked(got: &[Consumed], reports: &[Delivery], idempotent: bool) {
    let mut first_at: BTreeMap<usize, (i32, i64)> = BTreeMap::new();
    // (index, first position, second position): every repeat, so a failure shows whether
    // whole batches came back (a producer that resent them under a new epoch) or single records.
    let mut repeats: Vec<(usize, (i32, i64), (i32, i64))> = Vec::new();
    let mut at: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for m in got {
        let i = index_of(m.key.as_deref().expect("key"));
        assert!(
            m.value.as_deref() == Some(&payload(i as u64, SIZE)[..]),
            "record k{i} at {}:{} has wrong bytes",
            m.partition,
            m.offset
        );
        let here = (m.partition, m.offset);
        match first_at.entry(i) {
            std::collections::btree_map::Entry::Occupied(e) => repeats.push((i, *e.get(), here)),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(here);
            }
        }
        at.insert(here, i);
    }
    assert!(
        repeats.is_empty() || !idempotent,
        "{} records appear twice although the producer is idempotent; first 20 as (index, \
         first at, again at, acknowledged at): {:?}",
        repeats.len(),
        repeats
            .iter()
            .take(20)
            .map(|&(i, a, b)| (i, a, b, reports.get(i).map(|r| r.as_ref().ok().copied())))
            .collect::<Vec<_>>()
    );
    let lost: Vec<_> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(pos) if at.get(pos) != Some(&i) => Some((i, *pos, at.get(pos).copied())),
            _ => None,
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records are not where they were acknowledged; first (index, \
         (partition, offset), found there): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // Per partition, acknowledged records appear in produce order (offsets grow with index).
    let mut last: BTreeMap<i32, (usize, i64)> = BTreeMap::new();
    for (i, r) in reports.iter().enumerate() {
        if let Ok((p, o)) = r {
            if let Some(&(j, prev)) = last.get(p) {
                assert!(
                    *o > prev,
                    "partition {p}: k{i} acknowledged at {o}, before k{j} at {prev}"
                );
            }
            last.insert(*p, (i, *o));
        }
    }
}

/// Produces `n` keyed records with acks=all in a background thread and kills the leader of
/// partition 0 once a third are acknowledged. Returns the reports and the killed node.
fn produce_through_leader_kill(c: &mut Cluster, topic: &str, n: usize) -> (Vec<Delivery>, i32) {
    let victim = c
        .node_for_leader(topic, 0)
        .expect("partition 0 has a leader");
    let acked = Arc::new(AtomicUsize::new(0));
    let bs = c.bootstrap_live();
    let (t, a) = (topic.to_string(), acked.clone());
    let producer =
        thread::spawn(move || produce_tracked(&bs, &t, "all", FAILOVER_PRODUCER, n, msg, a, true));
    let ok = wait_until(Duration::from_secs(60), || {
        acked.load(Ordering::SeqCst) >= n / 3
    });
    assert!(
        ok,
        "not even a third of {n} records acknowledged before the kill"
    );
    c.kill9(victim);
    let reports = join_all_acked(producer, "2 of 3 nodes are up (min ISR 2)");
    (reports, victim)
}

/// The reports of a producer thread, every record acknowledged although `why`.
fn join_all_acked(producer: thread::JoinHandle<Vec<Delivery>>, why: &str) -> Vec<Delivery> {
    let reports = producer.join().expect("producer thread");
    let failed: Vec<_> = reports.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} records not acknowledged although {why}; first: {:?}",
        failed.len(),
        reports.len(),
        &failed[..failed.len().min(5)]
    );
    reports
}

#[test]

fn acked_writes_survive_leader_kill() {
    let mut c = Cluster::start();
    let topic = unique_name("survive");
    create_replicated(&c, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    let (reports, victim) = produce_through_leader_kill(&mut c, &topic, 6_000);
    c.wait_leaders(&topic, Some(victim), CONVERGE_TIMEOUT);
    let got = read_back(&c, &topic, PARTITIONS, &reports);
    check_acked(&got, &reports, true);
}

#[test]

fn restarted_leader_truncates_and_rejoins() {
    let mut c = Cluster::start();
    let topic = unique_name("rejoin");
    create_replicated(&c, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    let (mut reports, victim) = produce_through_leader_kill(&mut c, &topic, 4_000);
    c.restart(victim);
    if let Err(e) = c.wait_partitions(&topic, Duration::from_secs(60), |p| p.isr.contains(&victim))
    {
        panic!("restarted node {victim} did not rejoin every ISR: {e}");
    }
    // More acknowledged writes while all three are in sync, then lose another node.
    let more = produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        FAILOVER_PRODUCER,
        1_000,
        |i| msg(4_000 + i),
    );
    all_ok(&more);
    reports.extend(more);
    let second = c
        .ids()
        .into_iter()
        .find(|&id| id != victim)
        .expect("another node");
    c.kill9(second);
    c.wait_leaders(&topic, Some(second), CONVERGE_TIMEOUT);
    let got = read_back(&c, &topic, PARTITIONS, &reports);
    check_acked(&got, &reports, true);
}

/// Produces `n` records starting at index `from` with acks=all and reads the topic back.
fn produce_and_read(c: &Cluster, topic: &str, from: usize, n: usize) -> Vec<Delivery> {
    let reports = produce(
        &c.bootstrap_live(),
        topic,
        "all",
        FAILOVER_PRODUCER,
        n,
        |i| msg(from + i),
    );
    all_ok(&reports);
    reports
}

#[test]

fn sigstopped_node_does_not_stop_the_cluster() {
    let mut c = Cluster::start();
    let topic = unique_name("frozen");
    create_replicated(&c, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    let mut reports = Vec::new();

    // Phase 1: freeze a node that does not lead partition 0.
    let leader = c.node_for_leader(&topic, 0).expect("leader");
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.sigstop(follower);
    reports.extend(produce_and_read(&c, &topic, 0, 1_000));
    check_acked(&read_back(&c, &topic, PARTITIONS, &reports), &reports, true);
    c.sigcont(follower);
    c.wait_full_isr(&topic, Duration::from_secs(60));

    // Phase 2: freeze the leader of partition 0.
    let leader = c.node_for_leader(&topic, 0).expect("leader");
    c.sigstop(leader);
    reports.extend(produce_and_read(&c, &topic, 1_000, 1_000));
    check_acked(&read_back(&c, &topic, PARTITIONS, &reports), &reports, true);
    c.sigcont(leader);
    c.wait_full_isr(&topic, Duration::from_secs(60));
    for id in c.ids() {
        c.assert_alive(id);
    }
    reports.extend(produce_and_read(&c, &topic, 2_000, 200));
    check_acked(&read_back(&c, &topic, PARTITIONS, &reports), &reports, true);
}

/// Producer settings under which the first answer is the delivery report (no retries).
const NO_RETRY: &[(&str, &str)] = &[
    ("enable.idempotence", "false"),
    ("message.send.max.retries", "0"),
    ("message.timeout.ms", "30000"),
];

/// Kills a follower of partition 0 of `topic` and waits until it has left the ISR:
/// (leader, killed follower).
fn kill_a_follower(c: &mut Cluster, topic: &str) -> (i32, i32) {
    let leader = c.node_for_leader(topic, 0).expect("leader");
    let gone = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.kill9(gone);
    if let Err(e) = c.wait_partitions(topic, CONVERGE_TIMEOUT, |p| {
        p.leader >= 0 && !p.isr.contains(&gone)
    }) {
        panic!("killed node {gone} stays in the ISR: {e}");
    }
    (leader, gone)
}

#[test]
fn not_enough_replicas_when_isr_too_small() {
    let mut c = Cluster::start();
    let topic = unique_name("min-isr");
    create_replicated(&c, &topic, 1, 3, &[("min.insync.replicas", "3")]);
    let ok = produce(&c.bootstrap_live(), &topic, "all", &[], 10, |i| Outgoing {
        partition: Some(0),
        ..msg(i)
    });
    all_ok(&ok);
    kill_a_follower(&mut c, &topic);
    let refused = produce(&c.bootstrap_live(), &topic, "all", NO_RETRY, 1, |_| {
        Outgoing {
            partition: Some(0),
            ..msg(100)
        }
    });
    match &refused[0] {
        Err(e) if e.contains("NotEnoughReplicas") => {}
        other => panic!(
            "acks=all with 2 in-sync replicas of min 3 must fail with NOT_ENOUGH_REPLICAS \
             (or ..._AFTER_APPEND), got {other:?}"
        ),
    }
    let one = produce(&c.bootstrap_live(), &topic, "1", NO_RETRY, 1, |_| {
        Outgoing {
            partition: Some(0),
            ..msg(101)
        }
    });
    all_ok(&one);
}

/// KIP-966 eligible leader replicas, with real processes: a replica that left an ISR already
/// at min.insync.replicas still holds every committed record (leaders stop the high watermark
/// below the minimum), so when the last ISR member dies it may lead. Without ELRs the
/// partition stays offline until that last member returns.
#[test]
fn eligible_leader_replica_leads_when_the_last_isr_member_dies() {
    let mut c = Cluster::start();
    let topic = unique_name("elr");
    // Two replicas of three nodes: the third keeps the metadata quorum when two are down.
    create_replicated(&c, &topic, 1, 2, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let replicas = c.partitions(&topic).expect("metadata")[0].replicas.clone();
    let leader = c.node_for_leader(&topic, 0).expect("leader");
    let other = *replicas
        .iter()
        .find(|&&r| r != leader)
        .expect("two replicas");
    let reports = produce_and_read(&c, &topic, 0, 200);
    // Followers learn the high watermark from their next fetch responses, and record it in
    // their high-watermark checkpoint once a second: give both time.
    thread::sleep(Duration::from_secs(3));

    // The follower dies: the ISR is the leader alone, below min.insync.replicas 2.
    c.kill9(other);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.isr == vec![leader]) {
        panic!("ISR did not shrink to [{leader}]: {e}");
    }
    // DescribeTopicPartitions (what `kafka-topics.sh --describe` asks) shows it eligible.
    let described = describe_topic_partitions(&c.addr(leader), &topic).expect("described");
    let p = &described.topics[0].partitions[0];
    assert_eq!(
        (p.isr_nodes.clone(), p.eligible_leader_replicas.clone()),
        (vec![BrokerId(leader)], Some(vec![BrokerId(other)])),
        "{described:?}"
    );
    // The leader dies too, and only the follower comes back.
    c.kill9(leader);
    c.restart(other);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.leader == other) {
        panic!(
            "the eligible replica {other} was not elected while {leader} is down: {e}\n{}",
            c.log_tail(other, 30)
        );
    }
    // It serves every acknowledged record.
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
    // Its ISR is itself alone, below the minimum: acks=all is refused, nothing is lost.
    let refused = produce(&c.bootstrap_live(), &topic, "all", NO_RETRY, 1, |_| {
        msg(1_000)
    });
    assert!(
        matches!(&refused[0], Err(e) if e.contains("NotEnoughReplicas")),
        "acks=all with an ISR of one, min 2: {refused:?}"
    );
    // The old leader returns, catches up from the new one and rejoins: writes flow again.
    c.restart(leader);
    c.wait_full_isr(&topic, Duration::from_secs(60));
    let mut all = reports;
    all.extend(produce_and_read(&c, &topic, 200, 100));
    check_acked(&read_back(&c, &topic, 1, &all), &all, true);
}

/// Three voters and a broker-only node (4), in Metadata.
fn cluster_with_broker_only_node() -> (Cluster, i32) {
    let mut c = Cluster::start();
    let four = c.add_broker();
    let joined = wait_until(CONVERGE_TIMEOUT, || {
        c.brokers().is_ok_and(|b| b == [1, 2, 3, four])
    });
    assert!(joined, "node {four} not in Metadata: {:?}", c.brokers());
    (c, four)
}

/// Creates `topic` with the operator's replica lists and waits until every node shows them.
fn create_placed(c: &Cluster, topic: &str, lists: &[Vec<i32>]) {
    let refs: Vec<&[i32]> = lists.iter().map(|l| &l[..]).collect();
    let nt = NewTopic::new(topic, lists.len() as i32, TopicReplication::Variable(&refs));
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let res = block_on(admin(&c.bootstrap_live()).create_topics([&nt], &opts));
    assert!(res.as_ref().is_ok_and(|r| r[0].is_ok()), "{res:?}");
    wait_placed(c, topic, lists);
}

/// Starts node `id` again and waits until Metadata lists it (it registered).
fn restart_and_wait_registered(c: &mut Cluster, id: i32) {
    c.restart(id);
    let back = wait_until(CONVERGE_TIMEOUT, || {
        c.brokers().is_ok_and(|b| b.contains(&id))
    });
    assert!(
        back,
        "node {id} did not register again: {}",
        c.log_tail(id, 30)
    );
}

/// A broker whose disk is replaced comes back with an empty data directory. If it was a
/// partition's last in-sync replica and led again with its empty log, the other replicas would
/// truncate to it and every acknowledged record would be gone. It registers with its new
/// directory's id (`meta.properties`) instead, which takes it out of every ISR: the partition
/// stays offline until its eligible replica returns and leads, and the broker copies the log
/// again before it rejoins the ISR.
#[test]
fn a_broker_back_on_an_empty_disk_does_not_lead_what_it_lost() {
    // A broker-only node holds the copy that is lost, so the metadata quorum keeps its logs.
    let (mut c, four) = cluster_with_broker_only_node();
    let topic = unique_name("wiped");
    create_placed(&c, &topic, &[vec![four, 3]]);
    let reports = produce_and_read(&c, &topic, 0, 500);
    // As in the ELR test: the follower's high-watermark checkpoint covers them.
    thread::sleep(Duration::from_secs(3));

    // The follower dies: node 4 is the ISR alone, node 3 an eligible leader replica.
    c.kill9(3);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.isr == vec![four]) {
        panic!("ISR did not shrink to [{four}]: {e}");
    }
    // Node 4 loses its disk: killed, its directory emptied, started on the empty one.
    c.kill9(four);
    let data = c.dir().join(format!("node-{four}"));
    std::fs::remove_dir_all(&data).expect("empty node 4's data directory");
    restart_and_wait_registered(&mut c, four);
    assert!(
        data.join("meta.properties").exists(),
        "the new directory got an identity"
    );
    // Registered, unfenced, and still not leading the partition it lost: for three seconds
    // the partition is offline.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(ps) = c.partitions(&topic) {
            assert!(
                ps[0].leader != four && !ps[0].isr.contains(&four),
                "node {four} leads or is in sync on an empty disk: {:?}",
                ps[0]
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    // The eligible replica returns and leads with every acknowledged record.
    c.restart(3);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.leader == 3) {
        panic!(
            "node 3 (eligible) was not elected: {e}\n{}",
            c.log_tail(3, 30)
        );
    }
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
    // Node 4 copies the log again and rejoins the ISR; writes flow and read back.
    c.wait_full_isr(&topic, Duration::from_secs(60));
    let mut all = reports;
    all.extend(produce_and_read(&c, &topic, 500, 200));
    check_acked(&read_back(&c, &topic, 1, &all), &all, true);
}

/// A voter whose disk is replaced comes back with an empty metadata log. Had it voted at once,
/// a voter that missed the latest metadata could win with its vote while the only other copy
/// is down, and that copy would then truncate what it held: a created topic vanishes. It
/// waits instead until every voter has answered and it holds what was committed.
#[test]
fn a_voter_back_on_an_empty_disk_cannot_elect_a_leader_that_forgot_a_topic() {
    let mut c = Cluster::start();
    let leader = quorum_row(&c.addr(1), 2)
        .expect("DescribeQuorum")
        .leader_id
        .0;
    let others: Vec<i32> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let (wiped, stale) = (others[0], others[1]);

    // The third voter is frozen: the topic commits on the leader and `wiped` only.
    c.sigstop(stale);
    let topic = unique_name("remembered");
    create_placed(&c, &topic, &[vec![leader]]);
    if let Err(e) = wait_seen_by(&c, &[leader, wiped], &topic, CONVERGE_TIMEOUT, |_| true) {
        panic!("topic not applied by nodes {leader} and {wiped}: {e}");
    }

    // `wiped` loses its disk, the leader dies, and `wiped` comes back empty beside the voter
    // that never heard of the topic: the two are a majority.
    c.kill9(wiped);
    std::fs::remove_dir_all(c.dir().join(format!("node-{wiped}"))).expect("empty its directory");
    c.kill9(leader);
    c.restart_unregistered(wiped);
    let rejoining = || {
        c.log_text(wiped)
            .contains("started with an empty metadata log")
    };
    assert!(
        wait_until(CONVERGE_TIMEOUT, rejoining),
        "node {wiped} did not say it is rejoining:\n{}",
        c.log_tail(wiped, 30)
    );
    let leading_before = c.log_text(stale).matches("active controller").count();
    c.sigcont(stale);
    // Many election timeouts: node {stale} must not win, since only node {wiped} could vote
    // for it.
    thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.log_text(stale).matches("active controller").count(),
        leading_before,
        "node {stale}, which never saw the topic, was elected with the wiped voter's vote:\n{}",
        c.log_tail(stale, 30)
    );
    assert!(!c.log_text(wiped).contains("this voter votes again"));

    // The old leader returns: it is elected with the topic, and `wiped` catches up and votes.
    c.restart(leader);
    c.wait_started(wiped);
    if let Err(e) = wait_seen_by(&c, &c.ids(), &topic, CONVERGE_TIMEOUT, |p| {
        p.leader == leader
    }) {
        panic!("the topic was lost: {e}\n{}", c.log_tail(stale, 30));
    }
    assert!(
        wait_until(CONVERGE_TIMEOUT, || c
            .log_text(wiped)
            .contains("this voter votes again")),
        "node {wiped} never voted again:\n{}",
        c.log_tail(wiped, 30)
    );
}

/// A small tmpfs mounted over one of a node's directories (a partition's, so that log's volume
/// fills while its metadata log has room, as with a log directory on its own disk; or its whole
/// data directory). Unmounted lazily on drop (the broker still holds its files open).
struct SmallVolume {
    path: std::path::PathBuf,
}

impl SmallVolume {
    /// None (after a note) where this process may not mount, as in a container without
    /// CAP_SYS_ADMIN: the test is then skipped.
    fn mount(path: &std::path::Path, bytes: u64) -> Option<SmallVolume> {
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallVolume {
                path: path.to_path_buf(),
            }),
            other => {
                eprintln!("skipped: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {other:?}");
                None
            }
        }
    }

    /// Makes room: the volume grows to `bytes` under the running broker.
    fn grow(&self, bytes: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Waits until nodes `by` all show partition 0 of `topic` satisfying `ok` (a node whose
/// metadata is paused shows a stale view, so it is not asked).
fn wait_seen_by(
    c: &Cluster,
    by: &[i32],
    topic: &str,
    timeout: Duration,
    ok: impl Fn(&tests::cluster::PartitionInfo) -> bool,
) -> Result<(), String> {
    let mut last = String::new();
    let seen = wait_until(timeout, || {
        by.iter()
            .all(|&id| match c.partitions_at(&c.addr(id), topic) {
                Ok(ps) if ps.first().is_some_and(&ok) => true,
                Ok(ps) => {
                    last = format!("node {id}: {ps:?}");
                    false
                }
                Err(e) => {
                    last = e;
                    false
                }
            })
    });
    if seen {
        Ok(())
    } else {
        Err(format!("after {timeout:?}: {last}"))
    }
}

/// Node `full` leads a 1-partition RF=3 topic from a 4 MiB volume: 12 MB of acks=all records
/// fill it a third of the way in. Every record must be acknowledged, with leadership on a
/// replica with room and the full copy out of the ISR, while node `full` keeps running. Then
/// `while_full` runs; then the volume grows, and the same process must rejoin the ISR and lead
/// (it is the preferred replica) with every record, old and new.
fn full_leader_hands_over_and_comes_back(
    c: &Cluster,
    topic: &str,
    full: i32,
    volume: &SmallVolume,
    while_full: impl FnOnce(),
) {
    let others: Vec<i32> = c.ids().into_iter().filter(|&id| id != full).collect();
    let pid = c.pid(full).expect("the full node runs");
    create_placed(c, topic, &[vec![full, others[0], others[1]]]);
    let n = 12_000;
    let acked = Arc::new(AtomicUsize::new(0));
    let (bs, t, a) = (c.bootstrap_live(), topic.to_string(), acked.clone());
    let producer =
        thread::spawn(move || produce_tracked(&bs, &t, "all", FAILOVER_PRODUCER, n, msg, a, true));
    let moved = wait_seen_by(c, &others, topic, Duration::from_secs(60), |p| {
        p.leader >= 0 && p.leader != full && !p.isr.contains(&full)
    });
    if let Err(e) = moved {
        panic!(
            "leadership did not leave the full node {full} ({} acknowledged): {e}\n{}",
            acked.load(Ordering::SeqCst),
            c.log_tail(full, 30)
        );
    }
    let reports = join_all_acked(producer, "two replicas had room");
    assert!(
        c.log_text(full).contains("the disk is full"),
        "node {full} did not say its disk was full:\n{}",
        c.log_tail(full, 30)
    );
    // Still out of the ISR while full, and still the same process.
    if let Err(e) = wait_seen_by(c, &others, topic, Duration::ZERO, |p| {
        !p.isr.contains(&full)
    }) {
        panic!("full copy back in the ISR: {e}");
    }
    assert_eq!(c.pid(full), Some(pid), "node {full} was restarted");
    assert!(c.is_running(full));
    while_full();

    // Room again: the copy catches up and rejoins, and (as the preferred replica) leads.
    volume.grow(256 << 20);
    if let Err(e) = c.wait_partitions(topic, Duration::from_secs(60), |p| {
        p.isr.contains(&full) && p.leader == full
    }) {
        panic!(
            "node {full} did not rejoin the ISR and lead once there was room: {e}\n{}",
            c.log_tail(full, 30)
        );
    }
    assert_eq!(c.pid(full), Some(pid), "node {full} was restarted");
    // It leads with every acknowledged record, and takes new ones.
    let mut all = reports;
    all.extend(produce_and_read(c, topic, n, 500));
    check_acked(&read_back(c, topic, 1, &all), &all, true);
    assert_eq!(c.node_for_leader(topic, 0), Some(full));
}

/// A leader whose log's volume fills (its metadata log has room elsewhere, as with a log
/// directory on its own disk) hands its leadership to an in-sync replica with room, so
/// producers go on with acks=all and lose nothing; the full copy leaves the ISR but the broker
/// keeps running, and once there is room it catches up, rejoins and leads again, with no
/// restart.
#[test]
fn a_full_log_volume_moves_leadership_and_the_copy_rejoins_once_there_is_room() {
    const FULL: i32 = 2;
    let c = Cluster::start_with(&[("leader-imbalance-check-interval-ms", "1000")]);
    let topic = unique_name("full");
    let mount_point = c.dir().join(format!("node-{FULL}/{topic}-0"));
    let Some(volume) = SmallVolume::mount(&mount_point, 4 << 20) else {
        return;
    };
    full_leader_hands_over_and_comes_back(&c, &topic, FULL, &volume, || {});
}

/// The same with the broker's whole data directory on the small volume, metadata log included:
/// a metadata-log write refused for want of space pauses the node's quorum role (it neither
/// votes nor fetches; the others fence it) rather than stop the broker, and it resumes once
/// there is room. Kafka stops the broker.
#[test]
fn a_full_data_directory_pauses_the_broker_and_it_resumes_once_there_is_room() {
    const FULL: i32 = 2;
    let mut c = Cluster::start_with(&[("leader-imbalance-check-interval-ms", "1000")]);
    // Node 2's directory moves onto the volume while it is down.
    c.kill9(FULL);
    let data = c.dir().join(format!("node-{FULL}"));
    let saved = c.dir().join(format!("node-{FULL}-saved"));
    std::fs::rename(&data, &saved).expect("move node 2's directory aside");
    let Some(volume) = SmallVolume::mount(&data, 4 << 20) else {
        return;
    };
    let copied = Command::new("cp")
        .arg("-a")
        .arg(saved.join("."))
        .arg(&data)
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy node 2's directory onto the volume");
    restart_and_wait_registered(&mut c, FULL);
    let topic = unique_name("fulldir");
    let ballast = data.join("ballast");
    full_leader_hands_over_and_comes_back(&c, &topic, FULL, &volume, || {
        // Something else takes the last bytes, so the metadata log cannot grow either; topics
        // created elsewhere (on nodes 1 and 3) still put records in every node's metadata log.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", ballast.display()))
            .stderr(Stdio::null())
            .status();
        let names: Vec<String> = (0..40).map(|i| unique_name(&format!("meta{i}"))).collect();
        let admin = admin(&c.bootstrap_live());
        let opts = rdkafka::admin::AdminOptions::new()
            .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
        for name in &names {
            let nt = NewTopic::new(name, 1, TopicReplication::Variable(&[&[1, 3]]));
            let res = block_on(admin.create_topics([&nt], &opts));
            assert!(res.as_ref().is_ok_and(|r| r[0].is_ok()), "{res:?}");
        }
        let paused = || c.log_text(FULL).contains("the metadata log's disk is full");
        let stopped = || c.log_text(FULL).contains("metadata quorum failed");
        wait_until(CONVERGE_TIMEOUT, || paused() || stopped());
        assert!(
            !stopped(),
            "node {FULL} stopped on a full disk:\n{}",
            c.log_tail(FULL, 30)
        );
        assert!(
            paused(),
            "node {FULL}'s metadata log never ran out of room:\n{}",
            c.log_tail(FULL, 30)
        );
        // Paused, not stopped.
        thread::sleep(Duration::from_secs(2));
        assert!(c.is_running(FULL), "node {FULL} stopped on a full disk");
        std::fs::remove_file(&ballast).expect("remove the ballast");
    });
    assert!(
        c.log_text(FULL).contains("the metadata log has room again"),
        "node {FULL} did not say its quorum role resumed:\n{}",
        c.log_tail(FULL, 30)
    );
}

/// A second process started with a node id in use (a copied config, two containers on one
/// identity), on its own data directory: it registers, and the first sees its registration
/// replaced from another directory and stops with an error naming the conflict, rather than
/// take the id back (each registration would take the other's copies out of every ISR, and
/// leaders could count one process's fetches as the other's). The second holds nothing yet,
/// so it leaves every ISR as a new disk does; no acknowledged record is lost.
#[test]
fn a_second_process_with_a_node_id_in_use_stops_the_first_and_loses_nothing() {
    let (mut c, four) = cluster_with_broker_only_node();
    let topic = unique_name("twice");
    create_placed(&c, &topic, &[vec![four, 1, 2]]);
    let reports = produce_and_read(&c, &topic, 0, 300);

    // The same --node-id, another directory and port.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log_path = c.dir().join("second-node-4.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let second = Command::new(tests::broker_bin())
        .args(["--node-id", &four.to_string(), "--process-roles", "broker"])
        .args(["--voters", &c.voters()])
        .args(["--listen", &format!("127.0.0.1:{}", free_ports(1)[0])])
        .arg("--data-dir")
        .arg(c.dir().join("second-node-4"))
        .args([
            "--default-replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log handle")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start the second process");
    let _second = Reaped(second);

    let mut status = None;
    let stopped = wait_until(CONVERGE_TIMEOUT, || {
        status = c.try_reap(four);
        status.is_some()
    });
    let second_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        stopped,
        "the first process with node id {four} still runs
{}
second:
{}",
        c.log_tail(four, 30),
        second_log()
    );
    assert!(!status.expect("reaped").success(), "stopped with an error");
    assert!(
        c.log_text(four)
            .contains(&format!("two processes share --node-id {four}")),
        "{}",
        c.log_tail(four, 30)
    );
    // The second keeps the id; its empty copy left the ISR, so another replica leads.
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| {
        p.leader >= 0 && p.leader != four
    }) {
        panic!(
            "no leader but node {four}'s copies: {e}
second:
{}",
            second_log()
        );
    }
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
    let mut all = reports;
    all.extend(produce_and_read(&c, &topic, 300, 100));
    check_acked(&read_back(&c, &topic, 1, &all), &all, true);
}

/// Swapped volumes: a node started on another node's data directory refuses it, naming both,
/// before it opens a log, and the directory's owner still starts on it afterwards.
#[test]
fn a_node_refuses_another_nodes_data_directory() {
    let mut c = Cluster::start();
    let topic = unique_name("owned");
    create_replicated(&c, &topic, 1, 3, &[]);
    let reports = produce_and_read(&c, &topic, 0, 100);
    let two = c.dir().join("node-2");
    let three = c.dir().join("node-3");
    c.kill9(2);
    c.kill9(3);
    // Node 3's files in node 2's place: what a swapped volume mount does.
    std::fs::rename(&two, c.dir().join("node-2.own")).expect("move node 2's directory");
    std::fs::rename(&three, &two).expect("move node 3's directory");
    let out = std::process::Command::new(broker_bin())
        .args([
            "--node-id",
            "2",
            "--voters",
            &c.voters(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--controller-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&two)
        .output()
        .expect("run the broker");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "node 2 started on node 3's directory:\n{text}"
    );
    assert!(
        text.contains("belongs to node 3") && text.contains("this is node 2"),
        "the refusal names both nodes:\n{text}"
    );
    // Put back, both start on their own directories and every record is still there.
    std::fs::rename(&two, &three).expect("move node 3's directory back");
    std::fs::rename(c.dir().join("node-2.own"), &two).expect("move node 2's directory back");
    c.restart(2);
    c.restart(3);
    c.wait_full_isr(&topic, Duration::from_secs(60));
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
}

/// The cluster-level min.insync.replicas lives in the metadata log, as in Kafka with ELRs:
/// `kafka-configs --entity-type brokers --entity-default` changes it for every broker and the
/// controller at once, and the leaders apply it to acks=all.
#[test]
fn cluster_min_insync_replicas_is_one_dynamic_value() {
    let mut c = Cluster::start();
    let topic = unique_name("cluster-min-isr");
    create_replicated(&c, &topic, 1, 3, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    for id in c.ids() {
        let configs = describe_cluster_configs(&c.addr(id)).expect("described");
        assert_eq!(
            configs,
            vec![("min.insync.replicas".to_string(), "2".to_string(), 3)],
            "node {id}: the controller wrote its flag's value to the log"
        );
    }
    let (leader, gone) = kill_a_follower(&mut c, &topic);
    let to_p0 = |i| Outgoing {
        partition: Some(0),
        ..msg(i)
    };
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        NO_RETRY,
        5,
        to_p0,
    ));

    // Refused, each with its error: removing it, another config, a per-broker value.
    let any = c.addr(leader);
    let refusals = [
        (("", "min.insync.replicas", 1, None), 40), // INVALID_CONFIG
        (("", "retention.ms", 0, Some("1000")), 40),
        (("1", "min.insync.replicas", 0, Some("3")), 42), // INVALID_REQUEST
        (("", "min.insync.replicas", 0, Some("0")), 40),
    ];
    for ((broker, name, op, value), want) in refusals {
        let got = alter_broker_config(&any, broker, name, op, value).expect("answered");
        assert_eq!(got, want, "{broker:?} {name} op {op} {value:?}");
    }
    // Raised to 3 through one node: every node applies it, and acks=all is refused with an
    // ISR of 2.
    assert_eq!(
        alter_broker_config(&any, "", "min.insync.replicas", 0, Some("3")),
        Ok(0)
    );
    let live: Vec<i32> = c.ids().into_iter().filter(|&id| id != gone).collect();
    wait_cluster_min_isr(&c, &live, "3");
    let refused = produce(&c.bootstrap_live(), &topic, "all", NO_RETRY, 1, |_| {
        to_p0(100)
    });
    assert!(
        matches!(&refused[0], Err(e) if e.contains("NotEnoughReplicas")),
        "acks=all with an ISR of 2, cluster min 3: {refused:?}"
    );
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "1",
        NO_RETRY,
        1,
        |_| to_p0(101),
    ));
    // Back to 2: acks=all is acknowledged again.
    assert_eq!(
        alter_broker_config(&any, "", "min.insync.replicas", 0, Some("2")),
        Ok(0)
    );
    wait_cluster_min_isr(&c, &live, "2");
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        NO_RETRY,
        5,
        |i| to_p0(200 + i),
    ));
    // A restarted node reads the log's value, not its flag.
    c.restart(gone);
    wait_cluster_min_isr(&c, &c.ids(), "2");
}

/// DescribeConfigs v1 of the default broker resource (empty name): (name, value, source).
fn describe_cluster_configs(addr: &str) -> Result<Vec<(String, String, i8)>, String> {
    describe_broker_configs(addr, "")
}

/// DescribeConfigs v1 of a broker resource (`broker` "" is the cluster default): (name,
/// value, source) of each config.
fn describe_broker_configs(addr: &str, broker: &str) -> Result<Vec<(String, String, i8)>, String> {
    describe_configs(addr, 4, broker)
}

/// DescribeConfigs v1 of one resource: (name, value, source) of each config.
fn describe_configs(
    addr: &str,
    resource_type: i8,
    resource: &str,
) -> Result<Vec<(String, String, i8)>, String> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_configuration_keys(None)]);
    let resp: DescribeConfigsResponse = raw_call(addr, ApiKey::DescribeConfigs, 1, &req)?;
    let r = resp.results.first().ok_or("no result")?;
    if r.error_code != 0 {
        return Err(format!("error {}", r.error_code));
    }
    Ok(r.configs
        .iter()
        .map(|e| {
            let value = e.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (e.name.to_string(), value, e.config_source)
        })
        .collect())
}

/// IncrementalAlterConfigs v0 of one broker config (`broker` "" is the cluster default):
/// the resource's error code.
fn alter_broker_config(
    addr: &str,
    broker: &str,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<i16, String> {
    alter_config(addr, 4, broker, name, op, value)
}

/// IncrementalAlterConfigs v0 of one config of one resource (type 2 a topic, 4 a broker): the
/// resource's error code.
fn alter_config(
    addr: &str,
    resource_type: i8,
    resource: &str,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<i16, String> {
    let config = AlterableConfig::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_config_operation(op)
        .with_value(value.map(|v| StrBytes::from_string(v.to_string())));
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(resource.to_string()))
            .with_configs(vec![config]),
    ]);
    let resp: IncrementalAlterConfigsResponse =
        raw_call(addr, ApiKey::IncrementalAlterConfigs, 0, &req)?;
    Ok(resp.responses.first().ok_or("no response")?.error_code)
}

/// Waits until every node in `ids` reports the cluster-level min.insync.replicas `value`.
fn wait_cluster_min_isr(c: &Cluster, ids: &[i32], value: &str) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    for &id in ids {
        loop {
            let got = describe_cluster_configs(&c.addr(id));
            let ok = got.as_ref().is_ok_and(|cs| {
                cs.iter()
                    .any(|(n, v, _)| n == "min.insync.replicas" && v == value)
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id}: cluster min.insync.replicas is not {value}: {got:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One request of API `key` at `version` over a fresh plain socket: its decoded response.
fn raw_call<Req: Encodable, Resp: Decodable>(
    addr: &str,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String> {
    let corr = 4242;
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(corr)
        .with_client_id(Some(StrBytes::from_static_str("cluster-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .map_err(|e| e.to_string())?;
    req.encode(&mut body, version).map_err(|e| e.to_string())?;
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(&(body.len() as i32).to_be_bytes())
        .and_then(|_| s.write_all(&body))
        .map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).map_err(|e| e.to_string())?;
    let mut resp = Bytes::from(resp);
    let got = ResponseHeader::decode(&mut resp, key.response_header_version(version))
        .map_err(|e| e.to_string())?;
    if got.correlation_id != corr {
        let id = got.correlation_id;
        return Err(format!("correlation id {id}, sent {corr}"));
    }
    Resp::decode(&mut resp, version).map_err(|e| e.to_string())
}

/// DescribeTopicPartitions v0 for `topic` over a plain socket.
fn describe_topic_partitions(
    addr: &str,
    topic: &str,
) -> Result<DescribeTopicPartitionsResponse, String> {
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![TopicRequest::default().with_name(name)])
        .with_response_partition_limit(100);
    raw_call(addr, ApiKey::DescribeTopicPartitions, 0, &req)
}

/// FindCoordinator v1 (group) over a plain socket: the coordinator's node id.
fn find_group_coordinator(addr: &str, group: &str) -> Result<i32, String> {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let r: FindCoordinatorResponse = raw_call(addr, ApiKey::FindCoordinator, 1, &req)?;
    if r.error_code != 0 {
        return Err(format!("FindCoordinator error {}", r.error_code));
    }
    Ok(r.node_id.0)
}

/// Finds `group`'s coordinator (asking node 1) and kills it with SIGKILL; returns its id.
fn kill_group_coordinator(c: &mut Cluster, group: &str) -> i32 {
    let mut coordinator = None;
    let found = wait_until(CONVERGE_TIMEOUT, || {
        coordinator = find_group_coordinator(&c.addr(1), group).ok();
        coordinator.is_some()
    });
    assert!(found, "FindCoordinator for {group} kept failing");
    let coordinator = coordinator.unwrap();
    c.kill9(coordinator);
    eprintln!("killed node {coordinator}, the coordinator of {group}");
    coordinator
}

fn group_consumer(c: &Cluster, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = client_config(&c.bootstrap_live())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("socket.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("group consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Polls until `n` records arrived (or panics after CONSUME_TIMEOUT); returns (partition, offset).
fn poll_n(consumer: &BaseConsumer, n: usize) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records consumed in {CONSUME_TIMEOUT:?}",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((m.partition(), m.offset()));
        }
    }
    out
}

#[test]

fn consumer_group_survives_coordinator_loss() {
    let mut c = Cluster::start();
    let topic = unique_name("group-failover");
    let partitions = 3;
    create_replicated(&c, &topic, partitions, 3, &[("min.insync.replicas", "2")]);
    let total = 600;
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        &[],
        total,
        msg,
    ));
    let group = unique_name("g");

    // Consume and commit 300, then read 100 more without committing.
    let first = group_consumer(&c, &group, &topic);
    let committed_part = poll_n(&first, 300);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let committed: BTreeMap<i32, i64> = first
        .committed(Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let uncommitted = poll_n(&first, 100);
    drop(first);
    assert!(!committed_part.is_empty() && !committed.is_empty());

    kill_group_coordinator(&mut c, &group);

    // A new member of the group starts exactly at the committed offsets.
    let second = group_consumer(&c, &group, &topic);
    let rest: usize = total - committed.values().sum::<i64>() as usize;
    let got = poll_n(&second, rest);
    let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &got {
        first_seen.entry(*p).or_insert(*o);
    }
    for (p, o) in &first_seen {
        assert_eq!(
            Some(o),
            committed.get(p).or(Some(&0)),
            "partition {p}: the group resumed at {o}, committed {:?}",
            committed.get(p)
        );
    }
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "a record was delivered twice");
    // Nothing committed is read again; what was read but not committed is (at least once).
    for (p, o) in &got {
        assert!(
            *o >= committed.get(p).copied().unwrap_or(0),
            "{p}:{o} was committed and is read again"
        );
    }
    let missing: Vec<_> = uncommitted
        .iter()
        .filter(|r| !distinct.contains(r))
        .collect();
    assert!(
        missing.is_empty(),
        "uncommitted records never redelivered: {missing:?}"
    );
}

/// kafkajs (`tests/node/failover.js`) through `kill -9` of its group's coordinator: its
/// idempotent producer finds the new leaders and every send it was told succeeded is there,
/// and its consumer finds the new coordinator, reads every acknowledged message and commits.
#[test]
fn kafkajs_survives_the_loss_of_its_coordinator() {
    let Some(dir) = kafkajs_dir() else {
        return;
    };
    let mut node = Command::new("node");
    node.arg(dir.join("failover.js")).current_dir(&dir);
    through_coordinator_kill("tests/node/failover.js", node);
}

/// The same with kafka-python (`tests/python/failover.py`), its own protocol implementation.
#[test]
fn kafka_python_survives_the_loss_of_its_coordinator() {
    let Some(python) = python_with("kafka") else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/failover.py");
    let mut cmd = Command::new(python);
    cmd.arg(script);
    through_coordinator_kill("tests/python/failover.py", cmd);
}

/// Runs `client BOOTSTRAP TOPIC GROUP N` against a fresh cluster and a topic of 3 partitions
/// (RF 3, min.insync.replicas 2). The client prints a line starting with READY once its group
/// has read and committed N messages, then waits for a line on stdin; in between, the group's
/// coordinator is killed. The client must then exit 0 (its own checks passed).
fn through_coordinator_kill(name: &str, mut client: Command) {
    let mut c = Cluster::start();
    let topic = unique_name("client-failover");
    let group = unique_name("client-g");
    create_replicated(&c, &topic, 3, 3, &[("min.insync.replicas", "2")]);
    let mut child = client
        .args([c.bootstrap().as_str(), &topic, &group, "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut printed = Vec::new();
    let ready = loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let ready = line.starts_with("READY");
                printed.push(line);
                if ready {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{name} never printed READY:\n{}\n{}",
            printed.join("\n"),
            stderr.join().unwrap_or_default()
        );
    }
    let coordinator = kill_group_coordinator(&mut c, &group);
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"go\n")
        .unwrap_or_else(|e| panic!("tell {name} the coordinator is gone: {e}"));
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    printed.extend(lines.try_iter());
    let stderr = stderr.join().unwrap_or_default();
    eprintln!("{}", printed.join("\n"));
    if std::env::var_os("KAFKAJS_LOG").is_some() {
        eprintln!("{stderr}");
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{name} failed ({status:?}):\n{stderr}\nnode {coordinator}'s log:\n{}",
        c.log_tail(coordinator, 40)
    );
}

/// Runs `tests/python/elect_leaders.py` (confluent-kafka's elect_leaders and checks of its
/// answers) for partition 0 of `topic`, in `mode` (preferred or unclean).
fn elect_leaders_script(python: &str, c: &Cluster, topic: &str, mode: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/elect_leaders.py");
    let bootstrap = c.bootstrap_live();
    let out = run(
        Command::new(python)
            .arg(&script)
            .args([bootstrap.as_str(), topic, "0", mode]),
        None,
        Duration::from_secs(180),
    );
    assert_success(&format!("tests/python/elect_leaders.py {mode}"), &out);
}

/// kafka-leader-election.sh's job through confluent-kafka's AdminClient.elect_leaders: with
/// automatic rebalancing off, a restarted preferred replica stays a follower until an operator
/// asks; then it leads, and the other answers are Kafka's (`tests/python/elect_leaders.py`).
#[test]
fn operator_elections_with_confluent_kafka() {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let mut c = Cluster::start_with(&[("auto-leader-rebalance-enable", "false")]);
    let topic = unique_name("elect");
    create_replicated(&c, &topic, 3, 3, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let preferred = c.partitions(&topic).expect("metadata")[0].replicas[0];
    c.kill9(preferred);
    c.wait_leaders(&topic, Some(preferred), CONVERGE_TIMEOUT);
    c.restart(preferred);
    c.wait_full_isr(&topic, Duration::from_secs(60));
    let p0 = c.partitions(&topic).expect("metadata")[0].clone();
    assert_ne!(
        p0.leader, preferred,
        "leadership moved back without being asked: {p0:?}"
    );

    elect_leaders_script(&python, &c, &topic, "preferred");
    // The preferred replica leads, as every node's metadata says.
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| {
        p.id != 0 || p.leader == preferred
    }) {
        panic!("partition 0 is not led by its preferred replica {preferred}: {e}");
    }
}

/// The operator's way back for a partition whose every in-sync replica is gone:
/// `--election-type unclean` (confluent-kafka's elect_leaders) elects a live replica outside the
/// ISR, although unclean election is off; until then the partition stays offline. The old
/// leader, whose records DeleteRecords had removed, comes back past the new leader's log end:
/// its log starts over there, and it rejoins the ISR (it used to stop at its own log start and
/// be told to truncate again at every fetch).
#[test]
fn operator_unclean_election_brings_an_offline_partition_back() {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let mut c = Cluster::start_with(&[
        ("min-insync-replicas", "1"),
        ("replica-lag-time-max-ms", "1000"),
    ]);
    let topic = unique_name("unclean");
    create_replicated(&c, &topic, 1, 2, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let p = c.partitions(&topic).expect("metadata")[0].clone();
    let (leader, follower) = (
        p.leader,
        *p.replicas.iter().find(|&&r| r != p.leader).unwrap(),
    );
    // The follower freezes and leaves the ISR; then the only in-sync replica dies.
    c.sigstop(follower);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.isr == vec![leader]) {
        panic!("frozen follower {follower} did not leave the ISR: {e}");
    }
    all_ok(&produce(&c.bootstrap_live(), &topic, "all", &[], 10, msg));
    assert_eq!(
        delete_records(&c, &topic, -1),
        Ok(10),
        "deleted to the high watermark"
    );
    c.kill9(leader);
    c.sigcont(follower);
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| p.leader == -1) {
        panic!("partition not offline after its last ISR member died: {e}");
    }
    // Offline stays offline: the follower may lack acknowledged records.
    thread::sleep(Duration::from_secs(3));
    let p = c.partitions(&topic).expect("metadata")[0].clone();
    assert_eq!((p.leader, p.isr.clone()), (-1, vec![leader]), "{p:?}");

    elect_leaders_script(&python, &c, &topic, "unclean");
    if let Err(e) = c.wait_partitions(&topic, CONVERGE_TIMEOUT, |p| {
        p.leader == follower && p.isr == vec![follower]
    }) {
        panic!("unclean election did not make {follower} the leader: {e}");
    }
    // The old leader's log starts at 10; the new leader's ends at 0.
    c.restart(leader);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    // Writable again through the new leader (min.insync.replicas 1).
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        FAILOVER_PRODUCER,
        10,
        |i| msg(100 + i),
    ));
}

/// One partition's AlterPartitionReassignments answer: (error code, message).
type ReassignAnswer = (i16, Option<String>);

/// AlterPartitionReassignments for partition 0 of `topic` through the node at `addr`: target
/// replicas (`None`: cancel), at v1 with `allow_rf_change` when given, else at v0. Retried
/// (bounded) while no controller answers, as a client retries NOT_CONTROLLER.
fn alter_reassignment(
    addr: &str,
    topic: &str,
    target: Option<&[i32]>,
    allow_rf_change: Option<bool>,
) -> ReassignAnswer {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    };
    let partition = ReassignablePartition::default()
        .with_partition_index(0)
        .with_replicas(target.map(|t| t.iter().map(|&b| BrokerId(b)).collect()));
    let version = i16::from(allow_rf_change.is_some());
    let req = AlterPartitionReassignmentsRequest::default()
        .with_allow_replication_factor_change(allow_rf_change.unwrap_or(true))
        .with_topics(vec![ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![partition])]);
    let mut last = String::new();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while Instant::now() < deadline {
        let r: Result<AlterPartitionReassignmentsResponse, String> =
            raw_call(addr, ApiKey::AlterPartitionReassignments, version, &req);
        match r {
            Ok(r) if r.error_code == 41 => last = format!("{r:?}"),
            Ok(r) => {
                let rows: Vec<_> = r.responses.iter().flat_map(|t| &t.partitions).collect();
                assert_eq!(rows.len(), 1, "one row for one partition: {r:?}");
                let message = rows[0].error_message.as_ref().map(|m| m.to_string());
                if rows[0].error_code != 41 {
                    return (rows[0].error_code, message);
                }
                last = format!("{r:?}");
            }
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("AlterPartitionReassignments {topic} {target:?} via {addr}: no answer: {last}");
}

/// Partition 0 of `topic`'s reassignment in progress as ListPartitionReassignments at `addr`
/// lists it: (replicas, adding, removing). Asks for every partition (topics null), or names
/// the topic.
type Ongoing = (Vec<i32>, Vec<i32>, Vec<i32>);

fn listed_reassignment(addr: &str, topic: &str, named: bool) -> Result<Option<Ongoing>, String> {
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    use kafka_protocol::messages::{
        ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    };
    let topics = named.then(|| {
        vec![ListPartitionReassignmentsTopics::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![0])]
    });
    let req = ListPartitionReassignmentsRequest::default().with_topics(topics);
    let r: ListPartitionReassignmentsResponse =
        raw_call(addr, ApiKey::ListPartitionReassignments, 0, &req)?;
    if r.error_code != 0 {
        return Err(format!("ListPartitionReassignments error {}", r.error_code));
    }
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    let found = r.topics.iter().filter(|t| t.name.0.as_str() == topic);
    let rows: Vec<Ongoing> = found
        .flat_map(|t| &t.partitions)
        .map(|p| {
            assert_eq!(p.partition_index, 0, "{r:?}");
            (
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            )
        })
        .collect();
    match rows.len() {
        0 | 1 => Ok(rows.into_iter().next()),
        _ => Err(format!("partition 0 listed twice: {r:?}")),
    }
}

/// Waits until no live node lists a reassignment of `topic` and every live node's Metadata
/// shows partition 0 with exactly `replicas`, all in sync, led by a member satisfying
/// `leader_ok`.
fn wait_reassigned(c: &Cluster, topic: &str, replicas: &[i32], leader_ok: impl Fn(i32) -> bool) {
    let mut last = String::new();
    let settled = wait_until(CONVERGE_TIMEOUT, || {
        let live = c.bootstrap_live();
        for addr in live.split(',').filter(|a| !a.is_empty()) {
            for named in [false, true] {
                match listed_reassignment(addr, topic, named) {
                    Ok(None) => {}
                    other => {
                        last = format!("{addr} lists {other:?}");
                        return false;
                    }
                }
            }
        }
        let shown = c.wait_partitions(topic, Duration::ZERO, |p| {
            let mut isr = p.isr.clone();
            let mut want = replicas.to_vec();
            isr.sort_unstable();
            want.sort_unstable();
            p.replicas == replicas && isr == want && leader_ok(p.leader)
        });
        match shown {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(settled, "{topic}: not reassigned to {replicas:?}: {last}");
}

/// KIP-455 reassignments through AlterPartitionReassignments / ListPartitionReassignments on
/// the wire: a one-replica partition moves to all three brokers (a different one first),
/// catches up, and loses nothing when its original broker is then killed; it then shrinks to
/// one broker that was not leading, which takes over. A target with an unregistered broker,
/// a cancellation with nothing in progress, and (v1) a replication factor change without leave
/// are refused with Kafka's errors; a move to a frozen broker stays listed as adding it until
/// cancelled, which restores the replicas; a move onto a frozen in-sync broker alone waits for
/// it to be heard from again.
#[test]
fn reassignment_moves_replicas_and_keeps_every_record() {
    let mut c = Cluster::start();
    let topic = unique_name("reassign");
    create_replicated(&c, &topic, 1, 1, &[("min.insync.replicas", "1")]);
    let original = c.partitions(&topic).expect("metadata")[0].replicas[0];
    let reports = produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        FAILOVER_PRODUCER,
        2_000,
        msg,
    );
    all_ok(&reports);

    // Refusals: an unregistered broker, nothing to cancel, an unknown topic, and at v1 without
    // leave to change the replication factor.
    let via = c.addr(original);
    let (code, message) = alter_reassignment(&via, &topic, Some(&[original, 99]), None);
    assert_eq!(
        code, 39,
        "INVALID_REPLICA_ASSIGNMENT for broker 99: {message:?}"
    );
    let (code, _) = alter_reassignment(&via, &topic, None, None);
    assert_eq!(code, 85, "NO_REASSIGNMENT_IN_PROGRESS");
    let (code, _) = alter_reassignment(&via, "no-such-topic", Some(&[original]), None);
    assert_eq!(code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let others: Vec<i32> = c.ids().into_iter().filter(|&id| id != original).collect();
    let grown = [others[0], original, others[1]];
    let (code, _) = alter_reassignment(&via, &topic, Some(&grown), Some(false));
    assert_eq!(
        code, 38,
        "INVALID_REPLICATION_FACTOR without leave to change it"
    );

    // Grow to three replicas, another broker first; asked through a broker that is not a
    // replica, whose List and Metadata show the move at once.
    let via = c.addr(others[1]);
    let answer = alter_reassignment(&via, &topic, Some(&grown), Some(true));
    assert_eq!(answer, (0, None));
    let now = listed_reassignment(&via, &topic, false).expect("List");
    if let Some((replicas, mut adding, removing)) = now {
        adding.sort_unstable();
        let mut new = others.clone();
        new.sort_unstable();
        assert_eq!((replicas, adding, removing), (grown.to_vec(), new, vec![]));
    }
    wait_reassigned(&c, &topic, &grown, |l| l >= 0);

    // Every replica holds every record: the original broker's death loses none.
    c.kill9(original);
    c.wait_leaders(&topic, Some(original), CONVERGE_TIMEOUT);
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
    c.restart(original);
    c.wait_full_isr(&topic, Duration::from_secs(60));

    // Shrink to one broker that does not lead: leadership moves there, nothing is lost.
    let leader = c.node_for_leader(&topic, 0).expect("leader");
    let only = *grown.iter().find(|&&r| r != leader).unwrap();
    let answer = alter_reassignment(&c.addr(leader), &topic, Some(&[only]), None);
    assert_eq!(answer, (0, None));
    wait_reassigned(&c, &topic, &[only], |l| l == only);
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
    // The removed replicas deleted their copies (Kafka's StopReplica with delete).
    for removed in grown.iter().filter(|&&r| r != only) {
        let dir = c
            .dir()
            .join(format!("node-{removed}"))
            .join(format!("{topic}-0"));
        let mut bytes = u64::MAX;
        let gone = wait_until(CONVERGE_TIMEOUT, || {
            bytes = segment_bytes(&dir);
            bytes == 0
        });
        assert!(
            gone,
            "node {removed} keeps {bytes} bytes of segments in {dir:?}"
        );
    }

    // A move to a frozen broker cannot finish: listed as adding it until cancelled.
    let frozen = *c.ids().iter().find(|&&id| id != only).unwrap();
    c.sigstop(frozen);
    let via = c.addr(only);
    let answer = alter_reassignment(&via, &topic, Some(&[only, frozen]), None);
    assert_eq!(answer, (0, None));
    let listed = listed_reassignment(&via, &topic, true).expect("List");
    assert_eq!(listed, Some((vec![only, frozen], vec![frozen], vec![])));
    thread::sleep(Duration::from_secs(1));
    let listed = listed_reassignment(&via, &topic, false).expect("List");
    assert_eq!(listed, Some((vec![only, frozen], vec![frozen], vec![])));
    let answer = alter_reassignment(&via, &topic, None, None);
    assert_eq!(answer, (0, None));
    assert_eq!(listed_reassignment(&via, &topic, true), Ok(None));
    wait_reassigned(&c, &topic, &[only], |l| l == only);
    c.sigcont(frozen);
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);

    // A move onto a frozen broker that is still in the ISR waits until that broker's own
    // process is heard from again; meanwhile the replica it would remove keeps its copy. (A
    // stopped or dead process stays in the ISR for a while, and one restarted on an empty
    // disk stays there until it registers again: completing then could delete the only copy.)
    let controller = quorum_row(&via, 2).expect("DescribeQuorum").leader_id.0;
    let target = *c
        .ids()
        .iter()
        .find(|&&id| id != only && id != controller)
        .expect("a broker that neither leads the partition nor the quorum");
    let answer = alter_reassignment(&via, &topic, Some(&[only, target]), None);
    assert_eq!(answer, (0, None));
    wait_reassigned(&c, &topic, &[only, target], |l| l == only);
    c.sigstop(target);
    let answer = alter_reassignment(&via, &topic, Some(&[target]), None);
    assert_eq!(answer, (0, None));
    thread::sleep(Duration::from_secs(1));
    let listed = listed_reassignment(&via, &topic, true).expect("List");
    assert_eq!(listed, Some((vec![target, only], vec![], vec![only])));
    c.sigcont(target);
    wait_reassigned(&c, &topic, &[target], |l| l == target);
    check_acked(&read_back(&c, &topic, 1, &reports), &reports, true);
}

const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;

/// Sets (or with `None` deletes) replication throttle rate `key` on every broker, through the
/// node at `via`, and waits until each node shows its own value (DescribeConfigs of itself:
/// the value and DYNAMIC_BROKER_CONFIG, or Kafka's unlimited default once deleted).
fn set_rate_everywhere(c: &Cluster, via: &str, key: &str, rate: Option<u64>) {
    let value = rate.map(|r| r.to_string());
    for id in c.ids() {
        let op = if value.is_some() { OP_SET } else { OP_DELETE };
        let got = alter_config(via, 4, &id.to_string(), key, op, value.as_deref());
        assert_eq!(got, Ok(0), "{key} on broker {id}");
    }
    let want = match &value {
        Some(v) => (v.clone(), 2),
        None => (i64::MAX.to_string(), 5),
    };
    for id in c.ids() {
        let mut last = None;
        let shown = wait_until(CONVERGE_TIMEOUT, || {
            let configs = describe_broker_configs(&c.addr(id), &id.to_string());
            let found = configs.ok().and_then(|cs| {
                cs.into_iter()
                    .find(|(n, _, _)| n == key)
                    .map(|(_, v, source)| (v, source))
            });
            let ok = found.as_ref() == Some(&want);
            last = found;
            ok
        });
        assert!(shown, "node {id}: {key} is {last:?}, not {want:?}");
    }
}

/// Asserts that node `node`'s copy of partition 0 grew by no more than a throttle of `rate`
/// bytes/s allows since `since` (one second's burst and one fetch past the limit on top), and
/// returns its size now.
fn growth_within_rate(dir: &std::path::Path, from_bytes: u64, since: Instant, rate: u64) -> u64 {
    let now_bytes = segment_bytes(dir);
    let elapsed = since.elapsed().as_secs_f64();
    let allowed = ((elapsed + 2.0) * rate as f64) as u64 + SIZE as u64 * 1_100;
    assert!(
        now_bytes.saturating_sub(from_bytes) <= allowed,
        "{dir:?} grew by {} bytes in {elapsed:.1} s under a throttle of {rate} B/s (at most {allowed})",
        now_bytes.saturating_sub(from_bytes)
    );
    now_bytes
}

/// Replication throttles, set the way `kafka-reassign-partitions --throttle` sets them: per
/// broker `leader.replication.throttled.rate` and `follower.replication.throttled.rate`, and
/// per topic the replicas they apply to. A replica joining a partition by reassignment copies
/// at the throttled rate on either side, its reassignment finishing only once the throttle is
/// lifted; replicas in the ISR are never throttled, so acks=all produce goes on at full speed
/// under a throttle that would take over an hour for its data.
#[test]
fn reassignment_catch_up_follows_the_replication_throttles() {
    let c = Cluster::start();
    let ids = c.ids();
    let (a, b) = (ids[0], ids[1]);
    let via = c.addr(ids[2]);

    // In-sync replicas are not throttled: an RF=3 topic whose every replica is listed, under
    // a 1 KiB/s throttle on both sides, takes 4 MiB at acks=all within the message timeout.
    let in_sync = unique_name("throttled-isr");
    create_replicated(
        &c,
        &in_sync,
        1,
        3,
        &[(LEADER_REPLICAS, "*"), (FOLLOWER_REPLICAS, "*")],
    );
    c.wait_full_isr(&in_sync, CONVERGE_TIMEOUT);
    set_rate_everywhere(&c, &via, LEADER_RATE, Some(1024));
    set_rate_everywhere(&c, &via, FOLLOWER_RATE, Some(1024));
    let quick = [("message.timeout.ms", "30000")];
    all_ok(&produce(
        &c.bootstrap_live(),
        &in_sync,
        "all",
        &quick,
        4_096,
        msg,
    ));
    c.wait_full_isr(&in_sync, CONVERGE_TIMEOUT);

    // A partition on `a` alone, 32 MiB of it.
    let topic = unique_name("throttled");
    let admin = admin(&c.bootstrap_live());
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let only_a: [&[i32]; 1] = [&[a]];
    let nt = NewTopic::new(&topic, 1, TopicReplication::Variable(&only_a))
        .set("min.insync.replicas", "1");
    let created = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics");
    assert_eq!(created[0], Ok(topic.clone()));
    wait_placed(&c, &topic, &[vec![a]]);
    let records = 32 * 1024;
    all_ok(&produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        &quick,
        records,
        msg,
    ));

    // The topic's lists as the tool writes them: the current replica serves throttled, the
    // joining one fetches throttled. A malformed list is refused; APPEND adds to a list.
    let leader_list = format!("0:{a}");
    assert_eq!(
        alter_config(&via, 2, &topic, LEADER_REPLICAS, OP_SET, Some(&leader_list)),
        Ok(0)
    );
    assert_eq!(
        alter_config(&via, 2, &topic, FOLLOWER_REPLICAS, OP_SET, Some("0-1")),
        Ok(40)
    );
    assert_eq!(
        alter_config(
            &via,
            2,
            &topic,
            FOLLOWER_REPLICAS,
            OP_APPEND,
            Some(&format!("0:{b}"))
        ),
        Ok(0)
    );
    let rate = 1u64 << 20;

    // The follower's side alone: `b` fetches at most `rate`.
    set_rate_everywhere(&c, &via, LEADER_RATE, None);
    set_rate_everywhere(&c, &via, FOLLOWER_RATE, Some(rate));
    let dir_b = c.dir().join(format!("node-{b}")).join(format!("{topic}-0"));
    let dir_a = c.dir().join(format!("node-{a}")).join(format!("{topic}-0"));
    let full = segment_bytes(&dir_a);
    assert!(full >= (records * SIZE) as u64, "{full} bytes on {a}");
    let since = Instant::now();
    assert_eq!(
        alter_reassignment(&via, &topic, Some(&[a, b]), None),
        (0, None)
    );
    thread::sleep(Duration::from_secs(3));
    let copied = growth_within_rate(&dir_b, 0, since, rate);
    assert!(copied > 0, "throttled, not stopped: {b} copied nothing");

    // The leader's side alone: `a` serves at most `rate`. The leader's throttle is on before
    // the follower's comes off, so nothing runs unthrottled in between.
    set_rate_everywhere(&c, &via, LEADER_RATE, Some(rate));
    let (since, from) = (Instant::now(), segment_bytes(&dir_b));
    set_rate_everywhere(&c, &via, FOLLOWER_RATE, None);
    thread::sleep(Duration::from_secs(3));
    let copied = growth_within_rate(&dir_b, from, since, rate);
    assert!(copied < full, "still copying: {copied} of {full} bytes");
    let listed = listed_reassignment(&via, &topic, true).expect("List");
    assert_eq!(
        listed,
        Some((vec![a, b], vec![b], vec![])),
        "still adding {b}"
    );

    // Lifted (as `kafka-reassign-partitions --verify` does): the copy completes and `b`
    // joins the ISR.
    set_rate_everywhere(&c, &via, LEADER_RATE, None);
    for (key, broker) in [(LEADER_REPLICAS, a), (FOLLOWER_REPLICAS, b)] {
        assert_eq!(
            alter_config(&via, 2, &topic, key, OP_DELETE, None),
            Ok(0),
            "{key} of {broker}"
        );
    }
    wait_reassigned(&c, &topic, &[a, b], |l| l >= 0);
    let mut sizes = (0, 0);
    let same = wait_until(CONVERGE_TIMEOUT, || {
        sizes = (segment_bytes(&dir_a), segment_bytes(&dir_b));
        sizes.0 == sizes.1
    });
    assert!(same, "copies differ after the reassignment: {sizes:?}");
}

/// The replication-throttle configs through a real admin client (confluent-kafka): set per
/// broker and per topic, APPEND and SUBTRACT on the lists, read back with their sources,
/// refused where Kafka refuses, and cleared the way `kafka-reassign-partitions --verify`
/// clears them (`tests/python/replication_throttle.py`).
#[test]
fn replication_throttle_configs_with_confluent_kafka() {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let c = Cluster::start();
    let topic = unique_name("throttle-configs");
    create_replicated(&c, &topic, 1, 3, &[]);
    let ids: Vec<String> = c.ids().iter().map(i32::to_string).collect();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/replication_throttle.py");
    let out = run(
        Command::new(python)
            .arg(&script)
            .args([c.bootstrap_live(), topic, ids.join(",")]),
        None,
        Duration::from_secs(180),
    );
    assert_success("tests/python/replication_throttle.py", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "the script did not finish its checks"
    );
}

/// IncrementalAlterConfigs sent through all three brokers at once, as operators' tools and
/// scripts do: each broker applies the operations to its own copy of the topic's configs, so
/// one whose copy is a moment behind would, unchecked, write back a list without an entry just
/// committed through another broker. The controller refuses a change computed from a set that
/// has changed since, and the broker applies the operations again to the newer set: every
/// APPEND survives, and every broker shows the same list.
#[test]
fn concurrent_config_changes_through_different_brokers_all_apply() {
    const PER_BROKER: usize = 12;
    let c = Cluster::start();
    let topic = unique_name("concurrent-configs");
    create_replicated(&c, &topic, 1, 3, &[]);
    let appenders: Vec<_> = c
        .ids()
        .into_iter()
        .map(|id| {
            let (addr, topic) = (c.addr(id), topic.clone());
            thread::spawn(move || {
                for partition in 0..PER_BROKER {
                    let entry = format!("{partition}:{id}");
                    let got =
                        alter_config(&addr, 2, &topic, FOLLOWER_REPLICAS, OP_APPEND, Some(&entry));
                    assert_eq!(got, Ok(0), "APPEND {entry} through broker {id}");
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().expect("an appender failed");
    }
    let mut want: Vec<String> = c
        .ids()
        .into_iter()
        .flat_map(|id| (0..PER_BROKER).map(move |p| format!("{p}:{id}")))
        .collect();
    want.sort();
    for id in c.ids() {
        let mut last = None;
        let same = wait_until(CONVERGE_TIMEOUT, || {
            let configs = describe_configs(&c.addr(id), 2, &topic);
            let list = configs.ok().and_then(|cs| {
                let (_, v, _) = cs.into_iter().find(|(n, _, _)| n == FOLLOWER_REPLICAS)?;
                let mut entries: Vec<String> = v.split(',').map(str::to_string).collect();
                entries.sort();
                Some(entries)
            });
            let ok = list.as_ref() == Some(&want);
            last = list;
            ok
        });
        assert!(
            same,
            "broker {id} shows {last:?}, not the {} appended",
            want.len()
        );
    }
}

/// DescribeQuorum of `topic` partition 0 through `addr` (what `kafka-metadata-quorum.sh
/// describe` sends, with `__cluster_metadata`).
fn describe_quorum_of(
    addr: &str,
    version: i16,
    topic: &str,
) -> Result<DescribeQuorumResponse, String> {
    let req = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![
                describe_quorum_request::PartitionData::default().with_partition_index(0)
            ]),
    ]);
    raw_call(addr, ApiKey::DescribeQuorum, version, &req)
}

/// The metadata partition's row of a DescribeQuorum answer, or its error.
fn quorum_row(addr: &str, version: i16) -> Result<QuorumPartition, String> {
    let resp = describe_quorum_of(addr, version, "__cluster_metadata")?;
    if resp.error_code != 0 {
        return Err(format!(
            "error {}: {:?}",
            resp.error_code, resp.error_message
        ));
    }
    let topic = resp.topics.first().ok_or("no topic")?;
    if topic.topic_name.as_str() != "__cluster_metadata" {
        return Err(format!("topic {:?}", topic.topic_name));
    }
    let row = topic.partitions.first().ok_or("no partition")?;
    if row.error_code != 0 {
        return Err(format!(
            "partition error {}: {:?}",
            row.error_code, row.error_message
        ));
    }
    Ok(row.clone())
}

fn wall_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_millis() as i64
}

/// How recent a voter's last fetch must be to count as fetching now: followers fetch the
/// metadata log continuously (a long poll of at most a few hundred ms).
const FETCHING_MS: i64 = 2_000;

/// `kafka-metadata-quorum.sh describe --status / --replication` (DescribeQuorum) through every
/// broker: the same leader and epoch from each, every voter with its log end and fresh fetch
/// and caught-up times, the controller endpoints of `--voters` (v2). A killed voter's fetch
/// time stops and its log end falls behind while the others go on; restarted, it catches up.
/// A request for any other partition gets UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn metadata_quorum_is_described_by_every_broker() {
    let mut c = Cluster::start();
    let ids = c.ids();
    let mut last = None;
    let agreed = wait_until(CONVERGE_TIMEOUT, || {
        let rows: Result<Vec<QuorumPartition>, String> =
            ids.iter().map(|&id| quorum_row(&c.addr(id), 2)).collect();
        let ok = rows.as_ref().is_ok_and(|rows| {
            let now = wall_ms();
            rows.windows(2)
                .all(|w| (w[0].leader_id, w[0].leader_epoch) == (w[1].leader_id, w[1].leader_epoch))
                && rows[0].current_voters.len() == 3
                && rows[0]
                    .current_voters
                    .iter()
                    .all(|v| v.log_end_offset > 0 && v.last_fetch_timestamp > now - FETCHING_MS)
        });
        last = Some(rows);
        ok
    });
    assert!(
        agreed,
        "the brokers do not describe one live quorum: {last:?}"
    );
    let row = quorum_row(&c.addr(ids[0]), 2).expect("DescribeQuorum");
    let leader = row.leader_id.0;
    assert!(ids.contains(&leader), "leader {leader}");
    assert!(row.high_watermark > 0);
    let voters: Vec<i32> = row.current_voters.iter().map(|v| v.replica_id.0).collect();
    assert_eq!(voters, ids);
    assert!(row.observers.is_empty(), "no broker-only nodes here");
    let leader_end = row.current_voters.iter().find(|v| v.replica_id.0 == leader);
    let leader_end = leader_end.expect("the leader is a voter").log_end_offset;
    for v in &row.current_voters {
        assert!(v.log_end_offset <= leader_end, "{v:?} ahead of the leader");
        assert!(v.last_caught_up_timestamp <= v.last_fetch_timestamp.max(wall_ms()));
        assert!(
            v.last_caught_up_timestamp > wall_ms() - 60_000,
            "{v:?} never caught up"
        );
    }
    // Version 2 names every voter's controller endpoint, as --voters does.
    let resp = describe_quorum_of(&c.addr(ids[1]), 2, "__cluster_metadata").expect("v2");
    let endpoints: Vec<String> = resp
        .nodes
        .iter()
        .flat_map(|n| {
            let id = n.node_id.0;
            n.listeners.iter().map(move |l| {
                assert_eq!(l.name.as_str(), "CONTROLLER");
                format!("{id}@{}:{}", l.host.as_str(), l.port)
            })
        })
        .collect();
    assert_eq!(endpoints.join(","), c.voters());
    // Versions 0 and 1 carry the same quorum.
    for version in [0, 1] {
        let old = quorum_row(&c.addr(ids[2]), version).expect("older version");
        assert_eq!((old.leader_id.0, old.current_voters.len()), (leader, 3));
    }
    let other = describe_quorum_of(&c.addr(ids[0]), 2, "some-topic").expect("answer");
    let rows = &other.topics[0].partitions;
    assert_eq!(
        rows[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION for {rows:?}"
    );

    // A killed voter stops fetching; the quorum (a majority) goes on and says so.
    let down = *ids
        .iter()
        .find(|&&id| id != leader)
        .expect("a follower voter");
    let via = *ids.iter().find(|&&id| id != down).expect("a live broker");
    c.kill9(down);
    let killed_at = wall_ms();
    let topic = unique_name("quorum-moves");
    create_replicated(&c, &topic, 1, 2, &[]);
    let mut last = None;
    let seen = wait_until(CONVERGE_TIMEOUT, || {
        let row = quorum_row(&c.addr(via), 2);
        let ok = row.as_ref().is_ok_and(|row| {
            let now = wall_ms();
            let end = |id: i32| {
                let v = row.current_voters.iter().find(|v| v.replica_id.0 == id);
                v.map_or(-1, |v| v.log_end_offset)
            };
            row.current_voters.iter().all(|v| {
                let fresh = v.last_fetch_timestamp > now - FETCHING_MS;
                if v.replica_id.0 == down {
                    !fresh
                        && v.last_fetch_timestamp <= killed_at
                        && end(down) < end(row.leader_id.0)
                } else {
                    fresh
                }
            })
        });
        last = Some(row);
        ok
    });
    assert!(seen, "voter {down} killed, but the quorum shows {last:?}");

    // Restarted, it catches up with the leader's log.
    c.restart(down);
    let restarted_at = wall_ms();
    let mut last = None;
    let caught_up = wait_until(CONVERGE_TIMEOUT, || {
        let row = quorum_row(&c.addr(via), 2);
        let ok = row.as_ref().is_ok_and(|row| {
            let v = row.current_voters.iter().find(|v| v.replica_id.0 == down);
            v.is_some_and(|v| {
                v.last_caught_up_timestamp >= restarted_at
                    && v.last_fetch_timestamp > wall_ms() - FETCHING_MS
            })
        });
        last = Some(row);
        ok
    });
    assert!(
        caught_up,
        "voter {down} restarted, but the quorum shows {last:?}"
    );
}

/// Rack awareness (`--rack`, Kafka's broker.rack) through confluent-kafka's AdminClient: two
/// brokers in rack a and one in rack b. DescribeCluster names each broker's rack, and a topic
/// created with replication factor 2 has every partition in both racks, so losing a whole rack
/// loses no partition (`tests/python/racks.py`); with the racks off, consecutive placement
/// would put some partitions on brokers 1 and 2 only.
#[test]
fn replicas_spread_across_racks() {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let racks = [(1, "rack", "a"), (2, "rack", "a"), (3, "rack", "b")];
    let c = Cluster::start_with_node_args(&[], &racks);
    let topic = unique_name("racks");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/racks.py");
    let out = run(
        Command::new(python).arg(&script).args([
            c.bootstrap_live(),
            topic,
            "1=a,2=a,3=b".to_string(),
        ]),
        None,
        Duration::from_secs(120),
    );
    assert_success("tests/python/racks.py", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "the script did not finish its checks"
    );
}

/// DeleteRecords through librdkafka's admin API (what `kafka-delete-records.sh` and Kafka
/// Streams send). Returns the partition's low watermark, or its error.
fn delete_records(c: &Cluster, topic: &str, offset: i64) -> Result<i64, RDKafkaErrorCode> {
    let admin = admin(&c.bootstrap_live());
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let mut tpl = TopicPartitionList::new();
    let at = if offset < 0 {
        Offset::End
    } else {
        Offset::Offset(offset)
    };
    tpl.add_partition_offset(topic, 0, at)
        .expect("partition list");
    let out = block_on(admin.delete_records(&tpl, &opts)).expect("DeleteRecords request");
    let row = out.elements().into_iter().next().expect("one partition");
    match (row.error(), row.offset()) {
        (Err(e), _) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown)),
        (Ok(()), Offset::Offset(low)) => Ok(low),
        (Ok(()), other) => panic!("DeleteRecords answered {other:?}"),
    }
}

/// `kafka-delete-records.sh` on a replicated partition: the answer comes once every in-sync
/// replica has deleted (each node's segments below the offset are gone when it arrives), the
/// partition then starts at the offset for consumers, and it still does after its leader is
/// killed. Past the high watermark is refused with OFFSET_OUT_OF_RANGE; -1 (librdkafka's
/// `Offset::End`) deletes up to the high watermark.
#[test]
fn deleted_records_stay_deleted_on_every_replica_and_after_failover() {
    let mut c = Cluster::start();
    let topic = unique_name("purge");
    create_replicated(&c, &topic, 1, 3, &[("segment.bytes", "65536")]);
    // Batches of a few records, so segments roll every 64 KiB or so.
    let mut small_batches = FAILOVER_PRODUCER.to_vec();
    small_batches.push(("batch.size", "16384"));
    let reports = produce(
        &c.bootstrap_live(),
        &topic,
        "all",
        &small_batches,
        1_000,
        |i| Outgoing {
            partition: Some(0),
            ..msg(i)
        },
    );
    all_ok(&reports);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let dirs: Vec<_> = c
        .ids()
        .into_iter()
        .map(|id| {
            c.dir()
                .join(format!("node-{id}"))
                .join(format!("{topic}-0"))
        })
        .collect();
    let before: Vec<u64> = dirs.iter().map(|d| segment_bytes(d)).collect();

    assert_eq!(
        delete_records(&c, &topic, 5_000),
        Err(RDKafkaErrorCode::OffsetOutOfRange)
    );
    assert_eq!(delete_records(&c, &topic, 600), Ok(600));
    for (dir, before) in dirs.iter().zip(&before) {
        let after = segment_bytes(dir);
        // 600 records of over 1 KiB in 64 KiB segments: at least 8 whole segments are gone.
        assert!(
            after + 8 * 65_536 <= *before,
            "{dir:?} kept {after} of {before} bytes"
        );
    }
    assert_eq!(watermarks(&c.bootstrap_live(), &topic, 0), (600, 1_000));
    let got = consume_all(&c.bootstrap_live(), &topic, &[0], CONSUME_TIMEOUT);
    let offsets: Vec<i64> = got.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (600..1_000).collect::<Vec<_>>());

    let leader = c.node_for_leader(&topic, 0).expect("leader");
    c.kill9(leader);
    c.wait_leaders(&topic, Some(leader), CONVERGE_TIMEOUT);
    let (low, high) = watermarks(&c.bootstrap_live(), &topic, 0);
    assert_eq!((low, high), (600, 1_000), "after the leader's death");
    assert_eq!(delete_records(&c, &topic, -1), Ok(1_000));
    assert_eq!(watermarks(&c.bootstrap_live(), &topic, 0), (1_000, 1_000));
}

/// Waits until every live node's Metadata shows each partition of `topic` on exactly the
/// brokers `asked` names for it, all in sync, led by the first.
fn wait_placed(c: &Cluster, topic: &str, asked: &[Vec<i32>]) {
    let mut last = String::new();
    let placed = wait_until(CONVERGE_TIMEOUT, || {
        let shown = c.wait_partitions(topic, Duration::ZERO, |p| {
            let Some(want) = asked.get(p.id as usize) else {
                return false;
            };
            let mut isr = p.isr.clone();
            let mut all = want.clone();
            isr.sort_unstable();
            all.sort_unstable();
            p.replicas == *want && p.leader == want[0] && isr == all
        });
        last = format!("{shown:?}");
        shown.is_ok_and(|ps| ps.len() == asked.len())
    });
    assert!(placed, "{topic}: not placed as asked ({asked:?}): {last}");
}

/// `kafka-topics.sh --create --replica-assignment` and `--alter --partitions N
/// --replica-assignment`, through librdkafka's admin API: every partition lives on exactly the
/// brokers named, in that order, led by the first; the other brokers hold no copy; records
/// read back. Lists Kafka refuses (a broker named twice, an unregistered broker, lengths that
/// differ, a new partition's list of another length than the topic's) get
/// INVALID_REPLICA_ASSIGNMENT and change nothing.
#[test]
fn manual_replica_assignments_place_partitions_where_asked() {
    let c = Cluster::start();
    let ids = c.ids();
    let (a, b, d) = (ids[0], ids[1], ids[2]);
    let admin = admin(&c.bootstrap_live());
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let create = |topic: &str, lists: &[Vec<i32>]| {
        let refs: Vec<&[i32]> = lists.iter().map(|l| &l[..]).collect();
        let nt = NewTopic::new(topic, lists.len() as i32, TopicReplication::Variable(&refs));
        let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics request");
        res.into_iter().next().expect("one result")
    };
    let grow = |topic: &str, total: usize, lists: &[Vec<i32>]| {
        let refs: Vec<&[i32]> = lists.iter().map(|l| &l[..]).collect();
        let np = NewPartitions::new(topic, total).assign(&refs);
        let res = block_on(admin.create_partitions([&np], &opts)).expect("CreatePartitions");
        res.into_iter().next().expect("one result")
    };

    let topic = unique_name("placed");
    let mut asked = vec![vec![b, d], vec![d, a], vec![a, b]];
    assert_eq!(create(&topic, &asked), Ok(topic.clone()));
    wait_placed(&c, &topic, &asked);

    // Refused: a new partition whose list is not as long as the topic's, and too few lists
    // for the new count (also on the wire as CreatePartitions v3 from another client would).
    let refused = grow(&topic, 4, &[vec![a]]);
    assert_eq!(
        refused,
        Err((topic.clone(), RDKafkaErrorCode::InvalidReplicaAssignment))
    );
    let (code, message) = grow_raw(&c.addr(a), &topic, 5, &[vec![a, b]]);
    assert_eq!(code, 39, "INVALID_REPLICA_ASSIGNMENT: {message:?}");

    asked.extend([vec![d, b], vec![a, d]]);
    assert_eq!(grow(&topic, 5, &asked[3..]), Ok(topic.clone()));
    wait_placed(&c, &topic, &asked);

    let reports = produce(&c.bootstrap_live(), &topic, "all", &[], 500, msg);
    all_ok(&reports);
    check_acked(&read_back(&c, &topic, 5, &reports), &reports, false);
    for (p, replicas) in asked.iter().enumerate() {
        for id in ids.iter().filter(|id| !replicas.contains(id)) {
            let dir = c
                .dir()
                .join(format!("node-{id}"))
                .join(format!("{topic}-{p}"));
            assert_eq!(segment_bytes(&dir), 0, "node {id} holds {topic}-{p}");
        }
        let holder = c.dir().join(format!("node-{}", replicas[0]));
        let bytes = segment_bytes(&holder.join(format!("{topic}-{p}")));
        assert!(
            bytes > 0,
            "node {} holds nothing of {topic}-{p}",
            replicas[0]
        );
    }

    // DescribeLogDirs (kafka-log-dirs.sh): each node lists the replicas placed on it, each as
    // large as its files there and as every other copy of that partition.
    let described = |id: i32| -> Vec<(i32, i64)> {
        let r = raw_describe_log_dirs(c.addr(id), Some(vec![(topic.as_str(), (0..5).collect())]));
        r.results
            .iter()
            .flat_map(|d| &d.topics)
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.partition_size))
            })
            .collect()
    };
    let agreed = wait_until(CONVERGE_TIMEOUT, || {
        ids.iter().all(|&id| {
            let rows = described(id);
            let placed: Vec<i32> = (0..5)
                .filter(|&p| asked[p as usize].contains(&id))
                .collect();
            rows.iter().map(|r| r.0).collect::<Vec<_>>() == placed
                && rows.iter().all(|&(p, size)| {
                    let dir = c
                        .dir()
                        .join(format!("node-{id}"))
                        .join(format!("{topic}-{p}"));
                    let leader = c.dir().join(format!("node-{}", asked[p as usize][0]));
                    size as u64 == segment_bytes(&dir)
                        && size as u64 == segment_bytes(&leader.join(format!("{topic}-{p}")))
                })
        })
    });
    if !agreed {
        let seen: Vec<_> = ids.iter().map(|&id| (id, described(id))).collect();
        panic!("DescribeLogDirs disagrees with the placement {asked:?} or the files: {seen:?}");
    }

    // Refused topics are not created.
    for lists in [
        vec![vec![a, a]],
        vec![vec![a, 99]],
        vec![vec![a, b], vec![d]],
    ] {
        let name = unique_name("refused");
        assert_eq!(
            create(&name, &lists),
            Err((name.clone(), RDKafkaErrorCode::InvalidReplicaAssignment)),
            "{lists:?}"
        );
        let shown = c.partitions(&name);
        assert!(
            matches!(&shown, Err(e) if e.contains("UNKNOWN_TOPIC")),
            "{lists:?}: {name} is {shown:?}"
        );
    }
}

/// CreatePartitions v3 on the wire: grows `topic` to `count` with `lists` as the new
/// partitions' replicas. Returns the topic's error code and message.
fn grow_raw(addr: &str, topic: &str, count: i32, lists: &[Vec<i32>]) -> (i16, Option<String>) {
    let assignments = lists
        .iter()
        .map(|l| {
            CreatePartitionsAssignment::default()
                .with_broker_ids(l.iter().map(|&b| BrokerId(b)).collect())
        })
        .collect();
    let request = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_count(count)
            .with_assignments(Some(assignments))])
        .with_timeout_ms(30_000);
    let response: CreatePartitionsResponse =
        raw_call(addr, ApiKey::CreatePartitions, 3, &request).expect("CreatePartitions");
    let r = &response.results[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// CreateTopics v7 on the wire for one topic (3 partitions, RF 3) with `timeout_ms`: the
/// topic's error code.
fn create_raw(addr: &str, topic: &str, timeout_ms: i32) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(3)
            .with_replication_factor(3)])
        .with_timeout_ms(timeout_ms);
    let response: CreateTopicsResponse =
        raw_call(addr, ApiKey::CreateTopics, 7, &request).expect("CreateTopics");
    response.topics[0].error_code
}

/// DeleteTopics v5 on the wire for one topic with `timeout_ms`: the topic's error code.
fn delete_raw(addr: &str, topic: &str, timeout_ms: i32) -> i16 {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_string(topic.to_string()))])
        .with_timeout_ms(timeout_ms);
    let response: DeleteTopicsResponse =
        raw_call(addr, ApiKey::DeleteTopics, 5, &request).expect("DeleteTopics");
    response.responses[0].error_code
}

/// `timeout_ms` as Kafka documents it: above 0 the answer waits until the broker shows the
/// change; at 0 the change is made and answered REQUEST_TIMED_OUT at once ("triggered, not
/// awaited"), which librdkafka's `operation_timeout` 0 reports as success. Refusals are still
/// real refusals.
#[test]
fn admin_timeout_zero_makes_the_change_without_waiting() {
    const REQUEST_TIMED_OUT: i16 = 7;
    const TOPIC_ALREADY_EXISTS: i16 = 36;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    let c = Cluster::start();
    let ok = wait_until(CONVERGE_TIMEOUT, || c.brokers().is_ok_and(|b| b == c.ids()));
    assert!(ok, "not every broker registered");
    let addr = c.addr(1);

    // Waited for: the same broker's Metadata shows the topic as soon as the answer arrives.
    let waited = unique_name("t-waited");
    assert_eq!(create_raw(&addr, &waited, 30_000), 0);
    let shown = c
        .partitions_at(&addr, &waited)
        .expect("Metadata after CreateTopics");
    assert_eq!(
        shown.len(),
        3,
        "{waited} right after a waited CreateTopics: {shown:?}"
    );

    // Not waited for: REQUEST_TIMED_OUT, and the topic is made all the same.
    let triggered = unique_name("t-triggered");
    assert_eq!(create_raw(&addr, &triggered, 0), REQUEST_TIMED_OUT);
    if let Err(e) = c.wait_partitions(&triggered, CONVERGE_TIMEOUT, |p| p.leader >= 0) {
        panic!("{triggered}, created with timeout_ms 0, never appeared: {e}");
    }
    assert_eq!(create_raw(&addr, &triggered, 0), TOPIC_ALREADY_EXISTS);
    assert_eq!(create_raw(&addr, &triggered, -1), TOPIC_ALREADY_EXISTS);

    // librdkafka's operation_timeout 0 means exactly this, and reports success.
    let admin = admin(&c.bootstrap());
    let quick = unique_name("t-librdkafka");
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(Duration::ZERO)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let nt = NewTopic::new(&quick, 2, TopicReplication::Fixed(3));
    let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics");
    assert_eq!(
        res[0],
        Ok(quick.clone()),
        "librdkafka with operation_timeout 0"
    );
    if let Err(e) = c.wait_partitions(&quick, CONVERGE_TIMEOUT, |p| p.leader >= 0) {
        panic!("{quick}, created by librdkafka with operation_timeout 0, never appeared: {e}");
    }

    // Deleting the same way: made, answered at once; an unknown topic is still refused.
    let absent = |topic: &str| match c.partitions_at(&addr, topic) {
        Ok(p) => p.is_empty(),
        Err(e) => e.contains("UNKNOWN_TOPIC"),
    };
    assert_eq!(delete_raw(&addr, &triggered, 0), REQUEST_TIMED_OUT);
    let gone = wait_until(CONVERGE_TIMEOUT, || absent(&triggered));
    assert!(
        gone,
        "{triggered}, deleted with timeout_ms 0, is still listed"
    );
    assert_eq!(delete_raw(&addr, &triggered, 0), UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(delete_raw(&addr, &waited, 30_000), 0);
    assert!(
        absent(&waited),
        "{waited} right after a waited DeleteTopics: {:?}",
        c.partitions_at(&addr, &waited)
    );
}

#[test]
fn metadata_shows_three_brokers_and_leaders() {
    let c = Cluster::start();
    let mut brokers = Vec::new();
    let ok = wait_until(CONVERGE_TIMEOUT, || {
        brokers = c.brokers().unwrap_or_default();
        brokers == c.ids()
    });
    assert!(ok, "Metadata brokers {brokers:?}, expected {:?}", c.ids());
    let topic = unique_name("md");
    create_replicated(&c, &topic, PARTITIONS, 3, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    for p in c.partitions(&topic).expect("metadata") {
        assert!(c.ids().contains(&p.leader), "{p:?}: leader not a broker");
        let mut r = p.replicas.clone();
        r.sort_unstable();
        assert_eq!(r, c.ids(), "{p:?}: replicas");
        assert!(
            p.replicas.contains(&p.leader),
            "{p:?}: leader not a replica"
        );
    }
}

/// `broker dev-cluster --nodes 1`: ready line, pid file, a client round trip, clean SIGTERM.
#[test]
fn dev_cluster_starts_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Kafka port P and controller port P+100 must both be free.
    let base = (0..50)
        .map(|_| free_ports(1)[0])
        .find(|&p| {
            p < 65_000
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 100)).is_ok()
        })
        .expect("a free port pair");
    let mut child = Command::new(broker_bin())
        .args(["dev-cluster", "--nodes", "1", "--base-port"])
        .arg(base.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broker dev-cluster");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx.recv_timeout(STARTUP_TIMEOUT);
    let line = match ready {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!(
                "no ready line; stderr:\n{err}\nnode log:\n{}",
                tail(&dir.path().join("node-1.log"), 40)
            );
        }
    };
    assert_eq!(line, format!("cluster ready: bootstrap 127.0.0.1:{base}"));
    let pid_file = dir.path().join("node-1.pid");
    let node_pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    smoke_roundtrip(&format!("127.0.0.1:{base}"));

    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut status = None;
    let ok = wait_until(SHUTDOWN_TIMEOUT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ok {
        let _ = child.kill();
        panic!("dev-cluster did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM");
    }
    assert!(status.unwrap().success(), "dev-cluster exit: {status:?}");
    assert!(!pid_file.exists(), "pid file left behind");
    // SAFETY: signal 0 only probes; the node was our grandchild and has been reaped.
    let node_alive = unsafe { libc::kill(node_pid, 0) } == 0
        && std::fs::read_to_string(format!("/proc/{node_pid}/cmdline"))
            .map(|c| c.contains("--node-id"))
            .unwrap_or(false);
    assert!(!node_alive, "node process {node_pid} still running");
    assert!(
        std::fs::read_to_string(dir.path().join("node-1.log"))
            .unwrap()
            .contains("listening on"),
        "node log holds the node's output"
    );
}

/// The harness itself (no replication needed): three nodes on distinct ports, kill -9 and
/// restart on the same port, SIGSTOP/SIGCONT.
#[test]
fn cluster_harness_kills_restarts_and_freezes_nodes() {
    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
        // "pid (comm) S ...": the state follows the last ')'.
        stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }
    let mut c = Cluster::start();
    assert_eq!(c.ids(), [1, 2, 3]);
    let addrs: HashSet<String> = c.ids().iter().map(|&id| c.addr(id)).collect();
    assert_eq!(addrs.len(), 3, "distinct Kafka ports");
    assert_eq!(c.voters().split(',').count(), 3);
    for id in c.ids() {
        TcpStream::connect(c.addr(id)).expect("node accepts connections");
    }
    c.kill9(2);
    assert!(!c.is_running(2));
    assert!(!c.bootstrap_live().contains(&c.addr(2)));
    assert!(
        TcpStream::connect(c.addr(2)).is_err(),
        "killed node still listening"
    );
    c.restart(2);
    TcpStream::connect(c.addr(2)).expect("restarted node on its old port");
    assert!(c.log_tail(2, 200).contains("listening on"));
    let pid = c.pid(3).unwrap();
    c.sigstop(3);
    assert!(wait_until(Duration::from_secs(5), || state(pid) == 'T'));
    assert!(!c.bootstrap_live().contains(&c.addr(3)));
    c.sigcont(3);
    assert!(wait_until(Duration::from_secs(5), || state(pid) != 'T'));
    for id in c.ids() {
        c.assert_alive(id);
    }
}

/// deploy/docker-compose.yml's configuration (its environment and command lines) run as four
/// local processes. There is no container runtime here, so `Cluster::start_from_compose` maps
/// the containers' names, ports and data volume to loopback ports and temporary directories;
/// everything else comes from the file. Checks what the file promises: three voters and a
/// broker-only node in one cluster, topics replicated three times by default, acks=all writes
/// read back.
#[test]
fn compose_configuration_runs_a_replicated_cluster() {
    let compose =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-compose.yml");
    let c = Cluster::start_from_compose(&compose);
    let mut brokers = Vec::new();
    let ok = wait_until(CONVERGE_TIMEOUT, || {
        brokers = c.brokers().unwrap_or_default();
        brokers == c.ids()
    });
    assert!(ok, "Metadata brokers {brokers:?}, expected {:?}", c.ids());
    assert_eq!(c.ids(), [1, 2, 3, 4], "three voters and a broker-only node");
    // broker4 follows the metadata quorum as an observer, not a voter.
    let mut last = None;
    let observed = wait_until(CONVERGE_TIMEOUT, || {
        let row = quorum_row(&c.addr(1), 2);
        let ok = row.as_ref().is_ok_and(|r| {
            let voters: Vec<i32> = r.current_voters.iter().map(|v| v.replica_id.0).collect();
            let observers: Vec<i32> = r.observers.iter().map(|o| o.replica_id.0).collect();
            voters == [1, 2, 3] && observers == [4]
        });
        last = Some(row);
        ok
    });
    assert!(observed, "quorum voters and observers: {last:?}");
    // No replication factor given: the compose file's broker default applies.
    let topic = unique_name("compose");
    let admin = admin(&c.bootstrap_live());
    let nt = NewTopic::new(&topic, 2, TopicReplication::Fixed(-1));
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics request failed");
    assert!(res[0].is_ok(), "CreateTopics: {:?}", res[0]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    for p in c.partitions(&topic).expect("metadata") {
        assert_eq!(
            p.replicas.len(),
            3,
            "{p:?}: the default replication factor is 3"
        );
    }
    // The file's BROKER_MIN_INSYNC_REPLICAS is what the topic gets by default.
    let described = block_on(
        admin.describe_configs([&rdkafka::admin::ResourceSpecifier::Topic(&topic)], &opts),
    )
    .expect("DescribeConfigs request");
    let config = described
        .into_iter()
        .next()
        .expect("one result")
        .expect("the topic's configs");
    let min_isr = config.get("min.insync.replicas").expect("listed");
    assert_eq!(min_isr.value.as_deref(), Some("2"), "{min_isr:?}");
    // And the data went where BROKER_DATA_DIR sent it.
    for id in c.ids() {
        let dir = c.dir().join(format!("node-{id}"));
        assert!(
            c.log_text(id)
                .contains(&format!("data_dir={}", dir.display())),
            "node {id} did not start on its mapped data dir:\n{}",
            c.log_tail(id, 20)
        );
    }
    let reports = produce_and_read(&c, &topic, 0, 100);
    let got = read_back(&c, &topic, 2, &reports);
    check_acked(&got, &reports, false);
    // Every service serves its metrics where BROKER_METRICS_LISTEN says; one is the active
    // controller, and the fully replicated topic leaves nothing under-replicated.
    // (Bounded wait: the group offsets' partitions may still be filling their ISRs.)
    let mut last = Vec::new();
    let healthy = wait_until(CONVERGE_TIMEOUT, || {
        last = c
            .ids()
            .into_iter()
            .map(|id| {
                let m = scrape(&c.metrics_addr(id)).unwrap_or_else(|e| panic!("node {id}: {e}"));
                (
                    m["kafka_controller_kafkacontroller_activecontrollercount"],
                    m["kafka_server_replicamanager_underreplicatedpartitions"],
                )
            })
            .collect();
        last.iter().map(|(a, _)| a).sum::<f64>() == 1.0 && last.iter().all(|(_, u)| *u == 0.0)
    });
    assert!(
        healthy,
        "(active controller, under-replicated) per node: {last:?}"
    );
}

/// Where librdkafka's statistics say one partition is fetched from: (broker, leader).
#[derive(Default)]
struct FetchSource {
    topic: String,
    seen: std::sync::Mutex<Option<(i32, i32)>>,
}

impl rdkafka::ClientContext for FetchSource {
    /// librdkafka's own log (with `RDKAFKA_DEBUG=<contexts>`), to stderr.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!(
            "{:?} rdkafka {level:?} {fac}: {log_message}",
            Instant::now()
        );
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let at = statistics
            .topics
            .get(&self.topic)
            .and_then(|t| t.partitions.get(&0))
            .map(|p| (p.broker, p.leader));
        if let Some(at) = at {
            *self.seen.lock().unwrap() = Some(at);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for FetchSource {}

/// A consumer in `rack` (client.rack) reading partition 0 of `topic` from the beginning, with
/// statistics every 200 ms.
fn rack_consumer(c: &Cluster, topic: &str, rack: &str) -> BaseConsumer<FetchSource> {
    let context = FetchSource {
        topic: topic.to_string(),
        ..FetchSource::default()
    };
    let mut config = client_config(&c.bootstrap_live());
    if let Ok(contexts) = std::env::var("RDKAFKA_DEBUG") {
        config.set("debug", &contexts).set("log_level", "7");
        config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    let consumer: BaseConsumer<FetchSource> = config
        .set("group.id", unique_name("nearby"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .set("client.rack", rack)
        .set("statistics.interval.ms", "200")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(context)
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("add partition");
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Polls until offsets `from..to` of partition 0 arrived, in order and intact (keys `k{i}`).
fn read_in_order(consumer: &BaseConsumer<FetchSource>, from: usize, to: usize) {
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut next = from;
    while next < to {
        assert!(
            Instant::now() < deadline,
            "read {next} of {from}..{to}, then nothing for {CONSUME_TIMEOUT:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                assert_eq!(m.offset(), next as i64, "records out of order or missing");
                let i = index_of(m.key().expect("key"));
                assert_eq!(i, next, "offset {next} holds record {i}");
                assert_eq!(
                    m.payload(),
                    Some(&payload(i as u64, SIZE)[..]),
                    "record {i} damaged"
                );
                next += 1;
            }
            Some(Err(e)) => eprintln!("consumer error (retried by the client): {e}"),
            None => {}
        }
    }
}

/// Polls until the statistics show partition 0 fetched from `broker` while `leader` leads;
/// panics with what they showed. Returns how many records the polls passed over.
fn wait_fetching_from(consumer: &BaseConsumer<FetchSource>, broker: i32, leader: i32) -> usize {
    let mut passed = 0;
    let ok = wait_until(CONVERGE_TIMEOUT, || {
        if *consumer.context().seen.lock().unwrap() == Some((broker, leader)) {
            return true;
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            passed += 1;
        }
        false
    });
    let seen = *consumer.context().seen.lock().unwrap();
    assert!(
        ok,
        "wanted partition 0 fetched from broker {broker} (leader {leader}); statistics show \
         (broker, leader) {seen:?}"
    );
    passed
}

/// Fetch from follower (KIP-392): brokers in racks a, b and c with `--replica-selector rack`.
/// A librdkafka consumer that names a follower's rack (client.rack) is sent by the leader to
/// that follower, and reads every record from it in order, both the backlog and records
/// produced while it reads at the tail (the follower passes on the high watermark as it
/// moves). A consumer in the leader's rack stays on the leader. When the follower dies, its
/// consumer goes back to the leader and loses nothing.
#[test]
fn consumers_read_from_a_follower_in_their_rack() {
    let racks = [(1, "rack", "a"), (2, "rack", "b"), (3, "rack", "c")];
    let rack_of = |id: i32| ["a", "b", "c"][id as usize - 1];
    let mut c = Cluster::start_with_node_args(
        &[
            ("replica-selector", "rack"),
            ("replica-lag-time-max-ms", "2000"),
        ],
        &racks,
    );
    // kafka-configs --describe shows the static settings, under Kafka's names.
    let configs = describe_broker_configs(&c.addr(2), "2").expect("DescribeConfigs");
    let shown = |name: &str| {
        configs
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.clone())
    };
    assert_eq!(shown("broker.rack").as_deref(), Some("b"));
    assert_eq!(
        shown("replica.selector.class").as_deref(),
        Some("org.apache.kafka.common.replica.RackAwareReplicaSelector")
    );
    let topic = unique_name("nearby");
    create_replicated(&c, &topic, 1, 3, &[]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let leader = c.node_for_leader(&topic, 0).expect("a leader");
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let one = |i: usize| Outgoing {
        partition: Some(0),
        ..msg(i)
    };
    let reports = produce(&c.bootstrap_live(), &topic, "all", &[], 300, one);
    assert_eq!(all_ok(&reports).len(), 300, "every record acknowledged");

    // The backlog, from the follower in the consumer's rack.
    let near = rack_consumer(&c, &topic, rack_of(follower));
    read_in_order(&near, 0, 300);
    assert_eq!(
        wait_fetching_from(&near, follower, leader),
        0,
        "nothing past 300 yet"
    );

    // At the tail: records produced now reach the consumer through the follower.
    let more = produce(&c.bootstrap_live(), &topic, "all", &[], 200, |i| {
        one(300 + i)
    });
    assert_eq!(all_ok(&more).len(), 200);
    read_in_order(&near, 300, 500);
    assert_eq!(
        *near.context().seen.lock().unwrap(),
        Some((follower, leader)),
        "the tail was read from the follower"
    );

    // A consumer in the leader's rack reads from the leader.
    let local = rack_consumer(&c, &topic, rack_of(leader));
    read_in_order(&local, 0, 500);
    assert_eq!(wait_fetching_from(&local, leader, leader), 0);
    drop(local);

    // The follower dies: its consumer returns to the leader and misses nothing.
    c.kill9(follower);
    let last = produce(&c.bootstrap_live(), &topic, "all", &[], 200, |i| {
        one(500 + i)
    });
    assert_eq!(
        all_ok(&last).len(),
        200,
        "min.insync.replicas 2 of the 2 left"
    );
    read_in_order(&near, 500, 700);
    assert_eq!(wait_fetching_from(&near, leader, leader), 0);
}

/// One v11 consumer Fetch of partition 0 from offset 0 sent straight to `addr` (no rack):
/// the partition's error code and how many record bytes came back.
fn consumer_fetch_v11(addr: &str, topic: &str) -> Result<(i16, usize), String> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(0)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = raw_call(addr, ApiKey::Fetch, 11, &request)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("no partition in the answer")?;
    Ok((p.error_code, p.records.as_ref().map_or(0, |r| r.len())))
}

/// KIP-392's in-sync rule, on both sides. A replica still catching up (a reassignment's new
/// replica, held out of the ISR by a follower throttle) is not offered to a consumer in its
/// rack, which reads from the leader, and refuses a consumer fetch sent to it directly with
/// NOT_LEADER_OR_FOLLOWER (so a consumer on a replica that fell behind goes back to the
/// leader), while an in-sync follower serves the same fetch. Once the new replica is in sync,
/// a consumer in its rack is sent to it.
#[test]
fn only_in_sync_followers_serve_consumers() {
    let racks = [(1, "rack", "a"), (2, "rack", "b"), (3, "rack", "c")];
    let rack_of = |id: i32| ["a", "b", "c"][id as usize - 1];
    let c = Cluster::start_with_node_args(&[("replica-selector", "rack")], &racks);
    let (leader, joining, synced) = (1, 2, 3);
    let via = c.addr(synced);
    let topic = unique_name("catching-up");
    let admin = admin(&c.bootstrap_live());
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let placed: [&[i32]; 1] = [&[leader, synced]];
    let nt = NewTopic::new(&topic, 1, TopicReplication::Variable(&placed))
        .set("min.insync.replicas", "1");
    let created = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics");
    assert_eq!(created[0], Ok(topic.clone()));
    wait_placed(&c, &topic, &[vec![leader, synced]]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let records = 8 * 1024;
    let one = |i: usize| Outgoing {
        partition: Some(0),
        ..msg(i)
    };
    assert_eq!(
        all_ok(&produce(
            &c.bootstrap_live(),
            &topic,
            "all",
            &[],
            records,
            one
        ))
        .len(),
        records
    );

    // `joining` copies at 256 KiB/s: 8 MiB keeps it out of the ISR for half a minute.
    let listed = format!("0:{joining}");
    assert_eq!(
        alter_config(&via, 2, &topic, FOLLOWER_REPLICAS, OP_SET, Some(&listed)),
        Ok(0)
    );
    set_rate_everywhere(&c, &via, FOLLOWER_RATE, Some(256 * 1024));
    assert_eq!(
        alter_reassignment(&via, &topic, Some(&[leader, synced, joining]), None),
        (0, None)
    );
    let dir = c
        .dir()
        .join(format!("node-{joining}"))
        .join(format!("{topic}-0"));
    assert!(
        wait_until(CONVERGE_TIMEOUT, || segment_bytes(&dir) > 0),
        "node {joining} never started copying"
    );

    // Straight to each follower: the in-sync one serves, the one catching up refuses.
    let (code, bytes) = consumer_fetch_v11(&c.addr(synced), &topic).expect("fetch");
    assert_eq!(code, 0, "the in-sync follower serves a v11 consumer");
    assert!(bytes > 0, "the in-sync follower returned no records");
    assert_eq!(
        consumer_fetch_v11(&c.addr(joining), &topic),
        Ok((6, 0)),
        "a follower outside the ISR answers NOT_LEADER_OR_FOLLOWER"
    );
    // And a consumer in its rack is kept on the leader.
    let near = rack_consumer(&c, &topic, rack_of(joining));
    read_in_order(&near, 0, 200);
    wait_fetching_from(&near, leader, leader);
    drop(near);
    assert_eq!(
        listed_reassignment(&via, &topic, true).expect("List"),
        Some((vec![leader, synced, joining], vec![joining], vec![])),
        "still catching up"
    );

    // Throttle lifted: it joins the ISR, and the consumer in its rack reads from it.
    set_rate_everywhere(&c, &via, FOLLOWER_RATE, None);
    assert_eq!(
        alter_config(&via, 2, &topic, FOLLOWER_REPLICAS, OP_DELETE, None),
        Ok(0)
    );
    wait_reassigned(&c, &topic, &[leader, synced, joining], |l| l == leader);
    let near = rack_consumer(&c, &topic, rack_of(joining));
    read_in_order(&near, 0, records);
    assert_eq!(wait_fetching_from(&near, joining, leader), 0);
}

/// Growing a cluster: a fourth node started as a broker only (`--process-roles broker`, no
/// controller listener, its id outside `--voters`) registers, shows in Metadata, and shows in
/// DescribeQuorum as an observer, not a voter. Partitions placed on it are led and followed
/// there, and every acknowledged record reads back. When the quorum leader is killed, the new
/// node follows the next one: DescribeQuorum through it answers from the new leader, which
/// lists it as an observer, and a topic created afterwards shows in its own Metadata.
#[test]
fn a_broker_only_node_joins_the_cluster_and_follows_failover() {
    let mut c = Cluster::start();
    let four = c.add_broker();
    assert_eq!(four, 4);
    let joined = wait_until(CONVERGE_TIMEOUT, || {
        c.brokers().is_ok_and(|b| b == [1, 2, 3, four])
    });
    assert!(
        joined,
        "node {four} not in Metadata: {:?}\n{}",
        c.brokers(),
        c.log_tail(four, 40)
    );
    let observer_of = |row: &QuorumPartition| {
        let voters: Vec<i32> = row.current_voters.iter().map(|v| v.replica_id.0).collect();
        voters == [1, 2, 3]
            && row.observers.len() == 1
            && row.observers[0].replica_id.0 == four
            && row.observers[0].log_end_offset > 0
            && row.observers[0].last_fetch_timestamp > wall_ms() - FETCHING_MS
    };
    let mut last = None;
    let observed = wait_until(CONVERGE_TIMEOUT, || {
        let row = quorum_row(&c.addr(four), 2);
        let ok = row.as_ref().is_ok_and(observer_of);
        last = Some(row);
        ok
    });
    assert!(
        observed,
        "node {four} is not the quorum's observer: {last:?}"
    );

    // One partition led by the new node, one it follows.
    let topic = unique_name("grown");
    let lists = [vec![four, 1, 2], vec![2, four, 3]];
    let refs: Vec<&[i32]> = lists.iter().map(|l| &l[..]).collect();
    let nt = NewTopic::new(&topic, 2, TopicReplication::Variable(&refs));
    let opts = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)))
        .request_timeout(Some(Timeout::After(CONVERGE_TIMEOUT)));
    let admin = admin(&c.bootstrap_live());
    let res = block_on(admin.create_topics([&nt], &opts)).expect("CreateTopics request");
    assert!(res[0].is_ok(), "{res:?}");
    wait_placed(&c, &topic, &lists);
    let mut reports = produce_and_read(&c, &topic, 0, 2_000);

    // The quorum leader dies.
    let before = quorum_row(&c.addr(four), 2).expect("DescribeQuorum");
    let dead = before.leader_id.0;
    assert!((1..=3).contains(&dead), "a voter leads: {before:?}");
    c.kill9(dead);
    let mut last = None;
    let followed = wait_until(CONVERGE_TIMEOUT, || {
        let row = quorum_row(&c.addr(four), 2);
        let ok = row.as_ref().is_ok_and(|r| {
            r.leader_id.0 != dead && r.leader_epoch > before.leader_epoch && observer_of(r)
        });
        last = Some(row);
        ok
    });
    assert!(
        followed,
        "node {four} does not follow the next quorum leader: {last:?}\n{}",
        c.log_tail(four, 40)
    );
    // A fresh admin client from the live nodes, with short attempts: the old one may still
    // send to the dead controller it knew, and one attempt would then wait out the whole
    // timeout (seen once in a CI rehearsal).
    let after = unique_name("after-failover");
    let nt = NewTopic::new(&after, 1, TopicReplication::Fixed(2));
    let short = rdkafka::admin::AdminOptions::new()
        .operation_timeout(Some(Timeout::After(Duration::from_secs(5))))
        .request_timeout(Some(Timeout::After(Duration::from_secs(5))));
    let created = wait_until(CONVERGE_TIMEOUT, || {
        let admin = self::admin(&c.bootstrap_live());
        let res = block_on(admin.create_topics([&nt], &short));
        res.is_ok_and(|r| {
            r[0].is_ok() || matches!(&r[0], Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
        })
    });
    assert!(created, "CreateTopics after the failover");
    let shown = wait_until(CONVERGE_TIMEOUT, || {
        c.partitions_at(&c.addr(four), &after)
            .is_ok_and(|ps| ps.len() == 1 && ps[0].leader >= 0)
    });
    assert!(
        shown,
        "node {four}'s Metadata lacks {after}: {:?}",
        c.partitions_at(&c.addr(four), &after)
    );
    reports.extend(produce_and_read(&c, &topic, 2_000, 1_000));
    let got = read_back(&c, &topic, 2, &reports);
    check_acked(&got, &reports, true);
    c.assert_alive(four);
}

/// One `/metrics` scrape over plain HTTP: each sample line's name (with labels) and value.
fn scrape(addr: &str) -> Result<BTreeMap<String, f64>, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {head}"));
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The sum over `addrs` of the samples named exactly `name` (0 where a node has none yet).
fn scrape_sum(addrs: &[String], name: &str) -> f64 {
    addrs
        .iter()
        .map(|a| scrape(a).unwrap_or_else(|e| panic!("{a}: {e}")))
        .map(|m| m.get(name).copied().unwrap_or(0.0))
        .sum()
}

/// What operators alert on, as a Prometheus scrape of every broker shows it: the sum of
/// under-replicated partitions goes from 0 to every partition the killed broker held and
/// back to 0 once it rejoins; the active controller (exactly one, and only it) counts the
/// fenced broker while it is down; leaders count the records produced, the bytes their
/// followers fetched, and the ISR expansions that bring the restarted broker back.
#[test]
fn metrics_show_under_replication_while_a_broker_is_down() {
    let ports = free_ports(3);
    let metrics_addr = |id: i32| format!("127.0.0.1:{}", ports[id as usize - 1]);
    let per_node: Vec<(i32, String)> = (1..=3).map(|id| (id, metrics_addr(id))).collect();
    let per_node_args: Vec<(i32, &str, &str)> = per_node
        .iter()
        .map(|(id, a)| (*id, "metrics-listen", a.as_str()))
        .collect();
    let mut c = Cluster::start_with_node_args(&[], &per_node_args);
    let topic = unique_name("metrics");
    create_replicated(&c, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let reports = produce_and_read(&c, &topic, 0, 500);

    // Sum of one metric over the nodes in `ids` (a node that does not answer fails the sum).
    let sum = |ids: &[i32], name: &str| -> Result<f64, String> {
        let mut total = 0.0;
        for id in ids {
            let m = scrape(&metrics_addr(*id))?;
            total += m
                .get(name)
                .copied()
                .ok_or(format!("{name} missing on {id}"))?;
        }
        Ok(total)
    };
    let all = c.ids();
    let under = "kafka_server_replicamanager_underreplicatedpartitions";
    let active = "kafka_controller_kafkacontroller_activecontrollercount";
    let fenced = "kafka_controller_kafkacontroller_fencedbrokercount";
    let expands = "kafka_server_replicamanager_isrexpands_total";
    assert_eq!(sum(&all, under), Ok(0.0), "a healthy cluster");
    assert_eq!(sum(&all, active), Ok(1.0), "one active controller");
    assert!(
        sum(&all, "kafka_server_brokertopicmetrics_messagesin_total").unwrap() >= 500.0,
        "leaders count the records produced"
    );
    assert!(
        sum(
            &all,
            "kafka_server_brokertopicmetrics_replicationbytesout_total"
        )
        .unwrap()
            >= (500 * 2 * 1024) as f64,
        "followers fetched every record twice over"
    );
    assert!(
        sum(&all, "kafka_server_replicamanager_leadercount").unwrap() >= PARTITIONS as f64,
        "every partition has a leader"
    );
    let produce_times = scrape_sum(
        &all.iter().map(|id| metrics_addr(*id)).collect::<Vec<_>>(),
        "kafka_network_requestmetrics_totaltime_seconds_count{request=\"Produce\"}",
    );
    assert!(
        produce_times >= 1.0,
        "produce requests timed: {produce_times}"
    );

    // Kill a broker that is not the active controller, so the controller's counts stay in view.
    let controller = all
        .iter()
        .copied()
        .find(|id| scrape(&metrics_addr(*id)).is_ok_and(|m| m.get(active) == Some(&1.0)))
        .expect("an active controller");
    let victim = all.iter().copied().find(|&id| id != controller).unwrap();
    let expands_before = sum(&all, expands).unwrap();
    c.kill9(victim);
    let live: Vec<i32> = all.iter().copied().filter(|&id| id != victim).collect();
    let mut last = String::new();
    let degraded = wait_until(CONVERGE_TIMEOUT, || {
        let (u, f) = (sum(&live, under), sum(&[controller], fenced));
        last = format!("under-replicated {u:?}, fenced {f:?}");
        // Every partition of the topic (RF=3) had a replica on the victim, and its leaders
        // are now live nodes (the group offsets' partitions may count too).
        u.as_ref().is_ok_and(|u| *u >= PARTITIONS as f64) && f == Ok(1.0)
    });
    assert!(degraded, "after kill -9 of node {victim}: {last}");

    c.restart(victim);
    c.wait_full_isr(&topic, CONVERGE_TIMEOUT);
    let healed = wait_until(CONVERGE_TIMEOUT, || {
        let (u, f) = (sum(&all, under), sum(&[controller], fenced));
        last = format!("under-replicated {u:?}, fenced {f:?}");
        u == Ok(0.0) && f == Ok(0.0)
    });
    assert!(healed, "after node {victim} restarted: {last}");
    assert!(
        sum(&all, expands).unwrap() > expands_before,
        "leaders asked the restarted broker back into their ISRs"
    );
    assert_eq!(sum(&all, active), Ok(1.0), "still one active controller");
    check_acked(&read_back(&c, &topic, PARTITIONS, &reports), &reports, true);
}

/// The Jepsen workload's history judged as the cluster sim judges it: its summary line and
/// every problem found.
fn jepsen_verdict(outcome: &sim::workload::WorkloadOutcome) -> (String, Vec<String>) {
    let options = invariants::CheckOptions {
        final_read_complete: outcome.final_read_complete,
        ..invariants::CheckOptions::default()
    };
    let report = invariants::check_all(&outcome.history, &options);
    let mut problems: Vec<String> = report
        .violations
        .iter()
        .map(|v| v.explain(&outcome.history))
        .collect();
    problems.extend(outcome.producer_ids_reused.iter().cloned());
    problems.extend(sim::cluster::check_leaders(&outcome.leaders));
    problems.extend(sim::cluster::check_high_watermarks(
        &outcome.high_watermarks,
    ));
    if !outcome.final_read_complete {
        problems.push("the Jepsen workload's final read did not reach every high watermark".into());
    }
    if report.stats.sends_ok == 0 {
        problems.push("the Jepsen workload had no send acknowledged".into());
    }
    let explained = report.explain(&outcome.history);
    let summary = explained.lines().next().unwrap_or("").to_string();
    (summary, problems)
}

/// What the nemesis does to one node per round.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9`; the node restarts once the hold is over.
    Crash,
    /// SIGSTOP for the hold, then SIGCONT: sockets open, nothing answered.
    Freeze,
    /// SIGTERM (controlled shutdown); the node restarts once the hold is over.
    Shutdown,
    /// `kill -9` and an emptied data directory, as if its disk were replaced: the node
    /// restarts on nothing, a voter rejoining the quorum and a broker refetching every copy.
    LoseDisk,
}

const FAULTS: [Fault; 4] = [
    Fault::Crash,
    Fault::Freeze,
    Fault::Shutdown,
    Fault::LoseDisk,
];

impl Fault {
    fn strike(self, c: &mut Cluster, victim: i32) {
        match self {
            Fault::Crash => c.kill9(victim),
            Fault::Freeze => c.sigstop(victim),
            Fault::Shutdown => {
                c.sigterm(victim);
                let exited = wait_until(SHUTDOWN_TIMEOUT, || c.try_reap(victim).is_some());
                assert!(
                    exited,
                    "node {victim} did not finish a controlled shutdown in {SHUTDOWN_TIMEOUT:?}:\n{}",
                    c.log_tail(victim, 40)
                );
            }
            Fault::LoseDisk => {
                c.kill9(victim);
                std::fs::remove_dir_all(c.dir().join(format!("node-{victim}")))
                    .expect("empty the data directory");
            }
        }
    }

    fn heal(self, c: &mut Cluster, victim: i32) {
        match self {
            Fault::Freeze => c.sigcont(victim),
            Fault::Crash | Fault::Shutdown | Fault::LoseDisk => c.restart(victim),
        }
    }
}

/// How long a controlled shutdown may take before the nemesis gives up on the node.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// The nodes' log tails, for a failure message.
fn all_tails(c: &Cluster) -> String {
    c.ids()
        .into_iter()
        .map(|id| format!("--- node {id} ---\n{}", c.log_tail(id, 25)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Jepsen-style run against three real processes. For `NEMESIS_SECONDS` (60 by default) a
/// nemesis, seeded by `NEMESIS_SEED` (printed, so a schedule can be run again; timing is the
/// machine's), strikes one node at a time: a crash, a freeze, a controlled shutdown or a lost
/// disk, held for up to four seconds, then healed, and the next round waits until every ISR is
/// full again. Meanwhile two clients write and read:
///
/// * librdkafka's idempotent producer sends keyed 1 KiB records with acks=all to a 6-partition
///   RF=3 topic (min.insync.replicas=2) at a steady rate. Every record must be acknowledged
///   (one node down never stops a write), and read back at its acknowledged offset, once, in
///   order.
/// * the simulator's Jepsen workload (idempotent producers, an assigned consumer, a consumer
///   group committing offsets) on a 3-partition RF=3 topic, judged by the same `invariants`
///   checkers as the cluster sim: no lost or duplicated acknowledged write, one value per
///   offset, polls in log order, committed offsets that never go back, at most one leader per
///   leader epoch, high watermarks that never go back within an epoch.
///
/// And no node may die of anything but the nemesis.
#[test]
fn a_nemesis_of_crashes_freezes_shutdowns_and_lost_disks_loses_no_acknowledged_record() {
    use rand::{Rng, SeedableRng};

    let seconds = env_u64("NEMESIS_SECONDS", 60);
    let seed = env_u64("NEMESIS_SEED", 1);
    eprintln!("nemesis: seed {seed} for {seconds} s (NEMESIS_SEED, NEMESIS_SECONDS)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut c = Cluster::start();
    let topic = unique_name("nemesis");
    create_replicated(&c, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]);

    // librdkafka, paced so that its records span the whole run.
    let per_second = 300u64;
    let n = (per_second * seconds) as usize;
    let started = Instant::now();
    let producer = {
        let (bs, t) = (c.bootstrap_live(), topic.clone());
        thread::spawn(move || {
            let paced = move |i: usize| {
                let due = started + Duration::from_millis(i as u64 * 1000 / per_second);
                thread::sleep(due.saturating_duration_since(Instant::now()));
                msg(i)
            };
            let acked = Arc::new(AtomicUsize::new(0));
            produce_tracked(&bs, &t, "all", FAILOVER_PRODUCER, n, paced, acked, true)
        })
    };

    // The Jepsen workload, on its own thread and runtime; its final read waits for `healed`.
    let jepsen_topic = unique_name("nemesis-jepsen");
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workload = {
        let config = sim::workload::WorkloadConfig {
            bootstrap: c.addr(1),
            topic: jepsen_topic.clone(),
            partitions: 3,
            create_topic: true,
            replication_factor: 3,
            producers: 3,
            group_members: 2,
            run_for: Duration::from_secs(seconds),
            send_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(10),
            final_read_timeout: Duration::from_secs(60),
            seed,
            value_base: 0,
            client_rack: None,
            not_coordinator_may_write: false,
        };
        let healed = Arc::clone(&healed);
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("workload runtime");
            let quiesce = async move {
                while !healed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(
                &runtime,
                sim::workload::run(sim::workload::TcpConnector, config, quiesce),
            )
        })
    };

    let mut round = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(rng.gen_range(500..2_000)));
        round += 1;
        let fault = FAULTS[rng.gen_range(0..FAULTS.len())];
        let ids = c.ids();
        let victim = ids[rng.gen_range(0..ids.len())];
        let hold = Duration::from_millis(rng.gen_range(500..4_000));
        let at = started.elapsed();
        for id in c.ids() {
            c.assert_alive(id);
        }
        fault.strike(&mut c, victim);
        thread::sleep(hold);
        fault.heal(&mut c, victim);
        let heal_started = Instant::now();
        // Every copy back in sync before the next round, the group offsets' too (once a
        // group has made that topic): one node down at a time never leaves a partition with
        // fewer than min.insync.replicas.
        let mut topics = vec![topic.as_str(), jepsen_topic.as_str()];
        if c.partitions("__consumer_offsets")
            .is_ok_and(|p| !p.is_empty())
        {
            topics.push("__consumer_offsets");
        }
        for t in topics {
            if let Err(e) = c.wait_partitions(t, Duration::from_secs(60), |p| {
                p.leader >= 0 && p.isr.len() == p.replicas.len()
            }) {
                panic!(
                    "seed {seed} round {round} ({fault:?} node {victim}): {t}: ISR not full a \
                     minute after the heal: {e}\n{}",
                    all_tails(&c)
                );
            }
        }
        if matches!(fault, Fault::LoseDisk) {
            let votes = wait_until(CONVERGE_TIMEOUT, || {
                c.log_text(victim).contains("this voter votes again")
            });
            assert!(
                votes,
                "seed {seed} round {round}: node {victim}, back on an empty disk, never voted \
                 again:\n{}",
                all_tails(&c)
            );
        }
        eprintln!(
            "nemesis round {round} at {:.1} s: {fault:?} node {victim} for {:.1} s; settled in \
             {:.1} s",
            at.as_secs_f64(),
            hold.as_secs_f64(),
            heal_started.elapsed().as_secs_f64()
        );
    }
    healed.store(true, Ordering::SeqCst);

    let reports = join_all_acked(producer, "at most one node was down at a time");
    let outcome = workload.join().expect("workload thread");
    for id in c.ids() {
        c.assert_alive(id);
    }
    let got = read_back(&c, &topic, PARTITIONS, &reports);
    check_acked(&got, &reports, true);

    let (summary, problems) = jepsen_verdict(&outcome);
    eprintln!(
        "nemesis: {round} rounds; librdkafka {} records acknowledged; Jepsen workload: {summary}",
        reports.len()
    );
    if !problems.is_empty() {
        let path = c.dir().join("jepsen-history.jsonl");
        let _ = std::fs::write(&path, outcome.history.to_json_lines());
        panic!(
            "seed {seed}: the Jepsen workload's history fails {} checks (history in {}, kept \
             with CLUSTER_KEEP_LOGS=1):\n{}",
            problems.len(),
            path.display(),
            problems.join("\n")
        );
    }
}
