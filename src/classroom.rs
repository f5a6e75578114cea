//! The fault panel behind `--classroom`: lets one browser disturb its OWN event
//! streams, so a class can watch what EventSource does about each fault.
//!
//! The page picks a random client token and puts it on its stream URLs
//! (`/events?client=TOKEN`); `POST /api/classroom/TOKEN/ACTION` then acts on
//! every stream opened with that token and on its next reconnects. A token is
//! 128 random bits, so nobody can disturb a stream they did not open. Off by
//! default all the same: it is a teaching tool, not something a public board
//! needs. Called by `routes/api.rs` (actions, the 204/500 answer) and `sse/stream.rs`
//! (the writer loop's [`Control`]); knows no HTTP types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::lock::lock;

/// What buffered mode holds back before it lets bytes through: the 4 KiB
/// buffer of a proxy left with buffering on (nginx's default page size).
pub const PROXY_BUFFER: usize = 4096;
/// How long an armed "answer 204/500" waits for the reconnects it is meant for.
/// EventSource comes back after `retry:` (3 s), so this leaves room for both the
/// page's stream and its wire view, and then expires on its own.
const ANSWER_WINDOW: Duration = Duration::from_secs(10);
/// Most tokens remembered at once; actions for more are refused. Entries without
/// streams and without an armed answer are forgotten first.
const MAX_CLIENTS: usize = 10_000;

/// A fault a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close this client's streams now (the browser reconnects after `retry:`).
    Drop,
    /// Stop (or resume) heartbeat comments.
    HeartbeatsOff,
    HeartbeatsOn,
    /// Hold events back like a buffering proxy (or stop holding and release them).
    BufferOn,
    BufferOff,
    /// Drop the streams and answer their reconnects with this status (204 or 500).
    Answer(u16),
    /// Undo every fault.
    Clear,
}

impl Action {
    /// The action named in the URL, e.g. `answer-204`.
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "drop" => Action::Drop,
            "heartbeats-off" => Action::HeartbeatsOff,
            "heartbeats-on" => Action::HeartbeatsOn,
            "buffer-on" => Action::BufferOn,
            "buffer-off" => Action::BufferOff,
            "answer-204" => Action::Answer(204),
            "answer-500" => Action::Answer(500),
            "clear" => Action::Clear,
            _ => return None,
        })
    }
}

/// What the panel tells a stream's writer loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poke {
    /// End the stream now.
    Drop,
    /// A mode changed (e.g. buffered mode ended: release what is held).
    Changed,
}

/// One client token's faults, shared by its streams.
#[derive(Default)]
struct Client {
    /// Heartbeats off ("silence"): the stream shows how EventSource waits on a quiet line.
    quiet: AtomicBool,
    /// Events held back and sent in one burst, as a buffering proxy would.
    buffered: AtomicBool,
    /// The status to answer reconnects with, and until when.
    answer: Mutex<Option<(u16, Instant)>>,
    /// One sender per stream, to wake its writer loop, and whether that stream
    /// is still open (its [`Control`] holds the other end of the `Weak`).
    streams: Mutex<Vec<(Sender<Poke>, Weak<()>)>>,
}

impl Client {
    fn poke(&self, poke: Poke) {
        lock(&self.streams)
            .retain(|(tx, _)| !matches!(tx.try_send(poke), Err(TrySendError::Disconnected(_))));
    }

    fn idle(&self) -> bool {
        let armed = lock(&self.answer).is_some_and(|(_, until)| until > Instant::now());
        !armed
            && lock(&self.streams)
                .iter()
                .all(|(_, open)| open.strong_count() == 0)
    }
}

/// One stream's hold: read by `sse::stream::run` between writes.
pub struct Control {
    /// The browser this stream belongs to: its buttons act on every stream of it.
    client: Arc<Client>,
    /// Wakes the writer when a button is pressed.
    pub pokes: Receiver<Poke>,
    /// Dropped with the stream, which tells the classroom it has ended.
    _open: Arc<()>,
}

impl Control {
    /// Heartbeats are switched off.
    pub fn quiet(&self) -> bool {
        self.client.quiet.load(Ordering::Relaxed)
    }

    /// Events are held back as a buffering proxy would.
    pub fn buffered(&self) -> bool {
        self.client.buffered.load(Ordering::Relaxed)
    }
}

