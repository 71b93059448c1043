//! The heap of a plugin built for `wasm32-unknown-unknown`: [`InstanceHeap`].
//!
//! Weir makes a fresh instance for every call, so a plugin's heap lives for one call. What
//! costs there is growing the linear memory: the standard library's allocator on this target
//! (dlmalloc) asks for new pages with `memory.grow` on its first allocation, although the
//! initial memory has free space above the data (`__heap_base` up to the end of the initial
//! pages). A grown memory is more work for the host at both ends of every call: the pool
//! resets the grown pages after the call and makes them inaccessible again before the next
//! one (BENCHMARKS.md, "A plugin without WASI imports": 25 us against 12 us per fresh call).
//!
//! [`InstanceHeap`] is the `talc` allocator with a memory source that first claims that free
//! space and only then grows the memory (extending the heap when the new pages follow it).
//! The allocator itself is `talc`'s; only where its memory comes from is Weir's.
//! `wasm32-wasip2` needs none of this: there wasi-libc's `malloc` already starts in the
//! initial memory, and it owns that space (a second allocator there would corrupt it).
//!
//! The one module of the SDK with `unsafe` code: a memory source hands raw memory to the
//! allocator, and the heap's start is a linker symbol.
#![allow(unsafe_code)]

use core::alloc::Layout;
use core::arch::wasm32;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::source::Source;
use talc::wasm::WasmBinning;

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Set by the linker: the first byte above the static data and the stack.
    static __heap_base: u8;
    /// Set by the linker: the end of the initial memory.
    static __heap_end: u8;
}

/// Whether a heap has claimed the initial memory's free space. Only one may: a second
/// [`InstanceHeap`] in the same instance (a plugin's own, beside the global one) starts with
/// grown pages instead of handing out the same bytes again.
static INITIAL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// The global allocator `export_plugin!` installs on `wasm32-unknown-unknown`.
pub type InstanceHeap = TalcSyncCell<InitialThenGrow, WasmBinning>;

/// A new [`InstanceHeap`].
pub const fn instance_heap() -> InstanceHeap {
    TalcSyncCell::new_wasm(InitialThenGrow { end: None })
}

/// Memory for `talc`: the initial memory's free space first, then `memory.grow`.
#[derive(Debug)]
pub struct InitialThenGrow {
    /// The end of the heap, once there is one.
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` neither allocates nor calls into the allocator. The memory it claims is
// either the initial memory between `__heap_base` and `__heap_end`, which nothing else uses on
// this target (no libc; claimed once per instance, see `INITIAL_CLAIMED`), or pages
// `memory.grow` has just added.
unsafe impl Source for InitialThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if talc.source.end.is_none() && !INITIAL_CLAIMED.swap(true, Ordering::Relaxed) {
            let base = (&raw const __heap_base).cast_mut();
            let end = &raw const __heap_end as usize;
            if let Some(size) = end.checked_sub(base as usize) {
                // SAFETY: see the `unsafe impl`.
                talc.source.end = unsafe { talc.claim(base, size) };
                if talc.source.end.is_some() {
                    return Ok(());
                }
            }
        }
        // Room for the chunk's tags and alignment on top of the request, and for talc's
        // bookkeeping should this be the first heap.
        let wanted = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| n.checked_add(4 * talc::base::CHUNK_UNIT))
            .and_then(|n| n.checked_add(talc::min_first_heap_size::<B>()))
            .ok_or(())?;
        let pages = wanted.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        let start = previous.checked_mul(PAGE).ok_or(())?;
        let len = pages.checked_mul(PAGE).ok_or(())?;
        // On wasm32 the end of a 4 GiB memory does not fit a pointer: not usable.
        let new_end = start.checked_add(len).ok_or(())? as *mut u8;
        talc.source.end = match talc.source.end.take() {
            // The heap ends where the new pages start (talc aligns a heap's end down, so
            // allow for a few bytes below): extend it over them.
            // SAFETY: everything from the heap's end up to `new_end` is this heap's memory.
            Some(end) if start.wrapping_sub(end.as_ptr() as usize) < PAGE => {
                Some(unsafe { talc.extend(end, new_end) })
            }
            // SAFETY: pages nothing else uses.
            _ => unsafe { talc.claim(start as *mut u8, len) },
        };
        if talc.source.end.is_some() {
            Ok(())
        } else {
            Err(())
        }
    }
}
