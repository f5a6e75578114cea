//! Request -> reply: the only place that knows the URLs.
//!
//! A request is parsed ONCE into a [`Route`] (one `match` on method and path),
//! and that value decides everything that depends on the URL: which handler
//! answers ([`dispatch`]), the `Allow` header of a 405, the `route` label of
//! the request metrics ([`Route::pattern`]) and whether the request opens an
//! event stream ([`Route::opens_stream`]). Each handler validates its input,
//! calls the store synchronously and returns a [`Reply`], or asks the server to
//! open an event stream ([`Outcome::Stream`]). Handlers never broadcast: the
//! store logs every change and the pump delivers it.
//!
//! `api.rs` holds the board's handlers, `seed.rs` the original demo's
//! (`--seed-routes`), `admin.rs` the moderator's (`--admin-token-file`),
//! `http.rs` the reply type and the HTTP details every handler shares. Only
//! the route table here matches on paths.

use std::sync::Arc;
use std::time::Instant;

use tiny_http::{Method, Request};

use crate::board::Board;
use crate::classroom::Classroom;
use crate::config::Config;
use crate::error::Error;
use crate::hub::Hub;
use crate::input::{self, Target};
use crate::metrics::Metrics;
use crate::page::Page;
use crate::pump::PumpStats;
use crate::ratelimit::RateLimiter;
use crate::sse::replay::Replayer;
use crate::sse::{Message, Resume, StreamOptions};
use crate::store::{LikeOp, Store};

mod admin;
mod api;
mod http;
mod seed;

use admin::check_blocked;
pub use admin::{AdminRoute, FAILURES_PER_MINUTE as ADMIN_FAILURES_PER_MINUTE};
use http::{check_head, check_same_origin, read_comment_form};
pub use http::{header, Reply, BODY_LIMIT};
use seed::SeedRoute;

/// Most comments one page of `GET /api/comments` returns (the seed's
/// `/commentList` has its own cap, `seed::COMMENT_LIST_MAX`).
const LIMIT_MAX: usize = 500;

