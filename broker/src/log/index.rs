//! Sparse per-segment indexes: `OffsetIndex` (relative offset → file position) and `TimeIndex`
//! (max timestamp so far → relative offset of the first batch reaching it), held in memory as
//! sorted Vecs and persisted as fixed-width big-endian files (`.index`: 8-byte entries,
//! `.timeindex`: 12-byte entries). Persisted files are only trusted after a clean shutdown and
//! are validated on load (monotonic, within the segment); anything odd means "rebuild".

/// Cap on entries per index (Kafka's default segment.index.bytes 10 MiB / 8 bytes). The
/// segment rolls before an index would exceed it.
pub const INDEX_ENTRIES_MAX: usize = 10 * 1024 * 1024 / OFFSET_ENTRY_BYTES;
pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

/// Relative offset → position of the batch whose base offset it is. Both strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= INDEX_ENTRIES_MAX
    }

    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some((o, p)) = self.last() {
            assert!(
                relative_offset > o && position > p,
                "offset index must be strictly increasing: ({o},{p}) then ({relative_offset},{position})"
            );
        }
        assert!(!self.is_full(), "offset index full");
        self.entries.push((relative_offset, position));
    }

    /// The entry with the largest relative offset <= `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|(o, _)| *o <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for (o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parses and validates a persisted index for a segment of `segment_bytes`.
    pub fn decode(bytes: &[u8], segment_bytes: u64) -> Result<Self, String> {
        if bytes.len() % OFFSET_ENTRY_BYTES != 0 {
            return Err(format!(
                "offset index length {} not a multiple of 8",
                bytes.len()
            ));
        }
        if bytes.len() / OFFSET_ENTRY_BYTES > INDEX_ENTRIES_MAX {
            return Err("offset index too long".into());
        }
        let mut idx = OffsetIndex::new();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let o = u32::from_be_bytes(chunk[0..4].try_into().unwrap());
            let p = u32::from_be_bytes(chunk[4..8].try_into().unwrap());
            if let Some((lo, lp)) = idx.last() {
                if o <= lo || p <= lp {
                    return Err(format!("offset index not monotonic at ({o},{p})"));
                }
            }
            if p as u64 >= segment_bytes {
                return Err(format!(
                    "offset index position {p} beyond segment size {segment_bytes}"
                ));
            }
            idx.entries.push((o, p));
        }
        match idx.entries.first() {
            None if segment_bytes > 0 => Err("empty offset index for a non-empty segment".into()),
            Some(&(o, p)) if (o, p) != (0, 0) => {
                Err(format!("first index entry ({o},{p}) is not (0,0)"))
            }
            _ => Ok(idx),
        }
    }
}

/// Running max timestamp → relative offset of the first batch with that max timestamp.
/// Timestamps strictly increasing, offsets strictly increasing. An entry (T, O) is written when
/// an offset-index entry is, if the running max grew; so every batch before O has a max
/// timestamp < T.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Appends if `timestamp` is above the last entry's; returns whether it did.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) -> bool {
        if let Some((t, o)) = self.last() {
            if timestamp <= t {
                return false;
            }
            assert!(relative_offset > o, "time index offsets must increase");
        }
        if self.entries.len() >= INDEX_ENTRIES_MAX {
            return false;
        }
        self.entries.push((timestamp, relative_offset));
        true
    }

    /// The entry with the largest timestamp strictly below `timestamp`: every batch before its
    /// offset has a max timestamp below `timestamp`, so a search may start there.
    pub fn last_below(&self, timestamp: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|(t, _)| *t < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for (t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Parses and validates; `next_relative_offset` bounds the offsets.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() % TIME_ENTRY_BYTES != 0 {
            return Err(format!(
                "time index length {} not a multiple of 12",
                bytes.len()
            ));
        }
        if bytes.len() / TIME_ENTRY_BYTES > INDEX_ENTRIES_MAX {
            return Err("time index too long".into());
        }
        let mut idx = TimeIndex::new();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let t = i64::from_be_bytes(chunk[0..8].try_into().unwrap());
            let o = u32::from_be_bytes(chunk[8..12].try_into().unwrap());
            if let Some((lt, lo)) = idx.last() {
                if t <= lt || o <= lo {
                    return Err(format!("time index not monotonic at ({t},{o})"));
                }
            }
            idx.entries.push((t, o));
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_roundtrip() {
        let mut idx = OffsetIndex::new();
        assert_eq!(idx.lookup(5), None);
        idx.append(0, 0);
        idx.append(10, 4100);
        idx.append(25, 8300);
        assert_eq!(idx.lookup(0), Some((0, 0)));
        assert_eq!(idx.lookup(9), Some((0, 0)));
        assert_eq!(idx.lookup(10), Some((10, 4100)));
        assert_eq!(idx.lookup(24), Some((10, 4100)));
        assert_eq!(idx.lookup(1000), Some((25, 8300)));
        let enc = idx.encode();
        assert_eq!(OffsetIndex::decode(&enc, 9000).unwrap(), idx);
        assert!(OffsetIndex::decode(&enc, 8300).is_err()); // position beyond segment
        assert!(OffsetIndex::decode(&enc[..7], 9000).is_err());
        let mut bad = enc.clone();
        bad[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert!(OffsetIndex::decode(&bad, 9000).is_err());
        assert!(OffsetIndex::decode(&[], 100).is_err());
        assert!(OffsetIndex::decode(&[], 0).unwrap().is_empty());
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn offset_index_rejects_non_monotonic() {
        let mut idx = OffsetIndex::new();
        idx.append(5, 100);
        idx.append(5, 200);
    }

    #[test]
    fn time_index() {
        let mut t = TimeIndex::new();
        assert!(t.maybe_append(100, 0));
        assert!(!t.maybe_append(100, 3));
        assert!(!t.maybe_append(50, 4));
        assert!(t.maybe_append(200, 7));
        assert_eq!(t.last_below(100), None);
        assert_eq!(t.last_below(101), Some((100, 0)));
        assert_eq!(t.last_below(200), Some((100, 0)));
        assert_eq!(t.last_below(i64::MAX), Some((200, 7)));
        let enc = t.encode();
        assert_eq!(TimeIndex::decode(&enc).unwrap(), t);
        let mut bad = enc.clone();
        bad[12..20].copy_from_slice(&1i64.to_be_bytes());
        assert!(TimeIndex::decode(&bad).is_err());
    }
}
