//! The test kit shared by the integration suites and the load bench: a real
//! `redis-server` on a free loopback port, the real `likeboard` binary on
//! port 0, a small raw HTTP/1.1 client and an SSE reader that keeps the exact
//! bytes.
//!
//! Every suite (and `benches/load`) compiles its own copy of this module with
//! `mod support;` and calls only part of it, so items that some crate leaves
//! unused carry a narrow `#[allow(dead_code)]` that says so.
//!
//! Everything talks to 127.0.0.1 only, every wait is bounded, and every process
//! started here is killed and reaped when its handle drops (also on panic).
//!
//! Layout: scratch directories and process helpers; [`RedisServer`];
//! [`Likeboard`] and its builder [`Launch`]; [`Backend`] and `both_backends!`;
//! raw HTTP ([`http`], [`raw`], [`read_response`], [`Headers`]); SSE
//! ([`Frame`], [`SseClient`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub mod cluster;

// ---------------------------------------------------------------------------
// Scratch directories and process helpers
// ---------------------------------------------------------------------------

/// A unique scratch directory under target/, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free loopback port")
}

/// Raises this process's soft open-files limit to the hard limit (tests and
/// the bench open thousands of connections); returns the new soft limit.
#[allow(dead_code, reason = "only the suites that open many sockets call it")]
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Makes a child die with us even if we are killed outright (SIGKILL leaves no
/// Drop to run). Linux sends the signal when the *thread* that spawned the
/// child ends, so a fixture must be started on the thread that owns it (a
/// test's own thread, or the bench's main thread).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// How a child ended, read without reaping it (`waitid` with `WNOWAIT`), so
/// its `Child` handle can still reap it.
fn exit_state(pid: u32) -> String {
    // SAFETY: waitid fills the siginfo we pass; WNOHANG never blocks.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if rc != 0 || info.si_pid() == 0 {
            return "the process is still running".into();
        }
        match info.si_code {
            libc::CLD_EXITED => format!("exited with status {}", info.si_status()),
            _ => format!("killed by signal {}", info.si_status()),
        }
    }
}

/// Starts the redis-server the tests use (`$LIKEBOARD_TEST_REDIS_SERVER`, else
/// the one on PATH) on 127.0.0.1:`port`, working in `dir` and logging to
/// `log`, with the options `configure` adds; it dies with us.
pub fn spawn_redis_server(
    port: u16,
    dir: &std::path::Path,
    log: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> Child {
    let binary =
        std::env::var("LIKEBOARD_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string());
    let mut cmd = Command::new(&binary);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    configure(&mut cmd);
    cmd.arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start {binary:?} ({e}); `make test-deps` installs redis-server")
    })
}

/// Kills a child with SIGKILL and reaps it; nothing if it is gone already.
fn kill_and_reap(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The path of `program` on `PATH` (or in /usr/sbin and /sbin, where Debian
/// puts nginx), or a panic that says how to get it: tests that need a tool
/// fail when it is missing, they never pass silently.
#[allow(dead_code, reason = "only the suites that drive other tools call it")]
pub fn require_tool(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed; `make test` installs it (Debian package {package})")
        })
}

// ---------------------------------------------------------------------------
// RedisServer
// ---------------------------------------------------------------------------

/// A real redis-server on a free loopback port, nothing persisted unless asked,
/// killed and reaped on drop. `$LIKEBOARD_TEST_REDIS_SERVER` names the binary
/// (default: `redis-server` on PATH).
pub struct RedisServer {
    pub port: u16,
    /// Config arguments after the fixture's own; every restart uses them again.
    extra: Vec<String>,
    child: Option<Child>,
    /// Its working directory (`--dir`) and log.
    dir: TempDir,
}

