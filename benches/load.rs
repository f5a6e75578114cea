//! The load benchmark (`make bench`, i.e. `cargo bench --bench load`): starts
//! its own redis-server and the release `likeboard` binary, drives them over
//! loopback, and writes what it measured to BENCHMARKS.md.
//!
//! Scenarios (issue 6): like throughput; fan-out latency at 1,000 / 5,000 /
//! 9,000 SSE clients (as far as the server's cap and our descriptors allow);
//! a like storm under 1,000 clients; the server's memory, threads and
//! descriptors per idle client; and two limits measured in the same run: the
//! same Lua script driven straight at Redis (the ceiling for likes/s) and one
//! thread writing a frame to N plain sockets (the floor for fan-out).
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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Where the bench learns the like script from: the server's own source, so we
/// always measure exactly the script the server runs.
const STORE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/redis.rs");
const SCRIPT_START: &str = "const SET_LIKE: &str = r#\"";
const SCRIPT_END: &str = "\"#;";
/// The server's default key prefix; its keys live under `{likeboard}:`.
const SERVER_TAG: &str = "{likeboard}";
/// A separate prefix for the direct-Redis run, so its events never reach the
/// server's pump.
const DIRECT_TAG: &str = "{likeboard-bench-direct}";
/// The stream length the server uses by default (`--stream-len`).
const STREAM_LEN: u64 = 10_000;
/// Threads reading SSE sockets: one per core of the development machine.
const READER_THREADS: usize = 2;
/// Threads opening SSE connections in parallel.
const CONNECT_THREADS: usize = 4;
/// Descriptors the bench keeps for itself besides client sockets.
const RESERVED_FDS: usize = 128;
/// Bytes of the frame the fan-out floor writes: about one chunked like event.
const FLOOR_FRAME: usize = 60;
/// Likes one storm sender may send (its send-time log is preallocated).
const STORM_LOG: usize = 200_000;
/// CPU (% of one core) other processes may use in a phase before the report
/// says the run shared the machine.
const SHARED_MACHINE_PCT: f64 = 25.0;
/// How long the server's CPU is sampled with idle clients.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
/// Everything waits at most this long for a condition before reporting it.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// The sizes of one run: the issue's for a full run, small ones for `--quick`.
struct Sizes {
    quick: bool,
    /// Clients and duration of the like-throughput run (and the direct ceiling).
    like_clients: usize,
    like_secs: u64,
    /// Fan-out sizes asked for; the largest is trimmed to what fits.
    fan_out: Vec<usize>,
    /// Likes sent per fan-out size, and the gap between them.
    fan_out_likes: usize,
    fan_out_gap: Duration,
    /// The storm: SSE clients, senders and duration.
    storm_clients: usize,
    storm_senders: usize,
    storm_secs: u64,
    /// How long idle clients are left before the server is weighed: longer than
    /// tiny_http's pool keeps an idle thread (5 s), so that threads the connect
    /// burst needed for a moment are gone and the figures are the steady state.
    idle_settle: Duration,
}

impl Sizes {
    fn full() -> Sizes {
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
            idle_settle: Duration::from_secs(6),
        }
    }

    fn quick() -> Sizes {
        Sizes {
            quick: true,
            like_secs: 2,
            fan_out: vec![100, 300, 500],
            fan_out_likes: 10,
            storm_clients: 100,
            storm_secs: 2,
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
    if let Some(bad) = args
        .iter()
        .find(|a| a.starts_with("--") && *a != "--bench" && *a != "--quick")
    {
        eprintln!("load: unknown flag {bad}; the only flag is --quick");
        std::process::exit(2);
    }
    epoch();
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let started = Instant::now();
    let report = run(&sizes);
    let markdown = report.markdown(&sizes, started.elapsed());
    println!("\n{markdown}");
    let path = if quick {
        target_dir().join("bench-quick.md")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")
    };
    let kept = if quick {
        String::new()
    } else {
        kept_notes(&path)
    };
    match std::fs::write(&path, format!("{markdown}{kept}")) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("load: could not write {}: {e}", path.display()),
    }
}

