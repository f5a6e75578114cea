//! Who is asking: the visitor cookie this server issued, or without one the
//! client's address. A like counts once per visitor.
//!
//! A cookie is only a visitor if we issued it. The cookie carries a random id
//! and a signature of it (HMAC-SHA-256 under a key every instance shares,
//! kept in the store): `lb_visitor=<32 hex id>.<32 hex signature>`. Any other
//! value (the unsigned ids of earlier versions, or ids a script makes up to
//! like again and again) counts as no cookie: the request is the visitor of
//! its client address, and gets a fresh signed cookie. So a script that sends
//! a new random cookie with every like adds one like, not one per cookie.
//!
//! Fresh cookies are what a script would collect instead, so issuing them is
//! rate-limited per client address (`--visitor-rate`, `ratelimit.rs`); the
//! HTTP edge (`server/visitor.rs`) drops the cookie [`Visitors::of`] offers
//! when the address has spent its allowance.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::lock::lock;
use crate::routes::Visitor;
use crate::store::Store;

/// The visitor cookie: an id and its signature, HttpOnly, SameSite=Lax.
pub const COOKIE: &str = "lb_visitor";
/// How long a cookie lives in the browser.
const MAX_AGE_SECS: u64 = 365 * 24 * 3600;
/// Bytes of the signature kept in the cookie (of 32): 128 bits are far beyond
/// guessing, and keep the cookie short.
const SIGNATURE_BYTES: usize = 16;
/// The shortest secret a key file may hold.
pub const MIN_SECRET: usize = 32;
/// How often to ask the store for the key while it does not answer.
const KEY_RETRY: Duration = Duration::from_secs(1);

/// Issues and checks visitor cookies; one per process, shared by the workers.
pub struct Visitors {
    /// Where the signing key lives, so every instance signs alike.
    store: Arc<dyn Store>,
    /// The key once the store gave it; and when we last asked, if it did not.
    key: Mutex<Key>,
}

#[derive(Default)]
struct Key {
    bytes: Option<Vec<u8>>,
    asked: Option<Instant>,
}

impl Visitors {
    pub fn new(store: Arc<dyn Store>) -> Visitors {
        Visitors {
            store,
            key: Mutex::new(Key::default()),
        }
    }

    /// Signs with `secret` instead of asking the store (`--visitor-key-file`).
    pub fn with_key(store: Arc<dyn Store>, secret: &str) -> Visitors {
        Visitors {
            store,
            key: Mutex::new(Key {
                bytes: Some(secret.as_bytes().to_vec()),
                asked: None,
            }),
        }
    }

    /// Reads a secret from `path`: its first line, at least
    /// [`MIN_SECRET`] characters.
    pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
        read_secret(path, "visitor key")
    }

    /// The visitor behind a request with this `Cookie` header from `ip`, and
    /// the `Set-Cookie` value to send if it has no (valid) cookie yet. While
    /// the store cannot give the key, everyone is the visitor of their address
    /// and no cookie is issued.
    pub fn of(&self, cookie_header: Option<&str>, ip: String) -> (Visitor, Option<String>) {
        let Some(key) = self.key() else {
            return (by_address(ip), None);
        };
        let signed = cookie_header
            .and_then(|c| crate::input::cookie(c, COOKIE))
            .and_then(|value| verified(&key, value));
        match signed {
            Some(id) => (
                Visitor {
                    id: format!("c:{id}"),
                    ip,
                },
                None,
            ),
            None => {
                let id = random_hex();
                let cookie = format!(
                    "{COOKIE}={id}.{}; Path=/; Max-Age={MAX_AGE_SECS}; HttpOnly; SameSite=Lax",
                    signature(&key, &id)
                );
                (by_address(ip), Some(cookie))
            }
        }
    }

    /// The signing key, from the store the first time (our random candidate
    /// becomes it if no instance has set one yet).
    fn key(&self) -> Option<Vec<u8>> {
        let mut key = lock(&self.key);
        if let Some(bytes) = &key.bytes {
            return Some(bytes.clone());
        }
        if key.asked.is_some_and(|at| at.elapsed() < KEY_RETRY) {
            return None;
        }
        key.asked = Some(Instant::now());
        let candidate = format!("{}{}", random_hex(), random_hex());
        match self.store.visitor_key(&candidate) {
            Ok(k) => {
                key.bytes = Some(k.into_bytes());
                key.bytes.clone()
            }
            Err(e) => {
                log::warn!(
                    "no key to sign visitor cookies yet ({e}); visitors are their addresses"
                );
                None
            }
        }
    }
}

