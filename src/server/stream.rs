//! Handing an event stream to its own writer thread: the socket taken from
//! tiny_http (with the guard's hold on it), the hub subscription, and the
//! refusal when the hub is full.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use tiny_http::{HTTPVersion, Request};

use super::Worker;
use crate::guard::Hold;
use crate::sse::{self, Framing, StreamOptions, Wire};

/// Stack of an SSE writer thread. Measured with `/proc/PID/smaps` on six
/// streams of every kind (live, replayed from the ring, from the store, reset,
/// with viewers, the seed's `/sse`), each through 80 likes, a writer touches
/// 8 KiB of it in the release build and 20 KiB in the debug build. Only
/// touched pages cost memory; the rest is address space, and the size does
/// not change the number of memory maps (two per stack, `limits.rs`). 256 KiB
/// keeps a wide margin for a panic in the writer, whose backtrace (with
/// `RUST_BACKTRACE`) is printed on this stack and needs far more than a
/// normal write; the default 2 MiB would only waste address space.
pub const STREAM_STACK: usize = 256 * 1024;

impl Worker {
    /// Takes the raw socket from tiny_http and hands it to a writer thread,
    /// which serves the stream from its head to its last chunk.
    pub(super) fn start_stream(
        &self,
        request: Request,
        peer: Option<SocketAddr>,
        opts: StreamOptions,
    ) {
        let framing = if *request.http_version() == HTTPVersion(1, 0) {
            Framing::CloseDelimited
        } else {
            Framing::Chunked
        };
        // Long-lived by design: the guard exempts it from deadlines, and shuts its
        // read half so tiny_http's pool thread parked on it is freed. The hold
        // goes with the socket's writer, and is dropped just before it.
        let hold = self.guard.stream(peer);
        let sub = match self.app.hub.subscribe(&opts.board) {
            Ok(sub) => sub,
            Err(refusal) => {
                // Over the cap or stopping: answered on this thread, costing
                // none. The connection stays with tiny_http, whose pool thread
                // waits on it for a next request until the client closes it
                // or the request timeout: a thread and two descriptors for up
                // to 10 s per refused client. Ending the reading here instead
                // (`Guard::shut_read`) makes the worker wait for the guard's
                // next look, which in a connect storm at the cap (15,000
                // streams for the guard to walk) held every worker long enough
                // that two thirds of a 300-connect burst timed out (`make
                // bench`, capacity phase): a refusal must stay cheap.
                let mut wire = Wire::new(Box::new(request.into_writer()), framing);
                sse::stream::refuse(&mut wire, refusal);
                // As in `Held`: the hold goes before the socket.
                drop(hold);
                drop(wire);
                return;
            }
        };
        let writer = Held {
            _hold: hold,
            inner: request.into_writer(),
        };
        let wire = Wire::new(Box::new(writer), framing);
        let app = Arc::clone(&self.app);
        let streams = Arc::clone(&self.streams);
        streams.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new()
            .name("sse".into())
            .stack_size(STREAM_STACK)
            .spawn(move || {
                sse::stream::serve(wire, sub, &app.hub, &app.replayer, &opts);
                streams.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            // The closure (and with it the socket and the subscription) is dropped.
            self.streams.fetch_sub(1, Ordering::SeqCst);
            log::error!("could not start an SSE writer thread: {e}");
        }
    }
}

/// A stream's writer together with the guard's [`Hold`] on its connection.
/// Fields drop in order: the hold goes first, so the guard never takes the
/// socket for open after it has closed.
struct Held<W> {
    _hold: Hold,
    /// The socket writer tiny_http gave us.
    inner: W,
}

impl<W: Write> Write for Held<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
