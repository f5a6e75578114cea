//! A real Redis Cluster for the tests: three masters and no replicas on
//! loopback ports, each with its own directory, `nodes.conf` and AOF, joined by
//! `redis-cli --cluster create`. A test can kill a master (SIGKILL) and start
//! it again on the same port from the same files.
//!
//! Like [`RedisServer`](super::RedisServer) it talks to 127.0.0.1 only, every
//! wait is bounded and ends in a panic that shows the nodes' logs, and every
//! process is killed and reaped when the handle drops (also on panic; and with
//! `PR_SET_PDEATHSIG`, also when the test process is killed outright).
//!
//! The fixture speaks to the nodes through its own few lines of RESP (a
//! command out, one reply in), not through the `redis` crate: the crate's
//! cluster client is what the tests check, so the fixture must not lean on it.
#![allow(
    dead_code,
    reason = "every suite compiles the kit; only the cluster suites use this part"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{die_with_parent, kill_and_reap, spawn_redis_server, tail, TempDir};

/// How many masters the cluster has.
const MASTERS: usize = 3;
/// The number of hash slots in every Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How long a node has to answer PING after it is started (an AOF replay
/// included), and how long the cluster has to agree after a create or restart.
const START_WAIT: Duration = Duration::from_secs(10);
const AGREE_WAIT: Duration = Duration::from_secs(20);
/// `redis-cli --cluster create` normally takes a second or two (it waits for
/// the nodes to meet); past this it is stuck, and is killed.
const CREATE_WAIT: Duration = Duration::from_secs(30);
/// Node timeout: how long a master may be unreachable before the others mark
/// it failed. Short, so tests that kill a master see it failed in seconds.
const NODE_TIMEOUT_MS: &str = "2000";

/// Three Redis Cluster masters, all 16384 slots covered, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Holds every node's directory and `nodes-<port>.conf`; removed on drop,
    /// after the nodes (fields drop in order).
    dir: TempDir,
}

/// One master: its ports, its files, and its process while it runs.
struct Node {
    /// The client port (what seeds name).
    port: u16,
    /// The cluster bus port, chosen free like the client port (`--cluster-port`,
    /// Redis 7) rather than `port + 10000`, which may be taken or past 65535.
    bus_port: u16,
    /// Its working directory: the AOF directory and the log live here.
    dir: PathBuf,
    /// The node's own cluster state file, kept across restarts.
    conf: PathBuf,
    /// `None` while killed.
    child: Option<Child>,
}

/// A RESP reply, as much of it as the fixture needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    /// A bulk string (`None` for a nil bulk).
    Bulk(Option<Vec<u8>>),
    /// An array (`None` for a nil array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text: a status, or a bulk string read as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

impl RedisCluster {
    /// Starts three masters, joins them with `redis-cli --cluster create`, and
    /// waits until every node says `cluster_state:ok` with all slots served.
    pub fn start() -> RedisCluster {
        let dir = TempDir::new("cluster");
        let ports = free_ports(2 * MASTERS);
        let nodes = (0..MASTERS)
            .map(|i| {
                let port = ports[2 * i];
                Node {
                    port,
                    bus_port: ports[2 * i + 1],
                    dir: dir.0.join(format!("node-{port}")),
                    conf: dir.0.join(format!("nodes-{port}.conf")),
                    child: None,
                }
            })
            .collect();
        // Built before anything starts, so a panic below still drops (kills)
        // whatever was started.
        let mut cluster = RedisCluster { nodes, dir };
        for i in 0..MASTERS {
            std::fs::create_dir_all(&cluster.nodes[i].dir).expect("creating a node's directory");
            cluster.spawn(i);
        }
        cluster.create();
        cluster.wait_ok();
        cluster
    }

