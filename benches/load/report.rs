//! The report: the machine and the version measured, then every phase's
//! figures as Markdown tables with the targets' verdicts, written to
//! BENCHMARKS.md (keeping the hand-written notes after its marker) or, for
//! `--quick`, to target/bench-quick.md.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::capacity::Capacity;
use crate::clients::{Tally, FLOOR_FRAME, READER_THREADS};
use crate::procstat::ProcSnapshot;
use crate::scenarios::{Burst, FanOut, LikeRun, Restart, Storm, BURST_PATH};
use crate::support::{Likeboard, RedisServer};
use crate::{RedisProbe, Sizes, IDLE_SAMPLE};

/// CPU (% of one core) other processes may use in a phase before the report
/// says the run shared the machine.
const SHARED_MACHINE_PCT: f64 = 25.0;

pub struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
    redis: String,
    rustc: String,
    open_files: usize,
    max_map_count: String,
    /// The commit the server was built from, and whether src/ had changes on top.
    commit: String,
}

pub fn machine(redis: &RedisServer, open_files: usize) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map_or("unknown".into(), |v| {
                v.trim_start_matches([' ', '\t', ':']).to_string()
            }),
        cores: thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        redis: redis.version(),
        rustc: Command::new("rustc")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        open_files,
        max_map_count: read("/proc/sys/vm/max_map_count").trim().to_string(),
        commit: commit(),
    }
}

/// The 1, 5 and 15-minute load averages, from /proc/loadavg.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git rev-parse --short HEAD` of this checkout, noting uncommitted changes
/// to what the server is built from: figures belong to a version.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    match git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ]) {
        Some(changes) if changes.is_empty() => head,
        _ => format!("{head} with uncommitted changes to src/ or Cargo.*"),
    }
}

/// Everything measured in one run.
#[derive(Default)]
pub struct Report {
    machine: Option<Machine>,
    server_command: String,
    redis_command: String,
    pub cap: usize,
    /// The machine's 1/5/15-minute load averages at the start and the end.
    pub load_average: (String, String),
    pub ceiling: Option<LikeRun>,
    pub likes: Option<LikeRun>,
    pub burst: Option<Burst>,
    pub fan_out: Vec<FanOut>,
    pub storm: Option<Storm>,
    pub capacity: Option<Capacity>,
    pub restart: Option<Restart>,
    /// (idle SSE clients, the server's process figures then).
    pub memory: Vec<(usize, ProcSnapshot)>,
    /// Anything that did not go as planned, said plainly in the report.
    pub notes: Vec<String>,
    pub server_log_warnings: Vec<String>,
}

/// The marker after which BENCHMARKS.md holds hand-written analysis that a new
/// run keeps.
const NOTES_MARKER: &str =
    "<!-- Everything below this line is written by hand and kept by `make bench`. -->";

pub fn kept_notes(path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match old.split_once(NOTES_MARKER) {
        Some((_, notes)) => format!("\n{NOTES_MARKER}{notes}"),
        None => format!("\n{NOTES_MARKER}\n"),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target's verdict: met, missed, or not run (at the target's size).
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not run",
    }
}

impl Report {
    pub fn new(machine: Machine, redis: &RedisServer, server: &Likeboard) -> Report {
        Report {
            machine: Some(machine),
            server_command: format!(
                "{} {}",
                Path::new(env!("CARGO_BIN_EXE_likeboard"))
                    .file_name()
                    .map_or("likeboard".into(), |n| n.to_string_lossy()),
                server.args().join(" ")
            ),
            redis_command: format!(
                "redis-server --port {} --bind 127.0.0.1 --save \"\" --appendonly no",
                redis.port
            ),
            ..Report::default()
        }
    }

