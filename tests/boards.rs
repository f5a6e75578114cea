//! Many boards: each its own ranking, event log, ids, replay and stream; bad
//! names refused; `--max-boards`; the default board on its old paths and its
//! new ones; several instances on one Redis. On both stores where one process
//! is enough, on a real redis-server otherwise.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use support::{http, visitor, Backend, Likeboard, RedisServer, Response, SseClient};

const WAIT: Duration = Duration::from_secs(10);
/// How long a stream is watched for an event that must not come.
const QUIET: Duration = Duration::from_millis(700);

fn post_comment(addr: SocketAddr, board: &str, content: &str) -> Response {
    let body = json!({ "content": content, "nickname": "t" }).to_string();
    http(
        addr,
        "POST",
        &format!("/api/boards/{board}/comments"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Posts a comment on `board` and returns its id.
fn comment(addr: SocketAddr, board: &str, content: &str) -> u64 {
    let r = post_comment(addr, board, content);
    assert_eq!(r.status, 201, "comment on {board}: {}", r.text());
    r.json()["id"].as_u64().unwrap()
}

/// Likes comment `id` of `board` as visitor `n`; the reply's score.
fn like(addr: SocketAddr, board: &str, id: u64, n: u64) -> u64 {
    let cookie = format!("lb_visitor={}", visitor(n));
    let r = http(
        addr,
        "POST",
        &format!("/api/boards/{board}/comments/{id}/like"),
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 200, "like {board}/{id}: {}", r.text());
    r.json()["score"].as_u64().unwrap()
}

/// A board's listing: (comment id, score) pairs in ranking order, and its last event id.
fn listing(addr: SocketAddr, board: &str) -> (Vec<(u64, u64)>, u64) {
    let r = http(
        addr,
        "GET",
        &format!("/api/boards/{board}/comments"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json();
    let comments = support::id_scores(&json);
    (
        comments,
        json["last_event_id"].as_str().unwrap().parse().unwrap(),
    )
}

fn stream(addr: SocketAddr, board: &str, headers: &[(&str, &str)]) -> SseClient {
    let s = SseClient::connect(addr, &format!("/api/boards/{board}/events"), headers).unwrap();
    assert_eq!(s.status, 200);
    s
}

/// Events of a stream up to and including id `last`: (id, event name, data).
/// Several likes of one comment in one write may be folded into the newest
/// (README, "the event stream"), so ids rise but need not be consecutive.
fn events_until(lb: &Likeboard, s: &mut SseClient, last: u64) -> Vec<(u64, String, Value)> {
    let mut seen: Vec<(u64, String, Value)> = Vec::new();
    while seen.last().is_none_or(|e| e.0 < last) {
        seen.extend(events(lb, s, 1));
    }
    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
    assert_eq!(ids.last(), Some(&last));
    seen
}

/// The next `n` events of a stream: (id, event name, data).
fn events(lb: &Likeboard, s: &mut SseClient, n: usize) -> Vec<(u64, String, Value)> {
    s.events(lb, n, WAIT)
}

both_backends!(
    /// Two boards side by side: ids per board start at 1 and run on without a
    /// gap, each stream sees its own board only, each ranking holds its own
    /// comments, and the default board keeps its old paths.
    two_boards_are_two_worlds,
    |backend: &Backend| {
        let lb = backend.start(&[]);
        let mut a = stream(lb.addr, "alpha", &[]);
        let mut b = stream(lb.addr, "beta", &[]);
        lb.wait_subscribers(2, WAIT);
        let a1 = comment(lb.addr, "alpha", "first on alpha");
        let b1 = comment(lb.addr, "beta", "first on beta");
        let b2 = comment(lb.addr, "beta", "second on beta");
        assert_eq!((a1, b1, b2), (1, 1, 2), "comment ids are per board");
        assert_eq!(like(lb.addr, "alpha", a1, 1), 1);
        assert_eq!(like(lb.addr, "beta", b2, 1), 1);
        assert_eq!(like(lb.addr, "beta", b2, 2), 2);

        let seen_a = events_until(&lb, &mut a, 2);
        let seen_b = events_until(&lb, &mut b, 4);
        let ids = |seen: &[(u64, String, Value)]| seen.iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(ids(&seen_a), vec![1, 2]);
        assert_eq!(&ids(&seen_b)[..2], &[1, 2], "comments are never folded");
        assert_eq!(seen_a[0].2["content"], "first on alpha");
        assert!(seen_b.iter().all(|e| e.2["content"] != "first on alpha"));
        assert_eq!(seen_b.last().unwrap().2, json!({ "id": b2, "score": 2 }));
        // Nothing more: no event of one board reached the other's stream.
        assert!(a.next_event(QUIET).is_none(), "alpha got more than its own");
        assert!(b.next_event(QUIET).is_none(), "beta got more than its own");

        assert_eq!(listing(lb.addr, "alpha"), (vec![(a1, 1)], 2));
        assert_eq!(listing(lb.addr, "beta"), (vec![(b2, 2), (b1, 0)], 4));
        // A board nobody wrote to reads as empty, and the default board as before.
        assert_eq!(listing(lb.addr, "gamma"), (vec![], 0));
        assert_eq!(listing(lb.addr, "main"), (vec![], 0));
        let old = lb.add_comment("on main, by the old path");
        assert_eq!(listing(lb.addr, "main"), (vec![(old, 0)], 1));
        assert_eq!(
            lb.get("/api/comments").json()["comments"][0]["content"],
            "on main, by the old path"
        );
        let page = lb.get("/b/beta");
        assert_eq!(page.status, 200);
        assert!(page.text().contains("second on beta"));
        assert!(!page.text().contains("first on alpha"));

        // The boards, most comments first.
        let list = lb.get("/api/boards").json();
        assert_eq!(list["total"], 3);
        let names: Vec<&str> = list["boards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["board"].as_str().unwrap())
            .collect();
        assert_eq!(names[0], "beta");
        assert_eq!(list["boards"][0]["comments"], 2);
        assert!(names.contains(&"alpha") && names.contains(&"main"), "{list}");
    }
);

both_backends!(
    /// Replay and reset are per board: a board's Last-Event-ID resumes on
    /// that board's log, and an id beyond a board's newest is a reset carrying
    /// that board's newest id.
    replay_and_reset_per_board,
    |backend: &Backend| {
        let lb = backend.start(&["--stream-len", "5"]);
        let x = comment(lb.addr, "x", "x");
        for n in 1..=3 {
            like(lb.addr, "x", x, n);
        }
        let y = comment(lb.addr, "y", "y");
        like(lb.addr, "y", y, 1);
        // x's events 1-4, y's 1-2. Resuming x after 2 replays x's 3 and 4 only.
        let mut s = stream(lb.addr, "x", &[("Last-Event-ID", "2")]);
        // (A replay is never folded.)
        let seen = events(&lb, &mut s, 2);
        assert_eq!(
            seen.iter().map(|e| (e.0, e.2.clone())).collect::<Vec<_>>(),
            vec![
                (3, json!({ "id": x, "score": 2 })),
                (4, json!({ "id": x, "score": 3 }))
            ]
        );
        assert!(s.next_event(QUIET).is_none());
        // Id 4 is newer than anything on y: a reset to y's newest, 2.
        let mut r = stream(lb.addr, "y", &[("Last-Event-ID", "4")]);
        let reset = r.next_event(WAIT).expect("a reset");
        assert_eq!(reset.event(), Some("reset"));
        assert_eq!(reset.id(), Some(2));
        // Past x's history (it keeps 5): id 0 on x after 6 more events is a reset.
        for n in 4..=9 {
            like(lb.addr, "x", x, n);
        }
        // Once x's open stream has event 10, so has this instance's ring of x
        // (the pump puts a batch in the ring before the streams): until then
        // the ring may still hold 2-4, and rightly replay them.
        while s.next_event(WAIT).expect("x's stream reaches event 10").id() != Some(10) {}
        let mut old = stream(lb.addr, "x", &[("Last-Event-ID", "1")]);
        let reset = old.next_event(WAIT).expect("a reset");
        assert_eq!(reset.event(), Some("reset"));
        assert_eq!(reset.id(), Some(10));
        // ?since= on a board works as on the default board.
        let mut since = SseClient::connect(lb.addr, "/api/boards/x/events?since=9", &[]).unwrap();
        let seen = events(&lb, &mut since, 1);
        assert_eq!(seen[0].0, 10);
    }
);

both_backends!(
    /// Board names outside `[a-z0-9][a-z0-9-]{0,63}` are a 400 with a JSON
    /// error on every board route, and change nothing.
    bad_board_names_are_400,
    |backend: &Backend| {
        let lb = backend.start(&[]);
        let long = "x".repeat(65);
        for bad in ["Main", "-x", "a_b", "%C3%A9", "a.b", long.as_str()] {
            for (method, path) in [
                ("GET", format!("/api/boards/{bad}/comments")),
                ("POST", format!("/api/boards/{bad}/comments")),
                ("POST", format!("/api/boards/{bad}/comments/1/like")),
                ("GET", format!("/api/boards/{bad}/events")),
                ("GET", format!("/b/{bad}")),
            ] {
                let r = http(
                    lb.addr,
                    method,
                    &path,
                    &[("Content-Type", "application/json")],
                    br#"{"content":"x"}"#,
                );
                assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
                assert!(r.json()["error"].as_str().unwrap().contains("board"));
            }
        }
        assert_eq!(lb.get("/api/boards").json()["total"], 0);
    }
);

both_backends!(
    /// `--max-boards` bounds how many boards exist: the comment that would make
    /// one more is a 409 with a clear error; existing boards keep taking
    /// comments, and the default board is always there.
    max_boards_refuses_one_more,
    |backend: &Backend| {
        let lb = backend.start(&["--max-boards", "2"]);
        comment(lb.addr, "one", "a");
        comment(lb.addr, "two", "b");
        let r = post_comment(lb.addr, "three", "c");
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("2 boards"));
        assert_eq!(listing(lb.addr, "three"), (vec![], 0));
        comment(lb.addr, "one", "still fine");
        let list = lb.get("/api/boards").json();
        assert_eq!(list["total"], 2, "{list}");
        // Reading or streaming a board that does not exist makes none.
        let mut s = stream(lb.addr, "four", &[]);
        assert!(s.next_event(QUIET).is_none());
        assert_eq!(lb.get("/api/boards").json()["total"], 2);
    }
);

/// Two instances on one Redis: a like taken by A reaches the board's streams
/// on B, and only that board's, with the same ids.
#[test]
fn two_instances_share_each_board() {
    let redis = RedisServer::start();
    let a = Likeboard::builder().redis(&redis).start();
    let b = Likeboard::builder().redis(&redis).start();
    let mut on_b_red = stream(b.addr, "red", &[]);
    let mut on_b_blue = stream(b.addr, "blue", &[]);
    let mut on_a_red = stream(a.addr, "red", &[]);
    b.wait_subscribers(2, WAIT);
    a.wait_subscribers(1, WAIT);
    let red = comment(a.addr, "red", "red");
    let blue = comment(b.addr, "blue", "blue");
    like(a.addr, "red", red, 1);
    like(b.addr, "blue", blue, 1);
    like(a.addr, "blue", blue, 2);
    let red_b = events(&b, &mut on_b_red, 2);
    let red_a = events(&a, &mut on_a_red, 2);
    assert_eq!(red_a, red_b, "both instances send the same red events");
    assert_eq!(red_b[1].2, json!({ "id": red, "score": 1 }));
    let blue_b = events_until(&b, &mut on_b_blue, 3);
    assert_eq!(blue_b[0].0, 1);
    assert_eq!(blue_b.last().unwrap().2, json!({ "id": blue, "score": 2 }));
    assert!(on_b_red.next_event(QUIET).is_none());
}

/// A Redis written before boards existed (no list of boards) keeps its
/// comments and likes as the default board, read in place: the old keys are
/// the default board's, and the list takes it in with its count.
#[test]
fn an_older_redis_is_the_default_board() {
    let redis = RedisServer::start();
    let lb = Likeboard::builder().redis(&redis).start();
    let id = lb.add_comment("written by the old paths");
    lb.like("POST", id, &visitor(1));
    drop(lb);
    // What the previous version would have left: everything but the list.
    let cli = support::require_tool("redis-cli", "redis-tools");
    let url = redis.url();
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let out = std::process::Command::new(&cli)
        .args(["-p", port, "DEL", "{likeboard}:boards"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lb = Likeboard::builder().redis(&redis).start();
    assert_eq!(listing(lb.addr, "main"), (vec![(id, 1)], 2));
    let list = lb.get("/api/boards").json();
    assert_eq!(list["boards"], json!([{ "board": "main", "comments": 1 }]));
    let second = comment(lb.addr, "main", "and one more");
    assert_eq!(second, id + 1);
    assert_eq!(lb.get("/api/boards").json()["boards"][0]["comments"], 2);
}

/// Pub/sub keeps nothing for a subscriber that is gone: an event written
/// while the pump's subscription is down is read from the board's log when it
/// subscribes again (the sweep), so a stream still gets it, even with no
/// later event to show the gap.
#[test]
fn an_event_lost_by_the_feed_is_read_from_the_log() {
    let redis = RedisServer::start();
    let lb = Likeboard::builder().redis(&redis).start();
    let id = comment(lb.addr, "z", "z");
    let mut s = stream(lb.addr, "z", &[("Last-Event-ID", "0")]);
    assert_eq!(events(&lb, &mut s, 1)[0].0, 1);
    like(lb.addr, "z", id, 1); // the pump now has a position on the board
    assert_eq!(events(&lb, &mut s, 1)[0].0, 2);
    let cli = support::require_tool("redis-cli", "redis-tools");
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let kill = std::process::Command::new(&cli)
        .args(["-p", &port, "CLIENT", "KILL", "TYPE", "pubsub"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kill.stdout).trim(),
        "1",
        "one subscriber: the pump"
    );
    // Within the feed's 100 ms backoff: nobody is subscribed to hear this.
    like(lb.addr, "z", id, 2);
    let got = events(&lb, &mut s, 1);
    assert_eq!(
        (got[0].0, got[0].2.clone()),
        (3, json!({ "id": id, "score": 2 }))
    );
    let metrics = lb.get("/metrics").text();
    let recovered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("likeboard_pump_recovered_events_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no recovered count in\n{metrics}"));
    assert!(recovered >= 1, "the like came from the log, not the feed");
}
