//! A partition as the tokio shell runs it: its sans-IO [`PartitionCore`] behind a mutex, watch
//! channels that publish the high watermark and the ack offset, and the group-commit flusher.
//!
//! Group commit: appends only write; one flusher per partition loops "prepare a flush ticket under
//! the lock, fsync the ticket's files outside it, record the completed flush". Every batch
//! appended while an fsync runs is covered by the next one, so throughput does not fall to the
//! disk's fsync rate. Producers waiting for acks watch the ack offset.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::core::{AckPolicy, PartitionCore};
use crate::log::{AppendError, AppendInfo, Log, ReadError};
use crate::storage::Storage;
use crate::sync::Watch;

/// Why a producer's wait for its acknowledgement ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableError {
    /// The fsync failed; the partition is offline until restart.
    Storage,
    /// The partition was deleted or the broker is shutting down.
    Closed,
}

pub struct Partition<S: Storage> {
    pub topic: String,
    pub index: i32,
    core: Mutex<PartitionCore<S>>,
    /// Mirror of the core's high watermark, readable without the lock.
    high_watermark: AtomicI64,
    /// Mirror of the core's ack offset; producers waiting for acks watch it.
    ack_offset: Watch<i64>,
    /// Wakes the flusher; a stored permit means "there may be something to flush".
    flush_wanted: Notify,
    /// Set when an fsync failed: the data on disk can no longer be trusted to match memory.
    failed: AtomicBool,
    closed: AtomicBool,
    /// Bumped whenever any partition's high watermark advances; long-poll fetches watch it.
    data_version: Arc<Watch<u64>>,
}

impl<S: Storage> Partition<S> {
    pub fn new(
        topic: String,
        index: i32,
        log: Log<S>,
        policy: AckPolicy,
        data_version: Arc<Watch<u64>>,
    ) -> Arc<Self> {
        let core = PartitionCore::new(log, policy);
        let ack_offset = Watch::new(core.ack_offset());
        let partition = Arc::new(Partition {
            topic,
            index,
            high_watermark: AtomicI64::new(core.high_watermark()),
            core: Mutex::new(core),
            ack_offset,
            flush_wanted: Notify::new(),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            data_version,
        });
        if policy == AckPolicy::AfterFsync {
            tokio::spawn(Arc::clone(&partition).run_flusher());
        }
        partition
    }

    /// The core, locked. Hold it briefly: appends and reads of this partition wait on it.
    pub fn core(&self) -> MutexGuard<'_, PartitionCore<S>> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Appends as received and publishes what changed. Returns the append and the log start.
    pub fn append(
        &self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendInfo, i64), AppendError> {
        let (info, log_start, high_watermark, ack_offset, policy) = {
            let mut core = self.core();
            let info = core.append(batches, leader_epoch, now_ms)?;
            (
                info,
                core.log().log_start_offset(),
                core.high_watermark(),
                core.ack_offset(),
                core.policy(),
            )
        };
        self.publish(high_watermark, ack_offset);
        if policy == AckPolicy::AfterFsync {
            self.flush_wanted.notify_one();
        }
        Ok((info, log_start))
    }

    /// A consumer's read at `offset`, with the high watermark and log start it was made against.
    pub fn fetch(&self, offset: i64, max_bytes: usize) -> (Result<Bytes, ReadError>, i64, i64) {
        let core = self.core();
        (
            core.fetch(offset, max_bytes),
            core.high_watermark(),
            core.log().log_start_offset(),
        )
    }

    fn publish(&self, high_watermark: i64, ack_offset: i64) {
        let previous = self
            .high_watermark
            .fetch_max(high_watermark, Ordering::AcqRel);
        if high_watermark > previous {
            self.data_version.modify(|v| {
                *v = v.wrapping_add(1);
                true
            });
        }
        self.ack_offset.modify(|a| {
            let advanced = ack_offset > *a;
            *a = (*a).max(ack_offset);
            advanced
        });
    }

    /// Whether a produce ending at `end_offset` may be acknowledged now.
    pub fn acknowledgeable(&self, end_offset: i64) -> bool {
        self.ack_offset.get() >= end_offset
    }

    /// Waits until a produce ending at `end_offset` may be acknowledged.
    pub async fn wait_acknowledgeable(&self, end_offset: i64) -> Result<(), DurableError> {
        let ack_offset = self
            .ack_offset
            .wait_for(|a| *a >= end_offset || self.is_failed() || self.is_closed())
            .await;
        if ack_offset >= end_offset {
            Ok(())
        } else if self.is_failed() {
            Err(DurableError::Storage)
        } else {
            Err(DurableError::Closed)
        }
    }

    /// One flush: sync every file holding unsynced bytes, outside the lock.
    /// Returns false when there was nothing to flush.
    pub fn flush_once(&self) -> std::io::Result<bool> {
        let ticket = match self.core().prepare_flush() {
            Some(ticket) => ticket,
            None => return Ok(false),
        };
        ticket.sync()?;
        let (high_watermark, ack_offset) = {
            let mut core = self.core();
            let ack_offset = core.complete_flush(&ticket);
            (core.high_watermark(), ack_offset)
        };
        self.publish(high_watermark, ack_offset);
        Ok(true)
    }

    async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            if self.is_closed() || self.is_failed() {
                break;
            }
            let me = Arc::clone(&self);
            let result = crate::blocking::run_blocking(move || {
                // Keep flushing while appends keep arriving: each round covers all of them.
                while me.flush_once()? {}
                Ok::<(), std::io::Error>(())
            })
            .await;
            let error = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(topic = %self.topic, partition = self.index, error = %error,
                "fsync failed; partition offline until restart");
            self.fail();
            break;
        }
    }

    /// Marks the partition failed and wakes every waiter so it can answer KAFKA_STORAGE_ERROR.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.ack_offset.wake_all();
    }

    /// Stops the flusher and wakes every waiter. The caller then closes or deletes the log.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        self.ack_offset.wake_all();
    }
}
