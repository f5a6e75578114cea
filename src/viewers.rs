//! The live viewer count: one thread per process that notices when the number
//! of event streams of a board changes and tells that board's streams, at most
//! once a second.
//!
//! The count is this process's own state (each instance behind a load balancer
//! counts its own clients), so it does not go through the store's log: it is
//! published straight to the hub as an id-less `event: viewers`, which neither
//! replay nor Last-Event-ID ever see. Polling the hub once a second IS the
//! coalescing: a burst of 1,000 connects costs one event, not 1,000.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::hub::Hub;
use crate::sse::{Batch, Message};

/// How often the count is compared; also the most often it is sent.
pub const TICK: Duration = Duration::from_secs(1);

/// Starts the viewers thread; it runs until `stop` is set.
pub fn spawn(hub: Arc<Hub<Message>>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("viewers".into())
        .spawn(move || {
            // What each board's streams were last told.
            let mut told = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(TICK);
                let now: HashMap<_, _> = hub.boards().into_iter().collect();
                for (board, &count) in &now {
                    if told.get(board) != Some(&count) {
                        hub.publish(board, Arc::new(Batch::viewers(count)));
                    }
                }
                told = now;
            }
        })
        .expect("spawning the viewers thread")
}
