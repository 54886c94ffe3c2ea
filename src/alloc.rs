//! The switch's memory allocator: the system allocator, asking the kernel
//! for transparent huge pages on large allocations.
//!
//! Every balance and transfer lives in memory in a few very large tables
//! (the account map, the transfer index, the transfer arena's chunks), hit
//! at random. With 4 KiB pages nearly every lookup also misses the TLB;
//! with 2 MiB pages the tables fit the TLB. Installed by the `harbour`
//! binary and the benches with `#[global_allocator]`; the library itself
//! does not choose an allocator.
//!
//! On a kernel with THP set to `never` the advice is ignored, harmlessly.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are placed on huge-page boundaries,
/// rounded up to whole huge pages, and advised.
pub const HUGE_ADVICE_MIN_BYTES: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// The system allocator plus `madvise(MADV_HUGEPAGE)` on large blocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePageAlloc;

/// The layout actually requested from the system for `layout`: large
/// blocks become whole, aligned huge pages, so all of them can be huge.
fn system_layout(layout: Layout) -> Layout {
    if layout.size() < HUGE_ADVICE_MIN_BYTES {
        return layout;
    }
    let size = layout.size().next_multiple_of(HUGE_PAGE);
    Layout::from_size_align(size, layout.align().max(HUGE_PAGE)).expect("huge-page layout fits")
}

fn advise(ptr: *mut u8, layout: Layout) {
    #[cfg(target_os = "linux")]
    if !ptr.is_null() && layout.size() >= HUGE_ADVICE_MIN_BYTES {
        // SAFETY: the block [ptr, ptr + size) was just allocated to us;
        // MADV_HUGEPAGE changes neither contents nor permissions, and a
        // failure only means no huge pages.
        unsafe {
            libc::madvise(ptr.cast::<libc::c_void>(), layout.size(), libc::MADV_HUGEPAGE);
            // Fault the block in now (Linux 5.14+; ignored before), so the
            // shard never stops to zero or compact pages when it first
            // touches a table it sized up front.
            libc::madvise(ptr.cast::<libc::c_void>(), layout.size(), libc::MADV_POPULATE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, layout);
}

// SAFETY: every block is allocated and freed by the system allocator with
// the same (possibly enlarged) layout, computed by `system_layout` from the
// caller's layout both times; the advice never touches memory contents.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let real = system_layout(layout);
        // SAFETY: `real` is at least as large and as aligned as `layout`,
        // which our caller guarantees is valid and non-zero.
        let ptr = unsafe { System.alloc(real) };
        advise(ptr, real);
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let real = system_layout(layout);
        // SAFETY: as for alloc.
        let ptr = unsafe { System.alloc_zeroed(real) };
        advise(ptr, real);
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from alloc with `system_layout(layout)`.
        unsafe { System.dealloc(ptr, system_layout(layout)) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_real = system_layout(layout);
        // SAFETY: our caller guarantees new_size, rounded to layout.align(),
        // does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new_real = system_layout(new_layout);
        if old_real == layout && new_real == new_layout {
            // Both small: the system's own realloc.
            // SAFETY: `ptr` was allocated with `layout` by System.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if old_real == new_real {
            return ptr;
        }
        // SAFETY: new_real is valid and non-zero; the copy covers the bytes
        // both blocks hold; the old block is freed with its own layout.
        unsafe {
            let new = System.alloc(new_real);
            if !new.is_null() {
                advise(new, new_real);
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                System.dealloc(ptr, old_real);
            }
            new
        }
    }
}
/// Hands the allocator's free memory back to the kernel once the switch
/// has gone quiet after work: glibc keeps freed blocks in its arenas, so
/// the request and answer buffers of an overload would otherwise stay
/// resident long after it. A helper thread looks at `activity` (a counter
/// that moves with work) every second and trims after a second without
/// movement that followed movement, so a busy switch never trims.
pub fn trim_when_idle(activity: impl Fn() -> u64 + Send + 'static) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    std::thread::Builder::new()
        .name("alloc-trim".into())
        .spawn(move || {
            let mut seen = activity();
            let mut worked = false;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let now = activity();
                if now != seen {
                    (seen, worked) = (now, true);
                } else if std::mem::take(&mut worked) {
                    // SAFETY: malloc_trim only returns free memory of the
                    // allocator's own arenas to the kernel.
                    unsafe { libc::malloc_trim(0) };
                }
            }
        })
        .map(drop)
        .unwrap_or_else(|e| tracing::warn!(error = %e, "no thread to trim the allocator"));
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = activity;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_blocks_work_and_keep_their_contents() {
        let a = HugePageAlloc;
        for size in [16, HUGE_ADVICE_MIN_BYTES, HUGE_ADVICE_MIN_BYTES * 3 + 5] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: layout has non-zero size; the block is freed below with
            // the same layout.
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert_eq!(*p.add(size - 1), 0);
                *p.add(size - 1) = 7;
                let q = a.realloc(p, layout, size * 2);
                assert_eq!(*q.add(size - 1), 7, "realloc keeps contents");
                let r = a.realloc(q, Layout::from_size_align(size * 2, 8).unwrap(), size / 2 + 1);
                assert_eq!(*r, 0, "shrinking keeps the head");
                a.dealloc(r, Layout::from_size_align(size / 2 + 1, 8).unwrap());
            }
        }
    }
}
