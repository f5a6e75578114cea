//! The moderator's routes (`--admin-token-file`): hide, restore and delete
//! comments, block their authors, lock boards, and the lists (hidden
//! comments, blocks, the audit log). [`super::dispatch`] sends every
//! [`AdminRoute`] here; without the token file the route table has none of
//! them, so they are 404.
//!
//! Every request passes the same gate, in this order ([`authorize`]): a
//! cross-site request is refused (403) like every write; a token in the query
//! string is refused (400), whatever else it holds; an address that failed
//! too often is refused (429) before its token is even looked at, so the
//! answer cannot tell a guesser anything; then the `Authorization: Bearer`
//! token is checked in constant time (401 with `WWW-Authenticate: Bearer` if
//! it is missing or wrong, and a wrong one is counted against the address).
//! Nothing here ever writes the token, or what was presented, to a log, a
//! reply or a page.
//!
//! Each action is one atomic step in the store on the board's keys, which
//! logs its events ([`Store::moderate`]); the pump delivers them as it does
//! likes. A block is a step in the site's keys, and every action ends with a
//! line in the audit log (a step of its own: if it fails, the action stands
//! and the log says so).

use serde::Deserialize;
use serde_json::json;
use tiny_http::Request;

use super::http::{check_same_origin, header, mime, read_body, Reply};
use super::{api, App, Visitor};
use crate::board::Board;
use crate::error::Error;
use crate::input::{self, Target};
use crate::moderation::now_ms;
use crate::store::{Action, AuditEntry, Block, Moderated};

/// Failed token checks allowed per minute per client address (a bucket that
/// refills continuously). A moderator who mistypes waits seconds; a guesser
/// gets ten tries a minute at a token of 32 characters or more.
pub const FAILURES_PER_MINUTE: u32 = 10;

/// Default length of the lists, and the most one request gets.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = crate::store::AUDIT_LEN;

/// Longest block, in minutes (ten years): anything longer is "for good", `{}`.
const BLOCK_MINUTES_MAX: u64 = 10 * 365 * 24 * 60;

/// Query parameters that look like a token sent in the URL. URLs end up in
/// access logs, browser histories and `Referer` headers, so such a request is
/// refused outright rather than served.
const TOKEN_PARAMS: [&str; 7] = [
    "token",
    "access_token",
    "admin_token",
    "bearer",
    "authorization",
    "auth",
    "key",
];

/// The moderator's routes, as [`super::Route::parse`] finds them. Segments
/// are still unchecked, as in every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute<'a> {
    /// `GET /admin`: the default board's page, with the moderator's controls.
    Page,
    /// `POST /api/admin/boards/{board}/comments/{id}/hide`.
    Hide { board: &'a str, id: &'a str },
    /// `POST /api/admin/boards/{board}/comments/{id}/restore`.
    Restore { board: &'a str, id: &'a str },
    /// `DELETE /api/admin/boards/{board}/comments/{id}`.
    Delete { board: &'a str, id: &'a str },
    /// `POST /api/admin/boards/{board}/comments/{id}/block-author`.
    BlockAuthor { board: &'a str, id: &'a str },
    /// `POST` (lock) or `DELETE` (unlock) `/api/admin/boards/{board}/lock`.
    Lock { board: &'a str, lock: bool },
    /// `GET /api/admin/boards/{board}/hidden`.
    Hidden { board: &'a str },
    /// `GET /api/admin/blocked`.
    Blocked,
    /// `DELETE /api/admin/blocked/{ref}`.
    Unblock { reference: &'a str },
    /// `GET /api/admin/audit`.
    Audit,
}

impl AdminRoute<'_> {
    /// The route's metrics label.
    pub fn pattern(&self) -> &'static str {
        match self {
            AdminRoute::Page => "/admin",
            AdminRoute::Hide { .. } => "/api/admin/boards/{board}/comments/{id}/hide",
            AdminRoute::Restore { .. } => "/api/admin/boards/{board}/comments/{id}/restore",
            AdminRoute::Delete { .. } => "/api/admin/boards/{board}/comments/{id}",
            AdminRoute::BlockAuthor { .. } => {
                "/api/admin/boards/{board}/comments/{id}/block-author"
            }
            AdminRoute::Lock { .. } => "/api/admin/boards/{board}/lock",
            AdminRoute::Hidden { .. } => "/api/admin/boards/{board}/hidden",
            AdminRoute::Blocked => "/api/admin/blocked",
            AdminRoute::Unblock { .. } => "/api/admin/blocked/{ref}",
            AdminRoute::Audit => "/api/admin/audit",
        }
    }
}

