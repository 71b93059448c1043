//! [`NativeDecider`]: the reference plugin's logic (`weir-plugin-orders`) linked natively
//! behind the core's [`OrderDecider`] port, for the end-to-end benchmark only
//! (`scripts/bench`: the same binary serving `POST /v1/orders` with the component or
//! natively). Built with the `native-decider` feature (never in a default or release build)
//! and selected with `plugins.decider = "native"`.
//!
//! Each call does the work the component does through the host, minus the sandbox:
//! - the version that would serve the call is the stable one of `plugins.orders` in the
//!   registry; its configuration is what the plugin reads through `config`, and it is recorded
//!   as the decider (so stored orders look alike);
//! - the budget runs from the call (`runtime.budget.timeout_ms`), cut by the caller's
//!   deadline, as in [`crate::runtime`];
//! - every sku the plugin will ask for is looked up through the host's [`Catalog`] port (the
//!   cache and database read path) in line order, each lookup bounded by the smaller of
//!   `runtime.catalog_timeout_ms` and the time left, a late one answered as
//!   `dependency-error::timeout` as the `catalog` import does. The plugin stops pricing at the
//!   first unknown sku or failed lookup, so the lookups stop there too;
//! - the answers go into a [`FakeHost`] installed on this thread for the synchronous call of
//!   [`OrdersPlugin::place_order`] (its `catalog`, `config`, `deadline` and `log` imports are
//!   served by it), and the result goes through the host's contract checks and becomes a
//!   [`DecideError`] exactly as a component's would.
//!
//! What it does not do: admission to the instance pool, the version's circuit breaker,
//! metrics and the `plugin.invoke` span, shadows and canaries (every call is the stable
//! version's). Those are part of what the benchmark compares. The guest's log records (the
//! reference plugin logs `order priced` at info on every priced order) are emitted after the
//! call through the host's own log path, as the `log` import emits a component's, so both
//! deciders write the same log lines. A request the plugin refuses as invalid still has its
//! skus looked up here (the component validates before it looks up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::domain::{
    self, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PluginRef, PricedOrder,
    contract,
};
use weir_core::ports::{
    Catalog, CatalogError, DecideError, Decided, DecisionContext, OrderDecider,
};
use weir_plugin_orders::OrdersPlugin;
use weir_sdk::testing::FakeHost;
use weir_sdk::{DependencyError, Plugin as _};

use crate::runtime::{PluginVersion, Registry};

/// Decides with the reference plugin's logic called natively; see the module doc.
#[derive(Clone)]
pub struct NativeDecider {
    registry: Arc<Registry>,
    name: String,
    catalog: Arc<dyn Catalog>,
    budget: Duration,
    catalog_timeout: Duration,
}

impl std::fmt::Debug for NativeDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeDecider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NativeDecider {
    /// Decide natively for plugin `name` of `registry` (its stable version's identity and
    /// configuration), reading products from `catalog`, each call within `budget` and each
    /// lookup within `catalog_timeout` (the runtime's `budget.timeout_ms` and
    /// `catalog_timeout_ms`).
    pub fn new(
        registry: Arc<Registry>,
        name: impl Into<String>,
        catalog: Arc<dyn Catalog>,
        budget: Duration,
        catalog_timeout: Duration,
    ) -> Self {
        Self {
            registry,
            name: name.into(),
            catalog,
            budget,
            catalog_timeout,
        }
    }

    fn version(&self) -> Result<Arc<PluginVersion>, DecideError> {
        self.registry
            .pick(&self.name)
            .ok_or_else(|| DecideError::NoPlugin(self.name.clone()))
    }

    fn deadline(&self, cx: &DecisionContext<'_>) -> Instant {
        cx.deadline.min(Instant::now() + self.budget)
    }

