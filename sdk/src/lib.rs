//! `weir-sdk`: write Weir order plugins in Rust.
//!
//! A Weir plugin is a WebAssembly component implementing the `weir:orders/plugin` world
//! (see `wit/orders.wit`). This crate hides the component-model plumbing: implement
//! [`Plugin`] for a type, export it with [`export_plugin!`], and call the host's capabilities
//! through [`log`], [`catalog`], [`config`] and [`deadline`].
//!
//! The same crate compiles natively, so plugin logic can be unit-tested with plain
//! `cargo test`: on non-wasm targets the capabilities talk to a thread-local fake host from
//! [`testing`] instead of the real one.
//!
//! # Example
//!
//! ```
//! use weir_sdk::{
//!     Capability, Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus,
//!     Plugin, PluginInfo, PricedLine, PricedOrder, catalog, log,
//! };
//!
//! /// Prices every line at the catalog price; no discount, no tax.
//! pub struct Simple;
//!
//! impl Plugin for Simple {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("simple", "0.1.0", vec![Capability::Log, Capability::Catalog])
//!     }
//!
//!     fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
//!         let mut lines = Vec::new();
//!         let mut subtotal = 0i64;
//!         for line in &request.lines {
//!             let product = catalog::get(&line.sku)
//!                 .map_err(|e| OrderError::unavailable(format!("catalog: {e}")))?
//!                 .ok_or_else(|| OrderError::rejected("UNKNOWN_SKU", format!("unknown sku {}", line.sku)))?;
//!             let line_total = product.unit_price.amount * i64::from(line.quantity);
//!             subtotal += line_total;
//!             lines.push(PricedLine {
//!                 sku: line.sku.clone(),
//!                 quantity: line.quantity,
//!                 unit_price: product.unit_price.clone(),
//!                 line_total: Money::new(line_total, &request.currency),
//!             });
//!         }
//!         log::info("priced", &[("lines", &lines.len().to_string())]);
//!         let zero = Money::new(0, &request.currency);
//!         Ok(PricedOrder {
//!             lines,
//!             subtotal: Money::new(subtotal, &request.currency),
//!             discount: zero.clone(),
//!             tax: zero,
//!             total: Money::new(subtotal, &request.currency),
//!         })
//!     }
//!
//!     fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
//!         match (order.status, event) {
//!             (OrderStatus::Placed, OrderEvent::PaymentCaptured) => Ok(OrderStatus::Paid),
//!             (status, event) => Err(OrderError::conflict(format!("{status:?} + {event:?}"))),
//!         }
//!     }
//! }
//!
//! // Builds the component exports on wasm32; natively it only checks `Simple: Plugin`.
//! weir_sdk::export_plugin!(Simple);
//!
//! // A native unit test with the fake host:
//! # fn main() {
//! use weir_sdk::testing::FakeHost;
//! use weir_sdk::{OrderLine, Product};
//!
//! let host = FakeHost::new()
//!     .product(Product::new("apple", "Apple", Money::new(150, "USD"), 10))
//!     .install();
//! let request = OrderRequest {
//!     customer_id: "cus_123".into(),
//!     currency: "USD".into(),
//!     lines: vec![OrderLine { sku: "apple".into(), quantity: 2 }],
//!     metadata: vec![],
//! };
//! let priced = Simple::place_order(request).unwrap();
//! assert_eq!(priced.total, Money::new(300, "USD"));
//! assert_eq!(host.catalog_calls(), vec!["apple".to_string()]);
//! assert_eq!(host.logs()[0].message, "priced");
//! # }
//! ```
//!
//! Build the component in a crate with `crate-type = ["cdylib"]` (add `"rlib"` to also use
//! the logic natively), for one of two targets:
//!
//! - `cargo build --target wasm32-wasip2 --release`: the standard library's I/O works (a
//!   `println!` or a panic message reaches the host's log through the captured stdout and
//!   stderr), and the component imports the WASI interfaces the standard library uses.
//! - `cargo build --target wasm32-unknown-unknown --release` with the toolchain's component
//!   linker, `wasm-component-ld`, set for that target (in `.cargo/config.toml`:
//!   `[target.wasm32-unknown-unknown]` `linker = "wasm-component-ld"`): the component imports
//!   `weir:orders` only. A fresh instance of it is cheaper, which is every call
//!   (BENCHMARKS.md, "A plugin without WASI imports"), and it holds no WASI authority at all.
//!   Standard-library I/O does nothing there; log with [`log`]. A panic still traps the call,
//!   and its message reaches the host's log as a `plugin panicked` error record when the
//!   plugin declares [`Capability::Log`]. The reference plugin is built this way.
//!
//! # Layout
//!
//! - crate root: the WIT types, their constructors, [`Plugin`] and [`export_plugin!`].
//! - [`log`], [`catalog`], [`config`], [`deadline`]: one module per imported WIT interface.
//! - [`testing`] (native only, or with the `fake-host` feature): [`testing::FakeHost`], the
//!   stand-in for the Weir host.
//!
//! # Feature `fake-host`
//!
//! Off by default. On `wasm32` it serves the capabilities from the thread-local
//! [`testing::FakeHost`] too, instead of importing them from the Weir host: plugin logic can
//! then run inside a component of another world, with no `weir:orders` import (the end-to-end
//! benchmark's `wasi:http` peer, `bench/quote-http`, prices with the reference plugin's logic
//! this way). Never enable it in a plugin: its capabilities would no longer reach the host.
//! - [`contract`] (native only): the host's checks on priced orders and transitions, to run
//!   in unit tests (what the host refuses with `PLUGIN_CONTRACT_VIOLATION`).
#![deny(missing_docs)]

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__weir_export",
        additional_derives: [PartialEq, Eq],
        // OrderError is defined by hand in `types.rs` so that it can have a readable
        // `Display` (the generated one prints the `Debug` form).
        with: {
            "weir:orders/types@0.1.0/order-error": crate::OrderError,
        },
    });
}

