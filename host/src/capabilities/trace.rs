//! What one call saw through its imports, for recorded cases; and the scripted answers a
//! replayed case gives instead of the live catalog and configuration.
//!
//! A [`CallTrace`] is attached to a call's [`Imports`](super::Imports) only when the call is
//! recorded or replayed (never on an ordinary call: the hot path pays one `Option` check per
//! import). Each import then appends what it answered: the catalog's answer per sku (a
//! product, none, or a dependency error) and the configuration's answer per key, in call
//! order, and counts the host calls. With a [`Script`] the catalog and configuration are not
//! asked at all: the answers come from the script, so a replay is deterministic and needs no
//! database. A sku or key the script does not hold is answered as missing (`none`) and listed
//! in [`TraceData::unscripted`], so the report can say the case did not cover it.
//!
//! Bounds: at most [`MAX_TRACED`] answers of each kind are kept; a call that asks for more is
//! marked [`TraceData::overflowed`] and is not recorded (its case would be incomplete).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::world::bindings::DependencyError;
use crate::world::bindings::catalog::Product;

/// Most catalog (and, separately, configuration) answers one trace keeps.
pub const MAX_TRACED: usize = 256;

/// A price as the plugin saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseMoney {
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// A product as the catalog import handed it to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseProduct {
    /// Stock keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price.
    pub unit_price: CaseMoney,
    /// Units in stock.
    pub stock: u32,
}

impl From<&Product> for CaseProduct {
    fn from(p: &Product) -> Self {
        Self {
            sku: p.sku.clone(),
            name: p.name.clone(),
            unit_price: CaseMoney {
                amount: p.unit_price.amount,
                currency: p.unit_price.currency.clone(),
            },
            stock: p.stock,
        }
    }
}

impl From<&CaseProduct> for Product {
    fn from(p: &CaseProduct) -> Self {
        Self {
            sku: p.sku.clone(),
            name: p.name.clone(),
            unit_price: crate::world::bindings::Money {
                amount: p.unit_price.amount,
                currency: p.unit_price.currency.clone(),
            },
            stock: p.stock,
        }
    }
}

/// The catalog's answer to one lookup: exactly one of `product` (found), neither (not found),
/// or `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogAnswer {
    /// The sku looked up.
    pub sku: String,
    /// The product found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<CaseProduct>,
    /// The dependency error the plugin got instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CaseDependencyError>,
}

/// A `dependency-error` as the plugin saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CaseDependencyError {
    /// `timeout`.
    Timeout,
    /// `unavailable(message)`.
    Unavailable(String),
    /// `internal(message)`.
    Internal(String),
}

impl CatalogAnswer {
    /// The answer the plugin gets for this lookup.
    pub fn to_wit(&self) -> Result<Option<Product>, DependencyError> {
        match (&self.error, &self.product) {
            (Some(CaseDependencyError::Timeout), _) => Err(DependencyError::Timeout),
            (Some(CaseDependencyError::Unavailable(m)), _) => {
                Err(DependencyError::Unavailable(m.clone()))
            }
            (Some(CaseDependencyError::Internal(m)), _) => {
                Err(DependencyError::Internal(m.clone()))
            }
            (None, product) => Ok(product.as_ref().map(Product::from)),
        }
    }

    /// The answer `result` to a lookup of `sku`.
    pub fn of(sku: &str, result: &Result<Option<Product>, DependencyError>) -> Self {
        let (product, error) = match result {
            Ok(found) => (found.as_ref().map(CaseProduct::from), None),
            Err(DependencyError::Timeout) => (None, Some(CaseDependencyError::Timeout)),
            Err(DependencyError::Unavailable(m)) => {
                (None, Some(CaseDependencyError::Unavailable(m.clone())))
            }
            Err(DependencyError::Internal(m)) => {
                (None, Some(CaseDependencyError::Internal(m.clone())))
            }
        };
        Self {
            sku: sku.to_owned(),
            product,
            error,
        }
    }
}

/// The configuration's answer to one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigAnswer {
    /// The key asked for.
    pub key: String,
    /// Its value, or none when unset.
    #[serde(default)]
    pub value: Option<String>,
}

/// Answers a replayed call gets instead of asking the catalog and the configuration.
#[derive(Debug, Clone, Default)]
pub struct Script {
    catalog: BTreeMap<String, CatalogAnswer>,
    config: BTreeMap<String, Option<String>>,
}

impl Script {
    /// A script answering `catalog` and `config` (the last answer for a repeated sku or key
    /// wins).
    pub fn new(catalog: &[CatalogAnswer], config: &[ConfigAnswer]) -> Self {
        Self {
            catalog: catalog.iter().map(|a| (a.sku.clone(), a.clone())).collect(),
            config: config
                .iter()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect(),
        }
    }
}

/// What a traced call saw (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct TraceData {
    /// Catalog answers in call order.
    pub catalog: Vec<CatalogAnswer>,
    /// Configuration answers in call order.
    pub config: Vec<ConfigAnswer>,
    /// Import calls made (every interface, refused ones included).
    pub host_calls: u32,
    /// Bytes of linear memory the call's instance had at the end (initial memory included).
    pub memory_bytes: usize,
    /// Skus and keys a replay's script did not hold (answered as missing).
    pub unscripted: Vec<String>,
    /// More answers than [`MAX_TRACED`] of one kind: the trace is incomplete.
    pub overflowed: bool,
}

