//! The plugin configuration, read through the `config` capability.

use std::str::FromStr;

use weir_sdk::{OrderError, config};

/// Currencies accepted when `currencies` is not configured.
pub const DEFAULT_CURRENCIES: &str = "USD,EUR,GBP";

/// One basis point is 1/10000.
pub const BPS_DENOMINATOR: i64 = 10_000;

/// Parsed configuration of one `place-order` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Accepted ISO 4217 codes (`currencies`).
    pub currencies: Vec<String>,
    /// Discount in basis points (`discount.percent_bps`), 0..=10000.
    pub discount_bps: i64,
    /// Subtotal in minor units from which the discount applies (`discount.min_subtotal`).
    pub discount_min_subtotal: i64,
    /// Tax in basis points on subtotal minus discount (`tax.rate_bps`).
    pub tax_bps: i64,
}

impl Settings {
    /// Read every key; a value that does not parse is an `internal` error naming the key.
    pub fn load() -> Result<Self, OrderError> {
        let currencies = config::get("currencies")
            .unwrap_or_else(|| DEFAULT_CURRENCIES.to_owned())
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let discount_bps: u32 = parse("discount.percent_bps", 0)?;
        if i64::from(discount_bps) > BPS_DENOMINATOR {
            return Err(OrderError::internal(format!(
                "config key discount.percent_bps must be at most {BPS_DENOMINATOR}, got {discount_bps}"
            )));
        }
        let discount_min_subtotal: u64 = parse("discount.min_subtotal", 0)?;
        let tax_bps: u32 = parse("tax.rate_bps", 0)?;
        Ok(Self {
            currencies,
            discount_bps: i64::from(discount_bps),
            discount_min_subtotal: i64::try_from(discount_min_subtotal).unwrap_or(i64::MAX),
            tax_bps: i64::from(tax_bps),
        })
    }
}

fn parse<T: FromStr>(key: &str, default: T) -> Result<T, OrderError> {
    match config::get(key) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| {
            OrderError::internal(format!(
                "config key {key} has an invalid value {raw:?}: expected a non-negative integer"
            ))
        }),
    }
}
