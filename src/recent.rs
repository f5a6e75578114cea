//! The newest events in memory, already rendered: most replays are served
//! from here without touching the store.
//!
//! When an instance restarts, a proxy reloads or a classroom's Wi-Fi drops,
//! every browser comes back within seconds with its `Last-Event-ID`, and
//! nearly all of them missed only the last few events. The pump already holds
//! each batch it publishes, rendered once (`Arc<Batch>`); keeping the newest
//! of those batches costs no copy, and a replay that starts inside them reads
//! no Redis at all. The ring is filled from the store's history before the
//! server accepts its first client, so the crowd returning to a restarted
//! instance is served from memory too. Only a resume from further back reads
//! the store (`sse/replay.rs`).
//!
//! There is one ring per board that has (or lately had) a stream in this
//! process ([`Rings`]): the default board's is filled before the first client,
//! any other board's when its first stream opens, and a board nobody has
//! watched for [`IDLE`] gives its ring up. Each ring also remembers the
//! newest id it has seen (`position`), which is how the pump knows, per
//! board, where it is.
//!
//! Invariant: the ring holds consecutive ids. The pump pushes every batch
//! before it publishes it, so a writer that subscribed before reading the
//! ring misses nothing (what it read from the ring, or what arrives on its
//! channel, covers every id; duplicates it skips by id). A batch that does not
//! continue the ring (the pump fell behind the store's trimming, or ids went
//! back) empties it first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::board::Board;
use crate::lock::lock;
use crate::sse::{Batch, Message};
use crate::store::{History, Store};

/// How long a board's ring outlives its last stream: long enough for a
/// reconnect storm (a restarted proxy, a classroom's Wi-Fi) to find it.
pub const IDLE: Duration = Duration::from_secs(120);

/// Events read per query while filling the ring at startup.
const FILL_PAGE: usize = 1000;

/// The ring's size by default: the newest 10,000 events or 16 MiB of their
/// frames, whichever is smaller (the store keeps 10,000 by default too).
pub const DEFAULT_EVENTS: usize = 10_000;
pub const DEFAULT_BYTES: usize = 16 << 20;

/// The newest events, in batches as the pump published them.
pub struct Recent {
    /// Many writers read it at once during a storm; only the pump writes.
    ring: RwLock<Ring>,
    /// The newest id the fill read up to: `None` until a fill succeeded
    /// (`Rings::open` fills it once, and again after a failed try).
    filled_to: RwLock<Option<u64>>,
    /// Set by whoever fills it, so a crowd opening a cold board fills it once
    /// (the others read the store meanwhile, in the replay line).
    filling: AtomicBool,
    /// Most events kept; older batches are dropped whole.
    max_events: usize,
    /// Most bytes of frames kept.
    max_bytes: usize,
}

#[derive(Default)]
struct Ring {
    /// Batches as the pump published them, oldest first, ids consecutive.
    batches: VecDeque<Message>,
    /// Events at the start of the oldest batch that no longer count: the ring
    /// gives up its oldest events one at a time, not a batch at a time, since
    /// the startup fill pushes pages of up to [`FILL_PAGE`] events as one
    /// batch each (dropping such a page whole at the first live event would
    /// empty a small ring just when a restarted server's crowd comes back).
    front_skip: usize,
    /// Events and bytes counted (those of `front_skip` excluded).
    events: usize,
    /// Bytes of their frames, for the memory bound.
    bytes: usize,
    /// The newest id seen, kept or not (`None` until the first push or fill).
    upto: Option<u64>,
}

/// What a replay can take from the ring.
pub enum Since {
    /// The batches holding every event after the asked id (each may also hold
    /// older ones, which the writer skips), oldest first; empty if none.
    Covered(Vec<Message>),
    /// The ring does not reach back that far (or is empty, or the id is newer
    /// than anything in it): ask the store.
    NotHere,
}

impl Recent {
    pub fn new(max_events: usize, max_bytes: usize) -> Recent {
        Recent {
            ring: RwLock::new(Ring::default()),
            filled_to: RwLock::new(None),
            filling: AtomicBool::new(false),
            max_events,
            max_bytes,
        }
    }

    /// Adds a batch the pump is about to publish. Events at or below the
    /// newest id already held are skipped (the startup fill may have read
    /// them); a batch that leaves a gap empties the ring first.
    pub fn push(&self, batch: &Message) {
        self.insert(batch, true);
    }

    /// Adds events read from the store's log (the fill), which leave the
    /// pump's position alone: only the pump may say what it has published.
    fn push_filled(&self, batch: &Message) {
        self.insert(batch, false);
    }