mod types;

pub mod catalog;
pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod contract;
pub mod deadline;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod heap;
pub mod log;
#[cfg(any(not(target_arch = "wasm32"), feature = "fake-host"))]
pub mod testing;

/// The largest amount, in minor units, the host accepts in a priced order: 2^53 - 1, the
/// largest integer a JSON consumer using IEEE doubles reads exactly. Refuse larger amounts
/// yourself (e.g. as an `invalid` violation): the host refuses them as a broken contract.
///
/// ```
/// let (unit_price, quantity) = (i64::MAX / 2, 3u32);
/// let total = unit_price
///     .checked_mul(i64::from(quantity))
///     .filter(|t| *t <= weir_sdk::MAX_AMOUNT);
/// assert_eq!(total, None, "refuse it as an invalid request, never return it");
/// ```
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// The conformance kit: a `weir.cases/1` cases file (`sdk/conformance/cases.json`) that every
/// order plugin must pass. It exercises each `order-error` case a plugin is expected to
/// produce (`invalid`, `rejected` with `UNKNOWN_SKU`, `INSUFFICIENT_STOCK` and
/// `CURRENCY_MISMATCH`, `unavailable` and `internal` for each catalog failure, `conflict`) and
/// the whole status graph (every status and event). Run it on a built component with
/// `weir plugin test plugin.wasm --cases sdk/conformance/cases.json`; each case says what it
/// is about (`note`) and what must come back (`expect`: the outcome, and the status, reason or
/// field where one is required). Amounts are the plugin's business and are not checked here.
///
/// ```
/// assert!(weir_sdk::CONFORMANCE_CASES.contains("\"format\": \"weir.cases/1\""));
/// ```
pub const CONFORMANCE_CASES: &str = include_str!("../conformance/cases.json");

pub use __bindings::weir::orders::catalog::Product;
pub use __bindings::weir::orders::log::Level;
pub use __bindings::weir::orders::types::{
    Capability, DependencyError, Money, OrderEvent, OrderLine, OrderRequest, OrderSnapshot,
    OrderStatus, PluginInfo, PricedLine, PricedOrder, Rejection, Violation,
};
pub use types::OrderError;

/// The business logic of an order plugin: one associated function per export of the
/// `weir:orders/plugin` world.
///
/// Implement it on a unit struct and export it with [`export_plugin!`]. Every call runs in a
/// fresh instance, so a plugin keeps no state between calls.
pub trait Plugin {
    /// Name, version and the capabilities the plugin uses. Must not fail; the host calls it
    /// when admitting a new version.
    fn describe() -> PluginInfo;

    /// Validate and price a new order.
    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError>;

    /// Decide the status `order` moves to on `event`.
    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError>;
}

