//! The HTTP edge: the listener, tiny_http's accept loop, the request workers,
//! and the hand-off of event-stream requests to their own writer threads.
//!
//! Shape: tiny_http accepts connections and parses requests; a fixed set of
//! worker threads take requests from it and answer them (the cap on concurrent
//! ordinary requests). A request for `/events` gets a thread of its own, which
//! runs [`crate::sse::stream::serve`] until the client leaves. Only this
//! module (with `body.rs`, `stream.rs`, `visitor.rs` beside it) and `routes/`
//! import tiny_http.

mod body;
mod stream;
pub use stream::STREAM_STACK;
mod visitor;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tiny_http::{HTTPVersion, Header, Request, Response};

use crate::error::Error;
use crate::guard::{self, Guard, Hold};
use crate::routes::{self, App, Outcome, Reply, Route};

/// Pending connections the kernel queues for us. std's `TcpListener::bind` uses
/// 128: a burst of 1,000 connects then waits on SYN retries (seconds). The
/// kernel silently caps this at `net.core.somaxconn` (4096 on current kernels).
const BACKLOG: i32 = 4096;
/// How long a write to a client may block. Set on the listener, every accepted
/// socket inherits it: a stalled peer cannot hold a thread forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for streams and in-flight requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A bound, running HTTP server.
pub struct Server {
    /// tiny_http's server: its accept loop, and the queue the workers take requests from.
    http: Arc<tiny_http::Server>,
    /// The address bound (the real port when 0 was asked for).
    addr: SocketAddr,
    /// Everything the handlers share.
    app: Arc<App>,
    /// A duplicate of the listening socket, for the accept watchdog.
    probe: Option<TcpListener>,
    /// The descriptor tiny_http accepts on (the watchdog finds its thread by it).
    accept_fd: i32,
    /// Deadlines and byte budgets for requests (tiny_http has none).
    guard: Guard,
    /// Live SSE writer threads, which shutdown waits for.
    streams: Arc<AtomicUsize>,
    /// Ordinary requests being answered, which shutdown waits for too.
    in_flight: Arc<AtomicUsize>,
    /// Set by shutdown: ordinary requests get 503, workers end when unblocked.
    stopping: Arc<AtomicBool>,
}

/// Builds the listening socket: a large backlog and an inherited write timeout.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // SO_SNDTIMEO is copied to every accepted socket. (SO_RCVTIMEO would be too,
    // but on a listener it also makes accept() time out, which ends tiny_http's
    // accept loop; read timeouts are therefore not set here.)
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    // TCP_NODELAY, inherited the same way on Linux (the accepted socket is a
    // copy of the listener's; `nodelay_is_inherited` reads it back). Each
    // write of ours is a whole chunk we want on the wire now: with Nagle, a
    // stream's next small chunk would wait for the ACK of the one before
    // (up to the peer's delayed-ACK time, 40 ms) during a like storm.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

impl Server {
    /// Binds the address and starts tiny_http's accept thread.
    pub fn start(app: Arc<App>) -> io::Result<Server> {
        let listener = bind(app.config.listen)?;
        let addr = listener.local_addr()?;
        let probe = listener.try_clone().ok();
        let accept_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let watched = listener.try_clone()?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| io::Error::other(format!("starting tiny_http: {e}")))?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let limits = guard::Limits {
            timeout: app.config.request_timeout,
            // A full head, a full body, and room for the 431 to be ours.
            max_bytes: (4 * guard::MAX_HEAD_BYTES + routes::BODY_LIMIT) as u64,
        };
        let guard = Guard::start(&watched, limits, Arc::clone(&in_flight), app.config.workers);
        Ok(Server {
            http: Arc::new(http),
            addr,
            app,
            probe,
            accept_fd,
            guard,
            streams: Arc::new(AtomicUsize::new(0)),
            in_flight,
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the workers. Returns a receiver that yields once if the accept
    /// loop dies (the caller exits non-zero so a supervisor restarts us).
    pub fn spawn_workers(&mut self) -> crossbeam_channel::Receiver<String> {
        let (fatal_tx, fatal_rx) = crossbeam_channel::bounded(1);
        if let Some(probe) = self.probe.take() {
            let fatal = fatal_tx.clone();
            crate::watchdog::spawn(probe, self.accept_fd, move |why| {
                let _ = fatal.try_send(why);
            });
        }
        for i in 0..self.app.config.workers {
            let worker = Worker {
                http: Arc::clone(&self.http),
                app: Arc::clone(&self.app),
                guard: self.guard.clone(),
                streams: Arc::clone(&self.streams),
                in_flight: Arc::clone(&self.in_flight),
                stopping: Arc::clone(&self.stopping),
            };
            let fatal = fatal_tx.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if let Err(e) = worker.run() {
                        let _ = fatal.try_send(e);
                    }
                })
                .expect("spawning request workers at startup");
        }
        fatal_rx
    }

