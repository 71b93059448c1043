//! Hostile test plugin `hostile-snoop`: looks for what an earlier call left in its instance.
//!
//! `place-order` reports, as an `internal` error, how many calls this instance served before
//! (a counter in a static) and how many bytes are not zero in a 3 MiB region of linear memory
//! that it grows itself on its first call (so the region lies at the same address in every
//! fresh instance of this component), then writes a marker over all of it. A fresh instance
//! must report `earlier calls 0, dirty bytes 0`: if the host ever let a call see memory an
//! earlier call wrote (a pool slot not reset), it would count the marker. On a reused
//! instance the second call finds the counter at 1 and the region dirty, which is what shows
//! the probe works. `describe` and `transition` behave. Used by the host's sandbox tests;
//! never deploy it.

use std::sync::atomic::{AtomicU32, Ordering};

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// Calls this instance served.
static CALLS: AtomicU32 = AtomicU32::new(0);

/// 64 KiB pages of the probed region (3 MiB).
#[cfg(target_arch = "wasm32")]
const PAGES: usize = 48;

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-snoop", env!("CARGO_PKG_VERSION"), vec![])
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let earlier = CALLS.fetch_add(1, Ordering::Relaxed);
        let dirty = probe();
        Err(OrderError::Internal(format!(
            "earlier calls {earlier}, dirty bytes {dirty}"
        )))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

/// Count the non-zero bytes of the probed region, then fill it with a marker.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // reading raw linear memory is the point of this plugin
fn probe() -> usize {
    use core::arch::wasm32::memory_grow;

    /// First page of the region, once grown (0: not yet).
    static BASE: AtomicU32 = AtomicU32::new(0);

    let mut base = BASE.load(Ordering::Relaxed) as usize;
    if base == 0 {
        // Pages this instance grew itself: no allocator owns them.
        base = memory_grow(0, PAGES);
        assert!(base != usize::MAX, "memory.grow refused");
        BASE.store(base as u32, Ordering::Relaxed);
    }
    let start = (base * 65536) as *mut u8;
    let mut dirty = 0;
    for i in 0..PAGES * 65536 {
        // SAFETY: the region was grown by this function and nothing else uses it; volatile so
        // the reads and the marker are really made.
        unsafe {
            let p = start.add(i);
            dirty += usize::from(p.read_volatile() != 0);
            p.write_volatile(0xA5);
        }
    }
    dirty
}

/// Native builds (tests and lints of the workspace) have no linear memory to probe.
#[cfg(not(target_arch = "wasm32"))]
fn probe() -> usize {
    0
}

weir_sdk::export_plugin!(Hostile);
