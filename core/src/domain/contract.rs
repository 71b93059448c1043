//! The contract every decision must meet before the host acts on it, whatever decided it.
//!
//! A decider prices orders and picks statuses, but the host owns what gets stored: a priced
//! order that does not add up, or a status the graph does not allow, is refused with a
//! [`ContractViolation`] naming the broken [`ContractRule`], and nothing is written.
//!
//! For a priced order ([`check_priced`]), with every sum computed with checked arithmetic:
//!
//! | rule | what must hold |
//! |---|---|
//! | `lines` | the priced lines are exactly the requested lines: same count (at least one), same sku and quantity at each position |
//! | `currency` | every amount is in the request's currency |
//! | `range` | every amount is between 0 and [`MAX_AMOUNT`] |
//! | `line_total` | `line_total = unit_price x quantity` on every line |
//! | `subtotal` | `subtotal = sum(line_total)` |
//! | `discount` | `discount <= subtotal` |
//! | `total` | `total = subtotal - discount + tax` |
//!
//! For a transition ([`check_transition`]): `status_graph`, the decided status is one of
//! [`allowed_targets`](super::status::allowed_targets) for the order's status and the event.
//!
//! For a refusal ([`check_refusal`]): `error_shape`, the typed error is small and
//! well-formed, because it is copied into the problem body, the log and the stored
//! idempotent response: at most [`MAX_VIOLATIONS`] violations; a field path of at most
//! [`MAX_FIELD`] bytes; codes and rejection reasons of 1-[`MAX_CODE`] characters of `A-Z`,
//! `0-9` and `_` starting with a letter; every message at most [`MAX_MESSAGE`] bytes.

use std::fmt;

use super::error::OrderError;
use super::order::{OrderRequest, OrderStatus};
use super::pricing::PricedOrder;
use super::status::{OrderEvent, is_allowed};

/// The largest amount, in minor units, any priced field may hold: 2^53 - 1, the largest
/// integer a JSON consumer using IEEE doubles (JavaScript) reads exactly. Larger amounts are
/// no real order and would be silently rounded downstream.
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// Most violations one `invalid` refusal may carry (the reference plugin reports at most
/// about 210: two per line for its 100 lines, plus the order's own fields).
pub const MAX_VIOLATIONS: usize = 256;
/// Longest violation field path, in bytes.
pub const MAX_FIELD: usize = 256;
/// Longest violation code or rejection reason, in characters (all ASCII).
pub const MAX_CODE: usize = 64;
/// Longest message of any refusal, in bytes.
pub const MAX_MESSAGE: usize = 1024;
/// Longest sku a plugin may look up through the catalog import, in bytes.
pub const MAX_SKU: usize = 128;
/// Longest configuration key a plugin may read through the config import, in bytes.
pub const MAX_CONFIG_KEY: usize = 128;

/// The `import_argument` violation for an argument of `len` bytes over `limit` passed to
/// `import` (e.g. `catalog.get sku`).
pub fn import_argument(import: &str, len: usize, limit: usize) -> ContractViolation {
    broken(
        ContractRule::ImportArgument,
        format!("{import} is {len} bytes, over {limit}"),
    )
}

/// Which rule of the contract a decision broke (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContractRule {
    /// The priced lines are not the requested lines.
    Lines,
    /// An amount is in another currency than the request's.
    Currency,
    /// An amount is negative or above [`MAX_AMOUNT`].
    Range,
    /// A line total is not its unit price times its quantity.
    LineTotal,
    /// The subtotal is not the sum of the line totals.
    Subtotal,
    /// The discount exceeds the subtotal.
    Discount,
    /// The total is not subtotal - discount + tax.
    Total,
    /// The decided status is not an allowed target of the order's status and the event.
    StatusGraph,
    /// A refusal is too large or malformed (see [`check_refusal`]).
    ErrorShape,
    /// An argument the plugin passed to a host import is over its bound (for example a sku
    /// longer than [`MAX_SKU`]): refused before any cache or database work.
    ImportArgument,
}

impl ContractRule {
    /// Every rule.
    pub const ALL: [ContractRule; 10] = [
        ContractRule::Lines,
        ContractRule::Currency,
        ContractRule::Range,
        ContractRule::LineTotal,
        ContractRule::Subtotal,
        ContractRule::Discount,
        ContractRule::Total,
        ContractRule::StatusGraph,
        ContractRule::ErrorShape,
        ContractRule::ImportArgument,
    ];

    /// Stable snake-case name: a span attribute and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractRule::Lines => "lines",
            ContractRule::Currency => "currency",
            ContractRule::Range => "range",
            ContractRule::LineTotal => "line_total",
            ContractRule::Subtotal => "subtotal",
            ContractRule::Discount => "discount",
            ContractRule::Total => "total",
            ContractRule::StatusGraph => "status_graph",
            ContractRule::ErrorShape => "error_shape",
            ContractRule::ImportArgument => "import_argument",
        }
    }
}

