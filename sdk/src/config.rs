//! Operator-supplied configuration of this plugin installation (WIT interface
//! `weir:orders/config`).

/// The value configured for `key`, if any (the operator's `[plugins.config.<name>]`).
///
/// ```
/// let _host = weir_sdk::testing::FakeHost::new().config("tax.rate_bps", "1900").install();
/// let tax_bps: u32 = weir_sdk::config::get("tax.rate_bps")
///     .and_then(|v| v.parse().ok())
///     .unwrap_or(0);
/// assert_eq!(tax_bps, 1900);
/// assert_eq!(weir_sdk::config::get("discount.percent_bps"), None);
/// ```
pub fn get(key: &str) -> Option<String> {
    #[cfg(all(target_arch = "wasm32", not(feature = "fake-host")))]
    {
        crate::__bindings::weir::orders::config::get(key)
    }
    #[cfg(any(not(target_arch = "wasm32"), feature = "fake-host"))]
    {
        crate::testing::with_host("weir_sdk::config::get", |host| host.config_get(key))
    }
}
