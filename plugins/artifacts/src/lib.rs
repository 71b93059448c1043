//! The plugins of this workspace, built from source as WebAssembly components.
//!
//! The build script compiles `plugins/orders`, `plugins/errors`, `plugins/wrong-world`,
//! `plugins/contract-drift`, `plugins/contract-next` and the `plugins/hostile/*` crates for
//! `wasm32-wasip2` in release mode, and the reference plugin, `hostile-panic` and
//! `hostile-churn` (only there) for `wasm32-unknown-unknown`: components without WASI
//! imports. Nested cargo invocations build them in their own target directory,
//! `target/plugins`, and the components are copied into `OUT_DIR`. Nothing here is committed
//! as a binary.
//!
//! Each `&str` constant is the absolute path of one component; [`ORDERS_WASM`] embeds the
//! reference plugin so the host can serve it without a file.
//!
//! ```
//! let bytes = std::fs::read(weir_plugin_artifacts::HOSTILE_SPIN).unwrap();
//! // A component: `\0asm`, version 0x0d, layer 1.
//! assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00");
//! assert_eq!(&weir_plugin_artifacts::ORDERS_WASM[..4], b"\0asm");
//! ```

/// The reference order plugin (`plugins/orders`), embedded: built for
/// `wasm32-unknown-unknown`, it imports `weir:orders` and nothing of WASI.
pub const ORDERS_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orders.wasm"));

/// Path of the reference order plugin (`plugins/orders`), the component of [`ORDERS_WASM`].
pub const ORDERS: &str = concat!(env!("OUT_DIR"), "/orders.wasm");

/// Path of the same reference plugin built for `wasm32-wasip2`: the same logic with the WASI
/// imports Rust's standard library brings there (what the benchmarks compare with).
pub const ORDERS_WASIP2: &str = concat!(env!("OUT_DIR"), "/orders-wasip2.wasm");

/// Path of the test plugin returning each `order-error` case on demand (`plugins/errors`).
pub const ERRORS: &str = concat!(env!("OUT_DIR"), "/errors.wasm");

/// Path of a valid component of another world, `weir:other/greeter` (`plugins/wrong-world`).
pub const WRONG_WORLD: &str = concat!(env!("OUT_DIR"), "/wrong-world.wasm");

/// Path of a component built against a deliberately changed copy of `weir:orders@0.1.0`
/// (`order-line.quantity: u64`, `rejection.reason` renamed `reason-code`, an extra
/// `order-status` case `refunded`, `transition` with an extra `reason: string`)
/// (`plugins/contract-drift`).
pub const CONTRACT_DRIFT: &str = concat!(env!("OUT_DIR"), "/contract-drift.wasm");

/// Path of a component of the contract declared as a future version, `weir:orders@0.2.0`
/// (`plugins/contract-next`).
pub const CONTRACT_NEXT: &str = concat!(env!("OUT_DIR"), "/contract-next.wasm");

/// Path of the plugin whose `place-order` prints one stdout line and then spins forever.
pub const HOSTILE_SPIN: &str = concat!(env!("OUT_DIR"), "/hostile-spin.wasm");

/// Path of the plugin whose `place-order` reports what an earlier call left in its instance
/// (a static counter, a marker in a heap block) as an `internal` error.
pub const HOSTILE_SNOOP: &str = concat!(env!("OUT_DIR"), "/hostile-snoop.wasm");
/// Path of the plugin whose `place-order` allocates 1 MiB chunks forever.
pub const HOSTILE_ALLOC: &str = concat!(env!("OUT_DIR"), "/hostile-alloc.wasm");

/// Path of the plugin whose `place-order` recurses until the stack overflows.
pub const HOSTILE_STACK: &str = concat!(env!("OUT_DIR"), "/hostile-stack.wasm");

/// Path of the plugin whose `place-order` panics.
pub const HOSTILE_PANIC: &str = concat!(env!("OUT_DIR"), "/hostile-panic.wasm");

/// Path of the same panicking plugin built for `wasm32-unknown-unknown` (no WASI, so no
/// stderr: the SDK reports the panic through `weir:orders/log`).
pub const HOSTILE_PANIC_NO_WASI: &str = concat!(env!("OUT_DIR"), "/hostile-panic-no-wasi.wasm");

/// Path of the plugin whose `place-order` allocates and frees 1 MiB 256 times, then refuses
/// with `rejected` `CHURNED` (`wasm32-unknown-unknown`, the SDK's heap); with the metadata
/// key `panic` it panics, declaring no capability.
pub const HOSTILE_CHURN: &str = concat!(env!("OUT_DIR"), "/hostile-churn.wasm");

/// Path of the plugin whose `place-order` blocks in a one-hour WASI sleep.
pub const HOSTILE_SLEEP: &str = concat!(env!("OUT_DIR"), "/hostile-sleep.wasm");

/// Path of the plugin whose `place-order` logs ~1 KiB records in an endless loop.
pub const HOSTILE_LOGFLOOD: &str = concat!(env!("OUT_DIR"), "/hostile-logflood.wasm");

/// Path of `orders` 0.2.0: the reference logic plus a 1% loyalty discount
/// (`plugins/orders-next`), "version B" of the release tests.
pub const ORDERS_NEXT: &str = concat!(env!("OUT_DIR"), "/orders-next.wasm");

/// Path of the plugin whose `describe` panics (refused at admission).
pub const HOSTILE_DESCRIBE_PANIC: &str = concat!(env!("OUT_DIR"), "/hostile-describe-panic.wasm");

