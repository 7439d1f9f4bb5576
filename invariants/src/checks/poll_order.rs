//! Order of records delivered to consumers.
//!
//! Within one poll, per partition, in the order received:
//! * **poll-inversion**: an offset not strictly greater than the previous record's;
//! * **poll-skip**: two consecutive records with an offset between them that is *known* to hold
//!   a record — acknowledged by some send or returned by some poll — which this poll did not
//!   return. Gaps over offsets never acknowledged nor read (failed or indeterminate batches,
//!   transaction markers) are legal. Names the poll, then the op establishing the skipped offset.
//!
//! Across polls of one process using manual assignment (`Assign`), per partition, until the
//! next `Assign`/`Subscribe` of the topic, `Seek` of the partition, or failed poll of the topic:
//! * **nonmonotonic-poll**: a poll whose first record of the partition is at or before the
//!   previous poll's last record (names the previous poll, then this one);
//! * **inter-poll-skip**: a known offset strictly between the previous poll's last record and
//!   this poll's first one (names the previous poll, this poll, and the op establishing it).
//!
//! Consumers in group mode (`Subscribe`) may be rebalanced and are only checked within polls.

use super::{Index, Tp, Violation, ViolationKind};
use crate::history::{History, OpId, OpKind, PollResult, ProcessId, Record, Time};
use std::collections::BTreeMap;

pub fn check(history: &History) -> Vec<Violation> {
    check_indexed(&Index::new(history))
}

pub(crate) fn check_indexed(index: &Index<'_>) -> Vec<Violation> {
    let mut out = within_polls(index);
    out.extend(across_polls(index));
    out
}

/// The poll's records grouped by partition, each group in received order:
/// `(partition, offsets)`.
fn by_partition(records: &[Record]) -> Vec<(i32, Vec<i64>)> {
    let mut keyed: Vec<(i32, usize, i64)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.partition, i, r.offset))
        .collect();
    keyed.sort_unstable();
    let mut out: Vec<(i32, Vec<i64>)> = Vec::new();
    for (p, _, o) in keyed {
        match out.last_mut() {
            Some((lp, v)) if *lp == p => v.push(o),
            _ => out.push((p, vec![o])),
        }
    }
    out
}

fn within_polls(index: &Index<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, op) in index.history.ops().iter().enumerate() {
        let OpKind::Poll {
            topic,
            result: PollResult::Ok(records),
        } = &op.kind
        else {
            continue;
        };
        for (partition, offsets) in by_partition(records) {
            let tp: Tp = (topic.as_str(), partition);
            let mut sorted = offsets.clone();
            sorted.sort_unstable();
            for w in offsets.windows(2) {
                let (a, b) = (w[0], w[1]);
                if b <= a {
                    out.push(Violation::new(
                        ViolationKind::PollInversion,
                        format!("op {id} returned {topic}/{partition}@{a} and then offset {b}"),
                        vec![id],
                    ));
                    continue;
                }
                // Known offsets in (a, b) that this poll itself returned elsewhere are not
                // skipped (they are inversions); look past at most that many.
                let in_poll =
                    sorted.partition_point(|&o| o < b) - sorted.partition_point(|&o| o <= a);
                let skipped = index
                    .known_between(&tp, a, b)
                    .iter()
                    .take(in_poll + 1)
                    .find(|k| sorted.binary_search(&k.0).is_err());
                if let Some(&(k, by)) = skipped {
                    out.push(Violation::new(
                        ViolationKind::PollSkip,
                        format!(
                            "op {id} returned {topic}/{partition}@{a} then @{b}, skipping offset {k} \
                             (known from op {by})"
                        ),
                        vec![id, by],
                    ));
                }
            }
        }
    }
    out
}