/// Reads the secret called `what` from `path`: its first line, trimmed, at
/// least [`MIN_SECRET`] characters. The errors name the file, never the secret.
pub(crate) fn read_secret(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the {what} file {}: {e}", path.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.chars().count() < MIN_SECRET {
        return Err(format!(
            "the {what} in {} is shorter than {MIN_SECRET} characters",
            path.display()
        ));
    }
    Ok(secret)
}

fn by_address(ip: String) -> Visitor {
    Visitor {
        id: format!("ip:{ip}"),
        ip,
    }
}

/// The id in a cookie value `<id>.<signature>` if the signature is ours.
fn verified(key: &[u8], value: &str) -> Option<String> {
    let (id, sig) = value.split_once('.')?;
    let id = id.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let sig = from_hex(sig)?;
    if sig.len() != SIGNATURE_BYTES {
        return None;
    }
    // Compared in constant time by the library.
    mac(key, &id).verify_truncated_left(&sig).ok()?;
    Some(id)
}

/// The signature of `id`, as hex.
fn signature(key: &[u8], id: &str) -> String {
    let tag = mac(key, id).finalize().into_bytes();
    tag[..SIGNATURE_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mac(key: &[u8], id: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// 128 random bits as hex, from the OS.
fn random_hex() -> String {
    random_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// 128 random bits from the OS.
pub(crate) fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom: fall back to std's randomly keyed hasher.
        let hash = |salt: u64| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.finish()
        };
        bytes[..8].copy_from_slice(&hash(1).to_le_bytes());
        bytes[8..].copy_from_slice(&hash(2).to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn cookie_value(set_cookie: &str) -> &str {
        set_cookie
            .strip_prefix("lb_visitor=")
            .and_then(|rest| rest.split(';').next())
            .unwrap()
    }

    /// A cookie we issued is the same visitor on its next request; no new
    /// cookie is sent then.
    #[test]
    fn an_issued_cookie_is_a_visitor() {
        let visitors = Visitors::new(Arc::new(MemoryStore::new(10, 10)));
        let (first, set) = visitors.of(None, "192.0.2.1".into());
        assert_eq!(first.id, "ip:192.0.2.1");
        let header = format!("{COOKIE}={}", cookie_value(&set.unwrap()));
        let (again, none) = visitors.of(Some(&header), "192.0.2.1".into());
        assert!(
            again.id.starts_with("c:") && again.id.len() == 34,
            "{}",
            again.id
        );
        assert!(none.is_none());
    }

    /// Made-up ids, old unsigned ids and tampered signatures are no visitor:
    /// each is the visitor of its address, whatever the cookie says.
    #[test]
    fn forged_cookies_are_the_address() {
        let visitors = Visitors::new(Arc::new(MemoryStore::new(10, 10)));
        let (_, set) = visitors.of(None, "192.0.2.1".into());
        let good = cookie_value(&set.unwrap()).to_string();
        let (id, sig) = good.split_once('.').unwrap();
        let flipped = format!(
            "{id}.{}{}",
            if &sig[..1] == "0" { "1" } else { "0" },
            &sig[1..]
        );
        let other_id = format!("{}.{sig}", "a".repeat(32));
        for forged in [
            "0123456789abcdef0123456789abcdef".to_string(), // the old unsigned form
            flipped,
            other_id,
            format!("{id}."),
            format!("{id}.zz"),
            "nonsense".to_string(),
        ] {
            let header = format!("{COOKIE}={forged}");
            let (v, set) = visitors.of(Some(&header), "192.0.2.7".into());
            assert_eq!(v.id, "ip:192.0.2.7", "{forged}");
            assert!(
                set.is_some(),
                "a real cookie is offered instead of {forged}"
            );
        }
    }

    /// Two instances on one store sign alike: a cookie from one is a visitor
    /// of the other.
    #[test]
    fn instances_sharing_a_store_share_the_key() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(10, 10));
        let a = Visitors::new(Arc::clone(&store));
        let b = Visitors::new(store);
        let (_, set) = a.of(None, "192.0.2.1".into());
        let header = format!("{COOKIE}={}", cookie_value(&set.unwrap()));
        assert!(b
            .of(Some(&header), "192.0.2.1".into())
            .0
            .id
            .starts_with("c:"));
    }
}