    /// How many masters there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s client port.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Node `i`'s URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's URL, in node order: the seeds a client is given.
    pub fn seeds(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// The seeds as `--redis-cluster` takes them: comma-separated.
    pub fn cluster_arg(&self) -> String {
        self.seeds().join(",")
    }

    /// Node `i`'s process id (0 while killed).
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether node `i` is running (not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// Sends one command to node `i` and returns its reply (an error reply is
    /// `Reply::Error`, not a panic); panics if the node cannot be reached.
    pub fn call(&self, i: usize, args: &[&str]) -> Reply {
        call(self.nodes[i].port, args).unwrap_or_else(|e| {
            panic!(
                "node {i} (port {}) did not answer {args:?}: {e}\n{}",
                self.nodes[i].port,
                self.logs()
            )
        })
    }

    /// The slot a key hashes to, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        let reply = self.call(self.any_running(), &["CLUSTER", "KEYSLOT", key]);
        let slot = reply
            .int()
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT: {reply:?}"));
        u16::try_from(slot).expect("a slot is below 16384")
    }

    /// Which node (an index into [`seeds`](Self::seeds)) serves `slot`, by the
    /// cluster's own `CLUSTER SLOTS` as a running node sees it.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        let reply = self.call(self.any_running(), &["CLUSTER", "SLOTS"]);
        for range in reply.items() {
            let [Reply::Int(first), Reply::Int(last), master, ..] = range.items() else {
                panic!("CLUSTER SLOTS entry {range:?}");
            };
            if (*first..=*last).contains(&i64::from(slot)) {
                let port = master.items().get(1).and_then(Reply::int);
                return self
                    .nodes
                    .iter()
                    .position(|n| Some(i64::from(n.port)) == port)
                    .unwrap_or_else(|| panic!("slot {slot} is served by {master:?}, not ours"));
            }
        }
        panic!("slot {slot} is not covered: {reply:?}");
    }

    /// Which node serves `key` (its hash tag, if it has one, decides).
    pub fn node_for_key(&self, key: &str) -> usize {
        self.node_of_slot(self.keyslot(key))
    }

    /// Kills node `i` with SIGKILL and reaps it. Its files stay; with
    /// `appendfsync always` every acknowledged write is already in its AOF.
    pub fn kill(&mut self, i: usize) {
        kill_and_reap(&mut self.nodes[i].child);
    }

