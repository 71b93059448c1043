//! The host's contract on a plugin's decisions, checkable natively in unit tests.
//!
//! Whatever a plugin returns, the host checks it before storing anything, and refuses a
//! decision that breaks a rule with `PLUGIN_CONTRACT_VIOLATION` (the client gets a 500, the
//! version's breaker and canary judgement count it like a crash). A priced order must meet
//! every rule below, checked with checked arithmetic:
//!
//! | rule | what must hold |
//! |---|---|
//! | `lines` | the priced lines are exactly the requested lines: same count (at least one), same sku and quantity at each position |
//! | `currency` | every amount is in the request's currency |
//! | `range` | every amount is between 0 and [`MAX_AMOUNT`](crate::MAX_AMOUNT) |
//! | `line_total` | `line_total = unit_price x quantity` on every line |
//! | `subtotal` | `subtotal = sum(line_total)` |
//! | `discount` | `discount <= subtotal` |
//! | `total` | `total = subtotal - discount + tax` |
//!
//! A transition must pick a status the graph allows for the order's status and the event
//! (`status_graph`): `placed` -> `paid` on `payment-captured`, `paid` -> `shipped` on
//! `shipped`, `placed`/`paid`/`cancelled` -> `cancelled` on `cancel-requested`. Anything else
//! must be refused (an [`OrderError::Conflict`](crate::OrderError::Conflict)).
//!
//! An `order-error` must be small and well-formed (`error_shape`), because the host shows it
//! to the client, logs it and stores it with the idempotency key: at most
//! [`MAX_VIOLATIONS`] violations, a field path of 1-[`MAX_FIELD`] bytes without control
//! characters, codes and rejection reasons of 1-[`MAX_CODE`] characters of `A-Z`, `0-9`, `_`
//! starting with a letter, and every message at most [`MAX_MESSAGE`] bytes
//! ([`check_refusal`]).
//!
//! Beyond the answer, the host stops a call (and counts it against the version) when the
//! plugin calls an import it did not declare in `describe` (`CAPABILITY_DENIED`), looks up a
//! sku or configuration key longer than [`MAX_SKU`] / [`MAX_CONFIG_KEY`] bytes, or hands the
//! host more than `runtime.budget.copy_bytes` (1 MiB by default) in one value.
//!
//! These functions run the host's own checks (the `weir-core` crate), so a unit test that
//! passes them passes the host:
//!
//! ```
//! use weir_sdk::contract::{self, ContractRule};
//! use weir_sdk::{Money, OrderEvent, OrderLine, OrderRequest, OrderStatus, PricedLine, PricedOrder};
//!
//! let request = OrderRequest {
//!     customer_id: "cus_1".into(),
//!     currency: "EUR".into(),
//!     lines: vec![OrderLine { sku: "apple".into(), quantity: 2 }],
//!     metadata: vec![],
//! };
//! let eur = |amount| Money::new(amount, "EUR");
//! let mut priced = PricedOrder {
//!     lines: vec![PricedLine {
//!         sku: "apple".into(),
//!         quantity: 2,
//!         unit_price: eur(150),
//!         line_total: eur(300),
//!     }],
//!     subtotal: eur(300),
//!     discount: eur(0),
//!     tax: eur(57),
//!     total: eur(357),
//! };
//! assert_eq!(contract::check_priced(&request, &priced), Ok(()));
//!
//! priced.total = eur(358);
//! let violation = contract::check_priced(&request, &priced).unwrap_err();
//! assert_eq!(violation.rule, ContractRule::Total);
//!
//! assert!(contract::check_transition(OrderStatus::Placed, OrderEvent::CancelRequested, OrderStatus::Paid).is_err());
//!
//! use weir_sdk::OrderError;
//! assert_eq!(contract::check_refusal(&OrderError::rejected("OUT_OF_STOCK", "none left")), Ok(()));
//! let shape = contract::check_refusal(&OrderError::rejected("out of stock", "none left"));
//! assert_eq!(shape.unwrap_err().rule, ContractRule::ErrorShape);
//! ```

use weir_core::domain as core;

pub use weir_core::domain::contract::{
    ContractRule, ContractViolation, MAX_CODE, MAX_CONFIG_KEY, MAX_FIELD, MAX_MESSAGE, MAX_SKU,
    MAX_VIOLATIONS,
};

