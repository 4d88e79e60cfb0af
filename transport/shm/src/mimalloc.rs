//! mimalloc (version 2) as the server's allocator on Linux, called directly: `mi_malloc` for the
//! small alignments nearly every allocation asks for. (The `mimalloc` crate sends every
//! allocation through `mi_malloc_aligned`, whose checks cost more than glibc's whole `malloc`:
//! about 100 instructions against mimalloc's 20, measured with callgrind on a core serving local
//! SETs, where each stored value's `Bytes` owner is one small allocation.)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// Every block `mi_malloc` hands out is aligned to at least this (its size classes are whole
/// machine words).
const PLAIN_ALIGN: usize = 8;

/// The global allocator: mimalloc.
#[derive(Clone, Copy, Debug, Default)]
pub struct MiMalloc;

// SAFETY: each call forwards to mimalloc, which returns blocks of at least the requested size,
// aligned as `Layout` asks (the plain functions only where their word alignment suffices),
// or null on failure; `dealloc` and `realloc` receive only pointers mimalloc returned, as the
// GlobalAlloc contract guarantees, and `mi_free` and `mi_realloc` accept any of its blocks.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi_malloc(layout.size()) as *mut u8
            } else {
                mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi_zalloc(layout.size()) as *mut u8
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_as_asked_and_reallocation_keeps_contents() {
        let alloc = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 100, 4096, 1 << 20] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; the block is freed with the layout it was made with.
                unsafe {
                    let ptr = alloc.alloc(layout);
                    assert!(!ptr.is_null());
                    assert_eq!(ptr as usize % align, 0, "size {size} align {align}");
                    ptr.write_bytes(0xa5, size);
                    let grown = alloc.realloc(ptr, layout, size * 3);
                    assert!(!grown.is_null());
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "grown: size {size} align {align}"
                    );
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5));
                    alloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let zeroed = alloc.alloc_zeroed(layout);
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    alloc.dealloc(zeroed, layout);
                }
            }
        }
    }
}
