//! Moderation (`--admin-token-file`): every action on both stores, with its
//! status codes, the store's state afterwards (through the API, and on Redis
//! in the keys themselves) and the events it sends, in order with
//! consecutive ids; a replay past a removal; blocks on every board and on
//! every instance; the audit log; the token's gate.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{http, visitor, Backend, Likeboard, RedisServer, Response, SseClient, TempDir};

const WAIT: Duration = Duration::from_secs(10);
/// How long a stream is watched for an event that must not come.
const QUIET: Duration = Duration::from_millis(600);
/// The moderators' token the servers here are started with.
const TOKEN: &str = "moderation-suite-token-0123456789abcdef";

/// A token file and the flags that point a server at it.
struct Moderated {
    _dir: TempDir,
    args: Vec<String>,
}

fn token_file(token: &str) -> Moderated {
    let dir = TempDir::new("admin-token");
    let path = dir.0.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    Moderated {
        args: vec!["--admin-token-file".into(), path.display().to_string()],
        _dir: dir,
    }
}

/// A server on `backend` with moderation on (and `extra` flags).
fn start(backend: &Backend, extra: &[&str]) -> (Likeboard, Moderated) {
    let token = token_file(TOKEN);
    let lb = backend.launch().args(&token.args).args(extra).start();
    (lb, token)
}

/// A moderator's request, bearing the token.
fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    http(addr, method, path, &headers, body.as_bytes())
}

/// [`admin`], answered with `status`; the reply's JSON.
fn admin_ok(addr: SocketAddr, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
    let r = admin(addr, method, path, body);
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    r.json()
}

fn cookie(n: u64) -> String {
    format!("lb_visitor={}", visitor(n))
}

/// Visitor `n`'s id as the store keeps it (`c:<id>`).
fn visitor_id(n: u64) -> String {
    format!("c:{}", visitor(n).split('.').next().unwrap())
}

/// Posts a comment on `board` as visitor `n`.
fn post(addr: SocketAddr, board: &str, n: u64, content: &str) -> Response {
    let body = json!({ "content": content, "nickname": format!("v{n}") }).to_string();
    http(
        addr,
        "POST",
        &format!("/api/boards/{board}/comments"),
        &[("Content-Type", "application/json"), ("Cookie", &cookie(n))],
        body.as_bytes(),
    )
}

/// Posts a comment on `board` as visitor `n` and returns its id.
fn comment(addr: SocketAddr, board: &str, n: u64, content: &str) -> u64 {
    let r = post(addr, board, n, content);
    assert_eq!(r.status, 201, "comment on {board}: {}", r.text());
    r.json()["id"].as_u64().unwrap()
}

/// Likes comment `id` of `board` as visitor `n`.
fn like(addr: SocketAddr, board: &str, id: u64, n: u64) -> Response {
    http(
        addr,
        "POST",
        &format!("/api/boards/{board}/comments/{id}/like"),
        &[("Cookie", &cookie(n))],
        b"",
    )
}

