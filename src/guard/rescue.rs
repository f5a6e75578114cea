//! Rescuing connections that tiny_http's pool forgot (a lost wake-up).
//!
//! The trap (tiny_http 0.12, `util/task_pool.rs`): each new connection becomes
//! a task for the pool, and a task is a connection's whole life. `spawn` pushes
//! the task and calls `notify_one` when its count of waiting threads is above
//! zero; but a woken thread lowers that count only once it has re-taken the
//! lock. A second connection queued in that window finds the count still up,
//! is pushed, and its `notify_one` wakes nobody. It then waits until some pool
//! thread finishes a task, and threads on keep-alive connections finish only
//! when browsers close them, minutes later.
//!
//! The signal cannot be mistaken: a connection whose received bytes are all
//! still unread (`FIONREAD` equals `TCP_INFO`'s bytes received) has never been
//! read from, so no pool thread has it; a thread that has it reads the first
//! request within microseconds of its arrival. Seen so at two looks
//! [`CONFIRM`] apart, it is queued and forgotten. The cure is a "nudge": the
//! guard opens a connection to the server and closes it at once. Either the
//! pool has no idle thread and starts one for the nudge, which finishes at once
//! and takes the oldest queued task; or an idle thread is woken and takes the
//! oldest. Either way the queue moves, oldest first, and the guard nudges
//! again at each look until nothing is forgotten. Connections that were read
//! from once keep their thread for life and can never be forgotten again, so
//! only never-read connections are watched, every [`QUICK`] while any exist.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::sys::Counters;

/// How often never-read connections are looked at. A forgotten request waits
/// at most about two of these; each look costs a few syscalls per watched
/// connection (only those never read from, a handful in normal traffic).
pub const QUICK: Duration = Duration::from_millis(10);
/// How long a connection's bytes must sit unread before it counts as
/// forgotten: long enough for a pool thread that has it to be scheduled on a
/// busy machine, short against the 100 ms a person notices. A false alarm
/// costs one nudge (a connect and a close), nothing more.
pub const CONFIRM: Duration = Duration::from_millis(8);
/// Most nudges per look: each frees at least one forgotten connection, and
/// looks repeat every [`QUICK`]; a connect storm must not be fed by our own.
pub const MAX_NUDGES: usize = 32;

/// Whether a connection has never been read from (and so has no pool thread).
pub fn never_read(c: &Counters) -> bool {
    c.consumed() == 0
}

/// Tracks when a never-read connection was first seen with a request in it;
/// returns true once that has lasted [`CONFIRM`].
pub fn forgotten(c: &Counters, unread_since: &mut Option<Instant>, now: Instant) -> bool {
    if c.received == 0 || !never_read(c) {
        *unread_since = None;
        return false;
    }
    let since = *unread_since.get_or_insert(now);
    now.saturating_duration_since(since) >= CONFIRM
}

/// Where a nudge connects: the listener's own address, or loopback when it
/// listens on every address.
pub fn nudge_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match local {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Opens a connection to the server and closes it at once (see the module doc).
pub fn nudge(to: SocketAddr) {
    if let Err(e) = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
        log::debug!("guard: nudge to {to} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(received: u64, unread: u64) -> Counters {
        Counters {
            received,
            sent: 0,
            unread,
            quiet_ms: 0,
        }
    }

    /// Unread bytes on a never-read connection count as forgotten only once
    /// they have waited CONFIRM; a connection read from once never does.
    #[test]
    fn forgotten_needs_confirmation() {
        let t0 = Instant::now();
        let mut since = None;
        assert!(
            !forgotten(&counters(0, 0), &mut since, t0),
            "nothing sent yet"
        );
        assert!(!forgotten(&counters(40, 40), &mut since, t0), "first sight");
        assert!(forgotten(&counters(40, 40), &mut since, t0 + CONFIRM));
        assert!(
            !forgotten(&counters(80, 40), &mut since, t0 + 2 * CONFIRM),
            "read from"
        );
        assert_eq!(since, None);
    }
}
