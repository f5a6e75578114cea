//! No event lost: replay from `Last-Event-ID` and `?since=`, `event: reset` when
//! history is gone, several instances on one Redis, and a SIGKILLed instance
//! whose clients reconnect and replay. Against a real redis-server (and the
//! in-memory store where one process is enough).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    dechunk, find, next_block, raise_fd_limit, visitor, Backend, Frame, Likeboard, SseClient,
};

const WAIT: Duration = Duration::from_secs(10);

/// One event as a client saw it: id, name and parsed data.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: u64,
    name: String,
    data: Value,
}

impl Seen {
    fn from_frame(frame: &Frame) -> Seen {
        Seen {
            id: frame.id().expect("an event with an id"),
            name: frame.event().unwrap_or("message").to_string(),
            data: frame.data_json(),
        }
    }
}

/// The board as `GET /api/comments` shows it: comment id -> score, and its event id.
fn board(server: &Likeboard) -> (HashMap<u64, u64>, u64) {
    let r = server.get("/api/comments?limit=500");
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json();
    let scores = json["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["score"].as_u64().unwrap()))
        .collect();
    let last = json["last_event_id"].as_str().unwrap().parse().unwrap();
    (scores, last)
}

/// What a page holds after applying `events` to a snapshot, as app.js does.
fn apply(mut scores: HashMap<u64, u64>, events: &[Seen]) -> HashMap<u64, u64> {
    for e in events {
        match e.name.as_str() {
            "like" | "comment" => {
                let id = e.data["id"].as_u64().unwrap();
                scores.insert(id, e.data["score"].as_u64().unwrap());
            }
            other => panic!("unexpected event {other:?}: {e:?}"),
        }
    }
    scores
}

/// Reads events until one has id `until` (or beyond); panics on a reset or a timeout.
fn read_until(sse: &mut SseClient, until: u64, timeout: Duration) -> Vec<Seen> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s: &Seen| s.id < until) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = sse.next_event(left).unwrap_or_else(|| {
            panic!(
                "stream ended or stalled before id {until}; got {:?}",
                seen.last()
            )
        });
        assert_ne!(frame.event(), Some("reset"), "unexpected reset: {frame:?}");
        seen.push(Seen::from_frame(&frame));
    }
    seen
}

/// Asserts that `events` are exactly the ids `first..=last`, in order, each once.
fn assert_ids(events: &[Seen], first: u64, last: u64) {
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    let want: Vec<u64> = (first..=last).collect();
    assert_eq!(
        ids, want,
        "ids must be {first}..={last}, in order, once each"
    );
}

/// Asserts that live `events` after `after` rise strictly and end at `last`.
/// Likes a writer finds queued together are folded into each comment's newest
/// (`sse/frame.rs`), so a live stream may skip ids, never reorder or repeat
/// them, and always ends a write with its last id; `apply` then still gives
/// the board.
fn assert_rising(events: &[Seen], after: u64, last: u64) {
    let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
    assert!(
        ids.first().is_some_and(|&first| first > after),
        "after {after}: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "rising: {ids:?}");
    assert_eq!(ids.last(), Some(&last), "{ids:?}");
}

/// Connects to `/events` (or another stream path) and reads past the first
/// `retry:`. The server subscribes a client before it writes the head, so from
/// here on the client gets every new event: no need to poll `/healthz`.
fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
    let mut sse = SseClient::connect(addr, path, headers).unwrap();
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
    sse
}

/// Likes `comment` once per visitor number in `visitors` (one event each); returns the scores.
fn likes(server: &Likeboard, comment: u64, visitors: std::ops::Range<u64>) -> Vec<u64> {
    visitors
        .map(|v| {
            let r = server.like("POST", comment, &visitor(v));
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["score"].as_u64().unwrap()
        })
        .collect()
}

/// Sends one command to Redis and returns its reply line (`:10`, `+OK`, ...).
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(cmd.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        s.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap().trim_end().to_string()
}

