//! The raw descriptor calls the guard makes (Linux), each wrapped once with its
//! safety argument, so the rest of the guard reads as plain logic.
//!
//! Everything here works on descriptor numbers that tiny_http owns. The guard
//! never closes or reads one of them: it takes its own duplicate ([`Pinned`]),
//! checks that the duplicate is still the socket it means (by inode), and acts
//! on that, so a number that was closed and reused meanwhile is never touched.

use std::mem::{offset_of, size_of, MaybeUninit};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use socket2::SockRef;

/// One past the highest descriptor this process may open (RLIMIT_NOFILE).
pub fn fd_limit() -> i32 {
    crate::limits::rlimit(libc::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| i32::try_from(soft).unwrap_or(i32::MAX))
}

/// The inode of `fd` if it is a socket: a socket's identity for as long as it
/// is open (descriptor numbers are reused at once, inodes are not).
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

/// What a socket is, as far as the guard cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// A connection accepted on our port, from this peer.
    Client(SocketAddr),
    /// Certainly something else: the listener, a Redis connection, a pipe.
    Other,
}

/// Counters the kernel keeps for one TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes that arrived from the client, read or not.
    pub received: u64,
    /// Bytes we sent to the client (replies, events).
    pub sent: u64,
    /// Bytes that arrived and nobody has read yet.
    pub unread: u64,
    /// Milliseconds since the last byte arrived.
    pub quiet_ms: u32,
}

impl Counters {
    /// Bytes that somebody (tiny_http) has read from the socket.
    pub fn consumed(&self) -> u64 {
        self.received.saturating_sub(self.unread)
    }
}

/// Our own duplicate of a descriptor, confirmed to be the same socket: it
/// pins the socket while we act, and closing it leaves the original alone.
pub struct Pinned(OwnedFd);

impl Pinned {
    pub fn new(fd: i32, inode: u64) -> Option<Pinned> {
        // SAFETY: F_DUPFD_CLOEXEC on any integer is safe; it fails with EBADF if closed.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: `dup` is a fresh descriptor that we own.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        (socket_inode(owned.as_raw_fd()) == Some(inode)).then_some(Pinned(owned))
    }

    /// Whether this is a connection accepted on `port`, and from whom.
    /// `None` when it cannot be told now (torn down meanwhile): ask again later.
    pub fn kind(&self, port: u16) -> Option<Kind> {
        let sock = SockRef::from(&self.0);
        let Some(local) = sock.local_addr().ok()?.as_socket() else {
            return Some(Kind::Other); // not an internet socket
        };
        if local.port() != port {
            return Some(Kind::Other);
        }
        // On our port: a connection has a peer; the listener has none.
        match sock.peer_addr() {
            Ok(peer) => Some(peer.as_socket().map_or(Kind::Other, Kind::Client)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Some(Kind::Other),
            Err(_) => None,
        }
    }

    /// The connection's counters, or `None` on kernels without them (< 4.19).
    pub fn counters(&self) -> Option<Counters> {
        let info = tcp_info(self.0.as_raw_fd())?;
        let needed = offset_of!(libc::tcp_info, tcpi_bytes_received) + size_of::<u64>();
        if info.1 < needed {
            return None;
        }
        let info = info.0;
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::FIONREAD, &mut unread) };
        Some(Counters {
            received: info.tcpi_bytes_received,
            sent: info.tcpi_bytes_sent,
            unread: if rc == 0 { unread.max(0) as u64 } else { 0 },
            quiet_ms: info.tcpi_last_data_recv,
        })
    }

    /// Ends reading: a thread blocked reading the socket wakes with end-of-file,
    /// while writing goes on.
    pub fn shut_read(&self) {
        let _ = SockRef::from(&self.0).shutdown(Shutdown::Read);
    }

    /// Ends both directions: the client sees the connection close even if the
    /// thread that owns it never runs again.
    pub fn shut_both(&self) {
        let _ = SockRef::from(&self.0).shutdown(Shutdown::Both);
    }

    /// Sends `reply` without blocking (a reply this small fits the send buffer
    /// of a connection that has sent nothing back yet), then ends both directions.
    pub fn answer(&self, reply: &[u8]) {
        // SAFETY: send from a live buffer on a descriptor we own.
        unsafe {
            libc::send(
                self.0.as_raw_fd(),
                reply.as_ptr().cast(),
                reply.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        self.shut_both();
    }
}

/// `TCP_INFO` for `fd`, with the number of bytes the kernel filled in (older
/// kernels fill a shorter struct).
pub fn tcp_info(fd: i32) -> Option<(libc::tcp_info, usize)> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // SAFETY: zero-initialised, and the kernel filled in what it has.
    (rc == 0).then(|| (unsafe { info.assume_init() }, len as usize))
}

