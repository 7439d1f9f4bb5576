//! A partition as the tokio shell runs it: its sans-IO [`PartitionCore`] behind a mutex, watch
//! channels that publish the high watermark and the ack offset, and the group-commit flusher.
//!
//! Group commit: appends only write; one flusher per partition loops "prepare a flush ticket under
//! the lock, fsync the ticket's files outside it, record the completed flush". Every batch
//! appended while an fsync runs is covered by the next one, so throughput does not fall to the
//! disk's fsync rate. Producers waiting for acks watch the ack offset. A follower's appends
//! use the same flusher, so its next fetch overlaps the fsync of the last one's batches.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::core::{
    AckPolicy, DeleteRecordsError, NodeId, PartitionCore, ReplicaFetchError, ReplicaFetchPosition,
    ReplicaRole,
};
use crate::log::{AppendError, AppendInfo, Log, ReadError, StoredRecords};
use crate::storage::Storage;
use crate::sync::Watch;

/// Why a producer's wait for its acknowledgement ended without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableError {
    /// The fsync failed; the partition is offline until restart.
    Storage,
    /// The partition was deleted or the broker is shutting down.
    Closed,
    /// Leadership moved while the produce waited for the ISR (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// The ISR shrank below min.insync.replicas while the produce waited
    /// (NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    NotEnoughReplicasAfterAppend,
}

/// Why a produce was refused before anything was appended.
#[derive(Debug)]
pub enum ProduceError {
    NotLeader,
    NotEnoughReplicas { isr: usize, min_isr: usize },
    Append(AppendError),
}

/// Where a follower stands: what its next fetch from `leader` in `epoch` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    pub leader: NodeId,
    pub epoch: i32,
    /// The fetch offset: everything appended, synced or not.
    pub log_end: i64,
    /// What this replica holds acknowledgeably (fsynced under `--fsync always`).
    pub durable_end: i64,
    /// Epoch of the last appended batch (-1: empty log).
    pub last_epoch: i32,
    pub log_start: i64,
}

/// A leader's answer to one partition of a follower's fetch.
#[derive(Debug)]
pub struct ReplicaRead {
    pub position: ReplicaFetchPosition,
    pub records: StoredRecords,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
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
    /// Set while appends fail for want of space (ENOSPC): the log is intact but cannot grow.
    /// Cleared by the next append that succeeds. Unlike `failed`, it heals without a restart.
    out_of_space: AtomicBool,
    closed: AtomicBool,
    /// Bumped whenever any partition's high watermark advances; long-poll fetches watch it.
    data_version: Arc<Watch<u64>>,
    /// Bumped whenever any leader appends; followers' long-poll fetches watch it.
    log_end_version: Arc<Watch<u64>>,
    /// The high watermark, for acks=all waiters (a mirror of the core's).
    high_watermark_watch: Watch<i64>,
    /// Mirror of the core's leader epoch and whether it leads.
    leader_epoch: AtomicI32,
    leading: AtomicBool,
    /// Part of a cluster (false: a single broker's, always the standalone leader).
    clustered: bool,
}

