//! Process harness for the broker's real-process interop tests.
//!
//! [`Broker`] runs the release `broker` binary as a child process on an ephemeral loopback
//! port with its own temporary data directory, so every test gets an isolated broker and
//! tests can run in parallel. It can crash the broker (`kill -9`), stop it cleanly (SIGTERM)
//! and start it again on the same data directory, which is what the recovery tests need.
//!
//! The binary is found through `BROKER_BIN`, else `<target dir>/release/broker` where the
//! target dir is `CARGO_TARGET_DIR` or `<workspace>/target`. Build it first with
//! `cargo build --release -p broker`.
//!
//! [`cluster::Cluster`] runs three such processes as one replicated cluster. [`copy_floor`]
//! measures what the kernel charges for one replicated copy of a byte, for the benchmarks.

pub mod cluster;
pub mod copy_floor;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd broker may take to exit.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the broker binary under test.
pub fn broker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BROKER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "BROKER_BIN={} does not exist; build it with `cargo build --release -p broker`",
            p.display()
        );
        return p;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                workspace.join(t)
            }
        }
        None => workspace.join("target"),
    };
    let bin = target.join("release").join("broker");
    assert!(
        bin.is_file(),
        "broker binary not found at {}: run `cargo build --release -p broker` first \
         (same CARGO_TARGET_DIR), or point BROKER_BIN at a built binary",
        bin.display()
    );
    bin
}

/// Options for starting a broker; every `--flag value` is passed through verbatim.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    args: Vec<(String, String)>,
    binary: Option<PathBuf>,
}

impl BrokerConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `--name value` (name without the leading dashes). Replaces an earlier value.
    pub fn arg(mut self, name: &str, value: impl ToString) -> Self {
        let name = name.trim_start_matches('-').to_string();
        self.args.retain(|(n, _)| *n != name);
        self.args.push((name, value.to_string()));
        self
    }

    /// Runs this executable instead of [`broker_bin`] (used by the harness's own tests).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Starts a broker with these options and a fresh temporary data directory.
    pub fn start(self) -> Broker {
        Broker::start_with(self)
    }
}

/// A running (or stopped) broker process plus the data directory it owns.
pub struct Broker {
    config: BrokerConfig,
    // Field order matters for Drop: the child is killed in Drop::drop before the dirs go.
    child: Option<Child>,
    addr: String,
    starts: u32,
    logs: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker with default options.
    pub fn start() -> Broker {
        Self::start_with(BrokerConfig::new())
    }

    pub fn builder() -> BrokerConfig {
        BrokerConfig::new()
    }