/// A board's listing as visitor 1 sees it: (id, score) in ranking order, and
/// whether it says the board is locked.
fn listing(addr: SocketAddr, board: &str) -> (Vec<(u64, u64)>, bool) {
    let r = http(
        addr,
        "GET",
        &format!("/api/boards/{board}/comments"),
        &[("Cookie", &cookie(1))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json();
    let comments = support::id_scores(&json);
    (comments, json["locked"].as_bool().unwrap())
}

fn stream(addr: SocketAddr, board: &str, headers: &[(&str, &str)]) -> SseClient {
    let s = SseClient::connect(addr, &format!("/api/boards/{board}/events"), headers).unwrap();
    assert_eq!(s.status, 200);
    s
}

/// The next `n` events of a stream: (id, event name, data).
fn events(lb: &Likeboard, s: &mut SseClient, n: usize) -> Vec<(u64, String, Value)> {
    s.events(lb, n, WAIT)
}

/// The events' ids, to check they run on without a gap from `first`.
fn assert_consecutive(seen: &[(u64, String, Value)], first: u64) {
    let ids: Vec<u64> = seen.iter().map(|e| e.0).collect();
    let want: Vec<u64> = (first..first + ids.len() as u64).collect();
    assert_eq!(ids, want, "consecutive ids: {seen:?}");
}

/// A connection to the test's Redis, to look at the keys themselves.
fn redis_of(backend: &Backend) -> Option<redis::Connection> {
    match backend {
        Backend::Redis(server) => Some(
            redis::Client::open(server.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        ),
        Backend::Memory => None,
    }
}

/// Without `--admin-token-file` there is no moderation: every route is a
/// 404, with or without a token, and nothing changes.
#[test]
fn moderation_off_is_404() {
    let lb = Likeboard::start(&[]);
    let id = comment(lb.addr, "main", 1, "stays");
    for (method, path) in [
        ("GET", "/admin".to_string()),
        ("POST", format!("/api/admin/boards/main/comments/{id}/hide")),
        ("DELETE", format!("/api/admin/boards/main/comments/{id}")),
        ("POST", "/api/admin/boards/main/lock".to_string()),
        ("GET", "/api/admin/boards/main/hidden".to_string()),
        ("GET", "/api/admin/blocked".to_string()),
        ("GET", "/api/admin/audit".to_string()),
    ] {
        assert_eq!(admin(lb.addr, method, &path, None).status, 404, "{path}");
        assert_eq!(http(lb.addr, method, &path, &[], b"").status, 404, "{path}");
    }
    assert_eq!(listing(lb.addr, "main").0, vec![(id, 0)]);
    // `?moderate` on a board page is an ordinary page then.
    let page = lb.get("/?moderate");
    assert_eq!(page.status, 200);
    assert!(!page.text().contains("data-moderate=\"1\""));
}

/// A token shorter than 32 characters is a startup error that names the
/// file and never the token.
#[test]
fn short_token_is_a_startup_error() {
    let token = token_file("too-short-a-secret");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_likeboard"))
        .args(&token.args)
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shorter than 32 characters"), "{stderr}");
    assert!(!stderr.contains("too-short-a-secret"), "{stderr}");
}

both_backends!(
    /// The gate: no token or a wrong one is 401 with `WWW-Authenticate:
    /// Bearer`, never repeating what was sent; a token in the query string is
    /// 400 even when right; a cross-site request is 403; nothing changes
    /// until the right token comes, which works.
    the_token_is_the_gate,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let id = comment(lb.addr, "main", 1, "target");
        let path = format!("/api/admin/boards/main/comments/{id}/hide");
        let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", "Basic bW9kOnNlY3JldA==")],
            vec![("Authorization", "Bearer")],
        ] {
            let r = http(lb.addr, "POST", &path, &headers, b"");
            assert_eq!(r.status, 401, "{headers:?}: {}", r.text());
            assert!(
                r.headers
                    .get("WWW-Authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{:?}",
                r.headers
            );
            assert!(!r.text().contains(&TOKEN[..20]), "{}", r.text());
            assert!(r.json()["error"].as_str().unwrap().contains("Bearer"));
        }
        let query = format!("{path}?token={TOKEN}");
        let r = admin(lb.addr, "POST", &query, None);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("never in the URL"), "{}", r.text());
        assert!(!r.text().contains(TOKEN));
        let auth = format!("Bearer {TOKEN}");
        let r = http(
            lb.addr,
            "POST",
            &path,
            &[("Authorization", &auth), ("Origin", "http://evil.example")],
            b"",
        );
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(listing(lb.addr, "main").0, vec![(id, 0)], "nothing hidden yet");
        admin_ok(lb.addr, "POST", &path, None, 200);
        assert_eq!(listing(lb.addr, "main").0, vec![]);
        assert!(
            !lb.stderr().contains(&TOKEN[..20]),
            "the token reached the log"
        );
    }
);

both_backends!(
    /// Ten wrong tokens from one address, and that address is refused (429)
    /// even with the right one, while another address is still served.
    failed_tokens_are_rate_limited_per_address,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &["--trusted-proxy", "127.0.0.1/32"]);
        let path = "/api/admin/audit";
        let wrong = "Bearer nope-nope-nope-nope-nope-nope-nope";
        for i in 0..10 {
            let r = http(
                lb.addr,
                "GET",
                path,
                &[("Authorization", wrong), ("X-Forwarded-For", "192.0.2.7")],
                b"",
            );
            assert_eq!(r.status, 401, "try {i}");
        }
        let right = format!("Bearer {TOKEN}");
        let r = http(
            lb.addr,
            "GET",
            path,
            &[("Authorization", &right), ("X-Forwarded-For", "192.0.2.7")],
            b"",
        );
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(r.headers.get("Retry-After").is_some());
        let r = http(
            lb.addr,
            "GET",
            path,
            &[("Authorization", &right), ("X-Forwarded-For", "192.0.2.8")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
);

both_backends!(
    /// Hide and restore: a hidden comment leaves the ranking, every list and
    /// the seed's `/commentList`; likes on it are 404; it is in the hidden
    /// list with its score; restore puts it back where its score ranks it.
    /// Twice is 409, an unknown comment 404, a bad id 400. Events: `remove`
    /// then `comment` with its score, ids following the board's.
    hide_and_restore,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &["--seed-routes"]);
        let a = comment(lb.addr, "main", 1, "a");
        let b = comment(lb.addr, "main", 2, "b");
        let c = comment(lb.addr, "main", 3, "c");
        for n in [1, 2] {
            assert_eq!(like(lb.addr, "main", b, n).status, 200);
        }
        assert_eq!(like(lb.addr, "main", a, 1).status, 200);
        // Events so far: 3 comments and 3 likes.
        let mut s = stream(lb.addr, "main", &[("Last-Event-ID", "6")]);
        assert_eq!(listing(lb.addr, "main").0, vec![(b, 2), (a, 1), (c, 0)]);

        let hide = format!("/api/admin/boards/main/comments/{b}/hide");
        let reply = admin_ok(lb.addr, "POST", &hide, None, 200);
        assert_eq!(reply, json!({ "board": "main", "id": b, "hidden": true }));
        assert_eq!(listing(lb.addr, "main").0, vec![(a, 1), (c, 0)]);
        let seed = lb.get("/commentList?offset=10").json();
        let seed_ids: Vec<u64> = seed
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        assert_eq!(seed_ids, vec![a, c], "the seed's list");
        assert_eq!(like(lb.addr, "main", b, 3).status, 404);
        let r = http(
            lb.addr,
            "DELETE",
            &format!("/api/comments/{b}/like"),
            &[("Cookie", &cookie(1))],
            b"",
        );
        assert_eq!(r.status, 404, "unlike of a hidden comment");
        let hidden = admin_ok(lb.addr, "GET", "/api/admin/boards/main/hidden", None, 200);
        let list = hidden["hidden"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["id"], b);
        assert_eq!(list[0]["score"], 2);
        assert_eq!(list[0]["content"], "b");
        assert!(list[0]["hidden_at"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(list[0].get("author").is_none());

        assert_eq!(admin(lb.addr, "POST", &hide, None).status, 409);
        assert_eq!(
            admin(lb.addr, "POST", "/api/admin/boards/main/comments/99/hide", None).status,
            404
        );
        assert_eq!(
            admin(lb.addr, "POST", "/api/admin/boards/main/comments/x/hide", None).status,
            400
        );
        assert_eq!(
            admin(lb.addr, "POST", "/api/admin/boards/Bad!/comments/1/hide", None).status,
            400
        );

        let restore = format!("/api/admin/boards/main/comments/{b}/restore");
        let reply = admin_ok(lb.addr, "POST", &restore, None, 200);
        assert_eq!(reply, json!({ "board": "main", "id": b, "hidden": false }));
        assert_eq!(admin(lb.addr, "POST", &restore, None).status, 409);
        assert_eq!(
            admin(lb.addr, "POST", &format!("/api/admin/boards/main/comments/{a}/restore"), None)
                .status,
            409,
            "a comment that is not hidden"
        );
        assert_eq!(listing(lb.addr, "main").0, vec![(b, 2), (a, 1), (c, 0)]);
        let hidden = admin_ok(lb.addr, "GET", "/api/admin/boards/main/hidden", None, 200);
        assert_eq!(hidden["hidden"], json!([]));
        assert_eq!(like(lb.addr, "main", b, 3).json()["score"], 3);

        let seen = events(&lb, &mut s, 3);
        assert_consecutive(&seen, 7);
        assert_eq!((seen[0].1.as_str(), &seen[0].2), ("remove", &json!({ "id": b })));
        assert_eq!(seen[1].1, "comment");
        assert_eq!(seen[1].2["id"], b);
        assert_eq!(seen[1].2["score"], 2);
        assert_eq!(seen[1].2["content"], "b");
        assert_eq!(seen[1].2["nickname"], "v2");
        assert!(seen[1].2.get("author").is_none());
        assert_eq!(seen[2].2, json!({ "id": b, "score": 3 }));
        assert!(s.next_event(QUIET).is_none(), "refusals log nothing");
    }
);

both_backends!(
    /// Delete removes a comment for good, hidden or not, with its likes and
    /// likers: gone from every list, its likes 404, a restore 404, a second
    /// delete 404; on Redis no key holds it any more. One `remove` each.
    delete_for_good,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let a = comment(lb.addr, "post-1", 1, "a");
        let b = comment(lb.addr, "post-1", 2, "b");
        assert_eq!(like(lb.addr, "post-1", a, 1).status, 200);
        assert_eq!(like(lb.addr, "post-1", a, 2).status, 200);
        assert_eq!(like(lb.addr, "post-1", b, 1).status, 200);
        let mut s = stream(lb.addr, "post-1", &[("Last-Event-ID", "5")]);

        let del = format!("/api/admin/boards/post-1/comments/{a}");
        let reply = admin_ok(lb.addr, "DELETE", &del, None, 200);
        assert_eq!(reply, json!({ "board": "post-1", "id": a, "deleted": true }));
        assert_eq!(listing(lb.addr, "post-1").0, vec![(b, 1)]);
        assert_eq!(like(lb.addr, "post-1", a, 3).status, 404);
        assert_eq!(admin(lb.addr, "DELETE", &del, None).status, 404);
        let restore = format!("/api/admin/boards/post-1/comments/{a}/restore");
        assert_eq!(admin(lb.addr, "POST", &restore, None).status, 404);
        let block = format!("/api/admin/boards/post-1/comments/{a}/block-author");
        assert_eq!(admin(lb.addr, "POST", &block, None).status, 404, "its author is gone too");

        // A hidden comment can be deleted as well; it leaves the hidden list.
        admin_ok(
            lb.addr,
            "POST",
            &format!("/api/admin/boards/post-1/comments/{b}/hide"),
            None,
            200,
        );
        admin_ok(
            lb.addr,
            "DELETE",
            &format!("/api/admin/boards/post-1/comments/{b}"),
            None,
            200,
        );
        let hidden = admin_ok(lb.addr, "GET", "/api/admin/boards/post-1/hidden", None, 200);
        assert_eq!(hidden["hidden"], json!([]));
        assert_eq!(listing(lb.addr, "post-1").0, vec![]);
        // Ids are never handed out again.
        assert_eq!(comment(lb.addr, "post-1", 1, "c"), 3);

        let seen = events(&lb, &mut s, 4);
        assert_consecutive(&seen, 6);
        let kinds: Vec<(&str, &Value)> = seen.iter().map(|e| (e.1.as_str(), &e.2)).collect();
        assert_eq!(kinds[0], ("remove", &json!({ "id": a })));
        assert_eq!(kinds[1], ("remove", &json!({ "id": b })), "the hide");
        assert_eq!(kinds[2], ("remove", &json!({ "id": b })), "the delete");
        assert_eq!(kinds[3].0, "comment");

        if let Some(mut con) = redis_of(backend) {
            let tag = "{likeboard:post-1}";
            for m in ["000000000001", "000000000002"] {
                for (key, field) in [
                    (format!("{tag}:comments"), m),
                    (format!("{tag}:authors"), m),
                ] {
                    let held: bool = redis::cmd("HEXISTS")
                        .arg(&key)
                        .arg(field)
                        .query(&mut con)
                        .unwrap();
                    assert!(!held, "{key} {field}");
                }
                let exists: bool = redis::cmd("EXISTS")
                    .arg(format!("{tag}:likers:{m}"))
                    .query(&mut con)
                    .unwrap();
                assert!(!exists, "likers of {m}");
                for zset in ["ranking", "hidden", "hidden_at"] {
                    let score: Option<f64> = redis::cmd("ZSCORE")
                        .arg(format!("{tag}:{zset}"))
                        .arg(m)
                        .query(&mut con)
                        .unwrap();
                    assert_eq!(score, None, "{zset} {m}");
                }
            }
            for n in [1, 2] {
                let liked: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(format!("{tag}:liked:{}", visitor_id(n)))
                    .query(&mut con)
                    .unwrap();
                assert!(liked.is_empty(), "visitor {n} still likes {liked:?}");
                let wrote: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(format!("{tag}:by:{}", visitor_id(n)))
                    .query(&mut con)
                    .unwrap();
                let want: Vec<String> = if n == 1 {
                    vec!["000000000003".into()]
                } else {
                    vec![]
                };
                assert_eq!(wrote, want, "visitor {n}'s comments");
            }
        }
    }
);

both_backends!(
    /// Block an author, hiding all their comments on that board: one
    /// `remove` each, in id order; their comments on other boards stay;
    /// their writes on every board are 403, others' are not; the block is
    /// listed by a ref that is not their id; unblocking lets them write.
    block_author_everywhere,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let spam1 = comment(lb.addr, "alpha", 1, "spam 1");
        let fine = comment(lb.addr, "alpha", 2, "fine");
        let spam2 = comment(lb.addr, "alpha", 1, "spam 2");
        let elsewhere = comment(lb.addr, "beta", 1, "on beta");
        let mut s = stream(lb.addr, "alpha", &[("Last-Event-ID", "3")]);

        let path = format!("/api/admin/boards/alpha/comments/{spam2}/block-author");
        let reply = admin_ok(lb.addr, "POST", &path, Some(json!({ "hide_all": true })), 200);
        assert_eq!(reply["hidden"], json!([spam1, spam2]));
        assert_eq!(reply["until"], Value::Null, "for good");
        let reference = reply["ref"].as_str().unwrap().to_string();
        assert!(!visitor_id(1).contains(&reference));

        let seen = events(&lb, &mut s, 2);
        assert_consecutive(&seen, 4);
        assert_eq!(seen[0].2, json!({ "id": spam1 }));
        assert_eq!(seen[1].2, json!({ "id": spam2 }));
        assert!(seen.iter().all(|e| e.1 == "remove"));
        assert_eq!(listing(lb.addr, "alpha").0, vec![(fine, 0)]);
        assert_eq!(listing(lb.addr, "beta").0, vec![(elsewhere, 0)]);

        for r in [
            post(lb.addr, "alpha", 1, "more spam"),
            post(lb.addr, "beta", 1, "more spam"),
            post(lb.addr, "main", 1, "more spam"),
            like(lb.addr, "alpha", fine, 1),
            like(lb.addr, "beta", elsewhere, 1),
        ] {
            assert_eq!(r.status, 403, "{}", r.text());
            assert!(r.text().contains("blocked you"), "{}", r.text());
            assert!(r.text().contains("for good"), "{}", r.text());
        }
        assert_eq!(like(lb.addr, "alpha", fine, 2).status, 200, "others write on");
        assert_eq!(post(lb.addr, "alpha", 2, "still here").status, 201);

        let blocked = admin(lb.addr, "GET", "/api/admin/blocked", None);
        assert_eq!(blocked.status, 200);
        let json = blocked.json();
        let list = json["blocked"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["ref"], reference.as_str());
        assert_eq!(list[0]["board"], "alpha");
        assert_eq!(list[0]["comment"], spam2);
        let id = visitor(1).split('.').next().unwrap().to_string();
        assert!(!blocked.text().contains(&id), "the visitor id is never shown");

        // Blocking again names the same block.
        let again = admin_ok(lb.addr, "POST", &path, Some(json!({ "minutes": 5 })), 200);
        assert_eq!(again["ref"], reference.as_str());
        assert_eq!(again["hidden"], json!([]));
        let r = post(lb.addr, "alpha", 1, "more spam");
        assert_eq!(r.status, 403);
        assert!(r.text().contains("for another 5 minutes"), "{}", r.text());
        let list = admin_ok(lb.addr, "GET", "/api/admin/blocked", None, 200);
        assert_eq!(list["blocked"].as_array().unwrap().len(), 1);

        let unblock = format!("/api/admin/blocked/{reference}");
        assert_eq!(
            admin_ok(lb.addr, "DELETE", &unblock, None, 200),
            json!({ "ref": reference, "unblocked": true })
        );
        assert_eq!(admin(lb.addr, "DELETE", &unblock, None).status, 404);
        assert_eq!(admin(lb.addr, "DELETE", "/api/admin/blocked/xyz", None).status, 400);
        assert_eq!(post(lb.addr, "alpha", 1, "sorry").status, 201);
        assert_eq!(like(lb.addr, "beta", elsewhere, 1).status, 200);
        let list = admin_ok(lb.addr, "GET", "/api/admin/blocked", None, 200);
        assert_eq!(list["blocked"], json!([]));
        // Unblocking does not restore: the hidden stay hidden.
        let hidden = admin_ok(lb.addr, "GET", "/api/admin/boards/alpha/hidden", None, 200);
        assert_eq!(hidden["hidden"].as_array().unwrap().len(), 2);

        // Bad bodies.
        for (body, status) in [
            (json!({ "minutes": 0 }), 400),
            (json!({ "minutes": "ten" }), 400),
            (json!({ "for": "ever" }), 400),
        ] {
            assert_eq!(admin(lb.addr, "POST", &path, Some(body)).status, status);
        }
        let r = http(
            lb.addr,
            "POST",
            &path,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            b"minutes=5",
        );
        assert_eq!(r.status, 415, "{}", r.text());
    }
);