/// Runs every scenario against one Redis and one server.
fn run(sizes: &Sizes) -> Report {
    let nofile = raise_fd_limit();
    let run_dir = target_dir().join("bench-run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).expect("creating the bench's run directory");

    let redis = RedisServer::start(&run_dir);
    let server = Likeboard::start(&run_dir, redis.port);
    let mut report = Report::new(machine(&redis, nofile), &redis, &server);
    report.load_average.0 = load_average();
    let health = server.healthz();
    let cap = json_u64(&health, "max_subscribers") as usize;
    report.cap = cap;

    // First, while tiny_http's pool is at its minimum of threads (4): that is
    // when a burst of connections can leave one unserved.
    step("a burst of new keep-alive connections");
    report.burst = Some(Burst::measure(server.addr, sizes.like_clients));
    server.wait_quiet(&redis, &mut report);

    // 5a while the server is idle: the ceiling the like path can reach.
    step("limit: the like script straight against Redis");
    report.ceiling = Some(direct_ceiling(&redis, sizes));
    server.wait_quiet(&redis, &mut report);

    step("like throughput");
    report.likes = Some(like_throughput(&server, &redis, sizes));
    server.wait_quiet(&redis, &mut report);
    report.memory.push((0, server.idle_snapshot(&redis)));

    // The largest size is what fits: the server's cap, and our descriptors
    // (the floor holds both ends of every socket pair).
    let fits = cap.min(nofile.saturating_sub(RESERVED_FDS) / 2);
    for &asked in &sizes.fan_out {
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

    step("like storm");
    report.storm = Some(storm(&server, &redis, sizes, &mut report));
    server.wait_quiet(&redis, &mut report);
    report.server_log_warnings = server.log_warnings();
    report.load_average.1 = load_average();
    report
}

fn step(what: &str) {
    println!("[{:>6.1} s] {what}", epoch().elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// A run of likes: how many, how fast, how long each took.
struct LikeRun {
    clients: usize,
    secs: f64,
    acked: u64,
    failures: u64,
    latency: Histogram,
    /// The liked comment's score afterwards (must equal `acked`).
    final_score: Option<u64>,
    /// CPU used meanwhile, by us and by others.
    cpu: CpuUse,
}

impl LikeRun {
    fn rate(&self) -> f64 {
        self.acked as f64 / self.secs
    }
}

/// 5a: the server's like script, sent as EVALSHA (loaded on NOSCRIPT, exactly as
/// the server's `redis::Script` does) from many threads, with no HTTP at all.
fn direct_ceiling(redis: &RedisServer, sizes: &Sizes) -> LikeRun {
    let source = std::fs::read_to_string(STORE_SOURCE).expect("reading src/store/redis.rs");
    let script = source
        .split_once(SCRIPT_START)
        .and_then(|(_, rest)| rest.split_once(SCRIPT_END))
        .map(|(script, _)| script.to_string())
        .expect("SET_LIKE between its markers in src/store/redis.rs");
    let member = format!("{:012}", 1);
    let comments = format!("{DIRECT_TAG}:comments");
    let mut con = redis.connect();
    redis::cmd("HSET")
        .arg(&comments)
        .arg(&member)
        .arg("{}")
        .query::<()>(&mut con)
        .expect("creating the direct-run comment");

    let until = Instant::now() + Duration::from_secs(sizes.like_secs);
    let cpu = CpuMeter::start(None, redis.pid());
    let started = Instant::now();
    let handles: Vec<JoinHandle<(u64, u64, Histogram)>> = (0..sizes.like_clients)
        .map(|_| {
            let mut con = redis.connect();
            let script = redis::Script::new(&script);
            let (comments, member) = (comments.clone(), member.clone());
            thread::spawn(move || {
                let (mut acked, mut failures, mut latency) = (0, 0, Histogram::new());
                while Instant::now() < until {
                    let visitor = format!("c:{}", next_visitor());
                    let t = Instant::now();
                    let reply: redis::RedisResult<(u8, u8, u64)> = script
                        .key(&comments)
                        .key(format!("{DIRECT_TAG}:ranking"))
                        .key(format!("{DIRECT_TAG}:likers:{member}"))
                        .key(format!("{DIRECT_TAG}:liked:{visitor}"))
                        .key(format!("{DIRECT_TAG}:event_seq"))
                        .key(format!("{DIRECT_TAG}:events"))
                        .arg(&member)
                        .arg(&visitor)
                        .arg("like")
                        .arg(STREAM_LEN)
                        .invoke(&mut con);
                    match reply {
                        Ok((1, 1, _)) => {
                            acked += 1;
                            latency.record(t.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (acked, failures, latency)
            })
        })
        .collect();
    let mut run = LikeRun {
        clients: sizes.like_clients,
        secs: 0.0,
        acked: 0,
        failures: 0,
        latency: Histogram::new(),
        final_score: None,
        cpu: CpuUse::default(),
    };
    for h in handles {
        let (acked, failures, latency) = h.join().expect("a direct-Redis thread panicked");
        run.acked += acked;
        run.failures += failures;
        run.latency.merge(&latency);
    }
    run.secs = started.elapsed().as_secs_f64();
    run.cpu = cpu.stop();
    run.final_score = redis::cmd("SCARD")
        .arg(format!("{DIRECT_TAG}:likers:{member}"))
        .query(&mut con)
        .ok();
    run
}

/// 1: keep-alive clients liking one comment, each like from a new visitor.
fn like_throughput(server: &Likeboard, redis: &RedisServer, sizes: &Sizes) -> LikeRun {
    let comment = server.create_comment("like throughput");
    // Connections are opened one at a time, before the clock starts: see
    // `connection_burst` for what happens when they all arrive at once.
    let connections: Vec<HttpConn> = (0..sizes.like_clients)
        .map(|_| HttpConn::open(server.addr))
        .collect();
    let until = Instant::now() + Duration::from_secs(sizes.like_secs);
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    let started = Instant::now();
    let handles: Vec<_> = connections
        .into_iter()
        .map(|http| {
            let job = LikeJob {
                http,
                comment,
                ledger: None,
                max_likes: 10_000_000,
                until,
                gap: None,
            };
            thread::spawn(move || job.run())
        })
        .collect();
    let results: Vec<LikeResult> = handles
        .into_iter()
        .map(|h| h.join().expect("a like sender panicked"))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    let mut run = LikeRun::from_results(sizes.like_clients, secs, &results);
    run.cpu = cpu;
    run.final_score = server.score_of(comment);
    run
}

/// What each connection of the burst asks for, as a page's first request might.
const BURST_PATH: &str = "/static/style.css";

/// 1b: keep-alive connections opened all at once, each sending one request
/// and then staying open, as browser tabs do. How long the slowest waits for
/// its first reply shows whether a connection can be left unserved.
struct Burst {
    connections: usize,
    /// Connections whose first reply took longer than this.
    slow_after: Duration,
    slow: usize,
    failed: usize,
    first_reply: Histogram,
    held: Duration,
}

impl Burst {
    fn measure(addr: SocketAddr, connections: usize) -> Burst {
        let held = Duration::from_secs(3);
        let go = Arc::new(std::sync::Barrier::new(connections));
        let handles: Vec<_> = (0..connections)
            .map(|_| {
                let go = Arc::clone(&go);
                thread::spawn(move || {
                    go.wait();
                    let opened = Instant::now();
                    let mut http = HttpConn::new(addr);
                    // A static file: no Redis behind it, so only the HTTP layer is timed.
                    let reply = http.request("GET", BURST_PATH, None, None);
                    let took = opened.elapsed();
                    // Stay open until every connection has had its chance.
                    thread::sleep((opened + held).saturating_duration_since(Instant::now()));
                    (matches!(reply, Ok((200, _))), took)
                })
            })
            .collect();
        let mut burst = Burst {
            connections,
            slow_after: Duration::from_millis(500),
            slow: 0,
            failed: 0,
            first_reply: Histogram::new(),
            held,
        };
        for h in handles {
            let (ok, took) = h.join().expect("a burst connection panicked");
            burst.failed += usize::from(!ok);
            burst.slow += usize::from(took > burst.slow_after);
            burst.first_reply.record(took);
        }
        burst
    }
}

/// One fan-out size: N idle clients (their memory cost measured), then likes
/// spaced apart, each timed from its send to every client's read; then the
/// floor at the same N.
struct FanOut {
    asked: usize,
    n: usize,
    limited_by: Option<String>,
    connect_failures: usize,
    connect_secs: f64,
    likes: LikeRun,
    expected: u64,
    tally: Tally,
    /// Clients the server no longer counted at the end of the phase.
    server_dropped: u64,
    floor: Floor,
}

fn fan_out(
    server: &Likeboard,
    redis: &RedisServer,
    sizes: &Sizes,
    n: usize,
    asked: usize,
    limited_by: Option<String>,
    report: &mut Report,
) -> FanOut {
    let comment = server.create_comment("fan-out");
    let ledger = Ledger::new(&[comment], sizes.fan_out_likes + 1);
    let connect_started = Instant::now();
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let readers = Readers::start(clients);
    server.wait_subscribers(n - connect_failures, report);
    // Idle clients: let the connect burst settle, then weigh the server and
    // see what it costs to do nothing with N clients (timers, scans).
    thread::sleep(sizes.idle_settle);
    report.memory.push((n, server.idle_snapshot(redis)));

    step(&format!("  {} likes to {n} clients", sizes.fan_out_likes));
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    let started = Instant::now();
    let result = LikeJob {
        http: HttpConn::open(server.addr),
        comment,
        ledger: Some((Arc::clone(&ledger), 0)),
        max_likes: sizes.fan_out_likes as u64,
        until: Instant::now() + WAIT_LIMIT,
        gap: Some(sizes.fan_out_gap),
    }
    .run();
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    let expected = result.acked * (n - connect_failures) as u64;
    readers.wait_for(expected, Duration::from_secs(10));
    let (clients, mut tally) = readers.stop();
    tally.add_shortfall(&clients, &[result.acked]);
    let subscribers = json_u64(&server.healthz(), "subscribers");
    let server_dropped = ((n - connect_failures) as u64).saturating_sub(subscribers);
    close_all(clients);

    let mut likes = LikeRun::from_results(1, secs, &[result]);
    likes.cpu = cpu;
    server.wait_quiet_after_close(report);
    step(&format!("fan-out floor at {n} sockets"));
    let floor = Floor::measure(n, sizes.fan_out_likes, sizes.fan_out_gap);
    FanOut {
        asked,
        n,
        limited_by,
        connect_failures,
        connect_secs,
        likes,
        expected,
        tally,
        server_dropped,
        floor,
    }
}

/// 3: many SSE clients while senders like as fast as they can.
struct Storm {
    clients: usize,
    connect_failures: usize,
    likes: LikeRun,
    expected: u64,
    tally: Tally,
    server_dropped: u64,
}

fn storm(server: &Likeboard, redis: &RedisServer, sizes: &Sizes, report: &mut Report) -> Storm {
    // Each sender likes its own comment, so the k-th like it sends makes
    // score k: that is how a client's event is matched to its send time.
    let comments: Vec<u64> = (0..sizes.storm_senders)
        .map(|i| server.create_comment(&format!("storm {i}")))
        .collect();
    let ledger = Ledger::new(&comments, STORM_LOG);
    let n = sizes.storm_clients;
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let readers = Readers::start(clients);
    server.wait_subscribers(n - connect_failures, report);

    let connections: Vec<HttpConn> = comments
        .iter()
        .map(|_| HttpConn::open(server.addr))
        .collect();
    let until = Instant::now() + Duration::from_secs(sizes.storm_secs);
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    let started = Instant::now();
    let handles: Vec<_> = comments
        .iter()
        .zip(connections)
        .enumerate()
        .map(|(i, (&comment, http))| {
            let job = LikeJob {
                http,
                comment,
                ledger: Some((Arc::clone(&ledger), i)),
                max_likes: STORM_LOG as u64 - 1,
                until,
                gap: None,
            };
            thread::spawn(move || job.run())
        })
        .collect();
    let results: Vec<LikeResult> = handles
        .into_iter()
        .map(|h| h.join().expect("a storm sender panicked"))
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    let acked: Vec<u64> = results.iter().map(|r| r.acked).collect();
    let expected = acked.iter().sum::<u64>() * (n - connect_failures) as u64;
    readers.wait_for(expected, Duration::from_secs(20));
    let (clients, mut tally) = readers.stop();
    tally.add_shortfall(&clients, &acked);
    let subscribers = json_u64(&server.healthz(), "subscribers");
    close_all(clients);
    let mut likes = LikeRun::from_results(sizes.storm_senders, secs, &results);
    likes.cpu = cpu;
    Storm {
        clients: n,
        connect_failures,
        likes,
        expected,
        tally,
        server_dropped: ((n - connect_failures) as u64).saturating_sub(subscribers),
    }
}

/// 5b: one thread writing a frame to N connected loopback sockets, read by the
/// same epoll readers as the SSE clients: the least fan-out can cost here.
struct Floor {
    n: usize,
    tally: Tally,
    expected: u64,
}

impl Floor {
    fn measure(n: usize, frames: usize, gap: Duration) -> Floor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the floor's listener");
        let addr = listener.local_addr().expect("the floor listener's address");
        let sent_at: Arc<Vec<AtomicU64>> =
            Arc::new((0..frames).map(|_| AtomicU64::new(0)).collect());
        let mut clients = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            // Connect, then accept at once: the accept queue never fills.
            let client = TcpStream::connect(addr).expect("connecting a floor socket");
            let (server, _) = listener.accept().expect("accepting a floor socket");
            client
                .set_nonblocking(true)
                .expect("non-blocking floor socket");
            clients.push(Conn::new(
                client,
                FloorClient {
                    received: 0,
                    sent_at: Arc::clone(&sent_at),
                },
            ));
            servers.push(server);
        }
        let readers = Readers::start(clients);
        let frame = [b'x'; FLOOR_FRAME];
        let started = Instant::now();
        for (k, slot) in sent_at.iter().enumerate() {
            thread::sleep((started + gap * k as u32).saturating_duration_since(Instant::now()));
            slot.store(now_ns(), Ordering::SeqCst);
            for socket in &mut servers {
                let _ = socket.write_all(&frame);
            }
        }
        let expected = (n * frames) as u64;
        readers.wait_for(expected, Duration::from_secs(10));
        let (clients, tally) = readers.stop();
        close_all(clients);
        close_all(servers.into_iter().map(|s| Conn::new(s, ())).collect());
        Floor { n, tally, expected }
    }
}

// ---------------------------------------------------------------------------
// Likes over HTTP
// ---------------------------------------------------------------------------

/// One sender: a keep-alive connection liking one comment, each like from a
/// new visitor, until a deadline or a count.
struct LikeJob {
    /// Opened and warmed up by [`HttpConn::open`] before the clock starts.
    http: HttpConn,
    comment: u64,
    /// Where to log send times, and as which sender (for the SSE clients).
    ledger: Option<(Arc<Ledger>, usize)>,
    max_likes: u64,
    until: Instant,
    /// Time between likes; none means as fast as replies come.
    gap: Option<Duration>,
}

struct LikeResult {
    acked: u64,
    failures: u64,
    latency: Histogram,
}

impl LikeJob {
    fn run(mut self) -> LikeResult {
        let path = format!("/api/comments/{}/like", self.comment);
        let mut result = LikeResult {
            acked: 0,
            failures: 0,
            latency: Histogram::new(),
        };
        let started = Instant::now();
        for k in 0..self.max_likes {
            if let Some(gap) = self.gap {
                thread::sleep((started + gap * k as u32).saturating_duration_since(Instant::now()));
            }
            if Instant::now() >= self.until {
                break;
            }
            let cookie = next_visitor();
            let t = Instant::now();
            if let Some((ledger, sender)) = &self.ledger {
                // This like should make score acked + 1.
                ledger.record_send(*sender, result.acked + 1, now_ns());
            }
            match self.http.request("POST", &path, Some(&cookie), None) {
                Ok((200, body)) => {
                    result.latency.record(t.elapsed());
                    result.acked += 1;
                    // Another writer on our comment would break the matching of
                    // events to send times: count it, never hide it.
                    if self.ledger.is_some()
                        && json_number(&body, b"\"score\":") != Some(result.acked)
                    {
                        result.failures += 1;
                    }
                }
                _ => result.failures += 1,
            }
        }
        result
    }
}

impl LikeRun {
    fn from_results(clients: usize, secs: f64, results: &[LikeResult]) -> LikeRun {
        let mut run = LikeRun {
            clients,
            secs,
            acked: 0,
            failures: 0,
            latency: Histogram::new(),
            final_score: None,
            cpu: CpuUse::default(),
        };
        for r in results {
            run.acked += r.acked;
            run.failures += r.failures;
            run.latency.merge(&r.latency);
        }
        run
    }
}

/// A fresh visitor id (32 hex digits, the cookie's format) for every like.
fn next_visitor() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:032x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// When each like was sent, per sender, so a client can time its events.
struct Ledger {
    comments: Vec<u64>,
    /// `sent_at[sender][score - 1]`: nanoseconds since the bench started; 0 = not sent.
    sent_at: Vec<Vec<AtomicU64>>,
}

impl Ledger {
    fn new(comments: &[u64], capacity: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            comments: comments.to_vec(),
            sent_at: comments
                .iter()
                .map(|_| (0..capacity).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        })
    }

    fn sender_of(&self, comment: u64) -> Option<usize> {
        self.comments.iter().position(|&c| c == comment)
    }

    fn record_send(&self, sender: usize, score: u64, at: u64) {
        if let Some(slot) = self.sent_at[sender].get(score as usize - 1) {
            slot.store(at, Ordering::SeqCst);
        }
    }

    fn sent_at(&self, sender: usize, score: u64) -> Option<u64> {
        let at = self.sent_at[sender]
            .get((score as usize).checked_sub(1)?)?
            .load(Ordering::SeqCst);
        (at != 0).then_some(at)
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client (keep-alive, Content-Length bodies only)
// ---------------------------------------------------------------------------

struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    fn new(addr: SocketAddr) -> HttpConn {
        HttpConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// A connection already answered once (`GET /healthz`), so a sender's
    /// first timed request does not include setting it up.
    fn open(addr: SocketAddr) -> HttpConn {
        let mut http = HttpConn::new(addr);
        if let Err(e) = http.request("GET", "/healthz", None, None) {
            eprintln!("load: warming up a connection failed: {e}");
        }
        http
    }

    /// Sends one request and reads the reply: (status, body). After an error
    /// the connection is dropped and the next request opens a new one.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        visitor: Option<&str>,
        json: Option<&str>,
    ) -> io::Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(v) = visitor {
            let _ = write!(req, "Cookie: lb_visitor={v}\r\n");
        }
        let body = json.unwrap_or("");
        if json.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(req, "Content-Length: {}\r\n\r\n{body}", body.len());
        let reply = self.exchange(req.as_bytes());
        if reply.is_err() {
            self.stream = None;
        }
        reply
    }

    fn exchange(&mut self, req: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(req)?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("no status line"))?;
        let length: usize = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("reply without Content-Length"))?;
        while self.buf.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if header_value(&head, "connection") == Some("close") {
            self.stream = None;
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }
}

/// The value of a header in a lowercased response head.
fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        (n.trim() == name).then(|| v.trim())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned number after `key` in a one-line JSON object, e.g. `"score":`.
fn json_number(data: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(data, key)? + key.len();
    let mut digits = data[start..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .peekable();
    digits.peek()?;
    digits.try_fold(0u64, |n, b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn json_u64(value: &serde_json::Value, key: &str) -> u64 {
    match &value[key] {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// SSE clients: connect, then parse chunked SSE frames
// ---------------------------------------------------------------------------

/// Opens `n` event streams from a few threads; returns them (with the head's
/// leftover bytes already parsed) and how many failed to open.
fn connect_sse(addr: SocketAddr, n: usize, ledger: &Arc<Ledger>) -> (Vec<Conn<SseClient>>, usize) {
    let per_thread = n.div_ceil(CONNECT_THREADS);
    let handles: Vec<_> = (0..CONNECT_THREADS)
        .map(|t| {
            let count = per_thread.min(n.saturating_sub(t * per_thread));
            let ledger = Arc::clone(ledger);
            thread::spawn(move || {
                let mut opened = Vec::with_capacity(count);
                let mut failed = 0;
                for _ in 0..count {
                    match open_stream(addr, &ledger) {
                        Ok(conn) => opened.push(conn),
                        Err(e) => {
                            if failed == 0 {
                                eprintln!("load: an event stream failed to open: {e}");
                            }
                            failed += 1;
                        }
                    }
                }
                (opened, failed)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    let mut failed = 0;
    for h in handles {
        let (opened, f) = h.join().expect("a connecting thread panicked");
        all.extend(opened);
        failed += f;
    }
    (all, failed)
}

fn open_stream(addr: SocketAddr, ledger: &Arc<Ledger>) -> io::Result<Conn<SseClient>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200")
        || header_value(&head, "content-type") != Some("text/event-stream")
        || header_value(&head, "transfer-encoding") != Some("chunked")
    {
        return Err(io::Error::other(format!("unexpected head: {head:?}")));
    }
    s.set_nonblocking(true)?;
    let mut client = SseClient::new(Arc::clone(ledger));
    let mut tally = Tally::default();
    client.feed(&buf[head_end..], now_ns(), &mut tally);
    Ok(Conn::new(s, client))
}

/// Something fed with the bytes one socket receives.
trait Feed: Send + 'static {
    /// Consumes bytes read at `now` (ns); returns how many deliveries completed.
    fn feed(&mut self, bytes: &[u8], now: u64, tally: &mut Tally) -> u64;
}

/// One event-stream client: undoes chunked framing, splits events at blank
/// lines, and checks every like event for its comment against the ledger.
struct SseClient {
    ledger: Arc<Ledger>,
    chunk: Chunk,
    /// Decoded bytes not yet ended by a blank line.
    text: Vec<u8>,
    /// Highest score seen per sender's comment.
    seen: Vec<u64>,
    last_id: u64,
}

/// Where the chunked decoder is.
enum Chunk {
    /// Reading the hex size line (extensions and CR ignored).
    Size(usize),
    /// Inside a chunk with this many bytes to go.
    Data(usize),
    /// Skipping the CRLF after a chunk's data.
    Crlf(usize),
    /// The zero chunk arrived: the server ended the stream.
    Done,
}

impl SseClient {
    fn new(ledger: Arc<Ledger>) -> SseClient {
        let senders = ledger.comments.len();
        SseClient {
            ledger,
            chunk: Chunk::Size(0),
            text: Vec::with_capacity(256),
            seen: vec![0; senders],
            last_id: 0,
        }
    }

    fn dechunk(&mut self, mut input: &[u8]) {
        while let Some(&b) = input.first() {
            match &mut self.chunk {
                Chunk::Size(size) => {
                    input = &input[1..];
                    match b {
                        b'\n' if *size == 0 => self.chunk = Chunk::Done,
                        b'\n' => self.chunk = Chunk::Data(*size),
                        _ => {
                            if let Some(d) = (b as char).to_digit(16) {
                                *size = *size * 16 + d as usize;
                            }
                        }
                    }
                }
                Chunk::Data(left) => {
                    let take = (*left).min(input.len());
                    self.text.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *left -= take;
                    if *left == 0 {
                        self.chunk = Chunk::Crlf(2);
                    }
                }
                Chunk::Crlf(left) => {
                    input = &input[1..];
                    *left -= 1;
                    if *left == 0 {
                        self.chunk = Chunk::Size(0);
                    }
                }
                Chunk::Done => return,
            }
        }
    }

    /// One event block (the lines before a blank line).
    fn event(&mut self, block: &[u8], now: u64, tally: &mut Tally) -> u64 {
        let (mut id, mut name, mut data) = (None, &b""[..], &b""[..]);
        for line in block.split(|&b| b == b'\n') {
            if let Some(v) = line.strip_prefix(b"id: ") {
                id = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
            } else if let Some(v) = line.strip_prefix(b"event: ") {
                name = v;
            } else if let Some(v) = line.strip_prefix(b"data: ") {
                data = v;
            }
        }
        // `retry:` blocks and heartbeat comments carry no id.
        let Some(id) = id else { return 0 };
        if id <= self.last_id {
            tally.out_of_order += 1;
        }
        self.last_id = self.last_id.max(id);
        if name != b"like" {
            return 0;
        }
        let (Some(comment), Some(score)) = (
            json_number(data, b"\"id\":"),
            json_number(data, b"\"score\":"),
        ) else {
            tally.unexpected += 1;
            return 0;
        };
        let Some(sender) = self.ledger.sender_of(comment) else {
            tally.unexpected += 1;
            return 0;
        };
        let seen = &mut self.seen[sender];
        if score <= *seen {
            tally.duplicates += 1;
            return 0;
        }
        tally.missed += score - *seen - 1;
        *seen = score;
        if let Some(sent) = self.ledger.sent_at(sender, score) {
            tally.latency.record_ns(now.saturating_sub(sent));
        }
        1
    }
}

impl Feed for SseClient {
    fn feed(&mut self, bytes: &[u8], now: u64, tally: &mut Tally) -> u64 {
        self.dechunk(bytes);
        // Taken out while its events are handled, which needs `self`.
        let mut text = std::mem::take(&mut self.text);
        let mut delivered = 0;
        let mut start = 0;
        while let Some(end) = find(&text[start..], b"\n\n") {
            delivered += self.event(&text[start..start + end], now, tally);
            start += end + 2;
        }
        text.drain(..start);
        self.text = text;
        delivered
    }
}

/// A floor socket: counts fixed-size frames and times each against its send.
struct FloorClient {
    received: usize,
    sent_at: Arc<Vec<AtomicU64>>,
}

impl Feed for FloorClient {
    fn feed(&mut self, bytes: &[u8], now: u64, tally: &mut Tally) -> u64 {
        let before = self.received / FLOOR_FRAME;
        self.received += bytes.len();
        let after = self.received / FLOOR_FRAME;
        for k in before..after {
            match self.sent_at.get(k).map(|t| t.load(Ordering::SeqCst)) {
                Some(sent) if sent != 0 => tally.latency.record_ns(now.saturating_sub(sent)),
                _ => tally.unexpected += 1,
            }
        }
        (after - before) as u64
    }
}

/// A client socket and what reads it.
struct Conn<C> {
    stream: TcpStream,
    state: C,
    open: bool,
}

impl<C> Conn<C> {
    fn new(stream: TcpStream, state: C) -> Conn<C> {
        Conn {
            stream,
            state,
            open: true,
        }
    }
}

/// Counts of one phase, per reader thread and then merged.
#[derive(Default)]
struct Tally {
    latency: Histogram,
    /// Events whose scores skipped past (or never reached) one that was acked.
    missed: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Like events for comments we did not like, or unparsable ones.
    unexpected: u64,
    /// Connections that ended (EOF or error) while we read them.
    dropped: u64,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.latency.merge(&other.latency);
        self.missed += other.missed;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.dropped += other.dropped;
    }

    /// Events a client never saw at all: from its last score to the acked count.
    fn add_shortfall(&mut self, clients: &[Conn<SseClient>], acked: &[u64]) {
        for c in clients {
            for (seen, acked) in c.state.seen.iter().zip(acked) {
                self.missed += acked.saturating_sub(*seen);
            }
        }
    }

    fn delivered(&self) -> u64 {
        self.latency.count
    }
}

// ---------------------------------------------------------------------------
// Reading many sockets from two threads (epoll)
// ---------------------------------------------------------------------------

struct Readers<C> {
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    handles: Vec<JoinHandle<(Vec<Conn<C>>, Tally)>>,
}

impl<C: Feed> Readers<C> {
    /// Splits the connections over the reader threads and starts reading.
    fn start(mut conns: Vec<Conn<C>>) -> Readers<C> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let per_thread = conns.len().div_ceil(READER_THREADS).max(1);
        let mut handles = Vec::new();
        while !conns.is_empty() {
            let rest = conns.split_off(per_thread.min(conns.len()));
            let mine = std::mem::replace(&mut conns, rest);
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            handles.push(
                thread::Builder::new()
                    .name("reader".into())
                    .spawn(move || read_loop(mine, &stop, &progress))
                    .expect("spawning a reader thread"),
            );
        }
        Readers {
            stop,
            progress,
            handles,
        }
    }

    /// Waits until `expected` deliveries were counted, or no progress was made
    /// for two seconds, or `limit` passed.
    fn wait_for(&self, expected: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = (self.progress.load(Ordering::SeqCst), Instant::now());
        while Instant::now() < deadline {
            let now = self.progress.load(Ordering::SeqCst);
            if now >= expected {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops reading; returns every connection and the merged tally.
    fn stop(self) -> (Vec<Conn<C>>, Tally) {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        let mut tally = Tally::default();
        for h in self.handles {
            let (conns, t) = h.join().expect("a reader thread panicked");
            all.extend(conns);
            tally.merge(&t);
        }
        (all, tally)
    }
}

fn read_loop<C: Feed>(
    mut conns: Vec<Conn<C>>,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> (Vec<Conn<C>>, Tally) {
    let mut tally = Tally::default();
    // SAFETY: epoll_create1 returns a new descriptor (or -1, checked).
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(raw >= 0, "epoll_create1: {}", io::Error::last_os_error());
    // SAFETY: `raw` is a descriptor we own; OwnedFd closes it.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: both descriptors are open; `ev` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                c.stream.as_raw_fd(),
                &mut ev,
            )
        };
        assert_eq!(rc, 0, "epoll_ctl: {}", io::Error::last_os_error());
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: `events` has room for the number of entries we pass.
        let ready = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                20,
            )
        };
        for ev in events.iter().take(ready.max(0) as usize) {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            match c.stream.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let done = c.state.feed(&buf[..n], now_ns(), &mut tally);
                    if done > 0 {
                        progress.fetch_add(done, Ordering::SeqCst);
                    }
                }
                // A spurious wake-up, not an end.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Ok(_) | Err(_) => {
                    c.open = false;
                    tally.dropped += 1;
                    // SAFETY: removing an open descriptor from our epoll set.
                    unsafe {
                        libc::epoll_ctl(
                            epoll.as_raw_fd(),
                            libc::EPOLL_CTL_DEL,
                            c.stream.as_raw_fd(),
                            std::ptr::null_mut(),
                        )
                    };
                }
            }
        }
    }
    (conns, tally)
}

/// Closes sockets with a reset (SO_LINGER 0): no TIME_WAIT left on our ports,
/// and the server's next write to each fails at once.
fn close_all<C>(conns: Vec<Conn<C>>) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for c in conns {
        // SAFETY: setting a socket option on an open socket from a valid struct.
        unsafe {
            libc::setsockopt(
                c.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
}

// ---------------------------------------------------------------------------
// The processes we start
// ---------------------------------------------------------------------------

/// Makes a child die with us, even if we are killed outright.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A redis-server on a free loopback port, nothing persisted, killed and
/// reaped on drop.
struct RedisServer {
    port: u16,
    child: Child,
    log: PathBuf,
}

impl RedisServer {
    fn start(dir: &Path) -> RedisServer {
        let port = free_port();
        let log = dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "could not start redis-server ({e}); install it, e.g. apt-get install redis-server"
            )
        });
        let server = RedisServer { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = redis::Client::open(server.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return server;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server never answered PING; its log:\n{}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

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

    /// The newest event id the server's store has handed out.
    fn event_seq(&self) -> u64 {
        redis::cmd("GET")
            .arg(format!("{SERVER_TAG}:event_seq"))
            .query::<Option<u64>>(&mut self.connect())
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release `likeboard` binary on a free port, killed and reaped on drop.
struct Likeboard {
    addr: SocketAddr,
    child: Child,
    args: Vec<String>,
    log: PathBuf,
}

impl Likeboard {
    fn start(dir: &Path, redis_port: u16) -> Likeboard {
        let args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            &format!("redis://127.0.0.1:{redis_port}/"),
            "--write-rate",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.join("likeboard.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_likeboard"));
        cmd.args(&args)
            // Nothing from our environment may change what we measure; warnings
            // only, so a line per request does not become part of the cost.
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("creating the server log"));
        for (key, _) in std::env::vars() {
            if key.starts_with("LIKEBOARD_") {
                cmd.env_remove(key);
            }
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("starting the likeboard binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let mut server = Likeboard {
            addr: "127.0.0.1:1".parse().expect("a placeholder address"),
            child,
            args,
            log,
        };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => server.addr = addr.parse().expect("the address the server printed"),
            Err(_) => server.died("never printed its address"),
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the server's state and the end of its log.
    fn died(&self, what: &str) -> ! {
        let state = exit_state(self.pid());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "likeboard {what} ({state}); last log lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

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

    fn create_comment(&self, content: &str) -> u64 {
        let body = serde_json::json!({ "content": content, "nickname": "bench" }).to_string();
        match HttpConn::new(self.addr).request("POST", "/api/comments", None, Some(&body)) {
            Ok((201, reply)) => json_number(&reply, b"\"id\":").expect("the new comment's id"),
            other => panic!(
                "creating a comment failed: {:?}",
                other.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
            ),
        }
    }

    /// A comment's score as the API reports it.
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

    /// Waits until the server counts `n` subscribers.
    fn wait_subscribers(&self, n: usize, report: &mut Report) {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let now = json_u64(&self.healthz(), "subscribers") as usize;
            if now == n {
                return;
            }
            if Instant::now() > deadline {
                report.notes.push(format!(
                    "waited in vain for {n} subscribers; the server counted {now}"
                ));
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// After our clients closed: a like wakes every writer, each write to a
    /// reset socket fails and that writer ends. Waits for zero subscribers.
    fn wait_quiet_after_close(&self, report: &mut Report) {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut nudge = None;
        let mut http = HttpConn::new(self.addr);
        loop {
            let now = json_u64(&self.healthz(), "subscribers");
            if now == 0 {
                return;
            }
            if Instant::now() > deadline {
                report.notes.push(format!(
                    "{now} subscribers were still counted {} s after their clients left",
                    WAIT_LIMIT.as_secs()
                ));
                return;
            }
            let id = *nudge.get_or_insert_with(|| self.create_comment("nudge"));
            let path = format!("/api/comments/{id}/like");
            let _ = http.request("POST", &path, Some(&next_visitor()), None);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Before a phase: no subscribers, and the pump has caught up with Redis.
    fn wait_quiet(&self, redis: &RedisServer, report: &mut Report) {
        self.wait_quiet_after_close(report);
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let seq = redis.event_seq();
            let delivered = json_u64(&self.healthz(), "last_event_id");
            if delivered >= seq {
                return;
            }
            if Instant::now() > deadline {
                report.notes.push(format!(
                    "the pump was still behind (event {delivered} of {seq}) after {} s",
                    WAIT_LIMIT.as_secs()
                ));
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process figures, and its CPU over [`IDLE_SAMPLE`] of
    /// doing nothing but holding its clients (timers, descriptor scans).
    fn idle_snapshot(&self, redis: &RedisServer) -> ProcSnapshot {
        let idle = CpuMeter::start(Some(self.pid()), redis.pid());
        thread::sleep(IDLE_SAMPLE);
        ProcSnapshot {
            idle_cpu: idle.stop().server,
            ..ProcSnapshot::of(self.pid())
        }
    }

    /// Warning and error lines the server logged during the run.
    fn log_warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

/// How a child ended, read without reaping it (`waitid` with `WNOWAIT`), so
/// its handle's Drop still reaps it.
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

impl Drop for Likeboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free loopback port")
}

/// Raises our soft open-files limit to the hard one; returns the soft limit.
fn raise_fd_limit() -> usize {
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
    lim.rlim_cur as usize
}

/// The cargo target directory (CARGO_TARGET_TMPDIR is `<target>/tmp`).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

// ---------------------------------------------------------------------------
// Measuring: time, latency histograms, /proc
// ---------------------------------------------------------------------------

/// The instant the bench started; every timestamp is nanoseconds since it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

/// Latencies in microseconds, in buckets 1/64 of their value wide (below 128 µs,
/// exact): percentiles within 1.6% whatever the range, in a fixed 30 KiB.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    const BUCKETS: usize = 58 * 64 + 64;

    fn new() -> Histogram {
        Histogram {
            counts: vec![0; Histogram::BUCKETS],
            count: 0,
            max_us: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < 128 {
            return us as usize;
        }
        let shift = 63 - us.leading_zeros() as u64 - 6;
        (shift * 64 + (us >> shift)) as usize
    }

    /// The middle of a bucket's range.
    fn value(index: usize) -> u64 {
        if index < 128 {
            return index as u64;
        }
        let shift = (index / 64 - 1) as u64;
        let low = ((index % 64) as u64 + 64) << shift;
        low + (1 << shift) / 2
    }

    fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos() as u64);
    }

    fn record_ns(&mut self, ns: u64) {
        let us = ns / 1000;
        self.counts[Histogram::index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `q` quantile (0..=1) in milliseconds; None when empty.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Histogram::value(i).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    fn p50(&self) -> Option<f64> {
        self.quantile_ms(0.50)
    }

    fn p99(&self) -> Option<f64> {
        self.quantile_ms(0.99)
    }

    fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }
}

/// A process's memory, threads and descriptors, from /proc.
#[derive(Clone, Copy, Default)]
struct ProcSnapshot {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    /// The server's CPU (% of one core) while its clients were idle, if measured.
    idle_cpu: Option<f64>,
}

impl ProcSnapshot {
    fn of(pid: u32) -> ProcSnapshot {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        ProcSnapshot {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            idle_cpu: None,
        }
    }
}

/// CPU time a process used, in seconds (user + system), from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Context switches of all of a process's live threads, from
/// /proc/PID/task/*/status. Each one is a thread going to sleep or being
/// preempted: the cost a thread-per-connection design pays per hand-off.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// CPU time all processes on the machine spent busy, in seconds, from the
/// first line of /proc/stat (everything but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Where the CPU went during a phase, in % of one core: the server, Redis,
/// this load generator, and every other process on the machine (other people's
/// builds and tests may share it; a phase with much "others" is not comparable).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: Option<f64>,
    /// The server's context switches (all its threads, voluntary or not).
    server_switches: u64,
    redis: f64,
    generator: f64,
    others: f64,
}

impl CpuUse {
    /// Four table cells: server | Redis | generator | others.
    fn cells(&self) -> String {
        format!(
            "{} | {:.0}% | {:.0}% | {:.0}%",
            self.server.map_or("-".into(), |c| format!("{c:.0}%")),
            self.redis,
            self.generator,
            self.others.max(0.0)
        )
    }
}

/// Measures a phase's [`CpuUse`].
struct CpuMeter {
    server: Option<(u32, f64)>,
    server_switches: u64,
    redis: (u32, f64),
    generator: f64,
    machine: f64,
    started: Instant,
}

impl CpuMeter {
    fn start(server: Option<u32>, redis: u32) -> CpuMeter {
        CpuMeter {
            server: server.map(|pid| (pid, cpu_seconds(pid))),
            server_switches: server.map_or(0, context_switches),
            redis: (redis, cpu_seconds(redis)),
            generator: cpu_seconds(std::process::id()),
            machine: machine_busy_seconds(),
            started: Instant::now(),
        }
    }

    fn stop(self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |(pid, before): (u32, f64)| (cpu_seconds(pid) - before) / wall * 100.0;
        let server = self.server.map(pct);
        let redis = pct(self.redis);
        let generator = pct((std::process::id(), self.generator));
        let all = (machine_busy_seconds() - self.machine) / wall * 100.0;
        CpuUse {
            server,
            server_switches: self.server.map_or(0, |(pid, _)| {
                context_switches(pid).saturating_sub(self.server_switches)
            }),
            redis,
            generator,
            others: all - server.unwrap_or(0.0) - redis - generator,
        }
    }
}

// ---------------------------------------------------------------------------
// The machine and the report
// ---------------------------------------------------------------------------

struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    redis: String,
    rustc: String,
    open_files: usize,
    max_map_count: String,
    /// The commit the server was built from, and whether src/ had changes on top.
    commit: String,
}

fn machine(redis: &RedisServer, open_files: usize) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map_or("unknown".into(), |v| {
                v.trim_start_matches([' ', '\t', ':']).to_string()
            }),
        cores: thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        redis: redis.version(),
        rustc: Command::new("rustc")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        open_files,
        max_map_count: read("/proc/sys/vm/max_map_count").trim().to_string(),
        commit: commit(),
    }
}

/// The 1, 5 and 15-minute load averages, from /proc/loadavg.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git rev-parse --short HEAD` of this checkout, noting uncommitted changes
/// to what the server is built from: figures belong to a version.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    match git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ]) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head} with uncommitted changes to src/ or Cargo.*"),
    }
}

/// Everything measured in one run.
#[derive(Default)]
struct Report {
    machine: Option<Machine>,
    server_command: String,
    redis_command: String,
    cap: usize,
    /// The machine's 1/5/15-minute load averages at the start and the end.
    load_average: (String, String),
    ceiling: Option<LikeRun>,
    likes: Option<LikeRun>,
    burst: Option<Burst>,
    fan_out: Vec<FanOut>,
    storm: Option<Storm>,
    /// (idle SSE clients, the server's process figures then).
    memory: Vec<(usize, ProcSnapshot)>,
    /// Anything that did not go as planned, said plainly in the report.
    notes: Vec<String>,
    server_log_warnings: Vec<String>,
}

/// The marker after which BENCHMARKS.md holds hand-written analysis that a new
/// run keeps.
const NOTES_MARKER: &str =
    "<!-- Everything below this line is written by hand and kept by `make bench`. -->";

fn kept_notes(path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match old.split_once(NOTES_MARKER) {
        Some((_, notes)) => format!("\n{NOTES_MARKER}{notes}"),
        None => format!("\n{NOTES_MARKER}\n"),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target's verdict: met, missed, or not measured.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Report {
    fn new(machine: Machine, redis: &RedisServer, server: &Likeboard) -> Report {
        Report {
            machine: Some(machine),
            server_command: format!(
                "{} {}",
                Path::new(env!("CARGO_BIN_EXE_likeboard"))
                    .file_name()
                    .map_or("likeboard".into(), |n| n.to_string_lossy()),
                server.args.join(" ")
            ),
            redis_command: format!(
                "redis-server --port {} --bind 127.0.0.1 --save \"\" --appendonly no",
                redis.port
            ),
            ..Report::default()
        }
    }

    fn markdown(&self, sizes: &Sizes, took: Duration) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Written by `{}` in {:.0} s{}. Loopback only: the load generator, the server and \
             Redis share the same cores, so every figure includes the generator's own cost.\n",
            if sizes.quick {
                "cargo bench --bench load -- --quick"
            } else {
                "make bench"
            },
            took.as_secs_f64(),
            if sizes.quick {
                " (QUICK: small sizes, a smoke check, not a measurement)"
            } else {
                ""
            }
        );
        if let Some((phase, others)) = self.busiest_neighbour() {
            if others > SHARED_MACHINE_PCT {
                let _ = writeln!(
                    w,
                    "**This run shared the machine**: other processes used up to {others:.0}% of a \
                     core (during {phase}). Absolute figures are pessimistic; ratios measured in \
                     the same phase (p99 against the floor, likes/s against the ceiling) hold \
                     better.\n"
                );
            }
        }
        self.machine_section(w);
        self.commands_section(w);
        self.results_section(w, sizes);
        self.targets_section(w, sizes);
        self.notes_section(w);
        md
    }

    /// The phase in which other processes used the most CPU, and how much.
    fn busiest_neighbour(&self) -> Option<(String, f64)> {
        let mut phases: Vec<(String, f64)> = Vec::new();
        if let Some(r) = &self.ceiling {
            phases.push(("the direct-Redis ceiling".into(), r.cpu.others));
        }
        if let Some(r) = &self.likes {
            phases.push(("like throughput".into(), r.cpu.others));
        }
        for f in &self.fan_out {
            phases.push((
                format!("fan-out to {}", int(f.n as u64)),
                f.likes.cpu.others,
            ));
        }
        if let Some(s) = &self.storm {
            phases.push(("the storm".into(), s.likes.cpu.others));
        }
        phases.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn machine_section(&self, w: &mut String) {
        let Some(m) = &self.machine else { return };
        let _ = writeln!(w, "## Machine\n");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| server built from commit | {} |", m.commit);
        let _ = writeln!(w, "| CPU | {} |", m.cpu);
        let _ = writeln!(w, "| cores | {} |", m.cores);
        let _ = writeln!(w, "| memory | {:.1} GiB |", m.memory_gib);
        let _ = writeln!(w, "| kernel | {} |", m.kernel);
        let _ = writeln!(w, "| Redis | {} |", m.redis);
        let _ = writeln!(w, "| Rust | {} |", m.rustc);
        let _ = writeln!(
            w,
            "| open files (hard limit) | {} |",
            int(m.open_files as u64)
        );
        let _ = writeln!(w, "| vm.max_map_count | {} |", m.max_map_count);
        let _ = writeln!(
            w,
            "| server's subscriber cap (`/healthz` max_subscribers) | {} |",
            int(self.cap as u64)
        );
        let _ = writeln!(
            w,
            "| load average (1, 5, 15 min) at start; at end | {}; {} |\n",
            self.load_average.0, self.load_average.1
        );
    }

    fn commands_section(&self, w: &mut String) {
        let _ = writeln!(w, "## Commands\n");
        let _ = writeln!(w, "```");
        let _ = writeln!(
            w,
            "make bench         # cargo bench --bench load (release build)"
        );
        let _ = writeln!(
            w,
            "make bench-quick   # cargo bench --bench load -- --quick"
        );
        let _ = writeln!(w, "# what the bench starts:");
        let _ = writeln!(w, "{}", self.redis_command);
        let _ = writeln!(w, "RUST_LOG=warn {}", self.server_command);
        let _ = writeln!(w, "```\n");
        let _ = writeln!(
            w,
            "Every like comes from a new visitor (`Cookie: lb_visitor=<32 hex>`), so each one \
             changes a score and emits an event. SSE clients are plain sockets read by {READER_THREADS} \
             epoll threads with a hand-written chunked/SSE parser. Latencies are in histogram \
             buckets 1/64 of their value wide (max is exact).\n"
        );
    }

    fn results_section(&self, w: &mut String, sizes: &Sizes) {
        let _ = writeln!(w, "## Results\n");
        let _ = writeln!(
            w,
            "### 1. Like throughput, and 5a. the direct-Redis ceiling\n"
        );
        table_head(w, "| run | clients | seconds | likes acked | likes/s | p50 | p99 | max | failures | final score = acked | server context switches per like | CPU: server | Redis | generator | others |");
        for (name, run) in [
            ("HTTP `POST /api/comments/{id}/like`", &self.likes),
            (
                "5a. `SET_LIKE` script straight to Redis, no HTTP",
                &self.ceiling,
            ),
        ] {
            let Some(r) = run else { continue };
            let _ = writeln!(
                w,
                "| {name} | {} | {:.1} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} |",
                r.clients,
                r.secs,
                int(r.acked),
                int(r.rate() as u64),
                ms(r.latency.p50()),
                ms(r.latency.p99()),
                ms(r.latency.max_ms()),
                r.failures,
                match r.final_score {
                    Some(s) if s == r.acked => format!("yes ({})", int(s)),
                    Some(s) => format!("**no: {}**", int(s)),
                    None => "?".into(),
                },
                per(r.cpu.server.map(|_| r.cpu.server_switches), r.acked),
                r.cpu.cells(),
            );
        }
        let _ = writeln!(
            w,
            "\nCPU is in % of one core (the machine has two); \"generator\" is this benchmark's \
             own load generator, \"others\" every other process on the machine. The HTTP senders' connections \
             are opened one after another and answered once before the clock starts.\n"
        );
        if let Some(b) = &self.burst {
            let _ = writeln!(w, "### 1b. A burst of new keep-alive connections\n");
            let _ = writeln!(
                w,
                "{} connections opened at the same instant, each sending `GET {BURST_PATH}` (no \
                 Redis behind it) and then staying open for {} s, as browser tabs do. A reply \
                 other than 200 counts as failed.\n",
                b.connections,
                b.held.as_secs()
            );
            let _ = writeln!(
                w,
                "| first reply p50 | p99 | max | slower than {} ms | failed |",
                b.slow_after.as_millis()
            );
            let _ = writeln!(w, "|---|---|---|---|---|");
            let _ = writeln!(
                w,
                "| {} | {} | {} | **{}** | {} |\n",
                ms(b.first_reply.p50()),
                ms(b.first_reply.p99()),
                ms(b.first_reply.max_ms()),
                b.slow,
                b.failed
            );
            if b.slow > 0 {
                let _ = writeln!(
                    w,
                    "A first reply that takes about {} s was answered only when the other \
                     connections closed: the connection sat unserved in the meantime.\n",
                    b.held.as_secs()
                );
            }
        }

        let _ = writeln!(
            w,
            "### 2. Fan-out latency ({} likes {} ms apart), and 5b. the floor\n",
            sizes.fan_out_likes,
            sizes.fan_out_gap.as_millis()
        );
        let _ = writeln!(
            w,
            "Time from sending a like to each client reading its event. The floor: one thread \
             writing a {FLOOR_FRAME}-byte frame to N connected loopback sockets, read the same way.\n"
        );
        table_head(w, "| clients | connect | deliveries | p50 | p99 | max | missed | dropped | floor p50 | floor p99 | floor max | p99 / floor p99 | server context switches per delivery | CPU: server | Redis | generator | others |");
        for f in &self.fan_out {
            let label = match &f.limited_by {
                Some(_) => format!("{} (asked {})", int(f.n as u64), int(f.asked as u64)),
                None => int(f.n as u64),
            };
            let _ = writeln!(
                w,
                "| {label} | {:.1} s{} | {} of {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.connect_secs,
                if f.connect_failures > 0 {
                    format!(", **{} failed**", f.connect_failures)
                } else {
                    String::new()
                },
                int(f.tally.delivered()),
                int(f.expected),
                ms(f.tally.latency.p50()),
                ms(f.tally.latency.p99()),
                ms(f.tally.latency.max_ms()),
                f.tally.missed + f.tally.duplicates + f.tally.out_of_order,
                f.tally.dropped + f.server_dropped,
                ms(f.floor.tally.latency.p50()),
                ms(f.floor.tally.latency.p99()),
                ms(f.floor.tally.latency.max_ms()),
                ratio(f.tally.latency.p99(), f.floor.tally.latency.p99()),
                per(Some(f.likes.cpu.server_switches), f.tally.delivered()),
                f.likes.cpu.cells(),
            );
        }
        for f in &self.fan_out {
            if let Some(why) = &f.limited_by {
                let _ = writeln!(
                    w,
                    "\n{} clients were asked for; {} fit, limited by {why}.",
                    int(f.asked as u64),
                    int(f.n as u64)
                );
            }
            if f.floor.tally.delivered() != f.floor.expected || f.floor.tally.dropped > 0 {
                let _ = writeln!(
                    w,
                    "\nThe floor at {} sockets delivered {} of {} frames.",
                    f.floor.n,
                    f.floor.tally.delivered(),
                    f.floor.expected
                );
            }
        }
        let _ = writeln!(w);

        if let Some(s) = &self.storm {
            let _ = writeln!(w, "### 3. Like storm\n");
            let _ = writeln!(
                w,
                "{} SSE clients; {} senders like as fast as replies come, each its own comment, for {} s.\n",
                int(s.clients as u64),
                s.likes.clients,
                sizes.storm_secs
            );
            table_head(w, "| likes/s | like p50 | like p99 | deliveries | delivery p50 | delivery p99 | delivery max | missed | dropped | failures | server context switches per like | CPU: server | Redis | generator | others |");
            let _ = writeln!(
                w,
                "| **{}** | {} | {} | {} of {} | {} | **{}** | {} | {} | {} | {} | {} | {} |\n",
                int(s.likes.rate() as u64),
                ms(s.likes.latency.p50()),
                ms(s.likes.latency.p99()),
                int(s.tally.delivered()),
                int(s.expected),
                ms(s.tally.latency.p50()),
                ms(s.tally.latency.p99()),
                ms(s.tally.latency.max_ms()),
                s.tally.missed + s.tally.duplicates + s.tally.out_of_order,
                s.tally.dropped + s.server_dropped + s.connect_failures as u64,
                s.likes.failures,
                per(Some(s.likes.cpu.server_switches), s.likes.acked),
                s.likes.cpu.cells(),
            );
        }

        let _ = writeln!(w, "### 4. Memory of the server process\n");
        let _ = writeln!(
            w,
            "Measured with the clients connected and idle, {} s after the last one connected \
             (longer than tiny_http's pool keeps an idle thread), from `/proc/PID/status` and \
             `/proc/PID/fd`; the server's CPU is sampled over the last {} of those seconds.\n",
            (sizes.idle_settle + IDLE_SAMPLE).as_secs(),
            IDLE_SAMPLE.as_secs()
        );
        table_head(w, "| idle SSE clients | RSS | threads | fds | RSS per client | threads per client | fds per client | server CPU while idle |");
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        for (n, m) in &self.memory {
            let per = |now: u64, then: u64| {
                if *n == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", (now as f64 - then as f64) / *n as f64)
                }
            };
            let _ = writeln!(
                w,
                "| {} | {} KiB | {} | {} | {} | {} | {} | {} |",
                int(*n as u64),
                int(m.rss_kib),
                m.threads,
                m.fds,
                if *n == 0 {
                    "-".into()
                } else {
                    format!("**{} KiB**", per(m.rss_kib, base.rss_kib))
                },
                per(m.threads, base.threads),
                per(m.fds, base.fds),
                m.idle_cpu.map_or("-".into(), |c| format!("{c:.1}%")),
            );
        }
        let _ = writeln!(w);
    }

    fn targets_section(&self, w: &mut String, sizes: &Sizes) {
        let _ = writeln!(w, "## Against the targets (issue 6)\n");
        if sizes.quick {
            let _ = writeln!(
                w,
                "Quick sizes: the fan-out and memory targets are for 1,000 and 5,000 clients and \
                 are judged only in a full run.\n"
            );
        }
        table_head(w, "| target | measured | ratio | verdict |");
        let rate = self.likes.as_ref().map(LikeRun::rate);
        let ceiling = self.ceiling.as_ref().map(LikeRun::rate);
        let mut row = |target: &str, measured: String, ratio: String, met: Option<bool>| {
            let _ = writeln!(w, "| {target} | {measured} | {ratio} | {} |", verdict(met));
        };
        if let (Some(rate), Some(ceiling)) = (rate, ceiling) {
            let share = rate / ceiling;
            row(
                "like throughput ≥ 50% of the direct-Redis ceiling",
                format!("{} of {} likes/s", int(rate as u64), int(ceiling as u64)),
                format!("{:.0}% (target 50%)", share * 100.0),
                Some(share >= 0.5),
            );
        }
        if let Some(rate) = rate {
            row(
                "like throughput ≥ 30,000 likes/s",
                format!("{} likes/s", int(rate as u64)),
                format!("{:.2}× the target", rate / 30_000.0),
                Some(rate >= 30_000.0),
            );
        }
        if let Some(p99) = self.likes.as_ref().and_then(|l| l.latency.p99()) {
            row(
                "like p99 ≤ 3 ms",
                format!("{p99:.2} ms"),
                format!("{:.2}× the target", p99 / 3.0),
                Some(p99 <= 3.0),
            );
        }
        for (n, limit) in [(1_000, 15.0), (5_000, 70.0)] {
            let f = self.fan_out.iter().find(|f| f.n == n);
            let p99 = f.and_then(|f| f.tally.latency.p99());
            row(
                &format!("fan-out p99 ≤ {limit} ms at {} clients", int(n as u64)),
                p99.map_or("not run at this size".into(), |v| format!("{v:.2} ms")),
                match (f, p99) {
                    (Some(f), Some(v)) => format!(
                        "{:.2}× the target; {} the floor",
                        v / limit,
                        ratio(Some(v), f.floor.tally.latency.p99())
                    ),
                    _ => "-".into(),
                },
                p99.map(|v| v <= limit),
            );
        }
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        let per_client = self
            .memory
            .iter()
            .rev()
            .find(|(n, _)| *n == 5_000)
            .map(|(n, m)| (m.rss_kib as f64 - base.rss_kib as f64) / *n as f64);
        row(
            "RSS ≤ 25 KiB per idle SSE client (at 5,000)",
            per_client.map_or("not run at 5,000".into(), |v| format!("{v:.1} KiB")),
            per_client.map_or("-".into(), |v| format!("{:.2}× the target", v / 25.0)),
            per_client.map(|v| v <= 25.0),
        );
        let mut bad = 0u64;
        let mut parts = Vec::new();
        for r in [&self.likes, &self.ceiling].into_iter().flatten() {
            bad += r.failures;
            if r.final_score != Some(r.acked) {
                bad += 1;
                parts.push("a final score differs from the acked likes".to_string());
            }
        }
        for f in &self.fan_out {
            bad += f.tally.missed
                + f.tally.duplicates
                + f.tally.out_of_order
                + f.tally.dropped
                + f.server_dropped
                + f.connect_failures as u64
                + f.likes.failures
                + (f.floor.expected - f.floor.tally.delivered().min(f.floor.expected));
        }
        if let Some(b) = &self.burst {
            bad += (b.slow + b.failed) as u64;
            if b.slow > 0 {
                parts.push(format!(
                    "{} connection(s) of the burst left unserved",
                    b.slow
                ));
            }
        }
        if let Some(s) = &self.storm {
            bad += s.tally.missed
                + s.tally.duplicates
                + s.tally.out_of_order
                + s.tally.dropped
                + s.server_dropped
                + s.connect_failures as u64
                + s.likes.failures;
        }
        row(
            "zero failed requests, missed events, dropped clients",
            if parts.is_empty() {
                format!("{bad}")
            } else {
                format!("{bad} ({})", parts.join("; "))
            },
            "-".into(),
            Some(bad == 0),
        );
        let _ = writeln!(w);
    }

    fn notes_section(&self, w: &mut String) {
        if self.notes.is_empty() && self.server_log_warnings.is_empty() {
            return;
        }
        let _ = writeln!(w, "## What did not go as planned\n");
        for n in &self.notes {
            let _ = writeln!(w, "- {n}");
        }
        if !self.server_log_warnings.is_empty() {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for line in &self.server_log_warnings {
                // Drop the timestamp so equal warnings are counted together.
                let text = line
                    .split_once(']')
                    .map_or(line.as_str(), |(_, t)| t)
                    .trim();
                *counts.entry(text.to_string()).or_default() += 1;
            }
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort_by_key(|c| std::cmp::Reverse(c.1));
            let _ = writeln!(
                w,
                "- The server logged {} warning(s):",
                self.server_log_warnings.len()
            );
            for (text, n) in counts.iter().take(10) {
                let _ = writeln!(w, "  - {n}× `{text}`");
            }
        }
        let _ = writeln!(w);
    }
}

/// Writes a table's header row and the separator row under it.
fn table_head(w: &mut String, header: &str) {
    let columns = header.trim_matches('|').split('|').count();
    let _ = writeln!(w, "{header}\n{}|", "|---".repeat(columns));
}

/// `total / n` with one decimal, or "-".
fn per(total: Option<u64>, n: u64) -> String {
    match total {
        Some(t) if n > 0 => format!("{:.1}", t as f64 / n as f64),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "-".into(),
    }
}
