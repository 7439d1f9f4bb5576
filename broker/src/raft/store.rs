//! RaftStore: one node's durable quorum state, metadata log and snapshots over [`Storage`],
//! performing the [`StorageOp`]s [`super::RaftCore`] emits and recovering a [`Recovered`] at
//! start. Pure storage: no clocks, no threads; the shell calls [`RaftStore::apply`] for every
//! op in order and, when it returns `Some(token)`, calls `core.synced(now, token)`.
//!
//! Files in `dir` (every integer big-endian, every CRC a CRC32C):
//!
//! ```text
//! quorum-state-0, quorum-state-1   one record each: seq:u64 epoch:i32 flags:u8 voted_for:i32
//!                                  has_leader:u8 leader:i32 crc:u32 (over the 22 bytes before);
//!                                  flags: bit 0 voted, bit 1 rejoining
//! log-<start offset, 20 digits>    entries: len:u32 crc:u32 offset:i64 epoch:i32 payload
//!                                  (len = 12 + payload bytes; crc over len, offset, epoch,
//!                                  payload); the first entry's offset is the file's start
//! snapshot-<end offset, 20 digits>-<epoch, 10 digits>
//!                                  end_offset:i64 epoch:i32 data data_len:u64 crc:u32 (over
//!                                  everything before it)
//! ```
//!
//! Durability: `Append` and `Truncate` are written at once and made durable by `Sync` (log fsync
//! and dir fsync). `PersistQuorumState`, `WriteSnapshot` and `InstallSnapshot` are barriers:
//! they first make every earlier op durable, then write and fsync at once. So after a crash the
//! disk holds the state as of some op (or some entry of an `Append`) at or after the last
//! barrier or `Sync`, never a reordering.
//!
//! Quorum state is replaced without rename by writing the generation file the newest valid
//! record is not in (`seq + 1` decides which), truncated first; recovery takes the valid record
//! with the highest `seq`.
//!
//! Compaction: after a snapshot at `S` is durable, `WriteSnapshot` copies the entries at and
//! above `S` into a new `log-S`, fsyncs it and the dir, then removes the old log file;
//! `InstallSnapshot` empties the old log file (durably) before creating an empty `log-S`.
//! Recovery chooses among the log files left by a crash in between: of those whose valid
//! entries reach the snapshot end (and agree with the snapshot's epoch at its last offset), the
//! one reaching furthest, the newest on a tie; it truncates the chosen file's invalid tail and
//! removes every other log file. At rest there is exactly one log file. (An `InstallSnapshot`
//! interrupted before it emptied the old log can so keep old entries above the snapshot when
//! they agree with it at its last offset: the state a `WriteSnapshot` would have left. Log files
//! with entries starting above the snapshot end mean a snapshot was lost: `open` refuses them.)

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::types::*;
use crate::storage::{Storage, StorageFile};

/// Bytes of one quorum-state record.
const QS_RECORD_BYTES: usize = 26;
/// Bytes of an entry's frame before its payload.
const ENTRY_HEADER_BYTES: usize = 20;
/// The part of `len` that is not payload (offset and epoch).
const ENTRY_FIXED_BYTES: u32 = 12;
/// The largest payload recovery accepts (far above `RaftConfig::max_payload_bytes`' default).
pub const ENTRY_PAYLOAD_BYTES_MAX: usize = 128 * 1024 * 1024;
/// The largest snapshot data recovery reads (above `RaftConfig::max_snapshot_bytes`' default).
pub const SNAPSHOT_DATA_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Snapshot header (end offset, epoch) and trailer (data length, CRC).
const SNAPSHOT_HEADER_BYTES: u64 = 12;
const SNAPSHOT_TRAILER_BYTES: u64 = 12;
/// Compaction copies the kept entries in reads of at most this many bytes.
const COPY_CHUNK_BYTES: u64 = 1024 * 1024;

