//! Reconnect storms, against a real redis-server: thousands of event streams
//! whose server is SIGKILLed and restarted on the same port all come back at
//! once with their `Last-Event-ID` while likes keep flowing. Every client must
//! end with every event (live likes of one comment that share a write are
//! folded into the newest: ids then rise by more than one, and the client's
//! scores must still end on the board's), none twice, and no like may wait
//! for the replays.
//!
//! The clients behave as EventSource does (after a drop, wait the `retry:` the
//! server gave, reconnect with the last id seen) and are driven by a few
//! threads, each polling a few hundred non-blocking sockets with `poll(2)`:
//! 2,000 client threads would compete with the server for the same two cores.
//! The two tests are heavy, so they take turns.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::{
    dechunk, find, next_block, raise_fd_limit, try_http, try_like_at, visitor, Likeboard,
    RedisServer,
};

/// One storm at a time: each opens thousands of sockets and keeps both cores busy.
static TURNS: Mutex<()> = Mutex::new(());

/// Event streams in each storm.
const CLIENTS: usize = 2_000;
/// Threads driving them (a few hundred sockets each).
const CLIENT_THREADS: usize = 8;
/// Threads liking throughout, each as visitors of its own.
const SENDERS: usize = 16;
/// Time between two likes of one sender: together 40 likes a second, each
/// fanned out to every client. The ~3.5 s from the restart until the crowd is
/// back (its `retry:` of 3 s) then add fewer events than a ring of 200 holds,
/// so only the clients that were away read Redis.
const SEND_GAP: Duration = Duration::from_millis(400);
/// Connection attempts one client may make in a test.
const ATTEMPTS: u32 = 30;
/// Every wait of a test ends by then.
const LIMIT: Duration = Duration::from_secs(60);
/// The bound every like's answer must stay under, storm or not.
const LIKE_BOUND: Duration = Duration::from_secs(2);

/// 2,000 caught-up streams whose server is SIGKILLed and restarted come back
/// under 16 likers: every client gets every event once, no like is answered
/// 503, and the replays are served from memory.
#[test]
fn restart_storm_replays_from_memory() {
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let storm = Storm::run(&[], 20, 0, 0);
    storm.assert_every_event_once();
    storm.assert_writes_unhurt();
    let memory = storm.metric("likeboard_replays_total{source=\"memory\"}");
    let store = storm.metric("likeboard_replays_total{source=\"store\"}");
    assert!(
        memory >= CLIENTS as f64,
        "{memory} replays from memory for {CLIENTS} reconnects"
    );
    assert_eq!(store, 0.0, "no replay needed the store");
}

/// The same storm with a history 10x the ring, a twentieth of the clients
/// resuming from its far end: their replays read Redis in line (seen
/// waiting), none fails, and no like waits for them.
#[test]
fn restart_storm_from_far_back_waits_in_line() {
    let _turn = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let far = CLIENTS / 20;
    // 2,000 events (10x the ring) happen while they are away.
    let storm = Storm::run(&["--replay-ring", "200"], 20, far, 2_000 / SENDERS as u64);
    storm.assert_every_event_once();
    storm.assert_writes_unhurt();
    let store = storm.metric("likeboard_replays_total{source=\"store\"}");
    assert!(
        store >= far as f64,
        "{store} replays from the store for {far} clients from far back"
    );
    assert!(
        storm.most_waiting > 0.0,
        "no scrape saw a replay waiting for the store (replays from it: {store})"
    );
}

// ---------------------------------------------------------------------------
// The storm: its steps, and what it left to check
// ---------------------------------------------------------------------------

/// What one storm left behind.
struct Storm {
    clients: Vec<Client>,
    /// The newest id once the senders stopped: every client must end there.
    last: u64,
    /// Each storm comment's score on the board at the end.
    board: std::collections::HashMap<u64, u64>,
    likes: SenderLog,
    /// /metrics of the restarted server, after the storm.
    metrics: String,
    /// The highest `likeboard_replays_waiting` any scrape saw during the storm.
    most_waiting: f64,
    /// Kept alive until the checks are done (their logs explain a failure).
    server: Likeboard,
    _redis: RedisServer,
}

