//! Idempotent-producer deduplication for one partition: Kafka's `ProducerStateManager`.
//!
//! Per producer id it keeps a `ProducerStateEntry` (epoch, the metadata of the last
//! `NUM_BATCHES_TO_RETAIN` batches, last timestamp). An append is checked in two phases:
//! `prepare_append` validates every batch of a request against the state (as updated by the
//! earlier batches of the same request) without changing anything, and `commit` installs the
//! result once the write succeeded. `replay_batch` rebuilds the state from stored batch headers
//! (no checks: the log is the truth). Memory is bounded by `producers_max` entries (the
//! oldest by last timestamp is evicted) and by expiring entries idle for longer than
//! `producer_id_expiration_ms`. Timestamps are the batches' max timestamps (as in Kafka), so
//! the state is a pure function of the log and `now_ms`, and a rebuild reproduces it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::batch::{AppendError, BatchInfo, RecordBatchHeader};

/// Kafka's NUM_BATCHES_TO_RETAIN: a retry of any of a producer's last 5 batches is detected.
pub const NUM_BATCHES_TO_RETAIN: usize = 5;
/// Entries kept per partition before the least recently active one is evicted.
pub const PRODUCERS_MAX: usize = 10_000;
/// Kafka's producer.id.expiration.ms default (1 day).
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
/// producerId of a non-idempotent batch.
pub const NO_PRODUCER_ID: i64 = -1;

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences wrap from i32::MAX to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    assert!(
        sequence >= 0 && increment >= 0,
        "sequences are non-negative"
    );
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// What is remembered of one stored batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl BatchMetadata {
    fn check(&self) {
        assert!(self.first_seq >= 0, "negative sequence {self:?}");
        assert!(self.first_offset >= 0 && self.last_offset >= self.first_offset);
        let delta = self.last_offset - self.first_offset;
        assert!(
            delta <= i32::MAX as i64,
            "batch spans too many offsets {self:?}"
        );
        assert_eq!(
            self.last_seq,
            increment_sequence(self.first_seq, delta as i32),
            "sequence span differs from offset span {self:?}"
        );
    }
}

/// The state of one producer id in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStateEntry {
    pub producer_epoch: i16,
    /// The last (at most `NUM_BATCHES_TO_RETAIN`) batches of this epoch, oldest first.
    pub batches: VecDeque<BatchMetadata>,
    /// Max of the batches' max timestamps (drives expiration and eviction).
    pub last_timestamp_ms: i64,
}

impl ProducerStateEntry {
    pub fn last_seq(&self) -> i32 {
        self.batches
            .back()
            .expect("entries are never empty")
            .last_seq
    }

    /// The retained batch with exactly these sequences, if any.
    pub fn find_duplicate_batch(&self, first_seq: i32, last_seq: i32) -> Option<&BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    }

    /// The entry after storing `batch` with `epoch` (a new epoch starts a fresh entry).
    fn with_batch(current: Option<&ProducerStateEntry>, epoch: i16, batch: BatchMetadata) -> Self {
        let mut entry = match current {
            Some(e) if e.producer_epoch == epoch => e.clone(),
            _ => ProducerStateEntry {
                producer_epoch: epoch,
                batches: VecDeque::with_capacity(NUM_BATCHES_TO_RETAIN),
                last_timestamp_ms: i64::MIN,
            },
        };
        if let Some(last) = entry.batches.back() {
            assert!(
                batch.first_offset > last.last_offset,
                "offsets go backwards"
            );
        }
        if entry.batches.len() == NUM_BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        let previous_ms = current.map_or(i64::MIN, |e| e.last_timestamp_ms);
        entry.last_timestamp_ms = previous_ms.max(batch.max_timestamp);
        entry.check();
        entry
    }

    fn check(&self) {
        assert!(!self.batches.is_empty(), "empty producer entry");
        assert!(self.batches.len() <= NUM_BATCHES_TO_RETAIN);
        for b in &self.batches {
            b.check();
            assert!(self.last_timestamp_ms >= b.max_timestamp);
        }
        for w in self.batches.iter().zip(self.batches.iter().skip(1)) {
            assert!(w.0.last_offset < w.1.first_offset, "batches out of order");
        }
    }
}

