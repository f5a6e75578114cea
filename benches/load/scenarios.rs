//! The phases of a run, one function or type each: the direct-Redis ceiling,
//! like throughput, the connection burst, fan-out at one size with its floor,
//! the like storm (after its senders alone, with no client connected) and
//! the reconnect storm (a server restarted under its clients); capacity is in
//! `capacity.rs`. Each returns what it measured for `report.rs`; `main.rs`
//! runs them in order and waits for the server to be quiet between them.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::clients::{
    close_all, connect_sse, next_visitor, reconnect_sse, recorded_id, Conn, FloorClient, HttpConn,
    Ledger, LikeJob, LikeResult, Readers, Tally, FLOOR_FRAME,
};
use crate::procstat::{cpu_seconds, now_ns, CpuMeter, CpuUse, Histogram};
use crate::report::Report;
use crate::support::{Likeboard, RedisServer};
use crate::{json_u64, step, RedisProbe, ServerProbe, Sizes, WAIT_LIMIT};

/// A separate prefix for the direct-Redis run, so its events never reach the
/// server's pump.
const DIRECT_TAG: &str = "{likeboard-bench-direct}";
/// The stream length the server uses by default (`--stream-len`).
const STREAM_LEN: u64 = 10_000;
/// Likes one storm sender may send (its send-time log is preallocated).
const STORM_LOG: usize = 200_000;

/// The server's like script, the very file the server loads, so the ceiling
/// measures exactly the script the server runs.
fn set_like_script() -> String {
    include_str!("../../src/store/redis/set_like.lua").to_string()
}

/// A run of likes: how many, how fast, how long each took.
pub struct LikeRun {
    pub clients: usize,
    pub secs: f64,
    pub acked: u64,
    pub failures: u64,
    /// Of the failures, likes that got no reply at all (refused, reset).
    pub unanswered: u64,
    pub latency: Histogram,
    /// The liked comment's score afterwards (must equal `acked`).
    pub final_score: Option<u64>,
    /// CPU used meanwhile, by us and by others.
    pub cpu: CpuUse,
}

impl LikeRun {
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.secs
    }

    /// A run of `clients` senders over `secs` that has counted nothing yet.
    fn empty(clients: usize, secs: f64) -> LikeRun {
        LikeRun {
            clients,
            secs,
            acked: 0,
            failures: 0,
            unanswered: 0,
            latency: Histogram::new(),
            final_score: None,
            cpu: CpuUse::default(),
        }
    }

    pub fn from_results(clients: usize, secs: f64, results: &[LikeResult]) -> LikeRun {
        let mut run = LikeRun::empty(clients, secs);
        for r in results {
            run.acked += r.acked;
            run.failures += r.failures;
            run.unanswered += r.unanswered;
            run.latency.merge(&r.latency);
        }
        run
    }
}

