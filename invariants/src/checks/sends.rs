//! Monotonic sends: for each process and partition, a send invoked after an earlier send of the
//! same process completed must be acknowledged at a strictly higher offset. Sends whose
//! lifetimes overlap (pipelined producers) are not ordered and not compared. Within a process,
//! a completion and an invocation at the same instant are ordered by op id.
//!
//! With [`CheckOptions::realtime_sends`] the same rule is applied across processes: a send
//! invoked strictly after another send to the partition completed must land at a higher offset
//! (appends to a log are linearizable).
//!
//! Each violation names the earlier send holding the highest offset among those completed before
//! the later send was invoked, then the later send. Runs in O(n log n) per group by sweeping
//! sends in invocation order against completions in completion order.

use super::{CheckOptions, Index, Violation, ViolationKind};
use crate::history::{History, OpId, OpKind, ProcessId, SendResult, Time};
use std::collections::{BTreeMap, BTreeSet};

pub fn check(history: &History) -> Vec<Violation> {
    check_with(history, &CheckOptions::default())
}

pub fn check_with(history: &History, options: &CheckOptions) -> Vec<Violation> {
    check_indexed(&Index::new(history), options)
}

/// `(invoke, complete, offset, op)`.
type Ack = (Time, Time, i64, OpId);

pub(crate) fn check_indexed(index: &Index<'_>, options: &CheckOptions) -> Vec<Violation> {
    let mut per_process: BTreeMap<(ProcessId, &str, i32), Vec<Ack>> = BTreeMap::new();
    let mut per_partition: BTreeMap<(&str, i32), Vec<Ack>> = BTreeMap::new();
    for (id, op) in index.history.ops().iter().enumerate() {
        if let (
            OpKind::Send {
                topic,
                result: SendResult::Ok { partition, offset },
                ..
            },
            Some(done),
        ) = (&op.kind, op.complete)
        {
            let ack = (op.invoke, done, *offset, id);
            per_process
                .entry((op.process, topic.as_str(), *partition))
                .or_default()
                .push(ack);
            if options.realtime_sends {
                per_partition
                    .entry((topic.as_str(), *partition))
                    .or_default()
                    .push(ack);
            }
        }
    }
    let mut reported: BTreeSet<(OpId, OpId)> = BTreeSet::new();
    let mut out = Vec::new();
    for ((process, topic, partition), acks) in &per_process {
        for (a, b) in sweep(acks, false) {
            if reported.insert((a.3, b.3)) {
                out.push(violation(
                    &format!("process {process}"),
                    topic,
                    *partition,
                    a,
                    b,
                ));
            }
        }
    }
    for ((topic, partition), acks) in &per_partition {
        for (a, b) in sweep(acks, true) {
            if reported.insert((a.3, b.3)) {
                out.push(violation("real time", topic, *partition, a, b));
            }
        }
    }
    out
}

fn violation(scope: &str, topic: &str, partition: i32, a: Ack, b: Ack) -> Violation {
    Violation::new(
        ViolationKind::NonmonotonicSend,
        format!(
            "{scope}: send op {} completed at {} with {topic}/{partition}@{}, then send op {} \
             invoked at {} was acknowledged at offset {}",
            a.3, a.1, a.2, b.3, b.0, b.2
        ),
        vec![a.3, b.3],
    )
}

/// Pairs (earlier, later) where `later` was invoked after `earlier` completed yet was
/// acknowledged at an offset <= the highest offset among such earlier sends.
fn sweep(acks: &[Ack], strict: bool) -> Vec<(Ack, Ack)> {
    let mut by_invoke = acks.to_vec();
    by_invoke.sort_unstable_by_key(|a| (a.0, a.3));
    let mut by_complete = acks.to_vec();
    by_complete.sort_unstable_by_key(|a| (a.1, a.3));
    let before = |a: &Ack, b: &Ack| {
        if strict {
            a.1 < b.0
        } else {
            (a.1, a.3) < (b.0, b.3)
        }
    };
    let mut out = Vec::new();
    let mut next = 0;
    let mut max: Option<Ack> = None;
    for b in &by_invoke {
        while next < by_complete.len() && before(&by_complete[next], b) {
            let a = by_complete[next];
            if !matches!(max, Some(m) if m.2 >= a.2) {
                max = Some(a);
            }
            next += 1;
        }
        if let Some(m) = max {
            if m.3 != b.3 && m.2 >= b.2 {
                out.push((m, *b));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    #[test]
    fn increasing_and_overlapping_sends_pass() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        h.send(3, ok(1, 0)); // other partition restarts
                             // Two pipelined sends of process 5 may be acknowledged in any order.
        let a = h.b.send(5, 1000, T, None, 10, false);
        let b = h.b.send(5, 1001, T, None, 11, false);
        h.b.complete_send(b, 1002, ok(0, 2)).unwrap();
        h.b.complete_send(a, 1003, ok(0, 3)).unwrap();
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn nonmonotonic_send_is_caught() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let a = h.send(2, ok(0, 5));
        let b = h.send(3, ok(0, 4));
        let v = check(&h.build());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::NonmonotonicSend);
        assert_eq!(v[0].ops, vec![a, b]);
    }

    #[test]
    fn realtime_across_processes() {
        let mut h = H::new();
        let a = h.send_full(1, 1, false, ok(0, 5));
        let b = h.send_full(2, 2, false, ok(0, 5));
        let h = h.build();
        assert!(check(&h).is_empty());
        let rt = CheckOptions {
            realtime_sends: true,
            ..CheckOptions::default()
        };
        let v = check_with(&h, &rt);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![a, b]);
    }
}
