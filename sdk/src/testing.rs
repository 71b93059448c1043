//! A fake Weir host for native unit tests of plugin logic (on wasm32 only with the `fake-host`
//! feature).
//!
//! Outside a component the capability functions ([`crate::log`], [`crate::catalog`],
//! [`crate::config`], [`crate::deadline`]) are served by the [`FakeHost`] installed on the
//! current thread. Calling one with no fake host installed panics with a hint.
//!
//! ```
//! use std::time::Duration;
//! use weir_sdk::testing::FakeHost;
//! use weir_sdk::{DependencyError, Level, Money, Product, catalog, config, deadline, log};
//!
//! let host = FakeHost::new()
//!     .product(Product::new("apple", "Apple", Money::new(150, "USD"), 10))
//!     .catalog_error("pear", DependencyError::Timeout)
//!     .config("currencies", "USD")
//!     .deadline(Duration::from_millis(250))
//!     .install();
//!
//! assert_eq!(catalog::get("apple").unwrap().unwrap().stock, 10);
//! assert_eq!(catalog::get("plum"), Ok(None));
//! assert_eq!(catalog::get("pear"), Err(DependencyError::Timeout));
//! assert_eq!(config::get("currencies").as_deref(), Some("USD"));
//! assert_eq!(deadline::remaining(), Duration::from_millis(250));
//! log::warn("careful", &[("k", "v")]);
//!
//! assert_eq!(host.catalog_calls(), ["apple", "plum", "pear"]);
//! assert_eq!(host.logs()[0].level, Level::Warn);
//! drop(host); // uninstalls it
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::{DependencyError, Level, Product};

