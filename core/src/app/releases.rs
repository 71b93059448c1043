//! Plugin releases: register admitted components, change releases (compare-and-set on the
//! generation, audited), read them and their history.
//!
//! Compiling a component, checking its world and running its `describe` self-test are the
//! runtime's; what is decided here is what every replica must agree on: which bytes a
//! plugin version is, and which versions serve.

use std::sync::Arc;

use crate::domain::release::{
    self, DesiredRelease, Release, ReleaseAudit, ReleaseChange, ReleaseRuleError,
};
use crate::ports::releases::{ComponentRecord, ComponentStore, PutComponent, ReleaseStore};
use crate::ports::{Clock, StoreError};

/// Why a release change or a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No release (or component) of that plugin.
    #[error("plugin {0} has no release")]
    NotFound(String),
    /// The release changed since the caller read it.
    #[error("the release of {name} is at generation {current}, not {expected}")]
    Stale {
        /// Plugin name.
        name: String,
        /// The generation the caller expected.
        expected: i64,
        /// The generation stored.
        current: i64,
    },
    /// The change breaks a rule, or names a digest that is not an admitted version of the
    /// plugin.
    #[error("{0}")]
    Invalid(String),
    /// The plugin already has this version with other bytes.
    #[error(
        "{name} {version} is already admitted with digest {digest}; release it under a new version"
    )]
    VersionTaken {
        /// Plugin name.
        name: String,
        /// The version.
        version: String,
        /// The digest it has.
        digest: String,
    },
    /// A store call failed during `step`.
    #[error("{step}")]
    Store {
        /// What the use-case was doing.
        step: &'static str,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

impl From<ReleaseRuleError> for ReleaseError {
    fn from(e: ReleaseRuleError) -> Self {
        ReleaseError::Invalid(e.to_string())
    }
}

fn store(step: &'static str) -> impl FnOnce(StoreError) -> ReleaseError {
    move |source| ReleaseError::Store { step, source }
}

/// Whether a registration stored something new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Stored now.
    New(ComponentRecord),
    /// Stored before (an idempotent upload).
    Existing(ComponentRecord),
}

/// The release use-cases. Cheap to clone.
#[derive(Clone)]
pub struct ReleaseService {
    components: Arc<dyn ComponentStore>,
    releases: Arc<dyn ReleaseStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ReleaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseService").finish_non_exhaustive()
    }
}

