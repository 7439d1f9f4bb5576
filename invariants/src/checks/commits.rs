//! Committed consumer-group offsets behave like a register per (topic, partition).
//!
//! Writes are `Commit` ops (acknowledged or indeterminate; a commit that definitely failed
//! wrote nothing); reads are `CommittedOffsets` ops (OffsetFetch answers). A read may return
//! the value of a write that could have been the last one before it: a write invoked before
//! the read completed and not overwritten before the read began (overwritten: some
//! acknowledged write was invoked after it completed and completed before the read was
//! invoked). `-1` (nothing committed) is allowed only while no acknowledged commit had
//! completed. Anything else is a **lost-commit**: an acknowledged commit was forgotten, or a
//! value nobody committed appeared.

use super::{Index, Violation, ViolationKind};
use crate::history::{CommitResult, OpId, OpKind, Time};
use std::collections::BTreeMap;

struct Write {
    op: OpId,
    invoke: Time,
    /// `Time::MAX` when the write's outcome is unknown: it may take effect at any later time.
    complete: Time,
    acknowledged: bool,
    offset: i64,
}

struct Read {
    op: OpId,
    invoke: Time,
    complete: Time,
    offset: i64,
}

pub(crate) fn check_indexed(index: &Index<'_>) -> Vec<Violation> {
    let mut writes: BTreeMap<(&str, i32), Vec<Write>> = BTreeMap::new();
    let mut reads: BTreeMap<(&str, i32), Vec<Read>> = BTreeMap::new();
    for (id, op) in index.history.ops().iter().enumerate() {
        match &op.kind {
            OpKind::Commit {
                topic,
                offsets,
                result,
            } => {
                let (acknowledged, complete) = match result {
                    CommitResult::Ok => (true, op.complete.unwrap_or(Time::MAX)),
                    CommitResult::Indeterminate(_) => (false, Time::MAX),
                    CommitResult::Failed(_) => continue,
                };
                for &(partition, offset) in offsets {
                    writes
                        .entry((topic.as_str(), partition))
                        .or_default()
                        .push(Write {
                            op: id,
                            invoke: op.invoke,
                            complete,
                            acknowledged,
                            offset,
                        });
                }
            }
            OpKind::CommittedOffsets { topic, offsets } => {
                for &(partition, offset) in offsets {
                    reads
                        .entry((topic.as_str(), partition))
                        .or_default()
                        .push(Read {
                            op: id,
                            invoke: op.invoke,
                            complete: op.complete.unwrap_or(Time::MAX),
                            offset,
                        });
                }
            }
            _ => {}
        }
    }
    let empty = Vec::new();
    let mut out = Vec::new();
    for ((topic, partition), reads) in &reads {
        let writes = writes.get(&(*topic, *partition)).unwrap_or(&empty);
        for read in reads {
            // The latest invocation among acknowledged writes done before the read began, and
            // the acknowledged write that completed last before it (for the message).
            let mut fence: Option<Time> = None;
            let mut last_acked: Option<&Write> = None;
            for w in writes
                .iter()
                .filter(|w| w.acknowledged && w.complete < read.invoke)
            {
                fence = Some(fence.map_or(w.invoke, |f| f.max(w.invoke)));
                if last_acked.map_or(true, |l| w.complete > l.complete) {
                    last_acked = Some(w);
                }
            }
            let possible = writes.iter().any(|w| {
                w.offset == read.offset
                    && w.invoke < read.complete
                    && fence.map_or(true, |f| w.complete >= f)
            });
            if possible || (read.offset == -1 && last_acked.is_none()) {
                continue;
            }
            let mut ops = vec![read.op];
            let message = match last_acked {
                Some(w) => {
                    ops.push(w.op);
                    format!(
                        "{topic}/{partition}: committed offset read as {} after the commit of {} \
                         was acknowledged",
                        read.offset, w.offset
                    )
                }
                None => format!(
                    "{topic}/{partition}: committed offset read as {}, which no commit wrote",
                    read.offset
                ),
            };
            out.push(Violation::new(ViolationKind::LostCommit, message, ops));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::checks::{check_all, CheckOptions, ViolationKind};
    use crate::history::{Call, CommitResult, HistoryBuilder, Outcome};

    fn commit(b: &mut HistoryBuilder, t0: u64, t1: u64, offset: i64, result: CommitResult) {
        let op = b.invoke(
            1,
            t0,
            Call::Commit {
                topic: "t".into(),
                offsets: vec![(0, offset)],
            },
        );
        b.complete(op, t1, Outcome::Commit(result)).unwrap();
    }

    fn lost(b: HistoryBuilder) -> usize {
        let report = check_all(&b.build(), &CheckOptions::default());
        report
            .violations
            .iter()
            .filter(|v| v.kind == ViolationKind::LostCommit)
            .count()
    }

    #[test]
    fn the_last_acknowledged_commit_is_read() {
        let mut b = HistoryBuilder::new();
        b.committed_offsets(2, 0, 1, "t", vec![(0, -1)]);
        commit(&mut b, 10, 20, 5, CommitResult::Ok);
        commit(&mut b, 30, 40, 9, CommitResult::Ok);
        b.committed_offsets(2, 50, 60, "t", vec![(0, 9)]);
        assert_eq!(lost(b), 0);
    }

    #[test]
    fn an_overwritten_or_forgotten_commit_is_a_violation() {
        let mut b = HistoryBuilder::new();
        commit(&mut b, 10, 20, 5, CommitResult::Ok);
        commit(&mut b, 30, 40, 9, CommitResult::Ok);
        b.committed_offsets(2, 50, 60, "t", vec![(0, 5)]);
        b.committed_offsets(2, 70, 80, "t", vec![(0, -1)]);
        b.committed_offsets(2, 90, 95, "t", vec![(0, 77)]);
        assert_eq!(lost(b), 3);
    }

    #[test]
    fn concurrent_and_indeterminate_commits_may_win() {
        let mut b = HistoryBuilder::new();
        commit(&mut b, 10, 40, 5, CommitResult::Ok);
        commit(&mut b, 20, 30, 9, CommitResult::Ok); // overlaps the first: either may be last
        commit(
            &mut b,
            45,
            46,
            11,
            CommitResult::Indeterminate("timeout".into()),
        );
        commit(&mut b, 47, 48, 13, CommitResult::Failed("fenced".into()));
        b.committed_offsets(2, 50, 60, "t", vec![(0, 5)]);
        b.committed_offsets(2, 50, 60, "t", vec![(0, 11)]);
        assert_eq!(lost(b), 0);
        let mut b = HistoryBuilder::new();
        commit(&mut b, 47, 48, 13, CommitResult::Failed("fenced".into()));
        b.committed_offsets(2, 50, 60, "t", vec![(0, 13)]);
        assert_eq!(lost(b), 1, "a definitely failed commit wrote nothing");
    }
}
