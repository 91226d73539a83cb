//! A Redis Cluster for one test: three master nodes (no replicas), each a `redis-server
//! --cluster-enabled yes` child on free loopback ports, joined by `redis-cli --cluster create`.
//! A node can be stopped and restarted to take its slots away and bring them back.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::process::{find_executable, free_port, loopback, ServerProcess};
use super::unique;

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const NODES: usize = 3;
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// `redis-cli --cluster create` plus the gossip until every node says `cluster_state:ok`.
const FORMATION_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 3;
/// How long a silent node goes before the others mark it failed. Short, so that a stopped
/// node's slots are reported down quickly, but not so short that a loaded CI machine (the
/// suite runs on two cores) makes a live node look dead.
const NODE_TIMEOUT_MS: &str = "3000";
/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    /// The cluster bus port, chosen explicitly (`--cluster-port`): the default, port + 10000,
    /// may be taken or past 65535 for an ephemeral port.
    bus_port: u16,
    /// Where the node keeps its identity and view of the cluster; kept across a restart so
    /// that the node rejoins as itself, with its slots.
    config_file: PathBuf,
    /// Slot ranges it serves, inclusive, as `CLUSTER NODES` reported after formation.
    slots: Vec<(u16, u16)>,
    process: ServerProcess,
}

impl Node {
    fn new() -> Node {
        let dir = std::env::temp_dir().join("redis-retry-tests");
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        let config_file = dir.join(format!("{}.conf", unique("cluster-nodes")));
        let process = ServerProcess::new("redis-cluster-node", PathBuf::from(REDIS_SERVER));
        Node { port: 0, bus_port: 0, config_file, slots: Vec::new(), process }
    }

    fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    fn args(&self) -> Vec<OsString> {
        let mut args = super::redis_server::args(self.port);
        let bus_port = self.bus_port.to_string();
        args.extend(
            [
                "--cluster-port",
                &bus_port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &self.config_file.to_string_lossy(),
                "--cluster-node-timeout",
                NODE_TIMEOUT_MS,
                // A stopped node takes only its own slots down; the others keep serving theirs,
                // which is what a test of "writes to that node fail" needs (and what a cache
                // cluster wants).
                "--cluster-require-full-coverage",
                "no",
            ]
            .iter()
            .map(OsString::from),
        );
        args
    }

    fn spawn(&mut self) {
        let args = self.args();
        self.process.spawn(&args);
    }

