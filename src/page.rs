//! The page and its assets: minijinja templates and static files, embedded in
//! the binary (so `cargo install` gives a working server with no other files),
//! or read from `--assets-dir` for editing the page without rebuilding.
//!
//! Invariant: user text reaches HTML only through templates whose names end in
//! `.html`, which minijinja autoescapes. No HTTP types here.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};

/// Templates compiled into the binary: (name, source).
const TEMPLATES: &[(&str, &str)] = &[("index.html", include_str!("../templates/index.html"))];

/// Static files compiled into the binary: (name, bytes).
const STATIC: &[(&str, &[u8])] = &[
    ("app.js", include_bytes!("../static/app.js")),
    // A module app.js imports, and the SharedWorker script that holds the
    // board's one stream per browser. The page's CSP (`script-src 'self'`,
    // which `worker-src` falls back to) lets it load from here.
    (
        "stream-worker.js",
        include_bytes!("../static/stream-worker.js"),
    ),
    ("style.css", include_bytes!("../static/style.css")),
];

/// Renders templates and serves static files.
pub struct Page {
    /// Embedded templates, compiled once at startup.
    embedded: Environment<'static>,
    /// When set, templates and static files are read from here on every request.
    dir: Option<PathBuf>,
}

/// A static file ready to send.
pub struct Asset {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

impl Page {
    pub fn new(dir: Option<PathBuf>) -> Result<Page, minijinja::Error> {
        let mut embedded = Environment::new();
        for (name, source) in TEMPLATES {
            embedded.add_template(name, source)?;
        }
        Ok(Page { embedded, dir })
    }

    /// Renders template `name` with `context`.
    pub fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        match &self.dir {
            None => self.embedded.get_template(name)?.render(context),
            Some(dir) => {
                // Read fresh from disk: the point of --assets-dir is live editing.
                let path = dir.join("templates").join(name);
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::TemplateNotFound,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let mut env = Environment::new();
                env.add_template_owned(name.to_string(), source)?;
                env.get_template(name)?.render(context)
            }
        }
    }

    /// The static file called `name`, if there is one. Only plain file names
    /// are looked up, so no path can climb out of the static directory.
    pub fn asset(&self, name: &str) -> Option<Asset> {
        if !is_plain_name(name) {
            return None;
        }
        let bytes = match &self.dir {
            None => STATIC.iter().find(|(n, _)| *n == name)?.1.to_vec(),
            Some(dir) => std::fs::read(dir.join("static").join(name)).ok()?,
        };
        Some(Asset {
            bytes,
            content_type: content_type(Path::new(name)),
        })
    }
}

/// `app.js`, `style.css`: letters, digits, `-`, `_` and inner dots only.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embedded assets are served with their content types; traversal finds nothing.
    #[test]
    fn assets() {
        let page = Page::new(None).unwrap();
        assert_eq!(
            page.asset("app.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            page.asset("stream-worker.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            page.asset("style.css").unwrap().content_type,
            "text/css; charset=utf-8"
        );
        for bad in [
            "../Cargo.toml",
            "..",
            ".hidden",
            "a/b.js",
            "",
            "missing.js",
            "%2e%2e",
        ] {
            assert!(page.asset(bad).is_none(), "{bad}");
        }
    }

    /// The index template autoescapes what it is given.
    #[test]
    fn index_escapes() {
        let page = Page::new(None).unwrap();
        let html = page
            .render(
                "index.html",
                minijinja::context! { comments => Value::from(minijinja::value::Serde(vec![serde_json::json!({
                    "id": 1, "nickname": "<b>", "content": "<script>alert(1)</script>",
                    "score": 0, "created_at": 0, "liked": false
                })])), seed_routes => false },
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(html.contains("&lt;b&gt;"));
        assert!(!html.contains("<script>alert"));
    }
}
