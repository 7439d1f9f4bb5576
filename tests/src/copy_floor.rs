//! The kernel's floor for one replicated copy of a byte, measured without the broker.
//!
//! Every byte a broker stores arrives on a socket, is CRC-checked and is written to the page
//! cache, then synced; a leader also `sendfile`s it to each follower. This module runs just
//! those system calls, on the same loopback and disk the cluster benchmarks use: a sender
//! thread `sendfile`s a page-cached file to a receiver thread that `read`s 8 MiB rounds (the
//! follower fetch size), checks CRC-32C with the broker's crate, `pwrite`s, `fdatasync`s and
//! drops the synced pages (drop-behind). Each step's cost comes from the thread's own CPU
//! clock, so it is what the step costs, not what it waits for.
//!
//! `cluster_bench floor` prints the figures; RF=3 does three such copies and two `sendfile`s
//! per byte produced where RF=1 does one copy, which bounds what broker code can win.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::thread;

/// Bytes per receive round: the broker's follower fetch limit per partition.
pub const ROUND_BYTES: usize = 8 << 20;
/// Most bytes one run moves.
pub const RUN_MIB_MAX: u64 = 64 << 10;

/// CPU time per MiB of each step, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Floor {
    pub receive_ms: f64,
    pub crc_ms: f64,
    pub write_ms: f64,
    pub sync_ms: f64,
    pub drop_ms: f64,
    pub sendfile_ms: f64,
    /// Wall-clock throughput of the run, MB/s.
    pub wall_mbs: f64,
}

impl Floor {
    /// One copy at a receiver: receive, CRC, write, sync and drop-behind.
    pub fn copy_ms(&self) -> f64 {
        self.receive_ms + self.crc_ms + self.write_ms + self.sync_ms + self.drop_ms
    }
}

/// CPU seconds this thread has used.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Writes `mib` MiB of pseudo-random bytes (xorshift; CRC work does not depend on content but
/// zero pages could be special-cased by someone) and syncs them, so the run's only disk writes
/// are the receiver's.
fn write_source(path: &Path, mib: u64) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.sync_all()?;
    Ok(f)
}

/// Measures one run of `mib` MiB in `dir` (which should be on the disk the brokers use).
pub fn measure(dir: &Path, mib: u64) -> std::io::Result<Floor> {
    assert!(
        mib > 0 && mib <= RUN_MIB_MAX,
        "mib {mib} out of 1..={RUN_MIB_MAX}"
    );
    let total = mib << 20;
    let source = write_source(&dir.join("floor-source"), mib)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;

    let sender = thread::spawn(move || -> std::io::Result<f64> {
        let socket = TcpStream::connect(addr)?;
        let cpu0 = thread_cpu_secs();
        let mut offset: libc::off_t = 0;
        while (offset as u64) < total {
            let want = (total - offset as u64) as usize;
            // SAFETY: both descriptors are open for the whole call; `offset` is a valid
            // in/out pointer that sendfile advances by what it sent.
            let n = unsafe {
                libc::sendfile(socket.as_raw_fd(), source.as_raw_fd(), &mut offset, want)
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            assert!(n > 0, "sendfile made no progress at {offset} of {total}");
        }
        Ok(thread_cpu_secs() - cpu0)
    });

    let (mut socket, _) = listener.accept()?;
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("floor-target"))?;
    let mut buf = vec![0u8; ROUND_BYTES];
    let mut spent = [0f64; 5];
    let mut crc = 0u32;
    let mut done = 0u64;
    let start = std::time::Instant::now();
    while done < total {
        let len = (total - done).min(ROUND_BYTES as u64) as usize;
        let round = &mut buf[..len];
        let mut t = thread_cpu_secs();
        let mut lap = |i: usize, t: &mut f64| {
            let now = thread_cpu_secs();
            spent[i] += now - *t;
            *t = now;
        };
        socket.read_exact(round)?;
        lap(0, &mut t);
        crc = crc32c::crc32c_append(crc, round);
        lap(1, &mut t);
        target.write_all_at(round, done)?;
        lap(2, &mut t);
        target.sync_data()?;
        lap(3, &mut t);
        // SAFETY: plain advice on an open descriptor; errors only mean the advice was ignored.
        let rc = unsafe {
            libc::posix_fadvise(
                target.as_raw_fd(),
                done as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0, "posix_fadvise: {rc}");
        lap(4, &mut t);
        done += len as u64;
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let sendfile_secs = sender.join().expect("sender thread")?;

    // The bytes that arrived are the bytes that were sent: a floor that dropped data would be
    // no floor.
    let mut check = vec![0u8; ROUND_BYTES];
    let mut expected = 0u32;
    let mut at = 0u64;
    let source = File::open(dir.join("floor-source"))?;
    while at < total {
        let len = (total - at).min(ROUND_BYTES as u64) as usize;
        source.read_exact_at(&mut check[..len], at)?;
        expected = crc32c::crc32c_append(expected, &check[..len]);
        at += len as u64;
    }
    assert_eq!(crc, expected, "received bytes differ from the source");
    std::fs::remove_file(dir.join("floor-source"))?;
    std::fs::remove_file(dir.join("floor-target"))?;

    let per_mib = |secs: f64| 1000.0 * secs / mib as f64;
    Ok(Floor {
        receive_ms: per_mib(spent[0]),
        crc_ms: per_mib(spent[1]),
        write_ms: per_mib(spent[2]),
        sync_ms: per_mib(spent[3]),
        drop_ms: per_mib(spent[4]),
        sendfile_ms: per_mib(sendfile_secs),
        wall_mbs: total as f64 / wall_secs / 1e6,
    })
}
