//! The load benchmark (`make bench`, i.e. `cargo bench --bench load`): starts
//! its own redis-server and the release `likeboard` binary, drives them over
//! loopback, and writes what it measured to BENCHMARKS.md.
//!
//! Scenarios (issue 6): like throughput; fan-out latency at 1,000 / 5,000 /
//! 9,000 SSE clients (as far as the server's cap and our descriptors allow);
//! a like storm under 1,000 clients; the server's memory, threads and
//! descriptors per idle client; and two limits measured in the same run: the
//! same Lua script driven straight at Redis (the ceiling for likes/s) and one
//! thread writing a frame to N plain sockets (the floor for fan-out). Last,
//! the reconnect storm (its own issue): N clients caught up, the server
//! SIGKILLed and started again on its port, every client back with its
//! `Last-Event-ID`; the time until all have caught up, and paced likes' p99
//! during the storm beside the same likes without one.
//!
//! Issue 13 adds, in the same run: the storm's senders alone first (no client
//! connected), the rate the storm is judged against; and capacity: 15,000
//! idle event streams (or the server's cap) held, weighed and sent likes,
//! then the server brought to its cap and an unpaced burst of connects
//! beyond it, each of which must be refused politely (200, `retry:`, closed).
//!
//! `-- --quick` runs every scenario at small sizes (under a minute) and writes
//! `target/bench-quick.md` instead of BENCHMARKS.md. Timings never decide a
//! pass or fail: they are printed, compared with the targets as ratios, and
//! the reader judges. Only counts (missed events, dropped clients, failed
//! requests) must be zero.
//!
//! Everything is bounded: every phase has a time limit and a count limit,
//! talks to 127.0.0.1 only, and the processes we start are killed and reaped
//! when their handles drop (also on panic) and die with us if we are killed.
//!
//! The SSE clients are plain `TcpStream`s read by two threads through epoll
//! with a hand-written chunked + SSE parser: thousands of client threads would
//! compete with the server for the same two cores and hide what we measure.
//!
//! Layout: this file reads the flags, runs the phases in order and knows how
//! to wait for the server between them; `scenarios.rs` is one function or
//! type per phase, except capacity, which is `capacity.rs`; `clients.rs` the
//! load generator's HTTP senders and epoll SSE readers; `procstat.rs` the
//! clock, latency histograms and /proc figures; `report.rs` the Markdown
//! report. The processes themselves (`RedisServer`, `Likeboard`, started the
//! same way as in the tests) come from the test kit,
//! `tests/support/mod.rs`.

// The kit the integration tests use: the same redis-server and likeboard
// fixtures, the same free-port and open-files helpers.
#[path = "../../tests/support/mod.rs"]
mod support;

mod capacity;
mod clients;
mod procstat;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use capacity::capacity;
use clients::{next_visitor, HttpConn};
use procstat::{epoch, CpuMeter, ProcSnapshot};
use report::{kept_notes, load_average, machine, Report};
use scenarios::{direct_ceiling, fan_out, like_throughput, restart_storm, storm, Burst};
use support::{raise_fd_limit, Launch, Likeboard, RedisServer};

