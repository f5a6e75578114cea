//! A request's declared body, judged before any handler sees it.
//!
//! The trap (tiny_http 0.12, `util/equal_reader.rs`): a body that tiny_http did
//! not read into memory itself is read from the socket as the handler asks for
//! it, and whatever is left when the request is dropped is discarded by
//! reading it, on the dropping thread, into a buffer allocated at the *declared*
//! remaining size (`vec![0; remaining]`). So a `Content-Length` the client never
//! sends holds our worker until the connection's deadline, and a huge one makes
//! the allocation itself fail, which aborts the process (see `huge_alloc.rs`
//! for that half). tiny_http buffers a body itself only when it is at most
//! [`TINY_HTTP_BUFFERS`] bytes, declared with `Content-Length`, without
//! `Expect: 100-continue`.
//!
//! What we do instead: a request whose body is not buffered has its
//! connection's read half shut (by the guard) before it is answered, so the
//! discard ends at once with end-of-file and the connection closes after the
//! reply; and a body over our limit, or framed in a way that could let its
//! bytes pass for another request, is refused before a handler runs. The cost:
//! a request with such a body (over 1 KiB, or sent with `Expect`) ends its
//! keep-alive connection.

use tiny_http::Request;

use crate::error::Error;
use crate::routes::BODY_LIMIT;

/// The largest body tiny_http 0.12 reads into memory before handing us the
/// request (`request.rs`, `new_request`).
const TINY_HTTP_BUFFERS: usize = 1024;

/// What a request says about its body.
pub struct Body {
    /// The length tiny_http took from `Content-Length` (`None`: none it could parse).
    declared: Option<usize>,
    /// How many `Content-Length` fields there are, and whether they all agree.
    lengths: usize,
    /// Several `Content-Length` fields with one value are allowed; differing ones are refused.
    lengths_agree: bool,
    /// `Transfer-Encoding` was sent (tiny_http then decodes chunks as it reads).
    chunked: bool,
    /// `Expect: 100-continue` was sent (tiny_http then never buffers the body).
    expects: bool,
}

impl Body {
    pub fn of(req: &Request) -> Body {
        let field = |name| values(req, name);
        let mut lengths = field("Content-Length");
        let first = lengths.next();
        let lengths_agree = lengths.clone().all(|v| Some(v) == first);
        Body {
            declared: req.body_length(),
            lengths: usize::from(first.is_some()) + lengths.count(),
            lengths_agree,
            chunked: field("Transfer-Encoding").next().is_some(),
            expects: field("Expect").next().is_some(),
        }
    }

    /// Whether tiny_http left the body (or part of it) on the socket, so that
    /// dropping the request would read it on our thread.
    pub fn unbuffered(&self) -> bool {
        self.chunked
            || self.expects
            || self.declared.is_some_and(|n| n > TINY_HTTP_BUFFERS)
            || self.check().is_err()
    }

    /// Refuses a body over our limit, and framings whose bytes could be taken
    /// for a request of their own: a length tiny_http could not read (it then
    /// assumes no body), lengths that disagree, or a length with chunks.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::BadRequest(why.into()));
        if self.lengths > 0 && self.chunked {
            return bad("send Content-Length or Transfer-Encoding, not both");
        }
        if self.lengths > 1 && !self.lengths_agree {
            return bad("Content-Length fields disagree");
        }
        if self.lengths > 0 && self.declared.is_none() {
            return bad("Content-Length is not a number of bytes we can read");
        }
        if self.declared.is_some_and(|n| n > BODY_LIMIT) {
            return Err(Error::PayloadTooLarge { limit: BODY_LIMIT });
        }
        Ok(())
    }
}

/// The values of every header field called `name`.
fn values<'a>(req: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + Clone {
    req.headers()
        .iter()
        .filter(move |h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiny_http::{Header, TestRequest};

    fn with(headers: &[(&str, &str)]) -> Body {
        let mut req = TestRequest::new().with_method(tiny_http::Method::Post);
        for (name, value) in headers {
            req = req.with_header(Header::from_bytes(*name, *value).unwrap());
        }
        Body::of(&req.into())
    }

    /// A small body tiny_http has already read is left alone; others are not.
    #[test]
    fn tells_buffered_from_unbuffered() {
        assert!(!with(&[]).unbuffered());
        assert!(with(&[("Expect", "100-continue")]).unbuffered());
        assert!(with(&[("Transfer-Encoding", "chunked")]).unbuffered());
        assert!(with(&[("Content-Length", "1000000000000")]).unbuffered());
    }

    /// Framings that could smuggle a request are refused with 400; a body over
    /// the limit with 413.
    #[test]
    fn refuses_bad_framings() {
        let status = |b: Body| b.check().err().map(|e| e.status());
        assert_eq!(
            status(with(&[("Content-Length", "99999999999999999999999")])),
            Some(400)
        );
        assert_eq!(
            status(with(&[
                ("Content-Length", "5"),
                ("Transfer-Encoding", "chunked")
            ])),
            Some(400)
        );
        assert_eq!(status(with(&[("Content-Length", "1000000000")])), Some(413));
        assert_eq!(status(with(&[])), None);
    }
}
