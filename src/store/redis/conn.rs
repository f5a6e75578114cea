//! Connections to Redis: the r2d2 pool the store's requests share, the short
//! timeouts that turn an outage into a quick 503, the retry of repeatable
//! operations on a dead pooled connection, and the sorting of Redis failures
//! into [`StoreError`] kinds. Used by the store (`mod.rs`) and the pump's
//! reader (`stream.rs`); knows no keys and no scripts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{Client, ConnectionLike, ErrorKind, RedisError, ServerErrorKind};

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

/// Opens connections with short timeouts, for the pool and for the pump.
#[derive(Clone)]
pub(super) struct Connector {
    /// The parsed Redis URL; opening a connection from it is cheap and
    /// touches no network until asked.
    client: Client,
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
}

impl Connector {
    /// Opens one connection whose reads may take up to `read_timeout` (longer
    /// for the pump, which blocks in `XREAD BLOCK`), and notes on the link
    /// whether it could.
    pub(super) fn connect(&self, read_timeout: Duration) -> Result<redis::Connection, RedisError> {
        let opened = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .and_then(|con| {
                con.set_read_timeout(Some(read_timeout))?;
                con.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                Ok(con)
            });
        match &opened {
            Ok(_) => self.link.connected(),
            Err(_) => self.link.lost(),
        }
        opened
    }

    /// Notes that a connection made by this connector was lost, so the next
    /// good connect counts as a reconnect.
    pub(super) fn lost(&self) {
        self.link.lost();
    }
}

impl r2d2::ManageConnection for Connector {
    type Connection = redis::Connection;
    type Error = RedisError;

    fn connect(&self) -> Result<redis::Connection, RedisError> {
        Connector::connect(self, COMMAND_TIMEOUT)
    }

    fn is_valid(&self, con: &mut redis::Connection) -> Result<(), RedisError> {
        redis::cmd("PING").query::<()>(con)
    }

    fn has_broken(&self, con: &mut redis::Connection) -> bool {
        let broken = !con.is_open();
        if broken {
            self.link.lost();
        }
        broken
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
    /// Builds the pool without connecting: the server must start even while
    /// Redis is down, and the pool connects lazily when Redis comes back. Only a
    /// malformed URL fails here.
    pub(super) fn open(url: &str, size: u32) -> StoreResult<Self> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Corrupt(format!("invalid Redis URL {url:?}: {e}")))?;
        let connector = Connector {
            client,
            link: Arc::default(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // A connection that failed is replaced, not re-tested on every checkout.
            .test_on_check_out(false)
            .build_unchecked(connector.clone());
        Ok(Pool { pool, connector })
    }

    /// The connector, for a reader that needs a connection of its own.
    pub(super) fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// Connections opened again after one failed or was lost, since start.
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
    pub(super) fn with_conn<T>(
        &self,
        context: &str,
        repeatable: bool,
        op: impl Fn(&mut redis::Connection) -> Result<T, RedisError>,
    ) -> StoreResult<T> {
        let attempts = if repeatable {
            self.pool.max_size() as usize + 1
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            let mut con = self.checkout()?;
            match op(&mut con) {
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
pub(super) fn classify(context: &str, e: RedisError) -> StoreError {
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
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
}
