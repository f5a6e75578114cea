//! The HTTP details the routes share: the reply type, the headers every page
//! carries, request-head and body limits, the same-origin check, reading a
//! comment form from a body, and header lookup. Knows no URLs.

use std::io::Read;

use tiny_http::Request;

use crate::error::Error;
use crate::input::CommentForm;

/// Largest request body accepted (413 above it).
pub const BODY_LIMIT: usize = 16 * 1024;
/// Longest request target accepted (414 above it).
pub const URL_LIMIT: usize = 8 * 1024;
/// Most header fields accepted (431 above it); browsers send about twenty.
pub const HEADER_COUNT_LIMIT: usize = 100;
/// The Content-Security-Policy of the page: scripts and styles only from our
/// own origin, so no comment text can ever run as script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// A complete response.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Headers of this reply only (`Allow`, `Location`, a CSP...); the server
    /// adds the ones every response carries.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(super) fn json(status: u16, value: serde_json::Value) -> Reply {
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
            // RFC 6750: say which scheme the route takes, nothing about the token.
            Error::Unauthorized(_) => reply
                .headers
                .push(("WWW-Authenticate", "Bearer realm=\"likeboard\"".to_string())),
            _ => {}
        }
        reply
    }
}

/// Refuses request heads larger than we are willing to look at. tiny_http has
/// already read the head; the connection guard bounds how much it may read.
pub(super) fn check_head(req: &Request) -> Result<(), Error> {
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

/// Refuses writes sent from another site's page (a browser tells us through
/// `Sec-Fetch-Site` and `Origin`). Clients that send neither (curl) pass.
pub(super) fn check_same_origin(req: &Request) -> Result<(), Error> {
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

pub(super) fn read_comment_form(req: &mut Request) -> Result<CommentForm, Error> {
    let body = read_body(req)?;
    match mime(req).as_str() {
        "application/json" => CommentForm::from_json(&body),
        "application/x-www-form-urlencoded" => CommentForm::from_form(&body),
        _ => Err(Error::UnsupportedMediaType),
    }
}

/// The request's body, at most [`BODY_LIMIT`] bytes (413 beyond).
pub(super) fn read_body(req: &mut Request) -> Result<Vec<u8>, Error> {
    if req.body_length().is_some_and(|n| n > BODY_LIMIT) {
        return Err(Error::PayloadTooLarge { limit: BODY_LIMIT });
    }
    let mut body = Vec::new();
    req.as_reader()
        .take(BODY_LIMIT as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|_| Error::BadRequest("could not read the body".into()))?;
    if body.len() > BODY_LIMIT {
        return Err(Error::PayloadTooLarge { limit: BODY_LIMIT });
    }
    Ok(body)
}

/// The body's media type, lowercase, without parameters (`""` if none).
pub(super) fn mime(req: &Request) -> String {
    let content_type = header(req, "Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The value of the first header called `name` (case-insensitive).
pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}
