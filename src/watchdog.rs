//! Notices when tiny_http's accept thread has died, so the server can exit
//! non-zero and a supervisor (systemd's `Restart=on-failure`) can restart it.
//!
//! The trap: tiny_http accepts connections on a thread of its own. When it
//! runs out of file descriptors it panics there (or, for other accept errors,
//! ends the loop), and the process lives on, accepting nothing: a server that
//! looks up but is dead. We cannot join that thread, but we can see it: the
//! one thread of ours that sleeps in `accept` on the listener
//! (`/proc/self/task/*/syscall`). Once found, it is known by its id and start
//! time, and the loop is dead when that thread is gone. (Watching the accept
//! queue instead, which a live loop keeps empty, misfires under a connect
//! storm faster than accepting; it remains the fallback where the thread
//! cannot be seen: the kernel reports a listener's queue in `TCP_INFO`'s
//! `tcpi_unacked`.)

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

/// How often the accept queue is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Consecutive non-empty samples that mean the accept loop is gone (3 s). A
/// burst of connects empties the queue far faster than that.
const STUCK_SAMPLES: u32 = 6;

/// Starts the watchdog on a duplicate of the listening socket; `accept_fd` is
/// the descriptor tiny_http accepts on. `on_dead` is called once if its
/// accept thread ends (or, where threads cannot be seen, if the accept queue
/// stops draining).
pub fn spawn(listener: TcpListener, accept_fd: i32, on_dead: impl FnOnce(String) + Send + 'static) {
    let started = thread::Builder::new()
        .name("accept-watchdog".into())
        .spawn(move || {
            let mut stuck = 0;
            let mut acceptor = None;
            loop {
                thread::sleep(SAMPLE_EVERY);
                if acceptor.is_none() {
                    acceptor = find_acceptor(accept_fd);
                    if let Some((tid, _)) = acceptor {
                        log::debug!("watchdog: tiny_http's accept thread is {tid}");
                    }
                }
                if let Some((tid, started)) = acceptor {
                    if thread_start(tid) != Some(started) {
                        on_dead(
                            "the accept loop ended: tiny_http's accept thread is gone \
                             (out of file descriptors?)"
                                .to_string(),
                        );
                        return;
                    }
                    continue;
                }
                match queued(&listener) {
                    Some(0) => stuck = 0,
                    Some(n) => {
                        stuck += 1;
                        if stuck >= STUCK_SAMPLES {
                            on_dead(format!(
                                "the accept loop ended: {n} connection(s) waited {} s unaccepted \
                             (tiny_http's accept thread died; out of file descriptors?)",
                                (SAMPLE_EVERY * STUCK_SAMPLES).as_secs()
                            ));
                            return;
                        }
                    }
                    None => return, // not supported here: nothing to watch
                }
            }
        });
    if let Err(e) = started {
        log::warn!("could not start the accept watchdog: {e}");
    }
}

/// Connections waiting in the listener's accept queue (Linux only):
/// `TCP_INFO` on a listener reports its accept queue in `tcpi_unacked`.
#[cfg(target_os = "linux")]
fn queued(listener: &TcpListener) -> Option<u32> {
    use std::os::fd::AsRawFd;
    crate::guard::sys::tcp_info(listener.as_raw_fd()).map(|(info, _)| info.tcpi_unacked)
}

#[cfg(not(target_os = "linux"))]
fn queued(_: &TcpListener) -> Option<u32> {
    None
}

#[cfg(target_os = "linux")]
use crate::guard::sys::{acceptor as find_acceptor, thread_start};

#[cfg(not(target_os = "linux"))]
fn find_acceptor(_: i32) -> Option<(u32, u64)> {
    None
}

#[cfg(not(target_os = "linux"))]
fn thread_start(_: u32) -> Option<u64> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// TCP_INFO on a listener counts connections nobody has accepted yet.
    #[test]
    fn counts_unaccepted_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(queued(&listener), Some(0));
        let _a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _b = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(queued(&listener), Some(2));
        drop(listener.accept().unwrap());
        assert_eq!(queued(&listener), Some(1));
    }

    /// A listener nobody accepts from is reported dead after a few seconds.
    #[test]
    fn reports_a_listener_nobody_drains() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _waiting = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        spawn(listener, -1, move |why| {
            let _ = tx.send(why);
        });
        let why = rx
            .recv_timeout(Duration::from_secs(6))
            .expect("reported within 6 s");
        assert!(why.contains("accept loop ended"), "{why}");
    }
}
