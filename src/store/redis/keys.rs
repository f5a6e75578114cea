//! The key layout of the Redis store: every key name it reads or writes, made
//! from one prefix. The Lua scripts get these names as KEYS; nothing else in
//! the crate builds a key.
//!
//! Each board's keys sit inside one hash tag, so they share one Redis Cluster
//! slot and one script may touch them all; different boards land on different
//! slots, which is how a cluster spreads boards over its nodes. The default
//! board `main` keeps the tag `{P}` (P is `--key-prefix`) that every key had
//! before boards existed, so a Redis written by an older likeboard is read in
//! place as the `main` board, with no migration. Any other board `B` has the
//! tag `{P:B}` (a slug holds no `{`, `}` or `:`, so tags cannot collide).
//!
//! | key                        | type   | holds                                      |
//! |----------------------------|--------|--------------------------------------------|
//! | `T:comments`               | hash   | member -> `{"nickname","content","created_at"}` |
//! | `T:ranking`                | zset   | member scored by its number of likes       |
//! | `T:likers:<member>`        | set    | visitors who like that comment             |
//! | `T:liked:<visitor>`        | set    | members of this board that visitor likes (for `liked`) |
//! | `T:comment_seq`            | string | last comment id handed out on this board   |
//! | `T:event_seq`              | string | last event id of this board                |
//! | `T:events`                 | stream | the board's last N events, `XADD MAXLEN N`, ids `0-<seq>` |
//! | `{P}:boards`               | zset   | every board, scored by its number of comments |
//! | `{P}:visitor_key`          | string | the key that signs visitor cookies (`visitor.rs`) |
//!
//! (`T` is the board's tag.) And one pub/sub channel, not a key: `{P}:feed`,
//! where every script publishes the event it logged, for every instance's
//! pump. A classic `PUBLISH` reaches the subscribers of every node of a
//! cluster, so one subscription anywhere hears every board.
//!
//! A member is the comment id zero-padded to 12 digits: equal scores then sort
//! newest first in `ZREVRANGEBYSCORE`, with no second key to keep in step.

use crate::board::Board;

/// The site-wide names for one prefix, computed once.
#[derive(Clone)]
pub(super) struct Keys {
    /// `--key-prefix`, to make each board's tag.
    prefix: String,
    pub(super) boards: String,
    pub(super) visitor_key: String,
    /// The pub/sub channel of new events (not a key).
    pub(super) feed: String,
}

/// The key names of one board, each a full key name; the table above says
/// what each holds.
pub(super) struct BoardKeys {
    /// The board's hash tag: kept to build the per-comment and per-visitor keys.
    tag: String,
    pub(super) comments: String,
    pub(super) ranking: String,
    pub(super) comment_seq: String,
    pub(super) event_seq: String,
    pub(super) events: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Keys {
            prefix: prefix.to_string(),
            boards: format!("{tag}:boards"),
            visitor_key: format!("{tag}:visitor_key"),
            feed: format!("{tag}:feed"),
        }
    }

    /// The keys of `board`.
    pub(super) fn board(&self, board: &Board) -> BoardKeys {
        let tag = if board.is_main() {
            format!("{{{}}}", self.prefix)
        } else {
            format!("{{{}:{board}}}", self.prefix)
        };
        BoardKeys {
            comments: format!("{tag}:comments"),
            ranking: format!("{tag}:ranking"),
            comment_seq: format!("{tag}:comment_seq"),
            event_seq: format!("{tag}:event_seq"),
            events: format!("{tag}:events"),
            tag,
        }
    }
}

impl BoardKeys {
    /// The set of visitors who like the comment `member`.
    pub(super) fn likers(&self, member: &str) -> String {
        format!("{}:likers:{member}", self.tag)
    }

    /// The set of this board's members that `visitor` likes.
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

    /// A board's keys share one hash tag, so one Lua script's keys live in one
    /// cluster slot; `main` keeps the tag keys had before boards, so an older
    /// Redis reads in place; other boards get tags of their own.
    #[test]
    fn keys_share_a_hash_tag_per_board() {
        let keys = Keys::new("lb");
        let main = keys.board(&Board::main());
        for key in [
            &main.comments,
            &main.ranking,
            &main.events,
            &main.likers("000000000001"),
            &keys.boards,
        ] {
            assert!(key.starts_with("{lb}:"), "{key}");
        }
        let other = keys.board(&Board::parse("post-7").unwrap());
        for key in [&other.comments, &other.event_seq, &other.liked("c:ab")] {
            assert!(key.starts_with("{lb:post-7}:"), "{key}");
        }
    }
}
