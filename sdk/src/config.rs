//! Operator-supplied configuration of this plugin installation (WIT interface
//! `weir:orders/config`).

/// The value configured for `key`, if any.
pub fn get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::__bindings::weir::orders::config::get(key)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_host("weir_sdk::config::get", |host| host.config_get(key))
    }
}
