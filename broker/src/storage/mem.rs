//! `MemStorage`: an in-memory `Storage` with deterministic fault injection, for tests and the
//! simulator.
//!
//! Each file holds `durable` bytes (survive a crash) and `pending` bytes (appended since the
//! last `sync`). Durability model, kept deliberately simple:
//! - Data appends are volatile until `StorageFile::sync`.
//! - Metadata operations are durable immediately: creating a file (`open`), `remove`,
//!   `create_dir_all`, `remove_dir_all`, and `truncate` (a truncate below the durable length
//!   shrinks the durable bytes at once). `sync_dir` is therefore a no-op.
//!
//! Faults take no randomness: the caller (the simulator's seeded RNG) chooses them.
//! `crash` invalidates every handle opened before it (their operations fail), as a process
//! restart would.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{check_read_range, disk_full_error, FileRegion, RegionSource, Storage, StorageFile};

/// Sector size for torn writes.
pub const SECTOR_BYTES: u64 = 512;

/// What happens to unsynced appends on a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TornWrite {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// In every file, unsynced bytes survive up to the end of the `sectors`-th 512-byte sector
    /// (counted on absolute file positions, starting with the sector holding the first unsynced
    /// byte). If more unsynced bytes followed, the next sector is half-written: up to
    /// `garbage.len()` of its bytes are replaced by `garbage` and the file ends there.
    KeepPrefix { sectors: u64, garbage: Vec<u8> },
}

#[derive(Debug, Default)]
struct FileData {
    durable: Vec<u8>,
    pending: Vec<u8>,
    fail_reads: bool,
    /// Syncs fail with an I/O error, keeping their bytes pending (lost at a crash).
    fail_syncs: bool,
    /// Appends fail with ENOSPC: the volume under this file is full.
    no_space: bool,
    /// Truncations so far (see `FileRegion`).
    truncations: u64,
}

impl FileData {
    fn len(&self) -> u64 {
        (self.durable.len() + self.pending.len()) as u64
    }

    fn byte_mut(&mut self, pos: u64) -> Option<&mut u8> {
        let pos = usize::try_from(pos).ok()?;
        let d = self.durable.len();
        if pos < d {
            self.durable.get_mut(pos)
        } else {
            self.pending.get_mut(pos - d)
        }
    }

    fn crash(&mut self, torn: &TornWrite) {
        match torn {
            TornWrite::DropUnsynced => self.pending.clear(),
            TornWrite::KeepPrefix { sectors, garbage } => {
                let d = self.durable.len() as u64;
                let total = self.len();
                let boundary = (d / SECTOR_BYTES)
                    .saturating_add(*sectors)
                    .saturating_mul(SECTOR_BYTES);
                let cut = boundary.clamp(d, total);
                let keep = (cut - d) as usize;
                let mut survived: Vec<u8> = self.pending[..keep].to_vec();
                if cut < total {
                    let room = (SECTOR_BYTES - cut % SECTOR_BYTES).min(total - cut);
                    let g = (garbage.len() as u64).min(room) as usize;
                    survived.extend_from_slice(&garbage[..g]);
                }
                self.pending.clear();
                self.durable.extend_from_slice(&survived);
            }
        }
        debug_assert!(self.pending.is_empty());
    }
}

type Node = Arc<Mutex<FileData>>;

#[derive(Debug, Default)]
struct Namespace {
    /// Keys are paths as strings (see [`key`]): comparing strings is a memcmp, comparing
    /// `PathBuf`s walks components, which dominated long simulations.
    dirs: BTreeSet<String>,
    files: BTreeMap<String, Node>,
}

/// The map key of a path. MemStorage paths are the broker's own, always UTF-8.
fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The prefix every path inside the directory `dir` starts with.
fn dir_prefix(dir: &str) -> String {
    if dir.ends_with('/') {
        dir.to_string()
    } else {
        format!("{dir}/")
    }
}

/// Whether `path` lies strictly inside the directory `dir` (any depth).
fn inside(path: &str, dir: &str) -> bool {
    let prefix = dir_prefix(dir);
    path.len() > prefix.len() && path.starts_with(&prefix)
}

#[derive(Debug, Default)]
struct Shared {
    ns: Mutex<Namespace>,
    disk_full: AtomicBool,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: AtomicU64,
}

/// In-memory storage; `Clone` shares the same disk.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    shared: Arc<Shared>,
}

