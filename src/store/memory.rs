//! The embedded in-memory store: the default when no Redis URL is configured.
//!
//! It follows the same path as Redis (every change and its event in one step,
//! a capped event log, a pump that waits for new events) so that `make run`
//! works on a fresh machine. Nothing is persisted; one process only.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    Action, AuditEntry, Block, BoardInfo, Comment, Event, EventKind, EventReader, Feed,
    HiddenComment, History, LikeOp, LikeOutcome, ListedComment, Moderated, NewComment, Snapshot,
    Store, StoreError, StoreResult, AUDIT_LEN, MAX_BLOCKS,
};
use crate::board::Board;

/// Everything behind one mutex: a change and its event happen together, as a
/// Lua script makes them happen together in Redis.
#[derive(Default)]
struct State {
    /// Every board that has had a comment.
    boards: HashMap<Board, BoardState>,
    /// Every event of every board in the order they happened, for the pump's
    /// reader (the stand-in for Redis pub/sub), numbered by `fed`. Capped:
    /// a reader that falls further behind resyncs, as after a lost connection.
    feed: VecDeque<(Board, Event)>,
    /// Events ever appended to `feed`; the newest has this number.
    fed: u64,
    /// The key that signs visitor cookies (set on first use).
    visitor_key: Option<String>,
    /// Blocked visitors by visitor id (site-wide), and the number that
    /// changes with every block or unblock.
    blocks: HashMap<String, Block>,
    blocks_version: u64,
    /// The audit log, newest last, capped at `AUDIT_LEN`.
    audit: VecDeque<AuditEntry>,
}

/// One board: its comments, ranking, likers and capped event log.
#[derive(Default)]
struct BoardState {
    comments: HashMap<u64, Comment>,
    /// Ordered as the board shows it: score desc, then newest (highest id) first.
    ranking: BTreeSet<(Reverse<u64>, Reverse<u64>)>,
    /// Who likes each comment: a like counts once per visitor, its score is the set's size.
    likers: HashMap<u64, HashSet<String>>,
    /// The capped event log (the stream's stand-in), oldest first.
    log: VecDeque<Event>,
    /// Ids of events, consecutive from 1, as Redis's counter gives them.
    last_event_id: u64,
    /// Ids of comments, consecutive from 1.
    last_comment_id: u64,
    /// Hidden comments and when they were hidden. A hidden comment stays in
    /// `comments` (with its likers and score) but leaves `ranking`.
    hidden: HashMap<u64, u64>,
    /// Who wrote each comment (a visitor id), never shown.
    authors: HashMap<u64, String>,
    /// Nobody may comment or like while set.
    locked: bool,
}

struct Shared {
    /// Everything, under one lock: a change and its event are one step.
    state: Mutex<State>,
    /// Signalled after every append, for the pump waiting in `wait`.
    appended: Condvar,
    /// Events kept for replay per board (`--stream-len`).
    capacity: usize,
    /// Most boards (`--max-boards`).
    max_boards: usize,
}

/// The in-memory store; cheap to clone (it is an `Arc`).
#[derive(Clone)]
pub struct MemoryStore {
    /// Shared with the pump's reader, which waits on the condvar for new events.
    shared: Arc<Shared>,
}

/// The pump's reader: where it is in the feed.
struct FeedReader {
    store: MemoryStore,
    /// The number of the last feed entry read; `None` before the first read.
    read: Option<u64>,
}

impl MemoryStore {
    /// A store whose event logs keep the newest `capacity` events each, with
    /// room for `max_boards` boards.
    pub fn new(capacity: u64, max_boards: usize) -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                appended: Condvar::new(),
                capacity: capacity.max(1) as usize,
                max_boards,
            }),
        }
    }

    /// A poisoned lock here would mean a panic while mutating plain collections;
    /// every mutation below completes or does nothing, so the data is still whole.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.shared.state)
    }

    /// Appends an event to the board's log and to the feed.
    fn append(&self, state: &mut State, board: &Board, kind: EventKind) {
        let capacity = self.shared.capacity;
        let b = state
            .boards
            .get_mut(board)
            .expect("appending to a board that exists");
        b.last_event_id += 1;
        let event = Event {
            id: b.last_event_id,
            kind,
        };
        b.log.push_back(event.clone());
        while b.log.len() > capacity {
            b.log.pop_front();
        }
        state.feed.push_back((board.clone(), event));
        state.fed += 1;
        while state.feed.len() > capacity {
            state.feed.pop_front();
        }
        self.shared.appended.notify_all();
    }
}

