//! The server side of the page's live features, over real sockets: the viewer
//! count (`?viewers=1`) and the `--classroom` fault routes.

mod support;

use std::time::{Duration, Instant};

use support::{http, Backend, SseClient};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn fault(addr: std::net::SocketAddr, action: &str) -> u16 {
    http(
        addr,
        "POST",
        &format!("/api/classroom/{TOKEN}/{action}"),
        &[],
        b"",
    )
    .status
}

/// `?viewers=1` gets the count at once and again when it changes; the frame
/// has no id, so it never moves Last-Event-ID.
#[test]
fn viewer_count_follows_connections() {
    let server = Backend::memory().start(&["--heartbeat-secs", "30"]);
    let mut watcher = SseClient::connect(server.addr, "/events?viewers=1", &[]).unwrap();
    let first = watcher.next_event(WAIT).expect("the count on connect");
    assert_eq!(first.raw, "event: viewers\ndata: {\"count\":1}\n\n");
    let others: Vec<_> = (0..3)
        .map(|_| SseClient::connect(server.addr, "/events", &[]).unwrap())
        .collect();
    let update = watcher.next_event(WAIT).expect("a count update");
    assert_eq!(update.event(), Some("viewers"));
    assert_eq!(update.id(), None);
    assert_eq!(update.data_json()["count"], 4);
    drop(others);
    // Plain streams (no ?viewers=1) never see the count.
    let mut plain = SseClient::connect(server.addr, "/events", &[]).unwrap();
    let id = server.add_comment("after the count");
    let event = plain.next_event(WAIT).unwrap();
    assert_eq!((event.event(), event.id()), (Some("comment"), Some(id)));
}

/// A burst of connections costs at most about one viewers event per second.
#[test]
fn viewer_count_is_coalesced() {
    let server = Backend::memory().start(&["--heartbeat-secs", "30"]);
    let mut watcher = SseClient::connect(server.addr, "/events?viewers=1", &[]).unwrap();
    watcher.next_event(WAIT).unwrap();
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(SseClient::connect(server.addr, "/events", &[]).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // 2 s of churn, then a quiet second for the last count to go out.
    let mut counts = Vec::new();
    while let Some(frame) = watcher.next_event(Duration::from_millis(2500)) {
        counts.push(frame.data_json()["count"].as_u64().unwrap());
        if counts.last() == Some(&41) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    assert_eq!(counts.last(), Some(&41), "{counts:?}");
    assert!(counts.len() <= seconds + 1, "{counts:?} in {seconds} s");
}

/// Without --classroom the fault routes do not exist.
#[test]
fn classroom_is_off_by_default() {
    let server = Backend::memory().start(&[]);
    assert_eq!(fault(server.addr, "drop"), 404);
}

/// "drop" ends this client's stream (and only this client's).
#[test]
fn classroom_drop_ends_only_that_stream() {
    let server = Backend::memory().start(&["--classroom", "--heartbeat-secs", "30"]);
    let path = format!("/events?client={TOKEN}");
    let mut mine = SseClient::connect(server.addr, &path, &[]).unwrap();
    let mut other =
        SseClient::connect(server.addr, "/events?client=ffffffffffffffff", &[]).unwrap();
    assert_eq!(mine.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
    server.wait_subscribers(2, WAIT);
    assert_eq!(fault(server.addr, "drop"), 200);
    assert!(mine.read_to_close(WAIT), "the stream should end");
    server.wait_subscribers(1, WAIT);
    let id = server.add_comment("still here");
    assert_eq!(other.next_event(WAIT).unwrap().id(), Some(id));
}

/// "answer-204" drops the stream and answers the reconnect with 204; "clear" undoes it.
#[test]
fn classroom_answer_204() {
    let server = Backend::memory().start(&["--classroom"]);
    let path = format!("/events?client={TOKEN}");
    let mut stream = SseClient::connect(server.addr, &path, &[]).unwrap();
    assert_eq!(fault(server.addr, "answer-204"), 200);
    assert!(stream.read_to_close(WAIT));
    assert_eq!(server.get(&path).status, 204);
    assert_eq!(fault(server.addr, "clear"), 200);
    let again = SseClient::connect(server.addr, &path, &[]).unwrap();
    assert_eq!(again.status, 200);
}

/// "heartbeats-off" silences heartbeats; "buffer-on" holds events back until
/// "buffer-off" releases them in one write.
#[test]
fn classroom_quiet_and_buffered() {
    let server = Backend::memory().start(&["--classroom", "--heartbeat-secs", "1"]);
    let path = format!("/events?client={TOKEN}");
    let mut stream = SseClient::connect(server.addr, &path, &[]).unwrap();
    stream.next_frame(WAIT).unwrap();
    assert!(stream
        .next_frame(Duration::from_secs(3))
        .unwrap()
        .is_comment());
    assert_eq!(fault(server.addr, "heartbeats-off"), 200);
    // One heartbeat may have been on its way; after that, silence.
    let _ = stream.next_frame(Duration::from_millis(1200));
    assert!(stream.next_frame(Duration::from_millis(2500)).is_none());

    assert_eq!(fault(server.addr, "buffer-on"), 200);
    let id = server.add_comment("held back");
    assert!(stream.next_frame(Duration::from_millis(1500)).is_none());
    assert_eq!(fault(server.addr, "buffer-off"), 200);
    assert_eq!(stream.next_event(WAIT).unwrap().id(), Some(id));
}

/// Bad tokens and unknown faults are refused.
#[test]
fn classroom_rejects_bad_requests() {
    let server = Backend::memory().start(&["--classroom"]);
    let r = http(server.addr, "POST", "/api/classroom/xyz/drop", &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(fault(server.addr, "explode"), 404);
}