#[allow(
    dead_code,
    reason = "each suite calls the part of the fixture it needs"
)]
impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A redis-server with extra config arguments after the fixture's own (later
    /// ones win), e.g. `["--appendonly", "yes", "--appendfsync", "always"]` to keep
    /// every acknowledged write across `kill` and `restart`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id (0 while killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// (Re)starts the server on the same port with the same arguments; waits
    /// until it answers PING, or panics with its log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = self.dir.0.join("redis.log");
        let child = spawn_redis_server(self.port, &self.dir.0, &log, |cmd| {
            cmd.args(["--save", "", "--appendonly", "no"])
                .args(&self.extra);
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!(
            "redis-server on port {} never answered PING; its log:\n{log}",
            self.port
        );
    }

    /// Kills the server (SIGKILL) and reaps it; data is lost (no persistence).
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Likeboard and its builder
// ---------------------------------------------------------------------------

/// The real `likeboard` binary, listening on the address it printed; killed
/// and reaped on drop.
pub struct Likeboard {
    pub addr: SocketAddr,
    /// The binary and the flags it was started with, for messages and reports.
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    stderr_path: PathBuf,
    /// Holds stderr.log (and is the working directory unless one was given).
    _dir: TempDir,
}

/// How to start [`Likeboard`]: `Likeboard::builder().arg(..).start()`.
/// [`Likeboard::start`] and [`Backend::start`] are the usual cases of it.
///
/// The server always gets `--listen <addr> --write-rate 0` first (later flags
/// win), `RUST_LOG` and nothing else from the environment, and stdin closed.
#[must_use = "a Launch does nothing until .start()"]
pub struct Launch {
    program: PathBuf,
    listen: String,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    shell_setup: Option<String>,
    log_level: String,
    /// Give the server the kit's visitor key file (off: it keeps its key in the store).
    kit_key: bool,
}

#[allow(dead_code, reason = "each suite calls the options it needs")]
impl Launch {
    /// No `--visitor-key-file`: the server signs cookies with the key its
    /// store keeps (and `visitor(n)` is then no visitor of it).
    pub fn store_visitor_key(mut self) -> Launch {
        self.kit_key = false;
        self
    }

    /// One more flag (or flag value) after those given so far.
    pub fn arg(mut self, arg: impl Into<String>) -> Launch {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Points the server at this Redis (`--redis-url`).
    pub fn redis(self, redis: &RedisServer) -> Launch {
        self.args(["--redis-url", &redis.url()])
    }

    /// Listens here instead of 127.0.0.1:0, e.g. a restarted server on the
    /// port its predecessor had.
    pub fn listen(mut self, addr: impl ToString) -> Launch {
        self.listen = addr.to_string();
        self
    }

    /// Runs this binary (e.g. a copy of likeboard) instead of Cargo's build.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Launch {
        self.program = program.into();
        self
    }

    /// The working directory; nothing is written into it (stderr goes to a
    /// scratch directory of the fixture's own, which is the default cwd).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Launch {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs the binary under `sh -c "<setup>; exec likeboard ..."`, e.g. with
    /// `ulimit -n 64`.
    pub fn after_shell(mut self, setup: &str) -> Launch {
        self.shell_setup = Some(setup.to_string());
        self
    }

    /// `RUST_LOG` for the server; `info` unless set (the bench uses `warn`, so
    /// a line per request does not become part of what it measures).
    pub fn log_level(mut self, level: &str) -> Launch {
        self.log_level = level.to_string();
        self
    }

    /// Spawns the server and waits up to 20 s for its `listening on` line;
    /// panics with its state and log if it never prints one.
    pub fn start(self) -> Likeboard {
        let dir = TempDir::new("likeboard");
        // Every server signs visitor cookies with the kit's key, so that
        // `visitor(n)` can make as many visitors as a test needs.
        let key_file = dir.0.join("visitor.key");
        std::fs::write(&key_file, VISITOR_KEY).expect("writing the visitor key");
        let mut args = vec![
            "--listen".to_string(),
            self.listen,
            "--write-rate".to_string(),
            "0".to_string(),
        ];
        if self.kit_key {
            args.push("--visitor-key-file".to_string());
            args.push(key_file.display().to_string());
        }
        args.extend(self.args);
        let mut cmd = match &self.shell_setup {
            None => Command::new(&self.program),
            Some(setup) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{setup}; exec \"$0\" \"$@\""))
                    .arg(&self.program);
                sh
            }
        };
        let stderr_path = dir.0.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("creating the server's log");
        cmd.args(&args)
            .env_clear()
            .env("RUST_LOG", &self.log_level)
            .current_dir(self.cwd.as_deref().unwrap_or(&dir.0))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.program));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Likeboard {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            program: self.program,
            args,
            child: Some(child),
            stderr_path,
            _dir: dir,
        };
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        match line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => server.addr = addr,
            None => server.died(&format!("printed {line:?}, not its URL")),
        }
        server
    }
}

