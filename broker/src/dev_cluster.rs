//! `broker dev-cluster`: runs an N-node cluster of this executable on loopback for development
//! and failure experiments (kill -9 a node, SIGSTOP one, watch the others carry on).
//!
//! Node i (1-based) gets Kafka port `base + i - 1`, controller port `base + 100 + i - 1`, with
//! `--metrics` a metrics port `base + 200 + i - 1`, and the data directory `<data-dir>/node-i`. `--brokers M` adds M broker-only nodes after the voters
//! (`--process-roles broker`, ids N+1..N+M, Kafka ports after the voters', no controller port); its pid goes to `<data-dir>/node-i.pid` and its stdout
//! and stderr to `<data-dir>/node-i.log` (truncated at each start). Once every node printed
//! `listening on`, the supervisor prints `cluster ready: bootstrap HOST:PORT,...` and waits.
//! SIGTERM or Ctrl-C stops every node with SIGTERM (SIGKILL after a bound) and removes the pid
//! files. A node that dies on its own is reported on stderr and not restarted: the others keep
//! running.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::VOTERS_MAX;

/// Subcommands of the `broker` binary; without one it runs a broker.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Run an N-node cluster of this binary on 127.0.0.1 (development and failure experiments).
    DevCluster(DevClusterArgs),
}

/// Flags of `broker dev-cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevClusterArgs {
    /// Number of voting nodes, 1..=9; each is a voter and a broker.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Broker-only nodes besides the voters, 0..=16 (`--process-roles broker`).
    #[arg(long, default_value_t = 0)]
    pub brokers: usize,
    /// Kafka port of node 1; node i listens on BASE+i-1 and its controller on BASE+100+i-1.
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Directory holding each node's data (`node-i/`), log (`node-i.log`) and pid file.
    #[arg(long, default_value = "./dev-cluster")]
    pub data_dir: PathBuf,
    /// Passed to every node as `--fsync` (always, never or interval:MS).
    #[arg(long)]
    pub fsync: Option<String>,
    /// Serve each node's Prometheus metrics at http://127.0.0.1:PORT+200/metrics (PORT its
    /// Kafka port).
    #[arg(long)]
    pub metrics: bool,
    /// Further flags for every node, after `--` (e.g. `-- --min-insync-replicas 2`).
    #[arg(last = true)]
    pub node_args: Vec<String>,
}

/// Most broker-only nodes a dev cluster runs.
pub const DEV_BROKERS_MAX: usize = 16;
/// Loopback host every node binds.
const HOST: &str = "127.0.0.1";
/// Controller ports are the Kafka ports plus this.
const CONTROLLER_PORT_OFFSET: u16 = 100;
/// Metrics ports (`--metrics`) are the Kafka ports plus this.
const METRICS_PORT_OFFSET: u16 = 200;
/// How long every node together may take to print `listening on`.
const STARTUP_TIMEOUT_MS: u64 = 60_000;
/// How long the nodes may take to exit after SIGTERM before they are killed.
const SHUTDOWN_TIMEOUT_MS: u64 = 30_000;
/// Poll interval of the supervisor loop.
const POLL_MS: u64 = 100;
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// Set by the SIGTERM/SIGINT handler.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The ports and addresses of a dev cluster: `nodes` voters, then `brokers` broker-only nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub nodes: usize,
    pub brokers: usize,
    pub base_port: u16,
}

impl Layout {
    pub fn new(nodes: usize, brokers: usize, base_port: u16) -> anyhow::Result<Layout> {
        if !(1..=VOTERS_MAX).contains(&nodes) {
            bail!("--nodes must be 1..={VOTERS_MAX}, got {nodes}");
        }
        if brokers > DEV_BROKERS_MAX {
            bail!("--brokers must be 0..={DEV_BROKERS_MAX}, got {brokers}");
        }
        let last = base_port as u32 + CONTROLLER_PORT_OFFSET as u32 + nodes as u32 - 1;
        if base_port == 0 || last > u16::MAX as u32 {
            bail!(
                "--base-port {base_port} leaves no room for {nodes} Kafka ports and their \
                 controller ports (+{CONTROLLER_PORT_OFFSET})"
            );
        }
        Ok(Layout {
            nodes,
            brokers,
            base_port,
        })
    }

    /// Every node's id: the voters, then the broker-only nodes.
    pub fn ids(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.nodes + self.brokers
    }

    /// Whether node `id` only brokers (observes the quorum).
    pub fn broker_only(&self, id: usize) -> bool {
        id > self.nodes
    }