impl Storm {
    /// Runs one storm: a server with `args`, `history` likes per comment,
    /// `CLIENTS` streams caught up, of which `far` then go away while `later`
    /// more likes per comment happen; likes keep flowing while the server is SIGKILLed and
    /// restarted on its port, until every client is back.
    fn run(args: &[&str], history: u64, far: usize, later: u64) -> Storm {
        raise_fd_limit();
        let redis = RedisServer::start();
        let launch = || {
            Likeboard::builder()
                .redis(&redis)
                .args(args)
                .log_level("warn")
        };
        let mut server = launch().start();
        let addr = server.addr;
        let comments: Vec<u64> = (0..SENDERS)
            .map(|i| server.add_comment(&format!("storm {i}")))
            .collect();
        like_each(addr, &comments, 0, history);
        let from = last_event_id(addr);

        let near = Fleet::start(addr, CLIENTS - far, from);
        let gone = Fleet::start(addr, far, from);
        server.wait_subscribers(CLIENTS as u64, LIMIT);
        like_each(addr, &comments, history, 1);
        let caught_up = last_event_id(addr);
        near.wait_for(caught_up, &server, "the first catch-up");
        gone.wait_for(caught_up, &server, "the first catch-up");
        if far > 0 {
            // Some of the crowd close their laptops; history moves on.
            gone.set_offline(true);
            like_each(addr, &comments, history + 1, later);
            near.wait_for(last_event_id(addr), &server, "the later history");
        }

        let senders = Senders::start(addr, &comments, history + later + 1);
        thread::sleep(Duration::from_millis(500));
        println!("storm: killing the server with {CLIENTS} streams open");
        server.kill();
        gone.set_offline(false);
        let restarted = Instant::now();
        let server = launch().listen(addr).start();
        let scraper = Scraper::start(addr);
        // Likes keep flowing until every client is back (each waits its
        // `retry:` of 3 s first) and has caught up with them.
        let deadline = Instant::now() + LIMIT;
        while near.returned() + gone.returned() < CLIENTS && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let back = last_event_id(addr);
        near.wait_for(back, &server, "the reconnections");
        gone.wait_for(back, &server, "the reconnections");
        let likes = senders.stop();
        let last = last_event_id(addr);
        near.wait_for(last, &server, "the storm");
        gone.wait_for(last, &server, "the storm");
        println!(
            "storm: every client at id {last} {:.1} s after the restart",
            restarted.elapsed().as_secs_f64()
        );
        let most_waiting = scraper.stop();
        let log = server.stderr();
        let slow_drops = log
            .lines()
            .filter(|l| l.contains("slow SSE client"))
            .count();
        let metrics = get_metrics(addr).unwrap_or_else(|| server.died("served no /metrics"));
        let listed = server.get("/api/comments?limit=100").json();
        let board = listed["comments"]
            .as_array()
            .expect("a list of comments")
            .iter()
            .filter_map(|c| Some((c["id"].as_u64()?, c["score"].as_u64()?)))
            .filter(|(id, _)| comments.contains(id))
            .collect();
        let replays: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("likeboard_replay") && !l.contains("_bucket"))
            .collect();
        println!("storm: {}", replays.join("; "));
        let mut clients = near.stop();
        clients.extend(gone.stop());
        let streams: u32 = clients.iter().map(|c| c.connections).sum();
        let most = clients.iter().map(|c| c.connections).max().unwrap_or(0);
        println!(
            "storm: {streams} streams opened by {} clients (at most {most} by one); \
             the server logged {slow_drops} drops of slow clients",
            clients.len()
        );
        Storm {
            clients,
            last,
            board,
            likes,
            metrics,
            most_waiting,
            server,
            _redis: redis,
        }
    }

    /// Every client saw ids rise (none twice, no reset) up to the last one,
    /// ends with the board's score of every storm comment, and did reconnect.
    fn assert_every_event_once(&self) {
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(fault) = &c.fault {
                self.server.died(&format!("gave client {i} {fault}"));
            }
            assert_eq!(c.last, self.last, "client {i} stopped short");
            assert_eq!(c.scores, self.board, "client {i} ended on other scores");
            assert!(c.connections >= 2, "client {i} never reconnected");
        }
    }

    /// No like was answered 503 or anything but 200, and none took long.
    fn assert_writes_unhurt(&self) {
        let l = &self.likes;
        let p99 = l.percentile(0.99);
        let max = l.answered.iter().max().copied().unwrap_or_default();
        println!(
            "storm: {} likes answered, p99 {} ms, max {} ms; {} refused or cut \
             while the server was down (the longest cut after {} ms)",
            l.answered.len(),
            p99.as_millis(),
            max.as_millis(),
            l.cut,
            l.longest_cut.as_millis()
        );
        assert_eq!(l.unavailable, 0, "likes answered 503 while Redis was up");
        assert!(l.other.is_empty(), "likes answered {:?}", l.other);
        assert!(
            max < LIKE_BOUND && l.longest_cut < LIKE_BOUND,
            "a like waited {} ms (one cut off after {} ms)",
            max.as_millis(),
            l.longest_cut.as_millis()
        );
    }

    /// A sample's value in the final /metrics (0 if absent).
    fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics, sample).unwrap_or(0.0)
    }
}