#[allow(
    dead_code,
    reason = "each suite calls the part of the fixture it needs"
)]
impl Likeboard {
    /// A [`Launch`] of Cargo's build of the binary on 127.0.0.1:0.
    pub fn builder() -> Launch {
        Launch {
            program: PathBuf::from(env!("CARGO_BIN_EXE_likeboard")),
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            cwd: None,
            shell_setup: None,
            log_level: "info".to_string(),
            kit_key: true,
        }
    }

    /// Starts the binary with these flags after the kit's own (see [`Launch`]).
    pub fn start(args: &[&str]) -> Likeboard {
        Likeboard::builder().args(args).start()
    }

    /// The process id (0 once it was reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Every flag the binary was started with, the kit's own first.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Panics with the process's state (running, exited, killed) and the end
    /// of its log: for a server that did not do what a test waited for.
    pub fn died(&self, what: &str) -> ! {
        let state = exit_state(self.pid());
        panic!(
            "{} {} {what} ({state}); its log ends:\n{}",
            self.program.display(),
            self.args.join(" "),
            tail(&self.stderr())
        );
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) only sends a signal to the pid we started.
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, &[], b"")
    }

    /// The current number of SSE subscribers, from /healthz.
    pub fn subscribers(&self) -> u64 {
        self.get("/healthz").json()["subscribers"]
            .as_u64()
            .expect("subscribers in /healthz")
    }

    /// Waits until the subscriber count is `n`; panics with the log if it never is.
    pub fn wait_subscribers(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = u64::MAX;
        while Instant::now() < deadline {
            last = self.subscribers();
            if last == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.died(&format!("kept {last} subscribers, expected {n}"));
    }

    /// Waits until the pump has handed the default board's event `id` to the
    /// hub (`/healthz`'s `last_event_id`): it is in the ring, and streams
    /// that connect from now on get it as history, not live.
    pub fn wait_delivered(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let want = id.to_string();
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.get("/healthz").json()["last_event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.died(&format!("the pump stayed at event {last}, expected {id}"));
    }

    /// Posts a comment and returns its id.
    pub fn add_comment(&self, content: &str) -> u64 {
        self.add_comment_as("tester", content)
    }

    /// Posts a comment signed `nickname` and returns its id.
    pub fn add_comment_as(&self, nickname: &str, content: &str) -> u64 {
        let body = serde_json::json!({ "content": content, "nickname": nickname }).to_string();
        let r = http(
            self.addr,
            "POST",
            "/api/comments",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 201, "add comment: {}", r.text());
        r.json()["id"].as_u64().unwrap()
    }

    /// Likes (or with `DELETE`, unlikes) as the visitor with this cookie value.
    pub fn like(&self, method: &str, id: u64, visitor: &str) -> Response {
        like_at(self.addr, method, id, visitor)
    }
}

impl Drop for Likeboard {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Backend: the same test against the in-memory store and Redis
// ---------------------------------------------------------------------------

/// Which store a suite runs against.
pub enum Backend {
    Memory,
    Redis(RedisServer),
}

#[allow(
    dead_code,
    reason = "each suite calls the part of the fixture it needs"
)]
impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory
    }

    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start())
    }

    /// A [`Launch`] already pointed at this backend.
    pub fn launch(&self) -> Launch {
        match self {
            Backend::Memory => Likeboard::builder(),
            Backend::Redis(redis) => Likeboard::builder().redis(redis),
        }
    }

    /// Starts a server on this backend with extra flags.
    pub fn start(&self, extra: &[&str]) -> Likeboard {
        self.launch().args(extra).start()
    }
}