    /// Waits until the node answers as our child (not another test's server on a port it won).
    fn wait_ready(&mut self) -> Result<(), String> {
        let (addr, pid) = (self.addr(), self.process.pid());
        self.process.wait_ready(STARTUP_TIMEOUT, || is_our_server(addr, pid))
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// Three master nodes serving all 16384 slots; everything stops when dropped.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three nodes, forms the cluster and waits until every node reports
    /// `cluster_state:ok` with all slots assigned and all nodes known.
    pub fn start() -> RedisCluster {
        assert!(
            PathBuf::from(REDIS_SERVER).is_file(),
            "{REDIS_SERVER} not found; install it with `apt-get install -y redis-server`"
        );
        for attempt in 1..=PORT_ATTEMPTS {
            let mut cluster = RedisCluster { nodes: (0..NODES).map(|_| Node::new()).collect() };
            let ports = distinct_free_ports(NODES * 2);
            for (node, pair) in cluster.nodes.iter_mut().zip(ports.chunks(2)) {
                (node.port, node.bus_port) = (pair[0], pair[1]);
                node.spawn();
            }
            let mut lost_race = false;
            for node in &mut cluster.nodes {
                if let Err(reason) = node.wait_ready() {
                    if attempt < PORT_ATTEMPTS && node.process.lost_port_race() {
                        lost_race = true;
                        break;
                    }
                    panic!("{}", node.process.startup_failure(&reason));
                }
            }
            if lost_race {
                // Dropping the half-started cluster kills its nodes; try other ports.
                continue;
            }
            cluster.create();
            cluster.wait_until_ok(FORMATION_TIMEOUT);
            cluster.learn_slots();
            return cluster;
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// `redis-cli --cluster create` over the nodes, masters only, no questions asked.
    fn create(&self) {
        let cli = find_executable("redis-cli", &[PathBuf::from("/usr/bin")])
            .expect("redis-cli not found; install it with `apt-get install -y redis-tools`");
        let mut args: Vec<OsString> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| OsString::from(n.addr().to_string())));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(OsString::from));
        let mut create = ServerProcess::new("redis-cli-cluster-create", cli);
        create.spawn(&args);
        let deadline = Instant::now() + FORMATION_TIMEOUT;
        loop {
            if let Some(status) = create.exited() {
                assert!(
                    status.success(),
                    "{}",
                    create.startup_failure(&format!("redis-cli exited with {status}"))
                );
                return;
            }
            if Instant::now() >= deadline {
                let message = create.startup_failure("redis-cli --cluster create did not finish");
                create.kill();
                panic!("{message}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `CLUSTER INFO` on every running node until each says the cluster is whole.
    fn wait_until_ok(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let expected = [
            "cluster_state:ok".to_string(),
            format!("cluster_slots_assigned:{SLOTS}"),
            format!("cluster_known_nodes:{NODES}"),
        ];
        loop {
            let mut last = String::new();
            let whole = self.nodes.iter().filter(|n| n.process.is_running()).all(|node| {
                match request(node.addr(), &[b"CLUSTER", b"INFO"]) {
                    Ok(info) => {
                        last = String::from_utf8_lossy(&info).into_owned();
                        expected.iter().all(|line| last.lines().any(|l| l.trim() == line))
                    }
                    Err(err) => {
                        last = err.to_string();
                        false
                    }
                }
            });
            if whole {
                return;
            }
            for node in &mut self.nodes {
                if let Some(status) = node.process.exited() {
                    panic!("{}", node.process.startup_failure(&format!("cluster node exited with {status}")));
                }
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok after {timeout:?}; last CLUSTER INFO:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Records which node serves which slots (`CLUSTER NODES` of the first node).
    fn learn_slots(&mut self) {
        let nodes = request(self.nodes[0].addr(), &[b"CLUSTER", b"NODES"]).expect("CLUSTER NODES");
        let nodes = String::from_utf8_lossy(&nodes).into_owned();
        for line in nodes.lines() {
            // <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <state> <slot ranges...>
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) =
                fields.get(1).and_then(|a| a.split('@').next()).and_then(|a| a.rsplit(':').next())
            else {
                continue;
            };
            let Some(node) = self.nodes.iter_mut().find(|n| n.port.to_string() == port) else { continue };
            node.slots = fields.iter().skip(8).filter_map(|range| parse_slot_range(range)).collect();
        }
        let covered: usize =
            self.nodes.iter().flat_map(|n| &n.slots).map(|&(a, b)| usize::from(b - a) + 1).sum();
        assert_eq!(covered, usize::from(SLOTS), "slot map from CLUSTER NODES:\n{nodes}");
    }

    /// `redis://127.0.0.1:<port>/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}/", n.port)).collect()
    }

    /// The nodes as one comma-separated list, what `--redis-url` takes with `--redis-cluster`.
    pub fn seed_list(&self) -> String {
        self.urls().join(",")
    }

    /// A cluster client with short timeouts, as the tests' single-node connections have.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::builder(self.urls())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .build()
            .expect("cluster client")
    }

    /// A fresh connection to the cluster.
    pub async fn conn(&self) -> redis::cluster_async::ClusterConnection {
        self.client()
            .get_async_connection()
            .await
            .unwrap_or_else(|err| panic!("connect to the cluster: {err}"))
    }

    /// The slot of `key`, as the cluster computes it (hash tags included).
    pub fn slot_of(&self, key: &[u8]) -> u16 {
        let node = self.nodes.iter().find(|n| n.process.is_running()).expect("no node is running");
        let reply = request(node.addr(), &[b"CLUSTER", b"KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        String::from_utf8_lossy(&reply).trim().parse().expect("a slot number")
    }

    /// Index of the node that serves `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        let slot = self.slot_of(key);
        self.nodes.iter().position(|n| n.serves(slot)).expect("every slot has a node")
    }

    /// `count` keys `<prefix>:<n>` that live on `node`.
    pub fn keys_on(&self, node: usize, prefix: &str, count: usize) -> Vec<String> {
        (0..)
            .map(|n| format!("{prefix}:{n}"))
            .filter(|k| self.node_of(k.as_bytes()) == node)
            .take(count)
            .collect()
    }

    /// Kills one node (SIGKILL): its slots become unreachable, the others keep serving theirs.
    pub fn stop_node(&mut self, node: usize) {
        self.nodes[node].process.kill();
    }

    /// Starts a stopped node again on its port with its cluster identity (its data is gone:
    /// nothing is persisted), and waits until the cluster is whole again.
    pub fn restart_node(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.process.kill();
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS * 10 {
            n.spawn();
            match n.wait_ready() {
                Ok(()) => {
                    last_failure.clear();
                    break;
                }
                Err(reason) => {
                    let lost_race = n.process.lost_port_race();
                    last_failure = n.process.startup_failure(&reason);
                    n.process.kill();
                    if !lost_race {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        assert!(last_failure.is_empty(), "restarting cluster node {node}: {last_failure}");
        self.wait_until_ok(FORMATION_TIMEOUT);
    }

    /// Where each node's log is, for a failing test's message.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.process.log_path().to_path_buf()).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.process.kill();
            let _ = std::fs::remove_file(&node.config_file);
        }
    }
}

/// `count` different ports that were free a moment ago.
fn distinct_free_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// `5461-10922` or a single slot `42`; migrating markers (`[...]`) are skipped.
fn parse_slot_range(range: &str) -> Option<(u16, u16)> {
    match range.split_once('-') {
        Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
        None => range.parse().ok().map(|slot| (slot, slot)),
    }
}

/// Whether `addr` serves commands and is the child with `pid`.
fn is_our_server(addr: SocketAddr, pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    request(addr, &[b"INFO", b"server"])
        .map(|info| String::from_utf8_lossy(&info).contains(&format!("process_id:{pid}\r\n")))
        .unwrap_or(false)
}

/// One command in raw RESP, its reply's payload back (a status line, an integer or a bulk
/// string; an error reply is an `Err`). Raw, so that readiness and slot questions do not
/// depend on a client's own cluster logic, retries or timeouts.
fn request(addr: SocketAddr, args: &[&[u8]]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let text = String::from_utf8_lossy(&line).trim_end().to_string();
    match text.split_at_checked(1) {
        Some(("+" | ":", rest)) => Ok(rest.as_bytes().to_vec()),
        Some(("$", len)) => {
            let len: usize = len.parse().map_err(|_| io::Error::other(format!("bad bulk length {len}")))?;
            let mut payload = vec![0; len + 2];
            reader.read_exact(&mut payload)?;
            payload.truncate(len);
            Ok(payload)
        }
        Some(("-", err)) => Err(io::Error::other(err.to_string())),
        _ => Err(io::Error::other(format!("unexpected reply `{text}`"))),
    }
}
