//! Small shared support with no dependency on any other module of the host: serde helpers for
//! durations, the configuration-key error every section's `validate` returns, secrets and
//! secret-bearing URLs, and the build facts.
//!
//! # Layout
//! - [`secret`]: [`Secret`] and [`SecretUrl`] (redacted in `Debug`, `Serialize` and logs) and
//!   the one URL redactor, [`redact_url`].
//! - [`connection`]: `Connection: close` on responses sent before the request body was read.
//! - `failpoint` (cargo feature `fault-injection` only, never in release builds): named crash
//!   windows the process tests stop in (`WEIR_FAILPOINT`).
//! - [`duration_ms`], [`duration_secs`]: a [`std::time::Duration`] written as whole
//!   milliseconds or seconds in configuration files.
//! - `captured_log` (tests only): log output kept in memory, for tests of log lines.
//! - [`InvalidKey`]: "this dotted configuration key has an unusable value, because ...".
//! - [`VERSION`], [`GIT_COMMIT`]: what was built.

#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod captured_log;
pub mod connection;
#[cfg(feature = "fault-injection")]
pub mod failpoint;
pub mod secret;

pub use secret::{Secret, SecretUrl, redact_url};

/// The crate version compiled into the binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git commit of the build, or `unknown`.
pub const GIT_COMMIT: &str = match option_env!("WEIR_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// A configuration value that parses but cannot work: the dotted key and why. Every
/// configuration section's `validate` returns this; the server's configuration error names
/// the key from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration key `{key}`: {reason}")]
pub struct InvalidKey {
    /// Dotted key, e.g. `runtime.budget.timeout_ms`.
    pub key: &'static str,
    /// Why it is rejected.
    pub reason: String,
}

impl InvalidKey {
    /// `key` is invalid because of `reason`.
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// A caught panic's message: its `&str` or `String` payload, or a fixed text for any other.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// `Err(InvalidKey)` unless `ok`.
pub fn ensure(ok: bool, key: &'static str, reason: &str) -> Result<(), InvalidKey> {
    if ok {
        Ok(())
    } else {
        Err(InvalidKey::new(key, reason))
    }
}

/// Serde helper: a [`std::time::Duration`] written as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialize from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Serde helper: a [`std::time::Duration`] written as whole seconds.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Deserialize from seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

pub use weir_core::chain;
