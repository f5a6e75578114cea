//! The pump's reader on Redis: a subscription to the feed channel, where every
//! script publishes the event it logged, held by a thread of its own.
//!
//! Why a thread: the redis crate's sync `PubSub` borrows its connection and
//! unsubscribes when dropped, so it cannot wait between the pump's calls.
//! The `feed` thread owns both, blocks in `get_message`, and passes what it
//! hears down a channel; [`FeedReader::wait`] is then a plain channel wait.
//!
//! What it guarantees: events arrive in the order each board published them
//! (one board is one slot, so one node, which sends in order). What it cannot:
//! pub/sub keeps nothing for a subscriber that is not there, so anything
//! published while the connection was down, or while the channel to the pump
//! was full, is lost here. Each such moment is reported as a `resync`, and the
//! pump then reads each live board's log (`pump.rs`); the stream is the record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::conn::{classify, Connector, COMMAND_TIMEOUT};
use super::stream::parse_published;
use crate::board::Board;
use crate::store::{Event, EventReader, Feed, StoreError, StoreResult};

/// How long the subscription may be quiet before the thread checks it with a
/// `PING` (a dead node is noticed within this, plus the command timeout).
const QUIET: Duration = Duration::from_secs(1);
/// Backoff after a failed (re)subscription, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Events held for the pump. The pump drains them in batches; if it ever
/// falls this far behind, newer ones are dropped and it resyncs instead.
const QUEUE: usize = 100_000;

/// What the feed thread passes on.
enum Heard {
    Event(Board, Event),
    /// Subscribed afresh: anything published before now may be missing.
    Subscribed,
    /// The subscription failed (the thread retries by itself).
    Failed(StoreError),
}

/// The pump's end of the feed.
pub(super) struct FeedReader {
    rx: Receiver<Heard>,
    flags: Arc<Flags>,
}

/// What the two ends tell each other besides the messages.
#[derive(Default)]
struct Flags {
    /// Set by the thread when it had to drop an event (queue full).
    overflowed: AtomicBool,
    /// Set when the reader is dropped, so a quiet thread ends too (a busy one
    /// notices at its next send).
    closed: AtomicBool,
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        self.flags.closed.store(true, Ordering::SeqCst);
    }
}

impl FeedReader {
    /// Starts the feed thread on `channel`; it subscribes at once and ends
    /// when the reader is dropped.
    pub(super) fn start(connector: Connector, channel: String) -> FeedReader {
        let (tx, rx) = bounded(QUEUE);
        let flags = Arc::new(Flags::default());
        let theirs = Arc::clone(&flags);
        thread::Builder::new()
            .name("feed".into())
            .spawn(move || listen(&connector, &channel, &tx, &theirs))
            .expect("spawning the feed thread");
        FeedReader { rx, flags }
    }
}

impl EventReader for FeedReader {
    fn wait(&mut self, max: usize, timeout: Duration) -> StoreResult<Feed> {
        let mut feed = Feed::default();
        let first = match self.rx.recv_timeout(timeout) {
            Ok(heard) => heard,
            Err(RecvTimeoutError::Timeout) => return Ok(feed),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StoreError::Unavailable(
                    "the feed thread has stopped".into(),
                ))
            }
        };
        let mut next = Some(first);
        while let Some(heard) = next {
            match heard {
                Heard::Event(board, event) => feed.events.push((board, event)),
                Heard::Subscribed => feed.resync = true,
                Heard::Failed(e) if feed.events.is_empty() && !feed.resync => return Err(e),
                // Report what came before the failure; the next resubscription
                // brings the resync.
                Heard::Failed(_) => break,
            }
            if feed.events.len() >= max {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        if self.flags.overflowed.swap(false, Ordering::SeqCst) {
            feed.resync = true;
        }
        Ok(feed)
    }
}

/// The feed thread: subscribe, pass on every message, and start over after
/// any failure, until the pump's end is gone.
fn listen(connector: &Connector, channel: &str, tx: &Sender<Heard>, flags: &Flags) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let failure = match subscribed(connector, channel, tx, flags, &mut backoff) {
            Ok(()) => return, // the pump is gone
            Err(e) => e,
        };
        connector.lost();
        if flags.closed.load(Ordering::SeqCst) || tx.send(Heard::Failed(failure)).is_err() {
            return;
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription, from connecting to its failure (`Err`) or to the pump
/// going away (`Ok`).
fn subscribed(
    connector: &Connector,
    channel: &str,
    tx: &Sender<Heard>,
    flags: &Flags,
    backoff: &mut Duration,
) -> StoreResult<()> {
    let mut con = connector
        .connect(QUIET)
        .map_err(|e| classify("feed connect", e))?;
    let mut pubsub = con.as_pubsub();
    pubsub
        .subscribe(channel)
        .map_err(|e| classify("feed subscribe", e))?;
    *backoff = BACKOFF_MIN;
    if tx.send(Heard::Subscribed).is_err() {
        return Ok(());
    }
    loop {
        match pubsub.get_message() {
            Ok(msg) => {
                let heard = match parse_published(msg.get_payload_bytes()) {
                    Ok((board, event)) => Heard::Event(board, event),
                    Err(e) => {
                        // Not ours (someone else publishing on the channel):
                        // the stream is the record, so skip it.
                        log::warn!("feed: skipping a message: {e}");
                        continue;
                    }
                };
                match tx.try_send(heard) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => flags.overflowed.store(true, Ordering::SeqCst),
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
            Err(e) if e.is_timeout() => {
                // Quiet for a while: is the node still there? (A PING in
                // subscribed mode is answered in order with the messages.)
                pubsub.set_read_timeout(Some(COMMAND_TIMEOUT)).ok();
                let alive: Result<(), _> = pubsub.ping::<redis::Value>().map(drop);
                alive.map_err(|e| classify("feed ping", e))?;
                pubsub.set_read_timeout(Some(QUIET)).ok();
                // Noticing a dropped pump end while everything is quiet.
                if flags.closed.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
            Err(e) => return Err(classify("feed read", e)),
        }
    }
}
