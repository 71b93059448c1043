//! `weir:orders/log`: structured guest logging into the host's log stream.
//!
//! Records are emitted as `tracing` events with target `weir::plugin` inside the invocation
//! span, so they carry its trace context. Each call has a record and byte budget; a guest
//! that floods its log is trapped with [`LogBudgetExceeded`] rather than allowed to flood ours.

use super::Imports;
use crate::world::bindings::Capability;
use crate::world::bindings::log::{Host, Level};

/// Raised into the guest as a trap when it exceeds its log budget.
#[derive(Debug, thiserror::Error)]
#[error("plugin exceeded its log budget")]
pub struct LogBudgetExceeded;

/// Longest message or field value kept, in bytes; the rest is cut and marked.
const MAX_VALUE: usize = 4096;

/// Most fields one record may carry; more overruns the log budget.
const MAX_FIELDS: usize = 32;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_VALUE {
        return s;
    }
    let mut end = MAX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host for Imports {
    #[tracing::instrument(name = "plugin.import.log.emit", skip_all, level = "debug")]
    fn emit(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.require(Capability::Log)?;
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if self.log.records == 0 || size > self.log.bytes || fields.len() > MAX_FIELDS {
            self.log_exceeded = true;
            return Err(wasmtime::Error::new(LogBudgetExceeded));
        }
        self.log.records -= 1;
        self.log.bytes -= size;

        // The budget is charged whether or not the record is kept; the fields are only
        // formatted when a subscriber takes records of this level.
        let format_fields = || {
            let mut map = serde_json::Map::new();
            for (k, v) in &fields {
                map.insert(
                    clip(k).to_owned(),
                    serde_json::Value::String(clip(v).to_owned()),
                );
            }
            serde_json::Value::Object(map).to_string()
        };
        let message = clip(&message);
        let plugin = self.plugin.name.as_str();
        let version = self.plugin.version.as_str();
        macro_rules! emit {
            ($lvl:expr) => {
                if tracing::enabled!(target: "weir::plugin", $lvl) {
                    let fields = format_fields();
                    tracing::event!(target: "weir::plugin", $lvl, plugin, plugin.version = version, fields = %fields, "{message}")
                }
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}
