//! PartitionCore: the sans-IO rules of one partition on top of its [`Log`]: when a produce may be
//! acknowledged, what consumers may read (the high watermark), and how a fetch offset maps to a
//! read. The tokio shell ([`super::Partition`]) and the simulator both drive this same code, so
//! the rules the simulator checks are the rules production runs.
//!
//! Replication state lives here too ([`ReplicaRole`]): a partition is the standalone leader of a
//! broker without a quorum, the leader of a leader epoch (tracking each follower's durable log
//! end as its fetches report it), a follower of some leader, or offline. The high watermark is
//! the minimum *acknowledgeable* log end (durable under `--fsync always`) over the leader and
//! every member of the ISR, where the ISR counted is the committed one plus any pending
//! expansion (Kafka's "maximal ISR"): a shrink only counts once the controller committed it.

use std::collections::BTreeMap;

use crate::log::{AppendError, AppendInfo, FlushTicket, Log, ReadError, StoredRecords};

/// An unanswered AlterPartition is sent again after this long.
pub const ISR_CHANGE_RETRY_MS: i64 = 5_000;
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

/// A broker id, as the metadata quorum names it.
pub type NodeId = i32;

/// What a follower's fetches told the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end (its fetch offset): what it has appended, synced or not; -1
    /// until its first fetch in this leader epoch. Lag and divergence are judged on this.
    pub log_end: i64,
    /// What the follower holds acknowledgeably (fsynced under `--fsync always`), at most
    /// `log_end`; -1 until its first fetch. The high watermark and ISR expansion use this.
    pub durable_end: i64,
    /// Last time its fetch offset reached the leader's log end (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up_ms: i64,
    /// Last time it fetched at all (-1: not in this epoch); a replica that stopped fetching
    /// is not added back to the ISR on the strength of an old position.
    pub last_fetch_ms: i64,
    /// The follower's log start, as its fetches report it (-1: not yet in this epoch). The
    /// leader's low watermark, which DeleteRecords waits for, is the lowest over the ISR.
    pub log_start: i64,
}

impl FollowerProgress {
    /// A follower the leader has not heard from in this epoch, counted as caught up at `now_ms`.
    fn unknown(now_ms: i64) -> Self {
        FollowerProgress {
            log_end: -1,
            durable_end: -1,
            last_caught_up_ms: now_ms,
            last_fetch_ms: -1,
            log_start: -1,
        }
    }
}

/// Why a DeleteRecords was refused for a partition.
#[derive(Debug)]
pub enum DeleteRecordsError {
    /// Only the leader deletes records (NOT_LEADER_OR_FOLLOWER).
    NotLeader,
    /// Past the high watermark: only committed records can be deleted (OFFSET_OUT_OF_RANGE).
    BeyondHighWatermark {
        high_watermark: i64,
    },
    Storage(std::io::Error),
}

/// The leader's view of one leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    pub me: NodeId,
    pub epoch: i32,
    /// The partition epoch of the metadata `isr` came from: an AlterPartition names it, so the
    /// controller can refuse the request once the partition changed.
    pub partition_epoch: i32,
    pub replicas: Vec<NodeId>,
    /// The ISR as committed by the controller.
    pub isr: Vec<NodeId>,
    /// An AlterPartition sent and not yet answered by a metadata change: (new ISR, sent at).
    pub pending_isr: Option<(Vec<NodeId>, i64)>,
    pub followers: BTreeMap<NodeId, FollowerProgress>,
}

impl LeaderState {
    /// Committed ISR plus pending additions: everyone whose log the high watermark must wait
    /// for.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut all = self.isr.clone();
        if let Some((pending, _)) = &self.pending_isr {
            for m in pending {
                if !all.contains(m) {
                    all.push(*m);
                }
            }
        }
        all
    }
}

/// This broker's part in the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaRole {
    /// A broker without a quorum leads every partition, alone, in epoch 0.
    Standalone,
    Leader(LeaderState),
    Follower {
        leader: NodeId,
        epoch: i32,
    },
    /// Not a replica, or the metadata has not said yet, or the partition has no leader.
    Offline {
        epoch: i32,
    },
}

/// Why the leader refused a follower's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetchError {
    NotLeader,
    /// The follower's epoch is older than ours (FENCED_LEADER_EPOCH).
    FencedEpoch,
    /// The follower's epoch is newer than ours (UNKNOWN_LEADER_EPOCH).
    UnknownEpoch,
    /// The fetcher is not in the replica set.
    NotReplica,
}

/// What the leader answers a follower's fetch position with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaFetchPosition {
    /// Read from the fetch offset.
    Read,
    /// The follower's log diverges: it must truncate to at most `end_offset` (Kafka's
    /// DivergingEpoch).
    Diverging { epoch: i32, end_offset: i64 },
}

