//! The checkers and what they share: [`Violation`]s, [`CheckOptions`], the [`Report`] of
//! [`check_all`], and the sorted per-partition [`Index`] of a history that every checker reads.
//!
//! Every checker is a pure function of the history: it tolerates garbage (no panics, no
//! arithmetic overflow), runs in O(n log n) and emits violations in a deterministic order.

pub mod aborted;
pub mod commits;
pub mod duplicates;
pub mod log;
pub mod lost_writes;
pub mod offsets;
pub mod poll_order;
pub mod sends;

use crate::history::{History, OpId, OpKind, PollResult, SendResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What kind of anomaly a violation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// An acknowledged write was never read although reads passed its offset.
    LostWrite,
    /// An acknowledged write was never read although a complete final read happened.
    Unseen,
    /// One offset held two different values.
    InconsistentOffset,
    /// An idempotent send's value appeared at more than one offset.
    Duplicate,
    /// A value whose send definitely failed was read.
    AbortedRead,
    /// A value no send ever wrote (to that topic) was read.
    UnknownValue,
    /// A poll completed before the send of a value it returned was invoked.
    ReadBeforeWrite,
    /// A send acknowledged at an offset not above an earlier completed send's offset.
    NonmonotonicSend,
    /// Within one poll, offsets of a partition did not strictly increase.
    PollInversion,
    /// Within one poll, a record known to exist between two returned records was missing.
    PollSkip,
    /// Under manual assignment, a poll went back to or before the previous poll's last offset.
    NonmonotonicPoll,
    /// Under manual assignment, successive polls skipped a record known to exist.
    InterPollSkip,
    /// A replica's high watermark decreased.
    HighWatermarkRegression,
    /// A log sample violated log_start <= high_watermark <= log_end.
    LogBounds,
    /// Two replicas' committed prefixes disagree (or one replica holds two values at an offset).
    ReplicaDivergence,
    /// A write acknowledged or read below a replica's high watermark is absent from or differs in
    /// that replica.
    ReplicaMissingWrite,
    LostCommit,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::LostWrite => "lost-write",
            ViolationKind::Unseen => "unseen",
            ViolationKind::InconsistentOffset => "inconsistent-offset",
            ViolationKind::Duplicate => "duplicate",
            ViolationKind::AbortedRead => "aborted-read",
            ViolationKind::UnknownValue => "unknown-value",
            ViolationKind::ReadBeforeWrite => "read-before-write",
            ViolationKind::NonmonotonicSend => "nonmonotonic-send",
            ViolationKind::PollInversion => "poll-inversion",
            ViolationKind::PollSkip => "poll-skip",
            ViolationKind::NonmonotonicPoll => "nonmonotonic-poll",
            ViolationKind::InterPollSkip => "inter-poll-skip",
            ViolationKind::HighWatermarkRegression => "hw-regression",
            ViolationKind::LogBounds => "log-bounds",
            ViolationKind::ReplicaDivergence => "replica-divergence",
            ViolationKind::ReplicaMissingWrite => "replica-missing-write",
            ViolationKind::LostCommit => "lost-commit",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly, with the operations that prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub message: String,
    /// The ops that demonstrate the anomaly, most relevant first.
    pub ops: Vec<OpId>,
}

impl Violation {
    pub fn new(kind: ViolationKind, message: impl Into<String>, ops: Vec<OpId>) -> Self {
        Violation {
            kind,
            message: message.into(),
            ops,
        }
    }

    /// The violation followed by a one-line description of each op it names.
    pub fn explain(&self, history: &History) -> String {
        let mut out = self.to_string();
        for id in &self.ops {
            match history.get(*id) {
                Some(op) => out.push_str(&format!("\n    {op}")),
                None => out.push_str(&format!("\n    op {id} (not in history)")),
            }
        }
        out
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {} (ops ", self.kind, self.message)?;
        const SHOWN: usize = 20;
        for (i, op) in self.ops.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{op}")?;
        }
        if self.ops.len() > SHOWN {
            write!(f, ", … {} more", self.ops.len() - SHOWN)?;
        }
        write!(f, ")")
    }
}

