//! The process's allocator: mimalloc, asked the way C asks it.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every Rust allocation through
//! `mi_malloc_aligned`, even at the 8- or 16-byte alignment that every
//! mimalloc block has anyway. For blocks over 1 KiB (hyper's 8 KiB
//! connection buffers, a connection's task, the request future hyper keeps
//! per connection) or when the page at hand has no free block, that call
//! takes mimalloc's generic aligned path, which over-allocates
//! (`size + align - 1`) whenever the size class is not a power of two: about
//! 600 instructions per `Connection: close` request (callgrind, BENCHMARKS.md
//! "The allocator's aligned path"). Here an alignment that plain `mi_malloc`
//! already guarantees goes to `mi_malloc`, as the system allocator does with
//! `malloc`; only a larger one (tokio's 128-byte aligned cells) takes the
//! aligned call.
//!
//! This is one of two places with `unsafe` code in the crate (the other is
//! `defer_accept.rs`; the library forbids it): `GlobalAlloc` is an unsafe trait, and each method forwards
//! the caller's guarantees to the matching mimalloc function unchanged.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every mimalloc block of at least this size has
/// (`MI_MAX_ALIGN_SIZE`, `sizeof(max_align_t)` on x86-64 and aarch64).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator.
pub struct Mimalloc;

/// Whether plain `mi_malloc(size)` returns memory aligned for `align`:
/// alignments up to 16, for blocks at least that large (smaller blocks are
/// aligned to their size class, as `malloc`'s are).
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every method hands its arguments to the mimalloc function of the
// same contract (malloc/calloc/realloc/free, or their aligned forms, which
// accept any power-of-two alignment); `plain` only picks the unaligned form
// where mimalloc guarantees the alignment anyway. mimalloc is thread-safe,
// and `mi_free` frees blocks from either form.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl; `ptr` came from this allocator.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; `ptr` came from this allocator with `layout`.
        unsafe {
            if plain(layout.align(), new_size) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_sized_zeroed_and_kept_across_realloc() {
        let a = Mimalloc;
        let sizes = [
            1, 7, 8, 15, 16, 24, 100, 1024, 1025, 1300, 4096, 8192, 70_000,
        ];
        let aligns = [1, 2, 8, 16, 32, 64, 128, 4096];
        for &size in &sizes {
            for &align in &aligns {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is freed once, with its layout.
                unsafe {
                    for grown in [size / 2 + 1, size * 3] {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write_bytes(0xAB, size);
                        let q = a.realloc(p, layout, grown);
                        assert!(!q.is_null());
                        assert_eq!(q as usize % align, 0, "{size} → {grown}, align {align}");
                        let kept = size.min(grown);
                        assert!((0..kept).all(|i| *q.add(i) == 0xAB), "{size} → {grown}");
                        let r = a.realloc(q, Layout::from_size_align(grown, align).unwrap(), size);
                        assert!(!r.is_null());
                        assert_eq!(r as usize % align, 0, "{grown} → {size}, align {align}");
                        assert!((0..kept).all(|i| *r.add(i) == 0xAB), "{grown} → {size}");
                        a.dealloc(r, layout);
                    }
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(
                        (0..size).all(|i| *z.add(i) == 0),
                        "zeroed {size} align {align}"
                    );
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
