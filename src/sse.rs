//! Server-Sent Events: events to exact bytes, and the per-client writer loop.
//!
//! Framing follows the WHATWG spec (`id:`, `event:`, `data:`, `retry:` and `:`
//! comments, each event ended by a blank line). The writer owns one client's
//! socket: it writes the response head itself (tiny_http's streaming response
//! would buffer small events and, for HTTP/1.0, never send them), replays missed
//! events, then drains its hub channel, writing everything pending in one write
//! and flushing. A failed write means the client left: the thread ends and its
//! subscription leaves the hub.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::classroom::{Control, Poke};
use crate::hub::Subscription;
use crate::store::{Event, EventKind, History, Store, StoreError};

/// The reconnection delay we suggest to browsers, in milliseconds.
pub const RETRY_MS: u64 = 3000;
/// The heartbeat comment. Its only job is to keep proxies and dead-peer
/// detection busy on an idle stream; EventSource ignores it.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";
/// Events read from history per query when catching up; a longer backlog goes
/// out in several writes, so a big replay never sits whole in memory.
const REPLAY_PAGE: usize = 1000;
/// Most pages one catch-up reads (a million events, far beyond the default
/// history): the loop stays bounded even if writes outpace it for ever.
const REPLAY_PAGES_MAX: usize = 1000;

/// Which event format a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/events`: `id`, `event: like|comment`, one line of JSON.
    Standard,
    /// The seed's `/sse`: `id` and `data: <comment id>@<POST|DELETE>` for likes only.
    Seed,
}

/// One event already rendered in both dialects; rendered once by the pump and
/// shared by every client through an `Arc<Batch>`.
#[derive(Debug)]
pub struct Encoded {
    pub id: u64,
    standard: Vec<u8>,
    seed: Option<Vec<u8>>,
}

impl Encoded {
    pub fn new(event: &Event) -> Self {
        let (name, data) = match &event.kind {
            EventKind::Like { comment, score, .. } => {
                ("like", json!({ "id": comment, "score": score }).to_string())
            }
            EventKind::Comment(c) => ("comment", serde_json::to_string(c).unwrap_or_default()),
        };
        let standard = format!("id: {}\nevent: {name}\ndata: {data}\n\n", event.id).into_bytes();
        let seed = match &event.kind {
            EventKind::Like { comment, op, .. } => {
                Some(format!("id: {}\ndata: {comment}@{}\n\n", event.id, op.method()).into_bytes())
            }
            EventKind::Comment(_) => None,
        };
        Encoded {
            id: event.id,
            standard,
            seed,
        }
    }

    fn bytes(&self, dialect: Dialect) -> &[u8] {
        match dialect {
            Dialect::Standard => &self.standard,
            Dialect::Seed => self.seed.as_deref().unwrap_or_default(),
        }
    }
}

/// Events the pump read in one go, in id order; or a viewer count.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Encoded>,
    /// How many event streams this process holds, from the viewers thread
    /// ([`crate::viewers`]). Sent as `event: viewers` WITHOUT an id: it is
    /// per-process presence, not part of the shared log, so it must never move
    /// a browser's Last-Event-ID (an id-less event leaves it unchanged).
    pub viewers: Option<usize>,
}

impl Batch {
    pub fn new(events: &[Event]) -> Self {
        Batch {
            events: events.iter().map(Encoded::new).collect(),
            viewers: None,
        }
    }

    /// A batch that only carries the current viewer count.
    pub fn viewers(count: usize) -> Self {
        Batch {
            events: Vec::new(),
            viewers: Some(count),
        }
    }
}

/// A message from the pump to every writer.
pub type Message = Arc<Batch>;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: chunked transfer coding, one chunk per write, a zero chunk at the end.
    Chunked,
    /// HTTP/1.0 (nginx's default upstream protocol): the body ends when we close.
    CloseDelimited,
}

/// Where a client asked to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A fresh connection: live events only.
    Live,
    /// Replay everything after this id, then go live.
    After(u64),
    /// An id we could not parse: tell the client to refetch (`event: reset`).
    Invalid,
}

