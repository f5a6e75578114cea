//! Request -> reply: the only place that knows the URLs.
//!
//! Each handler validates its input, calls the store synchronously and returns
//! a [`Reply`], or asks the server to open an event stream ([`Outcome::Stream`]).
//! Handlers never broadcast: the store logs every change and the pump delivers it.

use std::io::Read;
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
use crate::store::{LikeOp, NewComment, Store};

/// Largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest request target accepted (414 above it).
pub const URL_LIMIT: usize = 8 * 1024;
/// Most header fields accepted (431 above it); browsers send about twenty.
pub const HEADER_COUNT_LIMIT: usize = 100;
/// Default and maximum page size of `GET /api/comments`.
const LIMIT_DEFAULT: usize = 100;
const LIMIT_MAX: usize = 500;
/// The Content-Security-Policy of the page: scripts and styles only from our
/// own origin, so no comment text can ever run as script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

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

/// A complete response.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// The reply for an error: its status, JSON body and any header it needs.
    pub fn error(e: &Error) -> Reply {
        let mut reply = Reply::json(
            e.status(),
            serde_json::from_str(&e.body()).unwrap_or_default(),
        );
        match e {
            Error::MethodNotAllowed { allow } => reply.headers.push(("Allow", allow.to_string())),
            Error::TooManyRequests { retry_after } => {
                reply.headers.push(("Retry-After", retry_after.to_string()))
            }
            _ => {}
        }
        reply
    }
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
        _ if app.config.seed_routes => return seed_route(app, req, &method, &target, visitor),
        _ => return Err(not_found_or_405(path, false)),
    };
    Ok(Outcome::Reply(reply))
}

/// The original demo's routes, as thin adapters over the same store and hub.
fn seed_route(
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

/// 405 with `Allow` for a known path and a wrong method; 404 otherwise.
fn not_found_or_405(path: &str, seed: bool) -> Error {
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

fn add_comment(app: &App, form: CommentForm) -> Result<Reply, Error> {
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

fn like(app: &App, id: u64, visitor: &Visitor, op: LikeOp) -> Result<Reply, Error> {
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

/// Refuses request heads larger than we are willing to look at. tiny_http has
/// already read the head; the connection guard bounds how much it may read.
fn check_head(req: &Request) -> Result<(), Error> {
    if req.url().len() > URL_LIMIT {
        return Err(Error::UriTooLong { limit: URL_LIMIT });
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
        .sum();
    if headers.len() > HEADER_COUNT_LIMIT || bytes > crate::guard::MAX_HEAD_BYTES {
        return Err(Error::HeaderTooLarge);
    }
    Ok(())
}

fn check_rate(app: &App, visitor: &Visitor) -> Result<(), Error> {
    app.limiter
        .check(&visitor.id, &visitor.ip)
        .map_err(|retry_after| Error::TooManyRequests { retry_after })
}

/// Refuses writes sent from another site's page (a browser tells us through
/// `Sec-Fetch-Site` and `Origin`). Clients that send neither (curl) pass.
fn check_same_origin(req: &Request) -> Result<(), Error> {
    let refuse = || Error::Forbidden("cross-site writes are not allowed".into());
    if let Some(site) = header(req, "Sec-Fetch-Site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(refuse());
        }
    }
    if let Some(origin) = header(req, "Origin") {
        let host = header(req, "Host").unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(refuse());
        }
    }
    Ok(())
}

fn read_comment_form(req: &mut Request) -> Result<CommentForm, Error> {
    if req.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return Err(Error::PayloadTooLarge { limit: BODY_LIMIT });
    }
    let content_type = header(req, "Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut body = Vec::new();
    req.as_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| Error::BadRequest("could not read the body".into()))?;
    if body.len() > BODY_LIMIT {
        return Err(Error::PayloadTooLarge { limit: BODY_LIMIT });
    }
    let mime = content_type.split(';').next().unwrap_or("").trim();
    match mime {
        "application/json" => CommentForm::from_json(&body),
        "application/x-www-form-urlencoded" => CommentForm::from_form(&body),
        _ => Err(Error::UnsupportedMediaType),
    }
}

/// The value of the first header called `name` (case-insensitive).
pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}