/// The server's default key prefix; its keys live under `{likeboard}:`.
const SERVER_TAG: &str = "{likeboard}";
/// Descriptors the bench keeps for itself besides client sockets.
const RESERVED_FDS: usize = 128;
/// How long the server's CPU is sampled with idle clients.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
/// Everything waits at most this long for a condition before reporting it.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The sizes of one run: the for a full run, small ones for `--quick`.
pub struct Sizes {
    pub quick: bool,
    /// Clients and duration of the like-throughput run (and the direct ceiling).
    pub like_clients: usize,
    pub like_secs: u64,
    /// Fan-out sizes asked for; the largest is trimmed to what fits.
    pub fan_out: Vec<usize>,
    /// Likes sent per fan-out size, and the gap between them.
    pub fan_out_likes: usize,
    pub fan_out_gap: Duration,
    /// The storm: SSE clients, senders and duration.
    pub storm_clients: usize,
    pub storm_senders: usize,
    pub storm_secs: u64,
    /// The restart storm: SSE clients, the history before they connect, how
    /// long the paced likes run without a storm, and during it (the kill
    /// comes 1 s in, the clients back 3 s later).
    pub restart_clients: usize,
    pub restart_history: usize,
    pub restart_calm: Duration,
    pub restart_storm: Duration,
    /// Capacity: idle event streams asked for (the server's cap may allow
    /// fewer), likes sent to them and the gap between them, and connects
    /// sent all at once once the server is at its cap.
    pub capacity: usize,
    pub capacity_likes: usize,
    pub capacity_gap: Duration,
    pub beyond_cap: usize,
    /// `--max-subscribers` for the server, if the run sets one: a quick run
    /// puts the cap just above its small capacity size, so that the part
    /// beyond the cap runs too without thousands of connections.
    pub max_subscribers: Option<usize>,
    /// How long idle clients are left before the server is weighed: longer than
    /// tiny_http's pool keeps an idle thread (5 s), so that threads the connect
    /// burst needed for a moment are gone and the figures are the steady state.
    pub idle_settle: Duration,
    /// `--only PHASE`: run that phase alone (for working on one figure; the
    /// report goes to `target/bench-only.md`, never BENCHMARKS.md).
    pub only: Option<String>,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            quick: false,
            like_clients: 32,
            like_secs: 10,
            fan_out: vec![1_000, 5_000, 9_000],
            fan_out_likes: 20,
            fan_out_gap: Duration::from_millis(100),
            storm_clients: 1_000,
            storm_senders: 16,
            storm_secs: 10,
            restart_clients: 1_000,
            restart_history: 5_000,
            restart_calm: Duration::from_secs(5),
            restart_storm: Duration::from_secs(8),
            capacity: 15_000,
            capacity_likes: 5,
            capacity_gap: Duration::from_secs(1),
            beyond_cap: 300,
            max_subscribers: None,
            idle_settle: Duration::from_secs(6),
            only: None,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            quick: true,
            like_secs: 2,
            fan_out: vec![100, 300, 500],
            fan_out_likes: 10,
            storm_clients: 100,
            storm_secs: 2,
            restart_clients: 100,
            restart_history: 1_000,
            restart_calm: Duration::from_secs(2),
            restart_storm: Duration::from_secs(6),
            capacity: 1_500,
            capacity_likes: 3,
            capacity_gap: Duration::from_millis(200),
            max_subscribers: Some(1_600),
            idle_settle: Duration::from_secs(1),
            ..Sizes::full()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary
    // without it, and a test run must not start a 9,000-client benchmark.
    if !args.iter().any(|a| a == "--bench") {
        println!("load: a benchmark; run it with `cargo bench --bench load [-- --quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).cloned().unwrap_or_default());
    if let Some(phase) = only.as_deref().filter(|p| !PHASES.contains(p)) {
        eprintln!(
            "load: --only takes one of {}; not {phase:?}",
            PHASES.join(", ")
        );
        std::process::exit(2);
    }
    let flag_value = only.as_deref();
    if let Some(bad) = args.iter().find(|a| {
        a.starts_with("--") && !["--bench", "--quick", "--only"].contains(&a.as_str())
            || (!a.starts_with("--") && Some(a.as_str()) != flag_value)
    }) {
        eprintln!("load: unknown argument {bad}; the flags are --quick and --only PHASE");
        std::process::exit(2);
    }
    epoch();
    let sizes = Sizes {
        only,
        ..if quick { Sizes::quick() } else { Sizes::full() }
    };
    let started = Instant::now();
    let report = run(&sizes);
    let markdown = report.markdown(&sizes, started.elapsed());
    println!("\n{markdown}");
    let path = if sizes.only.is_some() {
        target_dir().join("bench-only.md")
    } else if quick {
        target_dir().join("bench-quick.md")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")
    };
    let kept = if quick || sizes.only.is_some() {
        String::new()
    } else {
        kept_notes(&path)
    };
    match std::fs::write(&path, format!("{markdown}{kept}")) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("load: could not write {}: {e}", path.display()),
    }
}

/// The phases `--only` can pick, in the order a full run takes them.
const PHASES: [&str; 7] = [
    "burst", "ceiling", "likes", "fan-out", "storm", "capacity", "restart",
];

impl Sizes {
    /// Whether this run takes `phase` (every phase unless `--only`).
    fn runs(&self, phase: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == phase)
    }
}

