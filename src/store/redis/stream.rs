//! The pump's view of the Redis event log: a [`StreamReader`] that waits in
//! `XREAD BLOCK` on its own connection, and the parsing of stream entries into
//! [`Event`]s (shared with the store's `history`). Only the pump thread reads
//! through it; requests never wait here.

use std::time::Duration;

use redis::{RedisResult, Value};

use super::as_string;
use super::conn::{classify, Connector, COMMAND_TIMEOUT};
use crate::store::{Comment, Event, EventKind, EventReader, LikeOp, StoreError, StoreResult};

/// The pump's reader: its own connection (never a pooled one, since it blocks
/// in `XREAD BLOCK` for seconds), reopened after any failure.
pub(super) struct StreamReader {
    /// Opens the reader's connection, and is told when it is lost (for the
    /// reconnect count the pool shares).
    connector: Connector,
    /// The events stream's key, `{P}:events`.
    stream: String,
    /// The open connection; `None` before the first read and after a failure,
    /// so the next read connects afresh.
    con: Option<redis::Connection>,
}

impl StreamReader {
    /// A reader of `stream` that connects on its first read.
    pub(super) fn new(connector: Connector, stream: String) -> Self {
        StreamReader {
            connector,
            stream,
            con: None,
        }
    }
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
        let reply: RedisResult<Value> = redis::cmd("XREAD")
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

/// Parses stream entries `[[id, [field, value, ...]], ...]` into events (from
/// `XREAD` here, from `XRANGE` in the store's `history`).
pub(super) fn parse_entries(value: Value) -> StoreResult<Vec<Event>> {
    let entries = match value {
        Value::Array(entries) => entries,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(StoreError::Corrupt(format!("stream entries: {other:?}"))),
    };
    entries.into_iter().map(parse_entry).collect()
}

/// One entry `[0-N, [field, value, ...]]`; an id not of the form `0-N` was not
/// written by our scripts and is an error.
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
}
