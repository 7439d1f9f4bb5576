//! `FileStorage`: the production `Storage` on top of std::fs.
//!
//! Appends are positional writes (`pwrite`) at a length tracked in an `AtomicU64`, serialized
//! by a per-file mutex; reads are lock-free `pread`s bounded by the tracked length, so readers
//! never observe a half-finished append and never contend with the writer.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{check_read_range, FileRegion, RegionSource, Storage, StorageFile, VolumeSpace};

/// Storage on the local file system. Stateless; every call goes to the OS.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileStorage;

impl FileStorage {
    pub fn new() -> Self {
        FileStorage
    }
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes fully appended; readers never read past it.
    len: AtomicU64,
    /// Serializes appends and truncates (the len update must follow the write).
    write_lock: Mutex<()>,
    /// Truncations so far, bumped before each (see `FileRegion`).
    truncations: AtomicU64,
    /// Bytes the last `sync` covered: everything appended before it started.
    synced_len: AtomicU64,
    /// Bytes below which the cache was last told to drop pages (`drop_cached`), page-aligned.
    dropped_to: AtomicU64,
}

impl Inner {
    fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = self.len();
        check_read_range(pos, buf.len(), len)?;
        self.file.read_exact_at(buf, pos)
    }
}

impl RegionSource for Inner {
    fn read_region_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        Inner::read_at(self, pos, buf)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn truncations(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }
}

/// A shared handle on one open file.
#[derive(Clone, Debug)]
pub struct FileHandle {
    inner: Arc<Inner>,
}

