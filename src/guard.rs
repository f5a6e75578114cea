//! The connection guard: a deadline and a byte budget for every request a
//! client sends, which tiny_http does not have (slowloris, endless headers).
//!
//! The trap (tiny_http 0.12): each connection's request heads are read on a
//! thread of tiny_http's pool, with no timeout and no size limit. A client that
//! sends half a request and waits holds that thread and its descriptor forever;
//! one that drips a byte every few seconds too; one that sends an endless header
//! line makes that thread buffer all of it. A read timeout on the socket would
//! fix the first case only, and it cannot be set before tiny_http sees the
//! socket (on a listener, `SO_RCVTIMEO` also makes `accept` time out, which ends
//! tiny_http's accept thread for good).
//!
//! The fix, without touching tiny_http: this thread looks at the process's
//! connections a few times a second (walking the process's descriptors, each
//! checked through a `dup` so a reused descriptor is never touched by mistake). The
//! workers tell it when a request arrives and when its reply is done. A
//! connection gets [`Limits::timeout`] from its opening, or from its last
//! request, to deliver the next request and its body, and at most
//! [`Limits::max_bytes`] received meanwhile (`TCP_INFO`). Past either, the guard
//! shuts the socket's read half: tiny_http's blocked read sees end-of-file, drops
//! the connection, and its thread is free. A connection that never delivered a
//! request is first sent a JSON `408` or `431` (the worker pool has a free thread,
//! so no request of its can be waiting in line).
//!
//! Event streams are exempt from the limits, but their read half is shut too,
//! at once: after handing us a request, tiny_http's pool thread blocks reading
//! the *next* request on that connection, which an event stream never sends, so
//! without this every stream would hold a pool thread for its whole life. Shut,
//! that thread sees end-of-file, finishes, and is free for other connections;
//! the stream keeps writing (nobody reads from it), and each SSE client costs one
//! thread and one descriptor instead of two of each.
//!
//! The guard also rescues connections that tiny_http's pool forgot. The pool
//! loses wake-ups when connections arrive in a burst (two tasks queued, one idle
//! thread told): a queued connection then waits until some pool thread finishes
//! a task, and threads on keep-alive connections finish only when browsers
//! close them, minutes later. Such a connection is easy to see from here: its
//! request sits unread in the kernel (`FIONREAD`) although nobody is serving
//! it. For each one the guard "nudges" the pool: it opens a connection to the
//! server and closes it at once; the thread that handles that empty connection
//! is free a moment later and takes the forgotten one from the queue.
//!
//! Only the HTTP layer (`server.rs`) calls this module; it knows no HTTP types.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::error::Error;

/// How often the guard looks at the connections. A limit is enforced at most
/// this much late, and an endless header is cut after at most this long.
const TICK: Duration = Duration::from_millis(250);
/// How soon after a stream starts the guard looks again, to free the pool
/// thread parked on it. Sooner means fewer extra threads in a burst of
/// connects; every look costs a pass over the descriptors, so not too soon.
const STREAM_TICK: Duration = Duration::from_millis(25);
/// How long a stream's note waits for the guard to find its connection.
const STREAM_NOTE_KEPT: Duration = Duration::from_secs(60);
/// How far past the highest descriptor seen a look reaches (see `State::scan`).
const FD_MARGIN: i32 = 4096;
/// Largest request head the handlers accept (431 above it). tiny_http reads a
/// head completely before we see it, so the guard's byte budget is larger.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to deliver a complete request (head and body) after the connection
    /// opens or the previous request arrived; also the keep-alive idle timeout.
    pub timeout: Duration,
    /// Bytes a connection may send towards one request before it is cut off.
    pub max_bytes: u64,
}

/// Tells the guard thread what the workers are doing; cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inbox: Option<Arc<Inbox>>,
}

/// Where the workers leave their notes. The guard reads them when it looks,
/// so a request costs a push under an uncontended lock, not a wake-up of the
/// guard thread (context switches are what a like costs most). Only a new
/// stream wakes it, to free that stream's pool thread soon.
struct Inbox {
    notes: Mutex<Vec<(Note, Instant)>>,
    wake: Sender<()>,
}

enum Note {
    /// A worker took a request from this peer.
    Busy(SocketAddr),
    /// The reply to this peer's request is written.
    Done(SocketAddr),
    /// This peer's connection now carries an event stream.
    Stream(SocketAddr),
}

