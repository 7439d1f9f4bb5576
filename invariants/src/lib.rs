//! History checkers for a Kafka-compatible broker, in the spirit of Jepsen's Kafka workload.
//!
//! * [`history`]: the model of a history — client sends, polls, assignment, seeks, commits,
//!   and replica log observations — with a [`HistoryBuilder`] and JSON-lines (de)serialization.
//! * [`checks`]: pure, deterministic checkers (lost/unseen writes, inconsistent offsets,
//!   duplicates, aborted reads, monotonic sends, poll order, log-level invariants), each
//!   reporting [`Violation`]s that name the operations proving them, and [`check_all`] which runs
//!   them all into a [`Report`].
//!
//! No IO, clocks or randomness; output order is deterministic.

pub mod checks;
pub mod history;

pub use checks::{check_all, CheckOptions, Report, Stats, Violation, ViolationKind};
pub use history::{
    Call, CommitResult, History, HistoryBuilder, HistoryError, LogSample, Op, OpId, OpKind,
    Outcome, PollResult, ProcessId, Record, ReplicaLog, SendResult, Time, OBSERVER,
};
