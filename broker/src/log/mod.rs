//! The partition `Log`: a sans-IO core over the `Storage` seam. Owns the ordered
//! `LogSegment`s of one partition directory, offset assignment on append, fetch reads,
//! roll/retention/truncation, the LogStartOffset checkpoint, flush bookkeeping (durable
//! offset), crash recovery, idempotent-producer deduplication (`ProducerStateManager`,
//! rebuilt from batch headers at open and on truncation) and the leader epoch cache
//! (`LeaderEpochCache`, rebuilt in the same header walk). Leaders append with `append`
//! (offsets and leader epoch assigned here), followers with `append_as_follower` (the
//! leader's bytes, stored as received). No clocks (time comes in as `now_ms`), no threads,
//! no randomness, no direct file system access.

pub mod batch;
pub mod compression;
pub mod epoch;
pub mod index;
pub mod producer_state;
pub mod segment;
pub mod stored;
pub mod testutil;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use batch::{
    crc_ok, set_base_offset, set_partition_leader_epoch, validate_for_append, validate_replicated,
    AppendError, BatchInfo, RecordBatchHeader,
};
pub use epoch::{LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use index::{OffsetIndex, TimeIndex};
pub use producer_state::{
    BatchMetadata, ProducerAppend, ProducerStateEntry, ProducerStateManager, NUM_BATCHES_TO_RETAIN,
    PRODUCERS_MAX, PRODUCER_ID_EXPIRATION_MS,
};
pub use segment::{LogSegment, StoredBatch, NO_TIMESTAMP};
pub use stored::{RecordsPart, StoredRecords};

use crate::planted::{self, PlantedBug};
use crate::storage::{Storage, StorageFile};
use segment::{
    parse_segment_file_name, segment_file_name, ReplayEnd, INDEX_SUFFIX, LOG_SUFFIX,
    SEGMENT_POSITION_MAX, TIME_INDEX_SUFFIX,
};

/// Written by `close` after everything is synced; its presence at `open` means "trust files".
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Checkpoint of the LogStartOffset: 8-byte big-endian offset + 4-byte CRC-32C of it.
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// The last high watermark a replica saw (Kafka's replication-offset-checkpoint, per log): a
/// restarted replica knows this much is committed without asking anyone. Written without fsync
/// (an older or missing value is only more conservative), lowered durably before a truncation.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
/// Largest persisted index file we are willing to read.
const INDEX_FILE_BYTES_MAX: u64 = (index::INDEX_ENTRIES_MAX * index::TIME_ENTRY_BYTES) as u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this (Kafka segment.bytes).
    pub segment_bytes: u64,
    /// Roll a non-empty active segment older than this (Kafka segment.ms).
    pub segment_ms: i64,
    /// Delete segments whose max timestamp is older than this; -1 = infinite.
    pub retention_ms: i64,
    /// Delete old segments while the log is larger than this; -1 = infinite.
    pub retention_bytes: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < batch::HEADER_BYTES as u64 || self.segment_bytes > i32::MAX as u64 {
            return Err(format!(
                "segment_bytes {} out of range [61, 2^31)",
                self.segment_bytes
            ));
        }
        if self.segment_ms <= 0 {
            return Err(format!("segment_ms {} must be positive", self.segment_ms));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return Err("retention_ms/retention_bytes must be >= -1".into());
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if (self.max_message_bytes as usize) < batch::HEADER_BYTES {
            return Err(format!(
                "max_message_bytes {} too small",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Max of the batches' maxTimestamp (-1 if none had one).
    pub max_timestamp: i64,
    /// Bytes written (0 for a duplicate).
    pub bytes: usize,
    /// Batches written (0 for a duplicate).
    pub batches: usize,
    /// Every batch was an idempotent producer's retry of batches already stored: nothing was
    /// written and the offsets are the original ones (Kafka answers success with them).
    pub duplicate: bool,
}

#[derive(Debug)]
pub enum ReadError {
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    Storage(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
            } => write!(
                f,
                "offset {offset} out of range [{log_start_offset}, {log_end_offset}]"
            ),
            ReadError::Storage(e) => write!(f, "storage error: {e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Storage(e)
    }
}

/// What `open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub clean_shutdown: bool,
    pub segments_loaded: usize,
    /// Segments whose indexes were rebuilt by walking the segment (all of them if unclean).
    pub segments_rebuilt: usize,
    /// Segments deleted because they followed a torn/invalid batch or a gap.
    pub segments_removed: usize,
    /// Bytes cut off (truncated tails plus removed segments).
    pub truncated_bytes: u64,
    /// Last offset kept (-1 if the log is empty).
    pub last_valid_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Human-readable details of every repair.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

/// Handles to sync outside the log's lock, then pass back to `Log::complete_flush`.
#[derive(Clone, Debug)]
pub struct FlushTicket<F> {
    files: Vec<F>,
    upto: i64,
    generation: u64,
}

impl<F: StorageFile> FlushTicket<F> {
    /// Offset below which everything is durable once the files are synced.
    pub fn upto(&self) -> i64 {
        self.upto
    }
    pub fn files(&self) -> &[F] {
        &self.files
    }
    /// Syncs every file of the ticket.
    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync()?;
        }
        Ok(())
    }

    /// After `sync`: lets the OS drop the ticket's files from its cache (see `drop_cached`).
    pub fn drop_cached(&self) {
        for f in &self.files {
            f.drop_cached();
        }
    }
}

pub struct Log<S: Storage> {
    storage: S,
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, LogSegment<S::File>>,
    log_start_offset: i64,
    durable_offset: i64,
    /// Bumped by truncations: flush tickets prepared before one are stale.
    generation: u64,
    /// Segments whose index files were written this session but not synced yet.
    index_files_unsynced: BTreeSet<i64>,
    /// Set by `close`: a clean-shutdown marker is on disk, so no append may follow.
    closed: bool,
    /// Idempotent-producer state: a replay of the stored batch headers, plus entries whose
    /// batches retention deleted, minus expired or evicted ones. Never past the log end.
    producer_state: ProducerStateManager,
    /// First offset of every leader epoch with data in the log (plus, possibly, a latest epoch
    /// assigned at the log end with no data yet). Never past the log end or below its start.
    epochs: LeaderEpochCache,
    /// What [`HIGH_WATERMARK_FILE`] holds (-1: nothing valid).
    high_watermark_checkpoint: i64,
}

/// A request must fit a fresh segment.
fn check_request_size(batches: &[u8]) -> Result<(), AppendError> {
    let total = batches.len() as u64;
    if total > SEGMENT_POSITION_MAX / 2 {
        return Err(AppendError::MessageTooLarge(format!(
            "request of {total} bytes cannot fit a segment"
        )));
    }
    Ok(())
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<S: Storage> Log<S> {
    /// Opens (creating if needed) the log in `dir`, recovering from an unclean shutdown.
    pub fn open(
        storage: S,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
    ) -> io::Result<(Self, RecoveryReport)> {
        config.validate().map_err(invalid_input)?;
        storage.create_dir_all(&dir)?;
        let names = storage.list(&dir)?;
        let clean = names.iter().any(|n| n == CLEAN_SHUTDOWN_FILE);
        let mut report = RecoveryReport {
            clean_shutdown: clean,
            ..RecoveryReport::default()
        };
        let checkpoint =
            read_offset_checkpoint(&storage, &dir, LOG_START_OFFSET_FILE, &mut report.notes)?;
        let hw_checkpoint =
            read_offset_checkpoint(&storage, &dir, HIGH_WATERMARK_FILE, &mut report.notes)?;
        let interval = config.index_interval_bytes;

        let mut segments: BTreeMap<i64, LogSegment<S::File>> = BTreeMap::new();
        let mut broken = false;
        let bases: Vec<i64> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .collect();
        for base in bases {
            let path = dir.join(segment_file_name(base, LOG_SUFFIX));
            let expected = segments.values().next_back().map(|s| s.next_offset());
            if broken || expected.is_some_and(|e| e != base) {
                if !broken {
                    report.notes.push(format!(
                        "segment {base} does not follow offset {expected:?}"
                    ));
                }
                broken = true;
                let file = storage.open(&path)?;
                report.truncated_bytes += file.len();
                drop(file);
                remove_segment_files(&storage, &dir, base)?;
                report.segments_removed += 1;
                continue;
            }
            let file = storage.open(&path)?;
            let len = file.len();
            let mut seg = LogSegment::new(file, base, now_ms);
            let mut loaded = false;
            if clean {
                match read_indexes(&storage, &dir, base, len)? {
                    Ok((oi, ti)) => match seg.load_with_indexes(oi, ti, interval)? {
                        Ok(()) => loaded = true,
                        Err(why) => report.notes.push(format!("segment {base}: {why}")),
                    },
                    Err(why) => report.notes.push(format!("segment {base}: {why}")),
                }
            }
            if !loaded {
                seg.reset();
                report.segments_rebuilt += 1;
                if let ReplayEnd::Invalid { pos, reason } = seg.replay(len, true, interval)? {
                    report.notes.push(format!(
                        "segment {base}: truncating {} bytes at position {pos}: {reason}",
                        len - pos
                    ));
                    seg.file().truncate(pos)?;
                    seg.file().sync()?;
                    report.truncated_bytes += len - pos;
                    broken = true;
                }
            }
            assert_eq!(seg.size_bytes(), seg.file().len());
            segments.insert(base, seg);
        }
        report.segments_loaded = segments.len();

        // Index files without a segment.
        for name in &names {
            let stem = name
                .strip_suffix(INDEX_SUFFIX)
                .or_else(|| name.strip_suffix(TIME_INDEX_SUFFIX));
            if let Some(base) = stem.and_then(|s| parse_segment_file_name(&format!("{s}.log"))) {
                let path = dir.join(name);
                if !segments.contains_key(&base) && storage.exists(&path) {
                    storage.remove(&path)?;
                }
            }
        }

        let mut log = Log {
            storage,
            dir,
            config,
            segments,
            log_start_offset: 0,
            durable_offset: 0,
            generation: 0,
            index_files_unsynced: BTreeSet::new(),
            closed: false,
            producer_state: ProducerStateManager::new(PRODUCERS_MAX, PRODUCER_ID_EXPIRATION_MS),
            epochs: LeaderEpochCache::new(),
            high_watermark_checkpoint: hw_checkpoint.unwrap_or(-1),
        };
        if log.segments.is_empty() {
            let base = checkpoint.unwrap_or(0).max(0);
            log.create_segment(base, now_ms)?;
        }
        let first_base = *log.segments.keys().next().unwrap();
        log.log_start_offset = checkpoint.map_or(first_base, |c| c.max(first_base));
        if log.log_start_offset > log.log_end_offset() {
            report.notes.push(format!(
                "log start offset {} beyond recovered log end {}: starting empty there",
                log.log_start_offset,
                log.log_end_offset()
            ));
            let start = log.log_start_offset;
            log.remove_all_segments(&mut report)?;
            log.create_segment(start, now_ms)?;
        }
        // Segments wholly below the log start (crash between checkpoint and deletion).
        while log.segments.len() > 1 {
            let first = log.segments.values().next().unwrap();
            if first.next_offset() > log.log_start_offset {
                break;
            }
            let base = first.base_offset();
            report
                .notes
                .push(format!("removing segment {base} below log start"));
            log.segments.remove(&base);
            remove_segment_files(&log.storage, &log.dir, base)?;
        }
        if clean {
            log.storage.remove(&log.dir.join(CLEAN_SHUTDOWN_FILE))?;
        }
        log.storage.sync_dir(&log.dir)?;
        log.durable_offset = log.log_end_offset();
        log.rebuild_from_headers()?;
        log.producer_state.remove_expired(now_ms);
        report.log_start_offset = log.log_start_offset;
        report.log_end_offset = log.log_end_offset();
        report.last_valid_offset = log.log_end_offset() - 1;
        log.check_invariants();
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    /// Everything below is fsynced.
    pub fn durable_offset(&self) -> i64 {
        self.durable_offset
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }
    /// Bytes stored across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes()).sum()
    }

    /// (epoch, last sequence) of an idempotent producer, if the partition remembers it.
    pub fn producer_state(&self, producer_id: i64) -> Option<(i16, i32)> {
        self.producer_state
            .entry(producer_id)
            .map(|e| (e.producer_epoch, e.last_seq()))
    }

    /// Number of producer ids remembered.
    pub fn producer_count(&self) -> usize {
        self.producer_state.len()
    }

    /// Replays the producer state and the leader epoch cache from the headers of every stored
    /// batch (offset order), in one walk. Header-only reads: cost proportional to the number
    /// of batches. On error the producer state is left empty (no dedup, but no false
    /// rejections either) and the epoch cache unchanged.
    fn rebuild_from_headers(&mut self) -> io::Result<()> {
        self.producer_state.clear();
        let state = &mut self.producer_state;
        let mut epochs = LeaderEpochCache::new();
        let walked = self.segments.values().try_for_each(|seg| {
            seg.for_each_header(|h| {
                state.replay_batch(h);
                epochs.assign(h.partition_leader_epoch(), h.base_offset());
            })
        });
        if let Err(e) = walked {
            self.producer_state.clear();
            return Err(e);
        }
        epochs.truncate_from_start(self.log_start_offset);
        self.epochs = epochs;
        self.producer_state.check_invariants();
        Ok(())
    }

    /// The latest leader epoch of the log (of its last batch, or assigned with
    /// `assign_epoch_start`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Every cached (leader epoch, start offset), oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs.entries()
    }

    /// A new leader records `epoch` as starting at its log end before it appends anything
    /// (Kafka's `maybeAssignEpochStartOffset`); `start_offset` must be the log end. Ignored if
    /// `epoch` is not greater than the latest epoch. An epoch without a batch yet replaces a
    /// latest epoch that has none either.
    ///
    /// Not persisted: an epoch with no batch is forgotten at restart (the cache is rebuilt
    /// from batch headers). That is harmless: it covers no offset, so every answer of
    /// `end_offset_for_epoch` about data stays the same, and a restarted node leads again
    /// only in a newer epoch, which it assigns again when it becomes leader.
    pub fn assign_epoch_start(&mut self, epoch: i32, start_offset: i64) {
        assert_eq!(
            start_offset,
            self.log_end_offset(),
            "an epoch starts at the log end"
        );
        self.epochs.assign(epoch, start_offset);
        self.check_invariants();
    }

    /// Kafka's OffsetsForLeaderEpoch answer (`LeaderEpochFileCache.endOffsetFor`) for a
    /// follower whose latest epoch is `requested`: (epoch, end offset), the end offset
    /// exclusive (the follower truncates to it, or to its own log end if smaller).
    /// - empty cache: None;
    /// - `requested` < 0 (UNDEFINED_EPOCH), or greater than the latest epoch: `Some((-1, -1))`
    ///   (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
    /// - `requested` == latest epoch: (latest, log end offset);
    /// - otherwise, with `floor` the largest cached epoch <= `requested` and `next` the
    ///   smallest cached epoch > `requested`: (floor, start offset of `next`);
    /// - `requested` below every cached epoch (its data was deleted): (`requested`, start
    ///   offset of the first cached epoch), as Kafka answers, so that the follower replicates
    ///   from there.
    pub fn end_offset_for_epoch(&self, requested: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(requested, self.log_end_offset())
    }

    fn active(&self) -> &LogSegment<S::File> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment<S::File> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Validates every batch (framing, then idempotent producers' epochs and sequences), then
    /// assigns consecutive offsets and appends them all or none. A request whose batches were
    /// all stored already (a producer's retry) writes nothing and reports the original offsets
    /// with `duplicate: true`. `leader_epoch` is stamped into every batch; one older than
    /// the latest epoch in the log is refused (`LeaderEpochRegression`).
    pub fn append(
        &mut self,
        batches: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Storage(io::Error::other("log is closed")));
        }
        if let Some(latest) = self.epochs.latest_epoch() {
            // Leaders only move to newer epochs, so this means the stored epochs are not what
            // this leader wrote: the epoch field is outside the batch CRC, and a flipped bit
            // there survives recovery. Refuse rather than write epochs out of order.
            if leader_epoch >= 0 && leader_epoch < latest {
                return Err(AppendError::LeaderEpochRegression {
                    latest,
                    got: leader_epoch,
                });
            }
        }
        let infos = validate_for_append(batches, self.config.max_message_bytes)?;
        check_request_size(batches)?;
        let producer_append = match self
            .producer_state
            .prepare_append(&infos, self.log_end_offset())?
        {
            ProducerAppend::New(p) => p,
            ProducerAppend::Duplicate {
                first_offset,
                last_offset,
                max_timestamp,
            } => {
                assert!(first_offset <= last_offset && last_offset < self.log_end_offset());
                return Ok(AppendInfo {
                    base_offset: first_offset,
                    last_offset,
                    max_timestamp,
                    bytes: 0,
                    batches: 0,
                    duplicate: true,
                });
            }
        };
        let log_end_before = self.log_end_offset();
        // Offsets and the epoch go into copies of the batch headers (both fields lie outside
        // the CRC); the records are written from the request's buffer, not copied first.
        let mut heads = Vec::with_capacity(infos.len());
        let mut next = log_end_before;
        for info in &infos {
            let mut head = [0u8; batch::HEADER_BYTES];
            head.copy_from_slice(&batches[info.pos..info.pos + batch::HEADER_BYTES]);
            set_base_offset(&mut head, next);
            set_partition_leader_epoch(&mut head, leader_epoch);
            heads.push(head);
            next += info.last_offset_delta as i64 + 1;
        }
        let max_timestamp = self.write_batches(batches, Some(&heads), &infos, now_ms)?;
        assert_eq!(self.log_end_offset(), next);
        // Only a successful write advances the producers' sequences.
        self.producer_state.commit(producer_append, next, now_ms);
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: log_end_before,
            last_offset: next - 1,
            max_timestamp,
            bytes: batches.len(),
            batches: infos.len(),
            duplicate: false,
        })
    }

    /// Appends batches fetched from the leader, their offsets and leader epochs already
    /// assigned (Kafka's `appendAsFollower`), all or none, stored byte for byte as received.
    /// Refuses (changing nothing) damaged framing or CRCs, a first batch not at the log end or
    /// batches that are not contiguous (`OffsetMismatch`), and a batch whose leader epoch is
    /// older than the latest one before it (`LeaderEpochRegression`; negative epochs mean
    /// "none" and are allowed anywhere). The producer state replays the batches without the
    /// leader's sequence checks (the leader's log is the truth), so that it is right if this
    /// replica becomes leader.
    pub fn append_as_follower(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.closed {
            return Err(AppendError::Storage(io::Error::other("log is closed")));
        }
        // Framing, CRCs and headers (not the records: see `validate_replicated`); base
        // offsets and epochs are checked below.
        let infos = validate_replicated(batches, self.config.max_message_bytes)?;
        check_request_size(batches)?;
        let log_end_before = self.log_end_offset();
        let mut expected = log_end_before;
        let mut latest = self.epochs.latest_epoch();
        for info in &infos {
            let h = RecordBatchHeader::parse(&batches[info.pos..info.pos + info.size])
                .expect("validated batch");
            if h.base_offset() != expected {
                return Err(AppendError::OffsetMismatch {
                    expected,
                    got: h.base_offset(),
                });
            }
            let epoch = h.partition_leader_epoch();
            if let Some(l) = latest.filter(|l| epoch >= 0 && epoch < *l) {
                return Err(AppendError::LeaderEpochRegression {
                    latest: l,
                    got: epoch,
                });
            }
            if epoch >= 0 {
                latest = Some(epoch);
            }
            expected = h
                .base_offset()
                .checked_add(info.last_offset_delta as i64 + 1)
                .ok_or_else(|| AppendError::InvalidRecord("offsets overflow".into()))?;
        }
        let max_timestamp = self.write_batches(batches, None, &infos, now_ms)?;
        assert_eq!(self.log_end_offset(), expected);
        for info in &infos {
            let h = RecordBatchHeader::parse(&batches[info.pos..info.pos + info.size])
                .expect("validated batch");
            // As `commit` does for the leader: a new producer first expires idle ones.
            let pid = h.producer_id();
            if pid != producer_state::NO_PRODUCER_ID && self.producer_state.entry(pid).is_none() {
                self.producer_state.remove_expired(now_ms);
            }
            self.producer_state.replay_batch(&h);
        }
        self.check_invariants();
        Ok(AppendInfo {
            base_offset: log_end_before,
            last_offset: expected - 1,
            max_timestamp,
            bytes: batches.len(),
            batches: infos.len(),
            duplicate: false,
        })
    }

    /// The write both append paths share. `bytes` are whole validated batches (`infos`, back
    /// to back) whose headers (or `heads`, one per batch, which replace them as stored) carry
    /// their final base offsets, the first at the log end, and leader epochs not older than
    /// the latest. Rolls if needed, writes them to the active segment (all or nothing: a
    /// failed write is cut back and changes nothing), tracks them and records new leader
    /// epochs. Returns the batches' max timestamp.
    fn write_batches(
        &mut self,
        bytes: &[u8],
        heads: Option<&[[u8; batch::HEADER_BYTES]]>,
        infos: &[BatchInfo],
        now_ms: i64,
    ) -> Result<i64, AppendError> {
        if let Some(heads) = heads {
            assert_eq!(heads.len(), infos.len(), "one header per batch");
        }
        assert_eq!(
            infos.iter().map(|i| i.size).sum::<usize>(),
            bytes.len(),
            "batches must cover the buffer"
        );
        let total = bytes.len() as u64;
        let count: i64 = infos.iter().map(|i| i.last_offset_delta as i64 + 1).sum();
        self.maybe_roll(total, count, now_ms)?;
        let log_end_before = self.log_end_offset();
        let size_before = self.active().size_bytes();
        let mut next = log_end_before;
        let mut max_timestamp = NO_TIMESTAMP;
        let mut stored = Vec::with_capacity(infos.len());
        let mut epochs = Vec::with_capacity(infos.len());
        let mut pos = 0;
        for (i, info) in infos.iter().enumerate() {
            assert_eq!(info.pos, pos, "batches must be back to back");
            pos += info.size;
            let header = match heads {
                Some(heads) => &heads[i][..],
                None => &bytes[info.pos..info.pos + info.size],
            };
            let h = RecordBatchHeader::parse(header).expect("validated batch");
            assert_eq!(h.base_offset(), next, "batches must be contiguous");
            let last = next + info.last_offset_delta as i64;
            stored.push(StoredBatch {
                pos: size_before + info.pos as u64,
                size: info.size as u64,
                base_offset: next,
                last_offset: last,
                max_timestamp: info.max_timestamp,
            });
            epochs.push((h.partition_leader_epoch(), next));
            max_timestamp = max_timestamp.max(info.max_timestamp);
            next = last + 1;
        }
        let written = match heads {
            Some(heads) => {
                let mut parts = Vec::with_capacity(2 * infos.len());
                for (head, info) in heads.iter().zip(infos) {
                    assert!(info.size >= batch::HEADER_BYTES);
                    parts.push(&head[..]);
                    parts.push(&bytes[info.pos + batch::HEADER_BYTES..info.pos + info.size]);
                }
                self.active().file().append_parts(&parts)
            }
            None => self.active().file().append(bytes),
        };
        if let Err(e) = written {
            // Restore the previous end; the tracked state was not touched yet.
            let _ = self.active().file().truncate(size_before);
            return Err(AppendError::Storage(e));
        }
        let interval = self.config.index_interval_bytes;
        let seg = self.active_mut();
        for b in stored {
            seg.track_batch(b, interval);
        }
        assert_eq!(
            self.log_end_offset(),
            next,
            "log end must follow the last offset"
        );
        assert_eq!(self.active().size_bytes(), size_before + total);
        for (epoch, base) in epochs {
            if let Some(latest) = self.epochs.latest_epoch() {
                assert!(epoch < 0 || epoch >= latest, "epoch {epoch} after {latest}");
            }
            self.epochs.assign(epoch, base);
        }
        Ok(max_timestamp)
    }

    fn maybe_roll(&mut self, bytes: u64, count: i64, now_ms: i64) -> io::Result<()> {
        let seg = self.active();
        if seg.is_empty() {
            return Ok(());
        }
        let roll = seg.size_bytes() + bytes > self.config.segment_bytes
            || now_ms - seg.created_ms() > self.config.segment_ms
            || seg.index_full()
            || !seg.offsets_fit(count)
            || seg.size_bytes() + bytes > SEGMENT_POSITION_MAX;
        if roll {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Starts a new active segment at the log end (persisting the old one's indexes).
    pub fn roll(&mut self, now_ms: i64) -> io::Result<()> {
        if self.active().is_empty() {
            return Ok(());
        }
        let base = self.log_end_offset();
        let (storage, dir) = (&self.storage, &self.dir);
        let old = self.segments.values_mut().next_back().unwrap();
        old.write_indexes(storage, dir)?;
        self.index_files_unsynced.insert(old.base_offset());
        self.create_segment(base, now_ms)?;
        self.check_invariants();
        Ok(())
    }

    fn create_segment(&mut self, base: i64, now_ms: i64) -> io::Result<()> {
        assert!(self.segments.keys().next_back().map_or(true, |b| *b < base));
        let file = self
            .storage
            .open(&self.dir.join(segment_file_name(base, LOG_SUFFIX)))?;
        if !file.is_empty() {
            file.truncate(0)?; // a leftover that deletion missed
        }
        self.storage.sync_dir(&self.dir)?;
        self.segments
            .insert(base, LogSegment::new(file, base, now_ms));
        Ok(())
    }

    /// Whole stored batches from the one containing `offset`, none with base >= `max_offset`,
    /// up to `max_bytes` but at least one batch (KIP-74), copied into memory. May span segments.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Bytes, ReadError> {
        let stored = self.read_stored(offset, max_bytes, max_offset)?;
        let bytes = stored.to_bytes()?;
        debug_assert_eq!(bytes.len(), stored.len());
        Ok(bytes)
    }

    /// As `read`, but the batches are named as regions of their segment files where the
    /// storage allows it, so a fetch response can send them without copying them first.
    pub fn read_stored(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<StoredRecords, ReadError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        let mut out = StoredRecords::new();
        if offset >= max_offset || offset == log_end {
            return Ok(out);
        }
        let first_base = *self
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset >= log start >= first base")
            .0;
        let mut used = 0usize;
        for seg in self.segments.range(first_base..).map(|(_, s)| s) {
            let start = if seg.base_offset() == first_base {
                match seg.find_batch(offset)? {
                    Some(b) => b.pos,
                    None => seg.size_bytes(),
                }
            } else {
                0
            };
            let mut pos = start;
            let mut done = false;
            let mut headers = seg.header_cursor();
            while pos < seg.size_bytes() {
                let b = headers.header(pos)?;
                if b.base_offset >= max_offset || (used > 0 && used + b.size as usize > max_bytes) {
                    done = true;
                    break;
                }
                used += b.size as usize;
                pos += b.size;
            }
            if pos > start {
                out.push(seg.read_part(start, pos - start)?);
            }
            if done {
                break;
            }
        }
        assert_eq!(out.len(), used);
        Ok(out)
    }

    /// None if nothing is unsynced. Sync the ticket's files without holding the log, then
    /// pass it to `complete_flush`.
    pub fn prepare_flush(&self) -> Option<FlushTicket<S::File>> {
        let log_end = self.log_end_offset();
        assert!(self.durable_offset <= log_end);
        if self.durable_offset == log_end {
            return None;
        }
        let files = self
            .segments
            .values()
            .filter(|s| s.next_offset() > self.durable_offset && !s.is_empty())
            .map(|s| s.file().clone())
            .collect();
        Some(FlushTicket {
            files,
            upto: log_end,
            generation: self.generation,
        })
    }

    /// Records a synced ticket; a ticket prepared before a truncation is ignored.
    pub fn complete_flush(&mut self, ticket: &FlushTicket<S::File>) {
        if ticket.generation != self.generation {
            return;
        }
        assert!(
            ticket.upto <= self.log_end_offset(),
            "ticket beyond log end without truncation"
        );
        self.durable_offset = self.durable_offset.max(ticket.upto);
        self.check_invariants();
    }

    /// Syncs everything now (prepare + sync + complete).
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(t) = self.prepare_flush() {
            t.sync()?;
            self.complete_flush(&t);
        }
        Ok(())
    }

    /// (offset, timestamp) of the first batch at or after the log start whose max timestamp
    /// is >= `ts_ms` (offset = its base offset, clamped to the log start).
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> io::Result<Option<(i64, i64)>> {
        for seg in self.segments.values() {
            if let Some(b) = seg.find_by_timestamp(ts_ms, self.log_start_offset)? {
                return Ok(Some((
                    b.base_offset.max(self.log_start_offset),
                    b.max_timestamp,
                )));
            }
        }
        Ok(None)
    }

    /// (offset, timestamp) of the largest timestamp: the base offset of the first batch
    /// carrying it, clamped to the log start. None for an empty log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for seg in self.segments.values() {
            if seg.is_empty() || seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if best.map_or(true, |(_, t)| seg.max_timestamp() > t) {
                best = Some((
                    seg.offset_of_max_timestamp().max(self.log_start_offset),
                    seg.max_timestamp(),
                ));
            }
        }
        best
    }

    /// Drops everything at and above `offset` (a batch boundary or the log end), durably, and
    /// the leader epochs starting there or later. Below the log start it empties the log and
    /// restarts it at `offset`. At or beyond the log end it keeps the data but still drops an
    /// epoch starting at the log end (as Kafka does): a former leader may have assigned its
    /// epoch there and lost leadership before appending, and a follower must not keep an epoch
    /// its leader never wrote (the leader's older-epoch batches would be refused after it).
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        if offset < self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        if offset >= self.log_end_offset() {
            self.epochs.truncate_from_end(self.log_end_offset());
            self.check_invariants();
            return Ok(());
        }
        // Producers with batches at or above `offset` need a rebuild (cost: every batch
        // header). Forget first: if a step below fails, no entry may point past the log end.
        self.lower_high_watermark_checkpoint(offset)?;
        let rebuild = self.producer_state.has_batches_from(offset);
        if rebuild {
            self.producer_state.clear();
        }
        self.epochs.truncate_from_end(offset);
        let doomed: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for base in doomed.into_iter().rev() {
            self.segments.remove(&base);
            self.index_files_unsynced.remove(&base);
            remove_segment_files(&self.storage, &self.dir, base)?;
        }
        let interval = self.config.index_interval_bytes;
        self.active_mut().truncate_to(offset, interval)?;
        assert_eq!(self.log_end_offset(), offset);
        // Nothing at or above the new end is durable any more; should a step below fail (the
        // caller then fails the log), the durable offset must not point past the end.
        self.durable_offset = self.durable_offset.min(offset);
        if rebuild {
            self.rebuild_from_headers()?;
        }
        // Make the truncation and everything below it durable.
        for seg in self.segments.values() {
            if seg.next_offset() >= self.durable_offset {
                seg.file().sync()?;
            }
        }
        self.storage.sync_dir(&self.dir)?;
        self.generation += 1;
        self.durable_offset = offset;
        self.check_invariants();
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset` (LogStartOffset too),
    /// forgetting every leader epoch.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> io::Result<()> {
        assert!(offset >= 0);
        let now_ms = self.active().created_ms();
        let mut report = RecoveryReport::default();
        self.producer_state.clear();
        self.epochs.clear();
        self.lower_high_watermark_checkpoint(offset)?;
        self.write_log_start_checkpoint(offset)?;
        self.remove_all_segments(&mut report)?;
        self.create_segment(offset, now_ms)?;
        self.log_start_offset = offset;
        self.generation += 1;
        self.durable_offset = offset;
        self.check_invariants();
        Ok(())
    }

    fn remove_all_segments(&mut self, report: &mut RecoveryReport) -> io::Result<()> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases {
            let seg = self.segments.remove(&base).unwrap();
            report.truncated_bytes += seg.size_bytes();
            report.segments_removed += 1;
            self.index_files_unsynced.remove(&base);
            remove_segment_files(&self.storage, &self.dir, base)?;
        }
        self.storage.sync_dir(&self.dir)
    }

    /// Deletes whole old segments (never the active one) by retention_ms (max timestamp older
    /// than now - retention_ms), retention_bytes (log larger than the limit) and the log start
    /// offset, advancing and checkpointing the log start (the leader epoch covering the new
    /// start now starts there; older ones are dropped).
    pub fn apply_retention(&mut self, now_ms: i64) -> io::Result<RetentionReport> {
        let inactive: Vec<&LogSegment<S::File>> = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .collect();
        let by_time = if self.config.retention_ms < 0 {
            0
        } else {
            inactive
                .iter()
                .take_while(|s| now_ms - s.max_timestamp() > self.config.retention_ms)
                .count()
        };
        let by_bytes = if self.config.retention_bytes < 0 {
            0
        } else {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            inactive
                .iter()
                .take_while(|s| {
                    let fits = excess - s.size_bytes() as i64 >= 0;
                    if fits {
                        excess -= s.size_bytes() as i64;
                    }
                    fits
                })
                .count()
        };
        let by_start = inactive
            .iter()
            .take_while(|s| s.next_offset() <= self.log_start_offset)
            .count();
        let n = by_time.max(by_bytes).max(by_start);
        // Entries whose batches are deleted stay (as in Kafka) until they expire.
        self.producer_state.remove_expired(now_ms);
        self.delete_oldest_segments(n)
    }

    /// Advances the LogStartOffset to `offset` (<= log end) and deletes segments wholly below;
    /// the leader epoch covering `offset` now starts there, older ones are dropped.
    pub fn delete_records_before(&mut self, offset: i64) -> io::Result<RetentionReport> {
        if offset > self.log_end_offset() {
            return Err(invalid_input(format!(
                "delete_records_before({offset}) beyond log end {}",
                self.log_end_offset()
            )));
        }
        if offset > self.log_start_offset {
            self.write_log_start_checkpoint(offset)?;
            self.log_start_offset = offset;
            self.epochs.truncate_from_start(offset);
        }
        let n = self
            .segments
            .values()
            .take(self.segments.len() - 1)
            .take_while(|s| s.next_offset() <= self.log_start_offset)
            .count();
        self.delete_oldest_segments(n)
    }

    fn delete_oldest_segments(&mut self, n: usize) -> io::Result<RetentionReport> {
        assert!(n < self.segments.len(), "never delete the active segment");
        let mut report = RetentionReport {
            log_start_offset: self.log_start_offset,
            ..RetentionReport::default()
        };
        if n == 0 {
            return Ok(report);
        }
        let doomed: Vec<i64> = self.segments.keys().take(n).copied().collect();
        let new_first = *self.segments.keys().nth(n).unwrap();
        let new_start = self.log_start_offset.max(new_first);
        if new_start != self.log_start_offset {
            // Checkpoint first: a crash before the deletions just redoes them at open.
            self.write_log_start_checkpoint(new_start)?;
            self.log_start_offset = new_start;
            self.epochs.truncate_from_start(new_start);
        }
        for base in doomed {
            let seg = self.segments.remove(&base).unwrap();
            report.segments_deleted += 1;
            report.bytes_deleted += seg.size_bytes();
            self.index_files_unsynced.remove(&base);
            remove_segment_files(&self.storage, &self.dir, base)?;
        }
        self.storage.sync_dir(&self.dir)?;
        report.log_start_offset = self.log_start_offset;
        self.check_invariants();
        Ok(report)
    }

    fn write_log_start_checkpoint(&self, offset: i64) -> io::Result<()> {
        self.write_offset_file(LOG_START_OFFSET_FILE, offset, true)
    }

    /// An offset and its CRC32C in file `name` of this log's directory.
    fn write_offset_file(&self, name: &str, offset: i64, sync: bool) -> io::Result<()> {
        let mut buf = offset.to_be_bytes().to_vec();
        buf.extend_from_slice(&crc32c::crc32c(&offset.to_be_bytes()).to_be_bytes());
        let f = self.storage.open(&self.dir.join(name))?;
        f.truncate(0)?;
        f.append(&buf)?;
        if sync {
            f.sync()?;
        }
        Ok(())
    }

    /// The high watermark the last [`checkpoint_high_watermark`](Self::checkpoint_high_watermark)
    /// recorded (before a restart too), within this log's offsets.
    pub fn checkpointed_high_watermark(&self) -> Option<i64> {
        let hw = self.high_watermark_checkpoint;
        (hw >= 0).then(|| hw.clamp(self.log_start_offset, self.log_end_offset()))
    }

    /// Records `high_watermark` as committed (no fsync: losing it only makes the next start
    /// more conservative). Writes only a changed value.
    pub fn checkpoint_high_watermark(&mut self, high_watermark: i64) -> io::Result<()> {
        let high_watermark = if planted::enabled(PlantedBug::HwCheckpointLogEnd) {
            self.log_end_offset()
        } else {
            high_watermark
        };
        assert!(
            high_watermark <= self.log_end_offset(),
            "high watermark {high_watermark} past the log end {}",
            self.log_end_offset()
        );
        if high_watermark == self.high_watermark_checkpoint || self.closed {
            return Ok(());
        }
        self.high_watermark_checkpoint = -1;
        self.write_offset_file(HIGH_WATERMARK_FILE, high_watermark, false)?;
        self.high_watermark_checkpoint = high_watermark;
        Ok(())
    }

    /// Before truncating to `offset`: a checkpoint above it would, after a restart, call
    /// whatever is appended there next committed. Lowered durably, before any data goes.
    fn lower_high_watermark_checkpoint(&mut self, offset: i64) -> io::Result<()> {
        if self.high_watermark_checkpoint <= offset {
            return Ok(());
        }
        self.high_watermark_checkpoint = -1;
        self.write_offset_file(HIGH_WATERMARK_FILE, offset, true)?;
        self.high_watermark_checkpoint = offset;
        Ok(())
    }

    pub fn set_config(&mut self, config: LogConfig) {
        config.validate().expect("invalid LogConfig");
        self.config = config;
    }

    /// Syncs everything, persists indexes, writes the clean-shutdown marker. The log refuses
    /// appends afterwards: nothing may follow the marker.
    pub fn close(&mut self) -> io::Result<()> {
        self.closed = true;
        for seg in self.segments.values() {
            seg.file().sync()?;
        }
        self.durable_offset = self.log_end_offset();
        let (storage, dir) = (&self.storage, &self.dir);
        for seg in self.segments.values_mut() {
            if seg.indexes_dirty() {
                seg.write_indexes(storage, dir)?;
                self.index_files_unsynced.insert(seg.base_offset());
            }
        }
        for base in &self.index_files_unsynced {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                storage
                    .open(&dir.join(segment_file_name(*base, suffix)))?
                    .sync()?;
            }
        }
        storage.sync_dir(dir)?;
        storage.open(&dir.join(CLEAN_SHUTDOWN_FILE))?;
        storage.sync_dir(dir)
    }

    /// Removes the whole directory.
    pub fn delete(self) -> io::Result<()> {
        self.storage.remove_dir_all(&self.dir)
    }

    fn check_invariants(&self) {
        let log_end = self.log_end_offset();
        assert!(self.log_start_offset <= log_end, "log start beyond log end");
        assert!(
            self.durable_offset <= log_end,
            "durable offset beyond log end"
        );
        if cfg!(debug_assertions) {
            let first = self.segments.values().next().unwrap();
            assert!(first.base_offset() <= self.log_start_offset);
            let mut expected = first.base_offset();
            for seg in self.segments.values() {
                assert_eq!(seg.base_offset(), expected, "segments must be contiguous");
                assert!(seg.next_offset() >= seg.base_offset());
                assert_eq!(seg.size_bytes(), seg.file().len());
                expected = seg.next_offset();
            }
        }
        if cfg!(debug_assertions) {
            self.epochs.check_invariants(self.log_start_offset, log_end);
        }
        self.producer_state.check_invariants();
        if cfg!(debug_assertions) {
            for (pid, entry) in self.producer_state.entries() {
                let last = entry.batches.back().expect("entries are never empty");
                assert!(last.last_offset < log_end, "producer {pid} beyond log end");
            }
        }
    }
}

fn remove_segment_files<S: Storage>(storage: &S, dir: &Path, base: i64) -> io::Result<()> {
    storage.remove(&dir.join(segment_file_name(base, LOG_SUFFIX)))?;
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let p = dir.join(segment_file_name(base, suffix));
        if storage.exists(&p) {
            storage.remove(&p)?;
        }
    }
    Ok(())
}

fn read_small_file<S: Storage>(storage: &S, path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let f = storage.open(path)?;
    if f.len() > max {
        return Ok(None);
    }
    let mut buf = vec![0u8; f.len() as usize];
    f.read_at(0, &mut buf)?;
    Ok(Some(buf))
}

fn read_indexes<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    segment_bytes: u64,
) -> io::Result<Result<(OffsetIndex, TimeIndex), String>> {
    let oi = read_small_file(
        storage,
        &dir.join(segment_file_name(base, INDEX_SUFFIX)),
        INDEX_FILE_BYTES_MAX,
    )?;
    let ti = read_small_file(
        storage,
        &dir.join(segment_file_name(base, TIME_INDEX_SUFFIX)),
        INDEX_FILE_BYTES_MAX,
    )?;
    let (Some(oi), Some(ti)) = (oi, ti) else {
        return Ok(Err("index files missing".into()));
    };
    let oi = match OffsetIndex::decode(&oi, segment_bytes) {
        Ok(i) => i,
        Err(e) => return Ok(Err(e)),
    };
    Ok(TimeIndex::decode(&ti).map(|ti| (oi, ti)))
}

/// The offset a checkpoint file written by `write_offset_file` holds, if it is intact.
fn read_offset_checkpoint<S: Storage>(
    storage: &S,
    dir: &Path,
    name: &str,
    notes: &mut Vec<String>,
) -> io::Result<Option<i64>> {
    let Some(buf) = read_small_file(storage, &dir.join(name), 64)? else {
        return Ok(None);
    };
    if buf.len() == 12 {
        let offset = i64::from_be_bytes(buf[..8].try_into().unwrap());
        let crc = u32::from_be_bytes(buf[8..].try_into().unwrap());
        if crc == crc32c::crc32c(&buf[..8]) && offset >= 0 {
            return Ok(Some(offset));
        }
    }
    notes.push(format!("ignoring a damaged {name} checkpoint"));
    Ok(None)
}

#[cfg(test)]
mod tests;
