//! `LogSegment`: one `<base offset>.log` file of consecutive stored batches plus its in-memory
//! `OffsetIndex`/`TimeIndex`, next offset, size, max timestamp and creation time. Knows how to
//! replay (validate and index) its batches from any indexed position, which serves appends
//! bookkeeping, clean loads, unclean recovery and truncation alike.

use std::io;
use std::path::{Path, PathBuf};

use super::batch::{RecordBatchHeader, BATCH_LENGTH_MIN, HEADER_BYTES, MAGIC_V2};
use super::index::{OffsetIndex, TimeIndex};
use super::stored::RecordsPart;
use crate::storage::{Storage, StorageFile};

/// Kafka's "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;
pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Positions are u32 in the offset index, so a segment never reaches 4 GiB.
pub const SEGMENT_POSITION_MAX: u64 = u32::MAX as u64;

/// `00000000000000000042` + suffix.
pub fn segment_file_name(base_offset: i64, suffix: &str) -> String {
    assert!(base_offset >= 0, "negative base offset {base_offset}");
    format!("{base_offset:020}{suffix}")
}

/// Base offset of a `<20 digits>.log` name.
pub fn parse_segment_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Header facts of one stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    pub pos: u64,
    pub size: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Where `replay` stopped and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayEnd {
    /// Reached the requested end cleanly.
    Complete,
    /// The batch at `pos` is torn or invalid (reason given).
    Invalid { pos: u64, reason: String },
}

pub struct LogSegment<F: StorageFile> {
    base_offset: i64,
    next_offset: i64,
    size_bytes: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    created_ms: i64,
    file: F,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    /// In-memory indexes differ from the persisted `.index`/`.timeindex` files.
    indexes_dirty: bool,
}

impl<F: StorageFile> LogSegment<F> {
    /// An empty segment over an opened (possibly non-empty, not yet replayed) file.
    pub fn new(file: F, base_offset: i64, created_ms: i64) -> Self {
        assert!(base_offset >= 0);
        LogSegment {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            created_ms,
            file,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            bytes_since_index_entry: 0,
            indexes_dirty: true,
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }
    pub fn file(&self) -> &F {
        &self.file
    }
    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }
    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }
    pub fn indexes_dirty(&self) -> bool {
        self.indexes_dirty
    }

    pub fn log_path(&self, dir: &Path) -> PathBuf {
        dir.join(segment_file_name(self.base_offset, LOG_SUFFIX))
    }

    /// Whether `count` more offsets fit the u32 relative offsets of the index.
    pub fn offsets_fit(&self, count: i64) -> bool {
        self.next_offset + count - self.base_offset <= u32::MAX as i64
    }

    pub fn index_full(&self) -> bool {
        self.offset_index.is_full()
    }

    /// Bookkeeping for one batch just stored at `pos` (== current size).
    pub fn track_batch(&mut self, b: StoredBatch, index_interval_bytes: u32) {
        if let Err(e) = self.try_track_batch(b, index_interval_bytes) {
            panic!("tracking an appended batch: {e}");
        }
    }

    /// [`Self::track_batch`] for a batch read back from the file. Err, with nothing changed,
    /// when the batch contradicts the time index loaded from disk: its max timestamp is
    /// above the last entry's, which points at or past this batch. The index files are
    /// checked on their own when loaded; only the data can show this, so replay reports it
    /// and the segment's indexes are rebuilt from the data.
    fn try_track_batch(&mut self, b: StoredBatch, index_interval_bytes: u32) -> Result<(), String> {
        assert_eq!(b.pos, self.size_bytes, "batches are contiguous");
        assert_eq!(b.base_offset, self.next_offset, "offsets are consecutive");
        assert!(b.last_offset >= b.base_offset);
        assert!(
            b.pos + b.size <= SEGMENT_POSITION_MAX,
            "segment position overflow"
        );
        let index_now = (self.offset_index.is_empty()
            || self.bytes_since_index_entry >= index_interval_bytes as u64)
            && !self.offset_index.is_full();
        let rel = (b.base_offset - self.base_offset) as u32;
        // The time index entry this batch would add: the running max and where it is.
        let (max_after, max_rel_after) = if b.max_timestamp > self.max_timestamp {
            (b.max_timestamp, rel)
        } else {
            let max_rel = (self.offset_of_max_timestamp - self.base_offset) as u32;
            (self.max_timestamp, max_rel)
        };
        if let Some((t, o)) = self.time_index.last() {
            if index_now && max_after != NO_TIMESTAMP && max_after > t && max_rel_after <= o {
                return Err(format!(
                    "time index entry ({t}, {o}) is not before offset {} with timestamp \
                     {max_after}",
                    self.base_offset + i64::from(max_rel_after)
                ));
            }
        }
        if index_now {
            self.offset_index.append(rel, b.pos as u32);
            self.bytes_since_index_entry = 0;
        }
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        if index_now && self.max_timestamp != NO_TIMESTAMP {
            let rel = (self.offset_of_max_timestamp - self.base_offset) as u32;
            self.time_index.maybe_append(self.max_timestamp, rel);
        }
        self.bytes_since_index_entry = self.bytes_since_index_entry.saturating_add(b.size);
        self.size_bytes = b.pos + b.size;
        self.next_offset = b.last_offset + 1;
        self.indexes_dirty = true;
        Ok(())
    }

    /// Reads and structurally checks the header at `pos` (the file must hold the whole batch).
    pub fn read_batch_header(&self, pos: u64) -> Result<StoredBatch, String> {
        let len = self.file.len();
        if len - pos < HEADER_BYTES as u64 {
            return Err(format!("torn header: {} bytes left", len - pos));
        }
        let mut hdr = [0u8; HEADER_BYTES];
        self.file
            .read_at(pos, &mut hdr)
            .map_err(|e| format!("read failed: {e}"))?;
        check_header(&hdr, pos, len)
    }
}