/// Runs a test body once per backend: `both_backends!(name, |backend| { ... });`
/// expands to `name::memory` and `name::redis` tests.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            #[test]
            fn memory() {
                let backend = $crate::support::Backend::memory();
                ($body)(&backend);
            }
            $(#[$meta])*
            #[test]
            fn redis() {
                let backend = $crate::support::Backend::redis();
                ($body)(&backend);
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

/// Likes (`POST`) or unlikes (`DELETE`) comment `id` as the visitor with this
/// cookie value, at `addr` (for threads that hold only the address).
pub fn like_at(addr: SocketAddr, method: &str, id: u64, visitor: &str) -> Response {
    try_like_at(addr, method, id, visitor)
        .unwrap_or_else(|e| panic!("{method} like of comment {id} at {addr}: {e}"))
}

/// [`like_at`] that returns a refused, reset or cut-short connection as an
/// error instead of panicking: for senders that keep liking while the server
/// restarts.
#[allow(
    dead_code,
    reason = "only the suites that restart a server under load call it"
)]
pub fn try_like_at(
    addr: SocketAddr,
    method: &str,
    id: u64,
    visitor: &str,
) -> std::io::Result<Response> {
    let cookie = format!("lb_visitor={visitor}");
    try_http(
        addr,
        method,
        &format!("/api/comments/{id}/like"),
        &[("Cookie", &cookie)],
        b"",
    )
}

/// Starts `threads` senders, each liking `each` times as fast as the replies
/// come: like `k` of sender `t` goes to comment `comment(t, k)` from visitor
/// `1 + t * 1000 + k` (so every like is a new one), and must be answered 200.
/// Returns the senders, to join.
#[allow(dead_code, reason = "only the suites that run like storms call it")]
pub fn like_storm<F>(
    addr: SocketAddr,
    threads: u64,
    each: u64,
    comment: F,
) -> Vec<std::thread::JoinHandle<()>>
where
    F: Fn(u64, u64) -> u64 + Clone + Send + 'static,
{
    (0..threads)
        .map(|t| {
            let comment = comment.clone();
            std::thread::spawn(move || {
                for k in 0..each {
                    let r = like_at(addr, "POST", comment(t, k), &visitor(1 + t * 1000 + k));
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect()
}

/// The secret every server the kit starts signs visitor cookies with.
pub const VISITOR_KEY: &str = "likeboard test kit: not a secret, only for tests";

/// A visitor cookie's value for visitor `n`: an id of 32 hex digits derived
/// from `n`, and its signature under [`VISITOR_KEY`], as the server issues them
/// (`src/visitor.rs`); a server the kit started takes it for that visitor.
#[allow(
    dead_code,
    reason = "only the suites that like as many visitors call it"
)]
pub fn visitor(n: u64) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let id = format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabc);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(VISITOR_KEY.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    let tag = mac.finalize().into_bytes();
    let sig: String = tag[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{id}.{sig}")
}

/// A listing's comments as (id, score) pairs, in ranking order (the JSON of
/// `GET .../comments`).
#[allow(dead_code, reason = "only the suites that read listings call it")]
pub fn id_scores(list: &serde_json::Value) -> Vec<(u64, u64)> {
    list["comments"]
        .as_array()
        .expect("a listing's comments")
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["score"].as_u64().unwrap()))
        .collect()
}

/// One bodiless request on a fresh connection to `to` from the loopback
/// address `source` (127.0.0.x: each is its own client address to whoever
/// answers, the server or a proxy in front of it).
#[allow(
    dead_code,
    reason = "only the suites that need many client addresses call it"
)]
pub fn request_from(
    to: SocketAddr,
    source: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream))
}

