//! Request validation: every problem becomes one [`Violation`], all reported at once.

use std::collections::BTreeMap;

use weir_sdk::{OrderRequest, Violation};

use crate::settings::Settings;

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Allowed quantity per line.
pub const QUANTITY: std::ops::RangeInclusive<u32> = 1..=1000;
/// Longest sku, in characters.
pub const MAX_SKU_LEN: usize = 64;
/// Prefix of every customer id.
pub const CUSTOMER_PREFIX: &str = "cus_";
/// Allowed length of the customer id after the prefix.
pub const CUSTOMER_SUFFIX_LEN: std::ops::RangeInclusive<usize> = 3..=40;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 20;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 512;

/// Every violation of `request`; empty when it is valid.
pub fn validate(request: &OrderRequest, settings: &Settings) -> Vec<Violation> {
    let mut violations = Vec::new();

    if !is_customer_id(&request.customer_id) {
        violations.push(Violation::new(
            "customer_id",
            "INVALID_FORMAT",
            format!(
                "must be \"{CUSTOMER_PREFIX}\" followed by {}..={} characters of A-Z, a-z, 0-9, _ or -",
                CUSTOMER_SUFFIX_LEN.start(),
                CUSTOMER_SUFFIX_LEN.end()
            ),
        ));
    }

    if !settings.currencies.contains(&request.currency) {
        violations.push(Violation::new(
            "currency",
            "UNSUPPORTED",
            format!(
                "currency {:?} is not supported; supported: {}",
                request.currency,
                settings.currencies.join(", ")
            ),
        ));
    }

    if request.lines.is_empty() {
        violations.push(Violation::new(
            "lines",
            "REQUIRED",
            "an order needs at least one line",
        ));
    } else if request.lines.len() > MAX_LINES {
        // Per-line checks are skipped: the output must stay bounded.
        violations.push(Violation::new(
            "lines",
            "TOO_MANY",
            format!(
                "at most {MAX_LINES} lines are allowed, got {}",
                request.lines.len()
            ),
        ));
    } else {
        // Not a `HashMap`: in the `wasm32-wasip2` build its random seed is a WASI call, and
        // the first WASI call of an invocation makes the host build a WASI context (about
        // 1 us of a 17 us call; BENCHMARKS.md). With at most MAX_LINES keys an ordered map
        // costs nothing more.
        let mut first_index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, line) in request.lines.iter().enumerate() {
            if !is_sku(&line.sku) {
                violations.push(Violation::new(
                    format!("lines[{i}].sku"),
                    "INVALID_FORMAT",
                    format!("must be 1..={MAX_SKU_LEN} characters of A-Z, a-z, 0-9, _ or -"),
                ));
            } else if let Some(first) = first_index.get(line.sku.as_str()) {
                violations.push(Violation::new(
                    format!("lines[{i}].sku"),
                    "DUPLICATE",
                    format!("sku {} already appears in lines[{first}]", line.sku),
                ));
            } else {
                first_index.insert(&line.sku, i);
            }
            if !QUANTITY.contains(&line.quantity) {
                violations.push(Violation::new(
                    format!("lines[{i}].quantity"),
                    "OUT_OF_RANGE",
                    format!(
                        "must be between {} and {}, got {}",
                        QUANTITY.start(),
                        QUANTITY.end(),
                        line.quantity
                    ),
                ));
            }
        }
    }

    if request.metadata.len() > MAX_METADATA_ENTRIES {
        violations.push(Violation::new(
            "metadata",
            "TOO_LARGE",
            format!(
                "at most {MAX_METADATA_ENTRIES} entries are allowed, got {}",
                request.metadata.len()
            ),
        ));
    } else {
        for (key, value) in &request.metadata {
            if key.is_empty() {
                violations.push(Violation::new(
                    "metadata",
                    "INVALID_FORMAT",
                    "keys must not be empty".to_owned(),
                ));
            }
            if key.len() > MAX_METADATA_KEY_BYTES {
                violations.push(Violation::new(
                    "metadata",
                    "TOO_LARGE",
                    format!(
                        "key {:?}... is longer than {MAX_METADATA_KEY_BYTES} bytes",
                        truncate(key, 16)
                    ),
                ));
            }
            if value.len() > MAX_METADATA_VALUE_BYTES {
                violations.push(Violation::new(
                    "metadata",
                    "TOO_LARGE",
                    format!(
                        "value of key {:?} is longer than {MAX_METADATA_VALUE_BYTES} bytes",
                        truncate(key, MAX_METADATA_KEY_BYTES)
                    ),
                ));
            }
        }
    }

    violations
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_sku(sku: &str) -> bool {
    !sku.is_empty() && sku.len() <= MAX_SKU_LEN && sku.chars().all(is_token_char)
}

fn is_customer_id(id: &str) -> bool {
    id.strip_prefix(CUSTOMER_PREFIX).is_some_and(|rest| {
        CUSTOMER_SUFFIX_LEN.contains(&rest.len()) && rest.chars().all(is_token_char)
    })
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
