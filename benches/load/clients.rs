//! The load generator's clients: like senders over keep-alive HTTP/1.1 (and the
//! ledger of when each like was sent), and event-stream clients read by two
//! threads through epoll with a hand-written chunked + SSE parser, checking
//! every like event against the ledger. Raw HTTP parsing comes from the kit.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::procstat::{now_ns, Histogram};
use crate::support::{find, read_head, visitor};

/// Threads reading SSE sockets: one per core of the development machine.
pub const READER_THREADS: usize = 2;
/// Threads opening SSE connections in parallel.
const CONNECT_THREADS: usize = 4;
/// Bytes of the frame the fan-out floor writes: about one chunked like event.
pub const FLOOR_FRAME: usize = 60;

// ---------------------------------------------------------------------------
// Likes over HTTP: one sender, and the ledger of send times
// ---------------------------------------------------------------------------

/// One sender: a keep-alive connection liking one comment, each like from a
/// new visitor, until a deadline or a count.
pub struct LikeJob {
    /// Opened and warmed up by [`HttpConn::open`] before the clock starts.
    pub http: HttpConn,
    pub comment: u64,
    /// Where to log send times, and as which sender (for the SSE clients).
    pub ledger: Option<(Arc<Ledger>, usize)>,
    pub max_likes: u64,
    pub until: Instant,
    /// Time between likes; none means as fast as replies come.
    pub gap: Option<Duration>,
}

pub struct LikeResult {
    pub acked: u64,
    /// Likes not answered with 200 and the expected score.
    pub failures: u64,
    /// Of those, the ones that got no reply at all (refused, reset).
    pub unanswered: u64,
    pub latency: Histogram,
}

impl LikeJob {
    pub fn run(mut self) -> LikeResult {
        let path = format!("/api/comments/{}/like", self.comment);
        let mut result = LikeResult {
            acked: 0,
            failures: 0,
            unanswered: 0,
            latency: Histogram::new(),
        };
        let started = Instant::now();
        // The comment's score as our last reply gave it, and likes sent since
        // then that got no reply (a server killed under them may or may not
        // have applied each).
        let (mut score, mut unknown) = (0, 0);
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
                // This like should make score + 1.
                ledger.record_send(*sender, score + 1, now_ns());
            }
            match self.http.request("POST", &path, Some(&cookie), None) {
                Ok((200, body)) => {
                    result.latency.record(t.elapsed());
                    result.acked += 1;
                    // Another writer on our comment would break the matching of
                    // events to send times: count it, never hide it.
                    match json_number(&body, b"\"score\":") {
                        Some(s) if s > score && s <= score + 1 + unknown => score = s,
                        _ if self.ledger.is_some() => result.failures += 1,
                        _ => {}
                    }
                    unknown = 0;
                }
                Ok(_) => result.failures += 1,
                Err(_) => {
                    result.failures += 1;
                    result.unanswered += 1;
                    unknown += 1;
                }
            }
        }
        result
    }
}

