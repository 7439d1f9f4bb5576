//! RaftLog: the core's in-memory view of the replicated metadata log — the latest snapshot id
//! (everything below the log start offset) followed by contiguous entries whose epochs never
//! decrease. It answers Kafka's epoch questions (end offset for an epoch, diverging epochs) and
//! checks its own shape on every change. The bytes on disk are the caller's; this view is what
//! the core believes they are.

use std::collections::VecDeque;

use super::types::{Entry, SnapshotId};

#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    /// Covers every offset below `snapshot.end_offset` (the log start offset); `(0, 0)` when
    /// there is no snapshot.
    snapshot: SnapshotId,
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log recovered from storage; panics if it is malformed (contiguity, epoch order).
    pub fn new(snapshot: SnapshotId, entries: Vec<Entry>) -> Self {
        let log = RaftLog {
            snapshot,
            entries: entries.into(),
        };
        log.check();
        log
    }

    pub fn start_offset(&self) -> i64 {
        self.snapshot.end_offset
    }

    pub fn end_offset(&self) -> i64 {
        self.snapshot.end_offset + self.entries.len() as i64
    }

    pub fn snapshot_id(&self) -> SnapshotId {
        self.snapshot
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Epoch of the last entry (or of the snapshot).
    pub fn last_epoch(&self) -> i32 {
        self.entries.back().map_or(self.snapshot.epoch, |e| e.epoch)
    }

    pub fn entry(&self, offset: i64) -> Option<&Entry> {
        if offset < self.start_offset() || offset >= self.end_offset() {
            return None;
        }
        self.entries.get((offset - self.start_offset()) as usize)
    }

    /// Epoch of the entry at `offset`, including the snapshot's last entry at `start - 1`.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        if offset == self.start_offset() - 1 {
            return Some(self.snapshot.epoch);
        }
        self.entry(offset).map(|e| e.epoch)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Kafka's `endOffsetForEpoch`: the largest epoch `<= epoch` in the log and the offset just
    /// past its last entry. `None` when every known epoch is larger (or the answer is hidden in
    /// the snapshot).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        for e in self.entries.iter().rev() {
            if e.epoch <= epoch {
                return Some((e.epoch, e.offset + 1));
            }
        }
        if self.snapshot.epoch <= epoch {
            Some((self.snapshot.epoch, self.snapshot.end_offset))
        } else {
            None
        }
    }

    /// Up to `max_entries` entries from `offset`, at most `max_bytes` of payload (but at least one
    /// entry if any).
    pub fn read(&self, offset: i64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut o = offset.max(self.start_offset());
        assert_eq!(o, offset, "read below the log start");
        while let Some(e) = self.entry(o) {
            if out.len() >= max_entries || (!out.is_empty() && bytes + e.payload.len() > max_bytes)
            {
                break;
            }
            bytes += e.payload.len();
            out.push(e.clone());
            o += 1;
        }
        out
    }

    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.offset, self.end_offset(), "append not at the log end");
        assert!(
            entry.epoch >= self.last_epoch(),
            "epoch {} after {}",
            entry.epoch,
            self.last_epoch()
        );
        self.entries.push_back(entry);
    }

    /// Removes every entry at or above `end_offset`.
    pub fn truncate(&mut self, end_offset: i64) {
        assert!(
            end_offset >= self.start_offset(),
            "truncate to {end_offset} below the log start {}",
            self.start_offset()
        );
        let keep = (end_offset - self.start_offset()) as usize;
        self.entries.truncate(keep);
        self.check();
    }

    /// Drops entries below `id.end_offset`, which a snapshot now covers. The entry at
    /// `end_offset - 1` must have the snapshot's epoch.
    pub fn compact(&mut self, id: SnapshotId) {
        assert!(id.end_offset > self.start_offset() && id.end_offset <= self.end_offset());
        assert_eq!(
            self.epoch_at(id.end_offset - 1),
            Some(id.epoch),
            "snapshot epoch"
        );
        let drop = (id.end_offset - self.start_offset()) as usize;
        self.entries.drain(..drop);
        self.snapshot = id;
        self.check();
    }

    /// Replaces the whole log with a snapshot.
    pub fn reset(&mut self, id: SnapshotId) {
        self.entries.clear();
        self.snapshot = id;
    }

    pub fn check(&self) {
        let mut epoch = self.snapshot.epoch;
        for (e, expect) in self.entries.iter().zip(self.start_offset()..) {
            assert_eq!(e.offset, expect, "log entries not contiguous");
            assert!(
                e.epoch >= epoch,
                "log epochs decrease at offset {}",
                e.offset
            );
            epoch = e.epoch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn log(epochs: &[i32]) -> RaftLog {
        let entries = epochs
            .iter()
            .enumerate()
            .map(|(i, &e)| Entry {
                offset: i as i64,
                epoch: e,
                payload: Bytes::from_static(b"x"),
            })
            .collect();
        RaftLog::new(SnapshotId::default(), entries)
    }

    #[test]
    fn raft_log_end_offset_for_epoch() {
        let l = log(&[1, 1, 2, 4, 4]);
        assert_eq!(l.end_offset_for_epoch(1), Some((1, 2)));
        assert_eq!(l.end_offset_for_epoch(3), Some((2, 3)));
        assert_eq!(l.end_offset_for_epoch(9), Some((4, 5)));
        assert_eq!(l.end_offset_for_epoch(0), Some((0, 0)));
    }

    #[test]
    fn raft_log_compact_and_truncate() {
        let mut l = log(&[1, 1, 2, 4, 4]);
        l.compact(SnapshotId {
            end_offset: 3,
            epoch: 2,
        });
        assert_eq!(l.start_offset(), 3);
        assert_eq!(l.epoch_at(2), Some(2));
        assert_eq!(l.end_offset_for_epoch(1), None);
        assert_eq!(l.end_offset_for_epoch(3), Some((2, 3)));
        l.truncate(4);
        assert_eq!(l.end_offset(), 4);
        assert_eq!(l.read(3, 10, 10).len(), 1);
    }
}
