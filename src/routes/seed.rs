//! The original demo's routes, served with `--seed-routes`: `/addComment`,
//! `/favorite`, `/commentList` and `/sse`, as thin adapters over the same
//! store and hub as the API. Kept so the demo's page and scripts still work.

use serde_json::json;
use tiny_http::{Method, Request};

use super::http::{check_same_origin, header, Reply};
use super::{add_comment, check_rate, like, not_found_or_405, App, Outcome, Visitor, LIMIT_MAX};
use crate::error::Error;
use crate::input::{self, CommentForm, Target};
use crate::sse::{Dialect, Resume, StreamOptions};
use crate::store::LikeOp;

/// The original demo's routes, as thin adapters over the same store and hub.
pub(super) fn seed_route(
    app: &App,
    req: &mut Request,
    method: &Method,
    target: &Target,
    visitor: &Visitor,
) -> Result<Outcome, Error> {
    let reply = match (method, target.path.as_str()) {
        // Changes state on GET, as the demo did: unsafe cross-site, hence opt-in.
        (Method::Get, "/addComment") => {
            check_rate(app, visitor)?;
            let form = CommentForm {
                content: target.param("content").map(str::to_string),
                nickname: target.param("nickName").map(str::to_string),
            };
            // The demo answered 200 (Go's default), and its client may check for it.
            Reply {
                status: 200,
                ..add_comment(app, form)?
            }
        }
        (Method::Post | Method::Delete, "/favorite") => {
            check_same_origin(req)?;
            let member = target.param("member").unwrap_or("");
            if member.is_empty() {
                return Err(Error::BadRequest("member is required".into()));
            }
            let id = input::parse_id(member)?;
            check_rate(app, visitor)?;
            let op = if *method == Method::Post {
                LikeOp::Like
            } else {
                LikeOp::Unlike
            };
            like(app, id, visitor, op)?
        }
        (Method::Get, "/commentList") => {
            let n = input::parse_count(target.param("offset"), "offset", 10, LIMIT_MAX)?;
            let snapshot = app.store.snapshot(&visitor.id, n, 0)?;
            let top: Vec<_> = snapshot.comments.into_iter().map(|c| c.comment).collect();
            Reply::json(200, json!(top))
        }
        (Method::Get, "/sse") => {
            let resume = header(req, "Last-Event-ID").or_else(|| target.param("since"));
            return Ok(Outcome::Stream(StreamOptions {
                dialect: Dialect::Seed,
                resume: Resume::parse(resume),
                heartbeat: app.config.heartbeat,
                viewers: false,
                control: None,
            }));
        }
        (_, path) => return Err(not_found_or_405(path, true)),
    };
    Ok(Outcome::Reply(reply))
}
