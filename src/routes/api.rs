//! The board's own handlers: the page and its assets, the comments API, the
//! event stream's options, the fault panel's buttons, health and metrics.
//! [`super::dispatch`] calls them once the route is known; they know no URLs
//! beyond what the route hands them.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tiny_http::Request;

use super::http::{Reply, CSP};
use super::{resume, truncate_path, App, At, Outcome, Route, Visitor, LIMIT_MAX};
use crate::board::Board;
use crate::classroom;
use crate::error::Error;
use crate::input::{self, CommentForm, Target};
use crate::metrics;
use crate::sse::{Dialect, StreamOptions};
use crate::store::{LikeOp, NewComment};

/// Default page size of `GET /api/comments`, and the page's first render.
const LIMIT_DEFAULT: usize = 100;

/// How many boards the page lists in its board list.
const BOARDS_ON_PAGE: usize = 12;

/// Where the page of `board` finds its comments and its stream, from the
/// route table: the paths that predate boards for the default board (so its
/// page reads as it always did), the board's own paths for any other.
pub(super) fn board_urls(board: &Board) -> (String, String) {
    let at = At::of(board);
    (
        Route::ListComments { board: at }.path(),
        Route::Events { board: at }.path(),
    )
}

/// The page of `board`; with `moderate`, with the moderator's controls (the
/// page asks for the token, and shows nothing more without it).
pub(super) fn index(app: &App, board: &Board, moderate: bool) -> Result<Reply, Error> {
    // The board renders without JavaScript too; the script then takes over.
    let snapshot = app.store.snapshot(board, "", LIMIT_DEFAULT, 0)?;
    let locked = snapshot.locked;
    let comments: Vec<_> = snapshot.comments.into_iter().map(|c| c.comment).collect();
    let (mut boards, _) = app.store.boards(BOARDS_ON_PAGE)?;
    // This board and the default one are always in the list, even before
    // their first comment (the store lists a board from then on).
    for shown in [Board::main(), board.clone()] {
        if !boards.iter().any(|b| b.board == shown.as_str()) {
            boards.push(crate::store::BoardInfo {
                board: shown.to_string(),
                comments: 0,
            });
        }
    }
    let (comments_url, events_url) = board_urls(board);
    let html = app
        .page
        .render(
            "index.html",
            minijinja::context! {
                comments => minijinja::Value::from(minijinja::value::Serde(&comments)),
                board => board.as_str(),
                boards => minijinja::Value::from(minijinja::value::Serde(&boards)),
                comments_url,
                events_url,
                seed_routes => app.config.seed_routes,
                classroom => app.config.classroom,
                locked,
                moderate,
            },
        )
        .map_err(|e| Error::Internal(format!("rendering index.html: {e:#}")))?;
    Ok(Reply {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: html.into_bytes(),
        headers: vec![
            ("Content-Security-Policy", CSP.to_string()),
            ("Cache-Control", "no-cache".to_string()),
        ],
    })
}

pub(super) fn static_file(app: &App, name: &str) -> Result<Reply, Error> {
    let asset = app
        .page
        .asset(name)
        .ok_or_else(|| Error::NotFound(format!("no static file {:?}", truncate_path(name))))?;
    let mut headers = vec![("Cache-Control", "no-cache".to_string())];
    if asset.content_type.starts_with("text/javascript") {
        // A worker runs under the policy its own script arrives with, not the
        // page's: give `stream-worker.js` (and every script) the same one.
        headers.push(("Content-Security-Policy", CSP.to_string()));
    }
    Ok(Reply {
        status: 200,
        content_type: asset.content_type,
        body: asset.bytes,
        headers,
    })
}

/// `GET /api/boards`: the boards, most comments first, and how many there are.
pub(super) fn boards(app: &App, target: &Target) -> Result<Reply, Error> {
    let limit = input::parse_count(target.param("limit"), "limit", LIMIT_DEFAULT, LIMIT_MAX)?;
    let (boards, total) = app.store.boards(limit)?;
    Ok(Reply::json(
        200,
        json!({ "boards": boards, "total": total }),
    ))
}

pub(super) fn list(
    app: &App,
    board: &Board,
    target: &Target,
    visitor: &Visitor,
) -> Result<Reply, Error> {
    let limit = input::parse_count(target.param("limit"), "limit", LIMIT_DEFAULT, LIMIT_MAX)?;
    let offset = input::parse_count(target.param("offset"), "offset", 0, 100_000_000)?;
    let snapshot = app.store.snapshot(board, &visitor.id, limit, offset)?;
    Ok(Reply::json(
        200,
        json!({
            "comments": snapshot.comments,
            // A string: event ids are opaque to clients, as Last-Event-ID is.
            "last_event_id": snapshot.last_event_id.to_string(),
            // As of the same instant: the page disables its form and likes.
            "locked": snapshot.locked,
        }),
    ))
}

