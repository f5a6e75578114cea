//! The original demo's routes, served with `--seed-routes`: `/addComment`,
//! `/favorite`, `/commentList` and `/sse`, as thin adapters over the same
//! store and hub as the API. Kept so the demo's page and scripts still work.

use serde_json::json;
use tiny_http::Request;

use super::api;
use super::http::{check_same_origin, Reply};
use super::{check_blocked, check_rate, resume, App, Outcome, Visitor};
use crate::board::Board;
use crate::error::Error;
use crate::input::{self, CommentForm, Target};
use crate::sse::{Dialect, StreamOptions};
use crate::store::LikeOp;

/// Most comments one `/commentList` answer holds. The demo answered the top
/// N for any N, and its client asks for as many as it wants to show, perhaps
/// the whole board; we answer the top N up to this, and the top this many for
/// a larger N (the whole board, for any board smaller than it). It bounds one
/// answer's cost: one snapshot of the ranking, so the list is consistent (on
/// Redis one script, `snapshot.lua`, of three calls per page: 13-16 ms of
/// Redis time at the cap on the development machine, measured with SLOWLOG,
/// during which Redis serves no one else), and about 1 MiB of JSON for short
/// comments (40 MiB
/// were every comment 1,000 four-byte characters long).
pub const COMMENT_LIST_MAX: usize = 10_000;
/// What `/commentList` without an `offset` answers, as the demo did.
const COMMENT_LIST_DEFAULT: usize = 10;

/// The demo's routes, as [`super::Route::parse`] finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedRoute {
    /// `GET /addComment?content=..&nickName=..`.
    AddComment,
    /// `POST` (like) or `DELETE` (unlike) `/favorite?member=<id>`.
    Favorite(LikeOp),
    /// `GET /commentList?offset=<n>`: the top n comments.
    CommentList,
    /// `GET /sse`: the demo's event stream (likes only, `data: <id>@<method>`).
    Sse,
}

/// `GET /addComment`. Changes state on GET, as the demo did: unsafe
/// cross-site, hence opt-in.
pub(super) fn add_comment(app: &App, target: &Target, visitor: &Visitor) -> Result<Reply, Error> {
    check_blocked(app, visitor)?;
    check_rate(app, visitor)?;
    let form = CommentForm {
        content: target.param("content").map(str::to_string),
        nickname: target.param("nickName").map(str::to_string),
    };
    // The demo answered 200 (Go's default), and its client may check for it.
    Ok(Reply {
        status: 200,
        ..api::add_comment(app, &Board::main(), form, visitor)?
    })
}

/// `POST|DELETE /favorite?member=<id>`: like or unlike.
pub(super) fn favorite(
    app: &App,
    req: &Request,
    op: LikeOp,
    target: &Target,
    visitor: &Visitor,
) -> Result<Reply, Error> {
    check_same_origin(req)?;
    let member = target.param("member").unwrap_or("");
    if member.is_empty() {
        return Err(Error::BadRequest("member is required".into()));
    }
    let id = input::parse_id(member)?;
    check_blocked(app, visitor)?;
    check_rate(app, visitor)?;
    api::like(app, &Board::main(), id, visitor, op)
}

/// `GET /commentList?offset=<n>`: the top n comments (at most
/// [`COMMENT_LIST_MAX`]), as a bare array.
pub(super) fn comment_list(app: &App, target: &Target, visitor: &Visitor) -> Result<Reply, Error> {
    let n = top_n(target.param("offset"))?;
    let snapshot = app.store.snapshot(&Board::main(), &visitor.id, n, 0)?;
    let top: Vec<_> = snapshot.comments.into_iter().map(|c| c.comment).collect();
    Ok(Reply::json(200, json!(top)))
}

/// How many comments `?offset=` asks for, capped at [`COMMENT_LIST_MAX`]:
/// any run of digits, however long (a number past the cap, even past 64
/// bits, asks for the cap), else a `400`.
fn top_n(offset: Option<&str>) -> Result<usize, Error> {
    match offset {
        None | Some("") => Ok(COMMENT_LIST_DEFAULT),
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits, so parsing fails only on overflow: past the cap too.
            Ok(v.parse().unwrap_or(usize::MAX).min(COMMENT_LIST_MAX))
        }
        Some(_) => Err(Error::BadRequest("offset must be a whole number".into())),
    }
}

/// `GET /sse`: the demo's stream, resuming where the client asks.
pub(super) fn sse(app: &App, req: &Request, target: &Target) -> Outcome {
    Outcome::Stream(StreamOptions {
        board: Board::main(),
        dialect: Dialect::Seed,
        resume: resume(req, target),
        heartbeat: app.config.heartbeat,
        viewers: false,
        control: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any number up to the cap is itself; past it (also past 64 bits) the
    /// cap; no number is the default; anything else a 400.
    #[test]
    fn offset_is_capped_not_refused() {
        assert_eq!(top_n(None).unwrap(), COMMENT_LIST_DEFAULT);
        assert_eq!(top_n(Some("")).unwrap(), COMMENT_LIST_DEFAULT);
        for n in [0, 1, 500, 501, COMMENT_LIST_MAX] {
            assert_eq!(top_n(Some(&n.to_string())).unwrap(), n);
        }
        assert_eq!(top_n(Some("0012")).unwrap(), 12);
        let past = (COMMENT_LIST_MAX + 1).to_string();
        for big in [past.as_str(), "99999999999999999999999999"] {
            assert_eq!(top_n(Some(big)).unwrap(), COMMENT_LIST_MAX, "{big}");
        }
        for bad in ["-1", "+5", "1e3", "ten", " 5"] {
            assert!(top_n(Some(bad)).is_err(), "{bad}");
        }
    }
}