    /// One lookup as the `catalog` import makes it.
    async fn lookup(
        &self,
        sku: &str,
        deadline: Instant,
    ) -> Result<Option<weir_sdk::Product>, DependencyError> {
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .min(self.catalog_timeout);
        match tokio::time::timeout(limit, self.catalog.get(sku)).await {
            Err(_elapsed) => Err(DependencyError::Timeout),
            Ok(Ok(found)) => Ok(found.map(|p| {
                weir_sdk::Product::new(
                    p.sku,
                    p.name,
                    weir_sdk::Money::new(p.unit_price, p.currency),
                    u32::try_from(p.stock.max(0)).unwrap_or(u32::MAX),
                )
            })),
            Ok(Err(e)) => Err(match e {
                CatalogError::Timeout => DependencyError::Timeout,
                CatalogError::Unavailable(m) => DependencyError::Unavailable(m),
                CatalogError::Internal(m) => DependencyError::Internal(m),
            }),
        }
    }
}

fn by(version: &PluginVersion) -> PluginRef {
    PluginRef {
        name: version.meta.name.clone(),
        version: version.meta.version.clone(),
        digest: version.meta.digest.clone(),
    }
}

/// The fake host every call installs: the version's configuration and the time left.
fn host_for(version: &PluginVersion, deadline: Instant) -> FakeHost {
    let mut host = FakeHost::new().deadline(deadline.saturating_duration_since(Instant::now()));
    for (key, value) in &version.meta.config {
        host = host.config(key.clone(), value.clone());
    }
    host
}

/// The guest's log records of one call, through the host's log path (see the module doc).
fn emit_logs(version: &PluginVersion, records: &[weir_sdk::testing::LogRecord]) {
    for record in records {
        let level = match record.level {
            weir_sdk::Level::Trace => tracing::Level::TRACE,
            weir_sdk::Level::Debug => tracing::Level::DEBUG,
            weir_sdk::Level::Info => tracing::Level::INFO,
            weir_sdk::Level::Warn => tracing::Level::WARN,
            weir_sdk::Level::Error => tracing::Level::ERROR,
        };
        crate::capabilities::log::emit_record(
            level,
            &version.meta.name,
            &version.meta.version,
            &record.message,
            &record.fields,
        );
    }
}

/// A refusal or a broken contract, as the runtime reports a component's.
fn refused(error: weir_sdk::OrderError) -> DecideError {
    let error = order_error(error);
    match contract::check_refusal(&error) {
        Ok(()) => DecideError::Refused(error),
        Err(violation) => DecideError::Contract(violation),
    }
}

