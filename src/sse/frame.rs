//! An event to the exact bytes a client receives, in either dialect, and the
//! few fixed frames (`retry:`, heartbeat, `event: viewers`, `event: reset`).
//!
//! The pump renders each event once ([`Batch::new`]) and every writer shares
//! the bytes. [`fold`] decides which of one write's events go out. Knows
//! nothing of sockets, chunking or the store's history.

use std::sync::Arc;

use serde_json::json;

use crate::store::{Event, EventKind, LikeOp};

/// The reconnection delay we suggest to browsers, in milliseconds.
pub const RETRY_MS: u64 = 3000;
/// The heartbeat comment. Its only job is to keep proxies and dead-peer
/// detection busy on an idle stream; EventSource ignores it.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// Which event format a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/events`: `id`, `event: like|comment|remove|locked`, one line of JSON.
    Standard,
    /// The seed's `/sse`: `id` and `data: <comment id>@<POST|DELETE>` for likes
    /// only. The demo's client knows no other frame, so comments, removals
    /// and locks are left out (its ids skip them); its `/commentList` shows
    /// the board as the moderator left it.
    Seed,
}

/// One event already rendered in both dialects; rendered once by the pump and
/// shared by every client through an `Arc<Batch>`.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub id: u64,
    /// For a like, the comment whose absolute score it carries: a later like
    /// of the same comment makes it redundant (see [`fold`]). `None` for
    /// events nothing can replace (comments, removals, locks).
    pub score_of: Option<u64>,
    /// The `/events` frame.
    standard: Vec<u8>,
    /// The seed's `/sse` frame; `None` for events the seed never sent (all but likes).
    seed: Option<Vec<u8>>,
}

impl Encoded {
    pub fn new(event: &Event) -> Self {
        let (name, data) = match &event.kind {
            EventKind::Like { comment, score, .. } => {
                ("like", json!({ "id": comment, "score": score }).to_string())
            }
            EventKind::Comment(c) => ("comment", serde_json::to_string(c).unwrap_or_default()),
            EventKind::Remove { comment } => ("remove", json!({ "id": comment }).to_string()),
            EventKind::Locked(locked) => ("locked", json!({ "locked": locked }).to_string()),
        };
        let standard = format!("id: {}\nevent: {name}\ndata: {data}\n\n", event.id).into_bytes();
        let seed = match &event.kind {
            EventKind::Like { comment, op, .. } => Some(
                format!("id: {}\ndata: {comment}@{}\n\n", event.id, seed_method(*op)).into_bytes(),
            ),
            _ => None,
        };
        // Only a like carries an absolute score that a later like replaces. A
        // removal is never folded away: a like of the same comment after it
        // (impossible while it is hidden, but a restore may come between)
        // does not say the comment went.
        let score_of = match &event.kind {
            EventKind::Like { comment, .. } => Some(*comment),
            _ => None,
        };
        Encoded {
            id: event.id,
            score_of,
            standard,
            seed,
        }
    }

    /// Bytes of its frames, both dialects (what keeping it in memory costs).
    pub fn size(&self) -> usize {
        self.standard.len() + self.seed.as_ref().map_or(0, Vec::len)
    }

    /// The frame for a client speaking `dialect` (empty if it has none).
    pub(crate) fn bytes(&self, dialect: Dialect) -> &[u8] {
        match dialect {
            Dialect::Standard => &self.standard,
            Dialect::Seed => self.seed.as_deref().unwrap_or_default(),
        }
    }
}

/// Appends to `buf` the frames of `events`, one write's worth in id order,
/// leaving out every like that a later like of the same comment in the same
/// write makes redundant.
///
/// On `/events` a like carries the comment's absolute score, so of several
/// likes of one comment in one write only the newest tells the client
/// anything: under a like storm a slow client gets one frame per comment per
/// write, not one per like. What is written still keeps the stream's promises:
/// - ids strictly increase (the survivors keep their order and their ids);
/// - the write ends with the last event's id, so Last-Event-ID covers what
///   was folded: the last event always survives (nothing in the write comes
///   after it), so a client that reconnects from the last id it saw misses
///   nothing, and its scores are the board's.
///
/// Never folded: comment events (`score_of` is `None`), and the seed's `/sse`
/// dialect, whose `member@METHOD` is relative: every one counts.
pub(crate) fn fold(buf: &mut Vec<u8>, events: &[&Encoded], dialect: Dialect) {
    if dialect == Dialect::Seed || events.len() < 2 {
        for event in events {
            buf.extend_from_slice(event.bytes(dialect));
        }
        return;
    }
    // Walk back from the newest: the first like met for a comment is its
    // newest, and every older one is redundant.
    let mut newest_seen = std::collections::HashSet::new();
    let mut keep = vec![true; events.len()];
    for (i, event) in events.iter().enumerate().rev() {
        if let Some(comment) = event.score_of {
            keep[i] = newest_seen.insert(comment);
        }
    }
    for (event, keep) in events.iter().zip(keep) {
        if keep {
            buf.extend_from_slice(event.bytes(dialect));
        }
    }
}

