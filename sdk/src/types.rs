//! Constructors and trait impls for the WIT types.

use std::fmt;

use crate::{Capability, Money, PluginInfo, Product, Rejection, Violation};

/// Every error a plugin can return (WIT `order-error`).
///
/// The host maps each case to an HTTP status and retry class by its tag alone, never by its
/// text, so pick the case carefully and keep messages human-oriented.
///
/// ```
/// use weir_sdk::{OrderError, Violation};
///
/// let invalid = OrderError::invalid(vec![Violation::new(
///     "lines[0].quantity",
///     "OUT_OF_RANGE",
///     "must be between 1 and 1000, got 0",
/// )]);
/// assert_eq!(
///     invalid.to_string(),
///     "invalid request: lines[0].quantity OUT_OF_RANGE (must be between 1 and 1000, got 0)"
/// );
/// let rejected = OrderError::rejected("INSUFFICIENT_STOCK", "sku KB-001: 2 in stock");
/// assert_eq!(rejected.to_string(), "rejected INSUFFICIENT_STOCK: sku KB-001: 2 in stock");
/// assert!(matches!(OrderError::unavailable("catalog timed out"), OrderError::Unavailable(_)));
/// assert!(matches!(OrderError::conflict("already shipped"), OrderError::Conflict(_)));
/// assert!(matches!(OrderError::not_found("no such order"), OrderError::NotFound(_)));
/// assert!(matches!(OrderError::internal("bad config"), OrderError::Internal(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// The request is malformed: 422, not retryable. Report every problem at once.
    Invalid(Vec<Violation>),
    /// A referenced entity does not exist: 404, not retryable.
    NotFound(String),
    /// The request conflicts with the current state: 409, not retryable.
    Conflict(String),
    /// A business rule refused a well-formed request: 422, not retryable.
    Rejected(Rejection),
    /// A dependency is unavailable: 503, retryable.
    Unavailable(String),
    /// A bug in the plugin: 500, not retryable.
    Internal(String),
}

impl OrderError {
    /// `Invalid` with the given violations.
    pub fn invalid(violations: Vec<Violation>) -> Self {
        Self::Invalid(violations)
    }

    /// `NotFound` with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// `Conflict` with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    /// `Rejected` with a stable reason code (SCREAMING_SNAKE) and a message.
    pub fn rejected(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Rejected(Rejection {
            reason: reason.into(),
            message: message.into(),
        })
    }

    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    /// `Internal` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(violations) => {
                f.write_str("invalid request")?;
                for (i, v) in violations.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{} {} ({})", v.field, v.code, v.message)?;
                }
                Ok(())
            }
            Self::NotFound(message) => write!(f, "not found: {message}"),
            Self::Conflict(message) => write!(f, "conflict: {message}"),
            Self::Rejected(r) => write!(f, "rejected {}: {}", r.reason, r.message),
            Self::Unavailable(message) => write!(f, "unavailable: {message}"),
            Self::Internal(message) => write!(f, "internal error: {message}"),
        }
    }
}

impl std::error::Error for OrderError {}

impl Money {
    /// `amount` minor units (cents for USD) of `currency` (ISO 4217, upper case).
    ///
    /// ```
    /// let price = weir_sdk::Money::new(1250, "EUR"); // 12.50 EUR
    /// assert_eq!((price.amount, price.currency.as_str()), (1250, "EUR"));
    /// ```
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

impl Violation {
    /// A problem with `field` (a path such as `lines[2].quantity`), a stable `code` such as
    /// `OUT_OF_RANGE`, and a human-readable message.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Rejection {
    /// A rejection with a stable reason code and a message.
    ///
    /// ```
    /// let r = weir_sdk::Rejection::new("UNKNOWN_SKU", "unknown sku NOPE-1");
    /// assert_eq!(weir_sdk::OrderError::Rejected(r), weir_sdk::OrderError::rejected("UNKNOWN_SKU", "unknown sku NOPE-1"));
    /// ```
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl PluginInfo {
    /// Name, semantic version and the capabilities the plugin uses (declare exactly the
    /// interfaces it calls: an undeclared call ends with `CAPABILITY_DENIED`).
    ///
    /// ```
    /// use weir_sdk::{Capability, PluginInfo};
    /// let info = PluginInfo::new("my-plugin", "0.1.0", vec![Capability::Catalog, Capability::Log]);
    /// assert_eq!(info.capabilities.len(), 2);
    /// ```
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        capabilities: Vec<Capability>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            capabilities,
        }
    }
}

impl Product {
    /// A catalog product; mostly useful with [`crate::testing::FakeHost`].
    ///
    /// ```
    /// use weir_sdk::{Money, Product};
    /// let p = Product::new("CB-004", "USB-C cable", Money::new(900, "EUR"), 250);
    /// assert_eq!(p.unit_price.amount, 900);
    /// ```
    pub fn new(
        sku: impl Into<String>,
        name: impl Into<String>,
        unit_price: Money,
        stock: u32,
    ) -> Self {
        Self {
            sku: sku.into(),
            name: name.into(),
            unit_price,
            stock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_build_the_expected_cases() {
        assert_eq!(Money::new(5, "EUR").currency, "EUR");
        assert_eq!(
            OrderError::rejected("R", "m"),
            OrderError::Rejected(Rejection::new("R", "m"))
        );
        assert_eq!(OrderError::not_found("x"), OrderError::NotFound("x".into()));
        assert_eq!(OrderError::conflict("x"), OrderError::Conflict("x".into()));
        assert_eq!(
            OrderError::unavailable("x"),
            OrderError::Unavailable("x".into())
        );
        assert_eq!(OrderError::internal("x"), OrderError::Internal("x".into()));
        assert_eq!(OrderError::invalid(vec![]), OrderError::Invalid(Vec::new()));
    }

    #[test]
    fn display_is_readable() {
        let err = OrderError::invalid(vec![
            Violation::new("lines", "REQUIRED", "at least one line"),
            Violation::new("currency", "UNSUPPORTED", "XYZ"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid request: lines REQUIRED (at least one line); currency UNSUPPORTED (XYZ)"
        );
        assert_eq!(
            OrderError::rejected("UNKNOWN_SKU", "no such sku: a").to_string(),
            "rejected UNKNOWN_SKU: no such sku: a"
        );
        assert_eq!(OrderError::conflict("c").to_string(), "conflict: c");
    }
}
