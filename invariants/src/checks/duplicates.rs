//! Duplicates: a value that was acknowledged or read at more than one `(partition, offset)` of
//! its topic, i.e. written to the log more than once.
//!
//! Producer retries without idempotence may legally duplicate, so such duplicates are only
//! counted (see [`super::Stats::non_idempotent_duplicates`]) unless
//! [`CheckOptions::non_idempotent_duplicates_are_violations`] is set. A duplicate of a value
//! sent with `idempotent: true` is always a violation. Each violation names the send(s) of the
//! value, then the first op that showed it at each position.

use super::{CheckOptions, Index, Violation, ViolationKind};
use crate::history::{History, OpId, OpKind};

pub(crate) struct Duplicates {
    pub violations: Vec<Violation>,
    pub duplicates: usize,
    pub non_idempotent: usize,
}

pub fn check(history: &History) -> Vec<Violation> {
    check_with(history, &CheckOptions::default())
}

pub fn check_with(history: &History, options: &CheckOptions) -> Vec<Violation> {
    check_indexed(&Index::new(history), options).violations
}

pub(crate) fn check_indexed(index: &Index<'_>, options: &CheckOptions) -> Duplicates {
    let mut out = Duplicates {
        violations: Vec::new(),
        duplicates: 0,
        non_idempotent: 0,
    };
    // (topic, value, partition, offset, op)
    let mut seen: Vec<(&str, u64, i32, i64, OpId)> = Vec::new();
    for (tp, obs) in index.acks.iter().chain(index.reads.iter()) {
        seen.extend(obs.iter().map(|&(o, v, op)| (tp.0, v, tp.1, o, op)));
    }
    seen.sort_unstable();
    seen.dedup_by(|later, earlier| {
        (later.0, later.1, later.2, later.3) == (earlier.0, earlier.1, earlier.2, earlier.3)
    });
    let mut i = 0;
    while i < seen.len() {
        let (topic, value) = (seen[i].0, seen[i].1);
        let mut j = i;
        while j < seen.len() && seen[j].0 == topic && seen[j].1 == value {
            j += 1;
        }
        let positions = &seen[i..j];
        i = j;
        if positions.len() < 2 {
            continue;
        }
        out.duplicates += 1;
        let sends = index.sends_of(topic, value);
        let idempotent = sends.iter().any(|&s| {
            matches!(
                index.history.get(s).map(|op| &op.kind),
                Some(OpKind::Send {
                    idempotent: true,
                    ..
                })
            )
        });
        if !idempotent {
            out.non_idempotent += 1;
            if !options.non_idempotent_duplicates_are_violations {
                continue;
            }
        }
        let mut ops: Vec<OpId> = sends.to_vec();
        for p in positions {
            if !ops.contains(&p.4) {
                ops.push(p.4);
            }
        }
        let places: Vec<String> = positions
            .iter()
            .map(|p| format!("{topic}/{}@{} (op {})", p.2, p.3, p.4))
            .collect();
        out.violations.push(Violation::new(
            ViolationKind::Duplicate,
            format!(
                "{}value {value} appears at {} positions: {}",
                if idempotent { "idempotently sent " } else { "" },
                positions.len(),
                places.join(", ")
            ),
            ops,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    #[test]
    fn no_duplicates_pass() {
        let mut h = H::new();
        h.send_full(0, 1, true, ok(0, 0));
        h.send_full(0, 2, true, ok(0, 1));
        h.poll(&[(0, 0, 1), (0, 1, 2)]);
        h.poll(&[(0, 0, 1), (0, 1, 2)]);
        let h = h.build();
        assert!(check(&h).is_empty());
        assert_eq!(
            check_indexed(&Index::new(&h), &CheckOptions::default()).duplicates,
            0
        );
    }

    #[test]
    fn idempotent_duplicate_is_a_violation() {
        let mut h = H::new();
        let s = h.send_full(0, 1, true, ok(0, 0));
        let p = h.poll(&[(0, 0, 1), (0, 1, 1)]);
        let h = h.build();
        let v = check(&h);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::Duplicate);
        assert_eq!(v[0].ops, vec![s, p]);
    }

    #[test]
    fn non_idempotent_duplicate_is_only_counted() {
        let mut h = H::new();
        let s = h.send_full(0, 1, false, ok(0, 0));
        let p = h.poll(&[(0, 0, 1), (0, 1, 1)]);
        let h = h.build();
        assert!(check(&h).is_empty());
        let r = check_indexed(&Index::new(&h), &CheckOptions::default());
        assert_eq!((r.duplicates, r.non_idempotent), (1, 1));
        let strict = CheckOptions {
            non_idempotent_duplicates_are_violations: true,
            ..CheckOptions::default()
        };
        let v = check_with(&h, &strict);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![s, p]);
    }
}
