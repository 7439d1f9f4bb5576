//! Reads of values that should not exist (yet).
//!
//! * **aborted-read**: a polled value all of whose sends definitely failed
//!   (`SendResult::Failed`). Names the send(s) and the first poll that returned it.
//! * **unknown-value**: a polled value that no send to that topic wrote (only when
//!   [`CheckOptions::unknown_values_are_violations`]; a workload on a pre-populated topic should
//!   turn it off).
//! * **read-before-write**: a poll that completed strictly before every send of a value it
//!   returned was even invoked. Names the earliest such send and the poll.

use super::{CheckOptions, Index, Violation, ViolationKind};
use crate::history::{History, OpId, OpKind, PollResult, SendResult, Time};
use std::collections::BTreeMap;

pub fn check(history: &History) -> Vec<Violation> {
    check_with(history, &CheckOptions::default())
}

pub fn check_with(history: &History, options: &CheckOptions) -> Vec<Violation> {
    check_indexed(&Index::new(history), options)
}

pub(crate) fn check_indexed(index: &Index<'_>, options: &CheckOptions) -> Vec<Violation> {
    let mut out = Vec::new();
    let ops = index.history.ops();
    for (&(topic, value), &poll) in &index.read_values {
        let sends = index.sends_of(topic, value);
        if sends.is_empty() {
            if options.unknown_values_are_violations {
                out.push(Violation::new(
                    ViolationKind::UnknownValue,
                    format!(
                        "op {poll} read value {value} from {topic}, which no send to {topic} wrote"
                    ),
                    vec![poll],
                ));
            }
            continue;
        }
        let all_failed = sends.iter().all(|&s| {
            matches!(
                ops.get(s).map(|op| &op.kind),
                Some(OpKind::Send {
                    result: SendResult::Failed { .. },
                    ..
                })
            )
        });
        if all_failed {
            let mut v = sends.to_vec();
            v.push(poll);
            out.push(Violation::new(
                ViolationKind::AbortedRead,
                format!(
                    "op {poll} read value {value} from {topic}, but its send (op {}) definitely failed",
                    sends[0]
                ),
                v,
            ));
        }
    }

    // Earliest poll completion per (topic, value).
    let mut earliest: BTreeMap<(&str, u64), (Time, OpId)> = BTreeMap::new();
    for (id, op) in ops.iter().enumerate() {
        if let (
            OpKind::Poll {
                topic,
                result: PollResult::Ok(records),
            },
            Some(done),
        ) = (&op.kind, op.complete)
        {
            for r in records {
                let e = earliest
                    .entry((topic.as_str(), r.value))
                    .or_insert((done, id));
                if (done, id) < *e {
                    *e = (done, id);
                }
            }
        }
    }
    for ((topic, value), (done, poll)) in earliest {
        let first_send = index
            .sends_of(topic, value)
            .iter()
            .filter_map(|&s| ops.get(s).map(|op| (op.invoke, s)))
            .min();
        if let Some((invoked, send)) = first_send {
            if done < invoked {
                out.push(Violation::new(
                    ViolationKind::ReadBeforeWrite,
                    format!(
                        "op {poll} completed at {done} with value {value} of {topic}, \
                         but its send (op {send}) was only invoked at {invoked}"
                    ),
                    vec![send, poll],
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
    use crate::history::{PollResult, Record};

    #[test]
    fn reads_of_ok_and_indeterminate_sends_pass() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, indeterminate());
        h.send(3, failed());
        h.poll(&[(0, 0, 1), (0, 1, 2)]);
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn aborted_read_is_caught() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let bad = h.send(2, failed());
        let p = h.poll(&[(0, 0, 1), (0, 1, 2)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::AbortedRead);
        assert_eq!(v[0].ops, vec![bad, p]);
    }

    #[test]
    fn unknown_value_is_caught_unless_allowed() {
        let mut h = H::new();
        let p = h.poll(&[(0, 0, 77)]);
        let h = h.build();
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::UnknownValue);
        assert_eq!(v[0].ops, vec![p]);
        let lax = CheckOptions {
            unknown_values_are_violations: false,
            ..CheckOptions::default()
        };
        assert!(check_with(&h, &lax).is_empty());
    }

    #[test]
    fn read_before_write_is_caught() {
        let mut h = H::new();
        let p = h.b.poll(1, 5, T);
        h.b.complete_poll(p, 6, PollResult::Ok(vec![Record::new(0, 0, 9)]))
            .unwrap();
        let s = h.b.send(2, 10, T, None, 9, false);
        h.b.complete_send(s, 11, ok(0, 0)).unwrap();
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::ReadBeforeWrite);
        assert_eq!(v[0].ops, vec![s, p]);
    }
}