impl ReleaseService {
    /// Releases over these stores.
    pub fn new(
        components: Arc<dyn ComponentStore>,
        releases: Arc<dyn ReleaseStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            components,
            releases,
            clock,
        }
    }

    /// Store an admitted component: idempotent by digest; an uploaded version of a plugin is
    /// one set of bytes for ever (see [`crate::ports::releases::STARTUP`] for the exception).
    pub async fn register(
        &self,
        record: &ComponentRecord,
        bytes: &[u8],
    ) -> Result<Registered, ReleaseError> {
        match self
            .components
            .put_component(record, bytes)
            .await
            .map_err(store("storing the component"))?
        {
            PutComponent::Inserted => Ok(Registered::New(record.clone())),
            PutComponent::Existing(existing) => Ok(Registered::Existing(existing)),
            PutComponent::VersionTaken(taken) => Err(ReleaseError::VersionTaken {
                name: taken.name,
                version: taken.version,
                digest: taken.digest,
            }),
        }
    }

    /// A plugin's release.
    pub async fn get(&self, name: &str) -> Result<Option<Release>, ReleaseError> {
        self.releases
            .get_release(name)
            .await
            .map_err(store("reading the release"))
    }

    /// Every release.
    pub async fn list(&self) -> Result<Vec<Release>, ReleaseError> {
        self.releases
            .list_releases()
            .await
            .map_err(store("reading the releases"))
    }

    /// A plugin's components, oldest first (every plugin's when `name` is `None`).
    pub async fn components(
        &self,
        name: Option<&str>,
    ) -> Result<Vec<ComponentRecord>, ReleaseError> {
        self.components
            .list_components(name)
            .await
            .map_err(store("reading the components"))
    }

    /// A component's bytes.
    pub async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, ReleaseError> {
        self.components
            .component_bytes(digest)
            .await
            .map_err(store("reading a component"))
    }

    /// The audit trail of `name`, newest first.
    pub async fn history(&self, name: &str, limit: u32) -> Result<Vec<ReleaseAudit>, ReleaseError> {
        self.releases
            .release_history(name, limit)
            .await
            .map_err(store("reading the release history"))
    }

    /// Apply `change` to `name`'s release by `actor`, if its generation is still `expected`
    /// (any generation when `None`: the change is still atomic). Every digest it names must be
    /// an admitted version of the plugin.
    pub async fn change(
        &self,
        name: &str,
        change: &ReleaseChange,
        expected: Option<i64>,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Release, ReleaseError> {
        let current = self.get(name).await?;
        let current_generation = current.as_ref().map_or(0, |r| r.generation);
        if let Some(expected) = expected
            && expected != current_generation
        {
            return Err(ReleaseError::Stale {
                name: name.to_owned(),
                expected,
                current: current_generation,
            });
        }
        if current.is_none() && !matches!(change, ReleaseChange::Set(_)) {
            return Err(ReleaseError::NotFound(name.to_owned()));
        }
        let release::Versions {
            stable,
            previous_stable,
            canary,
            shadow,
        } = release::apply(current.as_ref(), change)?;
        for digest in std::iter::once(&stable)
            .chain(canary.as_ref().map(|c| &c.digest))
            .chain(shadow.as_ref().map(|s| &s.digest))
        {
            let record = self
                .components
                .get_component(digest)
                .await
                .map_err(store("reading a component"))?;
            if record.is_none_or(|r| r.name != name) {
                return Err(ReleaseError::Invalid(format!(
                    "{digest} is not an admitted version of {name}"
                )));
            }
        }
        let next = Release {
            name: name.to_owned(),
            generation: current_generation + 1,
            stable,
            previous_stable,
            canary,
            shadow,
            updated_at: self.clock.now_micros(),
            updated_by: actor.to_owned(),
        };
        let audit = ReleaseAudit {
            name: name.to_owned(),
            generation: next.generation,
            at: next.updated_at,
            actor: actor.to_owned(),
            action: change.action().to_owned(),
            from: current,
            to: next.clone(),
            reason: reason.map(str::to_owned),
        };
        let swapped = self
            .releases
            .swap_release(current_generation, &next, &audit)
            .await
            .map_err(store("writing the release"))?;
        if !swapped {
            let now = self.get(name).await?.map_or(0, |r| r.generation);
            return Err(ReleaseError::Stale {
                name: name.to_owned(),
                expected: current_generation,
                current: now,
            });
        }
        Ok(next)
    }

    /// At start-up: make `digest` the stable version of `name` unless an operator released
    /// the plugin (a release last changed by `startup` follows what the process loaded).
    /// Returns the release in force. Losing a race against another replica is fine.
    pub async fn adopt_at_startup(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<Release, ReleaseError> {
        use crate::ports::releases::STARTUP;
        let current = self.get(name).await?;
        if let Some(c) = &current
            && (c.updated_by != STARTUP || c.stable == digest)
        {
            return Ok(c.clone());
        }
        let desired = ReleaseChange::Set(DesiredRelease {
            stable: digest.to_owned(),
            canary: None,
            shadow: None,
        });
        let expected = current.as_ref().map_or(0, |r| r.generation);
        match self
            .change(
                name,
                &desired,
                Some(expected),
                STARTUP,
                Some("loaded at start-up"),
            )
            .await
        {
            Ok(r) => Ok(r),
            Err(ReleaseError::Stale { .. }) => self
                .get(name)
                .await?
                .ok_or_else(|| ReleaseError::NotFound(name.to_owned())),
            Err(e) => Err(e),
        }
    }
}