    pub fn start_with(config: BrokerConfig) -> Broker {
        let data = tempfile::Builder::new()
            .prefix("broker-data-")
            .tempdir()
            .expect("create data dir");
        let logs = tempfile::Builder::new()
            .prefix("broker-logs-")
            .tempdir()
            .expect("create log dir");
        let mut b = Broker {
            config,
            child: None,
            addr: String::new(),
            starts: 0,
            logs,
            data,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.starts += 1;
        let stderr_path = self.stderr_path_for(self.starts);
        let stderr = File::create(&stderr_path).expect("create stderr log");
        let bin = self.config.binary.clone().unwrap_or_else(broker_bin);
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.data.path());
        for (n, v) in &self.config.args {
            if n == "listen" || n == "data-dir" {
                continue;
            }
            cmd.arg(format!("--{n}")).arg(v);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // The contract says nothing more comes on stdout; drain anyway so a chatty
            // broker never blocks on a full pipe.
            for line in lines {
                if line.is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not print `listening on ADDR` within {:?} (exit status: {:?}); stderr:\n{}",
                    STARTUP_TIMEOUT,
                    status,
                    tail(&stderr_path, 60)
                );
            }
        };
        let addr = match line.trim().strip_prefix("listening on ") {
            Some(a) => a.trim().to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker's first stdout line was {line:?}, expected `listening on 127.0.0.1:PORT`; stderr:\n{}",
                    tail(&stderr_path, 60)
                );
            }
        };
        assert!(
            addr.parse::<std::net::SocketAddr>().is_ok(),
            "`listening on` line does not hold a socket address: {line:?}"
        );
        self.addr = addr;
        self.child = Some(child);
    }

    fn stderr_path_for(&self, start: u32) -> PathBuf {
        self.logs.path().join(format!("stderr-{start}.log"))
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        assert!(self.child.is_some(), "broker is not running");
        self.addr.clone()
    }

    /// The socket address the broker listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.bootstrap().parse().expect("socket address")
    }

    /// The broker's data directory (kept across restarts, deleted on drop).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// `<data-dir>/<topic>-<partition>`.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data.path().join(format!("{topic}-{partition}"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process is running (not exited, not reaped).
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Panics with the broker's stderr if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "broker process died ({status}); stderr:\n{}",
                    self.stderr_tail(80)
                );
            }
        } else {
            panic!("broker is not running");
        }
    }

    /// Crash: SIGKILL and reap. Nothing gets flushed or fsynced by the broker.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker is not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Clean stop: SIGTERM and wait for exit. Returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("broker is not running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid; the child is not reaped yet, so the
        // pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "broker did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                        self.stderr_tail(80)
                    );
                }
                Err(e) => panic!("wait for broker: {e}"),
            }
        }
    }

    /// SIGTERM and assert a zero exit status.
    pub fn terminate_ok(&mut self) {
        let status = self.terminate();
        assert!(
            status.success(),
            "broker exited with {status} after SIGTERM, expected 0; stderr:\n{}",
            self.stderr_tail(80)
        );
    }

    /// Starts the broker again on the same data directory (the port may change; clients must
    /// be recreated with the new `bootstrap()`). A still-running broker is stopped cleanly first.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate_ok();
        }
        self.spawn();
    }

    /// The last `lines` lines the current (or last) broker process wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path_for(self.starts), lines)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- broker stderr (last start of {}, tail) ----\n{}\n---- end broker stderr ----",
                self.starts,
                self.stderr_tail(60)
            );
        }
    }
}

/// The last `n` lines of a text file (lossy), or a note if it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// `*.log` segment files of a partition directory, sorted by base offset.
pub fn segment_files(partition_dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(partition_dir) {
        Ok(rd) => rd,
        Err(_) => return out,
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                out.push((stem.parse::<i64>().expect("20 digits"), path));
            }
        }
    }
    out.sort();
    out
}

/// One Kafka v2 record batch as laid out in a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the file.
    pub position: u64,
    /// Total size in bytes (12-byte offset/length prefix plus `batchLength`).
    pub size: u64,
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub magic: i8,
    pub record_count: i32,
}

impl BatchInfo {
    /// One past the last offset in the batch.
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
    pub fn end(&self) -> u64 {
        self.position + self.size
    }
}

/// Walks the record batches of a segment file's bytes. Stops at the first incomplete batch
/// (a torn tail is not returned). Does not check CRCs.
pub fn parse_batches(bytes: &[u8]) -> Vec<BatchInfo> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    // baseOffset i64, batchLength i32, partitionLeaderEpoch i32, magic i8, crc u32,
    // attributes i16, lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64,
    // producerId i64, producerEpoch i16, baseSequence i32, records count i32 = 61 bytes.
    while pos + 61 <= bytes.len() {
        let base_offset = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap());
        let batch_len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if batch_len < 49 {
            break;
        }
        let size = 12 + batch_len as usize;
        if pos + size > bytes.len() {
            break;
        }
        let magic = bytes[pos + 16] as i8;
        let last_offset_delta = i32::from_be_bytes(bytes[pos + 23..pos + 27].try_into().unwrap());
        let record_count = i32::from_be_bytes(bytes[pos + 57..pos + 61].try_into().unwrap());
        out.push(BatchInfo {
            position: pos as u64,
            size: size as u64,
            base_offset,
            last_offset_delta,
            magic,
            record_count,
        });
        pos += size;
    }
    out
}