const QS_FILES: [&str; 2] = ["quorum-state-0", "quorum-state-1"];

/// The durable state of one node.
pub struct RaftStore<S: Storage> {
    storage: S,
    dir: PathBuf,
    /// Sequence number of the newest quorum-state record (0: none written yet).
    qs_seq: u64,
    /// The active log file and the offset of its first entry.
    log: S::File,
    log_start: i64,
    /// File position of each entry in the active log file, from `log_start`.
    positions: Vec<u64>,
    /// Bytes of valid entries in the active log file.
    log_bytes: u64,
    snapshot: Option<SnapshotId>,
    /// Set when a failure left memory and disk out of step (a cleanup failed too): every later
    /// op fails; reopening recovers.
    broken: bool,
    /// Test hook: fail (without cleaning up, as a crash would) at the n-th mutating step of a
    /// barrier op.
    #[cfg(test)]
    fail_at_step: Option<u32>,
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn log_name(start: i64) -> String {
    format!("log-{start:020}")
}

fn snapshot_name(id: SnapshotId) -> String {
    format!("snapshot-{:020}-{:010}", id.end_offset, id.epoch)
}

fn parse_log_name(name: &str) -> Option<i64> {
    name.strip_prefix("log-")?.parse().ok()
}

fn parse_snapshot_name(name: &str) -> Option<SnapshotId> {
    let rest = name.strip_prefix("snapshot-")?;
    let (end, epoch) = rest.split_once('-')?;
    Some(SnapshotId {
        end_offset: end.parse().ok()?,
        epoch: epoch.parse().ok()?,
    })
}

fn encode_qs(seq: u64, qs: &QuorumState) -> [u8; QS_RECORD_BYTES] {
    let mut b = [0u8; QS_RECORD_BYTES];
    b[0..8].copy_from_slice(&seq.to_be_bytes());
    b[8..12].copy_from_slice(&qs.epoch.to_be_bytes());
    b[12] = u8::from(qs.voted_for.is_some()) | (u8::from(qs.rejoining) << 1);
    b[13..17].copy_from_slice(&qs.voted_for.unwrap_or(0).to_be_bytes());
    b[17] = u8::from(qs.leader.is_some());
    b[18..22].copy_from_slice(&qs.leader.unwrap_or(0).to_be_bytes());
    let crc = crc32c::crc32c(&b[..22]);
    b[22..26].copy_from_slice(&crc.to_be_bytes());
    b
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    i32::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn decode_qs(b: &[u8; QS_RECORD_BYTES]) -> Option<(u64, QuorumState)> {
    if crc32c::crc32c(&b[..22]) != be_u32(&b[22..26]) {
        return None;
    }
    let opt = |flag: u8, v: &[u8]| match flag {
        0 => Some(None),
        1 => Some(Some(be_i32(v))),
        _ => None,
    };
    if b[12] > 3 {
        return None;
    }
    Some((
        be_u64(&b[0..8]),
        QuorumState {
            epoch: be_i32(&b[8..12]),
            voted_for: opt(b[12] & 1, &b[13..17])?,
            leader: opt(b[17], &b[18..22])?,
            rejoining: b[12] & 2 != 0,
        },
    ))
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let len = ENTRY_FIXED_BYTES + e.payload.len() as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&e.offset.to_be_bytes());
    out.extend_from_slice(&e.epoch.to_be_bytes());
    out.extend_from_slice(&e.payload);
    let mut crc = crc32c::crc32c(&out[start..start + 4]);
    crc = crc32c::crc32c_append(crc, &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

/// What a scan of one log file found: its valid entries with their positions, where they end,
/// and why the scan stopped early (if it did).
struct ScannedLog {
    start: i64,
    entries: Vec<(u64, Entry)>,
    valid_bytes: u64,
    stopped: Option<String>,
}

impl ScannedLog {
    fn end_offset(&self) -> i64 {
        self.start + self.entries.len() as i64
    }

    fn epoch_at(&self, offset: i64) -> Option<i32> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.entries.get(i).map(|(_, e)| e.epoch)
    }
}

/// Reads a log file's entries until the end or the first torn, corrupt or out-of-sequence one.
fn scan_log<F: StorageFile>(file: &F, start: i64) -> io::Result<ScannedLog> {
    let len = file.len();
    let mut scanned = ScannedLog {
        start,
        entries: Vec::new(),
        valid_bytes: 0,
        stopped: None,
    };
    let mut pos = 0u64;
    let mut prev_epoch = i32::MIN;
    let mut header = [0u8; ENTRY_HEADER_BYTES];
    while pos < len {
        let expected = start + scanned.entries.len() as i64;
        if len - pos < ENTRY_HEADER_BYTES as u64 {
            scanned.stopped = Some(format!("torn entry header at byte {pos}"));
            break;
        }
        file.read_at(pos, &mut header)?;
        let frame_len = be_u32(&header[0..4]);
        let payload_len = frame_len.wrapping_sub(ENTRY_FIXED_BYTES) as usize;
        if frame_len < ENTRY_FIXED_BYTES || payload_len > ENTRY_PAYLOAD_BYTES_MAX {
            scanned.stopped = Some(format!("bad entry length {frame_len} at byte {pos}"));
            break;
        }
        let end = pos + ENTRY_HEADER_BYTES as u64 + payload_len as u64;
        if end > len {
            scanned.stopped = Some(format!("torn entry at byte {pos}"));
            break;
        }
        let mut payload = vec![0u8; payload_len];
        file.read_at(pos + ENTRY_HEADER_BYTES as u64, &mut payload)?;
        let mut crc = crc32c::crc32c(&header[0..4]);
        crc = crc32c::crc32c_append(crc, &header[8..]);
        crc = crc32c::crc32c_append(crc, &payload);
        if crc != be_u32(&header[4..8]) {
            scanned.stopped = Some(format!("CRC mismatch in the entry at byte {pos}"));
            break;
        }
        let offset = be_i64(&header[8..16]);
        let epoch = be_i32(&header[16..20]);
        if offset != expected || epoch < prev_epoch {
            scanned.stopped = Some(format!(
                "entry at byte {pos} has offset {offset} epoch {epoch}, expected offset \
                 {expected} epoch >= {prev_epoch}"
            ));
            break;
        }
        prev_epoch = epoch;
        scanned.entries.push((
            pos,
            Entry {
                offset,
                epoch,
                payload: Bytes::from(payload),
            },
        ));
        pos = end;
        scanned.valid_bytes = end;
    }
    Ok(scanned)
}

/// Reads and checks a snapshot file; `None` if it is torn or corrupt.
fn read_snapshot<F: StorageFile>(file: &F, id: SnapshotId) -> io::Result<Option<Snapshot>> {
    let len = file.len();
    let overhead = SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES;
    if len < overhead || len - overhead > SNAPSHOT_DATA_BYTES_MAX {
        return Ok(None);
    }
    let Ok(size) = usize::try_from(len) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; size];
    file.read_at(0, &mut buf)?;
    let crc_pos = size - 4;
    if crc32c::crc32c(&buf[..crc_pos]) != be_u32(&buf[crc_pos..]) {
        return Ok(None);
    }
    let data_len = be_u64(&buf[crc_pos - 8..crc_pos]);
    let header_id = SnapshotId {
        end_offset: be_i64(&buf[0..8]),
        epoch: be_i32(&buf[8..12]),
    };
    if data_len != len - overhead || header_id != id {
        return Ok(None);
    }
    let data = Bytes::copy_from_slice(&buf[SNAPSHOT_HEADER_BYTES as usize..crc_pos - 8]);
    Ok(Some(Snapshot { id, data }))
}

impl<S: Storage> RaftStore<S> {
    /// Opens (creating) the store in `dir` and recovers what it holds. A torn or corrupt tail is
    /// cut off with a warning; files a crash left half-done (a torn snapshot, a log file of an
    /// unfinished compaction) are removed. Errors only on IO errors or an inconsistency no
    /// truncation can fix (a log whose epochs exceed every surviving quorum state, or a log
    /// starting above the newest valid snapshot's end); an error removes nothing.
    pub fn open(storage: S, dir: PathBuf) -> io::Result<(RaftStore<S>, Recovered)> {
        storage.create_dir_all(&dir)?;
        let names = storage.list(&dir)?;

        // Quorum state: the valid record with the highest sequence number.
        let mut qs_seq = 0;
        let mut quorum_state = QuorumState::default();
        for name in QS_FILES {
            let path = dir.join(name);
            if !storage.exists(&path) {
                continue;
            }
            let f = storage.open(&path)?;
            let mut rec = [0u8; QS_RECORD_BYTES];
            if f.len() < QS_RECORD_BYTES as u64 {
                if f.len() > 0 {
                    tracing::warn!(file = name, "torn quorum-state record ignored");
                }
                continue;
            }
            f.read_at(0, &mut rec)?;
            match decode_qs(&rec) {
                Some((seq, qs)) if seq > qs_seq => {
                    qs_seq = seq;
                    quorum_state = qs;
                }
                Some(_) => {}
                None => tracing::warn!(file = name, "corrupt quorum-state record ignored"),
            }
        }

        // Snapshots: the newest valid one; torn, corrupt and superseded ones are removed.
        let mut snap_ids: Vec<(SnapshotId, &String)> = names
            .iter()
            .filter_map(|n| parse_snapshot_name(n).map(|id| (id, n)))
            .collect();
        snap_ids.sort();
        let mut snapshot: Option<Snapshot> = None;
        // Removed only once the log is known to connect, so a refusal leaves the evidence.
        let mut to_remove: Vec<PathBuf> = Vec::new();
        for (id, name) in snap_ids.iter().rev() {
            let path = dir.join(name);
            if snapshot.is_some() {
                to_remove.push(path);
                continue;
            }
            let f = storage.open(&path)?;
            match read_snapshot(&f, *id)? {
                Some(s) => {
                    f.sync()?;
                    snapshot = Some(s);
                }
                None => {
                    tracing::warn!(file = %name, "torn or corrupt snapshot removed");
                    to_remove.push(path);
                }
            }
        }
        let snap_id = snapshot.as_ref().map(|s| s.id).unwrap_or_default();
        let snap_end = snap_id.end_offset;

        // Log files: choose the one reaching furthest from the snapshot end.
        let mut log_files: Vec<(i64, &String)> = names
            .iter()
            .filter_map(|n| parse_log_name(n).map(|s| (s, n)))
            .collect();
        log_files.sort();
        let mut best: Option<(ScannedLog, S::File, &String)> = None;
        let mut after_snapshot: Option<i64> = None;
        for (start, name) in &log_files {
            let f = storage.open(&dir.join(name))?;
            let scanned = scan_log(&f, *start)?;
            if scanned.start > snap_end && !scanned.entries.is_empty() {
                after_snapshot = Some(scanned.start);
            }
            let connects = scanned.start <= snap_end
                && scanned.end_offset() >= snap_end
                && (scanned.start == snap_end
                    || snapshot.is_none()
                    || scanned.epoch_at(snap_end - 1) == Some(snap_id.epoch));
            if !connects {
                continue;
            }
            // Sorted by start: on equal reach the later (newer) file wins.
            if best
                .as_ref()
                .iter()
                .all(|(b, _, _)| scanned.end_offset() >= b.end_offset())
            {
                best = Some((scanned, f, name));
            }
        }
        let (scanned, log, chosen) = match best {
            Some((scanned, f, name)) => {
                if let Some(why) = &scanned.stopped {
                    tracing::warn!(
                        file = %name,
                        valid_bytes = scanned.valid_bytes,
                        len = f.len(),
                        "metadata log tail cut off: {why}"
                    );
                }
                if f.len() != scanned.valid_bytes {
                    f.truncate(scanned.valid_bytes)?;
                }
                f.sync()?;
                (scanned, f, name.clone())
            }
            None => {
                // A log file left empty by InstallSnapshot, one entirely below the snapshot or
                // one an InstallSnapshot was replacing is garbage. Entries starting above the
                // snapshot end mean a snapshot was lost: refuse rather than drop them.
                if let Some(start) = after_snapshot {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "metadata log starts at {start}, after the snapshot end {snap_end}: \
                             a snapshot is missing or corrupt"
                        ),
                    ));
                }
                if !log_files.is_empty() {
                    tracing::warn!(
                        snapshot_end = snap_end,
                        "no metadata log file reaches the snapshot end: starting an empty log"
                    );
                }
                let name = log_name(snap_end);
                let path = dir.join(&name);
                if storage.exists(&path) {
                    storage.remove(&path)?;
                }
                let f = storage.open(&path)?;
                let scanned = ScannedLog {
                    start: snap_end,
                    entries: Vec::new(),
                    valid_bytes: 0,
                    stopped: None,
                };
                (scanned, f, name)
            }
        };
        for (_, name) in &log_files {
            if **name != chosen {
                to_remove.push(dir.join(name));
            }
        }
        for path in to_remove {
            storage.remove(&path)?;
        }
        storage.sync_dir(&dir)?;

        let last_epoch = scanned
            .entries
            .last()
            .map(|(_, e)| e.epoch)
            .unwrap_or(snap_id.epoch)
            .max(snap_id.epoch);
        if last_epoch > quorum_state.epoch {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "metadata log or snapshot has epoch {last_epoch} above the quorum state's {}",
                    quorum_state.epoch
                ),
            ));
        }
        let positions = scanned.entries.iter().map(|(p, _)| *p).collect();
        let entries: Vec<Entry> = scanned
            .entries
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.offset >= snap_end)
            .collect();
        debug_assert!(entries.first().iter().all(|e| e.offset == snap_end));
        let store = RaftStore {
            storage,
            dir,
            qs_seq,
            log,
            log_start: scanned.start,
            positions,
            log_bytes: scanned.valid_bytes,
            snapshot: snapshot.as_ref().map(|s| s.id),
            broken: false,
            #[cfg(test)]
            fail_at_step: None,
        };
        store.check();
        Ok((
            store,
            Recovered {
                quorum_state,
                snapshot,
                entries,
            },
        ))
    }

    /// Performs one op. Returns `Some(token)` when the op was `Sync { token }` and everything
    /// before it is durable: the caller then calls `core.synced(now, token)`. On an error the
    /// store is unchanged in memory and usable (a failed append is rolled back), unless the
    /// rollback failed too; then every later op fails and the caller must reopen.
    pub fn apply(&mut self, op: &StorageOp) -> io::Result<Option<u64>> {
        if self.broken {
            return Err(io::Error::other(
                "raft store failed earlier and must be reopened",
            ));
        }
        let r = match op {
            StorageOp::PersistQuorumState(qs) => self.persist_quorum_state(qs).map(|_| None),
            StorageOp::Append(entries) => self.append(entries).map(|_| None),
            StorageOp::Truncate { end_offset } => self.truncate(*end_offset).map(|_| None),
            StorageOp::WriteSnapshot(s) => self.snapshot(s, false).map(|_| None),
            StorageOp::InstallSnapshot(s) => self.snapshot(s, true).map(|_| None),
            StorageOp::Sync { token } => self.sync().map(|_| Some(*token)),
        };
        if r.is_ok() {
            self.check();
        }
        r
    }

    /// Makes every applied op durable (log fsync, dir fsync).
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync()?;
        self.storage.sync_dir(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset after the last entry in the log.
    pub fn log_end_offset(&self) -> i64 {
        self.log_start + self.positions.len() as i64
    }

    /// The latest snapshot (the log starts at its end offset).
    pub fn snapshot_id(&self) -> Option<SnapshotId> {
        self.snapshot
    }

    fn snapshot_end(&self) -> i64 {
        self.snapshot.map_or(0, |s| s.end_offset)
    }

    fn check(&self) {
        assert!(self.log_start <= self.snapshot_end());
        assert!(self.snapshot_end() <= self.log_end_offset());
        assert!(self.positions.windows(2).all(|w| w[0] < w[1]));
        assert!(self.positions.last().iter().all(|p| **p < self.log_bytes));
        assert!(self.positions.first().iter().all(|p| **p == 0));
    }

    /// Test hook point before each mutating step of a barrier op.
    fn step(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_at_step.as_mut() {
            if *n == 0 {
                self.broken = true;
                return Err(io::Error::other("injected failure"));
            }
            *n -= 1;
        }
        Ok(())
    }

    fn persist_quorum_state(&mut self, qs: &QuorumState) -> io::Result<()> {
        self.sync()?;
        let seq = self.qs_seq + 1;
        let rec = encode_qs(seq, qs);
        let f = self
            .storage
            .open(&self.dir.join(QS_FILES[(seq % 2) as usize]))?;
        f.truncate(0)?;
        f.append(&rec)?;
        f.sync()?;
        self.storage.sync_dir(&self.dir)?;
        self.qs_seq = seq;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for (next, e) in (self.log_end_offset()..).zip(entries) {
            if e.offset != next {
                return Err(invalid_input(format!(
                    "append of offset {} at log end {next}",
                    e.offset
                )));
            }
            if e.payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
                return Err(invalid_input(format!(
                    "entry of {} bytes above {ENTRY_PAYLOAD_BYTES_MAX}",
                    e.payload.len()
                )));
            }
            positions.push(self.log_bytes + buf.len() as u64);
            encode_entry(e, &mut buf);
        }
        if let Err(e) = self.log.append(&buf) {
            // A partial write may have landed: cut it off so the next append starts clean.
            if self.log.len() != self.log_bytes && self.log.truncate(self.log_bytes).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.positions.extend(positions);
        self.log_bytes += buf.len() as u64;
        Ok(())
    }

    fn truncate(&mut self, end_offset: i64) -> io::Result<()> {
        if end_offset >= self.log_end_offset() {
            return Ok(());
        }
        if end_offset < self.snapshot_end() || end_offset < self.log_start {
            return Err(invalid_input(format!(
                "truncate to {end_offset} below the log start {}",
                self.snapshot_end()
            )));
        }
        let keep = (end_offset - self.log_start) as usize;
        let pos = self.positions[keep];
        self.log.truncate(pos)?;
        self.positions.truncate(keep);
        self.log_bytes = pos;
        Ok(())
    }

    fn snapshot(&mut self, snap: &Snapshot, install: bool) -> io::Result<()> {
        let id = snap.id;
        let current = self.snapshot.unwrap_or_default();
        if id.end_offset < current.end_offset
            || (id.end_offset == current.end_offset && id != current && self.snapshot.is_some())
        {
            return Err(invalid_input(format!(
                "snapshot {id:?} older than the current {current:?}"
            )));
        }
        // A barrier: everything before is durable before anything below changes.
        self.sync()?;
        if self.snapshot != Some(id) {
            self.write_snapshot_file(snap)?;
        }
        self.snapshot = Some(id);
        if install {
            if let Err(e) = self.reset_log(id.end_offset) {
                // Memory and disk may disagree on the log: recovery sorts it out.
                self.broken = true;
                return Err(e);
            }
        } else {
            self.compact_log(id.end_offset)?;
        }
        // The new snapshot is durable: older ones can go.
        for name in self.storage.list(&self.dir)? {
            if let Some(other) = parse_snapshot_name(&name) {
                if other != id {
                    self.step()?;
                    self.storage.remove(&self.dir.join(&name))?;
                }
            }
        }
        self.storage.sync_dir(&self.dir)
    }

    fn write_snapshot_file(&mut self, snap: &Snapshot) -> io::Result<()> {
        let path = self.dir.join(snapshot_name(snap.id));
        let mut buf = Vec::with_capacity(snap.data.len() + 24);
        buf.extend_from_slice(&snap.id.end_offset.to_be_bytes());
        buf.extend_from_slice(&snap.id.epoch.to_be_bytes());
        buf.extend_from_slice(&snap.data);
        buf.extend_from_slice(&(snap.data.len() as u64).to_be_bytes());
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        self.step()?;
        let f = self.storage.open(&path)?;
        let written = f
            .truncate(0)
            .and_then(|_| f.append(&buf))
            .and_then(|_| f.sync())
            .and_then(|_| self.storage.sync_dir(&self.dir));
        if let Err(e) = written {
            if self.storage.remove(&path).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        Ok(())
    }

    /// WriteSnapshot: drop the entries below `end` by copying the rest into `log-<end>`.
    fn compact_log(&mut self, end: i64) -> io::Result<()> {
        if end <= self.log_start {
            return Ok(());
        }
        let from = if end >= self.log_end_offset() {
            self.log_bytes
        } else {
            self.positions[(end - self.log_start) as usize]
        };
        let new_path = self.dir.join(log_name(end));
        self.step()?;
        let new = self.storage.open(&new_path)?;
        let copied = self.copy_log(&new, from);
        if let Err(e) = copied {
            if !self.broken && self.storage.remove(&new_path).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.step()?;
        let old_path = self.dir.join(log_name(self.log_start));
        let removed = self.storage.remove(&old_path);
        // From here the new file is the log, whatever happens to the old one.
        let keep = self
            .positions
            .len()
            .saturating_sub((end - self.log_start) as usize);
        let dropped = self.positions.len() - keep;
        self.positions = self.positions[dropped..].iter().map(|p| p - from).collect();
        self.log_bytes -= from;
        self.log_start = end;
        self.log = new;
        if let Err(e) = removed.and_then(|_| self.storage.sync_dir(&self.dir)) {
            // The old file may linger: recovery removes it.
            self.broken = true;
            return Err(e);
        }
        Ok(())
    }

    fn copy_log(&mut self, new: &S::File, from: u64) -> io::Result<()> {
        new.truncate(0)?;
        let mut pos = from;
        while pos < self.log_bytes {
            let n = (self.log_bytes - pos).min(COPY_CHUNK_BYTES) as usize;
            let mut buf = vec![0u8; n];
            self.log.read_at(pos, &mut buf)?;
            self.step()?;
            new.append(&buf)?;
            pos += n as u64;
        }
        self.step()?;
        new.sync()?;
        self.storage.sync_dir(&self.dir)
    }

    /// InstallSnapshot: the log becomes empty, starting at `end`. The old file is emptied
    /// durably first so no crash can bring its entries back after the snapshot.
    fn reset_log(&mut self, end: i64) -> io::Result<()> {
        self.step()?;
        self.log.truncate(0)?;
        self.log.sync()?;
        self.positions.clear();
        self.log_bytes = 0;
        if end == self.log_start {
            return Ok(());
        }
        self.step()?;
        let new = self.storage.open(&self.dir.join(log_name(end)))?;
        new.truncate(0)?;
        new.sync()?;
        self.storage.sync_dir(&self.dir)?;
        self.step()?;
        let old_path = self.dir.join(log_name(self.log_start));
        self.log_start = end;
        self.log = new;
        self.storage.remove(&old_path)?;
        self.storage.sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests;