both_backends!(
    /// A timed block ends by itself: a block of one minute is listed with its
    /// end; the check compares that end with the clock (here, a block whose
    /// end the store says has passed no longer refuses).
    a_timed_block_says_when_it_ends,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let id = comment(lb.addr, "main", 1, "x");
        let before = support_now_ms();
        let reply = admin_ok(
            lb.addr,
            "POST",
            &format!("/api/admin/boards/main/comments/{id}/block-author"),
            Some(json!({ "minutes": 1 })),
            200,
        );
        let until = reply["until"].as_u64().unwrap();
        assert!(
            (before + 59_000..=support_now_ms() + 61_000).contains(&until),
            "{until}"
        );
        let r = like(lb.addr, "main", id, 1);
        assert_eq!(r.status, 403);
        assert!(r.text().contains("for another 1 minute"), "{}", r.text());
        let list = admin_ok(lb.addr, "GET", "/api/admin/blocked", None, 200);
        assert_eq!(list["blocked"][0]["until"], until);
    }
);

fn support_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

both_backends!(
    /// Lock a board: comments and likes are 423 with a clear error, its list
    /// says locked, other boards are untouched; twice is 409, an unknown
    /// board 404 (the default board always exists); unlock lets writes in.
    /// Events `locked` true then false.
    lock_and_unlock,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let id = comment(lb.addr, "alpha", 1, "before");
        let other = comment(lb.addr, "beta", 1, "beta");
        let mut s = stream(lb.addr, "alpha", &[("Last-Event-ID", "1")]);
        let lock = "/api/admin/boards/alpha/lock";
        assert_eq!(
            admin_ok(lb.addr, "POST", lock, None, 200),
            json!({ "board": "alpha", "locked": true })
        );
        assert_eq!(admin(lb.addr, "POST", lock, None).status, 409);
        for r in [post(lb.addr, "alpha", 2, "after"), like(lb.addr, "alpha", id, 2)] {
            assert_eq!(r.status, 423, "{}", r.text());
            assert!(r.text().contains("locked"), "{}", r.text());
        }
        assert_eq!(listing(lb.addr, "alpha"), (vec![(id, 0)], true));
        assert_eq!(like(lb.addr, "beta", other, 2).status, 200, "beta is open");
        assert!(!listing(lb.addr, "beta").1);
        // The moderator may still hide on a locked board.
        admin_ok(
            lb.addr,
            "POST",
            &format!("/api/admin/boards/alpha/comments/{id}/hide"),
            None,
            200,
        );
        assert_eq!(
            admin_ok(lb.addr, "DELETE", lock, None, 200),
            json!({ "board": "alpha", "locked": false })
        );
        assert_eq!(admin(lb.addr, "DELETE", lock, None).status, 409);
        assert_eq!(post(lb.addr, "alpha", 2, "after").status, 201);
        assert!(!listing(lb.addr, "alpha").1);

        assert_eq!(
            admin(lb.addr, "POST", "/api/admin/boards/nowhere/lock", None).status,
            404
        );
        // The default board exists before its first comment.
        admin_ok(lb.addr, "POST", "/api/admin/boards/main/lock", None, 200);
        assert_eq!(post(lb.addr, "main", 1, "x").status, 423);
        let r = http(lb.addr, "GET", "/api/comments", &[], b"");
        assert_eq!(r.json()["locked"], true);

        let seen = events(&lb, &mut s, 4);
        assert_consecutive(&seen, 2);
        let kinds: Vec<(&str, &Value)> = seen.iter().map(|e| (e.1.as_str(), &e.2)).collect();
        assert_eq!(kinds[0], ("locked", &json!({ "locked": true })));
        assert_eq!(kinds[1], ("remove", &json!({ "id": id })));
        assert_eq!(kinds[2], ("locked", &json!({ "locked": false })));
        assert_eq!(kinds[3].0, "comment");
    }
);

