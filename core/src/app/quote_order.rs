//! Quote an order: price it the way placing would, and store nothing.
//!
//! Decider `place` under the request's deadline (routed like placing: the same release
//! version, canary share and shadow sampling, by the caller's routing key) -> the host's
//! contract (`OrderService::price`, shared with placing: [`crate::domain::contract::check_priced`]) -> the stock of each sku
//! as the catalog read path has it ([`crate::ports::Catalog::get`]).
//!
//! What placing does and a quote does not: no idempotency key is claimed or completed, no
//! order row, no outbox event, no stock reservation. A quote is not admitted through the
//! intake gate either: the gate holds back new orders while the event backlog drains, and a
//! quote adds no event. A refusal is the decider's, unchanged, exactly as placing returns it
//! (an oversized or malformed refusal is a broken contract there too).
//!
//! The availability of a line is a snapshot: nothing is reserved, so placing the same request
//! a moment later can still be refused for stock. It is read where the decider reads the
//! catalog (the host's cached read path, whose entries live `policy.cache.ttl_ms`, 2 s by
//! default): a quote's availability and its pricing come from the same view of the catalog,
//! and a quote usually touches no database (the decider's own lookups just filled the
//! in-process cache). The lookups stop at the request's deadline (`Catalog(Timeout)`).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::OrderService;
use crate::domain::idempotency::request_hash;
use crate::domain::{OrderRequest, PluginRef, PricedOrder};
use crate::ports::{CatalogError, DecideError, DecisionContext, RoutingKey};

/// A request to quote an order.
#[derive(Debug, Clone)]
pub struct QuoteOrder {
    /// What the client asks for.
    pub request: OrderRequest,
    /// When the decision must be made by.
    pub deadline: Instant,
    /// What the decider routes the call by (release version, canary, shadow).
    pub routing_key: QuoteKey,
}

/// What a quote is routed by.
#[derive(Debug, Clone)]
pub enum QuoteKey {
    /// The key the placing of the same request is routed by, when the caller knows it: the
    /// quote is priced by the version that will price the order.
    Placing(String),
    /// The request's content: `{scope}/{route}:` and the request hash of `body` on `route`
    /// ([`request_hash`]), so the same request is priced by the same version. Made only when
    /// the route reads it (a canary share or a shadow sample): most quotes hash nothing.
    Content {
        /// Whose request (the tenant).
        scope: String,
        /// The route the request came by.
        route: &'static str,
        /// The request body as it came.
        body: serde_json::Value,
    },
}

/// A priced order that was not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The decider's pricing, which met the host's contract.
    pub priced: PricedOrder,
    /// The plugin version that priced it.
    pub by: PluginRef,
    /// Per requested line, in request order: whether the units available (on hand minus
    /// reserved, as the catalog read path has them: see the module doc) cover what the
    /// request asks of that sku in all (an unknown sku is `false`).
    pub available: Vec<bool>,
    /// When the quote was made.
    pub quoted_at: DateTime<Utc>,
}

/// Why no quote was made.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The decider refused or failed, or its pricing broke the contract: the same answers as
    /// placing ([`super::PlaceError::Decide`]).
    #[error(transparent)]
    Decide(DecideError),
    /// Reading the stock from the catalog failed (the sku is not named: it is client input,
    /// kept out of logs).
    #[error("reading the stock of the requested skus")]
    Catalog(#[source] CatalogError),
}

impl OrderService {
    /// Quote an order (see the module doc).
    pub async fn quote_order(&self, cmd: QuoteOrder) -> Result<Quote, QuoteError> {
        let p = &self.ports;
        let content;
        let cx = DecisionContext {
            deadline: cmd.deadline,
            routing_key: match &cmd.routing_key {
                QuoteKey::Placing(key) => RoutingKey::new(key),
                QuoteKey::Content { scope, route, body } => {
                    content = move || format!("{scope}/{route}:{}", request_hash(route, body));
                    RoutingKey::made_by(&content)
                }
            },
        };
        // Priced exactly as placing prices: a pricing that does not add up is never shown.
        let decided = self
            .price(&cmd.request, cx)
            .await
            .map_err(QuoteError::Decide)?;

        // What the request asks of each sku in all, then one catalog lookup per sku (the
        // decider has just looked each one up, so the cache usually answers), while the
        // request's deadline lasts: lookups that miss the cache read the database one by one.
        let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
        for line in &cmd.request.lines {
            *wanted.entry(line.sku.as_str()).or_default() += i64::from(line.quantity);
        }
        let mut stocked: BTreeMap<&str, i64> = BTreeMap::new();
        for &sku in wanted.keys() {
            if Instant::now() >= cmd.deadline {
                return Err(QuoteError::Catalog(CatalogError::Timeout));
            }
            if let Some(product) = p.catalog.get(sku).await.map_err(QuoteError::Catalog)? {
                stocked.insert(sku, product.stock);
            }
        }
        // Every line's sku is a key of `wanted`.
        let available = cmd
            .request
            .lines
            .iter()
            .map(|l| {
                let sku = l.sku.as_str();
                stocked.get(sku).is_some_and(|&stock| stock >= wanted[sku])
            })
            .collect();
        Ok(Quote {
            priced: decided.value,
            by: decided.by,
            available,
            quoted_at: p.clock.now_micros(),
        })
    }
}
