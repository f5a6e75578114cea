//! Lost wake-ups in tiny_http 0.12's pool (see src/guard/rescue.rs): a burst
//! of keep-alive connections to a freshly started server, then a request on
//! each in turn, as a load generator or a classroom of browsers does. Without
//! the guard's rescue some of these requests wait for seconds, or until the
//! request deadline closes their connection unanswered.

mod support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{read_response, Backend};

/// How long a request on a connection tiny_http forgot may wait for the
/// rescue (it finds one within about 30 ms).
const ANSWERED_WITHIN: Duration = Duration::from_millis(100);

/// 30 fresh servers on one Redis; each gets 32 keep-alive connections at
/// once, then `GET /` on each in turn: every request is answered within
/// 100 ms, every time.
#[test]
fn keep_alive_bursts_on_fresh_servers_are_answered_at_once() {
    let backend = Backend::redis();
    let mut slow = Vec::new();
    let mut worst = Duration::ZERO;
    for run in 0..30 {
        let server = backend.start(&["--seed-routes"]);
        let conns: Vec<TcpStream> = (0..32)
            .map(|_| TcpStream::connect(server.addr).expect("connecting"))
            .collect();
        for (i, conn) in conns.iter().enumerate() {
            conn.set_read_timeout(Some(Duration::from_secs(15)))
                .unwrap();
            let started = Instant::now();
            (&*conn)
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let reply = read_response(&mut BufReader::new(conn));
            let took = started.elapsed();
            worst = worst.max(took);
            assert_eq!(reply.status, 200, "run {run}, connection {i}");
            if took > ANSWERED_WITHIN {
                slow.push(format!("run {run}, connection {i}: {took:?}"));
            }
        }
    }
    assert!(
        slow.is_empty(),
        "slower than {ANSWERED_WITHIN:?}:\n{}",
        slow.join("\n")
    );
    eprintln!("worst first reply over 30 runs: {worst:?}");
}
