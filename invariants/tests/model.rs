//! Property tests: histories generated from a simple model of a correct log always pass every
//! check; a single targeted corruption is caught by the relevant checker; arbitrary garbage never
//! makes a checker panic and is checked deterministically.

use invariants::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const TOPICS: [&str; 2] = ["a", "b"];
const NODES: u32 = 3;

/// A generated history plus facts about it that the mutations need.
#[derive(Debug)]
struct Generated {
    history: History,
    /// Op ids of the polls of the final full read.
    final_polls: Vec<OpId>,
}

struct Model {
    b: HistoryBuilder,
    now: Time,
    partitions: i32,
    /// Per (topic, partition): the log; `None` is an offset without a visible record
    /// (a control record / aborted batch).
    logs: BTreeMap<(usize, i32), Vec<Option<u64>>>,
    /// Consumer positions: (consumer, partition) -> next offset.
    positions: BTreeMap<(u64, i32), i64>,
    next_value: u64,
}

impl Model {
    fn tick(&mut self) -> Time {
        self.now += 5;
        self.now
    }

    fn log(&mut self, topic: usize, partition: i32) -> &mut Vec<Option<u64>> {
        self.logs.entry((topic, partition)).or_default()
    }

    fn send(&mut self, process: u64, topic: usize, partition: i32, outcome: u32, idempotent: bool) {
        let value = self.next_value;
        self.next_value += 1;
        let t = self.tick();
        let op = self.b.send(
            process,
            t,
            TOPICS[topic],
            Some(value % 7),
            value,
            idempotent,
        );
        let t = self.tick();
        let log = self.log(topic, partition);
        let result = match outcome % 6 {
            0..=2 => {
                log.push(Some(value));
                SendResult::Ok {
                    partition,
                    offset: log.len() as i64 - 1,
                }
            }
            3 => SendResult::Failed {
                error: "not leader".into(),
            },
            4 => {
                log.push(Some(value));
                SendResult::Indeterminate {
                    error: "timeout".into(),
                }
            }
            _ => {
                // Never completes; maybe written.
                if outcome % 12 == 5 {
                    log.push(Some(value));
                }
                return;
            }
        };
        self.b.complete_send(op, t, result).unwrap();
    }

    /// Consumer `c` (reading topic `c % 2`) polls up to `n` records of each partition.
    fn poll(&mut self, consumer: u64, n: u32, rotate: i32) {
        let topic = (consumer % 2) as usize;
        let t = self.tick();
        let op = self.b.poll(consumer, t, TOPICS[topic]);
        let mut records = Vec::new();
        for i in 0..self.partitions {
            let p = (i + rotate).rem_euclid(self.partitions);
            let mut pos = *self.positions.get(&(consumer, p)).unwrap_or(&0);
            let log = self.logs.get(&(topic, p)).cloned().unwrap_or_default();
            let mut taken = 0;
            while taken < n && (pos as usize) < log.len() {
                if let Some(v) = log[pos as usize] {
                    records.push(Record::new(p, pos, v));
                    taken += 1;
                }
                pos += 1;
            }
            self.positions.insert((consumer, p), pos);
        }
        let t = self.tick();
        self.b
            .complete_poll(op, t, PollResult::Ok(records))
            .unwrap();
    }
}