/// Runs every scenario against one Redis and one server.
fn run(sizes: &Sizes) -> Report {
    let nofile = raise_fd_limit() as usize;
    let redis = RedisServer::start();
    let server = launch(&redis, sizes).start();
    let mut report = Report::new(machine(&redis, nofile), &redis, &server);
    report.load_average.0 = load_average();
    let health = server.healthz();
    let cap = json_u64(&health, "max_subscribers") as usize;
    report.cap = cap;

    // First, while tiny_http's pool is at its minimum of threads (4): that is
    // when a burst of connections can leave one unserved.
    if sizes.runs("burst") {
        step("a burst of new keep-alive connections");
        report.burst = Some(Burst::measure(server.addr, sizes.like_clients));
        server.wait_quiet(&redis, &mut report);
    }

    // 5a while the server is idle: the ceiling the like path can reach.
    if sizes.runs("ceiling") || sizes.runs("likes") {
        step("limit: the like script straight against Redis");
        report.ceiling = Some(direct_ceiling(&redis, sizes));
        server.wait_quiet(&redis, &mut report);
    }

    if sizes.runs("likes") {
        step("like throughput");
        report.likes = Some(like_throughput(&server, &redis, sizes));
        server.wait_quiet(&redis, &mut report);
    }
    if sizes.runs("likes") || sizes.runs("fan-out") {
        report.memory.push((0, server.idle_snapshot(&redis)));
    }

    // The largest size is what fits: the server's cap, and our descriptors
    // (the floor holds both ends of every socket pair).
    let fits = cap.min(nofile.saturating_sub(RESERVED_FDS) / 2);
    let fan_out_sizes = if sizes.runs("fan-out") {
        &sizes.fan_out[..]
    } else {
        &[]
    };
    for &asked in fan_out_sizes {
        let n = asked.min(fits);
        let limited_by = (n < asked).then(|| {
            if n == cap {
                format!("the server's cap (max_subscribers = {cap})")
            } else {
                format!("the bench's open-files limit ({nofile}, two per floor socket pair)")
            }
        });
        step(&format!("fan-out to {n} SSE clients"));
        let result = fan_out(&server, &redis, sizes, n, asked, limited_by, &mut report);
        report.fan_out.push(result);
        server.wait_quiet(&redis, &mut report);
    }

    if sizes.runs("storm") {
        step("like storm");
        report.storm = Some(storm(&server, &redis, sizes, &mut report));
        server.wait_quiet(&redis, &mut report);
    }

    // The bench's own descriptors bound what it can hold: the epoll clients
    // cost one each (no floor socket pairs in this phase).
    if sizes.runs("capacity") {
        step("capacity: idle event streams, and connects beyond the cap");
        let budget = nofile.saturating_sub(RESERVED_FDS);
        report.capacity = Some(capacity(&server, &redis, sizes, cap, budget, &mut report));
        server.wait_quiet(&redis, &mut report);
    }

    // Last, as it replaces the server with a new process on the same port.
    report.server_log_warnings = server.log_warnings();
    if sizes.runs("restart") {
        step("reconnect storm");
        let (restart, server) = restart_storm(server, &redis, sizes, &mut report);
        report.restart = Some(restart);
        server.wait_quiet(&redis, &mut report);
        report.server_log_warnings.extend(server.log_warnings());
    }
    report.load_average.1 = load_average();
    report
}

/// How the bench starts its server, the first time and after the restart
/// storm's SIGKILL: on Redis, logging warnings only (so a log line per request
/// does not become part of the cost), with the run's `--max-subscribers`.
pub fn launch(redis: &RedisServer, sizes: &Sizes) -> Launch {
    let launch = Likeboard::builder().redis(redis).log_level("warn");
    match sizes.max_subscribers {
        Some(cap) => launch.args(["--max-subscribers", &cap.to_string()]),
        None => launch,
    }
}

pub fn step(what: &str) {
    println!("[{:>6.1} s] {what}", epoch().elapsed().as_secs_f64());
}

/// The cargo target directory (CARGO_TARGET_TMPDIR is `<target>/tmp`).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

// ---------------------------------------------------------------------------
// Between phases: what the bench asks of the kit's two processes
// ---------------------------------------------------------------------------

/// A number in a /healthz reply (0 if it is missing).
fn json_u64(value: &serde_json::Value, key: &str) -> u64 {
    match &value[key] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Calls `check` every `every` until it succeeds or [`WAIT_LIMIT`] has passed;
/// then the last thing it said it was waiting for becomes a note in the report.
fn wait_or_note(
    report: &mut Report,
    every: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(note) if Instant::now() > deadline => {
                report.notes.push(note);
                return;
            }
            Err(_) => thread::sleep(every),
        }
    }
}

