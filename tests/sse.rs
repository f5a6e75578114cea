//! The event stream on the wire: headers, retry, frames byte for byte,
//! heartbeats, HTTP/1.0, disconnect cleanup, the 1,000-connection burst, the
//! subscriber cap, and likes under concurrency.

mod support;

use std::time::{Duration, Instant};

use support::{raise_fd_limit, visitor, Backend, SseClient};

const WAIT: Duration = Duration::from_secs(5);

both_backends!(
    /// Headers, the first `retry:`, then each event as exact bytes.
    frames_byte_for_byte,
    |backend: &Backend| {
        let server = backend.start(&["--heartbeat-secs", "30"]);
        let mut sse = SseClient::connect(server.addr, "/events", &[]).unwrap();
        assert_eq!(sse.status, 200);
        assert_eq!(sse.headers.get("Content-Type"), Some("text/event-stream"));
        assert_eq!(sse.headers.get("Cache-Control"), Some("no-cache"));
        assert_eq!(sse.headers.get("X-Accel-Buffering"), Some("no"));
        assert!(sse.chunked, "HTTP/1.1 gets chunked framing");
        assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
        server.wait_subscribers(1, WAIT);

        let id = server.add_comment("hi \"you\"\nthere");
        let frame = sse.next_event(WAIT).unwrap();
        let comment = frame.data_json();
        assert_eq!(
            frame.raw,
            format!(
                "id: 1\nevent: comment\ndata: {{\"id\":{id},\"nickname\":\"tester\",\"content\":\"hi \\\"you\\\"\\nthere\",\"score\":0,\"created_at\":{}}}\n\n",
                comment["created_at"]
            )
        );
        server.like("POST", id, &visitor(1));
        assert_eq!(sse.next_event(WAIT).unwrap().raw, format!("id: 2\nevent: like\ndata: {{\"id\":{id},\"score\":1}}\n\n"));
        server.like("DELETE", id, &visitor(1));
        assert_eq!(sse.next_event(WAIT).unwrap().raw, format!("id: 3\nevent: like\ndata: {{\"id\":{id},\"score\":0}}\n\n"));
        // The wire itself: each write is one chunk.
        let wire = String::from_utf8(sse.wire.clone()).unwrap();
        assert!(wire.starts_with("d\r\nretry: 3000\n\n\r\n"), "{wire:?}");
    }
);

both_backends!(
    /// An idle stream carries a heartbeat comment every heartbeat interval.
    heartbeat,
    |backend: &Backend| {
        let server = backend.start(&["--heartbeat-secs", "1"]);
        let mut sse = SseClient::connect(server.addr, "/events", &[]).unwrap();
        assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
        let started = Instant::now();
        let beat = sse.next_frame(Duration::from_secs(3)).expect("a heartbeat");
        assert_eq!(beat.raw, ": heartbeat\n\n");
        assert!(beat.is_comment());
        assert!(started.elapsed() >= Duration::from_millis(800), "not before the interval");
        assert_eq!(sse.next_frame(Duration::from_secs(3)).unwrap().raw, ": heartbeat\n\n");
    }
);

both_backends!(
    /// HTTP/1.0 (nginx's default upstream protocol) gets a close-delimited body
    /// whose events arrive as they happen, not when the stream ends.
    http10_streams,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let mut sse = SseClient::connect_version(server.addr, "/events", &[], "HTTP/1.0").unwrap();
        assert_eq!(sse.status, 200);
        assert!(!sse.chunked);
        assert_eq!(sse.headers.get("Connection"), Some("close"));
        assert_eq!(sse.headers.get("Content-Length"), None);
        assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
        server.wait_subscribers(1, WAIT);
        let id = server.add_comment("one");
        let started = Instant::now();
        let frame = sse.next_event(WAIT).expect("the event arrives while the stream is open");
        assert_eq!(frame.event(), Some("comment"));
        assert_eq!(frame.data_json()["id"], id);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!sse.closed);
    }
);

