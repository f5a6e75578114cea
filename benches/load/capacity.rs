//! 7: capacity (issue 13). Holds as many idle event streams as asked for
//! (15,000) and the server's cap and our descriptors allow, weighs the server
//! and sends them a few likes; then brings the server to its cap and opens a
//! burst of connects beyond it, all at once: each must be refused politely
//! (200, a `retry:`, the stream closed), the server must stay up, and every
//! held client must still receive the next like. `main.rs` calls [`capacity`];
//! `report.rs` reads the [`Capacity`] it returns.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{close_all, connect_sse, HttpConn, Ledger, LikeJob, Readers, Tally};
use crate::procstat::{CpuMeter, Histogram, ProcSnapshot};
use crate::report::Report;
use crate::scenarios::LikeRun;
use crate::support::{find, read_head, Likeboard, RedisServer};
use crate::{json_u64, step, ServerProbe, Sizes, WAIT_LIMIT};

/// How long one connect beyond the cap may take from its connect to the end
/// of its stream. A stream still open then was let in, not refused.
const REFUSAL_LIMIT: Duration = Duration::from_secs(5);

pub struct Capacity {
    pub asked: usize,
    /// The server's cap (`/healthz` max_subscribers).
    pub cap: usize,
    /// Streams opened for the hold (connect failures not subtracted).
    pub held: usize,
    pub limited_by: Option<String>,
    pub connect_failures: usize,
    pub connect_secs: f64,
    /// The server weighed with the held clients idle (also a row of the memory table).
    pub idle: ProcSnapshot,
    /// The likes sent to the held clients, one after another with a gap.
    pub likes: LikeRun,
    pub expected: u64,
    pub tally: Tally,
    /// Held clients the server no longer counted after the likes.
    pub server_dropped: u64,
    /// The part beyond the cap, or why it did not run.
    pub beyond: Result<Beyond, String>,
}

impl Capacity {
    /// Every held client received every like, none was dropped.
    pub fn served(&self) -> bool {
        self.connect_failures == 0
            && self.likes.failures == 0
            && self.likes.acked > 0
            && self.tally.delivered() == self.expected
            && self.tally.missed + self.tally.dropped + self.server_dropped == 0
    }
}

/// The server at its cap, a burst of connects beyond it, and the next like.
pub struct Beyond {
    /// Streams opened on top of the held ones to bring the server to its cap.
    pub topped_up: usize,
    pub topup_failures: usize,
    pub burst: Refusals,
    /// Refusals the server counted during the burst (`likeboard_sse_refused_total`).
    pub refused_by_server: Option<u64>,
    /// `/healthz` after the burst: its status (None: no answer) and subscribers.
    pub healthz: Option<u16>,
    pub subscribers: u64,
    /// The next like, sent to every held and topped-up client.
    pub next_like: LikeRun,
    pub expected: u64,
    pub tally: Tally,
}

impl Beyond {
    /// Everything beyond the cap went as the issue asks.
    pub fn polite(&self, cap: usize) -> bool {
        self.burst.polite == self.burst.attempts
            && self.healthz == Some(200)
            && self.subscribers == cap as u64
            && self.next_like.acked == 1
            && self.tally.delivered() == self.expected
            && self.tally.missed + self.tally.dropped == 0
    }
}

pub fn capacity(
    server: &Likeboard,
    redis: &RedisServer,
    sizes: &Sizes,
    cap: usize,
    budget: usize,
    report: &mut Report,
) -> Capacity {
    let n = sizes.capacity.min(cap).min(budget);
    let limited_by = (n < sizes.capacity).then(|| {
        if n == cap {
            format!("the server's cap (max_subscribers = {cap})")
        } else {
            format!("the bench's descriptors ({budget} for client sockets)")
        }
    });
    // One comment for the held clients' likes, one for the like after the
    // burst: clients topped up later never saw the first, and must not be
    // counted as having missed it.
    let comments = [
        server.add_comment("capacity"),
        server.add_comment("capacity, after the burst"),
    ];
    let ledger = Ledger::new(&comments, sizes.capacity_likes + 1);
    step(&format!("  holding {n} idle event streams"));
    let connect_started = Instant::now();
    let (clients, connect_failures) = connect_sse(server.addr, n, &ledger);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let readers = Readers::start(clients);
    server.wait_for_subscribers(n - connect_failures, report);
    thread::sleep(sizes.idle_settle);
    let idle = server.idle_snapshot(redis);
    report.memory.push((n, idle));

    step(&format!(
        "  {} likes to {n} idle clients",
        sizes.capacity_likes
    ));
    let cpu = CpuMeter::start(Some(server.pid()), redis.pid());
    let started = Instant::now();
    let result = LikeJob {
        http: HttpConn::open(server.addr),
        comment: comments[0],
        ledger: Some((Arc::clone(&ledger), 0)),
        max_likes: sizes.capacity_likes as u64,
        until: Instant::now() + WAIT_LIMIT,
        gap: Some(sizes.capacity_gap),
    }
    .run();
    let secs = started.elapsed().as_secs_f64();
    let expected = result.acked * (n - connect_failures) as u64;
    readers.wait_for(expected, Duration::from_secs(10));
    let cpu = cpu.stop();
    let (held, mut tally) = readers.stop();
    tally.add_shortfall(&held, &[result.acked, 0]);
    let subscribers = json_u64(&server.healthz(), "subscribers");
    let server_dropped = ((n - connect_failures) as u64).saturating_sub(subscribers);
    let mut likes = LikeRun::from_results(1, secs, &[result]);
    likes.cpu = cpu;

    // What the server still takes, and whether we have the descriptors to
    // fill it and then knock on the door all at once.
    let room = cap.saturating_sub(subscribers as usize);
    let beyond = if held.len() + room + sizes.beyond_cap > budget {
        close_all(held);
        Err(format!(
            "bringing the server to its cap of {cap} and then {} more connects would need \
             more than the bench's {budget} descriptors for client sockets",
            sizes.beyond_cap
        ))
    } else {
        Ok(beyond_the_cap(
            server, sizes, cap, room, held, &comments, &ledger, report,
        ))
    };
    Capacity {
        asked: sizes.capacity,
        cap,
        held: n,
        limited_by,
        connect_failures,
        connect_secs,
        idle,
        likes,
        expected,
        tally,
        server_dropped,
        beyond,
    }
}