/// The seed's name for a like's direction: the HTTP method its client sent to
/// `/favorite` (`POST` to like, `DELETE` to unlike), which its page expects
/// back in `data: <id>@<method>`.
fn seed_method(op: LikeOp) -> &'static str {
    match op {
        LikeOp::Like => "POST",
        LikeOp::Unlike => "DELETE",
    }
}

/// Events the pump read in one go, in id order; or a viewer count.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<Encoded>,
    /// How many event streams this process holds, from the viewers thread
    /// ([`crate::viewers`]). Sent as `event: viewers` WITHOUT an id: it is
    /// per-process presence, not part of the shared log, so it must never move
    /// a browser's Last-Event-ID (an id-less event leaves it unchanged).
    pub viewers: Option<usize>,
}

impl Batch {
    pub fn new(events: &[Event]) -> Self {
        Batch {
            events: events.iter().map(Encoded::new).collect(),
            viewers: None,
        }
    }

    /// A batch that only carries the current viewer count.
    pub fn viewers(count: usize) -> Self {
        Batch {
            events: Vec::new(),
            viewers: Some(count),
        }
    }
}

/// A message from the pump to every writer.
pub type Message = Arc<Batch>;

/// The `retry:` field, alone in a block so it dispatches no event.
pub fn retry_field(ms: u64) -> Vec<u8> {
    format!("retry: {ms}\n\n").into_bytes()
}

/// Bounds of the delay suggested to a client whose stream we close (shutting
/// down, too slow, over the cap, replay impossible): half to one and a half
/// times [`RETRY_MS`], picked at random for each client.
pub const JITTER_MS: (u64, u64) = (RETRY_MS / 2, RETRY_MS * 3 / 2);

/// A delay within [`JITTER_MS`], different for each call: thousands of
/// clients told to come back must not all come back in the same millisecond.
pub fn jittered_retry_ms() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::Instant::now().elapsed().as_nanos());
    JITTER_MS.0 + h.finish() % (JITTER_MS.1 - JITTER_MS.0 + 1)
}

/// The `retry:` field sent as a stream closes, jittered (see [`JITTER_MS`]).
pub fn closing_retry() -> Vec<u8> {
    retry_field(jittered_retry_ms())
}

/// `event: viewers`: how many event streams this process is serving. No `id:`,
/// so it is neither replayed nor counted in Last-Event-ID.
pub fn viewers_event(count: usize) -> Vec<u8> {
    format!("event: viewers\ndata: {{\"count\":{count}}}\n\n").into_bytes()
}

/// `event: reset`: the requested history is gone; refetch, then continue from `last`.
pub fn reset_event(last_event_id: u64) -> Vec<u8> {
    format!(
        "id: {last_event_id}\nevent: reset\ndata: {{\"last_event_id\":\"{last_event_id}\"}}\n\n"
    )
    .into_bytes()
}