    /// Graceful shutdown: refuse new streams, tell every SSE client to retry
    /// later and close its stream, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Closing the hub disconnects every writer's channel; each sends a final
        // `retry:` and ends its stream.
        self.app.hub.close();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline
            && (self.streams.load(Ordering::SeqCst) > 0
                || self.in_flight.load(Ordering::SeqCst) > 0)
        {
            thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..self.app.config.workers {
            self.http.unblock();
        }
    }
}

/// One request worker: takes requests from tiny_http and answers them. Its
/// fields are the [`Server`]'s, shared (see there for why each exists).
struct Worker {
    /// tiny_http's server: its accept loop, and the queue the workers take requests from.
    http: Arc<tiny_http::Server>,
    /// Everything the handlers share.
    app: Arc<App>,
    /// Where the worker tells the guard which connections it holds.
    guard: Guard,
    /// Live stream writer threads, so shutdown can wait for them.
    streams: Arc<AtomicUsize>,
    /// Requests being answered now (the guard reads it too).
    in_flight: Arc<AtomicUsize>,
    /// Set at shutdown: new requests get 503, new streams a retry hint.
    stopping: Arc<AtomicBool>,
}

impl Worker {
    /// Serves until shutdown (Ok) or until the accept loop dies (Err).
    fn run(&self) -> Result<(), String> {
        loop {
            let request = match self.http.recv() {
                Ok(request) => request,
                Err(_) if self.stopping.load(Ordering::SeqCst) => return Ok(()),
                // tiny_http ends its accept thread on the first accept error
                // (e.g. out of file descriptors) and tells one receiver.
                Err(e) => return Err(format!("the accept loop ended: {e}")),
            };
            let peer = request.remote_addr().copied();
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            // Held until the reply is written: the guard then knows a worker may
            // write to this connection, and never writes over it.
            let hold = self.guard.request(peer);
            // Everything a request does, dropping it included (tiny_http discards
            // an unread body there), runs contained: this worker survives it.
            let handled = catch_unwind(AssertUnwindSafe(|| self.handle(request, peer, &hold)));
            if handled.is_err() {
                log::error!("a request panicked outside its handler; the worker carries on");
            }
            drop(hold);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn handle(&self, mut request: Request, peer: Option<SocketAddr>, hold: &Hold) {
        let started = Instant::now();
        let method = request.method().to_string();
        let path: String = request
            .url()
            .split('?')
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        let (visitor, set_cookie) = visitor::visitor_of(&request, &self.app);
        if *request.http_version() < HTTPVersion(1, 0) {
            // tiny_http would answer HTTP/0.9 in kind, a status line 0.9 never had.
            self.guard.shut_read(peer, hold);
            self.observe(Route::NotFound.pattern(), &method, 505, started);
            let mut writer = request.into_writer();
            let _ = writer.write_all(&Error::VersionNotSupported.raw_reply());
            let _ = writer.flush();
            return;
        }
        let body = body::Body::of(&request);
        if body.check().is_err() {
            // Refused unread: end the reading before anything drops the request.
            self.guard.shut_read(peer, hold);
        }

        // The route's label in the metrics; a request refused before it has a
        // route (its head over the limits, its path not decodable) has none.
        let mut pattern = Route::NotFound.pattern();
        // A panic in a handler is contained here: logged, answered with 500,
        // and this worker carries on serving.
        let outcome = contain(|| {
            body.check()?;
            let target = routes::target(&request)?;
            // Parsed once: this one value decides the label, the shutdown
            // answer and the handler.
            let route = Route::parse(request.method(), &target.path, &self.app.config);
            pattern = route.pattern();
            let stopping = self.stopping.load(Ordering::SeqCst);
            if stopping && !route.opens_stream() {
                return Err(Error::Unavailable("shutting down".into()));
            }
            routes::dispatch(&self.app, &mut request, route, &target, &visitor)
        });
        if body.unbuffered() {
            // The handler has read what it wanted; tiny_http would read the rest
            // on this thread when the request is dropped (see body.rs): end the
            // reading first. The connection closes after the reply.
            self.guard.shut_read(peer, hold);
        }
        let reply = match outcome {
            Ok(Outcome::Stream(opts)) => {
                self.observe(pattern, &method, 200, started);
                self.start_stream(request, peer, opts);
                log::debug!(
                    "{method} {path} -> stream ({} ms)",
                    started.elapsed().as_millis()
                );
                return;
            }
            Ok(Outcome::Reply(reply)) => reply,
            Err(e) => {
                if e.status() >= 500 {
                    log::error!("{method} {path}: {e}");
                }
                Reply::error(&e)
            }
        };
        let status = reply.status;
        // Counted before the reply goes out, so a client that reads /metrics
        // right after its reply sees its own request counted.
        self.observe(pattern, &method, status, started);
        let set_cookie = visitor::admit(&self.app, &visitor, set_cookie);
        if let Err(e) = respond(request, reply, set_cookie) {
            log::debug!("{method} {path}: client left before the reply: {e}");
        }
        log::info!(
            "{} {method} {path} {status} {} ms",
            visitor.ip,
            started.elapsed().as_millis()
        );
    }

    /// Counts an answered request in the metrics, under its route pattern.
    fn observe(&self, pattern: &'static str, method: &str, status: u16, started: Instant) {
        let took = started.elapsed();
        self.app
            .metrics
            .observe_request(pattern, method, status, took);
    }
}

/// Runs a handler, turning a panic into a 500 whose detail is logged by the
/// caller and never shown to the client. The worker thread survives it.
fn contain<T>(handler: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(handler)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Internal(format!("handler panicked: {what}")))
    })
}

