//! The Redis store: [`RedisStore`], the real [`Store`]. The files under
//! `store/redis/` are the only ones in the crate that import `redis`.
//!
//! Every change is ONE Lua script: it updates the comment hash, the ranking
//! (a sorted set), the liker sets, and appends the resulting event to a capped
//! stream, atomically. Event ids are a counter inside Redis and double as the
//! stream entry ids (`0-N`), so every instance sees the same small integers.
//!
//! Layout of this folder:
//!
//! - `mod.rs` (here): the store, its `impl Store`, and reading its replies.
//! - `keys.rs`: the key layout, one table of every key and what it holds.
//! - `conn.rs`: the r2d2 pool, timeouts, retry on a dead pooled connection,
//!   and which Redis failures are a 503.
//! - `stream.rs`: the pump's `XREAD BLOCK` reader and stream entry parsing.
//! - `add_comment.lua`, `set_like.lua`, `snapshot.lua`: the scripts, each with
//!   a header giving what it does atomically, its KEYS and ARGV.
//!
//! The stream is trimmed exactly (`MAXLEN N`, not `MAXLEN ~ N`), so the replay
//! history is exactly the newest `--stream-len` events, as in the memory store.
//! `~` only ever drops whole macro-nodes (up to 100 entries each), so with a
//! small N the stream could hold ten times more than asked, and whether a
//! reconnect replays or resets would depend on node boundaries. Exact trimming
//! costs little here: each XADD marks one entry of the oldest node deleted
//! (a walk over at most one node), and the node is freed once it is empty.

mod conn;
mod keys;
mod stream;

use redis::{Script, Value};

use conn::Pool;
use keys::{member, Keys};
use stream::{parse_entries, StreamReader};

use super::{
    Comment, EventReader, History, LikeOp, LikeOutcome, ListedComment, NewComment, Snapshot, Store,
    StoreError, StoreResult,
};

// The three Lua scripts, each in its own file beside this one so that Redis
// users can read them (and the bench can load the very same text). Each file
// starts with what it does atomically, its KEYS and ARGV, and what it returns.

/// Lua: add a comment and log its event. Returns the new id.
const ADD_COMMENT: &str = include_str!("add_comment.lua");
/// Lua: like or unlike, and log the event when something changed.
/// Returns {exists, changed, score}.
const SET_LIKE: &str = include_str!("set_like.lua");
/// Lua: one page of the ranking for one visitor, and the newest event id, read
/// atomically so that the snapshot and its `last_event_id` agree.
const SNAPSHOT: &str = include_str!("snapshot.lua");

/// The Redis-backed store. Cheap to share: the pool is internally synchronized.
pub struct RedisStore {
    /// The pooled connections requests run on, and the connector the pump's
    /// reader opens its own connection with.
    pool: Pool,
    /// Every key name, made once from the prefix (the layout is in `keys.rs`).
    keys: Keys,
    /// How many events the stream keeps: every XADD trims it to exactly this.
    stream_len: u64,
    // Each `Script` keeps its SHA1: calls go out as EVALSHA, and the body is
    // sent only when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).
    add_comment: Script,
    set_like: Script,
    snapshot: Script,
}

impl RedisStore {
    /// Builds the store without connecting: the server must start even while
    /// Redis is down, and the pool connects lazily when Redis comes back.
    pub fn open(url: &str, prefix: &str, stream_len: u64, pool_size: u32) -> StoreResult<Self> {
        Ok(RedisStore {
            pool: Pool::open(url, pool_size)?,
            keys: Keys::new(prefix),
            stream_len,
            add_comment: Script::new(ADD_COMMENT),
            set_like: Script::new(SET_LIKE),
            snapshot: Script::new(SNAPSHOT),
        })
    }
}

impl Store for RedisStore {
    fn snapshot(&self, visitor: &str, limit: usize, offset: usize) -> StoreResult<Snapshot> {
        let reply: Vec<Value> = self.pool.with_conn("snapshot", true, |con| {
            self.snapshot
                .key(&self.keys.comments)
                .key(&self.keys.ranking)
                .key(self.keys.liked(visitor))
                .key(&self.keys.event_seq)
                .arg(offset)
                .arg(limit)
                .invoke(con)
        })?;
        let mut values = reply.into_iter();
        let last_event_id = values
            .next()
            .and_then(|v| as_u64(&v))
            .ok_or_else(|| StoreError::Corrupt("snapshot without an event id".into()))?;
        let rest: Vec<Value> = values.collect();
        let mut comments = Vec::with_capacity(rest.len() / 4);
        for row in rest.chunks(4) {
            let [member, json, score, liked] = row else {
                return Err(StoreError::Corrupt(
                    "snapshot row of the wrong length".into(),
                ));
            };
            let id = as_u64(member).ok_or_else(|| StoreError::Corrupt("bad member".into()))?;
            let stored = parse_stored(id, &as_string(json).unwrap_or_default())?;
            let comment = Comment {
                score: as_u64(score).unwrap_or(0),
                ..stored
            };
            comments.push(ListedComment {
                comment,
                liked: as_u64(liked) == Some(1),
            });
        }
        Ok(Snapshot {
            comments,
            last_event_id,
        })
    }

