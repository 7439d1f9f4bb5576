//! PartitionCore: the sans-IO rules of one partition on top of its [`Log`]: when a produce may be
//! acknowledged, what consumers may read (the high watermark), and how a fetch offset maps to a
//! read. The tokio shell ([`super::Partition`]) and the simulator both drive this same code, so
//! the rules the simulator checks are the rules production runs.
//!
//! Single node: the high watermark is the durable offset when acknowledgements wait for fsync,
//! and the log end otherwise. Replication will move it to the ISR's durable minimum.

use bytes::Bytes;

use crate::log::{AppendError, AppendInfo, FlushTicket, Log, ReadError};
use crate::planted::{self, PlantedBug};
use crate::storage::Storage;

/// When a produce request may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// After the batch is fsynced (`--fsync always`).
    AfterFsync,
    /// After the batch is written to the OS (`--fsync interval:MS` or `never`).
    AfterWrite,
}

pub struct PartitionCore<S: Storage> {
    log: Log<S>,
    policy: AckPolicy,
    high_watermark: i64,
}

impl<S: Storage> PartitionCore<S> {
    /// Wraps a freshly opened log: everything in it survived a restart, so all of it is durable
    /// and visible.
    pub fn new(log: Log<S>, policy: AckPolicy) -> Self {
        assert_eq!(
            log.durable_offset(),
            log.log_end_offset(),
            "a freshly opened log is durable"
        );
        let high_watermark = log.log_end_offset();
        let core = PartitionCore {
            log,
            policy,
            high_watermark,
        };
        core.check_invariants();
        core
    }

    pub fn log(&self) -> &Log<S> {
        &self.log
    }

    /// The log, for administration (retention, configs, close). Appends go through
    /// [`PartitionCore::append`] so the high watermark stays right.
    pub fn log_mut(&mut self) -> &mut Log<S> {
        &mut self.log
    }

    pub fn policy(&self) -> AckPolicy {
        self.policy
    }

    /// Offsets below this are visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// A produce whose batches end at or below this offset may be acknowledged.
    pub fn ack_offset(&self) -> i64 {
        if planted::enabled(PlantedBug::AckBeforeFsync) {
            return self.log.log_end_offset();
        }
        match self.policy {
            AckPolicy::AfterFsync => self.log.durable_offset(),
            AckPolicy::AfterWrite => self.log.log_end_offset(),
        }
    }

    pub fn append(
        &mut self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let end_before = self.log.log_end_offset();
        let info = self.log.append(batches, leader_epoch, now_ms)?;
        if !info.duplicate {
            assert_eq!(info.base_offset, end_before, "appends land at the log end");
            assert_eq!(self.log.log_end_offset(), info.last_offset + 1);
        }
        if self.policy == AckPolicy::AfterWrite {
            self.advance_high_watermark(self.log.log_end_offset());
        }
        self.check_invariants();
        Ok(info)
    }

    /// The files to fsync, outside any lock, and the offset they will make durable.
    pub fn prepare_flush(&self) -> Option<FlushTicket<S::File>> {
        self.log.prepare_flush()
    }

    /// Records a completed fsync. Returns the new ack offset.
    pub fn complete_flush(&mut self, ticket: &FlushTicket<S::File>) -> i64 {
        self.log.complete_flush(ticket);
        if self.policy == AckPolicy::AfterFsync {
            self.advance_high_watermark(self.log.durable_offset());
        }
        self.check_invariants();
        self.ack_offset()
    }

    fn advance_high_watermark(&mut self, offset: i64) {
        debug_assert!(offset <= self.log.log_end_offset());
        self.high_watermark = self.high_watermark.max(offset);
    }

    /// What a consumer fetching at `offset` gets: whole stored batches below the high watermark
    /// (at least one, even past `max_bytes`), nothing if it is at or past the high watermark but
    /// inside the log, or OffsetOutOfRange outside the log.
    pub fn fetch(&self, offset: i64, max_bytes: usize) -> Result<Bytes, ReadError> {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let visible_end = if planted::enabled(PlantedBug::FetchPastHighWatermark) {
            end
        } else {
            self.high_watermark
        };
        if offset >= visible_end || max_bytes == 0 {
            return Ok(Bytes::new());
        }
        self.log.read(offset, max_bytes, visible_end)
    }

    fn check_invariants(&self) {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        assert!(
            start <= self.high_watermark,
            "log start {start} above high watermark {}",
            self.high_watermark
        );
        assert!(
            self.high_watermark <= end,
            "high watermark {} above log end {end}",
            self.high_watermark
        );
        assert!(
            self.log.durable_offset() <= end,
            "durable offset above log end"
        );
        if self.policy == AckPolicy::AfterFsync {
            assert!(
                self.high_watermark <= self.log.durable_offset(),
                "a record visible before it is durable"
            );
        }
    }
}
