//! Reading events as the scripts write them: stream entries (from `XRANGE`,
//! in the store's `history`) and the JSON they publish on the feed channel
//! (read by `feed.rs`). Both carry the same fields, so one function turns
//! those fields into an [`Event`].

use redis::Value;
use serde_json::Value as Json;

use super::as_string;
use crate::board::Board;
use crate::store::{Comment, Event, EventKind, LikeOp, StoreError, StoreResult};

/// Parses stream entries `[[id, [field, value, ...]], ...]` into events (from
/// `XRANGE`, in the store's `history`).
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
    event_of(seq, field).map_err(|why| bad(&why))
}

/// One published event: `{"board", "id", "type", "comment", "score", ...}`,
/// with the board it belongs to.
pub(super) fn parse_published(payload: &[u8]) -> StoreResult<(Board, Event)> {
    let bad = |why: &str| StoreError::Corrupt(format!("published event: {why}"));
    let json: Json = serde_json::from_slice(payload).map_err(|e| bad(&e.to_string()))?;
    let text = |name: &str| json.get(name).and_then(Json::as_str);
    let board = Board::parse(text("board").unwrap_or_default()).map_err(|e| bad(&e))?;
    let id = json
        .get("id")
        .and_then(Json::as_u64)
        .ok_or_else(|| bad("id"))?;
    // Numbers arrive as JSON numbers or (created_at, the member) as text.
    let field = |name: &str| match json.get(name)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let event = event_of(id, field).map_err(|why| bad(&why))?;
    Ok((board, event))
}

/// The event with id `id` whose fields `field` gives; the missing or bad field's
/// name otherwise. Every event has a `type`; likes, comments and removals name
/// their comment (`comment`, the member); likes and comments carry a `score`;
/// a lock carries `locked` (`1` or `0`).
fn event_of(id: u64, field: impl Fn(&str) -> Option<String>) -> Result<Event, String> {
    let bad = |name: &str| name.to_string();
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let comment = || number("comment").ok_or_else(|| bad("comment"));
    let score = || number("score").ok_or_else(|| bad("score"));
    let kind = match field("type").as_deref() {
        Some("like") => EventKind::Like {
            comment: comment()?,
            score: score()?,
            op: LikeOp::Like,
        },
        Some("unlike") => EventKind::Like {
            comment: comment()?,
            score: score()?,
            op: LikeOp::Unlike,
        },
        Some("comment") => EventKind::Comment(Comment {
            id: comment()?,
            nickname: field("nickname").ok_or_else(|| bad("nickname"))?,
            content: field("content").ok_or_else(|| bad("content"))?,
            score: score()?,
            created_at: number("created_at").ok_or_else(|| bad("created_at"))?,
        }),
        Some("remove") => EventKind::Remove {
            comment: comment()?,
        },
        Some("locked") => match field("locked").as_deref() {
            Some("1") => EventKind::Locked(true),
            Some("0") => EventKind::Locked(false),
            _ => return Err(bad("locked")),
        },
        _ => return Err(bad("type")),
    };
    Ok(Event { id, kind })
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

    /// A published comment parses into its board and event; a bad board name
    /// or a missing field is an error, not a panic.
    #[test]
    fn parses_published_events() {
        let (board, event) = parse_published(
            br#"{"board":"post-1","id":5,"type":"comment","comment":"000000000002","score":0,"nickname":"ann","content":"hi","created_at":"17"}"#,
        )
        .unwrap();
        assert_eq!(board.as_str(), "post-1");
        assert_eq!(event.id, 5);
        assert!(matches!(
            event.kind,
            EventKind::Comment(Comment {
                id: 2,
                created_at: 17,
                ..
            })
        ));
        for bad in [
            &br#"{"board":"A","id":5,"type":"like","comment":"1","score":1}"#[..],
            br#"{"board":"a","type":"like","comment":"1","score":1}"#,
            br#"{"board":"a","id":5,"type":"like","score":1}"#,
            b"not json",
        ] {
            assert!(matches!(parse_published(bad), Err(StoreError::Corrupt(_))));
        }
    }

    /// The moderator's events parse from a stream entry and from the feed
    /// alike: `remove` names its comment, `locked` says which way.
    #[test]
    fn parses_moderation_events() {
        let entry = Value::Array(vec![
            bulk("0-9"),
            Value::Array(vec![
                bulk("type"),
                bulk("remove"),
                bulk("comment"),
                bulk("000000000004"),
            ]),
        ]);
        assert_eq!(
            parse_entry(entry).unwrap().kind,
            EventKind::Remove { comment: 4 }
        );
        let (_, event) =
            parse_published(br#"{"board":"main","id":10,"type":"locked","locked":"1"}"#).unwrap();
        assert_eq!((event.id, event.kind), (10, EventKind::Locked(true)));
        let (_, event) =
            parse_published(br#"{"board":"main","id":11,"type":"locked","locked":"0"}"#).unwrap();
        assert_eq!(event.kind, EventKind::Locked(false));
        for bad in [
            &br#"{"board":"main","id":12,"type":"locked","locked":"yes"}"#[..],
            br#"{"board":"main","id":12,"type":"remove"}"#,
        ] {
            assert!(matches!(parse_published(bad), Err(StoreError::Corrupt(_))));
        }
    }

    /// An entry whose id is not `0-N` (written by something else) is an error, not a panic.
    #[test]
    fn rejects_foreign_entry() {
        let entry = Value::Array(vec![bulk("1700000000000-0"), Value::Array(vec![])]);
        assert!(matches!(parse_entry(entry), Err(StoreError::Corrupt(_))));
    }
}