both_backends!(
    /// When clients leave, the subscriber count returns to its earlier value
    /// within two heartbeats.
    disconnect_cleanup,
    |backend: &Backend| {
        let server = backend.start(&["--heartbeat-secs", "1"]);
        let before = server.subscribers();
        let clients: Vec<_> = (0..5).map(|_| SseClient::connect(server.addr, "/events", &[]).unwrap()).collect();
        server.wait_subscribers(before + 5, WAIT);
        let left = Instant::now();
        drop(clients);
        server.wait_subscribers(before, Duration::from_millis(2500));
        assert!(left.elapsed() <= Duration::from_millis(2500));
    }
);

/// 1,000 SSE connections opened at once all receive their headers within a few
/// seconds (tiny_http's pool and std's 128 backlog would strand some).
#[test]
fn burst_of_1000_connects() {
    raise_fd_limit();
    let backend = Backend::memory();
    let server = backend.start(&["--heartbeat-secs", "30"]);
    let addr = server.addr;
    let started = Instant::now();
    // 20 threads x 50 connections, all started together.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let streams: Vec<_> = (0..50)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect();
                let mut ok = Vec::new();
                for s in streams {
                    use std::io::Write;
                    (&s).write_all(
                        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
                    )
                    .unwrap();
                    ok.push(s);
                }
                let mut statuses = Vec::new();
                for s in ok {
                    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
                    let mut r = std::io::BufReader::new(s);
                    statuses.push(support::read_head(&mut r).map(|(status, _)| status).ok());
                    std::mem::forget(r); // keep the connection open until the test ends
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<Option<u16>> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let answered = statuses.iter().filter(|s| **s == Some(200)).count();
    assert_eq!(
        answered,
        1000,
        "{} of 1000 got no 200 within 8 s",
        1000 - answered
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    server.wait_subscribers(1000, WAIT);
}

/// Clients over the subscriber cap each get `200 text/event-stream`, a retry
/// hint of a few seconds, and a closed stream (a 503 would stop EventSource
/// for good); a crowd of them costs the server nothing it keeps: the
/// admitted clients still receive the next like, and a place freed is taken.
#[test]
fn over_the_cap_gets_retry_and_close() {
    let backend = Backend::memory();
    // Heartbeats each second, so a client that leaves is noticed in about two.
    let server = backend.start(&["--max-subscribers", "2", "--heartbeat-secs", "1"]);
    let id = server.add_comment("capped");
    let mut a = SseClient::connect(server.addr, "/events", &[]).unwrap();
    let b = SseClient::connect(server.addr, "/events", &[]).unwrap();
    server.wait_subscribers(2, WAIT);
    let refused: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || SseClient::connect(server.addr, "/events", &[]).unwrap())
        })
        .collect();
    for c in refused {
        let mut c = c.join().unwrap();
        assert_eq!(c.status, 200);
        assert_eq!(c.headers.get("Content-Type"), Some("text/event-stream"));
        let retry = c.next_frame(WAIT).unwrap();
        let ms: u64 = retry.get("retry").unwrap().parse().unwrap();
        assert!((1500..=4500).contains(&ms), "{ms}");
        assert!(c.read_to_close(WAIT), "the stream is closed");
    }
    assert_eq!(server.subscribers(), 2);
    assert!(server.get("/healthz").json()["max_subscribers"] == 2);
    assert!(server
        .get("/metrics")
        .text()
        .contains("likeboard_sse_refused_total 20"));
    // Still serving: a like reaches an admitted client ...
    assert_eq!(server.like("POST", id, &visitor(1)).status, 200);
    let like = a
        .next_event(WAIT)
        .expect("the like reaches an admitted client");
    assert_eq!(like.data_json()["score"], 1);
    // ... and the place a client leaves is someone else's.
    drop(b);
    server.wait_subscribers(1, 2 * WAIT);
    let mut c = SseClient::connect(server.addr, "/events", &[]).unwrap();
    server.wait_subscribers(2, WAIT);
    assert_eq!(server.like("POST", id, &visitor(2)).status, 200);
    assert_eq!(c.next_event(WAIT).unwrap().data_json()["score"], 2);
}

