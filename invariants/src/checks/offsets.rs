//! Inconsistent offsets: every `(topic, partition, offset)` must hold a single value across all
//! send acknowledgements and all poll results. One violation per offending offset, naming the
//! first op that showed each distinct value there.
//!
//! The converse (one value at several offsets) is a duplicate; see [`super::duplicates`].

use super::{tp_name, Index, Violation, ViolationKind};
use crate::history::{History, OpId};

pub fn check(history: &History) -> Vec<Violation> {
    check_indexed(&Index::new(history))
}

pub(crate) fn check_indexed(index: &Index<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let tps: std::collections::BTreeSet<_> = index.acks.keys().chain(index.reads.keys()).collect();
    for tp in tps {
        let acks = index.acks.get(tp).unwrap_or(&empty);
        let reads = index.reads.get(tp).unwrap_or(&empty);
        // (offset, value, op, acked)
        let mut all: Vec<(i64, u64, OpId, bool)> = Vec::with_capacity(acks.len() + reads.len());
        all.extend(acks.iter().map(|&(o, v, op)| (o, v, op, true)));
        all.extend(reads.iter().map(|&(o, v, op)| (o, v, op, false)));
        all.sort_unstable();
        let mut i = 0;
        while i < all.len() {
            let offset = all[i].0;
            let mut j = i;
            while j < all.len() && all[j].0 == offset {
                j += 1;
            }
            let group = &all[i..j];
            // First op per distinct value (the group is sorted by value, then op).
            let mut firsts: Vec<(u64, OpId, bool)> = Vec::new();
            for &(_, v, op, acked) in group {
                if firsts.last().map(|f| f.0) != Some(v) {
                    firsts.push((v, op, acked));
                }
            }
            if firsts.len() > 1 {
                let parts: Vec<String> = firsts
                    .iter()
                    .map(|(v, op, acked)| {
                        format!("{v} ({} by op {op})", if *acked { "acked" } else { "read" })
                    })
                    .collect();
                out.push(Violation::new(
                    ViolationKind::InconsistentOffset,
                    format!(
                        "{}@{offset} holds {} values: {}",
                        tp_name(tp),
                        firsts.len(),
                        parts.join(", ")
                    ),
                    firsts.iter().map(|f| f.1).collect(),
                ));
            }
            i = j;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::testutil::*;

    #[test]
    fn consistent_history_passes() {
        let mut h = H::new();
        h.send(1, ok(0, 0));
        h.send(2, ok(1, 0));
        h.poll(&[(0, 0, 1), (1, 0, 2)]);
        h.poll(&[(0, 0, 1)]);
        assert!(check(&h.build()).is_empty());
    }

    #[test]
    fn two_values_at_one_offset() {
        let mut h = H::new();
        let a = h.send(1, ok(0, 0));
        let b = h.send(2, ok(0, 0));
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, ViolationKind::InconsistentOffset);
        assert_eq!(v[0].ops, vec![a, b]);
    }

    #[test]
    fn read_disagrees_with_ack() {
        let mut h = H::new();
        let s = h.send(1, ok(0, 3));
        h.send(2, indeterminate());
        h.poll(&[(0, 3, 1)]);
        let p = h.poll(&[(0, 3, 2)]);
        let v = check(&h.build());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].ops, vec![s, p]);
    }
}
