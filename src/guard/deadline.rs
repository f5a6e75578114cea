//! Deadlines and byte budgets: the time and the bytes a connection may take to
//! deliver each request, which tiny_http does not bound.
//!
//! The trap (tiny_http 0.12, `client.rs`): each connection's requests are read
//! on a thread of tiny_http's pool with no timeout and no size limit. A client
//! that sends half a request and waits holds that thread and its descriptors
//! for ever; one that drips a byte every few seconds too; one that sends an
//! endless header line makes that thread buffer all of it.
//!
//! What we do instead: a connection gets [`Limits::timeout`] from its opening,
//! from the last reply it was sent, or from the moment a worker took its
//! request, to deliver the next request, and [`Limits::max_bytes`] received
//! meanwhile. Replies are seen in the kernel's own counters (`TCP_INFO`'s bytes
//! sent), so no note from a worker is needed to know that a request ended.
//! This file only decides; `mod.rs` acts on the verdict.

use std::time::{Duration, Instant};

use super::sys::Counters;
use crate::error::Error;

/// What the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to deliver a complete request (head and body) after the connection
    /// opens or the previous request was answered; also the keep-alive idle timeout.
    pub timeout: Duration,
    /// Bytes a connection may send towards one request before it is cut off.
    pub max_bytes: u64,
}

/// One connection's clock: where its current request's time and bytes count from.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When the current deadline started.
    since: Instant,
    /// Bytes received when the current request began.
    baseline: u64,
    /// Bytes sent at the last look; a change means a reply went out.
    sent: u64,
    /// Bytes tiny_http had read when the last reply went out: anything read
    /// beyond it belongs to a request nobody has answered yet.
    answered: u64,
}

/// What to do with a connection now.
#[derive(Debug)]
pub enum Verdict {
    /// Within its limits (or it may have a request waiting for a worker).
    Fine,
    /// Over a limit and never answered, with no worker holding a request of it:
    /// send this error raw and close it.
    Refuse(Error),
    /// Over a limit after it was answered, or while a worker holds a request of
    /// it: end the reading (a reply being written still goes out).
    ShutRead,
}

impl Clock {
    /// The clock of a connection first seen now. If it was answered before the
    /// guard first saw it, what it sent so far counts as answered.
    pub fn new(now: Instant, c: &Counters) -> Clock {
        let answered = c.sent > 0;
        Clock {
            since: now,
            baseline: if answered { c.received } else { 0 },
            sent: c.sent,
            answered: if answered { c.consumed() } else { 0 },
        }
    }

    /// Takes in the counters of a look: a reply that went out starts the next
    /// request's clock and budget.
    pub fn observe(&mut self, now: Instant, c: &Counters) {
        if c.sent != self.sent {
            self.sent = c.sent;
            self.since = now;
            self.baseline = c.received;
            self.answered = c.consumed();
        }
    }

    /// A worker took a request of this connection at `at`.
    pub fn taken(&mut self, at: Instant) {
        self.since = self.since.max(at);
    }

    /// Whether tiny_http has read bytes of a request that nobody has answered.
    pub fn unanswered(&self, c: &Counters) -> bool {
        c.consumed() > self.answered
    }

    /// Whether nothing was ever sent on this connection.
    pub fn never_answered(&self) -> bool {
        self.sent == 0
    }

    /// The verdict for a connection with counters `c`. `busy`: a worker holds a
    /// request of it. `may_be_queued`: a request of it may sit in tiny_http's
    /// queue waiting for a worker (then nothing is written to it raw).
    pub fn verdict(
        &self,
        now: Instant,
        c: &Counters,
        limits: &Limits,
        busy: bool,
        may_be_queued: bool,
    ) -> Verdict {
        let too_slow = now.saturating_duration_since(self.since) > limits.timeout;
        let too_big = c.received.saturating_sub(self.baseline) > limits.max_bytes;
        if !too_slow && !too_big {
            return Verdict::Fine;
        }
        if !self.never_answered() || busy {
            return Verdict::ShutRead;
        }
        if may_be_queued {
            return Verdict::Fine; // look again: a worker may take it any moment
        }
        Verdict::Refuse(if too_big {
            Error::HeaderTooLarge
        } else {
            Error::RequestTimeout
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        timeout: Duration::from_secs(10),
        max_bytes: 1000,
    };

    fn counters(received: u64, sent: u64, unread: u64) -> Counters {
        Counters {
            received,
            sent,
            unread,
            quiet_ms: 0,
        }
    }

    /// A connection that never delivers a request is refused with 408 once its
    /// time is up, not before.
    #[test]
    fn a_silent_connection_times_out() {
        let t0 = Instant::now();
        let c = counters(10, 0, 0);
        let clock = Clock::new(t0, &c);
        let at = |s| t0 + Duration::from_secs(s);
        assert!(matches!(
            clock.verdict(at(9), &c, &LIMITS, false, false),
            Verdict::Fine
        ));
        assert!(matches!(
            clock.verdict(at(11), &c, &LIMITS, false, false),
            Verdict::Refuse(Error::RequestTimeout)
        ));
    }

    /// Too many bytes towards one request: 431 at once.
    #[test]
    fn too_many_bytes_are_refused() {
        let t0 = Instant::now();
        let clock = Clock::new(t0, &counters(0, 0, 0));
        let c = counters(5000, 0, 0);
        assert!(matches!(
            clock.verdict(t0, &c, &LIMITS, false, false),
            Verdict::Refuse(Error::HeaderTooLarge)
        ));
    }

    /// Each reply starts the next request's time and byte budget; an idle
    /// keep-alive connection past its time has its reading ended, not a raw reply.
    #[test]
    fn replies_restart_the_clock() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut clock = Clock::new(t0, &counters(0, 0, 0));
        let answered = counters(900, 300, 0);
        clock.observe(at(8), &answered);
        assert!(matches!(
            clock.verdict(at(12), &answered, &LIMITS, false, false),
            Verdict::Fine
        ));
        assert!(!clock.unanswered(&answered));
        let next = counters(1800, 300, 0);
        assert!(matches!(
            clock.verdict(at(12), &next, &LIMITS, false, false),
            Verdict::Fine
        ));
        assert!(clock.unanswered(&next));
        assert!(matches!(
            clock.verdict(at(19), &next, &LIMITS, false, false),
            Verdict::ShutRead
        ));
    }

    /// While a request may be waiting for a worker nothing is written raw; while
    /// a worker holds one only the reading is ended.
    #[test]
    fn never_writes_over_a_reply() {
        let t0 = Instant::now();
        let c = counters(10, 0, 0);
        let clock = Clock::new(t0, &c);
        let late = t0 + Duration::from_secs(11);
        assert!(matches!(
            clock.verdict(late, &c, &LIMITS, false, true),
            Verdict::Fine
        ));
        assert!(matches!(
            clock.verdict(late, &c, &LIMITS, true, false),
            Verdict::ShutRead
        ));
    }
}