/// Whether some thread of this process is blocked reading one of `fds` right
/// now, from `/proc/self/task/*/syscall` (the syscall each thread sleeps in and
/// its first argument, the descriptor). Looked twice, a few milliseconds apart,
/// so a reader caught between two reads still counts.
pub fn someone_reads(fds: &[i32]) -> bool {
    let once = || -> bool {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return true; // cannot tell: assume the harmless answer
        };
        tasks.flatten().any(|task| {
            std::fs::read_to_string(task.path().join("syscall"))
                .ok()
                .and_then(|line| reads_from(&line))
                .is_some_and(|fd| fds.contains(&fd))
        })
    };
    once() || {
        std::thread::sleep(std::time::Duration::from_millis(5));
        once()
    }
}

/// This process's thread sleeping in `accept` on `fd`, as its id and its start
/// time (which tells it from a later thread given the same id), if one is.
pub fn acceptor(fd: i32) -> Option<(u32, u64)> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    tasks.flatten().find_map(|task| {
        let line = std::fs::read_to_string(task.path().join("syscall")).ok()?;
        let mut fields = line.split_whitespace();
        let nr: libc::c_long = fields.next()?.parse().ok()?;
        let arg = i32::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
        if ![libc::SYS_accept, libc::SYS_accept4].contains(&nr) || arg != fd {
            return None;
        }
        let tid: u32 = task.file_name().to_str()?.parse().ok()?;
        Some((tid, thread_start(tid)?))
    })
}

/// When thread `tid` of this process started, in clock ticks since boot
/// (`/proc/self/task/<tid>/stat`, field 22); `None` once it has ended.
pub fn thread_start(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The descriptor a `/proc/<tid>/syscall` line shows its thread reading, if it
/// sleeps in `read`, `readv`, `recvfrom` or `recvmsg`.
fn reads_from(line: &str) -> Option<i32> {
    let mut fields = line.split_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    let reading = [
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
    ];
    if !reading.contains(&nr) {
        return None;
    }
    let fd = fields.next()?.strip_prefix("0x")?;
    i32::from_str_radix(fd, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// A `/proc/<tid>/syscall` line names the descriptor of a blocked read, and
    /// nothing for other syscalls or a running thread.
    #[test]
    fn reads_syscall_lines() {
        let line = format!(
            "{} 0x1f 0x7f00 0x400 0x0 0x0 0x0 0x7ff0 0x7f10",
            libc::SYS_recvfrom
        );
        assert_eq!(reads_from(&line), Some(31));
        let futex = format!(
            "{} 0x5627 0x80 0x0 0x0 0x0 0x0 0x7ff0 0x7f10",
            libc::SYS_futex
        );
        assert_eq!(reads_from(&futex), None);
        assert_eq!(reads_from("running"), None);
    }

    /// A thread blocked reading a socket is seen; once it has returned it is not.
    #[test]
    fn sees_a_blocked_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let fd = server_side.as_raw_fd();
        assert!(!someone_reads(&[fd]), "nobody reads it yet");
        // The thread hands the socket back: while it stays open its number
        // cannot be reused by another test's socket (tests share the process).
        let reader = std::thread::spawn(move || {
            server_side.read_exact(&mut [0u8; 1]).unwrap();
            server_side
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(someone_reads(&[fd]), "the blocked reader is seen");
        client.write_all(b"x").unwrap();
        let _still_open = reader.join().unwrap();
        assert!(!someone_reads(&[fd]), "the reader has returned");
    }

    /// The thread blocked in `accept` on a listener is found, with a start time
    /// that stays the same while it lives.
    #[test]
    fn finds_the_thread_in_accept() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        assert_eq!(acceptor(fd), None, "nobody accepts yet");
        let addr = listener.local_addr().unwrap();
        let acceptor_thread = std::thread::spawn(move || listener.accept().map(|_| ()));
        std::thread::sleep(Duration::from_millis(100));
        let (tid, started) = acceptor(fd).expect("the accepting thread is seen");
        assert_eq!(thread_start(tid), Some(started));
        TcpStream::connect(addr).unwrap();
        acceptor_thread.join().unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_ne!(thread_start(tid), Some(started), "it has ended");
    }

    /// Counters see bytes arrive unread, then read.
    #[test]
    fn counts_unread_and_consumed_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, peer) = listener.accept().unwrap();
        let inode = socket_inode(server_side.as_raw_fd()).unwrap();
        let pinned = Pinned::new(server_side.as_raw_fd(), inode).unwrap();
        assert_eq!(
            pinned.kind(listener.local_addr().unwrap().port()),
            Some(Kind::Client(peer))
        );
        client.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let c = pinned.counters().unwrap();
        assert_eq!((c.received, c.unread, c.consumed()), (5, 5, 0));
        server_side.read_exact(&mut [0u8; 3]).unwrap();
        let c = pinned.counters().unwrap();
        assert_eq!((c.received, c.unread, c.consumed()), (5, 2, 3));
    }
}