impl Resume {
    /// Parses a `Last-Event-ID` header or `?since=` value strictly: ASCII digits only.
    pub fn parse(value: Option<&str>) -> Resume {
        match value.map(str::trim) {
            None | Some("") => Resume::Live,
            Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map_or(Resume::Invalid, Resume::After)
            }
            Some(_) => Resume::Invalid,
        }
    }
}

/// The response head of an event stream, written raw onto the socket.
pub fn head(framing: Framing, extra_headers: &str) -> Vec<u8> {
    let delimiting = match framing {
        Framing::Chunked => "Transfer-Encoding: chunked\r\n",
        Framing::CloseDelimited => "Connection: close\r\n",
    };
    format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: text/event-stream\r\n\
         Cache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\n\
         {delimiting}{extra_headers}\r\n"
    )
    .into_bytes()
}

/// A client's socket, with the framing applied to every write.
pub struct Wire {
    out: Box<dyn Write + Send>,
    framing: Framing,
    frame: Vec<u8>,
}

impl Wire {
    pub fn new(out: Box<dyn Write + Send>, framing: Framing) -> Self {
        Wire {
            out,
            framing,
            // Grows to the largest write and stays there; an idle client never
            // pays for room it does not use (memory per client is a target).
            frame: Vec::new(),
        }
    }