impl FileHandle {
    /// Runs `write` (which must write exactly `bytes` at the position it is given) at the end
    /// of the file under the write lock, then publishes the new length. A failed write is cut
    /// off as far as it landed; the tracked length is unchanged either way, so the next
    /// append overwrites any partial bytes.
    fn append_with(
        &self,
        bytes: u64,
        write: impl FnOnce(&File, u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let pos = self.inner.len.load(Ordering::Acquire);
        let end = pos.checked_add(bytes).expect("file length overflow");
        match write(&self.inner.file, pos) {
            Ok(()) => {
                self.inner.len.store(end, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = self.inner.file.set_len(pos);
                Err(e)
            }
        }
    }
}

/// The page size `drop_cached` rounds down to (x86-64 and most arm64 kernels; on larger pages
/// the kernel itself keeps the partial page a range ends inside).
const DROP_PAGE_BYTES: u64 = 4096;

/// Most slices one `pwritev` is given (Linux's IOV_MAX).
const IOV_PER_CALL_MAX: usize = 1024;

/// Writes all of `parts`, back to back, at `pos`: `pwritev` calls of at most
/// `IOV_PER_CALL_MAX` slices, resumed after short writes and interrupts.
fn write_all_vectored_at(file: &File, parts: &[&[u8]], pos: u64) -> io::Result<()> {
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    // Where the next byte to write is: part index and offset inside it.
    let (mut part, mut skip) = (0usize, 0usize);
    let mut written = 0u64;
    let mut iov: Vec<io::IoSlice<'_>> = Vec::with_capacity(parts.len().min(IOV_PER_CALL_MAX));
    while written < total {
        while part < parts.len() && skip == parts[part].len() {
            (part, skip) = (part + 1, 0);
        }
        iov.clear();
        iov.push(io::IoSlice::new(&parts[part][skip..]));
        iov.extend(
            parts[part + 1..]
                .iter()
                .filter(|p| !p.is_empty())
                .take(IOV_PER_CALL_MAX - 1)
                .map(|p| io::IoSlice::new(p)),
        );
        let offset = libc::off_t::try_from(pos + written)
            .map_err(|_| io::Error::other("file offset out of range"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the slices borrow `parts`,
        // alive for the call; the descriptor belongs to `file`.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr().cast::<libc::iovec>(),
                iov.len() as libc::c_int,
                offset,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut n = n as usize;
        written += n as u64;
        // Advance (part, skip) past the n bytes just written.
        while n > 0 {
            let left = parts[part].len() - skip;
            if n < left {
                skip += n;
                n = 0;
            } else {
                n -= left;
                (part, skip) = (part + 1, 0);
            }
        }
    }
    assert_eq!(written, total, "wrote past the parts");
    Ok(())
}

impl StorageFile for FileHandle {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn append(&self, data: &[u8]) -> io::Result<()> {
        self.append_with(data.len() as u64, |file, pos| file.write_all_at(data, pos))
    }

    fn append_parts(&self, parts: &[&[u8]]) -> io::Result<()> {
        let total = parts.iter().map(|p| p.len() as u64).sum();
        self.append_with(total, |file, pos| write_all_vectored_at(file, parts, pos))
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(pos, buf)
    }

    fn sync(&self) -> io::Result<()> {
        let len = self.len();
        self.inner.file.sync_data()?;
        self.inner.synced_len.fetch_max(len, Ordering::AcqRel);
        Ok(())
    }

    fn drop_cached(&self) {
        // Whole synced pages only, and only those not advised before. The page holding the end
        // stays cached, since the next append would otherwise read it back from the disk first
        // (a synchronous read in the write path). Pages appended since the sync are dirty and
        // would stay anyway; they are advised after the sync that covers them.
        let end = self.inner.synced_len.load(Ordering::Acquire) / DROP_PAGE_BYTES * DROP_PAGE_BYTES;
        let from = self.inner.dropped_to.swap(end, Ordering::AcqRel).min(end);
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(from),
            libc::off_t::try_from(end - from),
        ) else {
            return;
        };
        if len == 0 {
            return;
        }
        // SAFETY: advice on a descriptor this handle keeps open; no memory is passed.
        let _ = unsafe {
            libc::posix_fadvise(
                self.inner.file.as_raw_fd(),
                offset,
                len,
                libc::POSIX_FADV_DONTNEED,
            )
        };
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let _guard = self
            .inner
            .write_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Counted first, so a region read racing the cut sees the change afterwards.
        self.inner.truncations.fetch_add(1, Ordering::AcqRel);
        self.inner.file.set_len(len)?;
        self.inner.len.store(len, Ordering::Release);
        // Bytes written again past the cut are neither synced nor advised yet.
        self.inner.synced_len.fetch_min(len, Ordering::AcqRel);
        self.inner
            .dropped_to
            .fetch_min(len / DROP_PAGE_BYTES * DROP_PAGE_BYTES, Ordering::AcqRel);
        Ok(())
    }

    fn region(&self, pos: u64, len: u64) -> Option<FileRegion> {
        assert!(pos + len <= self.len(), "region past the file end");
        let source: Arc<dyn RegionSource> = self.inner.clone();
        Some(FileRegion::new(source, pos, len))
    }
}

impl Storage for FileStorage {
    type File = FileHandle;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path) -> io::Result<FileHandle> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(FileHandle {
            inner: Arc::new(Inner {
                file,
                len: AtomicU64::new(len),
                write_lock: Mutex::new(()),
                truncations: AtomicU64::new(0),
                synced_len: AtomicU64::new(len),
                dropped_to: AtomicU64::new(0),
            }),
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn volume_space(&self, dir: &Path) -> Option<VolumeSpace> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs only writes the struct it is given, and `path` is NUL-terminated.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
            return None;
        }
        let block = stats.f_frsize as u64;
        Some(VolumeSpace {
            total_bytes: (stats.f_blocks as u64).saturating_mul(block),
            usable_bytes: (stats.f_bavail as u64).saturating_mul(block),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Which of the first `pages` pages of `path` are in the page cache (mincore).
    fn resident_pages(path: &Path, pages: usize) -> Vec<bool> {
        let file = File::open(path).unwrap();
        let bytes = pages * DROP_PAGE_BYTES as usize;
        // SAFETY: a private read-only mapping of a file this test keeps open, unmapped below;
        // mincore writes one byte per page into a vector of exactly that many.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            let mut vec = vec![0u8; pages];
            assert_eq!(libc::mincore(addr, bytes, vec.as_mut_ptr()), 0);
            libc::munmap(addr, bytes);
            vec.iter().map(|b| b & 1 == 1).collect()
        }
    }

    #[test]
    fn dropping_cached_pages_keeps_the_one_the_next_append_lands_in() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x");
        let f = FileStorage::new().open(&path).unwrap();
        let page = DROP_PAGE_BYTES;
        f.append(&vec![7u8; (3 * page + 100) as usize]).unwrap();
        f.sync().unwrap();
        f.drop_cached();
        assert_eq!(f.inner.dropped_to.load(Ordering::Acquire), 3 * page);
        // Dropped or not (the kernel decides), the partial last page was never advised.
        assert!(
            resident_pages(&path, 4)[3],
            "the page holding the end left the cache"
        );
        f.append(&vec![8u8; 5000]).unwrap();
        f.sync().unwrap();
        // Appended after the sync: not advised (it would stay cached, dirty, and never be
        // advised again).
        f.append(&vec![9u8; (2 * page) as usize]).unwrap();
        f.drop_cached();
        assert_eq!(f.inner.dropped_to.load(Ordering::Acquire), 4 * page);
        assert!(resident_pages(&path, 5)[4]);
        f.sync().unwrap();
        f.drop_cached();
        assert_eq!(f.inner.dropped_to.load(Ordering::Acquire), 6 * page);
        f.truncate(page + 10).unwrap();
        assert_eq!(f.inner.dropped_to.load(Ordering::Acquire), page);
        assert_eq!(f.inner.synced_len.load(Ordering::Acquire), page + 10);
        let mut back = vec![0u8; (page + 10) as usize];
        f.read_at(0, &mut back).unwrap();
        assert!(
            back.iter().all(|&b| b == 7),
            "dropped pages read back from the disk"
        );
    }

    #[test]
    fn concurrent_reads_during_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let s = FileStorage::new();
        let f = s.open(&tmp.path().join("x")).unwrap();
        let chunk = vec![7u8; 4096];
        let reader = f.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut reads = 0u32;
            while reader.len() < 4096 * 256 {
                let len = reader.len();
                if len >= 4096 {
                    reader.read_at(len - 4096, &mut buf).unwrap();
                    assert!(buf.iter().all(|b| *b == 7));
                    reads += 1;
                }
            }
            reads
        });
        for _ in 0..256 {
            f.append(&chunk).unwrap();
        }
        t.join().unwrap();
        assert_eq!(f.len(), 4096 * 256);
    }