#[async_trait::async_trait]
impl OrderDecider for NativeDecider {
    async fn place(
        &self,
        request: &OrderRequest,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError> {
        let version = self.version()?;
        let deadline = self.deadline(&cx);
        let mut found = Vec::with_capacity(request.lines.len());
        let mut failed = None;
        let mut asked: Vec<&str> = Vec::with_capacity(request.lines.len());
        for line in &request.lines {
            if asked.contains(&line.sku.as_str()) {
                continue;
            }
            asked.push(&line.sku);
            match self.lookup(&line.sku, deadline).await {
                Ok(Some(product)) => found.push(product),
                Ok(None) => break,
                Err(e) => {
                    failed = Some((line.sku.clone(), e));
                    break;
                }
            }
        }
        // The time left once the lookups are done, as `deadline.remaining-ms` would say.
        let mut host = host_for(&version, deadline);
        for product in found {
            host = host.product(product);
        }
        if let Some((sku, e)) = failed {
            host = host.catalog_error(sku, e);
        }
        let answer = {
            let installed = host.install();
            let answer = OrdersPlugin::place_order(order_request(request));
            emit_logs(&version, &installed.logs());
            answer
        };
        let priced = match answer {
            Ok(priced) => priced_order(priced),
            Err(e) => return Err(refused(e)),
        };
        contract::check_priced(request, &priced).map_err(DecideError::Contract)?;
        Ok(Decided {
            value: priced,
            by: by(&version),
        })
    }

    async fn transition(
        &self,
        order: &OrderSnapshot,
        event: OrderEvent,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<OrderStatus>, DecideError> {
        let version = self.version()?;
        let deadline = self.deadline(&cx);
        let answer = {
            let installed = host_for(&version, deadline).install();
            let answer = OrdersPlugin::transition(order_snapshot(order), order_event(event));
            emit_logs(&version, &installed.logs());
            answer
        };
        let to = match answer {
            Ok(to) => status_from(to),
            Err(e) => return Err(refused(e)),
        };
        contract::check_transition(order.status, event, to).map_err(DecideError::Contract)?;
        Ok(Decided {
            value: to,
            by: by(&version),
        })
    }
}

fn money_to(m: &domain::Money) -> weir_sdk::Money {
    weir_sdk::Money::new(m.amount, m.currency.clone())
}

fn money_from(m: weir_sdk::Money) -> domain::Money {
    domain::Money {
        amount: m.amount,
        currency: m.currency,
    }
}

fn order_request(r: &OrderRequest) -> weir_sdk::OrderRequest {
    weir_sdk::OrderRequest {
        customer_id: r.customer_id.clone(),
        currency: r.currency.clone(),
        lines: r
            .lines
            .iter()
            .map(|l| weir_sdk::OrderLine {
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

fn status_to(s: OrderStatus) -> weir_sdk::OrderStatus {
    match s {
        OrderStatus::Placed => weir_sdk::OrderStatus::Placed,
        OrderStatus::Paid => weir_sdk::OrderStatus::Paid,
        OrderStatus::Shipped => weir_sdk::OrderStatus::Shipped,
        OrderStatus::Cancelled => weir_sdk::OrderStatus::Cancelled,
    }
}

fn status_from(s: weir_sdk::OrderStatus) -> OrderStatus {
    match s {
        weir_sdk::OrderStatus::Placed => OrderStatus::Placed,
        weir_sdk::OrderStatus::Paid => OrderStatus::Paid,
        weir_sdk::OrderStatus::Shipped => OrderStatus::Shipped,
        weir_sdk::OrderStatus::Cancelled => OrderStatus::Cancelled,
    }
}

fn order_event(e: OrderEvent) -> weir_sdk::OrderEvent {
    match e {
        OrderEvent::PaymentCaptured => weir_sdk::OrderEvent::PaymentCaptured,
        OrderEvent::Shipped => weir_sdk::OrderEvent::Shipped,
        OrderEvent::CancelRequested => weir_sdk::OrderEvent::CancelRequested,
    }
}

fn order_snapshot(o: &OrderSnapshot) -> weir_sdk::OrderSnapshot {
    weir_sdk::OrderSnapshot {
        id: o.id.to_string(),
        customer_id: o.customer_id.clone(),
        status: status_to(o.status),
        total: money_to(&o.total),
    }
}

fn priced_order(p: weir_sdk::PricedOrder) -> PricedOrder {
    PricedOrder {
        lines: p
            .lines
            .into_iter()
            .map(|l| domain::PricedLine {
                sku: l.sku,
                quantity: l.quantity,
                unit_price: money_from(l.unit_price),
                line_total: money_from(l.line_total),
            })
            .collect(),
        subtotal: money_from(p.subtotal),
        discount: money_from(p.discount),
        tax: money_from(p.tax),
        total: money_from(p.total),
    }
}

fn order_error(e: weir_sdk::OrderError) -> OrderError {
    match e {
        weir_sdk::OrderError::Invalid(v) => OrderError::Invalid(
            v.into_iter()
                .map(|v| domain::Violation {
                    field: v.field,
                    code: v.code,
                    message: v.message,
                })
                .collect(),
        ),
        weir_sdk::OrderError::NotFound(m) => OrderError::NotFound(m),
        weir_sdk::OrderError::Conflict(m) => OrderError::Conflict(m),
        weir_sdk::OrderError::Rejected(r) => OrderError::Rejected(domain::Rejection {
            reason: r.reason,
            message: r.message,
        }),
        weir_sdk::OrderError::Unavailable(m) => OrderError::Unavailable(m),
        weir_sdk::OrderError::Internal(m) => OrderError::Internal(m),
    }
}

#[cfg(test)]
mod tests;