/// The outcome of `prepare_append` for a request that passed the checks.
#[derive(Debug)]
pub enum ProducerAppend {
    /// New batches: write them, then `commit` this.
    New(ProducerAppendInfo),
    /// Every batch was already stored: write nothing, answer with the original offsets.
    Duplicate {
        first_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
    },
}

/// The entries a request will leave behind (Kafka's `ProducerAppendInfo`), to `commit` after
/// the write succeeded.
#[derive(Debug)]
pub struct ProducerAppendInfo {
    /// Log end offset the request's offsets were computed from.
    base_offset: i64,
    /// Offset after the request's last batch.
    next_offset: i64,
    updates: BTreeMap<i64, ProducerStateEntry>,
}

/// Per-partition producer state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: BTreeMap<i64, ProducerStateEntry>,
    /// (last_timestamp_ms, producer id) of every entry: eviction and expiration order.
    by_timestamp: BTreeSet<(i64, i64)>,
    producers_max: usize,
    producer_id_expiration_ms: i64,
}

impl ProducerStateManager {
    pub fn new(producers_max: usize, producer_id_expiration_ms: i64) -> Self {
        assert!(producers_max > 0, "producers_max must be positive");
        assert!(producer_id_expiration_ms > 0);
        ProducerStateManager {
            producers: BTreeMap::new(),
            by_timestamp: BTreeSet::new(),
            producers_max,
            producer_id_expiration_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.producers.get(&producer_id)
    }

    /// Every entry, by producer id.
    pub fn entries(&self) -> impl Iterator<Item = (i64, &ProducerStateEntry)> {
        self.producers.iter().map(|(pid, e)| (*pid, e))
    }

    /// Whether some entry remembers a batch at or above `offset` (O(n)).
    pub fn has_batches_from(&self, offset: i64) -> bool {
        self.producers
            .values()
            .any(|e| e.batches.back().is_some_and(|b| b.last_offset >= offset))
    }

    /// Forgets every producer (the log was emptied, or is about to be replayed).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.by_timestamp.clear();
    }

    /// Checks the batches of one request, in order, against the state as updated by the earlier
    /// ones; `base_offset` is the offset the first batch will get. Changes nothing.
    pub fn prepare_append(
        &self,
        infos: &[BatchInfo],
        base_offset: i64,
    ) -> Result<ProducerAppend, AppendError> {
        assert!(base_offset >= 0);
        let mut updates: BTreeMap<i64, ProducerStateEntry> = BTreeMap::new();
        let mut duplicates: Vec<BatchMetadata> = Vec::new();
        let mut new_batches = 0usize;
        let mut next = base_offset;
        for (index, info) in infos.iter().enumerate() {
            assert!(info.last_offset_delta >= 0, "validated batch");
            let first_offset = next;
            let last_offset = next + info.last_offset_delta as i64;
            next = last_offset + 1;
            let pid = info.producer_id;
            if pid == NO_PRODUCER_ID {
                new_batches += 1;
                continue;
            }
            if info.base_sequence < 0 {
                return Err(AppendError::InvalidRecord(format!(
                    "batch {index}: producer {pid} sent baseSequence {} (must be >= 0)",
                    info.base_sequence
                )));
            }
            let batch = BatchMetadata {
                first_seq: info.base_sequence,
                last_seq: increment_sequence(info.base_sequence, info.last_offset_delta),
                first_offset,
                last_offset,
                max_timestamp: info.max_timestamp,
            };
            let epoch = info.producer_epoch;
            let current = updates.get(&pid).or_else(|| self.producers.get(&pid));
            if let Some(entry) = current {
                if epoch < entry.producer_epoch {
                    return Err(AppendError::InvalidProducerEpoch(format!(
                        "batch {index}: producer {pid} epoch {epoch} is older than the current \
                         epoch {}",
                        entry.producer_epoch
                    )));
                }
                if epoch > entry.producer_epoch {
                    if batch.first_seq != 0 {
                        return Err(AppendError::OutOfOrderSequence(format!(
                            "batch {index}: producer {pid} bumped epoch {} -> {epoch} with \
                             sequence {} (a new epoch starts at 0)",
                            entry.producer_epoch, batch.first_seq
                        )));
                    }
                } else if let Some(dup) =
                    entry.find_duplicate_batch(batch.first_seq, batch.last_seq)
                {
                    duplicates.push(*dup);
                    continue;
                } else {
                    let expected = increment_sequence(entry.last_seq(), 1);
                    if batch.first_seq != expected {
                        return Err(AppendError::OutOfOrderSequence(format!(
                            "batch {index}: producer {pid} epoch {epoch}: sequence {} \
                             (incoming), expected {expected} (after {})",
                            batch.first_seq,
                            entry.last_seq()
                        )));
                    }
                }
            }
            let updated = ProducerStateEntry::with_batch(current, epoch, batch);
            updates.insert(pid, updated);
            new_batches += 1;
        }
        if let Some(first) = duplicates.first() {
            if new_batches > 0 {
                return Err(AppendError::OutOfOrderSequence(format!(
                    "request mixes {} duplicate batches with {new_batches} new ones",
                    duplicates.len()
                )));
            }
            let last = duplicates.last().expect("non-empty");
            return Ok(ProducerAppend::Duplicate {
                first_offset: first.first_offset,
                last_offset: last.last_offset,
                max_timestamp: duplicates.iter().map(|d| d.max_timestamp).max().unwrap(),
            });
        }
        Ok(ProducerAppend::New(ProducerAppendInfo {
            base_offset,
            next_offset: next,
            updates,
        }))
    }

