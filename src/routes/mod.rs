//! Request -> reply: the only place that knows the URLs.
//!
//! Each handler validates its input, calls the store synchronously and returns
//! a [`Reply`], or asks the server to open an event stream ([`Outcome::Stream`]).
//! Handlers never broadcast: the store logs every change and the pump delivers it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tiny_http::{Method, Request};

use crate::classroom::{self, Classroom};
use crate::config::Config;
use crate::error::Error;
use crate::hub::Hub;
use crate::input::{self, CommentForm, Target};
use crate::metrics::{self, Metrics};
use crate::page::Page;
use crate::pump::PumpStats;
use crate::ratelimit::RateLimiter;
use crate::sse::{Dialect, Message, Resume, StreamOptions};

mod http;
mod seed;

use crate::store::{LikeOp, NewComment, Store};
use http::CSP;
use http::{check_head, check_same_origin, read_comment_form};
pub use http::{header, Reply, BODY_LIMIT};

/// Default and maximum page size of `GET /api/comments`.
const LIMIT_DEFAULT: usize = 100;
pub(super) const LIMIT_MAX: usize = 500;

/// Everything a request handler may use; shared by all threads.
pub struct App {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub<Message>>,
    pub page: Page,
    pub limiter: RateLimiter,
    pub config: Config,
    pub pump: Arc<PumpStats>,
    pub started: Instant,
    /// Request counts and durations, store errors; rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The fault panel's state, with `--classroom` only.
    pub classroom: Option<Classroom>,
}

/// Who is asking: the visitor id from the cookie (or the client IP without one).
pub struct Visitor {
    /// The id likes are recorded under: `c:<cookie>` or `ip:<address>`.
    pub id: String,
    /// The client IP, for the per-IP rate limit.
    pub ip: String,
}

/// What to do with a request.
pub enum Outcome {
    Reply(Reply),
    /// Open an event stream with these options (dialect, where to resume...).
    Stream(StreamOptions),
}

/// Whether `req` asks for an event stream. While the server stops, these still
/// reach the stream hand-off, which answers `200` with a retry hint: a `503`
/// would make EventSource give up for good.
pub fn opens_stream(app: &App, req: &Request) -> bool {
    let path = req.url().split('?').next().unwrap_or("");
    matches!(req.method(), Method::Get)
        && (path == "/events" || (app.config.seed_routes && path == "/sse"))
}

/// Routes one request. `req` is mutable only to read its body.
pub fn route(app: &App, req: &mut Request, visitor: &Visitor) -> Result<Outcome, Error> {
    check_head(req)?;
    let target = Target::parse(req.url())?;
    // HEAD is GET without a body; tiny_http leaves the body out for us.
    let method = match req.method() {
        Method::Head => Method::Get,
        m => m.clone(),
    };
    let path = target.path.as_str();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let reply = match (&method, segments.as_slice()) {
        (Method::Get, [""]) => index(app)?,
        (Method::Get, ["static", name]) => static_file(app, name)?,
        (Method::Get, ["api", "comments"]) => list(app, &target, visitor)?,
        (Method::Post, ["api", "comments"]) => {
            check_same_origin(req)?;
            check_rate(app, visitor)?;
            let form = read_comment_form(req)?;
            add_comment(app, form)?
        }
        (Method::Post | Method::Delete, ["api", "comments", id, "like"]) => {
            check_same_origin(req)?;
            let id = input::parse_id(id)?;
            check_rate(app, visitor)?;
            let op = if method == Method::Post {
                LikeOp::Like
            } else {
                LikeOp::Unlike
            };
            like(app, id, visitor, op)?
        }
        (Method::Get, ["events"]) => {
            let resume = header(req, "Last-Event-ID").or_else(|| target.param("since"));
            let mut control = None;
            let token = target.param("client").filter(|t| classroom::valid_token(t));
            if let (Some(room), Some(token)) = (&app.classroom, token) {
                // A fault armed from the panel answers this reconnect instead.
                if let Some(status) = room.answer_for(token) {
                    return Ok(Outcome::Reply(fault_answer(status)));
                }
                control = room.attach(token);
            }
            return Ok(Outcome::Stream(StreamOptions {
                dialect: Dialect::Standard,
                resume: Resume::parse(resume),
                heartbeat: app.config.heartbeat,
                viewers: target.param("viewers") == Some("1"),
                control,
            }));
        }
        (Method::Post, ["api", "classroom", token, action]) if app.classroom.is_some() => {
            check_same_origin(req)?;
            classroom_action(app, token, action)?
        }
        (Method::Get, ["healthz"]) => healthz(app),
        (Method::Get, ["metrics"]) => metrics(app)?,
        _ if app.config.seed_routes => {
            return seed::seed_route(app, req, &method, &target, visitor)
        }
        _ => return Err(not_found_or_405(path, false)),
    };
    Ok(Outcome::Reply(reply))
}

