//! The guard thread: when it looks, and what one look does. A look walks the
//! descriptors (learning new connections by inode, forgetting closed ones),
//! matches the workers' notes to connections, reads each connection's kernel
//! counters and hands them to the jobs in `deadline.rs`, `heads.rs` and
//! `rescue.rs`, then acts on what they decide, through `sys.rs`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::release::{self, Ask, Note};
use super::{deadline, heads, rescue, sys, Inbox, Limits};

/// How often the guard does every job: a deadline is enforced at most this
/// much late. Each such look reads the counters of every ordinary connection.
const TICK: Duration = Duration::from_millis(250);
/// How often the guard walks the descriptors to find new connections, so the
/// rescue can watch them. A walk is one `fstat` per descriptor that is not a
/// settled stream's (a few dozen in normal traffic), so it can be frequent;
/// a connection that tiny_http forgot is found within about this long.
const WALK: Duration = Duration::from_millis(20);

/// What one look does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Every job: notes, the walk, deadlines, heads, the rescue.
    Full,
    /// The walk, then the rescue's check of never-read connections.
    Walk,
    /// Only the rescue's check of never-read connections.
    Quick,
}
/// How far past the last live descriptor a walk reaches: new descriptors take
/// the lowest free numbers, so they appear just past those in use.
const FD_MARGIN: i32 = 64;
/// How long a connection the guard ended may stay open before it shuts both
/// directions: tiny_http closes one whose reading ended at once, unless its
/// thread is stuck (see `heads.rs`), and then only this shows the client an end.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// One client connection, keyed by its socket's inode.
struct Conn {
    /// Descriptor numbers where the socket was seen at the last walk (tiny_http
    /// holds two per connection: its read and write halves).
    fds: Vec<i32>,
    /// The peer tiny_http reports for it: what workers' notes are matched by.
    peer: SocketAddr,
    /// Where its current request's time and bytes count from (set at its first look).
    clock: Option<deadline::Clock>,
    /// A worker holds a request of it (it may write a reply any moment).
    busy: Option<Weak<()>>,
    /// It carries an event stream, already released: left alone while alive.
    stream: Option<Weak<()>>,
    /// Its counters at the last look (`None` before the first).
    last: Option<sys::Counters>,
    /// Since when its unread bytes have waited with nobody reading (rescue).
    unread_since: Option<Instant>,
    /// When the guard ended it (answered, or its reading shut).
    cut: Option<Instant>,
    /// Both directions were shut after [`CUT_GRACE`]: nothing more to do.
    closed: bool,
    /// tiny_http has read part of its first request, which no worker has, or
    /// a worker holds a request of it: checked at every walk, so a head it
    /// cannot serve, or a body that stopped coming, is dealt with soon.
    heading: bool,
    /// Its read half was shut while a worker held a request of it.
    read_ended: bool,
}

/// Descriptor numbers of settled streams, indexed by number (a walk asks about
/// every number, thousands of times a second with many streams). A number
/// stays here while its stream's `Hold` lives; once the hold is gone the
/// number may be reused by any new socket, and is walked again.
#[derive(Default)]
struct Settled(Vec<Option<Weak<()>>>);

impl Settled {
    fn insert(&mut self, fd: i32, hold: Weak<()>) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(hold);
    }

    /// Whether `fd` is a live stream's (and forgets it if its stream ended).
    fn holds(&mut self, fd: i32) -> bool {
        let Some(slot) = usize::try_from(fd).ok().and_then(|i| self.0.get_mut(i)) else {
            return false;
        };
        match slot {
            Some(hold) if hold.strong_count() > 0 => true,
            Some(_) => {
                *slot = None;
                false
            }
            None => false,
        }
    }
}