/// Everything a request handler may use; shared by all threads.
pub struct App {
    /// Where every handler reads and writes (Redis or memory, counted by the metrics wrapper).
    pub store: Arc<dyn Store>,
    /// Where streams read what a reconnecting client missed: the ring of
    /// recent events, else the store behind a line.
    pub replayer: Replayer,
    /// Issues and checks the signed visitor cookies.
    pub visitors: crate::visitor::Visitors,
    /// Where streams subscribe; also read for the subscriber counts.
    pub hub: Arc<Hub<Message>>,
    /// The templates and static files.
    pub page: Page,
    /// The write rate limit, per visitor and per IP.
    pub limiter: RateLimiter,
    /// The moderators' token (`--admin-token-file`); `None`: moderation is off.
    pub admin: Option<crate::moderation::AdminToken>,
    /// Failed moderator token checks per client address (`admin::FAILURES_PER_MINUTE`).
    pub auth_failures: RateLimiter,
    /// This instance's copy of the site's blocks, checked on every write.
    pub blocks: Arc<crate::moderation::Blocks>,
    /// The settings the server started with.
    pub config: Config,
    /// What the pump has delivered, for `/healthz` and `/metrics`.
    pub pump: Arc<PumpStats>,
    /// When the server started, for the uptime in `/healthz`.
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

/// What a request asks for, decided once from its method and its (decoded)
/// path. Path segments it carries are still unchecked: each handler parses
/// them strictly, so a bad comment id or board name is a 400, not a 404.
///
/// Every board route comes in two forms: with the board in the path
/// (`/api/boards/{board}/...`, `/b/{board}`), and the form that predates
/// boards (`/api/comments`, `/events`, `/`), which means the default board.
/// [`At::Main`] stands for the second, and keeps its metrics label and its
/// path ([`Route::path`]) those of old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /` or `GET /b/{board}`: the board's page, rendered on the server.
    Index { board: At<'a> },
    /// `GET /static/{name}`: an embedded asset.
    Static { name: &'a str },
    /// `GET /api/boards`: the boards, most comments first.
    Boards,
    /// `GET .../comments`: a page of the ranking.
    ListComments { board: At<'a> },
    /// `POST .../comments`.
    AddComment { board: At<'a> },
    /// `POST` (like) or `DELETE` (unlike) `.../comments/{id}/like`.
    Like {
        board: At<'a>,
        id: &'a str,
        op: LikeOp,
    },
    /// `GET /events` or `GET /api/boards/{board}/events`: the event stream.
    Events { board: At<'a> },
    /// `POST /api/classroom/{token}/{action}`: a fault panel button (`--classroom`).
    Classroom { token: &'a str, action: &'a str },
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`.
    Metrics,
    /// One of the original demo's routes (`--seed-routes`).
    Seed(SeedRoute),
    /// One of the moderator's routes (`--admin-token-file`).
    Admin(AdminRoute<'a>),
    /// A path we serve, asked with a method it does not take: 405 with `Allow`.
    WrongMethod {
        /// The label of the path's routes, so a 405 counts where they do.
        pattern: &'static str,
        /// The methods the path does take, as the `Allow` header lists them.
        allow: &'static str,
    },
    /// A path we do not serve: 404.
    NotFound,
}

/// Which board a route names: the default one by a path without a board
/// (`Main`), or one named in the path (still unchecked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At<'a> {
    Main,
    Named(&'a str),
}

impl<'a> At<'a> {
    /// How the routes name `board`: the default one by the paths without a board.
    pub fn of(board: &'a Board) -> Self {
        if board.is_main() {
            At::Main
        } else {
            At::Named(board.as_str())
        }
    }

    /// The board, or a 400 saying what is wrong with its name.
    pub fn board(&self) -> Result<Board, Error> {
        match self {
            At::Main => Ok(Board::main()),
            At::Named(slug) => Board::parse(slug).map_err(Error::BadRequest),
        }
    }
}

/// The methods a route table entry is tried with to learn which ones a path
/// takes, each with its bit in [`ALLOW`]. HEAD goes with GET.
const METHODS: [(Method, usize); 3] = [(Method::Get, 1), (Method::Post, 2), (Method::Delete, 4)];
/// The `Allow` header for each set of methods, indexed by the sum of their bits.
const ALLOW: [&str; 8] = [
    "",
    "GET, HEAD",
    "POST",
    "GET, HEAD, POST",
    "DELETE",
    "GET, HEAD, DELETE",
    "POST, DELETE",
    "GET, HEAD, POST, DELETE",
];

impl<'a> Route<'a> {
    /// The route for `method` on `path`. A path served with other methods is
    /// [`Route::WrongMethod`], whose `Allow` comes from the same table: the
    /// methods that would have matched.
    pub fn parse(method: &Method, path: &'a str, config: &Config) -> Route<'a> {
        // HEAD is GET without a body; tiny_http leaves the body out for us.
        let method = match method {
            Method::Head => &Method::Get,
            m => m,
        };
        let segments: Vec<&'a str> = path.trim_start_matches('/').split('/').collect();
        if let Some(route) = Route::table(method, &segments, config) {
            return route;
        }
        let mut allowed = 0;
        let mut pattern = None;
        for (other, bit) in &METHODS {
            if let Some(route) = Route::table(other, &segments, config) {
                allowed |= bit;
                pattern = Some(route.pattern());
            }
        }
        match pattern {
            Some(pattern) => Route::WrongMethod {
                pattern,
                allow: ALLOW[allowed],
            },
            None => Route::NotFound,
        }
    }

    /// The route table: every method and path served, and nothing else.
    fn table(method: &Method, segments: &[&'a str], config: &Config) -> Option<Route<'a>> {
        use Method::{Delete, Get, Post};
        let seed = config.seed_routes;
        let moderated = config.admin_token_file.is_some();
        // A board's routes, named or not, after the part that says which board.
        let (board, rest): (At<'a>, &[&'a str]) = match segments {
            ["api", "boards", board, rest @ ..] if !rest.is_empty() => (At::Named(board), rest),
            ["api", rest @ ..] if matches!(rest.first(), Some(&"comments")) => (At::Main, rest),
            _ => (At::Main, &[]),
        };
        if !rest.is_empty() {
            return Some(match (method, rest) {
                (Get, ["comments"]) => Route::ListComments { board },
                (Post, ["comments"]) => Route::AddComment { board },
                (Post, ["comments", id, "like"]) => Route::Like {
                    board,
                    id,
                    op: LikeOp::Like,
                },
                (Delete, ["comments", id, "like"]) => Route::Like {
                    board,
                    id,
                    op: LikeOp::Unlike,
                },
                (Get, ["events"]) if board != At::Main => Route::Events { board },
                _ => return None,
            });
        }
        Some(match (method, segments) {
            (Get, [""]) => Route::Index { board: At::Main },
            (Get, ["b", board]) => Route::Index {
                board: At::Named(board),
            },
            (Get, ["static", name]) => Route::Static { name },
            (Get, ["api", "boards"]) => Route::Boards,
            (Get, ["events"]) => Route::Events { board: At::Main },
            (Post, ["api", "classroom", token, action]) if config.classroom => {
                Route::Classroom { token, action }
            }
            (Get, ["healthz"]) => Route::Healthz,
            (Get, ["metrics"]) => Route::Metrics,
            // The original demo's routes, with `--seed-routes`.
            (Get, ["addComment"]) if seed => Route::Seed(SeedRoute::AddComment),
            (Post, ["favorite"]) if seed => Route::Seed(SeedRoute::Favorite(LikeOp::Like)),
            (Delete, ["favorite"]) if seed => Route::Seed(SeedRoute::Favorite(LikeOp::Unlike)),
            (Get, ["commentList"]) if seed => Route::Seed(SeedRoute::CommentList),
            (Get, ["sse"]) if seed => Route::Seed(SeedRoute::Sse),
            // The moderator's, with `--admin-token-file` (else 404).
            (_, ["admin"] | ["api", "admin", ..]) if moderated => {
                Route::Admin(Route::admin_table(method, segments)?)
            }
            _ => return None,
        })
    }

    /// The moderator's part of the table.
    fn admin_table(method: &Method, segments: &[&'a str]) -> Option<AdminRoute<'a>> {
        use Method::{Delete, Get, Post};
        let (board, rest) = match segments {
            ["api", "admin", "boards", board, rest @ ..] => (*board, rest),
            _ => ("", &[][..]),
        };
        Some(match (method, segments, rest) {
            (Get, ["admin"], _) => AdminRoute::Page,
            (Post, _, ["comments", id, "hide"]) => AdminRoute::Hide { board, id },
            (Post, _, ["comments", id, "restore"]) => AdminRoute::Restore { board, id },
            (Delete, _, ["comments", id]) => AdminRoute::Delete { board, id },
            (Post, _, ["comments", id, "block-author"]) => AdminRoute::BlockAuthor { board, id },
            (Post, _, ["lock"]) => AdminRoute::Lock { board, lock: true },
            (Delete, _, ["lock"]) => AdminRoute::Lock { board, lock: false },
            (Get, _, ["hidden"]) => AdminRoute::Hidden { board },
            (Get, ["api", "admin", "blocked"], _) => AdminRoute::Blocked,
            (Delete, ["api", "admin", "blocked", reference], _) => {
                AdminRoute::Unblock { reference }
            }
            (Get, ["api", "admin", "audit"], _) => AdminRoute::Audit,
            _ => return None,
        })
    }

    /// The path of this route with its `{board}` filled in (for routes that
    /// name nothing else): how the page and replies point at a board's routes.
    pub fn path(&self) -> String {
        let pattern = self.pattern();
        let board = match self {
            Route::Index { board }
            | Route::ListComments { board }
            | Route::AddComment { board }
            | Route::Events { board } => *board,
            _ => At::Main,
        };
        let path = match board {
            At::Main => pattern.to_string(),
            At::Named(name) => pattern.replace("{board}", name),
        };
        debug_assert!(!path.contains('{'), "{path} names more than a board");
        path
    }

    /// The route as a fixed pattern: the `route` label of the request metrics.
    /// Never the raw path, or every comment id and every probe for
    /// `/wp-login.php` would make a new time series.
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Index { board: At::Main } => "/",
            Route::Index { .. } => "/b/{board}",
            Route::Static { .. } => "/static/{name}",
            Route::Boards => "/api/boards",
            Route::ListComments { board: At::Main } | Route::AddComment { board: At::Main } => {
                "/api/comments"
            }
            Route::ListComments { .. } | Route::AddComment { .. } => "/api/boards/{board}/comments",
            Route::Like {
                board: At::Main, ..
            } => "/api/comments/{id}/like",
            Route::Like { .. } => "/api/boards/{board}/comments/{id}/like",
            Route::Events { board: At::Main } => "/events",
            Route::Events { .. } => "/api/boards/{board}/events",
            Route::Classroom { .. } => "/api/classroom/{token}/{action}",
            Route::Healthz => "/healthz",
            Route::Metrics => "/metrics",
            Route::Seed(SeedRoute::AddComment) => "/addComment",
            Route::Seed(SeedRoute::Favorite(_)) => "/favorite",
            Route::Seed(SeedRoute::CommentList) => "/commentList",
            Route::Seed(SeedRoute::Sse) => "/sse",
            Route::Admin(admin) => admin.pattern(),
            Route::WrongMethod { pattern, .. } => pattern,
            Route::NotFound => "unmatched",
        }
    }

    /// Whether the request opens an event stream. While the server stops, these
    /// still reach the stream hand-off, which answers `200` with a retry hint: a
    /// `503` would make EventSource give up for good.
    pub fn opens_stream(&self) -> bool {
        matches!(self, Route::Events { .. } | Route::Seed(SeedRoute::Sse))
    }
}

/// What a request names, once its head is within our limits: the decoded path
/// (for [`Route::parse`]) and the query. A 400, 414 or 431 otherwise.
pub fn target(req: &Request) -> Result<Target, Error> {
    check_head(req)?;
    Target::parse(req.url())
}

/// Answers one request on its route. `req` is mutable only to read its body.
pub fn dispatch(
    app: &App,
    req: &mut Request,
    route: Route,
    target: &Target,
    visitor: &Visitor,
) -> Result<Outcome, Error> {
    let reply = match route {
        Route::Index { board } => {
            // `?moderate` asks for the moderator's controls, where there are any.
            let moderate = app.admin.is_some() && target.param("moderate").is_some();
            api::index(app, &board.board()?, moderate)?
        }
        Route::Static { name } => api::static_file(app, name)?,
        Route::Boards => api::boards(app, target)?,
        Route::ListComments { board } => api::list(app, &board.board()?, target, visitor)?,
        Route::AddComment { board } => {
            check_same_origin(req)?;
            let board = board.board()?;
            check_blocked(app, visitor)?;
            check_rate(app, visitor)?;
            let form = read_comment_form(req)?;
            api::add_comment(app, &board, form, visitor)?
        }
        Route::Like { board, id, op } => {
            check_same_origin(req)?;
            let board = board.board()?;
            let id = input::parse_id(id)?;
            check_blocked(app, visitor)?;
            check_rate(app, visitor)?;
            api::like(app, &board, id, visitor, op)?
        }
        Route::Events { board } => return api::events(app, req, &board.board()?, target),
        Route::Classroom { token, action } => {
            check_same_origin(req)?;
            api::classroom_action(app, token, action)?
        }
        Route::Healthz => api::healthz(app),
        Route::Metrics => api::metrics(app)?,
        Route::Seed(SeedRoute::AddComment) => seed::add_comment(app, target, visitor)?,
        Route::Seed(SeedRoute::Favorite(op)) => seed::favorite(app, req, op, target, visitor)?,
        Route::Seed(SeedRoute::CommentList) => seed::comment_list(app, target, visitor)?,
        Route::Seed(SeedRoute::Sse) => return Ok(seed::sse(app, req, target)),
        Route::Admin(route) => admin::dispatch(app, req, route, target, visitor)?,
        Route::WrongMethod { allow, .. } => return Err(Error::MethodNotAllowed { allow }),
        Route::NotFound => {
            let path = truncate_path(&target.path);
            return Err(Error::NotFound(format!("no route for {path}")));
        }
    };
    Ok(Outcome::Reply(reply))
}

/// Where a stream request asks to resume: `Last-Event-ID` (an EventSource
/// reconnecting), else `?since=` (a page that just fetched the list).
fn resume(req: &Request, target: &Target) -> Resume {
    Resume::parse(header(req, "Last-Event-ID").or_else(|| target.param("since")))
}

fn truncate_path(path: &str) -> String {
    path.chars().take(100).collect()
}

fn check_rate(app: &App, visitor: &Visitor) -> Result<(), Error> {
    app.limiter
        .check(&visitor.id, &visitor.ip)
        .map_err(|retry_after| Error::TooManyRequests { retry_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'a>(method: Method, path: &'a str, config: &Config) -> Route<'a> {
        Route::parse(&method, path, config)
    }

    /// A path served with other methods is a 405 whose `Allow` lists exactly
    /// the methods the table would have taken, and it counts under the
    /// path's own label.
    #[test]
    fn wrong_method_allows_what_the_table_takes() {
        let config = Config::default();
        for (method, path, allow, pattern) in [
            (
                Method::Put,
                "/api/comments",
                "GET, HEAD, POST",
                "/api/comments",
            ),
            (
                Method::Get,
                "/api/comments/1/like",
                "POST, DELETE",
                "/api/comments/{id}/like",
            ),
            (Method::Delete, "/", "GET, HEAD", "/"),
            (
                Method::Post,
                "/static/app.js",
                "GET, HEAD",
                "/static/{name}",
            ),
        ] {
            assert_eq!(
                parse(method, path, &config),
                Route::WrongMethod { pattern, allow },
                "{path}"
            );
        }
    }

    /// HEAD is answered as GET, on every route GET takes.
    #[test]
    fn head_is_get() {
        let config = Config::default();
        assert_eq!(
            parse(Method::Head, "/", &config),
            Route::Index { board: At::Main }
        );
        assert_eq!(
            parse(Method::Head, "/events", &config),
            Route::Events { board: At::Main }
        );
    }

    /// The seed's routes and the fault panel exist only with their flags.
    #[test]
    fn optional_routes_need_their_flags() {
        let off = Config::default();
        assert_eq!(parse(Method::Get, "/sse", &off), Route::NotFound);
        assert_eq!(
            parse(Method::Post, "/api/classroom/t/drop", &off),
            Route::NotFound
        );
        let on = Config {
            seed_routes: true,
            classroom: true,
            ..Config::default()
        };
        let sse = parse(Method::Get, "/sse", &on);
        assert_eq!(sse, Route::Seed(SeedRoute::Sse));
        assert!(sse.opens_stream());
        assert_eq!(
            parse(Method::Delete, "/favorite", &on),
            Route::Seed(SeedRoute::Favorite(LikeOp::Unlike))
        );
        assert_eq!(
            parse(Method::Get, "/favorite", &on),
            Route::WrongMethod {
                pattern: "/favorite",
                allow: "POST, DELETE"
            }
        );
        assert_eq!(
            parse(Method::Post, "/api/classroom/t/drop", &on),
            Route::Classroom {
                token: "t",
                action: "drop"
            }
        );
    }

    /// Segments are handed on unchecked (a bad id is the handler's 400), and
    /// unknown paths share one label.
    #[test]
    fn segments_and_labels() {
        let config = Config::default();
        let like = parse(Method::Post, "/api/comments/abc/like", &config);
        assert_eq!(
            like,
            Route::Like {
                board: At::Main,
                id: "abc",
                op: LikeOp::Like
            }
        );
        assert_eq!(like.pattern(), "/api/comments/{id}/like");
        assert!(!like.opens_stream());
        for path in [
            "/wp-login.php",
            "/static/a/b",
            "/api",
            "/api/boards/x",
            "/api/boards/x/nope",
            "/b/x/y",
            "/api/events",
        ] {
            assert_eq!(parse(Method::Get, path, &config).pattern(), "unmatched");
        }
    }

    /// Every board route exists with the board in its path, with its own
    /// label (never the board's name: that would make series without bound);
    /// the name is checked by the handler, not here.
    #[test]
    fn board_routes() {
        let config = Config::default();
        let named = At::Named("post-1");
        for (method, path, route, pattern) in [
            (
                Method::Get,
                "/b/post-1",
                Route::Index { board: named },
                "/b/{board}",
            ),
            (
                Method::Post,
                "/api/boards/post-1/comments",
                Route::AddComment { board: named },
                "/api/boards/{board}/comments",
            ),
            (
                Method::Delete,
                "/api/boards/post-1/comments/3/like",
                Route::Like {
                    board: named,
                    id: "3",
                    op: LikeOp::Unlike,
                },
                "/api/boards/{board}/comments/{id}/like",
            ),
            (
                Method::Get,
                "/api/boards/post-1/events",
                Route::Events { board: named },
                "/api/boards/{board}/events",
            ),
            (Method::Get, "/api/boards", Route::Boards, "/api/boards"),
        ] {
            let parsed = parse(method, path, &config);
            assert_eq!(parsed, route, "{path}");
            assert_eq!(parsed.pattern(), pattern, "{path}");
        }
        assert!(parse(Method::Get, "/api/boards/x/events", &config).opens_stream());
        assert_eq!(
            parse(Method::Put, "/api/boards/x/comments", &config),
            Route::WrongMethod {
                pattern: "/api/boards/{board}/comments",
                allow: "GET, HEAD, POST"
            }
        );
        assert!(At::Named("Bad!").board().is_err());
        assert_eq!(At::Main.board().unwrap(), Board::main());
    }

    /// A board route's `path` is a path the table reads back as that route:
    /// the default board's without a board, any other's with its name.
    #[test]
    fn board_paths_parse_back() {
        let config = Config::default();
        let named = Board::parse("class-2b").unwrap();
        for board in [Board::main(), named] {
            let at = At::of(&board);
            for route in [
                Route::Index { board: at },
                Route::ListComments { board: at },
                Route::Events { board: at },
            ] {
                let path = route.path();
                assert_eq!(parse(Method::Get, &path, &config), route, "{path}");
            }
        }
        assert_eq!(Route::Events { board: At::Main }.path(), "/events");
        assert_eq!(
            Route::ListComments {
                board: At::Named("x")
            }
            .path(),
            "/api/boards/x/comments"
        );
    }
}
