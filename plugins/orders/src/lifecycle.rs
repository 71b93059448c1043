//! The order lifecycle: which event moves an order from which status to which.

use weir_sdk::{OrderError, OrderEvent, OrderStatus};

/// The status an order in `status` moves to on `event`, or `conflict` when the event does
/// not apply. Cancelling a cancelled order is idempotent.
pub fn transition(status: OrderStatus, event: OrderEvent) -> Result<OrderStatus, OrderError> {
    use OrderEvent as E;
    use OrderStatus as S;
    match (status, event) {
        (S::Placed, E::PaymentCaptured) => Ok(S::Paid),
        (S::Paid, E::Shipped) => Ok(S::Shipped),
        (S::Placed | S::Paid | S::Cancelled, E::CancelRequested) => Ok(S::Cancelled),
        (status, event) => Err(OrderError::conflict(format!(
            "event {} does not apply to an order in status {}",
            event_name(event),
            status_name(status)
        ))),
    }
}

/// The WIT name of a status, for example `placed`.
pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "placed",
        OrderStatus::Paid => "paid",
        OrderStatus::Shipped => "shipped",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// The WIT name of an event, for example `payment-captured`.
pub fn event_name(event: OrderEvent) -> &'static str {
    match event {
        OrderEvent::PaymentCaptured => "payment-captured",
        OrderEvent::Shipped => "shipped",
        OrderEvent::CancelRequested => "cancel-requested",
    }
}