/// Two instances on one Redis under 2 x 16 writers: all 20 clients see ids rise to the same last
/// one, an id means the same event on either instance, both comments arrive, and every client ends
/// on the board's scores (each folds likes by its own timing, so the subsets differ).
#[test]
fn two_instances_deliver_identical_sequences() {
    raise_fd_limit();
    let backend = Backend::redis();
    let a = backend.start(&[]);
    let b = backend.start(&[]);
    let comments: Vec<u64> = (0..3).map(|i| a.add_comment(&format!("c{i}"))).collect();
    let (start_scores, start) = board(&a);
    // Live listeners must not be sent the comments' events: both pumps hand
    // them out first (within --coalesce-ms of the last write).
    for server in [&a, &b] {
        server.wait_delivered(start, WAIT);
    }

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = Vec::new();
    for server in [&a, &b] {
        for i in 0..10 {
            // Half resume from the snapshot's id, half just listen live.
            let path = if i % 2 == 0 {
                format!("/events?since={start}")
            } else {
                "/events".to_string()
            };
            let mut sse = connect(server.addr, &path, &[]);
            let target = Arc::clone(&target);
            readers.push(thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut seen: Vec<Seen> = Vec::new();
                while seen
                    .last()
                    .is_none_or(|s| s.id < target.load(Ordering::SeqCst))
                {
                    assert!(
                        Instant::now() < deadline,
                        "timed out after {:?}",
                        seen.last()
                    );
                    if let Some(frame) = sse.next_event(Duration::from_millis(200)) {
                        seen.push(Seen::from_frame(&frame));
                    }
                }
                seen
            }));
        }
    }
    a.wait_subscribers(10, WAIT);
    b.wait_subscribers(10, WAIT);

    let mut writers = Vec::new();
    for (instance, server) in [&a, &b].into_iter().enumerate() {
        for t in 0..16u64 {
            let addr = server.addr;
            let comments = comments.clone();
            writers.push(thread::spawn(move || {
                for k in 0..50u64 {
                    let v = visitor(instance as u64 * 1_000_000 + t * 1000 + k);
                    let id = comments[((t + k) % 3) as usize];
                    let r = support::like_at(addr, "POST", id, &v);
                    assert_eq!(r.status, 200, "{}", r.text());
                    if t == 0 && k == 25 {
                        let r = support::http(
                            addr,
                            "POST",
                            "/api/comments",
                            &[("Content-Type", "application/json")],
                            br#"{"content":"posted mid-storm"}"#,
                        );
                        assert_eq!(r.status, 201, "{}", r.text());
                    }
                }
            }));
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let (final_scores, last) = board(&b);
    assert_eq!(
        last,
        start + 2 * 16 * 50 + 2,
        "one event per like and comment"
    );
    assert_eq!(
        board(&a).0,
        final_scores,
        "both instances show the same board"
    );
    target.store(last, Ordering::SeqCst);

    let sequences: Vec<Vec<Seen>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let mut by_id: HashMap<u64, &Seen> = HashMap::new();
    for seen in &sequences {
        assert_rising(seen, start, last);
        for e in seen {
            assert_eq!(
                *by_id.entry(e.id).or_insert(e),
                e,
                "id {} is one event",
                e.id
            );
        }
        let comments = seen.iter().filter(|e| e.name == "comment").count();
        assert_eq!(comments, 2, "comment events are never folded");
        assert_eq!(apply(start_scores.clone(), seen), final_scores);
    }
}

both_backends!(
    /// Reconnecting with Last-Event-ID gives exactly the 50 missed events, in order (a replay is
    /// never folded), then live ones.
    last_event_id_replays_what_was_missed,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let c = server.add_comment("replay me");
        let mut sse = connect(server.addr, "/events", &[]);
        likes(&server, c, 0..5);
        let (_, now) = board(&server);
        let before = read_until(&mut sse, now, WAIT);
        let last = before.last().unwrap().id;
        drop(sse);

        let scores = likes(&server, c, 5..55);
        // Once the pump has broadcast them, all 50 are history (the ring) when
        // the client is back: replayed, which is never folded. (Any still on
        // their way would reach it live, where queued likes fold.)
        server.wait_delivered(last + 50, WAIT);
        let last_header = last.to_string();
        let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", &last_header)]);
        let replayed = read_until(&mut sse, last + 50, WAIT);
        assert_ids(&replayed, last + 1, last + 50);
        let replayed_scores: Vec<u64> = replayed
            .iter()
            .map(|e| e.data["score"].as_u64().unwrap())
            .collect();
        assert_eq!(replayed_scores, scores);

        likes(&server, c, 55..58);
        assert_rising(&read_until(&mut sse, last + 53, WAIT), last + 50, last + 53);
    }
);