    /// Installs a prepared request after its write at `base_offset` succeeded; `log_end` is the
    /// log end after the write. Expires idle entries (relative to `now_ms`) when a new producer
    /// arrives, and evicts the least recently active one when full.
    pub fn commit(&mut self, append: ProducerAppendInfo, log_end: i64, now_ms: i64) {
        assert_eq!(
            append.next_offset, log_end,
            "the prepared offsets must be the written ones"
        );
        assert!(append.base_offset <= log_end);
        for (pid, entry) in append.updates {
            let last = entry.batches.back().expect("entries are never empty");
            assert!(last.last_offset < log_end && last.first_offset >= append.base_offset);
            if !self.producers.contains_key(&pid) {
                self.remove_expired(now_ms);
            }
            self.put(pid, entry);
        }
        self.check_invariants();
    }

    /// Rebuild step: applies a stored batch's header without checks (the log is the truth).
    pub fn replay_batch(&mut self, header: &RecordBatchHeader) {
        let pid = header.producer_id();
        if pid == NO_PRODUCER_ID || header.base_sequence() < 0 || header.last_offset_delta() < 0 {
            return; // not idempotent, or nothing we could have accepted
        }
        let batch = BatchMetadata {
            first_seq: header.base_sequence(),
            last_seq: increment_sequence(header.base_sequence(), header.last_offset_delta()),
            first_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
        };
        let entry = ProducerStateEntry::with_batch(
            self.producers.get(&pid),
            header.producer_epoch(),
            batch,
        );
        self.put(pid, entry);
    }

    /// Removes entries idle for longer than the expiration (last timestamp older than
    /// `now_ms - producer_id_expiration_ms`). Cost: O(removed · log n).
    pub fn remove_expired(&mut self, now_ms: i64) -> usize {
        let cutoff = now_ms.saturating_sub(self.producer_id_expiration_ms);
        let mut removed = 0;
        while let Some(&(ts, pid)) = self.by_timestamp.first() {
            if ts >= cutoff {
                break;
            }
            self.remove(pid);
            removed += 1;
        }
        removed
    }

    fn remove(&mut self, pid: i64) {
        let entry = self.producers.remove(&pid).expect("indexed entry exists");
        let was_indexed = self.by_timestamp.remove(&(entry.last_timestamp_ms, pid));
        assert!(
            was_indexed,
            "producer {pid} missing from the timestamp index"
        );
    }

    /// Inserts or replaces an entry, evicting the least recently active other one if full.
    fn put(&mut self, pid: i64, entry: ProducerStateEntry) {
        entry.check();
        if let Some(old) = self.producers.get(&pid) {
            let was_indexed = self.by_timestamp.remove(&(old.last_timestamp_ms, pid));
            assert!(
                was_indexed,
                "producer {pid} missing from the timestamp index"
            );
        } else if self.producers.len() >= self.producers_max {
            let &(_, oldest) = self.by_timestamp.first().expect("full means non-empty");
            self.remove(oldest);
        }
        self.by_timestamp.insert((entry.last_timestamp_ms, pid));
        self.producers.insert(pid, entry);
        assert!(self.producers.len() <= self.producers_max);
        assert_eq!(self.producers.len(), self.by_timestamp.len());
    }

