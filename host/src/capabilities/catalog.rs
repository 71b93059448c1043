//! `weir:orders/catalog`: product lookups for plugins.
//!
//! The source is the core's [`Catalog`] port, implemented by the catalog read path (cache,
//! then database) in production and by [`StaticCatalog`] in tests and `weir plugin check`.
//! Each lookup is bounded by the smaller of the catalog timeout and the time left in the
//! invocation; a lookup that runs out of time is reported to the guest as
//! `dependency-error::timeout`, never as a trap.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;

use weir_core::domain::CatalogProduct;
use weir_core::ports::{Catalog, CatalogError};

use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use weir_core::domain::contract::MAX_SKU;

use super::Imports;
use crate::world::bindings::catalog::{Host, Product};
use crate::world::bindings::{Capability, DependencyError};

/// A fixed in-memory catalog.
#[derive(Debug, Default, Clone)]
pub struct StaticCatalog {
    products: HashMap<String, CatalogProduct>,
    delay: Option<Duration>,
}

impl StaticCatalog {
    /// A catalog holding `products`.
    pub fn new(products: impl IntoIterator<Item = CatalogProduct>) -> Self {
        Self {
            products: products.into_iter().map(|p| (p.sku.clone(), p)).collect(),
            delay: None,
        }
    }

    /// Make every lookup wait `delay` first (to exercise timeouts).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

#[async_trait::async_trait]
impl Catalog for StaticCatalog {
    async fn get(&self, sku: &str) -> Result<Option<CatalogProduct>, CatalogError> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        Ok(self.products.get(sku).cloned())
    }
}

impl Host for Imports {
    /// One lookup in its span. The span is debug-level (made only while traces are exported
    /// or stdout asks for debug), so the outcome is recorded on it by name: recording on
    /// `Span::current()` would, with the span off, overwrite the `outcome` of the enclosing
    /// `plugin.invoke` span.
    async fn get(
        &mut self,
        sku: String,
    ) -> wasmtime::Result<Result<Option<Product>, DependencyError>> {
        let span = tracing::debug_span!(
            "plugin.import.catalog.get",
            sku = %sku.get(..64).unwrap_or("<long>"),
            outcome = tracing::field::Empty,
        );
        let result = self.lookup(sku).instrument(span.clone()).await?;
        let outcome = match &result {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(DependencyError::Timeout) => "timeout",
            Err(DependencyError::Unavailable(_)) => "unavailable",
            Err(DependencyError::Internal(_)) => "internal",
        };
        span.record("outcome", outcome);
        Ok(result)
    }
}

impl Imports {
    /// [`Host::get`] without its span.
    async fn lookup(
        &mut self,
        sku: String,
    ) -> wasmtime::Result<Result<Option<Product>, DependencyError>> {
        self.require(Capability::Catalog)?;
        self.bound("catalog.get sku", &sku, MAX_SKU)?;
        if let Some(scripted) = self.trace.as_ref().and_then(|t| t.scripted_catalog(&sku)) {
            if let Some(trace) = &self.trace {
                trace.catalog(&sku, &scripted);
            }
            return Ok(scripted);
        }
        let limit = self.remaining().min(self.catalog_timeout);
        let catalog = self.catalog.clone();
        let traced_sku = self.trace.is_some().then(|| sku.clone());
        let mut lookup: BoxFuture<'static, _> = Box::pin(async move { catalog.get(&sku).await });
        // An answer at hand (the in-process cache, a static catalog) is taken on the spot:
        // one poll, in the server runtime's context so any timer or task the lookup creates
        // belongs there, and in the current span (the import's span while traces are exported,
        // else the call's, which the call's task has entered): a span the lookup opens gets
        // the right parent without the lookup entering the span again (an enter and an exit
        // cost about 2 300 instructions with the served layers; BENCHMARKS.md, "Instructions
        // per request"). Only a lookup that has to wait (Redis,
        // the database) takes the current span with it and is handed to the server's runtime,
        // where its own timeout measures the dependency, not how busy plugin code keeps these
        // threads; when this call runs out of time first the lookup is aborted, so the
        // dependency's breaker never counts the plugin's lateness (with a cache on, the
        // database read a lookup waits on is a task of its own, which the abort leaves to
        // finish under the dependency's own timeout). A hand-off costs two thread wake-ups
        // (BENCHMARKS.md: they made a three-line order 4x slower).
        let polled = {
            let _host = self.host.enter();
            lookup
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
        };
        let answer = match polled {
            Poll::Ready(answer) => Ok(Ok(answer)),
            Poll::Pending => {
                // A pending future keeps only the waker of its latest poll: the one the
                // server's runtime gives it next.
                let lookup = lookup.instrument(tracing::Span::current());
                let handed = AbortOnDropHandle::new(self.host.spawn(lookup));
                tokio::time::timeout(limit, handed).await
            }
        };
        let result = match answer {
            Err(_elapsed) => Err(DependencyError::Timeout),
            Ok(Ok(Ok(found))) => Ok(found.map(Product::from)),
            Ok(Ok(Err(e))) => Err(DependencyError::from(e)),
            Ok(Err(join)) => Err(DependencyError::Internal(format!(
                "catalog lookup failed: {join}"
            ))),
        };
        if let (Some(trace), Some(sku)) = (&self.trace, &traced_sku) {
            trace.catalog(sku, &result);
        }
        Ok(result)
    }
}