/// Likes each comment `count` times, as visitors numbered from `first` for
/// that comment, from one thread per comment; waits for every answer.
fn like_each(addr: SocketAddr, comments: &[u64], first: u64, count: u64) {
    let handles: Vec<_> = comments
        .iter()
        .enumerate()
        .map(|(s, &comment)| {
            thread::spawn(move || {
                for k in first..first + count {
                    let r = support::like_at(addr, "POST", comment, &visitor(visitor_of(s, k)));
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a liking thread panicked");
    }
}

/// The visitor number of sender `s`'s `k`-th like: senders never share one.
fn visitor_of(s: usize, k: u64) -> u64 {
    s as u64 * 1_000_000 + k
}

/// The newest event id in the store, from the board's snapshot.
fn last_event_id(addr: SocketAddr) -> u64 {
    let r = support::http(addr, "GET", "/api/comments?limit=1", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["last_event_id"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("last_event_id in the snapshot")
}

fn get_metrics(addr: SocketAddr) -> Option<String> {
    try_http(addr, "GET", "/metrics", &[], b"")
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.text())
}

/// The value of one sample line (`name{labels} value`) in a /metrics text.
fn sample_value(metrics: &str, sample: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------
// Senders: likes that keep flowing while the server restarts
// ---------------------------------------------------------------------------

/// What the senders saw.
#[derive(Default)]
struct SenderLog {
    /// How long each answered (200) like took.
    answered: Vec<Duration>,
    /// Likes answered 503.
    unavailable: u64,
    /// Any other status.
    other: Vec<u16>,
    /// Tries refused, reset or cut short (the server was down or dying); retried.
    cut: u64,
    /// The longest any of those took before it failed.
    longest_cut: Duration,
}

impl SenderLog {
    fn merge(&mut self, other: SenderLog) {
        self.answered.extend(other.answered);
        self.unavailable += other.unavailable;
        self.other.extend(other.other);
        self.cut += other.cut;
        self.longest_cut = self.longest_cut.max(other.longest_cut);
    }

    fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.answered.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
        sorted.get(at).copied().unwrap_or_default()
    }
}

struct Senders {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<SenderLog>>,
}

impl Senders {
    /// One thread per comment, liking it every [`SEND_GAP`] as visitors numbered
    /// from `first`; a try that gets no answer is made again, as the same visitor.
    fn start(addr: SocketAddr, comments: &[u64], first: u64) -> Senders {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = comments
            .iter()
            .enumerate()
            .map(|(s, &comment)| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut log = SenderLog::default();
                    let give_up = Instant::now() + LIMIT;
                    let mut k = first;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                        let t = Instant::now();
                        match try_like_at(addr, "POST", comment, &visitor(visitor_of(s, k))) {
                            Ok(r) => {
                                match r.status {
                                    200 => log.answered.push(t.elapsed()),
                                    503 => log.unavailable += 1,
                                    other => log.other.push(other),
                                }
                                k += 1;
                            }
                            Err(_) => {
                                log.cut += 1;
                                log.longest_cut = log.longest_cut.max(t.elapsed());
                            }
                        }
                        thread::sleep(SEND_GAP.saturating_sub(t.elapsed()));
                    }
                    log
                })
            })
            .collect();
        Senders { stop, handles }
    }

    fn stop(self) -> SenderLog {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = SenderLog::default();
        for h in self.handles {
            all.merge(h.join().expect("a sender panicked"));
        }
        all
    }
}

/// Scrapes /metrics every 25 ms during the storm for the longest line of
/// replays waiting for the store.
struct Scraper {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<f64>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let give_up = Instant::now() + LIMIT;
                let mut most = 0.0f64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                    if let Some(waiting) = get_metrics(addr)
                        .and_then(|m| sample_value(&m, "likeboard_replays_waiting"))
                    {
                        most = most.max(waiting);
                    }
                    thread::sleep(Duration::from_millis(25));
                }
                most
            })
        };
        Scraper { stop, handle }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the scraper panicked")
    }
}