    fn insert(&self, batch: &Message, by_pump: bool) {
        let Some(newest) = batch.events.last().map(|e| e.id) else {
            return;
        };
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if by_pump {
            ring.upto = Some(ring.upto.map_or(newest, |upto| upto.max(newest)));
        }
        if self.max_events == 0 {
            return;
        }
        let next = ring.last_id().map(|last| last + 1);
        let fresh = batch
            .events
            .iter()
            .position(|e| next.is_none_or(|n| e.id >= n));
        let Some(start) = fresh else {
            return; // all already held
        };
        if next.is_some_and(|n| batch.events[start].id != n) {
            ring.clear();
        }
        let kept = if start == 0 {
            Arc::clone(batch)
        } else {
            Arc::new(Batch {
                events: batch.events[start..].to_vec(),
                viewers: None,
            })
        };
        ring.events += kept.events.len();
        ring.bytes += bytes_of(&kept);
        ring.batches.push_back(kept);
        while ring.batches.len() > 1 && self.over(&ring) {
            // Give up the oldest event still counted; its batch goes with its last.
            let (size, len) = {
                let front = &ring.batches[0];
                (front.events[ring.front_skip].size(), front.events.len())
            };
            ring.events -= 1;
            ring.bytes -= size;
            ring.front_skip += 1;
            if ring.front_skip == len {
                ring.batches.pop_front();
                ring.front_skip = 0;
            }
        }
        if self.over(&ring) {
            // One batch larger than the whole ring: keep its newest events.
            let only = ring.batches.pop_front().expect("over means not empty");
            let counted = only.events.len() - std::mem::take(&mut ring.front_skip);
            let mut keep = counted.min(self.max_events);
            while keep > 0
                && bytes_of_events(&only.events[only.events.len() - keep..]) > self.max_bytes
            {
                keep /= 2;
            }
            let tail = Arc::new(Batch {
                events: only.events[only.events.len() - keep..].to_vec(),
                viewers: None,
            });
            ring.events = tail.events.len();
            ring.bytes = bytes_of(&tail);
            if !tail.events.is_empty() {
                ring.batches.push_back(tail);
            }
        }
    }

    fn over(&self, ring: &Ring) -> bool {
        ring.events > self.max_events || ring.bytes > self.max_bytes
    }

    /// Forgets everything (the store's ids went back), its position too.
    pub fn clear(&self) {
        self.ring.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The newest id the pump has published on this board (pushed or marked),
    /// held or not. `None` before anything was pushed or marked; the fill
    /// does not count, since a stream may still be waiting for the pump to
    /// publish what the fill read.
    pub fn position(&self) -> Option<u64> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).upto
    }

    /// The newest id the fill read up to, if it ran.
    pub fn filled_to(&self) -> Option<u64> {
        *self.filled_to.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that the pump is at `id` on this board: at startup, before any
    /// stream exists, or after the ids went back.
    pub fn mark(&self, id: u64) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.upto = Some(ring.upto.map_or(id, |upto| upto.max(id)));
    }

    /// What the ring holds after `after`.
    pub fn since(&self, after: u64) -> Since {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        let (Some(first), Some(last)) = (ring.first_id(), ring.last_id()) else {
            return Since::NotHere;
        };
        if after + 1 < first || after > last {
            return Since::NotHere;
        }
        Since::Covered(
            ring.batches
                .iter()
                .filter(|b| b.events.last().is_some_and(|e| e.id > after))
                .cloned()
                .collect(),
        )
    }

    /// How many events it holds now.
    pub fn len(&self) -> usize {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).events
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fills `recent` with the newest events of `board` up to its newest id now
/// from `store`, which keeps `stream_len` of them. Called for the default
/// board before the server accepts its first client, and for any other board
/// when its first stream opens; a store that cannot answer leaves the ring
/// empty (replays then read the store until the pump has filled it).
/// A failure leaves `filled_to` unset, so the board's next stream tries again.
pub fn fill(recent: &Recent, store: &dyn Store, board: &Board, stream_len: u64) {
    let start = match store.last_event_id(board) {
        Ok(start) => start,
        Err(e) => {
            log::warn!("board {board}: could not fill the ring of recent events ({e})");
            return;
        }
    };
    let keep = (recent.max_events as u64).min(stream_len);
    let mut after = start.saturating_sub(keep);
    while after < start {
        match store.history(board, after, FILL_PAGE) {
            Ok(History::Events(events)) if !events.is_empty() => {
                after = events.last().map_or(start, |e| e.id);
                recent.push_filled(&Arc::new(Batch::new(&events)));
            }
            Ok(_) => break,
            Err(e) => {
                log::warn!(
                    "could not fill the ring of recent events ({e}); replays read the store"
                );
                recent.clear();
                return;
            }
        }
    }
    *recent.filled_to.write().unwrap_or_else(|e| e.into_inner()) = Some(start);
    log::info!(
        "board {board}: {} recent events in memory for replays",
        recent.len()
    );
}