/// The shared trace of one call: written by the imports on the plugin threads, read by the
/// runtime when the call is over.
#[derive(Debug, Clone, Default)]
pub struct CallTrace {
    data: Arc<Mutex<TraceData>>,
    script: Option<Arc<Script>>,
}

impl CallTrace {
    /// A trace that records what the live catalog and configuration answer.
    pub fn recording() -> Self {
        Self::default()
    }

    /// A trace whose catalog and configuration answers come from `script`.
    pub fn scripted(script: Arc<Script>) -> Self {
        Self {
            data: Arc::default(),
            script: Some(script),
        }
    }

    /// What was seen so far.
    pub fn snapshot(&self) -> TraceData {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TraceData> {
        // A panic while holding the lock leaves plain data behind: still readable.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn host_call(&self) {
        let mut d = self.lock();
        d.host_calls = d.host_calls.saturating_add(1);
    }

    pub(crate) fn set_memory(&self, bytes: usize) {
        self.lock().memory_bytes = bytes;
    }

    /// The scripted answer for `sku`, when replaying (a sku the script lacks is `none`).
    pub(crate) fn scripted_catalog(
        &self,
        sku: &str,
    ) -> Option<Result<Option<Product>, DependencyError>> {
        let script = self.script.as_ref()?;
        Some(match script.catalog.get(sku) {
            Some(answer) => answer.to_wit(),
            None => {
                self.unscripted(format!("catalog sku {sku:?}"));
                Ok(None)
            }
        })
    }

    /// The scripted answer for `key`, when replaying (a key the script lacks is unset).
    pub(crate) fn scripted_config(&self, key: &str) -> Option<Option<String>> {
        let script = self.script.as_ref()?;
        Some(match script.config.get(key) {
            Some(value) => value.clone(),
            None => {
                self.unscripted(format!("config key {key:?}"));
                None
            }
        })
    }

    fn unscripted(&self, what: String) {
        let mut d = self.lock();
        if d.unscripted.len() < MAX_TRACED {
            d.unscripted.push(what);
        }
    }

    pub(crate) fn catalog(&self, sku: &str, result: &Result<Option<Product>, DependencyError>) {
        let mut d = self.lock();
        if d.catalog.len() >= MAX_TRACED {
            d.overflowed = true;
            return;
        }
        d.catalog.push(CatalogAnswer::of(sku, result));
    }

    pub(crate) fn config(&self, key: &str, value: &Option<String>) {
        let mut d = self.lock();
        if d.config.len() >= MAX_TRACED {
            d.overflowed = true;
            return;
        }
        d.config.push(ConfigAnswer {
            key: key.to_owned(),
            value: value.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str) -> Product {
        Product {
            sku: sku.into(),
            name: "Apple".into(),
            unit_price: crate::world::bindings::Money {
                amount: 150,
                currency: "EUR".into(),
            },
            stock: 7,
        }
    }

    #[test]
    fn every_catalog_answer_round_trips_through_a_case() {
        let answers = [
            Ok(Some(product("apple"))),
            Ok(None),
            Err(DependencyError::Timeout),
            Err(DependencyError::Unavailable("down".into())),
            Err(DependencyError::Internal("bug".into())),
        ];
        for answer in answers {
            let case = CatalogAnswer::of("apple", &answer);
            let json = serde_json::to_string(&case).unwrap();
            let back: CatalogAnswer = serde_json::from_str(&json).unwrap();
            assert_eq!(
                format!("{:?}", back.to_wit()),
                format!("{answer:?}"),
                "{json}"
            );
        }
    }

    #[test]
    fn a_script_answers_what_it_holds_and_lists_what_it_does_not() {
        let trace = CallTrace::scripted(Arc::new(Script::new(
            &[CatalogAnswer::of("apple", &Ok(Some(product("apple"))))],
            &[ConfigAnswer {
                key: "tax_bps".into(),
                value: Some("1900".into()),
            }],
        )));
        assert!(matches!(trace.scripted_catalog("apple"), Some(Ok(Some(p))) if p.stock == 7));
        assert!(matches!(trace.scripted_catalog("pear"), Some(Ok(None))));
        assert_eq!(
            trace.scripted_config("tax_bps"),
            Some(Some("1900".to_owned()))
        );
        assert_eq!(trace.scripted_config("other"), Some(None));
        assert_eq!(
            trace.snapshot().unscripted,
            ["catalog sku \"pear\"", "config key \"other\""]
        );
        assert!(CallTrace::recording().scripted_catalog("apple").is_none());
    }

    #[test]
    fn a_trace_keeps_a_bounded_number_of_answers() {
        let trace = CallTrace::recording();
        for i in 0..=MAX_TRACED {
            trace.catalog(&format!("sku-{i}"), &Ok(None));
        }
        let data = trace.snapshot();
        assert_eq!(data.catalog.len(), MAX_TRACED);
        assert!(data.overflowed);
    }
}
