//! The pump: one thread per process that reads new events from the store's
//! logs and hands each board's batch to the hub.
//!
//! Writers never broadcast themselves. Going through the log means every
//! process delivers every event in the same order with the same ids, whichever
//! process took the write: that is what lets several instances share one Redis
//! (or one Redis Cluster). Whatever is pending is read in one go and rendered
//! once per board, so under a like storm the cost of fan-out is per batch, not
//! per event.
//!
//! The reader (`EventReader`) hears every board's new events, but may miss
//! some while it is reconnecting (Redis pub/sub keeps nothing for an absent
//! subscriber). The logs are the record, and event ids per board are
//! consecutive, so the pump keeps each watched board whole itself:
//!
//! - **a gap**: an event whose id is not the next one for its board; the pump
//!   reads what lies between from the board's log first.
//! - **a lost last event**, which no later event would reveal: after every
//!   resubscription (the only time events go missing), and once a second while
//!   the feed is quiet, the pump compares each watched board's newest id in
//!   the store with its own and reads what it lacks (the *sweep*).
//! - **ids going back** (a FLUSH, or Redis restarted without persistence):
//!   seen by the sweep, or by an event at or below the board's position; the
//!   board's streams are closed so their clients reset.
//!
//! Where the pump is on each board is its ring's position (`recent.rs`):
//! every board with a stream here has one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::board::Board;
use crate::hub::Hub;
use crate::recent::{Recent, Rings};
use crate::sse::{Batch, Message};
use crate::store::{Event, History, Store, StoreError};

/// How long one blocking read waits before looping (to notice shutdown).
const WAIT: Duration = Duration::from_secs(1);
/// Most events taken in one read; a bigger backlog arrives in several batches.
const BATCH_MAX: usize = 1000;
/// Backoff after a failed read, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The most often a quiet feed makes the pump sweep the watched boards.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Counters the pump keeps, for `/metrics` and `/healthz`.
#[derive(Default)]
pub struct PumpStats {
    /// The id of the last event of the default board handed to the hub.
    pub last_delivered: AtomicU64,
    /// Events handed to the hub since start.
    pub events: AtomicU64,
    /// Batches handed to the hub since start (one per board per hand-out).
    pub batches: AtomicU64,
    /// Failed reads since start.
    pub errors: AtomicU64,
    /// Events the pump read from a log itself: gaps and lost last events.
    pub recovered: AtomicU64,
    /// Set once the pump's reader is subscribed: new events are heard.
    pub running: AtomicBool,
}

/// What the pump works with.
struct Pump<'a> {
    store: &'a dyn Store,
    hub: &'a Hub<Message>,
    rings: &'a Rings,
    stats: &'a PumpStats,
    /// The least time between two hand-outs (`--coalesce-ms`). Each hand-out
    /// costs a send to every stream's channel and wakes every writer, so
    /// under a storm, events handed out one by one cost the CPU that the
    /// likes themselves need (`make bench`, the like storm). After a
    /// hand-out the pump waits out the rest of this before reading again:
    /// an event after a quiet spell goes at once, a storm's go in batches,
    /// at most one per board per period, which writers fold further
    /// (`sse::frame::fold`). The window is the process's, not a board's: a
    /// pump that held back only the storming board would wake for each of
    /// its events (a wake-up per like) just to set it aside; while one board
    /// storms, a lone event elsewhere waits up to the window too.
    coalesce: Duration,
}

/// Starts the pump thread. Runs until `stop` is set.
///
/// The caller fills the default board's ring before it accepts any client:
/// its position is where the pump starts on that board.
pub fn spawn(
    store: Arc<dyn Store>,
    hub: Arc<Hub<Message>>,
    rings: Arc<Rings>,
    stats: Arc<PumpStats>,
    coalesce: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("pump".into())
        .spawn(move || {
            let pump = Pump {
                store: &*store,
                hub: &hub,
                rings: &rings,
                stats: &stats,
                coalesce,
            };
            pump.run(&stop);
        })
        .expect("spawning the pump thread")
}

