//! The storage boundary: comments, likes and the event log, behind one trait.
//!
//! Two implementations: [`redis::RedisStore`] (the real one, where every change is
//! one atomic Lua step) and [`memory::MemoryStore`] (the embedded default, which
//! follows the same path but persists nothing). Handlers and the pump only see
//! [`Store`]; this module knows nothing of HTTP.

pub mod memory;
pub mod redis;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A comment as the API and the `comment` event show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub id: u64,
    pub nickname: String,
    pub content: String,
    pub score: u64,
    /// Milliseconds since the Unix epoch, set by the server when it was posted.
    pub created_at: u64,
}

/// A comment in a listing, with whether the asking visitor has liked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedComment {
    #[serde(flatten)]
    pub comment: Comment,
    pub liked: bool,
}

/// One page of the ranking and the id of the newest event it includes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub comments: Vec<ListedComment>,
    /// Every event with an id up to this one is reflected in `comments`; none after.
    pub last_event_id: u64,
}

/// A comment about to be stored; the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewComment {
    pub nickname: String,
    pub content: String,
    pub created_at: u64,
}

/// Like or unlike: the two directions of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeOp {
    Like,
    Unlike,
}

/// What a like or unlike did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeOutcome {
    pub id: u64,
    pub score: u64,
    /// Whether the visitor likes the comment now.
    pub liked: bool,
    /// False when nothing changed (liking twice, unliking what was not liked).
    pub changed: bool,
}

/// What happened, as recorded in the event log. Ids are small integers, strictly
/// increasing, and the same on every instance sharing one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A score changed; `op` says which way (the seed's `/sse` shows it).
    Like {
        comment: u64,
        score: u64,
        op: LikeOp,
    },
    /// A comment was posted.
    Comment(Comment),
}

/// Events after some id, for a reconnecting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// Every event after the requested id, in order (possibly none).
    Events(Vec<Event>),
    /// The requested id is older than what the log still holds (or newer than
    /// anything that happened): the client must refetch. Carries the newest id.
    Evicted { last_event_id: u64 },
}

/// Failures of the store. Only two kinds matter to callers: the store could not
/// be reached (503, retry later) and everything else (500).
#[derive(Debug)]
pub enum StoreError {
    /// Redis is down, refusing connections or timing out.
    Unavailable(String),
    /// Redis answered something we did not expect; a bug or a foreign key.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Corrupt(why) => write!(f, "store returned unexpected data: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations the server needs. Every change appends its event to the log in
/// the same atomic step, and the pump is the only reader of new events.
pub trait Store: Send + Sync {
    /// A page of the ranking (score desc, then newest first) for one visitor.
    fn snapshot(&self, visitor: &str, limit: usize, offset: usize) -> StoreResult<Snapshot>;
    /// Stores a comment with a fresh unique id and logs a `comment` event.
    fn add_comment(&self, comment: NewComment) -> StoreResult<Comment>;
    /// Likes or unlikes; `Ok(None)` when the comment does not exist (nothing is created).
    fn set_like(&self, comment: u64, visitor: &str, op: LikeOp)
        -> StoreResult<Option<LikeOutcome>>;
    /// Events after `after`, oldest first, for replay (at most `max`).
    fn history(&self, after: u64, max: usize) -> StoreResult<History>;
    /// The id of the newest event (0 when nothing has happened yet).
    fn last_event_id(&self) -> StoreResult<u64>;
    /// Checks that the store answers.
    fn ping(&self) -> StoreResult<()>;
    /// The key that signs visitor cookies, the same for every instance sharing
    /// this store: `candidate` becomes it if the store has none yet.
    fn visitor_key(&self, candidate: &str) -> StoreResult<String>;
    /// A reader for the pump, with its own connection where that matters.
    fn event_reader(&self) -> Box<dyn EventReader>;
    /// A short name for logs and `/healthz`.
    fn name(&self) -> &'static str;
    /// Connections opened again after one failed or was lost, since start (for
    /// `/metrics`); a store without connections has none.
    fn reconnects(&self) -> u64 {
        0
    }
}

/// The pump's view of the event log: block until events after `after` exist.
pub trait EventReader: Send {
    /// Everything after `after` (at most `max`), waiting up to `timeout` for the
    /// first one; an empty vector means the wait timed out.
    fn wait_after(&mut self, after: u64, max: usize, timeout: Duration) -> StoreResult<Vec<Event>>;
}