impl fmt::Display for ContractRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision that breaks the contract. `detail` says where, in a bounded line built by the
/// host (never text the decider chose), for logs and spans only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the decision breaks the {rule} rule of the contract: {detail}")]
pub struct ContractViolation {
    /// The broken rule.
    pub rule: ContractRule,
    /// Where it broke, e.g. `lines[1]: 3000 x 2 != 6001`.
    pub detail: String,
}

fn broken(rule: ContractRule, detail: impl Into<String>) -> ContractViolation {
    ContractViolation {
        rule,
        detail: detail.into(),
    }
}

/// Whether `priced` is a correct pricing of `request` (see the module table). The first
/// broken rule is reported, checked in table order.
pub fn check_priced(request: &OrderRequest, priced: &PricedOrder) -> Result<(), ContractViolation> {
    use ContractRule as R;
    if priced.lines.is_empty() || priced.lines.len() != request.lines.len() {
        return Err(broken(
            R::Lines,
            format!(
                "{} priced line(s) for {} requested",
                priced.lines.len(),
                request.lines.len()
            ),
        ));
    }
    for (i, (line, asked)) in priced.lines.iter().zip(&request.lines).enumerate() {
        if line.sku != asked.sku || line.quantity != asked.quantity {
            return Err(broken(
                R::Lines,
                format!("lines[{i}] is not the requested sku and quantity"),
            ));
        }
    }

    let currency = request.currency.as_str();
    let amounts = priced
        .lines
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [
                (format!("lines[{i}].unit_price"), &l.unit_price),
                (format!("lines[{i}].line_total"), &l.line_total),
            ]
        })
        .chain([
            ("subtotal".to_owned(), &priced.subtotal),
            ("discount".to_owned(), &priced.discount),
            ("tax".to_owned(), &priced.tax),
            ("total".to_owned(), &priced.total),
        ]);
    for (field, money) in amounts {
        if money.currency != currency {
            return Err(broken(
                R::Currency,
                format!("{field} is not in the order currency {currency}"),
            ));
        }
        if !(0..=MAX_AMOUNT).contains(&money.amount) {
            return Err(broken(
                R::Range,
                format!("{field} = {} is outside 0..={MAX_AMOUNT}", money.amount),
            ));
        }
    }

    let mut sum: i64 = 0;
    for (i, line) in priced.lines.iter().enumerate() {
        let expected = line.unit_price.amount.checked_mul(i64::from(line.quantity));
        if expected != Some(line.line_total.amount) {
            return Err(broken(
                R::LineTotal,
                format!(
                    "lines[{i}]: {} x {} != {}",
                    line.unit_price.amount, line.quantity, line.line_total.amount
                ),
            ));
        }
        // Each term is at most MAX_AMOUNT, so a sum of them overflows only past 1024 lines;
        // an overflow is a subtotal that cannot be right either.
        sum = sum.checked_add(line.line_total.amount).ok_or_else(|| {
            broken(
                R::Subtotal,
                "the sum of the line totals overflows".to_owned(),
            )
        })?;
    }
    if sum != priced.subtotal.amount {
        return Err(broken(
            R::Subtotal,
            format!(
                "sum of line totals {sum} != subtotal {}",
                priced.subtotal.amount
            ),
        ));
    }
    if priced.discount.amount > priced.subtotal.amount {
        return Err(broken(
            R::Discount,
            format!(
                "discount {} > subtotal {}",
                priced.discount.amount, priced.subtotal.amount
            ),
        ));
    }
    let expected = priced
        .subtotal
        .amount
        .checked_sub(priced.discount.amount)
        .and_then(|v| v.checked_add(priced.tax.amount));
    if expected != Some(priced.total.amount) {
        return Err(broken(
            R::Total,
            format!(
                "{} - {} + {} != total {}",
                priced.subtotal.amount,
                priced.discount.amount,
                priced.tax.amount,
                priced.total.amount
            ),
        ));
    }
    Ok(())
}

/// Whether a decider may move an order in `from` to `to` on `event`: `to` must be one of the
/// graph's [`allowed_targets`](super::status::allowed_targets). An event the graph does not allow for `from` has no correct
/// target: the decider must refuse it (a `conflict`).
pub fn check_transition(
    from: OrderStatus,
    event: OrderEvent,
    to: OrderStatus,
) -> Result<(), ContractViolation> {
    if is_allowed(from, event, to) {
        Ok(())
    } else {
        Err(broken(
            ContractRule::StatusGraph,
            format!("{from} -> {to} on {event} is not in the status graph"),
        ))
    }
}