/// Handle on one in-memory file.
#[derive(Clone, Debug)]
pub struct MemFile {
    shared: Arc<Shared>,
    node: Node,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_found(what: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", what.display()),
    )
}

impl MemFile {
    fn data(&self) -> io::Result<MutexGuard<'_, FileData>> {
        if self.shared.generation.load(Ordering::Acquire) != self.generation {
            return Err(io::Error::other(
                "stale MemStorage handle: opened before a crash",
            ));
        }
        Ok(lock(&self.node))
    }
}

impl StorageFile for MemFile {
    fn len(&self) -> u64 {
        lock(&self.node).len()
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut f = self.data()?;
        let full = self.shared.disk_full.load(Ordering::Acquire) || f.no_space;
        if full && !data.is_empty() {
            return Err(disk_full_error());
        }
        f.pending.extend_from_slice(data);
        Ok(())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let f = self.data()?;
        if f.fail_reads {
            return Err(io::Error::other("injected read failure (EIO)"));
        }
        let len = f.len();
        check_read_range(pos, buf.len(), len)?;
        let mut pos = pos as usize;
        let mut out = &mut buf[..];
        let d = f.durable.len();
        if pos < d {
            let n = (d - pos).min(out.len());
            out[..n].copy_from_slice(&f.durable[pos..pos + n]);
            out = &mut out[n..];
            pos += n;
        }
        if !out.is_empty() {
            let p = pos - d;
            let n = out.len();
            out.copy_from_slice(&f.pending[p..p + n]);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut f = self.data()?;
        if f.fail_syncs {
            return Err(io::Error::other("injected sync failure (EIO)"));
        }
        let pending = std::mem::take(&mut f.pending);
        f.durable.extend_from_slice(&pending);
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut f = self.data()?;
        f.truncations += 1;
        let len = usize::try_from(len).expect("truncate length fits usize");
        let d = f.durable.len();
        if len <= d {
            f.durable.truncate(len);
            f.pending.clear();
        } else if len - d <= f.pending.len() {
            f.pending.truncate(len - d);
        } else {
            // Extending truncate: zero-filled, unsynced.
            f.pending.resize(len - d, 0);
        }
        Ok(())
    }

    fn region(&self, pos: u64, len: u64) -> Option<FileRegion> {
        assert!(pos + len <= self.len(), "region past the file end");
        let source: Arc<dyn RegionSource> = Arc::new(self.clone());
        Some(FileRegion::new(source, pos, len))
    }
}

/// Regions of in-memory files are read when the response is written, as sendfile would: the
/// simulator sees the same late reads (and their failures) production does.
impl RegionSource for MemFile {
    fn read_region_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        StorageFile::read_at(self, pos, buf)
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn truncations(&self) -> u64 {
        // A handle from before a crash names bytes that may be gone.
        self.data().map_or(u64::MAX, |f| f.truncations)
    }
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates a power loss: unsynced appends are dropped or torn per `torn`, in every file.
    /// Handles opened before the crash stop working.
    pub fn crash(&self, torn: TornWrite) {
        let ns = lock(&self.shared.ns);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        for node in ns.files.values() {
            lock(node).crash(&torn);
        }
    }

    /// Simulates a replaced disk (or a deleted data directory): every file and directory is
    /// gone. Handles opened before stop working, as after a crash.
    pub fn wipe(&self) {
        let mut ns = lock(&self.shared.ns);
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        ns.files.clear();
        ns.dirs.clear();
    }

    /// Flips one bit (0..8) of a stored byte, durable or not.
    pub fn flip_bit(&self, path: &Path, byte_pos: u64, bit: u8) -> io::Result<()> {
        assert!(bit < 8, "bit index {bit} out of range");
        let node = self.node(path)?;
        let mut f = lock(&node);
        let len = f.len();
        match f.byte_mut(byte_pos) {
            Some(b) => {
                *b ^= 1 << bit;
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("flip_bit at {byte_pos} past length {len}"),
            )),
        }
    }

    /// While set, every non-empty append fails with ENOSPC (`ErrorKind::StorageFull`).
    pub fn set_disk_full(&self, full: bool) {
        self.shared.disk_full.store(full, Ordering::Release);
    }

    /// While set, reads of `path` fail with an I/O error.
    pub fn fail_reads(&self, path: &Path, fail: bool) -> io::Result<()> {
        let node = self.node(path)?;
        lock(&node).fail_reads = fail;
        Ok(())
    }

