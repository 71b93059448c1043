//! Hostile test plugin `hostile-flood`: `place-order` floods the host with oversized answers,
//! output and capability calls, as the request's metadata asks, to test the host's bounds on
//! what it lifts from a plugin and on what a plugin may send it.
//!
//! It declares the capabilities `log` and `catalog` only (deliberately not `config`).
//!
//! `place-order` reads two metadata keys: `metadata["flood"]`, the mode, and
//! `metadata["size"]`, a decimal number N (default 1,000,000). Without a `flood` key it prices
//! honestly (100 minor units per unit, as `hostile-liar` does when not told to lie), so it also
//! works as an orders plugin. The modes:
//! - `violations`: `invalid` with N violations (`lines[0].sku`, `BAD`, `m`);
//! - `violation-long`: `invalid` with one violation whose message is N bytes of `v`;
//! - `not-found`, `conflict`, `unavailable`, `internal`: that case, with a message of N bytes
//!   (`n`, `c`, `u`, `i`);
//! - `reason`: `rejected` with the reason `"not a code\u{1b}[31m"` (message `bad reason`);
//! - `alias`: `invalid` with N violations whose messages all alias one 1 MiB buffer, so the
//!   host would copy N MiB out of 1 MiB of guest memory (aliasing amplification);
//! - `lines`: a priced order of N lines (`KB-001` x 1 at 100 each, the request's currency);
//! - `newlines`: prints N `\n` bytes to stdout (one `print!`, which traps if the write fails),
//!   then `rejected` `NEWLINES`;
//! - `stderr-newlines`: the same on stderr (`eprint!`), then `rejected` `NEWLINES`;
//! - `sku`: one catalog lookup of a sku of N bytes of `S`, then `rejected` `SKU_CALLED` with
//!   the (short) outcome as message;
//! - `config`: reads config key `discount` without having declared `config`, then `rejected`
//!   `CONFIG_CALLED` (if the host let it through);
//! - `log-long`: one `info` record whose message is N bytes of `l`, then `rejected` `LOGGED`;
//! - `clock`: `rejected` `CLOCK` with message `"{monotonic ns between two Instant::now()}
//!   {wall-clock ns since the Unix epoch}"` (negative if the clock is before the epoch);
//! - `random`: `rejected` `RANDOM` with message the 32 hex digits of two hashes of `0u64`
//!   through two fresh `RandomState`s (std's randomly seeded hash keys).
//!
//! Any other mode, or a `size` that is not a decimal number, answers `invalid` with one
//! violation on `metadata.flood` / `metadata.size`. `describe` and `transition` behave
//! (`transition` follows the status graph). Used by the host's sandbox tests; never deploy it.

// `alias` builds Strings that share one heap buffer with `String::from_raw_parts`, which is
// the attack itself; there is no safe way to express it.
#![allow(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::mem::ManuallyDrop;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use weir_sdk::{
    Capability, Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin,
    PluginInfo, PricedLine, PricedOrder, Violation,
};

#[path = "../../liar/src/honest.rs"]
mod honest;
#[allow(dead_code)] // only `transition` is used here
#[path = "../../../orders/src/lifecycle.rs"]
mod lifecycle;

/// N when the request has no `size`.
const DEFAULT_SIZE: usize = 1_000_000;

/// Size of the buffer every message aliases in mode `alias`.
const ALIAS_BYTES: usize = 1 << 20;

/// The hostile plugin.
pub struct Hostile;

