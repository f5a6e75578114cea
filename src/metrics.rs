//! `GET /metrics`: what the server is doing, in the OpenMetrics text format that
//! Prometheus scrapes. The server and the store wrapper call in; routes render.
//!
//! Two kinds of numbers. Those only this module counts (HTTP requests and their
//! durations, events appended and replayed, store errors) live in [`Metrics`].
//! Those other modules already keep (the hub's subscribers, drops and refusals,
//! the pump's progress, the store's reconnects) are read when a scrape comes in,
//! so those modules carry no metrics code. Knows no URLs (the server passes a
//! route pattern) and no HTTP types.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::board::Board;
use crate::hub::Hub;
use crate::pump::PumpStats;
use crate::sse::Message;
use crate::store::{
    Action, AuditEntry, Block, BoardInfo, Comment, EventReader, Feed, HiddenComment, History,
    LikeOp, LikeOutcome, Moderated, NewComment, Snapshot, Store, StoreError, StoreResult,
};

/// The `Content-Type` of the exposition; Prometheus picks its parser by it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request-duration buckets. Ordinary requests
/// take well under a millisecond on the in-memory store and about one Redis
/// round trip otherwise; the top buckets catch a Redis outage (0.3 s checkout).
const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The labels of one HTTP request. Every value comes from a fixed set, so the
/// number of series stays bounded whatever clients send.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// A route pattern such as `/api/comments/{id}/like`, never a raw path.
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplayLabels {
    /// `memory` (the ring of recent events) or `store` (read from the log).
    source: &'static str,
}

