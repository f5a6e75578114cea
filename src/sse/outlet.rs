//! The writer's way out to the wire, and the `--classroom` fault panel's place
//! in it: while the panel has a stream in buffered mode, writes are held back
//! as a buffering proxy would hold them. Without the panel, every write goes
//! straight through.

use std::io;

use super::wire::Wire;
use crate::classroom::Control;

/// The writer's way out: straight to the wire, or held back while the fault
/// panel has this stream in buffered mode (as a buffering proxy would).
pub(super) struct Outlet<'a> {
    pub(super) wire: &'a mut Wire,
    /// The fault panel's hold on this stream; `None` without `--classroom`.
    pub(super) control: Option<&'a Control>,
    /// What buffered mode has held back so far, sent once it reaches a proxy's
    /// buffer size or the mode is switched off.
    pub(super) held: Vec<u8>,
}

impl Outlet<'_> {
    /// Sends `body` (an empty one just releases what buffered mode held, if it
    /// has been switched off).
    pub(super) fn send(&mut self, body: &[u8]) -> io::Result<()> {
        if self.control.is_some_and(|c| c.buffered()) {
            self.held.extend_from_slice(body);
            if self.held.len() < crate::classroom::PROXY_BUFFER {
                return Ok(());
            }
        } else if self.held.is_empty() {
            return self.wire.send(body);
        } else {
            self.held.extend_from_slice(body);
        }
        let held = std::mem::take(&mut self.held);
        self.wire.send(&held)
    }
}
