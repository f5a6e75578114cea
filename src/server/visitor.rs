//! Who is asking: the visitor behind a request, from its cookie or its client
//! address (the socket's peer, or behind a trusted proxy what it says).

use std::io;

use tiny_http::Request;

use crate::routes::{self, Visitor};

/// The visitor cookie: a random id, HttpOnly, SameSite=Lax.
pub const VISITOR_COOKIE: &str = "lb_visitor";

/// The visitor behind a request: the cookie's id, or the client IP without one
/// (and then a new cookie to set, so the next request has one). The client IP
/// is the socket's peer, or behind a trusted proxy what it says (`proxy.rs`).
pub(super) fn visitor_of(
    request: &Request,
    trusted: &[crate::proxy::Cidr],
) -> (Visitor, Option<String>) {
    let forwarded = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.as_str());
    let ip = request
        .remote_addr()
        .map(|a| crate::proxy::client_ip(a.ip(), forwarded, trusted).to_string())
        .unwrap_or_default();
    let cookie = routes::header(request, "Cookie")
        .and_then(|c| crate::input::cookie(c, VISITOR_COOKIE))
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    match cookie {
        Some(id) => (
            Visitor {
                id: format!("c:{}", id.to_ascii_lowercase()),
                ip,
            },
            None,
        ),
        None => {
            let set = format!(
                "{VISITOR_COOKIE}={}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
                random_hex()
            );
            (
                Visitor {
                    id: format!("ip:{ip}"),
                    ip,
                },
                Some(set),
            )
        }
    }
}

/// 128 random bits as hex, from the OS.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