/// Knobs for [`check_all`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// A final read of every partition to its end happened after all sends completed: every
    /// acknowledged send must then have been read (otherwise it is only counted as unseen).
    pub final_read_complete: bool,
    /// Report duplicates of non-idempotent sends as violations too (they are always counted).
    pub non_idempotent_duplicates_are_violations: bool,
    /// Report polled values that no send to that topic wrote.
    pub unknown_values_are_violations: bool,
    /// Also require offsets to increase across processes: a send invoked after another send to
    /// the same partition completed must be acknowledged at a higher offset.
    pub realtime_sends: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            final_read_complete: false,
            non_idempotent_duplicates_are_violations: false,
            unknown_values_are_violations: true,
            realtime_sends: false,
        }
    }
}

/// Counts gathered while checking.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub ops: usize,
    pub sends_ok: usize,
    pub sends_failed: usize,
    /// Including sends that never completed.
    pub sends_indeterminate: usize,
    /// Indeterminate sends whose value was read (they happened).
    pub indeterminate_read: usize,
    pub polls_ok: usize,
    pub polls_failed: usize,
    /// Records returned by polls, counting re-reads.
    pub reads: usize,
    /// Distinct (topic, value) pairs read.
    pub distinct_values_read: usize,
    /// Acknowledged sends whose value was never read.
    pub unseen: usize,
    /// Acknowledged sends reported as lost.
    pub lost: usize,
    /// Values that appeared at more than one offset (idempotent or not).
    pub duplicates: usize,
    /// Of `duplicates`, those whose send was not idempotent (not violations by default).
    pub non_idempotent_duplicates: usize,
    pub log_samples: usize,
    pub replica_logs: usize,
}