    /// Writes the response head (unframed) and flushes it, so the browser sees
    /// the stream open at once.
    pub fn start(&mut self, head: &[u8]) -> io::Result<()> {
        self.out.write_all(head)?;
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
                self.out.write_all(&self.frame)?;
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

/// The `retry:` field, alone in a block so it dispatches no event.
pub fn retry_field(ms: u64) -> Vec<u8> {
    format!("retry: {ms}\n\n").into_bytes()
}

/// `event: viewers`: how many event streams this process is serving. No `id:`,
/// so it is neither replayed nor counted in Last-Event-ID.
pub fn viewers_event(count: usize) -> Vec<u8> {
    format!("event: viewers\ndata: {{\"count\":{count}}}\n\n").into_bytes()
}

/// `event: reset`: the requested history is gone; refetch, then continue from `last`.
pub fn reset_event(last_event_id: u64) -> Vec<u8> {
    format!(
        "id: {last_event_id}\nevent: reset\ndata: {{\"last_event_id\":\"{last_event_id}\"}}\n\n"
    )
    .into_bytes()
}

/// Why a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A write failed: the client went away.
    ClientLeft,
    /// The hub closed our channel: we were too slow, or the server is stopping.
    Unsubscribed,
    /// The classroom's fault panel asked us to drop this connection.
    Dropped,
}

/// Options of one client's stream.
pub struct StreamOptions {
    pub dialect: Dialect,
    pub resume: Resume,
    pub heartbeat: Duration,
    /// Pass on `event: viewers` (the page asks with `?viewers=1`; plain API
    /// clients keep the documented stream of log events only).
    pub viewers: bool,
    /// The fault panel's hold on this stream (`--classroom` and `?client=`).
    pub control: Option<Control>,
}

/// Runs one client's stream until it ends: replay, then live events and
/// heartbeats. The caller has already written the head and the first `retry:`.
pub fn run(
    wire: &mut Wire,
    sub: &Subscription<Message>,
    store: &dyn Store,
    opts: &StreamOptions,
) -> End {
    // Without the fault panel, `pokes` never fires and `out` writes straight through.
    let never = crossbeam_channel::never();
    let pokes = opts.control.as_ref().map_or(&never, |c| &c.pokes);
    let mut out = Outlet {
        wire,
        control: opts.control.as_ref(),
        held: Vec::new(),
    };
    // The subscription exists before the replay is read, so nothing published
    // in between is lost; `last_sent` drops anything the replay already covered.
    let mut last_sent = match replay(&mut out, store, opts) {
        Ok(last) => last,
        Err(_) => return End::ClientLeft,
    };
    // Grows on demand, like the wire's frame buffer.
    let mut buf = Vec::new();
    // Heartbeats are due a heartbeat period after the last write, not after the
    // last wake-up: a batch with nothing for this client (a viewer count it did
    // not ask for) must not keep postponing them, or a dead peer goes unnoticed.
    let mut beat_due = Instant::now() + opts.heartbeat;
    loop {
        let first = crossbeam_channel::select! {
            recv(sub.rx) -> batch => match batch {
                Ok(batch) => batch,
                Err(_) => return End::Unsubscribed,
            },
            recv(pokes) -> poke => match poke {
                Ok(Poke::Drop) | Err(_) => return End::Dropped,
                Ok(Poke::Changed) => {
                    if out.send(b"").is_err() {
                        return End::ClientLeft;
                    }
                    continue;
                }
            },
            default(beat_due.saturating_duration_since(Instant::now())) => {
                let quiet = opts.control.as_ref().is_some_and(|c| c.quiet());
                if !quiet && out.send(HEARTBEAT).is_err() {
                    return End::ClientLeft;
                }
                beat_due = Instant::now() + opts.heartbeat;
                continue;
            }
        };
        // Coalesce: everything already queued goes out in the same write.
        buf.clear();
        let mut viewers = None;
        for batch in std::iter::once(first).chain(sub.rx.try_iter()) {
            for event in &batch.events {
                if let Some(last) = last_sent.filter(|&last| event.id > last + 1) {
                    // A gap. Event ids are consecutive, so events between `last`
                    // and this one never reached our channel: the pump started
                    // (or resumed) after our replay was read, or the stream was
                    // trimmed past it. History fills the gap, or says reset.
                    if out.send(&buf).is_err() {
                        return End::ClientLeft;
                    }
                    buf.clear();
                    match catch_up(&mut out, store, last, true, opts.dialect) {
                        Ok(caught_up) => last_sent = Some(caught_up),
                        Err(_) => return End::ClientLeft,
                    }
                }
                if last_sent.is_some_and(|last| event.id <= last) {
                    continue;
                }
                buf.extend_from_slice(event.bytes(opts.dialect));
                last_sent = Some(event.id);
            }
            if opts.viewers && opts.dialect == Dialect::Standard {
                // Only the newest count matters.
                viewers = batch.viewers.or(viewers);
            }
        }
        if let Some(count) = viewers {
            buf.extend_from_slice(&viewers_event(count));
        }
        if buf.is_empty() {
            continue;
        }
        if out.send(&buf).is_err() {
            return End::ClientLeft;
        }
        beat_due = Instant::now() + opts.heartbeat;
    }
}

/// The writer's way out: straight to the wire, or held back while the fault
/// panel has this stream in buffered mode (as a buffering proxy would).
struct Outlet<'a> {
    wire: &'a mut Wire,
    control: Option<&'a Control>,
    held: Vec<u8>,
}

impl Outlet<'_> {
    /// Sends `body` (an empty one just releases what buffered mode held, if it
    /// has been switched off).
    fn send(&mut self, body: &[u8]) -> io::Result<()> {
        if self.control.is_some_and(|c| c.buffered()) {
            self.held.extend_from_slice(body);
            if self.held.len() < crate::classroom::PROXY_BUFFER {
                return Ok(());
            }
        } else if self.held.is_empty() {
            return self.wire.send(body);
        } else {
            self.held.extend_from_slice(body);
        }
        let held = std::mem::take(&mut self.held);
        self.wire.send(&held)
    }
}

/// Sends what the client missed; returns the last id it has now seen (if known).
fn replay(out: &mut Outlet, store: &dyn Store, opts: &StreamOptions) -> io::Result<Option<u64>> {
    match opts.resume {
        Resume::Live => Ok(None),
        Resume::After(after) => catch_up(out, store, after, false, opts.dialect).map(Some),
        Resume::Invalid => match store.last_event_id() {
            Ok(last_event_id) => {
                out.send(&reset_event(last_event_id))?;
                Ok(Some(last_event_id))
            }
            Err(e) => Err(store_failed(out, &e)),
        },
    }
}