both_backends!(
    /// The audit log records every action that did something, newest first:
    /// what, on what, when and from which address (behind a trusted proxy,
    /// the client's); refusals are not in it.
    audit_log,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &["--trusted-proxy", "127.0.0.1/32"]);
        let id = comment(lb.addr, "alpha", 1, "x");
        let before = support_now_ms();
        let auth = format!("Bearer {TOKEN}");
        let act = |method: &str, path: &str, ip: &str| {
            http(
                lb.addr,
                method,
                path,
                &[("Authorization", &auth), ("X-Forwarded-For", ip)],
                b"",
            )
        };
        let hide = format!("/api/admin/boards/alpha/comments/{id}/hide");
        assert_eq!(act("POST", &hide, "198.51.100.1").status, 200);
        assert_eq!(act("POST", &hide, "198.51.100.1").status, 409, "not logged");
        let block = format!("/api/admin/boards/alpha/comments/{id}/block-author");
        let r = act("POST", &block, "198.51.100.2");
        let reference = r.json()["ref"].as_str().unwrap().to_string();
        assert_eq!(act("POST", "/api/admin/boards/alpha/lock", "198.51.100.3").status, 200);
        assert_eq!(
            act("DELETE", &format!("/api/admin/blocked/{reference}"), "198.51.100.4").status,
            200
        );
        let log = admin_ok(lb.addr, "GET", "/api/admin/audit", None, 200);
        let lines = log["audit"].as_array().unwrap();
        let summary: Vec<(&str, Option<&str>, Option<u64>, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["action"].as_str().unwrap(),
                    l["board"].as_str(),
                    l["comment"].as_u64(),
                    l["ip"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("unblock", None, None, "198.51.100.4"),
                ("lock", Some("alpha"), None, "198.51.100.3"),
                ("block", Some("alpha"), Some(id), "198.51.100.2"),
                ("hide", Some("alpha"), Some(id), "198.51.100.1"),
            ]
        );
        assert_eq!(lines[0]["ref"], reference.as_str());
        assert_eq!(lines[2]["detail"], "for good");
        for line in lines {
            let at = line["at"].as_u64().unwrap();
            assert!((before..=support_now_ms()).contains(&at), "{line}");
        }
        let one = admin_ok(lb.addr, "GET", "/api/admin/audit?limit=1", None, 200);
        assert_eq!(one["audit"].as_array().unwrap().len(), 1);
    }
);

