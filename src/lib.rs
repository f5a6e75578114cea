//! likeboard: a live comment board. People post comments and like them; the
//! ranking lives in Redis; every change reaches every open browser over
//! Server-Sent Events. Synchronous, thread per connection, no async runtime.
//!
//! # Layout
//!
//! - [`config`]: flags and environment into a [`config::Config`].
//! - [`server`]: the listener, tiny_http's accept loop, request workers, and the
//!   hand-off of `/events` to a writer thread per client.
//! - [`routes`]: request -> reply; the only place that knows URLs. Each request
//!   is parsed once into a [`routes::Route`], which picks the handler, the 405's
//!   `Allow`, the metrics label and whether it opens a stream. `routes/api.rs`
//!   holds the board's handlers, `routes/seed.rs` the original demo's
//!   (`--seed-routes`), `routes/http.rs` the reply type and shared HTTP checks.
//! - [`input`]: strict parsing and validation of what clients send.
//! - [`moderation`]: the moderators' token (checked in constant time), the
//!   name of a block, every instance's copy of the blocks; the routes are
//!   `routes/admin.rs` (`--admin-token-file`).
//! - [`board`]: a board's name (a slug); `main` is the default board.
//! - [`store`]: the [`store::Store`] trait, every call on one board;
//!   [`store::redis`] (Lua scripts and a capped stream per board, on one Redis
//!   or a Redis Cluster) and [`store::memory`] (the embedded default).
//! - [`pump`]: one thread that hears every board's new events and publishes
//!   each board's batch to the hub, filling what the feed missed from the logs.
//! - [`recent`]: each watched board's newest events in memory, for replays.
//! - [`hub`]: subscribers' channels per board behind a mutex, each kept under
//!   its bound; never blocks.
//! - [`sse`]: Server-Sent Events, a file per job: [`sse::frame`] (an event to
//!   exact bytes), [`sse::wire`] (the response head and the body's framing),
//!   [`sse::replay`] (what a reconnecting client missed) and [`sse::stream`]
//!   (one client's stream from its head to its last chunk: the writer loop
//!   with heartbeat).
//! - [`viewers`]: a thread that sends the live viewer count (id-less events).
//! - [`classroom`]: the fault panel behind `--classroom`.
//! - [`page`]: minijinja templates and static files, embedded in the binary.
//! - [`metrics`]: the `/metrics` exposition, and the store wrapper that counts.
//! - [`guard`]: one thread that covers for tiny_http: request deadlines and
//!   byte budgets, freeing the pool thread parked on a stream, rescuing
//!   connections its pool forgot, answering heads it cannot serve.
//! - [`huge_alloc`]: the allocator; a client's declared body size cannot abort us.
//! - [`watchdog`], [`limits`], [`ratelimit`], [`lock`], [`error`]: the supporting cast.
//!
//! # How a like travels
//!
//! `POST /api/boards/b/comments/7/like` -> a worker thread in [`server`] ->
//! [`routes`] validates -> [`store::Store::set_like`]: ONE atomic Lua step on
//! board `b`'s keys updates the liker set and ranking, appends `like` to the
//! board's capped stream and publishes it on the feed channel -> the reply
//! `{id, score, liked}`. Separately, in every process: the [`pump`]'s feed
//! subscription hears it -> rendered once into an `Arc<Batch>` ->
//! [`hub::Hub::publish`] sends it to every channel of board `b` (dropping one
//! already 256 behind) ->
//! each client's writer thread wakes, writes everything pending in one write
//! (of several likes of a comment, only the newest), and flushes -> the browser's EventSource fires `like`.
//!
//! # Invariants
//!
//! - Only `store/redis/` imports redis; only `server.rs`, `server/` and `routes/`
//!   import tiny_http (`sse/` writes to a plain `Write`).
//! - Handlers never broadcast; only the pump publishes events, so every instance
//!   sends the same events in the same order with the same ids. (The viewers
//!   thread publishes too, but only an id-less count that never enters replay.)
//! - The hub never blocks on a client: a full channel drops that client.
//! - User text reaches the page only through autoescaped `.html` templates or
//!   `textContent`, under a CSP that forbids inline script.
//! - Only a bearer of the token can remove what others wrote: every
//!   moderation route passes `routes::admin::authorize` first, and none
//!   exists without `--admin-token-file`. A comment's author is never shown.
//! - No request input can panic a shared thread; a handler panic is caught,
//!   logged and answered with 500; no declared size is ever allocated for real.
//! - The guard acts on a connection only through its own duplicate of the
//!   descriptor, checked by inode, and on a worker's note only while the
//!   worker's `Hold` proves the connection still open.

