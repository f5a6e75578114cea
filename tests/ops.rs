//! Operations end to end: `/healthz` with Redis up and down, `/metrics` checked
//! by a real OpenMetrics parser and moving with likes and clients, the single
//! binary from an empty directory, `--assets-dir`, and the command line's
//! `--help`, README table and exit status 2.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use likeboard::config::{Initial, OPTIONS};
use support::{http, visitor, Backend, Likeboard, RedisServer, SseClient, TempDir};

const WAIT: Duration = Duration::from_secs(5);

/// One sample of the exposition, as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// GETs `/metrics` and parses it with the Prometheus project's own OpenMetrics
/// parser (Python's prometheus_client, through tests/support/parse_metrics.py),
/// which rejects a malformed exposition.
fn scrape(server: &Likeboard) -> Vec<Sample> {
    let r = server.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers.get("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/parse_metrics.py");
    let python = support::require_tool("python3", "python3");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python3");
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n--- the exposition ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.text()
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The sum of the samples called `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Scrapes until `name` (with `labels`) reaches at least `want`; the last scrape.
fn wait_for(server: &Likeboard, name: &str, labels: &[(&str, &str)], want: f64) -> Vec<Sample> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(server);
        let got = value(&samples, name, labels);
        if got >= want {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} stayed at {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

both_backends!(
    /// With the store answering, /healthz is 200 and names the store "ok".
    healthz_ok,
    |backend: &Backend| {
        let server = backend.start(&["--max-subscribers", "50"]);
        let r = server.get("/healthz");
        assert_eq!(r.status, 200, "{}", r.text());
        let h = r.json();
        assert_eq!(h["status"], "ok");
        let store = match backend {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
        };
        assert_eq!(h[store], "ok", "{h}");
        assert_eq!(h["subscribers"], 0);
        assert_eq!(h["max_subscribers"], 50);
        assert!(h["uptime_s"].is_u64(), "{h}");
    }
);

/// With Redis killed, /healthz is 503 naming Redis, without the error's detail.
#[test]
fn healthz_503_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let server = Likeboard::builder().redis(&redis).start();
    assert_eq!(server.get("/healthz").status, 200);
    redis.kill();
    let r = server.get("/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    let h = r.json();
    assert_eq!(h["status"], "unavailable");
    assert_eq!(h["redis"], "unreachable");
    let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "last_event_id",
            "max_subscribers",
            "pump",
            "redis",
            "status",
            "subscribers",
            "uptime_s"
        ],
        "only these fields, no error text: {h}"
    );
}

both_backends!(
    /// /metrics parses as OpenMetrics, and its counters move with comments,
    /// likes, SSE clients and replays.
    metrics_move,
    |backend: &Backend| {
        let server = backend.start(&["--max-subscribers", "40"]);
        let before = scrape(&server);
        assert_eq!(value(&before, "likeboard_events_appended_total", &[]), 0.0);
        assert_eq!(value(&before, "likeboard_sse_subscriber_cap", &[]), 40.0);

        let mut live = SseClient::connect(server.addr, "/events", &[]).unwrap();
        server.wait_subscribers(1, WAIT);
        let id = server.add_comment("counted");
        assert_eq!(server.like("POST", id, &visitor(1)).status, 200);
        assert_eq!(server.like("POST", id, &visitor(1)).status, 200); // no change, no event
        live.next_event(WAIT).expect("the comment event");
        live.next_event(WAIT).expect("the like event");

        let after = wait_for(&server, "likeboard_events_broadcast_total", &[], 2.0);
        assert_eq!(value(&after, "likeboard_events_appended_total", &[]), 2.0);
        assert_eq!(value(&after, "likeboard_sse_subscribers", &[]), 1.0);
        assert_eq!(value(&after, "likeboard_pump_lag_events", &[]), 0.0);
        assert_eq!(value(&after, "likeboard_pump_last_delivered_event_id", &[]), 2.0);
        let likes = [("route", "/api/comments/{id}/like"), ("method", "POST"), ("status", "200")];
        assert_eq!(value(&after, "likeboard_http_requests_total", &likes), 2.0);
        let posts = [("route", "/api/comments"), ("status", "201")];
        assert_eq!(value(&after, "likeboard_http_requests_total", &posts), 1.0);
        let events = [("route", "/events"), ("status", "200")];
        assert_eq!(value(&after, "likeboard_http_requests_total", &events), 1.0);
        let like_route = [("route", "/api/comments/{id}/like")];
        assert_eq!(value(&after, "likeboard_http_request_duration_seconds_count", &like_route), 2.0);

        // A reconnecting client replays both events.
        let mut replay = SseClient::connect(server.addr, "/events", &[("Last-Event-ID", "0")]).unwrap();
        replay.next_event(WAIT).expect("replayed comment");
        replay.next_event(WAIT).expect("replayed like");
        let last = wait_for(&server, "likeboard_events_replayed_total", &[], 2.0);
        assert_eq!(value(&last, "likeboard_events_replayed_total", &[]), 2.0);
    }
);

/// The route label holds patterns from a fixed set, never raw paths.
#[test]
fn metrics_label_routes_not_paths() {
    let server = Backend::memory().start(&[]);
    for path in [
        "/api/comments/123456/like",
        "/wp-login.php",
        "/static/nope.js",
        "/a/b/c?x=1",
    ] {
        http(server.addr, "POST", path, &[], b"");
        server.get(path);
    }
    let known = [
        "/",
        "/static/{name}",
        "/api/comments",
        "/api/comments/{id}/like",
        "/events",
        "/healthz",
        "/metrics",
        "unmatched",
    ];
    let samples = scrape(&server);
    let routes: Vec<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("route").map(String::as_str))
        .collect();
    assert!(!routes.is_empty());
    for route in routes {
        assert!(
            known.contains(&route),
            "route label {route:?} is not a pattern"
        );
    }
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&samples, "likeboard_http_requests_total", &unmatched),
        4.0
    );
}

/// A client over the subscriber cap is counted as refused.
#[test]
fn metrics_count_refusals() {
    let server = Backend::memory().start(&["--max-subscribers", "1"]);
    let _first = SseClient::connect(server.addr, "/events", &[]).unwrap();
    server.wait_subscribers(1, WAIT);
    let mut second = SseClient::connect(server.addr, "/events", &[]).unwrap();
    assert!(second.read_to_close(WAIT), "the refused stream closes");
    let samples = scrape(&server);
    assert_eq!(value(&samples, "likeboard_sse_refused_total", &[]), 1.0);
    assert_eq!(
        value(&samples, "likeboard_sse_dropped_slow_total", &[]),
        0.0
    );
}

/// Killing Redis shows up as store errors; restarting it, as a reconnect.
#[test]
fn metrics_count_redis_errors_and_reconnects() {
    let mut redis = RedisServer::start();
    let server = Likeboard::builder().redis(&redis).start();
    let id = server.add_comment("before the outage");
    assert_eq!(
        value(&scrape(&server), "likeboard_store_reconnects_total", &[]),
        0.0
    );

    redis.kill();
    assert_eq!(server.like("POST", id, &visitor(1)).status, 503);
    let during = scrape(&server);
    let failed_like = [("store", "redis"), ("op", "like"), ("kind", "unavailable")];
    assert_eq!(
        value(&during, "likeboard_store_errors_total", &failed_like),
        1.0
    );
    // With Redis down the newest id is unknown, so the lag is left out.
    assert!(!during.iter().any(|s| s.name == "likeboard_pump_lag_events"));

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.get("/healthz").status != 200 {
        assert!(Instant::now() < deadline, "healthz never recovered");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(&server, "likeboard_store_reconnects_total", &[], 1.0);
}

/// A copy of the binary, alone in an empty directory, serves the page and its
/// static files: templates and assets are embedded.
#[test]
fn single_binary_runs_from_an_empty_directory() {
    let dir = TempDir::new("lonely");
    let binary = dir.0.join("likeboard");
    std::fs::copy(env!("CARGO_BIN_EXE_likeboard"), &binary).unwrap();
    let server = Likeboard::builder()
        .program(&binary)
        .current_dir(&dir.0)
        .start();
    let page = server.get("/");
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("/static/app.js"), "{}", page.text());
    for (file, embedded) in [
        ("app.js", include_bytes!("../static/app.js").as_slice()),
        (
            "style.css",
            include_bytes!("../static/style.css").as_slice(),
        ),
    ] {
        let r = server.get(&format!("/static/{file}"));
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.body, embedded, "{file}");
    }
    let entries: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        ["likeboard"],
        "nothing but the binary in its directory"
    );
}

/// `--assets-dir` serves the page and static files from disk instead of the
/// embedded copies, re-read on every request.
#[test]
fn assets_dir_overrides_the_embedded_files() {
    let assets = TempDir::new("assets");
    std::fs::create_dir_all(assets.0.join("templates")).unwrap();
    std::fs::create_dir_all(assets.0.join("static")).unwrap();
    let index = assets.0.join("templates/index.html");
    std::fs::write(
        &index,
        "<!doctype html><p>edited: {{ comments|length }} comments</p>",
    )
    .unwrap();
    std::fs::write(assets.0.join("static/app.js"), "// edited app.js\n").unwrap();
    let dir = assets.0.to_str().unwrap();
    let server = Backend::memory().start(&["--assets-dir", dir]);

    server.add_comment("one");
    assert_eq!(
        server.get("/").text(),
        "<!doctype html><p>edited: 1 comments</p>"
    );
    assert_eq!(server.get("/static/app.js").text(), "// edited app.js\n");
    // Only the directory is consulted: a file missing there is missing.
    assert_eq!(server.get("/static/style.css").status, 404);

    std::fs::write(&index, "<p>edited again</p>").unwrap();
    assert_eq!(server.get("/").text(), "<p>edited again</p>");
}

/// Runs the binary with `args` and `env` (nothing else) and returns its exit
/// code and stderr; it must exit by itself within 10 s.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new("cli");
    let mut child = Command::new(env!("CARGO_BIN_EXE_likeboard"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("likeboard {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bad flag or value, on the command line or in the environment, is one
/// line on stderr and exit status 2.
#[test]
fn bad_flags_exit_2_with_one_line() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 5] = [
        (&["--bogus"], &[]),
        (&["--workers", "0"], &[]),
        (&["--listen"], &[]),
        (&["--heartbeat-secs=soon"], &[]),
        (&[], &[("LIKEBOARD_STREAM_LEN", "lots")]),
    ];
    for (args, env) in cases {
        let (code, stderr) = run_binary(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?} {env:?}: {stderr:?}");
        assert!(stderr.starts_with("likeboard: "), "{stderr:?}");
    }
}

/// Every option in src/config.rs's table is in `--help` with its variable and
/// default, and README's configuration table has a row for each with the same
/// flag, variable and default, and no row for an option the program lacks.
#[test]
fn help_and_readme_list_every_flag() {
    let help = Command::new(env!("CARGO_BIN_EXE_likeboard"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    // --help wraps its lines; compare with every run of whitespace as one space.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Configuration section in README.md");
    // The table's rows, as cells: flag, variable, default, what it sets.
    let rows: Vec<Vec<&str>> = section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect();
    assert_eq!(
        rows.len(),
        OPTIONS.len(),
        "README's configuration table and config::OPTIONS differ: {rows:?}"
    );

    for opt in OPTIONS {
        let flag = opt.flag_shown();
        let env = opt.env_shown();
        let default = opt.initial.text();
        assert!(help.contains(&format!("{flag} ")), "--help misses {flag}");
        assert!(
            help.contains(&format!("[{env}] default {default}")),
            "--help misses {flag}'s [{env}] default {default}"
        );
        let row = rows
            .iter()
            .find(|r| r[0] == format!("`{flag}`"))
            .unwrap_or_else(|| panic!("README's table misses `{flag}`"));
        assert_eq!(row[1], format!("`{env}`"), "README's variable for {flag}");
        let shown = match opt.initial {
            Initial::Value(v) => format!("`{v}`"),
            Initial::Unset(_) | Initial::Off => default.to_string(),
        };
        assert_eq!(row[2], shown, "README's default for {flag}");
    }
    for flag in ["--help", "--version"] {
        assert!(help.contains(flag), "--help misses {flag}");
    }
}

both_backends!(
    /// A like storm is handed to the hub in batches (`--coalesce-ms`): with a
    /// 300 ms window, 200 likes from 8 senders make far fewer batches than
    /// events (each batch is one send to every stream), and a stream still
    /// ends on the last like's id and the final score, ids rising; the seed's
    /// stream, which is never folded, still gets every like.
    storm_is_handed_out_in_batches,
    |backend: &Backend| {
        let server = backend.start(&["--coalesce-ms", "300", "--seed-routes", "--heartbeat-secs", "30"]);
        let id = server.add_comment("storm");
        let mut events = SseClient::connect(server.addr, "/events", &[]).unwrap();
        let mut seed = SseClient::connect(server.addr, "/sse", &[]).unwrap();
        server.wait_subscribers(2, WAIT);
        let before = wait_for(&server, "likeboard_events_broadcast_total", &[], 1.0);
        let (events0, batches0) = (
            value(&before, "likeboard_events_broadcast_total", &[]),
            value(&before, "likeboard_pump_batches_total", &[]),
        );
        for s in support::like_storm(server.addr, 8, 25, move |_, _| id) {
            s.join().unwrap();
        }
        let after = wait_for(&server, "likeboard_events_broadcast_total", &[], events0 + 200.0);
        let handed = value(&after, "likeboard_events_broadcast_total", &[]) - events0;
        let batches = value(&after, "likeboard_pump_batches_total", &[]) - batches0;
        assert_eq!(handed, 200.0);
        // One batch per window at most, and the storm lasts well under 7 s
        // even on a slow machine; one by one it would be a batch an event.
        assert!(batches <= 25.0, "{batches} batches for 200 events");
        let mut ids = Vec::new();
        let mut score = 0;
        while score != 200 {
            let frame = events.next_event(WAIT).expect("likes up to the final score");
            ids.push(frame.id().unwrap());
            score = frame.data_json()["score"].as_u64().unwrap();
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
        assert_eq!(ids.last(), Some(&201), "the last like's id");
        let seed_ids: Vec<u64> = (0..200)
            .map(|_| seed.next_event(WAIT).expect("every like").id().unwrap())
            .collect();
        assert_eq!(seed_ids, (2..=201).collect::<Vec<u64>>());
    }
);