/// A like event, as the tests here and in [`super::stream`] build them.
#[cfg(test)]
pub(crate) fn like(id: u64, comment: u64, score: u64, op: LikeOp) -> Event {
    Event {
        id,
        kind: EventKind::Like { comment, score, op },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Comment;

    /// A like renders to exactly `id`, `event: like` and one line of JSON.
    #[test]
    fn like_frame_bytes() {
        let e = Encoded::new(&like(7, 3, 12, LikeOp::Like));
        assert_eq!(
            e.bytes(Dialect::Standard),
            b"id: 7\nevent: like\ndata: {\"id\":3,\"score\":12}\n\n"
        );
        assert_eq!(e.bytes(Dialect::Seed), b"id: 7\ndata: 3@POST\n\n");
        let u = Encoded::new(&like(8, 3, 11, LikeOp::Unlike));
        assert_eq!(u.bytes(Dialect::Seed), b"id: 8\ndata: 3@DELETE\n\n");
    }

    fn comment(id: u64) -> Event {
        Event {
            id,
            kind: EventKind::Comment(Comment {
                id,
                nickname: "n".into(),
                content: "c".into(),
                score: 0,
                created_at: 0,
            }),
        }
    }

    /// Folds `events` for `dialect` and returns the ids written.
    fn folded_ids(events: &[Event], dialect: Dialect) -> Vec<u64> {
        let encoded: Vec<Encoded> = events.iter().map(Encoded::new).collect();
        let mut buf = Vec::new();
        fold(&mut buf, &encoded.iter().collect::<Vec<_>>(), dialect);
        String::from_utf8(buf)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
            .collect()
    }

    /// Of several likes of one comment in a write only the newest goes out;
    /// ids still rise and the write ends with its last event's id, and a
    /// comment event between them is kept.
    #[test]
    fn fold_keeps_the_newest_like_per_comment() {
        let events = [
            like(10, 1, 1, LikeOp::Like),
            like(11, 2, 1, LikeOp::Like),
            like(12, 1, 2, LikeOp::Like),
            comment(13),
            like(14, 1, 1, LikeOp::Unlike),
            like(15, 2, 2, LikeOp::Like),
            like(16, 1, 2, LikeOp::Like),
        ];
        assert_eq!(folded_ids(&events, Dialect::Standard), vec![13, 15, 16]);
        // The last id is the write's last, whichever comment it belongs to.
        assert_eq!(
            folded_ids(&events[..6], Dialect::Standard),
            vec![13, 14, 15]
        );
        // Comments alone are never folded.
        let comments = [comment(1), comment(2), comment(3)];
        assert_eq!(folded_ids(&comments, Dialect::Standard), vec![1, 2, 3]);
    }

    /// The seed's `/sse` frames are relative (`3@POST`): every one goes out.
    #[test]
    fn fold_leaves_the_seed_dialect_alone() {
        let events: Vec<Event> = (1..=5).map(|i| like(i, 7, i, LikeOp::Like)).collect();
        assert_eq!(folded_ids(&events, Dialect::Seed), vec![1, 2, 3, 4, 5]);
        assert_eq!(folded_ids(&events, Dialect::Standard), vec![5]);
    }

    /// A removal and a lock render to exactly their frames, are never folded,
    /// and the seed's stream leaves them out.
    #[test]
    fn moderation_frames() {
        let remove = Event {
            id: 8,
            kind: EventKind::Remove { comment: 4 },
        };
        let lock = Event {
            id: 10,
            kind: EventKind::Locked(true),
        };
        let unlock = Event {
            id: 11,
            kind: EventKind::Locked(false),
        };
        let e = Encoded::new(&remove);
        assert_eq!(
            e.bytes(Dialect::Standard),
            b"id: 8\nevent: remove\ndata: {\"id\":4}\n\n"
        );
        assert!(e.bytes(Dialect::Seed).is_empty());
        assert_eq!(
            Encoded::new(&lock).bytes(Dialect::Standard),
            b"id: 10\nevent: locked\ndata: {\"locked\":true}\n\n"
        );
        assert_eq!(
            Encoded::new(&unlock).bytes(Dialect::Standard),
            b"id: 11\nevent: locked\ndata: {\"locked\":false}\n\n"
        );
        let events = [
            like(7, 4, 2, LikeOp::Like),
            remove,
            like(9, 4, 3, LikeOp::Like),
            lock,
            unlock,
        ];
        assert_eq!(
            folded_ids(&events, Dialect::Standard),
            vec![8, 9, 10, 11],
            "the older like goes, the removal and the locks stay"
        );
    }

    /// A comment's text stays on one `data:` line even when it holds newlines:
    /// JSON escapes them, so a comment can never inject fields.
    #[test]
    fn comment_frame_is_one_data_line() {
        let c = Comment {
            id: 1,
            nickname: "x".into(),
            content: "a\n\nid: 99\ndata: evil".into(),
            score: 0,
            created_at: 5,
        };
        let e = Encoded::new(&Event {
            id: 2,
            kind: EventKind::Comment(c),
        });
        let text = String::from_utf8(e.bytes(Dialect::Standard).to_vec()).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("data:")).count(),
            1,
            "{text}"
        );
        assert!(!text.contains("\nid: 99"), "{text}");
        assert!(text.starts_with("id: 2\nevent: comment\ndata: {\"id\":1,"));
        assert!(text.ends_with("}\n\n"));
        // The seed's stream only carries likes.
        assert!(e.bytes(Dialect::Seed).is_empty());
    }
}
