//! Configuration from command-line flags and environment variables (a flag wins).
//!
//! Called once by `main`; everything else receives a finished [`Config`]. The flag
//! and variable names are part of the interface: scripts and docs rely on them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens when nothing is configured. Loopback only: exposing
/// the board to a network is a decision, so it needs a flag.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Prefix of every Redis key; it is wrapped in a hash tag (`{likeboard}:...`).
pub const DEFAULT_KEY_PREFIX: &str = "likeboard";
/// How many events the capped stream keeps (`XADD ... MAXLEN ~ N`). This is the
/// window in which a reconnecting browser can replay what it missed.
pub const DEFAULT_STREAM_LEN: u64 = 10_000;
/// Seconds between heartbeat comments on an idle event stream. Proxies drop idle
/// connections (nginx after 60 s by default); 15 s keeps well inside that.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
/// Writes per minute a single visitor or IP may make; generous enough that a
/// classroom never meets it, small enough to stop a script flooding the board.
pub const DEFAULT_WRITE_RATE: u32 = 120;
/// Seconds a client has to deliver a complete request (head and body) after it
/// connects or after its previous request; also the keep-alive idle timeout.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
/// Threads answering ordinary (non-SSE) requests. Each holds at most one request,
/// so this is also the cap on concurrent non-SSE requests; the rest wait in line.
pub const DEFAULT_WORKERS: usize = 16;

/// The usage text printed by `--help`; every flag, its variable and its default.
pub const USAGE: &str = "\
likeboard: a live comment board ranked by likes, pushed to browsers over SSE

USAGE:
    likeboard [FLAGS]

FLAGS (environment variable in brackets; a flag wins over its variable):
    --listen ADDR          address to listen on, port 0 picks a free port
                           [LIKEBOARD_LISTEN] (default 127.0.0.1:8080)
    --redis-url URL        Redis to store comments in, e.g. redis://127.0.0.1:6379/0
                           [REDIS_URL] (default: unset, the in-memory store: nothing persists)
    --key-prefix P         prefix of every Redis key, inside a hash tag {P}
                           [LIKEBOARD_KEY_PREFIX] (default likeboard)
    --stream-len N         events kept for replay (XADD MAXLEN ~ N)
                           [LIKEBOARD_STREAM_LEN] (default 10000)
    --heartbeat-secs S     seconds between heartbeat comments on idle streams
                           [LIKEBOARD_HEARTBEAT_SECS] (default 15)
    --max-subscribers N    most SSE clients at once; capped by the OS limits
                           [LIKEBOARD_MAX_SUBSCRIBERS] (default: computed from the OS limits)
    --write-rate N         writes per minute per visitor and per IP, 0 = no limit
                           [LIKEBOARD_WRITE_RATE] (default 120)
    --workers N            threads for ordinary requests (the cap on concurrent ones)
                           [LIKEBOARD_WORKERS] (default 16)
    --request-timeout-secs S  seconds to deliver a whole request, and to idle
                           between requests, before the connection is closed
                           [LIKEBOARD_REQUEST_TIMEOUT_SECS] (default 10)
    --assets-dir DIR       serve templates/ and static/ from DIR instead of the
                           copies built into the binary (for editing the page)
                           [LIKEBOARD_ASSETS_DIR] (default: unset, embedded)
    --seed-routes          also serve the original demo's routes (/addComment,
                           /favorite, /commentList, /sse); /addComment changes state
                           on GET, so it is unsafe cross-site
                           [LIKEBOARD_SEED_ROUTES=1] (default off)
    --classroom            show the fault panel: buttons with which each browser
                           drops, silences, buffers or refuses ITS OWN event
                           stream, to show a class what EventSource does
                           [LIKEBOARD_CLASSROOM=1] (default off)
    --help                 print this text
    --version              print the version
";

