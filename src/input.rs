//! Parsing and validating what clients send: query strings, form and JSON
//! bodies, cookies, ids, and the text of a comment.
//!
//! Everything here is strict and total: any byte sequence yields a value or an
//! [`Error::BadRequest`] naming the problem, never a panic. No HTTP types.

use serde::Deserialize;

use crate::error::Error;

/// Longest comment, in characters, after trimming.
pub const CONTENT_MAX_CHARS: usize = 1000;
/// Longest nickname, in characters, after trimming.
pub const NICKNAME_MAX_CHARS: usize = 40;
/// Nickname used when none is given.
pub const DEFAULT_NICKNAME: &str = "anonymous";

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`), requiring UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Error::BadRequest("malformed percent-encoding".into()))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::BadRequest("text is not valid UTF-8".into()))
}

/// Splits `a=1&b=2` into decoded pairs (form encoding: `+` is a space).
pub fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, Error> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// A request target split into its decoded path and query pairs.
pub struct Target {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, Error> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        Ok(Target {
            path: percent_decode(path, false)?,
            query: parse_pairs(query)?,
        })
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a comment id: decimal digits only, at least 1, fits in u64.
pub fn parse_id(s: &str) -> Result<u64, Error> {
    let invalid = || Error::BadRequest(format!("invalid comment id {:?}", truncate(s, 40)));
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(id) => Ok(id),
    }
}

/// Parses an optional non-negative integer parameter with a default and a maximum.
pub fn parse_count(
    value: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Error> {
    match value {
        None | Some("") => Ok(default),
        Some(v) if v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = v
                .parse()
                .map_err(|_| Error::BadRequest(format!("invalid {name}")))?;
            if n > max {
                Err(Error::BadRequest(format!("{name} must be at most {max}")))
            } else {
                Ok(n)
            }
        }
        Some(_) => Err(Error::BadRequest(format!("{name} must be a whole number"))),
    }
}

/// The fields of a new comment, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentForm {
    pub content: Option<String>,
    pub nickname: Option<String>,
}

impl CommentForm {
    /// From a JSON object body.
    pub fn from_json(body: &[u8]) -> Result<CommentForm, Error> {
        serde_json::from_slice(body).map_err(|e| {
            let what = if e.is_syntax() || e.is_eof() {
                "malformed JSON"
            } else {
                "wrong JSON shape"
            };
            Error::BadRequest(format!(
                "{what}: expected {{\"content\": \"...\", \"nickname\": \"...\"}}"
            ))
        })
    }

    /// From a form-encoded body (`content=...&nickname=...`).
    pub fn from_form(body: &[u8]) -> Result<CommentForm, Error> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Error::BadRequest("body is not valid UTF-8".into()))?;
        let mut form = CommentForm::default();
        for (k, v) in parse_pairs(text)? {
            match k.as_str() {
                "content" => form.content = Some(v),
                "nickname" => form.nickname = Some(v),
                _ => {}
            }
        }
        Ok(form)
    }

    /// Checks and normalises the fields: returns (nickname, content).
    pub fn validate(self) -> Result<(String, String), Error> {
        let content = clean_text(self.content.as_deref().unwrap_or(""), "content", true)?;
        if content.is_empty() {
            return Err(Error::BadRequest("content is required".into()));
        }
        if content.chars().count() > CONTENT_MAX_CHARS {
            return Err(Error::BadRequest(format!(
                "content must be at most {CONTENT_MAX_CHARS} characters"
            )));
        }
        let nickname = clean_text(self.nickname.as_deref().unwrap_or(""), "nickname", false)?;
        if nickname.chars().count() > NICKNAME_MAX_CHARS {
            return Err(Error::BadRequest(format!(
                "nickname must be at most {NICKNAME_MAX_CHARS} characters"
            )));
        }
        let nickname = if nickname.is_empty() {
            DEFAULT_NICKNAME.to_string()
        } else {
            nickname
        };
        Ok((nickname, content))
    }
}

/// Trims, turns CRLF into LF, and refuses control characters (newlines only
/// where `newlines` is true).
fn clean_text(raw: &str, field: &str, newlines: bool) -> Result<String, Error> {
    let text = raw.replace("\r\n", "\n");
    let text = text.trim();
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() && !(newlines && c == '\n'))
    {
        return Err(Error::BadRequest(format!(
            "{field} may not contain control characters (found U+{:04X})",
            c as u32
        )));
    }
    Ok(text.to_string())
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percent-decoding handles escapes and plus signs, and rejects broken escapes and bad UTF-8.
    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%zz", true).is_err());
        assert!(percent_decode("%4", true).is_err());
        assert!(percent_decode("%ff%fe", true).is_err());
    }

    /// Ids are positive decimal numbers only.
    #[test]
    fn ids() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in [
            "",
            "0",
            "-1",
            "1.5",
            "abc",
            "99999999999999999999",
            "+1",
            " 1",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?}");
        }
    }

    /// Content is trimmed, required, bounded, and free of control characters.
    #[test]
    fn comment_validation() {
        let form = |c: &str, n: &str| CommentForm {
            content: Some(c.into()),
            nickname: Some(n.into()),
        };
        assert_eq!(
            form("  hi\r\nthere ", "").validate().unwrap(),
            ("anonymous".to_string(), "hi\nthere".to_string())
        );
        assert!(form("   ", "x").validate().is_err());
        assert!(form(&"é".repeat(1001), "x").validate().is_err());
        assert!(form(&"é".repeat(1000), "x").validate().is_ok());
        assert!(form("a\u{0}b", "x").validate().is_err());
        assert!(form("ok", "a\nb").validate().is_err());
        assert!(form("ok", &"n".repeat(41)).validate().is_err());
    }

    /// JSON bodies of the wrong shape are refused with a clear message.
    #[test]
    fn json_shapes() {
        assert!(CommentForm::from_json(br#"{"content":"x"}"#).is_ok());
        assert!(CommentForm::from_json(br#"["x"]"#).is_err());
        assert!(CommentForm::from_json(br#"{"content":5}"#).is_err());
        assert!(CommentForm::from_json(br#"{"content":"x","admin":true}"#).is_err());
        assert!(CommentForm::from_json(b"{").is_err());
    }

    /// Cookies are found by exact name.
    #[test]
    fn cookies() {
        assert_eq!(
            cookie("a=1; lb_visitor=abc; b=2", "lb_visitor"),
            Some("abc")
        );
        assert_eq!(cookie("xlb_visitor=abc", "lb_visitor"), None);
    }
}
