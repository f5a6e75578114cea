//! The one error type of the HTTP edge: each variant knows its status code and
//! the short message a client sees as `{"error": "..."}`.
//!
//! Internal details (Redis errors, panics) are logged in full by the server and
//! never sent to the client.

use std::fmt;

use crate::store::StoreError;

#[derive(Debug)]
pub enum Error {
    /// 400: the request is malformed or a value is invalid.
    BadRequest(String),
    /// 403: a cross-site write, refused.
    Forbidden(String),
    /// 404: no such route or comment.
    NotFound(String),
    /// 409: the request conflicts with what exists (a new board beyond `--max-boards`).
    Conflict(String),
    /// 405: the route exists but not for this method; `allow` lists the methods.
    MethodNotAllowed { allow: &'static str },
    /// 408: the request did not arrive in time (sent by the connection guard).
    RequestTimeout,
    /// 413: the body is larger than the limit.
    PayloadTooLarge { limit: usize },
    /// 414: the request target is longer than the limit.
    UriTooLong { limit: usize },
    /// 415: the body is neither JSON nor a form.
    UnsupportedMediaType,
    /// 429: the write rate limit; retry after this many seconds.
    TooManyRequests { retry_after: u64 },
    /// 431: too many header fields, or too many bytes of them.
    HeaderTooLarge,
    /// 505: an HTTP version we do not speak (sent by the server or the guard).
    VersionNotSupported,
    /// 503: the store cannot be reached; the client may retry.
    Unavailable(String),
    /// 500: a bug or unexpected data; the detail is logged, not shown.
    Internal(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::Conflict(_) => 409,
            Error::RequestTimeout => 408,
            Error::PayloadTooLarge { .. } => 413,
            Error::UriTooLong { .. } => 414,
            Error::UnsupportedMediaType => 415,
            Error::TooManyRequests { .. } => 429,
            Error::HeaderTooLarge => 431,
            Error::VersionNotSupported => 505,
            Error::Unavailable(_) => 503,
            Error::Internal(_) => 500,
        }
    }

    /// What the client is told. Never internal detail.
    pub fn public_message(&self) -> String {
        match self {
            Error::BadRequest(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::Conflict(m) => m.clone(),
            Error::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            Error::RequestTimeout => "request timeout".to_string(),
            Error::PayloadTooLarge { limit } => format!("body larger than {limit} bytes"),
            Error::UriTooLong { limit } => format!("URL longer than {limit} bytes"),
            Error::HeaderTooLarge => "request header fields too large".to_string(),
            Error::UnsupportedMediaType => {
                "send application/json or application/x-www-form-urlencoded".to_string()
            }
            Error::TooManyRequests { retry_after } => {
                format!("too many writes; retry in {retry_after} s")
            }
            Error::VersionNotSupported => "likeboard speaks HTTP/1.1 and HTTP/1.0 only".to_string(),
            Error::Unavailable(_) => "storage is unavailable; try again shortly".to_string(),
            Error::Internal(_) => "internal error".to_string(),
        }
    }

    /// The reason phrase of the status line, for replies written raw.
    pub fn reason(&self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Internal Server Error",
        }
    }

    /// The whole reply as bytes, for the few places that write it raw on a
    /// connection (the guard, and the server for a version tiny_http would
    /// answer in kind): status line, JSON body, and `Connection: close`.
    pub fn raw_reply(&self) -> Vec<u8> {
        let body = self.body();
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status(),
            self.reason(),
            body.len()
        )
        .into_bytes()
    }

    /// The JSON body for this error.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.public_message() }).to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unavailable(detail) | Error::Internal(detail) => {
                write!(f, "{} ({detail})", self.status())
            }
            other => write!(f, "{} {}", other.status(), other.public_message()),
        }
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooManyBoards { .. } => Error::Conflict(e.to_string()),
            StoreError::Unavailable(why) => Error::Unavailable(why),
            StoreError::Corrupt(why) => Error::Internal(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Store failures map to 503 or 500, and neither leaks its detail to the client.
    #[test]
    fn store_errors_hide_detail() {
        let e: Error = StoreError::Unavailable("connection refused 10.0.0.1".into()).into();
        assert_eq!(e.status(), 503);
        assert!(!e.body().contains("10.0.0.1"));
        let e: Error = StoreError::Corrupt("WRONGTYPE".into()).into();
        assert_eq!(e.status(), 500);
        assert_eq!(e.body(), r#"{"error":"internal error"}"#);
    }
}
