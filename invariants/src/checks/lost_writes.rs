//! Lost and unseen writes.
//!
//! * **lost-write**: a send acknowledged at `(topic, partition, offset)` whose value no poll ever
//!   returned, although some poll returned a record of that partition at an offset `>= offset`
//!   (consumers got past it, so it should have been delivered). Reported with the send and the
//!   poll that first read the nearest offset at or above it.
//! * **unseen**: an acknowledged send whose value was never read. Always counted; reported as a
//!   violation (one per partition, naming every unseen send) only when
//!   [`CheckOptions::final_read_complete`] says a complete final read happened. Sends already
//!   reported as lost are not repeated there.
//!
//! A value read at a different position than acknowledged is not "lost" here; the
//! inconsistent-offset and duplicate checkers report that.

use super::{tp_name, CheckOptions, Index, Violation, ViolationKind};
use crate::history::History;

/// Result of the lost-write checker: violations plus counts for the report.
pub(crate) struct LostWrites {
    pub violations: Vec<Violation>,
    pub lost: usize,
    pub unseen: usize,
}

/// Lost writes only (no final read assumed).
pub fn check(history: &History) -> Vec<Violation> {
    check_with(history, &CheckOptions::default())
}

/// Lost writes, plus unseen writes when `options.final_read_complete`.
pub fn check_with(history: &History, options: &CheckOptions) -> Vec<Violation> {
    check_indexed(&Index::new(history), options).violations
}

pub(crate) fn check_indexed(index: &Index<'_>, options: &CheckOptions) -> LostWrites {
    let mut out = LostWrites {
        violations: Vec::new(),
        lost: 0,
        unseen: 0,
    };
    for (tp, acks) in &index.acks {
        let reads = index.reads.get(tp).map(Vec::as_slice).unwrap_or(&[]);
        let mut unseen_here: Vec<(i64, u64, usize)> = Vec::new();
        for &(offset, value, send) in acks {
            if index.read_values.contains_key(&(tp.0, value)) {
                continue;
            }
            out.unseen += 1;
            let at = reads.partition_point(|r| r.0 < offset);
            if let Some(&(read_offset, read_value, poll)) = reads.get(at) {
                out.lost += 1;
                let detail = if read_offset == offset {
                    format!("op {poll} read value {read_value} there instead")
                } else {
                    format!("op {poll} read offset {read_offset} (value {read_value}) past it")
                };
                out.violations.push(Violation::new(
                    ViolationKind::LostWrite,
                    format!(
                        "value {value} acknowledged at {}@{offset} by op {send} was never read; {detail}",
                        tp_name(tp)
                    ),
                    vec![send, poll],
                ));
            } else {
                unseen_here.push((offset, value, send));
            }
        }
        if options.final_read_complete && !unseen_here.is_empty() {
            const SHOWN: usize = 10;
            let listed: Vec<String> = unseen_here
                .iter()
                .take(SHOWN)
                .map(|(o, v, op)| format!("{v}@{o} (op {op})"))
                .collect();
            let more = if unseen_here.len() > SHOWN {
                format!(", … {} more", unseen_here.len() - SHOWN)
            } else {
                String::new()
            };
            out.violations.push(Violation::new(
                ViolationKind::Unseen,
                format!(
                    "{} acknowledged sends to {} were never read despite a complete final read: {}{more}",
                    unseen_here.len(),
                    tp_name(tp),
                    listed.join(", ")
                ),
                unseen_here.iter().map(|u| u.2).collect(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    #[test]
    fn valid_history_passes() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(0, 1));
        h.send(3, ok(1, 0));
        h.poll(&[(0, 0, 1), (0, 1, 2), (1, 0, 3)]);
        let h = h.build();
        let opts = CheckOptions {
            final_read_complete: true,
            ..CheckOptions::default()
        };
        assert!(check_with(&h, &opts).is_empty());
    }

    #[test]
    fn lost_write_is_caught() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let lost = h.send(2, ok(0, 1));
        h.send(3, ok(0, 2));
        h.poll(&[(0, 0, 1)]);
        let passed = h.poll(&[(0, 2, 3)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::LostWrite);
        assert_eq!(v[0].ops, vec![lost, passed]);
    }

    #[test]
    fn write_not_yet_reached_is_not_lost_but_unseen_after_final_read() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        let tail = h.send(2, ok(0, 1));
        let other = h.send(3, ok(1, 0));
        h.poll(&[(0, 0, 1)]);
        let h = h.build();
        assert!(check(&h).is_empty());
        let opts = CheckOptions {
            final_read_complete: true,
            ..CheckOptions::default()
        };
        let v = check_with(&h, &opts);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|v| v.kind == ViolationKind::Unseen));
        assert_eq!(v[0].ops, vec![tail]);
        assert_eq!(v[1].ops, vec![other]);
        let idx = Index::new(&h);
        let r = check_indexed(&idx, &opts);
        assert_eq!((r.lost, r.unseen), (0, 2));
    }

    #[test]
    fn overwritten_offset_counts_as_lost() {
        let mut h = H::new();
        let lost = h.send(1, ok(0, 0));
        let poll = h.poll(&[(0, 0, 99)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![lost, poll]);
    }
}
