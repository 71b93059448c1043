//! The priced order: what a decider answers to an order request.

use serde::{Deserialize, Serialize};

use super::money::Money;

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// Product sku.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
    /// `unit_price * quantity`.
    pub line_total: Money,
}

/// A decider's pricing of an order request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedOrder {
    /// Priced lines.
    pub lines: Vec<PricedLine>,
    /// Sum of line totals.
    pub subtotal: Money,
    /// Discount applied.
    pub discount: Money,
    /// Tax charged.
    pub tax: Money,
    /// Amount due.
    pub total: Money,
}
