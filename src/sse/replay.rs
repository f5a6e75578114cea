//! What a reconnecting client missed: where it asked to resume from, and the
//! events after that id, from the ring of recent events when it reaches back
//! that far, else from the store's history a page at a time.
//!
//! Called by the writer loop ([`super::stream`]) when a stream starts and
//! whenever live event ids jump. Ids on one connection only ever increase: a
//! history that cannot continue them becomes `event: reset` or ends the stream.
//!
//! A reconnect storm must cost the writes nothing. Most replays start inside
//! the ring ([`crate::recent`]) and read no store at all. Those that read the
//! store wait in a line of [`STORE_READERS`] at a time, so they can slow each
//! other but never take the pooled connections likes and comments need; and a
//! store that fails is asked again, with heartbeats meanwhile, rather than
//! closing the stream (which would send the client back to replay again).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, Sender};
use std::time::{Duration, Instant};

use super::frame::{closing_retry, reset_event, Dialect, Encoded, HEARTBEAT};
use super::outlet::Outlet;
use crate::board::Board;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::recent::{Rings, Since};
use crate::store::{History, Store, StoreError};

/// Events read from history per query when catching up; a longer backlog goes
/// out in several writes, so a big replay never sits whole in memory.
const REPLAY_PAGE: usize = 1000;
/// Most pages one catch-up reads (a million events, far beyond the default
/// history): the loop stays bounded even if writes outpace it for ever.
const REPLAY_PAGES_MAX: usize = 1000;
/// Replays reading the store at once. The Redis pool has `--workers` + 4
/// connections; replays take at most this many, so a storm of them leaves
/// every worker a connection for its write. More would finish a storm sooner
/// only while the store has spare capacity, which writes then pay for.
pub const STORE_READERS: usize = 2;
/// How often a replay waiting in line sends its client a heartbeat.
const LINE_BEAT: Duration = Duration::from_secs(5);
/// How long a replay keeps asking a failing store before it gives up and
/// closes the stream with a retry hint.
const PATIENCE: Duration = Duration::from_secs(30);
/// Wait between two tries of a failing store read, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

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

/// Where replays read from, shared by every writer: the ring first, the store
/// behind a line.
pub struct Replayer {
    /// Each watched board's newest events, which most replays need no more than.
    rings: Arc<Rings>,
    /// The history further back than the ring reaches.
    store: Arc<dyn Store>,
    /// Turns to read the store: at most `STORE_READERS` replays at once.
    line: Line,
    /// Where each replay is counted and timed.
    metrics: Arc<Metrics>,
}

/// A line with `STORE_READERS` counters: at most that many replays read the
/// store at once, and the others wait their turn in order of arrival (with a
/// heartbeat now and then) rather than fail. A finished turn is handed to the
/// first in line directly, waking that one replay only.
struct Line {
    state: Mutex<LineState>,
}

struct LineState {
    /// Turns nobody holds.
    free: usize,
    /// The number for the next replay to join the line (how a leaver finds itself).
    next: u64,
    /// Replays waiting, first come first: each is handed its turn on its channel.
    waiting: VecDeque<(u64, Sender<()>)>,
}

/// A turn to read the store; the next replay in line gets it when dropped.
struct Turn<'a>(&'a Line);

impl Replayer {
    pub fn new(store: Arc<dyn Store>, rings: Arc<Rings>, metrics: Arc<Metrics>) -> Replayer {
        Replayer {
            rings,
            store,
            line: Line {
                state: Mutex::new(LineState {
                    free: STORE_READERS,
                    next: 0,
                    waiting: VecDeque::new(),
                }),
            },
            metrics,
        }
    }

