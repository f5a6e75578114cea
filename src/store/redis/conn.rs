//! Connections to Redis, one server or a Redis Cluster: the r2d2 pool the
//! store's requests share, the short timeouts that turn an outage into a quick
//! 503, the retry of repeatable operations on a dead pooled connection, and
//! the sorting of Redis failures into [`StoreError`] kinds. Used by the store
//! (`mod.rs`) and the pump's reader (`stream.rs`); knows no keys and no scripts.
//!
//! On a cluster the pooled connections are the `redis` crate's own sync
//! [`ClusterConnection`] (it keeps a socket per master, routes each command
//! by its key's slot and follows MOVED and ASK), behind the same
//! [`ConnectionLike`] the single-server connections have, so the store's
//! scripts, commands and pipelines run unchanged on both. The pump's
//! connection is always a plain one to one server: on a cluster, to one seed
//! node, since a classic `PUBLISH` reaches the subscribers of every node.
//!
//! What redis-rs 1.8.1's sync cluster client does when a master dies (read
//! in `src/cluster_handling/sync_connection/mod.rs`, `request()`, and
//! measured against a real 3-master cluster in `tests/cluster.rs`), and what
//! we set because of it:
//!
//! - Requests for the other masters' slots are untouched: each master has its
//!   own socket, and the slot map still names the dead master for its slots
//!   (`CLUSTER SLOTS` keeps listing it; there is no replica to fail over to).
//! - A request for the dead master's slots finds its socket closed, drops it
//!   and connects again (`RetryMethod::Reconnect`); a refused connect is an
//!   error at once. With the crate's default 16 retries that is still only
//!   ~0.2 ms on loopback, but a host that does not answer at all would cost
//!   the connect timeout per try, 17 of them. We allow one retry: measured,
//!   such a request fails in under 0.3 ms, the other masters' are as fast as before.
//! - Once restarted, the master answers `CLUSTERDOWN` for about two seconds
//!   while it rejoins. The crate sleeps and retries that (`WaitAndRetry`), by
//!   default at least 1.28 s a time, 16 times: each request for those slots
//!   stalled 2.5 s in our measurement. We wait 10-20 ms once, then answer 503.
//!   After that the next request reconnects by itself: no restart of ours.
//! - A master that accepts connections but does not answer (stopped, not
//!   dead) costs the read timeout on each try, and a timed-out command is
//!   sent again on the same socket (`RetryImmediately`). So each try gets
//!   half of [`COMMAND_TIMEOUT`], and a request still waits at most that long
//!   (measured: 2.03 s). Making a new cluster connection then takes ~2 s (the
//!   handshake waits `CONNECT_TIMEOUT` for each of its two replies, on two
//!   tries), longer than a checkout waits: a pool that must grow meanwhile
//!   answers 503 until it has.
//! - On `NOSCRIPT`, `Script::invoke` sends `SCRIPT LOAD`, which the crate sends
//!   to every node and fails if any node fails: with one master down, a
//!   script new to a live master could never be loaded. [`ClusterConn`] sends
//!   it to every master and succeeds if one did (the one that asked is up).
//! - The crate declines plain `Pipeline::query` on a cluster connection
//!   ("does not support pipelining"), though it routes a packed pipeline by
//!   its first command. [`ClusterConn`] lets it through: every pipeline the
//!   store sends keeps to one hash slot (one board's keys share a hash tag).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConnection};
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Arg, Client, Cmd, ConnectionLike, ErrorKind, RedisError, ServerErrorKind, Value};

use crate::store::{StoreError, StoreResult};

/// How long to wait for a TCP connection to Redis. Short: while Redis is down a
/// write must fail fast with 503, not hang the request.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a command may take on an ordinary connection.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request waits for a pooled connection. r2d2's default is 30 s,
/// which would turn a Redis outage into 30-second hangs; a real deployment may
/// tune this, but it must stay well under a second.
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(300);

