//! The connection guard: one thread that watches every client connection and
//! covers for what tiny_http 0.12 lacks or gets wrong. Its jobs, a file each:
//!
//! - `deadline.rs`: a deadline and a byte budget for every request (slowloris,
//!   endless headers), answered `408`/`431` or cut.
//! - `release.rs`: what workers tell the guard, keyed safely; freeing the pool
//!   thread parked on an event stream (and shutting a read half on demand).
//! - `rescue.rs`: connections tiny_http's pool forgot (a lost wake-up), nudged.
//! - `heads.rs`: request heads tiny_http read but will never serve (HTTP/2 and
//!   later, bare-LF lines), answered `505`/`400`.
//! - `sys.rs`: the raw descriptor calls, each wrapped once.
//! - `look.rs`: the thread itself, which looks and hands each job its facts.
//!
//! How it sees connections: it walks the process's descriptor numbers, knows
//! each socket by its inode (unique while it is open), and acts only through
//! its own duplicate of a descriptor, checked to be the same socket. The
//! kernel's counters for each connection (`TCP_INFO`, `FIONREAD`) say what it
//! received, what tiny_http read and what we sent, which is all the deadlines,
//! the rescue and the head checks need. Workers add only what the kernel cannot
//! know: that a worker holds a request of a connection, or that it now carries
//! an event stream.
//!
//! When it looks: every job every `TICK` (250 ms); a walk for new connections
//! every `WALK` (20 ms); the never-read connections every `rescue::QUICK`
//! (10 ms) while any exist; and every job at once when a worker asks it to free a stream's
//! thread or to end a read half. (Polling the listener to hear of new
//! connections does not work: a thread blocked in `accept`, tiny_http's, takes
//! the wake-up.)
//!
//! The guard writes a few raw HTTP replies (`408`, `431`, `400`, `505`) on
//! connections where nothing else was ever written; it knows no tiny_http types.

mod deadline;
mod heads;
#[cfg(target_os = "linux")]
mod look;
mod release;
mod rescue;
#[cfg(target_os = "linux")]
pub(crate) mod sys;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use deadline::Limits;
pub use release::Hold;

use crate::lock::lock;
use release::{Ask, Note};

/// How long a worker waits for the guard to end a read half.
const SHUT_READ_WAIT: Duration = Duration::from_secs(1);
/// Largest request head the handlers accept (431 above it). tiny_http reads a
/// head completely before we see it, so the guard's byte budget is larger.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Tells the guard thread what the workers are doing; cheap to clone.
#[derive(Clone)]
pub struct Guard {
    /// `None` where no guard thread runs (not Linux, or it could not start): notes go nowhere.
    inbox: Option<Arc<Inbox>>,
}

/// Where the workers leave their notes. The guard reads them when it looks, so
/// a request costs a push under an uncontended lock, not a wake-up of the guard
/// thread; only notes that want an answer soon write to `wake`.
struct Inbox {
    /// Notes since the last look, in the order the workers wrote them.
    notes: Mutex<Vec<Note>>,
    /// One end of a socket pair the guard polls; a byte on it means "look now".
    wake: Mutex<UnixStream>,
}

impl Guard {
    /// Starts the guard thread for connections accepted on `listener`.
    /// `in_flight` and `workers` tell it whether a request may be waiting in
    /// tiny_http's queue for a worker.
    pub fn start(
        listener: &TcpListener,
        limits: Limits,
        in_flight: Arc<AtomicUsize>,
        workers: usize,
    ) -> Guard {
        #[cfg(target_os = "linux")]
        {
            match look::Looker::new(listener, limits, in_flight, workers) {
                Ok((looker, inbox)) => {
                    let spawned = thread::Builder::new()
                        .name("guard".into())
                        .spawn(move || looker.run());
                    match spawned {
                        Ok(_) => return Guard { inbox: Some(inbox) },
                        Err(e) => log::warn!("could not start the connection guard: {e}"),
                    }
                }
                Err(e) => log::warn!("could not start the connection guard: {e}"),
            }
            Guard { inbox: None }
        }
        // Elsewhere nothing bounds a slow request: correct for polite clients.
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (listener, limits, in_flight, workers);
            Guard { inbox: None }
        }
    }

    /// A worker took a request from `peer`; keep the `Hold` until it is answered.
    pub fn request(&self, peer: Option<SocketAddr>) -> Hold {
        self.note(peer, Ask::Request, false)
    }

    /// `peer`'s connection now carries an event stream: the guard frees the
    /// pool thread parked on it and exempts it from deadlines. Keep the `Hold`
    /// for the stream's life, and drop it before the socket.
    pub fn stream(&self, peer: Option<SocketAddr>) -> Hold {
        self.note(peer, Ask::Stream, true)
    }

    /// Ends the reading of the connection that `hold` (this worker's request)
    /// came on, and waits until it is done (at most about a second). Used before
    /// answering a request whose body we will not read: tiny_http 0.12 would
    /// otherwise read the rest on this thread while dropping the request.
    pub fn shut_read(&self, peer: Option<SocketAddr>, hold: &Hold) {
        let (Some(inbox), Some(peer), Some(weak)) = (&self.inbox, peer, hold.weak()) else {
            return;
        };
        let (done, finished) = crossbeam_channel::bounded(1);
        inbox.push(
            Note {
                peer,
                hold: weak,
                ask: Ask::ShutRead { done },
                at: Instant::now(),
            },
            true,
        );
        if finished.recv_timeout(SHUT_READ_WAIT).is_err() {
            log::warn!("guard: could not end the reading of {peer} in time");
        }
    }

    fn note(&self, peer: Option<SocketAddr>, ask: Ask, wake: bool) -> Hold {
        let (Some(inbox), Some(peer)) = (&self.inbox, peer) else {
            return Hold::none();
        };
        let (hold, weak) = Hold::new();
        inbox.push(
            Note {
                peer,
                hold: weak,
                ask,
                at: Instant::now(),
            },
            wake,
        );
        hold
    }
}

impl Inbox {
    fn push(&self, note: Note, wake: bool) {
        lock(&self.notes).push(note);
        if wake {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = lock(&self.wake).write(&[1]);
        }
    }

    fn take(&self) -> Vec<Note> {
        std::mem::take(&mut *lock(&self.notes))
    }
}