    pub fn markdown(&self, sizes: &Sizes, took: Duration) -> String {
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Written by `{}` in {:.0} s{}. Loopback only: the load generator, the server and \
             Redis share the same cores, so every figure includes the generator's own cost.\n",
            if sizes.quick {
                "cargo bench --bench load -- --quick"
            } else {
                "make bench"
            },
            took.as_secs_f64(),
            if sizes.quick {
                " (QUICK: small sizes, a smoke check, not a measurement)"
            } else {
                ""
            }
        );
        if let Some((phase, others)) = self.busiest_neighbour() {
            if others > SHARED_MACHINE_PCT {
                let _ = writeln!(
                    w,
                    "**This run shared the machine**: other processes used up to {others:.0}% of a \
                     core (during {phase}). Absolute figures are pessimistic; ratios measured in \
                     the same phase (p99 against the floor, likes/s against the ceiling) hold \
                     better.\n"
                );
            }
        }
        self.machine_section(w);
        self.commands_section(w);
        self.results_section(w, sizes);
        self.targets_section(w, sizes);
        self.issue13_section(w, sizes);
        self.notes_section(w);
        md
    }

    /// The phase in which other processes used the most CPU, and how much.
    fn busiest_neighbour(&self) -> Option<(String, f64)> {
        let mut phases: Vec<(String, f64)> = Vec::new();
        if let Some(r) = &self.ceiling {
            phases.push(("the direct-Redis ceiling".into(), r.cpu.others));
        }
        if let Some(r) = &self.likes {
            phases.push(("like throughput".into(), r.cpu.others));
        }
        for f in &self.fan_out {
            phases.push((
                format!("fan-out to {}", int(f.n as u64)),
                f.likes.cpu.others,
            ));
        }
        if let Some(s) = &self.storm {
            phases.push(("the storm's senders alone".into(), s.alone.cpu.others));
            phases.push(("the storm".into(), s.likes.cpu.others));
        }
        if let Some(c) = &self.capacity {
            phases.push(("the capacity likes".into(), c.likes.cpu.others));
        }
        if let Some(r) = &self.restart {
            phases.push(("the reconnect storm".into(), r.storm.cpu.others));
        }
        phases.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn machine_section(&self, w: &mut String) {
        let Some(m) = &self.machine else { return };
        let _ = writeln!(w, "## Machine\n");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| server built from commit | {} |", m.commit);
        let _ = writeln!(w, "| CPU | {} |", m.cpu);
        let _ = writeln!(w, "| cores | {} |", m.cores);
        let _ = writeln!(w, "| memory | {:.1} GiB |", m.memory_gib);
        let _ = writeln!(w, "| kernel | {} |", m.kernel);
        let _ = writeln!(w, "| Redis | {} |", m.redis);
        let _ = writeln!(w, "| Rust | {} |", m.rustc);
        let _ = writeln!(
            w,
            "| open files (hard limit) | {} |",
            int(m.open_files as u64)
        );
        let _ = writeln!(w, "| vm.max_map_count | {} |", m.max_map_count);
        let _ = writeln!(
            w,
            "| server's subscriber cap (`/healthz` max_subscribers) | {} |",
            int(self.cap as u64)
        );
        let _ = writeln!(
            w,
            "| load average (1, 5, 15 min) at start; at end | {}; {} |\n",
            self.load_average.0, self.load_average.1
        );
    }

    fn commands_section(&self, w: &mut String) {
        let _ = writeln!(w, "## Commands\n");
        let _ = writeln!(w, "```");
        let _ = writeln!(
            w,
            "make bench         # cargo bench --bench load (release build)"
        );
        let _ = writeln!(
            w,
            "make bench-quick   # cargo bench --bench load -- --quick"
        );
        let _ = writeln!(w, "# what the bench starts:");
        let _ = writeln!(w, "{}", self.redis_command);
        let _ = writeln!(w, "RUST_LOG=warn {}", self.server_command);
        let _ = writeln!(w, "```\n");
        let _ = writeln!(
            w,
            "Every like comes from a new visitor, so each one changes a score and emits an \
             event: a cookie `lb_visitor=<id>.<signature>` signed like the ones the server \
             issues, with the key the bench hands it in `--visitor-key-file` (the test kit's \
             `visitor(n)`); a cookie it did not take would leave the score unchanged, which the \
             runs would show (a final score short of the likes acknowledged, failed likes). \
             SSE clients are plain sockets read by {READER_THREADS} epoll threads with a \
             hand-written chunked/SSE parser. Latencies are in histogram \
             buckets 1/64 of their value wide (max is exact).\n"
        );
    }

    fn results_section(&self, w: &mut String, sizes: &Sizes) {
        let _ = writeln!(w, "## Results\n");
        let _ = writeln!(
            w,
            "### 1. Like throughput, and 5a. the direct-Redis ceiling\n"
        );
        table_head(w, "| run | clients | seconds | likes acked | likes/s | p50 | p99 | max | failures | final score = acked | server context switches per like | CPU: server | Redis | generator | others |");
        for (name, run) in [
            ("HTTP `POST /api/comments/{id}/like`", &self.likes),
            (
                "5a. `SET_LIKE` script straight to Redis, no HTTP",
                &self.ceiling,
            ),
        ] {
            let Some(r) = run else { continue };
            let _ = writeln!(
                w,
                "| {name} | {} | {:.1} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} |",
                r.clients,
                r.secs,
                int(r.acked),
                int(r.rate() as u64),
                ms(r.latency.p50()),
                ms(r.latency.p99()),
                ms(r.latency.max_ms()),
                r.failures,
                match r.final_score {
                    Some(s) if s == r.acked => format!("yes ({})", int(s)),
                    Some(s) => format!("**no: {}**", int(s)),
                    None => "?".into(),
                },
                per(r.cpu.server.map(|_| r.cpu.server_switches), r.acked),
                r.cpu.cells(),
            );
        }
        let _ = writeln!(
            w,
            "\nCPU is in % of one core (the machine has two); \"generator\" is this benchmark's \
             own load generator, \"others\" every other process on the machine. The HTTP senders' connections \
             are opened one after another and answered once before the clock starts.\n"
        );
        if let Some(b) = &self.burst {
            let _ = writeln!(w, "### 1b. A burst of new keep-alive connections\n");
            let _ = writeln!(
                w,
                "{} connections opened at the same instant, each sending `GET {BURST_PATH}` (no \
                 Redis behind it) and then staying open for {} s, as browser tabs do. A reply \
                 other than 200 counts as failed.\n",
                b.connections,
                b.held.as_secs()
            );
            let _ = writeln!(
                w,
                "| first reply p50 | p99 | max | slower than {} ms | failed |",
                b.slow_after.as_millis()
            );
            let _ = writeln!(w, "|---|---|---|---|---|");
            let _ = writeln!(
                w,
                "| {} | {} | {} | **{}** | {} |\n",
                ms(b.first_reply.p50()),
                ms(b.first_reply.p99()),
                ms(b.first_reply.max_ms()),
                b.slow,
                b.failed
            );
            if b.slow > 0 {
                let _ = writeln!(
                    w,
                    "A first reply that takes about {} s was answered only when the other \
                     connections closed: the connection sat unserved in the meantime.\n",
                    b.held.as_secs()
                );
            }
        }

        let _ = writeln!(
            w,
            "### 2. Fan-out latency ({} likes {} ms apart), and 5b. the floor\n",
            sizes.fan_out_likes,
            sizes.fan_out_gap.as_millis()
        );
        let _ = writeln!(
            w,
            "Time from sending a like to each client reading its event. The floor: one thread \
             writing a {FLOOR_FRAME}-byte frame to N connected loopback sockets, read the same way. \
             The server's CPU is metered from the first like until every client has read the \
             last one.\n"
        );
        table_head(w, "| clients | connect | deliveries | p50 | p99 | max | missed | dropped | floor p50 | floor p99 | floor max | p99 / floor p99 | the like's reply p50, max | server context switches per delivery | server CPU per delivery | CPU: server | Redis | generator | others |");
        for f in &self.fan_out {
            let label = match &f.limited_by {
                Some(_) => format!("{} (asked {})", int(f.n as u64), int(f.asked as u64)),
                None => int(f.n as u64),
            };
            let _ = writeln!(
                w,
                "| {label} | {:.1} s{} | {} | {} | {} | {} | {} | {} | {}, {} | {} | {} | {} |",
                f.connect_secs,
                if f.connect_failures > 0 {
                    format!(", **{} failed**", f.connect_failures)
                } else {
                    String::new()
                },
                deliveries(&f.tally, f.expected),
                f.tally.dropped + f.server_dropped,
                ms(f.floor.tally.latency.p50()),
                ms(f.floor.tally.latency.p99()),
                ms(f.floor.tally.latency.max_ms()),
                ratio(f.tally.latency.p99(), f.floor.tally.latency.p99()),
                ms(f.likes.latency.p50()),
                ms(f.likes.latency.max_ms()),
                per(Some(f.likes.cpu.server_switches), f.tally.delivered()),
                us(cpu_per(f.likes.cpu.server_secs, f.tally.delivered())),
                f.likes.cpu.cells(),
            );
        }
        for f in &self.fan_out {
            if let Some(why) = &f.limited_by {
                let _ = writeln!(
                    w,
                    "\n{} clients were asked for; {} fit, limited by {why}.",
                    int(f.asked as u64),
                    int(f.n as u64)
                );
            }
            for (floor, name) in [
                (&f.floor, "floor"),
                (&f.threaded, "thread-per-socket floor"),
            ] {
                if floor.tally.delivered() != floor.expected || floor.tally.dropped > 0 {
                    let _ = writeln!(
                        w,
                        "\nThe {name} at {} sockets delivered {} of {} frames.",
                        floor.n,
                        floor.tally.delivered(),
                        floor.expected
                    );
                }
            }
        }
        let _ = writeln!(w);
        if !self.fan_out.is_empty() {
            let _ = writeln!(
                w,
                "#### 5c. The design card's own floor: a thread per socket\n\n\
                 The same sockets and frames, each socket written by a thread of its own: one \
                 publisher sends the frame to every writer's channel (in a mutex-guarded list, as \
                 the hub keeps them) and unparks it; the writer writes the frame and parks again. No HTTP, framing or store: what a \
                 thread per client costs by itself on this machine. CPU per delivery is the bench \
                 process's (its writers and its epoll readers) for the floors, and the server's \
                 plus the generator's for the server.\n"
            );
            table_head(w, "| clients | p50 | p99 | max | its p99 / one-thread floor p99 | server p99 / its p99 | CPU per delivery: one thread | a thread per socket | the server, and the generator reading it |");
            for f in &self.fan_out {
                let t = &f.threaded.tally.latency;
                let floor_cpu = |floor: &crate::scenarios::Floor| {
                    us(cpu_per(Some(floor.cpu_secs), floor.tally.delivered()))
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | **{}** | {} | {} | {} | {} | {} | {} + {} |",
                    int(f.n as u64),
                    ms(t.p50()),
                    ms(t.p99()),
                    ms(t.max_ms()),
                    ratio(t.p99(), f.floor.tally.latency.p99()),
                    ratio(f.tally.latency.p99(), t.p99()),
                    floor_cpu(&f.floor),
                    floor_cpu(&f.threaded),
                    us(cpu_per(f.likes.cpu.server_secs, f.tally.delivered())),
                    us(cpu_per(
                        Some(f.likes.cpu.generator_secs),
                        f.tally.delivered()
                    )),
                );
            }
            let _ = writeln!(w);
        }

        if let Some(s) = &self.storm {
            self.storm_section(w, sizes, s);
        }

        let _ = writeln!(w, "### 4. Memory of the server process\n");
        let _ = writeln!(
            w,
            "Measured with the clients connected and idle, {} s after the last one connected \
             (longer than tiny_http's pool keeps an idle thread), from `/proc/PID/status` and \
             `/proc/PID/fd`; the writers' stacks are the resident pages of the mappings of \
             their size in `/proc/PID/smaps`, the rest is everything else (heap, mostly); the server's CPU is sampled over the last {} of those seconds.\n",
            (sizes.idle_settle + IDLE_SAMPLE).as_secs(),
            IDLE_SAMPLE.as_secs()
        );
        table_head(w, "| idle SSE clients | RSS | threads | fds | RSS per client | of which writer stacks | the rest | threads per client | fds per client | server CPU while idle |");
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        for (n, m) in &self.memory {
            let per = |now: u64, then: u64| {
                if *n == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", (now as f64 - then as f64) / *n as f64)
                }
            };
            let rest =
                |now: &crate::procstat::ProcSnapshot| now.rss_kib.saturating_sub(now.stacks_kib);
            let _ = writeln!(
                w,
                "| {} | {} KiB | {} | {} | {} | {} | {} | {} | {} | {} |",
                int(*n as u64),
                int(m.rss_kib),
                m.threads,
                m.fds,
                if *n == 0 {
                    "-".into()
                } else {
                    format!("**{} KiB**", per(m.rss_kib, base.rss_kib))
                },
                if *n == 0 {
                    "-".into()
                } else {
                    format!(
                        "{} KiB ({} stacks)",
                        per(m.stacks_kib, base.stacks_kib),
                        m.stacks
                    )
                },
                if *n == 0 {
                    "-".into()
                } else {
                    format!("{} KiB", per(rest(m), rest(&base)))
                },
                per(m.threads, base.threads),
                per(m.fds, base.fds),
                m.idle_cpu.map_or("-".into(), |c| format!("{c:.1}%")),
            );
        }
        let _ = writeln!(w);

        if let Some(r) = &self.restart {
            self.restart_section(w, r);
        }
        if let Some(c) = &self.capacity {
            self.capacity_section(w, sizes, c);
        }
    }

    /// 3: the storm, after the same senders with no client connected.
    fn storm_section(&self, w: &mut String, sizes: &Sizes, s: &Storm) {
        let _ = writeln!(w, "### 3. Like storm\n");
        let _ = writeln!(
            w,
            "{} senders like as fast as replies come, each its own comment, for {} s: first \
             with no client connected, then, on fresh comments, with {} SSE clients on \
             `/events`.\n",
            s.likes.clients,
            sizes.storm_secs,
            int(s.clients as u64)
        );
        table_head(w, "| senders' run | likes/s | like p50 | like p99 | like max | failures | server context switches per like | CPU: server | Redis | generator | others |");
        for (name, run) in [
            ("no client connected".to_string(), &s.alone),
            (format!("{} SSE clients", int(s.clients as u64)), &s.likes),
        ] {
            let _ = writeln!(
                w,
                "| {name} | **{}** | {} | {} | {} | {} | {} | {} |",
                int(run.rate() as u64),
                ms(run.latency.p50()),
                ms(run.latency.p99()),
                ms(run.latency.max_ms()),
                run.failures,
                per(Some(run.cpu.server_switches), run.acked),
                run.cpu.cells(),
            );
        }
        let _ = writeln!(
            w,
            "\nWith the clients connected the senders kept **{}** of their rate with none{}.\n",
            s.kept()
                .map_or("-".into(), |k| format!("{:.0}%", k * 100.0)),
            if s.wrong_scores > 0 {
                format!(
                    "; **{} comment(s) ended on a score other than their acked likes**",
                    s.wrong_scores
                )
            } else {
                "; every comment ended on the score its acked likes make".into()
            }
        );
        table_head(w, "| clients | deliveries | delivery p50 | delivery p99 | delivery max | missed | dropped | server CPU per delivery |");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |\n",
            int(s.clients as u64),
            deliveries(&s.tally, s.expected),
            s.tally.dropped + s.server_dropped + s.connect_failures as u64,
            us(cpu_per(s.likes.cpu.server_secs, s.tally.delivered())),
        );
        let _ = writeln!(
            w,
            "A like counts as delivered to a client once the client has seen a score of its \
             comment at least as new as the like. Of the deliveries, {} reached their client \
             folded into a newer score of the same comment (a like event carries the absolute \
             score; see the README's event stream).\n",
            int(s.tally.folded)
        );
    }

    /// 7: idle streams held and served, then connects beyond the cap.
    fn capacity_section(&self, w: &mut String, sizes: &Sizes, c: &Capacity) {
        let _ = writeln!(
            w,
            "### 7. Capacity: idle event streams, and beyond the cap\n"
        );
        let _ = writeln!(
            w,
            "{} idle SSE clients held{} (the server's cap is {}), weighed {} s after the last \
             connected, then sent {} likes {} ms apart. Then the server is brought to its cap \
             and {} more connects are opened at once: each should get 200, a `retry:` and a \
             closed stream (the response ends with its zero chunk; HTTP/1.1 lets the \
             server keep the connection); then `/healthz` and one more like to every held \
             client.\n",
            int(c.held as u64),
            c.limited_by.as_ref().map_or(String::new(), |why| format!(
                " of {} asked for, limited by {why}",
                int(c.asked as u64)
            )),
            int(c.cap as u64),
            (sizes.idle_settle + IDLE_SAMPLE).as_secs(),
            sizes.capacity_likes,
            sizes.capacity_gap.as_millis(),
            sizes.beyond_cap
        );
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        let per_client = |now: u64, then: u64| (now as f64 - then as f64) / c.held.max(1) as f64;
        table_head(w, "| held | connect | RSS per client | threads (per client) | fds (per client) | server CPU while idle | deliveries | p50 | p99 | max | missed | dropped |");
        let _ = writeln!(
            w,
            "| {} | {:.1} s{} | **{:.2} KiB** | {} ({:.2}) | {} ({:.2}) | {} | {} | {} |\n",
            int(c.held as u64),
            c.connect_secs,
            if c.connect_failures > 0 {
                format!(", **{} failed**", c.connect_failures)
            } else {
                String::new()
            },
            per_client(c.idle.rss_kib, base.rss_kib),
            int(c.idle.threads),
            per_client(c.idle.threads, base.threads),
            int(c.idle.fds),
            per_client(c.idle.fds, base.fds),
            c.idle.idle_cpu.map_or("-".into(), |v| format!("{v:.1}%")),
            deliveries(&c.tally, c.expected),
            c.tally.dropped + c.server_dropped,
        );
        match &c.beyond {
            Err(why) => {
                let _ = writeln!(w, "Beyond the cap: not run: {why}.\n");
            }
            Ok(b) => {
                table_head(w, "| topped up to the cap | connects beyond it | refused politely (200, retry:, closed) | closed after p50 | p99 | let in | failed | refusals the server counted | server threads, fds with them open | /healthz after | subscribers after | next like: deliveries | p50 | p99 | max | missed | dropped |");
                let _ = writeln!(
                    w,
                    "| {}{} | {} | **{}** | {} | {} | {} | {} | {} | {}, {} | {} | {} | {} | {} |\n",
                    int(b.topped_up as u64),
                    if b.topup_failures > 0 {
                        format!(" (**{} failed**)", b.topup_failures)
                    } else {
                        String::new()
                    },
                    b.burst.attempts,
                    b.burst.polite,
                    ms(b.burst.closed_after.p50()),
                    ms(b.burst.closed_after.p99()),
                    b.burst.stayed_open,
                    b.burst.failed,
                    b.refused_by_server.map_or("?".into(), int),
                    int(b.burst.server_then.threads),
                    int(b.burst.server_then.fds),
                    b.healthz.map_or("no answer".into(), |s| s.to_string()),
                    int(b.subscribers),
                    deliveries(&b.tally, b.expected),
                    b.tally.dropped,
                );
                if let Some(why) = &b.burst.first_failure {
                    let _ = writeln!(w, "The first failed connect: {why}.\n");
                }
            }
        }
    }

    /// 6: the reconnect storm, with the same paced likes measured without it.
    fn restart_section(&self, w: &mut String, r: &Restart) {
        let secs =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        let _ = writeln!(
            w,
            "### 6. Reconnect storm
"
        );
        let _ = writeln!(
            w,
            "{} SSE clients caught up, with {} events in the store's history; {} senders like every {} ms, \
             each its own comment. The server is SIGKILLed and started again on its port \
             (down {:.2} s); every client reconnects with its `Last-Event-ID` 3 s after the \
             kill, as EventSource does (the `retry:` each stream starts with). Caught up: \
             every client has every event up to the newest one when they came back.\n",
            int(r.clients as u64),
            int(r.history),
            r.calm.clients,
            crate::scenarios::RESTART_GAP.as_millis(),
            r.down.as_secs_f64(),
        );
        table_head(w, "| time to catch up, from the restart | from the clients' return | replays from memory | from Redis | missed, duplicated or out of order | dropped or not reconnected |");
        let _ = writeln!(
            w,
            "| **{}** | {} | {} | {} | {} | {} |\n",
            secs(r.caught_up_after_restart),
            secs(r.caught_up_after_return),
            int(r.replays_memory),
            int(r.replays_store),
            r.tally.missed + r.tally.duplicates + r.tally.out_of_order,
            r.tally.dropped + (r.connect_failures + r.reconnect_failures) as u64,
        );
        table_head(w, "| the same paced likes | seconds | likes acked | p50 | p99 | max | unanswered (server down) | other failures | CPU (storm: from the restart on): server | Redis | generator | others |");
        for (name, run) in [("no storm", &r.calm), ("during the storm", &r.storm)] {
            let _ = writeln!(
                w,
                "| {name} | {:.1} | {} | {} | **{}** | {} | {} | {} | {} |",
                run.secs,
                int(run.acked),
                ms(run.latency.p50()),
                ms(run.latency.p99()),
                ms(run.latency.max_ms()),
                run.unanswered,
                run.failures - run.unanswered,
                run.cpu.cells(),
            );
        }
        let _ = writeln!(w);
    }

    fn targets_section(&self, w: &mut String, sizes: &Sizes) {
        let _ = writeln!(w, "## Against the targets (issue 6)\n");
        if sizes.quick {
            let _ = writeln!(
                w,
                "Quick sizes: the fan-out and memory targets are for 1,000 and 5,000 clients and \
                 are judged only in a full run.\n"
            );
        }
        table_head(w, "| target | measured | ratio | verdict |");
        let rate = self.likes.as_ref().map(LikeRun::rate);
        let ceiling = self.ceiling.as_ref().map(LikeRun::rate);
        let mut row = |target: &str, measured: String, ratio: String, met: Option<bool>| {
            let _ = writeln!(w, "| {target} | {measured} | {ratio} | {} |", verdict(met));
        };
        if let (Some(rate), Some(ceiling)) = (rate, ceiling) {
            let share = rate / ceiling;
            row(
                "like throughput ≥ 50% of the direct-Redis ceiling",
                format!("{} of {} likes/s", int(rate as u64), int(ceiling as u64)),
                format!("{:.0}% (target 50%)", share * 100.0),
                Some(share >= 0.5),
            );
        }
        if let Some(rate) = rate {
            row(
                "like throughput ≥ 30,000 likes/s",
                format!("{} likes/s", int(rate as u64)),
                format!("{:.2}× the target", rate / 30_000.0),
                Some(rate >= 30_000.0),
            );
        }
        if let Some(p99) = self.likes.as_ref().and_then(|l| l.latency.p99()) {
            row(
                "like p99 ≤ 3 ms",
                format!("{p99:.2} ms"),
                format!("{:.2}× the target", p99 / 3.0),
                Some(p99 <= 3.0),
            );
        }
        for (n, limit) in [(1_000, 15.0), (5_000, 70.0)] {
            let f = self.fan_out.iter().find(|f| f.n == n);
            let p99 = f.and_then(|f| f.tally.latency.p99());
            row(
                &format!("fan-out p99 ≤ {limit} ms at {} clients", int(n as u64)),
                p99.map_or("not run at this size".into(), |v| format!("{v:.2} ms")),
                match (f, p99) {
                    (Some(f), Some(v)) => format!(
                        "{:.2}× the target; {} the floor",
                        v / limit,
                        ratio(Some(v), f.floor.tally.latency.p99())
                    ),
                    _ => "-".into(),
                },
                p99.map(|v| v <= limit),
            );
        }
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        let per_client = self
            .memory
            .iter()
            .rev()
            .find(|(n, _)| *n == 5_000)
            .map(|(n, m)| (m.rss_kib as f64 - base.rss_kib as f64) / *n as f64);
        row(
            "RSS ≤ 25 KiB per idle SSE client (at 5,000)",
            per_client.map_or("not run at 5,000".into(), |v| format!("{v:.1} KiB")),
            per_client.map_or("-".into(), |v| format!("{:.2}× the target", v / 25.0)),
            per_client.map(|v| v <= 25.0),
        );
        let mut bad = 0u64;
        let mut parts = Vec::new();
        for r in [&self.likes, &self.ceiling].into_iter().flatten() {
            bad += r.failures;
            if r.final_score != Some(r.acked) {
                bad += 1;
                parts.push("a final score differs from the acked likes".to_string());
            }
        }
        for f in &self.fan_out {
            bad += f.tally.missed
                + f.tally.duplicates
                + f.tally.out_of_order
                + f.tally.dropped
                + f.server_dropped
                + f.connect_failures as u64
                + f.likes.failures
                + (f.floor.expected - f.floor.tally.delivered().min(f.floor.expected));
        }
        if let Some(b) = &self.burst {
            bad += (b.slow + b.failed) as u64;
            if b.slow > 0 {
                parts.push(format!(
                    "{} connection(s) of the burst left unserved",
                    b.slow
                ));
            }
        }
        if let Some(r) = &self.restart {
            bad += r.tally.missed
                + r.tally.duplicates
                + r.tally.out_of_order
                + r.tally.dropped
                + (r.connect_failures + r.reconnect_failures) as u64
                + r.calm.failures
                + (r.storm.failures - r.storm.unanswered);
        }
        if let Some(s) = &self.storm {
            bad += s.tally.missed
                + s.tally.duplicates
                + s.tally.out_of_order
                + s.tally.dropped
                + s.server_dropped
                + s.connect_failures as u64
                + s.likes.failures
                + s.alone.failures
                + s.wrong_scores as u64;
        }
        if let Some(c) = &self.capacity {
            bad += c.tally.missed
                + c.tally.duplicates
                + c.tally.out_of_order
                + c.tally.dropped
                + c.server_dropped
                + c.connect_failures as u64
                + c.likes.failures;
            if let Ok(b) = &c.beyond {
                bad += b.tally.missed
                    + b.tally.dropped
                    + b.topup_failures as u64
                    + b.next_like.failures;
            }
        }
        row(
            "zero failed requests, missed events, dropped clients",
            if parts.is_empty() {
                format!("{bad}")
            } else {
                format!("{bad} ({})", parts.join("; "))
            },
            "-".into(),
            Some(bad == 0),
        );
        let _ = writeln!(w);
    }

    /// Issue 13's targets, each judged only at the size the issue names.
    fn issue13_section(&self, w: &mut String, sizes: &Sizes) {
        let _ = writeln!(w, "## Against the targets (issue 13)\n");
        if sizes.quick {
            let _ = writeln!(
                w,
                "Quick sizes: the targets below that name a size (1,000 and 5,000 clients, a \
                 1,000-client storm, 15,000 streams) are reached only in a full run, so they \
                 say \"not run\"; the measured column still shows what the small sizes gave.\n"
            );
        }
        table_head(w, "| target | measured | ratio | verdict |");
        let mut row = |target: &str, measured: String, ratio: String, met: Option<bool>| {
            let _ = writeln!(w, "| {target} | {measured} | {ratio} | {} |", verdict(met));
        };

        for n in [1_000, 5_000] {
            let target = format!(
                "fan-out p99 ≤ 2.0× the one-thread floor at {} clients, 0 missed, 0 dropped",
                int(n as u64)
            );
            let Some(f) = self.fan_out.iter().find(|f| f.n == n) else {
                let sizes: Vec<String> = self.fan_out.iter().map(|f| int(f.n as u64)).collect();
                row(
                    &target,
                    format!("run at {} clients only", sizes.join(", ")),
                    "-".into(),
                    None,
                );
                continue;
            };
            let (p99, floor) = (f.tally.latency.p99(), f.floor.tally.latency.p99());
            let lost =
                f.tally.missed + f.tally.dropped + f.server_dropped + f.connect_failures as u64;
            row(
                &target,
                format!(
                    "p99 {}, floor p99 {}; {} missed or dropped; server CPU {} per delivery; \
                     a thread per socket alone (5c): p99 {}, {} the floor",
                    ms(p99),
                    ms(floor),
                    lost,
                    us(cpu_per(f.likes.cpu.server_secs, f.tally.delivered())),
                    ms(f.threaded.tally.latency.p99()),
                    ratio(f.threaded.tally.latency.p99(), floor),
                ),
                ratio(p99, floor),
                match (p99, floor) {
                    (Some(p), Some(fl)) if fl > 0.0 => Some(p <= 2.0 * fl && lost == 0),
                    _ => None,
                },
            );
        }

        // The storm's targets are for 1,000 clients (and 16 senders for 10 s).
        let storm = self.storm.as_ref();
        let at_size = storm.is_some_and(|s| s.clients == 1_000);
        let judged = |met: bool| at_size.then_some(met);
        let size_note = storm
            .filter(|_| !at_size)
            .map(|s| format!(" (at {} clients)", int(s.clients as u64)))
            .unwrap_or_default();
        match storm {
            None => row(
                "storm: senders keep ≥ 50% of their like rate with no client connected",
                "the storm did not run".into(),
                "-".into(),
                None,
            ),
            Some(s) => {
                let kept = s.kept();
                row(
                    "storm: senders keep ≥ 50% of their like rate with no client connected",
                    format!(
                        "{} likes/s with the clients, {} with none{size_note}",
                        int(s.likes.rate() as u64),
                        int(s.alone.rate() as u64)
                    ),
                    kept.map_or("-".into(), |k| format!("{:.0}% (target 50%)", k * 100.0)),
                    kept.and_then(|k| judged(k >= 0.5)),
                );
                let p99 = s.tally.latency.p99();
                row(
                    "storm: delivery p99 ≤ 250 ms",
                    format!("{}{size_note}", ms(p99)),
                    p99.map_or("-".into(), |v| format!("{:.2}× the target", v / 250.0)),
                    p99.and_then(|v| judged(v <= 250.0)),
                );
                let failed = s.likes.failures + s.alone.failures;
                let dropped = s.tally.dropped + s.server_dropped + s.connect_failures as u64;
                let off = s.tally.missed + s.tally.duplicates + s.tally.out_of_order;
                row(
                    "storm: 0 failed likes, 0 clients dropped, every client on the true final scores",
                    format!(
                        "{failed} failed, {dropped} dropped, {off} missed, repeated or out of \
                         order, {} comment(s) off their acked score{size_note}",
                        s.wrong_scores
                    ),
                    "-".into(),
                    judged(failed + dropped + off + s.wrong_scores as u64 == 0),
                );
            }
        }

        // Memory and likes: the issue's own figures, from phases 1 and 4.
        let base = self.memory.first().map(|m| m.1).unwrap_or_default();
        let rss_5000 = self
            .memory
            .iter()
            .find(|(n, _)| *n == 5_000)
            .map(|(n, m)| (m.rss_kib as f64 - base.rss_kib as f64) / *n as f64);
        row(
            "RSS ≤ 10 KiB per idle event stream at 5,000",
            rss_5000.map_or("not run at 5,000".into(), |v| format!("{v:.2} KiB")),
            rss_5000.map_or("-".into(), |v| format!("{:.2}× the target", v / 10.0)),
            rss_5000.map(|v| v <= 10.0),
        );
        if let Some(l) = &self.likes {
            let (rate, p99) = (l.rate(), l.latency.p99());
            let share = self.ceiling.as_ref().map(|c| rate / c.rate().max(1.0));
            row(
                "likes: ≥ 30,000/s with p99 ≤ 2 ms, or ≥ 65% of the direct-Redis ceiling",
                format!("{} likes/s, p99 {}", int(rate as u64), ms(p99)),
                share.map_or("-".into(), |s| format!("{:.0}% of the ceiling", s * 100.0)),
                Some(
                    (rate >= 30_000.0 && p99.is_some_and(|p| p <= 2.0))
                        || share.is_some_and(|s| s >= 0.65),
                ),
            );
        }

        let capacity = self.capacity.as_ref();
        let target_n = 15_000;
        let held = |c: &Capacity| {
            format!(
                "{} held{}",
                int(c.held as u64),
                c.limited_by
                    .as_ref()
                    .map_or(String::new(), |why| format!(" ({why})"))
            )
        };
        // Fewer than asked because of the server's cap is a miss; because a
        // quick run asked for fewer, or the bench lacked descriptors, not run.
        let short_of_target =
            |c: &Capacity| c.held < target_n && (c.asked < target_n || c.held < c.cap.min(c.asked));
        match capacity {
            None => row(
                "15,000 idle event streams held, every one receiving each like",
                "the capacity phase did not run".into(),
                "-".into(),
                None,
            ),
            Some(c) => {
                row(
                    "15,000 idle event streams held, every one receiving each like",
                    format!(
                        "{}: {} of {} deliveries, p50 {}, p99 {}; {} missed, {} dropped; \
                         {:.2} KiB RSS per client",
                        held(c),
                        int(c.tally.delivered()),
                        int(c.expected),
                        ms(c.tally.latency.p50()),
                        ms(c.tally.latency.p99()),
                        c.tally.missed,
                        c.tally.dropped + c.server_dropped + c.connect_failures as u64,
                        (c.idle.rss_kib as f64
                            - self.memory.first().map_or(0, |m| m.1.rss_kib) as f64)
                            / c.held.max(1) as f64,
                    ),
                    format!("{:.2}× the target", c.held as f64 / target_n as f64),
                    (!short_of_target(c)).then(|| c.held >= target_n && c.served()),
                );
                let (measured, met) = match &c.beyond {
                    Err(why) => (format!("not run: {why}"), None),
                    Ok(b) => (
                        format!(
                            "at the cap of {}: {} of {} connects refused politely ({} let in, \
                             {} failed); /healthz {}; the next like reached {} of {} clients",
                            int(c.cap as u64),
                            b.burst.polite,
                            b.burst.attempts,
                            b.burst.stayed_open,
                            b.burst.failed,
                            b.healthz.map_or("no answer".into(), |s| s.to_string()),
                            int(b.tally.delivered()),
                            int(b.expected),
                        ),
                        (!short_of_target(c)).then(|| b.polite(c.cap)),
                    ),
                };
                row(
                    "beyond the cap: an unpaced burst of connects refused politely (200 + \
                     `retry:`, closed), no crash, the held clients still served",
                    measured,
                    "-".into(),
                    met,
                );
            }
        }
        let _ = writeln!(w);
    }

    fn notes_section(&self, w: &mut String) {
        if self.notes.is_empty() && self.server_log_warnings.is_empty() {
            return;
        }
        let _ = writeln!(w, "## What did not go as planned\n");
        for n in &self.notes {
            let _ = writeln!(w, "- {n}");
        }
        if !self.server_log_warnings.is_empty() {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for line in &self.server_log_warnings {
                // Drop the timestamp so equal warnings are counted together.
                let text = line
                    .split_once(']')
                    .map_or(line.as_str(), |(_, t)| t)
                    .trim();
                *counts.entry(text.to_string()).or_default() += 1;
            }
            let mut counts: Vec<_> = counts.into_iter().collect();
            counts.sort_by_key(|c| std::cmp::Reverse(c.1));
            let _ = writeln!(
                w,
                "- The server logged {} warning(s):",
                self.server_log_warnings.len()
            );
            for (text, n) in counts.iter().take(10) {
                let _ = writeln!(w, "  - {n}× `{text}`");
            }
        }
        let _ = writeln!(w);
    }
}

