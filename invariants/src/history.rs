//! The history model: every client operation against a Kafka-compatible system (sends, polls,
//! assignment, subscription, commits, seeks) together with its outcome, plus observations of
//! replica logs (`LogSample`, `ReplicaLog`) made by a simulator or an operator.
//!
//! A [`History`] is an ordered list of [`Op`]s; an op's id is its index in that list. Histories
//! are built incrementally with [`HistoryBuilder`] (invoke now, complete later) and can be
//! dumped to / loaded from JSON lines for replay and debugging.
//!
//! Conventions the checkers rely on:
//! * every sent value is unique within a history (per topic at least);
//! * `SendResult::Failed` means the write definitely did not happen, `Indeterminate` means it
//!   may or may not have happened (timeouts, lost connections, ops that never completed);
//! * poll records are listed in the order the client received them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of an operation in its history.
pub type OpId = usize;
/// A client (producer/consumer) identity.
pub type ProcessId = u64;
/// Virtual time in nanoseconds.
pub type Time = u64;

/// Process id used for observations that are not made by a client (log samples, replica logs).
pub const OBSERVER: ProcessId = u64::MAX;

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Index in the history (renumbered by [`History::new`]).
    pub id: OpId,
    pub process: ProcessId,
    /// When the operation was invoked.
    pub invoke: Time,
    /// When the operation completed; `None` if it never did.
    pub complete: Option<Time>,
    pub kind: OpKind,
}

/// What an operation did and, for operations with a result, how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive] // room for transactions (begin/commit/abort) later
pub enum OpKind {
    /// A producer send of one record.
    Send {
        topic: String,
        key: Option<u64>,
        value: u64,
        idempotent: bool,
        result: SendResult,
    },
    /// A consumer poll of one topic.
    Poll { topic: String, result: PollResult },
    /// Manual partition assignment (replaces the consumer's assignment for `topic`).
    Assign { topic: String, partitions: Vec<i32> },
    /// Group subscription (partitions may move between consumers; positions may jump).
    Subscribe { topic: String },
    /// An offset commit.
    Commit {
        topic: String,
        offsets: Vec<(i32, i64)>,
        result: CommitResult,
    },
    /// A consumer repositioning; polls after it may legitimately go backwards or forwards.
    Seek {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A read of a consumer group's committed offsets (OffsetFetch) for `topic`: `(partition,
    /// offset)`, -1 where nothing is committed.
    CommittedOffsets {
        topic: String,
        offsets: Vec<(i32, i64)>,
    },
    /// A snapshot of one replica's log bounds.
    LogSample(LogSample),
    /// One replica's committed prefix, read at the end of a run.
    ReplicaLog(ReplicaLog),
}

/// Outcome of a send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendResult {
    /// Acknowledged at this position.
    Ok { partition: i32, offset: i64 },
    /// Definitely not written.
    Failed { error: String },
    /// May or may not have been written.
    Indeterminate { error: String },
}

/// Outcome of a poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollResult {
    /// Records in the order the client received them.
    Ok(Vec<Record>),
    Failed(String),
}

/// Outcome of an offset commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitResult {
    Ok,
    Failed(String),
    Indeterminate(String),
}

/// One record returned by a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub value: u64,
}

impl Record {
    pub fn new(partition: i32, offset: i64, value: u64) -> Self {
        Record {
            partition,
            offset,
            value,
        }
    }
}

/// A snapshot of a replica's log state at the op's invoke time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSample {
    pub node: u32,
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
}

/// A replica's log as read at the end of a run. Offsets in
/// `[log_start_offset, high_watermark)` form the committed prefix; `records` may also contain
/// uncommitted records at or above the high watermark (they are not checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLog {
    pub node: u32,
    pub topic: String,
    pub partition: i32,
    /// Offsets below this were removed by retention and are not expected to be present.
    #[serde(default)]
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// `(offset, value)` in log order.
    pub records: Vec<(i64, u64)>,
}

