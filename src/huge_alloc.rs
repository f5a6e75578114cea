//! The process's allocator: the system's, except that huge blocks are mapped
//! lazily, so that asking for one costs address space, not memory.
//!
//! The trap (tiny_http 0.12, `util/equal_reader.rs`, `EqualReader::drop`): the
//! unread rest of a request body is discarded by reading it into
//! `vec![0; remaining]`, where `remaining` is what the client *declared* in
//! `Content-Length`. A client that declares a terabyte and sends nothing makes
//! that allocation fail, and in Rust a failed allocation is not a panic that
//! `catch_unwind` could contain: it aborts the process, every stream and every
//! board with it. `server/body.rs` makes sure that read ends at once; this file
//! makes sure the allocation before it cannot fail.
//!
//! How: a block of [`HUGE`] bytes or more is an anonymous `MAP_NORESERVE`
//! mapping. The kernel hands out zeroed pages only when they are first touched,
//! so a terabyte-sized buffer into which one `read` puts a few bytes costs a
//! page or two. A size beyond what the address space can hold (a
//! `Content-Length` of 2^63 - 1, say) cannot be mapped honestly; there the
//! block is a [`WINDOW`]-byte mapping followed by an inaccessible guard region.
//! That is enough for the only code that ever asks for such a block, tiny_http's
//! discard loop, which hands it to one `read` at a time: the kernel moves at
//! most `MAX_RW_COUNT` (just under 2 GiB) bytes per call, so nothing can be
//! written past the window; any other code that touched past it would fault
//! instead of corrupting memory. Nothing else in likeboard allocates anywhere
//! near [`HUGE`] bytes (a comment is at most a few KiB; a replay page a few
//! hundred KiB), so ordinary allocations never take this path.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Blocks this large or larger are mapped lazily.
pub const HUGE: usize = 64 << 20;
/// Largest block mapped at its real size; beyond it, a [`WINDOW`].
const HONEST_MAX: usize = 1 << 44;
/// What a block beyond [`HONEST_MAX`] really gets: more than one `read` can fill.
const WINDOW: usize = 4 << 30;
/// The inaccessible region after a window.
const GUARD: usize = 1 << 30;
/// Mappings are page-aligned; larger alignments go to the system allocator's failure.
const PAGE: usize = 4096;

/// Wraps [`System`]; see the module doc.
pub struct HugeAlloc;

/// How many bytes the mapping for a block of `size` spans, and how many of
/// them are accessible.
fn extent(size: usize) -> (usize, usize) {
    if size <= HONEST_MAX {
        (size, size)
    } else {
        (WINDOW + GUARD, WINDOW)
    }
}

unsafe fn map(layout: Layout) -> *mut u8 {
    if layout.align() > PAGE {
        return ptr::null_mut();
    }
    let (span, usable) = extent(layout.size());
    // SAFETY: an anonymous private mapping at an address of the kernel's choice
    // touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    // SAFETY: `p..p+usable` lies inside the mapping just made.
    if unsafe { libc::mprotect(p, usable, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        // SAFETY: unmapping exactly what we mapped.
        unsafe { libc::munmap(p, span) };
        return ptr::null_mut();
    }
    p.cast()
}

unsafe fn unmap(p: *mut u8, layout: Layout) {
    // SAFETY: `p` came from `map` with the same layout, so this is its mapping.
    unsafe { libc::munmap(p.cast(), extent(layout.size()).0) };
}

// SAFETY: every block is either the system allocator's (below HUGE, freed by
// it) or a fresh mapping (HUGE and above, unmapped here); the size decides
// which, the same way on the way in and out. Fresh anonymous mappings are zeroed.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            unsafe { map(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            unsafe { map(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if layout.size() >= HUGE {
            unsafe { unmap(p, layout) }
        } else {
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE && new_size < HUGE {
            return unsafe { System.realloc(p, layout, new_size) };
        }
        // Crossing the line either way: a new block, a copy, the old one freed.
        // SAFETY: the caller guarantees `new_size` with this alignment is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            let keep = layout.size().min(new_size).min(extent(layout.size()).1);
            // SAFETY: both blocks hold at least `keep` bytes and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(p, q, keep);
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    /// What tiny_http's discard loop does, at the sizes a client can declare:
    /// a zeroed buffer of the declared size, one read into it, then freed. None
    /// aborts, and the process's memory barely moves.
    #[test]
    fn declared_sizes_cost_nothing_until_touched() {
        let rss = || {
            std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
                * 4096
        };
        let before = rss();
        for declared in [
            10_000_000usize,
            1_000_000_000,
            1_000_000_000_000,
            (1 << 63) - 1,
        ] {
            let mut buf = vec![0u8; declared];
            let n = (&b"a few bytes"[..]).read(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"a few bytes");
            assert_eq!(buf[n], 0, "zeroed past what was read ({declared})");
            drop(buf);
        }
        let grown = rss().saturating_sub(before);
        assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    }

    /// A vector that grows past the line keeps its contents, and back.
    #[test]
    fn growing_across_the_line_keeps_contents() {
        let mut v = vec![7u8; 1000];
        v.reserve(super::HUGE);
        assert!(v.iter().all(|&b| b == 7));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, vec![7u8; 10]);
    }
}