/// Five cells of a delivery table: deliveries of those expected, their p50,
/// p99 (bold) and max, and the events missed, duplicated or out of order.
fn deliveries(tally: &Tally, expected: u64) -> String {
    format!(
        "{} of {} | {} | **{}** | {} | {}",
        int(tally.delivered()),
        int(expected),
        ms(tally.latency.p50()),
        ms(tally.latency.p99()),
        ms(tally.latency.max_ms()),
        tally.missed + tally.duplicates + tally.out_of_order,
    )
}

/// Writes a table's header row and the separator row under it.
fn table_head(w: &mut String, header: &str) {
    let columns = header.trim_matches('|').split('|').count();
    let _ = writeln!(w, "{header}\n{}|", "|---".repeat(columns));
}

/// `total / n` with one decimal, or "-".
fn per(total: Option<u64>, n: u64) -> String {
    match total {
        Some(t) if n > 0 => format!("{:.1}", t as f64 / n as f64),
        _ => "-".into(),
    }
}

/// Server CPU seconds per delivery, in µs.
fn cpu_per(secs: Option<f64>, deliveries: u64) -> Option<f64> {
    secs.filter(|_| deliveries > 0)
        .map(|s| s * 1e6 / deliveries as f64)
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} µs"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        _ => "-".into(),
    }
}
