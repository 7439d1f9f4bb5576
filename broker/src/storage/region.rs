//! `FileRegion`: a range of one stored file, named instead of copied.
//!
//! A fetch response carries regions rather than bytes, so the connection writer can hand
//! them to the kernel (`sendfile`, page cache to socket, no copy through the broker) or, where
//! there is no file descriptor (the simulator's `MemStorage`, test pipes), read them at the
//! moment they are written.
//!
//! A region stays valid while its file only grows. Truncation (a leader that became a follower
//! cutting a divergent suffix) changes bytes a region may name, so every source counts its
//! truncations and a region made before one refuses to be read: the writer then closes the
//! connection instead of sending bytes the response did not promise. Deleting the file is
//! harmless: the region's handle keeps it open.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What a region reads from: one open file.
pub trait RegionSource: Send + Sync + 'static {
    /// Reads exactly `buf.len()` bytes at `pos` (UnexpectedEof if the file is shorter).
    fn read_region_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The OS file descriptor, if the bytes live in a real file the kernel can send from.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd>;
    /// How many times the file has been truncated; bumped before the truncation happens.
    fn truncations(&self) -> u64;
}

/// `len` bytes at `pos` of one file, as they were when the region was made.
#[derive(Clone)]
pub struct FileRegion {
    source: Arc<dyn RegionSource>,
    pos: u64,
    len: u64,
    truncations: u64,
}

impl fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRegion")
            .field("pos", &self.pos)
            .field("len", &self.len)
            .finish()
    }
}

impl FileRegion {
    /// A region of `source`; the caller has checked that `pos + len` is within the file.
    pub fn new(source: Arc<dyn RegionSource>, pos: u64, len: u64) -> Self {
        assert!(len > 0, "an empty region names nothing");
        assert!(pos.checked_add(len).is_some());
        let truncations = source.truncations();
        FileRegion {
            source,
            pos,
            len,
            truncations,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    #[allow(clippy::len_without_is_empty)] // a region is never empty (`new` asserts len > 0)
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.source.raw_fd()
    }

    /// Ok while the bytes named are still the bytes stored when the region was made.
    pub fn check_unchanged(&self) -> io::Result<()> {
        if self.source.truncations() == self.truncations {
            Ok(())
        } else {
            Err(io::Error::other(
                "stored file truncated under a response that names its bytes",
            ))
        }
    }

    /// Reads `buf.len()` bytes starting `offset` bytes into the region.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "read past the region"
        );
        self.check_unchanged()?;
        self.source.read_region_at(self.pos + offset, buf)?;
        // A truncation racing the read may have cut what was just read.
        self.check_unchanged()
    }

    /// The region's bytes, copied out.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.read_into(0, &mut buf)?;
        Ok(buf)
    }
}