both_backends!(
    /// 32 threads x 100 likes from distinct visitors on one comment end at exactly
    /// 3,200, while 20 SSE clients each see ids and scores only rise, up to the
    /// last like's id and the final score (likes queued together are folded into
    /// the newest, so a client need not see every one).
    concurrent_likes,
    |backend: &Backend| {
        let server = backend.start(&["--heartbeat-secs", "30"]);
        let id = server.add_comment("popular");
        // Resume right after the comment's event, so every client starts from the
        // same point however late the pump hands that event out.
        let clients_path = format!("/events?since={}", server.get("/api/comments").json()["last_event_id"].as_str().unwrap());
        let mut clients: Vec<_> =
            (0..20).map(|_| SseClient::connect(server.addr, &clients_path, &[]).unwrap()).collect();
        server.wait_subscribers(20, WAIT);
        let threads = support::like_storm(server.addr, 32, 100, move |_, _| id);
        let readers: Vec<_> = clients
            .drain(..)
            .map(|mut sse| {
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let mut scores = Vec::new();
                    while scores.last() != Some(&3200) {
                        let Some(frame) = sse.next_event(Duration::from_secs(20)) else { break };
                        assert_eq!(frame.event(), Some("like"));
                        ids.push(frame.id().unwrap());
                        scores.push(frame.data_json()["score"].as_u64().unwrap());
                    }
                    (ids, scores)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let list = server.get("/api/comments").json();
        assert_eq!(list["comments"][0]["score"], 3200);
        for r in readers {
            let (ids, scores) = r.join().unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
            assert!(scores.windows(2).all(|w| w[0] < w[1]), "scores rise: {scores:?}");
            assert_eq!(ids.last(), Some(&3201), "up to the last like");
            assert_eq!(scores.last(), Some(&3200));
        }
    }
);

both_backends!(
    /// A client that drops in the middle of a like storm (whose likes it gets
    /// folded) and reconnects with the last id it was sent misses nothing: ids
    /// rise across both connections, every comment event arrives, and its
    /// scores end equal to the board's.
    reconnect_after_folding_misses_nothing,
    |backend: &Backend| {
        let server = backend.start(&["--heartbeat-secs", "30"]);
        let comments: Vec<u64> = (0..4).map(|i| server.add_comment(&format!("c{i}"))).collect();
        let since = server.get("/api/comments").json()["last_event_id"].as_str().unwrap().to_string();
        let mut sse = SseClient::connect(server.addr, &format!("/events?since={since}"), &[]).unwrap();
        server.wait_subscribers(1, WAIT);
        let spread = comments.clone();
        let senders = support::like_storm(server.addr, 8, 60, move |_, k| spread[(k % 4) as usize]);
        let mut scores = std::collections::HashMap::new();
        let mut ids = Vec::new();
        let mut apply = |frame: support::Frame, ids: &mut Vec<u64>| {
            ids.push(frame.id().unwrap());
            if frame.event() == Some("like") {
                let data = frame.data_json();
                scores.insert(data["id"].as_u64().unwrap(), data["score"].as_u64().unwrap());
            }
        };
        // A few events on the first connection, then it is gone, most likely
        // mid-storm. (Folded, and handed out at most once per --coalesce-ms,
        // a storm may come as few as one frame per comment: wait for 4.)
        while ids.len() < 4 {
            apply(sse.next_event(WAIT).expect("an event before the drop"), &mut ids);
        }
        drop(sse);
        let late_comment = server.add_comment("posted while away");
        for t in senders {
            t.join().unwrap();
        }
        let board = server.get("/api/comments").json();
        let newest: u64 = board["last_event_id"].as_str().unwrap().parse().unwrap();
        let last = ids.last().unwrap().to_string();
        let mut sse = SseClient::connect(server.addr, "/events", &[("Last-Event-ID", &last)]).unwrap();
        let mut saw_late_comment = false;
        while ids.last() != Some(&newest) {
            let frame = sse.next_event(WAIT).expect("replayed up to the newest id");
            if frame.event() == Some("comment") {
                saw_late_comment |= frame.data_json()["id"] == late_comment;
            }
            apply(frame, &mut ids);
        }
        assert!(saw_late_comment, "comment events are never folded");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
        for c in board["comments"].as_array().unwrap() {
            let id = c["id"].as_u64().unwrap();
            if comments.contains(&id) {
                assert_eq!(scores.get(&id).copied(), c["score"].as_u64(), "comment {id}");
            }
        }
    }
);
