//! The Redis store: the only module that imports `redis`.
//!
//! Every change is ONE Lua script: it updates the comment hash, the ranking
//! (a sorted set), the liker sets, and appends the resulting event to a capped
//! stream, atomically. Event ids are a counter inside Redis and double as the
//! stream entry ids (`0-N`), so every instance sees the same small integers.
//!
//! Keys (all inside one hash tag, so they share a Redis Cluster slot):
//!
//! | key                        | type   | holds                                      |
//! |----------------------------|--------|--------------------------------------------|
//! | `{P}:comments`             | hash   | member -> `{"nickname","content","created_at"}` |
//! | `{P}:ranking`              | zset   | member scored by its number of likes       |
//! | `{P}:likers:<member>`      | set    | visitors who like that comment             |
//! | `{P}:liked:<visitor>`      | set    | members that visitor likes (for `liked`)   |
//! | `{P}:comment_seq`          | string | last comment id handed out                 |
//! | `{P}:event_seq`            | string | last event id                              |
//! | `{P}:events`               | stream | the last N events, `XADD MAXLEN N`, ids `0-<seq>` |
//!
//! The stream is trimmed exactly (`MAXLEN N`, not `MAXLEN ~ N`), so the replay
//! history is exactly the newest `--stream-len` events, as in the memory store.
//! `~` only ever drops whole macro-nodes (up to 100 entries each), so with a
//! small N the stream could hold ten times more than asked, and whether a
//! reconnect replays or resets would depend on node boundaries. Exact trimming
//! costs little here: each XADD marks one entry of the oldest node deleted
//! (a walk over at most one node), and the node is freed once it is empty.
//! A member is the comment id zero-padded to 12 digits: equal scores then sort
//! newest first in `ZREVRANGEBYSCORE`, with no second key to keep in step.

mod conn;

use std::time::Duration;

use redis::{RedisError, Script, Value};

use conn::{classify, Connector, Pool, COMMAND_TIMEOUT};

use super::{
    Comment, Event, EventKind, EventReader, History, LikeOp, LikeOutcome, ListedComment,
    NewComment, Snapshot, Store, StoreError, StoreResult,
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

/// The key names for one prefix, computed once.
#[derive(Clone)]
struct Keys {
    tag: String,
    comments: String,
    ranking: String,
    comment_seq: String,
    event_seq: String,
    events: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Keys {
            comments: format!("{tag}:comments"),
            ranking: format!("{tag}:ranking"),
            comment_seq: format!("{tag}:comment_seq"),
            event_seq: format!("{tag}:event_seq"),
            events: format!("{tag}:events"),
            tag,
        }
    }
    fn likers(&self, member: &str) -> String {
        format!("{}:likers:{member}", self.tag)
    }
    fn liked(&self, visitor: &str) -> String {
        format!("{}:liked:{visitor}", self.tag)
    }
}

fn member(id: u64) -> String {
    format!("{id:012}")
}

