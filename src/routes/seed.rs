//! The original demo's routes, served with `--seed-routes`: `/addComment`,
//! `/favorite`, `/commentList` and `/sse`, as thin adapters over the same
//! store and hub as the API. Kept so the demo's page and scripts still work.

use serde_json::json;
use tiny_http::Request;

use super::api;
use super::http::{check_same_origin, Reply};
use super::{check_blocked, check_rate, resume, App, Outcome, Visitor, LIMIT_MAX};
use crate::board::Board;
use crate::error::Error;
use crate::input::{self, CommentForm, Target};
use crate::sse::{Dialect, StreamOptions};
use crate::store::LikeOp;

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

/// `GET /commentList?offset=<n>`: the top n comments, as a bare array.
pub(super) fn comment_list(app: &App, target: &Target, visitor: &Visitor) -> Result<Reply, Error> {
    let n = input::parse_count(target.param("offset"), "offset", 10, LIMIT_MAX)?;
    let snapshot = app.store.snapshot(&Board::main(), &visitor.id, n, 0)?;
    let top: Vec<_> = snapshot.comments.into_iter().map(|c| c.comment).collect();
    Ok(Reply::json(200, json!(top)))
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