/// How many times the cluster client tries a command again. One covers what a
/// retry is for: a MOVED or ASK redirect after slots moved, a socket to a
/// master that restarted since (reconnected, then sent again), a TRYAGAIN. More
/// only repeat an outage: each try against a dead host costs a connect timeout.
const CLUSTER_RETRIES: u32 = 1;
/// Each cluster try's wait for a reply: the command timeout shared between the
/// tries, since the crate sends a timed-out command again.
const CLUSTER_TRY_TIMEOUT: Duration =
    Duration::from_millis(COMMAND_TIMEOUT.as_millis() as u64 / (CLUSTER_RETRIES as u64 + 1));
/// The pause before a cluster retry after CLUSTERDOWN or TRYAGAIN, in ms: the
/// crate waits a random time in `min..min(max, factor × base^retry)`, so
/// 10-20 ms for our one retry (by default at least 1.28 s).
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 50);
/// `factor` and `base` of that formula (the crate's defaults).
const CLUSTER_RETRY_WAIT_FORMULA: (u64, u64) = (10, 2);

/// What the store connects to.
enum Target {
    /// One Redis server: every connection goes to it.
    Single(Client),
    /// A Redis Cluster.
    Cluster {
        /// Makes the pool's connections; parsed once, connects only when asked.
        client: ClusterClient,
        /// One client per seed node, for the pump's plain connection.
        seeds: Vec<Client>,
        /// The seed the pump's next connect tries first: the one after the
        /// last that failed, so losing a node moves the pump to the next one.
        next: AtomicUsize,
        /// The seed the pump's connection was last made to.
        current: AtomicUsize,
    },
}

/// Opens connections with short timeouts, for the pool and for the pump.
#[derive(Clone)]
pub(super) struct Connector {
    /// The server or cluster; opening a connection from it is cheap and
    /// touches no network until asked.
    target: Arc<Target>,
    /// Shared by the pool and the pump's reader, for the reconnect count.
    link: Arc<Link>,
}

/// Whether a connection was lost (or could not be made) since the last good
/// connect, and how many times one was made after such a loss.
#[derive(Default)]
struct Link {
    /// Set by any failed connect or broken connection; the next good connect
    /// clears it and counts one reconnect, so a burst of failures counts once.
    lost: AtomicBool,
    /// Good connects that followed a loss, since start (for `/metrics`).
    reconnects: AtomicU64,
}