/// The guard thread's state; only that thread touches it.
pub(super) struct Looker {
    /// Where the workers' notes wait for the next look.
    inbox: Arc<Inbox>,
    /// Polled between looks: a byte here means "look now".
    woken: UnixStream,
    /// Our listening port: a socket on it with a peer is a client connection.
    port: u16,
    /// Where to connect to nudge tiny_http's pool (our own listener).
    nudge_to: SocketAddr,
    /// The deadline and byte budget to enforce.
    limits: Limits,
    /// Requests the workers hold now; with `workers`, whether one may wait in tiny_http's queue.
    in_flight: Arc<AtomicUsize>,
    /// How many workers there are (see `in_flight`).
    workers: usize,
    /// Client connections by socket inode (unique while open).
    conns: HashMap<u64, Conn>,
    /// Sockets that are not client connections (the listener, Redis, ...).
    others: HashSet<u64>,
    /// Streams whose only descriptor is known: the walk skips that number while
    /// the stream's `Hold` lives (it cannot be closed and reused before).
    settled: Settled,
    /// Notes not matched yet (their connection not seen yet, or ambiguous).
    pending: Vec<Note>,
    /// The highest descriptor in use at the last walk.
    highest_fd: i32,
    /// The last look at which every worker was busy: a request read before
    /// then may still be waiting for one.
    line_full_at: Option<Instant>,
}

impl Looker {
    pub(super) fn new(
        listener: &TcpListener,
        limits: Limits,
        in_flight: Arc<AtomicUsize>,
        workers: usize,
    ) -> std::io::Result<(Looker, Arc<Inbox>)> {
        let local = listener.local_addr()?;
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let inbox = Arc::new(Inbox {
            notes: Mutex::new(Vec::new()),
            wake: Mutex::new(wake),
        });
        let looker = Looker {
            inbox: Arc::clone(&inbox),
            woken,
            port: local.port(),
            nudge_to: rescue::nudge_address(local),
            limits,
            in_flight,
            workers,
            conns: HashMap::new(),
            others: HashSet::new(),
            settled: Settled::default(),
            pending: Vec::new(),
            highest_fd: 0,
            line_full_at: None,
        };
        Ok((looker, inbox))
    }

