//! Frees tiny_http's connection thread once an SSE stream owns its socket.
//!
//! The trap (tiny_http 0.12): every connection runs on a thread of tiny_http's
//! task pool, which, after handing us a request, blocks reading the *next*
//! request on that connection. An SSE connection never sends one, so its pool
//! thread is held for the life of the stream. The pool also loses wake-ups when
//! connections arrive in a burst (two tasks queued, one idle thread notified):
//! a queued connection then waits until some pool thread finishes a task, and
//! with every thread parked on an SSE socket that may never happen. In a burst
//! of 1,000 SSE connects about 3% were never answered.
//!
//! The fix, without touching tiny_http: once the stream's head is written, shut
//! down the *read* half of its socket. The parked pool thread sees end-of-file,
//! finishes its task and picks up whatever is queued. The stream keeps writing
//! (we only ever write to an SSE socket), and each SSE client now costs one
//! thread and one file descriptor instead of two of each.
//!
//! tiny_http does not expose the socket, so we find it by its peer address:
//! a background thread scans this process's descriptors (`/proc/self/fd`) once
//! per batch of requests. A descriptor is checked through a `dup` of it, so a
//! descriptor closed and reused during the scan can never be shut by mistake.
//! Only the HTTP layer (`server.rs`) calls this module.

use std::net::SocketAddr;
use std::thread;

use crossbeam_channel::{unbounded, Receiver, Sender};

/// Hands SSE peer addresses to the releasing thread.
#[derive(Clone)]
pub struct Releaser {
    tx: Option<Sender<SocketAddr>>,
}

impl Releaser {
    /// Starts the releasing thread for connections accepted on `local_port`.
    pub fn start(local_port: u16) -> Releaser {
        if !cfg!(target_os = "linux") {
            // Elsewhere the pool threads stay parked: correct, just costlier.
            return Releaser { tx: None };
        }
        let (tx, rx) = unbounded();
        let spawned = thread::Builder::new()
            .name("sse-release".into())
            .spawn(move || run(rx, local_port));
        match spawned {
            Ok(_) => Releaser { tx: Some(tx) },
            Err(e) => {
                log::warn!("could not start the SSE release thread: {e}");
                Releaser { tx: None }
            }
        }
    }

    /// Asks for the read half of the connection from `peer` to be shut down.
    pub fn release(&self, peer: SocketAddr) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(peer);
        }
    }
}

fn run(rx: Receiver<SocketAddr>, local_port: u16) {
    while let Ok(first) = rx.recv() {
        // Everything queued meanwhile is found by the same scan.
        let mut wanted: Vec<SocketAddr> = std::iter::once(first).chain(rx.try_iter()).collect();
        match sys::scan(local_port, &mut wanted) {
            Ok(()) if wanted.is_empty() => {}
            // Not found: the client already left and tiny_http closed the socket.
            Ok(()) => log::debug!("SSE release: {} peer(s) already gone", wanted.len()),
            Err(e) => log::warn!("SSE release: cannot list descriptors: {e}"),
        }
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem::{size_of, MaybeUninit};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;

    /// Shuts the read half of every socket whose peer is in `wanted` and whose
    /// local port is ours; removes each one found from `wanted`.
    pub fn scan(local_port: u16, wanted: &mut Vec<SocketAddr>) -> io::Result<()> {
        for entry in std::fs::read_dir("/proc/self/fd")? {
            if wanted.is_empty() {
                break;
            }
            let Some(fd) = entry?
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<RawFd>().ok())
            else {
                continue;
            };
            // Cheap test on the descriptor itself; most are not a match.
            let Some(peer) = peer_of(fd) else { continue };
            let Some(pos) = wanted.iter().position(|w| *w == peer) else {
                continue;
            };
            // Confirm through our own duplicate, which pins the socket while we act.
            // SAFETY: dup on any integer is safe; it fails with EBADF if closed.
            let dup = unsafe { libc::dup(fd) };
            if dup < 0 {
                continue;
            }
            if peer_of(dup) == Some(peer) && local_port_of(dup) == Some(local_port) {
                // SAFETY: `dup` is a descriptor we own.
                unsafe { libc::shutdown(dup, libc::SHUT_RD) };
                wanted.swap_remove(pos);
            }
            // SAFETY: closing the duplicate we made; the original is untouched.
            unsafe { libc::close(dup) };
        }
        Ok(())
    }

    fn peer_of(fd: RawFd) -> Option<SocketAddr> {
        address(fd, |fd, addr, len| unsafe {
            libc::getpeername(fd, addr, len)
        })
    }

    fn local_port_of(fd: RawFd) -> Option<u16> {
        address(fd, |fd, addr, len| unsafe {
            libc::getsockname(fd, addr, len)
        })
        .map(|a| a.port())
    }

    type AddrCall = fn(RawFd, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

    fn address(fd: RawFd, call: AddrCall) -> Option<SocketAddr> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if call(fd, storage.as_mut_ptr().cast(), &mut len) != 0 {
            return None; // not a socket, not connected, or closed
        }
        // SAFETY: zero-initialised and (partly) filled in by the kernel.
        let storage = unsafe { storage.assume_init() };
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says this is a sockaddr_in.
                let a = unsafe {
                    std::ptr::read(
                        (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    )
                };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is a sockaddr_in6.
                let a = unsafe {
                    std::ptr::read(
                        (&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    )
                };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let port = u16::from_be(a.sin6_port);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    pub fn scan(_: u16, _: &mut Vec<std::net::SocketAddr>) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// Shutting the read half through the scan wakes a thread blocked reading
    /// that socket with end-of-file, and leaves other sockets alone.
    #[test]
    fn scan_shuts_read_half_of_the_right_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client_a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let client_b = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_a, peer_a) = listener.accept().unwrap();
        let (mut server_b, _) = listener.accept().unwrap();
        server_b
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();

        let reader = std::thread::spawn(move || server_a.read(&mut [0u8; 16]).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let mut wanted = vec![peer_a];
        super::sys::scan(port, &mut wanted).unwrap();
        assert!(wanted.is_empty(), "the peer was found");
        assert_eq!(
            reader.join().unwrap(),
            0,
            "the blocked read saw end-of-file"
        );
        // The other connection still blocks (times out) rather than seeing EOF.
        let err = server_b.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        drop((client_a, client_b));
    }
}