/// Everything the server needs to start; built by [`Config::from_args`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 asks the OS for a free one (tests use that).
    pub listen: SocketAddr,
    /// `None` selects the embedded in-memory store.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, so several boards can share one Redis.
    pub key_prefix: String,
    /// Length of the capped event stream (the replay window).
    pub stream_len: u64,
    /// Time between heartbeat comments; also bounds how long a dead client lingers.
    pub heartbeat: Duration,
    /// Requested SSE client cap; the server lowers it to what the OS allows.
    pub max_subscribers: Option<usize>,
    /// Writes per minute per visitor and per IP; 0 turns the limit off.
    pub write_rate: u32,
    /// Threads for ordinary requests.
    pub workers: usize,
    /// Time to deliver a request, and keep-alive idle time (see `guard.rs`).
    pub request_timeout: Duration,
    /// Serve the original demo's routes too.
    pub seed_routes: bool,
    /// Serve templates and static files from this directory instead of the binary.
    pub assets_dir: Option<PathBuf>,
    /// Show the fault panel: each browser may disturb its own streams.
    pub classroom: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a valid address"),
            redis_url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            stream_len: DEFAULT_STREAM_LEN,
            heartbeat: Duration::from_secs(DEFAULT_HEARTBEAT_SECS),
            max_subscribers: None,
            write_rate: DEFAULT_WRITE_RATE,
            workers: DEFAULT_WORKERS,
            request_timeout: Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECS),
            seed_routes: false,
            assets_dir: None,
            classroom: false,
        }
    }
}

/// What the command line asked for: run with a config, or print something and exit.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// A bad flag or value; `main` prints it on one line and exits with status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see --help)", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads flags from `args` (without the program name) and variables through
    /// `env`, so tests can pass both without touching the process environment.
    pub fn from_args<I, F>(args: I, env: F) -> Result<Command, ConfigError>
    where
        I: IntoIterator<Item = String>,
        F: Fn(&str) -> Option<String>,
    {
        let mut config = Config::default();
        // Environment first, so that flags read afterwards override it.
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = env("LIKEBOARD_LISTEN") {
            config.listen = parse("LIKEBOARD_LISTEN", &v)?;
        }
        config.redis_url = env("REDIS_URL");
        if let Some(v) = env("LIKEBOARD_KEY_PREFIX") {
            config.key_prefix = parse_prefix("LIKEBOARD_KEY_PREFIX", &v)?;
        }
        if let Some(v) = env("LIKEBOARD_STREAM_LEN") {
            config.stream_len = parse_positive("LIKEBOARD_STREAM_LEN", &v)?;
        }
        if let Some(v) = env("LIKEBOARD_HEARTBEAT_SECS") {
            config.heartbeat = Duration::from_secs(parse_positive("LIKEBOARD_HEARTBEAT_SECS", &v)?);
        }
        if let Some(v) = env("LIKEBOARD_MAX_SUBSCRIBERS") {
            config.max_subscribers = Some(parse_positive("LIKEBOARD_MAX_SUBSCRIBERS", &v)?);
        }
        if let Some(v) = env("LIKEBOARD_WRITE_RATE") {
            config.write_rate = parse("LIKEBOARD_WRITE_RATE", &v)?;
        }
        if let Some(v) = env("LIKEBOARD_WORKERS") {
            config.workers = parse_positive("LIKEBOARD_WORKERS", &v)?;
        }
        if let Some(v) = env("LIKEBOARD_REQUEST_TIMEOUT_SECS") {
            config.request_timeout =
                Duration::from_secs(parse_positive("LIKEBOARD_REQUEST_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = env("LIKEBOARD_SEED_ROUTES") {
            config.seed_routes = parse_bool("LIKEBOARD_SEED_ROUTES", &v)?;
        }
        if let Some(v) = env("LIKEBOARD_ASSETS_DIR") {
            config.assets_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env("LIKEBOARD_CLASSROOM") {
            config.classroom = parse_bool("LIKEBOARD_CLASSROOM", &v)?;
        }

        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            // Accept both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> Result<String, ConfigError> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => args
                        .next()
                        .ok_or_else(|| ConfigError(format!("{flag} needs a value"))),
                }
            };
            match flag.as_str() {
                "--help" | "-h" => return Ok(Command::Help),
                "--version" | "-V" => return Ok(Command::Version),
                "--listen" => config.listen = parse(&flag, &value()?)?,
                "--redis-url" => config.redis_url = Some(value()?).filter(|v| !v.is_empty()),
                "--key-prefix" => config.key_prefix = parse_prefix(&flag, &value()?)?,
                "--stream-len" => config.stream_len = parse_positive(&flag, &value()?)?,
                "--heartbeat-secs" => {
                    config.heartbeat = Duration::from_secs(parse_positive(&flag, &value()?)?)
                }
                "--max-subscribers" => {
                    config.max_subscribers = Some(parse_positive(&flag, &value()?)?)
                }
                "--write-rate" => config.write_rate = parse(&flag, &value()?)?,
                "--workers" => config.workers = parse_positive(&flag, &value()?)?,
                "--request-timeout-secs" => {
                    config.request_timeout = Duration::from_secs(parse_positive(&flag, &value()?)?)
                }
                "--seed-routes" => match inline {
                    Some(v) => config.seed_routes = parse_bool(&flag, &v)?,
                    None => config.seed_routes = true,
                },
                "--assets-dir" => config.assets_dir = Some(PathBuf::from(value()?)),
                "--classroom" => match inline {
                    Some(v) => config.classroom = parse_bool(&flag, &v)?,
                    None => config.classroom = true,
                },
                other => return Err(ConfigError(format!("unknown argument {other:?}"))),
            }
        }
        Ok(Command::Run(Box::new(config)))
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError(format!("{name}: invalid value {value:?}")))
}

