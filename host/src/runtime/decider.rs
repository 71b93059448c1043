//! [`PluginDecider`]: the core's order decider served by plugins.
//!
//! Each decision goes to the version the registry routes the call's key to (the stable one,
//! or the canary for its sticky share), through [`Runtime`] under the call's budget, and is
//! recorded against that version ([`Releases::observe`]). When the key is sampled for a
//! shadow, the shadow version decides too, in a task of its own with its own budget, and the
//! two decisions are compared ([`Releases::compare_shadow`]); the client only ever sees the
//! serving version's. The decision carries the version that made it, stored with the order.

use std::sync::Arc;
use std::time::Instant;

use weir_core::domain::idempotency::request_hash;
use weir_core::domain::{
    OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PluginRef, PricedOrder,
};
use weir_core::ports::{DecideError, Decided, DecisionContext, OrderDecider, RoutingKey};

use super::registry::{Role, Route};
use super::releases::{Compared, Comparison, Releases};
use super::{PluginVersion, Runtime};

/// Decides with the active versions of one plugin name.
#[derive(Clone)]
pub struct PluginDecider {
    releases: Arc<Releases>,
    name: String,
}

impl std::fmt::Debug for PluginDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDecider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn by(plugin: &PluginVersion) -> PluginRef {
    PluginRef {
        name: plugin.meta.name.clone(),
        version: plugin.meta.version.clone(),
        digest: plugin.meta.digest.clone(),
    }
}

/// A decision reduced to what a shadow comparison looks at.
#[derive(Debug, PartialEq)]
enum Answer<T> {
    Decided(T),
    Refused(&'static str),
    Failed(&'static str),
}

impl<T: std::fmt::Debug> Answer<T> {
    fn of(result: &Result<T, DecideError>) -> Self
    where
        T: Clone,
    {
        match result {
            Ok(v) => Answer::Decided(v.clone()),
            Err(DecideError::Refused(e)) => Answer::Refused(e.tag()),
            Err(e) => Answer::Failed(e.outcome()),
        }
    }

    fn summary(&self) -> String {
        match self {
            Answer::Decided(v) => format!("{v:?}"),
            Answer::Refused(tag) => format!("refused: {tag}"),
            Answer::Failed(outcome) => format!("failed: {outcome}"),
        }
    }
}

impl PluginDecider {
    /// Decide with the active versions of plugin `name`.
    pub fn new(releases: Arc<Releases>, name: impl Into<String>) -> Self {
        Self {
            releases,
            name: name.into(),
        }
    }

    fn runtime(&self) -> &Runtime {
        self.releases.runtime()
    }

    fn route(&self, key: RoutingKey<'_>) -> Result<Route, DecideError> {
        self.releases
            .registry()
            .route(&self.name, key)
            .ok_or_else(|| DecideError::NoPlugin(self.name.clone()))
    }

    fn observe<T>(&self, route: &Route, result: &Result<T, DecideError>, started: Instant) {
        // The version never ran: nothing to judge it by (neither a failure nor a success).
        if matches!(result, Err(DecideError::PoolExhausted { .. })) {
            return;
        }
        let unexpected = result
            .as_ref()
            .err()
            .is_some_and(DecideError::counts_against_version);
        self.releases
            .observe(&route.version, route.role, unexpected, started.elapsed());
    }

    /// Compare the shadow's answer with the serving one's, off the response path.
    fn shadow<T, F, Fut>(
        &self,
        route: &Route,
        served: &Result<T, DecideError>,
        function: &'static str,
        request_hash: String,
        call: F,
    ) where
        T: Clone + PartialEq + std::fmt::Debug + Send + 'static,
        F: FnOnce(Runtime, Arc<PluginVersion>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, DecideError>> + Send,
    {
        let Some(shadow) = route.shadow.clone() else {
            return;
        };
        let served = Answer::of(served);
        // A failed serving call has nothing to be compared with.
        if matches!(served, Answer::Failed(_)) {
            return;
        }
        let Some(permit) = self.releases.shadow_permit(&shadow) else {
            return;
        };
        let releases = self.releases.clone();
        let serving = route.version.clone();
        let runtime = self.runtime().clone();
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permit;
                let result = call(runtime, shadow.clone()).await;
                // No free instance: shadows never wait for one; skipped, not compared.
                if matches!(result, Err(DecideError::PoolExhausted { .. })) {
                    releases.shadow_skipped(&shadow);
                    return;
                }
                let answer = Answer::of(&result);
                let comparison = match (&served, &answer) {
                    (_, Answer::Failed(_)) => Comparison::ShadowFailed,
                    (a, b) if a == b => Comparison::Match,
                    _ => Comparison::Mismatch,
                };
                releases.compare_shadow(
                    &shadow,
                    &serving,
                    &Compared {
                        function,
                        request_hash,
                        comparison,
                        serving: served.summary(),
                        shadow: answer.summary(),
                    },
                );
            },
            span,
        ));
    }
}

#[async_trait::async_trait]
impl OrderDecider for PluginDecider {
    async fn place(
        &self,
        request: &OrderRequest,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError> {
        let route = self.route(cx.routing_key)?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(cx.deadline);
        let result = self
            .runtime()
            .place_order_as(&route.version, route.role, request, Some(deadline))
            .await;
        self.observe(&route, &result, started);
        if route.shadow.is_some() {
            let hash = request_hash(
                "place-order",
                &serde_json::to_value(request).unwrap_or_default(),
            );
            let request = request.clone();
            self.shadow(&route, &result, "place-order", hash, move |rt, v| async move {
                rt.place_order_as(&v, Role::Shadow, &request, None).await
            });
        }
        Ok(Decided {
            value: result?,
            by: by(&route.version),
        })
    }

    async fn transition(
        &self,
        order: &OrderSnapshot,
        event: OrderEvent,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<OrderStatus>, DecideError> {
        let route = self.route(cx.routing_key)?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(cx.deadline);
        let result = self
            .runtime()
            .transition_as(&route.version, route.role, order, event, Some(deadline))
            .await;
        self.observe(&route, &result, started);
        if route.shadow.is_some() {
            let hash = request_hash(
                "transition",
                &serde_json::json!({"order": order.id, "status": order.status, "event": event}),
            );
            let order = order.clone();
            self.shadow(
                &route,
                &result,
                "transition",
                hash,
                move |rt, v| async move {
                    rt.transition_as(&v, Role::Shadow, &order, event, None)
                        .await
                },
            );
        }
        Ok(Decided {
            value: result?,
            by: by(&route.version),
        })
    }
}