/// Path of the plugin whose `describe` never returns (refused at admission, in bounded time).
pub const HOSTILE_DESCRIBE_SPIN: &str = concat!(env!("OUT_DIR"), "/hostile-describe-spin.wasm");

/// Path of `orders` 0.9.0-trap, whose `place-order` traps (a broken canary).
pub const HOSTILE_ORDERS_TRAP: &str = concat!(env!("OUT_DIR"), "/hostile-orders-trap.wasm");

/// Path of the plugin whose answers break the host's contract as the request asks
/// (`metadata["lie"]`, or the customer id for transitions).
pub const HOSTILE_LIAR: &str = concat!(env!("OUT_DIR"), "/hostile-liar.wasm");

/// Path of `orders` 0.9.1-liar, whose totals are one cent off (a canary that breaks the
/// contract).
pub const HOSTILE_ORDERS_LIAR: &str = concat!(env!("OUT_DIR"), "/hostile-orders-liar.wasm");

/// Path of the plugin whose `place-order` floods the host as `metadata["flood"]` asks (huge
/// errors, aliased strings, N lines, stdout/stderr newlines, a long sku or log record, an
/// undeclared `config` call, clock and random readings; `metadata["size"]` = N), and prices
/// honestly without it. Declares `log` and `catalog` only.
pub const HOSTILE_FLOOD: &str = concat!(env!("OUT_DIR"), "/hostile-flood.wasm");

/// Path of the plugin whose `describe` returns a 50 MB name.
pub const HOSTILE_DESCRIBE_HUGE: &str = concat!(env!("OUT_DIR"), "/hostile-describe-huge.wasm");

/// Path of the plugin whose `describe` returns a version with terminal control characters and
/// a forged log line.
pub const HOSTILE_DESCRIBE_CTRL: &str = concat!(env!("OUT_DIR"), "/hostile-describe-ctrl.wasm");

/// Path of the plugin whose `describe` declares 4,000,000 capabilities.
pub const HOSTILE_DESCRIBE_CAPS: &str = concat!(env!("OUT_DIR"), "/hostile-describe-caps.wasm");

/// Path of the plugin whose `describe` declares `log` twice (`[log, catalog, log]`).
pub const HOSTILE_DESCRIBE_DUP: &str = concat!(env!("OUT_DIR"), "/hostile-describe-dup.wasm");

/// Path of the plugin whose `describe` returns a 10,000-character name full of control
/// characters.
pub const HOSTILE_DESCRIBE_LONG: &str = concat!(env!("OUT_DIR"), "/hostile-describe-long.wasm");

/// Path of the plugin that imports `wasi:sockets` (its `place-order` opens a TCP connection);
/// refused at admission.
pub const HOSTILE_SOCKETS: &str = concat!(env!("OUT_DIR"), "/hostile-sockets.wasm");

/// Path of `slow-orders`: the reference order logic after a hold of `hold_ms` (its plugin
/// configuration) in every `place-order`, to keep calls in flight for a known time.
pub const HOSTILE_SLOW: &str = concat!(env!("OUT_DIR"), "/hostile-slow.wasm");

/// Every component path with a short name, for tests that iterate over all of them.
pub const ALL: &[(&str, &str)] = &[
    ("orders", ORDERS),
    ("orders-wasip2", ORDERS_WASIP2),
    ("errors", ERRORS),
    ("wrong-world", WRONG_WORLD),
    ("contract-drift", CONTRACT_DRIFT),
    ("contract-next", CONTRACT_NEXT),
    ("hostile-spin", HOSTILE_SPIN),
    ("hostile-alloc", HOSTILE_ALLOC),
    ("hostile-snoop", HOSTILE_SNOOP),
    ("hostile-stack", HOSTILE_STACK),
    ("hostile-panic", HOSTILE_PANIC),
    ("hostile-panic-no-wasi", HOSTILE_PANIC_NO_WASI),
    ("hostile-churn", HOSTILE_CHURN),
    ("hostile-sleep", HOSTILE_SLEEP),
    ("hostile-logflood", HOSTILE_LOGFLOOD),
    ("orders-next", ORDERS_NEXT),
    ("hostile-describe-panic", HOSTILE_DESCRIBE_PANIC),
    ("hostile-describe-spin", HOSTILE_DESCRIBE_SPIN),
    ("hostile-orders-trap", HOSTILE_ORDERS_TRAP),
    ("hostile-liar", HOSTILE_LIAR),
    ("hostile-orders-liar", HOSTILE_ORDERS_LIAR),
    ("hostile-flood", HOSTILE_FLOOD),
    ("hostile-describe-huge", HOSTILE_DESCRIBE_HUGE),
    ("hostile-describe-ctrl", HOSTILE_DESCRIBE_CTRL),
    ("hostile-describe-caps", HOSTILE_DESCRIBE_CAPS),
    ("hostile-describe-dup", HOSTILE_DESCRIBE_DUP),
    ("hostile-describe-long", HOSTILE_DESCRIBE_LONG),
    ("hostile-sockets", HOSTILE_SOCKETS),
    ("hostile-slow", HOSTILE_SLOW),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_artifact_is_a_component() {
        for (name, path) in ALL {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert_eq!(&bytes[..8], b"\0asm\x0d\x00\x01\x00", "{name}");
        }
    }

    #[test]
    fn embedded_orders_matches_the_file() {
        assert_eq!(ORDERS_WASM, std::fs::read(ORDERS).unwrap().as_slice());
    }
}