impl BoardState {
    fn events_after(&self, after: u64, max: usize) -> Vec<Event> {
        // Ids in the log are consecutive, so the position is arithmetic.
        let first = self.log.front().map_or(self.last_event_id + 1, |e| e.id);
        let skip = (after + 1).saturating_sub(first) as usize;
        self.log.iter().skip(skip).take(max).cloned().collect()
    }
}

/// What reading a board that has no comment yet sees.
static EMPTY: std::sync::LazyLock<BoardState> = std::sync::LazyLock::new(BoardState::default);

impl State {
    fn board(&self, board: &Board) -> &BoardState {
        self.boards.get(board).unwrap_or(&EMPTY)
    }
}

impl Store for MemoryStore {
    fn snapshot(
        &self,
        board: &Board,
        visitor: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Snapshot> {
        let state = self.lock();
        let b = state.board(board);
        let comments = b
            .ranking
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&(_, Reverse(id))| {
                let comment = b.comments[&id].clone();
                let liked = b.likers.get(&id).is_some_and(|l| l.contains(visitor));
                ListedComment { comment, liked }
            })
            .collect();
        Ok(Snapshot {
            comments,
            last_event_id: b.last_event_id,
            locked: b.locked,
        })
    }

    fn add_comment(&self, board: &Board, new: NewComment) -> StoreResult<Comment> {
        let mut state = self.lock();
        if !state.boards.contains_key(board) {
            // The default board always exists: never refused.
            if !board.is_main() && state.boards.len() >= self.shared.max_boards {
                return Err(StoreError::TooManyBoards {
                    max: self.shared.max_boards,
                });
            }
            state.boards.insert(board.clone(), BoardState::default());
        }
        let b = state.boards.get_mut(board).expect("just made sure");
        if b.locked {
            return Err(StoreError::Locked);
        }
        b.last_comment_id += 1;
        let comment = Comment {
            id: b.last_comment_id,
            nickname: new.nickname,
            content: new.content,
            score: 0,
            created_at: new.created_at,
        };
        b.comments.insert(comment.id, comment.clone());
        b.authors.insert(comment.id, new.author);
        b.ranking.insert((Reverse(0), Reverse(comment.id)));
        self.append(&mut state, board, EventKind::Comment(comment.clone()));
        Ok(comment)
    }

    fn set_like(
        &self,
        board: &Board,
        id: u64,
        visitor: &str,
        op: LikeOp,
    ) -> StoreResult<Option<LikeOutcome>> {
        let mut state = self.lock();
        let Some(b) = state.boards.get_mut(board) else {
            return Ok(None);
        };
        if b.locked {
            return Err(StoreError::Locked);
        }
        // A hidden comment is not on the board: no likes until it is restored.
        let Some(old_score) = b
            .comments
            .get(&id)
            .filter(|_| !b.hidden.contains_key(&id))
            .map(|c| c.score)
        else {
            return Ok(None);
        };
        let likers = b.likers.entry(id).or_default();
        let changed = match op {
            LikeOp::Like => likers.insert(visitor.to_string()),
            LikeOp::Unlike => likers.remove(visitor),
        };
        // The score is the size of the liker set, so it can never go below 0.
        let score = likers.len() as u64;
        if changed {
            b.ranking.remove(&(Reverse(old_score), Reverse(id)));
            b.ranking.insert((Reverse(score), Reverse(id)));
            if let Some(c) = b.comments.get_mut(&id) {
                c.score = score;
            }
            self.append(
                &mut state,
                board,
                EventKind::Like {
                    comment: id,
                    score,
                    op,
                },
            );
        }
        Ok(Some(LikeOutcome {
            id,
            score,
            liked: op == LikeOp::Like,
            changed,
        }))
    }

    fn history(&self, board: &Board, after: u64, max: usize) -> StoreResult<History> {
        let state = self.lock();
        let b = state.board(board);
        let oldest_kept = b.log.front().map_or(b.last_event_id + 1, |e| e.id);
        if after > b.last_event_id || after + 1 < oldest_kept {
            return Ok(History::Evicted {
                last_event_id: b.last_event_id,
            });
        }
        Ok(History::Events(b.events_after(after, max)))
    }

