//! The table of settings: one row per option, from which the parser, the
//! defaults and `--help` are all made (see `config/mod.rs` for why a table).

use std::fmt;

use super::*;

/// One setting, declared once; see [`OPTIONS`].
pub struct Opt {
    /// The flag as typed, e.g. `--stream-len`.
    pub flag: &'static str,
    /// What `--help` calls the value (`N`, `ADDR`); `None` makes the option a
    /// switch: the bare flag turns it on, `--flag=0` off, `VAR=1` on.
    pub value: Option<&'static str>,
    /// The environment variable that sets it when the flag is not given.
    pub env: &'static str,
    /// What it is when neither is given.
    pub initial: Initial,
    /// What it does, one sentence for `--help` (wrapped when printed).
    pub help: &'static str,
    /// Parses a value into the config; `name` is the flag or the variable the
    /// value came from, so an error names what the user typed.
    pub(super) set: fn(&mut Config, name: &str, value: &str) -> Result<(), ConfigError>,
}

/// A setting's default, as the table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// A value, parsed by the option's own setter when [`Config::default`] runs,
    /// so the text shown in `--help` is the very value used.
    Value(&'static str),
    /// No value: the field stays `None`; the text says what that means.
    Unset(&'static str),
    /// A switch that is off.
    Off,
}

impl Initial {
    /// The default as `--help` and README's table show it (README puts a
    /// [`Initial::Value`] in backticks).
    pub fn text(&self) -> &'static str {
        match *self {
            Initial::Value(v) | Initial::Unset(v) => v,
            Initial::Off => "off",
        }
    }
}

impl Opt {
    /// The variable as it is written in docs: a switch shows the value that
    /// turns it on (`LIKEBOARD_CLASSROOM=1`).
    pub fn env_shown(&self) -> String {
        match self.value {
            Some(_) => self.env.to_string(),
            None => format!("{}=1", self.env),
        }
    }

    /// The flag with its value name, as in `--help` and README: `--listen ADDR`.
    pub fn flag_shown(&self) -> String {
        match self.value {
            Some(value) => format!("{} {value}", self.flag),
            None => self.flag.to_string(),
        }
    }
}

