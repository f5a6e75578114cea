//! The JSON API end to end, on the in-memory store and on a real redis-server:
//! add, list, like, unlike, idempotence, errors, and the visitor cookie.

mod support;

use support::{http, visitor, Backend, Likeboard, RedisServer};

both_backends!(
    /// A posted comment comes back with an id and appears in the list with score 0.
    add_and_list,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let body = br#"{"content":"  first!  ","nickname":"ann"}"#;
        let r = http(server.addr, "POST", "/api/comments", &[("Content-Type", "application/json")], body);
        assert_eq!(r.status, 201, "{}", r.text());
        let c = r.json();
        assert_eq!(c["content"], "first!");
        assert_eq!(c["nickname"], "ann");
        assert_eq!(c["score"], 0);
        let list = server.get("/api/comments").json();
        assert_eq!(list["comments"][0]["id"], c["id"]);
        assert_eq!(list["comments"][0]["liked"], false);
        assert_eq!(list["last_event_id"], "1");
    }
);

both_backends!(
    /// A form-encoded body works too, and the nickname defaults to "anonymous".
    add_with_form,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let r = http(
            server.addr,
            "POST",
            "/api/comments",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"content=hello+world%21",
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["content"], "hello world!");
        assert_eq!(r.json()["nickname"], "anonymous");
    }
);

both_backends!(
    /// Liking twice counts once; unliking what was not liked changes nothing;
    /// the score never goes below zero.
    like_is_idempotent,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let id = server.add_comment("likeable");
        let (a, b) = (visitor(1), visitor(2));
        assert_eq!(server.like("POST", id, &a).json(), serde_json::json!({"id": id, "score": 1, "liked": true}));
        assert_eq!(server.like("POST", id, &a).json()["score"], 1);
        assert_eq!(server.like("DELETE", id, &b).json(), serde_json::json!({"id": id, "score": 1, "liked": false}));
        assert_eq!(server.like("POST", id, &b).json()["score"], 2);
        assert_eq!(server.like("DELETE", id, &a).json()["score"], 1);
        assert_eq!(server.like("DELETE", id, &a).json()["score"], 1);
        assert_eq!(server.like("DELETE", id, &b).json()["score"], 0);
        assert_eq!(server.like("DELETE", id, &b).json()["score"], 0);
    }
);

both_backends!(
    /// The list is ordered by score, then newest first, and `liked` is per visitor.
    list_order_and_liked_flag,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let old = server.add_comment("old");
        let mid = server.add_comment("mid");
        let new = server.add_comment("new");
        server.like("POST", old, &visitor(1));
        let cookie = format!("lb_visitor={}", visitor(1));
        let list = http(server.addr, "GET", "/api/comments", &[("Cookie", &cookie)], b"").json();
        let ids: Vec<u64> = list["comments"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![old, new, mid]);
        assert_eq!(list["comments"][0]["liked"], true);
        assert_eq!(list["comments"][1]["liked"], false);
        let other = server.get("/api/comments?limit=1&offset=1").json();
        assert_eq!(other["comments"].as_array().unwrap().len(), 1);
        assert_eq!(other["comments"][0]["id"], new);
    }
);

both_backends!(
    /// An unknown comment is 404 and liking it creates nothing.
    unknown_comment_is_404,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let r = server.like("POST", 12345, &visitor(1));
        assert_eq!(r.status, 404);
        assert!(r.json()["error"].as_str().unwrap().contains("12345"));
        assert_eq!(server.get("/api/comments").json()["comments"].as_array().unwrap().len(), 0);
        assert_eq!(server.get("/api/comments").json()["last_event_id"], "0");
    }
);

