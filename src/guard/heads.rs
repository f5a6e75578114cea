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
