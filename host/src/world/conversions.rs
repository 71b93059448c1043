//! WIT <-> core conversions. The WIT types are what crosses the component boundary; the core
//! types are what the rest of the host works with.

use weir_core::domain::{self, CatalogProduct};
use weir_core::ports::CatalogError;

use super::bindings as wit;

impl From<domain::OrderStatus> for wit::OrderStatus {
    fn from(s: domain::OrderStatus) -> Self {
        match s {
            domain::OrderStatus::Placed => Self::Placed,
            domain::OrderStatus::Paid => Self::Paid,
            domain::OrderStatus::Shipped => Self::Shipped,
            domain::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<wit::OrderStatus> for domain::OrderStatus {
    fn from(s: wit::OrderStatus) -> Self {
        match s {
            wit::OrderStatus::Placed => Self::Placed,
            wit::OrderStatus::Paid => Self::Paid,
            wit::OrderStatus::Shipped => Self::Shipped,
            wit::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<domain::OrderEvent> for wit::OrderEvent {
    fn from(e: domain::OrderEvent) -> Self {
        match e {
            domain::OrderEvent::PaymentCaptured => Self::PaymentCaptured,
            domain::OrderEvent::Shipped => Self::Shipped,
            domain::OrderEvent::CancelRequested => Self::CancelRequested,
        }
    }
}

impl From<&domain::Money> for wit::Money {
    fn from(m: &domain::Money) -> Self {
        Self {
            amount: m.amount,
            currency: m.currency.clone(),
        }
    }
}

impl From<wit::Money> for domain::Money {
    fn from(m: wit::Money) -> Self {
        Self {
            amount: m.amount,
            currency: m.currency,
        }
    }
}

impl From<&domain::OrderRequest> for wit::OrderRequest {
    fn from(r: &domain::OrderRequest) -> Self {
        Self {
            customer_id: r.customer_id.clone(),
            currency: r.currency.clone(),
            lines: r
                .lines
                .iter()
                .map(|l| wit::OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                })
                .collect(),
            metadata: r
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<&domain::OrderSnapshot> for wit::OrderSnapshot {
    fn from(o: &domain::OrderSnapshot) -> Self {
        Self {
            id: o.id.to_string(),
            customer_id: o.customer_id.clone(),
            status: o.status.into(),
            total: (&o.total).into(),
        }
    }
}

impl From<wit::PricedOrder> for domain::PricedOrder {
    fn from(p: wit::PricedOrder) -> Self {
        Self {
            lines: p
                .lines
                .into_iter()
                .map(|l| domain::PricedLine {
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price: l.unit_price.into(),
                    line_total: l.line_total.into(),
                })
                .collect(),
            subtotal: p.subtotal.into(),
            discount: p.discount.into(),
            tax: p.tax.into(),
            total: p.total.into(),
        }
    }
}

impl From<wit::OrderError> for domain::OrderError {
    fn from(e: wit::OrderError) -> Self {
        match e {
            wit::OrderError::Invalid(v) => Self::Invalid(
                v.into_iter()
                    .map(|v| domain::Violation {
                        field: v.field,
                        code: v.code,
                        message: v.message,
                    })
                    .collect(),
            ),
            wit::OrderError::NotFound(m) => Self::NotFound(m),
            wit::OrderError::Conflict(m) => Self::Conflict(m),
            wit::OrderError::Rejected(r) => Self::Rejected(domain::Rejection {
                reason: r.reason,
                message: r.message,
            }),
            wit::OrderError::Unavailable(m) => Self::Unavailable(m),
            wit::OrderError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<CatalogProduct> for wit::catalog::Product {
    fn from(p: CatalogProduct) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            unit_price: wit::Money {
                amount: p.unit_price,
                currency: p.currency,
            },
            stock: u32::try_from(p.stock.max(0)).unwrap_or(u32::MAX),
        }
    }
}

impl From<CatalogError> for wit::DependencyError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Timeout => Self::Timeout,
            CatalogError::Unavailable(m) => Self::Unavailable(m),
            CatalogError::Internal(m) => Self::Internal(m),
        }
    }
}

/// The WIT name of a capability, e.g. `catalog`.
pub fn capability_name(c: wit::Capability) -> &'static str {
    match c {
        wit::Capability::Log => "log",
        wit::Capability::Catalog => "catalog",
        wit::Capability::Config => "config",
        wit::Capability::Deadline => "deadline",
    }
}