/// A fresh visitor for every like: the value of an `lb_visitor` cookie,
/// `<id>.<signature>`, signed as the server signs the cookies it issues, with
/// the key the kit gives every server it starts (`--visitor-key-file`, see
/// `support::visitor`). The server takes it for a visitor it issued, so the
/// bench needs no request to collect cookies, and the new-visitor limit
/// (off anyway with `--write-rate 0`) never comes into it.
pub fn next_visitor() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    visitor(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The visitor id the server records a like under for this cookie value,
/// `c:<id>` (`src/visitor.rs`): what the direct-Redis run passes the script,
/// so that its keys are the server's, length included.
pub fn recorded_id(cookie: &str) -> String {
    let id = cookie.split_once('.').map_or(cookie, |(id, _)| id);
    format!("c:{id}")
}

/// When each like was sent, per sender, so a client can time its events.
pub struct Ledger {
    comments: Vec<u64>,
    /// `sent_at[sender][score - 1]`: nanoseconds since the bench started; 0 = not sent.
    sent_at: Vec<Vec<AtomicU64>>,
}

impl Ledger {
    pub fn new(comments: &[u64], capacity: usize) -> Arc<Ledger> {
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

pub struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn new(addr: SocketAddr) -> HttpConn {
        HttpConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
        }
    }

    /// A connection already answered once (`GET /healthz`), so a sender's
    /// first timed request does not include setting it up.
    pub fn open(addr: SocketAddr) -> HttpConn {
        let mut http = HttpConn::new(addr);
        if let Err(e) = http.request("GET", "/healthz", None, None) {
            eprintln!("load: warming up a connection failed: {e}");
        }
        http
    }

    /// Sends one request and reads the reply: (status, body). After an error
    /// the connection is dropped and the next request opens a new one.
    pub fn request(
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
        let head_end = read_past_head(stream, &mut self.buf, &mut chunk)?;
        let (status, headers) = read_head(&mut &self.buf[..head_end])?;
        let length: usize = headers
            .get("Content-Length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("reply without Content-Length"))?;
        while self.buf.len() < head_end + length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        if headers.has("Connection", "close") {
            self.stream = None;
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }
}

/// Reads from `stream` into `buf` until it holds a whole response head (parsed
/// by the kit's `read_head`); returns where the body starts. Unlike a
/// `BufReader`, the body's first bytes stay in `buf` for the caller.
fn read_past_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> io::Result<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Ok(i + 4);
        }
        let n = stream.read(chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
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

// ---------------------------------------------------------------------------
// SSE clients: connect, then parse chunked SSE frames
// ---------------------------------------------------------------------------

/// Opens `n` event streams from a few threads; returns them (with the head's
/// leftover bytes already parsed) and how many failed to open.
pub fn connect_sse(
    addr: SocketAddr,
    n: usize,
    ledger: &Arc<Ledger>,
) -> (Vec<Conn<SseClient>>, usize) {
    open_streams(
        addr,
        (0..n).map(|_| SseClient::new(Arc::clone(ledger))).collect(),
    )
}

/// Opens a new stream for each client whose stream ended, as EventSource
/// does: with `Last-Event-ID` set to the last id it saw, keeping what it saw
/// so that a missed or repeated event still counts. Returns them and how
/// many could not reconnect.
pub fn reconnect_sse(
    addr: SocketAddr,
    conns: Vec<Conn<SseClient>>,
) -> (Vec<Conn<SseClient>>, usize) {
    open_streams(
        addr,
        conns
            .into_iter()
            .map(|c| {
                let mut client = c.state;
                client.chunk = Chunk::Size(0);
                client.text.clear();
                client
            })
            .collect(),
    )
}

/// Opens one stream per client from [`CONNECT_THREADS`] threads.
fn open_streams(addr: SocketAddr, mut clients: Vec<SseClient>) -> (Vec<Conn<SseClient>>, usize) {
    let per_thread = clients.len().div_ceil(CONNECT_THREADS).max(1);
    let mut handles = Vec::new();
    while !clients.is_empty() {
        let rest = clients.split_off(per_thread.min(clients.len()));
        let mine = std::mem::replace(&mut clients, rest);
        handles.push(thread::spawn(move || {
            let mut opened = Vec::with_capacity(mine.len());
            let mut failed = 0;
            for client in mine {
                match open_stream(addr, client) {
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
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (opened, f) = h.join().expect("a connecting thread panicked");
        all.extend(opened);
        failed += f;
    }
    (all, failed)
}

fn open_stream(addr: SocketAddr, mut client: SseClient) -> io::Result<Conn<SseClient>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let resume = match client.last_id {
        0 => String::new(),
        id => format!("Last-Event-ID: {id}\r\n"),
    };
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = read_past_head(&mut s, &mut buf, &mut chunk)?;
    let (status, headers) = read_head(&mut &buf[..head_end])?;
    if !buf.starts_with(b"HTTP/1.1 ")
        || status != 200
        || !headers.has("Content-Type", "text/event-stream")
        || !headers.has("Transfer-Encoding", "chunked")
    {
        let head = String::from_utf8_lossy(&buf[..head_end]);
        return Err(io::Error::other(format!("unexpected head: {head:?}")));
    }
    s.set_nonblocking(true)?;
    let mut tally = Tally::default();
    client.feed(&buf[head_end..], now_ns(), &mut tally);
    Ok(Conn::new(s, client))
}

/// Something fed with the bytes one socket receives.
pub trait Feed: Send + 'static {
    /// Consumes bytes read at `now` (ns); returns how many deliveries completed.
    fn feed(&mut self, bytes: &[u8], now: u64, tally: &mut Tally) -> u64;
    /// How far it has got: the last event id it saw (0 if it counts no ids).
    fn position(&self) -> u64 {
        0
    }
}

/// One event-stream client: undoes chunked framing, splits events at blank
/// lines, and checks every like event for its comment against the ledger.
pub struct SseClient {
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
    pub fn new(ledger: Arc<Ledger>) -> SseClient {
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
        // A score is absolute: this event also delivers every like of the
        // comment since the last score seen, which the server may have folded
        // into it (issue 13: a client counts as delivered once it has seen a
        // score at least as new as the like).
        let delivered = score - *seen;
        tally.folded += delivered - 1;
        for k in *seen + 1..=score {
            if let Some(sent) = self.ledger.sent_at(sender, k) {
                tally.latency.record_ns(now.saturating_sub(sent));
            }
        }
        *seen = score;
        delivered
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

    fn position(&self) -> u64 {
        self.last_id
    }
}

/// A floor socket: counts fixed-size frames and times each against its send.
pub struct FloorClient {
    pub received: usize,
    pub sent_at: Arc<Vec<AtomicU64>>,
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
pub struct Conn<C> {
    stream: TcpStream,
    state: C,
    open: bool,
}

impl<C> Conn<C> {
    pub fn new(stream: TcpStream, state: C) -> Conn<C> {
        Conn {
            stream,
            state,
            open: true,
        }
    }
}

/// Counts of one phase, per reader thread and then merged.
#[derive(Default)]
pub struct Tally {
    pub latency: Histogram,
    /// Likes a client never saw a score as new as (it ended behind the acks).
    pub missed: u64,
    /// Likes delivered inside a newer score of the same comment (folded by
    /// the server), not as an event of their own.
    pub folded: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Like events for comments we did not like, or unparsable ones.
    unexpected: u64,
    /// Connections that ended (EOF or error) while we read them.
    pub dropped: u64,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.latency.merge(&other.latency);
        self.missed += other.missed;
        self.folded += other.folded;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
        self.dropped += other.dropped;
    }

    /// Events a client never saw at all: from its last score to the acked count.
    pub fn add_shortfall(&mut self, clients: &[Conn<SseClient>], acked: &[u64]) {
        for c in clients {
            for (seen, acked) in c.state.seen.iter().zip(acked) {
                self.missed += acked.saturating_sub(*seen);
            }
        }
    }

    pub fn delivered(&self) -> u64 {
        self.latency.count
    }
}

// ---------------------------------------------------------------------------
// Reading many sockets from two threads (epoll)
// ---------------------------------------------------------------------------

pub struct Readers<C> {
    /// How many connections they read.
    conns: usize,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    /// The lowest [`Feed::position`] of each thread's connections.
    lowest: Vec<Arc<AtomicU64>>,
    handles: Vec<JoinHandle<(Vec<Conn<C>>, Tally)>>,
}

impl<C: Feed> Readers<C> {
    /// Splits the connections over the reader threads and starts reading.
    pub fn start(mut conns: Vec<Conn<C>>) -> Readers<C> {
        let count = conns.len();
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let per_thread = conns.len().div_ceil(READER_THREADS).max(1);
        let mut handles = Vec::new();
        let mut lowest = Vec::new();
        while !conns.is_empty() {
            let rest = conns.split_off(per_thread.min(conns.len()));
            let mine = std::mem::replace(&mut conns, rest);
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            let low = Arc::new(AtomicU64::new(0));
            lowest.push(Arc::clone(&low));
            handles.push(
                thread::Builder::new()
                    .name("reader".into())
                    .spawn(move || read_loop(mine, &stop, &progress, &low))
                    .expect("spawning a reader thread"),
            );
        }
        Readers {
            conns: count,
            stop,
            progress,
            lowest,
            handles,
        }
    }

    pub fn len(&self) -> usize {
        self.conns
    }

    /// Waits until every connection's position is at least `target`, or
    /// `limit` passed; how long that took, if it happened.
    pub fn wait_position(&self, target: u64, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            let low = self.lowest.iter().map(|l| l.load(Ordering::SeqCst)).min();
            if low.unwrap_or(u64::MAX) >= target {
                return Some(started.elapsed());
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Waits until `expected` deliveries were counted, or no progress was made
    /// for two seconds, or `limit` passed.
    pub fn wait_for(&self, expected: u64, limit: Duration) {
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
    pub fn stop(self) -> (Vec<Conn<C>>, Tally) {
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
    lowest: &AtomicU64,
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
        let low = conns.iter().map(|c| c.state.position()).min();
        lowest.store(low.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
    (conns, tally)
}

/// Closes sockets with a reset (SO_LINGER 0): no TIME_WAIT left on our ports,
/// and the server's next write to each fails at once.
pub fn close_all<C>(conns: Vec<Conn<C>>) {
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