fn generate(partitions: i32, steps: &[(u8, u32, u32)]) -> Generated {
    let mut m = Model {
        b: HistoryBuilder::new(),
        now: 0,
        partitions,
        logs: BTreeMap::new(),
        positions: BTreeMap::new(),
        next_value: 1,
    };
    let consumers = [10u64, 11, 12];
    for &c in &consumers {
        let t = m.tick();
        m.b.push(
            c,
            t,
            OpKind::Assign {
                topic: TOPICS[(c % 2) as usize].into(),
                partitions: (0..partitions).collect(),
            },
        );
    }
    for &(action, a, b) in steps {
        let topic = (a % 2) as usize;
        let partition = (a / 2 % partitions as u32) as i32;
        match action % 8 {
            0..=2 => m.send((b % 3) as u64, topic, partition, b / 3, a % 3 == 0),
            3 => m.log(topic, partition).push(None),
            4 | 5 => m.poll(
                consumers[(b % 3) as usize],
                a % 4,
                (b / 3) as i32 % partitions,
            ),
            6 => {
                let c = consumers[(b % 3) as usize];
                let topic = (c % 2) as usize;
                let len = m.logs.get(&(topic, partition)).map_or(0, Vec::len) as i64;
                let offset = (a as i64 / 7) % (len + 1);
                let t = m.tick();
                m.b.push(
                    c,
                    t,
                    OpKind::Seek {
                        topic: TOPICS[topic].into(),
                        partition,
                        offset,
                    },
                );
                m.positions.insert((c, partition), offset);
            }
            _ => {
                let len = m.logs.get(&(topic, partition)).map_or(0, Vec::len) as i64;
                let t = m.tick();
                m.b.log_sample(
                    t,
                    LogSample {
                        node: b % NODES,
                        topic: TOPICS[topic].into(),
                        partition,
                        log_start_offset: 0,
                        high_watermark: len,
                        log_end_offset: len + (b % 2) as i64,
                    },
                );
            }
        }
    }
    // Final complete read by two fresh consumers, one per topic.
    let mut final_polls = Vec::new();
    for c in [20u64, 21] {
        let t = m.tick();
        m.b.push(
            c,
            t,
            OpKind::Assign {
                topic: TOPICS[(c % 2) as usize].into(),
                partitions: (0..partitions).collect(),
            },
        );
        let op_index = m.b.len();
        m.poll(c, u32::MAX, 0);
        final_polls.push(op_index);
    }
    // Replica logs: node 0 fully caught up, node 1 lagging by one committed record.
    let logs = m.logs.clone();
    for ((topic, partition), log) in logs {
        for node in 0..2u32 {
            let hw = (log.len() as i64 - node as i64).max(0);
            let t = m.tick();
            m.b.replica_log(
                t,
                ReplicaLog {
                    node,
                    topic: TOPICS[topic].into(),
                    partition,
                    log_start_offset: 0,
                    high_watermark: hw,
                    records: log
                        .iter()
                        .enumerate()
                        .filter_map(|(o, v)| v.map(|v| (o as i64, v)))
                        .collect(),
                },
            );
        }
    }
    Generated {
        history: m.b.build(),
        final_polls,
    }
}

fn strict() -> CheckOptions {
    CheckOptions {
        final_read_complete: true,
        non_idempotent_duplicates_are_violations: true,
        unknown_values_are_violations: true,
        realtime_sends: true,
    }
}

fn steps() -> impl Strategy<Value = Vec<(u8, u32, u32)>> {
    prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 0..120)
}

/// Per-partition runs of a poll: `(index of record, index of next record of that partition)`.
fn same_partition_pairs(records: &[Record]) -> Vec<(usize, usize)> {
    let mut last: BTreeMap<i32, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(prev) = last.insert(r.partition, i) {
            out.push((prev, i));
        }
    }
    out
}