/// Whether a typed refusal is small and well-formed enough to be shown, logged and stored
/// (see the module doc). The detail names the part and its size, never the plugin's text.
pub fn check_refusal(refusal: &OrderError) -> Result<(), ContractViolation> {
    let shape = |detail: String| Err(broken(ContractRule::ErrorShape, detail));
    let message = |what: &str, text: &str| {
        if text.len() > MAX_MESSAGE {
            shape(format!(
                "{what} is {} bytes, over {MAX_MESSAGE}",
                text.len()
            ))
        } else {
            Ok(())
        }
    };
    match refusal {
        OrderError::Invalid(violations) => {
            if violations.len() > MAX_VIOLATIONS {
                return shape(format!(
                    "{} violations, over {MAX_VIOLATIONS}",
                    violations.len()
                ));
            }
            for (i, v) in violations.iter().enumerate() {
                if v.field.is_empty() || v.field.len() > MAX_FIELD || has_control(&v.field) {
                    return shape(format!(
                        "violations[{i}].field is {} bytes or has control characters \
                         (1 to {MAX_FIELD} printable bytes)",
                        v.field.len()
                    ));
                }
                if !is_code(&v.code) {
                    return shape(format!("violations[{i}].code is not a code"));
                }
                message(&format!("violations[{i}].message"), &v.message)?;
            }
            Ok(())
        }
        OrderError::Rejected(r) => {
            if !is_code(&r.reason) {
                return shape("rejected.reason is not a code".to_owned());
            }
            message("rejected.message", &r.message)
        }
        OrderError::NotFound(m) => message("not-found", m),
        OrderError::Conflict(m) => message("conflict", m),
        OrderError::Unavailable(m) => message("unavailable", m),
        OrderError::Internal(m) => message("internal", m),
    }
}

