//! Events that move an order, and the status graph they may follow.
//!
//! The graph is the host's, not a plugin's: a decider may refuse a transition (a `conflict`)
//! or pick one of the targets [`allowed_targets`] lists for the order's status and the event,
//! never invent another one.
//!
//! | from | event | allowed targets |
//! |---|---|---|
//! | `placed` | `payment-captured` | `paid` |
//! | `paid` | `shipped` | `shipped` |
//! | `placed`, `paid` | `cancel-requested` | `cancelled` |
//! | `cancelled` | `cancel-requested` | `cancelled` (idempotent: no change) |
//!
//! Every other pair allows nothing: a decider must refuse it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::order::OrderStatus;

/// Something that happened to an order and may move it to another status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderEvent {
    /// The payment was captured (`payment.captured` from the payments service).
    PaymentCaptured,
    /// The order was handed to the carrier (`shipment.dispatched`).
    Shipped,
    /// The customer asked to cancel (`POST /v1/orders/{id}/cancel`).
    CancelRequested,
}

impl OrderEvent {
    /// Every event.
    pub const ALL: [OrderEvent; 3] = [
        OrderEvent::PaymentCaptured,
        OrderEvent::Shipped,
        OrderEvent::CancelRequested,
    ];

    /// The WIT name: `payment-captured`, `shipped`, `cancel-requested`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderEvent::PaymentCaptured => "payment-captured",
            OrderEvent::Shipped => "shipped",
            OrderEvent::CancelRequested => "cancel-requested",
        }
    }
}

impl fmt::Display for OrderEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The statuses an order in `from` may move to on `event` (see the module table). Empty when
/// the event does not apply: the only correct decision then is a refusal.
pub fn allowed_targets(from: OrderStatus, event: OrderEvent) -> &'static [OrderStatus] {
    use OrderEvent as E;
    use OrderStatus as S;
    match (from, event) {
        (S::Placed, E::PaymentCaptured) => &[S::Paid],
        (S::Paid, E::Shipped) => &[S::Shipped],
        (S::Placed | S::Paid | S::Cancelled, E::CancelRequested) => &[S::Cancelled],
        _ => &[],
    }
}

/// Whether moving from `from` to `to` on `event` follows the graph.
pub fn is_allowed(from: OrderStatus, event: OrderEvent, to: OrderStatus) -> bool {
    allowed_targets(from, event).contains(&to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_is_the_documented_table() {
        use OrderEvent as E;
        use OrderStatus as S;
        let mut allowed = Vec::new();
        for from in S::ALL {
            for event in E::ALL {
                for to in S::ALL {
                    if is_allowed(from, event, to) {
                        allowed.push((from, event, to));
                    }
                }
            }
        }
        assert_eq!(
            allowed,
            vec![
                (S::Placed, E::PaymentCaptured, S::Paid),
                (S::Placed, E::CancelRequested, S::Cancelled),
                (S::Paid, E::Shipped, S::Shipped),
                (S::Paid, E::CancelRequested, S::Cancelled),
                (S::Cancelled, E::CancelRequested, S::Cancelled),
            ]
        );
        assert!(allowed_targets(S::Shipped, E::CancelRequested).is_empty());
    }
}