/// The rings of every board with streams here lately.
pub struct Rings {
    rings: Mutex<HashMap<Board, Entry>>,
    /// Each ring's bounds (`--replay-ring`, [`DEFAULT_BYTES`]).
    max_events: usize,
    max_bytes: usize,
    /// How many events the store keeps per board, for the fill.
    stream_len: u64,
}

struct Entry {
    ring: Arc<Recent>,
    /// When a stream last asked for it, or the pump last saw it watched.
    used: Instant,
}

impl Rings {
    pub fn new(max_events: usize, max_bytes: usize, stream_len: u64) -> Rings {
        Rings {
            rings: Mutex::new(HashMap::new()),
            max_events,
            max_bytes,
            stream_len,
        }
    }

    /// The board's ring if it has one (the pump: it never makes one).
    pub fn get(&self, board: &Board) -> Option<Arc<Recent>> {
        lock(&self.rings).get(board).map(|e| Arc::clone(&e.ring))
    }

    /// The board's ring for a stream that opens on it: made and filled from
    /// `store` on the board's first stream. Only the first caller fills it,
    /// on its own thread; the others get it as it is meanwhile.
    pub fn open(&self, board: &Board, store: &dyn Store) -> Arc<Recent> {
        let ring = {
            let mut rings = lock(&self.rings);
            let entry = rings.entry(board.clone()).or_insert_with(|| Entry {
                ring: Arc::new(Recent::new(self.max_events, self.max_bytes)),
                used: Instant::now(),
            });
            entry.used = Instant::now();
            Arc::clone(&entry.ring)
        };
        if ring.filled_to().is_none() && !ring.filling.swap(true, Ordering::SeqCst) {
            fill(&ring, store, board, self.stream_len);
            ring.filling.store(false, Ordering::SeqCst);
        }
        ring
    }

    /// Every ring, with its board (the pump's sweep).
    pub fn all(&self) -> Vec<(Board, Arc<Recent>)> {
        lock(&self.rings)
            .iter()
            .map(|(board, e)| (board.clone(), Arc::clone(&e.ring)))
            .collect()
    }

    /// Marks the rings of `watched` boards used now, and gives up those of
    /// other boards unused for [`IDLE`] (never the default board's).
    pub fn forget_idle(&self, watched: &[Board]) {
        let now = Instant::now();
        let mut rings = lock(&self.rings);
        for board in watched {
            if let Some(e) = rings.get_mut(board) {
                e.used = now;
            }
        }
        rings.retain(|board, e| board.is_main() || now.duration_since(e.used) < IDLE);
    }