impl Link {
    fn lost(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    fn connected(&self) {
        if self.lost.swap(false, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes how a connect went, and hands its result on.
    fn note<T>(&self, opened: Result<T, RedisError>) -> Result<T, RedisError> {
        match &opened {
            Ok(_) => self.connected(),
            Err(_) => self.lost(),
        }
        opened
    }
}

impl Connector {
    /// Opens one plain connection whose reads may take up to `read_timeout`
    /// (longer for the pump, which blocks waiting for events), and notes on
    /// the link whether it could. On a cluster it goes to one seed node: the
    /// first that accepts, starting after the last one that failed.
    pub(super) fn connect(&self, read_timeout: Duration) -> Result<redis::Connection, RedisError> {
        let open = |client: &Client| {
            client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .and_then(|con| {
                    con.set_read_timeout(Some(read_timeout))?;
                    con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                    Ok(con)
                })
        };
        let opened = match &*self.target {
            Target::Single(client) => open(client),
            Target::Cluster {
                seeds,
                next,
                current,
                ..
            } => {
                let first = next.load(Ordering::Relaxed);
                let mut tried = (first..first + seeds.len()).map(|i| i % seeds.len());
                loop {
                    let i = tried.next().expect("at least one seed");
                    match open(&seeds[i]) {
                        Ok(con) => {
                            current.store(i, Ordering::Relaxed);
                            break Ok(con);
                        }
                        Err(e) => {
                            next.store((i + 1) % seeds.len(), Ordering::Relaxed);
                            if tried.len() == 0 {
                                break Err(e);
                            }
                        }
                    }
                }
            }
        };
        self.link.note(opened)
    }

    /// Notes that the pump's connection was lost, so the next good connect
    /// counts as a reconnect; on a cluster its node counts as failed, so the
    /// next connect starts with the seed after it.
    pub(super) fn lost(&self) {
        self.link.lost();
        if let Target::Cluster {
            seeds,
            next,
            current,
            ..
        } = &*self.target
        {
            next.store(
                (current.load(Ordering::Relaxed) + 1) % seeds.len(),
                Ordering::Relaxed,
            );
        }
    }
}

/// The pool holds either kind of connection behind the one trait the store's
/// code uses.
type Pooled = Box<dyn ConnectionLike + Send>;

impl r2d2::ManageConnection for Connector {
    type Connection = Pooled;
    type Error = RedisError;

    fn connect(&self) -> Result<Pooled, RedisError> {
        match &*self.target {
            Target::Single(_) => {
                Connector::connect(self, COMMAND_TIMEOUT).map(|con| Box::new(con) as Pooled)
            }
            Target::Cluster { client, .. } => {
                // Connects to the first seed that answers, reads the slot map,
                // and opens a socket to each master that accepts (a dead one
                // is left out and tried again by the request that needs it).
                let opened = client.get_connection().and_then(|con| {
                    // The builder sets no write timeout; reads have theirs.
                    con.set_write_timeout(Some(CLUSTER_TRY_TIMEOUT))?;
                    Ok(Box::new(ClusterConn(con)) as Pooled)
                });
                self.link.note(opened)
            }
        }
    }

    fn is_valid(&self, con: &mut Pooled) -> Result<(), RedisError> {
        redis::cmd("PING").query::<()>(&mut **con)
    }

    fn has_broken(&self, con: &mut Pooled) -> bool {
        // A cluster connection is broken when a node's socket closed and the
        // crate kept it; a node it dropped (a dead master) leaves it whole.
        let broken = !con.is_open();
        if broken {
            self.link.lost();
        }
        broken
    }
}

/// The crate's cluster connection with two of its habits changed for the
/// store (see the top of this file): `SCRIPT LOAD` succeeds when one master
/// loaded the script, and a pipeline is sent as one packed request, routed
/// by its first command's key. Everything else passes straight through.
struct ClusterConn(ClusterConnection);

impl ClusterConn {
    /// Whether `cmd` is `SCRIPT LOAD`.
    fn is_script_load(cmd: &Cmd) -> bool {
        let mut words = cmd.args_iter().filter_map(|arg| match arg {
            Arg::Simple(word) => Some(word),
            _ => None,
        });
        matches!(
            (words.next(), words.next()),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b"SCRIPT") && b.eq_ignore_ascii_case(b"LOAD")
        )
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        // Routed by the first command after any MULTI; one slot per pipeline.
        self.0.req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        if Self::is_script_load(cmd) {
            // Every master, not every node: a replica serves no scripts for us.
            let routing = RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::OneSucceeded),
            ));
            return self.0.route_command(cmd, routing);
        }
        self.0.req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }

    fn supports_pipelining(&self) -> bool {
        true
    }

    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }

    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// The store's connections: a lazily filled r2d2 pool and the connector behind
/// it, which the pump's reader also uses for its own connection.
pub(super) struct Pool {
    /// Shared by all request threads; internally synchronized.
    pool: r2d2::Pool<Connector>,
    /// A copy of the pool's connector, kept to hand to the pump's reader and
    /// to read the reconnect count (r2d2 does not give its manager back).
    connector: Connector,
}