/// Sends every event after `after` from history, a page per write, and returns
/// the last id sent. A history that no longer reaches back to `after` (or never
/// got that far) becomes `event: reset` carrying the newest id. `seen` says the
/// client already got `after` on this connection, so no id may go below it.
fn catch_up(
    out: &mut Outlet,
    store: &dyn Store,
    mut after: u64,
    seen: bool,
    dialect: Dialect,
) -> io::Result<u64> {
    let mut buf = Vec::new();
    for page in 0..REPLAY_PAGES_MAX {
        match store.history(after, REPLAY_PAGE) {
            Ok(History::Events(events)) => {
                buf.clear();
                for event in &events {
                    buf.extend_from_slice(Encoded::new(event).bytes(dialect));
                }
                out.send(&buf)?;
                let Some(last) = events.last() else { break };
                after = last.id;
                if events.len() < REPLAY_PAGE {
                    break;
                }
            }
            Ok(History::Evicted { last_event_id })
                if last_event_id < after && (seen || page > 0) =>
            {
                // The store's ids went backwards under us (Redis lost its data).
                // Ids on one connection only ever increase, so end the stream:
                // the client reconnects with its Last-Event-ID and gets a reset.
                log::warn!(
                    "SSE: event ids went back from {after} to {last_event_id}; closing the stream"
                );
                out.send(&retry_field(RETRY_MS))?;
                return Err(io::Error::other("event ids went backwards"));
            }
            Ok(History::Evicted { last_event_id }) => {
                out.send(&reset_event(last_event_id))?;
                return Ok(last_event_id);
            }
            Err(e) => return Err(store_failed(out, &e)),
        }
    }
    Ok(after)
}