fn poll_records_mut(op: &mut Op) -> Option<&mut Vec<Record>> {
    match &mut op.kind {
        OpKind::Poll {
            result: PollResult::Ok(records),
            ..
        } => Some(records),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_histories_are_valid(partitions in 1i32..4, steps in steps()) {
        let g = generate(partitions, &steps);
        let report = check_all(&g.history, &strict());
        prop_assert!(report.is_valid(), "{}", report.explain(&g.history));
        let back = History::from_json_lines(&g.history.to_json_lines()).unwrap();
        prop_assert_eq!(&back, &g.history);
    }

    #[test]
    fn mutations_are_caught(partitions in 1i32..4, steps in steps(), which in 0usize..5, pick in any::<usize>()) {
        let g = generate(partitions, &steps);
        let mut ops = g.history.clone().into_ops();
        // Candidate (poll, i, j) pairs of consecutive same-partition records in non-final polls.
        let mut pairs = Vec::new();
        for (id, op) in ops.iter().enumerate() {
            if g.final_polls.contains(&id) {
                continue;
            }
            if let OpKind::Poll { result: PollResult::Ok(records), .. } = &op.kind {
                for (i, j) in same_partition_pairs(records) {
                    pairs.push((id, i, j));
                }
            }
        }
        let replicas: Vec<OpId> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| matches!(&op.kind, OpKind::ReplicaLog(l) if l.high_watermark > 0 && !l.records.is_empty()))
            .map(|(id, _)| id)
            .collect();
        let expected;
        match which {
            // Drop a record that has a predecessor and a successor of its partition in the same
            // poll: its offset is known (the final read returns it), so the poll skipped it.
            0 => {
                let triples: Vec<(OpId, usize)> = pairs
                    .iter()
                    .filter(|&&(id, _, j)| pairs.iter().any(|&(id2, i2, _)| id2 == id && i2 == j))
                    .map(|&(id, _, j)| (id, j))
                    .collect();
                prop_assume!(!triples.is_empty());
                let (id, j) = triples[pick % triples.len()];
                poll_records_mut(&mut ops[id]).unwrap().remove(j);
                expected = vec![ViolationKind::PollSkip];
            }
            // Swap two consecutive records of one partition.
            1 => {
                prop_assume!(!pairs.is_empty());
                let (id, i, j) = pairs[pick % pairs.len()];
                poll_records_mut(&mut ops[id]).unwrap().swap(i, j);
                expected = vec![ViolationKind::PollInversion];
            }
            // Change a read value to one nobody sent.
            2 => {
                prop_assume!(!pairs.is_empty());
                let (id, i, _) = pairs[pick % pairs.len()];
                poll_records_mut(&mut ops[id]).unwrap()[i].value = 1_000_000_007;
                expected = vec![ViolationKind::UnknownValue, ViolationKind::InconsistentOffset];
            }
            // Change a read value to another value of the same topic (read elsewhere).
            3 => {
                prop_assume!(!pairs.is_empty());
                let (id, i, j) = pairs[pick % pairs.len()];
                let records = poll_records_mut(&mut ops[id]).unwrap();
                records[i].value = records[j].value;
                expected = vec![ViolationKind::InconsistentOffset];
            }
            // Corrupt a committed record of a replica.
            _ => {
                prop_assume!(!replicas.is_empty());
                let id = replicas[pick % replicas.len()];
                let OpKind::ReplicaLog(log) = &mut ops[id].kind else { unreachable!() };
                let hw = log.high_watermark;
                let committed: Vec<usize> = (0..log.records.len()).filter(|&k| log.records[k].0 < hw).collect();
                prop_assume!(!committed.is_empty());
                let k = committed[pick / 7 % committed.len()];
                log.records[k].1 = 1_000_000_009;
                expected = vec![ViolationKind::ReplicaMissingWrite];
            }
        }
        let mutated = History::new(ops);
        let report = check_all(&mutated, &strict());
        for kind in expected {
            prop_assert!(report.has(kind), "expected {kind} after mutation {which}:\n{}", report.explain(&mutated));
        }
    }

    #[test]
    fn garbage_never_panics(ops in prop::collection::vec(arb_op(), 0..60)) {
        let h = History::new(ops);
        let opts = strict();
        let a = check_all(&h, &opts);
        let b = check_all(&h, &opts);
        prop_assert_eq!(&a, &b);
        let _ = a.to_string();
        let _ = a.explain(&h);
        for v in &a.violations {
            prop_assert!(v.ops.iter().all(|&id| id < h.len()), "{v}");
        }
    }
}

fn small_offset() -> impl Strategy<Value = i64> {
    prop_oneof![-2i64..6, Just(i64::MAX), Just(i64::MIN)]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let topic = prop_oneof![Just("a".to_string()), Just("b".to_string())];
    let kind = prop_oneof![
        (
            topic.clone(),
            0u64..6,
            any::<bool>(),
            0u8..3,
            -1i32..3,
            small_offset()
        )
            .prop_map(
                |(topic, value, idempotent, r, partition, offset)| OpKind::Send {
                    topic,
                    key: None,
                    value,
                    idempotent,
                    result: match r {
                        0 => SendResult::Ok { partition, offset },
                        1 => SendResult::Failed { error: "x".into() },
                        _ => SendResult::Indeterminate { error: "y".into() },
                    },
                }
            ),
        (
            topic.clone(),
            prop::collection::vec((-1i32..3, small_offset(), 0u64..8), 0..8)
        )
            .prop_map(|(topic, recs)| OpKind::Poll {
                topic,
                result: PollResult::Ok(
                    recs.into_iter()
                        .map(|(p, o, v)| Record::new(p, o, v))
                        .collect()
                ),
            }),
        (topic.clone(), prop::collection::vec(-1i32..3, 0..3))
            .prop_map(|(topic, partitions)| OpKind::Assign { topic, partitions }),
        topic.clone().prop_map(|topic| OpKind::Subscribe { topic }),
        (topic.clone(), -1i32..3, small_offset()).prop_map(|(topic, partition, offset)| {
            OpKind::Seek {
                topic,
                partition,
                offset,
            }
        }),
        (
            topic.clone(),
            0u32..3,
            -1i32..3,
            small_offset(),
            small_offset(),
            small_offset()
        )
            .prop_map(
                |(topic, node, partition, s, h, e)| OpKind::LogSample(LogSample {
                    node,
                    topic,
                    partition,
                    log_start_offset: s,
                    high_watermark: h,
                    log_end_offset: e,
                })
            ),
        (
            topic,
            0u32..3,
            -1i32..3,
            small_offset(),
            small_offset(),
            prop::collection::vec((small_offset(), 0u64..8), 0..6)
        )
            .prop_map(
                |(topic, node, partition, s, hw, records)| OpKind::ReplicaLog(ReplicaLog {
                    node,
                    topic,
                    partition,
                    log_start_offset: s,
                    high_watermark: hw,
                    records,
                })
            ),
    ];
    (0u64..4, any::<u64>(), prop::option::of(any::<u64>()), kind).prop_map(
        |(process, invoke, complete, kind)| Op {
            id: 0,
            process,
            invoke,
            complete,
            kind,
        },
    )
}

