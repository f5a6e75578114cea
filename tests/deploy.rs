//! The deploy kit in deploy/: `systemd-analyze verify` accepts the unit, the
//! unit's limits fit the subscriber cap it is configured for, the sysctl file
//! lifts the memory-map limit, `nginx -t`
//! accepts the site, and the site really carries likes and the event stream
//! to and from two instances sharing one Redis, tells its clients apart by
//! their own addresses, issues each visitor a cookie and limits the rest.
//!
//! The tools must be installed (`make test` installs them): a missing one fails
//! the test with the package to install, it never passes silently.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, http, require_tool, visitor, Likeboard, RedisServer, SseClient, TempDir};

const WAIT: Duration = Duration::from_secs(5);

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with `from` replaced by `to`, which must occur exactly once (so the
/// test notices when the file it adapts changes shape).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected {from:?} once");
    text.replacen(from, to, 1)
}

/// The value of `Key=` in a unit or env file (the last one wins, as in systemd).
fn setting(text: &str, key: &str) -> String {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line"))
        .to_string()
}

/// `systemd-analyze verify` accepts the unit without a single warning. The
/// unit points at /usr/local/bin/likeboard, which verify insists exists; the
/// copy checked here points at the binary just built instead.
#[test]
fn systemd_unit_verifies() {
    let tool = require_tool("systemd-analyze", "systemd");
    let dir = TempDir::new("systemd");
    let unit = replace_once(
        &deploy_file("likeboard@.service"),
        "ExecStart=/usr/local/bin/likeboard ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_likeboard")),
    );
    std::fs::write(dir.0.join("likeboard@.service"), unit).unwrap();
    let out = Command::new(tool)
        .arg("verify")
        .arg(dir.0.join("likeboard@8081.service"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

/// LimitNOFILE and TasksMax leave room for the subscriber cap set in
/// likeboard.env: a descriptor and a thread per settled client plus the
/// reserves of src/limits.rs, so likeboard never has to lower its cap.
#[test]
fn systemd_limits_fit_the_subscriber_cap() {
    use likeboard::limits::{FDS_PER_CLIENT, RESERVED_FDS, RESERVED_THREADS, THREADS_PER_CLIENT};
    let unit = deploy_file("likeboard@.service");
    let env = deploy_file("likeboard.env");
    let cap: u64 = setting(&env, "LIKEBOARD_MAX_SUBSCRIBERS").parse().unwrap();
    for (key, per_client, reserved) in [
        ("LimitNOFILE", FDS_PER_CLIENT, RESERVED_FDS),
        ("TasksMax", THREADS_PER_CLIENT, RESERVED_THREADS),
    ] {
        let limit: u64 = setting(&unit, key).parse().unwrap();
        let needed = per_client * cap + reserved;
        assert!(
            limit >= needed,
            "{key}={limit} is below {per_client} x {cap} + {reserved}"
        );
    }
    assert_eq!(setting(&unit, "Restart"), "on-failure");
    assert_eq!(
        setting(&unit, "EnvironmentFile"),
        "-/etc/likeboard/likeboard.env"
    );
}

/// deploy/sysctl-likeboard.conf sets vm.max_map_count to the value the
/// startup warning names, and that value lets the unit's LimitNOFILE, not the
/// map count, decide the cap.
#[test]
fn sysctl_conf_lifts_the_map_limit() {
    use likeboard::limits::{
        FDS_PER_CLIENT, MAPS_PER_CLIENT, RESERVED_FDS, RESERVED_MAPS, SUGGESTED_MAX_MAP_COUNT,
    };
    let conf = deploy_file("sysctl-likeboard.conf");
    let settings: Vec<(&str, &str)> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("key = value"))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let value = SUGGESTED_MAX_MAP_COUNT.to_string();
    assert_eq!(settings, vec![("vm.max_map_count", value.as_str())]);
    let files: u64 = setting(&deploy_file("likeboard@.service"), "LimitNOFILE")
        .parse()
        .unwrap();
    let by_maps = (SUGGESTED_MAX_MAP_COUNT - RESERVED_MAPS) / MAPS_PER_CLIENT;
    let by_fds = (files - RESERVED_FDS) / FDS_PER_CLIENT;
    assert!(
        by_maps >= by_fds,
        "{by_maps} streams by maps, {by_fds} by descriptors"
    );
}

/// An nginx.conf for tests: everything under `dir`, the site included.
fn nginx_conf(dir: &Path, site: &Path, foreground: bool) -> PathBuf {
    let d = dir.display();
    let extra = if foreground {
        // One process that dies with the test, never a daemon left behind.
        "daemon off;\nmaster_process off;\n"
    } else {
        ""
    };
    let conf = format!(
        "{extra}pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         include {};\n}}\n",
        site.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// `nginx -t` accepts the site as it is shipped, inside an `http {}` block as
/// Debian's sites-enabled/ include puts it.
#[test]
fn nginx_site_passes_nginx_t() {
    let nginx = require_tool("nginx", "nginx");
    let dir = TempDir::new("nginx-t");
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx-likeboard.conf");
    let conf = nginx_conf(&dir.0, &site, false);
    let out = nginx_in(&nginx, &dir.0, &conf).arg("-t").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t failed:\n{stderr}");
    assert!(!stderr.contains("[warn]"), "nginx -t warned:\n{stderr}");
}

/// nginx with everything of its own (prefix, config, error log) under `dir`.
fn nginx_in(nginx: &Path, dir: &Path, conf: &Path) -> Command {
    let mut command = Command::new(nginx);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    command
}

/// nginx in the foreground, killed on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shipped site, on a loopback port, in front of two running instances.
struct Front {
    addr: std::net::SocketAddr,
    _nginx: Nginx,
    _dir: TempDir,
}

impl Front {
    /// Starts nginx with the shipped site, its upstreams pointed at `a` and `b`.
    fn start(a: &Likeboard, b: &Likeboard) -> Front {
        let nginx = require_tool("nginx", "nginx");
        let port = free_port();
        let site = deploy_file("nginx-likeboard.conf");
        let site = replace_once(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let site = replace_once(&site, "listen [::]:80;", "");
        let site = replace_once(
            &site,
            "server 127.0.0.1:8081 ",
            &format!("server {} ", a.addr),
        );
        let site = replace_once(
            &site,
            "server 127.0.0.1:8082 ",
            &format!("server {} ", b.addr),
        );
        let dir = TempDir::new("nginx-run");
        let site_path = dir.0.join("site.conf");
        std::fs::write(&site_path, site).unwrap();
        let conf = nginx_conf(&dir.0, &site_path, true);
        let nginx = Nginx(
            nginx_in(&nginx, &dir.0, &conf)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            let log = std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nginx never listened:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Front {
            addr,
            _nginx: nginx,
            _dir: dir,
        }
    }
}

/// The shipped site, on a loopback port in front of two instances on one
/// Redis: a browser-style like (Origin = Host) gets through, the stream
/// arrives unbuffered with events taken by either instance, /metrics is not
/// served to the public, and an oversized body gets a JSON 413 from nginx.
#[test]
fn nginx_site_carries_likes_and_streams() {
    let redis = RedisServer::start();
    let a = Likeboard::builder().redis(&redis).start();
    let b = Likeboard::builder().redis(&redis).start();
    let site = Front::start(&a, &b);
    let front = site.addr;

    let mut sse = SseClient::connect(front, "/events", &[]).unwrap();
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next_frame(WAIT).unwrap().raw, "retry: 3000\n\n");
    let id = a.add_comment("through nginx");
    assert_eq!(
        sse.next_event(WAIT).expect("the comment event").event(),
        Some("comment")
    );

    // The browser's Origin matches the Host nginx passes on, port included.
    let origin = format!("http://{front}");
    let cookie = format!("lb_visitor={}", visitor(1));
    let r = http(
        front,
        "POST",
        &format!("/api/comments/{id}/like"),
        &[
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
            ("Cookie", &cookie),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        sse.next_event(WAIT).expect("the like event").data_json()["score"],
        1
    );
    // A like taken directly by the other instance reaches the same stream.
    b.like("POST", id, &visitor(2));
    assert_eq!(
        sse.next_event(WAIT).expect("the second like").data_json()["score"],
        2
    );

    assert_eq!(http(front, "GET", "/metrics", &[], b"").status, 404);
    assert_eq!(http(front, "GET", "/healthz", &[], b"").status, 200);

    // A body over 16 KiB is refused by nginx itself, in likeboard's JSON format
    // rather than nginx's HTML page.
    let big = vec![b'x'; 17 * 1024];
    let json = [("Content-Type", "application/json"), ("Cookie", &cookie)];
    let r = http(front, "POST", "/api/comments", &json, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.headers.get("Content-Type"), Some("application/json"));
    assert!(r.json()["error"].is_string(), "{}", r.text());
}

/// Through the shipped nginx to two instances: 4,000 short event streams and
/// 4,000 ordinary requests at once, from 16 clients. Every ordinary request
/// is answered 200: nginx reuses its upstream connections and, once streams
/// end (a 1 s heartbeat finds them gone), their peer addresses; the guard must
/// never take an ordinary connection for a stream.
#[test]
fn churn_through_nginx_fails_no_ordinary_request() {
    use std::io::{Read, Write};
    let redis = RedisServer::start();
    let a = Likeboard::builder()
        .redis(&redis)
        .args(["--heartbeat-secs", "1"])
        .start();
    let b = Likeboard::builder()
        .redis(&redis)
        .args(["--heartbeat-secs", "1"])
        .start();
    let site = Front::start(&a, &b);
    let front = site.addr;
    let id = a.add_comment("churned");
    let workers: Vec<_> = (0..16)
        .map(|w| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..250 {
                    // A short stream: open, read its first frame, leave.
                    let mut s = std::net::TcpStream::connect(front).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
                        .unwrap();
                    let mut first = [0u8; 256];
                    match s.read(&mut first) {
                        Ok(n) if first[..n].starts_with(b"HTTP/1.1 200") => {}
                        other => failures.push(format!("stream {w}/{i}: {other:?}")),
                    }
                    drop(s);
                    // An ordinary request, alternating a read and a write.
                    let r = if i % 2 == 0 {
                        http(front, "GET", "/api/comments", &[], b"")
                    } else {
                        let cookie = format!("lb_visitor={}", visitor(w * 1000 + i));
                        http(
                            front,
                            "POST",
                            &format!("/api/comments/{id}/like"),
                            &[("Cookie", &cookie)],
                            b"",
                        )
                    };
                    if r.status != 200 {
                        failures.push(format!("request {w}/{i}: {} {}", r.status, r.text()));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

/// A like with no cookie sent to `to` from `source`, optionally with a
/// forged `X-Forwarded-For`; its status.
fn like_from(to: std::net::SocketAddr, source: &str, id: u64, forged: Option<&str>) -> u16 {
    let path = format!("/api/comments/{id}/like");
    let headers: Vec<(&str, &str)> = forged.map(|f| ("X-Forwarded-For", f)).into_iter().collect();
    support::request_from(to, source, "POST", &path, &headers).status
}

/// Behind the shipped nginx with the deploy kit's `LIKEBOARD_TRUSTED_PROXIES`,
/// cookie-less clients are told apart by their own address, and a forged
/// `X-Forwarded-For` changes nothing; without it, everyone is nginx.
#[test]
fn trusted_proxy_gives_the_real_client() {
    let redis = RedisServer::start();
    let env = deploy_file("likeboard.env");
    let trusted = setting(&env, "LIKEBOARD_TRUSTED_PROXIES");
    let a = Likeboard::builder()
        .redis(&redis)
        .args(["--trusted-proxy", &trusted])
        .start();
    let b = Likeboard::builder()
        .redis(&redis)
        .args(["--trusted-proxy", &trusted])
        .start();
    let site = Front::start(&a, &b);
    let id = a.add_comment("who likes this?");
    assert_eq!(like_from(site.addr, "127.0.0.2", id, None), 200);
    assert_eq!(like_from(site.addr, "127.0.0.3", id, None), 200);
    // The same client again, pretending to be someone else: still one visitor.
    assert_eq!(
        like_from(site.addr, "127.0.0.2", id, Some("203.0.113.9")),
        200
    );
    let score = |lb: &Likeboard| {
        let list = lb.get("/api/comments").json();
        list["comments"][0]["score"].as_u64().unwrap()
    };
    assert_eq!(score(&a), 2, "two clients, one of them twice");

    // Without trusting nginx, every client is 127.0.0.1: one visitor.
    let c = Likeboard::builder().redis(&redis).start();
    let d = Likeboard::builder().redis(&redis).start();
    let untrusting = Front::start(&c, &d);
    let other = c.add_comment("and this?");
    assert_eq!(like_from(untrusting.addr, "127.0.0.2", other, None), 200);
    assert_eq!(like_from(untrusting.addr, "127.0.0.3", other, None), 200);
    let list = c.get("/api/comments").json();
    let scores: Vec<u64> = list["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["score"].as_u64().unwrap())
        .collect();
    assert!(
        scores.contains(&1),
        "all of nginx's clients were one visitor: {scores:?}"
    );
}

/// Through the shipped nginx to two instances with the deploy kit's settings
/// (its trusted proxies and write rate; the visitor limit at its default),
/// keeping the visitor key in their Redis as deployed: 150 visitors (three
/// classrooms of 40, each behind one address, and 30 clients on addresses of
/// their own) each fetch the board, get an issued cookie, and like once,
/// all within a few seconds; none gets a `429`, and every like counts. One
/// client without a cookie that likes over and over gets a `429` once past
/// its allowance, and a forged `X-Forwarded-For` gets it no further: not
/// through nginx, not sent straight to an instance (an untrusted peer, whose
/// header is ignored, so it cannot pass the refusal on to another address
/// either).
#[test]
fn issued_visitors_through_nginx_and_one_over_its_allowance() {
    let redis = RedisServer::start();
    let env = deploy_file("likeboard.env");
    let settings = [
        "--trusted-proxy".to_string(),
        setting(&env, "LIKEBOARD_TRUSTED_PROXIES"),
        "--write-rate".to_string(),
        setting(&env, "LIKEBOARD_WRITE_RATE"),
    ];
    let start = || {
        Likeboard::builder()
            .redis(&redis)
            .store_visitor_key()
            .args(&settings)
            .start()
    };
    let (a, b) = (start(), start());
    let site = Front::start(&a, &b);
    let front = site.addr;
    let id = a.add_comment("like me once each");

    // Three classrooms behind one address each, and 30 single clients.
    let sources: Vec<String> = (0..150)
        .map(|v| match v {
            0..120 => format!("127.0.0.{}", 10 + v / 40),
            _ => format!("127.0.0.{}", 20 + v),
        })
        .collect();
    let started = Instant::now();
    let visitors: Vec<_> = sources
        .into_iter()
        .map(|source| {
            std::thread::spawn(move || {
                let page = support::request_from(front, &source, "GET", "/api/comments", &[]);
                assert_eq!(page.status, 200, "{}", page.text());
                let cookie = page
                    .headers
                    .get("Set-Cookie")
                    .unwrap_or_else(|| panic!("no cookie issued to a visitor at {source}"))
                    .split(';')
                    .next()
                    .unwrap()
                    .to_string();
                let path = format!("/api/comments/{id}/like");
                let origin = format!("http://{front}");
                let headers = [("Cookie", cookie.as_str()), ("Origin", origin.as_str())];
                support::request_from(front, &source, "POST", &path, &headers).status
            })
        })
        .collect();
    let statuses: Vec<u16> = visitors.into_iter().map(|v| v.join().unwrap()).collect();
    let took = started.elapsed();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(took < Duration::from_secs(5), "150 visitors took {took:?}");
    let score = a.get("/api/comments").json()["comments"][0]["score"].clone();
    assert_eq!(score, 150, "every visitor's like counts once");

    // A client without a cookie: its address is its visitor, with an
    // allowance at each instance, so a 429 comes after at least one
    // instance's worth of likes and before both instances' (plus what
    // refills meanwhile).
    let rate: usize = setting(&env, "LIKEBOARD_WRITE_RATE").parse().unwrap();
    let hammer = "127.0.0.200";
    let hammering = Instant::now();
    let first_refusal = (0..3 * rate)
        .position(|_| like_from(front, hammer, id, None) == 429)
        .expect("a 429 for a client over its allowance");
    // Each instance's bucket refills at rate/60 a second meanwhile.
    let refilled = 2 * (rate * hammering.elapsed().as_millis() as usize / 60_000 + 1);
    assert!(
        (rate..=2 * rate + refilled).contains(&first_refusal),
        "refused after {first_refusal} likes"
    );
    // Until both instances refuse it (least_conn picks either).
    let mut refused_in_a_row = 0;
    for _ in 0..2 * rate {
        match like_from(front, hammer, id, None) {
            429 => refused_in_a_row += 1,
            _ => refused_in_a_row = 0,
        }
        if refused_in_a_row == 10 {
            break;
        }
    }
    assert_eq!(refused_in_a_row, 10, "both instances refuse it");

    // Of 4 likes from the spent address, how many got through: each
    // instance's bucket refills one token every 60/rate s, so one may come
    // due in between at each; an address with a fresh allowance gets 4.
    let through = |to, forged| {
        (0..4)
            .filter(|_| like_from(to, hammer, id, forged) == 200)
            .count()
    };
    // A forged header through nginx: nginx appends the real client, which
    // is what counts.
    for forged in ["203.0.113.9", "127.0.0.201"] {
        assert!(through(front, Some(forged)) <= 2, "{forged} was believed");
    }
    // Straight to an instance from an untrusted peer: the header is ignored,
    // both ways round.
    assert!(
        through(a.addr, Some("203.0.113.9")) <= 1,
        "believed from an untrusted peer"
    );
    assert_eq!(like_from(a.addr, "127.0.0.202", id, Some(hammer)), 200);
    // Others behind nginx are not held back by it.
    assert_eq!(like_from(front, "127.0.0.203", id, None), 200);
}