/// The store is down: we cannot know what was missed. Ask the browser to come
/// back later, when replay can work; the caller ends the stream.
fn store_failed(out: &mut Outlet, e: &StoreError) -> io::Error {
    log::warn!("SSE replay failed: {e}");
    match out.send(&retry_field(RETRY_MS)) {
        Ok(()) => io::Error::other("store unavailable for replay"),
        Err(write_error) => write_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Comment, LikeOp};

    fn like(id: u64, comment: u64, score: u64, op: LikeOp) -> Event {
        Event {
            id,
            kind: EventKind::Like { comment, score, op },
        }
    }

    /// A like renders to exactly `id`, `event: like` and one line of JSON.
    #[test]
    fn like_frame_bytes() {
        let e = Encoded::new(&like(7, 3, 12, LikeOp::Like));
        assert_eq!(
            e.bytes(Dialect::Standard),
            b"id: 7\nevent: like\ndata: {\"id\":3,\"score\":12}\n\n"
        );
        assert_eq!(e.bytes(Dialect::Seed), b"id: 7\ndata: 3@POST\n\n");
        let u = Encoded::new(&like(8, 3, 11, LikeOp::Unlike));
        assert_eq!(u.bytes(Dialect::Seed), b"id: 8\ndata: 3@DELETE\n\n");
    }

    /// A comment's text stays on one `data:` line even when it holds newlines:
    /// JSON escapes them, so a comment can never inject fields.
    #[test]
    fn comment_frame_is_one_data_line() {
        let c = Comment {
            id: 1,
            nickname: "x".into(),
            content: "a\n\nid: 99\ndata: evil".into(),
            score: 0,
            created_at: 5,
        };
        let e = Encoded::new(&Event {
            id: 2,
            kind: EventKind::Comment(c),
        });
        let text = String::from_utf8(e.bytes(Dialect::Standard).to_vec()).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("data:")).count(),
            1,
            "{text}"
        );
        assert!(!text.contains("\nid: 99"), "{text}");
        assert!(text.starts_with("id: 2\nevent: comment\ndata: {\"id\":1,"));
        assert!(text.ends_with("}\n\n"));
        // The seed's stream only carries likes.
        assert!(e.bytes(Dialect::Seed).is_empty());
    }

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

    /// Close-delimited framing writes the bytes as they are.
    #[test]
    fn close_delimited_wire_bytes() {
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::CloseDelimited);
        wire.send(b"retry: 3000\n\n").unwrap();
        wire.finish().unwrap();
        assert_eq!(sink.take(), b"retry: 3000\n\n".to_vec());
    }

    /// Last-Event-ID is parsed strictly; anything but digits asks for a reset.
    #[test]
    fn resume_parsing() {
        assert_eq!(Resume::parse(None), Resume::Live);
        assert_eq!(Resume::parse(Some("")), Resume::Live);
        assert_eq!(Resume::parse(Some("42")), Resume::After(42));
        for bad in ["-1", "4x", "1e3", "99999999999999999999999", "0x10", " 1 2"] {
            assert_eq!(Resume::parse(Some(bad)), Resume::Invalid, "{bad}");
        }
    }

    /// The head announces an event stream that proxies must not buffer.
    #[test]
    fn head_bytes() {
        let h = String::from_utf8(head(Framing::Chunked, "")).unwrap();
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
        let h10 = String::from_utf8(head(Framing::CloseDelimited, "")).unwrap();
        assert!(h10.contains("Connection: close\r\n") && !h10.contains("chunked"));
    }

    /// Runs a Live stream over `batches` (then the hub closes) and returns the body.
    fn stream_batches(store: &dyn Store, batches: Vec<Vec<Event>>) -> String {
        let hub = crate::hub::Hub::new(4);
        let sub = hub.subscribe().unwrap();
        for events in &batches {
            hub.publish(Arc::new(Batch::new(events)));
        }
        hub.close();
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::CloseDelimited);
        let opts = StreamOptions {
            dialect: Dialect::Standard,
            resume: Resume::Live,
            heartbeat: Duration::from_secs(60),
            viewers: false,
            control: None,
        };
        assert_eq!(run(&mut wire, &sub, store, &opts), End::Unsubscribed);
        String::from_utf8(sink.take()).unwrap()
    }

    fn ids(body: &str) -> Vec<u64> {
        body.lines()
            .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
            .collect()
    }

    fn store_with_likes(capacity: u64, likes: u64) -> crate::store::memory::MemoryStore {
        let store = crate::store::memory::MemoryStore::new(capacity);
        let c = store
            .add_comment(crate::store::NewComment {
                nickname: "n".into(),
                content: "c".into(),
                created_at: 0,
            })
            .unwrap();
        for v in 0..likes {
            store.set_like(c.id, &v.to_string(), LikeOp::Like).unwrap();
        }
        store
    }

    /// Live events that skip ids (the pump started after the replay was read)
    /// are completed from history: no gap, no duplicate.
    #[test]
    fn gap_in_live_events_is_filled_from_history() {
        let store = store_with_likes(100, 5); // events 1..=6
        let body = stream_batches(
            &store,
            vec![
                vec![like(2, 1, 1, LikeOp::Like)],
                vec![like(5, 1, 4, LikeOp::Like), like(6, 1, 5, LikeOp::Like)],
            ],
        );
        assert_eq!(ids(&body), vec![2, 3, 4, 5, 6], "{body}");
    }

    /// A gap that history no longer covers becomes `event: reset`, and ids still rise.
    #[test]
    fn gap_beyond_history_resets() {
        let store = store_with_likes(2, 5); // keeps events 5 and 6
        let body = stream_batches(
            &store,
            vec![
                vec![like(2, 1, 1, LikeOp::Like)],
                vec![like(6, 1, 5, LikeOp::Like)],
            ],
        );
        assert!(
            body.contains("id: 6\nevent: reset\ndata: {\"last_event_id\":\"6\"}\n\n"),
            "{body}"
        );
        assert_eq!(ids(&body), vec![2, 6], "{body}");
    }

    #[derive(Clone, Default)]
    struct SharedSink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl SharedSink {
        fn take(&self) -> Vec<u8> {
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