/// Sends a complete reply with the headers every response carries.
fn respond(request: Request, reply: Reply, set_cookie: Option<String>) -> io::Result<()> {
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    let mut add = |name: &str, value: &str| {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    };
    add("Content-Type", reply.content_type);
    add("X-Content-Type-Options", "nosniff");
    add("Referrer-Policy", "same-origin");
    if let Some(cookie) = &set_cookie {
        add("Set-Cookie", cookie);
    }
    for (name, value) in &reply.headers {
        add(name, value);
    }
    request.respond(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket accepted from the listener `bind` builds has TCP_NODELAY set,
    /// though only the listener was asked: Linux copies it to every accepted
    /// socket, so no write of a stream waits for Nagle.
    #[test]
    fn nodelay_is_inherited() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "the accepted socket");
        assert!(
            !client.nodelay().unwrap(),
            "a socket nobody asked stays as it was"
        );
    }

    /// A panicking handler becomes a 500 that names nothing internal, and the
    /// calling thread carries on.
    #[test]
    fn a_panic_becomes_a_500() {
        let result: Result<(), Error> = contain(|| panic!("secret detail"));
        let e = result.unwrap_err();
        assert_eq!(e.status(), 500);
        assert!(
            e.to_string().contains("secret detail"),
            "the log gets it: {e}"
        );
        assert_eq!(
            e.body(),
            r#"{"error":"internal error"}"#,
            "the client does not"
        );
        assert_eq!(contain(|| Ok::<_, Error>(7)).unwrap(), 7);
    }
}