/// 5a: the server's like script, sent as EVALSHA (loaded on NOSCRIPT, exactly as
/// the server's `redis::Script` does) from many threads, with no HTTP at all.
pub fn direct_ceiling(redis: &RedisServer, sizes: &Sizes) -> LikeRun {
    let script = set_like_script();
    let member = format!("{:012}", 1);
    // The script finds a comment by its place in the ranking (a hidden one
    // has none), so that is all the direct run needs.
    let ranking = format!("{DIRECT_TAG}:ranking");
    let mut con = redis.connect();
    redis::cmd("ZADD")
        .arg(&ranking)
        .arg(0)
        .arg(&member)
        .query::<()>(&mut con)
        .expect("creating the direct-run comment");

    let until = Instant::now() + Duration::from_secs(sizes.like_secs);
    let cpu = CpuMeter::start(None, redis.pid());
    let started = Instant::now();
    let handles: Vec<JoinHandle<(u64, u64, Histogram)>> = (0..sizes.like_clients)
        .map(|_| {
            let mut con = redis.connect();
            let script = redis::Script::new(&script);
            let (ranking, member) = (ranking.clone(), member.clone());
            thread::spawn(move || {
                let (mut acked, mut failures, mut latency) = (0, 0, Histogram::new());
                while Instant::now() < until {
                    let visitor = recorded_id(&next_visitor());
                    let t = Instant::now();
                    let reply: redis::RedisResult<(u8, u8, u64)> = script
                        .key(&ranking)
                        .key(format!("{DIRECT_TAG}:likers:{member}"))
                        .key(format!("{DIRECT_TAG}:liked:{visitor}"))
                        .key(format!("{DIRECT_TAG}:event_seq"))
                        .key(format!("{DIRECT_TAG}:events"))
                        .key(format!("{DIRECT_TAG}:locked"))
                        .arg(&member)
                        .arg(&visitor)
                        .arg("like")
                        .arg(STREAM_LEN)
                        // The feed channel and the board's name, as the
                        // server passes them (nobody subscribes here).
                        .arg(format!("{DIRECT_TAG}:feed"))
                        .arg("bench-direct")
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
    let mut run = LikeRun::empty(sizes.like_clients, 0.0);
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
pub fn like_throughput(server: &Likeboard, redis: &RedisServer, sizes: &Sizes) -> LikeRun {
    let comment = server.add_comment("like throughput");
    // Connections are opened one at a time, before the clock starts: see
    // `connection_burst` for what happens when they all arrive at once.
    let connections: Vec<HttpConn> = (0..sizes.like_clients)
        .map(|_| HttpConn::open(server.addr))
        .collect();
    let until = Instant::now() + Duration::from_secs(sizes.like_secs);
    let jobs = connections
        .into_iter()
        .map(|http| LikeJob {
            http,
            comment,
            ledger: None,
            max_likes: 10_000_000,
            until,
            gap: None,
        })
        .collect();
    let (results, secs, cpu) = send_likes(server, redis, jobs);
    let mut run = LikeRun::from_results(sizes.like_clients, secs, &results);
    run.cpu = cpu;
    run.final_score = server.score_of(comment);
    run
}

/// Runs each sender on a thread of its own with the server's and Redis's CPU
/// metered meanwhile; returns their results, the seconds they took and the CPU.
fn send_likes(
    server: &Likeboard,
    redis: &RedisServer,
    jobs: Vec<LikeJob>,
) -> (Vec<LikeResult>, f64, CpuUse) {
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    let started = Instant::now();
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| thread::spawn(move || job.run()))
        .collect();
    let results = handles
        .into_iter()
        .map(|h| h.join().expect("a like sender panicked"))
        .collect();
    (results, started.elapsed().as_secs_f64(), cpu.stop())
}

/// What each connection of the burst asks for, as a page's first request might.
pub const BURST_PATH: &str = "/static/style.css";

/// 1b: keep-alive connections opened all at once, each sending one request
/// and then staying open, as browser tabs do. How long the slowest waits for
/// its first reply shows whether a connection can be left unserved.
pub struct Burst {
    pub connections: usize,
    /// Connections whose first reply took longer than this.
    pub slow_after: Duration,
    pub slow: usize,
    pub failed: usize,
    pub first_reply: Histogram,
    pub held: Duration,
}

impl Burst {
    pub fn measure(addr: SocketAddr, connections: usize) -> Burst {
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
pub struct FanOut {
    pub asked: usize,
    pub n: usize,
    pub limited_by: Option<String>,
    pub connect_failures: usize,
    pub connect_secs: f64,
    pub likes: LikeRun,
    pub expected: u64,
    pub tally: Tally,
    /// Clients the server no longer counted at the end of the phase.
    pub server_dropped: u64,
    pub floor: Floor,
    /// 5c: the same frames written by a thread per socket.
    pub threaded: Floor,
}

pub fn fan_out(
    server: &Likeboard,
    redis: &RedisServer,
    sizes: &Sizes,
    n: usize,
    asked: usize,
    limited_by: Option<String>,
    report: &mut Report,
) -> FanOut {
    let comment = server.add_comment("fan-out");
    let ledger = Ledger::new(&[comment], sizes.fan_out_likes + 1);
    let connect_started = Instant::now();
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let readers = Readers::start(clients);
    server.wait_for_subscribers(n - connect_failures, report);
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
    let expected = result.acked * (n - connect_failures) as u64;
    readers.wait_for(expected, Duration::from_secs(10));
    // Stopped once every event has arrived (not when the last like was
    // answered), so that the CPU per delivery covers all of the last fan-out.
    let cpu = cpu.stop();
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
    step(&format!(
        "fan-out floor, a thread per socket, at {n} sockets"
    ));
    let threaded = Floor::threaded(n, sizes.fan_out_likes, sizes.fan_out_gap);
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
        threaded,
    }
}

/// 3: many SSE clients while senders like as fast as they can; and first the
/// same senders with no client connected, the rate issue 13 compares with.
pub struct Storm {
    pub clients: usize,
    pub connect_failures: usize,
    /// The same senders for the same time on comments of their own, right
    /// before the clients connect.
    pub alone: LikeRun,
    pub likes: LikeRun,
    pub expected: u64,
    pub tally: Tally,
    pub server_dropped: u64,
    /// Comments whose score afterwards is not what their sender's replies
    /// said (both runs): a client could not end on the true final score.
    pub wrong_scores: usize,
}

impl Storm {
    /// The storm's like rate as a share of the rate with no client connected.
    pub fn kept(&self) -> Option<f64> {
        let alone = self.alone.rate();
        (alone > 0.0).then(|| self.likes.rate() / alone)
    }
}

pub fn storm(server: &Likeboard, redis: &RedisServer, sizes: &Sizes, report: &mut Report) -> Storm {
    // Each sender likes its own comment, so the k-th like it sends makes
    // score k: that is how a client's event is matched to its send time.
    // The run with no client gets comments of its own for the same reason.
    let new_comments = |what: &str| -> Vec<u64> {
        (0..sizes.storm_senders)
            .map(|i| server.add_comment(&format!("{what} {i}")))
            .collect()
    };
    let alone_comments = new_comments("storm alone");
    let comments = new_comments("storm");

    step(&format!(
        "  {} senders for {} s with no client connected",
        sizes.storm_senders, sizes.storm_secs
    ));
    let (alone, alone_acked) = flat_out(server, redis, sizes, &alone_comments, None);
    let mut wrong_scores = wrong_scores(server, &alone_comments, &alone_acked);
    // Clients connect with no Last-Event-ID and see only what comes after;
    // the pump must have passed the alone run's events by then.
    server.wait_quiet(redis, report);

    step(&format!(
        "  the same senders with {} clients connected",
        sizes.storm_clients
    ));
    let ledger = Ledger::new(&comments, STORM_LOG);
    let n = sizes.storm_clients;
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let readers = Readers::start(clients);
    server.wait_for_subscribers(n - connect_failures, report);
    let (likes, acked) = flat_out(server, redis, sizes, &comments, Some(&ledger));
    let expected = acked.iter().sum::<u64>() * (n - connect_failures) as u64;
    readers.wait_for(expected, Duration::from_secs(20));
    let (clients, mut tally) = readers.stop();
    tally.add_shortfall(&clients, &acked);
    let subscribers = json_u64(&server.healthz(), "subscribers");
    close_all(clients);
    wrong_scores += self::wrong_scores(server, &comments, &acked);
    Storm {
        clients: n,
        connect_failures,
        alone,
        likes,
        expected,
        tally,
        server_dropped: ((n - connect_failures) as u64).saturating_sub(subscribers),
        wrong_scores,
    }
}

/// The storm's senders: one keep-alive connection per comment, liking it as
/// fast as replies come for `storm_secs`; the run, and each sender's acks.
fn flat_out(
    server: &Likeboard,
    redis: &RedisServer,
    sizes: &Sizes,
    comments: &[u64],
    ledger: Option<&Arc<Ledger>>,
) -> (LikeRun, Vec<u64>) {
    let connections: Vec<HttpConn> = comments
        .iter()
        .map(|_| HttpConn::open(server.addr))
        .collect();
    let until = Instant::now() + Duration::from_secs(sizes.storm_secs);
    let jobs = comments
        .iter()
        .zip(connections)
        .enumerate()
        .map(|(i, (&comment, http))| LikeJob {
            http,
            comment,
            ledger: ledger.map(|l| (Arc::clone(l), i)),
            max_likes: STORM_LOG as u64 - 1,
            until,
            gap: None,
        })
        .collect();
    let (results, secs, cpu) = send_likes(server, redis, jobs);
    let acked = results.iter().map(|r| r.acked).collect();
    let mut run = LikeRun::from_results(comments.len(), secs, &results);
    run.cpu = cpu;
    (run, acked)
}

/// How many of `comments` the API reports with a score other than `acked`.
fn wrong_scores(server: &Likeboard, comments: &[u64], acked: &[u64]) -> usize {
    comments
        .iter()
        .zip(acked)
        .filter(|(&c, &a)| server.score_of(c) != Some(a))
        .count()
}

/// 5b: one thread writing a frame to N connected loopback sockets, read by the
/// same epoll readers as the SSE clients: the least fan-out can cost here.
/// 5c, [`Floor::threaded`]: the same sockets each written by a thread of its
/// own, the least the design card's thread per client can cost.
pub struct Floor {
    pub n: usize,
    pub tally: Tally,
    pub expected: u64,
    /// The bench process's CPU from the first frame until the last was read,
    /// in seconds: the writers' and the epoll readers' together.
    pub cpu_secs: f64,
}

/// How a floor's frames reach its sockets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writers {
    /// One loop writes every socket in turn (the seed's way).
    OneThread,
    /// A thread per socket, parked until a publisher hands it the frame
    /// through its own channel and unparks it.
    PerSocket,
}

impl Floor {
    pub fn measure(n: usize, frames: usize, gap: Duration) -> Floor {
        Floor::run(n, frames, gap, Writers::OneThread)
    }

    /// 5c: what the design card costs by itself. One publisher sends each
    /// frame to every writer's channel (a crossbeam channel in a
    /// mutex-guarded list, as the hub keeps them) and unparks the writer;
    /// each writer takes the frame, writes it to its socket and parks again. No HTTP, no
    /// chunk framing, no store: only the thread per client.
    pub fn threaded(n: usize, frames: usize, gap: Duration) -> Floor {
        Floor::run(n, frames, gap, Writers::PerSocket)
    }

    fn run(n: usize, frames: usize, gap: Duration, writers: Writers) -> Floor {
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
        let expected = (n * frames) as u64;
        let cpu_before = cpu_seconds(std::process::id());
        // Metered until the last frame is read (a thread per socket: not its writers' exits).
        let cpu_secs = match writers {
            Writers::OneThread => {
                for (k, slot) in sent_at.iter().enumerate() {
                    pace(started, gap, k);
                    slot.store(now_ns(), Ordering::SeqCst);
                    for socket in &mut servers {
                        let _ = socket.write_all(&frame);
                    }
                }
                readers.wait_for(expected, Duration::from_secs(10));
                cpu_seconds(std::process::id()) - cpu_before
            }
            Writers::PerSocket => {
                let (list, handles) = spawn_floor_writers(std::mem::take(&mut servers));
                for (k, slot) in sent_at.iter().enumerate() {
                    pace(started, gap, k);
                    slot.store(now_ns(), Ordering::SeqCst);
                    let frame = Arc::new(frame);
                    for (tx, writer) in list.lock().expect("the floor writers' list").iter() {
                        let _ = tx.send(Arc::clone(&frame));
                        writer.unpark();
                    }
                }
                readers.wait_for(expected, Duration::from_secs(10));
                let cpu_secs = cpu_seconds(std::process::id()) - cpu_before;
                // Their channels gone, the writers end and hand back their sockets.
                let parked: Vec<_> = list
                    .lock()
                    .expect("the floor writers' list")
                    .drain(..)
                    .map(|(_, w)| w)
                    .collect();
                parked.iter().for_each(thread::Thread::unpark);
                servers = handles.into_iter().filter_map(|h| h.join().ok()).collect();
                cpu_secs
            }
        };
        let (clients, tally) = readers.stop();
        close_all(clients);
        close_all(servers.into_iter().map(|s| Conn::new(s, ())).collect());
        Floor {
            n,
            tally,
            expected,
            cpu_secs,
        }
    }
}

/// Sleeps until the `k`th frame is due, `gap` apart from `started`.
fn pace(started: Instant, gap: Duration, k: usize) {
    thread::sleep((started + gap * k as u32).saturating_duration_since(Instant::now()));
}

/// Each writer's channel and thread, in the list the publisher walks.
type FloorList = std::sync::Mutex<
    Vec<(
        crossbeam_channel::Sender<Arc<[u8; FLOOR_FRAME]>>,
        thread::Thread,
    )>,
>;

/// Starts a writer thread per socket for [`Floor::threaded`]; each one gives
/// its socket back when its channel closes.
fn spawn_floor_writers(sockets: Vec<TcpStream>) -> (Arc<FloorList>, Vec<JoinHandle<TcpStream>>) {
    let list: Arc<FloorList> = Arc::new(std::sync::Mutex::new(Vec::with_capacity(sockets.len())));
    let handles = sockets
        .into_iter()
        .map(|mut socket| {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<[u8; FLOOR_FRAME]>>();
            let handle = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || loop {
                    match rx.try_recv() {
                        Ok(frame) => {
                            let _ = socket.write_all(&frame[..]);
                        }
                        Err(crossbeam_channel::TryRecvError::Empty) => thread::park(),
                        Err(crossbeam_channel::TryRecvError::Disconnected) => return socket,
                    }
                })
                .expect("spawning a floor writer");
            list.lock()
                .expect("the floor writers' list")
                .push((tx, handle.thread().clone()));
            handle
        })
        .collect();
    (list, handles)
}

/// Likes one restart-storm sender may send (its send-time log is preallocated).
const RESTART_LOG: usize = 20_000;
/// Time between two likes of one sender in the restart storm: 16 senders make
/// 320 likes a second, the same with and without the storm.
pub const RESTART_GAP: Duration = Duration::from_millis(50);
/// How long a browser's EventSource waits before reconnecting: the `retry:`
/// every stream starts with (a SIGKILLed server sends no closing one).
const EVENTSOURCE_RETRY: Duration = Duration::from_secs(3);

/// 6: N clients caught up with a history of several thousand events; the
/// server SIGKILLed and started again on its port while likes keep coming;
/// every client reconnects with its `Last-Event-ID` when EventSource would.
pub struct Restart {
    pub clients: usize,
    /// Events in the store when the clients connected.
    pub history: u64,
    pub connect_failures: usize,
    pub reconnect_failures: usize,
    /// From the SIGKILL until the new server printed its address.
    pub down: Duration,
    /// From the new server's start, and from the moment the clients came back,
    /// until every client had every event up to the newest at that moment.
    pub caught_up_after_restart: Option<Duration>,
    pub caught_up_after_return: Option<Duration>,
    /// The same paced likes: with the clients connected and no storm, and
    /// while the server restarts and the clients come back.
    pub calm: LikeRun,
    pub storm: LikeRun,
    /// Both connections of every client; `dropped` counts only the second.
    pub tally: Tally,
    /// Replays by source, from the new server's /metrics.
    pub replays_memory: u64,
    pub replays_store: u64,
}

pub fn restart_storm(
    server: Likeboard,
    redis: &RedisServer,
    sizes: &Sizes,
    report: &mut Report,
) -> (Restart, Likeboard) {
    let senders = sizes.storm_senders;
    // The history goes to comments of its own, before any client connects.
    let history_jobs = (0..senders)
        .map(|i| LikeJob {
            http: HttpConn::open(server.addr),
            comment: server.add_comment(&format!("history {i}")),
            ledger: None,
            max_likes: (sizes.restart_history / senders) as u64,
            until: Instant::now() + WAIT_LIMIT,
            gap: None,
        })
        .collect();
    send_likes(&server, redis, history_jobs);
    // What a replay can reach: the store keeps the newest `STREAM_LEN`.
    let history = redis.event_seq().min(STREAM_LEN);

    // Calm likes and storm likes each like comments of their own, so each
    // sender's k-th like makes score k (see `storm`).
    let comments: Vec<u64> = (0..2 * senders)
        .map(|i| server.add_comment(&format!("restart {i}")))
        .collect();
    let ledger = Ledger::new(&comments, RESTART_LOG);
    let paced = |addr, from: usize, until| -> Vec<LikeJob> {
        (from..from + senders)
            .map(|i| LikeJob {
                http: HttpConn::open(addr),
                comment: comments[i],
                ledger: Some((Arc::clone(&ledger), i)),
                max_likes: RESTART_LOG as u64 - 1,
                until,
                gap: Some(RESTART_GAP),
            })
            .collect()
    };
    let n = sizes.restart_clients;
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let readers = Readers::start(clients);
    server.wait_for_subscribers(n - connect_failures, report);

    step(&format!("  paced likes to {n} clients, no storm"));
    let calm_until = Instant::now() + sizes.restart_calm;
    let (results, secs, cpu) = send_likes(&server, redis, paced(server.addr, 0, calm_until));
    let mut calm = LikeRun::from_results(senders, secs, &results);
    calm.cpu = cpu;
    let mut acked: Vec<u64> = results.iter().map(|r| r.acked).collect();

    step("  the same likes while the server is SIGKILLed and restarted");
    let addr = server.addr;
    let started = Instant::now();
    let storm_jobs = paced(addr, senders, started + sizes.restart_storm);
    let handles: Vec<_> = storm_jobs
        .into_iter()
        .map(|job| thread::spawn(move || job.run()))
        .collect();
    thread::sleep(Duration::from_secs(1));
    let mut server = server;
    let killed = Instant::now();
    server.kill();
    drop(server);
    let server = crate::launch(redis, sizes).listen(addr).start();
    let up = Instant::now();
    // CPU from the restart on: the new process is the one the storm hits.
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    // The clients notice the kill at once and come back when EventSource would.
    thread::sleep((killed + EVENTSOURCE_RETRY).saturating_duration_since(Instant::now()));
    let (clients, mut tally) = readers.stop();
    let returned = Instant::now();
    let target = redis.event_seq();
    let (clients, reconnect_failures) = reconnect_sse(addr, clients);
    let readers = Readers::start(clients);
    let caught = readers
        .wait_position(target, WAIT_LIMIT)
        .map(|_| Instant::now());
    let results: Vec<LikeResult> = handles
        .into_iter()
        .map(|h| h.join().expect("a like sender panicked"))
        .collect();
    let mut storm = LikeRun::from_results(senders, started.elapsed().as_secs_f64(), &results);
    storm.cpu = cpu.stop();
    let last = redis.event_seq();
    if readers.wait_position(last, WAIT_LIMIT).is_none() {
        report.notes.push(format!(
            "after the restart storm, some clients never reached event {last}"
        ));
    }
    let (clients, second) = readers.stop();
    // The kill ended every first connection: that is the storm, not a failure.
    tally.dropped = 0;
    tally.merge(&second);
    acked.extend(results.iter().map(|r| r.acked));
    tally.add_shortfall(&clients, &acked);
    close_all(clients);
    let metrics = HttpConn::new(addr)
        .request("GET", "/metrics", None, None)
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .unwrap_or_default();
    let replays = |source: &str| {
        let sample = format!("likeboard_replays_total{{source=\"{source}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&sample)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    let restart = Restart {
        clients: n,
        history,
        connect_failures,
        reconnect_failures,
        down: up - killed,
        caught_up_after_restart: caught.map(|at| at - up),
        caught_up_after_return: caught.map(|at| at - returned),
        calm,
        storm,
        tally,
        replays_memory: replays("memory"),
        replays_store: replays("store"),
    };
    (restart, server)
}
