//! Answering request heads that tiny_http read but will never serve.
//!
//! Two traps (tiny_http 0.12, `client.rs`), both of which leave a client with
//! no answer at all:
//! - A request line with `HTTP/2.0` or `HTTP/3.0` (an h2c client's
//!   `PRI * HTTP/2.0` preface too) parses; tiny_http then writes its own `505`
//!   through the *next* response writer, which waits for the request's own
//!   writer to finish, and that writer lives in the very frame that waits: the
//!   pool thread deadlocks. Nothing outside can wake it; its two descriptors
//!   stay open for the life of the process.
//! - Lines ending in a bare `\n` (RFC 9112 lets a server accept them) never
//!   end a line for tiny_http, which only splits on `\r\n`: it waits for more.
//!
//! Neither is visible in the bytes by the time we could look (tiny_http has
//! read them), but both are visible in what the connection does: tiny_http has
//! read bytes of a request that no worker was given, nothing was answered, and
//! the client has been quiet for [`STALL`]. Then the guard tells the two apart
//! by whether any thread is still blocked reading the socket
//! (`/proc/self/task/*/syscall`): nobody reading means tiny_http holds a whole
//! head it will not serve (`505`, the only such head); somebody reading means
//! the head never completed (`400`, which names the likely cause). The reply is
//! written raw, because nothing else was ever written on that connection, and
//! the connection is closed in both directions.

use std::time::Duration;

use super::deadline::Clock;
use super::sys::{self, Counters};
use crate::error::Error;

/// How long a client may pause in the middle of a request head before it is
/// told the head is unreadable. Browsers and HTTP libraries send a head in one
/// write; a pause this long mid-head means a bare-LF client (which will never
/// finish), a head tiny_http is stuck on, a slowloris, or a person typing a
/// request by hand, who is better served by the hint in the reply than by the
/// request timeout. Checked at every walk, so the answer comes within about a
/// second of the last byte; a client on a link that loses the second segment
/// of a long head for longer than this is refused too (heads over one segment
/// are rare).
pub const STALL: Duration = Duration::from_millis(800);

/// What to answer a connection whose head tiny_http cannot serve, if that is
/// what it is. `busy`: a worker holds a request of it; `may_be_queued`: a
/// request of it may be waiting for a worker. `fds`: its descriptor numbers.
pub fn judge(
    c: &Counters,
    clock: &Clock,
    busy: bool,
    may_be_queued: bool,
    fds: &[i32],
) -> Option<Error> {
    let stalled = u128::from(c.quiet_ms) >= STALL.as_millis();
    if !clock.never_answered() || busy || may_be_queued || !stalled || !clock.unanswered(c) {
        return None;
    }
    Some(if sys::someone_reads(fds) {
        Error::BadRequest(
            "the request stopped before its end: a head ends with an empty line, \
             every line ends in CRLF (\\r\\n), and a body is as long as its \
             Content-Length (try curl, or nc -C)"
                .into(),
        )
    } else {
        Error::VersionNotSupported
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use super::*;

    fn counters(received: u64, unread: u64, quiet_ms: u32) -> Counters {
        Counters {
            received,
            sent: 0,
            unread,
            quiet_ms,
        }
    }

    /// Only a connection whose read bytes no worker has, unanswered and quiet
    /// for STALL, is judged; anything that may still be served is left alone.
    #[test]
    fn judges_only_stalled_unserved_heads() {
        let clock = Clock::new(Instant::now(), &counters(0, 0, 0));
        let stalled = counters(40, 0, 2000);
        let fds = [i32::MAX]; // no thread reads it
        assert!(
            judge(&counters(40, 0, 100), &clock, false, false, &fds).is_none(),
            "not quiet long enough"
        );
        assert!(
            judge(&counters(40, 40, 2000), &clock, false, false, &fds).is_none(),
            "nothing read yet"
        );
        assert!(
            judge(&stalled, &clock, true, false, &fds).is_none(),
            "a worker has it"
        );
        assert!(
            judge(&stalled, &clock, false, true, &fds).is_none(),
            "it may wait for a worker"
        );
        let mut answered = clock;
        answered.observe(
            Instant::now(),
            &Counters {
                sent: 100,
                ..stalled
            },
        );
        assert!(
            judge(&stalled, &answered, false, false, &fds).is_none(),
            "answered before"
        );
        let verdict = judge(&stalled, &clock, false, false, &fds).map(|e| e.status());
        assert_eq!(
            verdict,
            Some(505),
            "a whole head tiny_http holds and will not serve"
        );
    }

    /// A head that some thread is still reading never ended: 400, with the hint.
    #[test]
    fn a_head_still_being_read_is_a_400() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let fd = server_side.as_raw_fd();
        let reader = std::thread::spawn(move || {
            let _ = server_side.read_exact(&mut [0u8; 1]);
            server_side
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        let clock = Clock::new(Instant::now(), &counters(0, 0, 0));
        let error = judge(&counters(40, 0, 2000), &clock, false, false, &[fd]).unwrap();
        assert_eq!(error.status(), 400);
        assert!(error.body().contains("CRLF"), "{}", error.body());
        drop(client);
        drop(reader.join().unwrap());
    }
}
