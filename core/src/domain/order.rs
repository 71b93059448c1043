//! Orders: what a client asks for, what is stored, and the plugin version that decided it.
//!
//! [`Order`] serializes to the one public JSON representation of an order: the API's
//! response body and the `data` of every order event are this type, so the two never drift.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::Money;

/// Lifecycle state of an order. Stored and serialized as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Priced and accepted; awaiting payment.
    Placed,
    /// Payment captured.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Cancelled before shipping.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];

    /// The stored and serialized name: `"placed"`, `"paid"`, `"shipped"`, `"cancelled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the [`OrderStatus`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownOrderStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownOrderStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownOrderStatus(s.to_owned()))
    }
}

/// One requested line: a product and how many of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRequest {
    /// Product sku.
    pub sku: String,
    /// Units, 1 or more (the decider validates).
    pub quantity: u32,
}

/// What a client asks for when placing an order; the decider validates and prices it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Customer placing the order.
    pub customer_id: String,
    /// ISO 4217 currency the order is priced in.
    pub currency: String,
    /// Requested lines, in the client's order.
    pub lines: Vec<LineRequest>,
    /// Free-form client metadata, stored and returned unchanged.
    pub metadata: BTreeMap<String, String>,
}

/// One priced line of an order, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = LineView))]
pub struct OrderLine {
    /// Product sku.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit, in minor units, as priced when the order was placed.
    pub unit_price: i64,
    /// `unit_price * quantity`, in minor units.
    pub line_total: i64,
}

/// The plugin version that made the business decision for an order, kept for audits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PluginView))]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// sha256 of the component, lower-case hex.
    pub digest: String,
}

/// An order with its lines. Amounts are integer minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OrderView))]
pub struct Order {
    /// Order id (UUIDv7, chosen when placed): ids sort by creation time.
    pub id: Uuid,
    /// The tenant that placed it ([`super::tenant`]); only that tenant sees it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Customer.
    pub customer_id: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Lifecycle status.
    pub status: OrderStatus,
    /// Priced lines, in request order.
    pub lines: Vec<OrderLine>,
    /// Sum of line totals.
    pub subtotal: i64,
    /// Discount applied.
    pub discount: i64,
    /// Tax charged.
    pub tax: i64,
    /// Amount due.
    pub total: i64,
    /// Client metadata.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The plugin version that priced the order.
    pub plugin: PluginRef,
    /// Optimistic-concurrency version: 1 when placed, +1 per transition.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

fn default_tenant() -> String {
    super::tenant::DEFAULT_TENANT.to_owned()
}

impl Order {
    /// What a decider sees of this order when deciding a transition.
    pub fn snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            id: self.id,
            customer_id: self.customer_id.clone(),
            status: self.status,
            total: Money::new(self.total, self.currency.clone()),
        }
    }

    /// This order as it is after moving to `next` at `now`: new status, version + 1.
    pub fn transitioned(&self, next: OrderStatus, now: DateTime<Utc>) -> Order {
        Order {
            status: next,
            version: self.version + 1,
            updated_at: now,
            ..self.clone()
        }
    }
}

/// The stored order a transition decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSnapshot {
    /// Order id.
    pub id: Uuid,
    /// Customer.
    pub customer_id: String,
    /// Current status.
    pub status: OrderStatus,
    /// Amount due.
    pub total: Money,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "lost".parse::<OrderStatus>().unwrap_err().to_string(),
            "unknown order status \"lost\""
        );
    }
}
