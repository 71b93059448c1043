//! Loaded plugin versions and which ones serve each plugin name.
//!
//! Versions are keyed by the sha256 digest of their bytes. A slot per plugin name holds the
//! `stable` version, an optional `canary` with its weight, an optional `shadow` with its
//! sample, and the release generation it came from; changing it is one atomic pointer swap
//! ([`ArcSwap`]). An invocation holds an `Arc` to the version it started on, so a swap never
//! disturbs calls already running, and a version no slot refers to any more is dropped from the
//! registry ([`Registry::set_slot`]): its memory goes when its last call ends.
//!
//! Routing is sticky ([`Registry::route`]): the canary serves a key by the key's hash, so the
//! retry of a request is decided by the version that decided it first.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;

use arc_swap::ArcSwap;
use weir_core::domain::release::{Canary, Shadow};
use weir_core::ports::RoutingKey;

use super::artifacts::CacheOutcome;
use super::state::InvocationState;
pub use crate::capabilities::PluginMeta;
use crate::world::bindings::{Capability, PluginPre};

/// A compiled, admitted plugin version, ready to instantiate.
pub struct PluginVersion {
    /// Identity and configuration.
    pub meta: Arc<PluginMeta>,
    /// Capabilities the plugin declared in `describe`.
    pub capabilities: Vec<Capability>,
    /// Import names of the component, for `/infoz` and `weir plugin check`.
    pub imports: Vec<String>,
    /// Export names of the component.
    pub exports: Vec<String>,
    /// Size of the component in bytes.
    pub size: usize,
    /// Whether loading it compiled it or read the compiled-artifact cache.
    pub artifact: CacheOutcome,
    pub(crate) pre: PluginPre<InvocationState>,
    /// This version's circuit breaker, looked up once on first use (the breaker set is
    /// configured after the runtime is built).
    pub(crate) breaker: std::sync::OnceLock<Arc<crate::policy::circuit_breaker::CircuitBreaker>>,
    /// The version's metric attributes (name, version, digest), made once: each call clones
    /// reference-counted strings instead of copying the digest into new ones.
    pub(crate) labels: std::sync::OnceLock<[opentelemetry::KeyValue; 3]>,
    /// The instruments its calls record, bound per role and function on first use
    /// ([`PluginVersion::call_metrics`]).
    pub(crate) call_metrics: RwLock<Vec<Arc<super::invoke::CallMetrics>>>,
    /// How this version's calls used their inline slice (`runtime.inline_calls`).
    pub(crate) inline: super::InlineStats,
}

impl PluginVersion {
    /// The version's metric attributes: `plugin.name`, `plugin.version`, `plugin.digest`.
    pub(crate) fn labels(&self) -> &[opentelemetry::KeyValue; 3] {
        self.labels.get_or_init(|| {
            let value = |s: &str| opentelemetry::Value::from(Arc::<str>::from(s));
            let meta = &self.meta;
            [
                opentelemetry::KeyValue::new("plugin.name", value(&meta.name)),
                opentelemetry::KeyValue::new("plugin.version", value(&meta.version)),
                opentelemetry::KeyValue::new("plugin.digest", value(&meta.digest)),
            ]
        })
    }
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("meta", &self.meta)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What a version does in its plugin's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves everything not routed to the canary.
    Stable,
    /// Serves its share of routing keys.
    Canary,
    /// Called beside the serving version; its decisions are compared, never used.
    Shadow,
}

impl Role {
    /// Span attribute and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
            Role::Shadow => "shadow",
        }
    }
}

/// Which versions serve one plugin name.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Serves all traffic not routed to the canary.
    pub stable: Arc<PluginVersion>,
    /// Optional canary and the percentage (1-100) of routing keys it serves.
    pub canary: Option<(Arc<PluginVersion>, u8)>,
    /// Optional shadow and the fraction (0-1] of requests it is also asked about.
    pub shadow: Option<(Arc<PluginVersion>, f64)>,
    /// The release generation this slot came from (0: set locally, before any release).
    pub generation: i64,
}

impl Slot {
    /// A slot serving `stable` alone.
    pub fn stable(stable: Arc<PluginVersion>) -> Self {
        Self {
            stable,
            canary: None,
            shadow: None,
            generation: 0,
        }
    }

    fn refers_to(&self, digest: &str) -> bool {
        self.stable.meta.digest == digest
            || self
                .canary
                .as_ref()
                .is_some_and(|(v, _)| v.meta.digest == digest)
            || self
                .shadow
                .as_ref()
                .is_some_and(|(v, _)| v.meta.digest == digest)
    }
}

/// The version chosen for one call, and the shadow to compare it with (if sampled).
#[derive(Debug, Clone)]
pub struct Route {
    /// The version that decides.
    pub version: Arc<PluginVersion>,
    /// Its role.
    pub role: Role,
    /// The shadow also asked, if this key is sampled.
    pub shadow: Option<Arc<PluginVersion>>,
}

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No version with that digest is loaded for that plugin.
    #[error("plugin {name} has no loaded version with digest {digest}")]
    UnknownVersion {
        /// Plugin name.
        name: String,
        /// Requested digest.
        digest: String,
    },
    /// No plugin of that name is active.
    #[error("no active plugin named {0}")]
    UnknownPlugin(String),
    /// A canary weight outside 0..=100.
    #[error("canary weight must be between 0 and 100")]
    BadWeight,
}