// ---------------------------------------------------------------------------
// Clients: EventSource on non-blocking sockets, a few hundred per thread
// ---------------------------------------------------------------------------

/// One event stream that reconnects as EventSource does, checking that ids
/// only rise and keeping the newest score of each comment.
struct Client {
    /// The last id it has seen (it resumes from there).
    last: u64,
    /// The newest score each like event gave, by comment.
    scores: std::collections::HashMap<u64, u64>,
    stream: Option<TcpStream>,
    /// Bytes read and not yet dechunked, and the dechunked body not yet split
    /// into blocks.
    raw: Vec<u8>,
    body: Vec<u8>,
    head_done: bool,
    /// The reconnection delay the server last gave.
    retry: Duration,
    /// When to connect next, while it has no stream.
    next_try: Instant,
    attempts: u32,
    /// Streams that opened with a 200 event-stream head.
    connections: u32,
    /// The first thing that broke the promise (a gap, a duplicate, a reset).
    fault: Option<String>,
}

impl Client {
    fn new(last: u64) -> Client {
        Client {
            last,
            scores: std::collections::HashMap::new(),
            stream: None,
            raw: Vec::new(),
            body: Vec::new(),
            head_done: false,
            retry: Duration::from_secs(3),
            next_try: Instant::now(),
            attempts: 0,
            connections: 0,
            fault: None,
        }
    }

    /// Opens a stream with `Last-Event-ID`; a refused connection waits `retry`.
    fn open(&mut self, addr: SocketAddr) {
        self.attempts += 1;
        self.raw.clear();
        self.body.clear();
        self.head_done = false;
        let request = format!(
            "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\
             Last-Event-ID: {}\r\n\r\n",
            self.last
        );
        let opened = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut s| {
            s.write_all(request.as_bytes())?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match opened {
            Ok(s) => self.stream = Some(s),
            Err(_) => self.next_try = Instant::now() + self.retry,
        }
    }

    /// The stream ended or broke: try again after `retry`.
    fn lost(&mut self) {
        self.stream = None;
        self.next_try = Instant::now() + self.retry;
    }

    /// Reads what has arrived (a bounded number of reads) and checks its events.
    fn read(&mut self, buf: &mut [u8]) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        for _ in 0..64 {
            match stream.read(buf) {
                Ok(0) => return self.lost(),
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return self.lost(),
            }
        }
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
                self.fault.get_or_insert(format!("the head {head:?}"));
                return self.lost();
            }
            self.raw.drain(..end + 4);
            self.head_done = true;
            self.connections += 1;
        }
        let ended = dechunk(&mut self.raw, &mut self.body);
        while let Some(frame) = next_block(&mut self.body) {
            if let Some(ms) = frame.get("retry").and_then(|v| v.parse().ok()) {
                self.retry = Duration::from_millis(ms);
            }
            if frame.event() == Some("reset") {
                self.fault
                    .get_or_insert(format!("a reset after {}", self.last));
            }
            if let Some(id) = frame.id() {
                if id <= self.last {
                    self.fault
                        .get_or_insert(format!("id {id} again after {}", self.last));
                }
                self.last = self.last.max(id);
            }
            if frame.event() == Some("like") {
                let like = frame.data_json();
                if let (Some(comment), Some(score)) = (like["id"].as_u64(), like["score"].as_u64())
                {
                    self.scores.insert(comment, score);
                }
            }
        }
        if ended {
            self.lost();
        }
    }
}

