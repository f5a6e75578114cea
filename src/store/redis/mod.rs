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
//! - `feed.rs`: the pump's reader, a pub/sub subscription on its own thread.
//! - `stream.rs`: parsing stream entries (and published events) into events.
//! - `add_comment.lua`, `set_like.lua`, `snapshot.lua`, `register_board.lua`:
//!   the scripts, each with a header giving what it does atomically, its KEYS
//!   and ARGV. Each touches one board's keys, so one cluster slot.
//! - `hide.lua`, `restore.lua`, `delete.lua`, `lock.lua`, `hidden.lua`: the
//!   moderator's steps on one board, each logging its events like the others;
//!   `block.lua`, `unblock.lua`: blocks, in the site's own slot.
//!
//! How the pump hears of new events, on one Redis and on a cluster alike: each
//! script also `PUBLISH`es the event it logged on one channel, and the pump
//! subscribes to it. A blocking `XREAD` over every board's stream cannot cross
//! slots in a cluster, and would need one connection per board; pub/sub needs
//! one connection per process. Pub/sub may lose messages (only while the
//! subscription is down), so the stream stays the record: ids per board are
//! consecutive, a gap is filled from the stream, and after every
//! resubscription the pump compares each live board's newest id with its own
//! (`pump.rs`).
//!
//! The stream is trimmed exactly (`MAXLEN N`, not `MAXLEN ~ N`), so the replay
//! history is exactly the newest `--stream-len` events, as in the memory store.
//! `~` only ever drops whole macro-nodes (up to 100 entries each), so with a
//! small N the stream could hold ten times more than asked, and whether a
//! reconnect replays or resets would depend on node boundaries. Exact trimming
//! costs little here: each XADD marks one entry of the oldest node deleted
//! (a walk over at most one node), and the node is freed once it is empty.

mod conn;
mod feed;
mod keys;
mod stream;

use std::collections::HashSet;
use std::sync::Mutex;

use redis::{Script, Value};

use conn::Pool;
use feed::FeedReader;
use keys::{member, Keys};
use stream::parse_entries;

use super::{
    Action, AuditEntry, Block, BoardInfo, Comment, EventReader, HiddenComment, History, LikeOp,
    LikeOutcome, ListedComment, Moderated, NewComment, Snapshot, Store, StoreError, StoreResult,
    AUDIT_LEN, MAX_BLOCKS,
};
use crate::board::Board;
use crate::lock::lock;

// The Lua scripts, each in its own file beside this one so that Redis
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
/// Lua: enter a board in the list of boards unless it is full. Returns 1 or 0.
const REGISTER_BOARD: &str = include_str!("register_board.lua");
/// Lua: hide one comment, or all of one author's, logging a `remove` each.
const HIDE: &str = include_str!("hide.lua");
/// Lua: put a hidden comment back, logging a `comment` with its score.
const RESTORE: &str = include_str!("restore.lua");
/// Lua: delete a comment with its likes for good, logging a `remove`.
const DELETE: &str = include_str!("delete.lua");
/// Lua: lock or unlock a board, logging a `locked`.
const LOCK: &str = include_str!("lock.lua");
/// Lua: a board's hidden comments, most recently hidden first.
const HIDDEN: &str = include_str!("hidden.lua");
/// Lua: block a visitor (site-wide), pruning expired blocks.
const BLOCK: &str = include_str!("block.lua");
/// Lua: lift a block by its ref.
const UNBLOCK: &str = include_str!("unblock.lua");

/// The Redis-backed store. Cheap to share: the pool is internally synchronized.
pub struct RedisStore {
    /// The pooled connections requests run on, and the connector the pump's
    /// reader opens its own connection with.
    pool: Pool,
    /// Every key name, made once from the prefix (the layout is in `keys.rs`).
    keys: Keys,
    /// How many events a board's stream keeps: every XADD trims it to exactly this.
    stream_len: u64,
    /// Most boards (`--max-boards`).
    max_boards: usize,
    /// Boards this process has seen listed, so only a board's first comment
    /// here pays the extra round trip (bounded by `max_boards`).
    listed: Mutex<HashSet<Board>>,
    // Each `Script` keeps its SHA1: calls go out as EVALSHA, and the body is
    // sent only when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).
    add_comment: Script,
    set_like: Script,
    snapshot: Script,
    register_board: Script,
    hide: Script,
    restore: Script,
    delete: Script,
    lock: Script,
    hidden: Script,
    block: Script,
    unblock: Script,
}