impl Pool {
    /// Builds the pool for one Redis server without connecting: the server
    /// must start even while Redis is down, and the pool connects lazily when
    /// Redis comes back. Only a malformed URL fails here.
    pub(super) fn open(url: &str, size: u32) -> StoreResult<Self> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Corrupt(format!("invalid Redis URL {url:?}: {e}")))?;
        Ok(Pool::build(Target::Single(client), size))
    }

    /// Builds the pool for a Redis Cluster named by its seed nodes
    /// (`redis://host:port` each), without connecting, like [`Pool::open`].
    /// Each pooled connection holds a socket per master, so a pool of `size`
    /// opens up to `size` × masters sockets. The pump connects to one seed.
    pub(super) fn open_cluster(seeds: &[String], size: u32) -> StoreResult<Self> {
        let invalid = |e: RedisError| {
            StoreError::Corrupt(format!("invalid Redis Cluster seeds {seeds:?}: {e}"))
        };
        if seeds.is_empty() {
            return Err(StoreError::Corrupt("a Redis Cluster needs a seed".into()));
        }
        let (min_wait, max_wait) = CLUSTER_RETRY_WAIT_MS;
        let (factor, base) = CLUSTER_RETRY_WAIT_FORMULA;
        let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(CLUSTER_TRY_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(min_wait)
            .max_retry_wait(max_wait)
            .retry_wait_formula(factor, base)
            .build()
            .map_err(invalid)?;
        let seeds = seeds
            .iter()
            .map(|url| Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let target = Target::Cluster {
            client,
            seeds,
            next: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
        };
        Ok(Pool::build(target, size))
    }

    fn build(target: Target, size: u32) -> Self {
        let connector = Connector {
            target: Arc::new(target),
            link: Arc::default(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // A connection that failed is replaced, not re-tested on every checkout.
            .test_on_check_out(false)
            .build_unchecked(connector.clone());
        Pool { pool, connector }
    }

    /// The connector, for a reader that needs a connection of its own.
    pub(super) fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// Connections opened again after one failed or was lost, since start.
    /// On a cluster these are whole cluster connections and the pump's; the
    /// crate's reconnects to one node inside a request are not seen here.
    pub(super) fn reconnects(&self) -> u64 {
        self.connector.link.reconnects.load(Ordering::Relaxed)
    }

    fn checkout(&self) -> StoreResult<r2d2::PooledConnection<Connector>> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no Redis connection: {e}")))
    }

    /// Runs `op` on a pooled connection. An idle pooled connection may have died
    /// with a Redis restart, and only its next use finds out (at once: the socket
    /// is closed). For an operation that is safe to repeat, retries on other
    /// connections keep that from reaching the client as a 503; the pool drops
    /// each broken one, so after at most a pool's worth of them a fresh one is
    /// made. Timeouts are not retried: they would only double the wait.
    ///
    /// On a cluster the crate retries once by itself (reconnecting a node's
    /// closed socket), for every operation: an error that still comes out is
    /// an outage, and trying other pooled connections would only repeat it.
    /// That retry re-sends a command after a dropped connection or a timeout
    /// even when `repeatable` is false, so an operation that is not safe to
    /// repeat may, rarely, run twice there.
    pub(super) fn with_conn<T>(
        &self,
        context: &str,
        repeatable: bool,
        op: impl Fn(&mut dyn ConnectionLike) -> Result<T, RedisError>,
    ) -> StoreResult<T> {
        let single = matches!(&*self.connector.target, Target::Single(_));
        let attempts = if repeatable && single {
            self.pool.max_size() as usize + 1
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            let mut con = self.checkout()?;
            match op(&mut **con) {
                Ok(value) => return Ok(value),
                Err(e) if (e.is_connection_dropped() || e.is_io_error()) && !e.is_timeout() => {
                    last = Some(e)
                }
                Err(e) => return Err(classify(context, e)),
            }
        }
        Err(classify(context, last.expect("at least one attempt")))
    }
}

/// Sorts a Redis failure into "try again later" and "something is wrong".
///
/// On a cluster, "try again later" also covers: a master that is down (its
/// connection refused), a cluster that lost coverage (`CLUSTERDOWN`), a node
/// that is rejoining (`CLUSTERDOWN` too), a multi-key command during slot
/// migration (`TRYAGAIN`), no node reachable at all, and a redirect still
/// pointing elsewhere after the crate followed one (a slot moved twice).
/// A `CROSSSLOT` is a bug in our key layout, so it stays "something is wrong".
pub(super) fn classify(context: &str, e: RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::Moved
                        | ServerErrorKind::Ask
                )
        );
    if transient {
        StoreError::Unavailable(format!("{context}: {e}"))
    } else {
        StoreError::Corrupt(format!("{context}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    /// A refused or broken socket is "try again later" (a 503), not a 500.
    #[test]
    fn io_failure_is_unavailable() {
        let e = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify("ping", e), StoreError::Unavailable(_)));
    }

    /// A reply of the wrong type is a bug or a foreign key: "something is wrong".
    #[test]
    fn wrong_reply_type_is_corrupt() {
        let e = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(matches!(classify("like", e), StoreError::Corrupt(_)));
    }

    /// The cluster's own "not now" replies are 503s; CROSSSLOT is our bug.
    #[test]
    fn cluster_errors_are_sorted() {
        let server = |code: &str, detail: &str| {
            let reply = format!("-{code} {detail}\r\n");
            let parsed = redis::parse_redis_value(reply.as_bytes()).expect("an error reply");
            parsed.extract_error().expect_err("an error reply")
        };
        for (code, detail) in [
            ("CLUSTERDOWN", "The cluster is down"),
            ("TRYAGAIN", "Multiple keys request during rehashing of slot"),
            ("MOVED", "3999 127.0.0.1:6381"),
            ("ASK", "3999 127.0.0.1:6381"),
        ] {
            let e = server(code, detail);
            assert!(
                matches!(classify("like", e), StoreError::Unavailable(_)),
                "{code}"
            );
        }
        let e = server("CROSSSLOT", "Keys in request don't hash to the same slot");
        assert!(matches!(classify("like", e), StoreError::Corrupt(_)));
        let e = RedisError::from((ErrorKind::ClusterConnectionNotFound, "no node"));
        assert!(matches!(classify("like", e), StoreError::Unavailable(_)));
    }

    /// `SCRIPT LOAD` (what `Script::invoke` sends on NOSCRIPT) is told apart
    /// from every other command, in any case.
    #[test]
    fn script_load_is_recognised() {
        let mut load = redis::cmd("script");
        load.arg("load").arg("return 1");
        assert!(ClusterConn::is_script_load(&load));
        let mut flush = redis::cmd("SCRIPT");
        flush.arg("FLUSH");
        assert!(!ClusterConn::is_script_load(&flush));
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1").arg(0);
        assert!(!ClusterConn::is_script_load(&eval));
    }

    /// A free loopback port, with nothing listening on it.
    fn dead_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    /// A cluster pool is built without touching the network, and a request
    /// with no node up is a quick 503, like a single server's.
    #[test]
    fn cluster_pool_is_lazy_and_fails_fast() {
        let seeds: Vec<String> = (0..3)
            .map(|_| format!("redis://127.0.0.1:{}", dead_port()))
            .collect();
        let pool = Pool::open_cluster(&seeds, 4).expect("seeds parse");
        let started = Instant::now();
        let result = pool.with_conn("ping", true, |con| redis::cmd("PING").query::<()>(con));
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }

    /// Seeds that are not Redis URLs are refused when the pool is built.
    #[test]
    fn cluster_pool_refuses_bad_seeds() {
        assert!(Pool::open_cluster(&[], 4).is_err());
        assert!(Pool::open_cluster(&["not a url".to_string()], 4).is_err());
    }

    /// A stand-in node: accepts connections, says which port was chosen, and
    /// answers every command with `+OK` (enough for the connection handshake).
    fn fake_node(chosen: std::sync::mpsc::Sender<u16>) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = listener.local_addr().expect("bound").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = chosen.send(port);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(&stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        // Each command is an array: one reply per array header.
                        if line.starts_with('*') && (&stream).write_all(b"+OK\r\n").is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        port
    }

    /// The pump's connection on a cluster goes to the first seed that accepts,
    /// and once it is lost, to the next seed after it, wrapping around.
    #[test]
    fn pump_connection_moves_to_the_next_seed() {
        let (tx, chosen) = std::sync::mpsc::channel();
        let (dead, a, b) = (dead_port(), fake_node(tx.clone()), fake_node(tx));
        let seeds: Vec<String> = [dead, a, b]
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let pool = Pool::open_cluster(&seeds, 1).expect("seeds parse");
        let connector = pool.connector();
        let next_chosen = || {
            chosen
                .recv_timeout(COMMAND_TIMEOUT)
                .expect("a node was chosen")
        };

        let _first = connector.connect(COMMAND_TIMEOUT).expect("a seed accepts");
        assert_eq!(next_chosen(), a, "the dead seed is skipped");
        assert_eq!(pool.reconnects(), 0, "a seed refused is no lost connection");
        connector.lost();
        let _second = connector.connect(COMMAND_TIMEOUT).expect("a seed accepts");
        assert_eq!(next_chosen(), b, "after a loss, the next seed");
        connector.lost();
        let _third = connector.connect(COMMAND_TIMEOUT).expect("a seed accepts");
        assert_eq!(next_chosen(), a, "round again, past the dead seed");
        assert_eq!(pool.reconnects(), 2, "each loss, then a good connect");
    }
}
