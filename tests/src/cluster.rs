//! A three-node broker cluster as real processes on loopback, for the replication interop tests.
//!
//! [`Cluster`] picks free Kafka and controller ports up front, starts every node with
//! `--node-id i --voters ... --listen ... --controller-listen ...` on its own data directory
//! (under one temporary directory), and can crash (`kill -9`), restart (same ports, same data),
//! freeze (`SIGSTOP`) and thaw (`SIGCONT`) single nodes. Nodes are named by their node id,
//! 1-based. Picking ports by binding port 0 and releasing it races with other processes; a start
//! that fails with "address in use" is retried on fresh ports.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{broker_bin, tail, STARTUP_TIMEOUT};

/// Nodes in a [`Cluster`].
pub const CLUSTER_NODES: usize = 3;
/// Attempts at starting a cluster when a picked port turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// Lines of a node's log shown when something fails.
const LOG_TAIL_LINES: usize = 60;
/// Timeout of one Metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// What a docker-compose file gives each broker service: the shared environment and each
/// service's command line, by node id (service `brokerN`). Read line by line: enough for the
/// deploy file's shape, checked by the test that uses it.
#[derive(Clone, Debug, Default)]
struct Compose {
    env: Vec<(String, String)>,
    commands: std::collections::BTreeMap<i32, Vec<String>>,
}

impl Compose {
    fn parse(text: &str) -> Compose {
        let mut c = Compose::default();
        let (mut in_env, mut service) = (false, None);
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            if in_env && indent >= 4 {
                let (k, v) = t.split_once(':').expect("KEY: value under environment");
                c.env
                    .push((k.trim().into(), v.trim().trim_matches('"').into()));
                continue;
            }
            in_env = t == "environment:";
            if indent == 2 && t.ends_with(':') {
                service = t
                    .strip_prefix("broker")
                    .and_then(|n| n.trim_end_matches(':').parse::<i32>().ok());
            }
            if let (Some(id), Some(list)) = (service, t.strip_prefix("command:")) {
                let list = list.trim().trim_start_matches('[').trim_end_matches(']');
                let args = list
                    .split(',')
                    .map(|a| a.trim().trim_matches('"').to_string())
                    .collect();
                c.commands.insert(id, args);
            }
        }
        c
    }
}

/// One partition as Metadata reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    /// Node id of the leader, -1 if none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: Option<String>,
}

struct Node {
    id: i32,
    kafka_port: u16,
    /// Where a compose node's `0.0.0.0:9644` metrics listener is mapped.
    metrics_port: u16,
    /// A voter's controller listener; broker-only nodes ([`Cluster::add_broker`]) have none.
    controller_port: Option<u16>,
    child: Option<Child>,
    stopped: bool,
    starts: u32,
}

/// A running cluster of [`CLUSTER_NODES`] broker processes. Dropping it kills every node and
/// deletes the data.
pub struct Cluster {
    nodes: Vec<Node>,
    args: Vec<(String, String)>,
    /// Further `--flag value` pairs for one node each: (node id, flag, value).
    node_args: Vec<(i32, String, String)>,
    /// Nodes run the deploy compose file's configuration instead of the flags above.
    compose: Option<Compose>,
    dir: tempfile::TempDir,
    /// One cluster at a time per test process: three brokers per test, several tests at once,
    /// on two cores, would starve the brokers' timers (sessions, elections) and make the tests
    /// measure the machine rather than the broker.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    /// Three nodes, `--default-replication-factor 3 --min-insync-replicas 2`.
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// Like [`Cluster::start`] with further `--flag value` pairs for every node (names without
    /// the dashes; they win over the defaults).
    pub fn start_with(extra: &[(&str, &str)]) -> Cluster {
        Self::start_with_node_args(extra, &[])
    }

    /// Like [`Cluster::start_with`], plus `--flag value` pairs for single nodes: (node id,
    /// flag, value).
    pub fn start_with_node_args(extra: &[(&str, &str)], per_node: &[(i32, &str, &str)]) -> Cluster {
        let mut args: Vec<(String, String)> = vec![
            ("default-replication-factor".into(), "3".into()),
            ("min-insync-replicas".into(), "2".into()),
        ];
        for (n, v) in extra {
            let n = n.trim_start_matches('-').to_string();
            args.retain(|(a, _)| *a != n);
            args.push((n, v.to_string()));
        }
        let node_args = per_node
            .iter()
            .map(|(id, n, v)| (*id, n.trim_start_matches('-').to_string(), v.to_string()))
            .collect();
        Self::start_inner(args, node_args, None, CLUSTER_NODES, CLUSTER_NODES)
    }

