//! Who is asking, as the HTTP edge sees it: the request's `Cookie` header and
//! its client address (the socket's peer, or behind a trusted proxy what it
//! says, `proxy.rs`), handed to [`crate::visitor::Visitors`], which knows
//! which cookies are ours.

use tiny_http::Request;

use crate::routes::{self, App, Visitor};

/// The visitor behind a request, and the `Set-Cookie` value to send if it
/// has no cookie of ours yet.
pub(super) fn visitor_of(request: &Request, app: &App) -> (Visitor, Option<String>) {
    let forwarded = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("X-Forwarded-For"))
        .map(|h| h.value.as_str());
    let trusted = &app.config.trusted_proxies;
    let ip = request
        .remote_addr()
        .map(|a| crate::proxy::client_ip(a.ip(), forwarded, trusted).to_string())
        .unwrap_or_default();
    app.visitors.of(routes::header(request, "Cookie"), ip)
}