/// Deterministic pseudo-random bytes derived from `seed` (splitmix64 stream), so a consumer
/// can recompute and check every byte of a message from its index alone.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `cond` every 100 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A name unique within this machine for this run, for topics.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_seed_dependent() {
        assert_eq!(payload(7, 1024), payload(7, 1024));
        assert_ne!(payload(7, 1024), payload(8, 1024));
        assert_eq!(payload(7, 13).len(), 13);
        assert_eq!(&payload(7, 1024)[..13], &payload(7, 13)[..]);
    }

    #[test]
    fn parse_batches_stops_at_torn_tail() {
        fn batch(base: i64, delta: i32, body: usize) -> Vec<u8> {
            let batch_len = 49 + body as i32;
            let mut b = Vec::new();
            b.extend_from_slice(&base.to_be_bytes());
            b.extend_from_slice(&batch_len.to_be_bytes());
            b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
            b.push(2); // magic
            b.extend_from_slice(&0u32.to_be_bytes()); // crc
            b.extend_from_slice(&0i16.to_be_bytes()); // attributes
            b.extend_from_slice(&delta.to_be_bytes());
            b.extend_from_slice(&[0u8; 8 + 8 + 8 + 2 + 4]);
            b.extend_from_slice(&(delta + 1).to_be_bytes());
            b.extend(vec![0xABu8; body]);
            b
        }
        let mut file = batch(0, 9, 100);
        file.extend(batch(10, 4, 50));
        let full = parse_batches(&file);
        assert_eq!(full.len(), 2);
        assert_eq!(full[1].base_offset, 10);
        assert_eq!(full[1].next_offset(), 15);
        assert_eq!(full[1].end() as usize, file.len());
        file.truncate(file.len() - 10);
        assert_eq!(parse_batches(&file).len(), 1);
    }

    /// A stand-in for the broker: binds, prints the line, exits 0 on SIGTERM, records its args.
    fn fake_broker(dir: &Path) -> PathBuf {
        let path = dir.join("fake-broker");
        fs::write(
            &path,
            r#"#!/usr/bin/env python3
import signal, socket, sys, os, time
args = sys.argv[1:]
data = args[args.index("--data-dir") + 1]
with open(os.path.join(data, "starts"), "a") as f:
    f.write(" ".join(args) + "\n")
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
print("fake broker up", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"#,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn harness_start_terminate_kill_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_broker(dir.path());
        let mut b = BrokerConfig::new()
            .binary(&bin)
            .arg("--retention-check-interval-ms", 200)
            .arg("fsync", "never")
            .start();
        let addr = b.addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        std::net::TcpStream::connect(addr).expect("connect to the announced port");
        assert!(b.is_alive());
        assert!(wait_until(Duration::from_secs(5), || b
            .stderr_tail(5)
            .contains("fake broker up")));
        b.terminate_ok();
        assert!(!b.is_alive());
        b.restart();
        b.assert_alive();
        let pid = b.pid().unwrap();
        b.kill9();
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || !b.is_alive());
        b.restart();
        b.restart(); // running: stops cleanly first
        let starts = fs::read_to_string(b.data_dir().join("starts")).unwrap();
        let lines: Vec<&str> = starts.lines().collect();
        assert_eq!(lines.len(), 4, "{starts}");
        for l in &lines {
            assert!(l.starts_with("--listen 127.0.0.1:0 --data-dir "), "{l}");
            assert!(
                l.ends_with("--retention-check-interval-ms 200 --fsync never"),
                "{l}"
            );
        }
        let data = b.data_dir().to_path_buf();
        let pid = b.pid().unwrap();
        drop(b);
        assert!(!data.exists(), "data dir removed on drop");
        // Killed and reaped on drop: no such process (or at most a reused pid that is not ours).
        let gone = !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .map(|c| !c.contains("fake-broker"))
                .unwrap_or(true);
        assert!(gone, "fake broker still running after drop");
    }
}
