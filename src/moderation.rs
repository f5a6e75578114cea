//! Moderation's parts that know no HTTP: the moderators' token (read once at
//! startup, checked in constant time), the name a block goes by in the API,
//! and every instance's own copy of the blocks, so that a write checks them
//! without a round trip to the store. `routes/admin.rs` is the HTTP side.
//!
//! Invariant: only a bearer of the token can remove what others wrote. Every
//! route that hides, deletes, blocks or locks goes through
//! `routes::admin::authorize`, which calls [`AdminToken::verify`]; without
//! `--admin-token-file` those routes do not exist at all.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::store::{Block, Store};

/// How often each instance asks the store whether the blocks changed: a
/// block made on another instance is in force here at most this much later
/// (a block made here is in force here at once).
pub const BLOCKS_REFRESH: Duration = Duration::from_secs(1);

/// Bytes of a block's ref (as hex, twice as many characters): 96 bits, far
/// beyond guessing, short enough to type.
const REF_BYTES: usize = 12;

/// Milliseconds since the Unix epoch, as the store's timestamps are.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The moderators' token, as this process holds it: never the token itself
/// in a form that could be compared byte by byte, printed or logged.
pub struct AdminToken {
    /// A random key of this process. The token we hold and every token
    /// presented are both turned into HMAC-SHA-256 digests under it before
    /// they are compared, so the comparison is always of two 32-byte values:
    /// its time cannot depend on the presented token's length, nor on how
    /// many of its first characters are right (a digest of a nearly right
    /// token is as different from ours as any other).
    key: [u8; 32],
    /// Our token's digest under `key`.
    digest: [u8; 32],
    /// The key that names blocks ([`AdminToken::reference`]): derived from
    /// the token, so every instance with the same token names a block alike.
    ref_key: [u8; 32],
}

