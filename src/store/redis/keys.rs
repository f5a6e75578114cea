//! The key layout of the Redis store: every key name it reads or writes, made
//! from one prefix. The Lua scripts get these names as KEYS; nothing else in
//! the crate builds a key.
//!
//! All keys sit inside one hash tag `{P}` (P is `--key-prefix`), so they share
//! one Redis Cluster slot and one script may touch them all:
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
//! | `{P}:visitor_key`          | string | the key that signs visitor cookies (`visitor.rs`) |
//!
//! A member is the comment id zero-padded to 12 digits: equal scores then sort
//! newest first in `ZREVRANGEBYSCORE`, with no second key to keep in step.

/// The key names for one prefix, computed once. Each field is a full key name;
/// the table above says what it holds.
#[derive(Clone)]
pub(super) struct Keys {
    /// `{P}`, the hash tag: kept to build the per-comment and per-visitor keys.
    tag: String,
    pub(super) comments: String,
    pub(super) ranking: String,
    pub(super) comment_seq: String,
    pub(super) event_seq: String,
    pub(super) events: String,
    pub(super) visitor_key: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Keys {
            comments: format!("{tag}:comments"),
            ranking: format!("{tag}:ranking"),
            comment_seq: format!("{tag}:comment_seq"),
            event_seq: format!("{tag}:event_seq"),
            visitor_key: format!("{tag}:visitor_key"),
            events: format!("{tag}:events"),
            tag,
        }
    }

    /// The set of visitors who like the comment `member`.
    pub(super) fn likers(&self, member: &str) -> String {
        format!("{}:likers:{member}", self.tag)
    }

    /// The set of members that `visitor` likes.
    pub(super) fn liked(&self, visitor: &str) -> String {
        format!("{}:liked:{visitor}", self.tag)
    }
}

/// A comment's member: its id zero-padded to 12 digits (the scripts pad the same way).
pub(super) fn member(id: u64) -> String {
    format!("{id:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
