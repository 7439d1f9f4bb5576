//! A partition as the server sees it: its [`Log`] behind a mutex, its high watermark, and the
//! group-commit flusher that turns appended bytes into durable bytes.
//!
//! Group commit: appends only write; one flusher per partition loops "prepare a flush ticket under
//! the lock, fsync the ticket's files outside it, publish the new durable offset". Every batch
//! appended while an fsync runs is covered by the next one, so throughput does not fall to the
//! disk's fsync rate. Producers waiting for acks watch the durable offset.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use crate::config::FsyncPolicy;
use crate::log::Log;
use crate::storage::Storage;

/// Why a producer's wait for durability ended without it.
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
    log: Mutex<Log<S>>,
    fsync: FsyncPolicy,
    /// Offsets below this are visible to consumers.
    high_watermark: AtomicI64,
    /// Offsets below this are fsynced; producers waiting for acks watch it.
    durable: watch::Sender<i64>,
    /// Wakes the flusher; a stored permit means "there may be something to flush".
    flush_wanted: Notify,
    /// Set when an fsync failed: the data on disk can no longer be trusted to match memory.
    failed: AtomicBool,
    closed: AtomicBool,
    /// Bumped whenever any partition's high watermark advances; long-poll fetches watch it.
    data_version: watch::Sender<u64>,
}

impl<S: Storage> Partition<S> {
    pub fn new(
        topic: String,
        index: i32,
        log: Log<S>,
        fsync: FsyncPolicy,
        data_version: watch::Sender<u64>,
    ) -> Arc<Self> {
        let end = log.log_end_offset();
        debug_assert_eq!(log.durable_offset(), end, "a freshly opened log is durable");
        let (durable, _) = watch::channel(end);
        let partition = Arc::new(Partition {
            topic,
            index,
            log: Mutex::new(log),
            fsync,
            high_watermark: AtomicI64::new(end),
            durable,
            flush_wanted: Notify::new(),
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            data_version,
        });
        if fsync == FsyncPolicy::Always {
            tokio::spawn(Arc::clone(&partition).run_flusher());
        }
        partition
    }

    /// The log, locked. Hold it briefly: appends and reads of this partition wait on it.
    pub fn log(&self) -> MutexGuard<'_, Log<S>> {
        self.log
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

    /// Called after an append that ended at `log_end_offset`. Without per-batch fsync the new
    /// records are visible at once; with it they become visible when the flusher makes them
    /// durable, so a consumer never reads a record that a crash could take back.
    pub fn appended(&self, log_end_offset: i64) {
        match self.fsync {
            FsyncPolicy::Always => self.flush_wanted.notify_one(),
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => {
                self.advance_high_watermark(log_end_offset)
            }
        }
    }

    fn advance_high_watermark(&self, offset: i64) {
        let previous = self.high_watermark.fetch_max(offset, Ordering::AcqRel);
        if offset > previous {
            self.data_version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Waits until every offset below `end_offset` is durable. Returns at once unless the fsync
    /// policy is `always`.
    pub async fn wait_durable(&self, end_offset: i64) -> Result<(), DurableError> {
        if self.fsync != FsyncPolicy::Always {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            if *rx.borrow_and_update() >= end_offset {
                return Ok(());
            }
            if self.is_failed() {
                return Err(DurableError::Storage);
            }
            if self.is_closed() {
                return Err(DurableError::Closed);
            }
            if rx.changed().await.is_err() {
                return Err(DurableError::Closed);
            }
        }
    }

    /// One flush: sync every file holding unsynced bytes, outside the log lock.
    /// Returns false when there was nothing to flush.
    pub fn flush_once(&self) -> std::io::Result<bool> {
        let ticket = match self.log().prepare_flush() {
            Some(ticket) => ticket,
            None => return Ok(false),
        };
        ticket.sync()?;
        let durable = {
            let mut log = self.log();
            log.complete_flush(&ticket);
            log.durable_offset()
        };
        // A truncation between prepare and complete makes the ticket stale, so `durable` may
        // stay below `ticket.upto()`; it never passes the log end.
        self.durable.send_modify(|d| *d = (*d).max(durable));
        if self.fsync == FsyncPolicy::Always {
            self.advance_high_watermark(durable);
        }
        Ok(true)
    }

    async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            if self.is_closed() || self.is_failed() {
                break;
            }
            let me = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || {
                // Keep flushing while appends keep arriving: each round covers all of them.
                while me.flush_once()? {}
                Ok::<(), std::io::Error>(())
            })
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                        "fsync failed; partition offline until restart");
                    self.fail();
                    break;
                }
                Err(e) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                        "flusher task failed");
                    self.fail();
                    break;
                }
            }
        }
    }

    /// Marks the partition failed and wakes every waiter so it can answer KAFKA_STORAGE_ERROR.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.durable.send_modify(|_| {});
    }

    /// Stops the flusher and wakes every waiter. The caller then closes or deletes the log.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        self.durable.send_modify(|_| {});
    }
}