pub mod board;
pub mod classroom;
pub mod config;
pub mod error;
pub mod guard;
pub mod hub;
pub mod huge_alloc;
pub mod input;
pub mod limits;
pub mod lock;
pub mod metrics;
pub mod moderation;
pub mod page;
pub mod proxy;
pub mod pump;
pub mod ratelimit;
pub mod recent;
pub mod routes;
pub mod server;
pub mod sse;
pub mod store;
pub mod viewers;
pub mod visitor;
pub mod watchdog;

/// Huge blocks are mapped lazily: a body that declares a terabyte must not be
/// able to abort the process (see `huge_alloc.rs`).
#[global_allocator]
static ALLOCATOR: huge_alloc::HugeAlloc = huge_alloc::HugeAlloc;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use config::Config;
use hub::Hub;
use routes::App;
use store::{memory::MemoryStore, redis::RedisStore, Store};

/// How long startup waits for the pump to be subscribed to new events.
const PUMP_START: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the server until SIGTERM/SIGINT (Ok) or until it cannot go on (Err).
pub fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // Block the stop signals in every thread (threads inherit the mask), so one
    // thread can wait for them with sigwait and shut down in order.
    let signals = shutdown_signals::block()?;

    let pool = (config.workers + 4) as u32;
    let store: Arc<dyn Store> = match &config.redis_url {
        _ if !config.redis_cluster.is_empty() => {
            let seeds = &config.redis_cluster;
            let store =
                RedisStore::open_cluster(seeds, &config.key_prefix, config.stream_len, pool)?;
            let shown: Vec<String> = seeds.iter().map(|s| redact(s)).collect();
            log::info!("using the Redis Cluster at {}", shown.join(", "));
            Arc::new(store.with_max_boards(config.max_boards))
        }
        Some(url) => {
            let store = RedisStore::open(url, &config.key_prefix, config.stream_len, pool)?;
            log::info!("using Redis at {}", redact(url));
            Arc::new(store.with_max_boards(config.max_boards))
        }
        None => {
            log::warn!("no Redis URL configured: using the in-memory store, NOTHING IS PERSISTED");
            Arc::new(MemoryStore::new(config.stream_len, config.max_boards))
        }
    };

    // Every store call is counted (errors, appends, replays) by one wrapper;
    // the unwrapped one fills the ring of recent events, which is no replay.
    let metrics = metrics::Metrics::new();
    let unmetered = Arc::clone(&store);
    let store: Arc<dyn Store> = Arc::new(metrics::MeteredStore::new(store, Arc::clone(&metrics)));

    let limits = limits::OsLimits::measure();
    let (os_cap, why) = limits.subscriber_cap();
    let cap = config
        .max_subscribers
        .map_or(os_cap, |asked| asked.min(os_cap));
    log::info!("subscriber cap {cap} (OS allows {os_cap}, limited by {why}; {limits:?})");
    if why == limits::BY_MAPS {
        // Descriptors can be raised per service (LimitNOFILE); the map count
        // is the machine's, so say how to raise it.
        log::warn!(
            "vm.max_map_count ({}) limits this process to {os_cap} event streams ({} memory \
             maps each); raise it with `sysctl -w vm.max_map_count={}`, or for good with \
             deploy/sysctl-likeboard.conf in /etc/sysctl.d/",
            limits.max_map_count,
            limits::MAPS_PER_CLIENT,
            limits::SUGGESTED_MAX_MAP_COUNT
        );
    }

    let hub = Hub::new(cap);
    let pump_stats = Arc::new(pump::PumpStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let page = page::Page::new(config.assets_dir.clone())?;
    // Never further back than the store's own history: every instance must
    // answer a resume alike (replay, or reset), whatever its ring holds.
    let ring = config
        .replay_ring
        .min(usize::try_from(config.stream_len).unwrap_or(usize::MAX));
    let rings = Arc::new(recent::Rings::new(
        ring,
        recent::DEFAULT_BYTES,
        config.stream_len,
    ));
    let replayer =
        sse::replay::Replayer::new(Arc::clone(&store), Arc::clone(&rings), Arc::clone(&metrics));
    let visitors = match &config.visitor_key_file {
        Some(path) => {
            visitor::Visitors::with_key(Arc::clone(&store), &visitor::Visitors::read_secret(path)?)
        }
        None => visitor::Visitors::new(Arc::clone(&store)),
    };
    // Moderation is on with a token file; a token too short is a startup
    // error (the message names the file, never the token).
    let admin = match &config.admin_token_file {
        Some(path) => Some(moderation::AdminToken::read(path)?),
        None => None,
    };
    // Every instance enforces the site's blocks, with or without the token:
    // instances sharing a store share their moderators' decisions.
    let blocks = Arc::new(moderation::Blocks::new(Arc::clone(&store)));
    if let Err(e) = blocks.refresh() {
        log::warn!("cannot read the blocks yet ({e}); will keep trying");
    }
    let _blocks = blocks.spawn_refresher(Arc::clone(&stop));
    let coalesce = config.coalesce;
    let app = Arc::new(App {
        store: Arc::clone(&store),
        replayer,
        visitors,
        hub: Arc::clone(&hub),
        page,
        limiter: ratelimit::RateLimiter::new(config.write_rate, config.visitor_rate),
        admin,
        // Failed token checks only: its write rate is the failures' allowance.
        auth_failures: ratelimit::RateLimiter::new(routes::ADMIN_FAILURES_PER_MINUTE, 0),
        blocks,
        classroom: config.classroom.then(classroom::Classroom::new),
        config,
        pump: Arc::clone(&pump_stats),
        started: Instant::now(),
        metrics,
    });
    let _viewers = viewers::spawn(Arc::clone(&hub), Arc::clone(&stop));
    // The crowd that comes back to a restarted instance replays from memory:
    // the default board's ring holds its newest events before the first client
    // can connect (other boards' rings fill on their first stream). Its
    // position is also where the pump starts on that board.
    let main = rings.open(&board::Board::main(), &*unmetered);
    // No client can be waiting for an event yet: the pump may start at the
    // newest one without publishing what came before.
    match unmetered.last_event_id(&board::Board::main()) {
        Ok(newest) => main.mark(newest),
        Err(e) => log::warn!(
            "the {} store is not answering yet ({e}); will keep trying",
            store.name()
        ),
    }
    let _pump = pump::spawn(
        store,
        hub,
        rings,
        Arc::clone(&pump_stats),
        coalesce,
        Arc::clone(&stop),
    );
    // Events are heard only once the pump's reader is subscribed; a write
    // taken before would reach live streams only with the next event. So
    // wait for it, briefly: a store that is down must not keep us from
    // serving the page and the replays that work.
    let subscribed = Instant::now() + PUMP_START;
    while !pump_stats.running.load(std::sync::atomic::Ordering::SeqCst)
        && Instant::now() < subscribed
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    let mut server = server::Server::start(Arc::clone(&app))?;
    let fatal = server.spawn_workers();
    // Scripts and tests read this line to learn the real port.
    println!("listening on http://{}", server.addr());
    std::io::stdout().flush()?;
    log::info!("listening on http://{}", server.addr());

    let stop_signal = signals.wait_in_thread();
    crossbeam_channel::select! {
        recv(stop_signal) -> sig => {
            log::info!("signal {} received: shutting down", sig.unwrap_or(0));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            server.shutdown();
            log::info!("stopped");
            Ok(())
        }
        recv(fatal) -> why => {
            let why = why.unwrap_or_else(|_| "all workers ended".into());
            log::error!("{why}; exiting so a supervisor can restart the server");
            Err(why.into())
        }
    }
}

/// Hides a password in a Redis URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// SIGTERM and SIGINT, delivered to one waiting thread instead of killing us.
mod shutdown_signals {
    use std::io;
    use std::mem::MaybeUninit;

    pub struct Blocked(libc::sigset_t);

    /// Blocks SIGTERM and SIGINT for this thread and every thread it spawns.
    pub fn block() -> io::Result<Blocked> {
        // SAFETY: plain libc signal-set manipulation on a local set.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            let set = set.assume_init();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Blocked(set))
        }
    }

    impl Blocked {
        /// A channel that yields the signal number when one arrives.
        pub fn wait_in_thread(self) -> crossbeam_channel::Receiver<i32> {
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    let mut sig = 0;
                    // SAFETY: sigwait on the set we blocked.
                    if unsafe { libc::sigwait(&self.0, &mut sig) } == 0 {
                        let _ = tx.send(sig);
                    }
                })
                .expect("spawning the signal thread");
            rx
        }
    }
}

#[cfg(test)]
mod tests {
    /// Passwords in Redis URLs never reach the log.
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(super::redact("redis://host:6379"), "redis://host:6379");
    }
}
