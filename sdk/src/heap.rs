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

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::source::Source;
use talc::wasm::WasmBinning;

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Set by the linker: the first byte above the static data and the stack.
    static __heap_base: u8;
}

/// The global allocator `export_plugin!` installs on `wasm32-unknown-unknown`.
pub type InstanceHeap = TalcSyncCell<InitialThenGrow, WasmBinning>;

/// A new [`InstanceHeap`].
pub const fn instance_heap() -> InstanceHeap {
    TalcSyncCell::new_wasm(InitialThenGrow {
        claimed_initial: false,
        end: None,
    })
}

/// Memory for `talc`: the initial memory's free space first, then `memory.grow`.
#[derive(Debug)]
pub struct InitialThenGrow {
    claimed_initial: bool,
    /// The end of the heap, once there is one.
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` neither allocates nor calls into the allocator; the memory it claims is
// the initial memory above `__heap_base`, which nothing else uses on this target (no libc),
// and pages `memory.grow` just added.
unsafe impl Source for InitialThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.claimed_initial {
            talc.source.claimed_initial = true;
            let base = (&raw const __heap_base).cast_mut();
            let end = wasm32::memory_size(0) * PAGE;
            if let Some(size) = end.checked_sub(base as usize) {
                // SAFETY: see the `unsafe impl`.
                talc.source.end = unsafe { talc.claim(base, size) };
                if talc.source.end.is_some() {
                    return Ok(());
                }
            }
        }
        // Room for the chunk's tags and alignment on top of the request.
        let wanted = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| n.checked_add(4 * talc::base::CHUNK_UNIT))
            .ok_or(())?;
        let pages = wanted.div_ceil(PAGE);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        let base = (previous * PAGE) as *mut u8;
        let new_end = base.wrapping_add(pages * PAGE);
        talc.source.end = match talc.source.end.take() {
            // The heap ends in the last page before the new ones (claims end aligned down):
            // extend it over the rest of that page and the new pages.
            // SAFETY: everything from the heap's end up to `new_end` is this heap's memory.
            Some(end) if (base as usize).wrapping_sub(end.as_ptr() as usize) < PAGE => {
                Some(unsafe { talc.extend(end, new_end) })
            }
            // SAFETY: pages nothing else uses.
            _ => unsafe { talc.claim(base, pages * PAGE) },
        };
        if talc.source.end.is_some() {
            Ok(())
        } else {
            Err(())
        }
    }
}
