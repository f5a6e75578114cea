//! What the bench measures with besides its clients: the clock every
//! timestamp comes from, latency histograms, and a process's figures from
//! /proc (memory, threads, descriptors, CPU time, context switches) next to
//! the whole machine's busy time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The instant the bench started; every timestamp is nanoseconds since it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    (epoch().elapsed().as_nanos() as u64).max(1)
}

/// Latencies in microseconds, in buckets 1/64 of their value wide (below 128 µs,
/// exact): percentiles within 1.6% whatever the range, in a fixed 30 KiB.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    const BUCKETS: usize = 58 * 64 + 64;

    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; Histogram::BUCKETS],
            count: 0,
            max_us: 0,
        }
    }

    fn index(us: u64) -> usize {
        if us < 128 {
            return us as usize;
        }
        let shift = 63 - us.leading_zeros() as u64 - 6;
        (shift * 64 + (us >> shift)) as usize
    }

    /// The middle of a bucket's range.
    fn value(index: usize) -> u64 {
        if index < 128 {
            return index as u64;
        }
        let shift = (index / 64 - 1) as u64;
        let low = ((index % 64) as u64 + 64) << shift;
        low + (1 << shift) / 2
    }

    pub fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos() as u64);
    }

    pub fn record_ns(&mut self, ns: u64) {
        let us = ns / 1000;
        self.counts[Histogram::index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `q` quantile (0..=1) in milliseconds; None when empty.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Histogram::value(i).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn p50(&self) -> Option<f64> {
        self.quantile_ms(0.50)
    }

    pub fn p99(&self) -> Option<f64> {
        self.quantile_ms(0.99)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }
}

/// A process's memory, threads and descriptors, from /proc.
#[derive(Clone, Copy, Default)]
pub struct ProcSnapshot {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
    /// Resident pages of the SSE writers' stacks: the private mappings exactly
    /// the size the server gives a writer's stack (`STREAM_STACK`), from
    /// `/proc/PID/smaps`; and how many there are.
    pub stacks_kib: u64,
    pub stacks: u64,
    /// The server's CPU (% of one core) while its clients were idle, if measured.
    pub idle_cpu: Option<f64>,
}

impl ProcSnapshot {
    pub fn of(pid: u32) -> ProcSnapshot {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let (stacks, stacks_kib) = writer_stacks(pid);
        ProcSnapshot {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            stacks_kib,
            stacks,
            idle_cpu: None,
        }
    }
}

/// The writers' stacks in `/proc/PID/smaps`: how many mappings are exactly a
/// writer's stack in size (anonymous, read-write, private), and their `Rss:`
/// in KiB summed. glibc maps a thread's stack with its guard page, then takes
/// the guard's protection away from it, which leaves the stack a mapping of
/// its own of exactly the size asked for.
fn writer_stacks(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let want = (likeboard::server::STREAM_STACK / 1024) as u64;
    let (mut count, mut kib) = (0, 0);
    let mut in_stack = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let size = |h: &str| u64::from_str_radix(h, 16).unwrap_or(0);
            let perms = words.next().unwrap_or_default();
            // Anonymous mappings have inode 0 and no path (6th field).
            let named = line.split_whitespace().nth(5).is_some();
            in_stack = perms == "rw-p" && !named && (size(end) - size(start)) / 1024 == want;
            count += u64::from(in_stack);
        } else if in_stack && first == "Rss:" {
            kib += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (count, kib)
}

/// CPU time a process used, in seconds (user + system), from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Context switches of all of a process's live threads, from
/// /proc/PID/task/*/status. Each one is a thread going to sleep or being
/// preempted: the cost a thread-per-connection design pays per hand-off.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// CPU time all processes on the machine spent busy, in seconds, from the
/// first line of /proc/stat (everything but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Where the CPU went during a phase, in % of one core: the server, Redis,
/// this load generator, and every other process on the machine (other people's
/// builds and tests may share it; a phase with much "others" is not comparable).
#[derive(Clone, Copy, Default)]
pub struct CpuUse {
    pub server: Option<f64>,
    /// The same in CPU seconds: what a phase's work cost, whatever its length.
    pub server_secs: Option<f64>,
    /// The server's context switches (all its threads, voluntary or not).
    pub server_switches: u64,
    redis: f64,
    generator: f64,
    /// This load generator's CPU seconds over the phase.
    pub generator_secs: f64,
    pub others: f64,
}

impl CpuUse {
    /// Four table cells: server | Redis | generator | others.
    pub fn cells(&self) -> String {
        format!(
            "{} | {:.0}% | {:.0}% | {:.0}%",
            self.server.map_or("-".into(), |c| format!("{c:.0}%")),
            self.redis,
            self.generator,
            self.others.max(0.0)
        )
    }
}

/// Measures a phase's [`CpuUse`].
pub struct CpuMeter {
    server: Option<(u32, f64)>,
    server_switches: u64,
    redis: (u32, f64),
    generator: f64,
    machine: f64,
    started: Instant,
}

impl CpuMeter {
    pub fn start(server: Option<u32>, redis: u32) -> CpuMeter {
        CpuMeter {
            server: server.map(|pid| (pid, cpu_seconds(pid))),
            server_switches: server.map_or(0, context_switches),
            redis: (redis, cpu_seconds(redis)),
            generator: cpu_seconds(std::process::id()),
            machine: machine_busy_seconds(),
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |(pid, before): (u32, f64)| (cpu_seconds(pid) - before) / wall * 100.0;
        let server = self.server.map(pct);
        let server_secs = server.map(|pct| pct / 100.0 * wall);
        let redis = pct(self.redis);
        let generator = pct((std::process::id(), self.generator));
        let all = (machine_busy_seconds() - self.machine) / wall * 100.0;
        CpuUse {
            server,
            server_secs,
            server_switches: self.server.map_or(0, |(pid, _)| {
                context_switches(pid).saturating_sub(self.server_switches)
            }),
            redis,
            generator,
            generator_secs: generator / 100.0 * wall,
            others: all - server.unwrap_or(0.0) - redis - generator,
        }
    }
}
