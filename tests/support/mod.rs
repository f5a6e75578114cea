//! Test fixtures shared by the integration suites: a real `redis-server` on a
//! free loopback port, the real `likeboard` binary on port 0, a small raw
//! HTTP/1.1 client and an SSE reader that keeps the exact bytes.
//!
//! Everything talks to 127.0.0.1 only, and every wait is bounded.
#![allow(dead_code)] // each suite uses a different part of this module

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Raises this process's soft open-files limit to the hard limit (tests that
/// open thousands of connections need it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A real redis-server on a free loopback port, killed and reaped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts the server on the same port; waits until it answers PING.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Kills the server (SIGKILL) and reaps it; data is lost (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// Which store a suite runs against.
pub enum Backend {
    Memory,
    Redis(RedisServer),
}

impl Backend {
    pub fn memory() -> Backend {
        Backend::Memory
    }

    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start())
    }

    /// Flags that point the server at this backend.
    pub fn args(&self) -> Vec<String> {
        match self {
            Backend::Memory => vec![],
            Backend::Redis(r) => vec!["--redis-url".into(), r.url()],
        }
    }

    /// Starts a server on this backend with extra flags.
    pub fn start(&self, extra: &[&str]) -> Likeboard {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        Likeboard::start(&args)
    }
}

/// The real `likeboard` binary, listening on a free port; killed on drop.
pub struct Likeboard {
    pub addr: SocketAddr,
    child: Option<Child>,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl Likeboard {
    /// Starts the binary with `--listen 127.0.0.1:0 --write-rate 0` plus `args`
    /// (later flags win), a clean environment, and waits for its URL line.
    pub fn start(args: &[String]) -> Likeboard {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[String]) -> Likeboard {
        Self::start_command(Command::new(env!("CARGO_BIN_EXE_likeboard")), listen, args)
    }

    /// Starts the binary under `sh -c "<setup>; exec likeboard ..."`, e.g. to
    /// run it with `ulimit -n 64`.
    pub fn start_after_shell(setup: &str, args: &[String]) -> Likeboard {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{setup}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_likeboard"));
        Self::start_command(cmd, "127.0.0.1:0", args)
    }

    fn start_command(mut cmd: Command, listen: &str, args: &[String]) -> Likeboard {
        let dir = TempDir::new("likeboard");
        for (key, _) in std::env::vars() {
            if key.starts_with("LIKEBOARD_") || key == "REDIS_URL" || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .args(["--listen", listen, "--write-rate", "0"])
            .args(args)
            .current_dir(&dir.0);
        Self::launch(cmd, dir)
    }

    /// Spawns `cmd` with its stderr in `dir`, and waits for its URL line.
    fn launch(mut cmd: Command, dir: TempDir) -> Likeboard {
        let stderr_path = dir.0.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(addr) = line
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("{cmd:?} printed {line:?}, not its URL; stderr:\n{log}");
        };
        Likeboard {
            addr,
            child: Some(child),
            stderr_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        panic!(
            "subscribers stayed at {last}, expected {n}; server log tail:\n{}",
            tail(&self.stderr())
        );
    }

    /// Posts a comment as `visitor` and returns its id.
    pub fn add_comment(&self, content: &str) -> u64 {
        let body = serde_json::json!({ "content": content, "nickname": "tester" }).to_string();
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

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Likes (`POST`) or unlikes (`DELETE`) comment `id` as the visitor with this
/// cookie value, at `addr` (for threads that hold only the address).
pub fn like_at(addr: SocketAddr, method: &str, id: u64, visitor: &str) -> Response {
    let cookie = format!("lb_visitor={visitor}");
    http(
        addr,
        method,
        &format!("/api/comments/{id}/like"),
        &[("Cookie", &cookie)],
        b"",
    )
}

/// A visitor id in the cookie's format (32 hex digits) derived from `n`.
pub fn visitor(n: u64) -> String {
    format!("{:032x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabc)
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
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
    let mut stream = TcpStream::connect(addr).expect("connecting to likeboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
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
    stream.write_all(&bytes).unwrap();
    read_response(&mut BufReader::new(stream))
}

/// Sends raw bytes and reads whatever comes back until the server closes or
/// `timeout` passes.
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connecting to likeboard");
    stream.set_read_timeout(Some(timeout)).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Reads one response (Content-Length, chunked, or until close).
pub fn read_response<R: BufRead>(r: &mut R) -> Response {
    let (status, headers) = read_head(r).expect("reading the response head");
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = get("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body).expect("reading the body");
    } else if get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while let Some(chunk) = read_chunk(r).expect("reading a chunk") {
            body.extend(chunk);
        }
    } else {
        let _ = r.read_to_end(&mut body);
    }
    Response {
        status,
        headers,
        body,
    }
}

/// Reads a status line and headers.
pub fn read_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
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
            return Ok((status, headers));
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

/// One SSE block (the lines up to a blank line), with its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub raw: String,
    pub fields: Vec<(String, String)>,
}

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
pub struct SseClient {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunked: bool,
    /// The decoded body so far (chunk framing removed).
    pub body: Vec<u8>,
    /// Where the next unparsed frame starts in `body`.
    pos: usize,
    /// The raw bytes as they came off the socket, framing included.
    pub wire: Vec<u8>,
    pub closed: bool,
}

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
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked")
        });
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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

    /// Reads until the server closes the stream or `timeout` passes; true if closed.
    pub fn read_to_close(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.closed && Instant::now() < deadline {
            self.fill(deadline);
        }
        self.closed
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Header lookup helper for a list of pairs.
pub fn headers_map(headers: &[(String, String)]) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
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

impl Likeboard {
    /// Starts `program` (e.g. a copy of the binary) in working directory `cwd`
    /// with `--listen 127.0.0.1:0` plus `args` and a clean environment. Unlike
    /// [`Likeboard::start`], nothing is written into `cwd`: stderr goes to a
    /// scratch directory of its own.
    pub fn start_program(
        program: &std::path::Path,
        cwd: &std::path::Path,
        args: &[&str],
    ) -> Likeboard {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("RUST_LOG", "info")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(cwd);
        Self::launch(cmd, TempDir::new("likeboard-log"))
    }
}

/// The path of `program` on `PATH` (or in /usr/sbin and /sbin, where Debian
/// puts nginx), or a panic that says how to get it: tests that need a tool
/// fail when it is missing, they never pass silently.
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

impl RedisServer {
    /// A redis-server with extra config arguments after the fixture's own (later
    /// ones win), e.g. `["--appendonly", "yes", "--appendfsync", "always"]` to keep
    /// every acknowledged write across `kill` and `restart_with`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: TempDir::new("redis"),
        };
        server.restart_with(extra);
        server
    }

    /// Like `restart`, with extra config arguments (pass the same ones again).
    pub fn restart_with(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "redis-server is already running");
        let binary = std::env::var("LIKEBOARD_TEST_REDIS_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        let log = self.dir.0.join("redis.log");
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(&self.dir.0)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary:?} ({e})"));
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
}

/// The status of a raw response (`None` if the server closed without one) and
/// its body (after the blank line; our error replies carry a Content-Length).
pub fn raw_status(bytes: &[u8]) -> (Option<u16>, Vec<u8>) {
    let status = bytes
        .strip_prefix(b"HTTP/1.".as_slice())
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok());
    let body = find(bytes, b"\r\n\r\n").map_or(Vec::new(), |i| bytes[i + 4..].to_vec());
    (status, body)
}
