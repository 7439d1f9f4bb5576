//! The storage seam: the only way the log core touches disks.
//!
//! `Storage` is a directory-ish namespace of append-only files; `StorageFile` is a shared
//! handle on one open file. `file::FileStorage` is the production implementation (std::fs,
//! pread/pwrite); `mem::MemStorage` is an in-memory implementation with deterministic fault
//! injection (crash with torn writes, bit flips, disk full, read failures) for the simulator.

pub mod dir_lock;
pub mod file;
pub mod mem;
pub mod meta_properties;
pub mod region;

use std::io;
use std::path::Path;

pub use dir_lock::DataDirLock;
pub use file::{FileHandle, FileStorage};
pub use mem::{MemFile, MemStorage, TornWrite};
pub use region::{FileRegion, RegionSource};

/// A set of directories and files. Implementations must be cheap to call concurrently.
pub trait Storage: Send + Sync + 'static {
    type File: StorageFile;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens (creating if missing) a file for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// File names (not full paths) in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Makes a directory's entries (created/removed files) durable (fsync of the dir on Linux).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The size of the volume holding `dir` and the bytes still free for this process, as
    /// DescribeLogDirs reports them; None where there is no volume (the simulator's storage).
    fn volume_space(&self, _dir: &Path) -> Option<VolumeSpace> {
        None
    }
}

/// The volume a log directory lives on, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeSpace {
    pub total_bytes: u64,
    /// Free bytes an unprivileged writer may still use (excludes root's reserved blocks).
    pub usable_bytes: u64,
}

/// A handle; Clone shares the same open file (Arc inside), so a flusher can sync a clone
/// without holding the log.
pub trait StorageFile: Clone + Send + Sync + 'static {
    fn len(&self) -> u64;
    fn append(&self, data: &[u8]) -> io::Result<()>;
    /// Appends `parts` back to back, all or nothing as `append` is. The default joins them and
    /// appends once; `FileHandle` hands them to the kernel as they are (`pwritev`), so a
    /// caller that patches a few bytes of a large buffer need not copy the rest.
    fn append_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        self.append(&parts.concat())
    }
    /// Reads exactly buf.len() bytes at pos (UnexpectedEof if short).
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
    /// Advice, after a sync: the synced bytes will not be read soon, so the OS may drop them
    /// from its cache now (whole pages only: the page the next append writes into stays).
    /// Errors are ignored (advice only); a no-op where there is no cache.
    fn drop_cached(&self) {}
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// `len` (> 0) bytes at `pos`, inside the file, named for reading later (see `FileRegion`);
    /// None if this storage cannot name its bytes, and the caller reads them now.
    fn region(&self, _pos: u64, _len: u64) -> Option<FileRegion> {
        None
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Ok if `want` bytes at `pos` lie inside a file of `len` bytes, else the UnexpectedEof
/// error every implementation's `read_at` returns.
pub(crate) fn check_read_range(pos: u64, want: usize, len: u64) -> io::Result<()> {
    match pos.checked_add(want as u64) {
        Some(end) if end <= len => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {want} bytes at {pos} past file length {len}"),
        )),
    }
}

/// The error both implementations return when the disk is full: ENOSPC, whose
/// `io::ErrorKind` is `StorageFull` on current Rust (raw OS error so it works on the MSRV too).
pub fn disk_full_error() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC on Linux and macOS
}

/// Whether `e` says the disk is full (ENOSPC, or EDQUOT: over the user's quota): the file is
/// intact and only cannot grow, unlike an I/O error, which says nothing about what landed.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) // ENOSPC, EDQUOT on Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contract tests every implementation must pass.
    pub(crate) fn contract<S: Storage>(s: &S, root: &Path) {
        let dir = root.join("a/b");
        s.create_dir_all(&dir).unwrap();
        let p = dir.join("f.log");
        assert!(!s.exists(&p));
        let f = s.open(&p).unwrap();
        assert!(s.exists(&p));
        assert_eq!(f.len(), 0);
        assert!(f.is_empty());
        f.append(b"hello").unwrap();
        f.append(b" world").unwrap();
        assert_eq!(f.len(), 11);
        let mut buf = [0u8; 5];
        f.read_at(6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        let mut big = [0u8; 6];
        let e = f.read_at(6, &mut big).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // A clone shares the file.
        let g = f.clone();
        g.append(b"!").unwrap();
        assert_eq!(f.len(), 12);
        f.sync().unwrap();
        f.truncate(5).unwrap();
        assert_eq!(g.len(), 5);
        f.append(b"X").unwrap();
        let mut all = [0u8; 6];
        g.read_at(0, &mut all).unwrap();
        assert_eq!(&all, b"helloX");
        // Reopen sees the same bytes.
        let h = s.open(&p).unwrap();
        assert_eq!(h.len(), 6);
        s.open(&dir.join("e.txt")).unwrap();
        assert_eq!(
            s.list(&dir).unwrap(),
            vec!["e.txt".to_string(), "f.log".to_string()]
        );
        s.sync_dir(&dir).unwrap();
        s.remove(&dir.join("e.txt")).unwrap();
        assert_eq!(s.list(&dir).unwrap(), vec!["f.log".to_string()]);
        assert!(s.remove(&dir.join("e.txt")).is_err());
        s.remove_dir_all(&root.join("a")).unwrap();
        assert!(!s.exists(&p));
        assert!(s.list(&dir).is_err());
    }

    #[test]
    fn file_storage_contract() {
        let tmp = tempfile::tempdir().unwrap();
        contract(&FileStorage::new(), tmp.path());
    }

    #[test]
    fn mem_storage_contract() {
        contract(&MemStorage::new(), Path::new("/data"));
    }

    #[test]
    fn disk_full_kind() {
        assert_eq!(disk_full_error().raw_os_error(), Some(28));
        assert!(disk_full_error()
            .to_string()
            .to_lowercase()
            .contains("space"));
    }
}