fn meta<'a>(request: &'a OrderRequest, key: &str) -> Option<&'a str> {
    request
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn invalid(field: &str, code: &str, message: impl Into<String>) -> OrderError {
    OrderError::invalid(vec![Violation::new(field, code, message)])
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn short(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// N violations whose messages all own the same 1 MiB buffer.
///
/// Never freed by Rust: the returned Vec is moved into the canonical-ABI lowering of the
/// export's result, which `mem::forget`s every string (ownership passes to the post-return
/// function). Post-return would free the one buffer N times, but it is never reached: the
/// host is expected to refuse lifting N x 1 MiB of strings and trap the call first.
fn aliased_violations(n: usize) -> Vec<Violation> {
    // `repeat` allocates exactly `len` bytes; the lowering's `into_boxed_slice` then keeps the
    // buffer in place (a capacity above the length would make it reallocate, i.e. free, the
    // shared buffer on the first string).
    let mut buffer = ManuallyDrop::new("a".repeat(ALIAS_BYTES));
    buffer.shrink_to_fit();
    let (ptr, len, cap) = (buffer.as_mut_ptr(), buffer.len(), buffer.capacity());
    (0..n)
        .map(|_| {
            // SAFETY: deliberately not sound. `ptr`/`len`/`cap` come from a live String that is
            // never dropped (ManuallyDrop), and valid UTF-8; the N Strings share it, which is
            // the attack. None of them is dropped or mutated by this code (see above).
            let message = unsafe { String::from_raw_parts(ptr, len, cap) };
            Violation {
                field: "lines[0].sku".into(),
                code: "BAD".into(),
                message,
            }
        })
        .collect()
}

/// N lines of `KB-001` x 1 at 100 minor units, with consistent totals.
fn many_lines(request: &OrderRequest, n: usize) -> PricedOrder {
    let money = |amount| Money::new(amount, request.currency.clone());
    let lines: Vec<PricedLine> = (0..n)
        .map(|_| PricedLine {
            sku: "KB-001".into(),
            quantity: 1,
            unit_price: money(100),
            line_total: money(100),
        })
        .collect();
    let subtotal = 100 * i64::try_from(n).unwrap_or(i64::MAX / 100);
    PricedOrder {
        lines,
        subtotal: money(subtotal),
        discount: money(0),
        tax: money(0),
        total: money(subtotal),
    }
}

fn clock() -> String {
    let a = Instant::now();
    let b = Instant::now();
    let mono_elapsed_ns = b.duration_since(a).as_nanos();
    let wall_ns: i128 = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    format!("{mono_elapsed_ns} {wall_ns}")
}

fn random() -> String {
    let hashes = [RandomState::new(), RandomState::new()].map(|s| s.hash_one(0u64));
    hashes.iter().map(|h| format!("{h:016x}")).collect()
}

fn flood(request: &OrderRequest, mode: &str, n: usize) -> Result<PricedOrder, OrderError> {
    match mode {
        "violations" => Err(OrderError::invalid(
            (0..n)
                .map(|_| Violation::new("lines[0].sku", "BAD", "m"))
                .collect(),
        )),
        "violation-long" => Err(invalid("lines[0].sku", "BAD", "v".repeat(n))),
        "not-found" => Err(OrderError::not_found("n".repeat(n))),
        "conflict" => Err(OrderError::conflict("c".repeat(n))),
        "unavailable" => Err(OrderError::unavailable("u".repeat(n))),
        "internal" => Err(OrderError::internal("i".repeat(n))),
        "reason" => Err(OrderError::rejected("not a code\u{1b}[31m", "bad reason")),
        "alias" => Err(OrderError::invalid(aliased_violations(n))),
        "lines" => Ok(many_lines(request, n)),
        "newlines" => {
            print!("{}", "\n".repeat(n));
            Err(OrderError::rejected("NEWLINES", "printed"))
        }
        "stderr-newlines" => {
            eprint!("{}", "\n".repeat(n));
            Err(OrderError::rejected("NEWLINES", "printed"))
        }
        "sku" => {
            let outcome = match weir_sdk::catalog::get(&"S".repeat(n)) {
                Ok(Some(_)) => "found".to_owned(),
                Ok(None) => "none".to_owned(),
                Err(e) => format!("error: {e:?}"),
            };
            Err(OrderError::rejected("SKU_CALLED", short(&outcome, 200)))
        }
        "config" => {
            let _ = weir_sdk::config::get("discount");
            Err(OrderError::rejected("CONFIG_CALLED", "x"))
        }
        "log-long" => {
            weir_sdk::log::info(&"l".repeat(n), &[]);
            Err(OrderError::rejected("LOGGED", "x"))
        }
        "clock" => Err(OrderError::rejected("CLOCK", clock())),
        "random" => Err(OrderError::rejected("RANDOM", random())),
        other => Err(invalid(
            "metadata.flood",
            "UNKNOWN_MODE",
            format!("unknown flood mode {:?}", short(other, 64)),
        )),
    }
}

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile-flood",
            env!("CARGO_PKG_VERSION"),
            vec![Capability::Log, Capability::Catalog],
        )
    }

    fn place_order(request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let Some(mode) = meta(&request, "flood") else {
            return Ok(honest::price(&request));
        };
        let n = match meta(&request, "size") {
            None => DEFAULT_SIZE,
            Some(size) => size.parse().map_err(|_| {
                invalid(
                    "metadata.size",
                    "NOT_A_NUMBER",
                    "size must be a decimal number",
                )
            })?,
        };
        flood(&request, mode, n)
    }

    fn transition(order: OrderSnapshot, event: OrderEvent) -> Result<OrderStatus, OrderError> {
        lifecycle::transition(order.status, event)
    }
}

weir_sdk::export_plugin!(Hostile);