impl Pump<'_> {
    fn run(&self, stop: &AtomicBool) {
        let mut reader = self.store.event_reader();
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        // A sweep is owed after a resubscription or a failure, and tried
        // again each SWEEP_EVERY until one reaches every board; a quiet feed
        // also gets one each SWEEP_EVERY. A board the store cannot answer
        // for (its Redis Cluster master is down) never holds up the others.
        let mut owed = false;
        let mut next_try = Instant::now();
        let mut quiet_until = Instant::now() + SWEEP_EVERY;
        // When the pump last handed events out (see `coalesce`).
        let mut handed_out: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(rest) = handed_out.and_then(|at| self.coalesce.checked_sub(at.elapsed())) {
                // A storm: let its events gather into the next batch.
                thread::sleep(rest);
            }
            let now = Instant::now();
            if (owed && now >= next_try) || now >= quiet_until {
                owed = !self.sweep();
                next_try = now + SWEEP_EVERY;
                quiet_until = now + SWEEP_EVERY;
            }
            match reader.wait(BATCH_MAX, WAIT) {
                Ok(feed) => {
                    if failing {
                        log::info!(
                            "pump: reading events from the {} store again",
                            self.store.name()
                        );
                        failing = false;
                        backoff = BACKOFF_MIN;
                    }
                    if feed.resync {
                        // (Re)subscribed: from now on new events are heard.
                        self.stats.running.store(true, Ordering::SeqCst);
                        owed = true;
                        next_try = Instant::now();
                    }
                    if !feed.events.is_empty() {
                        // A busy feed needs no quiet sweep: the next event shows a gap.
                        quiet_until = Instant::now() + SWEEP_EVERY;
                        handed_out = Some(Instant::now());
                    }
                    for (board, events) in by_board(feed.events) {
                        self.deliver(&board, events);
                    }
                }
                Err(e) => {
                    failing = true;
                    owed = true;
                    backoff = self.wait_after_error(&e, backoff);
                }
            }
        }
    }

    /// Hands one board's new events to its ring and its streams, first
    /// reading from its log whatever lies between them and the board's
    /// position.
    fn deliver(&self, board: &Board, mut events: Vec<Event>) {
        let ring = self.rings.get(board);
        let position = ring.as_ref().and_then(|r| r.position());
        if let Some(at) = position {
            if events.first().is_some_and(|e| e.id <= at) {
                let all_old = events.last().is_some_and(|e| e.id <= at);
                if all_old && ring.as_ref().is_some_and(|r| self.went_back(board, r, at)) {
                    return;
                }
                events.retain(|e| e.id > at);
            }
        }
        // Where this board's events are known to be whole up to: what the pump
        // published, else (a new ring) what its fill read. Only the first
        // drops duplicates above; either shows a gap.
        let whole = position.or_else(|| ring.as_ref().and_then(|r| r.filled_to()));
        if let (Some(at), Some(first)) = (whole, events.first().map(|e| e.id)) {
            if first > at + 1 {
                let mut missed = self.read_log(board, at, first - 1);
                missed.append(&mut events);
                events = missed;
            }
        }
        self.publish(board, ring.as_deref(), &events);
    }

    fn publish(&self, board: &Board, ring: Option<&Recent>, events: &[Event]) {
        let Some(last) = events.last().map(|e| e.id) else {
            return;
        };
        // Into the ring first: a writer that subscribed before reading the
        // ring then finds every event in one or the other.
        let batch = Arc::new(Batch::new(events));
        if let Some(ring) = ring {
            ring.push(&batch);
        }
        self.hub.publish(board, batch);
        self.stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if board.is_main() {
            self.stats.last_delivered.store(last, Ordering::Relaxed);
        }
    }

    /// Events of `board` after `after` up to `upto`, read from its log (a
    /// failed or evicted read gives what it could; the writers' own gap
    /// handling covers the rest).
    fn read_log(&self, board: &Board, after: u64, upto: u64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        let mut from = after;
        while from < upto {
            match self.store.history(board, from, BATCH_MAX) {
                Ok(History::Events(events)) if !events.is_empty() => {
                    from = events.last().map_or(upto, |e| e.id);
                    out.extend(events.into_iter().filter(|e| e.id <= upto));
                }
                Ok(_) => break,
                Err(e) => {
                    log::warn!("pump: board {board}: could not read missed events: {e}");
                    break;
                }
            }
        }
        self.stats
            .recovered
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Compares every watched board's newest id with the pump's position:
    /// reads what it lacks, or closes its streams if the ids went back. Also
    /// lets go of the rings of boards nobody watches any more. True if the
    /// store answered for every board.
    fn sweep(&self) -> bool {
        let watched: Vec<Board> = self.hub.boards().into_iter().map(|(b, _)| b).collect();
        self.rings.forget_idle(&watched);
        let mut failed = None;
        for (board, ring) in self.rings.all() {
            let newest = match self.store.last_event_id(&board) {
                Ok(newest) => newest,
                Err(e) => {
                    failed = Some((board, e));
                    continue;
                }
            };
            match ring.position() {
                // Nothing published here yet, so no position to compare with.
                // Marking one now could drop an event still on its way through
                // the feed; instead, publish what came after the ring's fill
                // (the writers skip what they have), and the board's first
                // event sets the position.
                None => {
                    if let Some(filled) = ring.filled_to().filter(|&f| newest > f) {
                        let missed = self.read_log(&board, filled, newest);
                        self.publish(&board, Some(&ring), &missed);
                    }
                }
                Some(at) if newest < at => self.rewind(&board, &ring, at, newest),
                Some(at) if newest > at => {
                    let missed = self.read_log(&board, at, newest);
                    if !missed.is_empty() {
                        log::info!(
                            "pump: board {board}: {} event(s) the feed did not bring, read from the log",
                            missed.len()
                        );
                    }
                    self.deliver(&board, missed);
                }
                Some(_) => {}
            }
        }
        match failed {
            None => true,
            Some((board, e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("pump: sweep: board {board} (and maybe others): {e}; trying again");
                false
            }
        }
    }

    /// An event at or below the board's position: a duplicate (the pump read
    /// it from the log already) or the store's ids went back. Asks the store
    /// which; true if they went back (and the board was reset).
    fn went_back(&self, board: &Board, ring: &Recent, at: u64) -> bool {
        match self.store.last_event_id(board) {
            Ok(newest) if newest < at => {
                self.rewind(board, ring, at, newest);
                true
            }
            _ => false,
        }
    }

    /// The store's newest id for `board` is below what we delivered: its data
    /// is gone (a FLUSH, or Redis restarted without persistence) and ids start
    /// again from a lower number. Follow the new ids, and close the board's
    /// streams: each client reconnects with its old Last-Event-ID, which is
    /// now in the future, and is told to reset.
    fn rewind(&self, board: &Board, ring: &Recent, at: u64, newest: u64) {
        ring.clear();
        ring.mark(newest);
        let closed = self.hub.disconnect(board);
        log::warn!(
            "pump: board {board}: event ids went back from {at} to {newest}: the store lost \
             its data (FLUSH, or a restart without persistence); following the new ids and \
             closing {closed} stream(s) so their clients reset"
        );
        if board.is_main() {
            self.stats.last_delivered.store(newest, Ordering::Relaxed);
        }
    }

    /// Logs a failed read, sleeps, and returns the next backoff.
    fn wait_after_error(&self, e: &StoreError, backoff: Duration) -> Duration {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        log::warn!("pump: {e}; retrying in {} ms", backoff.as_millis());
        thread::sleep(backoff);
        (backoff * 2).min(BACKOFF_MAX)
    }
}

/// Events grouped by board, each board's in the order it logged them, boards
/// in the order they first appear.
fn by_board(events: Vec<(Board, Event)>) -> Vec<(Board, Vec<Event>)> {
    let mut order: Vec<(Board, Vec<Event>)> = Vec::new();
    let mut index: HashMap<Board, usize> = HashMap::new();
    for (board, event) in events {
        let i = *index.entry(board.clone()).or_insert_with(|| {
            order.push((board, Vec::new()));
            order.len() - 1
        });
        order[i].1.push(event);
    }
    order
}
