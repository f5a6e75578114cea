//! The hub: a mutex-guarded list of subscribers per board, each a channel the
//! hub keeps bounded.
//!
//! The pump publishes to a board; each SSE writer thread drains its own
//! channel. Publishing to a board touches only that board's subscribers. The
//! hub moves opaque messages and knows nothing of HTTP, Redis or event formats.
//!
//! Invariant: `publish` never blocks on a client. A client whose channel
//! already holds [`CHANNEL_BOUND`] messages has fallen behind and is dropped
//! (its writer sees the channel close, sends a retry hint and ends; the
//! browser reconnects and replays what it missed). One slow reader can never
//! stall the others.
//!
//! The channels are crossbeam's unbounded ones, with the bound checked here:
//! a `bounded(256)` channel allocates its 256 slots (4 KiB) when it is made,
//! for every idle client, while an unbounded one allocates a block of 31
//! slots (about 500 bytes) only when a message arrives and frees it once the
//! writer has read past it. The check (`len`, then `send`) cannot race:
//! every send happens in `publish`, under the hub's lock, and the writer
//! only ever makes the channel shorter.
//!
//! Except while its writer is catching up (replaying history, perhaps after a
//! wait in line behind other replays): then a full channel skips the message
//! for that subscriber and marks it skipped, and the writer fills the hole
//! from history once its replay is done. Dropping it instead would send the
//! client back to replay again, and in a reconnect storm that never ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::board::Board;

/// How many undelivered messages (batches) a subscriber may have queued before
/// it counts as too slow. Batches coalesce events, so this is seconds of lag.
/// Checked by `publish`; the channel itself is unbounded (see above).
pub const CHANNEL_BOUND: usize = 256;

/// Subscribers and the cap, behind one mutex.
pub struct Hub<T> {
    /// Subscribers and the id counter, under one lock held only for a list walk.
    inner: Mutex<Inner<T>>,
    /// The most subscribers at once, fixed at startup from the OS limits.
    cap: usize,
    /// Clients dropped because their channel was full (for metrics and tests).
    dropped_slow: AtomicU64,
    /// Clients refused because the hub was at its cap.
    refused: AtomicU64,
}

struct Inner<T> {
    /// The next subscription id: how a dropped subscription finds its entry.
    next_id: u64,
    /// Each board's subscribers: their channels, by subscription id, and what
    /// each writer says of itself; `publish` keeps each channel under
    /// [`CHANNEL_BOUND`]. A board with no subscriber has no entry.
    boards: HashMap<Board, Subscribers<T>>,
    /// Subscribers on all boards together (what the cap counts).
    total: usize,
    /// Once closed (shutdown), nobody may subscribe and every channel is gone.
    closed: bool,
}

/// One board's subscribers: each channel by subscription id, with its standing.
type Subscribers<T> = HashMap<u64, (Sender<T>, Arc<Standing>)>;