    /// Kafka listener port of node `id` (1-based).
    pub fn kafka_port(&self, id: usize) -> u16 {
        self.base_port + id as u16 - 1
    }

    /// Controller listener port of node `id` (1-based).
    pub fn controller_port(&self, id: usize) -> u16 {
        self.kafka_port(id) + CONTROLLER_PORT_OFFSET
    }

    /// Metrics listener port of node `id` (1-based), with `--metrics`; None past 65535.
    pub fn metrics_port(&self, id: usize) -> Option<u16> {
        self.kafka_port(id).checked_add(METRICS_PORT_OFFSET)
    }

    /// `1@127.0.0.1:9192,2@127.0.0.1:9193,...`
    pub fn voters(&self) -> String {
        (1..=self.nodes)
            .map(|id| format!("{id}@{HOST}:{}", self.controller_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `127.0.0.1:9092,127.0.0.1:9093,...`
    pub fn bootstrap(&self) -> String {
        self.ids()
            .map(|id| format!("{HOST}:{}", self.kafka_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The command-line arguments of node `id`.
    pub fn node_args(&self, id: usize, args: &DevClusterArgs) -> Vec<String> {
        let mut out = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".to_string(),
            format!("{HOST}:{}", self.kafka_port(id)),
        ];
        if self.broker_only(id) {
            out.extend(["--process-roles".to_string(), "broker".to_string()]);
        } else {
            out.push("--controller-listen".to_string());
            out.push(format!("{HOST}:{}", self.controller_port(id)));
        }
        out.extend([
            "--voters".to_string(),
            self.voters(),
            "--data-dir".to_string(),
            node_dir(&args.data_dir, id).display().to_string(),
        ]);
        if let Some(f) = &args.fsync {
            out.push("--fsync".to_string());
            out.push(f.clone());
        }
        if let Some(port) = self.metrics_port(id).filter(|_| args.metrics) {
            out.push("--metrics-listen".to_string());
            out.push(format!("{HOST}:{port}"));
        }
        out.extend(args.node_args.iter().cloned());
        out
    }
}

fn node_dir(data_dir: &Path, id: usize) -> PathBuf {
    data_dir.join(format!("node-{id}"))
}

fn pid_path(data_dir: &Path, id: usize) -> PathBuf {
    data_dir.join(format!("node-{id}.pid"))
}

fn log_path(data_dir: &Path, id: usize) -> PathBuf {
    data_dir.join(format!("node-{id}.log"))
}

/// One supervised node.
struct Node {
    id: usize,
    child: Option<Child>,
    log: PathBuf,
}

/// Runs the dev cluster until SIGTERM or Ctrl-C. Returns an error if it cannot start.
pub fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    let layout = Layout::new(args.nodes, args.brokers, args.base_port)?;
    if args.metrics && layout.ids().any(|id| layout.metrics_port(id).is_none()) {
        bail!(
            "--base-port {} leaves no room for the metrics ports (+{METRICS_PORT_OFFSET})",
            args.base_port
        );
    }
    if let Some(f) = &args.fsync {
        f.parse::<crate::config::FsyncPolicy>()
            .map_err(anyhow::Error::msg)?;
    }
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    for id in layout.ids() {
        refuse_if_running(&pid_path(&args.data_dir, id))?;
    }
    install_stop_handler();
    let exe = std::env::current_exe().context("locating the broker executable")?;
    let mut nodes: Vec<Node> = Vec::new();
    let started = start_all(&exe, &layout, &args, &mut nodes);
    if let Err(e) = started {
        stop_all(&mut nodes, &args.data_dir);
        return Err(e);
    }
    if STOP.load(Ordering::SeqCst) {
        stop_all(&mut nodes, &args.data_dir);
        return Ok(());
    }
    {
        let mut out = std::io::stdout().lock();
        if args.metrics {
            let urls: Vec<String> = layout
                .ids()
                .filter_map(|id| layout.metrics_port(id))
                .map(|port| format!("http://{HOST}:{port}/metrics"))
                .collect();
            writeln!(out, "metrics: {}", urls.join(" "))?;
        }
        writeln!(out, "cluster ready: bootstrap {}", layout.bootstrap())?;
        out.flush()?;
    }
    while !STOP.load(Ordering::SeqCst) {
        for node in &mut nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!(
                    "dev-cluster: node {} (pid {}) exited unexpectedly ({status}); the others keep \
                     running. Last lines of {}:\n{}",
                    node.id,
                    child.id(),
                    node.log.display(),
                    tail(&node.log, LOG_TAIL_LINES)
                );
                node.child = None;
                let _ = fs::remove_file(pid_path(&args.data_dir, node.id));
            }
        }
        thread::sleep(Duration::from_millis(POLL_MS));
    }
    eprintln!("dev-cluster: stopping {} nodes", layout.ids().count());
    stop_all(&mut nodes, &args.data_dir);
    Ok(())
}

/// Spawns every node, then waits for each to print `listening on`.
fn start_all(
    exe: &Path,
    layout: &Layout,
    args: &DevClusterArgs,
    nodes: &mut Vec<Node>,
) -> anyhow::Result<()> {
    for id in layout.ids() {
        let dir = node_dir(&args.data_dir, id);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = log_path(&args.data_dir, id);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = process::Command::new(exe);
        cmd.args(layout.node_args(id, args))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            // A supervisor killed with -9 then does not leave its nodes running.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node {id} ({})", exe.display()))?;
        let pid = pid_path(&args.data_dir, id);
        fs::write(&pid, format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", pid.display()))?;
        nodes.push(Node {
            id,
            child: Some(child),
            log,
        });
    }
    let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
    let mut ready = vec![false; nodes.len()];
    while !ready.iter().all(|&r| r) {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if log_contains(&node.log, "listening on ") {
                ready[i] = true;
                continue;
            }
            let child = node.child.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                let _ = fs::remove_file(pid_path(&args.data_dir, node.id));
                bail!(
                    "node {} exited during startup ({status}); last lines of {}:\n{}",
                    node.id,
                    node.log.display(),
                    tail(&node.log, LOG_TAIL_LINES)
                );
            }
        }
        if Instant::now() > deadline {
            let slow = nodes
                .iter()
                .zip(&ready)
                .find(|(_, &r)| !r)
                .map(|(n, _)| n)
                .expect("a node is not ready");
            bail!(
                "node {} did not print `listening on` within {STARTUP_TIMEOUT_MS} ms; last lines \
                 of {}:\n{}",
                slow.id,
                slow.log.display(),
                tail(&slow.log, LOG_TAIL_LINES)
            );
        }
        thread::sleep(Duration::from_millis(POLL_MS));
    }
    Ok(())
}

/// SIGTERM to every running node, wait (bounded), SIGKILL stragglers, remove pid files.
fn stop_all(nodes: &mut [Node], data_dir: &Path) {
    for node in nodes.iter() {
        if let Some(child) = &node.child {
            // SAFETY: kill(2) on our own unreaped child, so the pid cannot have been reused.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_TIMEOUT_MS);
    for node in nodes.iter_mut() {
        if let Some(mut child) = node.child.take() {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            eprintln!("dev-cluster: node {} exited with {status}", node.id);
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(POLL_MS / 5))
                    }
                    _ => {
                        eprintln!(
                            "dev-cluster: node {} did not exit within {SHUTDOWN_TIMEOUT_MS} ms \
                             of SIGTERM; killing it",
                            node.id
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        let _ = fs::remove_file(pid_path(data_dir, node.id));
    }
}

/// Refuses to start over a pid file whose process is still alive.
fn refuse_if_running(pid_file: &Path) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return Ok(());
    };
    if let Ok(pid) = text.trim().parse::<libc::pid_t>() {
        // SAFETY: signal 0 only checks that the process exists.
        if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
            bail!(
                "{} names pid {pid}, which is running: a dev cluster seems to be up already \
                 (stop it, or remove the pid file if that pid is something else)",
                pid_file.display()
            );
        }
    }
    let _ = fs::remove_file(pid_file);
    Ok(())
}

fn install_stop_handler() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

fn log_contains(path: &Path, needle: &str) -> bool {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}

/// The last `n` lines of a file (at most its last 64 KiB), or a note if it cannot be read.
fn tail(path: &Path, n: usize) -> String {
    let mut f = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nodes: usize, base_port: u16) -> DevClusterArgs {
        DevClusterArgs {
            nodes,
            brokers: 0,
            base_port,
            data_dir: PathBuf::from("/tmp/dc"),
            fsync: Some("never".into()),
            metrics: false,
            node_args: vec!["--min-insync-replicas".into(), "2".into()],
        }
    }

