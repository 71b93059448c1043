//! The `weir:orders` world: the generated bindings and the conversions between WIT types and
//! the core's domain types, in one place (so neither handlers nor the runtime convert by
//! hand).
//!
//! - [`bindings`]: `bindgen!` output, nothing else.
//! - [`conversions`]: `From` impls and helpers between [`bindings`] and `weir_core::domain`.

pub mod bindings;
pub mod conversions;

/// The world every plugin implements, with its package version.
pub const WORLD: &str = "weir:orders/plugin@0.1.0";

/// The WIT package of the world, without version: its interfaces are the host's imports.
pub const PACKAGE: &str = "weir:orders";
