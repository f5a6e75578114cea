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
    Comment, Event, EventKind, EventReader, History, LikeOp, LikeOutcome, ListedComment,
    NewComment, Snapshot, Store, StoreResult,
};

/// Everything behind one mutex: a change and its event happen together, as a
/// Lua script makes them happen together in Redis.
#[derive(Default)]
struct State {
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
    /// The key that signs visitor cookies (set on first use).
    visitor_key: Option<String>,
}

struct Shared {
    /// Everything, under one lock: a change and its event are one step.
    state: Mutex<State>,
    /// Signalled after every append, for the pump waiting in `wait_after`.
    appended: Condvar,
    /// Events kept for replay (`--stream-len`).
    capacity: usize,
}

/// The in-memory store; cheap to clone (it is an `Arc`).
#[derive(Clone)]
pub struct MemoryStore {
    /// Shared with the pump's reader, which waits on the condvar for new events.
    shared: Arc<Shared>,
}

impl MemoryStore {
    /// A store whose event log keeps the newest `capacity` events.
    pub fn new(capacity: u64) -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                appended: Condvar::new(),
                capacity: capacity.max(1) as usize,
            }),
        }
    }

    /// A poisoned lock here would mean a panic while mutating plain collections;
    /// every mutation below completes or does nothing, so the data is still whole.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.shared.state)
    }

    fn append(&self, state: &mut State, kind: EventKind) {
        state.last_event_id += 1;
        state.log.push_back(Event {
            id: state.last_event_id,
            kind,
        });
        while state.log.len() > self.shared.capacity {
            state.log.pop_front();
        }
        self.shared.appended.notify_all();
    }
}

impl State {
    fn events_after(&self, after: u64, max: usize) -> Vec<Event> {
        // Ids in the log are consecutive, so the position is arithmetic.
        let first = self.log.front().map_or(self.last_event_id + 1, |e| e.id);
        let skip = (after + 1).saturating_sub(first) as usize;
        self.log.iter().skip(skip).take(max).cloned().collect()
    }
}

impl Store for MemoryStore {
    fn snapshot(&self, visitor: &str, limit: usize, offset: usize) -> StoreResult<Snapshot> {
        let state = self.lock();
        let comments = state
            .ranking
            .iter()
            .skip(offset)
            .take(limit)
            .map(|&(_, Reverse(id))| {
                let comment = state.comments[&id].clone();
                let liked = state.likers.get(&id).is_some_and(|l| l.contains(visitor));
                ListedComment { comment, liked }
            })
            .collect();
        Ok(Snapshot {
            comments,
            last_event_id: state.last_event_id,
        })
    }

    fn add_comment(&self, new: NewComment) -> StoreResult<Comment> {
        let mut state = self.lock();
        state.last_comment_id += 1;
        let comment = Comment {
            id: state.last_comment_id,
            nickname: new.nickname,
            content: new.content,
            score: 0,
            created_at: new.created_at,
        };
        state.comments.insert(comment.id, comment.clone());
        state.ranking.insert((Reverse(0), Reverse(comment.id)));
        self.append(&mut state, EventKind::Comment(comment.clone()));
        Ok(comment)
    }

    fn set_like(&self, id: u64, visitor: &str, op: LikeOp) -> StoreResult<Option<LikeOutcome>> {
        let mut state = self.lock();
        let Some(old_score) = state.comments.get(&id).map(|c| c.score) else {
            return Ok(None);
        };
        let likers = state.likers.entry(id).or_default();
        let changed = match op {
            LikeOp::Like => likers.insert(visitor.to_string()),
            LikeOp::Unlike => likers.remove(visitor),
        };
        // The score is the size of the liker set, so it can never go below 0.
        let score = likers.len() as u64;
        if changed {
            state.ranking.remove(&(Reverse(old_score), Reverse(id)));
            state.ranking.insert((Reverse(score), Reverse(id)));
            if let Some(c) = state.comments.get_mut(&id) {
                c.score = score;
            }
            self.append(
                &mut state,
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

    fn history(&self, after: u64, max: usize) -> StoreResult<History> {
        let state = self.lock();
        let oldest_kept = state.log.front().map_or(state.last_event_id + 1, |e| e.id);
        if after > state.last_event_id || after + 1 < oldest_kept {
            return Ok(History::Evicted {
                last_event_id: state.last_event_id,
            });
        }
        Ok(History::Events(state.events_after(after, max)))
    }

    fn last_event_id(&self) -> StoreResult<u64> {
        Ok(self.lock().last_event_id)
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

    fn event_reader(&self) -> Box<dyn EventReader> {
        Box::new(self.clone())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

impl EventReader for MemoryStore {
    fn wait_after(&mut self, after: u64, max: usize, timeout: Duration) -> StoreResult<Vec<Event>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.last_event_id <= after {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            state = match self.shared.appended.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        Ok(state.events_after(after, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(store: &MemoryStore, text: &str) -> Comment {
        let new = NewComment {
            nickname: "ann".into(),
            content: text.into(),
            created_at: 1,
        };
        store.add_comment(new).unwrap()
    }

    /// The ranking is score desc, then newest first; liking twice counts once.
    #[test]
    fn ranking_and_idempotent_likes() {
        let store = MemoryStore::new(100);
        let a = comment(&store, "a");
        let b = comment(&store, "b");
        let ids = |s: Snapshot| s.comments.iter().map(|c| c.comment.id).collect::<Vec<_>>();
        assert_eq!(ids(store.snapshot("v", 10, 0).unwrap()), vec![b.id, a.id]);
        store.set_like(a.id, "v", LikeOp::Like).unwrap();
        let again = store.set_like(a.id, "v", LikeOp::Like).unwrap().unwrap();
        assert_eq!((again.score, again.changed), (1, false));
        let snap = store.snapshot("v", 10, 0).unwrap();
        assert!(snap.comments[0].liked);
        assert_eq!(ids(snap), vec![a.id, b.id]);
        let undo = store.set_like(b.id, "v", LikeOp::Unlike).unwrap().unwrap();
        assert_eq!((undo.score, undo.changed), (0, false));
        assert_eq!(store.set_like(99, "v", LikeOp::Like).unwrap(), None);
    }

    /// History replays what is kept and reports eviction for trimmed or future ids.
    #[test]
    fn history_and_eviction() {
        let store = MemoryStore::new(3);
        let a = comment(&store, "a");
        for v in ["1", "2", "3", "4"] {
            store.set_like(a.id, v, LikeOp::Like).unwrap();
        }
        // Five events happened; the log keeps 3, 4 and 5.
        assert_eq!(
            store.history(1, 10).unwrap(),
            History::Evicted { last_event_id: 5 }
        );
        let History::Events(events) = store.history(2, 10).unwrap() else {
            panic!("expected events")
        };
        assert_eq!(
            events.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(store.history(5, 10).unwrap(), History::Events(vec![]));
        assert_eq!(
            store.history(6, 10).unwrap(),
            History::Evicted { last_event_id: 5 }
        );
    }

    /// The pump's wait returns as soon as an event is appended by another thread.
    #[test]
    fn wait_wakes_on_append() {
        let store = MemoryStore::new(10);
        let mut reader = store.event_reader();
        let writer = store.clone();
        let t = std::thread::spawn(move || comment(&writer, "x"));
        let events = reader.wait_after(0, 10, Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!(events.len(), 1);
        assert!(reader
            .wait_after(1, 10, Duration::from_millis(10))
            .unwrap()
            .is_empty());
    }
}
