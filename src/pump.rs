//! The pump: one thread per process that reads new events from the store's log
//! and hands each batch to the hub.
//!
//! Writers never broadcast themselves. Going through the log means every
//! process delivers every event in the same order with the same ids, whichever
//! process took the write: that is what lets several instances share one Redis.
//! Whatever is pending is read in one go and rendered once, so under a like
//! storm the cost of fan-out is per batch, not per event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::hub::Hub;
use crate::recent::Recent;
use crate::sse::{Batch, Message};
use crate::store::{Store, StoreError};

/// How long one blocking read waits before looping (to notice shutdown).
const WAIT: Duration = Duration::from_secs(1);
/// Most events taken in one read; a bigger backlog arrives in several batches.
const BATCH_MAX: usize = 1000;
/// Backoff after a failed read, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Counters the pump keeps, for `/metrics` and `/healthz`.
#[derive(Default)]
pub struct PumpStats {
    /// The id of the last event handed to the hub.
    pub last_delivered: AtomicU64,
    /// Events handed to the hub since start.
    pub events: AtomicU64,
    /// Failed reads since start.
    pub errors: AtomicU64,
    /// Set once the pump knows where to start and is delivering events.
    pub running: AtomicBool,
}

/// Starts the pump thread, delivering every event after `start` (the newest id
/// when the server started; `None` if the store was not answering then, in which
/// case the pump asks it until it answers). Runs until `stop` is set.
///
/// The caller reads `start` before it accepts any client: a client that
/// subscribes "live" must not find the pump starting after events it should see.
pub fn spawn(
    store: Arc<dyn Store>,
    hub: Arc<Hub<Message>>,
    recent: Arc<Recent>,
    stats: Arc<PumpStats>,
    stop: Arc<AtomicBool>,
    start: Option<u64>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("pump".into())
        .spawn(move || run(&*store, &hub, &recent, &stats, &stop, start))
        .expect("spawning the pump thread")
}

fn run(
    store: &dyn Store,
    hub: &Hub<Message>,
    recent: &Recent,
    stats: &PumpStats,
    stop: &AtomicBool,
    start: Option<u64>,
) {
    let mut backoff = BACKOFF_MIN;
    // Where to start: the newest event at startup. Retried until the store answers,
    // so a server started while Redis is down begins pumping when it returns.
    // Retried often and without growing backoff: an event written between Redis
    // returning and this read succeeding would not reach clients already
    // connected (they get it when they reconnect and replay).
    let mut after = loop {
        if let Some(start) = start {
            break start;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match store.last_event_id() {
            Ok(id) => break id,
            Err(e) => {
                wait_after_error(&e, BACKOFF_MIN, stats);
            }
        }
    };
    stats.last_delivered.store(after, Ordering::Relaxed);
    stats.running.store(true, Ordering::Relaxed);
    let mut reader = store.event_reader();
    let mut failing = false;
    // Whether to compare our position with the store's newest id before the
    // next read: after a quiet read or a failure, the moments when Redis may
    // have been flushed or restarted empty without us seeing any event.
    let mut check_rewind = false;
    while !stop.load(Ordering::Relaxed) {
        if check_rewind {
            match store.last_event_id() {
                Ok(newest) if newest < after => {
                    rewind(hub, recent, after, newest);
                    after = newest;
                    stats.last_delivered.store(after, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    failing = true;
                    backoff = wait_after_error(&e, backoff, stats);
                    continue;
                }
            }
            check_rewind = false;
        }
        match reader.wait_after(after, BATCH_MAX, WAIT) {
            Ok(events) => {
                if failing {
                    log::info!("pump: reading events from the {} store again", store.name());
                    failing = false;
                    backoff = BACKOFF_MIN;
                }
                let Some(last) = events.last() else {
                    check_rewind = true;
                    continue;
                };
                after = last.id;
                // Into the ring first: a writer that subscribed before reading
                // the ring then finds every event in one or the other.
                let batch = Arc::new(Batch::new(&events));
                recent.push(&batch);
                hub.publish(batch);
                stats
                    .events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                stats.last_delivered.store(after, Ordering::Relaxed);
            }
            Err(e) => {
                failing = true;
                check_rewind = true;
                backoff = wait_after_error(&e, backoff, stats);
            }
        }
    }
}

/// The store's newest id is below what we delivered: its data is gone (a
/// FLUSH, or Redis restarted without persistence) and ids start again from a
/// lower number. Waiting for ids above `after` would wedge the pump, so follow
/// the new ids, and close every stream: each client reconnects with its old
/// Last-Event-ID, which is now in the future, and is told to reset. (Had the
/// new ids already passed the old ones before we looked, plain integer ids
/// could not tell the two histories apart; we look after every quiet second
/// and after every failed read, which a Redis restart always causes.)
fn rewind(hub: &Hub<Message>, recent: &Recent, after: u64, newest: u64) {
    recent.clear();
    let closed = hub.disconnect_all();
    log::warn!(
        "pump: event ids went back from {after} to {newest}: the store lost its data \
         (FLUSH, or a restart without persistence); following the new ids and closing \
         {closed} stream(s) so their clients reset"
    );
}

/// Logs a failed read, sleeps, and returns the next backoff.
fn wait_after_error(e: &StoreError, backoff: Duration, stats: &PumpStats) -> Duration {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    log::warn!("pump: {e}; retrying in {} ms", backoff.as_millis());
    thread::sleep(backoff);
    (backoff * 2).min(BACKOFF_MAX)
}