both_backends!(
    /// Bad input gets a 4xx with a JSON error, and the server keeps answering.
    bad_input_is_4xx,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let json = [("Content-Type", "application/json")];
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);
        let cases: Vec<Case> = vec![
            ("POST", "/api/comments", &json, br#"{"content":""}"#, 400),
            ("POST", "/api/comments", &json, br#"{"content":"   "}"#, 400),
            ("POST", "/api/comments", &json, br#"{"nickname":"x"}"#, 400),
            ("POST", "/api/comments", &json, br#"{"content":5}"#, 400),
            ("POST", "/api/comments", &json, b"{not json", 400),
            ("POST", "/api/comments", &[("Content-Type", "text/plain")], b"content=x", 415),
            ("POST", "/api/comments/abc/like", &[], b"", 400),
            ("POST", "/api/comments/0/like", &[], b"", 400),
            ("POST", "/api/comments/-1/like", &[], b"", 400),
            ("GET", "/api/comments?limit=501", &[], b"", 400),
            ("GET", "/api/comments?limit=x", &[], b"", 400),
            ("GET", "/nope", &[], b"", 404),
            ("PUT", "/api/comments", &[], b"", 405),
            ("GET", "/api/comments/1/like", &[], b"", 405),
            ("GET", "/static/..%2fCargo.toml", &[], b"", 404),
        ];
        for (method, path, headers, body, status) in cases {
            let r = http(server.addr, method, path, headers, body);
            assert_eq!(r.status, status, "{method} {path}: {}", r.text());
            assert!(r.json()["error"].is_string(), "{method} {path}: {}", r.text());
        }
        let r = http(server.addr, "PUT", "/api/comments", &[], b"");
        assert_eq!(r.headers.get("Allow"), Some("GET, HEAD, POST"));
        let big = format!(r#"{{"content":"{}"}}"#, "x".repeat(17 * 1024));
        let r = http(server.addr, "POST", "/api/comments", &json, big.as_bytes());
        assert_eq!(r.status, 413);
        assert_eq!(server.get("/healthz").status, 200);
    }
);

both_backends!(
    /// A first visit gets an HttpOnly SameSite=Lax visitor cookie; with it, likes
    /// are that visitor's; without it, the client IP stands in.
    visitor_cookie,
    |backend: &Backend| {
        let server = backend.start(&[]);
        let r = server.get("/");
        assert_eq!(r.status, 200);
        let cookie = r.headers.get("Set-Cookie").expect("a visitor cookie").to_string();
        assert!(cookie.starts_with("lb_visitor="), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        let value = cookie.split(';').next().unwrap().to_string();
        // With the cookie: no new cookie, and the like is remembered for it.
        let id = server.add_comment("c");
        let r = http(server.addr, "POST", &format!("/api/comments/{id}/like"), &[("Cookie", &value)], b"");
        assert_eq!(r.headers.get("Set-Cookie"), None);
        let mine = http(server.addr, "GET", "/api/comments", &[("Cookie", &value)], b"").json();
        assert_eq!(mine["comments"][0]["liked"], true);
        // Without a cookie the IP is the visitor: a different one from the cookie's.
        let anon = server.get("/api/comments").json();
        assert_eq!(anon["comments"][0]["liked"], false);
        assert_eq!(server.like("POST", id, "nothex").status, 200);
        let r = http(server.addr, "POST", &format!("/api/comments/{id}/like"), &[], b"");
        assert_eq!(r.json()["score"], 2, "the IP visitor already liked it via the invalid cookie");
    }
);

both_backends!(
    /// The page and its assets are served with the right content types and a CSP.
    page_and_assets,
    |backend: &Backend| {
        let server = backend.start(&[]);
        server.add_comment("<script>alert(1)</script>");
        let page = server.get("/");
        assert_eq!(page.headers.get("Content-Type"), Some("text/html; charset=utf-8"));
        assert!(page.headers.get("Content-Security-Policy").unwrap().contains("script-src 'self'"));
        assert!(page.text().contains("&lt;script&gt;alert(1)"));
        assert!(!page.text().contains("<script>alert(1)"));
        assert_eq!(server.get("/static/app.js").headers.get("Content-Type"), Some("text/javascript; charset=utf-8"));
        assert_eq!(server.get("/static/style.css").headers.get("Content-Type"), Some("text/css; charset=utf-8"));
        // A worker runs under its own script's policy: the same as the page's.
        let worker = server.get("/static/stream-worker.js");
        assert_eq!(worker.status, 200);
        assert_eq!(worker.headers.get("Content-Security-Policy"), page.headers.get("Content-Security-Policy"));
    }
);

/// Comment ids are unique when many clients post at once.
#[test]
fn comment_ids_unique_under_concurrency() {
    let backend = Backend::redis();
    let server = backend.start(&[]);
    let addr = server.addr;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let body = format!(r#"{{"content":"c{i}"}}"#);
                        let r = http(
                            addr,
                            "POST",
                            "/api/comments",
                            &[("Content-Type", "application/json")],
                            body.as_bytes(),
                        );
                        r.json()["id"].as_u64().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

/// A cookie the server did not issue is no visitor: a client that sends a
/// fresh made-up id with every like is one visitor (its address), and likes
/// once; a cookie the server did issue is a visitor of its own.
#[test]
fn made_up_cookies_like_once() {
    let server = Likeboard::start(&[]);
    let c = server.add_comment("count me once");
    for n in 0..20u64 {
        let made_up = format!("lb_visitor={:032x}", n + 1);
        let r = http(
            server.addr,
            "POST",
            &format!("/api/comments/{c}/like"),
            &[("Cookie", &made_up)],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.headers.get("Set-Cookie").is_some(),
            "a real cookie is offered"
        );
    }
    let issued = http(server.addr, "GET", "/api/comments", &[], b"");
    let cookie = issued
        .headers
        .get("Set-Cookie")
        .expect("a cookie for a new visitor");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let r = http(
        server.addr,
        "POST",
        &format!("/api/comments/{c}/like"),
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(
        r.json()["score"],
        2,
        "the address once, the issued cookie once"
    );
}

/// Instances on one Redis sign alike with the key kept there: a cookie one of
/// them issued is the same visitor on the other.
#[test]
fn instances_on_one_redis_share_the_visitor_key() {
    let redis = RedisServer::start();
    let a = Likeboard::builder()
        .redis(&redis)
        .store_visitor_key()
        .start();
    let b = Likeboard::builder()
        .redis(&redis)
        .store_visitor_key()
        .start();
    let c = a.add_comment("shared");
    let issued = http(a.addr, "GET", "/api/comments", &[], b"");
    let cookie = issued
        .headers
        .get("Set-Cookie")
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let like = |lb: &Likeboard| {
        http(
            lb.addr,
            "POST",
            &format!("/api/comments/{c}/like"),
            &[("Cookie", &cookie)],
            b"",
        )
    };
    assert_eq!(like(&a).json()["score"], 1);
    let again = like(&b);
    assert_eq!(
        again.json()["score"],
        1,
        "the same visitor on the other instance"
    );
    assert!(
        again.headers.get("Set-Cookie").is_none(),
        "no new cookie offered"
    );
}

/// One request from the loopback address `source` (each its own client).
fn http_from(
    server: &Likeboard,
    source: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> support::Response {
    support::request_from(server.addr, source, method, path, headers)
}

/// The `name=value` part of a reply's `Set-Cookie`, if it has one.
fn issued(r: &support::Response) -> Option<String> {
    let cookie = r.headers.get("Set-Cookie")?;
    Some(cookie.split(';').next().unwrap().to_string())
}

/// A burst of new-visitor requests from one address beyond its allowance
/// (`--visitor-rate`, 60 a minute, all at once) is slowed: the first 60 get
/// a cookie each, the rest are served without one as the address's visitor
/// (so their likes count once), the address gets its next new visitor about
/// a second later, and another address is not held back.
#[test]
fn new_visitors_beyond_the_allowance_are_slowed() {
    use std::time::{Duration, Instant};
    let server = Likeboard::start(&["--write-rate", "120"]);
    let c = server.add_comment("who may come in?");
    let started = Instant::now();
    let replies: Vec<_> = (0..90)
        .map(|_| http_from(&server, "127.0.0.2", "GET", "/api/comments", &[]))
        .collect();
    let burst = started.elapsed();
    assert!(replies.iter().all(|r| r.status == 200));
    let cookies: Vec<String> = replies.iter().filter_map(issued).collect();
    // The bucket refills at one a second while the burst runs.
    let refilled = burst.as_secs() as usize + 1;
    assert!(
        (60..=60 + refilled).contains(&cookies.len()),
        "{} cookies issued in {burst:?}",
        cookies.len()
    );

    // Over the allowance a like is served, as the address's visitor: once.
    let like = format!("/api/comments/{c}/like");
    for _ in 0..2 {
        let r = http_from(&server, "127.0.0.2", "POST", &like, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["score"], 1);
        assert!(issued(&r).is_none());
    }
    // Every cookie it did get is a visitor of its own.
    for (n, cookie) in cookies[..5].iter().enumerate() {
        let r = http_from(&server, "127.0.0.2", "POST", &like, &[("Cookie", cookie)]);
        assert_eq!(r.json()["score"], 2 + n as u64, "{}", r.text());
    }
    // Another address still gets a cookie at once.
    let other = http_from(&server, "127.0.0.3", "GET", "/api/comments", &[]);
    assert!(issued(&other).is_some(), "another address is not held back");

    // Slowed, not stopped: a second later the address gets one more.
    std::thread::sleep(Duration::from_millis(1200));
    let later: Vec<_> = (0..3)
        .map(|_| http_from(&server, "127.0.0.2", "GET", "/api/comments", &[]))
        .collect();
    assert!(issued(&later[0]).is_some(), "a new visitor after a second");
    assert!(issued(&later[2]).is_none(), "but not three");
}

/// With `--write-rate 0`, as the test kit and the benchmarks run, every
/// request without a cookie of ours is issued one, however many come from
/// one address.
#[test]
fn new_visitors_are_unlimited_without_a_write_limit() {
    let server = Likeboard::start(&[]);
    let given = (0..150)
        .filter(|_| issued(&http_from(&server, "127.0.0.2", "GET", "/healthz", &[])).is_some())
        .count();
    assert_eq!(given, 150);
}
