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
    closing_retry, fold, retry_field, viewers_event, Dialect, Encoded, Message, HEARTBEAT, RETRY_MS,
};
use super::outlet::Outlet;
use super::replay::{Replayer, Resume};
use super::wire::{release_if_large, Wire};
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
    /// The board whose events it streams.
    pub board: crate::board::Board,
    /// Which frames it wants: `/events` JSON or the seed's `member@METHOD`.
    pub dialect: Dialect,
    /// Where it asked to resume (Last-Event-ID or `?since=`).
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
        log::info!(
            "SSE client connected to board {} ({} now)",
            sub.board(),
            hub.len()
        );
        // The page shows the count at once; the viewers thread sends changes
        // from here on.
        if opts.viewers {
            let _ = wire.send(&viewers_event(hub.len_of(sub.board())));
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
pub fn refuse(wire: &mut Wire, refusal: SubscribeError) {
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
    // Without the fault panel there are no pokes and `out` writes straight through.
    let pokes = opts.control.as_ref().map(|c| &c.pokes);
    let mut out = Outlet {
        wire,
        control: opts.control.as_ref(),
        held: Vec::new(),
    };
    // The subscription exists before the replay is read, so nothing published
    // in between is lost; `last_sent` drops anything the replay already covered.
    let board = sub.board();
    let mut last_sent = match replayer.replay(&mut out, board, opts.resume, opts.dialect) {
        Ok(last) => last,
        Err(_) => return End::ClientLeft,
    };
    // Grows on demand and is freed after a large write, like the wire's frame
    // buffer (`wire::KEEP_BYTES`).
    let mut buf = Vec::new();
    // One wake-up's batches; the same allocation for the stream's life.
    let mut batches: Vec<Message> = Vec::new();
    // Heartbeats are due a heartbeat period after the last write, not after the
    // last wake-up: a batch with nothing for this client (a viewer count it did
    // not ask for) must not keep postponing them, or a dead peer goes unnoticed.
    let mut beat_due = Instant::now() + opts.heartbeat;
    // Whether the hub still treats us as catching up (a new subscription is);
    // mirrored here so that a caught-up writer pays nothing for it per wake.
    let mut catching_up = true;
    loop {
        // The hub is patient while we catch up: a full channel skips batches
        // instead of dropping us (hub.rs). Catching up ends once history has
        // given us what it skipped and the channel has room again.
        if catching_up {
            match last_sent {
                Some(last) if sub.take_skipped() => {
                    match replayer.catch_up(&mut out, board, last, true, opts.dialect) {
                        Ok(caught_up) => last_sent = Some(caught_up),
                        Err(_) => return End::ClientLeft,
                    }
                    beat_due = Instant::now() + opts.heartbeat;
                }
                _ if sub.rx.len() < crate::hub::CHANNEL_BOUND => {
                    sub.set_catching_up(false);
                    catching_up = false;
                }
                _ => {}
            }
        }
        let first = match wait(sub, pokes, beat_due) {
            Wake::Batch(batch) => batch,
            Wake::Closed => return End::Unsubscribed,
            Wake::Dropped => return End::Dropped,
            Wake::Changed => {
                if out.send(b"").is_err() {
                    return End::ClientLeft;
                }
                continue;
            }
            Wake::Beat => {
                let quiet = opts.control.as_ref().is_some_and(|c| c.quiet());
                if !quiet && out.send(HEARTBEAT).is_err() {
                    return End::ClientLeft;
                }
                beat_due = Instant::now() + opts.heartbeat;
                continue;
            }
        };
        // Coalesce: everything already queued goes out in the same write,
        // folded (`frame::fold`: of several likes of a comment, the newest).
        batches.push(first);
        batches.extend(sub.rx.try_iter());
        let mut pending: Vec<&Encoded> = Vec::new();
        let mut viewers = None;
        for batch in &batches {
            for event in &batch.events {
                if let Some(last) = last_sent.filter(|&last| event.id > last + 1) {
                    // A gap. Event ids are consecutive, so events between `last`
                    // and this one never reached our channel: the pump started
                    // (or resumed) after our replay was read, or the stream was
                    // trimmed past it. What is pending goes first, ending at
                    // `last`; then history fills the gap, or says reset.
                    buf.clear();
                    fold(&mut buf, &pending, opts.dialect);
                    pending.clear();
                    if out.send(&buf).is_err() {
                        return End::ClientLeft;
                    }
                    sub.set_catching_up(true);
                    catching_up = true;
                    match replayer.catch_up(&mut out, board, last, true, opts.dialect) {
                        Ok(caught_up) => last_sent = Some(caught_up),
                        Err(_) => return End::ClientLeft,
                    }
                }
                if last_sent.is_some_and(|last| event.id <= last) {
                    continue;
                }
                pending.push(event);
                last_sent = Some(event.id);
            }
            if opts.viewers && opts.dialect == Dialect::Standard {
                // Only the newest count matters.
                viewers = batch.viewers.or(viewers);
            }
        }
        buf.clear();
        fold(&mut buf, &pending, opts.dialect);
        // The bytes are in `buf`: let go of the batches, so an idle writer
        // keeps none alive (the vector keeps its room for the next wake-up).
        batches.clear();
        if let Some(count) = viewers {
            buf.extend_from_slice(&viewers_event(count));
        }
        if buf.is_empty() {
            continue;
        }
        let sent = out.send(&buf);
        release_if_large(&mut buf);
        if sent.is_err() {
            return End::ClientLeft;
        }
        beat_due = Instant::now() + opts.heartbeat;
    }
}

/// What woke a writer.
enum Wake {
    /// A batch arrived on the client's channel.
    Batch(Message),
    /// The hub closed the channel: too slow, or shutting down.
    Closed,
    /// The fault panel asked to drop this connection (or went away).
    Dropped,
    /// The fault panel changed this stream's mode: release what it held.
    Changed,
    /// Nothing for a heartbeat period: time for a heartbeat.
    Beat,
}

/// Waits for the next thing the writer must act on, until `beat_due`;
/// `pokes` is the fault panel's channel, if it holds this stream.
///
/// Without the fault panel (every real deployment) the writer parks until the
/// hub wakes it ([`Subscription::wait`]): one futex wait per wake-up, with no
/// spinning or yielding first. A `select!`
/// over three sources registers and unregisters the thread with each of them
/// on every wake, which is what a like storm multiplies by every client; it is
/// kept for `--classroom`, whose pokes need their own channel.
fn wait(
    sub: &Subscription<Message>,
    pokes: Option<&crossbeam_channel::Receiver<Poke>>,
    beat_due: Instant,
) -> Wake {
    use crossbeam_channel::RecvTimeoutError;
    let rx = &sub.rx;
    let Some(pokes) = pokes else {
        return match sub.wait(beat_due) {
            Ok(batch) => Wake::Batch(batch),
            Err(RecvTimeoutError::Timeout) => Wake::Beat,
            Err(RecvTimeoutError::Disconnected) => Wake::Closed,
        };
    };
    crossbeam_channel::select! {
        recv(rx) -> batch => batch.map_or(Wake::Closed, Wake::Batch),
        recv(pokes) -> poke => match poke {
            Ok(Poke::Drop) | Err(_) => Wake::Dropped,
            Ok(Poke::Changed) => Wake::Changed,
        },
        default(beat_due.saturating_duration_since(Instant::now())) => Wake::Beat,
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

    /// Runs a Live `/events` stream over `batches` (then the hub closes) and returns the body.
    fn stream_batches(store: MemoryStore, batches: Vec<Vec<Event>>) -> String {
        stream_batches_in(store, batches, Dialect::Standard)
    }

    /// As [`stream_batches`], in `dialect`.
    fn stream_batches_in(store: MemoryStore, batches: Vec<Vec<Event>>, dialect: Dialect) -> String {
        let replayer = Replayer::new(
            Arc::new(store),
            Arc::new(crate::recent::Rings::new(0, 0, 100)),
            crate::metrics::Metrics::new(),
        );
        let hub = crate::hub::Hub::new(4);
        let board = crate::board::Board::main();
        let sub = hub.subscribe(&board).unwrap();
        for events in &batches {
            hub.publish(&board, Arc::new(Batch::new(events)));
        }
        hub.close();
        let sink = SharedSink::default();
        let mut wire = Wire::new(Box::new(sink.clone()), Framing::CloseDelimited);
        let opts = StreamOptions {
            board: board.clone(),
            dialect,
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
        let store = crate::store::memory::MemoryStore::new(capacity, 10);
        let main = crate::board::Board::main();
        let c = store
            .add_comment(
                &main,
                crate::store::NewComment {
                    nickname: "n".into(),
                    content: "c".into(),
                    created_at: 0,
                    author: "c:t".into(),
                },
            )
            .unwrap();
        for v in 0..likes {
            store
                .set_like(&main, c.id, &v.to_string(), LikeOp::Like)
                .unwrap();
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

    /// Two batches queued together for one write: three likes of comment 1,
    /// a like, an unlike and a like again.
    fn queued_storm(dialect: Dialect) -> String {
        stream_batches_in(
            store_with_likes(100, 0),
            vec![
                vec![like(2, 1, 1, LikeOp::Like), like(3, 1, 0, LikeOp::Unlike)],
                vec![like(4, 1, 1, LikeOp::Like)],
            ],
            dialect,
        )
    }

    /// Batches queued together go out in one write, folded: of the likes of
    /// a comment only the newest, with the last id queued.
    #[test]
    fn queued_likes_are_folded_across_batches() {
        assert_eq!(
            queued_storm(Dialect::Standard),
            "id: 4\nevent: like\ndata: {\"id\":1,\"score\":1}\n\n",
            "one frame, the newest score"
        );
    }

    /// The seed's stream is never folded: every `member@METHOD` goes out.
    #[test]
    fn seed_stream_is_not_folded() {
        assert_eq!(
            queued_storm(Dialect::Seed),
            "id: 2\ndata: 1@POST\n\nid: 3\ndata: 1@DELETE\n\nid: 4\ndata: 1@POST\n\n"
        );
    }

    /// Batches the hub skipped while the writer was still catching up (its
    /// channel full) come from history: ids rise to the last one, the board's
    /// final score arrives, and the stream stays.
    #[test]
    fn batches_skipped_while_catching_up_come_from_history() {
        let n = crate::hub::CHANNEL_BOUND as u64 + 20;
        let store = store_with_likes(1000, n - 1); // events 1..=n
        let batches = (1..=n)
            .map(|id| vec![like(id, 1, id - 1, LikeOp::Like)])
            .collect();
        let body = stream_batches(store, batches);
        let got = ids(&body);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert_eq!(got.last(), Some(&n), "{body}");
        assert!(
            body.ends_with(&format!("data: {{\"id\":1,\"score\":{}}}\n\n", n - 1)),
            "{body}"
        );
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