    /// While set, syncs of the files whose paths now begin with `prefix` fail with an I/O
    /// error: a failing disk under those logs. Files created later are not affected.
    pub fn fail_syncs(&self, prefix: &str, fail: bool) {
        let ns = lock(&self.shared.ns);
        for (_, node) in ns.files.iter().filter(|(path, _)| path.starts_with(prefix)) {
            lock(node).fail_syncs = fail;
        }
    }

    /// While set, non-empty appends to the files whose paths now begin with `prefix` fail with
    /// ENOSPC: those logs' volume is full, the rest of the disk is not. Files created later are
    /// not affected.
    pub fn set_full_under(&self, prefix: &str, full: bool) {
        let ns = lock(&self.shared.ns);
        for (_, node) in ns.files.iter().filter(|(path, _)| path.starts_with(prefix)) {
            lock(node).no_space = full;
        }
    }

    /// All bytes of a file (durable then pending), for assertions.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let node = self.node(path).ok()?;
        let f = lock(&node);
        let mut v = f.durable.clone();
        v.extend_from_slice(&f.pending);
        Some(v)
    }

    /// (durable, pending) byte counts of a file.
    pub fn durability(&self, path: &Path) -> Option<(u64, u64)> {
        let node = self.node(path).ok()?;
        let f = lock(&node);
        Some((f.durable.len() as u64, f.pending.len() as u64))
    }

    fn node(&self, path: &Path) -> io::Result<Node> {
        lock(&self.shared.ns)
            .files
            .get(&key(path))
            .cloned()
            .ok_or_else(|| not_found(path))
    }
}