    #[test]
    fn append_parts_writes_every_part_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let f = FileStorage::new().open(&tmp.path().join("v")).unwrap();
        f.append(b"head:").unwrap();
        // More parts than one pwritev takes, empty ones among them, of varied sizes.
        let owned: Vec<Vec<u8>> = (0..2500usize)
            .map(|i| vec![(i % 251) as u8; if i % 7 == 3 { 0 } else { 1 + i % 300 }])
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(|p| p.as_slice()).collect();
        f.append_parts(&parts).unwrap();
        f.append(b":tail").unwrap();
        let want: Vec<u8> = [&b"head:"[..], &owned.concat(), &b":tail"[..]].concat();
        assert_eq!(f.len(), want.len() as u64);
        let mut got = vec![0u8; want.len()];
        f.read_at(0, &mut got).unwrap();
        assert!(got == want, "file differs from the parts written");
        // Reopened: the bytes are in the file, not just in the tracked length.
        let again = FileStorage::new().open(&tmp.path().join("v")).unwrap();
        assert_eq!(again.len(), want.len() as u64);
    }

    #[test]
    fn append_parts_of_nothing_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let f = FileStorage::new().open(&tmp.path().join("e")).unwrap();
        f.append(b"abc").unwrap();
        f.append_parts(&[]).unwrap();
        f.append_parts(&[b"", b""]).unwrap();
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn append_throughput_smoke() {
        let tmp = tempfile::tempdir().unwrap();
        let f = FileStorage::new().open(&tmp.path().join("big")).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let start = Instant::now();
        for _ in 0..64 {
            f.append(&chunk).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(f.len(), 64 << 20);
        // A printed figure, not a timed assertion: speed belongs to the benchmarks.
        eprintln!("FileStorage append: {:.0} MiB/s", 64.0 / secs);
    }
}
