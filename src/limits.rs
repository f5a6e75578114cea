//! The OS limits that decide how many SSE clients one process can hold, and
//! the subscriber cap computed from them at startup.
//!
//! Each SSE client costs the server a thread (its writer) and a socket; for a
//! moment after connecting (until the guard shuts its read half, see
//! `guard/release.rs`) it also holds a tiny_http pool thread and a second
//! descriptor. Run out of descriptors and tiny_http's
//! accept thread exits; run out of memory maps (`vm.max_map_count`, each thread
//! stack takes a few) and the process aborts. The cap keeps us below both, so a
//! client over it gets a polite "retry later" instead of a dead server.

use std::fs;

/// Descriptors and threads reckoned per client: the worst case, while tiny_http's
/// pool thread for the connection has not yet been released.
const FDS_PER_CLIENT: u64 = 2;
const THREADS_PER_CLIENT: u64 = 2;
/// Memory maps per thread (stack, guard page, and the allocator's share).
const MAPS_PER_THREAD: u64 = 4;
/// Kept back for everything that is not an SSE client: the listener, Redis
/// connections, request workers, idle keep-alive connections, the binary's maps.
const RESERVED_FDS: u64 = 512;
const RESERVED_MAPS: u64 = 4096;
const RESERVED_THREADS: u64 = 512;

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
        let by_maps = self.max_map_count.saturating_sub(RESERVED_MAPS)
            / (THREADS_PER_CLIENT * MAPS_PER_THREAD);
        let by_threads = self.max_threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CLIENT;
        let (cap, why) = [
            (by_fds, "open files (RLIMIT_NOFILE)"),
            (by_maps, "vm.max_map_count"),
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
            open_files: 20_000,
            max_map_count: 65_530,
            max_threads: 32_768,
        };
        let (cap, why) = limits.subscriber_cap();
        assert_eq!(why, "vm.max_map_count");
        assert_eq!(cap as u64, (65_530 - RESERVED_MAPS) / 8);
        let limits = OsLimits {
            open_files: 1024,
            max_map_count: 1 << 20,
            max_threads: 1 << 20,
        };
        assert_eq!(limits.subscriber_cap(), (256, "open files (RLIMIT_NOFILE)"));
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
