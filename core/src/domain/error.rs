//! The business errors a decider answers with: the WIT `order-error`, mapped by its tag.

use serde::{Deserialize, Serialize};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Path of the field, e.g. `lines[2].quantity`.
    pub field: String,
    /// Stable machine-readable code, e.g. `OUT_OF_RANGE`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl Violation {
    /// A violation of `field`.
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

/// A business rule refused a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable reason code, e.g. `INSUFFICIENT_STOCK`.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Every business answer other than success. Each case has one HTTP status and retry class,
/// decided by its tag alone, never by its text. Serialized by its WIT case name
/// (`{"not-found": "..."}`), as recorded cases store it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OrderError {
    /// The request is malformed: 422, not retryable.
    #[error("the request is invalid ({} violation(s))", .0.len())]
    Invalid(Vec<Violation>),
    /// A referenced entity does not exist: 404, not retryable.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the current state: 409, not retryable.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A business rule refused the request: 422, not retryable.
    #[error("rejected ({}): {}", .0.reason, .0.message)]
    Rejected(Rejection),
    /// A dependency of the decider is unavailable: 503, retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug in the decider: 500, not retryable.
    #[error("internal: {0}")]
    Internal(String),
}

impl OrderError {
    /// The WIT case name, e.g. `not-found`: a bounded label for metrics and spans.
    pub fn tag(&self) -> &'static str {
        match self {
            OrderError::Invalid(_) => "invalid",
            OrderError::NotFound(_) => "not-found",
            OrderError::Conflict(_) => "conflict",
            OrderError::Rejected(_) => "rejected",
            OrderError::Unavailable(_) => "unavailable",
            OrderError::Internal(_) => "internal",
        }
    }

    /// Whether the same request gets the same answer when repeated: such answers are stored
    /// with the idempotency key and replayed.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            OrderError::Invalid(_)
                | OrderError::Rejected(_)
                | OrderError::NotFound(_)
                | OrderError::Conflict(_)
        )
    }
}