/// 405 with `Allow` for a known path and a wrong method; 404 otherwise.
pub(super) fn not_found_or_405(path: &str, seed: bool) -> Error {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allow = match segments.as_slice() {
        [""] | ["events"] | ["healthz"] | ["metrics"] | ["static", _] => Some("GET, HEAD"),
        ["api", "comments"] => Some("GET, HEAD, POST"),
        ["api", "comments", _, "like"] => Some("POST, DELETE"),
        ["addComment"] | ["commentList"] | ["sse"] if seed => Some("GET, HEAD"),
        ["favorite"] if seed => Some("POST, DELETE"),
        _ => None,
    };
    match allow {
        Some(allow) => Error::MethodNotAllowed { allow },
        None => Error::NotFound(format!("no route for {}", truncate_path(path))),
    }
}

/// The route a path belongs to, as a fixed pattern: the `route` label of the
/// request metrics. Never the raw path, or every comment id and every probe for
/// `/wp-login.php` would make a new time series.
pub fn pattern(path: &str, seed_routes: bool) -> &'static str {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => "/",
        ["static", _] => "/static/{name}",
        ["api", "comments"] => "/api/comments",
        ["api", "comments", _, "like"] => "/api/comments/{id}/like",
        ["events"] => "/events",
        ["healthz"] => "/healthz",
        ["metrics"] => "/metrics",
        ["addComment"] if seed_routes => "/addComment",
        ["favorite"] if seed_routes => "/favorite",
        ["commentList"] if seed_routes => "/commentList",
        ["sse"] if seed_routes => "/sse",
        _ => "unmatched",
    }
}

fn truncate_path(path: &str) -> String {
    path.chars().take(100).collect()
}

fn index(app: &App) -> Result<Reply, Error> {
    // The board renders without JavaScript too; the script then takes over.
    let snapshot = app.store.snapshot("", LIMIT_DEFAULT, 0)?;
    let comments: Vec<_> = snapshot.comments.into_iter().map(|c| c.comment).collect();
    let html = app
        .page
        .render(
            "index.html",
            minijinja::context! { comments => minijinja::Value::from(minijinja::value::Serde(&comments)), seed_routes => app.config.seed_routes, classroom => app.config.classroom },
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

fn static_file(app: &App, name: &str) -> Result<Reply, Error> {
    let asset = app
        .page
        .asset(name)
        .ok_or_else(|| Error::NotFound(format!("no static file {:?}", truncate_path(name))))?;
    Ok(Reply {
        status: 200,
        content_type: asset.content_type,
        body: asset.bytes,
        headers: vec![("Cache-Control", "no-cache".to_string())],
    })
}

fn list(app: &App, target: &Target, visitor: &Visitor) -> Result<Reply, Error> {
    let limit = input::parse_count(target.param("limit"), "limit", LIMIT_DEFAULT, LIMIT_MAX)?;
    let offset = input::parse_count(target.param("offset"), "offset", 0, 100_000_000)?;
    let snapshot = app.store.snapshot(&visitor.id, limit, offset)?;
    Ok(Reply::json(
        200,
        json!({
            "comments": snapshot.comments,
            // A string: event ids are opaque to clients, as Last-Event-ID is.
            "last_event_id": snapshot.last_event_id.to_string(),
        }),
    ))
}

pub(super) fn add_comment(app: &App, form: CommentForm) -> Result<Reply, Error> {
    let (nickname, content) = form.validate()?;
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let comment = app.store.add_comment(NewComment {
        nickname,
        content,
        created_at,
    })?;
    let mut reply = Reply::json(201, json!(comment));
    reply
        .headers
        .push(("Location", format!("/api/comments/{}", comment.id)));
    Ok(reply)
}

pub(super) fn like(app: &App, id: u64, visitor: &Visitor, op: LikeOp) -> Result<Reply, Error> {
    let outcome = app
        .store
        .set_like(id, &visitor.id, op)?
        .ok_or_else(|| Error::NotFound(format!("no comment {id}")))?;
    Ok(Reply::json(
        200,
        json!({ "id": outcome.id, "score": outcome.score, "liked": outcome.liked }),
    ))
}

/// `POST /api/classroom/{token}/{action}`: a button of the fault panel.
fn classroom_action(app: &App, token: &str, action: &str) -> Result<Reply, Error> {
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

fn healthz(app: &App) -> Reply {
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
fn metrics(app: &App) -> Result<Reply, Error> {
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

pub(super) fn check_rate(app: &App, visitor: &Visitor) -> Result<(), Error> {
    app.limiter
        .check(&visitor.id, &visitor.ip)
        .map_err(|retry_after| Error::TooManyRequests { retry_after })
}