pub struct PartitionCore<S: Storage> {
    log: Log<S>,
    policy: AckPolicy,
    high_watermark: i64,
    role: ReplicaRole,
    /// The topic's min.insync.replicas. A leader whose committed ISR is smaller (than this or
    /// the replication factor) holds its high watermark, so the replicas that left the ISR (the
    /// controller's eligible leader replicas, KIP-966) still hold every committed record.
    min_isr: usize,
    /// Whether the metadata counts this replica in the ISR (a leader always is). A follower
    /// outside it may have lost touch with its leader, so it serves no consumers.
    in_isr: bool,
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
            role: ReplicaRole::Standalone,
            min_isr: 1,
            in_isr: false,
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
        self.maybe_advance_high_watermark();
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
        self.maybe_advance_high_watermark();
        self.check_invariants();
        self.ack_offset()
    }

    /// The local log end that may count toward acknowledgements: durable under
    /// `--fsync always`, written otherwise.
    fn local_ack_offset(&self) -> i64 {
        match self.policy {
            AckPolicy::AfterFsync => self.log.durable_offset(),
            AckPolicy::AfterWrite => self.log.log_end_offset(),
        }
    }

    /// Moves the high watermark up to what every counted replica has acknowledgeably.
    fn maybe_advance_high_watermark(&mut self) {
        let local = self.local_ack_offset();
        let candidate = match &self.role {
            ReplicaRole::Standalone => local,
            ReplicaRole::Leader(_) if planted::enabled(PlantedBug::HwFromLeader) => local,
            // At most the replication factor, as in Kafka: a larger setting would stop the
            // high watermark for good.
            ReplicaRole::Leader(l)
                if l.isr.len() < self.min_isr.min(l.replicas.len())
                    && !planted::enabled(PlantedBug::HwBelowMinIsr) =>
            {
                return
            }
            ReplicaRole::Leader(l) => {
                let mut hw = local;
                for m in l.maximal_isr() {
                    if m == l.me {
                        continue;
                    }
                    let end = l.followers.get(&m).map_or(-1, |f| f.durable_end);
                    hw = hw.min(end);
                }
                hw
            }
            ReplicaRole::Follower { .. } | ReplicaRole::Offline { .. } => return,
        };
        debug_assert!(candidate <= self.log.log_end_offset());
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
        }
    }

    pub fn role(&self) -> &ReplicaRole {
        &self.role
    }

    /// The topic's min.insync.replicas changed (or is first known): at or above it the high
    /// watermark may move again.
    pub fn set_min_insync_replicas(&mut self, min_isr: usize) {
        assert!(min_isr >= 1, "min.insync.replicas is at least 1");
        self.min_isr = min_isr;
        self.maybe_advance_high_watermark();
        self.check_invariants();
    }

    pub fn min_insync_replicas(&self) -> usize {
        self.min_isr
    }

    /// The leader epoch this replica leads or follows in (0 standalone).
    pub fn leader_epoch(&self) -> i32 {
        match &self.role {
            // A single broker writes in epoch 0, or in the latest epoch its log holds (a log
            // once replicated, or a stored epoch field changed on disk: it is outside the CRC).
            ReplicaRole::Standalone => self.log.latest_epoch().unwrap_or(0).max(0),
            ReplicaRole::Leader(l) => l.epoch,
            ReplicaRole::Follower { epoch, .. } | ReplicaRole::Offline { epoch } => *epoch,
        }
    }

    /// Whether produce and consumer fetches are served here.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, ReplicaRole::Standalone | ReplicaRole::Leader(_))
    }

    /// Whether this replica follows a leader.
    pub fn is_follower(&self) -> bool {
        matches!(self.role, ReplicaRole::Follower { .. })
    }

    /// Records whether the metadata counts this replica in the partition's ISR.
    pub fn set_in_isr(&mut self, in_isr: bool) {
        self.in_isr = in_isr;
    }

    /// Whether this replica serves consumers that fetch from followers (KIP-392), up to the
    /// high watermark the leader passed on: it follows, and is in the ISR. One that left the
    /// ISR may be cut off from its leader, its high watermark stuck, so it sends its consumers
    /// back to the leader (NOT_LEADER_OR_FOLLOWER) rather than keep them waiting; Kafka keeps
    /// serving them until the client's own lease on it runs out (minutes in librdkafka).
    pub fn serves_follower_reads(&self) -> bool {
        self.is_follower() && self.in_isr
    }

    /// Leader side: the replicas that could serve a consumer fetching at `fetch_offset` now,
    /// as (id, log end, last caught up), this leader first: itself, and every follower in
    /// the committed ISR whose log (as its last fetch reported it) holds the offset. Kafka
    /// leaves out followers outside the ISR: a consumer sent to one could fall behind for
    /// good. Empty unless this replica leads in a quorum.
    pub fn read_candidates(&self, fetch_offset: i64, now_ms: i64) -> Vec<(NodeId, i64, i64)> {
        let ReplicaRole::Leader(l) = &self.role else {
            return Vec::new();
        };
        let mut all = vec![(l.me, self.log.log_end_offset(), now_ms)];
        for (&id, f) in &l.followers {
            let holds =
                f.log_start >= 0 && f.log_start <= fetch_offset && fetch_offset <= f.log_end;
            if holds && l.isr.contains(&id) {
                all.push((id, f.log_end, f.last_caught_up_ms));
            }
        }
        all
    }

    /// The committed ISR size (1 standalone); acks=all needs it at least min.insync.replicas.
    pub fn isr_len(&self) -> usize {
        match &self.role {
            ReplicaRole::Standalone => 1,
            ReplicaRole::Leader(l) => l.isr.len(),
            _ => 0,
        }
    }

    /// Takes leadership of `epoch` (from the metadata). The epoch starts at the log end;
    /// every follower starts unknown and caught up as of now, as in Kafka.
    pub fn become_leader(
        &mut self,
        me: NodeId,
        epoch: i32,
        partition_epoch: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        now_ms: i64,
    ) {
        assert!(
            epoch >= self.leader_epoch() || matches!(self.role, ReplicaRole::Standalone),
            "leader epoch {epoch} below the known {}",
            self.leader_epoch()
        );
        assert!(isr.contains(&me) && replicas.contains(&me));
        self.log
            .assign_epoch_start(epoch, self.log.log_end_offset());
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| (*r, FollowerProgress::unknown(now_ms)))
            .collect();
        self.role = ReplicaRole::Leader(LeaderState {
            me,
            epoch,
            partition_epoch,
            replicas,
            isr,
            pending_isr: None,
            followers,
        });
        self.maybe_advance_high_watermark();
        self.check_invariants();
    }

    /// The metadata changed this leader's ISR (or replicas) within its epoch.
    pub fn update_leader_isr(
        &mut self,
        partition_epoch: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        now_ms: i64,
    ) {
        let ReplicaRole::Leader(l) = &mut self.role else {
            return;
        };
        l.partition_epoch = partition_epoch;
        if l.pending_isr.as_ref().is_some_and(|(p, _)| *p == isr) || l.isr != isr {
            l.pending_isr = None;
        }
        for r in &replicas {
            if *r != l.me {
                l.followers
                    .entry(*r)
                    .or_insert(FollowerProgress::unknown(now_ms));
            }
        }
        l.followers.retain(|r, _| replicas.contains(r));
        l.replicas = replicas;
        l.isr = isr;
        self.maybe_advance_high_watermark();
        self.check_invariants();
    }

    pub fn become_follower(&mut self, leader: NodeId, epoch: i32) {
        self.role = ReplicaRole::Follower { leader, epoch };
        self.check_invariants();
    }

    pub fn become_offline(&mut self, epoch: i32) {
        self.role = ReplicaRole::Offline { epoch };
    }

    /// A replica of a cluster, freshly opened: its log may end in records that never reached
    /// the ISR, so only what its high-watermark checkpoint says is known committed (the log
    /// start without one). The rest is learned again from the leader (or, leading, from the
    /// followers' fetches); starting low keeps consumers from reading a suffix a new leader
    /// may not have. An eligible leader replica elected after a restart serves up to there.
    pub fn start_as_replica(&mut self) {
        assert!(
            matches!(self.role, ReplicaRole::Standalone),
            "only a freshly opened partition starts as a replica"
        );
        let start = self.log.log_start_offset();
        self.high_watermark = self.log.checkpointed_high_watermark().unwrap_or(start);
        self.role = ReplicaRole::Offline { epoch: -1 };
        self.check_invariants();
    }

    /// Leader side of a follower's fetch: checks the epoch and divergence, records the
    /// follower's position (its fetch offset) and what it holds acknowledgeably
    /// (`durable_offset`, capped at the fetch offset; a follower that does not say holds its
    /// fetch offset acknowledgeably), advances the high watermark.
    pub fn replica_fetch(
        &mut self,
        replica: NodeId,
        current_leader_epoch: i32,
        fetch_offset: i64,
        durable_offset: Option<i64>,
        last_fetched_epoch: i32,
        now_ms: i64,
    ) -> Result<ReplicaFetchPosition, ReplicaFetchError> {
        let log_end = self.log.log_end_offset();
        let ReplicaRole::Leader(l) = &self.role else {
            return Err(ReplicaFetchError::NotLeader);
        };
        if current_leader_epoch >= 0 && current_leader_epoch < l.epoch {
            return Err(ReplicaFetchError::FencedEpoch);
        }
        if current_leader_epoch > l.epoch {
            return Err(ReplicaFetchError::UnknownEpoch);
        }
        if !l.followers.contains_key(&replica) {
            return Err(ReplicaFetchError::NotReplica);
        }
        if last_fetched_epoch >= 0 {
            if let Some((epoch, end_offset)) = self.log.end_offset_for_epoch(last_fetched_epoch) {
                if epoch != last_fetched_epoch || end_offset < fetch_offset {
                    return Ok(ReplicaFetchPosition::Diverging { epoch, end_offset });
                }
            }
        }
        if fetch_offset > log_end {
            // Ahead of us with no epoch to compare: truncate to our end.
            return Ok(ReplicaFetchPosition::Diverging {
                epoch: self.log.latest_epoch().unwrap_or(-1),
                end_offset: log_end,
            });
        }
        let ReplicaRole::Leader(l) = &mut self.role else {
            unreachable!()
        };
        let f = l.followers.get_mut(&replica).expect("checked above");
        f.log_end = fetch_offset;
        f.durable_end = durable_offset.map_or(fetch_offset, |d| d.min(fetch_offset));
        f.last_fetch_ms = now_ms;
        if fetch_offset >= log_end {
            f.last_caught_up_ms = now_ms;
        }
        self.maybe_advance_high_watermark();
        self.check_invariants();
        Ok(ReplicaFetchPosition::Read)
    }

    /// An ISR change the leader should ask the controller for, if any (and none is pending):
    /// followers not caught up for `lag_max_ms` leave, followers at or past the high watermark
    /// and the epoch's start join. Returns (current ISR, new ISR) and marks it pending.
    ///
    /// A pending expansion unanswered for [`ISR_CHANGE_RETRY_MS`] is asked again as it was,
    /// never replaced: the controller may have committed it unseen, so its new members keep
    /// counting for the high watermark (the maximal ISR) until the metadata shows the ISR or
    /// the controller refuses it ([`isr_change_refused`](Self::isr_change_refused)), as in
    /// Kafka. Dropping it let a leader cut off with a stale follower commit, and acknowledge,
    /// records the new leader never had.
    ///
    /// Only replicas `joinable` says the metadata shows registered and unfenced may join
    /// (KIP-841): a killed follower that had caught up is not asked back every retry until its
    /// last fetch ages out, and a pending expansion never waits on a broker the controller
    /// will refuse.
    pub fn isr_change(
        &mut self,
        now_ms: i64,
        lag_max_ms: i64,
        joinable: impl Fn(NodeId) -> bool,
    ) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        let hw = self.high_watermark;
        let epoch_start = self
            .log
            .epoch_entries()
            .last()
            .map_or(0, |(_, start)| *start);
        let ReplicaRole::Leader(l) = &mut self.role else {
            return None;
        };
        if let Some((pending, sent_ms)) = &mut l.pending_isr {
            if now_ms - *sent_ms < ISR_CHANGE_RETRY_MS {
                return None;
            }
            if pending.iter().any(|m| !l.isr.contains(m)) {
                *sent_ms = now_ms;
                return Some((l.isr.clone(), pending.clone()));
            }
            // A shrink only: it counts for nothing until committed, so ask afresh.
            l.pending_isr = None;
        }
        let mut new_isr: Vec<NodeId> = l
            .isr
            .iter()
            .copied()
            .filter(|m| {
                *m == l.me
                    || l.followers
                        .get(m)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        for r in &l.replicas {
            let caught_up = l.followers.get(r).is_some_and(|f| {
                f.durable_end >= hw
                    && f.durable_end >= epoch_start
                    && f.last_fetch_ms >= 0
                    && now_ms - f.last_fetch_ms <= lag_max_ms
            });
            if !new_isr.contains(r) && caught_up && joinable(*r) {
                new_isr.push(*r);
            }
        }
        if new_isr == l.isr {
            return None;
        }
        l.pending_isr = Some((new_isr.clone(), now_ms));
        Some((l.isr.clone(), new_isr))
    }

    /// A leader's partition epoch (see [`LeaderState::partition_epoch`]).
    pub fn partition_epoch(&self) -> Option<i32> {
        match &self.role {
            ReplicaRole::Leader(l) => Some(l.partition_epoch),
            _ => None,
        }
    }

    /// The controller refused for good the ISR change to `new_isr` that
    /// [`isr_change`](Self::isr_change) asked for at `asked_ms` (a broker it adds is fenced or
    /// no replica, or the request is malformed): that request was not committed, so if it is
    /// the pending one's latest it stops counting, and the next `isr_change` may ask for
    /// another. A refusal of an earlier copy (the retry went out before it came back) does
    /// nothing: the controller may have committed the retry after refusing the first, as when
    /// the broker it adds was unfenced in between, and a leader that stopped counting that
    /// member would advance its high watermark past what an ISR member holds. The replication
    /// model found this.
    pub fn isr_change_refused(&mut self, new_isr: &[NodeId], asked_ms: i64) {
        if let ReplicaRole::Leader(l) = &mut self.role {
            let latest = |(p, sent_ms): &(Vec<NodeId>, i64)| p == new_isr && *sent_ms == asked_ms;
            if l.pending_isr.as_ref().is_some_and(latest) {
                l.pending_isr = None;
                self.maybe_advance_high_watermark();
                self.check_invariants();
            }
        }
    }

    /// A follower's read of the leader's log: everything up to the log end.
    pub fn read_for_replica(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<StoredRecords, ReadError> {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if offset < start || offset > end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        if offset == end || max_bytes == 0 {
            return Ok(StoredRecords::new());
        }
        self.log.read_stored(offset, max_bytes, end)
    }

    /// Follower side: appends the leader's batches as they are.
    pub fn append_as_follower(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        assert!(matches!(self.role, ReplicaRole::Follower { .. }));
        // The leader's log start (after DeleteRecords) may fall inside a batch. An empty log
        // started there gets that whole batch first: it starts over at the batch's base, as
        // Kafka's followers do (the next fetch response moves the log start up again).
        let first = crate::log::batch::RecordBatchHeader::parse(batches);
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if let Some(h) = first.filter(|h| start == end && h.base_offset() < end) {
            if h.last_offset() >= end {
                self.log.truncate_fully_and_start_at(h.base_offset())?;
                self.high_watermark = h.base_offset();
                self.check_invariants();
            }
        }
        let info = self.log.append_as_follower(batches, now_ms)?;
        self.check_invariants();
        Ok(info)
    }

    /// Follower side: the leader's high watermark, capped by what this replica holds
    /// acknowledgeably.
    pub fn follower_high_watermark(&mut self, leader_high_watermark: i64) {
        let hw = leader_high_watermark.min(self.local_ack_offset());
        if hw > self.high_watermark {
            self.high_watermark = hw;
        }
        self.check_invariants();
    }

    /// Follower side: the leader's answer that this log diverges from its own after
    /// `end_offset` of `epoch` (Kafka's DivergingEpoch). Truncates to where both agree: the
    /// lower of that offset and where `epoch` ends here. Returns the offset truncated to.
    ///
    /// That offset may lie below this log's start, when a leader an unclean election chose
    /// holds less than DeleteRecords left here: the log then starts over, empty, there (Kafka's
    /// `truncateFullyAndStartAt`). Stopping at the log start instead left a fully deleted log
    /// unchanged, to be told the same at every fetch (replication sim seed 20,001,154).
    pub fn truncate_diverging(&mut self, epoch: i32, end_offset: i64) -> std::io::Result<i64> {
        let log_end = self.log.log_end_offset();
        let local_end = self
            .log
            .end_offset_for_epoch(epoch)
            .map_or(log_end, |(_, end)| end.max(0));
        let floor = if planted::enabled(PlantedBug::TruncationStopsAtLogStart) {
            self.log.log_start_offset()
        } else {
            0
        };
        let to = end_offset.min(local_end).min(log_end).max(floor);
        self.truncate_to(to)?;
        assert!(
            self.log.log_end_offset() <= to,
            "truncated to {to}, the log ends at {}",
            self.log.log_end_offset()
        );
        Ok(to)
    }

    /// Follower side: drops a divergent suffix (durably). The high watermark never needs to
    /// go down for committed data; if it does, that is logged by the caller.
    pub fn truncate_to(&mut self, offset: i64) -> std::io::Result<()> {
        // An offset inside a batch (a leader's epoch start moved up to its log start by
        // DeleteRecords) cuts before that whole batch, as Kafka's segments do.
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        let inside = (offset > start && offset < end)
            .then(|| self.log.read(offset, 1, offset + 1).ok())
            .flatten();
        let base = inside
            .as_deref()
            .and_then(crate::log::batch::RecordBatchHeader::parse)
            .map(|h| h.base_offset());
        let offset = base.map_or(offset, |b| b.min(offset));
        if offset <= self.log.log_start_offset() {
            // Nothing is left, and a log start inside a batch (DeleteRecords) is no batch
            // boundary to cut at: start over empty there.
            return self.restart_at(offset.max(0));
        }
        self.log.truncate_to(offset)?;
        self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
        self.check_invariants();
        Ok(())
    }

    /// Leader side of DeleteRecords (Kafka's deleteRecordsOnLeader): the log starts at `offset`
    /// (-1: the high watermark) from now on and the segments wholly below it are deleted. Only
    /// committed records can go; an offset at or below the log start changes nothing. Returns
    /// the log start. Followers follow through their fetches
    /// ([`follower_log_start`](Self::follower_log_start)).
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, DeleteRecordsError> {
        if !self.is_leader() {
            return Err(DeleteRecordsError::NotLeader);
        }
        let offset = if offset == -1 {
            self.high_watermark
        } else {
            offset
        };
        if offset > self.high_watermark || offset < 0 {
            return Err(DeleteRecordsError::BeyondHighWatermark {
                high_watermark: self.high_watermark,
            });
        }
        self.log
            .delete_records_before(offset)
            .map_err(DeleteRecordsError::Storage)?;
        let start = self.log.log_start_offset();
        assert!(
            start >= offset,
            "log start {start} below the deleted {offset}"
        );
        self.check_invariants();
        Ok(start)
    }

    /// Leader side: a follower's fetch reported its log start.
    pub fn note_follower_log_start(&mut self, replica: NodeId, log_start: i64) {
        if let ReplicaRole::Leader(l) = &mut self.role {
            if let Some(f) = l.followers.get_mut(&replica) {
                f.log_start = log_start;
            }
        }
    }

    /// The lowest log start over this leader and every follower the high watermark waits for
    /// (Kafka's low watermark): records below it are gone from every in-sync copy. -1 until
    /// each such follower has fetched in this epoch; the log start when standalone.
    pub fn low_watermark(&self) -> i64 {
        let mut low = self.log.log_start_offset();
        if let ReplicaRole::Leader(l) = &self.role {
            for m in l.maximal_isr().into_iter().filter(|m| *m != l.me) {
                low = low.min(l.followers.get(&m).map_or(-1, |f| f.log_start));
            }
        }
        low
    }

    /// Follower side: the leader's log start, from a fetch response. Committed records below
    /// it are deleted here too (never past this replica's high watermark, which the leader's
    /// log start can outrun for a moment). Returns whether the log start moved.
    pub fn follower_log_start(&mut self, leader_log_start: i64) -> std::io::Result<bool> {
        let to = leader_log_start.min(self.high_watermark);
        if !matches!(self.role, ReplicaRole::Follower { .. }) || to <= self.log.log_start_offset() {
            return Ok(false);
        }
        self.log.delete_records_before(to)?;
        assert!(self.log.log_start_offset() >= to);
        self.check_invariants();
        Ok(true)
    }

    /// Follower side: the leader's log starts past ours; start over empty at `offset`.
    pub fn restart_at(&mut self, offset: i64) -> std::io::Result<()> {
        self.log.truncate_fully_and_start_at(offset)?;
        self.high_watermark = offset;
        self.check_invariants();
        Ok(())
    }

    /// What a consumer fetching at `offset` gets: whole stored batches below the high watermark
    /// (at least one, even past `max_bytes`), nothing if it is at or past the high watermark but
    /// inside the log, or OffsetOutOfRange outside the log.
    pub fn fetch(&self, offset: i64, max_bytes: usize) -> Result<StoredRecords, ReadError> {
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
            return Ok(StoredRecords::new());
        }
        self.log.read_stored(offset, max_bytes, visible_end)
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
        if let ReplicaRole::Leader(l) = &self.role {
            assert!(l.isr.contains(&l.me), "a leader outside its own ISR");
            assert!(
                l.isr.iter().all(|m| l.replicas.contains(m)),
                "ISR not within the replicas"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::log::testutil::simple_batch;
    use crate::log::LogConfig;
    use crate::storage::MemStorage;

    const T0: i64 = 1_700_000_000_000;

    fn core(s: &MemStorage, dir: &str) -> PartitionCore<MemStorage> {
        let (log, _) = Log::open(s.clone(), PathBuf::from(dir), LogConfig::default(), T0).unwrap();
        let mut c = PartitionCore::new(log, AckPolicy::AfterFsync);
        c.start_as_replica();
        c
    }

    /// Found by `sim --layer cluster` (seed 198): a leader restarted with an unreplicated tail
    /// took its whole log as committed, acknowledged producers' retries of that tail at once,
    /// and a follower that never had it was elected next: acknowledged writes lost.
    #[test]
    fn a_reopened_replica_commits_nothing_until_the_isr_has_it() {
        let s = MemStorage::new();
        {
            let mut leader = core(&s, "/l/t-0");
            leader.become_leader(1, 1, 0, vec![1, 2], vec![1, 2], T0);
            leader
                .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
                .unwrap();
            flush(&mut leader);
            assert_eq!(leader.high_watermark(), 0, "follower 2 has nothing");
        }
        let mut leader = core(&s, "/l/t-0");
        assert_eq!(leader.log().log_end_offset(), 2);
        assert_eq!(leader.high_watermark(), 0, "nothing is known committed");
        leader.become_leader(1, 2, 0, vec![1, 2], vec![1, 2], T0);
        assert_eq!(leader.high_watermark(), 0, "follower 2 still has nothing");
        leader.replica_fetch(2, 2, 0, None, -1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 0);
        leader.replica_fetch(2, 2, 2, None, 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 2);
    }

    fn flush(c: &mut PartitionCore<MemStorage>) {
        if let Some(t) = c.prepare_flush() {
            t.sync().unwrap();
            c.complete_flush(&t);
        }
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member_durably() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2, 3], T0);
        leader
            .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
            .unwrap();
        assert_eq!(leader.high_watermark(), 0, "not durable anywhere yet");
        flush(&mut leader);
        assert_eq!(leader.high_watermark(), 0, "followers have nothing");
        leader.replica_fetch(2, 1, 2, None, 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 0, "follower 3 has nothing");
        leader.replica_fetch(3, 1, 1, None, 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 1, "min over the ISR");
        leader.replica_fetch(3, 1, 2, None, 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 2);
        // Fetches from the wrong epoch or a non-replica are refused.
        assert_eq!(
            leader.replica_fetch(2, 0, 2, None, 1, T0),
            Err(ReplicaFetchError::FencedEpoch)
        );
        assert_eq!(
            leader.replica_fetch(2, 5, 2, None, 1, T0),
            Err(ReplicaFetchError::UnknownEpoch)
        );
        assert_eq!(
            leader.replica_fetch(9, 1, 2, None, 1, T0),
            Err(ReplicaFetchError::NotReplica)
        );
    }

    /// Fetch from follower (KIP-392): a follower shows consumers only what the leader's high
    /// watermark passed and it holds durably; the leader offers as read replicas only in-sync
    /// followers that hold the consumer's offset.
    #[test]
    fn followers_serve_consumers_committed_records_only() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        let mut follower = core(&s, "/f/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2, 3], T0);
        follower.become_follower(1, 1);
        assert!(follower.is_follower() && !leader.is_follower());
        assert!(
            !follower.serves_follower_reads(),
            "not yet known in the ISR"
        );
        follower.set_in_isr(true);
        assert!(follower.serves_follower_reads());
        leader.set_in_isr(true);
        assert!(
            !leader.serves_follower_reads(),
            "a leader serves as the leader"
        );
        for _ in 0..3 {
            leader
                .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
                .unwrap();
        }
        flush(&mut leader);
        assert_eq!(
            leader.read_candidates(0, T0 + 5),
            vec![(1, 6, T0 + 5)],
            "no follower has said what it holds"
        );
        let batches = leader
            .read_for_replica(0, 1 << 20)
            .unwrap()
            .to_bytes()
            .unwrap();
        follower.append_as_follower(&batches, T0).unwrap();
        assert!(
            follower.fetch(0, 1 << 20).unwrap().is_empty(),
            "nothing committed yet"
        );
        leader.replica_fetch(2, 1, 6, Some(0), 1, T0 + 1).unwrap();
        leader.note_follower_log_start(2, 0);
        assert_eq!(
            leader.high_watermark(),
            0,
            "follower 2 holds nothing durably"
        );
        follower.follower_high_watermark(6);
        assert_eq!(
            follower.high_watermark(),
            0,
            "capped by what it holds durably"
        );
        flush(&mut follower);
        leader.replica_fetch(2, 1, 6, None, 1, T0 + 2).unwrap();
        leader.replica_fetch(3, 1, 4, None, 1, T0 + 2).unwrap();
        leader.note_follower_log_start(3, 0);
        assert_eq!(leader.high_watermark(), 4);
        follower.follower_high_watermark(leader.high_watermark());
        let visible = follower.fetch(0, 1 << 20).unwrap().to_bytes().unwrap();
        let committed = leader.fetch(0, 1 << 20).unwrap().to_bytes().unwrap();
        assert_eq!(
            visible, committed,
            "the follower shows the committed batches, as stored"
        );
        assert!(
            follower.fetch(4, 1 << 20).unwrap().is_empty(),
            "not committed"
        );
        assert!(follower.fetch(7, 1 << 20).is_err(), "past its log end");
        // Candidates at offset 5: follower 3 (log end 4) does not hold it.
        let at5 = leader.read_candidates(5, T0 + 3);
        assert_eq!(at5, vec![(1, 6, T0 + 3), (2, 6, T0 + 2)]);
        assert_eq!(leader.read_candidates(3, T0 + 3).len(), 3);
        // Out of the ISR, follower 3 is no candidate even for offsets it holds.
        leader.update_leader_isr(0, vec![1, 2, 3], vec![1, 2], T0 + 4);
        let ids: Vec<NodeId> = leader
            .read_candidates(3, T0 + 4)
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(
            follower.read_candidates(0, T0).is_empty(),
            "only a leader offers"
        );
        // Dropped from the ISR, a follower sends consumers back to the leader.
        follower.set_in_isr(false);
        assert!(!follower.serves_follower_reads());
    }

    /// Node 1 leading epoch 1 (ISR [1, 2]) with `batches` batches of two records, and node 2
    /// following it with the same batches; both logs synced.
    fn leader_and_follower(
        s: &MemStorage,
        batches: usize,
    ) -> (PartitionCore<MemStorage>, PartitionCore<MemStorage>) {
        let mut leader = core(s, "/l/t-0");
        let mut follower = core(s, "/f/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2], vec![1, 2], T0);
        follower.become_follower(1, 1);
        for _ in 0..batches {
            leader
                .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
                .unwrap();
        }
        flush(&mut leader);
        let stored = leader.read_for_replica(0, 1 << 20).unwrap();
        follower
            .append_as_follower(&stored.to_bytes().unwrap(), T0)
            .unwrap();
        flush(&mut follower);
        (leader, follower)
    }

    /// DeleteRecords: only a leader deletes, only committed records; a follower deletes as far
    /// as the leader's log start and its own high watermark go; the leader's low watermark
    /// waits for every in-sync follower to report a log start past the deleted offset.
    #[test]
    fn deleted_records_follow_the_leader_within_committed_records() {
        let s = MemStorage::new();
        let (mut leader, mut follower) = leader_and_follower(&s, 5);
        leader.replica_fetch(2, 1, 6, None, 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 6);
        follower.follower_high_watermark(6);

        assert!(matches!(
            leader.delete_records(7),
            Err(DeleteRecordsError::BeyondHighWatermark { high_watermark: 6 })
        ));
        assert!(matches!(
            follower.delete_records(2),
            Err(DeleteRecordsError::NotLeader)
        ));
        assert_eq!(leader.delete_records(4).unwrap(), 4);
        assert_eq!(
            leader.delete_records(2).unwrap(),
            4,
            "the log start never goes back"
        );
        assert_eq!(leader.low_watermark(), -1, "the follower has not said");
        leader.note_follower_log_start(2, follower.log().log_start_offset());
        assert_eq!(leader.low_watermark(), 0);
        assert!(
            leader.fetch(2, 1 << 20).is_err(),
            "deleted records are gone"
        );

        // The follower learns the leader's log start: at most its own high watermark.
        follower.high_watermark = 3;
        assert!(follower.follower_log_start(4).unwrap());
        assert_eq!(follower.log().log_start_offset(), 3);
        follower.follower_high_watermark(6);
        assert!(follower.follower_log_start(4).unwrap());
        assert!(
            !follower.follower_log_start(4).unwrap(),
            "nothing more to do"
        );
        assert_eq!(follower.log().log_start_offset(), 4);
        leader.note_follower_log_start(2, follower.log().log_start_offset());
        assert_eq!(leader.low_watermark(), 4);

        // -1 deletes up to the high watermark.
        assert_eq!(leader.delete_records(-1).unwrap(), 6);
        assert_eq!(leader.low_watermark(), 4);
    }

    /// An unclean election can give the partition a leader holding less than DeleteRecords
    /// left on a follower: the follower's whole log diverges, so it starts over where the
    /// leader's log ends, rather than keeping its log start and being told the same again
    /// at every fetch.
    #[test]
    fn a_follower_whose_log_start_is_past_an_unclean_leaders_end_starts_over_there() {
        let s = MemStorage::new();
        let (_, mut follower) = leader_and_follower(&s, 3);
        follower.follower_high_watermark(6);
        assert!(follower.follower_log_start(6).unwrap());
        let log = follower.log();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 6));

        // Replica 3, empty, is elected uncleanly in epoch 2 and leads from offset 0.
        let mut unclean = core(&s, "/new/t-0");
        unclean.become_leader(3, 2, 1, vec![3, 2], vec![3], T0);
        follower.become_follower(3, 2);
        let last_epoch = follower.log().latest_epoch().unwrap_or(-1);
        let answer = unclean
            .replica_fetch(2, 2, 6, None, last_epoch, T0)
            .unwrap();
        let ReplicaFetchPosition::Diverging { epoch, end_offset } = answer else {
            panic!("a fetch past the leader's end diverges: {answer:?}");
        };
        assert_eq!(follower.truncate_diverging(epoch, end_offset).unwrap(), 0);
        let log = follower.log();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        assert_eq!(follower.high_watermark(), 0);
        let last_epoch = follower.log().latest_epoch().unwrap_or(-1);
        assert_eq!(
            unclean
                .replica_fetch(2, 2, 0, None, last_epoch, T0)
                .unwrap(),
            ReplicaFetchPosition::Read,
            "the next fetch reads"
        );
    }

    /// A log start inside a batch (DeleteRecords): a follower restarted there takes the
    /// whole batch by starting at its base; truncating inside a batch cuts before it.
    #[test]
    fn a_log_start_inside_a_batch_neither_blocks_appends_nor_truncation() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2], vec![1], T0);
        for _ in 0..3 {
            leader
                .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
                .unwrap();
        }
        flush(&mut leader);
        assert_eq!(
            leader.delete_records(3).unwrap(),
            3,
            "inside the batch 2..4"
        );
        let batches = leader
            .read_for_replica(3, 1 << 20)
            .unwrap()
            .to_bytes()
            .unwrap();

        let mut follower = core(&s, "/f/t-0");
        follower.become_follower(1, 1);
        follower.restart_at(3).unwrap();
        follower.append_as_follower(&batches, T0).unwrap();
        let log = follower.log();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 6));
        flush(&mut follower);
        follower.follower_high_watermark(6);
        assert!(follower.follower_log_start(3).unwrap());
        assert_eq!(follower.log().log_start_offset(), 3);

        follower.truncate_to(5).unwrap();
        assert_eq!(
            follower.log().log_end_offset(),
            4,
            "cut before the batch 4..6"
        );
        follower.truncate_to(3).unwrap();
        let log = follower.log();
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (3, 3),
            "nothing left"
        );
    }

    /// KIP-966: below min.insync.replicas the high watermark stays where it is, so the
    /// replicas that left the ISR (eligible leader replicas) hold everything committed.
    #[test]
    fn high_watermark_holds_while_the_isr_is_below_min_insync_replicas() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.set_min_insync_replicas(2);
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2], T0);
        leader.append(&simple_batch(T0, &[b"a"]), 1, T0).unwrap();
        flush(&mut leader);
        leader.replica_fetch(2, 1, 1, None, 1, T0).unwrap();
        assert_eq!(
            leader.high_watermark(),
            1,
            "ISR of 2 at min.insync.replicas 2"
        );
        // 2 leaves: the ISR is below the minimum, and what comes next is not committed.
        leader.update_leader_isr(0, vec![1, 2, 3], vec![1], T0);
        leader.append(&simple_batch(T0, &[b"b"]), 1, T0).unwrap();
        flush(&mut leader);
        assert_eq!(leader.log().durable_offset(), 2);
        assert_eq!(leader.high_watermark(), 1, "held below min.insync.replicas");
        // 3 catches up and joins: the high watermark moves again.
        leader.replica_fetch(3, 1, 2, None, 1, T0).unwrap();
        assert_eq!(
            leader.high_watermark(),
            1,
            "3 is not in the committed ISR yet"
        );
        leader.update_leader_isr(0, vec![1, 2, 3], vec![1, 3], T0);
        assert_eq!(leader.high_watermark(), 2);
        // Lowering the minimum frees a held high watermark at once.
        leader.update_leader_isr(0, vec![1, 2, 3], vec![1], T0);
        leader.append(&simple_batch(T0, &[b"c"]), 1, T0).unwrap();
        flush(&mut leader);
        assert_eq!(leader.high_watermark(), 2);
        leader.set_min_insync_replicas(1);
        assert_eq!(leader.high_watermark(), 3);

        // Above the replication factor the minimum counts as the replication factor (as in
        // Kafka), or a topic of one replica would never commit anything.
        let mut single = core(&s, "/l/t-1");
        single.set_min_insync_replicas(2);
        single.become_leader(1, 1, 0, vec![1], vec![1], T0);
        single.append(&simple_batch(T0, &[b"a"]), 1, T0).unwrap();
        flush(&mut single);
        assert_eq!(single.high_watermark(), 1);
    }

    /// A follower fetches from its log end while its last batches sync; the high watermark
    /// and ISR expansion go by the durable end it reports, never by the fetch offset.
    #[test]
    fn high_watermark_and_expansion_go_by_the_durable_end_not_the_fetch_offset() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2], T0);
        leader
            .append(&simple_batch(T0, &[b"a", b"b", b"c"]), 1, T0)
            .unwrap();
        flush(&mut leader);
        leader.replica_fetch(2, 1, 3, Some(1), 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 1, "2 holds only 1 durably");
        // A durable end past the fetch offset is capped at it.
        leader.replica_fetch(2, 1, 2, Some(3), 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 2);
        leader.replica_fetch(2, 1, 3, Some(3), 1, T0).unwrap();
        assert_eq!(leader.high_watermark(), 3);
        // 3 is at the log end but has synced nothing: not caught up enough to join.
        leader.replica_fetch(3, 1, 3, Some(0), 1, T0).unwrap();
        assert_eq!(leader.isr_change(T0 + 1, 10_000, |_| true), None);
        leader.replica_fetch(3, 1, 3, Some(3), 1, T0 + 2).unwrap();
        assert_eq!(
            leader.isr_change(T0 + 3, 10_000, |_| true),
            Some((vec![1, 2], vec![1, 2, 3]))
        );
    }

    #[test]
    fn shrink_counts_only_once_committed_and_expand_counts_at_once() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2, 3], T0);
        leader.append(&simple_batch(T0, &[b"a"]), 1, T0).unwrap();
        flush(&mut leader);
        leader.replica_fetch(2, 1, 1, None, 1, T0 + 19_000).unwrap();
        // Follower 3 never fetches: after the lag limit the leader asks to drop it...
        let change = leader.isr_change(T0 + 20_000, 10_000, |_| true);
        assert_eq!(change, Some((vec![1, 2, 3], vec![1, 2])));
        // ...but until the controller commits it, the HW still waits for 3.
        assert_eq!(leader.high_watermark(), 0);
        assert_eq!(
            leader.isr_change(T0 + 20_001, 10_000, |_| true),
            None,
            "one change at a time"
        );
        leader.update_leader_isr(0, vec![1, 2, 3], vec![1, 2], T0 + 20_002);
        assert_eq!(leader.high_watermark(), 1);
        // 3 catches up: it is asked back in, and counts for the HW at once.
        leader.append(&simple_batch(T0, &[b"b"]), 1, T0).unwrap();
        flush(&mut leader);
        leader.replica_fetch(3, 1, 1, None, 1, T0 + 20_010).unwrap();
        let change = leader.isr_change(T0 + 20_011, 10_000, |_| true);
        assert_eq!(change, Some((vec![1, 2], vec![1, 2, 3])));
        leader.replica_fetch(2, 1, 2, None, 1, T0 + 20_012).unwrap();
        assert_eq!(
            leader.high_watermark(),
            1,
            "pending member 3 holds the HW back"
        );
        leader.replica_fetch(3, 1, 2, None, 1, T0 + 20_013).unwrap();
        assert_eq!(leader.high_watermark(), 2);
    }

    /// KIP-841: a caught-up follower the metadata shows fenced (a killed broker whose last
    /// fetch reached the log end) is not asked into the ISR, so no expansion is left pending
    /// on it and the high watermark does not wait for it; once unfenced it is asked at once.
    #[test]
    fn a_fenced_follower_is_not_asked_into_the_isr() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 2], T0);
        leader.append(&simple_batch(T0, &[b"a"]), 1, T0).unwrap();
        flush(&mut leader);
        leader.replica_fetch(3, 1, 1, Some(1), 1, T0 + 1).unwrap();
        let fenced = |n: NodeId| n != 3;
        assert_eq!(leader.isr_change(T0 + 2, 10_000, fenced), None);
        leader.replica_fetch(2, 1, 1, Some(1), 1, T0 + 3).unwrap();
        assert_eq!(leader.high_watermark(), 1, "nothing pending on 3");
        let later = T0 + 3 + ISR_CHANGE_RETRY_MS;
        assert_eq!(leader.isr_change(later, 10_000, fenced), None);
        assert_eq!(
            leader.isr_change(later + 1, 10_000, |_| true),
            Some((vec![1, 2], vec![1, 2, 3]))
        );
    }

    /// Found by the replication_actions fuzzer: a leader whose expansion went unanswered used to
    /// drop it after the retry interval and ask for a shrink instead, so the member it had
    /// asked for (which the controller had in fact committed, and later put in the next
    /// leader's ISR) stopped counting: cut off together with a stale follower, it committed a
    /// record the next leader never had. Now the same expansion is asked again, and counts,
    /// until the metadata or a refusal settles it.
    #[test]
    fn an_unanswered_expansion_is_asked_again_and_keeps_counting() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2, 3], vec![1, 3], T0);
        leader.replica_fetch(2, 1, 0, None, -1, T0).unwrap();
        leader.replica_fetch(3, 1, 0, None, -1, T0).unwrap();
        let ask = Some((vec![1, 3], vec![1, 3, 2]));
        assert_eq!(leader.isr_change(T0 + 1, 10_000, |_| true), ask);
        // 2 goes quiet and 3 keeps up; long after, the same expansion is asked again.
        leader.append(&simple_batch(T0, &[b"a"]), 1, T0).unwrap();
        flush(&mut leader);
        let later = T0 + 1 + ISR_CHANGE_RETRY_MS;
        leader.replica_fetch(3, 1, 1, None, 1, later).unwrap();
        assert_eq!(leader.isr_change(later, 10_000, |_| true), ask);
        assert_eq!(leader.high_watermark(), 0, "2 may be in the ISR: it counts");
        assert_eq!(leader.isr_change(later + 1, 10_000, |_| true), None);
        // A refusal of another change does nothing, nor does a late refusal of the first copy
        // (the controller may have committed the retry); a refusal of the retry frees the
        // leader.
        leader.isr_change_refused(&[1, 2], later);
        assert_eq!(leader.high_watermark(), 0);
        leader.isr_change_refused(&[1, 3, 2], T0 + 1);
        assert_eq!(
            leader.high_watermark(),
            0,
            "the retry may be committed: 2 counts"
        );
        leader.isr_change_refused(&[1, 3, 2], later);
        assert_eq!(leader.high_watermark(), 1);
    }

    #[test]
    fn a_diverging_follower_is_told_where_to_truncate() {
        let s = MemStorage::new();
        let mut leader = core(&s, "/l/t-0");
        leader.become_leader(1, 1, 0, vec![1, 2], vec![1, 2], T0);
        leader
            .append(&simple_batch(T0, &[b"a", b"b"]), 1, T0)
            .unwrap();
        leader.become_leader(1, 3, 0, vec![1, 2], vec![1, 2], T0);
        leader.append(&simple_batch(T0, &[b"c"]), 3, T0).unwrap();
        // The follower holds offsets 0..5 of epoch 1 (an old leader's unacknowledged tail).
        assert_eq!(
            leader.replica_fetch(2, 3, 5, None, 1, T0),
            Ok(ReplicaFetchPosition::Diverging {
                epoch: 1,
                end_offset: 2
            })
        );
        // A follower with the same history reads.
        assert_eq!(
            leader.replica_fetch(2, 3, 2, None, 1, T0),
            Ok(ReplicaFetchPosition::Read)
        );
        // Follower side: truncating and re-fetching yields the leader's bytes.
        let mut follower = core(&s, "/f/t-0");
        follower.become_follower(1, 3);
        let bytes = leader
            .read_for_replica(0, 1 << 20)
            .unwrap()
            .to_bytes()
            .unwrap();
        follower.append_as_follower(&bytes, T0).unwrap();
        assert_eq!(follower.log().log_end_offset(), 3);
        assert_eq!(follower.log().latest_epoch(), Some(3));
        follower.truncate_to(2).unwrap();
        assert_eq!(follower.log().latest_epoch(), Some(1));
        flush(&mut follower);
        follower.follower_high_watermark(3);
        assert_eq!(
            follower.high_watermark(),
            2,
            "capped by what it holds durably"
        );
    }
}