fn parse_positive<T>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    let n: T = parse(name, value)?;
    if n <= T::default() {
        return Err(ConfigError(format!(
            "{name}: must be at least 1, got {value:?}"
        )));
    }
    Ok(n)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!(
            "{name}: expected 1 or 0, got {value:?}"
        ))),
    }
}

/// A key prefix sits inside `{...}`: braces would break the hash tag, and
/// spaces or control characters make keys miserable to inspect in redis-cli.
fn parse_prefix(name: &str, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConfigError(format!(
            "{name}: use 1-64 characters of A-Z a-z 0-9 _ - . :, got {value:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match Config::from_args(args.iter().map(|s| s.to_string()), lookup)? {
            Command::Run(c) => Ok(*c),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    /// With nothing set, the documented defaults apply and the in-memory store is chosen.
    #[test]
    fn defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.redis_url, None);
        assert_eq!(c.key_prefix, "likeboard");
        assert_eq!(c.stream_len, 10_000);
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert!(!c.seed_routes);
        assert!(!c.classroom);
    }

    /// `--classroom` and LIKEBOARD_CLASSROOM turn the fault panel on.
    #[test]
    fn classroom_flag() {
        assert!(run(&["--classroom"], &[]).unwrap().classroom);
        assert!(run(&[], &[("LIKEBOARD_CLASSROOM", "1")]).unwrap().classroom);
        assert!(
            !run(&["--classroom=0"], &[("LIKEBOARD_CLASSROOM", "1")])
                .unwrap()
                .classroom
        );
    }

    /// A flag overrides its environment variable.
    #[test]
    fn flag_wins_over_environment() {
        let c = run(
            &["--listen", "127.0.0.1:0", "--stream-len=5"],
            &[
                ("LIKEBOARD_LISTEN", "127.0.0.1:9999"),
                ("LIKEBOARD_STREAM_LEN", "7"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.stream_len, 5);
    }

    /// Environment variables apply when no flag is given.
    #[test]
    fn environment_applies() {
        let c = run(
            &[],
            &[
                ("REDIS_URL", "redis://127.0.0.1:1/"),
                ("LIKEBOARD_SEED_ROUTES", "1"),
            ],
        )
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:1/"));
        assert!(c.seed_routes);
    }

    /// Bad values and unknown flags are errors that name the culprit.
    #[test]
    fn bad_values_are_errors() {
        assert!(run(&["--stream-len", "0"], &[])
            .unwrap_err()
            .0
            .contains("--stream-len"));
        assert!(run(&["--listen", "nowhere"], &[])
            .unwrap_err()
            .0
            .contains("--listen"));
        assert!(run(&["--key-prefix", "a}b"], &[]).is_err());
        assert!(run(&["--bogus"], &[]).unwrap_err().0.contains("--bogus"));
        assert!(run(&["--heartbeat-secs"], &[])
            .unwrap_err()
            .0
            .contains("needs a value"));
    }
}