/// The deadline a [`FakeHost`] reports unless [`FakeHost::deadline`] sets another one.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Builder of a fake host: catalog products and failures, configuration and the deadline.
///
/// Install it on the current thread with [`FakeHost::install`]; it stays installed until the
/// returned [`FakeHostGuard`] is dropped.
#[derive(Clone, Debug)]
pub struct FakeHost {
    products: BTreeMap<String, Product>,
    catalog_errors: BTreeMap<String, DependencyError>,
    config: BTreeMap<String, String>,
    deadline: Duration,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHost {
    /// An empty catalog, no configuration and [`DEFAULT_DEADLINE`].
    pub fn new() -> Self {
        Self {
            products: BTreeMap::new(),
            catalog_errors: BTreeMap::new(),
            config: BTreeMap::new(),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Add (or replace) a catalog product, keyed by its sku.
    pub fn product(mut self, product: Product) -> Self {
        self.products.insert(product.sku.clone(), product);
        self
    }

    /// Make `catalog::get(sku)` fail with `error`; takes precedence over a product.
    pub fn catalog_error(mut self, sku: impl Into<String>, error: DependencyError) -> Self {
        self.catalog_errors.insert(sku.into(), error);
        self
    }

    /// Set a configuration value.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Time `deadline::remaining()` reports (truncated to milliseconds like the real host).
    /// Time does not pass in the fake: every call reports the same value.
    pub fn deadline(mut self, remaining: Duration) -> Self {
        self.deadline = remaining;
        self
    }

    /// Install this fake host for the current thread until the guard is dropped.
    ///
    /// Installing while another fake host is installed shadows it; dropping the new guard
    /// restores the previous one.
    pub fn install(self) -> FakeHostGuard {
        let state = Rc::new(RefCell::new(State {
            host: self,
            logs: Vec::new(),
            catalog_calls: Vec::new(),
        }));
        let previous = CURRENT.with(|current| current.borrow_mut().replace(Rc::clone(&state)));
        FakeHostGuard { state, previous }
    }
}

/// One record captured from a `weir_sdk::log` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Key/value fields in call order.
    pub fields: Vec<(String, String)>,
}

impl LogRecord {
    /// The value of the first field named `key`, if any.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Keeps a [`FakeHost`] installed on the current thread; uninstalls it when dropped.
///
/// Also gives access to what the code under test did with the host.
#[must_use = "the fake host is uninstalled as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FakeHostGuard {
    state: Rc<RefCell<State>>,
    previous: Option<Rc<RefCell<State>>>,
}

impl FakeHostGuard {
    /// Every log record emitted so far, oldest first.
    ///
    /// ```
    /// let host = weir_sdk::testing::FakeHost::new().install();
    /// weir_sdk::log::info("priced", &[("lines", "2")]);
    /// assert_eq!(host.logs()[0].field("lines"), Some("2"));
    /// ```
    pub fn logs(&self) -> Vec<LogRecord> {
        self.state.borrow().logs.clone()
    }

    /// The sku of every `catalog::get` call so far, in call order.
    ///
    /// ```
    /// let host = weir_sdk::testing::FakeHost::new().install();
    /// let _ = weir_sdk::catalog::get("KB-001");
    /// let _ = weir_sdk::catalog::get("CB-004");
    /// assert_eq!(host.catalog_calls(), ["KB-001", "CB-004"]);
    /// ```
    pub fn catalog_calls(&self) -> Vec<String> {
        self.state.borrow().catalog_calls.clone()
    }
}

impl Drop for FakeHostGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // Ignore the error when the thread-local is already gone (guard dropped during
        // thread teardown).
        let _ = CURRENT.try_with(|current| *current.borrow_mut() = previous);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// The installed fake host and what has been recorded against it.
#[derive(Debug)]
pub(crate) struct State {
    host: FakeHost,
    logs: Vec<LogRecord>,
    catalog_calls: Vec<String>,
}

impl State {
    pub(crate) fn log(&mut self, level: Level, message: &str, fields: &[(&str, &str)]) {
        self.logs.push(LogRecord {
            level,
            message: message.to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
    }

    pub(crate) fn catalog_get(&mut self, sku: &str) -> Result<Option<Product>, DependencyError> {
        self.catalog_calls.push(sku.to_owned());
        if let Some(error) = self.host.catalog_errors.get(sku) {
            return Err(error.clone());
        }
        Ok(self.host.products.get(sku).cloned())
    }

    pub(crate) fn config_get(&self, key: &str) -> Option<String> {
        self.host.config.get(key).cloned()
    }

    pub(crate) fn deadline_remaining(&self) -> Duration {
        let millis = self.host.deadline.as_millis();
        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

/// Run `f` against the fake host installed on this thread; `what` names the capability for
/// the panic message when none is installed.
pub(crate) fn with_host<R>(what: &str, f: impl FnOnce(&mut State) -> R) -> R {
    let state = CURRENT.with(|current| current.borrow().clone());
    let Some(state) = state else {
        panic!(
            "{what} was called natively (outside a WebAssembly component) with no fake host \
             installed on this thread: install one first, e.g. \
             `let _host = weir_sdk::testing::FakeHost::new().install();`"
        );
    };
    let mut state = state.borrow_mut();
    f(&mut state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Money, catalog, config, deadline, log};

    #[test]
    fn serves_catalog_config_and_deadline() {
        let host = FakeHost::new()
            .product(Product::new("a", "A", Money::new(100, "USD"), 3))
            .catalog_error("b", DependencyError::Unavailable("down".into()))
            .catalog_error("a2", DependencyError::Internal("bug".into()))
            .config("k", "v")
            .deadline(Duration::from_micros(2500))
            .install();
        assert_eq!(
            catalog::get("a"),
            Ok(Some(Product::new("a", "A", Money::new(100, "USD"), 3)))
        );
        assert_eq!(catalog::get("zzz"), Ok(None));
        assert_eq!(
            catalog::get("b"),
            Err(DependencyError::Unavailable("down".into()))
        );
        assert_eq!(
            catalog::get("a2"),
            Err(DependencyError::Internal("bug".into()))
        );
        assert_eq!(config::get("k").as_deref(), Some("v"));
        assert_eq!(config::get("missing"), None);
        assert_eq!(deadline::remaining(), Duration::from_millis(2));
        assert_eq!(host.catalog_calls(), ["a", "zzz", "b", "a2"]);
    }

    #[test]
    fn catalog_error_wins_over_product() {
        let _host = FakeHost::new()
            .product(Product::new("a", "A", Money::new(100, "USD"), 3))
            .catalog_error("a", DependencyError::Timeout)
            .install();
        assert_eq!(catalog::get("a"), Err(DependencyError::Timeout));
    }

    #[test]
    fn default_deadline() {
        let _host = FakeHost::new().install();
        assert_eq!(deadline::remaining(), DEFAULT_DEADLINE);
    }

    #[test]
    fn captures_every_log_level_in_order() {
        let host = FakeHost::new().install();
        log::trace("t", &[]);
        log::debug("d", &[]);
        log::info("i", &[("a", "1"), ("b", "2")]);
        log::warn("w", &[]);
        log::error("e", &[]);
        log::emit(Level::Info, "x", &[]);
        let logs = host.logs();
        let levels: Vec<Level> = logs.iter().map(|r| r.level).collect();
        assert_eq!(
            levels,
            [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error,
                Level::Info
            ]
        );
        assert_eq!(logs[2].message, "i");
        assert_eq!(logs[2].field("b"), Some("2"));
        assert_eq!(logs[2].field("c"), None);
    }

    #[test]
    fn nested_install_shadows_and_restores() {
        let outer = FakeHost::new().config("k", "outer").install();
        {
            let inner = FakeHost::new().config("k", "inner").install();
            assert_eq!(config::get("k").as_deref(), Some("inner"));
            log::info("to inner", &[]);
            assert_eq!(inner.logs().len(), 1);
        }
        assert_eq!(config::get("k").as_deref(), Some("outer"));
        assert!(outer.logs().is_empty());
    }

    #[test]
    fn uninstalled_after_drop() {
        drop(FakeHost::new().install());
        let result = std::panic::catch_unwind(|| config::get("k"));
        assert!(result.is_err());
    }

    #[test]
    #[should_panic(expected = "weir_sdk::testing::FakeHost::new().install()")]
    fn panics_with_a_hint_without_a_fake_host() {
        log::info("nobody listens", &[]);
    }

    #[test]
    fn hosts_are_per_thread() {
        let _host = FakeHost::new().config("k", "v").install();
        let other = std::thread::spawn(|| std::panic::catch_unwind(|| config::get("k")).is_err());
        assert!(other.join().unwrap());
    }
}
