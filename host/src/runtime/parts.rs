//! The steps of one invocation taken one at a time, for the split benchmark
//! (`host/benches/invoke.rs`): the store and its context, instantiation from the
//! pre-instantiated component, the export call, teardown. The invoker runs the same functions
//! ([`Runtime::fresh_state`], [`Runtime::new_store`]); this adds no behaviour, only access.
//! Not a supported API (hidden from the documentation).

use tokio::time::Instant;
use wasmtime::Store;
use weir_core::domain::{OrderEvent, OrderRequest, OrderSnapshot};

use super::{InvocationState, PluginVersion, Runtime};
use crate::world::bindings;

/// A store of one call, as the invoker makes it.
pub type CallStore = Store<InvocationState>;

/// The steps of calls of one plugin version.
#[doc(hidden)]
pub struct CallParts<'a> {
    runtime: &'a Runtime,
    plugin: &'a PluginVersion,
}

impl<'a> CallParts<'a> {
    /// The steps of calls of `plugin` on `runtime`.
    pub fn new(runtime: &'a Runtime, plugin: &'a PluginVersion) -> Self {
        Self { runtime, plugin }
    }

    /// The store data and the store of one call, under the runtime's budget. Needs a tokio
    /// runtime (the catalog import hands waiting lookups to it).
    pub fn store(&self) -> CallStore {
        let deadline = Instant::now() + self.runtime.config().budget.timeout;
        let state = self.runtime.fresh_state(self.plugin, deadline, None);
        self.runtime
            .new_store(state, deadline)
            .expect("a store under the configured budget")
    }

    /// A fresh instance in `store`.
    pub async fn instantiate(&self, store: &mut CallStore) -> bindings::Plugin {
        self.plugin
            .pre
            .instantiate_async(store)
            .await
            .expect("the plugin instantiates")
    }

    /// `request` as the guest receives it (converted once per call by the invoker).
    pub fn wire(request: &OrderRequest) -> bindings::OrderRequest {
        bindings::OrderRequest::from(request)
    }

    /// `order` as the guest receives it.
    pub fn wire_order(order: &OrderSnapshot) -> bindings::OrderSnapshot {
        bindings::OrderSnapshot::from(order)
    }

    /// The `place-order` export on `instance`; true when it priced the order.
    pub async fn place_order(
        instance: &bindings::Plugin,
        store: &mut CallStore,
        request: &bindings::OrderRequest,
    ) -> bool {
        match instance.call_place_order(store, request).await {
            Ok(answer) => answer.is_ok(),
            Err(e) => panic!("place-order did not return: {e:?}"),
        }
    }

    /// The `transition` export on `instance` (a call without imports); true when allowed.
    pub async fn transition(
        instance: &bindings::Plugin,
        store: &mut CallStore,
        order: &bindings::OrderSnapshot,
        event: OrderEvent,
    ) -> bool {
        instance
            .call_transition(store, order, event.into())
            .await
            .expect("the call returns")
            .is_ok()
    }

    /// Memory grow requests the store's memories made so far (instantiation included).
    pub fn memory_grows(store: &CallStore) -> u32 {
        store.data().limiter.grows()
    }

    /// Whether the guest has made a WASI call in `store` (its WASI context is made then).
    pub fn used_wasi(store: &CallStore) -> bool {
        store.data().used_wasi()
    }

    /// Import calls the guest made so far.
    pub fn host_calls(store: &CallStore) -> u32 {
        store.data().imports.calls()
    }
}
