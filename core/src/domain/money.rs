//! Money: integer minor units of an ISO 4217 currency, never floats.

use serde::{Deserialize, Serialize};

/// An amount in minor units (cents for EUR) of `currency`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units; may be negative only where a rule says so (none of the order amounts).
    pub amount: i64,
    /// ISO 4217 alphabetic code, upper case, e.g. `EUR`.
    pub currency: String,
}

impl Money {
    /// `amount` minor units of `currency`.
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

/// Whether `code` looks like an ISO 4217 alphabetic code: three upper-case ASCII letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(is_currency_code("EUR"));
        for bad in ["", "eur", "EURO", "E1R", "€UR"] {
            assert!(!is_currency_code(bad), "{bad}");
        }
    }
}