/// Tops the server up to its cap, opens the burst, checks the server, sends
/// the next like to everyone held; closes every client it was given or opened.
#[allow(
    clippy::too_many_arguments,
    reason = "the phase's state, handed over once"
)]
fn beyond_the_cap(
    server: &Likeboard,
    sizes: &Sizes,
    cap: usize,
    room: usize,
    held: Vec<crate::clients::Conn<crate::clients::SseClient>>,
    comments: &[u64; 2],
    ledger: &Arc<Ledger>,
    report: &mut Report,
) -> Beyond {
    step(&format!("  {room} more streams to reach the cap of {cap}"));
    let (top, topup_failures) = connect_sse(server.addr, room, ledger);
    let held_readers = Readers::start(held);
    let top_readers = Readers::start(top);
    server.wait_for_subscribers(cap, report);

    step(&format!(
        "  {} connects at once beyond the cap",
        sizes.beyond_cap
    ));
    let refused_before = refused_total(server.addr);
    let burst = Refusals::measure(server.addr, sizes.beyond_cap, server.pid());
    let refused_by_server = refused_total(server.addr)
        .zip(refused_before)
        .map(|(after, before)| after.saturating_sub(before));
    // Not the kit's `healthz`, which ends the run when the server is gone:
    // a server that died here is a finding for the report.
    let health = HttpConn::new(server.addr).request("GET", "/healthz", None, None);
    let (healthz, subscribers) = match health {
        Ok((status, body)) => (
            Some(status),
            serde_json::from_slice(&body).map_or(0, |v| json_u64(&v, "subscribers")),
        ),
        Err(_) => (None, 0),
    };

    step("  the next like to every held client");
    let started = Instant::now();
    let result = LikeJob {
        http: HttpConn::open(server.addr),
        comment: comments[1],
        ledger: Some((Arc::clone(ledger), 1)),
        max_likes: 1,
        until: Instant::now() + WAIT_LIMIT,
        gap: None,
    }
    .run();
    let secs = started.elapsed().as_secs_f64();
    let acked = result.acked;
    let (held_n, top_n) = (held_readers.len(), top_readers.len());
    let expected = acked * (held_n + top_n) as u64;
    held_readers.wait_for(acked * held_n as u64, Duration::from_secs(10));
    top_readers.wait_for(acked * top_n as u64, Duration::from_secs(10));
    let mut tally = Tally::default();
    for readers in [held_readers, top_readers] {
        let (clients, t) = readers.stop();
        tally.merge(&t);
        tally.add_shortfall(&clients, &[0, acked]);
        close_all(clients);
    }
    Beyond {
        topped_up: room,
        topup_failures,
        burst,
        refused_by_server,
        healthz,
        subscribers,
        next_like: LikeRun::from_results(1, secs, &[result]),
        expected,
        tally,
    }
}

/// `likeboard_sse_refused_total` from /metrics.
fn refused_total(addr: SocketAddr) -> Option<u64> {
    let (_, body) = HttpConn::new(addr)
        .request("GET", "/metrics", None, None)
        .ok()?;
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        let v = l.strip_prefix("likeboard_sse_refused_total ")?;
        Some(v.trim().parse::<f64>().ok()? as u64)
    })
}

