//! [`HugePageAlloc`]: an allocator (the system's unless another is given), with large
//! allocations advised onto transparent huge pages.
//!
//! A core's key table is one allocation of tens of megabytes that every request probes at a
//! random place: with 4 KiB pages nearly every probe of a large table also misses the TLB (a
//! page walk before the cache miss). On Linux, where transparent huge pages are in `madvise`
//! mode (the common default; `/sys/kernel/mm/transparent_hugepage/enabled`), an allocation of
//! at least [`HUGE_PAGE_BYTES`] is advised with `MADV_HUGEPAGE`, so the kernel backs its aligned
//! middle with 2 MiB pages. Measured at 100,000 keys, one local client: see
//! docs/BENCHMARKS.md. Smaller allocations, and systems where the advice is off (`never`) or
//! unsupported, behave exactly as the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are advised onto huge pages: one huge page.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// An allocator (`A`, the system's by default), advising allocations of [`HUGE_PAGE_BYTES`] or
/// more onto transparent huge pages. Use it as the `#[global_allocator]` of a server binary.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePageAlloc<A = System> {
    inner: A,
}

impl HugePageAlloc<System> {
    /// Over the system allocator.
    pub const fn system() -> Self {
        HugePageAlloc { inner: System }
    }
}

impl<A> HugePageAlloc<A> {
    /// Over `inner`.
    pub const fn new(inner: A) -> Self {
        HugePageAlloc { inner }
    }
}

/// Advises the whole huge pages inside `[ptr, ptr + len)` (the advice is a hint: its failure
/// changes nothing but speed, and is ignored).
fn advise(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
        let end = (ptr as usize).saturating_add(len) & !(HUGE_PAGE_BYTES - 1);
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns (aligned inward),
            // and MADV_HUGEPAGE changes no contents, only how the kernel may back the pages.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// `ptr` (an allocation of `size` bytes, or null), advised when it is large enough.
#[inline]
fn advised(ptr: *mut u8, size: usize) -> *mut u8 {
    if size >= HUGE_PAGE_BYTES && !ptr.is_null() {
        advise(ptr, size);
    }
    ptr
}

// SAFETY: every call is forwarded to the inner allocator with the same arguments, which upholds
// the GlobalAlloc contract; `advise` only adds a hint about memory it just returned.
unsafe impl<A: GlobalAlloc> GlobalAlloc for HugePageAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract for `alloc`.
        advised(unsafe { self.inner.alloc(layout) }, layout.size())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller's contract for `alloc_zeroed`.
        advised(unsafe { self.inner.alloc_zeroed(layout) }, layout.size())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract for `dealloc` (`ptr` came from the inner allocator through us).
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller's contract for `realloc` (`ptr` came from the inner allocator through us).
        advised(
            unsafe { self.inner.realloc(ptr, layout, new_size) },
            new_size,
        )
    }
}