impl<T> Inner<T> {
    /// Forgets one subscriber (if it is still there).
    fn remove(&mut self, board: &Board, id: u64) {
        if let Some(subs) = self.boards.get_mut(board) {
            if subs.remove(&id).is_some() {
                self.total -= 1;
            }
            if subs.is_empty() {
                self.boards.remove(board);
            }
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The hub holds `cap` subscribers already.
    Full { cap: usize },
    /// The server is shutting down.
    Closed,
}

/// A subscriber's end: its receiver, and its place in the hub until dropped.
pub struct Subscription<T> {
    /// Its key in the hub, to unsubscribe on drop.
    id: u64,
    /// The board it listens to.
    board: Board,
    /// Where the writer receives batches.
    pub rx: Receiver<T>,
    /// The hub to leave on drop.
    hub: Arc<Hub<T>>,
    standing: Arc<Standing>,
}

/// What the hub and a subscriber's writer both know of it.
struct Standing {
    /// The writer's thread, once it has asked to be woken ([`Subscription::wait`]):
    /// the hub unparks it after each send and when it lets go of the channel.
    writer: OnceLock<Thread>,
    /// Set while the writer catches up from history (from subscribing until
    /// it says it is done): a full channel then skips, it does not drop.
    catching_up: AtomicBool,
    /// A message was skipped since the writer last asked.
    skipped: AtomicBool,
}

impl<T> Subscription<T> {
    /// Says whether the writer is catching up from history (a new
    /// subscription is, until told otherwise).
    pub fn set_catching_up(&self, yes: bool) {
        self.standing.catching_up.store(yes, Ordering::SeqCst);
    }

    /// True once after messages were skipped while catching up: history
    /// holds them, and the writer must send them.
    pub fn take_skipped(&self) -> bool {
        self.standing.skipped.swap(false, Ordering::SeqCst)
    }

    /// The next message, waiting until `deadline`; `Disconnected` once the
    /// hub has let go of this subscriber and its channel is drained. Only the
    /// thread that first calls it is woken: the subscriber's writer.
    ///
    /// Why not `rx.recv_deadline`: crossbeam's blocking receive first spins,
    /// then calls `sched_yield` up to four times, and only then sleeps. A
    /// writer finds its channel empty after every write, so with 5,000
    /// writers that is up to 20,000 trips through the scheduler per like
    /// (`perf` put `sched_yield` at an eighth of the writers' time). Here the
    /// writer parks at once, and the hub unparks it after its send; the
    /// channel stays the queue. A wake-up that comes before the park is not
    /// lost: `unpark` leaves a token that the next `park` takes at once.
    pub fn wait(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        if self.standing.writer.get().is_none() {
            let _ = self.standing.writer.set(thread::current());
        }
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            thread::park_timeout(deadline - now);
        }
    }
}

impl Standing {
    /// Wakes the writer if it waits in [`Subscription::wait`] (or will: the
    /// token stays until its next park).
    fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }
}

/// The standings of subscribers let go of, their senders dropped on the way.
fn standings<T>(
    subs: impl Iterator<Item = (u64, (Sender<T>, Arc<Standing>))>,
) -> Vec<Arc<Standing>> {
    subs.map(|(_, (tx, standing))| {
        drop(tx);
        standing
    })
    .collect()
}

/// Wakes the writers of subscribers the hub has just let go of, after their
/// senders are gone, so each sees its channel disconnected at once.
fn wake_all(gone: Vec<Arc<Standing>>) {
    for standing in gone {
        standing.wake();
    }
}

impl<T> Subscription<T> {
    /// The board this subscription listens to.
    pub fn board(&self) -> &Board {
        &self.board
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.board, self.id);
    }
}

impl<T> Hub<T> {
    /// Nothing done under this lock can panic half-way (map insert/remove and
    /// `try_send`), so a poisoned lock still guards whole data: carry on.
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        crate::lock::lock(&self.inner)
    }
}