/// A message's headers in the order they came; names compare without case.
#[derive(Debug, Clone, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of header `name`, whatever its case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` is present with a value equal to `value`, ignoring case.
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    }
}

/// A complete HTTP response.
#[derive(Debug)]
#[allow(dead_code, reason = "each suite reads the fields it checks")]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`); 10 s at most.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"))
}

/// [`http`], with a connection that fails (refused, reset, closed before a
/// whole response) as an error.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    try_read_response(&mut BufReader::new(stream))
}

/// Sends raw bytes and reads whatever comes back until the server closes or
/// `timeout` passes.
#[allow(
    dead_code,
    reason = "only the suites that send malformed bytes call it"
)]
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connecting to likeboard");
    stream.set_read_timeout(Some(timeout)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The status of a raw response (`None` if the server closed without one) and
/// its body (after the blank line; our error replies carry a Content-Length).
#[allow(
    dead_code,
    reason = "only the suites that send malformed bytes call it"
)]
pub fn raw_status(bytes: &[u8]) -> (Option<u16>, Vec<u8>) {
    let status = bytes
        .strip_prefix(b"HTTP/1.".as_slice())
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok());
    let body = find(bytes, b"\r\n\r\n").map_or(Vec::new(), |i| bytes[i + 4..].to_vec());
    (status, body)
}

/// Where `needle` first occurs in `haystack`.
#[allow(
    dead_code,
    reason = "used by the SSE and raw helpers, which not every suite calls"
)]
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response (Content-Length, chunked, or until close).
#[allow(
    dead_code,
    reason = "only the suites that read responses off their own sockets call it"
)]
pub fn read_response<R: BufRead>(r: &mut R) -> Response {
    try_read_response(r).unwrap_or_else(|e| panic!("reading a response: {e}"))
}

/// [`read_response`], with a connection that ends too soon as an error.
pub fn try_read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let (status, headers) = read_head(r)?;
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if headers.has("Transfer-Encoding", "chunked") {
        while let Some(chunk) = read_chunk(r)? {
            body.extend(chunk);
        }
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Reads a status line and headers (from a socket, or from bytes already read:
/// `&[u8]` is a `BufRead`).
pub fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Headers)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((status, Headers(headers)));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

/// One chunk of a chunked body; `None` at the zero chunk.
pub fn read_chunk<R: BufRead>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let len = usize::from_str_radix(line.trim(), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    let mut data = vec![0u8; len + 2];
    r.read_exact(&mut data)?;
    if &data[len..] != b"\r\n" {
        return Err(std::io::Error::other("chunk not followed by CRLF"));
    }
    data.truncate(len);
    Ok(if len == 0 { None } else { Some(data) })
}

// ---------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------

/// One SSE block (the lines up to a blank line), with its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code, reason = "only the suites that read event streams use it")]
pub struct Frame {
    pub raw: String,
    pub fields: Vec<(String, String)>,
}

#[allow(
    dead_code,
    reason = "each stream-reading suite calls the accessors it needs"
)]
impl Frame {
    /// Parses one complete block (ending in its blank line).
    pub fn parse(raw: String) -> Frame {
        let fields = raw
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(':'))
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap_or((l, ""));
                (k.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
            })
            .collect();
        Frame { raw, fields }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn id(&self) -> Option<u64> {
        self.get("id").and_then(|v| v.parse().ok())
    }
    pub fn event(&self) -> Option<&str> {
        self.get("event")
    }
    pub fn data_json(&self) -> serde_json::Value {
        serde_json::from_str(self.get("data").expect("a data field")).expect("data is JSON")
    }
    pub fn is_comment(&self) -> bool {
        self.raw.starts_with(':')
    }
}

/// An SSE connection that keeps every byte of the body it read.
#[allow(dead_code, reason = "only the suites that read event streams use it")]
pub struct SseClient {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Headers,
    pub chunked: bool,
    /// The decoded body so far (chunk framing removed).
    pub body: Vec<u8>,
    /// Where the next unparsed frame starts in `body`.
    pos: usize,
    /// The raw bytes as they came off the socket, framing included.
    pub wire: Vec<u8>,
    pub closed: bool,
}

