//! Log-level checks over replica observations.
//!
//! From `LogSample`s, per `(node, topic, partition)` in time order (ties by op id):
//! * **log-bounds**: every sample has `log_start_offset <= high_watermark <= log_end_offset`;
//! * **hw-regression**: the high watermark never decreases (names the sample holding the highest
//!   earlier watermark, then the regressing one).
//!
//! From `ReplicaLog`s, per `(topic, partition)`, over each replica's committed prefix (records at
//! offsets in `[log_start_offset, high_watermark)`):
//! * **replica-divergence**: two replicas hold different values at an offset both have
//!   committed (one violation per pair of replicas, naming both), or one replica lists two values
//!   at one offset;
//! * **replica-missing-write**: a value acknowledged by a send (acks=all) or returned by a poll at
//!   an offset inside a replica's committed range is absent there or differs (one violation per
//!   replica, naming the replica log and every send/poll it contradicts).

use super::{Index, Violation, ViolationKind};
use crate::history::{History, LogSample, OpId, OpKind, ReplicaLog, Time};
use std::collections::BTreeMap;

pub fn check(history: &History) -> Vec<Violation> {
    check_indexed(&Index::new(history))
}

pub(crate) fn check_indexed(index: &Index<'_>) -> Vec<Violation> {
    let mut out = samples(index);
    out.extend(replicas(index));
    out
}

fn samples(index: &Index<'_>) -> Vec<Violation> {
    type Group<'a> = Vec<(Time, OpId, &'a LogSample)>;
    let mut groups: BTreeMap<(u32, &str, i32), Group> = BTreeMap::new();
    for (id, op) in index.history.ops().iter().enumerate() {
        if let OpKind::LogSample(s) = &op.kind {
            groups
                .entry((s.node, s.topic.as_str(), s.partition))
                .or_default()
                .push((op.invoke, id, s));
        }
    }
    let mut out = Vec::new();
    for ((node, topic, partition), mut group) in groups {
        group.sort_unstable_by_key(|g| (g.0, g.1));
        let mut max: Option<(i64, OpId)> = None;
        for (time, id, s) in group {
            if !(s.log_start_offset <= s.high_watermark && s.high_watermark <= s.log_end_offset) {
                out.push(Violation::new(
                    ViolationKind::LogBounds,
                    format!(
                        "node {node} {topic}/{partition} at {time}: log start {} / high watermark {} / \
                         log end {} are out of order",
                        s.log_start_offset, s.high_watermark, s.log_end_offset
                    ),
                    vec![id],
                ));
            }
            match max {
                Some((hw, by)) if s.high_watermark < hw => out.push(Violation::new(
                    ViolationKind::HighWatermarkRegression,
                    format!(
                        "node {node} {topic}/{partition}: high watermark {hw} (op {by}) went back to {} \
                         at {time} (op {id})",
                        s.high_watermark
                    ),
                    vec![by, id],
                )),
                Some((hw, _)) if s.high_watermark == hw => {}
                _ => max = Some((s.high_watermark, id)),
            }
        }
    }
    out
}

/// A replica's committed records, sorted and distinct by offset.
struct Committed<'a> {
    op: OpId,
    log: &'a ReplicaLog,
    records: Vec<(i64, u64)>,
}

impl Committed<'_> {
    fn covers(&self, offset: i64) -> bool {
        self.log.log_start_offset <= offset && offset < self.log.high_watermark
    }

    fn value_at(&self, offset: i64) -> Option<u64> {
        self.records
            .binary_search_by_key(&offset, |r| r.0)
            .ok()
            .and_then(|i| self.records.get(i))
            .map(|r| r.1)
    }
}

