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

        // The budget is charged whether or not the record is kept.
        let level = match level {
            Level::Trace => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        emit_record(
            level,
            &self.plugin.name,
            &self.plugin.version,
            &message,
            &fields,
        );
        Ok(())
    }
}

/// One guest log record as a `tracing` event of target `weir::plugin`, its message and field
/// values clipped; the fields are only formatted when a subscriber takes records of this
/// level. Shared with the native decider of the benchmark, which emits the same records, and
/// with the `log_lines` benchmark.
pub fn emit_record(
    level: tracing::Level,
    plugin: &str,
    version: &str,
    message: &str,
    fields: &[(String, String)],
) {
    let format_fields = || {
        let mut map = serde_json::Map::new();
        for (k, v) in fields {
            map.insert(
                clip(k).to_owned(),
                serde_json::Value::String(clip(v).to_owned()),
            );
        }
        serde_json::Value::Object(map).to_string()
    };
    let message = clip(message);
    macro_rules! emit {
        ($lvl:expr) => {
            if tracing::enabled!(target: "weir::plugin", $lvl) {
                let fields = format_fields();
                tracing::event!(target: "weir::plugin", $lvl, plugin, plugin.version = version, fields = %fields, "{message}")
            }
        };
    }
    match level {
        tracing::Level::TRACE => emit!(tracing::Level::TRACE),
        tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
        tracing::Level::INFO => emit!(tracing::Level::INFO),
        tracing::Level::WARN => emit!(tracing::Level::WARN),
        _ => emit!(tracing::Level::ERROR),
    }
}