/// Answers a moderator's request, once it is past [`authorize`].
pub(super) fn dispatch(
    app: &App,
    req: &mut Request,
    route: AdminRoute,
    target: &Target,
    visitor: &Visitor,
) -> Result<Reply, Error> {
    if route == AdminRoute::Page {
        // The page holds nothing a stranger may not see: it asks for the
        // token, and every list it shows is fetched with it.
        return api::index(app, &Board::main(), true);
    }
    authorize(app, req, target, &visitor.ip)?;
    let board = |slug: &str| Board::parse(slug).map_err(Error::BadRequest);
    let audit = |action: &str, board: Option<&Board>, comment: Option<u64>| AuditEntry {
        at: now_ms(),
        action: action.to_string(),
        board: board.map(Board::to_string),
        comment,
        reference: None,
        detail: None,
        ip: visitor.ip.clone(),
    };
    match route {
        AdminRoute::Page => unreachable!("answered above"),
        AdminRoute::Hide { board: b, id } => {
            let (b, id) = (board(b)?, input::parse_id(id)?);
            act(app, &b, Action::Hide(id), id)?;
            record(app, audit("hide", Some(&b), Some(id)));
            Ok(Reply::json(
                200,
                json!({ "board": b.as_str(), "id": id, "hidden": true }),
            ))
        }
        AdminRoute::Restore { board: b, id } => {
            let (b, id) = (board(b)?, input::parse_id(id)?);
            act(app, &b, Action::Restore(id), id)?;
            record(app, audit("restore", Some(&b), Some(id)));
            Ok(Reply::json(
                200,
                json!({ "board": b.as_str(), "id": id, "hidden": false }),
            ))
        }
        AdminRoute::Delete { board: b, id } => {
            let (b, id) = (board(b)?, input::parse_id(id)?);
            act(app, &b, Action::Delete(id), id)?;
            record(app, audit("delete", Some(&b), Some(id)));
            Ok(Reply::json(
                200,
                json!({ "board": b.as_str(), "id": id, "deleted": true }),
            ))
        }
        AdminRoute::BlockAuthor { board: b, id } => {
            let (b, id) = (board(b)?, input::parse_id(id)?);
            let form = BlockForm::read(req)?;
            block_author(app, &b, id, &form, audit("block", Some(&b), Some(id)))
        }
        AdminRoute::Lock { board: b, lock } => {
            let b = board(b)?;
            let what = if lock { "locked" } else { "unlocked" };
            match app.store.moderate(&b, Action::Lock(lock), now_ms())? {
                Moderated::Done(_) => {}
                Moderated::Already => {
                    return Err(Error::Conflict(format!("board {b} is {what} already")))
                }
                _ => return Err(no_board(&b)),
            }
            let action = if lock { "lock" } else { "unlock" };
            record(app, audit(action, Some(&b), None));
            Ok(Reply::json(
                200,
                json!({ "board": b.as_str(), "locked": lock }),
            ))
        }
        AdminRoute::Hidden { board: b } => {
            let b = board(b)?;
            let limit = list_limit(target)?;
            let hidden = app.store.hidden(&b, limit)?;
            Ok(Reply::json(
                200,
                json!({ "board": b.as_str(), "hidden": hidden }),
            ))
        }
        AdminRoute::Blocked => {
            let (mut blocks, _) = app.store.blocks()?;
            let now = now_ms();
            blocks.retain(|b| b.active(now));
            // Newest first; `Block` serializes without its visitor id.
            blocks.sort_by(|a, b| b.at.cmp(&a.at).then(a.reference.cmp(&b.reference)));
            blocks.truncate(list_limit(target)?);
            Ok(Reply::json(200, json!({ "blocked": blocks })))
        }
        AdminRoute::Unblock { reference } => {
            if reference.is_empty()
                || reference.len() > 64
                || !reference.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::BadRequest("a block's ref is hex digits".into()));
            }
            let Some((visitor, version)) = app.store.unblock(reference)? else {
                return Err(Error::NotFound(format!("no block {reference}")));
            };
            app.blocks.noted(&visitor, None, version);
            record(
                app,
                AuditEntry {
                    reference: Some(reference.to_string()),
                    ..audit("unblock", None, None)
                },
            );
            Ok(Reply::json(
                200,
                json!({ "ref": reference, "unblocked": true }),
            ))
        }
        AdminRoute::Audit => {
            let lines = app.store.audit_log(list_limit(target)?)?;
            Ok(Reply::json(200, json!({ "audit": lines })))
        }
    }
}

