//! Raw-byte requests of the kinds tiny_http 0.12 mishandles (declared lengths
//! it would try to allocate, chunk sizes, version lines it deadlocks on,
//! prefaces of other protocols, line endings it cannot split): each gets its
//! documented answer promptly, and after every single one the process is
//! alive and still serving `/api/comments`. The README's limits section
//! lists what each kind gets.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{find, raw_status, Backend};

/// What a request must get back.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Our reply: this status and a JSON `{"error": "..."}` body.
    Json(u16),
    /// A reply with this status and no JSON requirement (tiny_http's own, or a success).
    Status(u16),
}

/// How long any answer here may take: the slowest are heads that stop short,
/// answered once the client has been quiet for 0.8 s (see src/guard/heads.rs).
const PROMPT: Duration = Duration::from_millis(1500);

const POST: &str = "POST /api/comments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";

/// A POST that declares `length` bytes of body and sends none, optionally with
/// `Expect: 100-continue` and `Connection: close`.
fn declared(length: &str, expect: bool, close: bool) -> Vec<u8> {
    let mut head = String::from(POST);
    if expect {
        head.push_str("Expect: 100-continue\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    head.into_bytes()
}

fn post_with(headers: &str, body: &str) -> Vec<u8> {
    format!("{POST}Connection: close\r\n{headers}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post_with("Transfer-Encoding: chunked\r\n", body)
}

/// Every case: a name, the bytes, what it must get.
fn cases() -> Vec<(String, Vec<u8>, Want)> {
    use Want::*;
    let mut cases: Vec<(String, Vec<u8>, Want)> = Vec::new();
    // Declared lengths: tiny_http would discard each by allocating it whole.
    for length in [
        "10000000",
        "1000000000",
        "1000000000000",
        "9223372036854775807",
    ] {
        for expect in [false, true] {
            for close in [false, true] {
                let name = format!(
                    "Content-Length {length}{}{}",
                    if expect { ", Expect" } else { "" },
                    if close { ", close" } else { ", keep-alive" }
                );
                cases.push((name, declared(length, expect, close), Json(413)));
            }
        }
    }
    let more: Vec<(&str, Vec<u8>, Want)> = vec![
        ("Content-Length 2^64-1", declared("18446744073709551615", false, true), Json(413)),
        ("Content-Length beyond 64 bits", declared("1000000000000000000000000000000", false, true), Json(400)),
        ("Content-Length -1", declared("-1", false, true), Json(400)),
        ("Content-Length in hex", declared("0x10", false, true), Json(400)),
        ("Content-Length with a space inside", declared("1 0", false, true), Json(400)),
        ("two Content-Lengths that disagree", post_with("Content-Length: 2\r\nContent-Length: 20\r\n", "{}"), Json(400)),
        ("Content-Length and chunked together", post_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), Json(400)),
        ("a body shorter than declared", post_with("Content-Length: 100\r\n", "{}"), Json(400)),
        ("a GET declaring a terabyte", b"GET /api/comments HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n".to_vec(), Json(413)),
        ("an event stream declaring a terabyte", b"GET /events HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n".to_vec(), Json(413)),
        // Chunk sizes.
        ("a chunk of 2^64-1 bytes", chunked("ffffffffffffffff\r\nabc"), Json(400)),
        ("a chunk size beyond 64 bits", chunked("1ffffffffffffffffff\r\nabc"), Json(400)),
        ("a negative chunk size", chunked("-5\r\nabc"), Json(400)),
        ("a chunk size that is not hex", chunked("zz\r\nabc"), Json(400)),
        ("chunks without the last one", chunked("2\r\n{}\r\n"), Json(400)),
        ("chunks adding up past the limit", chunked_over_limit(), Json(413)),
        ("a well-formed chunked comment", chunked("13\r\n{\"content\":\"hello\"}\r\n0\r\n\r\n"), Status(201)),
        ("a chunk with an extension", chunked("13;ext=1\r\n{\"content\":\"hello\"}\r\n0\r\n\r\n"), Status(201)),
        ("Transfer-Encoding gzip", post_with("Transfer-Encoding: gzip\r\n", "abc"), Json(400)),
        // Version lines.
        ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n".to_vec(), Json(505)),
        ("HTTP/3.0", b"GET /api/comments HTTP/3.0\r\nConnection: close\r\n\r\n".to_vec(), Json(505)),
        ("HTTP/0.9", b"GET / HTTP/0.9\r\n\r\n".to_vec(), Json(505)),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\n\r\n".to_vec(), Status(400)),
        ("a lower-case version", b"GET / http/1.1\r\n\r\n".to_vec(), Status(400)),
        ("HTTP/2 without a minor", b"GET / HTTP/2\r\n\r\n".to_vec(), Status(400)),
        ("no version at all", b"GET /\r\n".to_vec(), Status(400)),
        // Prefaces of other protocols.
        ("the h2 connection preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Json(505)),
        ("the h2 preface and a SETTINGS frame", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00".to_vec(), Json(505)),
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), Status(400)),
        ("a PROXY protocol v1 line", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), Status(400)),
        ("a PROXY protocol v2 signature", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec(), Status(400)),
        // Line endings.
        ("bare LF", b"GET /api/comments HTTP/1.1\nHost: t\n\n".to_vec(), Json(400)),
        ("bare CR", b"GET / HTTP/1.1\rHost: t\r\r".to_vec(), Json(400)),
        ("CRLF then a bare LF", b"GET / HTTP/1.1\r\nHost: t\n\r\n".to_vec(), Json(400)),
        ("a head of bare LFs only", b"\n\n".to_vec(), Json(400)),
        ("a head that ends in LF", b"GET / HTTP/1.1\r\nHost: t\r\n\n".to_vec(), Json(400)),
        // A few of our own.
        ("a request sent half and left", b"GET /api/comments HTTP/1.1\r\nHost: t\r\n".to_vec(), Json(400)),
        ("two pipelined requests", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(), Status(200)),
        ("an unknown Expect", post_with("Expect: 200-ok\r\nContent-Length: 2\r\n", "{}"), Status(417)),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n".to_vec(), Json(404)),
        ("an absolute URI", b"GET http://t/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(), Json(404)),
    ];
    cases.extend(more.into_iter().map(|(n, b, w)| (n.to_string(), b, w)));
    cases
}

/// A chunked body of 20 KiB, over the 16 KiB limit.
fn chunked_over_limit() -> Vec<u8> {
    let mut body = String::new();
    for _ in 0..5 {
        body.push_str(&format!("1000\r\n{}\r\n", " ".repeat(4096)));
    }
    body.push_str("0\r\n\r\n");
    chunked(&body)
}

/// Sends `bytes` and reads the first reply: its head, and its body when it says
/// how long it is. Returns the reply and how long its head took to come.
fn first_reply(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut stream = TcpStream::connect(addr).expect("connecting to likeboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut took = None;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&reply, b"\r\n\r\n") {
            took.get_or_insert_with(|| started.elapsed());
            let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| reply.len() >= end + 4 + n) {
                break;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    (reply, took.unwrap_or_else(|| started.elapsed()))
}

/// Every case gets its answer within [`PROMPT`]; the server is alive and
/// serving `/api/comments` after every single one.
#[test]
fn every_raw_request_is_answered_and_the_server_lives_on() {
    let backend = Backend::redis();
    let server = backend.start(&["--seed-routes", "--request-timeout-secs", "3"]);
    let cases = cases();
    assert!(cases.len() >= 50, "the suite has {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let (reply, took) = first_reply(server.addr, bytes);
        let (status, body) = raw_status(&reply);
        let json_error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|v| v["error"].is_string());
        let ok = match want {
            Want::Json(s) => status == Some(*s) && json_error,
            Want::Status(s) => status == Some(*s),
        };
        if !ok || took > PROMPT {
            let shown = String::from_utf8_lossy(&reply[..reply.len().min(300)]).into_owned();
            failures.push(format!(
                "{name}: wanted {want:?} within {PROMPT:?}, got {shown:?} after {took:?}"
            ));
        }
        let list = server.get("/api/comments");
        assert_eq!(
            list.status,
            200,
            "not serving /api/comments after {name}: {}",
            server.stderr()
        );
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A body refused unread ends its keep-alive connection at once, so the
/// client learns the rest will not be read (and no worker waits for it).
#[test]
fn refused_bodies_close_their_connection_at_once() {
    let backend = Backend::memory();
    let server = backend.start(&["--request-timeout-secs", "30"]);
    for expect in [false, true] {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(&declared("1000000000000", expect, false))
            .unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(
            raw_status(&reply).0,
            Some(413),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            find(&reply, b"100 Continue").is_none(),
            "no 100 Continue for a refused body"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "closed after {:?}",
            started.elapsed()
        );
    }
}

/// Four times as many requests as workers, each declaring a body it never
/// sends: the workers reading them are freed once the clients go quiet, and
/// nobody else waits behind them for long.
#[test]
fn unsent_bodies_hold_no_worker() {
    let backend = Backend::memory();
    let server = backend.start(&["--workers", "2", "--request-timeout-secs", "30"]);
    let held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            // Within our limit but over what tiny_http buffers: read by a worker.
            s.write_all(&declared("5000", false, false)).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    assert_eq!(server.get("/api/comments").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served after {:?}",
        started.elapsed()
    );
    drop(held);
}
