//! The leader epoch cache of one partition (Kafka's `LeaderEpochFileCache`): for every leader
//! epoch with data in the log, the first offset written in it. Followers use it to find where
//! their log diverges from the leader's (OffsetsForLeaderEpoch). It has no file of its own: the
//! `Log` rebuilds it from the stored batch headers at open.

use std::collections::BTreeMap;

/// Kafka's UNDEFINED_EPOCH.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's UNDEFINED_EPOCH_OFFSET.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// Ordered `epoch -> start offset`. Epochs and start offsets both strictly increase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    epochs: BTreeMap<i32, i64>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        LeaderEpochCache::default()
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// (epoch, start offset) of the latest epoch.
    pub fn latest(&self) -> Option<(i32, i64)> {
        self.epochs.last_key_value().map(|(e, s)| (*e, *s))
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|(e, _)| e)
    }

    /// Every (epoch, start offset), oldest first.
    pub fn entries(&self) -> Vec<(i32, i64)> {
        self.epochs.iter().map(|(e, s)| (*e, *s)).collect()
    }

    /// Records that `epoch` starts at `start_offset`. Negative epochs (no leader epoch) and
    /// epochs not greater than the latest are ignored (false). A latest entry starting at
    /// `start_offset` already holds no data, so it is replaced (as Kafka does).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|l| epoch <= l) {
            return false;
        }
        assert!(start_offset >= 0, "negative epoch start {start_offset}");
        if let Some((latest, start)) = self.latest() {
            assert!(
                start_offset >= start,
                "epoch {epoch} at {start_offset} before epoch {latest} at {start}"
            );
            if start == start_offset {
                self.epochs.remove(&latest);
            }
        }
        self.epochs.insert(epoch, start_offset);
        true
    }

    /// Forgets the epochs starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.epochs.retain(|_, start| *start < end_offset);
    }

    /// The log start moved to `start_offset`: drops the epochs that start at or below it
    /// except the last of them, which now starts at `start_offset` (Kafka's
    /// `truncateFromStart`).
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let covering = self
            .epochs
            .iter()
            .take_while(|(_, s)| **s <= start_offset)
            .last()
            .map(|(e, _)| *e);
        if let Some(epoch) = covering {
            self.epochs.retain(|e, _| *e > epoch);
            self.epochs.insert(epoch, start_offset);
        }
    }

    pub fn clear(&mut self) {
        self.epochs.clear();
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: (epoch, end offset) answering a follower
    /// whose latest epoch is `requested`; the end offset is exclusive. See
    /// `Log::end_offset_for_epoch` for the rules.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let (latest, _) = self.latest()?;
        if requested < 0 {
            return Some((UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        }
        if requested == latest {
            return Some((latest, log_end_offset));
        }
        let Some((_, higher_start)) = self.epochs.range(requested + 1..).next() else {
            // Greater than every known epoch.
            return Some((UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        };
        match self.epochs.range(..=requested).next_back() {
            Some((floor, _)) => Some((*floor, *higher_start)),
            // Below every known epoch: its data is gone; replicate from the first known one.
            None => Some((requested, *higher_start)),
        }
    }

    /// Epochs non-negative and increasing, start offsets increasing within
    /// [`log_start_offset`, `log_end_offset`].
    pub fn check_invariants(&self, log_start_offset: i64, log_end_offset: i64) {
        let mut previous: Option<(i32, i64)> = None;
        for (epoch, start) in &self.epochs {
            assert!(*epoch >= 0, "negative epoch {epoch} cached");
            assert!(
                *start >= log_start_offset && *start <= log_end_offset,
                "epoch {epoch} starts at {start} outside [{log_start_offset}, {log_end_offset}]"
            );
            if let Some((e, s)) = previous {
                assert!(e < *epoch && s < *start, "epoch cache not increasing");
            }
            previous = Some((*epoch, *start));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (e, s) in entries {
            assert!(c.assign(*e, *s));
        }
        c
    }

    #[test]
    fn assign_ignores_old_and_negative_epochs_and_replaces_empty_ones() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(!c.assign(3, 12));
        assert!(!c.assign(2, 12));
        assert!(!c.assign(-1, 12));
        assert!(c.assign(4, 10)); // epoch 3 held nothing
        assert_eq!(c.entries(), vec![(1, 0), (4, 10)]);
    }

    #[test]
    fn truncation_from_both_ends() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        c.truncate_from_end(20);
        assert_eq!(c.entries(), vec![(1, 0), (3, 10)]);
        c.truncate_from_start(5);
        assert_eq!(c.entries(), vec![(1, 5), (3, 10)]);
        c.truncate_from_start(10);
        assert_eq!(c.entries(), vec![(3, 10)]);
        c.truncate_from_start(15);
        assert_eq!(c.entries(), vec![(3, 15)]);
        c.truncate_from_end(15);
        assert!(c.is_empty());
    }

    #[test]
    fn end_offsets() {
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, 7), None);
        let c = cache(&[(2, 5), (4, 10), (7, 20)]);
        assert_eq!(c.end_offset_for(7, 30), Some((7, 30)));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 20)));
        assert_eq!(c.end_offset_for(5, 30), Some((4, 20)));
        assert_eq!(c.end_offset_for(2, 30), Some((2, 10)));
        assert_eq!(c.end_offset_for(1, 30), Some((1, 5)));
        assert_eq!(c.end_offset_for(8, 30), Some((-1, -1)));
        assert_eq!(c.end_offset_for(-1, 30), Some((-1, -1)));
    }
}