fn across_polls(index: &Index<'_>) -> Vec<Violation> {
    let ops = index.history.ops();
    let mut by_process: BTreeMap<ProcessId, Vec<(Time, OpId)>> = BTreeMap::new();
    for (id, op) in ops.iter().enumerate() {
        if matches!(
            op.kind,
            OpKind::Poll { .. }
                | OpKind::Assign { .. }
                | OpKind::Subscribe { .. }
                | OpKind::Seek { .. }
        ) {
            by_process
                .entry(op.process)
                .or_default()
                .push((op.invoke, id));
        }
    }
    let mut out = Vec::new();
    for (_, mut seq) in by_process {
        seq.sort_unstable();
        let mut assigned: BTreeMap<&str, bool> = BTreeMap::new();
        // (topic, partition) -> (last offset returned, poll that returned it)
        let mut position: BTreeMap<Tp, (i64, OpId)> = BTreeMap::new();
        for (_, id) in seq {
            let Some(op) = ops.get(id) else { continue };
            match &op.kind {
                OpKind::Assign { topic, .. } => {
                    assigned.insert(topic.as_str(), true);
                    position.retain(|k, _| k.0 != topic.as_str());
                }
                OpKind::Subscribe { topic } => {
                    assigned.insert(topic.as_str(), false);
                    position.retain(|k, _| k.0 != topic.as_str());
                }
                OpKind::Seek {
                    topic, partition, ..
                } => {
                    position.remove(&(topic.as_str(), *partition));
                }
                OpKind::Poll { topic, result } => {
                    let records = match result {
                        PollResult::Ok(records) => records,
                        PollResult::Failed(_) => {
                            position.retain(|k, _| k.0 != topic.as_str());
                            continue;
                        }
                    };
                    if assigned.get(topic.as_str()) != Some(&true) {
                        continue;
                    }
                    for (partition, offsets) in by_partition(records) {
                        let tp: Tp = (topic.as_str(), partition);
                        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
                            continue;
                        };
                        if let Some(&(prev, prev_op)) = position.get(&tp) {
                            if first <= prev {
                                out.push(Violation::new(
                                    ViolationKind::NonmonotonicPoll,
                                    format!(
                                        "op {prev_op} ended {topic}/{partition} at offset {prev}, \
                                         then op {id} (same process, no seek) started at {first}"
                                    ),
                                    vec![prev_op, id],
                                ));
                            } else if let Some(&(k, by)) =
                                index.known_between(&tp, prev, first).first()
                            {
                                out.push(Violation::new(
                                    ViolationKind::InterPollSkip,
                                    format!(
                                        "op {prev_op} ended {topic}/{partition} at offset {prev}, \
                                         then op {id} started at {first}, skipping offset {k} \
                                         (known from op {by})"
                                    ),
                                    vec![prev_op, id, by],
                                ));
                            }
                        }
                        position.insert(tp, (last, id));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    fn kinds(v: &[Violation]) -> Vec<ViolationKind> {
        v.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn ordered_polls_pass() {
        let mut h = H::new();
        for (v, o) in [(1, 0), (2, 1), (3, 2), (4, 3)] {
            h.send(v, ok(0, o));
        }
        h.send(5, ok(1, 0));
        h.assign(1, &[0, 1]);
        h.poll_by(1, &[(0, 0, 1), (1, 0, 5), (0, 1, 2)]);
        h.poll_by(1, &[(0, 2, 3)]);
        h.poll_by(1, &[]);
        h.poll_by(1, &[(0, 3, 4)]);
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn skip_within_poll() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let mid = h.send(2, ok(0, 1));
        h.send(3, ok(0, 2));
        let p = h.poll(&[(0, 0, 1), (0, 2, 3)]);
        let v = check(&h.build());
        assert_eq!(kinds(&v), vec![ViolationKind::PollSkip]);
        assert_eq!(v[0].ops, vec![p, mid]);
    }

    #[test]
    fn inversion_within_poll() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        let p = h.poll(&[(0, 1, 2), (0, 0, 1)]);
        let v = check(&h.build());
        assert_eq!(kinds(&v), vec![ViolationKind::PollInversion]);
        assert_eq!(v[0].ops, vec![p]);
    }

    #[test]
    fn gap_over_failed_and_indeterminate_batches_is_legal() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, failed());
        h.send(3, indeterminate());
        h.send(4, ok(0, 3)); // offsets 1 and 2: aborted batch / control record
        h.assign(1, &[0]);
        h.poll_by(1, &[(0, 0, 1), (0, 3, 4)]);
        h.send(5, ok(0, 6));
        h.poll_by(1, &[(0, 6, 5)]);
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn poll_going_backwards_under_assign() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        h.assign(1, &[0]);
        let first = h.poll_by(1, &[(0, 0, 1), (0, 1, 2)]);
        let second = h.poll_by(1, &[(0, 1, 2)]);
        let v = check(&h.build());
        assert_eq!(kinds(&v), vec![ViolationKind::NonmonotonicPoll]);
        assert_eq!(v[0].ops, vec![first, second]);
    }

    #[test]
    fn seek_and_subscribe_allow_going_backwards() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        h.assign(1, &[0]);
        h.poll_by(1, &[(0, 0, 1), (0, 1, 2)]);
        h.seek(1, 0, 0);
        h.poll_by(1, &[(0, 0, 1)]);
        // Another process in group mode may be handed the partition at any position.
        let t = h.now + 1;
        h.b.push(2, t, OpKind::Subscribe { topic: T.into() });
        h.poll_by(2, &[(0, 1, 2)]);
        h.poll_by(2, &[(0, 0, 1)]);
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn skip_across_polls_under_assign() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let mid = h.send(2, ok(0, 1));
        h.send(3, ok(0, 2));
        h.assign(1, &[0]);
        let a = h.poll_by(1, &[(0, 0, 1)]);
        let b = h.poll_by(1, &[(0, 2, 3)]);
        let v = check(&h.build());
        assert_eq!(kinds(&v), vec![ViolationKind::InterPollSkip]);
        assert_eq!(v[0].ops, vec![a, b, mid]);
    }
}
