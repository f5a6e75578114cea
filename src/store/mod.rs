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
    /// Whether the board is locked (nobody may comment or like), as of the same instant.
    pub locked: bool,
}

/// A comment about to be stored; the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewComment {
    pub nickname: String,
    pub content: String,
    pub created_at: u64,
    /// The visitor id of whoever posted it (`c:<cookie id>` or `ip:<address>`).
    /// Kept with the comment so a moderator can block its author; never shown
    /// in any listing, event or page.
    pub author: String,
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
    /// A comment was posted, or a hidden one restored (with its score).
    Comment(Comment),
    /// A comment left the board: a moderator hid or deleted it.
    Remove { comment: u64 },
    /// A moderator locked (`true`) or unlocked (`false`) the board.
    Locked(bool),
}

/// What a moderator does to one board; each is one atomic step in the store
/// that also logs its events (see [`Store::moderate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take a comment off the board (its likes are kept for a restore): `remove`.
    Hide(u64),
    /// Put a hidden comment back where its score ranks it: `comment`.
    Restore(u64),
    /// Remove a comment, hidden or not, with its likes, for good: `remove`.
    Delete(u64),
    /// Hide every visible comment this visitor wrote on the board: a `remove` each.
    HideAllBy(String),
    /// Lock (`true`) or unlock the board: `locked`.
    Lock(bool),
}

/// What a moderation step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderated {
    /// Done; the comments it touched, in id order (none for a lock).
    Done(Vec<u64>),
    /// The comment does not exist (never did, or was deleted).
    NoSuchComment,
    /// The board has never had a comment (and is not the default board).
    NoSuchBoard,
    /// Nothing to do: already hidden, not hidden, already locked or unlocked.
    Already,
}

/// A hidden comment, as the moderator's list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HiddenComment {
    #[serde(flatten)]
    pub comment: Comment,
    /// Milliseconds since the Unix epoch.
    pub hidden_at: u64,
}

/// A blocked visitor. Site-wide: a block covers every board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Block {
    /// The visitor id. Never shown: the API shows `reference` instead (and
    /// the Redis store keeps it as the hash field, not in the JSON).
    #[serde(skip_serializing, default)]
    pub visitor: String,
    /// What the API names the block by (a keyed hash of the visitor id,
    /// `moderation::block_ref`); `DELETE /api/admin/blocked/{ref}` takes it.
    #[serde(rename = "ref")]
    pub reference: String,
    /// When it ends, in milliseconds since the Unix epoch; `None` for good.
    pub until: Option<u64>,
    /// When it was made.
    pub at: u64,
    /// The board and comment it was made from, for the moderator's memory.
    pub board: String,
    pub comment: u64,
}

impl Block {
    /// Whether the block is still in force at `now` (milliseconds).
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// One line of the audit log: what a moderator did, on what, when, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// `hide`, `restore`, `delete`, `block`, `unblock`, `lock`, `unlock`.
    pub action: String,
    /// The board acted on (none for an unblock).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub board: Option<String>,
    /// The comment acted on, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<u64>,
    /// The block acted on (its `ref`), if any.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
    pub reference: Option<String>,
    /// A few words more: a block's length, how many comments a hide-all took.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// The moderator's client address (behind a trusted proxy, the real one).
    pub ip: String,
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
/// reached (503, retry later) and everything else (500); and three refusals:
/// a new board beyond `--max-boards` (409), a block beyond [`MAX_BLOCKS`]
/// (409), a write to a locked board (423).
#[derive(Debug)]
pub enum StoreError {
    /// A comment would make a new board, and there are `max` already.
    TooManyBoards { max: usize },
    /// A new block, and there are `max` in force already.
    TooManyBlocks { max: usize },
    /// The board is locked: nobody may comment or like.
    Locked,
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
            StoreError::TooManyBlocks { max } => {
                write!(f, "there are {max} blocks in force already, the most kept")
            }
            StoreError::Locked => write!(
                f,
                "this board is locked by its moderator: no comments or likes for now"
            ),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Corrupt(why) => write!(f, "store returned unexpected data: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

/// Most blocks in force at once: every instance holds them all in memory and
/// reads them all again whenever one changes (`moderation.rs`), so they must
/// stay a bounded, small set. Expired blocks make room.
pub const MAX_BLOCKS: usize = 10_000;
/// Lines the audit log keeps (the newest).
pub const AUDIT_LEN: usize = 1_000;

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
    /// there are `--max-boards` already ([`StoreError::TooManyBoards`]); a
    /// locked board refuses it ([`StoreError::Locked`]).
    fn add_comment(&self, board: &Board, comment: NewComment) -> StoreResult<Comment>;
    /// Likes or unlikes; `Ok(None)` when the comment does not exist or is
    /// hidden (nothing is created); a locked board refuses ([`StoreError::Locked`]).
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
    /// One moderator's action on `board`, at `now` (milliseconds since the
    /// epoch): the change and its events are one atomic step, ids following
    /// the board's others.
    fn moderate(&self, board: &Board, action: Action, now: u64) -> StoreResult<Moderated>;
    /// Who wrote a comment (hidden or not); `None` if it does not exist or was
    /// posted before authors were kept.
    fn author_of(&self, board: &Board, comment: u64) -> StoreResult<Option<String>>;
    /// The board's hidden comments, most recently hidden first (at most `limit`).
    fn hidden(&self, board: &Board, limit: usize) -> StoreResult<Vec<HiddenComment>>;
    /// Blocks a visitor (or changes their block), pruning expired blocks
    /// first; [`StoreError::TooManyBlocks`] beyond [`MAX_BLOCKS`]. Site-wide.
    /// Returns the blocks' version it made ([`Store::blocks_version`]).
    fn block(&self, block: &Block, now: u64) -> StoreResult<u64>;
    /// Lifts the block named `reference`: the visitor it was and the blocks'
    /// version that made, if there was such a block.
    fn unblock(&self, reference: &str) -> StoreResult<Option<(String, u64)>>;
    /// A number that changes whenever a block is made or lifted (0 before any),
    /// so instances can tell cheaply whether to read the blocks again.
    fn blocks_version(&self) -> StoreResult<u64>;
    /// Every block (expired ones may be among them: check [`Block::active`]),
    /// and the version they are as of.
    fn blocks(&self) -> StoreResult<(Vec<Block>, u64)>;
    /// Appends a line to the audit log, which keeps the newest [`AUDIT_LEN`].
    fn audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The audit log, newest first (at most `limit`).
    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>>;
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
