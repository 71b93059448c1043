//! Stock reservations: placing an order holds its quantities, and the order's end settles
//! the hold exactly once.
//!
//! A product has units **on hand** (what an operator counts and sets with `PUT`) and units
//! **reserved** by orders that are placed or paid. What can still be sold is
//! [`available`]` = on hand - reserved` (never below zero): that is the `stock` clients and
//! deciders see. Keeping the two apart is what lets an operator set the count on hand at any
//! time without losing a reservation made a moment earlier.
//!
//! | when | on hand | reserved |
//! |---|---|---|
//! | an order is placed (same transaction as the order) | - | `+ quantity`, only if `available >= quantity` |
//! | it is cancelled ([`Settlement::Release`]) | - | `- quantity` |
//! | it ships ([`Settlement::Consume`]) | `- quantity` | `- quantity` |
//! | an operator sets the count | `= count` | - |
//!
//! Each order settles at most once: the store clears the order's reservation flag in the
//! same transaction as the settlement, so a retried cancel or a redelivered message finds
//! nothing left to release.

use std::collections::BTreeMap;

use super::order::{OrderLine, OrderStatus};

/// Units that can still be reserved: `on_hand - reserved`, never below zero (an operator may
/// count fewer units than are reserved).
pub fn available(on_hand: i64, reserved: i64) -> i64 {
    on_hand.saturating_sub(reserved).max(0)
}

/// What an order's move to a status does to its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The units go back to what can be sold (cancelled).
    Release,
    /// The units leave the warehouse: off the reservation and off the count on hand (shipped).
    Consume,
}

/// The settlement a move to `to` makes, if any. A reservation is held while an order is
/// placed or paid.
pub fn settlement(to: OrderStatus) -> Option<Settlement> {
    match to {
        OrderStatus::Cancelled => Some(Settlement::Release),
        OrderStatus::Shipped => Some(Settlement::Consume),
        OrderStatus::Placed | OrderStatus::Paid => None,
    }
}

/// The quantity per sku an order holds, in sku order: stores reserve and settle in this order
/// so that concurrent transactions lock product rows in one order (no deadlocks).
pub fn demand(lines: &[OrderLine]) -> BTreeMap<&str, i64> {
    let mut demand = BTreeMap::new();
    for line in lines {
        *demand.entry(line.sku.as_str()).or_insert(0_i64) += i64::from(line.quantity);
    }
    demand
}

/// Why a reservation could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    /// No product with this sku.
    UnknownSku(String),
    /// Fewer units available than the order needs.
    Insufficient {
        /// The product.
        sku: String,
        /// Units the order needs.
        wanted: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price: 1,
            line_total: i64::from(quantity),
        }
    }

    #[test]
    fn demand_adds_up_repeated_skus_in_sku_order() {
        let lines = [line("B", 2), line("A", 1), line("B", 3)];
        let d: Vec<_> = demand(&lines).into_iter().collect();
        assert_eq!(d, [("A", 1), ("B", 5)]);
    }

    #[test]
    fn available_is_never_negative() {
        assert_eq!(available(10, 3), 7);
        assert_eq!(available(2, 5), 0);
        assert_eq!(available(i64::MIN, i64::MAX), 0);
    }

    #[test]
    fn only_the_end_of_an_order_settles_it() {
        assert_eq!(
            settlement(OrderStatus::Cancelled),
            Some(Settlement::Release)
        );
        assert_eq!(settlement(OrderStatus::Shipped), Some(Settlement::Consume));
        assert_eq!(settlement(OrderStatus::Paid), None);
        assert_eq!(settlement(OrderStatus::Placed), None);
    }
}