    /// Sends what the client missed on `board`; returns the last id it has
    /// now seen (if known). A stream's first call: it also makes sure the
    /// board has its ring of recent events (filled on the board's first stream).
    pub(super) fn replay(
        &self,
        out: &mut Outlet,
        board: &Board,
        resume: Resume,
        dialect: Dialect,
    ) -> io::Result<Option<u64>> {
        self.rings.open(board, &*self.store);
        match resume {
            Resume::Live => Ok(None),
            Resume::After(after) => self.catch_up(out, board, after, false, dialect).map(Some),
            Resume::Invalid => {
                let newest = self.patiently(out, |store| store.last_event_id(board))?;
                out.send(&reset_event(newest))?;
                Ok(Some(newest))
            }
        }
    }

    /// Sends every event after `after`, a page per write, and returns the last
    /// id sent. A history that no longer reaches back to `after` (or never got
    /// that far) becomes `event: reset` carrying the newest id. `seen` says the
    /// client already got `after` on this connection, so no id may go below it.
    pub(super) fn catch_up(
        &self,
        out: &mut Outlet,
        board: &Board,
        mut after: u64,
        seen: bool,
        dialect: Dialect,
    ) -> io::Result<u64> {
        let ring = self.rings.get(board);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut from_store = false;
        let mut buf = Vec::new();
        for page in 0..REPLAY_PAGES_MAX {
            if let Some(Since::Covered(batches)) = ring.as_ref().map(|r| r.since(after)) {
                // Everything from here on is in memory: one write, no store.
                buf.clear();
                for event in batches.iter().flat_map(|b| &b.events) {
                    if event.id > after {
                        buf.extend_from_slice(event.bytes(dialect));
                        after = event.id;
                        sent += 1;
                    }
                }
                out.send(&buf)?;
                break;
            }
            from_store = true;
            let history = {
                let _turn = self.wait_turn(out)?;
                self.patiently(out, |store| store.history(board, after, REPLAY_PAGE))?
            };
            match history {
                History::Events(events) => {
                    buf.clear();
                    for event in &events {
                        buf.extend_from_slice(Encoded::new(event).bytes(dialect));
                    }
                    out.send(&buf)?;
                    sent += events.len() as u64;
                    let Some(last) = events.last() else { break };
                    after = last.id;
                    if events.len() < REPLAY_PAGE {
                        break;
                    }
                }
                History::Evicted { last_event_id }
                    if last_event_id < after && (seen || page > 0) =>
                {
                    // The store's ids went backwards under us (Redis lost its data).
                    // Ids on one connection only ever increase, so end the stream:
                    // the client reconnects with its Last-Event-ID and gets a reset.
                    log::warn!(
                        "SSE: board {board}: event ids went back from {after} to {last_event_id}; \
                         closing the stream"
                    );
                    out.send(&closing_retry())?;
                    return Err(io::Error::other("event ids went backwards"));
                }
                History::Evicted { last_event_id } => {
                    out.send(&reset_event(last_event_id))?;
                    after = last_event_id;
                    break;
                }
            }
        }
        self.metrics
            .observe_replay(from_store, sent, started.elapsed());
        Ok(after)
    }

