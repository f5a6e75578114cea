//! A client's socket with the body's framing applied to every write, and the
//! response head we write onto it ourselves.
//!
//! tiny_http 0.12 sends a body of unknown length through a chunked encoder
//! that buffers about 8 KiB, and for an HTTP/1.0 request reads the whole body
//! before sending anything: small events would never arrive. The server
//! therefore hands us the raw writer (`Request::into_writer`); we write the
//! status line and headers, frame each write ourselves and flush after it.

use std::io::{self, Write};

/// The most room a writer's buffers keep between writes. A live event is
/// 50-300 bytes, so ordinary writes reuse their buffer; a replay page or a
/// storm's write can be a hundred KiB, and keeping that for the life of the
/// stream would make every client of a reconnect storm cost its largest page
/// while idle for hours. Past this, the buffer is freed after the write.
pub(super) const KEEP_BYTES: usize = 4096;

/// Frees `buf` if a large write left it holding more than [`KEEP_BYTES`].
pub(super) fn release_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_BYTES {
        *buf = Vec::new();
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: chunked transfer coding, one chunk per write, a zero chunk at the end.
    Chunked,
    /// HTTP/1.0 (nginx's default upstream protocol): the body ends when we close.
    CloseDelimited,
}

/// The response head of an event stream, written raw onto the socket.
fn head(framing: Framing) -> Vec<u8> {
    let delimiting = match framing {
        Framing::Chunked => "Transfer-Encoding: chunked\r\n",
        Framing::CloseDelimited => "Connection: close\r\n",
    };
    format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: text/event-stream\r\n\
         Cache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\n\
         {delimiting}\r\n"
    )
    .into_bytes()
}

/// A client's socket, with the framing applied to every write.
pub struct Wire {
    /// The client's socket, as tiny_http's raw writer.
    out: Box<dyn Write + Send>,
    /// How the body is delimited: chunks (HTTP/1.1) or the connection's end (HTTP/1.0).
    framing: Framing,
    /// The chunk being assembled, reused across writes of up to
    /// [`KEEP_BYTES`] and freed after a larger one: an idle client never pays
    /// for room it does not use (memory per client is a target).
    frame: Vec<u8>,
}

impl Wire {
    pub fn new(out: Box<dyn Write + Send>, framing: Framing) -> Self {
        Wire {
            out,
            framing,
            frame: Vec::new(),
        }
    }

    /// Writes the response head (unframed, announcing this wire's framing) and
    /// flushes it, so the browser sees the stream open at once.
    pub fn start(&mut self) -> io::Result<()> {
        self.out.write_all(&head(self.framing))?;
        self.out.flush()
    }

    /// Writes `body` as one piece (one chunk under chunked framing) and flushes.
    pub fn send(&mut self, body: &[u8]) -> io::Result<()> {
        if body.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::CloseDelimited => self.out.write_all(body)?,
            Framing::Chunked => {
                self.frame.clear();
                write!(self.frame, "{:x}\r\n", body.len())?;
                self.frame.extend_from_slice(body);
                self.frame.extend_from_slice(b"\r\n");
                let written = self.out.write_all(&self.frame);
                release_if_large(&mut self.frame);
                written?;
            }
        }
        self.out.flush()
    }

    /// Ends the body properly: the zero chunk under chunked framing.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.framing == Framing::Chunked {
            self.out.write_all(b"0\r\n\r\n")?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::frame::HEARTBEAT;
    use crate::sse::sink::SharedSink;

    /// Chunked framing wraps each write in a hex length and CRLFs; the end is a zero chunk.
    #[test]
    fn chunked_wire_bytes() {
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::Chunked);
        wire.send(b"retry: 3000\n\n").unwrap();
        wire.send(HEARTBEAT).unwrap();
        wire.finish().unwrap();
        assert_eq!(
            sink.take(),
            b"d\r\nretry: 3000\n\n\r\nd\r\n: heartbeat\n\n\r\n0\r\n\r\n".to_vec()
        );
    }

    /// A large write (a replay page) leaves no large buffer behind; small
    /// ones keep theirs for the next write.
    #[test]
    fn large_writes_leave_no_buffer_behind() {
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::Chunked);
        wire.send(HEARTBEAT).unwrap();
        assert!(wire.frame.capacity() > 0, "a small write keeps its buffer");
        let page = vec![b'x'; 100 * 1024];
        wire.send(&page).unwrap();
        assert_eq!(wire.frame.capacity(), 0);
        // Both went out whole: "d\r\n" + 13 + CRLF, then "19000\r\n" + the page + CRLF.
        assert_eq!(sink.take().len(), (3 + 13 + 2) + (7 + 100 * 1024 + 2));
    }

    /// Close-delimited framing writes the bytes as they are.
    #[test]
    fn close_delimited_wire_bytes() {
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::CloseDelimited);
        wire.send(b"retry: 3000\n\n").unwrap();
        wire.finish().unwrap();
        assert_eq!(sink.take(), b"retry: 3000\n\n".to_vec());
    }

    /// The head announces an event stream that proxies must not buffer.
    #[test]
    fn head_bytes() {
        let h = String::from_utf8(head(Framing::Chunked)).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));
        for line in [
            "Content-Type: text/event-stream\r\n",
            "Cache-Control: no-cache\r\n",
            "X-Accel-Buffering: no\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            assert!(h.contains(line), "{line}");
        }
        assert!(h.ends_with("\r\n\r\n"));
        let h10 = String::from_utf8(head(Framing::CloseDelimited)).unwrap();
        assert!(h10.contains("Connection: close\r\n") && !h10.contains("chunked"));
    }
}
