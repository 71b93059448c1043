//! Loaded plugin versions and which one serves each plugin name.
//!
//! Versions are keyed by the sha256 digest of their bytes. A slot per plugin name holds the
//! `stable` version and an optional weighted `canary`; changing it is one atomic pointer swap.
//! An invocation holds an `Arc` to the version it started on, so a swap never disturbs calls
//! already running.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

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
    pub(crate) pre: PluginPre<InvocationState>,
    /// This version's circuit breaker, looked up once on first use (the breaker set is
    /// configured after the runtime is built).
    pub(crate) breaker: std::sync::OnceLock<Arc<crate::policy::circuit_breaker::CircuitBreaker>>,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("meta", &self.meta)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Which versions serve one plugin name.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Serves all traffic not routed to the canary.
    pub stable: Arc<PluginVersion>,
    /// Optional canary and the percentage (0-100) of calls it receives.
    pub canary: Option<(Arc<PluginVersion>, u8)>,
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
    canary_counter: AtomicU64,
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

    /// Make `digest` the stable version of its plugin, dropping any canary.
    pub fn activate(&self, name: &str, digest: &str) -> Result<Arc<PluginVersion>, RegistryError> {
        let version = self.version(name, digest)?;
        let slot = Slot {
            stable: version.clone(),
            canary: None,
        };
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        match slots.get(name) {
            Some(existing) => existing.store(Arc::new(slot)),
            None => {
                slots.insert(name.to_owned(), Arc::new(ArcSwap::from_pointee(slot)));
            }
        }
        Ok(version)
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

    /// Route `weight` percent of `name`'s calls to `digest`.
    pub fn set_canary(&self, name: &str, digest: &str, weight: u8) -> Result<(), RegistryError> {
        if weight > 100 {
            return Err(RegistryError::BadWeight);
        }
        let version = self.version(name, digest)?;
        let slot = self.slot(name)?;
        let current = slot.load_full();
        slot.store(Arc::new(Slot {
            stable: current.stable.clone(),
            canary: Some((version, weight)),
        }));
        Ok(())
    }

    /// The version that should serve the next call of `name`.
    pub fn pick(&self, name: &str) -> Option<Arc<PluginVersion>> {
        let slot = self.slot(name).ok()?.load_full();
        if let Some((canary, weight)) = &slot.canary {
            let n = self.canary_counter.fetch_add(1, Ordering::Relaxed) % 100;
            if n < u64::from(*weight) {
                return Some(canary.clone());
            }
        }
        Some(slot.stable.clone())
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
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions
            .get(digest)
            .filter(|v| v.meta.name == name)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownVersion {
                name: name.to_owned(),
                digest: digest.to_owned(),
            })
    }
}
