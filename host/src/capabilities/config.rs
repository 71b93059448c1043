//! `weir:orders/config`: read-only configuration of this plugin installation.
//!
//! Values come from the operator's configuration for the plugin's name; they are fixed for
//! the lifetime of a loaded version, so a call sees one consistent view.

use weir_core::domain::contract::MAX_CONFIG_KEY;

use super::Imports;
use crate::world::bindings::Capability;
use crate::world::bindings::config::Host;

impl Host for Imports {
    #[tracing::instrument(name = "plugin.import.config.get", skip_all, fields(key = tracing::field::Empty), level = "debug")]
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.require(Capability::Config)?;
        self.bound("config.get key", &key, MAX_CONFIG_KEY)?;
        tracing::Span::current().record("key", key.as_str());
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
