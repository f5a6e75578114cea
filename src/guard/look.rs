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
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::thread;

    use super::*;
    use crate::guard::Guard;

    /// A guard's state on a real listener, and a handle to send it notes.
    fn looker(listener: &TcpListener, timeout: Duration, max_bytes: u64) -> (Looker, Guard) {
        let limits = Limits { timeout, max_bytes };
        let (looker, inbox) =
            Looker::new(listener, limits, Arc::new(AtomicUsize::new(0)), 1).unwrap();
        (looker, Guard { inbox: Some(inbox) })
    }

    /// A connection that sends half a request gets a JSON 408 once its time is
    /// up (not before), and a blocked reader of it wakes with end-of-file.
    #[test]
    fn half_a_request_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            server_side.read_to_end(&mut got).map(|_| got.len())
        });
        let (mut looker, _guard) = looker(&listener, Duration::from_secs(10), 1 << 20);
        let start = Instant::now();
        looker.look(start, Look::Full);
        assert_eq!(looker.conns.len(), 1, "the connection is found");
        looker.look(start + Duration::from_secs(5), Look::Full);
        assert!(
            looker.conns.values().all(|c| c.cut.is_none()),
            "not before the deadline"
        );
        looker.look(start + Duration::from_secs(11), Look::Full);
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
        assert!(reply.ends_with(r#"{"error":"request timeout"}"#), "{reply}");
        assert!(reader.join().unwrap().is_ok(), "the reader saw end-of-file");
    }

    /// A connection that sends more than the byte budget is cut off with 431,
    /// while a quiet one next to it is left alone.
    #[test]
    fn too_many_bytes_are_cut_off() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut noisy = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_a, _) = listener.accept().unwrap();
        let (_b, _) = listener.accept().unwrap();
        let (mut looker, _guard) = looker(&listener, Duration::from_secs(60), 1000);
        looker.look(Instant::now(), Look::Full);
        noisy.write_all(&[b'a'; 5000]).unwrap();
        thread::sleep(Duration::from_millis(50));
        looker.look(Instant::now(), Look::Full);
        let cut = looker.conns.values().filter(|c| c.cut.is_some()).count();
        assert_eq!(cut, 1, "only the noisy one");
        let mut reply = String::new();
        noisy
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = noisy.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    }

    /// A stream's note frees the thread parked reading it (end-of-file) while
    /// writing goes on; the stream is then exempt from every deadline.
    #[test]
    fn a_stream_is_released_and_exempt() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let mut parked = server_side.try_clone().unwrap();
        parked
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = thread::spawn(move || parked.read(&mut [0u8; 16]));
        let (mut looker, guard) = looker(&listener, Duration::from_millis(10), 1 << 20);
        let hold = guard.stream(Some(peer));
        let now = Instant::now();
        looker.look(now, Look::Full);
        assert_eq!(
            reader.join().unwrap().unwrap(),
            0,
            "the parked reader saw end-of-file"
        );
        looker.look(now + Duration::from_secs(60), Look::Full);
        (&server_side).write_all(b"data: still here\n\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 18];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"data: still here\n\n", "nothing else was written");
        drop(hold);
    }

    /// A note whose Hold is gone is dropped unread: a connection that came
    /// later from the same address is never taken for the one it named.
    #[test]
    fn a_note_without_its_hold_touches_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        let (mut looker, guard) = looker(&listener, Duration::from_secs(60), 1 << 20);
        drop(guard.stream(Some(peer))); // its stream ended before the guard looked
        looker.look(Instant::now(), Look::Full);
        assert!(looker.pending.is_empty(), "the note is gone");
        assert!(looker
            .conns
            .values()
            .all(|c| c.stream.is_none() && c.cut.is_none()));
        server_side.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        let still_open = matches!((&server_side).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "its read half was not shut");
        drop(client);
    }

    /// A connection whose request nobody ever reads is nudged: the guard opens
    /// a connection of its own to the listener (which this test can see).
    #[test]
    fn a_forgotten_connection_is_nudged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_forgotten, _) = listener.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (mut looker, _guard) = looker(&listener, Duration::from_secs(60), 1 << 20);
        thread::sleep(Duration::from_millis(20));
        looker.look(Instant::now(), Look::Full);
        thread::sleep(rescue::CONFIRM * 2);
        looker.look(Instant::now(), Look::Quick);
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_ok(), "a nudge arrived");
    }
}
