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

/// Starts the pump thread. It starts after the newest event that exists now and
/// runs until `stop` is set.
pub fn spawn(
    store: Arc<dyn Store>,
    hub: Arc<Hub<Message>>,
    stats: Arc<PumpStats>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("pump".into())
        .spawn(move || run(&*store, &hub, &stats, &stop))
        .expect("spawning the pump thread")
}

fn run(store: &dyn Store, hub: &Hub<Message>, stats: &PumpStats, stop: &AtomicBool) {
    let mut backoff = BACKOFF_MIN;
    // Where to start: the newest event at startup. Retried until the store answers,
    // so a server started while Redis is down begins pumping when it returns.
    // Retried often and without growing backoff: an event written between Redis
    // returning and this read succeeding would not reach clients already
    // connected (they get it when they reconnect and replay).
    let mut after = loop {
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
    while !stop.load(Ordering::Relaxed) {
        match reader.wait_after(after, BATCH_MAX, WAIT) {
            Ok(events) => {
                if failing {
                    log::info!("pump: reading events from the {} store again", store.name());
                    failing = false;
                    backoff = BACKOFF_MIN;
                }
                let Some(last) = events.last() else { continue };
                after = last.id;
                hub.publish(Arc::new(Batch::new(&events)));
                stats
                    .events
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                stats.last_delivered.store(after, Ordering::Relaxed);
            }
            Err(e) => {
                failing = true;
                backoff = wait_after_error(&e, backoff, stats);
            }
        }
    }
}

/// Logs a failed read, sleeps, and returns the next backoff.
fn wait_after_error(e: &StoreError, backoff: Duration, stats: &PumpStats) -> Duration {
    stats.errors.fetch_add(1, Ordering::Relaxed);
    log::warn!("pump: {e}; retrying in {} ms", backoff.as_millis());
    thread::sleep(backoff);
    (backoff * 2).min(BACKOFF_MAX)
}