/// 1-[`MAX_CODE`] characters of `A-Z`, `0-9`, `_`, starting with a letter.
fn is_code(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CODE
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::status::allowed_targets;
    use crate::domain::{LineRequest, Money, PricedLine};

    fn request() -> OrderRequest {
        OrderRequest {
            customer_id: "c1".into(),
            currency: "EUR".into(),
            lines: vec![
                LineRequest {
                    sku: "A".into(),
                    quantity: 2,
                },
                LineRequest {
                    sku: "B".into(),
                    quantity: 1,
                },
            ],
            metadata: BTreeMap::new(),
        }
    }

    fn eur(amount: i64) -> Money {
        Money::new(amount, "EUR")
    }

    fn line(sku: &str, quantity: u32, unit: i64) -> PricedLine {
        PricedLine {
            sku: sku.into(),
            quantity,
            unit_price: eur(unit),
            line_total: eur(unit * i64::from(quantity)),
        }
    }

    /// 2 x 1000 + 1 x 500 = 2500, discount 100, tax 480 -> 2880.
    fn priced() -> PricedOrder {
        PricedOrder {
            lines: vec![line("A", 2, 1000), line("B", 1, 500)],
            subtotal: eur(2500),
            discount: eur(100),
            tax: eur(480),
            total: eur(2880),
        }
    }

    fn rule_of(change: impl FnOnce(&mut OrderRequest, &mut PricedOrder)) -> Option<ContractRule> {
        let (mut req, mut p) = (request(), priced());
        change(&mut req, &mut p);
        check_priced(&req, &p).err().map(|v| v.rule)
    }

    #[test]
    fn a_correct_pricing_passes() {
        assert_eq!(rule_of(|_, _| {}), None);
        // Zero amounts and a discount of the whole subtotal are fine.
        assert_eq!(
            rule_of(|_, p| {
                p.discount = eur(2500);
                p.tax = eur(0);
                p.total = eur(0);
            }),
            None
        );
    }

    #[test]
    fn each_rule_is_named_when_broken() {
        use ContractRule as R;
        type Change = Box<dyn FnOnce(&mut OrderRequest, &mut PricedOrder)>;
        let cases: Vec<(ContractRule, Change)> = vec![
            (R::Lines, Box::new(|_, p| p.lines.clear())),
            (R::Lines, Box::new(|_, p| p.lines.push(line("A", 2, 1000)))),
            (R::Lines, Box::new(|_, p| p.lines.swap(0, 1))),
            (R::Lines, Box::new(|_, p| p.lines[0].sku = "Z".into())),
            (R::Lines, Box::new(|_, p| p.lines[1] = line("B", 1000, 500))),
            (R::Lines, Box::new(|_, p| p.lines[1] = line("A", 1, 500))),
            (R::Currency, Box::new(|_, p| p.tax.currency = "JPY".into())),
            (R::Currency, Box::new(|r, _| r.currency = "JPY".into())),
            (R::Range, Box::new(|_, p| p.discount = eur(-1))),
            (R::Range, Box::new(|_, p| p.total = eur(i64::MAX))),
            (
                R::Range,
                Box::new(|_, p| p.lines[0].unit_price = eur(MAX_AMOUNT + 1)),
            ),
            (
                R::LineTotal,
                Box::new(|_, p| p.lines[0].line_total = eur(2001)),
            ),
            (R::Subtotal, Box::new(|_, p| p.subtotal = eur(2501))),
            (R::Discount, Box::new(|_, p| p.discount = eur(2600))),
            (R::Total, Box::new(|_, p| p.total = eur(2881))),
        ];
        for (i, (rule, change)) in cases.into_iter().enumerate() {
            assert_eq!(rule_of(change), Some(rule), "case {i}");
        }
    }

    #[test]
    fn huge_but_consistent_amounts_cannot_overflow_the_checks() {
        // unit_price x quantity overflows i64: refused, not wrapped.
        let rule = rule_of(|r, p| {
            r.lines[0].quantity = u32::MAX;
            p.lines[0].quantity = u32::MAX;
            p.lines[0].unit_price = eur(MAX_AMOUNT);
            p.lines[0].line_total = eur(MAX_AMOUNT);
        });
        assert_eq!(rule, Some(ContractRule::LineTotal));
        // subtotal - discount + tax at the edge of the range.
        let rule = rule_of(|_, p| {
            p.discount = eur(0);
            p.tax = eur(MAX_AMOUNT);
            p.total = eur(MAX_AMOUNT);
        });
        assert_eq!(rule, Some(ContractRule::Total));
    }

    #[test]
    fn the_detail_is_bounded_whatever_the_decider_sent() {
        let v = check_priced(&request(), &{
            let mut p = priced();
            p.lines[0].sku = "x".repeat(1_000_000);
            p
        })
        .unwrap_err();
        assert!(v.to_string().len() < 200, "{v}");
    }

    #[test]
    fn refusals_must_be_small_and_well_formed() {
        use crate::domain::{Rejection, Violation};
        let ok = |e: OrderError| assert_eq!(check_refusal(&e), Ok(()), "{e:?}");
        let bad = |e: OrderError| {
            let v = check_refusal(&e).unwrap_err();
            assert_eq!(v.rule, ContractRule::ErrorShape);
            assert!(v.detail.len() < 200, "{v}");
        };
        let violation =
            |field: &str, code: &str, message: &str| Violation::new(field, code, message);
        let long = "m".repeat(MAX_MESSAGE + 1);
        ok(OrderError::Invalid(vec![
            violation(
                "lines[0].sku",
                "INVALID_FORMAT",
                "x"
            );
            MAX_VIOLATIONS
        ]));
        ok(OrderError::NotFound("m".repeat(MAX_MESSAGE)));
        ok(OrderError::Rejected(Rejection {
            reason: format!("A{}", "_".repeat(MAX_CODE - 1)),
            message: String::new(),
        }));
        bad(OrderError::Invalid(vec![
            violation("f", "C", "x");
            MAX_VIOLATIONS + 1
        ]));
        bad(OrderError::Invalid(vec![violation(
            &"f".repeat(MAX_FIELD + 1),
            "C",
            "x",
        )]));
        bad(OrderError::Invalid(vec![violation("f\n", "C", "x")]));
        bad(OrderError::Invalid(vec![violation("f", "lower", "x")]));
        bad(OrderError::Invalid(vec![violation("f", "C", &long)]));
        for reason in ["", "lower", "1ABC", "A B", "A\u{1b}[31m"] {
            bad(OrderError::Rejected(Rejection {
                reason: reason.into(),
                message: "m".into(),
            }));
        }
        bad(OrderError::Rejected(Rejection {
            reason: format!("A{}", "B".repeat(MAX_CODE)),
            message: "m".into(),
        }));
        bad(OrderError::NotFound(long.clone()));
        bad(OrderError::Conflict(long.clone()));
        bad(OrderError::Unavailable(long.clone()));
        bad(OrderError::Internal(long));
    }

    #[test]
    fn transitions_must_follow_the_graph() {
        use OrderEvent as E;
        use OrderStatus as S;
        for from in S::ALL {
            for event in E::ALL {
                for to in S::ALL {
                    let allowed = allowed_targets(from, event).contains(&to);
                    let checked = check_transition(from, event, to);
                    assert_eq!(checked.is_ok(), allowed, "{from} -> {to} on {event}");
                    if let Err(v) = checked {
                        assert_eq!(v.rule, ContractRule::StatusGraph);
                    }
                }
            }
        }
        // The ones from the incident: a cancel that pays, a cancel that un-cancels.
        assert!(check_transition(S::Placed, E::CancelRequested, S::Paid).is_err());
        assert!(check_transition(S::Cancelled, E::CancelRequested, S::Placed).is_err());
    }
}