#[allow(
    dead_code,
    reason = "each stream-reading suite calls the part it needs"
)]
impl SseClient {
    /// Opens `path` with HTTP/1.1 (or 1.0) and extra headers; reads the head.
    pub fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<SseClient> {
        Self::connect_version(addr, path, headers, "HTTP/1.1")
    }

    pub fn connect_version(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        version: &str,
    ) -> std::io::Result<SseClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req =
            format!("GET {path} {version}\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        (&stream).write_all(req.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader)?;
        let chunked = headers.has("Transfer-Encoding", "chunked");
        Ok(SseClient {
            reader,
            status,
            headers,
            chunked,
            body: Vec::new(),
            pos: 0,
            wire: Vec::new(),
            closed: false,
        })
    }

    /// Reads more of the body (one chunk, or what arrives); false at the end.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let _ = self.reader.get_ref().set_read_timeout(Some(left));
        if self.chunked {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    self.closed = true;
                    return false;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
            self.wire.extend_from_slice(line.as_bytes());
            let Ok(len) = usize::from_str_radix(line.trim(), 16) else {
                panic!("bad chunk size line {line:?}");
            };
            let mut data = vec![0u8; len + 2];
            // Once a chunk has started, the rest follows promptly.
            let _ = self
                .reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(10)));
            self.reader
                .read_exact(&mut data)
                .expect("reading a chunk's data");
            self.wire.extend_from_slice(&data);
            assert_eq!(&data[len..], b"\r\n", "chunk not followed by CRLF");
            if len == 0 {
                self.closed = true;
                return false;
            }
            self.body.extend_from_slice(&data[..len]);
            true
        } else {
            let mut buf = [0u8; 8192];
            match self.reader.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    false
                }
                Ok(n) => {
                    self.wire.extend_from_slice(&buf[..n]);
                    self.body.extend_from_slice(&buf[..n]);
                    true
                }
                Err(_) => false,
            }
        }
    }

    /// The next complete block (event, comment or retry), waiting up to `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = find(&self.body[self.pos..], b"\n\n") {
                let raw = String::from_utf8(self.body[self.pos..self.pos + end + 2].to_vec())
                    .expect("UTF-8 frame");
                self.pos += end + 2;
                return Some(Frame::parse(raw));
            }
            if Instant::now() >= deadline
                || !self.fill(deadline) && (self.closed || Instant::now() >= deadline)
            {
                return None;
            }
        }
    }

    /// The next frame that is an event (has an `event:` or `data:` field).
    pub fn next_event(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next_frame(left)?;
            if frame.get("data").is_some() {
                return Some(frame);
            }
        }
    }

    /// The next `n` events as (id, event name, data), each within `wait`;
    /// one that never comes ends the test with `lb`'s log and the stream so far.
    pub fn events(
        &mut self,
        lb: &Likeboard,
        n: usize,
        wait: Duration,
    ) -> Vec<(u64, String, serde_json::Value)> {
        (0..n)
            .map(|i| {
                let f = self.next_event(wait).unwrap_or_else(|| {
                    lb.died(&format!(
                        "event {} of {n} never came; the stream so far:\n{}",
                        i + 1,
                        String::from_utf8_lossy(&self.body)
                    ))
                });
                (
                    f.id().expect("an id"),
                    f.event().unwrap_or("message").to_string(),
                    f.data_json(),
                )
            })
            .collect()
    }

    /// Reads until the server closes the stream or `timeout` passes; true if closed.
    pub fn read_to_close(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed && Instant::now() < deadline {
            self.fill(deadline);
        }
        self.closed
    }
}