impl RedisStore {
    /// Builds the store without connecting: the server must start even while
    /// Redis is down, and the pool connects lazily when Redis comes back.
    pub fn open(url: &str, prefix: &str, stream_len: u64, pool_size: u32) -> StoreResult<Self> {
        Ok(RedisStore::on(
            Pool::open(url, pool_size)?,
            prefix,
            stream_len,
        ))
    }

    /// The store on a Redis Cluster named by its seed nodes (`redis://host:port`).
    pub fn open_cluster(
        seeds: &[String],
        prefix: &str,
        stream_len: u64,
        pool_size: u32,
    ) -> StoreResult<Self> {
        Ok(RedisStore::on(
            Pool::open_cluster(seeds, pool_size)?,
            prefix,
            stream_len,
        ))
    }

    fn on(pool: Pool, prefix: &str, stream_len: u64) -> Self {
        RedisStore {
            pool,
            keys: Keys::new(prefix),
            stream_len,
            max_boards: usize::MAX,
            listed: Mutex::new(HashSet::new()),
            add_comment: Script::new(ADD_COMMENT),
            set_like: Script::new(SET_LIKE),
            snapshot: Script::new(SNAPSHOT),
            register_board: Script::new(REGISTER_BOARD),
            hide: Script::new(HIDE),
            restore: Script::new(RESTORE),
            delete: Script::new(DELETE),
            lock: Script::new(LOCK),
            hidden: Script::new(HIDDEN),
            block: Script::new(BLOCK),
            unblock: Script::new(UNBLOCK),
        }
    }

    /// At most `max` boards may exist (`--max-boards`).
    pub fn with_max_boards(mut self, max: usize) -> Self {
        self.max_boards = max;
        self
    }

    /// Makes sure `board` is in the list of boards, once per process: false
    /// when the list is full. Repeatable (entering a listed board does nothing).
    /// With `adopt`, the default board is listed only if it holds comments.
    fn list_board(&self, board: &Board, adopt: bool) -> StoreResult<bool> {
        if lock(&self.listed).contains(board) {
            return Ok(true);
        }
        let main_comments = self.keys.board(&Board::main()).comments;
        let listed: u8 = self.pool.with_conn("list board", true, |con| {
            let mut call = self.register_board.key(&self.keys.boards);
            if board.is_main() {
                call.key(&main_comments);
            }
            call.arg(board.as_str())
                .arg(self.max_boards)
                .arg(if adopt { "1" } else { "0" })
                .invoke(con)
        })?;
        if listed == 1 {
            lock(&self.listed).insert(board.clone());
        }
        Ok(listed != 0)
    }
}