/// The bench's readings of the server and its waits between phases. A wait
/// that runs out becomes a note in the report, not a panic: the run goes on.
trait ServerProbe {
    /// /healthz as JSON; a server that cannot answer it ends the run.
    fn healthz(&self) -> serde_json::Value;
    /// A comment's score as the API reports it.
    fn score_of(&self, comment: u64) -> Option<u64>;
    /// Waits until the server counts `n` subscribers (unlike the kit's
    /// `wait_subscribers`, which panics, a timeout is noted in the report).
    fn wait_for_subscribers(&self, n: usize, report: &mut Report);
    /// After our clients closed: a like wakes every writer, each write to a
    /// reset socket fails and that writer ends. Waits for zero subscribers.
    fn wait_quiet_after_close(&self, report: &mut Report);
    /// Before a phase: no subscribers, and the pump has caught up with Redis.
    fn wait_quiet(&self, redis: &RedisServer, report: &mut Report);
    /// The server's process figures, and its CPU over [`IDLE_SAMPLE`] of
    /// doing nothing but holding its clients (timers, descriptor scans).
    fn idle_snapshot(&self, redis: &RedisServer) -> ProcSnapshot;
    /// Warning and error lines the server logged during the run.
    fn log_warnings(&self) -> Vec<String>;
}

impl ServerProbe for Likeboard {
    fn healthz(&self) -> serde_json::Value {
        let reply = HttpConn::new(self.addr).request("GET", "/healthz", None, None);
        match reply {
            Ok((200, body)) => serde_json::from_slice(&body).expect("/healthz is JSON"),
            other => self.died(&format!(
                "answered /healthz with {:?}",
                other.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
            )),
        }
    }

    fn score_of(&self, comment: u64) -> Option<u64> {
        let (_, body) = HttpConn::new(self.addr)
            .request("GET", "/api/comments?limit=500", None, None)
            .ok()?;
        let list: serde_json::Value = serde_json::from_slice(&body).ok()?;
        list["comments"]
            .as_array()?
            .iter()
            .find(|c| c["id"].as_u64() == Some(comment))
            .and_then(|c| c["score"].as_u64())
    }

    fn wait_for_subscribers(&self, n: usize, report: &mut Report) {
        wait_or_note(report, Duration::from_millis(20), || {
            let now = json_u64(&self.healthz(), "subscribers") as usize;
            match now == n {
                true => Ok(()),
                false => Err(format!(
                    "waited in vain for {n} subscribers; the server counted {now}"
                )),
            }
        });
    }

    fn wait_quiet_after_close(&self, report: &mut Report) {
        let mut nudge = None;
        let mut http = HttpConn::new(self.addr);
        wait_or_note(report, Duration::from_millis(100), || {
            let now = json_u64(&self.healthz(), "subscribers");
            if now == 0 {
                return Ok(());
            }
            let id = *nudge.get_or_insert_with(|| self.add_comment("nudge"));
            let path = format!("/api/comments/{id}/like");
            let _ = http.request("POST", &path, Some(&next_visitor()), None);
            Err(format!(
                "{now} subscribers were still counted {} s after their clients left",
                WAIT_LIMIT.as_secs()
            ))
        });
    }

    fn wait_quiet(&self, redis: &RedisServer, report: &mut Report) {
        self.wait_quiet_after_close(report);
        wait_or_note(report, Duration::from_millis(50), || {
            let seq = redis.event_seq();
            let delivered = json_u64(&self.healthz(), "last_event_id");
            match delivered >= seq {
                true => Ok(()),
                false => Err(format!(
                    "the pump was still behind (event {delivered} of {seq}) after {} s",
                    WAIT_LIMIT.as_secs()
                )),
            }
        });
    }

    fn idle_snapshot(&self, redis: &RedisServer) -> ProcSnapshot {
        let idle = CpuMeter::start(Some(self.pid()), redis.pid());
        thread::sleep(IDLE_SAMPLE);
        ProcSnapshot {
            idle_cpu: idle.stop().server,
            ..ProcSnapshot::of(self.pid())
        }
    }

    fn log_warnings(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

/// The bench's readings of Redis, through the same client library the server uses.
trait RedisProbe {
    /// A plain connection for the bench's own commands.
    fn connect(&self) -> redis::Connection;
    /// The `redis_version` INFO reports, for the report's machine table.
    fn version(&self) -> String;
    /// The newest event id the server's store has handed out.
    fn event_seq(&self) -> u64;
}

impl RedisProbe for RedisServer {
    fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connecting to the bench's redis-server")
    }

    fn version(&self) -> String {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut self.connect())
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_string()
    }

    fn event_seq(&self) -> u64 {
        redis::cmd("GET")
            .arg(format!("{SERVER_TAG}:event_seq"))
            .query::<Option<u64>>(&mut self.connect())
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}
