//! What a reconnecting client missed: where it asked to resume from, and the
//! events after that id read back from the store's history a page at a time.
//!
//! Called by the writer loop ([`super::stream`]) when a stream starts and
//! whenever live event ids jump. Ids on one connection only ever increase: a
//! history that cannot continue them becomes `event: reset` or ends the stream.

use std::io;

use super::frame::{reset_event, retry_field, Dialect, Encoded, RETRY_MS};
use super::outlet::Outlet;
use crate::store::{History, Store, StoreError};

/// Events read from history per query when catching up; a longer backlog goes
/// out in several writes, so a big replay never sits whole in memory.
const REPLAY_PAGE: usize = 1000;
/// Most pages one catch-up reads (a million events, far beyond the default
/// history): the loop stays bounded even if writes outpace it for ever.
const REPLAY_PAGES_MAX: usize = 1000;

/// Where a client asked to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A fresh connection: live events only.
    Live,
    /// Replay everything after this id, then go live.
    After(u64),
    /// An id we could not parse: tell the client to refetch (`event: reset`).
    Invalid,
}

impl Resume {
    /// Parses a `Last-Event-ID` header or `?since=` value strictly: ASCII digits only.
    pub fn parse(value: Option<&str>) -> Resume {
        match value.map(str::trim) {
            None | Some("") => Resume::Live,
            Some(v) if v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map_or(Resume::Invalid, Resume::After)
            }
            Some(_) => Resume::Invalid,
        }
    }
}

/// Sends what the client missed; returns the last id it has now seen (if known).
pub(super) fn replay(
    out: &mut Outlet,
    store: &dyn Store,
    resume: Resume,
    dialect: Dialect,
) -> io::Result<Option<u64>> {
    match resume {
        Resume::Live => Ok(None),
        Resume::After(after) => catch_up(out, store, after, false, dialect).map(Some),
        Resume::Invalid => match store.last_event_id() {
            Ok(last_event_id) => {
                out.send(&reset_event(last_event_id))?;
                Ok(Some(last_event_id))
            }
            Err(e) => Err(store_failed(out, &e)),
        },
    }
}

/// Sends every event after `after` from history, a page per write, and returns
/// the last id sent. A history that no longer reaches back to `after` (or never
/// got that far) becomes `event: reset` carrying the newest id. `seen` says the
/// client already got `after` on this connection, so no id may go below it.
pub(super) fn catch_up(
    out: &mut Outlet,
    store: &dyn Store,
    mut after: u64,
    seen: bool,
    dialect: Dialect,
) -> io::Result<u64> {
    let mut buf = Vec::new();
    for page in 0..REPLAY_PAGES_MAX {
        match store.history(after, REPLAY_PAGE) {
            Ok(History::Events(events)) => {
                buf.clear();
                for event in &events {
                    buf.extend_from_slice(Encoded::new(event).bytes(dialect));
                }
                out.send(&buf)?;
                let Some(last) = events.last() else { break };
                after = last.id;
                if events.len() < REPLAY_PAGE {
                    break;
                }
            }
            Ok(History::Evicted { last_event_id })
                if last_event_id < after && (seen || page > 0) =>
            {
                // The store's ids went backwards under us (Redis lost its data).
                // Ids on one connection only ever increase, so end the stream:
                // the client reconnects with its Last-Event-ID and gets a reset.
                log::warn!(
                    "SSE: event ids went back from {after} to {last_event_id}; closing the stream"
                );
                out.send(&retry_field(RETRY_MS))?;
                return Err(io::Error::other("event ids went backwards"));
            }
            Ok(History::Evicted { last_event_id }) => {
                out.send(&reset_event(last_event_id))?;
                return Ok(last_event_id);
            }
            Err(e) => return Err(store_failed(out, &e)),
        }
    }
    Ok(after)
}

/// The store is down: we cannot know what was missed. Ask the browser to come
/// back later, when replay can work; the caller ends the stream.
fn store_failed(out: &mut Outlet, e: &StoreError) -> io::Error {
    log::warn!("SSE replay failed: {e}");
    match out.send(&retry_field(RETRY_MS)) {
        Ok(()) => io::Error::other("store unavailable for replay"),
        Err(write_error) => write_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Last-Event-ID is parsed strictly; anything but digits asks for a reset.
    #[test]
    fn resume_parsing() {
        assert_eq!(Resume::parse(None), Resume::Live);
        assert_eq!(Resume::parse(Some("")), Resume::Live);
        assert_eq!(Resume::parse(Some("42")), Resume::After(42));
        for bad in ["-1", "4x", "1e3", "99999999999999999999999", "0x10", " 1 2"] {
            assert_eq!(Resume::parse(Some(bad)), Resume::Invalid, "{bad}");
        }
    }
}