/// The gate every moderation request passes (see the module's header).
fn authorize(app: &App, req: &Request, target: &Target, ip: &str) -> Result<(), Error> {
    check_same_origin(req)?;
    if target
        .query
        .iter()
        .any(|(k, _)| TOKEN_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p)))
    {
        return Err(Error::BadRequest(
            "send the token in an Authorization: Bearer header, never in the URL \
             (URLs are kept in logs, histories and Referer headers)"
                .into(),
        ));
    }
    let token = app
        .admin
        .as_ref()
        .ok_or_else(|| Error::NotFound("moderation is off".into()))?;
    app.auth_failures
        .peek(ip)
        .map_err(|retry_after| Error::TooManyRequests { retry_after })?;
    let Some(value) = header(req, "Authorization") else {
        return Err(Error::Unauthorized(
            "moderation needs the token: send Authorization: Bearer <token>".into(),
        ));
    };
    let presented = bearer(value);
    if presented.is_some_and(|t| token.verify(t.as_bytes())) {
        return Ok(());
    }
    app.auth_failures.spend(ip);
    // The address, never the value: a near miss in a log is half a token.
    log::warn!("moderation: a wrong token from {ip}");
    Err(Error::Unauthorized(
        "that is not the moderators' token (send Authorization: Bearer <token>)".into(),
    ))
}

/// The token in an `Authorization` value `Bearer <token>` (the scheme's case
/// does not matter, RFC 6750); `None` for any other scheme.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Runs one action on one comment; 404 or 409 when the store did nothing.
fn act(app: &App, board: &Board, action: Action, id: u64) -> Result<Vec<u64>, Error> {
    let already = match action {
        Action::Hide(_) => "hidden already",
        Action::Restore(_) => "not hidden",
        _ => "gone already",
    };
    match app.store.moderate(board, action, now_ms())? {
        Moderated::Done(ids) => Ok(ids),
        Moderated::Already => Err(Error::Conflict(format!("comment {id} is {already}"))),
        Moderated::NoSuchComment | Moderated::NoSuchBoard => Err(no_comment(board, id)),
    }
}

fn no_comment(board: &Board, id: u64) -> Error {
    Error::NotFound(format!("no comment {id} on board {board}"))
}

fn no_board(board: &Board) -> Error {
    Error::NotFound(format!(
        "no board {board} (a board exists from its first comment)"
    ))
}

/// `?limit=` of a list.
fn list_limit(target: &Target) -> Result<usize, Error> {
    input::parse_count(target.param("limit"), "limit", LIST_DEFAULT, LIST_MAX)
}

/// Appends a line to the audit log. The action is done whatever happens here:
/// a failure is logged (with what was done, never the token) and the reply
/// still says what was done.
fn record(app: &App, entry: AuditEntry) {
    if let Err(e) = app.store.audit(&entry) {
        log::warn!(
            "moderation: {} on {:?} comment {:?} from {} done, but not in the audit log: {e}",
            entry.action,
            entry.board,
            entry.comment,
            entry.ip
        );
    }
}

/// The body of `block-author`: `{"minutes": N}` or `{}` for good, and
/// `"hide_all": true` to hide all the author's comments on the board too. An
/// empty body is `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockForm {
    minutes: Option<u64>,
    #[serde(default)]
    hide_all: bool,
}

