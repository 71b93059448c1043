//! Host-side bindings for the `weir:orders/plugin` world.
//!
//! `bindgen!` lives here alone, in a private module, so the rest of the host sees only the
//! re-exports chosen below and a regenerated binding never leaks new names by accident.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weir:orders/plugin",
        // Imports that never wait are plain functions: no future per call.
        imports: {
            "weir:orders/config.get": trappable,
            "weir:orders/deadline.remaining-ms": trappable,
            "weir:orders/log.emit": trappable,
            default: async | trappable,
        },
        exports: { default: async },
    });
}

pub use generated::weir::orders::{catalog, config, deadline, log, types};
pub use generated::{Plugin, PluginPre};

pub use types::{
    Capability, DependencyError, Money, OrderError, OrderEvent, OrderLine, OrderRequest,
    OrderSnapshot, OrderStatus, PluginInfo, PricedLine, PricedOrder, Rejection, Violation,
};