/// An operation as invoked, before its result is known (for [`HistoryBuilder::invoke`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Send {
        topic: String,
        key: Option<u64>,
        value: u64,
        idempotent: bool,
    },
    Poll {
        topic: String,
    },
    Assign {
        topic: String,
        partitions: Vec<i32>,
    },
    Subscribe {
        topic: String,
    },
    Commit {
        topic: String,
        offsets: Vec<(i32, i64)>,
    },
    Seek {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// The result delivered to [`HistoryBuilder::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Send(SendResult),
    Poll(PollResult),
    Commit(CommitResult),
    /// Successful completion of an op without a result (assign, subscribe, seek).
    Done,
}

/// Misuse of [`HistoryBuilder::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryError {
    UnknownOp(OpId),
    AlreadyCompleted(OpId),
    /// The outcome does not fit the op's kind (e.g. a poll result for a send).
    Mismatch(OpId),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::UnknownOp(id) => write!(f, "no op {id} in history"),
            HistoryError::AlreadyCompleted(id) => write!(f, "op {id} already completed"),
            HistoryError::Mismatch(id) => write!(f, "outcome does not match the kind of op {id}"),
        }
    }
}

impl std::error::Error for HistoryError {}

/// Result recorded for an invoked op until it completes; an op that never completes keeps it.
const NO_RESPONSE: &str = "no response";

/// Builds a [`History`] as operations are invoked and complete.
#[derive(Clone, Debug, Default)]
pub struct HistoryBuilder {
    ops: Vec<Op>,
}

impl HistoryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Records an invocation. Until completed, a send counts as indeterminate, a poll as failed
    /// (nothing observed) and a commit as indeterminate.
    pub fn invoke(&mut self, process: ProcessId, time: Time, call: Call) -> OpId {
        let kind = match call {
            Call::Send {
                topic,
                key,
                value,
                idempotent,
            } => OpKind::Send {
                topic,
                key,
                value,
                idempotent,
                result: SendResult::Indeterminate {
                    error: NO_RESPONSE.into(),
                },
            },
            Call::Poll { topic } => OpKind::Poll {
                topic,
                result: PollResult::Failed(NO_RESPONSE.into()),
            },
            Call::Assign { topic, partitions } => OpKind::Assign { topic, partitions },
            Call::Subscribe { topic } => OpKind::Subscribe { topic },
            Call::Commit { topic, offsets } => OpKind::Commit {
                topic,
                offsets,
                result: CommitResult::Indeterminate(NO_RESPONSE.into()),
            },
            Call::Seek {
                topic,
                partition,
                offset,
            } => OpKind::Seek {
                topic,
                partition,
                offset,
            },
        };
        self.push_op(Op {
            id: 0,
            process,
            invoke: time,
            complete: None,
            kind,
        })
    }

    /// Records the completion of an invoked op.
    pub fn complete(&mut self, op: OpId, time: Time, outcome: Outcome) -> Result<(), HistoryError> {
        let entry = self.ops.get_mut(op).ok_or(HistoryError::UnknownOp(op))?;
        if entry.complete.is_some() {
            return Err(HistoryError::AlreadyCompleted(op));
        }
        match (&mut entry.kind, outcome) {
            (OpKind::Send { result, .. }, Outcome::Send(r)) => *result = r,
            (OpKind::Poll { result, .. }, Outcome::Poll(r)) => *result = r,
            (OpKind::Commit { result, .. }, Outcome::Commit(r)) => *result = r,
            (
                OpKind::Assign { .. } | OpKind::Subscribe { .. } | OpKind::Seek { .. },
                Outcome::Done,
            ) => {}
            _ => return Err(HistoryError::Mismatch(op)),
        }
        entry.complete = Some(time);
        Ok(())
    }

    /// Invokes a send.
    pub fn send(
        &mut self,
        process: ProcessId,
        time: Time,
        topic: impl Into<String>,
        key: Option<u64>,
        value: u64,
        idempotent: bool,
    ) -> OpId {
        self.invoke(
            process,
            time,
            Call::Send {
                topic: topic.into(),
                key,
                value,
                idempotent,
            },
        )
    }

    /// Completes a send.
    pub fn complete_send(
        &mut self,
        op: OpId,
        time: Time,
        result: SendResult,
    ) -> Result<(), HistoryError> {
        self.complete(op, time, Outcome::Send(result))
    }

    /// Invokes a poll.
    pub fn poll(&mut self, process: ProcessId, time: Time, topic: impl Into<String>) -> OpId {
        self.invoke(
            process,
            time,
            Call::Poll {
                topic: topic.into(),
            },
        )
    }

    /// Completes a poll.
    pub fn complete_poll(
        &mut self,
        op: OpId,
        time: Time,
        result: PollResult,
    ) -> Result<(), HistoryError> {
        self.complete(op, time, Outcome::Poll(result))
    }

    /// Records a completed read of committed offsets, invoked at `invoke`, answered at
    /// `complete`.
    pub fn committed_offsets(
        &mut self,
        process: ProcessId,
        invoke: Time,
        complete: Time,
        topic: impl Into<String>,
        offsets: Vec<(i32, i64)>,
    ) -> OpId {
        self.push_op(Op {
            id: 0,
            process,
            invoke,
            complete: Some(complete),
            kind: OpKind::CommittedOffsets {
                topic: topic.into(),
                offsets,
            },
        })
    }

    /// Records an instantaneous, already completed op (invoke = complete = `time`).
    pub fn push(&mut self, process: ProcessId, time: Time, kind: OpKind) -> OpId {
        self.push_op(Op {
            id: 0,
            process,
            invoke: time,
            complete: Some(time),
            kind,
        })
    }

    /// Appends an op as is (its id is overwritten with its index).
    pub fn push_op(&mut self, mut op: Op) -> OpId {
        let id = self.ops.len();
        op.id = id;
        self.ops.push(op);
        id
    }

    /// Records a log-bounds sample taken at `time`.
    pub fn log_sample(&mut self, time: Time, sample: LogSample) -> OpId {
        self.push(OBSERVER, time, OpKind::LogSample(sample))
    }

    /// Records a replica's final log.
    pub fn replica_log(&mut self, time: Time, log: ReplicaLog) -> OpId {
        self.push(OBSERVER, time, OpKind::ReplicaLog(log))
    }

    pub fn build(self) -> History {
        History::new(self.ops)
    }
}