impl Store for RedisStore {
    fn snapshot(
        &self,
        board: &Board,
        visitor: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Snapshot> {
        let keys = self.keys.board(board);
        let reply: Vec<Value> = self.pool.with_conn("snapshot", true, |con| {
            self.snapshot
                .key(&keys.comments)
                .key(&keys.ranking)
                .key(keys.liked(visitor))
                .key(&keys.event_seq)
                .key(&keys.locked)
                .arg(offset)
                .arg(limit)
                .invoke(con)
        })?;
        let mut values = reply.into_iter();
        let last_event_id = values
            .next()
            .and_then(|v| as_u64(&v))
            .ok_or_else(|| StoreError::Corrupt("snapshot without an event id".into()))?;
        let locked = values.next().and_then(|v| as_u64(&v)) == Some(1);
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
            locked,
        })
    }

    fn add_comment(&self, board: &Board, new: NewComment) -> StoreResult<Comment> {
        if !self.list_board(board, false)? {
            return Err(StoreError::TooManyBoards {
                max: self.max_boards,
            });
        }
        let keys = self.keys.board(board);
        // Not repeatable: a retry after a lost reply would post the comment twice.
        let id: u64 = self.pool.with_conn("add comment", false, |con| {
            self.add_comment
                .key(&keys.comments)
                .key(&keys.ranking)
                .key(&keys.comment_seq)
                .key(&keys.event_seq)
                .key(&keys.events)
                .key(&keys.locked)
                .key(&keys.authors)
                .key(keys.by(&new.author))
                .arg(&new.nickname)
                .arg(&new.content)
                .arg(new.created_at)
                .arg(self.stream_len)
                .arg(&self.keys.feed)
                .arg(board.as_str())
                .arg(&new.author)
                .invoke(con)
        })?;
        if id == 0 {
            return Err(StoreError::Locked);
        }
        // The list's count lives in another slot: a second step, and a failed
        // one only leaves the count one short (the comment is stored).
        let counted = self.pool.with_conn("count comment", false, |con| {
            redis::cmd("ZINCRBY")
                .arg(&self.keys.boards)
                .arg(1)
                .arg(board.as_str())
                .query::<()>(con)
        });
        if let Err(e) = counted {
            log::warn!("board {board}: comment {id} stored, but not counted in the list: {e}");
        }
        Ok(Comment {
            id,
            nickname: new.nickname,
            content: new.content,
            score: 0,
            created_at: new.created_at,
        })
    }

    fn set_like(
        &self,
        board: &Board,
        id: u64,
        visitor: &str,
        op: LikeOp,
    ) -> StoreResult<Option<LikeOutcome>> {
        let m = member(id);
        let keys = self.keys.board(board);
        // Repeatable: liking twice counts once, so a retry changes nothing twice.
        let (status, changed, score): (u8, u8, u64) = self.pool.with_conn("like", true, |con| {
            self.set_like
                .key(&keys.ranking)
                .key(keys.likers(&m))
                .key(keys.liked(visitor))
                .key(&keys.event_seq)
                .key(&keys.events)
                .key(&keys.locked)
                .arg(&m)
                .arg(visitor)
                .arg(match op {
                    LikeOp::Like => "like",
                    LikeOp::Unlike => "unlike",
                })
                .arg(self.stream_len)
                .arg(&self.keys.feed)
                .arg(board.as_str())
                .invoke(con)
        })?;
        match status {
            0 => return Ok(None),
            2 => return Err(StoreError::Locked),
            _ => {}
        }
        Ok(Some(LikeOutcome {
            id,
            score,
            liked: op == LikeOp::Like,
            changed: changed == 1,
        }))
    }

    fn history(&self, board: &Board, after: u64, max: usize) -> StoreResult<History> {
        let keys = self.keys.board(board);
        // One MULTI: the newest id, the oldest entry still kept, and the entries
        // after `after`, all from the same instant.
        let (seq, oldest, entries): (Option<u64>, Value, Value) =
            self.pool.with_conn("history", true, |con| {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(&keys.event_seq)
                    .cmd("XRANGE")
                    .arg(&keys.events)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("XRANGE")
                    .arg(&keys.events)
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

    fn last_event_id(&self, board: &Board) -> StoreResult<u64> {
        let key = self.keys.board(board).event_seq;
        let seq: Option<u64> = self.pool.with_conn("last event id", true, |con| {
            redis::cmd("GET").arg(&key).query(con)
        })?;
        Ok(seq.unwrap_or(0))
    }

    fn boards(&self, limit: usize) -> StoreResult<(Vec<BoardInfo>, u64)> {
        // A Redis written before boards existed has no list: enter `main`
        // with what it holds (once per process).
        self.list_board(&Board::main(), true)?;
        let (top, total): (Vec<(String, f64)>, u64) =
            self.pool.with_conn("boards", true, |con| {
                redis::pipe()
                    .cmd("ZREVRANGE")
                    .arg(&self.keys.boards)
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("WITHSCORES")
                    .cmd("ZCARD")
                    .arg(&self.keys.boards)
                    .query(con)
            })?;
        let list = if limit == 0 { Vec::new() } else { top };
        Ok((
            list.into_iter()
                .map(|(board, comments)| BoardInfo {
                    board,
                    comments: comments as u64,
                })
                .collect(),
            total,
        ))
    }

    fn ping(&self) -> StoreResult<()> {
        // Not PING: on a cluster the crate sends that to every master, so one
        // master down would make every instance unhealthy and a balancer pull
        // them all, while most boards still work. A read of the site's own
        // slot (the list of boards, the cookie key, the blocks) asks the one
        // node the whole site needs; on one Redis it is a PING by another name.
        self.pool.with_conn("ping", true, |con| {
            redis::cmd("EXISTS").arg(&self.keys.boards).query::<()>(con)
        })
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

    fn moderate(&self, board: &Board, action: Action, now: u64) -> StoreResult<Moderated> {
        let keys = self.keys.board(board);
        let feed = &self.keys.feed;
        // None is repeatable: a retry after a lost reply would find the step
        // done and answer "already" (or log a second `remove` for a delete).
        let outcome = match &action {
            Action::Hide(_) | Action::HideAllBy(_) => {
                let (member, by) = match &action {
                    Action::Hide(id) => (member(*id), None),
                    Action::HideAllBy(author) => (String::new(), Some(keys.by(author))),
                    _ => unreachable!("matched above"),
                };
                let reply: Vec<Value> = self.pool.with_conn("hide", false, |con| {
                    let mut call = self.hide.key(&keys.comments);
                    call.key(&keys.ranking)
                        .key(&keys.hidden)
                        .key(&keys.hidden_at)
                        .key(&keys.event_seq)
                        .key(&keys.events);
                    if let Some(by) = &by {
                        call.key(by);
                    }
                    call.arg(&member)
                        .arg(now)
                        .arg(self.stream_len)
                        .arg(feed)
                        .arg(board.as_str())
                        .invoke(con)
                })?;
                let mut values = reply.iter();
                match values.next().and_then(as_u64) {
                    Some(1) => Moderated::Done(values.filter_map(as_u64).collect()),
                    Some(0) => Moderated::NoSuchComment,
                    Some(2) => Moderated::Already,
                    _ => return Err(StoreError::Corrupt(format!("hide answered {reply:?}"))),
                }
            }
            Action::Restore(id) => {
                let status: u8 = self.pool.with_conn("restore", false, |con| {
                    self.restore
                        .key(&keys.comments)
                        .key(&keys.ranking)
                        .key(&keys.hidden)
                        .key(&keys.hidden_at)
                        .key(&keys.event_seq)
                        .key(&keys.events)
                        .arg(member(*id))
                        .arg(self.stream_len)
                        .arg(feed)
                        .arg(board.as_str())
                        .invoke(con)
                })?;
                Moderated::of_status(status, *id)
            }
            Action::Delete(id) => {
                let m = member(*id);
                let status: u8 = self.pool.with_conn("delete", false, |con| {
                    self.delete
                        .key(&keys.comments)
                        .key(&keys.ranking)
                        .key(&keys.hidden)
                        .key(&keys.hidden_at)
                        .key(&keys.authors)
                        .key(keys.likers(&m))
                        .key(&keys.event_seq)
                        .key(&keys.events)
                        .arg(&m)
                        .arg(self.stream_len)
                        .arg(feed)
                        .arg(board.as_str())
                        .arg(&keys.tag)
                        .invoke(con)
                })?;
                Moderated::of_status(status, *id)
            }
            Action::Lock(locked) => {
                let status: u8 = self.pool.with_conn("lock", false, |con| {
                    self.lock
                        .key(&keys.locked)
                        .key(&keys.comment_seq)
                        .key(&keys.event_seq)
                        .key(&keys.events)
                        .arg(if *locked { "1" } else { "0" })
                        .arg(if board.is_main() { "1" } else { "0" })
                        .arg(self.stream_len)
                        .arg(feed)
                        .arg(board.as_str())
                        .invoke(con)
                })?;
                match status {
                    0 => Moderated::NoSuchBoard,
                    2 => Moderated::Already,
                    _ => Moderated::Done(Vec::new()),
                }
            }
        };
        Ok(outcome)
    }

    fn author_of(&self, board: &Board, comment: u64) -> StoreResult<Option<String>> {
        let keys = self.keys.board(board);
        self.pool.with_conn("author", true, |con| {
            redis::cmd("HGET")
                .arg(&keys.authors)
                .arg(member(comment))
                .query(con)
        })
    }

    fn hidden(&self, board: &Board, limit: usize) -> StoreResult<Vec<HiddenComment>> {
        let keys = self.keys.board(board);
        let reply: Vec<Value> = self.pool.with_conn("hidden", true, |con| {
            self.hidden
                .key(&keys.comments)
                .key(&keys.hidden)
                .key(&keys.hidden_at)
                .arg(limit)
                .invoke(con)
        })?;
        reply
            .chunks(4)
            .map(|row| {
                let [member, json, score, at] = row else {
                    return Err(StoreError::Corrupt("hidden row of the wrong length".into()));
                };
                let id = as_u64(member).ok_or_else(|| StoreError::Corrupt("bad member".into()))?;
                let stored = parse_stored(id, &as_string(json).unwrap_or_default())?;
                Ok(HiddenComment {
                    comment: Comment {
                        score: as_u64(score).unwrap_or(0),
                        ..stored
                    },
                    hidden_at: as_u64(at).unwrap_or(0),
                })
            })
            .collect()
    }

    fn block(&self, block: &Block, now: u64) -> StoreResult<u64> {
        let json = serde_json::to_string(block)
            .map_err(|e| StoreError::Corrupt(format!("encoding a block: {e}")))?;
        // Repeatable: blocking the same visitor twice leaves one block.
        let version: u64 = self.pool.with_conn("block", true, |con| {
            self.block
                .key(&self.keys.blocked)
                .key(&self.keys.blocked_refs)
                .key(&self.keys.blocked_seq)
                .arg(&block.visitor)
                .arg(&block.reference)
                .arg(&json)
                .arg(now)
                .arg(MAX_BLOCKS)
                .invoke(con)
        })?;
        if version == 0 {
            return Err(StoreError::TooManyBlocks { max: MAX_BLOCKS });
        }
        Ok(version)
    }

    fn unblock(&self, reference: &str) -> StoreResult<Option<(String, u64)>> {
        self.pool.with_conn("unblock", true, |con| {
            self.unblock
                .key(&self.keys.blocked)
                .key(&self.keys.blocked_refs)
                .key(&self.keys.blocked_seq)
                .arg(reference)
                .invoke(con)
        })
    }

    fn blocks_version(&self) -> StoreResult<u64> {
        let seq: Option<u64> = self.pool.with_conn("blocks version", true, |con| {
            redis::cmd("GET").arg(&self.keys.blocked_seq).query(con)
        })?;
        Ok(seq.unwrap_or(0))
    }

    fn blocks(&self) -> StoreResult<(Vec<Block>, u64)> {
        // One MULTI: the blocks and the version they are as of.
        let (seq, all): (Option<u64>, Vec<(String, String)>) =
            self.pool.with_conn("blocks", true, |con| {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(&self.keys.blocked_seq)
                    .cmd("HGETALL")
                    .arg(&self.keys.blocked)
                    .query(con)
            })?;
        let blocks = all
            .into_iter()
            .map(|(visitor, json)| {
                let block: Block = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("a block: {e}")))?;
                Ok(Block { visitor, ..block })
            })
            .collect::<StoreResult<Vec<Block>>>()?;
        Ok((blocks, seq.unwrap_or(0)))
    }

    fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let json = serde_json::to_string(entry)
            .map_err(|e| StoreError::Corrupt(format!("encoding an audit line: {e}")))?;
        // Not repeatable: a retry after a lost reply would log the line twice.
        self.pool.with_conn("audit", false, |con| {
            redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&self.keys.audit)
                .arg(&json)
                .ignore()
                .cmd("LTRIM")
                .arg(&self.keys.audit)
                .arg(0)
                .arg(AUDIT_LEN - 1)
                .ignore()
                .query::<()>(con)
        })
    }

    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lines: Vec<String> = self.pool.with_conn("audit log", true, |con| {
            redis::cmd("LRANGE")
                .arg(&self.keys.audit)
                .arg(0)
                .arg(limit - 1)
                .query(con)
        })?;
        lines
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| StoreError::Corrupt(format!("an audit line: {e}")))
            })
            .collect()
    }

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(FeedReader::start(
            self.pool.connector(),
            self.keys.feed.clone(),
        ))
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn reconnects(&self) -> u64 {
        self.pool.reconnects()
    }
}

impl Moderated {
    /// What a script's status means for one comment: 1 done, 0 no such
    /// comment, 2 nothing to do.
    fn of_status(status: u8, id: u64) -> Moderated {
        match status {
            0 => Moderated::NoSuchComment,
            2 => Moderated::Already,
            _ => Moderated::Done(vec![id]),
        }
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