    fn last_event_id(&self, board: &Board) -> StoreResult<u64> {
        Ok(self.lock().board(board).last_event_id)
    }

    fn boards(&self, limit: usize) -> StoreResult<(Vec<BoardInfo>, u64)> {
        let state = self.lock();
        let mut all: Vec<BoardInfo> = state
            .boards
            .iter()
            .map(|(name, b)| BoardInfo {
                board: name.to_string(),
                comments: b.comments.len() as u64,
            })
            .collect();
        // Most comments first, then by name (as Redis's ZREVRANGE orders ties).
        all.sort_by(|a, b| b.comments.cmp(&a.comments).then(b.board.cmp(&a.board)));
        all.truncate(limit);
        Ok((all, state.boards.len() as u64))
    }

    fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    fn visitor_key(&self, candidate: &str) -> StoreResult<String> {
        // One process: its first candidate, kept for as long as the board is.
        let mut state = self.lock();
        Ok(state
            .visitor_key
            .get_or_insert_with(|| candidate.to_string())
            .clone())
    }

    fn moderate(&self, board: &Board, action: Action, now: u64) -> StoreResult<Moderated> {
        let mut state = self.lock();
        if !state.boards.contains_key(board) {
            if !(board.is_main() && matches!(action, Action::Lock(_))) {
                let none = match action {
                    Action::Lock(_) => Moderated::NoSuchBoard,
                    Action::HideAllBy(_) => Moderated::Done(Vec::new()),
                    _ => Moderated::NoSuchComment,
                };
                return Ok(none);
            }
            // The default board always exists, so it may be locked before
            // its first comment.
            state.boards.insert(board.clone(), BoardState::default());
        }
        let b = state.boards.get_mut(board).expect("just made sure");
        let mut events = Vec::new();
        let outcome = match action {
            Action::Hide(id) => match b.comments.get(&id) {
                None => Moderated::NoSuchComment,
                Some(_) if b.hidden.contains_key(&id) => Moderated::Already,
                Some(c) => {
                    b.ranking.remove(&(Reverse(c.score), Reverse(id)));
                    b.hidden.insert(id, now);
                    events.push(EventKind::Remove { comment: id });
                    Moderated::Done(vec![id])
                }
            },
            Action::Restore(id) => match b.comments.get(&id) {
                None => Moderated::NoSuchComment,
                Some(_) if !b.hidden.contains_key(&id) => Moderated::Already,
                Some(c) => {
                    b.hidden.remove(&id);
                    b.ranking.insert((Reverse(c.score), Reverse(id)));
                    events.push(EventKind::Comment(c.clone()));
                    Moderated::Done(vec![id])
                }
            },
            Action::Delete(id) => match b.comments.remove(&id) {
                None => Moderated::NoSuchComment,
                Some(c) => {
                    b.ranking.remove(&(Reverse(c.score), Reverse(id)));
                    b.hidden.remove(&id);
                    b.likers.remove(&id);
                    b.authors.remove(&id);
                    events.push(EventKind::Remove { comment: id });
                    Moderated::Done(vec![id])
                }
            },
            Action::HideAllBy(author) => {
                let mut ids: Vec<u64> = b
                    .authors
                    .iter()
                    .filter(|(id, a)| **a == author && !b.hidden.contains_key(id))
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                for &id in &ids {
                    let score = b.comments[&id].score;
                    b.ranking.remove(&(Reverse(score), Reverse(id)));
                    b.hidden.insert(id, now);
                    events.push(EventKind::Remove { comment: id });
                }
                Moderated::Done(ids)
            }
            Action::Lock(locked) if b.locked == locked => Moderated::Already,
            Action::Lock(locked) => {
                b.locked = locked;
                events.push(EventKind::Locked(locked));
                Moderated::Done(Vec::new())
            }
        };
        for kind in events {
            self.append(&mut state, board, kind);
        }
        Ok(outcome)
    }

    fn author_of(&self, board: &Board, comment: u64) -> StoreResult<Option<String>> {
        Ok(self.lock().board(board).authors.get(&comment).cloned())
    }

