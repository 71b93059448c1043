//! Host capabilities: the implementations of the interfaces a plugin imports.
//!
//! One file per imported WIT interface. These are the only authority a plugin has; each call
//! gets its own child span of `plugin.invoke` (`plugin.import.<interface>.<function>`).
//! Every import returns `wasmtime::Result<..>`: the outer error traps the guest (host bug or
//! exhausted budget), an inner WIT error is what the guest sees and handles.

pub mod catalog;
pub mod config;
pub mod deadline;
pub mod log;

use crate::runtime::InvocationState;

impl crate::runtime::bindings::types::Host for InvocationState {}
