//! Configuration from command-line flags and environment variables (a flag wins).
//!
//! Called once by `main`; everything else receives a finished [`Config`]. The flag
//! and variable names are part of the interface: scripts and docs rely on them.
//!
//! Every setting is declared once, as one row of [`OPTIONS`]: its flag, its
//! environment variable, its default, its `--help` text and the function that
//! stores a value in [`Config`]. The parser, [`Config::default`] and [`USAGE`]
//! all read that table, and `tests/ops.rs` checks README.md's configuration
//! table against it, so the four places that used to repeat a setting cannot
//! drift apart.
//!
//! Why a table of our own rather than clap: twenty-odd settings of two shapes (a
//! flag with a value, an on/off switch) fit in a page of plain data that a class
//! can read top to bottom, with no macro between the reader and the behaviour.
//! clap would add several crates and a derive macro to the build for what we do
//! not use (subcommands, completions, colours), and README's table would still
//! need its own check.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod options;

pub use options::{Initial, Opt, Usage, OPTIONS, USAGE};

/// Everything the server needs to start; built by [`Config::from_args`]. The
/// options that set each field, their defaults and limits are in [`OPTIONS`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 asks the OS for a free one (tests use that).
    pub listen: SocketAddr,
    /// `None` selects the embedded in-memory store, which loses everything when
    /// the process ends.
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`); empty for none.
    /// Excludes `redis_url`.
    pub redis_cluster: Vec<String>,
    /// Most boards there may be (`--max-boards`).
    pub max_boards: usize,
    /// Prefix of every Redis key, so several boards can share one Redis; it is
    /// wrapped in a hash tag (`{likeboard}:...`) so one script's keys share a
    /// Redis Cluster slot.
    pub key_prefix: String,
    /// Length of the capped event stream: how far back a reconnecting client
    /// can replay. Every instance on one Redis should use the same length,
    /// because whichever takes a write trims the stream.
    pub stream_len: u64,
    /// How many of the newest events the process keeps in memory, rendered,
    /// so that replays starting among them read no store (`recent.rs`).
    pub replay_ring: usize,
    /// Least time between two hand-outs of events to the streams (the pump's
    /// batching window under a storm; `pump.rs`).
    pub coalesce: Duration,
    /// Time between heartbeat comments; it keeps proxies from closing an idle
    /// stream, and bounds how long a departed client stays counted: a departure
    /// is noticed only when a write fails, usually the second write after it left.
    pub heartbeat: Duration,
    /// Requested SSE client cap; the server lowers it to what the OS allows
    /// (`limits.rs`), so `None` means "as many as the OS allows".
    pub max_subscribers: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed (`proxy.rs`): behind nginx
    /// the client's address is only known from it.
    pub trusted_proxies: Vec<crate::proxy::Cidr>,
    /// Whether `--trusted-proxy` flags have been read (they replace the variable's list).
    pub(crate) proxies_from_flags: bool,
    /// Writes per minute per visitor; an IP address gets `ratelimit::IP_FACTOR`
    /// times as many, since a classroom may share one address. 0 turns the limit off.
    pub write_rate: u32,
    /// New visitors (issued cookies) per minute per client address
    /// (`ratelimit.rs`); beyond it a request is its address's visitor and
    /// gets no cookie. 0, or a `write_rate` of 0, turns the limit off.
    pub visitor_rate: u32,
    /// Threads for ordinary requests; also the cap on concurrent ones, since
    /// each holds one request at a time. Event streams have their own threads.
    pub workers: usize,
    /// Time to deliver a request, and keep-alive idle time: tiny_http has no
    /// deadline of its own, so the connection guard enforces it (`guard/deadline.rs`).
    pub request_timeout: Duration,
    /// Serve the original demo's routes too (off by default: `/addComment`
    /// changes state on a GET).
    pub seed_routes: bool,
    /// Serve templates and static files from this directory instead of the
    /// copies in the binary, so the page can be edited without rebuilding.
    pub assets_dir: Option<PathBuf>,
    /// Where the secret that signs visitor cookies is, when not in the store
    /// (`visitor.rs`): for the in-memory store, whose key dies with the process.
    pub visitor_key_file: Option<PathBuf>,
    /// Where the moderators' token is (`moderation.rs`); `None` turns
    /// moderation off, and its routes do not exist (404).
    pub admin_token_file: Option<PathBuf>,
    /// Show the fault panel: each browser may disturb its own streams.
    pub classroom: bool,
}

impl Default for Config {
    /// Every setting at its default from [`OPTIONS`].
    fn default() -> Self {
        // Blanks, each overwritten below by its option's Initial::Value; only the
        // fields whose option is Unset or Off keep them (None, false).
        let mut config = Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            redis_url: None,
            redis_cluster: Vec::new(),
            max_boards: 0,
            key_prefix: String::new(),
            stream_len: 0,
            replay_ring: 0,
            coalesce: Duration::ZERO,
            heartbeat: Duration::ZERO,
            max_subscribers: None,
            trusted_proxies: Vec::new(),
            proxies_from_flags: false,
            write_rate: 0,
            visitor_rate: 0,
            workers: 0,
            request_timeout: Duration::ZERO,
            seed_routes: false,
            assets_dir: None,
            visitor_key_file: None,
            admin_token_file: None,
            classroom: false,
        };
        for opt in OPTIONS {
            if let Initial::Value(v) = opt.initial {
                // Checked by the `defaults` test: a bad default fails it.
                (opt.set)(&mut config, opt.flag, v).expect("a default in OPTIONS parses");
            }
        }
        config
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
        // Environment first, so that flags read afterwards override it. An empty
        // variable counts as unset.
        for opt in OPTIONS {
            if let Some(v) = env(opt.env).filter(|v| !v.is_empty()) {
                (opt.set)(&mut config, opt.env, &v)?;
            }
        }

        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            // Accept both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "--help" | "-h" => return Ok(Command::Help),
                "--version" | "-V" => return Ok(Command::Version),
                _ => {}
            }
            let opt = OPTIONS
                .iter()
                .find(|o| o.flag == flag)
                .ok_or_else(|| ConfigError(format!("unknown argument {flag:?}")))?;
            let value = match (inline, opt.value) {
                (Some(v), _) => v,
                // A bare switch turns its setting on.
                (None, None) => "1".to_string(),
                (None, Some(_)) => args
                    .next()
                    .ok_or_else(|| ConfigError(format!("{flag} needs a value")))?,
            };
            (opt.set)(&mut config, &flag, &value)?;
        }
        if config.redis_url.is_some() && !config.redis_cluster.is_empty() {
            return Err(ConfigError(
                "--redis-cluster and --redis-url (REDIS_URL) exclude each other: name one store"
                    .into(),
            ));
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

/// Seed nodes of a cluster: comma-separated `redis://host:port` URLs.
fn parse_cluster(name: &str, value: &str) -> Result<Vec<String>, ConfigError> {
    let seeds: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match seeds.iter().find(|s| !s.starts_with("redis://")) {
        Some(bad) => Err(ConfigError(format!(
            "{name}: each node is a redis://host:port URL, got {bad:?}"
        ))),
        None => Ok(seeds),
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
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.redis_url, None);
        assert_eq!(c.key_prefix, "likeboard");
        assert_eq!(c.stream_len, 10_000);
        assert_eq!(c.max_boards, 10_000);
        assert!(c.redis_cluster.is_empty());
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.coalesce, Duration::from_millis(50));
        assert!(!c.seed_routes);
        assert!(!c.classroom);
        // The rest of the table's values, which Config::default parses too.
        assert_eq!(c.write_rate, 120);
        assert_eq!(c.visitor_rate, 60);
        assert_eq!(c.workers, 16);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.max_subscribers, None);
        assert_eq!(c.assets_dir, None);
    }

    /// Flags and variables are unique (a repeated one would shadow the other),
    /// and an option is a switch exactly when it defaults to off.
    #[test]
    fn table_is_consistent() {
        for (i, opt) in OPTIONS.iter().enumerate() {
            assert!(opt.flag.starts_with("--"), "{}", opt.flag);
            let later = &OPTIONS[i + 1..];
            assert!(later.iter().all(|o| o.flag != opt.flag), "{}", opt.flag);
            assert!(later.iter().all(|o| o.env != opt.env), "{}", opt.env);
            assert_eq!(
                opt.value.is_none(),
                opt.initial == Initial::Off,
                "{}",
                opt.flag
            );
        }
    }

    /// `--help` states the per-IP write limit the rate limiter really applies.
    #[test]
    fn help_states_the_ip_factor() {
        let opt = OPTIONS.iter().find(|o| o.flag == "--write-rate").unwrap();
        let factor = format!("{} times", crate::ratelimit::IP_FACTOR);
        assert!(opt.help.contains(&factor), "{}", opt.help);
    }

    /// `--help` lists every option with its variable and its default.
    #[test]
    fn help_lists_every_option() {
        // The wrapped text, with its line breaks and indents as single spaces.
        let help = USAGE.to_string();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for opt in OPTIONS {
            let source = format!("[{}] default {}", opt.env_shown(), opt.initial.text());
            assert!(
                flat.contains(&format!("{} ", opt.flag_shown())),
                "{}",
                opt.flag
            );
            assert!(flat.contains(&source), "{source}");
        }
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

    /// A cluster is named by its nodes' URLs, and excludes one Redis URL.
    #[test]
    fn cluster_seeds() {
        let c = run(
            &[
                "--redis-cluster",
                "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.redis_cluster,
            vec!["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert!(run(&["--redis-cluster", "127.0.0.1:7000"], &[]).is_err());
        assert!(run(
            &["--redis-cluster", "redis://127.0.0.1:7000"],
            &[("REDIS_URL", "redis://127.0.0.1:6379")]
        )
        .is_err());
    }
}
