//! The original demo's routes behind `--seed-routes`: thin adapters over the
//! same store and hub, with the exact wire format its client expects.

mod support;

use std::time::Duration;

use support::{http, visitor, Backend, SseClient};

const WAIT: Duration = Duration::from_secs(5);

both_backends!(
    /// /addComment, /favorite and /commentList work as the demo's client expects,
    /// and /sse carries exactly `data: <id>@<METHOD>` per like and unlike.
    seed_routes_end_to_end,
    |backend: &Backend| {
        let server = backend.start(&["--seed-routes"]);
        let mut sse = SseClient::connect(server.addr, "/sse", &[]).unwrap();
        assert_eq!(sse.headers.get("Content-Type"), Some("text/event-stream"));
        assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
        server.wait_subscribers(1, WAIT);

        let r = server.get("/addComment?nickName=bob&content=hello%20world");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["nickname"], "bob");
        let id = r.json()["id"].as_u64().unwrap();
        let cookie = format!("lb_visitor={}", visitor(7));
        let like = http(server.addr, "POST", &format!("/favorite?member={id}"), &[("Cookie", &cookie)], b"");
        assert_eq!(like.json()["score"], 1);
        let unlike = http(server.addr, "DELETE", &format!("/favorite?member={id}"), &[("Cookie", &cookie)], b"");
        assert_eq!(unlike.json()["score"], 0);

        // Comments are not part of the seed's stream; likes are, with ids.
        assert_eq!(sse.next_event(WAIT).unwrap().raw, format!("id: 2\ndata: {id}@POST\n\n"));
        assert_eq!(sse.next_event(WAIT).unwrap().raw, format!("id: 3\ndata: {id}@DELETE\n\n"));

        let list = server.get("/commentList?offset=5").json();
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], id);
        assert_eq!(list[0]["content"], "hello world");
    }
);

/// An empty or unknown member is a 400 or 404, never a crash; wrong methods are 405.
#[test]
fn seed_bad_members() {
    let backend = Backend::memory();
    let server = backend.start(&["--seed-routes"]);
    for (method, path, status) in [
        ("POST", "/favorite?member=", 400),
        ("POST", "/favorite", 400),
        ("DELETE", "/favorite?member=", 400),
        ("POST", "/favorite?member=abc", 400),
        ("POST", "/favorite?member=999", 404),
        ("GET", "/favorite?member=1", 405),
        ("GET", "/addComment?nickName=x", 400),
        ("GET", "/commentList?offset=-1", 400),
    ] {
        let r = http(server.addr, method, path, &[], b"");
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(server.get("/healthz").status, 200);
}

/// Without `--seed-routes` the demo's routes do not exist.
#[test]
fn seed_routes_off_by_default() {
    let backend = Backend::memory();
    let server = backend.start(&[]);
    assert_eq!(server.get("/addComment?nickName=a&content=b").status, 404);
    assert_eq!(server.get("/sse").status, 404);
    assert_eq!(
        server.get("/api/comments").json()["comments"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// Under concurrent likes (which `/events` folds), the seed's `/sse` carries
/// every one: its `member@METHOD` is relative, so its ids have no gap.
#[test]
fn seed_stream_is_never_folded() {
    let server = Backend::memory().start(&["--seed-routes"]);
    let id = server.add_comment("storm");
    let mut sse = SseClient::connect(server.addr, "/sse", &[]).unwrap();
    assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
    server.wait_subscribers(1, WAIT);
    for s in support::like_storm(server.addr, 8, 25, move |_, _| id) {
        s.join().unwrap();
    }
    let ids: Vec<u64> = (0..200)
        .map(|_| sse.next_event(WAIT).expect("every like").id().unwrap())
        .collect();
    assert_eq!(ids, (2..=201).collect::<Vec<u64>>());
}

/// The most one `/commentList` answer holds: `COMMENT_LIST_MAX` in
/// src/routes/seed.rs, as README states it.
const CAP: usize = 10_000;

/// Posts `n` comments over two keep-alive connections (the kit's servers run
/// with `--write-rate 0`); their ids.
fn post_many(addr: std::net::SocketAddr, n: usize) -> Vec<u64> {
    use std::io::{BufReader, Write};
    let senders: Vec<_> = (0..2)
        .map(|half| {
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(WAIT)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                (half..n)
                    .step_by(2)
                    .map(|i| {
                        let body = format!(r#"{{"content":"comment {i}"}}"#);
                        // One write per request: pieces would wait on Nagle
                        // and the server's delayed ACK, 40 ms each.
                        let request = format!(
                            "POST /api/comments HTTP/1.1\r\nHost: {addr}\r\n\
                             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        writer.write_all(request.as_bytes()).unwrap();
                        let r = support::read_response(&mut reader);
                        assert_eq!(r.status, 201, "{}", r.text());
                        r.json()["id"].as_u64().unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect()
}

both_backends!(
    /// `/commentList?offset=N` answers the top N for every N up to the cap,
    /// as the demo did (1, 100 and 1,000 here, and the cap itself), ranked
    /// by score, then newest first; past the cap, however far (past 64 bits
    /// too), the top CAP: a client asking for its whole board gets it.
    comment_list_answers_the_top_n,
    |backend: &Backend| {
        let server = backend.start(&["--seed-routes"]);
        let mut ids = post_many(server.addr, CAP + 50);
        ids.sort_unstable();
        // The oldest comment, liked once, goes to the top.
        let oldest = ids[0];
        let like = server.like("POST", oldest, &visitor(1));
        assert_eq!(like.json()["score"], 1);
        // The ranking as the demo had it: the liked one, then newest first.
        let ranking: Vec<u64> = std::iter::once(oldest).chain(ids[1..].iter().rev().copied()).collect();

        let top = |offset: &str| {
            let r = server.get(&format!("/commentList?offset={offset}"));
            assert_eq!(r.status, 200, "offset={offset}: {}", r.text());
            let list = r.json();
            let list = list.as_array().unwrap().clone();
            list.iter().map(|c| c["id"].as_u64().unwrap()).collect::<Vec<u64>>()
        };
        for n in [1, 100, 1_000, CAP] {
            assert_eq!(top(&n.to_string()), ranking[..n], "offset={n}");
        }
        for past in [(CAP + 1).to_string(), "1000000".into(), "99999999999999999999999".into()] {
            assert_eq!(top(&past), ranking[..CAP], "offset={past}");
        }
        // Each entry is the comment as the demo sent it.
        let first = server.get("/commentList?offset=1").json();
        assert_eq!(first[0]["score"], 1);
        assert_eq!(first[0]["nickname"], "anonymous");
        assert!(first[0]["content"].as_str().unwrap().starts_with("comment "));
    }
);