fn replicas(index: &Index<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut groups: BTreeMap<(&str, i32), Vec<Committed>> = BTreeMap::new();
    for (id, op) in index.history.ops().iter().enumerate() {
        let OpKind::ReplicaLog(log) = &op.kind else {
            continue;
        };
        let mut c = Committed {
            op: id,
            log,
            records: Vec::new(),
        };
        c.records = log
            .records
            .iter()
            .copied()
            .filter(|r| c.covers(r.0))
            .collect();
        c.records.sort_unstable();
        if let Some(w) = c
            .records
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1)
        {
            out.push(Violation::new(
                ViolationKind::ReplicaDivergence,
                format!(
                    "node {} {}/{} lists two values at offset {}: {} and {}",
                    log.node, log.topic, log.partition, w[0].0, w[0].1, w[1].1
                ),
                vec![id],
            ));
        }
        c.records.dedup_by_key(|r| r.0);
        groups
            .entry((log.topic.as_str(), log.partition))
            .or_default()
            .push(c);
    }

    for (tp, reps) in &groups {
        let (topic, partition) = *tp;
        // Pairwise agreement of committed prefixes.
        for (i, a) in reps.iter().enumerate() {
            for b in reps.iter().skip(i + 1) {
                let (mut x, mut y) = (0, 0);
                let mut first: Option<(i64, u64, u64)> = None;
                let mut count = 0usize;
                while let (Some(ra), Some(rb)) = (a.records.get(x), b.records.get(y)) {
                    if ra.0 < rb.0 {
                        x += 1;
                    } else if rb.0 < ra.0 {
                        y += 1;
                    } else {
                        if ra.1 != rb.1 {
                            count += 1;
                            first.get_or_insert((ra.0, ra.1, rb.1));
                        }
                        x += 1;
                        y += 1;
                    }
                }
                if let Some((o, va, vb)) = first {
                    out.push(Violation::new(
                        ViolationKind::ReplicaDivergence,
                        format!(
                            "nodes {} and {} disagree on {count} committed offsets of {topic}/{partition}; \
                             first at {o}: {va} vs {vb}",
                            a.log.node, b.log.node
                        ),
                        vec![a.op, b.op],
                    ));
                }
            }
        }
        // Acknowledged and read values must be in every replica that committed their offset.
        let acks = index.acks.get(tp).map(Vec::as_slice).unwrap_or(&[]);
        let reads = index.reads.get(tp).map(Vec::as_slice).unwrap_or(&[]);
        for rep in reps {
            let mut bad: Vec<String> = Vec::new();
            let mut ops: Vec<OpId> = vec![rep.op];
            for (what, obs) in [("acked", acks), ("read", reads)] {
                for &(offset, value, by) in obs {
                    if !rep.covers(offset) {
                        continue;
                    }
                    let found = rep.value_at(offset);
                    if found == Some(value) {
                        continue;
                    }
                    if bad.len() < 5 {
                        bad.push(match found {
                            None => format!("{value}@{offset} {what} by op {by} is absent"),
                            Some(f) => format!("{value}@{offset} {what} by op {by} holds {f}"),
                        });
                    }
                    ops.push(by);
                }
            }
            if ops.len() > 1 {
                let n = ops.len() - 1;
                let mut sorted = ops.split_off(1);
                sorted.sort_unstable();
                sorted.dedup();
                ops.extend(sorted);
                out.push(Violation::new(
                    ViolationKind::ReplicaMissingWrite,
                    format!(
                        "node {} {topic}/{partition} (committed [{}, {})) contradicts {n} acknowledged \
                         or read records: {}{}",
                        rep.log.node,
                        rep.log.log_start_offset,
                        rep.log.high_watermark,
                        bad.join("; "),
                        if n > bad.len() { "; …" } else { "" }
                    ),
                    ops,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    fn sample(h: &mut H, node: u32, start: i64, hw: i64, end: i64) -> OpId {
        h.now += 10;
        h.b.log_sample(
            h.now,
            LogSample {
                node,
                topic: T.into(),
                partition: 0,
                log_start_offset: start,
                high_watermark: hw,
                log_end_offset: end,
            },
        )
    }

    fn replica(h: &mut H, node: u32, hw: i64, records: &[(i64, u64)]) -> OpId {
        h.now += 10;
        h.b.replica_log(
            h.now,
            ReplicaLog {
                node,
                topic: T.into(),
                partition: 0,
                log_start_offset: 0,
                high_watermark: hw,
                records: records.to_vec(),
            },
        )
    }

    #[test]
    fn healthy_logs_pass() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        h.send(3, indeterminate());
        sample(&mut h, 1, 0, 1, 2);
        sample(&mut h, 2, 0, 0, 1);
        sample(&mut h, 1, 0, 2, 2);
        sample(&mut h, 1, 1, 2, 3);
        replica(&mut h, 1, 2, &[(0, 1), (1, 2), (2, 3)]);
        replica(&mut h, 2, 1, &[(0, 1), (1, 99)]); // offset 1 is uncommitted on node 2
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn hw_going_backwards() {
        let mut h = H::new();
        sample(&mut h, 1, 0, 3, 3);
        let high = sample(&mut h, 1, 0, 5, 5);
        sample(&mut h, 2, 0, 1, 5); // other node: independent
        let low = sample(&mut h, 1, 0, 4, 5);
        let v = check(&h.build());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::HighWatermarkRegression);
        assert_eq!(v[0].ops, vec![high, low]);
    }

    #[test]
    fn log_start_above_hw() {
        let mut h = H::new();
        sample(&mut h, 1, 0, 3, 3);
        let bad = sample(&mut h, 1, 4, 3, 5);
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::LogBounds);
        assert_eq!(v[0].ops, vec![bad]);
    }

    #[test]
    fn divergent_replica_prefixes() {
        let mut h = H::new();
        let a = replica(&mut h, 1, 3, &[(0, 1), (1, 2), (2, 3)]);
        let b = replica(&mut h, 2, 3, &[(0, 1), (1, 7), (2, 3)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::ReplicaDivergence);
        assert_eq!(v[0].ops, vec![a, b]);
    }

    #[test]
    fn acked_write_missing_from_replica() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let s = h.send(2, ok(0, 1));
        h.send(3, ok(0, 2)); // beyond node 1's hw: not required there
        let r = replica(&mut h, 1, 2, &[(0, 1)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::ReplicaMissingWrite);
        assert_eq!(v[0].ops, vec![r, s]);
    }
}