/// Upper bounds (seconds) of the replay-duration buckets: a replay from memory
/// takes microseconds; one from the store a round trip per 1,000 events, plus
/// its wait in line behind other replays during a reconnect storm.
const REPLAY_BUCKETS: [f64; 10] = [0.0001, 0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreErrorLabels {
    store: &'static str,
    /// The store operation that failed: `like`, `snapshot`, `pump_read`, ...
    op: &'static str,
    /// `unavailable` (unreachable, timed out) or `unexpected` (a bad answer).
    kind: &'static str,
}

/// The counters this module keeps itself; shared by every thread.
pub struct Metrics {
    /// HTTP requests answered, by route pattern, method and status.
    requests: Family<RequestLabels, Counter>,
    /// Time from taking a request to sending its reply (for `/events`: to
    /// handing the stream to its writer thread), by route pattern.
    durations: Family<RouteLabels, Histogram>,
    /// Events this instance's writes appended to the log (other instances
    /// count their own; the pump's broadcast count covers everyone's).
    appended: Counter,
    /// Events sent to reconnecting clients in replays, from memory or the store.
    replayed: Counter,
    /// Failed store operations.
    store_errors: Family<StoreErrorLabels, Counter>,
    /// Replays sent to reconnecting clients, by where they came from.
    replays: Family<ReplayLabels, Counter>,
    /// How long each replay took, waiting in line included.
    replay_durations: Histogram,
    /// Replays waiting in line for a turn to read the store.
    replays_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            appended: Counter::default(),
            replayed: Counter::default(),
            store_errors: Family::default(),
            replays: Family::default(),
            replay_durations: Histogram::new(REPLAY_BUCKETS),
            replays_waiting: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts one answered request. `route` is a pattern from a fixed set;
    /// `method` is reduced to a fixed set here, since clients may send any token.
    pub fn observe_request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let method = match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "DELETE" => "DELETE",
            "PUT" => "PUT",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Counts one finished replay of `events` events: `from_store` if any of
    /// it was read from the store rather than the ring of recent events.
    pub fn observe_replay(&self, from_store: bool, events: u64, took: Duration) {
        self.replayed.inc_by(events);
        let source = if from_store { "store" } else { "memory" };
        self.replays.get_or_create(&ReplayLabels { source }).inc();
        self.replay_durations.observe(took.as_secs_f64());
    }

    /// A replay joins (`+1`) or leaves (`-1`) the line for reading the store.
    pub fn replay_waiting(&self, delta: i64) {
        self.replays_waiting.inc_by(delta);
    }

    /// Counts a failed store call, then passes the result on unchanged.
    fn store_result<T>(
        &self,
        store: &'static str,
        op: &'static str,
        r: StoreResult<T>,
    ) -> StoreResult<T> {
        if let Err(e) = &r {
            let kind = match e {
                // A locked board refusing a write is the moderator's will,
                // not a failure: nothing to alert on.
                StoreError::Locked => return r,
                StoreError::TooManyBoards { .. } | StoreError::TooManyBlocks { .. } => "refused",
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Corrupt(_) => "unexpected",
            };
            self.store_errors
                .get_or_create(&StoreErrorLabels { store, op, kind })
                .inc();
        }
        r
    }

    /// The whole exposition: this module's counters plus what the hub, the pump
    /// and the store report right now.
    ///
    /// Pump lag costs one `GET` of the event counter per scrape: only the store
    /// knows the newest id when other instances take writes too, and a scrape
    /// every 15 s or so makes that round trip negligible. (`/healthz`, polled
    /// far more often, does not do it.) If the store does not answer, the lag
    /// is left out: an absent sample means "unknown", a zero would lie.
    pub fn render(
        &self,
        hub: &Hub<Message>,
        pump: &PumpStats,
        store: &dyn Store,
    ) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("likeboard");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer a request (for /events: to hand the stream to its writer)",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register(
            "events_appended",
            "Events appended to the log by this instance's writes",
            self.appended.clone(),
        );
        registry.register(
            "events_replayed",
            "Events sent to reconnecting clients in replays, from memory or the store",
            self.replayed.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store operations (Redis errors when the store is Redis), by operation and kind",
            self.store_errors.clone(),
        );
        registry.register(
            "replays",
            "Replays sent to reconnecting clients, by source (memory: the ring of recent events; store: read from the log)",
            self.replays.clone(),
        );
        registry.register_with_unit(
            "replay_duration",
            "Time to send a replay, its wait in line for the store included",
            Unit::Seconds,
            self.replay_durations.clone(),
        );
        registry.register(
            "replays_waiting",
            "Replays waiting in line for a turn to read the store",
            self.replays_waiting.clone(),
        );

        // Numbers kept elsewhere: fresh metrics holding this instant's values.
        let gauge = |v: u64| -> Gauge {
            let g = Gauge::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        };
        let counter = |v: u64| -> Counter {
            let c = Counter::default();
            c.inc_by(v);
            c
        };
        registry.register(
            "sse_subscribers",
            "SSE clients connected now",
            gauge(hub.len() as u64),
        );
        registry.register(
            "sse_subscriber_cap",
            "Most SSE clients at once (from --max-subscribers and the OS limits)",
            gauge(hub.cap() as u64),
        );
        registry.register(
            "sse_dropped_slow",
            "SSE clients dropped because their queue was full",
            counter(hub.dropped_slow()),
        );
        registry.register(
            "sse_refused",
            "SSE clients refused because the subscriber cap was reached",
            counter(hub.refused()),
        );
        registry.register(
            "events_broadcast",
            "Events the pump handed to the hub (every instance's writes)",
            counter(pump.events.load(Ordering::Relaxed)),
        );
        registry.register(
            "pump_batches",
            "Batches the pump handed to the hub, each one send to every stream of its board \
             (fewer than events when a storm is coalesced, --coalesce-ms)",
            counter(pump.batches.load(Ordering::Relaxed)),
        );
        registry.register(
            "pump_recovered_events",
            "Events the pump read from a board's log because the feed did not bring them",
            counter(pump.recovered.load(Ordering::Relaxed)),
        );
        let delivered = pump.last_delivered.load(Ordering::Relaxed);
        registry.register(
            "pump_last_delivered_event_id",
            "Id of the last event of the default board the pump handed to the hub",
            gauge(delivered),
        );
        if let Ok(newest) = store.last_event_id(&Board::main()) {
            registry.register(
                "pump_lag_events",
                "Newest event id in the default board's log minus the last one the pump delivered",
                gauge(newest.saturating_sub(delivered)),
            );
        }
        // Counts only: a label per board would make series without bound.
        if let Ok((_, boards)) = store.boards(0) {
            registry.register("boards", "Boards in the store", gauge(boards));
        }
        registry.register(
            "boards_live",
            "Boards with at least one SSE client here now",
            gauge(hub.boards().len() as u64),
        );
        registry.register(
            "store_reconnects",
            "Connections to the store opened again after one failed or was lost",
            counter(store.reconnects()),
        );

        let mut out = String::new();
        text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// The configured store, counted: errors by operation, events this instance
/// appended, events read for replay. Wrapping keeps both stores free of metrics.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn count<T>(&self, op: &'static str, r: StoreResult<T>) -> StoreResult<T> {
        self.metrics.store_result(self.inner.name(), op, r)
    }
}