/// Moves every complete chunk from `raw` (a chunked body as it arrives) to
/// `body`; true at the zero chunk.
#[allow(
    dead_code,
    reason = "only the suites with their own reconnecting clients call it"
)]
pub fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return false;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or_else(|| panic!("bad chunk size line {:?}", &raw[..eol]));
        if size == 0 {
            return true;
        }
        if raw.len() < eol + 2 + size + 2 {
            return false;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

/// Takes the next complete SSE block off the front of `body`.
#[allow(
    dead_code,
    reason = "only the suites with their own reconnecting clients call it"
)]
pub fn next_block(body: &mut Vec<u8>) -> Option<Frame> {
    let end = find(body, b"\n\n")?;
    let raw = String::from_utf8(body.drain(..end + 2).collect()).expect("UTF-8 frame");
    Some(Frame::parse(raw))
}

/// Asserts that `frame` is the `retry:` a closing stream sends: a delay
/// jittered between half and one and a half times the usual 3 s, so that a
/// crowd told to come back does not come back at once.
#[allow(dead_code, reason = "used by the suites that close streams")]
pub fn assert_closing_retry(frame: &str) {
    let ms: u64 = frame
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a retry field: {frame:?}"));
    assert!(
        (1500..=4500).contains(&ms),
        "retry {ms} ms is outside 1.5-4.5 s"
    );
}

// ---------------------------------------------------------------------------
// Headless Chromium (the page suites: `browser`, `tabs`)
// ---------------------------------------------------------------------------

/// One browser at a time in a suite: Chromium is heavy and the machine may have 2 cores.
#[allow(dead_code, reason = "only the suites that drive a browser use it")]
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Debian's headless `chromium` (or `$LIKEBOARD_TEST_CHROMIUM`) with a fresh
/// profile, over plain HTTP/1.1 (no QUIC) and with nothing talking to the
/// outside; closed (and its profile removed) on drop.
#[allow(dead_code, reason = "only the suites that drive a browser use it")]
pub struct Chrome {
    pub browser: headless_chrome::Browser,
    _profile: TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

#[allow(dead_code, reason = "only the suites that drive a browser call it")]
impl Chrome {
    pub fn launch() -> Chrome {
        let turn = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
        let path = std::env::var_os("LIKEBOARD_TEST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            path.exists(),
            "{} not found: install Debian's chromium (`make test-deps` does) \
             or set LIKEBOARD_TEST_CHROMIUM",
            path.display()
        );
        let profile = TempDir::new("chromium");
        let user_data_dir = format!("--user-data-dir={}", profile.0.display());
        let flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            user_data_dir.as_str(),
        ];
        let options = headless_chrome::LaunchOptions::default_builder()
            .path(Some(path))
            .headless(true)
            .sandbox(false)
            .enable_gpu(false)
            .window_size(Some((1280, 900)))
            .args(flags.iter().map(std::ffi::OsStr::new).collect())
            // A page that waits on a stream can be quiet for a while.
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .expect("chromium launch options");
        Chrome {
            browser: headless_chrome::Browser::new(options).expect("launching chromium"),
            _profile: profile,
            _turn: turn,
        }
    }

    /// A new tab of `url` in the default context (tabs share cookies, workers
    /// and locks), once its script has taken over.
    pub fn tab(&self, url: &str) -> std::sync::Arc<headless_chrome::Tab> {
        let tab = self.browser.new_tab().expect("a new tab");
        open_page(&tab, url);
        tab
    }
}

/// Navigates `tab` and waits (up to 20 s) until the page's script has taken
/// over: the badge says live.
#[allow(dead_code, reason = "only the suites that drive a browser call it")]
pub fn open_page(tab: &headless_chrome::Tab, url: &str) {
    let limit = Duration::from_secs(20);
    tab.set_default_timeout(limit);
    tab.navigate_to(url)
        .and_then(|t| t.wait_until_navigated())
        .unwrap_or_else(|e| panic!("{url} did not load: {e}"));
    let badge = "document.getElementById('status').textContent";
    let start = Instant::now();
    loop {
        let now = tab.evaluate(badge, false).expect("reading the badge").value;
        if now == Some(serde_json::Value::from("live")) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{url}: the badge says {now:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}
