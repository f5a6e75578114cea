//! One client's stream, from its response head to its last chunk: [`serve`]
//! writes the head and the first `retry:`, replays, then drains the client's
//! hub channel into one write per wake-up, with heartbeats while it is quiet,
//! and ends the body. A client over the cap gets [`refuse`] instead.
//!
//! The server takes the socket from tiny_http, spawns the thread and calls
//! [`serve`] on it; nothing here knows HTTP requests. A failed write means the
//! client left: the stream ends and its subscription leaves the hub.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::frame::{
    closing_retry, retry_field, viewers_event, Dialect, Message, HEARTBEAT, RETRY_MS,
};
use super::outlet::Outlet;
use super::replay::{Replayer, Resume};
use super::wire::Wire;
use crate::classroom::{Control, Poke};
use crate::hub::{Hub, SubscribeError, Subscription};

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

/// Options of one client's stream, as the routes read them from its request.
pub struct StreamOptions {
    pub dialect: Dialect,
    pub resume: Resume,
    /// How long the stream may stay silent before a heartbeat comment goes out.
    pub heartbeat: Duration,
    /// Pass on `event: viewers` (the page asks with `?viewers=1`; plain API
    /// clients keep the documented stream of log events only).
    pub viewers: bool,
    /// The fault panel's hold on this stream (`--classroom` and `?client=`).
    pub control: Option<Control>,
}

/// Serves one client's stream until it ends, on the thread the server gave it:
/// the head and the first `retry:`, the current viewer count if asked for, the
/// replay and live events ([`run`]), a last `retry:` when the hub let go of us,
/// and the end of the body. `hub` is only read for the number of streams.
pub fn serve(
    mut wire: Wire,
    sub: Subscription<Message>,
    hub: &Hub<Message>,
    replayer: &Replayer,
    opts: &StreamOptions,
) {
    if wire.start().is_ok() && wire.send(&retry_field(RETRY_MS)).is_ok() {
        log::info!("SSE client connected ({} now)", hub.len());
        // The page shows the count at once; the viewers thread sends changes
        // from here on.
        if opts.viewers {
            let _ = wire.send(&viewers_event(hub.len()));
        }
        // A panic in the writer ends this stream, properly, and nothing else.
        let end = catch_unwind(AssertUnwindSafe(|| run(&mut wire, &sub, replayer, opts)));
        match end {
            Ok(End::Unsubscribed) => {
                // Too slow, or shutting down: come back later (each client at
                // its own moment) and replay.
                let _ = wire.send(&closing_retry());
            }
            Ok(End::ClientLeft) => {}
            Ok(End::Dropped) => log::info!("SSE client dropped by the fault panel"),
            Err(_) => log::error!("SSE writer panicked; stream closed"),
        }
        let _ = wire.finish();
    }
    // Leaving the hub first makes the count below include this client no more.
    drop(sub);
    drop(wire);
    log::info!("SSE client disconnected ({} now)", hub.len());
}

/// Answers a stream request the hub refused (over the cap, or stopping) on the
/// caller's thread: no writer thread is spent on it. A 503 would make
/// EventSource give up for good, so this is a 200 with a jittered retry hint
/// and an empty stream.
pub fn refuse(mut wire: Wire, refusal: SubscribeError) {
    if let SubscribeError::Full { cap } = refusal {
        log::warn!("SSE client refused: at the cap of {cap} subscribers");
    }
    let _ = wire.start();
    let _ = wire.send(&closing_retry());
    let _ = wire.finish();
}

/// Runs one client's stream until it ends: replay, then live events and
/// heartbeats. [`serve`] has already written the head and the first `retry:`.
pub fn run(
    wire: &mut Wire,
    sub: &Subscription<Message>,
    replayer: &Replayer,
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
    let mut last_sent = match replayer.replay(&mut out, opts.resume, opts.dialect) {
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
        // The hub is patient while we catch up: a full channel skips batches
        // instead of dropping us (hub.rs). Catching up ends once history has
        // given us what it skipped and the channel has room again.
        match last_sent {
            Some(last) if sub.take_skipped() => {
                match replayer.catch_up(&mut out, last, true, opts.dialect) {
                    Ok(caught_up) => last_sent = Some(caught_up),
                    Err(_) => return End::ClientLeft,
                }
                beat_due = Instant::now() + opts.heartbeat;
            }
            _ if !sub.rx.is_full() => sub.set_catching_up(false),
            _ => {}
        }
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
                    sub.set_catching_up(true);
                    match replayer.catch_up(&mut out, last, true, opts.dialect) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sse::frame::{like, Batch};
    use crate::sse::sink::SharedSink;
    use crate::sse::wire::Framing;
    use crate::store::memory::MemoryStore;
    use crate::store::{Event, LikeOp, Store};

    /// Runs a Live stream over `batches` (then the hub closes) and returns the body.
    fn stream_batches(store: MemoryStore, batches: Vec<Vec<Event>>) -> String {
        let replayer = Replayer::new(
            Arc::new(store),
            Arc::new(crate::recent::Recent::new(0, 0)),
            crate::metrics::Metrics::new(),
        );
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
        assert_eq!(run(&mut wire, &sub, &replayer, &opts), End::Unsubscribed);
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
            store,
            vec![
                vec![like(2, 1, 1, LikeOp::Like)],
                vec![like(5, 1, 4, LikeOp::Like), like(6, 1, 5, LikeOp::Like)],
            ],
        );
        assert_eq!(ids(&body), vec![2, 3, 4, 5, 6], "{body}");
    }

    /// Batches the hub skipped while the writer was still catching up (its
    /// channel full) come from history: every id once, and the stream stays.
    #[test]
    fn batches_skipped_while_catching_up_come_from_history() {
        let n = crate::hub::CHANNEL_BOUND as u64 + 20;
        let store = store_with_likes(1000, n - 1); // events 1..=n
        let batches = (1..=n)
            .map(|id| vec![like(id, 1, id, LikeOp::Like)])
            .collect();
        let body = stream_batches(store, batches);
        assert_eq!(ids(&body), (1..=n).collect::<Vec<_>>(), "{body}");
    }

    /// A gap that history no longer covers becomes `event: reset`, and ids still rise.
    #[test]
    fn gap_beyond_history_resets() {
        let store = store_with_likes(2, 5); // keeps events 5 and 6
        let body = stream_batches(
            store,
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
}