impl Guard {
    /// Starts the guard thread for connections accepted on `local_port`.
    /// `in_flight` and `workers` tell it whether a request may be waiting in line.
    pub fn start(
        local_addr: SocketAddr,
        limits: Limits,
        in_flight: Arc<AtomicUsize>,
        workers: usize,
    ) -> Guard {
        if !cfg!(target_os = "linux") {
            // Elsewhere nothing bounds a slow request: correct for polite clients.
            return Guard { inbox: None };
        }
        // One pending wake-up is enough: the guard reads every note when it looks.
        let (wake, woken) = bounded(1);
        let inbox = Arc::new(Inbox {
            notes: Mutex::new(Vec::new()),
            wake,
        });
        let state = State {
            highest_fd: 0,
            port: local_addr.port(),
            nudge_to: nudge_address(local_addr),
            limits,
            in_flight,
            workers,
            conns: HashMap::new(),
            others: HashSet::new(),
            activity: HashMap::new(),
        };
        let reader = Arc::clone(&inbox);
        let spawned = thread::Builder::new()
            .name("guard".into())
            .spawn(move || run(&reader, &woken, state));
        match spawned {
            Ok(_) => Guard { inbox: Some(inbox) },
            Err(e) => {
                log::warn!("could not start the connection guard: {e}");
                Guard { inbox: None }
            }
        }
    }

    pub fn busy(&self, peer: Option<SocketAddr>) {
        self.note(peer, Note::Busy);
    }

    pub fn done(&self, peer: Option<SocketAddr>) {
        self.note(peer, Note::Done);
    }

    pub fn stream(&self, peer: Option<SocketAddr>) {
        self.note(peer, Note::Stream);
    }

    fn note(&self, peer: Option<SocketAddr>, make: fn(SocketAddr) -> Note) {
        let (Some(inbox), Some(peer)) = (&self.inbox, peer) else {
            return;
        };
        let note = make(peer);
        let is_stream = matches!(note, Note::Stream(_));
        inbox
            .notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((note, Instant::now()));
        if is_stream {
            let _ = inbox.wake.try_send(());
        }
    }
}

/// What the workers said about one peer.
struct Activity {
    /// Requests from it being handled right now.
    busy: u32,
    /// When the last request arrived or its reply was done.
    last: Instant,
    /// A reply was done since the last look: restart the byte count.
    rebase: bool,
    /// The connection carries an event stream: leave it alone.
    stream: bool,
}

/// One client connection, keyed by its socket's inode (unique while it lives).
struct Conn {
    fd: i32,
    peer: SocketAddr,
    /// When the guard first saw it (at most one tick after it was accepted).
    since: Instant,
    /// Bytes received when the current request began.
    baseline: u64,
    /// Already shut (or exempt): nothing more to do but forget it when it closes.
    done: bool,
    /// Its first request was unread at the previous look, with nobody serving it.
    unread: bool,
}

struct State {
    /// The highest descriptor that was a socket at the last look.
    highest_fd: i32,
    port: u16,
    /// Where to connect to nudge tiny_http's pool (our own listener).
    nudge_to: SocketAddr,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    workers: usize,
    conns: HashMap<u64, Conn>,
    /// Sockets that are not client connections (the listener, Redis, ...).
    others: HashSet<u64>,
    activity: HashMap<SocketAddr, Activity>,
}

