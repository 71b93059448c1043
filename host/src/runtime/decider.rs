//! [`PluginDecider`]: the core's order decider served by plugins.
//!
//! Each decision goes to the version the registry picks for the configured plugin name at
//! that moment (the stable one, or the canary for its share), through [`Runtime`] under the
//! call's budget. The decision carries the version that made it, stored with the order.

use std::sync::Arc;

use weir_core::domain::{
    OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PluginRef, PricedOrder,
};
use weir_core::ports::{DecideError, Decided, DecisionContext, OrderDecider};

use super::{PluginVersion, Registry, Runtime};

/// Decides with the active version of one plugin name.
#[derive(Clone)]
pub struct PluginDecider {
    runtime: Runtime,
    registry: Arc<Registry>,
    name: String,
}

impl std::fmt::Debug for PluginDecider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDecider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PluginDecider {
    /// Decide with the active version of plugin `name`.
    pub fn new(runtime: Runtime, registry: Arc<Registry>, name: impl Into<String>) -> Self {
        Self {
            runtime,
            registry,
            name: name.into(),
        }
    }

    /// The version the next decision would use.
    pub fn active(&self) -> Result<Arc<PluginVersion>, DecideError> {
        self.registry
            .pick(&self.name)
            .ok_or_else(|| DecideError::NoPlugin(self.name.clone()))
    }
}

fn by(plugin: &PluginVersion) -> PluginRef {
    PluginRef {
        name: plugin.meta.name.clone(),
        version: plugin.meta.version.clone(),
        digest: plugin.meta.digest.clone(),
    }
}

#[async_trait::async_trait]
impl OrderDecider for PluginDecider {
    async fn place(
        &self,
        request: &OrderRequest,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<PricedOrder>, DecideError> {
        let plugin = self.active()?;
        let deadline = tokio::time::Instant::from_std(cx.deadline);
        let value = self
            .runtime
            .place_order(&plugin, request, Some(deadline))
            .await?;
        Ok(Decided {
            value,
            by: by(&plugin),
        })
    }

    async fn transition(
        &self,
        order: &OrderSnapshot,
        event: OrderEvent,
        cx: DecisionContext<'_>,
    ) -> Result<Decided<OrderStatus>, DecideError> {
        let plugin = self.active()?;
        let deadline = tokio::time::Instant::from_std(cx.deadline);
        let value = self
            .runtime
            .transition(&plugin, order, event, Some(deadline))
            .await?;
        Ok(Decided {
            value,
            by: by(&plugin),
        })
    }
}