    fn hidden(&self, board: &Board, limit: usize) -> StoreResult<Vec<HiddenComment>> {
        let state = self.lock();
        let b = state.board(board);
        let mut hidden: Vec<HiddenComment> = b
            .hidden
            .iter()
            .filter_map(|(id, at)| {
                Some(HiddenComment {
                    comment: b.comments.get(id)?.clone(),
                    hidden_at: *at,
                })
            })
            .collect();
        // Most recently hidden first; ties newest comment first (as Redis orders them).
        hidden.sort_by_key(|h| Reverse((h.hidden_at, h.comment.id)));
        hidden.truncate(limit);
        Ok(hidden)
    }

    fn block(&self, block: &Block, now: u64) -> StoreResult<u64> {
        let mut state = self.lock();
        state.blocks.retain(|_, b| b.active(now));
        if !state.blocks.contains_key(&block.visitor) && state.blocks.len() >= MAX_BLOCKS {
            return Err(StoreError::TooManyBlocks { max: MAX_BLOCKS });
        }
        state.blocks.insert(block.visitor.clone(), block.clone());
        state.blocks_version += 1;
        Ok(state.blocks_version)
    }

    fn unblock(&self, reference: &str) -> StoreResult<Option<(String, u64)>> {
        let mut state = self.lock();
        let visitor = state
            .blocks
            .values()
            .find(|b| b.reference == reference)
            .map(|b| b.visitor.clone());
        Ok(visitor.map(|v| {
            state.blocks.remove(&v);
            state.blocks_version += 1;
            (v, state.blocks_version)
        }))
    }

    fn blocks_version(&self) -> StoreResult<u64> {
        Ok(self.lock().blocks_version)
    }

    fn blocks(&self) -> StoreResult<(Vec<Block>, u64)> {
        let state = self.lock();
        Ok((
            state.blocks.values().cloned().collect(),
            state.blocks_version,
        ))
    }

    fn audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let mut state = self.lock();
        state.audit.push_back(entry.clone());
        while state.audit.len() > AUDIT_LEN {
            state.audit.pop_front();
        }
        Ok(())
    }

    fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let state = self.lock();
        Ok(state.audit.iter().rev().take(limit).cloned().collect())
    }

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(FeedReader {
            store: self.clone(),
            read: None,
        })
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

impl EventReader for FeedReader {
    fn wait(&mut self, max: usize, timeout: Duration) -> StoreResult<Feed> {
        let deadline = Instant::now() + timeout;
        let mut state = self.store.lock();
        // The first read starts at the end of the feed, as a fresh
        // subscription hears only what is published after it; `resync` tells
        // the pump to look at the boards' logs for what came before.
        let Some(read) = self.read else {
            self.read = Some(state.fed);
            return Ok(Feed {
                events: Vec::new(),
                resync: true,
            });
        };
        while state.fed <= read {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Feed::default());
            }
            state = match self.store.shared.appended.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        let first = state.fed - state.feed.len() as u64 + 1;
        // Fell behind the capped feed: what was dropped is lost to this
        // reader, as messages are to a Redis subscriber cut off.
        let resync = read + 1 < first;
        let skip = (read + 1).saturating_sub(first) as usize;
        let events: Vec<(Board, Event)> = state
            .feed
            .iter()
            .skip(skip)
            .take(max.max(1))
            .cloned()
            .collect();
        self.read = Some(read.max(first - 1) + events.len() as u64);
        Ok(Feed { events, resync })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main() -> Board {
        Board::main()
    }

    fn comment_on(store: &MemoryStore, board: &Board, text: &str) -> Comment {
        let new = NewComment {
            nickname: "ann".into(),
            content: text.into(),
            created_at: 1,
            author: "c:ann".into(),
        };
        store.add_comment(board, new).unwrap()
    }

    fn comment(store: &MemoryStore, text: &str) -> Comment {
        comment_on(store, &main(), text)
    }

