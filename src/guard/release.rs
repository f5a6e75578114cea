//! What workers tell the guard, keyed so that it can never be applied to the
//! wrong connection; and freeing the pool thread parked on an event stream.
//!
//! The trap (tiny_http 0.12, `client.rs`): after handing us a request, the
//! connection's pool thread blocks reading the *next* request on it. An event
//! stream never sends one, so without help every stream would hold a pool
//! thread for its whole life. The guard shuts the stream's read half: that
//! thread sees end-of-file, finishes, and is free; the stream keeps writing,
//! and each SSE client costs one thread and one descriptor instead of two of each.
//!
//! Identity. A worker knows its connection only by the peer address tiny_http
//! gives (`Request::remote_addr`); the guard knows sockets by inode. Peer
//! addresses are reused (behind nginx every peer is `127.0.0.1:<port>`), so a
//! note keyed by address alone could, late, hit a new connection on the same
//! address. Each note therefore carries a [`Hold`]'s weak twin: the worker (or
//! the stream) keeps the `Hold` while it holds the connection open. The guard
//! acts on a note only after it has pinned the one live socket with that peer
//! *and* seen the `Hold` still alive: at that instant both connections are open
//! with the same address pair, and TCP allows only one such connection, so they
//! are the same. A note whose `Hold` is gone is dropped unread; a note is
//! dropped as soon as it has matched.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Sender;

/// Held by whoever holds a connection open (a worker with its request, a
/// stream with its socket), for as long as it does. Dropping it tells the guard.
#[must_use = "the guard forgets the connection when its Hold is dropped"]
pub struct Hold(Option<Arc<()>>);

impl Hold {
    pub(super) fn new() -> (Hold, Weak<()>) {
        let strong = Arc::new(());
        let weak = Arc::downgrade(&strong);
        (Hold(Some(strong)), weak)
    }

    /// A hold that tells nothing (no guard, or no peer address).
    pub fn none() -> Hold {
        Hold(None)
    }

    pub(super) fn weak(&self) -> Option<Weak<()>> {
        self.0.as_ref().map(Arc::downgrade)
    }
}

/// What a worker asked of the guard.
pub(super) enum Ask {
    /// A worker took a request from this connection (it may write to it).
    Request,
    /// The connection now carries an event stream: free tiny_http's thread
    /// parked on it, then leave it alone.
    Stream,
    /// End the reading now (a body we will not read); tell `done` when it is.
    ShutRead { done: Sender<()> },
}

/// One note, waiting to be matched to a socket.
pub(super) struct Note {
    /// The connection as the worker knows it (tiny_http's `remote_addr`).
    pub peer: SocketAddr,
    /// Alive while the writer holds the connection open: the proof the match needs.
    pub hold: Weak<()>,
    /// What the worker asks the guard to do.
    pub ask: Ask,
    /// When the worker wrote it.
    pub at: Instant,
}

impl Note {
    /// Whoever wrote it still holds the connection open.
    pub fn alive(&self) -> bool {
        self.hold.strong_count() > 0
    }

    /// Done with (matched, or its connection is gone): a waiting worker returns.
    pub fn finish(self) {
        if let Ask::ShutRead { done } = self.ask {
            let _ = done.try_send(());
        }
    }
}

/// The one key among `peers` equal to `peer`, or `None` when there is none or
/// more than one (then the guard waits rather than guess).
pub(super) fn unique<K: Copy>(
    peers: impl Iterator<Item = (K, SocketAddr)>,
    peer: SocketAddr,
) -> Option<K> {
    let mut found = peers.filter(|(_, p)| *p == peer).map(|(k, _)| k);
    match (found.next(), found.next()) {
        (Some(k), None) => Some(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note outlives its meaning once its Hold is dropped.
    #[test]
    fn a_note_dies_with_its_hold() {
        let (hold, weak) = Hold::new();
        let note = Note {
            peer: "127.0.0.1:1".parse().unwrap(),
            hold: weak,
            ask: Ask::Request,
            at: Instant::now(),
        };
        assert!(note.alive());
        drop(hold);
        assert!(!note.alive());
    }

    /// Two live sockets with one peer address are not told apart by guessing.
    #[test]
    fn ambiguous_peers_match_nothing() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(unique([(1, a), (2, b)].into_iter(), a), Some(1));
        assert_eq!(unique([(1, a), (2, a)].into_iter(), a), None);
        assert_eq!(unique([(2, b)].into_iter(), a), None);
    }
}