impl Store for MeteredStore {
    fn snapshot(
        &self,
        board: &Board,
        visitor: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Snapshot> {
        self.count(
            "snapshot",
            self.inner.snapshot(board, visitor, limit, offset),
        )
    }

    fn add_comment(&self, board: &Board, comment: NewComment) -> StoreResult<Comment> {
        let r = self.count("add_comment", self.inner.add_comment(board, comment));
        if r.is_ok() {
            self.metrics.appended.inc();
        }
        r
    }

    fn set_like(
        &self,
        board: &Board,
        comment: u64,
        visitor: &str,
        op: LikeOp,
    ) -> StoreResult<Option<LikeOutcome>> {
        let r = self.count("like", self.inner.set_like(board, comment, visitor, op));
        // Only a change is logged (liking twice appends nothing).
        if let Ok(Some(outcome)) = &r {
            if outcome.changed {
                self.metrics.appended.inc();
            }
        }
        r
    }

    fn history(&self, board: &Board, after: u64, max: usize) -> StoreResult<History> {
        // Events replayed are counted by the replay itself (`observe_replay`),
        // whether they came from the store or from memory.
        self.count("history", self.inner.history(board, after, max))
    }

    fn last_event_id(&self, board: &Board) -> StoreResult<u64> {
        self.count("last_event_id", self.inner.last_event_id(board))
    }

    fn boards(&self, limit: usize) -> StoreResult<(Vec<BoardInfo>, u64)> {
        self.count("boards", self.inner.boards(limit))
    }

    fn visitor_key(&self, candidate: &str) -> StoreResult<String> {
        self.count("visitor_key", self.inner.visitor_key(candidate))
    }

    fn ping(&self) -> StoreResult<()> {
        self.count("ping", self.inner.ping())
    }

    fn moderate(&self, board: &Board, action: Action, now: u64) -> StoreResult<Moderated> {
        let is_lock = matches!(action, Action::Lock(_));
        let r = self.count("moderate", self.inner.moderate(board, action, now));
        if let Ok(Moderated::Done(ids)) = &r {
            // A lock logs one event; every other step one per comment it touched.
            let logged = if is_lock { 1 } else { ids.len() as u64 };
            self.metrics.appended.inc_by(logged);
        }
        r
    }

    fn author_of(&self, board: &Board, comment: u64) -> StoreResult<Option<String>> {
        self.count("author_of", self.inner.author_of(board, comment))
    }

    fn hidden(&self, board: &Board, limit: usize) -> StoreResult<Vec<HiddenComment>> {
        self.count("hidden", self.inner.hidden(board, limit))
    }

    fn block(&self, block: &Block, now: u64) -> StoreResult<u64> {
        self.count("block", self.inner.block(block, now))
    }

    fn unblock(&self, reference: &str) -> StoreResult<Option<(String, u64)>> {
        self.count("unblock", self.inner.unblock(reference))
    }

    fn blocks_version(&self) -> StoreResult<u64> {
        self.count("blocks_version", self.inner.blocks_version())
    }

    fn blocks(&self) -> StoreResult<(Vec<Block>, u64)> {
        self.count("blocks", self.inner.blocks())
    }

    fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.count("audit", self.inner.audit(entry))
    }

    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.count("audit_log", self.inner.audit_log(limit))
    }

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(MeteredReader {
            inner: self.inner.event_reader(),
            store: self.inner.name(),
            metrics: Arc::clone(&self.metrics),
        })
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects()
    }
}

/// The pump's reader, counted like the store it came from.
struct MeteredReader {
    inner: Box<dyn EventReader>,
    store: &'static str,
    metrics: Arc<Metrics>,
}

impl EventReader for MeteredReader {
    fn wait(&mut self, max: usize, timeout: Duration) -> StoreResult<Feed> {
        let r = self.inner.wait(max, timeout);
        self.metrics.store_result(self.store, "pump_read", r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// Appends, replays and request counts show up in the exposition, which
    /// ends with the `# EOF` OpenMetrics requires.
    #[test]
    fn counts_reach_the_exposition() {
        let metrics = Metrics::new();
        let store = MeteredStore::new(Arc::new(MemoryStore::new(100, 10)), Arc::clone(&metrics));
        let main = Board::main();
        let c = store
            .add_comment(
                &main,
                NewComment {
                    nickname: "a".into(),
                    content: "b".into(),
                    created_at: 0,
                    author: "c:t".into(),
                },
            )
            .unwrap();
        store.set_like(&main, c.id, "v", LikeOp::Like).unwrap();
        store.set_like(&main, c.id, "v", LikeOp::Like).unwrap(); // no change, no event
        metrics.observe_replay(true, 2, Duration::from_millis(1));
        metrics.observe_request("/healthz", "GET", 200, Duration::from_millis(1));
        metrics.observe_request("/healthz", "BREW", 405, Duration::from_millis(1));
        let hub = Hub::new(7);
        let text = metrics.render(&hub, &PumpStats::default(), &store).unwrap();
        for line in [
            "likeboard_events_appended_total 2",
            "likeboard_events_replayed_total 2",
            r#"likeboard_replays_total{source="store"} 1"#,
            "likeboard_sse_subscriber_cap 7",
            "likeboard_pump_lag_events 2",
            "likeboard_boards 1",
            "likeboard_boards_live 0",
            r#"likeboard_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
            r#"likeboard_http_requests_total{route="/healthz",method="other",status="405"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