    /// Nodes configured as `compose_file` (the deploy docker-compose file) configures its
    /// services `broker1..brokerN`: the same environment and command lines, with the
    /// containers' names, ports and data volume mapped to loopback ports and local
    /// directories. A service whose command has `--controller-listen` is a voter; the others
    /// are broker-only nodes.
    pub fn start_from_compose(compose_file: &Path) -> Cluster {
        let text = fs::read_to_string(compose_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", compose_file.display()));
        let compose = Compose::parse(&text);
        let ids: Vec<i32> = compose.commands.keys().copied().collect();
        let n = ids.len() as i32;
        assert_eq!(
            ids,
            (1..=n).collect::<Vec<_>>(),
            "services broker1..brokerN with a command each"
        );
        let voter = |id: &i32| {
            compose.commands[id]
                .iter()
                .any(|a| a == "--controller-listen")
        };
        let voters = ids.iter().filter(|&id| voter(id)).count();
        assert!(
            ids.iter().take(voters).all(voter),
            "the voters are the first services"
        );
        Self::start_inner(Vec::new(), Vec::new(), Some(compose), voters, n as usize)
    }

    fn start_inner(
        args: Vec<(String, String)>,
        node_args: Vec<(i32, String, String)>,
        compose: Option<Compose>,
        voters: usize,
        nodes: usize,
    ) -> Cluster {
        let mut last_error = String::new();
        let mut guard = Some(ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner()));
        for _ in 0..PORT_ATTEMPTS {
            // CLUSTER_KEEP_LOGS=1 keeps the nodes' data and logs for a post-mortem.
            let dir = tempfile::Builder::new()
                .prefix("broker-cluster-")
                .disable_cleanup(std::env::var_os("CLUSTER_KEEP_LOGS").is_some())
                .tempdir()
                .expect("create cluster dir");
            let ports = free_ports(2 * nodes + voters);
            let all = (0..nodes)
                .map(|i| Node {
                    id: i as i32 + 1,
                    kafka_port: ports[i],
                    metrics_port: ports[nodes + voters + i],
                    controller_port: (i < voters).then(|| ports[nodes + i]),
                    child: None,
                    stopped: false,
                    starts: 0,
                })
                .collect();
            let mut c = Cluster {
                nodes: all,
                args: args.clone(),
                node_args: node_args.clone(),
                compose: compose.clone(),
                dir,
                _one_at_a_time: guard
                    .take()
                    .unwrap_or_else(|| ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner())),
            };
            for id in 1..=nodes as i32 {
                c.spawn(id);
            }
            match c.wait_listening(&(1..=nodes as i32).collect::<Vec<_>>()) {
                Ok(()) => return c,
                Err(e) if e.contains("in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("cluster did not start in {PORT_ATTEMPTS} attempts on fresh ports: {last_error}");
    }

    fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Node ids: the voters 1..=3, then any broker-only nodes [`Cluster::add_broker`] added.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// `1@127.0.0.1:P1,2@...`: every voter's controller listener.
    pub fn voters(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.controller_port.map(|p| format!("{}@127.0.0.1:{p}", n.id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts one more node, a broker only (`--process-roles broker`, the next free id, no
    /// controller listener), with the cluster's flags, and waits until it listens. Returns
    /// its id. Its registration with the controller is the caller's to wait for.
    pub fn add_broker(&mut self) -> i32 {
        assert!(
            self.compose.is_none(),
            "compose clusters have the file's services"
        );
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.nodes.push(Node {
            id,
            kafka_port: free_ports(1)[0],
            metrics_port: 0,
            controller_port: None,
            child: None,
            stopped: false,
            starts: 0,
        });
        self.spawn(id);
        if let Err(e) = self.wait_listening(&[id]) {
            panic!("broker-only node {id}: {e}");
        }
        id
    }

    /// Where a compose cluster's node `id` serves `/metrics` (its `0.0.0.0:9644`, mapped).
    pub fn metrics_addr(&self, id: i32) -> String {
        assert!(
            self.compose.is_some(),
            "only compose nodes get a metrics port"
        );
        format!("127.0.0.1:{}", self.node(id).metrics_port)
    }

    /// Kafka listener of node `id`.
    pub fn addr(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.node(id).kafka_port)
    }

    /// Every node's Kafka listener, running or not (ports never change).
    pub fn bootstrap(&self) -> String {
        self.ids()
            .iter()
            .map(|&id| self.addr(id))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The Kafka listeners of running, not stopped nodes.
    pub fn bootstrap_live(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.stopped)
            .map(|n| format!("127.0.0.1:{}", n.kafka_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn log_path(&self, id: i32, start: u32) -> PathBuf {
        self.dir.path().join(format!("node-{id}.{start}.log"))
    }

    /// The last lines node `id`'s current (or last) process wrote.
    pub fn log_tail(&self, id: i32, lines: usize) -> String {
        tail(&self.log_path(id, self.node(id).starts), lines)
    }

    fn spawn(&mut self, id: i32) {
        let voters = self.voters();
        let data = self.dir.path().join(format!("node-{id}"));
        fs::create_dir_all(&data).expect("create node data dir");
        {
            let n = self.node_mut(id);
            assert!(n.child.is_none(), "node {id} already running");
            n.starts += 1;
        }
        let log = self.log_path(id, self.node(id).starts);
        let out = File::create(&log).expect("create node log");
        let err = out.try_clone().expect("clone log handle");
        let bin = broker_bin();
        let mut cmd = Command::new(&bin);
        if let Some(compose) = &self.compose {
            for (k, v) in &compose.env {
                cmd.env(k, self.localize(v, id, &data));
            }
            for a in &compose.commands[&id] {
                cmd.arg(self.localize(a, id, &data));
            }
        } else {
            self.standard_args(&mut cmd, id, &voters, &data);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let n = self.node_mut(id);
        n.child = Some(child);
        n.stopped = false;
    }

    /// Maps a compose value for node `id` onto this machine: `brokerN:N9092` and
    /// `0.0.0.0:N9092` to node N's Kafka port, `brokerN:9093` and `0.0.0.0:9093` to its
    /// controller port, the `/data` volume to its data directory. Panics on a container name
    /// or wildcard address left over, so a compose change this mapping misses fails loudly.
    fn localize(&self, value: &str, id: i32, data: &Path) -> String {
        if value == "/data" {
            return data.display().to_string();
        }
        let mut v = value.to_string();
        for n in &self.nodes {
            let kafka = format!("127.0.0.1:{}", n.kafka_port);
            let controller = format!("127.0.0.1:{}", n.controller_port.unwrap_or(0));
            v = v.replace(&format!("broker{0}:{0}9092", n.id), &kafka);
            v = v.replace(&format!("broker{}:9093", n.id), &controller);
            v = v.replace(
                &format!("broker{}:9644", n.id),
                &format!("127.0.0.1:{}", n.metrics_port),
            );
            if n.id == id {
                v = v.replace(&format!("0.0.0.0:{}9092", n.id), &kafka);
                v = v.replace("0.0.0.0:9093", &controller);
                v = v.replace("0.0.0.0:9644", &format!("127.0.0.1:{}", n.metrics_port));
            }
        }
        assert!(
            !v.contains("broker") || !v.contains(':'),
            "unmapped container address in {value:?}"
        );
        assert!(!v.contains("0.0.0.0"), "unmapped listener in {value:?}");
        v
    }

    fn standard_args(&self, cmd: &mut Command, id: i32, voters: &str, data: &Path) {
        let n = self.node(id);
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--voters")
            .arg(voters)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", n.kafka_port))
            .arg("--data-dir")
            .arg(data);
        match n.controller_port {
            Some(port) => cmd
                .arg("--controller-listen")
                .arg(format!("127.0.0.1:{port}")),
            None => cmd.arg("--process-roles").arg("broker"),
        };
        for (n, v) in &self.args {
            cmd.arg(format!("--{n}")).arg(v);
        }
        for (_, n, v) in self.node_args.iter().filter(|(node, _, _)| *node == id) {
            cmd.arg(format!("--{n}")).arg(v);
        }
    }

    /// Waits until each of `ids` printed `listening on`; Err with the failing node's log.
    fn wait_listening(&mut self, ids: &[i32]) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut pending: Vec<i32> = ids.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &id in &pending {
                let log = self.log_path(id, self.node(id).starts);
                let text = fs::read(&log).unwrap_or_default();
                if String::from_utf8_lossy(&text).contains("listening on ") {
                    continue;
                }
                let child = self.node_mut(id).child.as_mut().expect("spawned");
                if let Ok(Some(status)) = child.try_wait() {
                    self.node_mut(id).child = None;
                    // Read again now that it has exited: the error is its last words, and a
                    // backtrace after it may push it out of the tail.
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    let in_use = if text.contains("in use") {
                        " (a port it was given is in use)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "node {id} exited during startup ({status}){in_use}; log:\n{}",
                        tail(&log, LOG_TAIL_LINES)
                    ));
                }
                still.push(id);
            }
            pending = still;
            if !pending.is_empty() && Instant::now() > deadline {
                let id = pending[0];
                return Err(format!(
                    "node {id} did not print `listening on` within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log_tail(id, LOG_TAIL_LINES)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn pid(&self, id: i32) -> Option<u32> {
        self.node(id).child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self, id: i32) -> bool {
        self.node(id).child.is_some()
    }

    /// Crash node `id`: SIGKILL and reap.
    pub fn kill9(&mut self, id: i32) {
        let mut child = self
            .node_mut(id)
            .child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        let _ = child.kill();
        let _ = child.wait();
        self.node_mut(id).stopped = false;
    }

    /// Starts node `id` again on its ports and data directory; a running node is killed first.
    pub fn restart(&mut self, id: i32) {
        if self.is_running(id) {
            self.kill9(id);
        }
        self.spawn(id);
        if let Err(e) = self.wait_listening(&[id]) {
            panic!("restart of node {id} failed: {e}");
        }
    }

    /// Starts node `id` again without waiting for it to listen: a cluster node listens only
    /// once registered, which needs a quorum leader. [`Cluster::wait_started`] waits later.
    pub fn restart_unregistered(&mut self, id: i32) {
        assert!(!self.is_running(id), "node {id} is running");
        self.spawn(id);
    }

    /// Waits until node `id`, started by [`Cluster::restart_unregistered`], listens.
    pub fn wait_started(&mut self, id: i32) {
        if let Err(e) = self.wait_listening(&[id]) {
            panic!("node {id} did not start: {e}");
        }
    }

    fn signal(&self, id: i32, sig: libc::c_int) {
        let pid = self
            .pid(id)
            .unwrap_or_else(|| panic!("node {id} is not running")) as libc::pid_t;
        // SAFETY: kill(2) on our own unreaped child, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({sig}) node {id}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Starts a controlled shutdown of node `id` (SIGTERM) without waiting for it to exit; see
    /// [`Cluster::try_reap`].
    pub fn sigterm(&mut self, id: i32) {
        self.signal(id, libc::SIGTERM);
    }

    /// If node `id`'s process has exited, reaps it and returns its exit status.
    pub fn try_reap(&mut self, id: i32) -> Option<ExitStatus> {
        let n = self.node_mut(id);
        let status = n.child.as_mut()?.try_wait().ok().flatten()?;
        n.child = None;
        n.stopped = false;
        Some(status)
    }

    /// Everything node `id`'s current (or last) process has written so far.
    pub fn log_text(&self, id: i32) -> String {
        String::from_utf8_lossy(
            &fs::read(self.log_path(id, self.node(id).starts)).unwrap_or_default(),
        )
        .into_owned()
    }

    /// The directory holding every node's data and logs (kept with `CLUSTER_KEEP_LOGS=1`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Freezes node `id` (`kill -STOP`): its sockets stay open but it answers nothing.
    pub fn sigstop(&mut self, id: i32) {
        self.signal(id, libc::SIGSTOP);
        self.node_mut(id).stopped = true;
    }

    /// Thaws a node frozen with [`Cluster::sigstop`].
    pub fn sigcont(&mut self, id: i32) {
        self.signal(id, libc::SIGCONT);
        self.node_mut(id).stopped = false;
    }

    /// Panics with its log if a node that should be running has exited.
    pub fn assert_alive(&mut self, id: i32) {
        let exited = match self.node_mut(id).child.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => panic!("node {id} is not running"),
        };
        if let Some(status) = exited {
            panic!(
                "node {id} died ({status}); log:\n{}",
                self.log_tail(id, LOG_TAIL_LINES)
            );
        }
    }

    fn metadata_client(&self) -> BaseConsumer {
        Self::metadata_client_for(&self.bootstrap_live())
    }

    fn metadata_client_for(bootstrap: &str) -> BaseConsumer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("log_level", "3")
            .set("socket.timeout.ms", "5000")
            .set("topic.metadata.refresh.interval.ms", "500");
        c.create().expect("metadata client")
    }

    /// Broker ids listed by one Metadata request to the live nodes, sorted.
    pub fn brokers(&self) -> Result<Vec<i32>, String> {
        let md = self
            .metadata_client()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Partitions of `topic` as one Metadata request to the live nodes reports them.
    pub fn partitions(&self, topic: &str) -> Result<Vec<PartitionInfo>, String> {
        Self::partitions_in(&self.metadata_client(), topic)
    }

    /// Partitions of `topic` as the node listening on `addr` reports them. Brokers learn
    /// metadata from the quorum at their own pace, so two nodes may briefly disagree.
    pub fn partitions_at(&self, addr: &str, topic: &str) -> Result<Vec<PartitionInfo>, String> {
        Self::partitions_in(&Self::metadata_client_for(addr), topic)
            .map_err(|e| format!("{addr}: {e}"))
    }

    fn partitions_in(client: &BaseConsumer, topic: &str) -> Result<Vec<PartitionInfo>, String> {
        let md = client
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| e.to_string())?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| format!("topic {topic} absent from Metadata"))?;
        if let Some(e) = t.error() {
            return Err(format!("topic {topic}: {e:?}"));
        }
        let mut out: Vec<PartitionInfo> = t
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                id: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                isr: p.isr().to_vec(),
                error: p.error().map(|e| format!("{e:?}")),
            })
            .collect();
        out.sort_by_key(|p| p.id);
        Ok(out)
    }

    /// Leader node id of `topic`-`partition`, if Metadata names one.
    pub fn node_for_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partitions(topic)
            .ok()?
            .into_iter()
            .find(|p| p.id == partition)
            .map(|p| p.leader)
            .filter(|&l| l >= 0)
    }

    /// Waits until every live node's Metadata shows every partition of `topic` satisfying
    /// `ok`, so whichever node a client asks next agrees; returns the last observation as the
    /// error otherwise.
    pub fn wait_partitions(
        &self,
        topic: &str,
        timeout: Duration,
        mut ok: impl FnMut(&PartitionInfo) -> bool,
    ) -> Result<Vec<PartitionInfo>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.partitions_everywhere(topic, &mut ok) {
                Ok(ps) => return Ok(ps),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("after {timeout:?}: {last}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first live node's view of `topic`, if every live node's view satisfies `ok` and
    /// has as many partitions (a node that has not applied a CreatePartitions yet shows fewer,
    /// and a client bootstrapped from it would place keys on those only).
    fn partitions_everywhere(
        &self,
        topic: &str,
        ok: &mut impl FnMut(&PartitionInfo) -> bool,
    ) -> Result<Vec<PartitionInfo>, String> {
        let live = self.bootstrap_live();
        let mut first: Option<Vec<PartitionInfo>> = None;
        for addr in live.split(',').filter(|a| !a.is_empty()) {
            let ps = self.partitions_at(addr, topic)?;
            let count_differs = first.as_ref().is_some_and(|f| f.len() != ps.len());
            if ps.is_empty() || count_differs || !ps.iter().all(&mut *ok) {
                return Err(format!("{addr}: {ps:?}"));
            }
            first.get_or_insert(ps);
        }
        first.ok_or_else(|| "no live node".to_string())
    }

    /// Waits until every partition of `topic` has a live leader other than `not` (if given).
    pub fn wait_leaders(&self, topic: &str, not: Option<i32>, timeout: Duration) -> Vec<i32> {
        let ps = self
            .wait_partitions(topic, timeout, |p| p.leader >= 0 && Some(p.leader) != not)
            .unwrap_or_else(|e| panic!("{topic}: no leader (other than {not:?}) everywhere: {e}"));
        ps.iter().map(|p| p.leader).collect()
    }

    /// Waits until every partition of `topic` has all its replicas in the ISR.
    pub fn wait_full_isr(&self, topic: &str, timeout: Duration) {
        if let Err(e) = self.wait_partitions(topic, timeout, |p| {
            p.leader >= 0 && !p.replicas.is_empty() && p.isr.len() == p.replicas.len()
        }) {
            panic!("{topic}: ISR not full: {e}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if panicking {
            for n in &self.nodes {
                eprintln!(
                    "---- node {} log (start {}, tail) ----\n{}",
                    n.id,
                    n.starts,
                    tail(&self.log_path(n.id, n.starts), 40)
                );
            }
        }
    }
}

/// `n` distinct loopback ports that were free a moment ago (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}