/// Every client token that has streams or faults.
#[derive(Default)]
pub struct Classroom {
    /// Each browser by its client token (`?client=`), so a button acts on that browser only.
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// A client token: 16 to 64 hex digits (the page makes 32).
pub fn valid_token(token: &str) -> bool {
    (16..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Classroom {
    pub fn new() -> Classroom {
        Classroom::default()
    }

    /// The status an armed fault answers this stream request with, if any.
    pub fn answer_for(&self, token: &str) -> Option<u16> {
        let client = lock(&self.clients).get(token).cloned()?;
        let answer = *lock(&client.answer);
        answer
            .filter(|(_, until)| *until > Instant::now())
            .map(|(status, _)| status)
    }

    /// Registers a new stream for `token` and returns its hold, or None when
    /// the classroom is full of other clients.
    pub fn attach(&self, token: &str) -> Option<Control> {
        let client = self.client(token)?;
        let (tx, rx) = bounded(4);
        let open = Arc::new(());
        let mut streams = lock(&client.streams);
        streams.retain(|(_, open)| open.strong_count() > 0);
        streams.push((tx, Arc::downgrade(&open)));
        drop(streams);
        Some(Control {
            client,
            pokes: rx,
            _open: open,
        })
    }

    /// Applies a button press. False when there is no room for another client.
    pub fn act(&self, token: &str, action: Action) -> bool {
        let Some(client) = self.client(token) else {
            return false;
        };
        match action {
            Action::Drop => client.poke(Poke::Drop),
            Action::HeartbeatsOff | Action::HeartbeatsOn => {
                client
                    .quiet
                    .store(action == Action::HeartbeatsOff, Ordering::Relaxed);
            }
            Action::BufferOn | Action::BufferOff => {
                client
                    .buffered
                    .store(action == Action::BufferOn, Ordering::Relaxed);
                client.poke(Poke::Changed);
            }
            Action::Answer(status) => {
                *lock(&client.answer) = Some((status, Instant::now() + ANSWER_WINDOW));
                client.poke(Poke::Drop);
            }
            Action::Clear => {
                client.quiet.store(false, Ordering::Relaxed);
                client.buffered.store(false, Ordering::Relaxed);
                *lock(&client.answer) = None;
                client.poke(Poke::Changed);
            }
        }
        true
    }

    /// The entry for `token`, made if needed (forgetting idle ones when full).
    fn client(&self, token: &str) -> Option<Arc<Client>> {
        let mut clients = lock(&self.clients);
        if let Some(client) = clients.get(token) {
            return Some(Arc::clone(client));
        }
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, c| !c.idle());
            if clients.len() >= MAX_CLIENTS {
                return None;
            }
        }
        let client = Arc::new(Client::default());
        clients.insert(token.to_string(), Arc::clone(&client));
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    /// "drop" wakes every stream of the token, and only those.
    #[test]
    fn drop_pokes_only_that_client() {
        let room = Classroom::new();
        let a = room.attach(T).unwrap();
        let other = room.attach("ffffffffffffffff").unwrap();
        assert!(room.act(T, Action::Drop));
        assert_eq!(a.pokes.try_recv(), Ok(Poke::Drop));
        assert!(other.pokes.try_recv().is_err());
    }

    /// An armed answer applies to the next stream requests of that token only.
    #[test]
    fn answer_is_armed_per_token() {
        let room = Classroom::new();
        assert_eq!(room.answer_for(T), None);
        room.act(T, Action::Answer(204));
        assert_eq!(room.answer_for(T), Some(204));
        assert_eq!(room.answer_for("ffffffffffffffff"), None);
        room.act(T, Action::Clear);
        assert_eq!(room.answer_for(T), None);
    }

    /// Modes are visible to the stream's hold.
    #[test]
    fn modes_reach_the_stream() {
        let room = Classroom::new();
        let c = room.attach(T).unwrap();
        room.act(T, Action::HeartbeatsOff);
        room.act(T, Action::BufferOn);
        assert!(c.quiet() && c.buffered());
        room.act(T, Action::Clear);
        assert!(!c.quiet() && !c.buffered());
    }

    /// Tokens are hex of a sane length.
    #[test]
    fn tokens() {
        assert!(valid_token(T));
        assert!(!valid_token("short"));
        assert!(!valid_token("0123456789abcdefg"));
    }
}
