//! A board's name: the one type that says "this is a board" everywhere from
//! the route to the Redis key.
//!
//! A board is named by a slug, `[a-z0-9][a-z0-9-]{0,63}`: safe in a URL path,
//! a Redis key, a log line and an HTML attribute without any escaping, and
//! never empty. [`Board::parse`] is the only way to make one from outside, so
//! a `Board` in hand is always valid. The board that likeboard served before
//! boards existed is [`MAIN`]; every route without a board in its path means it.

use std::fmt;
use std::sync::Arc;

/// The default board: `/`, `/api/comments`, `/events` and the seed's routes.
pub const MAIN: &str = "main";

/// Longest slug, in bytes (all ASCII).
pub const MAX_LEN: usize = 64;

/// A valid board name. Cheap to clone (shared text), compared by its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Board(Arc<str>);

impl Board {
    /// The slug if it is one: a lowercase letter or digit, then up to 63 of
    /// those or `-`. A clear reason otherwise, for the 400.
    pub fn parse(slug: &str) -> Result<Board, String> {
        let bytes = slug.as_bytes();
        let valid = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match bytes.first() {
            None => Err("a board name cannot be empty".into()),
            _ if bytes.len() > MAX_LEN => {
                Err(format!("a board name is at most {MAX_LEN} characters"))
            }
            Some(first) if !valid(first) => {
                Err("a board name starts with a lowercase letter or a digit".into())
            }
            _ if !bytes.iter().all(|b| valid(b) || *b == b'-') => {
                Err("a board name holds only lowercase letters, digits and '-'".into())
            }
            _ => Ok(Board(Arc::from(slug))),
        }
    }

    /// The default board, [`MAIN`].
    pub fn main() -> Board {
        Board(Arc::from(MAIN))
    }

    pub fn is_main(&self) -> bool {
        &*self.0 == MAIN
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Board({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slugs are accepted exactly as the pattern says, and nothing else.
    #[test]
    fn slugs() {
        for good in ["main", "a", "0", "post-17", "class-2b", &"x".repeat(64)] {
            assert_eq!(Board::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "-a",
            "A",
            "main!",
            "a b",
            "a/b",
            "a_b",
            "é",
            "a.b",
            "%2e",
            &"x".repeat(65),
        ] {
            assert!(Board::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Board::main().is_main());
        assert!(!Board::parse("mainly").unwrap().is_main());
    }
}