/// Structural checks of the header bytes `hdr` of a batch at `pos` in a file of `len` bytes.
fn check_header(hdr: &[u8], pos: u64, len: u64) -> Result<StoredBatch, String> {
    let h = RecordBatchHeader::parse(hdr).expect("header sized");
    if h.batch_length() < BATCH_LENGTH_MIN {
        return Err(format!("batchLength {} too small", h.batch_length()));
    }
    let size = h.total_size() as u64;
    if size > len - pos {
        return Err(format!("torn batch: {size} bytes, {} left", len - pos));
    }
    if h.magic() != MAGIC_V2 {
        return Err(format!("magic {}", h.magic()));
    }
    if h.last_offset_delta() < 0 || h.record_count() as i64 != h.last_offset_delta() as i64 + 1 {
        return Err(format!(
            "lastOffsetDelta {} / recordCount {}",
            h.last_offset_delta(),
            h.record_count()
        ));
    }
    Ok(StoredBatch {
        pos,
        size,
        base_offset: h.base_offset(),
        last_offset: h.last_offset(),
        max_timestamp: h.max_timestamp(),
    })
}

/// Most bytes read at once when walking batch headers: a walk over small batches costs one
/// read per this many bytes instead of one per batch; a walk over large ones reads this much
/// extra per batch (under 1% for 1 MB batches).
pub const HEADER_READ_AHEAD_BYTES: usize = 8 * 1024;

/// Reads the headers of one segment's batches in increasing positions through a read-ahead
/// buffer.
pub struct HeaderCursor<'a, F: StorageFile> {
    segment: &'a LogSegment<F>,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl<F: StorageFile> HeaderCursor<'_, F> {
    /// The checked header of the batch at `pos`, which must be inside the tracked batches.
    pub fn header(&mut self, pos: u64) -> io::Result<StoredBatch> {
        let seg = self.segment;
        assert!(pos < seg.size_bytes);
        let have = pos >= self.buf_pos
            && pos + HEADER_BYTES as u64 <= self.buf_pos + self.buf.len() as u64;
        if !have {
            let want = (seg.size_bytes - pos).min(HEADER_READ_AHEAD_BYTES as u64) as usize;
            if want < HEADER_BYTES {
                return Err(seg.invalid(format!("torn header: {want} bytes left")));
            }
            self.buf.resize(want, 0);
            seg.file.read_at(pos, &mut self.buf)?;
            self.buf_pos = pos;
        }
        let at = (pos - self.buf_pos) as usize;
        let b = check_header(&self.buf[at..at + HEADER_BYTES], pos, seg.file.len())
            .map_err(|e| seg.invalid(e))?;
        debug_assert_eq!(b.pos, pos);
        Ok(b)
    }
}

