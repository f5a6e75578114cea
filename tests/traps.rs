//! The known traps of the design, each pinned by a test: the listen backlog,
//! and the server exiting non-zero (not silently 0) when tiny_http's accept
//! loop dies. (Buffered streams and HTTP/1.0 are in sse.rs; the 1,000-connect
//! burst too.)

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::Likeboard;

/// The listener is built with a large backlog, not std's 128: `ss` reports a
/// listening socket's backlog in its Send-Q column.
#[test]
fn listen_backlog_is_large() {
    let server = Likeboard::start(&[]);
    let port = server.addr.port();
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("running ss (iproute2; `make test` installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ss output {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().parse().unwrap_or(128))
        .unwrap_or(128);
    assert_eq!(
        backlog,
        somaxconn.min(4096),
        "backlog as the kernel allows, capped at ours"
    );
    assert!(
        backlog > 128,
        "more than std's 128 (somaxconn is {somaxconn})"
    );
}

/// When tiny_http's accept thread dies (here: out of file descriptors), the
/// server logs it and exits non-zero so a supervisor restarts it.
#[test]
fn accept_loop_death_exits_non_zero() {
    let mut server = Likeboard::builder().after_shell("ulimit -n 48").start();
    // Idle connections each take a descriptor until accept() fails with EMFILE.
    let _held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(!status.success(), "exit status {status:?}");
    let log = server.stderr();
    assert!(log.contains("accept loop ended"), "{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("accept loop ended"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Keep-alive connections opened in a burst are all served promptly. tiny_http's
/// pool can queue one and forget it until another connection closes (browsers
/// keep theirs open for minutes); the connection guard notices the unread
/// request and nudges the pool.
#[test]
fn keep_alive_burst_all_served() {
    support::raise_fd_limit();
    let server = Likeboard::start(&[]);
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                use std::io::{BufReader, Write};
                barrier.wait();
                let stream = TcpStream::connect(addr).unwrap();
                let started = std::time::Instant::now();
                (&stream)
                    .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                    .unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(6)))
                    .unwrap();
                let mut reader = BufReader::new(&stream);
                let answered = support::read_head(&mut reader).is_ok();
                let waited = started.elapsed();
                // Stay open, as a browser's keep-alive connection does, until all are done.
                std::thread::sleep(Duration::from_secs(1));
                (answered, waited)
            })
        })
        .collect();
    let results: Vec<(bool, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let slow: Vec<_> = results
        .iter()
        .filter(|(ok, waited)| !ok || *waited > Duration::from_secs(3))
        .collect();
    assert!(
        slow.is_empty(),
        "{} of 64 not answered within 3 s: {slow:?}",
        slow.len()
    );
}