/// The Redis-backed store. Cheap to share: the pool is internally synchronized.
pub struct RedisStore {
    /// The pooled connections requests run on, and the connector the pump's
    /// reader opens its own connection with.
    pool: Pool,
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

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(StreamReader {
            connector: self.pool.connector(),
            stream: self.keys.events.clone(),
            con: None,
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn reconnects(&self) -> u64 {
        self.pool.reconnects()
    }
}

/// The pump's reader: its own connection (never a pooled one, since it blocks
/// in `XREAD BLOCK` for seconds), reopened after any failure.
struct StreamReader {
    connector: Connector,
    stream: String,
    con: Option<redis::Connection>,
}

impl EventReader for StreamReader {
    fn wait_after(&mut self, after: u64, max: usize, timeout: Duration) -> StoreResult<Vec<Event>> {
        if self.con.is_none() {
            // The socket must outwait the BLOCK, or every quiet period is an error.
            let read_timeout = timeout + COMMAND_TIMEOUT;
            let con = self
                .connector
                .connect(read_timeout)
                .map_err(|e| classify("pump connect", e))?;
            self.con = Some(con);
        }
        let con = self.con.as_mut().expect("connection was just set");
        let reply: RedisResultValue = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(timeout.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(format!("0-{after}"))
            .query(con);
        match reply {
            Ok(Value::Nil) => Ok(Vec::new()),
            Ok(Value::Array(streams)) => {
                let mut events = Vec::new();
                for stream in streams {
                    // Each stream is [name, entries].
                    if let Value::Array(mut pair) = stream {
                        if pair.len() == 2 {
                            events.extend(parse_entries(pair.remove(1))?);
                        }
                    }
                }
                Ok(events)
            }
            Ok(other) => Err(StoreError::Corrupt(format!(
                "unexpected XREAD reply {other:?}"
            ))),
            Err(e) => {
                // Whatever went wrong, this connection is no longer trusted.
                self.con = None;
                self.connector.lost();
                Err(classify("pump read", e))
            }
        }
    }
}

type RedisResultValue = Result<Value, RedisError>;

/// Parses stream entries `[[id, [field, value, ...]], ...]` into events.
fn parse_entries(value: Value) -> StoreResult<Vec<Event>> {
    let entries = match value {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(StoreError::Corrupt(format!("stream entries: {other:?}"))),
    };
    entries.into_iter().map(parse_entry).collect()
}

fn parse_entry(entry: Value) -> StoreResult<Event> {
    let bad = |why: &str| StoreError::Corrupt(format!("stream entry: {why}"));
    let Value::Array(parts) = entry else {
        return Err(bad("not an array"));
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return Err(bad("not [id, fields]"));
    };
    let id = as_string(id).ok_or_else(|| bad("id"))?;
    let seq = id
        .strip_prefix("0-")
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| bad("id is not 0-N"))?;
    let field = |name: &str| -> Option<String> {
        fields
            .chunks(2)
            .find(|kv| as_string(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1))
            .and_then(as_string)
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let comment = number("comment").ok_or_else(|| bad("comment"))?;
    let score = number("score").ok_or_else(|| bad("score"))?;
    let kind = match field("type").as_deref() {
        Some("like") => EventKind::Like {
            comment,
            score,
            op: LikeOp::Like,
        },
        Some("unlike") => EventKind::Like {
            comment,
            score,
            op: LikeOp::Unlike,
        },
        Some("comment") => EventKind::Comment(Comment {
            id: comment,
            nickname: field("nickname").ok_or_else(|| bad("nickname"))?,
            content: field("content").ok_or_else(|| bad("content"))?,
            score,
            created_at: number("created_at").ok_or_else(|| bad("created_at"))?,
        }),
        _ => return Err(bad("type")),
    };
    Ok(Event { id: seq, kind })
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

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        // ZSCORE answers "3" (or "3.0" on some servers); scores are whole numbers.
        other => as_string(other).and_then(|s| s.split('.').next()?.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A like entry parses into its event, with the stream id's sequence as the event id.
    #[test]
    fn parses_like_entry() {
        let entry = Value::Array(vec![
            bulk("0-42"),
            Value::Array(vec![
                bulk("type"),
                bulk("unlike"),
                bulk("comment"),
                bulk("000000000007"),
                bulk("score"),
                bulk("3"),
            ]),
        ]);
        let event = parse_entry(entry).unwrap();
        assert_eq!(event.id, 42);
        assert_eq!(
            event.kind,
            EventKind::Like {
                comment: 7,
                score: 3,
                op: LikeOp::Unlike
            }
        );
    }

    /// An entry whose id is not `0-N` (written by something else) is an error, not a panic.
    #[test]
    fn rejects_foreign_entry() {
        let entry = Value::Array(vec![bulk("1700000000000-0"), Value::Array(vec![])]);
        assert!(matches!(parse_entry(entry), Err(StoreError::Corrupt(_))));
    }

    /// Keys share one hash tag, so one Lua script's keys live in one cluster slot.
    #[test]
    fn keys_share_a_hash_tag() {
        let keys = Keys::new("board");
        for key in [
            &keys.comments,
            &keys.ranking,
            &keys.events,
            &keys.likers("000000000001"),
        ] {
            assert!(key.starts_with("{board}:"), "{key}");
        }
    }
}