impl<T: Clone> Hub<T> {
    /// A hub that admits at most `cap` subscribers.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                next_id: 0,
                boards: HashMap::new(),
                total: 0,
                closed: false,
            }),
            cap,
            dropped_slow: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Registers a new subscriber to `board`, unless the hub is full or closed.
    pub fn subscribe(self: &Arc<Self>, board: &Board) -> Result<Subscription<T>, SubscribeError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(SubscribeError::Closed);
        }
        if inner.total >= self.cap {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SubscribeError::Full { cap: self.cap });
        }
        let (tx, rx) = unbounded();
        inner.next_id += 1;
        let id = inner.next_id;
        let standing = Arc::new(Standing {
            writer: OnceLock::new(),
            catching_up: AtomicBool::new(true),
            skipped: AtomicBool::new(false),
        });
        inner
            .boards
            .entry(board.clone())
            .or_default()
            .insert(id, (tx, Arc::clone(&standing)));
        inner.total += 1;
        Ok(Subscription {
            id,
            board: board.clone(),
            rx,
            hub: Arc::clone(self),
            standing,
        })
    }

    /// Hands `msg` to every subscriber of `board` without waiting for any of
    /// them. Returns how many are subscribed to it. A subscriber with
    /// [`CHANNEL_BOUND`] messages queued is dropped as too slow, unless its
    /// writer is catching up (then the message is skipped for it).
    pub fn publish(&self, board: &Board, msg: T) -> usize {
        let mut inner = self.lock();
        let Some(subs) = inner.boards.get_mut(board) else {
            return 0;
        };
        let before = subs.len();
        let mut slow = 0;
        let mut dropped = Vec::new();
        subs.retain(|_, (tx, standing)| {
            // Only sends make a channel longer, and they all happen here,
            // under the lock: the length cannot grow between check and send.
            if tx.len() >= CHANNEL_BOUND {
                if standing.catching_up.load(Ordering::SeqCst) {
                    standing.skipped.store(true, Ordering::SeqCst);
                    return true;
                }
                slow += 1;
                dropped.push(Arc::clone(standing));
                return false;
            }
            // An error means the writer has gone; its Subscription's drop
            // will find nothing to remove.
            let sent = tx.send(msg.clone()).is_ok();
            standing.wake();
            sent
        });
        let left = subs.len();
        if left == 0 {
            inner.boards.remove(board);
        }
        inner.total -= before - left;
        // The dropped senders are gone with `retain`: wake their writers.
        wake_all(dropped);
        if slow > 0 {
            self.dropped_slow.fetch_add(slow, Ordering::Relaxed);
            log::warn!("dropped {slow} slow SSE client(s) of board {board}: their queue was full");
        }
        left
    }

    /// Closes every channel and refuses new subscribers (graceful shutdown).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let gone = standings(inner.boards.drain().flat_map(|(_, subs)| subs));
        inner.total = 0;
        wake_all(gone);
    }

    /// Closes every current channel of `board` but keeps admitting new
    /// subscribers; returns how many were closed. Each writer sees its channel
    /// close and ends its stream with a retry hint, so its client reconnects
    /// and starts over.
    pub fn disconnect(&self, board: &Board) -> usize {
        let mut inner = self.lock();
        let gone = standings(inner.boards.remove(board).into_iter().flatten());
        inner.total -= gone.len();
        let n = gone.len();
        wake_all(gone);
        n
    }

    /// Current number of subscribers, on all boards.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// Current number of subscribers of `board`.
    pub fn len_of(&self, board: &Board) -> usize {
        self.lock().boards.get(board).map_or(0, HashMap::len)
    }

    /// Each board with subscribers, and how many it has.
    pub fn boards(&self) -> Vec<(Board, usize)> {
        let inner = self.lock();
        inner
            .boards
            .iter()
            .map(|(board, subs)| (board.clone(), subs.len()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most subscribers at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Clients dropped for being slow, since start.
    pub fn dropped_slow(&self) -> u64 {
        self.dropped_slow.load(Ordering::Relaxed)
    }

    /// Clients refused at the cap, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main() -> Board {
        Board::main()
    }

    /// Every subscriber receives each published message, in order.
    #[test]
    fn fans_out_in_order() {
        let hub = Hub::new(10);
        let a = hub.subscribe(&main()).unwrap();
        let b = hub.subscribe(&main()).unwrap();
        assert_eq!(hub.publish(&main(), 1), 2);
        assert_eq!(hub.publish(&main(), 2), 2);
        for sub in [&a, &b] {
            assert_eq!(sub.rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
        }
    }

    /// Dropping a subscription removes it from the hub at once.
    #[test]
    fn drop_unsubscribes() {
        let hub = Hub::<u8>::new(10);
        let a = hub.subscribe(&main()).unwrap();
        assert_eq!(hub.len(), 1);
        drop(a);
        assert_eq!(hub.len(), 0);
    }

    /// The cap refuses the subscriber over it, and frees a place when one leaves.
    #[test]
    fn cap_refuses_then_frees() {
        let hub = Hub::<u8>::new(1);
        let a = hub.subscribe(&main()).unwrap();
        assert_eq!(
            hub.subscribe(&main()).err(),
            Some(SubscribeError::Full { cap: 1 })
        );
        assert_eq!(hub.refused(), 1);
        drop(a);
        assert!(hub.subscribe(&main()).is_ok());
    }

    /// A subscriber that never reads is dropped when its channel fills; the
    /// others keep receiving and publish never blocks.
    #[test]
    fn slow_subscriber_is_dropped() {
        let hub = Hub::new(10);
        let slow = hub.subscribe(&main()).unwrap();
        let fast = hub.subscribe(&main()).unwrap();
        for sub in [&slow, &fast] {
            sub.set_catching_up(false);
        }
        for i in 0..CHANNEL_BOUND + 1 {
            hub.publish(&main(), i);
            assert_eq!(fast.rx.try_recv().unwrap(), i);
        }
        assert_eq!(hub.len(), 1);
        assert_eq!(hub.dropped_slow(), 1);
        // The slow one can still drain what it had, then sees the channel closed.
        assert_eq!(slow.rx.try_iter().count(), CHANNEL_BOUND);
        assert!(slow.rx.recv().is_err());
    }

    /// A subscriber's channel is made without room for its bound (an idle
    /// client costs no slots), yet holds exactly CHANNEL_BOUND messages before
    /// the hub lets it go; one that catches up in time stays.
    #[test]
    fn bound_is_kept_without_preallocating() {
        let hub = Hub::new(10);
        let behind = hub.subscribe(&main()).unwrap();
        behind.set_catching_up(false);
        assert_eq!(behind.rx.capacity(), None, "no slots reserved up front");
        for i in 0..CHANNEL_BOUND {
            assert_eq!(hub.publish(&main(), i), 1);
        }
        assert_eq!(behind.rx.len(), CHANNEL_BOUND);
        // It reads one in time: the next message fits and it stays.
        assert_eq!(behind.rx.try_recv(), Ok(0));
        assert_eq!(hub.publish(&main(), CHANNEL_BOUND), 1);
        // Now full again: one more and it is dropped, keeping what it had.
        assert_eq!(hub.publish(&main(), CHANNEL_BOUND + 1), 0);
        assert_eq!(hub.dropped_slow(), 1);
        assert_eq!(
            behind.rx.try_iter().collect::<Vec<_>>(),
            (1..=CHANNEL_BOUND).collect::<Vec<_>>()
        );
    }

    /// A subscriber still catching up from history is not dropped for a full
    /// channel: the message is skipped for it, and it is told so once; once
    /// caught up, a full channel drops it again.
    #[test]
    fn catching_up_skips_instead_of_dropping() {
        let hub = Hub::new(10);
        let replaying = hub.subscribe(&main()).unwrap();
        for i in 0..CHANNEL_BOUND + 3 {
            assert_eq!(hub.publish(&main(), i), 1);
        }
        assert_eq!(hub.dropped_slow(), 0);
        assert!(replaying.take_skipped());
        assert!(!replaying.take_skipped(), "told once");
        let kept: Vec<usize> = replaying.rx.try_iter().collect();
        assert_eq!(kept, (0..CHANNEL_BOUND).collect::<Vec<_>>());
        replaying.set_catching_up(false);
        for i in 0..CHANNEL_BOUND + 1 {
            hub.publish(&main(), i);
        }
        assert_eq!((hub.len(), hub.dropped_slow()), (0, 1));
    }

    /// Publishing to a board reaches its subscribers only; the cap and the
    /// counts cover all boards.
    #[test]
    fn boards_are_apart() {
        let hub = Hub::new(3);
        let other = Board::parse("other").unwrap();
        let a = hub.subscribe(&main()).unwrap();
        let o = hub.subscribe(&other).unwrap();
        let o2 = hub.subscribe(&other).unwrap();
        assert_eq!(
            hub.subscribe(&other).err(),
            Some(SubscribeError::Full { cap: 3 })
        );
        assert_eq!(hub.publish(&other, 1), 2);
        assert_eq!(hub.publish(&Board::parse("none").unwrap(), 9), 0);
        assert!(a.rx.try_recv().is_err());
        assert_eq!((o.rx.try_recv(), o2.rx.try_recv()), (Ok(1), Ok(1)));
        assert_eq!((hub.len(), hub.len_of(&other)), (3, 2));
        let mut boards = hub.boards();
        boards.sort();
        assert_eq!(boards, vec![(main(), 1), (other.clone(), 2)]);
        drop(o);
        assert_eq!(hub.disconnect(&other), 1);
        assert_eq!(hub.boards(), vec![(main(), 1)]);
        assert_eq!(hub.len(), 1);
    }

    /// disconnect closes every channel of a board, yet new subscribers are welcome.
    #[test]
    fn disconnect_keeps_the_door_open() {
        let hub = Hub::<u8>::new(10);
        let a = hub.subscribe(&main()).unwrap();
        assert_eq!(hub.disconnect(&main()), 1);
        assert!(a.rx.recv().is_err());
        let b = hub.subscribe(&main()).unwrap();
        assert_eq!(hub.publish(&main(), 7), 1);
        assert_eq!(b.rx.try_recv(), Ok(7));
    }

    /// After close, channels are disconnected and new subscribers refused.
    #[test]
    fn close_disconnects_everyone() {
        let hub = Hub::<u8>::new(10);
        let a = hub.subscribe(&main()).unwrap();
        hub.close();
        assert!(a.rx.recv().is_err());
        assert_eq!(hub.subscribe(&main()).err(), Some(SubscribeError::Closed));
    }

    /// A thread that panics while holding the hub's lock poisons it; the hub
    /// carries on for everyone else (nothing under the lock can be half-done).
    #[test]
    fn survives_a_poisoned_lock() {
        let hub = Hub::new(10);
        let a = hub.subscribe(&main()).unwrap();
        let poisoner = Arc::clone(&hub);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.inner.lock().unwrap();
            panic!("a writer thread dies holding the lock");
        })
        .join();
        assert!(hub.inner.is_poisoned());
        assert_eq!(hub.publish(&main(), 5), 1);
        assert_eq!(a.rx.try_recv().unwrap(), 5);
        let b = hub.subscribe(&main()).unwrap();
        drop(b);
        assert_eq!(hub.len(), 1);
    }

    /// `wait` returns a message sent while the writer sleeps, times out when
    /// none comes, and sees the hub letting go at once, not at its deadline.
    #[test]
    fn wait_parks_and_is_woken() {
        use std::time::Duration;
        let hub = Hub::new(10);
        let sub = hub.subscribe(&main()).unwrap();
        let far = || Instant::now() + Duration::from_secs(30);
        // One writer thread, as in the server: the hub wakes the thread that waits.
        let writer = std::thread::spawn(move || {
            let first = sub.wait(far());
            let quiet = sub.wait(Instant::now() + Duration::from_millis(20));
            let started = Instant::now();
            let last = sub.wait(far());
            (first, quiet, last, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        hub.publish(&main(), 7);
        std::thread::sleep(Duration::from_millis(200));
        hub.disconnect(&main());
        let (first, quiet, last, waited) = writer.join().unwrap();
        assert_eq!(first, Ok(7));
        assert_eq!(quiet, Err(RecvTimeoutError::Timeout));
        assert_eq!(last, Err(RecvTimeoutError::Disconnected));
        assert!(
            waited < Duration::from_secs(5),
            "woken at once, not at the deadline"
        );
    }
}
