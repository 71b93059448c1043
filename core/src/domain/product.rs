//! Catalog products and their validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::contract::MAX_AMOUNT;
use super::error::Violation;
use super::money::is_currency_code;

/// A catalog entry as stored.
///
/// Read from a store, `stock` is what can still be sold ([`super::stock::available`]) and
/// `reserved` what placed and paid orders hold. Written to a store, `stock` is the count on
/// hand and `reserved` is ignored: reservations are only ever changed by orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stock keeping unit, the product's key.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Price of one unit in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units available (read) or on hand (written); see the type's doc.
    pub stock: i64,
    /// Units held by placed and paid orders.
    #[serde(default)]
    pub reserved: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A product as the catalog read path hands it to deciders (also its JSON form in a shared
/// cache).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProduct {
    /// Stock keeping unit, the product's key.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Price in minor units of `currency`.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units available (negative values are reported as zero).
    pub stock: i64,
}

impl From<Product> for CatalogProduct {
    fn from(p: Product) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            unit_price: p.unit_price,
            currency: p.currency,
            stock: p.stock,
        }
    }
}

/// Longest sku, in bytes.
pub const MAX_SKU_LEN: usize = 64;

/// Whether `sku` is a valid product key: 1-64 characters of `A-Z a-z 0-9 - _`.
pub fn valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= MAX_SKU_LEN
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The fields of a product change, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductChange {
    /// Display name, 1-200 characters.
    pub name: String,
    /// Price of one unit in minor units, 0 or more.
    pub unit_price: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units on hand, 0 or more (reserved units included: see [`super::stock`]).
    pub stock: i64,
}

impl ProductChange {
    /// Every problem with this change, in field order; empty when it is valid.
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            v.push(Violation::new(
                "name",
                "INVALID_LENGTH",
                "must be 1-200 characters",
            ));
        }
        // At most the contract's largest amount (2^53 - 1, what every JSON reader holds
        // exactly): a price can always be ordered one at a time, a count always read back.
        if !(0..=MAX_AMOUNT).contains(&self.unit_price) {
            v.push(Violation::new(
                "unit_price",
                "OUT_OF_RANGE",
                format!("must be 0 to {MAX_AMOUNT}"),
            ));
        }
        if !is_currency_code(&self.currency) {
            v.push(Violation::new(
                "currency",
                "INVALID_FORMAT",
                "must be an ISO 4217 code like EUR",
            ));
        }
        if !(0..=MAX_AMOUNT).contains(&self.stock) {
            v.push(Violation::new(
                "stock",
                "OUT_OF_RANGE",
                format!("must be 0 to {MAX_AMOUNT}"),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_and_product_changes_are_validated() {
        assert!(valid_sku("KB-001") && valid_sku("a_b"));
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            assert!(!valid_sku(bad), "{bad}");
        }
        let ok = ProductChange {
            name: "Keyboard".into(),
            unit_price: 0,
            currency: "EUR".into(),
            stock: 0,
        };
        assert!(ok.violations().is_empty());
        let bad = ProductChange {
            name: " ".into(),
            unit_price: -1,
            currency: "eur".into(),
            stock: -1,
        };
        let fields: Vec<_> = bad.violations().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["name", "unit_price", "currency", "stock"]);
        let most = ProductChange {
            unit_price: MAX_AMOUNT,
            stock: MAX_AMOUNT,
            ..ok.clone()
        };
        assert!(most.violations().is_empty());
        let beyond = ProductChange {
            unit_price: MAX_AMOUNT + 1,
            stock: MAX_AMOUNT + 1,
            ..ok
        };
        let fields: Vec<_> = beyond.violations().into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["unit_price", "stock"]);
    }
}