both_backends!(
    /// `?since=` a snapshot's id while 20 likes race the connect: snapshot plus events is the board
    /// (some of the live likes folded, ids still rising to the last).
    since_hand_off_matches_the_board,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let comments: Vec<u64> = (0..2).map(|i| server.add_comment(&format!("c{i}"))).collect();
        for round in 0..5u64 {
            let (snapshot, since) = board(&server);
            let writers: Vec<_> = (0..4u64)
                .map(|t| {
                    let addr = server.addr;
                    let comments = comments.clone();
                    thread::spawn(move || {
                        for k in 0..5u64 {
                            let v = visitor(round * 1000 + t * 10 + k);
                            let id = comments[(k % 2) as usize];
                            let r = support::like_at(addr, "POST", id, &v);
                            assert_eq!(r.status, 200, "{}", r.text());
                        }
                    })
                })
                .collect();
            let mut sse = connect(server.addr, &format!("/events?since={since}"), &[]);
            for w in writers {
                w.join().unwrap();
            }
            let (final_scores, last) = board(&server);
            assert_eq!(last, since + 20);
            let events = read_until(&mut sse, last, WAIT);
            assert_rising(&events, since, last);
            assert_eq!(apply(snapshot, &events), final_scores, "round {round}");
        }
    }
);

/// Reads the first event after `retry:` and checks it is a reset to `last`.
fn assert_reset_first(sse: &mut SseClient, last: u64) {
    let frame = sse.next_event(WAIT).expect("a reset");
    assert_eq!(
        frame.raw,
        format!("id: {last}\nevent: reset\ndata: {{\"last_event_id\":\"{last}\"}}\n\n")
    );
}

both_backends!(
    /// With `--stream-len 10`, a client 100 events behind gets `event: reset` first, then live events.
    evicted_history_resets,
    |backend: &Backend| {
        let server = backend.start(&["--stream-len", "10"]);
        let c = server.add_comment("short memory");
        let mut sse = connect(server.addr, "/events", &[]);
        likes(&server, c, 0..1);
        let seen = read_until(&mut sse, 2, WAIT).last().unwrap().id;
        drop(sse);

        likes(&server, c, 1..101);
        let (_, last) = board(&server);
        assert_eq!(last, seen + 100);
        if let Backend::Redis(redis) = backend {
            // Trimming is exact: not a macro-node more than asked for.
            let xlen = redis_command(redis.port, &["XLEN", "{likeboard}:events"]);
            assert_eq!(xlen, ":10");
        }

        let header = seen.to_string();
        let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", &header)]);
        assert_reset_first(&mut sse, last);
        likes(&server, c, 101..102);
        assert_ids(&read_until(&mut sse, last + 1, WAIT), last + 1, last + 1);
        drop(sse);

        // The edge of history: the 10 kept events replay; one further back resets.
        let last = last + 1;
        let kept = (last - 10).to_string();
        let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", &kept)]);
        assert_ids(&read_until(&mut sse, last, WAIT), last - 9, last);
        let gone = (last - 11).to_string();
        let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", &gone)]);
        assert_reset_first(&mut sse, last);
    }
);