/// Every setting. The order is the order of `--help`.
pub const OPTIONS: &[Opt] = &[
    Opt {
        flag: "--listen",
        value: Some("ADDR"),
        env: "LIKEBOARD_LISTEN",
        // Loopback only: exposing the board to a network is a decision, so it
        // needs a flag.
        initial: Initial::Value("127.0.0.1:8080"),
        help: "address to listen on; port 0 picks a free port",
        set: |c, name, v| {
            c.listen = parse(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--redis-url",
        value: Some("URL"),
        env: "REDIS_URL",
        initial: Initial::Unset("unset: the in-memory store, nothing persists"),
        help: "Redis to store comments in, e.g. redis://127.0.0.1:6379/0",
        set: |c, _, v| {
            c.redis_url = Some(v.to_string()).filter(|v| !v.is_empty());
            Ok(())
        },
    },
    Opt {
        flag: "--redis-cluster",
        value: Some("URLS"),
        env: "LIKEBOARD_REDIS_CLUSTER",
        initial: Initial::Unset("unset: one Redis (--redis-url) or none"),
        help: "a Redis Cluster to store comments in, named by some of its nodes, \
               e.g. redis://10.0.0.1:6379,redis://10.0.0.2:6379; excludes --redis-url",
        set: |c, name, v| {
            c.redis_cluster = parse_cluster(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--max-boards",
        value: Some("N"),
        env: "LIKEBOARD_MAX_BOARDS",
        // Generous for a site with a board per article, and still a bound on
        // what strangers can make the store keep.
        initial: Initial::Value("10000"),
        help: "most boards there may be; a comment that would make one more is refused (409)",
        set: |c, name, v| {
            c.max_boards = parse_positive(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--key-prefix",
        value: Some("P"),
        env: "LIKEBOARD_KEY_PREFIX",
        initial: Initial::Value("likeboard"),
        help: "prefix of every Redis key, inside a hash tag {P}",
        set: |c, name, v| {
            c.key_prefix = parse_prefix(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--stream-len",
        value: Some("N"),
        env: "LIKEBOARD_STREAM_LEN",
        // The window in which a reconnecting browser can replay what it missed.
        initial: Initial::Value("10000"),
        help: "events kept for replay: exactly the newest N (XADD MAXLEN N)",
        set: |c, name, v| {
            c.stream_len = parse_positive(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--replay-ring",
        value: Some("N"),
        env: "LIKEBOARD_REPLAY_RING",
        // Most reconnecting browsers missed only the last few events; the
        // newest 10,000 (at most 16 MiB of frames) serve nearly every replay
        // from memory. 0 sends every replay to the store.
        initial: Initial::Value("10000"),
        help: "newest events kept in memory for replays (at most 16 MiB of them); \
               a replay from further back reads the store",
        set: |c, name, v| {
            c.replay_ring = parse(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--coalesce-ms",
        value: Some("MS"),
        env: "LIKEBOARD_COALESCE_MS",
        // Measured (`make bench`, the like storm): with 1,000 streams open, 16
        // senders keep 25% of their like rate when every event is handed out
        // on its own, 36% at 20 ms, 57% at 50 ms. 50 ms is below what anyone
        // sees, and half the bench's 100 ms between fan-out likes.
        initial: Initial::Value("50"),
        help: "hand events to the streams at most once per MS milliseconds; \
               a lone event goes at once, a storm's in batches (0: each read at once)",
        set: |c, name, v| {
            let ms: u64 = parse(name, v)?;
            if ms > 1000 {
                return Err(ConfigError(format!(
                    "{name}: {ms} ms would delay every storm's events; at most 1000"
                )));
            }
            c.coalesce = Duration::from_millis(ms);
            Ok(())
        },
    },
    Opt {
        flag: "--heartbeat-secs",
        value: Some("S"),
        env: "LIKEBOARD_HEARTBEAT_SECS",
        // Proxies drop idle connections (nginx after 60 s by default); 15 s
        // keeps well inside that.
        initial: Initial::Value("15"),
        help: "seconds between heartbeat comments on idle streams",
        set: |c, name, v| {
            c.heartbeat = Duration::from_secs(parse_positive(name, v)?);
            Ok(())
        },
    },
    Opt {
        flag: "--max-subscribers",
        value: Some("N"),
        env: "LIKEBOARD_MAX_SUBSCRIBERS",
        initial: Initial::Unset("computed from the OS limits"),
        help: "most SSE clients at once; the OS limits can lower it, never raise it",
        set: |c, name, v| {
            c.max_subscribers = Some(parse_positive(name, v)?);
            Ok(())
        },
    },
    Opt {
        flag: "--trusted-proxy",
        value: Some("CIDR"),
        env: "LIKEBOARD_TRUSTED_PROXIES",
        initial: Initial::Unset("none: the socket's peer is the client"),
        help: "a proxy whose X-Forwarded-For is believed (repeat the flag; \
               comma-separated in the variable); the client is then the right-most \
               address in it that is not a trusted proxy",
        set: |c, name, v| {
            // Flags replace what the variable said, and add up among themselves.
            let from_flag = name.starts_with("--");
            if from_flag && !c.proxies_from_flags {
                c.trusted_proxies.clear();
                c.proxies_from_flags = true;
            }
            for item in v.split(',').filter(|i| !i.trim().is_empty()) {
                let cidr = item
                    .parse()
                    .map_err(|why| ConfigError(format!("{name}: {why}")))?;
                c.trusted_proxies.push(cidr);
            }
            Ok(())
        },
    },
    Opt {
        flag: "--write-rate",
        value: Some("N"),
        env: "LIKEBOARD_WRITE_RATE",
        // Generous enough that a classroom never meets it, small enough to stop
        // a script flooding the board.
        initial: Initial::Value("120"),
        // The factor is ratelimit::IP_FACTOR; a unit test below keeps it in step.
        help: "writes per minute per visitor, and 20 times that per IP address; 0 = no limit",
        set: |c, name, v| {
            c.write_rate = parse(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--visitor-rate",
        value: Some("N"),
        env: "LIKEBOARD_VISITOR_RATE",
        // A minute's worth may come at once, so a classroom of 40 behind one
        // NAT address all get cookies together; a script minting identities
        // gets one a second after that.
        initial: Initial::Value("60"),
        help: "new visitors (issued cookies) per minute per client address, a minute's \
               worth at once; beyond it a request is its address's visitor and gets no \
               cookie; off with --write-rate 0; 0 = no limit",
        set: |c, name, v| {
            c.visitor_rate = parse(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--workers",
        value: Some("N"),
        env: "LIKEBOARD_WORKERS",
        // Each worker holds at most one request, so this is also the cap on
        // concurrent non-SSE requests; the rest wait in line. On 2 cores with
        // Redis on the same machine (`make bench`, 32 senders), 8 and 16
        // answered as many likes (runs alternating: 19.1-20.3k/s and
        // 19.0-20.1k/s), 32 fewer (14.3k): more threads than that only take
        // turns on the cores. A Redis further away (each round trip waits
        // longer) wants more.
        initial: Initial::Value("16"),
        help: "threads for ordinary requests (the cap on concurrent ones)",
        set: |c, name, v| {
            c.workers = parse_positive(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--request-timeout-secs",
        value: Some("S"),
        env: "LIKEBOARD_REQUEST_TIMEOUT_SECS",
        initial: Initial::Value("10"),
        help: "seconds to deliver a whole request, and to idle between requests, \
               before the connection is closed",
        set: |c, name, v| {
            c.request_timeout = Duration::from_secs(parse_positive(name, v)?);
            Ok(())
        },
    },
    Opt {
        flag: "--assets-dir",
        value: Some("DIR"),
        env: "LIKEBOARD_ASSETS_DIR",
        initial: Initial::Unset("unset: templates and static files embedded in the binary"),
        help: "serve templates/ and static/ from DIR instead of the copies built into \
               the binary (for editing the page)",
        set: |c, _, v| {
            c.assets_dir = Some(PathBuf::from(v));
            Ok(())
        },
    },
    Opt {
        flag: "--visitor-key-file",
        value: Some("PATH"),
        env: "LIKEBOARD_VISITOR_KEY_FILE",
        initial: Initial::Unset("unset: a key kept in the store, shared by every instance"),
        help: "a file holding the secret (at least 32 characters) that signs visitor \
               cookies, instead of the one the store keeps",
        set: |c, _, v| {
            c.visitor_key_file = Some(PathBuf::from(v));
            Ok(())
        },
    },
    Opt {
        flag: "--admin-token-file",
        value: Some("PATH"),
        env: "LIKEBOARD_ADMIN_TOKEN_FILE",
        // A file, not a flag's value: a command line is visible to every user
        // of the machine (ps, /proc/*/cmdline), and ends up in shell histories.
        initial: Initial::Unset("unset: moderation is off and its routes are 404"),
        help: "a file holding the moderators' secret token (at least 32 characters); \
               requests bearing it (Authorization: Bearer) may hide, delete, block and lock",
        set: |c, _, v| {
            c.admin_token_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
            Ok(())
        },
    },
    Opt {
        flag: "--seed-routes",
        value: None,
        env: "LIKEBOARD_SEED_ROUTES",
        initial: Initial::Off,
        help: "also serve the original demo's routes (/addComment, /favorite, \
               /commentList, /sse); /addComment changes state on GET, so it is unsafe \
               cross-site",
        set: |c, name, v| {
            c.seed_routes = parse_bool(name, v)?;
            Ok(())
        },
    },
    Opt {
        flag: "--classroom",
        value: None,
        env: "LIKEBOARD_CLASSROOM",
        initial: Initial::Off,
        help: "show the fault panel: buttons with which each browser drops, silences, \
               buffers or refuses ITS OWN event stream, to show a class what \
               EventSource does",
        set: |c, name, v| {
            c.classroom = parse_bool(name, v)?;
            Ok(())
        },
    },
];

/// The text `--help` prints, written from [`OPTIONS`] when it is displayed
/// (`print!("{USAGE}")`), so it lists every setting with its variable and default.
pub const USAGE: Usage = Usage;

/// See [`USAGE`]; a type only so that the help text can be built at run time
/// and still be printed like a constant.
pub struct Usage;

/// Width at which `--help` wraps the description of an option.
const HELP_WIDTH: usize = 79;

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "likeboard: a live comment board ranked by likes, pushed to browsers over SSE\n\
             \n\
             USAGE:\n    likeboard [FLAGS]\n\
             \n\
             FLAGS (--flag value or --flag=value; the environment variable in brackets\n\
             is read when the flag is not given; then the default applies):\n",
        )?;
        for opt in OPTIONS {
            writeln!(f, "    {}", opt.flag_shown())?;
            let source = format!("[{}] default {}", opt.env_shown(), opt.initial.text());
            for line in wrap(opt.help, HELP_WIDTH - 8)
                .into_iter()
                .chain(wrap(&source, HELP_WIDTH - 8))
            {
                writeln!(f, "        {line}")?;
            }
        }
        f.write_str(
            "    --help, -h\n        print this text\n    \
             --version, -V\n        print the version\n",
        )
    }
}

/// Splits `text` at spaces into lines of at most `width` characters (a longer
/// word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("lines starts non-empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}
