//! The `weir:orders` world: the generated bindings and the conversions between WIT types and
//! the core's domain types, in one place (so neither handlers nor the runtime convert by
//! hand).
//!
//! - [`bindings`]: `bindgen!` output, nothing else.
//! - [`contract`]: the accepted contract versions and the compatibility check run before
//!   instantiation.
//! - [`conversions`]: `From` impls and helpers between [`bindings`] and `weir_core::domain`.

pub mod bindings;
pub mod contract;
pub mod conversions;

/// The `weir:orders` contract versions the host accepts, oldest first: the single source of
/// truth shown by `weir plugin check` and `/infoz`. Each has its WIT file in
/// [`contract`]; a released version's file is never edited (see `wit/README.md`).
pub const ACCEPTED_VERSIONS: &[&str] = &["0.1.0"];

/// The world every plugin implements, with its package version.
pub const WORLD: &str = "weir:orders/plugin@0.1.0";

/// The WIT package of the world, without version: its interfaces are the host's imports.
pub const PACKAGE: &str = "weir:orders";