    /// Waits for a turn to read the store, first come first served, counted
    /// as waiting meanwhile and sending the client a heartbeat every
    /// [`LINE_BEAT`] (a proxy must not take a long wait for a dead stream, and
    /// a client that left gives up its place).
    fn wait_turn(&self, out: &mut Outlet) -> io::Result<Turn<'_>> {
        let (mine, handed) = {
            let mut line = lock(&self.line.state);
            if line.free > 0 {
                line.free -= 1;
                return Ok(Turn(&self.line));
            }
            let (tx, rx) = bounded(1);
            let mine = line.next;
            line.next += 1;
            line.waiting.push_back((mine, tx));
            (mine, rx)
        };
        self.metrics.replay_waiting(1);
        let result = loop {
            if handed.recv_timeout(LINE_BEAT).is_ok() {
                break Ok(Turn(&self.line));
            }
            if let Err(e) = out.send(HEARTBEAT) {
                // Leaving. Out of the line if still in it; if the turn was
                // handed over meanwhile (under the lock), pass it on.
                let mut line = lock(&self.line.state);
                match line.waiting.iter().position(|(id, _)| *id == mine) {
                    Some(at) => {
                        line.waiting.remove(at);
                    }
                    None => {
                        drop(line);
                        let _ = handed.try_recv();
                        drop(Turn(&self.line));
                    }
                }
                break Err(e);
            }
        };
        self.metrics.replay_waiting(-1);
        result
    }

    /// Runs `read` on the store until it answers, for at most [`PATIENCE`],
    /// with a heartbeat to the client between tries (which also notices a
    /// client that left). Past that, the stream closes with a retry hint.
    fn patiently<T>(
        &self,
        out: &mut Outlet,
        read: impl Fn(&dyn Store) -> Result<T, StoreError>,
    ) -> io::Result<T> {
        let give_up = Instant::now() + PATIENCE;
        let mut wait = RETRY_MIN;
        loop {
            match read(&*self.store) {
                Ok(answer) => return Ok(answer),
                Err(e) if Instant::now() + wait < give_up => {
                    log::debug!("SSE replay: {e}; asking again in {} ms", wait.as_millis());
                    std::thread::sleep(wait);
                    out.send(HEARTBEAT)?;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(e) => return Err(store_failed(out, &e)),
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut line = lock(&self.0.state);
        while let Some((_, next)) = line.waiting.pop_front() {
            if next.send(()).is_ok() {
                return; // the turn goes straight to the first in line
            }
        }
        line.free += 1;
    }
}

/// The store stayed down: we cannot know what was missed. Ask the browser to
/// come back later, when replay can work; the caller ends the stream.
fn store_failed(out: &mut Outlet, e: &StoreError) -> io::Error {
    log::warn!("SSE replay failed: {e}");
    match out.send(&closing_retry()) {
        Ok(()) => io::Error::other("store unavailable for replay"),
        Err(write_error) => write_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays past the store readers wait in line and get their turns in the
    /// order they came, each handed on as the one before it finishes.
    #[test]
    fn the_line_is_first_come_first_served() {
        use crate::sse::sink::SharedSink;
        use crate::sse::wire::{Framing, Wire};
        let replayer = Arc::new(Replayer::new(
            Arc::new(crate::store::memory::MemoryStore::new(10, 10)),
            Arc::new(Rings::new(0, 0, 10)),
            Metrics::new(),
        ));
        let sink = || Wire::new(Box::new(SharedSink::default()), Framing::CloseDelimited);
        let mut wire = sink();
        let mut out = Outlet {
            wire: &mut wire,
            control: None,
            held: Vec::new(),
        };
        let mut held: Vec<Turn> = (0..STORE_READERS)
            .map(|_| replayer.wait_turn(&mut out).unwrap())
            .collect();
        let (got_tx, got) = crossbeam_channel::unbounded();
        let mut done = Vec::new();
        let waiters: Vec<_> = (0..3)
            .map(|n| {
                let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
                done.push(done_tx);
                let mine = Arc::clone(&replayer);
                let got_tx = got_tx.clone();
                let waiter = std::thread::spawn(move || {
                    let mut wire = sink();
                    let mut out = Outlet {
                        wire: &mut wire,
                        control: None,
                        held: Vec::new(),
                    };
                    let turn = mine.wait_turn(&mut out).unwrap();
                    got_tx.send(n).unwrap();
                    let _ = done_rx.recv();
                    drop(turn);
                });
                // Each joins the line before the next one does.
                while lock(&replayer.line.state).waiting.len() <= n {
                    std::thread::sleep(Duration::from_millis(5));
                }
                waiter
            })
            .collect();
        let next = || got.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(held.pop());
        assert_eq!(next(), 0, "the first in line gets the first turn back");
        let _ = done[0].send(());
        assert_eq!(next(), 1, "and hands it to the second");
        drop(held.pop());
        assert_eq!(next(), 2);
        for d in &done {
            let _ = d.send(());
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(
            lock(&replayer.line.state).free,
            STORE_READERS,
            "every turn came back"
        );
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
}
