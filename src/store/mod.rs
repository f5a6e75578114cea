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

use crate::board::Board;

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

/// A board in the list of boards: its name and how many comments it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoardInfo {
    pub board: String,
    pub comments: u64,
}

/// New events from the log of every board, as the pump's reader saw them.
#[derive(Debug, Default)]
pub struct Feed {
    /// Events with their board, in the order each board logged them (two
    /// boards' events may interleave in any order).
    pub events: Vec<(Board, Event)>,
    /// The reader has (re)connected since it was last asked: events logged
    /// meanwhile may never arrive, so the pump must look at each board's log
    /// itself (see `pump.rs`).
    pub resync: bool,
}

/// Failures of the store. Two kinds matter to callers: the store could not be
/// reached (503, retry later) and everything else (500); and one refusal, a
/// new board beyond `--max-boards` (409).
#[derive(Debug)]
pub enum StoreError {
    /// A comment would make a new board, and there are `max` already.
    TooManyBoards { max: usize },
    /// Redis is down, refusing connections or timing out.
    Unavailable(String),
    /// Redis answered something we did not expect; a bug or a foreign key.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::TooManyBoards { max } => {
                write!(
                    f,
                    "there are {max} boards already, the most this server keeps"
                )
            }
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Corrupt(why) => write!(f, "store returned unexpected data: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations the server needs, each on one board. Every change appends
/// its event to that board's log in the same atomic step, and the pump is the
/// only reader of new events. A board exists from its first comment; reading
/// or streaming one that does not is reading an empty board.
pub trait Store: Send + Sync {
    /// A page of the ranking (score desc, then newest first) for one visitor.
    fn snapshot(
        &self,
        board: &Board,
        visitor: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Snapshot>;
    /// Stores a comment with a fresh unique id (per board) and logs a
    /// `comment` event. The first comment of a board makes the board, unless
    /// there are `--max-boards` already ([`StoreError::TooManyBoards`]).
    fn add_comment(&self, board: &Board, comment: NewComment) -> StoreResult<Comment>;
    /// Likes or unlikes; `Ok(None)` when the comment does not exist (nothing is created).
    fn set_like(
        &self,
        board: &Board,
        comment: u64,
        visitor: &str,
        op: LikeOp,
    ) -> StoreResult<Option<LikeOutcome>>;
    /// Events of `board` after `after`, oldest first, for replay (at most `max`).
    fn history(&self, board: &Board, after: u64, max: usize) -> StoreResult<History>;
    /// The id of the newest event of `board` (0 when nothing has happened yet).
    fn last_event_id(&self, board: &Board) -> StoreResult<u64>;
    /// The boards, most comments first (at most `limit`), and how many there are.
    fn boards(&self, limit: usize) -> StoreResult<(Vec<BoardInfo>, u64)>;
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

/// The pump's view of the event logs: block until any board logs something.
pub trait EventReader: Send {
    /// New events of every board (at most about `max`), waiting up to
    /// `timeout` for the first; an empty feed means the wait timed out.
    fn wait(&mut self, max: usize, timeout: Duration) -> StoreResult<Feed>;
}