#[test]
fn report_display_names_ops() {
    let mut b = HistoryBuilder::new();
    let s = b.send(1, 1, "t", None, 5, true);
    b.complete_send(
        s,
        2,
        SendResult::Ok {
            partition: 0,
            offset: 0,
        },
    )
    .unwrap();
    let p = b.poll(2, 3, "t");
    b.complete_poll(p, 4, PollResult::Ok(vec![Record::new(0, 1, 6)]))
        .unwrap();
    let h = b.build();
    let report = check_all(&h, &CheckOptions::default());
    assert!(!report.is_valid());
    assert!(report.has(ViolationKind::LostWrite));
    assert!(report.has(ViolationKind::UnknownValue));
    let text = report.to_string();
    assert!(text.starts_with("INVALID: 2 ops; sends ok=1"), "{text}");
    assert!(
        text.contains("[lost-write] value 5 acknowledged at t/0@0 by op 0"),
        "{text}"
    );
    assert!(text.contains("(ops 0, 1)"), "{text}");
    let explained = report.explain(&h);
    assert!(
        explained.contains("op 1 p2 @3..4 poll t -> 1 records [0@1=6]"),
        "{explained}"
    );
    assert_eq!(report.counts().get(&ViolationKind::LostWrite), Some(&1));
}

/// A few hundred thousand ops run through every checker (guards against quadratic behaviour).
#[test]
fn large_history() {
    let mut b = HistoryBuilder::new();
    let mut t = 0;
    let mut logs = vec![Vec::new(); 4];
    let consumer = 1000;
    b.push(
        consumer,
        0,
        OpKind::Assign {
            topic: "t".into(),
            partitions: vec![0, 1, 2, 3],
        },
    );
    let mut pos = [0usize; 4];
    for v in 0..200_000u64 {
        t += 2;
        let p = (v % 4) as usize;
        let op = b.send(v % 16, t, "t", None, v, true);
        logs[p].push(v);
        b.complete_send(
            op,
            t + 1,
            SendResult::Ok {
                partition: p as i32,
                offset: logs[p].len() as i64 - 1,
            },
        )
        .unwrap();
        if v % 4 == 3 {
            let op = b.poll(consumer, t + 1, "t");
            let mut recs = Vec::new();
            for (p, log) in logs.iter().enumerate() {
                while pos[p] < log.len() {
                    recs.push(Record::new(p as i32, pos[p] as i64, log[pos[p]]));
                    pos[p] += 1;
                }
            }
            b.complete_poll(op, t + 2, PollResult::Ok(recs)).unwrap();
        }
    }
    for (p, log) in logs.iter().enumerate() {
        for node in 0..3 {
            b.replica_log(
                t + 10,
                ReplicaLog {
                    node,
                    topic: "t".into(),
                    partition: p as i32,
                    log_start_offset: 0,
                    high_watermark: log.len() as i64,
                    records: log
                        .iter()
                        .enumerate()
                        .map(|(o, v)| (o as i64, *v))
                        .collect(),
                },
            );
        }
    }
    let h = b.build();
    let report = check_all(&h, &strict());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.stats.sends_ok, 200_000);
    assert_eq!(report.stats.reads, 200_000);
}
