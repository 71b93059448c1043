//! `weir:orders/config`: read-only configuration of this plugin installation.
//!
//! Values come from the operator's configuration for the plugin's name; they are fixed for
//! the lifetime of a loaded version, so a call sees one consistent view.

use weir_core::domain::contract::MAX_CONFIG_KEY;

use super::Imports;
use crate::world::bindings::Capability;
use crate::world::bindings::config::Host;

impl Host for Imports {
    /// The key is recorded on the import's own span by name (see the catalog import): the
    /// span is debug-level, and with it off `Span::current()` is `plugin.invoke`.
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let span = tracing::debug_span!("plugin.import.config.get", key = tracing::field::Empty);
        let _entered = span.enter();
        self.require(Capability::Config)?;
        self.bound("config.get key", &key, MAX_CONFIG_KEY)?;
        span.record("key", key.as_str());
        let value = match self.trace.as_ref().and_then(|t| t.scripted_config(&key)) {
            Some(scripted) => scripted,
            None => self.plugin.config.get(&key).cloned(),
        };
        if let Some(trace) = &self.trace {
            trace.config(&key, &value);
        }
        Ok(value)
    }
}