/// An ordered list of operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    ops: Vec<Op>,
}

impl History {
    /// Wraps `ops`, renumbering each op's id to its index.
    pub fn new(mut ops: Vec<Op>) -> Self {
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = i;
        }
        History { ops }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn get(&self, id: OpId) -> Option<&Op> {
        self.ops.get(id)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// One JSON object per op, one per line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            // Serializing these plain data types cannot fail.
            if let Ok(line) = serde_json::to_string(op) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Parses the output of [`History::to_json_lines`] (blank lines are ignored).
    pub fn from_json_lines(text: &str) -> Result<History, serde_json::Error> {
        let mut ops = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            ops.push(serde_json::from_str::<Op>(line)?);
        }
        Ok(History::new(ops))
    }
}

impl fmt::Display for Op {
    /// A compact one-line description, e.g. `op 7 p3 send t v=42 -> ok t/0@5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.process == OBSERVER {
            write!(f, "op {} observer @{}", self.id, self.invoke)?;
        } else {
            write!(f, "op {} p{} @{}", self.id, self.process, self.invoke)?;
        }
        match self.complete {
            Some(c) => write!(f, "..{c} ")?,
            None => write!(f, "..? ")?,
        }
        match &self.kind {
            OpKind::Send {
                topic,
                key,
                value,
                idempotent,
                result,
            } => {
                write!(f, "send {topic} v={value}")?;
                if let Some(k) = key {
                    write!(f, " k={k}")?;
                }
                if *idempotent {
                    write!(f, " idempotent")?;
                }
                match result {
                    SendResult::Ok { partition, offset } => {
                        write!(f, " -> ok {topic}/{partition}@{offset}")
                    }
                    SendResult::Failed { error } => write!(f, " -> failed ({error})"),
                    SendResult::Indeterminate { error } => write!(f, " -> indeterminate ({error})"),
                }
            }
            OpKind::Poll { topic, result } => {
                write!(f, "poll {topic}")?;
                match result {
                    PollResult::Ok(records) => {
                        write!(f, " -> {} records [", records.len())?;
                        const SHOWN: usize = 8;
                        for (i, r) in records.iter().take(SHOWN).enumerate() {
                            if i > 0 {
                                write!(f, " ")?;
                            }
                            write!(f, "{}@{}={}", r.partition, r.offset, r.value)?;
                        }
                        if records.len() > SHOWN {
                            write!(f, " …")?;
                        }
                        write!(f, "]")
                    }
                    PollResult::Failed(e) => write!(f, " -> failed ({e})"),
                }
            }
            OpKind::Assign { topic, partitions } => write!(f, "assign {topic} {partitions:?}"),
            OpKind::Subscribe { topic } => write!(f, "subscribe {topic}"),
            OpKind::Commit {
                topic,
                offsets,
                result,
            } => {
                write!(f, "commit {topic} {offsets:?} -> {result:?}")
            }
            OpKind::Seek {
                topic,
                partition,
                offset,
            } => write!(f, "seek {topic}/{partition} to {offset}"),
            OpKind::CommittedOffsets { topic, offsets } => {
                write!(f, "committed offsets {topic} {offsets:?}")
            }
            OpKind::LogSample(s) => write!(
                f,
                "log-sample node {} {}/{} start={} hw={} end={}",
                s.node,
                s.topic,
                s.partition,
                s.log_start_offset,
                s.high_watermark,
                s.log_end_offset
            ),
            OpKind::ReplicaLog(l) => write!(
                f,
                "replica-log node {} {}/{} start={} hw={} ({} records)",
                l.node,
                l.topic,
                l.partition,
                l.log_start_offset,
                l.high_watermark,
                l.records.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_json_round_trip() {
        let mut b = HistoryBuilder::new();
        let s = b.send(1, 10, "t", Some(3), 42, true);
        let p = b.poll(2, 11, "t");
        let a = b.invoke(
            2,
            12,
            Call::Assign {
                topic: "t".into(),
                partitions: vec![0, 1],
            },
        );
        let never = b.send(1, 13, "t", None, 43, false);
        b.complete_send(
            s,
            20,
            SendResult::Ok {
                partition: 0,
                offset: 5,
            },
        )
        .unwrap();
        b.complete_poll(p, 21, PollResult::Ok(vec![Record::new(0, 5, 42)]))
            .unwrap();
        assert_eq!(
            b.complete(a, 22, Outcome::Poll(PollResult::Ok(vec![]))),
            Err(HistoryError::Mismatch(a))
        );
        b.complete(a, 22, Outcome::Done).unwrap();
        assert_eq!(
            b.complete(a, 23, Outcome::Done),
            Err(HistoryError::AlreadyCompleted(a))
        );
        assert_eq!(
            b.complete(99, 23, Outcome::Done),
            Err(HistoryError::UnknownOp(99))
        );
        b.log_sample(
            30,
            LogSample {
                node: 1,
                topic: "t".into(),
                partition: 0,
                log_start_offset: 0,
                high_watermark: 6,
                log_end_offset: 6,
            },
        );
        b.replica_log(
            31,
            ReplicaLog {
                node: 1,
                topic: "t".into(),
                partition: 0,
                log_start_offset: 0,
                high_watermark: 6,
                records: vec![(5, 42)],
            },
        );
        let h = b.build();
        assert_eq!(h.len(), 6);
        match &h.ops()[never].kind {
            OpKind::Send { result, .. } => {
                assert!(matches!(result, SendResult::Indeterminate { .. }))
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = h.to_json_lines();
        assert_eq!(text.lines().count(), 6);
        let back = History::from_json_lines(&text).unwrap();
        assert_eq!(back, h);
        // Display never panics and names the op.
        for op in h.ops() {
            assert!(op.to_string().starts_with(&format!("op {}", op.id)));
        }
    }
}