both_backends!(
    /// A client away while a comment was hidden (and another deleted, and the
    /// board locked) reconnects with its Last-Event-ID and gets each event it
    /// missed, in order.
    replay_brings_the_removal,
    |backend: &Backend| {
        let (lb, _token) = start(backend, &[]);
        let a = comment(lb.addr, "main", 1, "a");
        let b = comment(lb.addr, "main", 1, "b");
        let mut s = stream(lb.addr, "main", &[("Last-Event-ID", "2")]);
        assert_eq!(like(lb.addr, "main", a, 2).status, 200);
        let seen = events(&lb, &mut s, 1);
        assert_eq!(seen[0].0, 3);
        drop(s);

        admin_ok(lb.addr, "POST", &format!("/api/admin/boards/main/comments/{a}/hide"), None, 200);
        admin_ok(lb.addr, "DELETE", &format!("/api/admin/boards/main/comments/{b}"), None, 200);
        admin_ok(lb.addr, "POST", "/api/admin/boards/main/lock", None, 200);

        let mut back = SseClient::connect(lb.addr, "/events", &[("Last-Event-ID", "3")]).unwrap();
        let seen = events(&lb, &mut back, 3);
        assert_consecutive(&seen, 4);
        assert_eq!((seen[0].1.as_str(), &seen[0].2), ("remove", &json!({ "id": a })));
        assert_eq!((seen[1].1.as_str(), &seen[1].2), ("remove", &json!({ "id": b })));
        assert_eq!((seen[2].1.as_str(), &seen[2].2), ("locked", &json!({ "locked": true })));
        // `?since=` is the same replay.
        let mut since = SseClient::connect(lb.addr, "/events?since=4", &[]).unwrap();
        let seen = events(&lb, &mut since, 2);
        assert_eq!(seen[0].0, 5);
        assert_eq!(seen[1].1, "locked");
    }
);