/// All loaded versions and the active slot of every plugin name.
#[derive(Default)]
pub struct Registry {
    versions: RwLock<HashMap<String, Arc<PluginVersion>>>,
    slots: RwLock<HashMap<String, Arc<ArcSwap<Slot>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.active_names())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep `version` available for activation; returns the stored instance (an already
    /// loaded identical digest is reused).
    pub fn insert(&self, version: Arc<PluginVersion>) -> Arc<PluginVersion> {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions
            .entry(version.meta.digest.clone())
            .or_insert(version)
            .clone()
    }

    /// The loaded version with `digest`.
    pub fn get(&self, digest: &str) -> Option<Arc<PluginVersion>> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions.get(digest).cloned()
    }

    /// Make `digest` the stable version of its plugin, dropping any canary and shadow (a
    /// local change: the next release applied replaces it).
    pub fn activate(&self, name: &str, digest: &str) -> Result<Arc<PluginVersion>, RegistryError> {
        let version = self.version(name, digest)?;
        let generation = self.slot_of(name).map_or(0, |s| s.generation);
        self.store_slot(
            name,
            Slot {
                generation,
                ..Slot::stable(version.clone())
            },
        );
        Ok(version)
    }

    /// Install `slot` for `name` unless the slot there came from a later release; drops the
    /// versions no slot refers to any more. Returns whether it was installed.
    pub fn set_slot(&self, name: &str, slot: Slot) -> bool {
        if self
            .slot_of(name)
            .is_some_and(|current| current.generation > slot.generation)
        {
            return false;
        }
        self.store_slot(name, slot);
        self.retire_unused();
        true
    }

    fn store_slot(&self, name: &str, slot: Slot) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slots.get(name) {
            Some(existing) => existing.store(Arc::new(slot)),
            None => {
                slots.insert(name.to_owned(), Arc::new(ArcSwap::from_pointee(slot)));
            }
        }
    }

    /// Forget loaded versions no slot refers to; calls running on them keep their `Arc`.
    fn retire_unused(&self) {
        let slots: Vec<Slot> = {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            slots.values().map(|s| (*s.load_full()).clone()).collect()
        };
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.retain(|digest, _| slots.iter().any(|s| s.refers_to(digest)));
    }

    /// Retire `name`: no version serves it until one is activated again. Loaded versions
    /// stay available; in-flight calls finish on the version they hold.
    pub fn deactivate(&self, name: &str) -> Result<(), RegistryError> {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        slots
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))
    }

    /// Route `weight` percent of `name`'s routing keys to `digest` (a local change).
    pub fn set_canary(&self, name: &str, digest: &str, weight: u8) -> Result<(), RegistryError> {
        if weight > 100 {
            return Err(RegistryError::BadWeight);
        }
        let version = self.version(name, digest)?;
        let current = self
            .slot_of(name)
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))?;
        self.store_slot(
            name,
            Slot {
                canary: Some((version, weight)),
                ..current
            },
        );
        Ok(())
    }

    /// The stable version of `name`.
    pub fn pick(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.slot_of(name).map(|s| s.stable)
    }

    /// The version that decides the call with routing key `key`, and the shadow to compare
    /// with when the key is sampled. The key is made (once) only when the slot has a canary
    /// or a shadow: otherwise every key routes to the stable version.
    pub fn route(&self, name: &str, key: RoutingKey<'_>) -> Option<Route> {
        let slot = self.slot_of(name)?;
        if slot.canary.is_none() && slot.shadow.is_none() {
            return Some(Route {
                version: slot.stable,
                role: Role::Stable,
                shadow: None,
            });
        }
        let key = &*key.get();
        let shadow = slot.shadow.as_ref().and_then(|(v, sample)| {
            Shadow {
                digest: String::new(),
                sample: *sample,
            }
            .samples(key)
            .then(|| v.clone())
        });
        let serves = |weight: u8| {
            Canary {
                digest: String::new(),
                weight,
            }
            .serves(key)
        };
        if let Some((canary, weight)) = &slot.canary
            && serves(*weight)
        {
            return Some(Route {
                version: canary.clone(),
                role: Role::Canary,
                shadow,
            });
        }
        Some(Route {
            version: slot.stable,
            role: Role::Stable,
            shadow,
        })
    }

    /// Current slot of `name`.
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.slot(name).ok().map(|s| (*s.load_full()).clone())
    }

    /// Names of all plugins with an active slot, sorted.
    pub fn active_names(&self) -> Vec<String> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = slots.keys().cloned().collect();
        names.sort();
        names
    }

    fn slot(&self, name: &str) -> Result<Arc<ArcSwap<Slot>>, RegistryError> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownPlugin(name.to_owned()))
    }

    fn version(&self, name: &str, digest: &str) -> Result<Arc<PluginVersion>, RegistryError> {
        self.get(digest)
            .filter(|v| v.meta.name == name)
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                digest: digest.to_owned(),
            })
    }
}