fn run(inbox: &Inbox, woken: &Receiver<()>, mut state: State) {
    let mut next_tick = Instant::now() + TICK;
    loop {
        match woken.recv_deadline(next_tick) {
            // A stream started: look again soon to free its pool thread.
            Ok(()) => next_tick = next_tick.min(Instant::now() + STREAM_TICK),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_tick {
            // Everything the workers said before this look counts in it.
            let notes = std::mem::take(&mut *inbox.notes.lock().unwrap_or_else(|e| e.into_inner()));
            for (note, at) in notes {
                state.note(note, at);
            }
            if let Err(e) = state.scan(Instant::now()) {
                log::warn!("guard: cannot list descriptors: {e}");
            }
            next_tick = Instant::now() + TICK;
        }
    }
}

impl State {
    fn note(&mut self, note: Note, now: Instant) {
        let peer = match note {
            Note::Busy(p) | Note::Done(p) | Note::Stream(p) => p,
        };
        let a = self.activity.entry(peer).or_insert(Activity {
            busy: 0,
            last: now,
            rebase: false,
            stream: false,
        });
        a.last = now;
        match note {
            Note::Busy(_) => a.busy += 1,
            Note::Done(_) => {
                a.busy = a.busy.saturating_sub(1);
                a.rebase = true;
            }
            Note::Stream(_) => a.stream = true,
        }
    }

    fn scan(&mut self, now: Instant) -> std::io::Result<()> {
        let mut live = HashSet::with_capacity(self.conns.len() + self.others.len());
        // Walk descriptor numbers rather than list /proc/self/fd: listing makes
        // the kernel build a directory entry per descriptor, which with thousands
        // of idle streams cost more than everything else the guard does. The
        // kernel hands out the lowest free number, so new descriptors appear at
        // most just past the highest one seen; the margin covers a burst, and
        // the next look reaches further if a burst filled it.
        let end = self
            .highest_fd
            .saturating_add(FD_MARGIN)
            .min(sys::fd_limit());
        let mut highest = 0;
        for fd in 0..end {
            let Some(inode) = sys::socket_inode(fd) else {
                continue;
            };
            highest = fd;
            live.insert(inode);
            if self.others.contains(&inode) {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(&inode) {
                conn.fd = fd;
                continue;
            }
            match sys::client_peer(fd, inode, self.port) {
                Some(Some(peer)) => {
                    self.conns.insert(
                        inode,
                        Conn {
                            fd,
                            peer,
                            since: now,
                            baseline: 0,
                            done: false,
                            unread: false,
                        },
                    );
                }
                Some(None) => {
                    self.others.insert(inode);
                }
                // Could not tell (it closed meanwhile): look again next time.
                None => {}
            }
        }
        self.highest_fd = highest;
        self.conns.retain(|inode, _| live.contains(inode));
        self.others.retain(|inode| live.contains(inode));
        let peers: HashSet<SocketAddr> = self.conns.values().map(|c| c.peer).collect();
        // Forget what was said about connections that are gone (kept briefly, as
        // a note can arrive before the guard first sees its connection).
        // A stream's note is kept longer: forgetting it would put a live stream
        // under request deadlines if its connection were missed for a while.
        self.activity.retain(|peer, a| {
            let age = now.duration_since(a.last);
            peers.contains(peer)
                || a.busy > 0
                || age < 4 * TICK
                || (a.stream && age < STREAM_NOTE_KEPT)
        });

        let line_is_free = self.in_flight.load(Ordering::SeqCst) < self.workers;
        let mut forgotten = 0;
        for (&inode, conn) in self.conns.iter_mut().filter(|(_, c)| !c.done) {
            let activity = self.activity.get_mut(&conn.peer);
            if activity.as_ref().is_some_and(|a| a.stream) {
                // An event stream: free tiny_http's thread parked on it (see the
                // module doc), then leave it alone for good.
                if let Some(socket) = sys::Pinned::new(conn.fd, inode) {
                    socket.shut_read();
                }
                conn.done = true;
                continue;
            }
            let Some(socket) = sys::Pinned::new(conn.fd, inode) else {
                continue; // closed since the listing; the next scan forgets it
            };
            // A first request that stays unread for a whole tick: tiny_http's pool
            // has queued this connection and forgotten it (see the module doc).
            let unread = activity.is_none() && socket.bytes_unread() > 0;
            if unread && conn.unread {
                forgotten += 1;
            }
            conn.unread = unread;
            let received = socket.bytes_received();
            let mut since = conn.since;
            let mut served = false;
            if let Some(a) = activity {
                since = since.max(a.last);
                served = true;
                if std::mem::take(&mut a.rebase) {
                    conn.baseline = received;
                }
            }
            let too_slow = now.duration_since(since) > self.limits.timeout;
            let too_big = received.saturating_sub(conn.baseline) > self.limits.max_bytes;
            if !too_slow && !too_big {
                continue;
            }
            if served {
                // An idle keep-alive connection, or a request whose body is too
                // slow: end the reading; a reply being written still goes out.
                log::debug!(
                    "guard: closing the read side of {} ({})",
                    conn.peer,
                    if too_big { "too many bytes" } else { "idle" }
                );
                socket.shut_read();
                conn.done = true;
            } else if line_is_free {
                let error = if too_big {
                    Error::HeaderTooLarge
                } else {
                    Error::RequestTimeout
                };
                log::info!("guard: {} from {}: closing", error, conn.peer);
                socket.refuse(&error);
                conn.done = true;
            }
            // Otherwise every worker is busy and this request may be waiting in
            // line: look again next tick.
        }
        if forgotten > 0 {
            log::debug!("guard: nudging tiny_http's pool for {forgotten} forgotten connection(s)");
            for _ in 0..forgotten {
                nudge(self.nudge_to);
            }
        }
        Ok(())
    }
}

/// Where a nudge connects: the listener's own address, or loopback when it
/// listens on every address.
fn nudge_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match local {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Opens a connection to the server and closes it at once. tiny_http gives it
/// to a pool thread, which finds it empty, finishes, and takes the next
/// connection waiting in the pool's queue. Harmless when nothing is waiting.
fn nudge(to: SocketAddr) {
    if let Err(e) = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
        log::debug!("guard: nudge to {to} failed: {e}");
    }
}

/// The raw reply the guard sends on a connection that never made a request.
fn raw_reply(error: &Error) -> Vec<u8> {
    let body = error.body();
    let reason = match error.status() {
        408 => "Request Timeout",
        _ => "Request Header Fields Too Large",
    };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        error.status(),
        body.len()
    )
    .into_bytes()
}

#[cfg(target_os = "linux")]
mod sys {
    use std::mem::{offset_of, size_of, MaybeUninit};
    use std::net::{Shutdown, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use socket2::SockRef;

    use crate::error::Error;

    /// One past the highest descriptor this process may open (RLIMIT_NOFILE).
    pub fn fd_limit() -> i32 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        i32::try_from(lim.rlim_cur).unwrap_or(i32::MAX)
    }

    /// The inode of `fd` if it is a socket.
    pub fn socket_inode(fd: i32) -> Option<u64> {
        let mut st = MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: fstat on any integer is safe; it fails with EBADF if closed.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat succeeded and filled it in.
        let st = unsafe { st.assume_init() };
        (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
    }

    /// The peer of `fd` if it is a connection accepted on `port`.
    /// `Some(Some(peer))` for a connection accepted on `port`, `Some(None)` for
    /// a socket that is certainly something else (another port, the listener),
    /// `None` when it cannot be told now (closed meanwhile): ask again next look.
    pub fn client_peer(fd: i32, inode: u64, port: u16) -> Option<Option<SocketAddr>> {
        let socket = Pinned::new(fd, inode)?;
        let sock = SockRef::from(&socket.0);
        let Some(local) = sock.local_addr().ok()?.as_socket() else {
            return Some(None); // not an internet socket
        };
        if local.port() != port {
            return Some(None);
        }
        // On our port: a connection has a peer; the listener (or a connection
        // already torn down) has none.
        match sock.peer_addr() {
            Ok(peer) => Some(peer.as_socket()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Some(None),
            Err(_) => None,
        }
    }

    /// Our own duplicate of a descriptor, confirmed to be the same socket: it
    /// pins the socket while we act, and closing it leaves the original alone.
    pub struct Pinned(OwnedFd);

    impl Pinned {
        pub fn new(fd: i32, inode: u64) -> Option<Pinned> {
            // SAFETY: dup on any integer is safe; it fails with EBADF if closed.
            let dup = unsafe { libc::dup(fd) };
            if dup < 0 {
                return None;
            }
            // SAFETY: `dup` is a fresh descriptor that we own.
            let owned = unsafe { OwnedFd::from_raw_fd(dup) };
            (socket_inode(owned.as_raw_fd()) == Some(inode)).then_some(Pinned(owned))
        }

        /// Bytes received on the connection so far (0 if the kernel cannot say).
        pub fn bytes_received(&self) -> u64 {
            let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
            let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `info`.
            let rc = unsafe {
                libc::getsockopt(
                    self.0.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    info.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let needed = offset_of!(libc::tcp_info, tcpi_bytes_received) + size_of::<u64>();
            if rc != 0 || (len as usize) < needed {
                return 0; // kernels before 4.1: only the deadline applies
            }
            // SAFETY: zero-initialised, and the kernel filled the field we read.
            unsafe { info.assume_init() }.tcpi_bytes_received
        }

        /// Bytes that arrived and nobody has read yet.
        pub fn bytes_unread(&self) -> u32 {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int.
            let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::FIONREAD, &mut n) };
            if rc == 0 {
                n.max(0) as u32
            } else {
                0
            }
        }

        pub fn shut_read(&self) {
            let _ = SockRef::from(&self.0).shutdown(Shutdown::Read);
        }

        /// Sends the error reply without blocking, then closes both directions.
        pub fn refuse(&self, error: &Error) {
            let reply = super::raw_reply(error);
            // SAFETY: send from a live buffer on a descriptor we own.
            unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            let _ = SockRef::from(&self.0).shutdown(Shutdown::Both);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::net::SocketAddr;

    use crate::error::Error;

    pub fn fd_limit() -> i32 {
        0
    }
    pub fn socket_inode(_: i32) -> Option<u64> {
        None
    }
    pub fn client_peer(_: i32, _: u64, _: u16) -> Option<Option<SocketAddr>> {
        None
    }
    pub struct Pinned;
    impl Pinned {
        pub fn new(_: i32, _: u64) -> Option<Pinned> {
            None
        }
        pub fn bytes_received(&self) -> u64 {
            0
        }
        pub fn bytes_unread(&self) -> u32 {
            0
        }

        pub fn shut_read(&self) {}
        pub fn refuse(&self, _: &Error) {}
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn state(port: u16, timeout: Duration, max_bytes: u64) -> State {
        State {
            highest_fd: 0,
            port,
            nudge_to: SocketAddr::from(([127, 0, 0, 1], port)),
            limits: Limits { timeout, max_bytes },
            in_flight: Arc::new(AtomicUsize::new(0)),
            workers: 1,
            conns: HashMap::new(),
            others: HashSet::new(),
            activity: HashMap::new(),
        }
    }

    /// A connection that sends half a request gets a JSON 408 once its time is
    /// up, and a blocked reader of it wakes with end-of-file.
    #[test]
    fn half_a_request_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let reader = thread::spawn(move || {
            let mut buf = Vec::new();
            server_side.read_to_end(&mut buf).map(|_| buf.len())
        });
        let mut state = state(port, Duration::from_millis(100), 1 << 20);
        let start = Instant::now();
        state.scan(start).unwrap();
        assert_eq!(state.conns.len(), 1, "the connection is found");
        state.scan(start + Duration::from_millis(50)).unwrap();
        assert!(
            !state.conns.values().next().unwrap().done,
            "not before the deadline"
        );
        state.scan(start + Duration::from_millis(200)).unwrap();
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
        let port = listener.local_addr().unwrap().port();
        let mut noisy = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _quiet = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_a, _) = listener.accept().unwrap();
        let (_b, _) = listener.accept().unwrap();
        noisy.write_all(&[b'a'; 5000]).unwrap();
        thread::sleep(Duration::from_millis(50));
        let mut state = state(port, Duration::from_secs(60), 1000);
        let now = Instant::now();
        state.scan(now).unwrap();
        state.scan(now).unwrap();
        let done: Vec<bool> = state.conns.values().map(|c| c.done).collect();
        assert_eq!(done.iter().filter(|d| **d).count(), 1, "{done:?}");
        let mut reply = String::new();
        let _ = noisy.read_to_string(&mut reply);
        assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    }

    /// Event streams are never cut, however long they last; only their read
    /// half is shut, which wakes a thread blocked reading them (tiny_http's) with
    /// end-of-file while writing goes on.
    #[test]
    fn streams_are_exempt_and_released() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let mut parked = server_side.try_clone().unwrap();
        // Bounded: a guard that failed to release would fail the test, not hang it.
        parked
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let reader = thread::spawn(move || {
            let result = parked.read(&mut [0u8; 16]);
            let _ = done_tx.send(());
            result
        });
        let mut state = state(port, Duration::from_millis(10), 1 << 20);
        let now = Instant::now();
        state.note(Note::Busy(peer), now);
        state.note(Note::Stream(peer), now);
        state.note(Note::Done(peer), now);
        // The guard looks again and again in the server; allow it a few looks.
        for look in 0..3u32 {
            state
                .scan(now + Duration::from_secs(5 + u64::from(look)))
                .unwrap();
            if done_rx.recv_timeout(Duration::from_secs(1)).is_ok() {
                break;
            }
        }
        assert_eq!(
            reader.join().unwrap().unwrap(),
            0,
            "the parked reader saw end-of-file"
        );
        // The stream is still open for writing, and nothing was sent to the client.
        (&server_side).write_all(b"data: still here\n\n").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 18];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"data: still here\n\n");
    }
}