    pub(super) fn run(mut self) {
        use std::os::fd::AsRawFd;
        let mut next_full = Instant::now();
        let mut next_walk = next_full;
        loop {
            let now = Instant::now();
            if now >= next_full {
                self.look(now, Look::Full);
                next_full = now + TICK;
                next_walk = now + WALK;
            } else if now >= next_walk {
                self.look(now, Look::Walk);
                next_walk = now + WALK;
            } else if self.watching() {
                self.look(now, Look::Quick);
            }
            let mut wake_at = next_full.min(next_walk);
            if self.watching() {
                wake_at = wake_at.min(Instant::now() + rescue::QUICK);
            }
            let wait = wake_at.saturating_duration_since(Instant::now());
            let mut woken = libc::pollfd {
                fd: self.woken.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: poll reads and writes the one pollfd we own.
            if unsafe { libc::poll(&mut woken, 1, ms) } > 0 && woken.revents != 0 {
                // A worker wants an answer soon: look now.
                let mut sink = [0u8; 64];
                while matches!((&self.woken).read(&mut sink), Ok(n) if n > 0) {}
                next_full = Instant::now();
            }
        }
    }

    /// Whether some connection has never been read from (the rescue watches those).
    fn watching(&self) -> bool {
        self.conns.values().any(|c| c.watched())
    }

    /// One look (see [`Look`] for what each kind does).
    fn look(&mut self, now: Instant, kind: Look) {
        let full = kind == Look::Full;
        let line_full = self.in_flight.load(Ordering::SeqCst) >= self.workers;
        if line_full {
            self.line_full_at = Some(now);
        }
        if full {
            let notes = self.inbox.take();
            self.pending.extend(notes);
            self.walk();
            self.match_notes(now);
        } else if kind == Look::Walk {
            self.walk();
        }
        // A request read before the last look at which every worker was busy
        // may still wait in tiny_http's queue: never write over it.
        let queued_since = self.line_full_at;
        let mut forgotten = 0;
        let mut settle = Vec::new();
        for (&inode, conn) in self.conns.iter_mut() {
            if let Some(stream) = &conn.stream {
                // Released. Once only its writer's descriptor is left, the walk
                // can skip that number for the stream's life.
                if full && conn.fds.len() == 1 && stream.strong_count() > 0 {
                    settle.push((conn.fds[0], inode, stream.clone()));
                }
                continue;
            }
            let heads_too = kind != Look::Quick;
            if conn.closed || !(full || conn.watched() || (heads_too && conn.heading())) {
                continue;
            }
            let Some(&fd) = conn.fds.first() else {
                continue;
            };
            let Some(socket) = sys::Pinned::new(fd, inode) else {
                continue; // closed since the walk; the next walk forgets it
            };
            let Some(c) = socket.counters() else {
                continue; // a kernel before 4.19: no counters, nothing enforced
            };
            if conn.busy.as_ref().is_some_and(|w| w.strong_count() == 0) {
                conn.busy = None;
            }
            conn.last = Some(c);
            let clock = conn
                .clock
                .get_or_insert_with(|| deadline::Clock::new(now, &c));
            clock.observe(now, &c);
            if let Some(at) = conn.cut {
                if now.saturating_duration_since(at) > CUT_GRACE {
                    socket.shut_both();
                    conn.closed = true;
                }
                continue;
            }
            if rescue::forgotten(&c, &mut conn.unread_since, now) {
                log::debug!("guard: {} forgotten ({c:?}, fds {:?})", conn.peer, conn.fds);
                forgotten += 1;
            }
            if !heads_too {
                continue;
            }
            let busy = conn.busy.is_some();
            let quiet = Duration::from_millis(u64::from(c.quiet_ms));
            let may_be_queued =
                queued_since.is_some_and(|at| now.saturating_duration_since(at) <= quiet + TICK);
            conn.heading = (clock.never_answered() && clock.unanswered(&c)) || busy;
            if busy && quiet >= heads::STALL && !conn.read_ended {
                // A worker holds a request of it and the client has gone quiet:
                // whatever the worker still waits to read is not coming. End
                // the reading so the worker is free; its reply still goes out.
                log::debug!("guard: {} went quiet while a worker reads it", conn.peer);
                socket.shut_read();
                conn.read_ended = true;
            }
            if let Some(error) = heads::judge(&c, clock, busy, may_be_queued, &conn.fds) {
                log::info!("guard: {} from {}: answered and closed", error, conn.peer);
                socket.answer(&error.raw_reply());
                conn.cut = Some(now);
                continue;
            }
            if !full {
                continue;
            }
            match clock.verdict(now, &c, &self.limits, busy, may_be_queued) {
                deadline::Verdict::Fine => {}
                deadline::Verdict::Refuse(error) => {
                    log::info!("guard: {} from {}: closing", error, conn.peer);
                    socket.answer(&error.raw_reply());
                    conn.cut = Some(now);
                }
                deadline::Verdict::ShutRead => {
                    log::debug!(
                        "guard: ending the reading of {} (over its limits)",
                        conn.peer
                    );
                    socket.shut_read();
                    conn.cut = Some(now);
                }
            }
        }
        for (fd, inode, hold) in settle {
            self.conns.remove(&inode);
            self.settled.insert(fd, hold);
        }
        if forgotten > 0 {
            log::debug!("guard: nudging tiny_http's pool for {forgotten} forgotten connection(s)");
            for _ in 0..forgotten.min(rescue::MAX_NUDGES) {
                rescue::nudge(self.nudge_to);
            }
        }
    }

    /// Walks the descriptor numbers, learning new sockets and forgetting closed
    /// ones. Numbers rather than a listing of /proc/self/fd: listing makes the
    /// kernel build a directory entry per descriptor, which with thousands of
    /// streams costs more than everything else the guard does.
    fn walk(&mut self) {
        let mut live = HashSet::with_capacity(self.others.len());
        let mut seen: HashMap<u64, Vec<i32>> = HashMap::with_capacity(self.conns.len());
        let limit = sys::fd_limit();
        let mut last_live = 0;
        let mut fd = 0;
        while fd < limit && fd <= self.highest_fd.max(last_live) + FD_MARGIN {
            let this = fd;
            fd += 1;
            if self.settled.holds(this) {
                last_live = this;
                continue;
            }
            let Some(inode) = sys::socket_inode(this) else {
                continue;
            };
            last_live = this;
            live.insert(inode);
            if self.others.contains(&inode) {
                continue;
            }
            if self.conns.contains_key(&inode) {
                seen.entry(inode).or_default().push(this);
                continue;
            }
            let Some(socket) = sys::Pinned::new(this, inode) else {
                continue;
            };
            match socket.kind(self.port) {
                Some(sys::Kind::Client(peer)) => {
                    seen.entry(inode).or_default().push(this);
                    self.conns.insert(inode, Conn::new(peer));
                }
                Some(sys::Kind::Other) => {
                    self.others.insert(inode);
                }
                None => {} // could not tell (closing): look again next time
            }
        }
        self.highest_fd = last_live;
        self.conns.retain(|inode, conn| match seen.remove(inode) {
            Some(fds) => {
                conn.fds = fds;
                true
            }
            None => false,
        });
        self.others.retain(|inode| live.contains(inode));
    }

    /// Matches the pending notes to connections (see `release.rs` for why this
    /// cannot hit the wrong one).
    fn match_notes(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.pending);
        for note in pending {
            if !note.alive() {
                note.finish();
                continue;
            }
            let peers = self
                .conns
                .iter()
                .filter(|(_, c)| c.stream.is_none())
                .map(|(inode, c)| (*inode, c.peer));
            let Some(inode) = release::unique(peers, note.peer) else {
                self.pending.push(note); // not seen yet: the next look
                continue;
            };
            let conn = self.conns.get_mut(&inode).expect("found above");
            let pinned = conn.fds.first().and_then(|&fd| sys::Pinned::new(fd, inode));
            let Some(socket) = pinned else {
                self.pending.push(note);
                continue;
            };
            // Pinned first, alive second: both open now, so the same connection.
            if !note.alive() {
                note.finish();
                continue;
            }
            match &note.ask {
                Ask::Request => {
                    conn.busy = Some(note.hold.clone());
                    if let Some(clock) = &mut conn.clock {
                        clock.taken(note.at);
                    }
                    conn.unread_since = None;
                }
                Ask::Stream => {
                    socket.shut_read();
                    conn.stream = Some(note.hold.clone());
                    conn.busy = None;
                    conn.cut = None; // a stream is never cut, even after a shut read
                }
                Ask::ShutRead { .. } => {
                    socket.shut_read();
                    conn.cut = Some(now);
                }
            }
            note.finish();
        }
    }
}

impl Conn {
    fn new(peer: SocketAddr) -> Conn {
        Conn {
            fds: Vec::new(),
            peer,
            clock: None,
            busy: None,
            stream: None,
            last: None,
            unread_since: None,
            cut: None,
            closed: false,
            heading: false,
            read_ended: false,
        }
    }

    /// In the middle of its first head, as far as the last look saw.
    fn heading(&self) -> bool {
        self.heading && self.stream.is_none() && self.cut.is_none()
    }

    /// Watched by the rescue: never read from, as far as the last look saw.
    fn watched(&self) -> bool {
        self.stream.is_none()
            && self.cut.is_none()
            && self.busy.is_none()
            && self.last.is_none_or(|c| rescue::never_read(&c))
    }
}

#[cfg(test)]
mod tests;