    /// How many boards have a ring.
    pub fn len(&self) -> usize {
        lock(&self.rings).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ring {
    fn first_id(&self) -> Option<u64> {
        self.batches
            .front()
            .and_then(|b| b.events.get(self.front_skip))
            .map(|e| e.id)
    }

    fn last_id(&self) -> Option<u64> {
        self.batches
            .back()
            .and_then(|b| b.events.last())
            .map(|e| e.id)
    }

    fn clear(&mut self) {
        *self = Ring::default();
    }
}

fn bytes_of(batch: &Batch) -> usize {
    bytes_of_events(&batch.events)
}

fn bytes_of_events(events: &[crate::sse::frame::Encoded]) -> usize {
    events.iter().map(|e| e.size()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::frame::like;
    use crate::store::LikeOp;

    fn batch(ids: std::ops::RangeInclusive<u64>) -> Message {
        let events: Vec<_> = ids.map(|id| like(id, 1, id, LikeOp::Like)).collect();
        Arc::new(Batch::new(&events))
    }

    fn ids(since: Since, after: u64) -> Option<Vec<u64>> {
        match since {
            Since::Covered(batches) => Some(
                batches
                    .iter()
                    .flat_map(|b| b.events.iter().map(|e| e.id))
                    .filter(|&id| id > after)
                    .collect(),
            ),
            Since::NotHere => None,
        }
    }

    /// A replay inside the ring gets every later id once; one from before it,
    /// or from after its newest id, is sent to the store.
    #[test]
    fn serves_what_it_holds() {
        let recent = Recent::new(100, 1 << 20);
        recent.push(&batch(5..=7));
        recent.push(&batch(8..=8));
        assert_eq!(ids(recent.since(4), 4), Some(vec![5, 6, 7, 8]));
        assert_eq!(ids(recent.since(6), 6), Some(vec![7, 8]));
        assert_eq!(ids(recent.since(8), 8), Some(vec![]));
        assert_eq!(ids(recent.since(3), 3), None, "5 is its oldest");
        assert_eq!(ids(recent.since(9), 9), None, "newer than anything held");
    }

    /// Overlapping and gapped batches keep the ids consecutive.
    #[test]
    fn keeps_ids_consecutive() {
        let recent = Recent::new(100, 1 << 20);
        recent.push(&batch(1..=3));
        recent.push(&batch(2..=5));
        assert_eq!(ids(recent.since(0), 0), Some(vec![1, 2, 3, 4, 5]));
        recent.push(&batch(9..=10));
        assert_eq!(ids(recent.since(8), 8), Some(vec![9, 10]));
        assert_eq!(ids(recent.since(4), 4), None, "the gap emptied it");
    }

    /// A ring filled at startup with one batch as large as the ring (a page of
    /// the fill) gives up only as many of its events as live ones come in.
    #[test]
    fn a_filled_page_is_given_up_an_event_at_a_time() {
        let recent = Recent::new(200, 1 << 20);
        recent.push(&batch(1..=200));
        recent.push(&batch(201..=203));
        assert_eq!(recent.len(), 200);
        assert_eq!(ids(recent.since(3), 3), Some((4..=203).collect()));
        assert_eq!(ids(recent.since(2), 2), None, "3 is no longer held");
        for id in 204..=400 {
            recent.push(&batch(id..=id));
        }
        assert_eq!(ids(recent.since(200), 200), Some((201..=400).collect()));
        assert_eq!(ids(recent.since(199), 199), None);
    }

    /// The position follows the newest id pushed or marked, even in a ring
    /// that keeps nothing, and never goes back until cleared.
    #[test]
    fn position_follows_the_newest_id() {
        let none = Recent::new(0, 0);
        assert_eq!(none.position(), None);
        none.push(&batch(3..=4));
        assert_eq!(none.position(), Some(4));
        none.mark(2);
        assert_eq!(none.position(), Some(4));
        none.mark(9);
        assert_eq!(none.position(), Some(9));
        none.clear();
        assert_eq!(none.position(), None);
    }

    /// A board's ring is made and filled by its first stream, and given up
    /// once unwatched (the default board's never).
    #[test]
    fn rings_per_board() {
        use crate::store::memory::MemoryStore;
        use crate::store::NewComment;
        let store = MemoryStore::new(100, 10);
        let other = Board::parse("other").unwrap();
        for board in [Board::main(), other.clone()] {
            let new = NewComment {
                nickname: "a".into(),
                content: "b".into(),
                created_at: 1,
                author: "c:t".into(),
            };
            store.add_comment(&board, new).unwrap();
        }
        let rings = Rings::new(100, 1 << 20, 100);
        assert!(rings.get(&other).is_none());
        let ring = rings.open(&other, &store);
        assert_eq!(
            (ring.len(), ring.position()),
            (1, None),
            "filled, not published"
        );
        rings.open(&Board::main(), &store);
        assert_eq!(rings.len(), 2);
        rings.forget_idle(&[]);
        assert_eq!(rings.len(), 2, "used just now");
        for e in lock(&rings.rings).values_mut() {
            e.used -= IDLE;
        }
        rings.forget_idle(&[]);
        assert!(rings.get(&other).is_none());
        assert!(rings.get(&Board::main()).is_some());
    }

    /// Bounded by events and by bytes, oldest batches first; cleared on demand.
    #[test]
    fn bounded_and_clearable() {
        let recent = Recent::new(5, 1 << 20);
        for i in 0..10 {
            recent.push(&batch(i * 2 + 1..=i * 2 + 2));
        }
        assert!(recent.len() <= 5 && recent.len() >= 4, "{}", recent.len());
        assert_eq!(ids(recent.since(16), 16), Some(vec![17, 18, 19, 20]));
        let tiny = Recent::new(1000, 200);
        for i in 0..10 {
            tiny.push(&batch(i * 2 + 1..=i * 2 + 2));
        }
        assert!(tiny.len() <= 4, "{}", tiny.len());
        let one = Recent::new(3, 1 << 20);
        one.push(&batch(1..=10));
        assert_eq!(
            ids(one.since(7), 7),
            Some(vec![8, 9, 10]),
            "a big batch keeps its tail"
        );
        assert_eq!(ids(one.since(6), 6), None);
        recent.clear();
        assert!(recent.is_empty());
        assert_eq!(ids(recent.since(20), 20), None);
    }
}
