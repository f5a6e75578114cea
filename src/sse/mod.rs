//! Server-Sent Events: events to exact bytes, and each client's stream.
//!
//! Four jobs, a file each:
//! - [`frame`]: an event to the exact bytes of each dialect (WHATWG framing:
//!   `id:`, `event:`, `data:`, `retry:`, `:` comments, a blank line after each),
//!   and which likes of one write a newer like of the same comment replaces.
//! - [`wire`]: a client's socket with the body's framing (chunked or
//!   close-delimited) applied to every write, and the response head we write
//!   ourselves (tiny_http's streaming response would buffer small events and,
//!   for HTTP/1.0, never send them).
//! - [`replay`]: what a reconnecting client missed, read from the store's history.
//! - [`stream`]: one client's stream from its head to its last chunk: replay,
//!   then its hub channel drained into one write per wake-up, and heartbeats.
//!   A failed write means the client left: the stream ends and its
//!   subscription leaves the hub.
//!
//! [`outlet`] sits between the stream and the wire for the `--classroom` fault
//! panel. Nothing here knows HTTP requests or tiny_http: the stream writes to a
//! plain [`std::io::Write`] that the server hands over.

pub mod frame;
mod outlet;
pub mod replay;
pub mod stream;
pub mod wire;

pub use frame::{Batch, Dialect, Message};
pub use replay::Resume;
pub use stream::StreamOptions;
pub use wire::{Framing, Wire};

/// A `Write` whose bytes the test can read back while the code under test owns it.
#[cfg(test)]
pub(crate) mod sink {
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub struct SharedSink(Arc<Mutex<Vec<u8>>>);

    impl SharedSink {
        /// Everything written so far (and empties the sink).
        pub fn take(&self) -> Vec<u8> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    impl Write for SharedSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