    /// The ranking is score desc, then newest first; liking twice counts once.
    #[test]
    fn ranking_and_idempotent_likes() {
        let store = MemoryStore::new(100, 10);
        let a = comment(&store, "a");
        let b = comment(&store, "b");
        let ids = |s: Snapshot| s.comments.iter().map(|c| c.comment.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.snapshot(&main(), "v", 10, 0).unwrap()),
            vec![b.id, a.id]
        );
        store.set_like(&main(), a.id, "v", LikeOp::Like).unwrap();
        let again = store
            .set_like(&main(), a.id, "v", LikeOp::Like)
            .unwrap()
            .unwrap();
        assert_eq!((again.score, again.changed), (1, false));
        let snap = store.snapshot(&main(), "v", 10, 0).unwrap();
        assert!(snap.comments[0].liked);
        assert_eq!(ids(snap), vec![a.id, b.id]);
        let undo = store
            .set_like(&main(), b.id, "v", LikeOp::Unlike)
            .unwrap()
            .unwrap();
        assert_eq!((undo.score, undo.changed), (0, false));
        assert_eq!(
            store.set_like(&main(), 99, "v", LikeOp::Like).unwrap(),
            None
        );
    }

    /// History replays what is kept and reports eviction for trimmed or future ids.
    #[test]
    fn history_and_eviction() {
        let store = MemoryStore::new(3, 10);
        let a = comment(&store, "a");
        for v in ["1", "2", "3", "4"] {
            store.set_like(&main(), a.id, v, LikeOp::Like).unwrap();
        }
        // Five events happened; the log keeps 3, 4 and 5.
        assert_eq!(
            store.history(&main(), 1, 10).unwrap(),
            History::Evicted { last_event_id: 5 }
        );
        let History::Events(events) = store.history(&main(), 2, 10).unwrap() else {
            panic!("expected events")
        };
        assert_eq!(
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(
            store.history(&main(), 5, 10).unwrap(),
            History::Events(vec![])
        );
        assert_eq!(
            store.history(&main(), 6, 10).unwrap(),
            History::Evicted { last_event_id: 5 }
        );
    }

    /// Boards are worlds of their own: ids, rankings and logs; an unknown board
    /// reads as empty, and a new board beyond the maximum is refused.
    #[test]
    fn boards_are_separate_and_bounded() {
        let store = MemoryStore::new(100, 2);
        let other = Board::parse("other").unwrap();
        let a = comment(&store, "a");
        let b = comment_on(&store, &other, "b");
        assert_eq!((a.id, b.id), (1, 1), "comment ids are per board");
        store.set_like(&other, b.id, "v", LikeOp::Like).unwrap();
        assert_eq!(store.last_event_id(&main()).unwrap(), 1);
        assert_eq!(store.last_event_id(&other).unwrap(), 2);
        assert_eq!(
            store.snapshot(&main(), "v", 10, 0).unwrap().comments[0]
                .comment
                .score,
            0
        );
        let third = Board::parse("third").unwrap();
        assert_eq!(
            store.snapshot(&third, "v", 10, 0).unwrap().comments.len(),
            0
        );
        assert_eq!(store.set_like(&third, 1, "v", LikeOp::Like).unwrap(), None);
        assert!(matches!(
            store.add_comment(
                &third,
                NewComment {
                    nickname: "x".into(),
                    content: "y".into(),
                    created_at: 1,
                    author: "c:x".into(),
                }
            ),
            Err(StoreError::TooManyBoards { max: 2 })
        ));
        let (list, total) = store.boards(10).unwrap();
        assert_eq!(total, 2);
        assert_eq!(list.len(), 2);
    }

    /// The pump's wait returns as soon as an event is appended by another
    /// thread, with its board; the first read only marks the start.
    #[test]
    fn wait_wakes_on_append() {
        let store = MemoryStore::new(10, 10);
        let mut reader = store.event_reader();
        assert!(reader.wait(10, Duration::from_millis(1)).unwrap().resync);
        let writer = store.clone();
        let t = std::thread::spawn(move || comment(&writer, "x"));
        let feed = reader.wait(10, Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!(feed.events.len(), 1);
        assert_eq!(feed.events[0].0, main());
        assert!(!feed.resync);
        assert!(reader
            .wait(10, Duration::from_millis(10))
            .unwrap()
            .events
            .is_empty());
    }

    /// A reader that falls behind the capped feed is told to resync.
    #[test]
    fn falling_behind_the_feed_resyncs() {
        let store = MemoryStore::new(2, 10);
        let mut reader = store.event_reader();
        reader.wait(10, Duration::from_millis(1)).unwrap();
        for text in ["a", "b", "c"] {
            comment(&store, text);
        }
        let feed = reader.wait(10, Duration::from_millis(1)).unwrap();
        assert!(feed.resync);
        assert_eq!(
            feed.events.iter().map(|(_, e)| e.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