    /// Full structural check (O(n)); cheap parts always, the walk in debug builds.
    pub fn check_invariants(&self) {
        assert!(self.producers.len() <= self.producers_max);
        assert_eq!(self.producers.len(), self.by_timestamp.len());
        if cfg!(debug_assertions) {
            for (pid, entry) in &self.producers {
                assert_ne!(*pid, NO_PRODUCER_ID);
                entry.check();
                assert!(self.by_timestamp.contains(&(entry.last_timestamp_ms, *pid)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: i64, epoch: i16, seq: i32, records: i32, ts: i64) -> BatchInfo {
        BatchInfo {
            pos: 0,
            size: 100,
            attributes: 0,
            last_offset_delta: records - 1,
            record_count: records,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    /// Prepares and commits one single-batch request at `log_end`; returns the new log end.
    fn append(m: &mut ProducerStateManager, log_end: i64, b: BatchInfo, now_ms: i64) -> i64 {
        let end = log_end + b.record_count as i64;
        match m.prepare_append(&[b], log_end).unwrap() {
            ProducerAppend::New(p) => m.commit(p, end, now_ms),
            d => panic!("unexpected {d:?}"),
        }
        end
    }

    #[test]
    fn increment_sequence_wraps_to_zero() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn evicts_least_recently_active_when_full() {
        let mut m = ProducerStateManager::new(3, PRODUCER_ID_EXPIRATION_MS);
        let mut end = 0;
        // Producer 1 is the most recently active by timestamp; ties break by producer id.
        end = append(&mut m, end, info(1, 0, 0, 1, 500), 0);
        end = append(&mut m, end, info(3, 0, 0, 1, 100), 0);
        end = append(&mut m, end, info(2, 0, 0, 1, 100), 0);
        end = append(&mut m, end, info(4, 0, 0, 1, 50), 0);
        assert_eq!(m.len(), 3);
        assert!(m.entry(2).is_none(), "the oldest (ties by id) goes first");
        assert!(
            m.entry(4).is_some(),
            "the new producer is never its own victim"
        );
        append(&mut m, end, info(5, 0, 0, 1, 50), 0);
        let kept: Vec<i64> = m.producers.keys().copied().collect();
        assert_eq!(kept, vec![1, 3, 5]);
        m.check_invariants();
    }

    #[test]
    fn expires_idle_producers_when_a_new_one_arrives() {
        let mut m = ProducerStateManager::new(100, 1000);
        let mut end = append(&mut m, 0, info(1, 0, 0, 1, 10_000), 10_000);
        end = append(&mut m, end, info(2, 0, 0, 1, 10_500), 10_500);
        // Existing producers do not trigger expiration.
        end = append(&mut m, end, info(2, 0, 1, 1, 10_500), 11_200);
        assert_eq!(m.len(), 2);
        // A new producer does: 1 is idle for 1200 > 1000 ms, 2 for 700.
        append(&mut m, end, info(3, 0, 0, 1, 11_200), 11_200);
        assert!(m.entry(1).is_none());
        assert!(m.entry(2).is_some() && m.entry(3).is_some());
        assert_eq!(m.remove_expired(20_000), 2);
        assert!(m.is_empty());
    }

    #[test]
    fn mixed_duplicate_and_new_is_rejected() {
        let mut m = ProducerStateManager::new(10, PRODUCER_ID_EXPIRATION_MS);
        let end = append(&mut m, 0, info(7, 0, 0, 2, 1), 1);
        let req = [info(7, 0, 0, 2, 1), info(7, 0, 2, 1, 1)];
        assert!(matches!(
            m.prepare_append(&req, end),
            Err(AppendError::OutOfOrderSequence(_))
        ));
        let req = [info(7, 0, 0, 2, 1), info(-1, -1, -1, 1, 1)];
        assert!(matches!(
            m.prepare_append(&req, end),
            Err(AppendError::OutOfOrderSequence(_))
        ));
    }

    #[test]
    fn negative_sequence_is_invalid() {
        let m = ProducerStateManager::new(10, PRODUCER_ID_EXPIRATION_MS);
        assert!(matches!(
            m.prepare_append(&[info(7, 0, -1, 1, 1)], 0),
            Err(AppendError::InvalidRecord(_))
        ));
        // Non-idempotent batches carry -1 and are not checked.
        assert!(m.prepare_append(&[info(-1, -1, -1, 1, 1)], 0).is_ok());
    }
}