/// The outcome of [`check_all`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// Number of violations of each kind.
    pub fn counts(&self) -> BTreeMap<ViolationKind, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.kind).or_insert(0) += 1;
        }
        m
    }

    /// Whether any violation of `kind` was found.
    pub fn has(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|v| v.kind == kind)
    }

    /// Like `Display`, with every named op described from the history.
    pub fn explain(&self, history: &History) -> String {
        let mut out = self.summary();
        for v in &self.violations {
            out.push_str("\n  ");
            out.push_str(&v.explain(history).replace('\n', "\n  "));
        }
        out
    }

    fn summary(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "{}: {} ops; sends ok={} failed={} indeterminate={} (read {}); polls ok={} failed={}; \
             reads={} distinct={}; unseen={} lost={} duplicates={} (non-idempotent {}); \
             log samples={} replica logs={}",
            if self.is_valid() { "valid" } else { "INVALID" },
            s.ops,
            s.sends_ok,
            s.sends_failed,
            s.sends_indeterminate,
            s.indeterminate_read,
            s.polls_ok,
            s.polls_failed,
            s.reads,
            s.distinct_values_read,
            s.unseen,
            s.lost,
            s.duplicates,
            s.non_idempotent_duplicates,
            s.log_samples,
            s.replica_logs
        );
        if !self.is_valid() {
            let counts: Vec<String> = self
                .counts()
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            out.push_str(&format!(
                "\n{} violations ({})",
                self.violations.len(),
                counts.join(", ")
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary())?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

/// Runs every checker and gathers statistics.
pub fn check_all(history: &History, options: &CheckOptions) -> Report {
    let index = Index::new(history);
    let mut violations = Vec::new();
    let lost = lost_writes::check_indexed(&index, options);
    violations.extend(lost.violations);
    violations.extend(offsets::check_indexed(&index));
    let dups = duplicates::check_indexed(&index, options);
    violations.extend(dups.violations);
    violations.extend(aborted::check_indexed(&index, options));
    violations.extend(sends::check_indexed(&index, options));
    violations.extend(poll_order::check_indexed(&index));
    violations.extend(log::check_indexed(&index));
    violations.extend(commits::check_indexed(&index));

    let mut stats = Stats {
        ops: history.len(),
        reads: index.reads_total,
        distinct_values_read: index.read_values.len(),
        unseen: lost.unseen,
        lost: lost.lost,
        duplicates: dups.duplicates,
        non_idempotent_duplicates: dups.non_idempotent,
        ..Stats::default()
    };
    for op in history.ops() {
        match &op.kind {
            OpKind::Send {
                topic,
                value,
                result,
                ..
            } => match result {
                SendResult::Ok { .. } => stats.sends_ok += 1,
                SendResult::Failed { .. } => stats.sends_failed += 1,
                SendResult::Indeterminate { .. } => {
                    stats.sends_indeterminate += 1;
                    if index.read_values.contains_key(&(topic.as_str(), *value)) {
                        stats.indeterminate_read += 1;
                    }
                }
            },
            OpKind::Poll { result, .. } => match result {
                PollResult::Ok(_) => stats.polls_ok += 1,
                PollResult::Failed(_) => stats.polls_failed += 1,
            },
            OpKind::LogSample(_) => stats.log_samples += 1,
            OpKind::ReplicaLog(_) => stats.replica_logs += 1,
            _ => {}
        }
    }
    Report { violations, stats }
}

/// A topic-partition, borrowing the topic name from the history.
pub(crate) type Tp<'a> = (&'a str, i32);

/// `(offset, value, op)`.
pub(crate) type Obs = (i64, u64, OpId);

/// Sorted views of a history shared by the checkers.
pub(crate) struct Index<'a> {
    pub history: &'a History,
    /// (topic, value) -> ids of the sends that wrote it (normally exactly one).
    pub sends: BTreeMap<(&'a str, u64), Vec<OpId>>,
    /// Per partition: acknowledged sends, sorted by (offset, value, op).
    pub acks: BTreeMap<Tp<'a>, Vec<Obs>>,
    /// Per partition: distinct (offset, value) pairs read, with the first op reading each,
    /// sorted.
    pub reads: BTreeMap<Tp<'a>, Vec<Obs>>,
    /// (topic, value) -> first op that read it.
    pub read_values: BTreeMap<(&'a str, u64), OpId>,
    /// Per partition: offsets known to hold a record (acknowledged or read), with the first op
    /// establishing that, sorted and distinct by offset.
    pub known: BTreeMap<Tp<'a>, Vec<(i64, OpId)>>,
    /// Total records returned by successful polls.
    pub reads_total: usize,
}

impl<'a> Index<'a> {
    pub fn new(history: &'a History) -> Self {
        let mut sends: BTreeMap<(&str, u64), Vec<OpId>> = BTreeMap::new();
        let mut acks: BTreeMap<Tp, Vec<Obs>> = BTreeMap::new();
        let mut reads: BTreeMap<Tp, Vec<Obs>> = BTreeMap::new();
        let mut read_values: BTreeMap<(&str, u64), OpId> = BTreeMap::new();
        let mut reads_total = 0usize;
        for (id, op) in history.ops().iter().enumerate() {
            match &op.kind {
                OpKind::Send {
                    topic,
                    value,
                    result,
                    ..
                } => {
                    sends.entry((topic.as_str(), *value)).or_default().push(id);
                    if let SendResult::Ok { partition, offset } = result {
                        acks.entry((topic.as_str(), *partition))
                            .or_default()
                            .push((*offset, *value, id));
                    }
                }
                OpKind::Poll {
                    topic,
                    result: PollResult::Ok(records),
                } => {
                    reads_total += records.len();
                    for r in records {
                        reads
                            .entry((topic.as_str(), r.partition))
                            .or_default()
                            .push((r.offset, r.value, id));
                        read_values.entry((topic.as_str(), r.value)).or_insert(id);
                    }
                }
                _ => {}
            }
        }
        for v in acks.values_mut() {
            v.sort_unstable();
        }
        for v in reads.values_mut() {
            v.sort_unstable();
            v.dedup_by(|later, earlier| later.0 == earlier.0 && later.1 == earlier.1);
        }
        let mut known: BTreeMap<Tp, Vec<(i64, OpId)>> = BTreeMap::new();
        for (tp, v) in acks.iter().chain(reads.iter()) {
            known
                .entry(*tp)
                .or_default()
                .extend(v.iter().map(|&(o, _, op)| (o, op)));
        }
        for v in known.values_mut() {
            v.sort_unstable();
            v.dedup_by_key(|k| k.0);
        }
        Index {
            history,
            sends,
            acks,
            reads,
            read_values,
            known,
            reads_total,
        }
    }

    /// Known offsets of `tp` strictly between `lo` and `hi`, in increasing order.
    pub fn known_between(&self, tp: &Tp<'a>, lo: i64, hi: i64) -> &[(i64, OpId)] {
        let Some(v) = self.known.get(tp) else {
            return &[];
        };
        let start = v.partition_point(|k| k.0 <= lo);
        let end = v.partition_point(|k| k.0 < hi);
        if start >= end {
            &[]
        } else {
            &v[start..end]
        }
    }

    /// Sends of `value` to `topic`.
    pub fn sends_of<'s>(&'s self, topic: &'s str, value: u64) -> &'s [OpId] {
        self.sends
            .get(&(topic, value))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// `topic/partition`.
pub(crate) fn tp_name(tp: &Tp<'_>) -> String {
    format!("{}/{}", tp.0, tp.1)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small helpers for crafting histories in unit tests.
    use crate::history::*;

    pub const T: &str = "t";

    pub fn ok(p: i32, o: i64) -> SendResult {
        SendResult::Ok {
            partition: p,
            offset: o,
        }
    }

    pub fn failed() -> SendResult {
        SendResult::Failed {
            error: "rejected".into(),
        }
    }

    pub fn indeterminate() -> SendResult {
        SendResult::Indeterminate {
            error: "timeout".into(),
        }
    }

    /// A sequential history builder with an auto-advancing clock.
    pub struct H {
        pub b: HistoryBuilder,
        pub now: Time,
    }

    impl H {
        pub fn new() -> Self {
            H {
                b: HistoryBuilder::new(),
                now: 0,
            }
        }
        fn tick(&mut self) -> Time {
            self.now += 10;
            self.now
        }
        pub fn send_full(
            &mut self,
            process: ProcessId,
            value: u64,
            idempotent: bool,
            r: SendResult,
        ) -> OpId {
            let t = self.tick();
            let id = self.b.send(process, t, T, None, value, idempotent);
            let t = self.tick();
            self.b.complete_send(id, t, r).unwrap();
            id
        }
        pub fn send(&mut self, value: u64, r: SendResult) -> OpId {
            self.send_full(0, value, false, r)
        }
        pub fn poll_by(&mut self, process: ProcessId, records: &[(i32, i64, u64)]) -> OpId {
            let t = self.tick();
            let id = self.b.poll(process, t, T);
            let t = self.tick();
            let recs = records
                .iter()
                .map(|&(p, o, v)| Record::new(p, o, v))
                .collect();
            self.b.complete_poll(id, t, PollResult::Ok(recs)).unwrap();
            id
        }
        pub fn poll(&mut self, records: &[(i32, i64, u64)]) -> OpId {
            self.poll_by(100, records)
        }
        pub fn assign(&mut self, process: ProcessId, partitions: &[i32]) -> OpId {
            let t = self.tick();
            self.b.push(
                process,
                t,
                OpKind::Assign {
                    topic: T.into(),
                    partitions: partitions.to_vec(),
                },
            )
        }
        pub fn seek(&mut self, process: ProcessId, partition: i32, offset: i64) -> OpId {
            let t = self.tick();
            self.b.push(
                process,
                t,
                OpKind::Seek {
                    topic: T.into(),
                    partition,
                    offset,
                },
            )
        }
        pub fn build(self) -> History {
            self.b.build()
        }
    }
}