impl Storage for MemStorage {
    type File = MemFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut ns = lock(&self.shared.ns);
        for a in dir.ancestors() {
            if !a.as_os_str().is_empty() {
                ns.dirs.insert(key(a));
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<MemFile> {
        let mut ns = lock(&self.shared.ns);
        let parent = path.parent().ok_or_else(|| not_found(path))?;
        if !parent.as_os_str().is_empty() && !ns.dirs.contains(&key(parent)) {
            return Err(not_found(parent));
        }
        let path_key = key(path);
        if ns.dirs.contains(&path_key) {
            return Err(io::Error::other("is a directory"));
        }
        let node = ns.files.entry(path_key).or_default().clone();
        Ok(MemFile {
            shared: self.shared.clone(),
            node,
            generation: self.shared.generation.load(Ordering::Acquire),
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let ns = lock(&self.shared.ns);
        let dir = key(dir);
        if !ns.dirs.contains(&dir) {
            return Err(not_found(Path::new(&dir)));
        }
        // Every path inside `dir` sorts after "dir/" and shares that prefix: scan just that range.
        let prefix = dir_prefix(&dir);
        let mut names: Vec<String> = ns
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| &p[prefix.len()..])
            .filter(|name| !name.contains('/'))
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut ns = lock(&self.shared.ns);
        ns.files
            .remove(&key(path))
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut ns = lock(&self.shared.ns);
        let dir_key = key(dir);
        if !ns.dirs.contains(&dir_key) {
            return Err(not_found(dir));
        }
        ns.dirs.retain(|d| *d != dir_key && !inside(d, &dir_key));
        ns.files.retain(|p, _| !inside(p, &dir_key));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let ns = lock(&self.shared.ns);
        let path = key(path);
        ns.files.contains_key(&path) || ns.dirs.contains(&path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Metadata is durable immediately in this model.
        if lock(&self.shared.ns).dirs.contains(&key(dir)) {
            Ok(())
        } else {
            Err(not_found(dir))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn list_sees_only_direct_children_and_remove_dir_all_only_its_tree() {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("/data/t-0")).unwrap();
        s.create_dir_all(Path::new("/data/t-0x")).unwrap();
        s.create_dir_all(Path::new("/data/t-0/sub")).unwrap();
        for f in [
            "/data/t-0/b",
            "/data/t-0/a",
            "/data/t-0/sub/c",
            "/data/t-0x/d",
        ] {
            s.open(Path::new(f)).unwrap();
        }
        assert_eq!(s.list(Path::new("/data/t-0")).unwrap(), vec!["a", "b"]);
        s.remove_dir_all(Path::new("/data/t-0")).unwrap();
        assert!(!s.exists(Path::new("/data/t-0/sub/c")) && !s.exists(Path::new("/data/t-0")));
        assert!(
            s.exists(Path::new("/data/t-0x/d")),
            "a sibling sharing the name prefix survives"
        );
    }

    fn setup() -> (MemStorage, PathBuf, MemFile) {
        let s = MemStorage::new();
        s.create_dir_all(Path::new("/d")).unwrap();
        let p = PathBuf::from("/d/f");
        let f = s.open(&p).unwrap();
        (s, p, f)
    }

    #[test]
    fn crash_drops_unsynced_and_kills_handles() {
        let (s, p, f) = setup();
        f.append(b"abc").unwrap();
        f.sync().unwrap();
        f.append(b"def").unwrap();
        s.crash(TornWrite::DropUnsynced);
        assert!(f.append(b"x").is_err());
        assert!(f.sync().is_err());
        let g = s.open(&p).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(s.contents(&p).unwrap(), b"abc");
    }

    #[test]
    fn crash_keep_prefix_sector_aligned_with_garbage() {
        let (s, p, f) = setup();
        f.append(&[1u8; 100]).unwrap();
        f.sync().unwrap();
        f.append(&[2u8; 2000]).unwrap(); // file is 2100 bytes, 100 durable
        s.crash(TornWrite::KeepPrefix {
            sectors: 2,
            garbage: vec![9u8; 700],
        });
        // Sector 0 holds byte 100; two sectors → keep up to 1024, then 512 garbage bytes max.
        let c = s.contents(&p).unwrap();
        assert_eq!(c.len(), 1024 + 512);
        assert!(c[..100].iter().all(|b| *b == 1));
        assert!(c[100..1024].iter().all(|b| *b == 2));
        assert!(c[1024..].iter().all(|b| *b == 9));
        assert_eq!(s.durability(&p), Some((1536, 0)));

        // Zero sectors and no garbage behaves like DropUnsynced.
        let g = s.open(&p).unwrap();
        g.append(b"zz").unwrap();
        s.crash(TornWrite::KeepPrefix {
            sectors: 0,
            garbage: vec![],
        });
        assert_eq!(s.contents(&p).unwrap().len(), 1536);
        // Everything fits: no garbage.
        let g = s.open(&p).unwrap();
        g.append(b"zz").unwrap();
        s.crash(TornWrite::KeepPrefix {
            sectors: 10,
            garbage: vec![7; 3],
        });
        assert_eq!(s.contents(&p).unwrap().len(), 1538);
    }

    #[test]
    fn faults() {
        let (s, p, f) = setup();
        f.append(&[0u8; 10]).unwrap();
        s.flip_bit(&p, 3, 2).unwrap();
        assert_eq!(s.contents(&p).unwrap()[3], 4);
        assert!(s.flip_bit(&p, 10, 0).is_err());
        s.set_disk_full(true);
        let e = f.append(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28));
        assert_eq!(f.len(), 10);
        s.set_disk_full(false);
        f.append(b"x").unwrap();
        s.fail_reads(&p, true).unwrap();
        let mut b = [0u8; 1];
        assert!(f.read_at(0, &mut b).is_err());
        s.fail_reads(&p, false).unwrap();
        f.read_at(0, &mut b).unwrap();
        // Failing syncs keep the bytes pending: a crash then loses them.
        f.sync().unwrap();
        f.append(b"y").unwrap();
        s.fail_syncs("/e/", true);
        f.sync().unwrap();
        f.append(b"z").unwrap();
        s.fail_syncs("/d/", true);
        assert!(f.sync().is_err());
        s.crash(TornWrite::DropUnsynced);
        assert_eq!(s.contents(&p).unwrap().len(), 12);
    }

    #[test]
    fn truncate_is_durable_immediately() {
        let (s, p, f) = setup();
        f.append(b"abcdef").unwrap();
        f.sync().unwrap();
        f.append(b"ghi").unwrap();
        f.truncate(4).unwrap();
        assert_eq!(s.durability(&p), Some((4, 0)));
        f.append(b"XY").unwrap();
        f.truncate(5).unwrap();
        assert_eq!(s.durability(&p), Some((4, 1)));
        s.crash(TornWrite::DropUnsynced);
        assert_eq!(s.contents(&p).unwrap(), b"abcd");
    }

    #[test]
    fn open_needs_parent_dir() {
        let s = MemStorage::new();
        assert!(s.open(Path::new("/nope/f")).is_err());
    }
}