    fn add_comment(&self, new: NewComment) -> StoreResult<Comment> {
        // Not repeatable: a retry after a lost reply would post the comment twice.
        let id: u64 = self.pool.with_conn("add comment", false, |con| {
            self.add_comment
                .key(&self.keys.comments)
                .key(&self.keys.ranking)
                .key(&self.keys.comment_seq)
                .key(&self.keys.event_seq)
                .key(&self.keys.events)
                .arg(&new.nickname)
                .arg(&new.content)
                .arg(new.created_at)
                .arg(self.stream_len)
                .invoke(con)
        })?;
        Ok(Comment {
            id,
            nickname: new.nickname,
            content: new.content,
            score: 0,
            created_at: new.created_at,
        })
    }

    fn set_like(&self, id: u64, visitor: &str, op: LikeOp) -> StoreResult<Option<LikeOutcome>> {
        let m = member(id);
        // Repeatable: liking twice counts once, so a retry changes nothing twice.
        let (exists, changed, score): (u8, u8, u64) = self.pool.with_conn("like", true, |con| {
            self.set_like
                .key(&self.keys.comments)
                .key(&self.keys.ranking)
                .key(self.keys.likers(&m))
                .key(self.keys.liked(visitor))
                .key(&self.keys.event_seq)
                .key(&self.keys.events)
                .arg(&m)
                .arg(visitor)
                .arg(match op {
                    LikeOp::Like => "like",
                    LikeOp::Unlike => "unlike",
                })
                .arg(self.stream_len)
                .invoke(con)
        })?;
        if exists == 0 {
            return Ok(None);
        }
        Ok(Some(LikeOutcome {
            id,
            score,
            liked: op == LikeOp::Like,
            changed: changed == 1,
        }))
    }

    fn history(&self, after: u64, max: usize) -> StoreResult<History> {
        // One MULTI: the newest id, the oldest entry still kept, and the entries
        // after `after`, all from the same instant.
        let (seq, oldest, entries): (Option<u64>, Value, Value) =
            self.pool.with_conn("history", true, |con| {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(&self.keys.event_seq)
                    .cmd("XRANGE")
                    .arg(&self.keys.events)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XRANGE")
                    .arg(&self.keys.events)
                    .arg(format!("0-{}", after.saturating_add(1)))
                    .arg("+")
                    .arg("COUNT")
                    .arg(max.max(1))
                    .query(con)
            })?;
        let last_event_id = seq.unwrap_or(0);
        let oldest_kept = parse_entries(oldest)?
            .first()
            .map_or(last_event_id + 1, |e| e.id);
        if after > last_event_id || after + 1 < oldest_kept {
            return Ok(History::Evicted { last_event_id });
        }
        Ok(History::Events(parse_entries(entries)?))
    }

    fn last_event_id(&self) -> StoreResult<u64> {
        let seq: Option<u64> = self.pool.with_conn("last event id", true, |con| {
            redis::cmd("GET").arg(&self.keys.event_seq).query(con)
        })?;
        Ok(seq.unwrap_or(0))
    }

    fn ping(&self) -> StoreResult<()> {
        self.pool
            .with_conn("ping", true, |con| redis::cmd("PING").query::<()>(con))
    }

    fn visitor_key(&self, candidate: &str) -> StoreResult<String> {
        // SET NX then GET, repeatable: the first instance's candidate wins and
        // every instance (and every restart) reads the same key afterwards.
        self.pool.with_conn("visitor key", true, |con| {
            redis::cmd("SET")
                .arg(&self.keys.visitor_key)
                .arg(candidate)
                .arg("NX")
                .query::<()>(con)?;
            redis::cmd("GET").arg(&self.keys.visitor_key).query(con)
        })
    }

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(StreamReader::new(
            self.pool.connector(),
            self.keys.events.clone(),
        ))
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn reconnects(&self) -> u64 {
        self.pool.reconnects()
    }
}

/// A comment as stored in the hash: `{"nickname","content","created_at"}`.
fn parse_stored(id: u64, json: &str) -> StoreResult<Comment> {
    #[derive(serde::Deserialize)]
    struct Stored {
        nickname: String,
        content: String,
        created_at: String,
    }
    let s: Stored = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("comment {id}: {e}")))?;
    Ok(Comment {
        id,
        nickname: s.nickname,
        content: s.content,
        score: 0,
        created_at: s.created_at.parse().unwrap_or(0),
    })
}

/// A reply value as text (bulk, simple or integer); `None` for anything else.
fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A reply value as a whole number, from an integer or its decimal text.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        // ZSCORE answers "3" (or "3.0" on some servers); scores are whole numbers.
        other => as_string(other).and_then(|s| s.split('.').next()?.parse().ok()),
    }
}