/// A block made through one instance is in force on another instance of the
/// same Redis within about a second (its copy of the blocks follows the
/// store), and so is its end.
#[test]
fn blocks_reach_every_instance() {
    let redis = RedisServer::start();
    let token = token_file(TOKEN);
    let a = Likeboard::builder().redis(&redis).args(&token.args).start();
    // The other instance has no token: it moderates nothing, but enforces.
    let b = Likeboard::builder().redis(&redis).start();
    let id = comment(a.addr, "main", 1, "x");
    assert_eq!(like(b.addr, "main", id, 1).status, 200);
    let reply = admin_ok(
        a.addr,
        "POST",
        &format!("/api/admin/boards/main/comments/{id}/block-author"),
        None,
        200,
    );
    assert_eq!(post(a.addr, "main", 1, "at once here").status, 403);
    let started = Instant::now();
    while post(b.addr, "main", 1, "there?").status != 403 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "instance b never heard of the block"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let reference = reply["ref"].as_str().unwrap();
    admin_ok(
        a.addr,
        "DELETE",
        &format!("/api/admin/blocked/{reference}"),
        None,
        200,
    );
    let started = Instant::now();
    while like(b.addr, "main", id, 1).status == 403 {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "never unblocked on b"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The moderator's page: `/admin` and `?moderate` render the board with the
/// moderator's controls switched on (the token is asked for in the page),
/// and a locked board renders with its form and like buttons disabled.
#[test]
fn pages_know_moderation_and_locks() {
    let (lb, _token) = start(&Backend::memory(), &[]);
    let id = comment(lb.addr, "alpha", 1, "x");
    for path in ["/admin", "/b/alpha?moderate"] {
        let page = lb.get(path);
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text().contains("data-moderate=\"1\""), "{path}");
        assert!(!page.text().contains(TOKEN));
    }
    let plain = lb.get("/b/alpha").text();
    assert!(!plain.contains("data-moderate=\"1\""));
    assert!(!plain.contains("data-locked=\"1\""));
    admin_ok(lb.addr, "POST", "/api/admin/boards/alpha/lock", None, 200);
    let locked = lb.get("/b/alpha").text();
    assert!(locked.contains("data-locked=\"1\""), "{locked}");
    let like_button = locked
        .split("<li")
        .find(|li| li.contains(&format!("data-id=\"{id}\"")))
        .expect("the comment's item");
    assert!(like_button.contains("disabled"), "{like_button}");
    assert!(
        locked.contains("id=\"add-fields\" class=\"plain\" disabled"),
        "the form is disabled"
    );
    assert!(
        locked.contains("id=\"locked-note\" class=\"locked-note\" role=\"status\">"),
        "the note shows"
    );
}