/// Posts a comment by `visitor`, whose id the store keeps as its author
/// (never shown: a moderator can block them by the comment).
pub(super) fn add_comment(
    app: &App,
    board: &Board,
    form: CommentForm,
    visitor: &Visitor,
) -> Result<Reply, Error> {
    let (nickname, content) = form.validate()?;
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let comment = app.store.add_comment(
        board,
        NewComment {
            nickname,
            content,
            created_at,
            author: visitor.id.clone(),
        },
    )?;
    let mut reply = Reply::json(201, json!(comment));
    let (comments_url, _) = board_urls(board);
    reply
        .headers
        .push(("Location", format!("{comments_url}/{}", comment.id)));
    Ok(reply)
}

pub(super) fn like(
    app: &App,
    board: &Board,
    id: u64,
    visitor: &Visitor,
    op: LikeOp,
) -> Result<Reply, Error> {
    let outcome = app
        .store
        .set_like(board, id, &visitor.id, op)?
        .ok_or_else(|| Error::NotFound(format!("no comment {id}")))?;
    Ok(Reply::json(
        200,
        json!({ "id": outcome.id, "score": outcome.score, "liked": outcome.liked }),
    ))
}

/// `POST /api/classroom/{token}/{action}`: a button of the fault panel.
pub(super) fn classroom_action(app: &App, token: &str, action: &str) -> Result<Reply, Error> {
    let room = app
        .classroom
        .as_ref()
        .ok_or_else(|| Error::NotFound("the fault panel is off".into()))?;
    if !classroom::valid_token(token) {
        return Err(Error::BadRequest(
            "a client token is 16-64 hex digits".into(),
        ));
    }
    let act = classroom::Action::parse(action)
        .ok_or_else(|| Error::NotFound(format!("no fault {:?}", truncate_path(action))))?;
    if !room.act(token, act) {
        return Err(Error::Unavailable("too many classroom clients".into()));
    }
    Ok(Reply::json(
        200,
        json!({ "client": token, "fault": action }),
    ))
}

/// The reply an armed "answer 204/500" gives a stream request: EventSource
/// gives up for good on either (204 is the spec's polite way to say "stop").
fn fault_answer(status: u16) -> Reply {
    let mut reply = if status == 204 {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers: Vec::new(),
        }
    } else {
        Reply::json(
            status,
            json!({ "error": "the fault panel asked for this error" }),
        )
    };
    reply
        .headers
        .push(("Cache-Control", "no-cache".to_string()));
    reply
}

pub(super) fn healthz(app: &App) -> Reply {
    let store = app.store.ping();
    if let Err(e) = &store {
        log::warn!("healthz: {e}");
    }
    let mut body = json!({
        "status": if store.is_ok() { "ok" } else { "unavailable" },
        "subscribers": app.hub.len(),
        "max_subscribers": app.hub.cap(),
        "last_event_id": app.pump.last_delivered.load(Ordering::Relaxed).to_string(),
        "uptime_s": app.started.elapsed().as_secs(),
        // "starting" until the pump has reached the store once (see pump.rs).
        "pump": if app.pump.running.load(Ordering::Relaxed) { "running" } else { "starting" },
    });
    // Named after the store ("redis": "ok"), so a failing part is named; the
    // error itself goes to the log, not to whoever polls this.
    body[app.store.name()] = json!(if store.is_ok() { "ok" } else { "unreachable" });
    Reply::json(if store.is_ok() { 200 } else { 503 }, body)
}

/// The Prometheus exposition. A reverse proxy should not pass this route on
/// (see deploy/nginx-likeboard.conf): Prometheus scrapes each instance directly.
pub(super) fn metrics(app: &App) -> Result<Reply, Error> {
    let text = app
        .metrics
        .render(&app.hub, &app.pump, &*app.store)
        .map_err(|e| Error::Internal(format!("encoding metrics: {e}")))?;
    Ok(Reply {
        status: 200,
        content_type: metrics::CONTENT_TYPE,
        body: text.into_bytes(),
        headers: vec![("Cache-Control", "no-store".to_string())],
    })
}

/// `GET /events` (or a board's): a stream resuming where the client asks, or
/// the answer the fault panel has armed for this client's reconnect.
pub(super) fn events(
    app: &App,
    req: &Request,
    board: &Board,
    target: &Target,
) -> Result<Outcome, Error> {
    let mut control = None;
    let token = target.param("client").filter(|t| classroom::valid_token(t));
    if let (Some(room), Some(token)) = (&app.classroom, token) {
        // A fault armed from the panel answers this reconnect instead.
        if let Some(status) = room.answer_for(token) {
            return Ok(Outcome::Reply(fault_answer(status)));
        }
        control = room.attach(token);
    }
    Ok(Outcome::Stream(StreamOptions {
        board: board.clone(),
        dialect: Dialect::Standard,
        resume: resume(req, target),
        heartbeat: app.config.heartbeat,
        viewers: target.param("viewers") == Some("1"),
        control,
    }))
}
