//! The data directory's lock: one broker process per `--data-dir`, as Kafka's `.lock` file.
//!
//! Two processes on one directory would append to the same segments and overwrite each
//! other's checkpoints: acknowledged records lost with no error. The production shell takes an
//! exclusive `flock` on `<data-dir>/.lock` before it opens anything and holds it until it
//! exits; the kernel drops it when the process dies, so a crash never leaves it stale. The
//! simulator's storage has no processes to exclude and takes none.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Held for as long as this process uses the directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if missing and locks it, or fails with a message naming the directory
    /// when another process holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                anyhow::bail!(
                    "data dir {} is in use by another broker process (it holds {}); two \
                     processes on one directory would overwrite each other's logs. Stop the \
                     other process or give this one its own --data-dir",
                    dir.display(),
                    path.display()
                );
            }
            anyhow::bail!("locking {}: {e}", path.display());
        }
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).expect("a fresh dir locks");
        assert_eq!(first.path(), data.join(LOCK_FILE));
        // flock locks belong to the open file, so a second open in this process is refused
        // just as another process's would be.
        let err = DataDirLock::acquire(&data).expect_err("held");
        assert!(
            err.to_string().contains("in use by another broker"),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(&data).expect("released on drop");
    }
}
