//! The OS limits that decide how many SSE clients one process can hold, and
//! the subscriber cap computed from them at startup.
//!
//! Run out of descriptors and tiny_http's accept thread exits; run out of
//! memory maps (`vm.max_map_count`) or threads and spawning a thread fails (a
//! writer is then refused, but tiny_http's pool panics) or an allocation
//! aborts the process. The cap keeps us below all three, so a client over it
//! gets a polite "retry later" instead of a dead server.
//!
//! The cap counts what a *settled* stream costs, measured on the release build
//! (`/proc/PID/maps`, `/proc/PID/fd`, `/proc/PID/task`, seconds after the
//! last one connected): 1 thread, 1 descriptor and 4 memory maps each (4.07
//! maps per stream with 300 streams, 4.02 with 14,945: 60,196 maps in all).
//! What a client costs only while it is being handed over (tiny_http's pool
//! thread and the read half of its socket, freed by the guard within tens of
//! milliseconds, see `guard/release.rs`) comes out of the reserves, which are
//! sized for a burst of connects, not per client: counting that moment for
//! every client halved the cap for a cost no settled client pays.
//!
//! What the cap cannot see: `kernel.pid_max` and `kernel.threads-max` are the
//! machine's, and every other process's threads count against them too. On a
//! machine shared with other heavy programs a thread can fail to start below
//! the cap; a writer that cannot start closes its connection (logged), and
//! the client reconnects after its `retry:` delay.

use std::fs;

/// A settled stream's descriptors: its socket. (tiny_http's second
/// descriptor for it, the read half, closes when its pool thread is freed.)
pub const FDS_PER_CLIENT: u64 = 1;
/// A settled stream's threads: its writer.
pub const THREADS_PER_CLIENT: u64 = 1;
/// A settled stream's memory maps, all its writer thread's: the stack
/// (`STREAM_STACK`, `server.rs`), the stack's guard page, and the signal stack
/// Rust's std gives every thread (to report a stack overflow) with its own
/// guard page. They alternate between writable and `PROT_NONE`, so the kernel
/// cannot merge neighbours. (The heap the writer touches lives in the
/// allocator's few shared arenas, not in maps of its own.)
pub const MAPS_PER_CLIENT: u64 = 4;
/// Kept back for everything that is not a settled stream: the listener, Redis
/// connections, idle keep-alive connections, and a burst of connects being
/// handed over (each holds two descriptors for a moment), including clients
/// over the cap being refused. 2,048 lets about 2,000 connects be in hand-off
/// at once, twice the burst `tests/sse.rs` opens in one go.
pub const RESERVED_FDS: u64 = 2048;
/// Maps kept back: the binary and its libraries (~170 maps idle), the
/// allocator's arenas (2 maps each, at most 8 per core), and the threads of a
/// connect burst: tiny_http's pool threads and the workers, 4 maps each, so
/// 4,096 leave room for about a thousand of them at once.
pub const RESERVED_MAPS: u64 = 4096;
/// Threads kept back: the workers, the pump, the guard, and tiny_http's pool
/// threads of a connect burst.
pub const RESERVED_THREADS: u64 = 1024;
/// The value `deploy/sysctl-likeboard.conf` sets `vm.max_map_count` to: with
/// it, descriptors rather than maps limit the cap up to about 64,000 clients.
pub const SUGGESTED_MAX_MAP_COUNT: u64 = 262_144;

/// The limit that decided the cap when it was `vm.max_map_count`.
pub const BY_MAPS: &str = "vm.max_map_count";

/// What the OS allows this process.
#[derive(Debug, Clone, Copy)]
pub struct OsLimits {
    /// RLIMIT_NOFILE soft limit (after raising it to the hard limit).
    pub open_files: u64,
    /// vm.max_map_count.
    pub max_map_count: u64,
    /// The smaller of kernel.pid_max, kernel.threads-max and RLIMIT_NPROC.
    pub max_threads: u64,
}

impl OsLimits {
    /// Reads the limits, raising the open-files soft limit to the hard limit
    /// first (the usual practice for servers; the hard limit is the real one).
    pub fn measure() -> OsLimits {
        let open_files = raise_open_files();
        let max_map_count = read_number("/proc/sys/vm/max_map_count").unwrap_or(65_530);
        let pid_max = read_number("/proc/sys/kernel/pid_max").unwrap_or(32_768);
        let threads_max = read_number("/proc/sys/kernel/threads-max").unwrap_or(pid_max);
        let nproc = rlimit(libc::RLIMIT_NPROC).map_or(u64::MAX, |(soft, _)| soft);
        OsLimits {
            open_files,
            max_map_count,
            max_threads: pid_max.min(threads_max).min(nproc),
        }
    }

    /// The most SSE clients these limits allow, and which limit decided it.
    pub fn subscriber_cap(&self) -> (usize, &'static str) {
        let by_fds = self.open_files.saturating_sub(RESERVED_FDS) / FDS_PER_CLIENT;
        let by_maps = self.max_map_count.saturating_sub(RESERVED_MAPS) / MAPS_PER_CLIENT;
        let by_threads = self.max_threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CLIENT;
        let (cap, why) = [
            (by_fds, "open files (RLIMIT_NOFILE)"),
            (by_maps, BY_MAPS),
            (by_threads, "threads (pid_max/threads-max/RLIMIT_NPROC)"),
        ]
        .into_iter()
        .min_by_key(|(n, _)| *n)
        .expect("three candidates");
        (cap.max(1).min(usize::MAX as u64) as usize, why)
    }
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return None;
    }
    Some((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft open-files limit to the hard one; returns the soft limit now.
fn raise_open_files() -> u64 {
    let Some((soft, hard)) = rlimit(libc::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            return hard;
        }
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest limit decides the cap, and the reason names it.
    #[test]
    fn cap_follows_the_tightest_limit() {
        let limits = OsLimits {
            open_files: 2048 + 1000,
            max_map_count: 1 << 20,
            max_threads: 1 << 20,
        };
        assert_eq!(
            limits.subscriber_cap(),
            (1000, "open files (RLIMIT_NOFILE)")
        );
        let limits = OsLimits {
            open_files: 1 << 20,
            max_map_count: 1 << 20,
            max_threads: 1024 + 500,
        };
        assert_eq!(limits.subscriber_cap().0, 500);
    }

    /// This box's limits (20,000 descriptors, the kernel's default
    /// vm.max_map_count of 65,530, 32,768 pids) hold 15,000 idle streams, and
    /// it is the map count that stops them, at (65,530 - 4,096) / 4 = 15,358.
    #[test]
    fn default_map_count_holds_15000_and_limits_the_cap() {
        let limits = OsLimits {
            open_files: 20_000,
            max_map_count: 65_530,
            max_threads: 32_768,
        };
        assert_eq!(limits.subscriber_cap(), (15_358, BY_MAPS));
        // Raised as deploy/ suggests, the descriptors decide again.
        let raised = OsLimits {
            max_map_count: SUGGESTED_MAX_MAP_COUNT,
            ..limits
        };
        assert_eq!(
            raised.subscriber_cap(),
            (20_000 - 2048, "open files (RLIMIT_NOFILE)")
        );
    }

    /// Absurdly small limits still allow one client rather than none.
    #[test]
    fn cap_is_at_least_one() {
        let limits = OsLimits {
            open_files: 10,
            max_map_count: 10,
            max_threads: 10,
        };
        assert_eq!(limits.subscriber_cap().0, 1);
    }
}