/// The longest panic message, in bytes, [`__report_panics`] passes to the host's log.
#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    not(feature = "fake-host")
))]
const PANIC_MESSAGE_BYTES: usize = 1024;

/// Called by [`export_plugin!`] at the start of `place-order` and `transition`.
///
/// On `wasm32-unknown-unknown` a component has no stderr, so a panic's message would be lost
/// in the trap. This installs (once per instance) a panic hook that sends it to the host as
/// an `error` record, `plugin panicked` with the field `panic` (the message and location, at
/// most 1 KiB), when the plugin declared [`Capability::Log`]; an undeclared import would
/// turn the panic into a capability refusal. The trap follows as before. The record counts
/// against the call's log budget: a plugin that panics with its budget spent fails with the
/// log budget instead. Panics in `describe` (not reported to the log anyway) or before the
/// export's body starts are not reported. On `wasm32-wasip2` the message goes to stderr,
/// which the host captures into its log, and this does nothing.
#[doc(hidden)]
pub fn __report_panics<P: Plugin + 'static>() {
    #[cfg(all(
        target_arch = "wasm32",
        target_os = "unknown",
        not(feature = "fake-host")
    ))]
    {
        // One static for every `P`: a component exports one plugin.
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                if !P::describe().capabilities.contains(&Capability::Log) {
                    return;
                }
                let mut text = info.to_string();
                if text.len() > PANIC_MESSAGE_BYTES {
                    let mut end = PANIC_MESSAGE_BYTES;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                }
                log::error("plugin panicked", &[("panic", &text)]);
            }));
        });
    }
}

/// Export a [`Plugin`] implementation as the component's `weir:orders/plugin` exports.
///
/// Use it once per plugin crate, at item level: `weir_sdk::export_plugin!(MyPlugin);`.
/// On `wasm32` targets it generates the component-model exports; on other targets it only
/// checks at compile time that the type implements [`Plugin`], so the crate still builds and
/// tests natively.
///
/// On `wasm32-unknown-unknown` it also installs the global allocator, `heap::InstanceHeap`,
/// which uses the initial memory before growing it (a call whose heap fits the initial
/// memory's free space, about 57 KiB for the reference plugin, grows no memory).
/// A plugin with its own `#[global_allocator]` writes
/// `weir_sdk::export_plugin!(MyPlugin, own_allocator);`.
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        $crate::export_plugin!($ty, own_allocator);

        #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
        #[global_allocator]
        static __WEIR_INSTANCE_HEAP: $crate::heap::InstanceHeap = $crate::heap::instance_heap();
    };
    ($ty:ident, own_allocator) => {
        #[allow(unsafe_code)]
        const _: () = {
            impl $crate::__bindings::Guest for $ty {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }

                fn place_order(
                    request: $crate::OrderRequest,
                ) -> ::core::result::Result<$crate::PricedOrder, $crate::OrderError> {
                    $crate::__report_panics::<$ty>();
                    <$ty as $crate::Plugin>::place_order(request)
                }

                fn transition(
                    order: $crate::OrderSnapshot,
                    event: $crate::OrderEvent,
                ) -> ::core::result::Result<$crate::OrderStatus, $crate::OrderError> {
                    $crate::__report_panics::<$ty>();
                    <$ty as $crate::Plugin>::transition(order, event)
                }
            }

    $crate::__bindings::__weir_export!($ty with_types_in $crate::__bindings);
        };
    };
}

/// Export a [`Plugin`] implementation as the component's `weir:orders/plugin` exports.
///
/// Use it once per plugin crate, at item level: `weir_sdk::export_plugin!(MyPlugin);`.
/// On `wasm32` targets it generates the component-model exports; on other targets it only
/// checks at compile time that the type implements [`Plugin`], so the crate still builds and
/// tests natively.
///
/// On `wasm32-unknown-unknown` it also installs the global allocator, `heap::InstanceHeap`,
/// which uses the initial memory before growing it (a call whose heap fits the initial
/// memory's free space, about 57 KiB for the reference plugin, grows no memory).
/// A plugin with its own `#[global_allocator]` writes
/// `weir_sdk::export_plugin!(MyPlugin, own_allocator);`.
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        $crate::export_plugin!($ty, own_allocator);
    };
    ($ty:ident, own_allocator) => {
        const _: () = {
            const fn assert_plugin<T: $crate::Plugin>() {}
            assert_plugin::<$ty>();
        };
    };
}