/// Shared between the test and the threads of one fleet.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    /// While set, every client stays disconnected (its laptop is closed);
    /// once cleared, each connects at once.
    offline: AtomicBool,
}

/// Threads driving clients; each publishes the lowest id its clients reached
/// and how many of them came back after their first stream.
struct Fleet {
    control: Arc<Control>,
    lowest: Vec<Arc<AtomicU64>>,
    returned: Vec<Arc<AtomicUsize>>,
    handles: Vec<JoinHandle<Vec<Client>>>,
}

impl Fleet {
    /// `n` clients resuming after id `from`, spread over [`CLIENT_THREADS`].
    fn start(addr: SocketAddr, n: usize, from: u64) -> Fleet {
        let control = Arc::new(Control::default());
        let mut fleet = Fleet {
            control,
            lowest: Vec::new(),
            returned: Vec::new(),
            handles: Vec::new(),
        };
        let per_thread = n.div_ceil(CLIENT_THREADS).max(1);
        let mut left = n;
        while left > 0 {
            let count = per_thread.min(left);
            left -= count;
            let clients: Vec<Client> = (0..count).map(|_| Client::new(from)).collect();
            let lowest = Arc::new(AtomicU64::new(from));
            let returned = Arc::new(AtomicUsize::new(0));
            let control = Arc::clone(&fleet.control);
            let (l, r) = (Arc::clone(&lowest), Arc::clone(&returned));
            fleet.handles.push(thread::spawn(move || {
                drive(clients, addr, &control, &l, &r)
            }));
            fleet.lowest.push(lowest);
            fleet.returned.push(returned);
        }
        fleet
    }

    fn lowest(&self) -> u64 {
        self.lowest
            .iter()
            .map(|l| l.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Clients that have opened a second stream (they were all connected once).
    fn returned(&self) -> usize {
        self.returned.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Waits until every client has seen `id`; panics with the server's log if not.
    fn wait_for(&self, id: u64, server: &Likeboard, during: &str) {
        let deadline = Instant::now() + LIMIT;
        while self.lowest() < id {
            if Instant::now() > deadline {
                server.died(&format!(
                    "left a client at id {} of {id} after {during}",
                    self.lowest()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_offline(&self, offline: bool) {
        self.control.offline.store(offline, Ordering::SeqCst);
    }

    fn stop(self) -> Vec<Client> {
        self.control.stop.store(true, Ordering::SeqCst);
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client thread panicked"))
            .collect()
    }
}

/// One thread's loop: (re)connect the clients that are due, wait up to 20 ms
/// in `poll(2)` for any socket to be readable, read those; until told to stop.
fn drive(
    mut clients: Vec<Client>,
    addr: SocketAddr,
    control: &Control,
    lowest: &AtomicU64,
    returned: &AtomicUsize,
) -> Vec<Client> {
    let mut buf = vec![0u8; 64 << 10];
    let give_up = Instant::now() + LIMIT * 3;
    while !control.stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        let offline = control.offline.load(Ordering::SeqCst);
        let now = Instant::now();
        for c in &mut clients {
            if offline {
                c.stream = None;
                c.next_try = now;
            } else if c.stream.is_none() && now >= c.next_try && c.attempts < ATTEMPTS {
                c.open(addr);
            }
        }
        let open: Vec<usize> = (0..clients.len())
            .filter(|&i| clients[i].stream.is_some())
            .collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .filter_map(|&i| clients[i].stream.as_ref())
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` holds `fds.len()` initialised entries for open sockets.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        for (fd, &i) in fds.iter().zip(&open) {
            if fd.revents != 0 {
                clients[i].read(&mut buf);
            }
        }
        let low = clients.iter().map(|c| c.last).min().unwrap_or(u64::MAX);
        lowest.store(low, Ordering::SeqCst);
        let back = clients.iter().filter(|c| c.connections >= 2).count();
        returned.store(back, Ordering::SeqCst);
    }
    clients
}
