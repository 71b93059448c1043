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
//! Build the component with `cargo build --target wasm32-wasip2 --release` in a crate with
//! `crate-type = ["cdylib"]` (add `"rlib"` to also use the logic natively).
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

/// Export a [`Plugin`] implementation as the component's `weir:orders/plugin` exports.
///
/// Use it once per plugin crate, at item level: `weir_sdk::export_plugin!(MyPlugin);`.
/// On `wasm32` targets it generates the component-model exports; on other targets it only
/// checks at compile time that the type implements [`Plugin`], so the crate still builds and
/// tests natively.
#[cfg(target_arch = "wasm32")]
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        #[allow(unsafe_code)]
        const _: () = {
            impl $crate::__bindings::Guest for $ty {
                fn describe() -> $crate::PluginInfo {
                    <$ty as $crate::Plugin>::describe()
                }

                fn place_order(
                    request: $crate::OrderRequest,
                ) -> ::core::result::Result<$crate::PricedOrder, $crate::OrderError> {
                    <$ty as $crate::Plugin>::place_order(request)
                }

                fn transition(
                    order: $crate::OrderSnapshot,
                    event: $crate::OrderEvent,
                ) -> ::core::result::Result<$crate::OrderStatus, $crate::OrderError> {
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
#[cfg(not(target_arch = "wasm32"))]
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        const _: () = {
            const fn assert_plugin<T: $crate::Plugin>() {}
            assert_plugin::<$ty>();
        };
    };
}