impl BlockForm {
    fn read(req: &mut Request) -> Result<BlockForm, Error> {
        let body = read_body(req)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(BlockForm::default());
        }
        if mime(req) != "application/json" {
            return Err(Error::UnsupportedMediaType);
        }
        let form: BlockForm = serde_json::from_slice(&body).map_err(|e| {
            Error::BadRequest(format!(
                "send {{\"minutes\": N}} or {{}} for good, and \"hide_all\": true to hide \
                 their comments too ({e})"
            ))
        })?;
        if form
            .minutes
            .is_some_and(|m| m == 0 || m > BLOCK_MINUTES_MAX)
        {
            return Err(Error::BadRequest(format!(
                "minutes is 1 to {BLOCK_MINUTES_MAX}; leave it out to block for good"
            )));
        }
        Ok(form)
    }
}

/// Blocks the author of comment `id` of `board`, and with `hide_all` hides
/// every comment they have on that board.
///
/// Three steps, because a block is site-wide and lives in the site's keys,
/// another Redis Cluster slot than the board's: find the author (a read on
/// the board), block them (the site), then hide their comments (one script
/// on the board, so all of them or none, each with its `remove`). Blocking
/// comes first: once it is in force no new comment of theirs can slip in
/// between (on another instance, within the second it takes to hear of the
/// block), and if the hiding fails the block stands and the moderator may
/// simply ask again. "All their comments" means those on this board: each
/// other board is another slot, and its moderator's business.
fn block_author(
    app: &App,
    board: &Board,
    id: u64,
    form: &BlockForm,
    audit: AuditEntry,
) -> Result<Reply, Error> {
    let token = app
        .admin
        .as_ref()
        .ok_or_else(|| Error::NotFound("moderation is off".into()))?;
    let Some(author) = app.store.author_of(board, id)? else {
        return Err(Error::NotFound(format!(
            "no comment {id} on board {board}, or none whose author is on record \
             (comments posted before moderation existed have none)"
        )));
    };
    let now = now_ms();
    let until = form.minutes.map(|m| now + m * 60_000);
    let block = Block {
        visitor: author.clone(),
        reference: token.reference(&author),
        until,
        at: now,
        board: board.to_string(),
        comment: id,
    };
    let version = app.store.block(&block, now)?;
    app.blocks.noted(&author, Some(until), version);
    let hidden = if form.hide_all {
        match app
            .store
            .moderate(board, Action::HideAllBy(author), now_ms())?
        {
            Moderated::Done(ids) => ids,
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let length = form
        .minutes
        .map_or("for good".to_string(), |m| format!("for {m} minutes"));
    let detail = if form.hide_all {
        format!("{length}, hiding {} comments", hidden.len())
    } else {
        length
    };
    record(
        app,
        AuditEntry {
            reference: Some(block.reference.clone()),
            detail: Some(detail),
            ..audit
        },
    );
    Ok(Reply::json(
        200,
        json!({
            "board": board.as_str(),
            "id": id,
            "ref": block.reference,
            "until": until,
            "hidden": hidden,
        }),
    ))
}

/// A 403 for a blocked visitor's write, saying for how long.
pub(super) fn check_blocked(app: &App, visitor: &Visitor) -> Result<(), Error> {
    let now = now_ms();
    let Some(ends) = app.blocks.blocked(&visitor.id, now) else {
        return Ok(());
    };
    let how_long = match ends {
        None => "for good".to_string(),
        Some(end) => {
            let minutes = end.saturating_sub(now).div_ceil(60_000);
            format!(
                "for another {minutes} minute{}",
                if minutes == 1 { "" } else { "s" }
            )
        }
    };
    Err(Error::Forbidden(format!(
        "a moderator has blocked you from commenting and liking on this site {how_long}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the Bearer scheme carries a token, in any case; nothing else does.
    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc  "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        for other in ["Basic YWJjOmRlZg==", "Bearer", "Bearer ", "abc", ""] {
            assert_eq!(bearer(other), None, "{other:?}");
        }
    }
}
