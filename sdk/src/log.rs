//! Structured logging into the host's log stream (WIT interface `weir:orders/log`).
//!
//! Records are correlated with the trace of the call that emitted them. The host bounds how
//! much one call may log; a plugin that exceeds the budget is trapped, so log decisions, not
//! loops.
//!
//! ```
//! # let _host = weir_sdk::testing::FakeHost::new().install();
//! weir_sdk::log::info("order priced", &[("lines", "3"), ("total", "1250")]);
//! ```

use crate::Level;

/// Emit one record at `level` with a message and key/value fields.
///
/// ```
/// use weir_sdk::{Level, log};
///
/// let host = weir_sdk::testing::FakeHost::new().install();
/// log::emit(Level::Warn, "discount capped", &[("sku", "KB-001")]);
/// log::error("catalog answered a negative price", &[("sku", "MS-002")]);
/// let records = host.logs();
/// assert_eq!(records[0].level, Level::Warn);
/// assert_eq!(records[0].field("sku"), Some("KB-001"));
/// assert_eq!(records[1].message, "catalog answered a negative price");
/// ```
pub fn emit(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(all(target_arch = "wasm32", not(feature = "fake-host")))]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::__bindings::weir::orders::log::emit(level, message, &fields);
    }
    #[cfg(any(not(target_arch = "wasm32"), feature = "fake-host"))]
    crate::testing::with_host("weir_sdk::log::emit", |host| {
        host.log(level, message, fields)
    });
}

/// Emit a `trace` record.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Trace, message, fields);
}

/// Emit a `debug` record.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Debug, message, fields);
}

/// Emit an `info` record.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Info, message, fields);
}

/// Emit a `warn` record.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Warn, message, fields);
}

/// Emit an `error` record.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    emit(Level::Error, message, fields);
}