/// Connects opened all at once to a server at its cap, each asking for
/// `/events` as EventSource does, and how each ended.
pub struct Refusals {
    pub attempts: usize,
    /// 200, a `retry:` field, then the response ended: what the issue asks.
    pub polite: usize,
    /// 200 and a response still going after [`REFUSAL_LIMIT`]: let in beyond the cap.
    pub stayed_open: usize,
    /// Anything else: refused or reset connects, another status, no `retry:`.
    pub failed: usize,
    pub first_failure: Option<String>,
    /// From each polite refusal's connect to its stream's end.
    pub closed_after: Histogram,
    /// The server's threads and descriptors once every connect had its
    /// answer, with the connections still open: a refused connection the
    /// server keeps (HTTP/1.1 keep-alive) costs it what any open one does.
    pub server_then: ProcSnapshot,
}

/// How one connect beyond the cap ended.
enum Refusal {
    Polite(Duration),
    StayedOpen,
    Failed(String),
}

impl Refusals {
    pub fn measure(addr: SocketAddr, attempts: usize, server_pid: u32) -> Refusals {
        let go = Arc::new(Barrier::new(attempts));
        let handles: Vec<_> = (0..attempts)
            .map(|_| {
                let go = Arc::clone(&go);
                thread::Builder::new()
                    .name("beyond-cap".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        go.wait();
                        knock(addr)
                    })
                    .expect("spawning a connect thread")
            })
            .collect();
        let mut r = Refusals {
            attempts,
            polite: 0,
            stayed_open: 0,
            failed: 0,
            first_failure: None,
            closed_after: Histogram::new(),
            server_then: ProcSnapshot::default(),
        };
        let mut open = Vec::with_capacity(attempts);
        for h in handles {
            let (refusal, stream) = h.join().expect("a connect thread panicked");
            open.extend(stream);
            match refusal {
                Refusal::Polite(took) => {
                    r.polite += 1;
                    r.closed_after.record(took);
                }
                Refusal::StayedOpen => r.stayed_open += 1,
                Refusal::Failed(why) => {
                    r.failed += 1;
                    r.first_failure.get_or_insert(why);
                }
            }
        }
        r.server_then = ProcSnapshot::of(server_pid);
        drop(open);
        r
    }
}

/// One connect: the request, then everything until its response ends (the
/// zero chunk; tiny_http may keep the connection open after it, as HTTP/1.1
/// allows), the server closes, or [`REFUSAL_LIMIT`] passes.
/// Returns the connection too, left open for the caller to weigh the server.
fn knock(addr: SocketAddr) -> (Refusal, Option<TcpStream>) {
    let started = Instant::now();
    let deadline = started + REFUSAL_LIMIT;
    let mut bytes = Vec::new();
    let mut stream = None;
    let ended = (|| -> io::Result<bool> {
        let s = stream.insert(TcpStream::connect_timeout(&addr, REFUSAL_LIMIT)?);
        write!(
            s,
            "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        let mut chunk = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            s.set_read_timeout(Some(left))?;
            match s.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(k) => {
                    bytes.extend_from_slice(&chunk[..k]);
                    if response(&bytes).is_some_and(|r| r.ended) {
                        return Ok(true);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })();
    let took = started.elapsed();
    (classify(ended, &bytes, took), stream)
}

/// What one connect's bytes and end make of it.
fn classify(ended: io::Result<bool>, bytes: &[u8], took: Duration) -> Refusal {
    let closed = match ended {
        Ok(closed) => closed,
        Err(e) if bytes.is_empty() => return Refusal::Failed(format!("{e}")),
        Err(e) => return Refusal::Failed(format!("{e} after {} bytes", bytes.len())),
    };
    let Some(r) = response(bytes) else {
        return Refusal::Failed(format!(
            "no readable response head or chunked body ({} bytes, stream {})",
            bytes.len(),
            if closed { "closed" } else { "open" }
        ));
    };
    let retry = find(&r.body, b"retry: ").is_some();
    match (r.status, retry, closed) {
        (200, true, true) => Refusal::Polite(took),
        (200, _, false) => Refusal::StayedOpen,
        (200, false, true) => Refusal::Failed("200 and closed, but no retry: field".into()),
        (other, _, _) => Refusal::Failed(format!("answered {other}")),
    }
}

/// A response read so far: its status, its body undone from chunks, and
/// whether the zero chunk has come.
struct Response {
    status: u16,
    body: Vec<u8>,
    ended: bool,
}

/// Parses `bytes` as a response with a chunked body; None until the head is
/// whole, or when the framing is broken (the kit's `dechunk` would panic).
fn response(bytes: &[u8]) -> Option<Response> {
    let head_end = find(bytes, b"\r\n\r\n")? + 4;
    let (status, _) = read_head(&mut &bytes[..head_end]).ok()?;
    let mut raw = &bytes[head_end..];
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return Some(Response {
                status,
                body,
                ended: false,
            });
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|v| usize::from_str_radix(v.trim(), 16).ok())?;
        if size == 0 {
            return Some(Response {
                status,
                body,
                ended: true,
            });
        }
        if raw.len() < eol + 2 + size + 2 {
            return Some(Response {
                status,
                body,
                ended: false,
            });
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}