/// Never prints the token or anything made from it.
impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token in `path`: its first line, at least
    /// [`crate::visitor::MIN_SECRET`] characters of visible ASCII (it travels
    /// in an HTTP header). The error names the file, never its content.
    pub fn read(path: &std::path::Path) -> Result<AdminToken, String> {
        let secret = crate::visitor::read_secret(path, "admin token")?;
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the admin token in {} must be printable ASCII without spaces: \
                 it is sent in an Authorization header",
                path.display()
            ));
        }
        Ok(AdminToken::new(&secret))
    }

    /// Holds `secret` as the token.
    pub fn new(secret: &str) -> AdminToken {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&crate::visitor::random_bytes());
        key[16..].copy_from_slice(&crate::visitor::random_bytes());
        let digest = hmac(&key, &[secret.as_bytes()]);
        let ref_key = hmac(secret.as_bytes(), &[b"likeboard block refs"]);
        AdminToken {
            key,
            digest,
            ref_key,
        }
    }

    /// Whether `presented` is the token, in constant time: see [`AdminToken::key`].
    /// The work is one HMAC over the presented bytes (linear in their length,
    /// whatever they hold; a head is at most 16 KiB) and one comparison of
    /// two fixed-size digests that looks at every byte.
    pub fn verify(&self, presented: &[u8]) -> bool {
        digests_equal(&hmac(&self.key, &[presented]), &self.digest)
    }

    /// The name a visitor's block goes by in the API: a keyed hash of the
    /// visitor id (HMAC-SHA-256 under a key derived from the token, 96 bits
    /// as hex). Stable, so blocking someone twice names one block; and it
    /// shows nothing of the id: without the token, knowing a visitor's id does
    /// not even let one check that a ref is theirs.
    pub fn reference(&self, visitor: &str) -> String {
        hmac(&self.ref_key, &[visitor.as_bytes()])[..REF_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// HMAC-SHA-256 of the concatenated `parts` under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Whether two digests are equal, looking at every byte whatever they hold:
/// the differences are OR-ed together and only the total is tested, so there
/// is no early exit for the first differing byte to reveal. The types are
/// fixed-size arrays, so the lengths cannot differ either. `black_box` keeps
/// the optimizer from turning the fold back into a comparison that stops early.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// This instance's copy of the blocks, for the check on every write.
///
/// Why a copy: blocks are site-wide, so they live in the site's keys, which
/// on a Redis Cluster are another slot (often another node) than the board a
/// like is for. Asking the store on every write would add a round trip to a
/// like, which is otherwise one script call. Blocks are few and change
/// rarely, so every instance keeps them all in memory:
///
/// - a refresher thread asks the store for the blocks' version every
///   [`BLOCKS_REFRESH`] (one `GET`) and reads them all again only when it
///   changed;
/// - a block made or lifted through this instance is applied here at once
///   ([`Blocks::noted`]), so its own moderator sees it take effect;
/// - expiry needs no refresh: each block carries its end, compared with the
///   clock on every check.
///
/// So a block made on another instance is in force here within about a
/// second (longer only while the store cannot be reached; the copy then
/// stays as it was). The check itself is a read lock and a hash lookup.
pub struct Blocks {
    store: Arc<dyn Store>,
    known: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    /// Visitor id -> when their block ends (`None`: for good).
    ends: HashMap<String, Option<u64>>,
    /// The store's version these are as of (`None` before the first read).
    version: Option<u64>,
    /// The newest version this instance's own changes made: a read of the
    /// store from before them (begun before, answered after) must not undo
    /// them here, so a copy older than this is not taken.
    floor: u64,
}

impl Blocks {
    pub fn new(store: Arc<dyn Store>) -> Blocks {
        Blocks {
            store,
            known: RwLock::new(Known::default()),
        }
    }

    /// When the block on `visitor` ends, if they are blocked at `now`:
    /// `Some(None)` for good, `Some(Some(ms))` until then.
    pub fn blocked(&self, visitor: &str, now: u64) -> Option<Option<u64>> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let ends = *known.ends.get(visitor)?;
        ends.is_none_or(|end| now < end).then_some(ends)
    }

    /// Applies a change made through this instance at once: `block` in
    /// force (or lifted, with `None` and the visitor), as of `version`.
    pub fn noted(&self, visitor: &str, ends: Option<Option<u64>>, version: u64) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        match ends {
            Some(ends) => known.ends.insert(visitor.to_string(), ends),
            None => known.ends.remove(visitor),
        };
        known.floor = known.floor.max(version);
    }

    /// Reads the blocks again if the store's version changed. The store is
    /// asked without holding the lock, so writes keep checking meanwhile.
    pub fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let version = self.store.blocks_version()?;
        if self.read().version == Some(version) {
            return Ok(());
        }
        let (blocks, version) = self.store.blocks()?;
        let now = now_ms();
        let ends = blocks
            .into_iter()
            .filter(|b| b.active(now))
            .map(|Block { visitor, until, .. }| (visitor, until))
            .collect();
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if version >= known.floor {
            known.ends = ends;
            known.version = Some(version);
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the refresher thread; it ends when `stop` is set.
    pub fn spawn_refresher(self: &Arc<Self>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let blocks = Arc::clone(self);
        thread::Builder::new()
            .name("blocks".into())
            .spawn(move || {
                let mut failing = false;
                while !stop.load(Ordering::Relaxed) {
                    match blocks.refresh() {
                        Ok(()) if failing => {
                            log::info!("blocks: reading them again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            log::warn!("blocks: cannot read them ({e}); keeping the last copy");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    thread::sleep(BLOCKS_REFRESH);
                }
            })
            .expect("spawning the blocks thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::time::Instant;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef-moderator";

    /// The token verifies; any other bytes, shorter, longer or nearly the
    /// same, do not; Debug shows nothing of it.
    #[test]
    fn only_the_token_verifies() {
        let token = AdminToken::new(TOKEN);
        assert!(token.verify(TOKEN.as_bytes()));
        let mut last_wrong = TOKEN.as_bytes().to_vec();
        *last_wrong.last_mut().unwrap() ^= 1;
        for wrong in [
            &b""[..],
            &TOKEN.as_bytes()[..TOKEN.len() - 1],
            format!("{TOKEN}x").as_bytes(),
            &last_wrong,
        ] {
            assert!(!token.verify(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert_eq!(format!("{token:?}"), "AdminToken(..)");
    }

    /// The comparison looks at every byte: digests that differ only in their
    /// first or only in their last byte are unequal alike, equal ones equal.
    #[test]
    fn digests_compare_whole() {
        let a = [7u8; 32];
        let mut first = a;
        first[0] ^= 0x80;
        let mut last = a;
        last[31] ^= 0x01;
        assert!(digests_equal(&a, &a));
        assert!(!digests_equal(&a, &first));
        assert!(!digests_equal(&a, &last));
    }

    /// Median time of `verify` on `presented`, in nanoseconds per call, over
    /// `rounds` rounds of `calls` calls.
    fn median_ns(token: &AdminToken, presented: &[u8], rounds: usize, calls: u32) -> Vec<f64> {
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..calls {
                    std::hint::black_box(token.verify(std::hint::black_box(presented)));
                }
                start.elapsed().as_nanos() as f64 / f64::from(calls)
            })
            .collect()
    }

    /// A wrong token that matches none of the token's characters and one that
    /// matches all but the last take the same time to refuse: the medians of
    /// interleaved rounds (robust to a noisy, shared machine) are within 25%
    /// of each other. By construction there is no difference to find (each is
    /// one HMAC of 32 bytes and one whole-digest comparison), and a
    /// byte-by-byte comparison would differ by nanoseconds only, so this
    /// guards against gross regressions (an early return, a plain string
    /// comparison before the hash) more than it measures; the construction
    /// is what `digests_compare_whole` and the types pin down.
    #[test]
    fn refusal_time_does_not_depend_on_the_matching_prefix() {
        let secret = "k".repeat(32);
        let token = AdminToken::new(&secret);
        let none = "x".repeat(32);
        let most = format!("{}x", "k".repeat(31));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            a.extend(median_ns(&token, none.as_bytes(), 5, 2_000));
            b.extend(median_ns(&token, most.as_bytes(), 5, 2_000));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(&mut a), median(&mut b));
        let ratio = a.max(b) / a.min(b);
        assert!(
            ratio < 1.25,
            "0 matching: {a:.0} ns, 31 matching: {b:.0} ns"
        );
    }

    /// A ref is stable for one visitor and token, differs between visitors
    /// and between tokens, and does not contain the visitor id.
    #[test]
    fn refs_are_keyed_hashes() {
        let token = AdminToken::new(TOKEN);
        let r = token.reference("c:0123456789abcdef0123456789abcdef");
        assert_eq!(r.len(), 2 * REF_BYTES);
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(r, token.reference("c:0123456789abcdef0123456789abcdef"));
        assert_eq!(
            r,
            AdminToken::new(TOKEN).reference("c:0123456789abcdef0123456789abcdef"),
            "another instance with the same token names it alike"
        );
        assert_ne!(r, token.reference("ip:192.0.2.1"));
        assert_ne!(
            r,
            AdminToken::new(&format!("{TOKEN}2")).reference("c:0123456789abcdef0123456789abcdef")
        );
        assert!(!r.contains("0123456789abcdef"));
    }

    fn block(visitor: &str, until: Option<u64>) -> Block {
        Block {
            visitor: visitor.into(),
            reference: format!("ref-{visitor}"),
            until,
            at: 1,
            board: "main".into(),
            comment: 1,
        }
    }

    /// The copy follows the store (read when the version moved), expiry is
    /// the clock's, and a change noted here is not undone by an older read.
    #[test]
    fn the_copy_follows_the_store() {
        let store = Arc::new(MemoryStore::new(10, 10));
        let blocks = Blocks::new(store.clone());
        let now = now_ms();
        store.block(&block("c:a", None), now).unwrap();
        store.block(&block("c:b", Some(now + 60_000)), now).unwrap();
        assert_eq!(blocks.blocked("c:a", now), None, "not read yet");
        blocks.refresh().unwrap();
        assert_eq!(blocks.blocked("c:a", now), Some(None));
        assert_eq!(blocks.blocked("c:b", now), Some(Some(now + 60_000)));
        assert_eq!(blocks.blocked("c:b", now + 60_000), None, "expired");
        assert_eq!(blocks.blocked("c:c", now), None);

        // Lifted in the store by another instance: gone here after a refresh.
        store.unblock("ref-c:a").unwrap();
        blocks.refresh().unwrap();
        assert_eq!(blocks.blocked("c:a", now), None);

        // Noted here with a version the store has not reached in our copy's
        // eyes: a read of an older version is not taken.
        let version = store.block(&block("c:d", None), now).unwrap();
        blocks.noted("c:d", Some(None), version + 5);
        blocks.refresh().unwrap();
        assert_eq!(blocks.blocked("c:d", now), Some(None));
    }
}