both_backends!(
    /// A garbage or future id (header or `?since=`) gets `event: reset` first, never an error.
    bad_ids_reset,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let c = server.add_comment("x");
        likes(&server, c, 0..3);
        let (_, last) = board(&server);
        for (path, header) in [
            ("/events", Some("nope")),
            ("/events", Some("12abc")),
            ("/events", Some("-1")),
            ("/events", Some("99999999")),
            ("/events?since=xyz", None),
            ("/events?since=99999999", None),
        ] {
            let headers: Vec<(&str, &str)> =
                header.map(|h| ("Last-Event-ID", h)).into_iter().collect();
            let mut sse = connect(server.addr, path, &headers);
            assert_reset_first(&mut sse, last);
        }
        let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", "garbage")]);
        assert_reset_first(&mut sse, last);
        likes(&server, c, 3..4);
        assert_ids(&read_until(&mut sse, last + 1, WAIT), last + 1, last + 1);
    }
);

both_backends!(
    /// The seed's `/sse` replays from Last-Event-ID too, in its own frame format.
    seed_stream_replays,
    |backend: &Backend| {
        let server = backend.start(&["--seed-routes"]);
        let c = server.add_comment("seed"); // event 1
        likes(&server, c, 0..3); // events 2..=4
        let mut sse = connect(server.addr, "/sse", &[("Last-Event-ID", "2")]);
        for id in [3, 4] {
            let frame = sse.next_event(WAIT).unwrap();
            assert_eq!(frame.raw, format!("id: {id}\ndata: {c}@POST\n\n"));
        }
        let r = server.like("DELETE", c, &visitor(0));
        assert_eq!(r.status, 200);
        let frame = sse.next_event(WAIT).unwrap();
        assert_eq!(frame.raw, format!("id: 5\ndata: {c}@DELETE\n\n"));
    }
);

/// A client that behaves as a browser's EventSource: HTTP/1.1 with chunked
/// framing; whenever the stream ends, breaks or cannot be opened, it waits the
/// `retry:` delay the server gave and reconnects, sending the last id it saw as
/// `Last-Event-ID`. Written on raw sockets so a killed server (reset or EOF) is
/// told apart from a quiet stream (read timeout).
struct ReconnectingClient {
    addr: SocketAddr,
    path: String,
    retry: Duration,
    last_id: Option<u64>,
    events: Vec<Seen>,
    /// Connections that got a 200 event stream.
    connections: u32,
}

impl ReconnectingClient {
    fn new(addr: SocketAddr, path: &str) -> Self {
        ReconnectingClient {
            addr,
            path: path.to_string(),
            retry: Duration::from_secs(3),
            last_id: None,
            events: Vec::new(),
            connections: 0,
        }
    }

    /// Runs until an event with id >= `target` has arrived, within `attempts`
    /// connection attempts and before `deadline`.
    fn run_until(&mut self, target: &AtomicU64, attempts: u32, deadline: Instant) {
        for _ in 0..attempts {
            if self.stream_once(target, deadline) {
                return;
            }
            assert!(Instant::now() < deadline, "gave up at {:?}", self.last_id);
            thread::sleep(self.retry);
        }
        panic!(
            "no event {} in {attempts} attempts",
            target.load(Ordering::SeqCst)
        );
    }

    /// One connection: true once the target is reached, false when the stream
    /// ended or could not be opened.
    fn stream_once(&mut self, target: &AtomicU64, deadline: Instant) -> bool {
        let Ok(mut socket) = TcpStream::connect(self.addr) else {
            return false;
        };
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            self.path, self.addr
        );
        if let Some(id) = self.last_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        if socket.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        let (mut raw, mut body) = (Vec::new(), Vec::new());
        let mut head_done = false;
        let mut buf = [0u8; 16 * 1024];
        while Instant::now() < deadline {
            match socket.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return false,
            }
            if !head_done {
                let Some(end) = find(&raw, b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked")
                {
                    return false;
                }
                raw.drain(..end + 4);
                head_done = true;
                self.connections += 1;
            }
            let ended = dechunk(&mut raw, &mut body);
            while let Some(frame) = next_block(&mut body) {
                if let Some(ms) = frame.get("retry").and_then(|v| v.parse().ok()) {
                    self.retry = Duration::from_millis(ms);
                }
                if let Some(id) = frame.id() {
                    self.last_id = Some(id);
                }
                if frame.get("data").is_some() {
                    assert_ne!(frame.event(), Some("reset"), "nothing was lost: {frame:?}");
                    self.events.push(Seen::from_frame(&frame));
                }
            }
            if self.last_id >= Some(target.load(Ordering::SeqCst)) {
                return true;
            }
            if ended {
                return false;
            }
        }
        false
    }
}