impl<S: Storage> Partition<S> {
    pub fn new(
        topic: String,
        index: i32,
        log: Log<S>,
        policy: AckPolicy,
        data_version: Arc<Watch<u64>>,
        log_end_version: Arc<Watch<u64>>,
        clustered: bool,
    ) -> Arc<Self> {
        let mut core = PartitionCore::new(log, policy);
        if clustered {
            // Nothing is led until the metadata says so, and nothing is known committed.
            core.start_as_replica();
        }
        let ack_offset = Watch::new(core.ack_offset());
        let partition = Arc::new(Partition {
            topic,
            index,
            high_watermark: AtomicI64::new(core.high_watermark()),
            high_watermark_watch: Watch::new(core.high_watermark()),
            leader_epoch: AtomicI32::new(core.leader_epoch()),
            leading: AtomicBool::new(core.is_leader()),
            clustered,
            core: Mutex::new(core),
            ack_offset,
            flush_wanted: Notify::new(),
            failed: AtomicBool::new(false),
            out_of_space: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            data_version,
            log_end_version,
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

    /// Whether this replica's last append failed because its disk is full (see
    /// `out_of_space`). In a cluster such a copy asks to leave its ISR, and so its
    /// leadership, as a failed one does; it rejoins once appends succeed and it catches up.
    pub fn is_out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Acquire)
    }

    /// Records whether an append succeeded or failed for want of space. Returns true when
    /// this changed whether the partition is out of space (for logging the change once).
    fn note_append<T>(&self, result: &Result<T, AppendError>) -> bool {
        let full = match result {
            Ok(_) => false,
            Err(AppendError::Storage(e)) if crate::storage::is_disk_full(e) => true,
            // Refused for other reasons: says nothing about the disk.
            Err(_) => return false,
        };
        if full && crate::planted::enabled(crate::planted::PlantedBug::FullDiskFailsCopy) {
            self.fail();
            return false;
        }
        // Every append passes here: read first, and write the shared line only on a change.
        self.out_of_space.load(Ordering::Acquire) != full
            && self.out_of_space.swap(full, Ordering::AcqRel) != full
    }

    /// Appends as received (as the standalone broker, in epoch 0) and publishes what changed.
    /// Returns the append and the log start.
    pub fn append(
        &self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendInfo, i64), AppendError> {
        let _ = leader_epoch;
        match self.produce(batches, None, now_ms) {
            Ok((info, log_start, _)) => Ok((info, log_start)),
            Err(ProduceError::Append(e)) => Err(e),
            Err(e) => Err(AppendError::Storage(std::io::Error::other(format!(
                "{e:?}"
            )))),
        }
    }

    /// A producer's append on the leader: refused unless this replica leads, and (for acks=all,
    /// `min_isr` set) unless the ISR has at least `min_isr` members. Returns the append, the log
    /// start and the leader epoch it was appended in.
    pub fn produce(
        &self,
        batches: &[u8],
        min_isr: Option<usize>,
        now_ms: i64,
    ) -> Result<(AppendInfo, i64, i32), ProduceError> {
        let (info, log_start, epoch, high_watermark, ack_offset, policy) = {
            let mut core = self.core();
            if !core.is_leader() {
                return Err(ProduceError::NotLeader);
            }
            if let Some(min_isr) = min_isr {
                let isr = core.isr_len();
                if isr < min_isr {
                    return Err(ProduceError::NotEnoughReplicas { isr, min_isr });
                }
            }
            let epoch = core.leader_epoch();
            let appended = core.append(batches, epoch, now_ms);
            if self.note_append(&appended) && self.clustered {
                self.log_space_change();
            }
            let info = appended.map_err(ProduceError::Append)?;
            (
                info,
                core.log().log_start_offset(),
                epoch,
                core.high_watermark(),
                core.ack_offset(),
                core.policy(),
            )
        };
        self.publish(high_watermark, ack_offset);
        if !info.duplicate {
            self.log_end_version.modify(|v| {
                *v = v.wrapping_add(1);
                true
            });
        }
        if policy == AckPolicy::AfterFsync {
            self.flush_wanted.notify_one();
        }
        Ok((info, log_start, epoch))
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Whether this replica serves consumers that fetch from followers; see
    /// [`PartitionCore::serves_follower_reads`].
    pub fn serves_follower_reads(&self) -> bool {
        self.core().serves_follower_reads()
    }

    /// Leader side: the replicas that could serve a consumer fetching at `fetch_offset`; see
    /// [`PartitionCore::read_candidates`].
    pub fn read_candidates(&self, fetch_offset: i64, now_ms: i64) -> Vec<(NodeId, i64, i64)> {
        self.core().read_candidates(fetch_offset, now_ms)
    }

    /// Applies the metadata's view of this partition: lead, follow, or neither, under the
    /// topic's `min_isr`. Wakes every waiter whose leadership ended.
    #[allow(clippy::too_many_arguments)]
    pub fn set_role(
        &self,
        me: NodeId,
        leader: NodeId,
        epoch: i32,
        partition_epoch: i32,
        replicas: &[NodeId],
        isr: &[NodeId],
        min_isr: usize,
        now_ms: i64,
    ) {
        let (high_watermark, ack_offset, changed) = {
            let mut core = self.core();
            // The stricter of the old and new min.insync.replicas rules while the role and ISR
            // change, the new one after: a raised minimum must hold before a smaller ISR
            // applies, and a lowered one must not let a leader of an ended epoch (or with an
            // ISR this image changes) advance its high watermark.
            let stricter = core.min_insync_replicas().max(min_isr);
            if core.min_insync_replicas() != stricter {
                core.set_min_insync_replicas(stricter);
            }
            let before = (core.leader_epoch(), core.is_leader());
            if epoch < core.leader_epoch() && !matches!(core.role(), ReplicaRole::Standalone) {
                tracing::warn!(topic = %self.topic, partition = self.index, epoch,
                    known = core.leader_epoch(), "ignoring metadata with an older leader epoch");
                return;
            }
            let same_epoch = core.leader_epoch() == epoch;
            match core.role().clone() {
                ReplicaRole::Leader(_) if leader == me && same_epoch => {
                    let (replicas, isr) = (replicas.to_vec(), isr.to_vec());
                    core.update_leader_isr(partition_epoch, replicas, isr, now_ms);
                }
                ReplicaRole::Follower { leader: l, .. }
                    if leader != me && l == leader && same_epoch => {}
                _ if leader == me && isr.contains(&me) => {
                    let (replicas, isr) = (replicas.to_vec(), isr.to_vec());
                    core.become_leader(me, epoch, partition_epoch, replicas, isr, now_ms);
                    tracing::info!(topic = %self.topic, partition = self.index, epoch,
                        log_end = core.log().log_end_offset(), "leading");
                }
                _ if leader >= 0 && leader != me && replicas.contains(&me) => {
                    core.become_follower(leader, epoch);
                    tracing::info!(topic = %self.topic, partition = self.index, epoch, leader,
                        "following");
                }
                ReplicaRole::Offline { .. } if same_epoch => {}
                _ => core.become_offline(epoch),
            }
            if core.min_insync_replicas() != min_isr {
                core.set_min_insync_replicas(min_isr);
            }
            if core.leader_epoch() != before.0 && self.is_out_of_space() {
                // The mark says an append failed in this epoch; the next failing one says it
                // again. Kept across epochs, it outlived the disk being full: each time this
                // copy asked out of the ISR (and its leader asked it back in), the epoch
                // changed, which abandons the follower's fetch in flight, so no answer came
                // back to clear it (cluster sim seed 9,880,363: hundreds of epochs).
                self.out_of_space.store(false, Ordering::Release);
            }
            core.set_in_isr(isr.contains(&me));
            self.leader_epoch
                .store(core.leader_epoch(), Ordering::Release);
            self.leading.store(core.is_leader(), Ordering::Release);
            let after = (core.leader_epoch(), core.is_leader());
            (core.high_watermark(), core.ack_offset(), before != after)
        };
        self.publish(high_watermark, ack_offset);
        if changed {
            // Producers waiting in an epoch that ended must answer NOT_LEADER_OR_FOLLOWER.
            self.high_watermark_watch.wake_all();
            self.ack_offset.wake_all();
        }
    }

    /// Whether `replica` is in this leader's ISR (counting a pending expansion); false when
    /// this broker does not lead the partition.
    pub fn in_isr(&self, replica: NodeId) -> bool {
        match self.core().role() {
            ReplicaRole::Leader(l) => l.maximal_isr().contains(&replica),
            _ => false,
        }
    }

    /// Leader side of one partition of a follower's fetch. `max_bytes` 0 reads nothing (a throttled replica over its quota)
    /// but still records the fetch: the follower's position, durable end and log start.
    #[allow(clippy::too_many_arguments)]
    pub fn replica_fetch(
        &self,
        replica: NodeId,
        current_leader_epoch: i32,
        fetch_offset: i64,
        durable_offset: Option<i64>,
        last_fetched_epoch: i32,
        follower_log_start: i64,
        max_bytes: usize,
        now_ms: i64,
    ) -> Result<ReplicaRead, ReplicaFetchError> {
        let (read, ack_offset) = {
            let mut core = self.core();
            let position = core.replica_fetch(
                replica,
                current_leader_epoch,
                fetch_offset,
                durable_offset,
                last_fetched_epoch,
                now_ms,
            )?;
            core.note_follower_log_start(replica, follower_log_start);
            let records = match position {
                ReplicaFetchPosition::Read if max_bytes == 0 => StoredRecords::new(),
                ReplicaFetchPosition::Read => {
                    match core.read_for_replica(fetch_offset, max_bytes) {
                        Ok(r) => r,
                        Err(ReadError::OffsetOutOfRange { .. }) => StoredRecords::new(),
                        Err(e) => {
                            tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                            "read for a follower failed");
                            StoredRecords::new()
                        }
                    }
                }
                ReplicaFetchPosition::Diverging { .. } => StoredRecords::new(),
            };
            (
                ReplicaRead {
                    position,
                    records,
                    high_watermark: core.high_watermark(),
                    log_start_offset: core.log().log_start_offset(),
                    log_end_offset: core.log().log_end_offset(),
                },
                core.ack_offset(),
            )
        };
        self.publish(read.high_watermark, ack_offset);
        Ok(read)
    }

    /// Follower side: appends the leader's batches (if this replica still follows in `epoch`)
    /// and takes the leader's high watermark and log start (DeleteRecords). The fsync is left to this partition's flusher,
    /// so the next fetch can be on its way while it runs; the fetch reports the durable end
    /// separately. Runs on a blocking thread.
    pub fn follower_apply(
        &self,
        epoch: i32,
        records: &[u8],
        leader_high_watermark: i64,
        leader_log_start: i64,
        now_ms: i64,
    ) -> Result<(), AppendError> {
        // A failed replica syncs nothing more: were it to take records, its fetch offset would
        // keep it in the ISR while its durable end, and with it the high watermark, stood still.
        if self.is_failed() {
            let failed = std::io::Error::other("this replica failed; it takes no records");
            return Err(AppendError::Storage(failed));
        }
        let (high_watermark, ack_offset, policy) = {
            let mut core = self.core();
            if !matches!(core.role(), ReplicaRole::Follower { epoch: e, .. } if *e == epoch) {
                return Ok(());
            }
            if !records.is_empty() {
                let appended = core.append_as_follower(records, now_ms);
                if self.note_append(&appended) {
                    self.log_space_change();
                }
                appended?;
            } else {
                // Nothing to take: this copy holds all the leader had for it, so it is not
                // short of space for anything yet (a leader that counts it caught up would
                // otherwise see it ask out of the ISR after every return). Said again if an
                // append fails again.
                if self.is_out_of_space() {
                    self.out_of_space.store(false, Ordering::Release);
                }
            }
            core.follower_high_watermark(leader_high_watermark);
            if core.follower_log_start(leader_log_start)? {
                tracing::info!(topic = %self.topic, partition = self.index,
                    log_start = core.log().log_start_offset(), "records deleted as the leader's were");
            }
            (core.high_watermark(), core.ack_offset(), core.policy())
        };
        if !records.is_empty() && policy == AckPolicy::AfterFsync {
            self.flush_wanted.notify_one();
        }
        self.publish(high_watermark, ack_offset);
        Ok(())
    }

    /// Follower side: waits until this replica holds everything below `offset` (or below its
    /// log end, if that is lower) acknowledgeably. Errors if the partition failed or closed.
    pub async fn wait_follower_durable(&self, offset: i64) -> Result<(), DurableError> {
        let target = offset.min(self.core().log().log_end_offset());
        self.wait_acknowledgeable(target).await
    }

    /// Follower side: drop a divergent suffix, durably, when the leader said so.
    pub fn follower_truncate(
        &self,
        epoch: i32,
        leader_epoch_end: (i32, i64),
    ) -> std::io::Result<()> {
        let mut core = self.core();
        if !matches!(core.role(), ReplicaRole::Follower { epoch: e, .. } if *e == epoch) {
            return Ok(());
        }
        let (diverging_epoch, leader_end) = leader_epoch_end;
        let (hw_before, from) = (core.high_watermark(), core.log().log_end_offset());
        let to = core.truncate_diverging(diverging_epoch, leader_end)?;
        tracing::info!(topic = %self.topic, partition = self.index, epoch, diverging_epoch,
            leader_end, from, to, "truncated a divergent suffix");
        // The mirrors follow a lowered high watermark exactly (publish only raises them).
        self.high_watermark
            .store(core.high_watermark(), Ordering::Release);
        let lowered = core.high_watermark();
        self.high_watermark_watch.modify(|h| {
            *h = lowered;
            false
        });
        if core.high_watermark() < hw_before {
            tracing::error!(topic = %self.topic, partition = self.index, hw_before, to,
                "truncated below the high watermark");
        }
        Ok(())
    }

    /// Leader side of DeleteRecords for this partition: see [`PartitionCore::delete_records`].
    pub fn delete_records(&self, offset: i64) -> Result<i64, DeleteRecordsError> {
        let start = self.core().delete_records(offset)?;
        tracing::info!(topic = %self.topic, partition = self.index, log_start = start,
            "records deleted");
        Ok(start)
    }

    /// The leader's low watermark: see [`PartitionCore::low_watermark`].
    pub fn low_watermark(&self) -> i64 {
        self.core().low_watermark()
    }

    /// Follower side: the leader's log starts past our end; start over there.
    pub fn follower_restart_at(&self, epoch: i32, offset: i64) -> std::io::Result<()> {
        let mut core = self.core();
        if !matches!(core.role(), ReplicaRole::Follower { epoch: e, .. } if *e == epoch) {
            return Ok(());
        }
        tracing::warn!(topic = %self.topic, partition = self.index, offset,
            "the leader's log starts past ours; restarting the replica there");
        core.restart_at(offset)?;
        self.high_watermark
            .store(core.high_watermark(), Ordering::Release);
        Ok(())
    }

    /// This broker is no longer a replica of the partition (a reassignment removed it and the
    /// metadata moved it offline): its copy is deleted, as Kafka's StopReplica with delete
    /// does, keeping an empty log in place should a later reassignment add it back. Returns
    /// whether anything was deleted.
    pub fn drop_removed_replica(&self) -> std::io::Result<bool> {
        let mut core = self.core();
        let log = core.log();
        let empty = log.log_end_offset() == log.log_start_offset();
        if empty || !matches!(core.role(), ReplicaRole::Offline { .. }) {
            return Ok(false);
        }
        tracing::info!(topic = %self.topic, partition = self.index,
            log_end = log.log_end_offset(), "no longer a replica; deleting this copy");
        core.restart_at(0)?;
        self.high_watermark
            .store(core.high_watermark(), Ordering::Release);
        Ok(true)
    }

    /// What a follower sends in its next fetch, or None when it does not follow.
    pub fn follower_position(&self) -> Option<FollowerPosition> {
        let core = self.core();
        match core.role() {
            ReplicaRole::Follower { leader, epoch } => Some(FollowerPosition {
                leader: *leader,
                epoch: *epoch,
                log_end: core.log().log_end_offset(),
                durable_end: core.ack_offset(),
                last_epoch: core.log().latest_epoch().unwrap_or(-1),
                log_start: core.log().log_start_offset(),
            }),
            _ => None,
        }
    }

    /// See [`PartitionCore::isr_change_refused`].
    pub fn isr_change_refused(&self, new_isr: &[NodeId], asked_ms: i64) {
        let (high_watermark, ack_offset) = {
            let mut core = self.core();
            core.isr_change_refused(new_isr, asked_ms);
            (core.high_watermark(), core.ack_offset())
        };
        self.publish(high_watermark, ack_offset);
    }

    /// An ISR change to ask the controller for: (leader epoch, partition epoch, current ISR,
    /// new ISR). A refusal names it by `now_ms`, when it was asked.
    pub fn isr_change(
        &self,
        now_ms: i64,
        lag_max_ms: i64,
        joinable: impl Fn(NodeId) -> bool,
    ) -> Option<(i32, i32, Vec<NodeId>, Vec<NodeId>)> {
        let mut core = self.core();
        let (epoch, partition_epoch) = (core.leader_epoch(), core.partition_epoch()?);
        core.isr_change(now_ms, lag_max_ms, joinable)
            .map(|(current, new)| (epoch, partition_epoch, current, new))
    }

    /// A consumer's read at `offset`, with the high watermark and log start it was made against.
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> (Result<StoredRecords, ReadError>, i64, i64) {
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
            self.high_watermark_watch.modify(|h| {
                let advanced = high_watermark > *h;
                *h = (*h).max(high_watermark);
                advanced
            });
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

    /// Waits until this replica holds a produce ending at `end_offset` acknowledgeably (acks=1),
    /// as long as it still leads in `epoch`: a leader that lost the partition before its write
    /// became durable answers NOT_LEADER_OR_FOLLOWER at once. (Its tail may be truncated away
    /// as a follower, and the write would then never become acknowledgeable here.)
    pub async fn wait_written(&self, end_offset: i64, epoch: i32) -> Result<(), DurableError> {
        self.wait_in_epoch(&self.ack_offset, end_offset, epoch)
            .await
    }

    /// Waits until every ISR member holds a produce ending at `end_offset` (acks=all), as long
    /// as this replica still leads in `epoch`; then checks the ISR still has `min_isr` members.
    pub async fn wait_replicated(
        &self,
        end_offset: i64,
        epoch: i32,
        min_isr: usize,
    ) -> Result<(), DurableError> {
        self.wait_in_epoch(&self.high_watermark_watch, end_offset, epoch)
            .await?;
        if self.core().isr_len() < min_isr {
            return Err(DurableError::NotEnoughReplicasAfterAppend);
        }
        Ok(())
    }

    /// Waits until `offset` reaches `end_offset` while this replica leads in `epoch`, the
    /// partition neither failed nor closed (set_role, fail and close wake the watch).
    async fn wait_in_epoch(
        &self,
        offset: &Watch<i64>,
        end_offset: i64,
        epoch: i32,
    ) -> Result<(), DurableError> {
        let moved = || !self.is_leader() || self.leader_epoch() != epoch;
        let reached = offset
            .wait_for(|o| *o >= end_offset || self.is_failed() || self.is_closed() || moved())
            .await;
        if reached >= end_offset {
            Ok(())
        } else if self.is_failed() {
            Err(DurableError::Storage)
        } else if self.is_closed() {
            Err(DurableError::Closed)
        } else {
            Err(DurableError::NotLeader)
        }
    }

    /// Whether every ISR member already holds a produce ending at `end_offset`.
    pub fn replicated(&self, end_offset: i64) -> bool {
        self.high_watermark.load(Ordering::Acquire) >= end_offset
    }

    /// A single broker's partition: the only replica, so acks=all waits for what acks=1 does.
    pub fn is_standalone(&self) -> bool {
        !self.clustered
    }

    /// One flush: sync every file holding unsynced bytes, outside the lock.
    /// Returns false when there was nothing to flush.
    ///
    /// A follower's synced bytes then leave the OS page cache: nothing reads them until this
    /// replica leads, and kept there they would push out the pages consumers and followers
    /// read from the partitions this broker leads. (In the one-machine cluster benchmark the
    /// kernel's page allocation and reclaim behind three copies of every byte cost more than
    /// the copies did; see BENCHMARKS.md.)
    pub fn flush_once(&self) -> std::io::Result<bool> {
        let (ticket, follower) = {
            let core = self.core();
            match core.prepare_flush() {
                Some(ticket) => (ticket, matches!(core.role(), ReplicaRole::Follower { .. })),
                None => return Ok(false),
            }
        };
        ticket.sync()?;
        let (high_watermark, ack_offset) = {
            let mut core = self.core();
            let ack_offset = core.complete_flush(&ticket);
            (core.high_watermark(), ack_offset)
        };
        self.publish(high_watermark, ack_offset);
        if follower {
            ticket.drop_cached();
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

    /// Says once that appends started or stopped failing for want of space (a follower retries
    /// every fetch; a leader every produce).
    fn log_space_change(&self) {
        if self.is_out_of_space() {
            tracing::error!(topic = %self.topic, partition = self.index,
                "the disk is full: this copy takes no records until there is room");
        } else {
            tracing::info!(topic = %self.topic, partition = self.index,
                "the disk has room again: this copy takes records");
        }
    }

    /// Marks the partition failed and wakes every waiter so it can answer KAFKA_STORAGE_ERROR.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.ack_offset.wake_all();
        self.high_watermark_watch.wake_all();
    }

    /// Writes the high watermark to the log's checkpoint (replicated partitions only: a single
    /// broker's high watermark is its log end at every start). Nothing is written once the
    /// partition is closed: checked under the core lock, which a deletion takes after closing
    /// and before removing the directory, so no checkpoint lands in a removed directory (where
    /// a topic recreated under the same name would find it).
    pub fn checkpoint_high_watermark(&self) -> std::io::Result<()> {
        if !self.clustered || self.is_failed() {
            return Ok(());
        }
        let mut core = self.core();
        if self.is_closed() {
            return Ok(());
        }
        let hw = core.high_watermark();
        core.log_mut().checkpoint_high_watermark(hw)
    }

    /// Stops the flusher and wakes every waiter. The caller then closes or deletes the log.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wanted.notify_one();
        self.ack_offset.wake_all();
        self.high_watermark_watch.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::log::testutil::simple_batch;
    use crate::log::LogConfig;
    use crate::storage::MemStorage;
    use crate::sync::Watch;

    const T0: i64 = 1_700_000_000_000;

    fn clustered_partition() -> Arc<Partition<MemStorage>> {
        clustered_partition_on(MemStorage::new())
    }

    fn clustered_partition_on(storage: MemStorage) -> Arc<Partition<MemStorage>> {
        let (log, _) = Log::open(
            storage,
            Path::new("/d/t-0").to_path_buf(),
            LogConfig::default(),
            T0,
        )
        .unwrap();
        let versions = Arc::new(Watch::new(0u64));
        Partition::new(
            "t".into(),
            0,
            log,
            AckPolicy::AfterFsync,
            Arc::clone(&versions),
            versions,
            true,
        )
    }

    #[tokio::test]
    async fn an_acks_one_wait_ends_when_leadership_moves_before_the_write_is_durable() {
        let p = clustered_partition();
        p.set_role(1, 1, 1, 0, &[1, 2], &[1, 2], 1, T0);
        // The flusher is a task of this single-threaded runtime: nothing syncs until we wait.
        let (info, _, epoch) = p.produce(&simple_batch(T0, &[b"a"]), None, T0).unwrap();
        assert_eq!(epoch, 1);
        // Leadership moves; as a follower the replica then cuts its unreplicated tail.
        p.set_role(1, 2, 2, 0, &[1, 2], &[1, 2], 1, T0);
        p.follower_truncate(2, (1, 0)).unwrap();
        assert_eq!(p.core().log().log_end_offset(), 0);
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            p.wait_written(info.last_offset + 1, 1),
        )
        .await;
        assert_eq!(
            answered.expect("answered, not left to time out"),
            Err(DurableError::NotLeader)
        );
    }

    /// A failed follower takes no more records: its log end, which the leader counts as caught
    /// up, stays where its last sync left it, so the leader drops it from the ISR rather than
    /// wait on a durable end that never moves.
    #[tokio::test]
    async fn a_failed_follower_takes_no_records() {
        let p = clustered_partition();
        p.set_role(1, 2, 1, 0, &[1, 2], &[1, 2], 1, T0);
        p.follower_apply(1, &simple_batch(T0, &[b"a"]), 0, 0, T0)
            .unwrap();
        assert_eq!(p.core().log().log_end_offset(), 1);
        p.fail();
        let mut second = simple_batch(T0, &[b"b"]).to_vec();
        second[..8].copy_from_slice(&1i64.to_be_bytes());
        let refused = p.follower_apply(1, &second, 1, 0, T0);
        assert!(
            matches!(refused, Err(AppendError::Storage(_))),
            "{refused:?}"
        );
        assert_eq!(p.core().log().log_end_offset(), 1);
    }

    /// The batch `simple_batch(T0, [value])` placed at `offset`.
    fn batch_at(offset: i64, value: &[u8]) -> Vec<u8> {
        let mut batch = simple_batch(T0, &[value]).to_vec();
        batch[..8].copy_from_slice(&offset.to_be_bytes());
        batch
    }

    /// A full disk is not a failed one: the copy says it is out of space (so a cluster node
    /// asks to leave the ISR) but keeps its log as it was, and takes records again, without a
    /// restart, once there is room. As leader and as follower.
    #[tokio::test]
    async fn a_full_disk_refuses_records_until_there_is_room_and_fails_nothing() {
        let storage = MemStorage::new();
        let p = clustered_partition_on(storage.clone());
        p.set_role(1, 1, 1, 0, &[1, 2], &[1, 2], 1, T0);
        p.produce(&simple_batch(T0, &[b"a"]), None, T0).unwrap();
        assert!(!p.is_out_of_space());

        storage.set_full_under("/d/t-0/", true);
        let refused = p.produce(&simple_batch(T0, &[b"b"]), None, T0);
        assert!(
            matches!(&refused, Err(ProduceError::Append(AppendError::Storage(e))) if crate::storage::is_disk_full(e)),
            "{refused:?}"
        );
        assert!(p.is_out_of_space());
        assert!(!p.is_failed());
        assert_eq!(p.core().log().log_end_offset(), 1);

        // Leadership moves away; as a follower it is refused the same records until there is
        // room, then takes them at the offset it asked for.
        p.set_role(1, 2, 2, 0, &[1, 2], &[2], 1, T0);
        // A new epoch starts with no failed append: kept, the mark would be reported with no
        // answer ever clearing it while each report changed the epoch again.
        assert!(!p.is_out_of_space());
        let refused = p.follower_apply(2, &batch_at(1, b"b"), 1, 0, T0);
        assert!(
            matches!(&refused, Err(AppendError::Storage(e)) if crate::storage::is_disk_full(e)),
            "{refused:?}"
        );
        assert!(p.is_out_of_space() && !p.is_failed());
        assert_eq!(p.core().log().log_end_offset(), 1);
        // A fetch with nothing to take: the copy holds all there is, so it does not ask out
        // of the ISR (a leader that counts it caught up would ask it back every time).
        p.follower_apply(2, &[], 1, 0, T0).unwrap();
        assert!(!p.is_out_of_space());
        assert!(p.follower_apply(2, &batch_at(1, b"b"), 1, 0, T0).is_err());
        assert!(p.is_out_of_space());

        storage.set_full_under("/d/t-0/", false);
        p.follower_apply(2, &batch_at(1, b"b"), 2, 0, T0).unwrap();
        assert!(!p.is_out_of_space());
        assert_eq!(p.core().log().log_end_offset(), 2);
        // What it took is synced as any follower's records are.
        let synced = tokio::time::timeout(Duration::from_secs(10), p.wait_follower_durable(2));
        assert_eq!(synced.await.expect("the flusher syncs it"), Ok(()));
    }

    /// A leader whose record is durable on itself only, so it is held out of the high
    /// watermark by ISR `isr` and min.insync.replicas `min_isr`.
    async fn leader_with_a_held_record(
        isr: &[NodeId],
        min_isr: usize,
    ) -> Arc<Partition<MemStorage>> {
        let p = clustered_partition();
        p.set_role(1, 1, 1, 0, &[1, 2], isr, min_isr, T0);
        let (info, _, epoch) = p.produce(&simple_batch(T0, &[b"a"]), None, T0).unwrap();
        let synced = tokio::time::timeout(
            Duration::from_secs(10),
            p.wait_written(info.last_offset + 1, epoch),
        )
        .await;
        assert_eq!(synced.expect("the flusher syncs it"), Ok(()));
        assert_eq!(p.core().high_watermark(), 0);
        p
    }

    /// The image that ends a leadership also lowers min.insync.replicas: the ended epoch's
    /// high watermark must not move under the lower minimum (the record was never committed;
    /// the new leader need not have it).
    #[tokio::test]
    async fn a_lower_min_isr_does_not_commit_in_an_ended_epoch() {
        let p = leader_with_a_held_record(&[1], 2).await;
        p.set_role(1, 2, 2, 0, &[1, 2], &[2], 1, T0);
        assert_eq!(p.core().high_watermark(), 0);
        assert_eq!(p.core().min_insync_replicas(), 1);
    }

    /// The image that shrinks the ISR also raises min.insync.replicas: the raised minimum
    /// holds the high watermark before the smaller ISR could pass the record.
    #[tokio::test]
    async fn a_raised_min_isr_holds_before_the_isr_shrinks() {
        let p = leader_with_a_held_record(&[1, 2], 1).await;
        p.set_role(1, 1, 1, 0, &[1, 2], &[1], 2, T0);
        assert_eq!(p.core().high_watermark(), 0);
        assert_eq!(p.core().min_insync_replicas(), 2);
        // With the minimum lowered again, the ISR of one commits it.
        p.set_role(1, 1, 1, 0, &[1, 2], &[1], 1, T0);
        assert_eq!(p.core().high_watermark(), 1);
    }

    #[tokio::test]
    async fn an_acks_one_wait_in_the_current_epoch_ends_when_the_write_is_durable() {
        let p = clustered_partition();
        p.set_role(1, 1, 1, 0, &[1, 2], &[1, 2], 1, T0);
        let (info, _, epoch) = p.produce(&simple_batch(T0, &[b"a"]), None, T0).unwrap();
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            p.wait_written(info.last_offset + 1, epoch),
        )
        .await;
        assert_eq!(answered.expect("the flusher syncs it"), Ok(()));
    }
}