    #[test]
    fn metrics_ports_follow_the_kafka_ports() {
        let a = DevClusterArgs {
            metrics: true,
            brokers: 1,
            ..args(3, 9092)
        };
        let l = Layout::new(a.nodes, a.brokers, a.base_port).unwrap();
        let four = l.node_args(4, &a);
        let at = four
            .iter()
            .position(|x| x == "--metrics-listen")
            .expect("metrics flag");
        assert_eq!(four[at + 1], "127.0.0.1:9295");
        assert!(!l
            .node_args(1, &args(3, 9092))
            .contains(&"--metrics-listen".to_string()));
        use clap::Parser;
        let flags =
            crate::config::Flags::try_parse_from(std::iter::once("broker".to_string()).chain(four))
                .unwrap();
        let c = crate::config::BrokerConfig::from_flags(flags).unwrap();
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9295"));
        assert_eq!(Layout::new(3, 0, 65_400).unwrap().metrics_port(1), None);
    }

    #[test]
    fn three_nodes_get_consecutive_ports_and_one_voters_string() {
        let a = args(3, 9092);
        let l = Layout::new(a.nodes, a.brokers, a.base_port).unwrap();
        assert_eq!(
            l.voters(),
            "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
        );
        assert_eq!(
            l.bootstrap(),
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
        );
        assert_eq!(
            l.node_args(2, &a),
            [
                "--node-id",
                "2",
                "--listen",
                "127.0.0.1:9093",
                "--controller-listen",
                "127.0.0.1:9193",
                "--voters",
                "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194",
                "--data-dir",
                "/tmp/dc/node-2",
                "--fsync",
                "never",
                "--min-insync-replicas",
                "2",
            ]
        );
        // The voters string is what the broker itself accepts.
        let v = crate::config::parse_voters(&l.voters()).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].addr(), "127.0.0.1:9194");
    }

    #[test]
    fn broker_only_nodes_follow_the_voters_without_a_controller_port() {
        let a = DevClusterArgs {
            brokers: 2,
            ..args(3, 9092)
        };
        let l = Layout::new(a.nodes, a.brokers, a.base_port).unwrap();
        assert_eq!(l.ids().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(
            l.voters(),
            "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194",
            "broker-only nodes are not voters"
        );
        assert!(l.bootstrap().ends_with(",127.0.0.1:9095,127.0.0.1:9096"));
        let four = l.node_args(4, &a);
        assert_eq!(
            four[..6],
            [
                "--node-id",
                "4",
                "--listen",
                "127.0.0.1:9095",
                "--process-roles",
                "broker"
            ]
        );
        assert!(!four.iter().any(|x| x == "--controller-listen"));
        // What the broker itself makes of those flags.
        use clap::Parser;
        let flags =
            crate::config::Flags::try_parse_from(std::iter::once("broker".to_string()).chain(four))
                .unwrap();
        let c = crate::config::BrokerConfig::from_flags(flags).unwrap();
        assert_eq!(c.cluster.process_roles, crate::config::ProcessRoles::Broker);
    }

    #[test]
    fn node_count_and_port_range_are_checked() {
        assert!(Layout::new(0, 0, 9092).is_err());
        assert!(Layout::new(10, 0, 9092).is_err());
        assert!(Layout::new(9, 0, 9092).is_ok());
        assert!(Layout::new(9, DEV_BROKERS_MAX, 9092).is_ok());
        assert!(Layout::new(3, DEV_BROKERS_MAX + 1, 9092).is_err());
        assert!(Layout::new(1, 0, 0).is_err());
        assert!(
            Layout::new(3, 0, 65_434).is_err(),
            "controller port past 65535"
        );
        assert!(Layout::new(3, 0, 65_433).is_ok());
    }

    #[test]
    fn subcommand_parses_on_the_broker_command_line() {
        use clap::Parser;
        let f = crate::config::Flags::try_parse_from([
            "broker",
            "dev-cluster",
            "--nodes",
            "3",
            "--base-port",
            "19092",
            "--",
            "--min-insync-replicas",
            "2",
        ])
        .unwrap();
        let Some(Command::DevCluster(a)) = f.command else {
            panic!("no subcommand: {f:?}");
        };
        assert_eq!((a.nodes, a.base_port), (3, 19092));
        assert_eq!(a.data_dir, PathBuf::from("./dev-cluster"));
        assert_eq!(a.node_args, ["--min-insync-replicas", "2"]);
        let plain = crate::config::Flags::try_parse_from(["broker", "--node-id", "2"]).unwrap();
        assert!(plain.command.is_none());
    }
}