    /// Starts node `i` again on the same port with the same `nodes.conf` and
    /// AOF directory, and waits until the whole cluster is ok again.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.is_running(i), "node {i} is already running");
        self.spawn(i);
        self.wait_ok();
    }

    /// Like [`restart`](Self::restart), but returns as soon as the node answers
    /// PING, before the cluster agrees it is back (for a second or two it
    /// answers `CLUSTERDOWN`): for tests of what a client sees meanwhile.
    pub fn revive(&mut self, i: usize) {
        assert!(!self.is_running(i), "node {i} is already running");
        self.spawn(i);
    }

    /// Waits until every running node says `cluster_state:ok` and sees all
    /// 16384 slots served by masters it does not consider failing
    /// (`cluster_slots_ok`), and knows every node; panics with the logs after
    /// a bounded wait.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + AGREE_WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let verdicts: Vec<Result<(), String>> = (0..self.len())
                .filter(|&i| self.is_running(i))
                .map(|i| self.node_ok(i))
                .collect();
            if verdicts.iter().all(Result::is_ok) {
                return;
            }
            last = verdicts
                .into_iter()
                .filter_map(Result::err)
                .collect::<Vec<_>>()
                .join("; ");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the cluster was not ok within {AGREE_WAIT:?}: {last}\n{}",
            self.logs()
        );
    }

    /// Waits until every other running node marks node `i` failed (`fail`, not
    /// just `fail?`), which takes about the node timeout after a kill.
    pub fn wait_failed(&self, i: usize) {
        let port = format!("127.0.0.1:{}@", self.nodes[i].port);
        let deadline = Instant::now() + AGREE_WAIT;
        while Instant::now() < deadline {
            let all = (0..self.len())
                .filter(|&j| j != i && self.is_running(j))
                .all(|j| {
                    let nodes = self
                        .call(j, &["CLUSTER", "NODES"])
                        .text()
                        .unwrap_or_default();
                    nodes.lines().any(|line| {
                        line.contains(&port)
                            && line
                                .split(' ')
                                .nth(2)
                                .is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
                    })
                });
            if all {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node {i} was never marked failed\n{}", self.logs());
    }

    /// Why node `i` is not ok yet, if it is not.
    fn node_ok(&self, i: usize) -> Result<(), String> {
        let info = call(self.nodes[i].port, &["CLUSTER", "INFO"])
            .map_err(|e| format!("node {i}: {e}"))?
            .text()
            .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or("?")
                .to_string()
        };
        let (state, slots_ok, known) = (
            field("cluster_state"),
            field("cluster_slots_ok"),
            field("cluster_known_nodes"),
        );
        if state == "ok" && slots_ok == SLOTS.to_string() && known == self.len().to_string() {
            Ok(())
        } else {
            Err(format!(
                "node {i}: state {state}, slots ok {slots_ok}, known nodes {known}"
            ))
        }
    }

    /// Starts node `i`'s process and waits until it answers PING.
    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let child = spawn_redis_server(node.port, &node.dir, &node.dir.join("redis.log"), |cmd| {
            cmd.args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(&node.conf)
                .args(["--cluster-port", &node.bus_port.to_string()])
                .args(["--cluster-node-timeout", NODE_TIMEOUT_MS])
                // A dead master's slots fail alone: the others keep serving theirs.
                .args(["--cluster-require-full-coverage", "no"])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(["--save", ""]);
        });
        let port = node.port;
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if call(port, &["PING"]).is_ok_and(|r| r == Reply::Status("PONG".into())) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "node {i} (port {port}) never answered PING\n{}",
            self.logs()
        );
    }

    /// Joins the nodes into one cluster, the slots split evenly.
    fn create(&mut self) {
        let out = self.dir.0.join("create.log");
        let log = std::fs::File::create(&out).expect("creating create.log");
        let mut cmd = Command::new(redis_cli());
        cmd.args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .env_remove("REDISCLI_AUTH")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-cli ({e}); it comes with redis-server")
        }));
        let deadline = Instant::now() + CREATE_WAIT;
        let status = loop {
            let running = child.as_mut().expect("not reaped yet");
            if let Some(status) = running.try_wait().expect("waiting for redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_some_and(|s| s.success()) {
            return;
        }
        let output = std::fs::read_to_string(&out).unwrap_or_default();
        panic!(
            "redis-cli --cluster create {}: {}\n{}",
            status.map_or(format!("took over {CREATE_WAIT:?}"), |s| s.to_string()),
            tail(&output),
            self.logs()
        );
    }

    /// A running node to ask about the cluster.
    fn any_running(&self) -> usize {
        (0..self.len())
            .find(|&i| self.is_running(i))
            .expect("at least one node is running")
    }

    /// The end of every node's log, for a panic message.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let log = std::fs::read_to_string(n.dir.join("redis.log")).unwrap_or_default();
                format!("--- node {i} (port {}) log:\n{}", n.port, tail(&log))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_and_reap(&mut node.child);
        }
    }
}

/// `redis-cli`: beside `$LIKEBOARD_TEST_REDIS_SERVER` when that names a file
/// that has one, else from PATH.
fn redis_cli() -> PathBuf {
    std::env::var("LIKEBOARD_TEST_REDIS_SERVER")
        .ok()
        .map(PathBuf::from)
        .and_then(|server| Some(server.parent()?.join("redis-cli")))
        .filter(|cli| cli.is_file())
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

/// `n` distinct loopback ports that nobody listens on right now: all bound at
/// once, so no two are the same, then released for the nodes to take.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("finding a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// Sends one command to the node on `port` and reads its reply, with short
/// timeouts (this is the fixture's probe, not a client under test).
pub fn call(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let addr = ([127, 0, 0, 1], port).into();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    (&stream).write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

/// Reads one RESP2 reply.
fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| bad("empty reply line"))?;
    let number = || rest.parse::<i64>().map_err(|_| bad(line));
    Ok(match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut body = vec![0; len + 2];
                std::io::Read::read_exact(r, &mut body)?;
                body.truncate(len);
                Reply::Bulk(Some(body))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(len) => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(r))
                    .collect::<std::io::Result<_>>()?,
            )),
        },
        _ => return Err(bad(line)),
    })
}