impl<F: StorageFile> LogSegment<F> {
    /// A cursor for walking this segment's headers forwards.
    pub fn header_cursor(&self) -> HeaderCursor<'_, F> {
        HeaderCursor {
            segment: self,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    fn invalid(&self, e: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("segment {}: {e}", self.base_offset),
        )
    }

    /// Walks batches from `from_pos` (== current size) up to `end_pos`, checking structure,
    /// offset continuity and (if `verify_crc`) CRCs, and tracks each valid one. Stops at the
    /// first bad batch. I/O errors other than short reads are returned.
    pub fn replay(
        &mut self,
        end_pos: u64,
        verify_crc: bool,
        index_interval_bytes: u32,
    ) -> io::Result<ReplayEnd> {
        assert!(end_pos <= self.file.len());
        let mut buf = Vec::new();
        while self.size_bytes < end_pos {
            let pos = self.size_bytes;
            let b = match self.read_batch_header(pos) {
                Ok(b) if b.pos + b.size > end_pos => {
                    return Ok(ReplayEnd::Invalid {
                        pos,
                        reason: "batch crosses the end".into(),
                    })
                }
                Ok(b) => b,
                Err(reason) if reason.starts_with("read failed") => {
                    return Err(io::Error::other(reason))
                }
                Err(reason) => return Ok(ReplayEnd::Invalid { pos, reason }),
            };
            if b.base_offset != self.next_offset {
                return Ok(ReplayEnd::Invalid {
                    pos,
                    reason: format!(
                        "base offset {} expected {}",
                        b.base_offset, self.next_offset
                    ),
                });
            }
            if !self.offsets_fit(b.last_offset - b.base_offset + 1)
                || b.pos + b.size > SEGMENT_POSITION_MAX
            {
                return Ok(ReplayEnd::Invalid {
                    pos,
                    reason: "segment limits exceeded".into(),
                });
            }
            if verify_crc {
                buf.resize(b.size as usize, 0);
                self.file.read_at(pos, &mut buf)?;
                let skip = crate::planted::enabled(crate::planted::PlantedBug::RecoverySkipsCrc);
                if !super::batch::crc_ok(&buf) && !skip {
                    return Ok(ReplayEnd::Invalid {
                        pos,
                        reason: "CRC mismatch".into(),
                    });
                }
            }
            if let Err(reason) = self.try_track_batch(b, index_interval_bytes) {
                return Ok(ReplayEnd::Invalid { pos, reason });
            }
        }
        Ok(ReplayEnd::Complete)
    }

    /// Rewinds the bookkeeping to the last offset-index entry, so `replay` can redo the tail.
    /// Requires indexes valid for the file's prefix (loaded, or cut by `truncate_indexes`).
    fn rewind_to_last_index_entry(&mut self) {
        match self.offset_index.last() {
            None => {
                self.next_offset = self.base_offset;
                self.size_bytes = 0;
                self.max_timestamp = NO_TIMESTAMP;
                self.offset_of_max_timestamp = self.base_offset;
                self.bytes_since_index_entry = 0;
            }
            Some((rel, pos)) => {
                // Pop it: replay re-adds it (bytes_since forces an entry at that batch).
                let mut entries = self.offset_index.entries().to_vec();
                entries.pop();
                let mut idx = OffsetIndex::new();
                for (o, p) in entries {
                    idx.append(o, p);
                }
                self.offset_index = idx;
                self.next_offset = self.base_offset + rel as i64;
                self.size_bytes = pos as u64;
                match self.time_index.last() {
                    Some((t, o)) => {
                        self.max_timestamp = t;
                        self.offset_of_max_timestamp = self.base_offset + o as i64;
                    }
                    None => {
                        self.max_timestamp = NO_TIMESTAMP;
                        self.offset_of_max_timestamp = self.base_offset;
                    }
                }
                self.bytes_since_index_entry = u64::MAX;
            }
        }
    }