use crate::{Money, OrderError, OrderEvent, OrderRequest, OrderStatus, PricedOrder};

fn money(m: &Money) -> core::Money {
    core::Money::new(m.amount, m.currency.clone())
}

fn status(s: OrderStatus) -> core::OrderStatus {
    match s {
        OrderStatus::Placed => core::OrderStatus::Placed,
        OrderStatus::Paid => core::OrderStatus::Paid,
        OrderStatus::Shipped => core::OrderStatus::Shipped,
        OrderStatus::Cancelled => core::OrderStatus::Cancelled,
    }
}

fn event(e: OrderEvent) -> core::OrderEvent {
    match e {
        OrderEvent::PaymentCaptured => core::OrderEvent::PaymentCaptured,
        OrderEvent::Shipped => core::OrderEvent::Shipped,
        OrderEvent::CancelRequested => core::OrderEvent::CancelRequested,
    }
}

/// Whether `priced` is a pricing of `request` the host accepts (the first broken rule).
pub fn check_priced(request: &OrderRequest, priced: &PricedOrder) -> Result<(), ContractViolation> {
    let request = core::OrderRequest {
        customer_id: request.customer_id.clone(),
        currency: request.currency.clone(),
        lines: request
            .lines
            .iter()
            .map(|l| core::LineRequest {
                sku: l.sku.clone(),
                quantity: l.quantity,
            })
            .collect(),
        metadata: request.metadata.iter().cloned().collect(),
    };
    let priced = core::PricedOrder {
        lines: priced
            .lines
            .iter()
            .map(|l| core::PricedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(&l.unit_price),
                line_total: money(&l.line_total),
            })
            .collect(),
        subtotal: money(&priced.subtotal),
        discount: money(&priced.discount),
        tax: money(&priced.tax),
        total: money(&priced.total),
    };
    core::contract::check_priced(&request, &priced)
}

/// Whether the host accepts `refusal` as it is (`error_shape`: see the module doc).
///
/// ```
/// use weir_sdk::{OrderError, Violation, contract};
/// assert!(contract::check_refusal(&OrderError::conflict("already shipped")).is_ok());
/// let unbounded = OrderError::invalid(vec![Violation::new("lines", "REQUIRED", "x".repeat(10_000))]);
/// assert!(contract::check_refusal(&unbounded).is_err(), "messages are bounded");
/// ```
pub fn check_refusal(refusal: &OrderError) -> Result<(), ContractViolation> {
    let converted = match refusal {
        OrderError::Invalid(violations) => core::OrderError::Invalid(
            violations
                .iter()
                .map(|v| core::Violation::new(v.field.clone(), v.code.clone(), v.message.clone()))
                .collect(),
        ),
        OrderError::NotFound(m) => core::OrderError::NotFound(m.clone()),
        OrderError::Conflict(m) => core::OrderError::Conflict(m.clone()),
        OrderError::Rejected(r) => core::OrderError::Rejected(core::Rejection {
            reason: r.reason.clone(),
            message: r.message.clone(),
        }),
        OrderError::Unavailable(m) => core::OrderError::Unavailable(m.clone()),
        OrderError::Internal(m) => core::OrderError::Internal(m.clone()),
    };
    core::contract::check_refusal(&converted)
}

/// Whether moving an order in `from` to `to` on `event` follows the host's status graph.
///
/// ```
/// use weir_sdk::{OrderEvent as E, OrderStatus as S, contract};
/// assert!(contract::check_transition(S::Placed, E::PaymentCaptured, S::Paid).is_ok());
/// assert!(contract::check_transition(S::Cancelled, E::CancelRequested, S::Cancelled).is_ok());
/// // Shipped orders cannot be cancelled: a plugin must refuse with a conflict instead.
/// assert!(contract::check_transition(S::Shipped, E::CancelRequested, S::Cancelled).is_err());
/// ```
pub fn check_transition(
    from: OrderStatus,
    on: OrderEvent,
    to: OrderStatus,
) -> Result<(), ContractViolation> {
    core::contract::check_transition(status(from), event(on), status(to))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sdk_bound_is_the_hosts() {
        assert_eq!(crate::MAX_AMOUNT, weir_core::domain::contract::MAX_AMOUNT);
    }
}