/// A reconnecting client whose instance is SIGKILLed and restarted misses nothing: its ids rise
/// to the last one and its scores end on the board's.
#[test]
fn sigkill_restart_loses_nothing() {
    let backend = Backend::redis();
    let mut a = backend.start(&[]);
    let b = backend.start(&[]);
    let port = a.addr.port();
    let c = a.add_comment("survive");
    let (snapshot, since) = board(&a);

    let target = Arc::new(AtomicU64::new(u64::MAX));
    let client = {
        let target = Arc::clone(&target);
        let mut client = ReconnectingClient::new(a.addr, &format!("/events?since={since}"));
        thread::spawn(move || {
            client.run_until(&target, 20, Instant::now() + Duration::from_secs(90));
            client
        })
    };
    a.wait_subscribers(1, WAIT);
    // Live on A, through B.
    likes(&b, c, 0..10);
    thread::sleep(Duration::from_millis(300));
    a.kill();
    // While A is dead (the client waits its `retry:` and finds A refusing).
    likes(&b, c, 10..40);
    let a2 = backend.launch().listen(format!("127.0.0.1:{port}")).start();
    // Through the new A before the client is back: replayed from history.
    likes(&a2, c, 40..50);
    a2.wait_subscribers(1, Duration::from_secs(30));
    // Live again, through both.
    likes(&a2, c, 50..55);
    likes(&b, c, 55..60);
    let (final_scores, last) = board(&b);
    assert_eq!(last, since + 60);
    target.store(last, Ordering::SeqCst);

    let client = client.join().unwrap();
    assert!(client.connections >= 2, "the client reconnected");
    assert_rising(&client.events, since, last);
    assert_eq!(apply(snapshot, &client.events), final_scores);
}

/// Redis restarted empty (ids go backwards): the pump logs it, closes streams, and stays live.
#[test]
fn ids_going_backwards_do_not_wedge_the_pump() {
    let mut backend = Backend::redis();
    let server = backend.start(&[]);
    let c = server.add_comment("before");
    likes(&server, c, 0..5);
    let (_, old_last) = board(&server);
    let mut sse = connect(server.addr, "/events?since=0", &[]);
    read_until(&mut sse, old_last, WAIT);

    let Backend::Redis(redis) = &mut backend else {
        unreachable!()
    };
    redis.kill();
    redis.restart();

    // The open stream is closed with a retry hint, so its client reconnects.
    assert!(sse.read_to_close(Duration::from_secs(20)), "stream closed");
    let body = String::from_utf8_lossy(&sse.body);
    let last = body.trim_end().rsplit("\n\n").next().unwrap_or_default();
    support::assert_closing_retry(&format!("{last}\n\n"));

    // The store answers again (its pool reconnects lazily): post into the new history.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        let r = support::http(
            server.addr,
            "POST",
            "/api/comments",
            &[("Content-Type", "application/json")],
            br#"{"content":"after"}"#,
        );
        if r.status == 201 {
            break r.json()["id"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "store never came back: {}",
            r.text()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let (_, new_last) = board(&server);
    assert!(new_last < old_last);

    let old = old_last.to_string();
    let mut sse = connect(server.addr, "/events", &[("Last-Event-ID", &old)]);
    assert_reset_first(&mut sse, new_last);
    likes(&server, c, 0..1);
    assert_ids(
        &read_until(&mut sse, new_last + 1, WAIT),
        new_last + 1,
        new_last + 1,
    );
    assert!(
        server.stderr().contains("event ids went back"),
        "{}",
        server.stderr()
    );
}
