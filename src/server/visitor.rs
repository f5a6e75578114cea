//! Who is asking, as the HTTP edge sees it: the request's `Cookie` header and
//! its client address (the socket's peer, or behind a trusted proxy what it
//! says, `proxy.rs`), handed to [`crate::visitor::Visitors`], which knows
//! which cookies are ours; and whether that address may be issued a new
//! visitor now (`ratelimit.rs`).

use tiny_http::Request;

use crate::routes::{self, App, Visitor};

/// The visitor behind a request, and the `Set-Cookie` value to offer if it
/// has no cookie of ours yet ([`admit`] decides whether it goes out).
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

/// The offered cookie if the visitor's address has not spent its allowance
/// of new visitors; called only for a reply that carries it (an event
/// stream writes its own head, without one, so it spends nothing).
pub(super) fn admit(app: &App, visitor: &Visitor, cookie: Option<String>) -> Option<String> {
    // Over the allowance the request is served all the same, as its address's
    // visitor (what it is anyway until it sends a cookie back), and no
    // cookie is issued: so a script cannot mint identities faster than
    // `--visitor-rate`, and no one is refused a page for it. Its next request
    // without a cookie asks again.
    cookie.filter(|_| {
        let admitted = app.limiter.admit_new_visitor(&visitor.ip);
        if !admitted {
            log::debug!(
                "{}: new-visitor allowance spent, no cookie issued",
                visitor.ip
            );
        }
        admitted
    })
}