    /// Installs persisted indexes (validated) and replays the tail header-only. On any
    /// inconsistency returns Err(reason) with the segment reset to empty bookkeeping.
    pub fn load_with_indexes(
        &mut self,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        index_interval_bytes: u32,
    ) -> io::Result<Result<(), String>> {
        let len = self.file.len();
        if let Some((_, time_rel_last)) = time_index.last() {
            let offset_rel_last = offset_index.last().map_or(0, |(o, _)| o);
            if time_rel_last > offset_rel_last {
                return Ok(Err("time index points past the offset index".into()));
            }
        }
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.rewind_to_last_index_entry();
        let end = self.replay(len, false, index_interval_bytes)?;
        self.indexes_dirty = false;
        match end {
            ReplayEnd::Complete => Ok(Ok(())),
            ReplayEnd::Invalid { pos, reason } => {
                self.reset();
                Ok(Err(format!("at {pos}: {reason}")))
            }
        }
    }

    /// Forgets all bookkeeping (not the file).
    pub fn reset(&mut self) {
        self.offset_index = OffsetIndex::new();
        self.time_index = TimeIndex::new();
        self.rewind_to_last_index_entry();
        self.indexes_dirty = true;
    }

    /// Finds the stored batch containing `offset` (base <= offset <= last).
    pub fn find_batch(&self, offset: i64) -> io::Result<Option<StoredBatch>> {
        if offset < self.base_offset || offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset) as u32;
        let mut pos = self.offset_index.lookup(rel).map_or(0, |(_, p)| p as u64);
        let mut cursor = self.header_cursor();
        while pos < self.size_bytes {
            let b = cursor.header(pos)?;
            if b.last_offset >= offset {
                assert!(
                    b.base_offset <= offset,
                    "offset {offset} missing from segment"
                );
                return Ok(Some(b));
            }
            pos += b.size;
        }
        panic!(
            "offset {offset} below next offset {} not found",
            self.next_offset
        );
    }

    /// Calls `f` with the header of every tracked batch, in offset order: one header-sized
    /// read per batch, so the cost follows the number of batches, not their bytes.
    pub fn for_each_header(&self, mut f: impl FnMut(&RecordBatchHeader)) -> io::Result<()> {
        let mut hdr = [0u8; HEADER_BYTES];
        let mut pos = 0u64;
        let mut expected = self.base_offset;
        while pos < self.size_bytes {
            self.file.read_at(pos, &mut hdr)?;
            let h = RecordBatchHeader::parse(&hdr).expect("header sized");
            let size = h.total_size();
            if size < HEADER_BYTES as i64
                || pos + size as u64 > self.size_bytes
                || h.base_offset() != expected
                || h.last_offset_delta() < 0
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "segment {}: tracked batch at {pos} changed on disk",
                        self.base_offset
                    ),
                ));
            }
            expected = h.last_offset() + 1;
            f(&h);
            pos += size as u64;
        }
        assert_eq!(expected, self.next_offset, "walked every tracked batch");
        Ok(())
    }

    /// Header of a batch already tracked (trusted; a failure is an I/O error).
    pub fn header(&self, pos: u64) -> io::Result<StoredBatch> {
        assert!(pos < self.size_bytes);
        self.read_batch_header(pos).map_err(|e| self.invalid(e))
    }

    /// First batch with max timestamp >= `ts_ms` whose last offset >= `min_offset`.
    pub fn find_by_timestamp(
        &self,
        ts_ms: i64,
        min_offset: i64,
    ) -> io::Result<Option<StoredBatch>> {
        if self.max_timestamp < ts_ms || self.next_offset <= min_offset {
            return Ok(None);
        }
        let start_rel = self.time_index.last_below(ts_ms).map_or(0, |(_, o)| o);
        let start_offset = (self.base_offset + start_rel as i64).max(min_offset);
        let mut pos = match self.find_batch(start_offset)? {
            Some(b) => b.pos,
            None => return Ok(None),
        };
        while pos < self.size_bytes {
            let b = self.header(pos)?;
            if b.max_timestamp >= ts_ms {
                return Ok(Some(b));
            }
            pos += b.size;
        }
        Ok(None)
    }

    /// `len` bytes at `pos` as a region of the file, or copied if the storage cannot name them.
    pub fn read_part(&self, pos: u64, len: u64) -> io::Result<RecordsPart> {
        assert!(len > 0 && pos + len <= self.size_bytes);
        if let Some(region) = self.file.region(pos, len) {
            return Ok(RecordsPart::File(region));
        }
        let mut out = Vec::new();
        self.read_range(pos, len, &mut out)?;
        Ok(RecordsPart::Bytes(out.into()))
    }

    pub fn read_range(&self, pos: u64, len: u64, out: &mut Vec<u8>) -> io::Result<()> {
        assert!(pos + len <= self.size_bytes);
        let start = out.len();
        out.resize(start + len as usize, 0);
        self.file.read_at(pos, &mut out[start..])
    }

    /// Drops every batch at and above `offset`, which must be a batch boundary (or the end).
    pub fn truncate_to(&mut self, offset: i64, index_interval_bytes: u32) -> io::Result<u64> {
        assert!(offset >= self.base_offset && offset <= self.next_offset);
        if offset == self.next_offset {
            return Ok(self.size_bytes);
        }
        let b = self.find_batch(offset)?.expect("offset inside segment");
        assert_eq!(
            b.base_offset, offset,
            "truncate_to({offset}) is not at a batch boundary"
        );
        self.file.truncate(b.pos)?;
        let rel = (offset - self.base_offset) as u32;
        let mut oi = OffsetIndex::new();
        for &(o, p) in self.offset_index.entries().iter().filter(|(o, _)| *o < rel) {
            oi.append(o, p);
        }
        // Keep only time entries written at or before the last kept offset entry (exactly
        // those pointing at or before it), so the last one is the running max there.
        let kept_rel = oi.last().map(|(o, _)| o);
        let mut ti = TimeIndex::new();
        for &(t, o) in self
            .time_index
            .entries()
            .iter()
            .filter(|(_, o)| kept_rel.is_some_and(|k| *o <= k))
        {
            ti.maybe_append(t, o);
        }
        self.offset_index = oi;
        self.time_index = ti;
        self.rewind_to_last_index_entry();
        let end = self.replay(b.pos, false, index_interval_bytes)?;
        assert_eq!(
            end,
            ReplayEnd::Complete,
            "re-reading a tracked prefix failed"
        );
        assert_eq!(self.next_offset, offset);
        assert_eq!(self.size_bytes, b.pos);
        self.indexes_dirty = true;
        Ok(self.size_bytes)
    }

    /// Writes `.index` and `.timeindex` (not synced). Returns their paths.
    pub fn write_indexes<S: Storage<File = F>>(
        &mut self,
        storage: &S,
        dir: &Path,
    ) -> io::Result<[PathBuf; 2]> {
        let ip = dir.join(segment_file_name(self.base_offset, INDEX_SUFFIX));
        let tp = dir.join(segment_file_name(self.base_offset, TIME_INDEX_SUFFIX));
        for (path, bytes) in [
            (&ip, self.offset_index.encode()),
            (&tp, self.time_index.encode()),
        ] {
            let f = storage.open(path)?;
            f.truncate(0)?;
            f.append(&bytes)?;
        }
        self.indexes_dirty = false;
        Ok([ip, tp])
    }
}
