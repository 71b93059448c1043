//! The plugin lifecycle on one replica: admission of uploaded components, releases applied
//! from the database, shadow comparisons, and the automatic rollback of a failing canary.
//!
//! What every replica must agree on (which bytes a version is, which versions serve) lives in
//! the database and is decided by the core's release use-cases
//! ([`weir_core::app::ReleaseService`]); this module makes the local registry follow it:
//!
//! - **Admission** ([`Releases::admit`]): decode, compile (bounded by
//!   `runtime.compile_timeout_ms`, through the compiled-artifact cache), world check,
//!   `describe` self-test (under the call budget), then the version policy and storage by
//!   digest. One admission runs at a time per replica; a refusal names its stage.
//! - **Apply** ([`Releases::apply`]): load the versions a release names (from the registry,
//!   else from the stored bytes, compiled or read from the artifact cache) and swap the slot in
//!   one pointer flip. A slot only moves forward in generations.
//! - **Sync** ([`Releases::run`]): every replica applies new generations as they appear:
//!   PostgreSQL `LISTEN` announces them at once, and a poll every
//!   `plugins.releases.sync_interval_ms` catches what a lost connection missed. Readiness waits
//!   for the first complete sync ([`Releases::synced`]).
//! - **Observe** ([`Releases::observe`]): per-version calls, unexpected outcomes and latency
//!   over a sliding window; a canary whose unexpected-outcome rate exceeds the stable's by the
//!   configured margin is dropped from the release (audited as `auto-rollback`, logged,
//!   counted in `weir.plugin.rollbacks`, shown in `/infoz`).
//! - **Shadow** ([`Releases::compare_shadow`]): the comparison of a shadow's decision with the
//!   serving one, counted per version and logged with the request hash; never seen by clients.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};
use weir_core::app::{Registered, ReleaseError, ReleaseService};
use weir_core::domain::release::{
    OutcomeCounts, Release, ReleaseChange, RollbackPolicy, should_roll_back,
};
use weir_core::ports::ComponentRecord;

use super::registry::{PluginVersion, Registry, Role, Slot};
use super::{CacheOutcome, LoadError, Runtime};
use crate::lifecycle::{WorkerContext, WorkerError};
use crate::storage::ReleaseListener;
use crate::support::{InvalidKey, SecretUrl, duration_ms, ensure};
use crate::world::conversions::capability_name;

/// The actor of automatic rollbacks in the audit trail.
pub const AUTO_ROLLBACK: &str = "auto-rollback";

/// `[plugins.releases]`: uploads, sync, shadows and automatic rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleasesConfig {
    /// Largest component `POST /admin/v1/plugins` accepts.
    pub upload_limit_bytes: usize,
    /// How often every replica polls for release changes (PostgreSQL also announces them at
    /// once).
    #[serde(with = "duration_ms", rename = "sync_interval_ms")]
    pub sync_interval: Duration,
    /// Shadow calls running at once on this replica; sampled requests beyond it are not
    /// compared (counted as `skipped`).
    pub shadow_max_in_flight: usize,
    /// The sliding window of per-version outcomes.
    #[serde(with = "duration_ms", rename = "window_ms")]
    pub window: Duration,
    /// When a canary is rolled back automatically.
    pub rollback: RollbackPolicy,
}

impl Default for ReleasesConfig {
    fn default() -> Self {
        Self {
            upload_limit_bytes: 32 << 20,
            sync_interval: Duration::from_millis(1000),
            shadow_max_in_flight: 8,
            window: Duration::from_secs(60),
            rollback: RollbackPolicy::default(),
        }
    }
}

impl ReleasesConfig {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.upload_limit_bytes >= 1024,
            "plugins.releases.upload_limit_bytes",
            "must be at least 1024",
        )?;
        ensure(
            !self.sync_interval.is_zero(),
            "plugins.releases.sync_interval_ms",
            "must be positive",
        )?;
        ensure(
            !self.window.is_zero(),
            "plugins.releases.window_ms",
            "must be positive",
        )?;
        ensure(
            self.rollback.min_calls > 0 && (0.0..1.0).contains(&self.rollback.margin),
            "plugins.releases.rollback",
            "min_calls must be positive and 0 <= margin < 1",
        )
    }
}

/// Why an upload was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// Another admission is running on this replica.
    #[error("another component is being admitted; retry shortly")]
    Busy,
    /// Refused at `stage` (`decode`, `compile`, `world`, `describe`, `policy`).
    #[error("refused at the {stage} stage: {detail}")]
    Refused {
        /// The stage.
        stage: &'static str,
        /// Why, for the operator (bounded).
        detail: String,
        /// The precise differences of a `contract` (or `world`) refusal.
        contract: Option<Box<crate::world::contract::ContractReport>>,
    },
    /// Every plugin instance stayed busy while the `describe` self-test waited for one
    /// (`InvokeError::PoolExhausted`); nothing about the component was judged.
    #[error("no plugin instance was free for the describe self-test; retry shortly")]
    PoolExhausted(#[source] super::InvokeError),
    /// The store failed.
    #[error(transparent)]
    Release(ReleaseError),
}

/// An admitted component.
#[derive(Debug, Clone, Serialize)]
pub struct Admitted {
    /// What was stored.
    #[serde(flatten)]
    pub component: ComponentRecord,
    /// False when the same digest was admitted before (an idempotent upload).
    pub new: bool,
    /// Whether admission compiled it or read the artifact cache.
    pub artifact: &'static str,
    /// Component imports.
    pub imports: Vec<String>,
}

/// Outcomes of one version over the sliding window.
#[derive(Default)]
struct Window {
    /// (when, unexpected, duration in µs), oldest first, at most [`WINDOW_CAP`].
    calls: VecDeque<(Instant, bool, u64)>,
    shadow: ShadowCounts,
}

/// Most outcomes kept per version.
const WINDOW_CAP: usize = 4096;

impl Window {
    fn prune(&mut self, window: Duration) {
        let now = Instant::now();
        while self
            .calls
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > window)
        {
            self.calls.pop_front();
        }
    }

    fn counts(&self) -> OutcomeCounts {
        OutcomeCounts {
            calls: self.calls.len() as u64,
            unexpected: self.calls.iter().filter(|(_, u, _)| *u).count() as u64,
        }
    }

    fn latency(&self) -> Option<Latency> {
        if self.calls.is_empty() {
            return None;
        }
        let mut d: Vec<u64> = self.calls.iter().map(|(_, _, us)| *us).collect();
        d.sort_unstable();
        let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Some(Latency {
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        })
    }
}

/// Call latency over the window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Shadow comparisons of one shadow version (since start).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ShadowCounts {
    /// Same decision as the serving version.
    pub matches: u64,
    /// Another decision.
    pub mismatches: u64,
    /// The shadow failed (trap, budget) where the serving version decided.
    pub failed: u64,
}

/// One version's figures on this replica.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStats {
    /// Calls in the window.
    pub calls: u64,
    /// Unexpected outcomes in the window.
    pub unexpected: u64,
    /// `unexpected / calls`.
    pub unexpected_rate: f64,
    /// Latency in the window.
    pub latency: Option<Latency>,
    /// Shadow comparisons, when it ran as a shadow.
    pub shadow: ShadowCounts,
}

/// An automatic rollback, for `/infoz`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackRecord {
    /// Plugin.
    pub name: String,
    /// The canary removed.
    pub digest: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why (rates and calls).
    pub reason: String,
    /// The generation that removed it.
    pub generation: i64,
}

/// A shadow comparison's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Same decision.
    Match,
    /// Different decisions.
    Mismatch,
    /// The shadow failed.
    ShadowFailed,
}

impl Comparison {
    fn as_str(self) -> &'static str {
        match self {
            Comparison::Match => "match",
            Comparison::Mismatch => "mismatch",
            Comparison::ShadowFailed => "shadow_failed",
        }
    }
}

/// One shadow comparison.
#[derive(Debug, Clone)]
pub struct Compared {
    /// `place-order` or `transition`.
    pub function: &'static str,
    /// The hash of the request both versions were asked about.
    pub request_hash: String,
    /// How the decisions compare.
    pub comparison: Comparison,
    /// The serving version's decision, summarized.
    pub serving: String,
    /// The shadow's decision, summarized.
    pub shadow: String,
}

struct Metrics {
    rollbacks: Counter<u64>,
    shadow: Counter<u64>,
    applied: Counter<u64>,
    /// Uploads refused at admission, by stage (`weir.plugin.admission_refusals`,
    /// `source="upload"` or `"watch"`; start-up refusals are counted by `server` with
    /// `source="plugins.dir"`).
    refusals: Counter<u64>,
}

/// The plugin lifecycle of this replica (see the module doc).
pub struct Releases {
    runtime: Runtime,
    registry: Arc<Registry>,
    service: ReleaseService,
    config: ReleasesConfig,
    plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    admission: tokio::sync::Semaphore,
    windows: Mutex<HashMap<String, Window>>,
    synced: AtomicBool,
    rolling_back: Mutex<HashSet<String>>,
    rollbacks: Mutex<VecDeque<RollbackRecord>>,
    rollbacks_total: AtomicU64,
    failed_apply: Mutex<HashMap<String, i64>>,
    shadow_slots: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

impl std::fmt::Debug for Releases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releases")
            .field("config", &self.config)
            .field("synced", &self.synced())
            .finish_non_exhaustive()
    }
}

/// Refusal details are for the operator and bounded, whatever the component made wasmtime say.
fn bounded(detail: String) -> String {
    const MAX: usize = 2048;
    if detail.len() <= MAX {
        return detail;
    }
    let mut end = MAX;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &detail[..end], detail.len() - end)
}

impl Releases {
    /// The lifecycle of `registry`'s plugins, loaded by `runtime`, released through `service`.
    /// `plugin_config` is the operator configuration of each plugin name.
    pub fn new(
        runtime: Runtime,
        registry: Arc<Registry>,
        service: ReleaseService,
        config: ReleasesConfig,
        plugin_config: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        let meter = opentelemetry::global::meter("weir.runtime");
        let shadow_slots = Arc::new(tokio::sync::Semaphore::new(
            config.shadow_max_in_flight.max(1),
        ));
        Self {
            runtime,
            registry,
            service,
            config,
            plugin_config,
            admission: tokio::sync::Semaphore::new(1),
            windows: Mutex::default(),
            synced: AtomicBool::new(false),
            rolling_back: Mutex::default(),
            rollbacks: Mutex::default(),
            rollbacks_total: AtomicU64::new(0),
            failed_apply: Mutex::default(),
            shadow_slots,
            metrics: Metrics {
                rollbacks: meter
                    .u64_counter("weir.plugin.rollbacks")
                    .with_description("Canaries rolled back automatically")
                    .build(),
                shadow: meter
                    .u64_counter("weir.plugin.shadow.comparisons")
                    .with_description(
                        "Shadow decisions compared with the serving version's, by outcome",
                    )
                    .build(),
                applied: meter
                    .u64_counter("weir.plugin.releases.applied")
                    .with_description("Release generations applied on this replica")
                    .build(),
                // The instrument start-up refusals are counted with (same meter and name).
                refusals: opentelemetry::global::meter("weir.server")
                    .u64_counter("weir.plugin.admission_refusals")
                    .with_description("Plugin components refused at admission, by stage")
                    .build(),
            },
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The release use-cases.
    pub fn service(&self) -> &ReleaseService {
        &self.service
    }

    /// The configuration.
    pub fn config(&self) -> &ReleasesConfig {
        &self.config
    }

    /// Whether the releases in the database were applied here at least once.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn config_for(&self, name: &str) -> BTreeMap<String, String> {
        self.plugin_config.get(name).cloned().unwrap_or_default()
    }

    /// Load (compile, world check, `describe`) without storing anything.
    async fn load(&self, bytes: Vec<u8>) -> Result<Arc<PluginVersion>, LoadError> {
        self.runtime.load(bytes, |name| self.config_for(name)).await
    }

    fn record_of(version: &PluginVersion, actor: &str) -> ComponentRecord {
        ComponentRecord {
            digest: version.meta.digest.clone(),
            name: version.meta.name.clone(),
            version: version.meta.version.clone(),
            size: version.size as u64,
            capabilities: version
                .capabilities
                .iter()
                .map(|c| capability_name(*c).to_owned())
                .collect(),
            admitted_at: Utc::now(),
            admitted_by: actor.to_owned(),
        }
    }

    /// Admit an uploaded component (see the module doc); nothing serves it until a release
    /// names it. The running versions are untouched whatever happens.
    pub async fn admit(&self, bytes: Vec<u8>, actor: &str) -> Result<Admitted, AdmitError> {
        self.admit_from(bytes, actor, "upload").await
    }

    /// [`Releases::admit`] of bytes from `source` (the `source` label of
    /// `weir.plugin.admission_refusals`: `upload`, or `watch` for `weir serve --watch`).
    pub async fn admit_from(
        &self,
        bytes: Vec<u8>,
        actor: &str,
        source: &'static str,
    ) -> Result<Admitted, AdmitError> {
        let _permit = self.admission.try_acquire().map_err(|_| AdmitError::Busy)?;
        let version = self.load(bytes.clone()).await.map_err(|e| match e {
            LoadError::Describe(busy @ super::InvokeError::PoolExhausted { .. }) => {
                AdmitError::PoolExhausted(busy)
            }
            e => {
                self.metrics.refusals.add(
                    1,
                    &[
                        KeyValue::new("stage", e.stage()),
                        KeyValue::new("source", source),
                    ],
                );
                AdmitError::Refused {
                    stage: e.stage(),
                    detail: bounded(crate::support::chain(&e)),
                    contract: match e {
                        LoadError::Contract(report) => Some(report),
                        _ => None,
                    },
                }
            }
        })?;
        let record = Self::record_of(&version, actor);
        let registered = self
            .service
            .register(&record, &bytes)
            .await
            .map_err(|e| match e {
                ReleaseError::VersionTaken { .. } => AdmitError::Refused {
                    stage: "policy",
                    detail: e.to_string(),
                    contract: None,
                },
                other => AdmitError::Release(other),
            })?;
        let (component, new) = match registered {
            Registered::New(r) => (r, true),
            Registered::Existing(r) => (r, false),
        };
        tracing::info!(
            plugin = %component.name,
            version = %component.version,
            digest = %component.digest,
            size = component.size,
            new,
            actor,
            artifact = version.artifact.as_str(),
            "plugin component admitted"
        );
        Ok(Admitted {
            component,
            new,
            artifact: version.artifact.as_str(),
            imports: version.imports.clone(),
        })
    }

    /// At start-up: load a component shipped with the process (the built-in plugin, a file of
    /// `plugins.dir`), store it, and make it its plugin's release unless an operator released
    /// that plugin. Returns the version.
    pub async fn admit_local(
        &self,
        bytes: Vec<u8>,
        source: &str,
    ) -> Result<Arc<PluginVersion>, anyhow::Error> {
        use anyhow::Context as _;
        use weir_core::ports::releases::STARTUP;
        let version = self
            .load(bytes.clone())
            .await
            .with_context(|| format!("could not admit {source}"))?;
        let record = Self::record_of(&version, STARTUP);
        self.service
            .register(&record, &bytes)
            .await
            .with_context(|| format!("could not store {source}"))?;
        let version = self.registry.insert(version);
        tracing::info!(
            plugin = %version.meta.name,
            version = %version.meta.version,
            digest = %version.meta.digest,
            source,
            artifact = version.artifact.as_str(),
            "plugin {} at start-up",
            if version.artifact == CacheOutcome::Hit {
                "loaded from the compiled-artifact cache"
            } else {
                "compiled"
            }
        );
        Ok(version)
    }

    /// Change `name`'s release (compare-and-set on `expected`, audited) and apply it here at
    /// once; other replicas follow through [`Releases::run`].
    pub async fn change(
        &self,
        name: &str,
        change: &ReleaseChange,
        expected: Option<i64>,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Release, ReleaseError> {
        let release = self
            .service
            .change(name, change, expected, actor, reason)
            .await?;
        tracing::warn!(
            plugin = name,
            generation = release.generation,
            action = change.action(),
            actor,
            reason = reason.unwrap_or(""),
            stable = %release.stable,
            canary = release.canary.as_ref().map(|c| format!("{}@{}%", c.digest, c.weight)).unwrap_or_default(),
            shadow = release.shadow.as_ref().map(|s| format!("{}@{}", s.digest, s.sample)).unwrap_or_default(),
            "plugin release changed"
        );
        if let Err(e) = self.apply(&release).await {
            tracing::error!(plugin = name, generation = release.generation, error = %crate::support::chain(&*e), "the new release could not be applied here; the previous one keeps serving");
        }
        // Whether everything is applied now (readiness) is the sync's to say.
        if let Err(e) = self.sync().await {
            tracing::warn!(error = %crate::support::chain(&e), "cannot read the plugin releases");
        }
        Ok(release)
    }

    /// Make the registry serve `release` (see the module doc).
    pub async fn apply(&self, release: &Release) -> Result<(), anyhow::Error> {
        let stable = self.version(&release.name, &release.stable).await?;
        let canary = match &release.canary {
            Some(c) => Some((self.version(&release.name, &c.digest).await?, c.weight)),
            None => None,
        };
        let shadow = match &release.shadow {
            Some(s) => Some((self.version(&release.name, &s.digest).await?, s.sample)),
            None => None,
        };
        let slot = Slot {
            stable,
            canary,
            shadow,
            generation: release.generation,
        };
        let describe = |v: &Arc<PluginVersion>| format!("{} {}", v.meta.version, v.meta.digest);
        let (stable_d, canary_d, shadow_d) = (
            describe(&slot.stable),
            slot.canary
                .as_ref()
                .map(|(v, w)| format!("{} at {w}%", describe(v))),
            slot.shadow
                .as_ref()
                .map(|(v, s)| format!("{} sampled {s}", describe(v))),
        );
        if self.registry.set_slot(&release.name, slot) {
            self.metrics
                .applied
                .add(1, &[KeyValue::new("plugin.name", release.name.clone())]);
            tracing::info!(
                plugin = %release.name,
                generation = release.generation,
                stable = %stable_d,
                canary = canary_d.unwrap_or_default(),
                shadow = shadow_d.unwrap_or_default(),
                "plugin release applied"
            );
        }
        Ok(())
    }

    /// The loaded version `digest` of `name`, loading it from the stored bytes when needed.
    async fn version(&self, name: &str, digest: &str) -> anyhow::Result<Arc<PluginVersion>> {
        use anyhow::Context as _;
        if let Some(v) = self.registry.get(digest) {
            return Ok(v);
        }
        let bytes = self
            .service
            .component_bytes(digest)
            .await?
            .with_context(|| format!("component {digest} of {name} is not stored"))?;
        let version = self
            .load(bytes)
            .await
            .with_context(|| format!("could not load {name} {digest}"))?;
        anyhow::ensure!(
            version.meta.name == name,
            "component {digest} is {}, not {name}",
            version.meta.name
        );
        Ok(self.registry.insert(version))
    }

    /// Apply every release whose generation is newer than what serves here; `Ok(n)` applied.
    /// The first success marks this replica synced (readiness).
    pub async fn sync(&self) -> Result<usize, ReleaseError> {
        let releases = self.service.list().await?;
        let mut applied = 0;
        let mut complete = true;
        for release in releases {
            let here = self
                .registry
                .slot_of(&release.name)
                .map_or(-1, |s| s.generation);
            if release.generation <= here {
                continue;
            }
            match self.apply(&release).await {
                Ok(()) => {
                    applied += 1;
                    self.failed_apply
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&release.name);
                }
                Err(e) => {
                    complete = false;
                    let mut failed = self.failed_apply.lock().unwrap_or_else(|p| p.into_inner());
                    if failed.insert(release.name.clone(), release.generation)
                        != Some(release.generation)
                    {
                        tracing::error!(plugin = %release.name, generation = release.generation, error = %crate::support::chain(&*e), "cannot apply a plugin release on this replica");
                    }
                }
            }
        }
        if complete {
            self.synced.store(true, Ordering::Release);
        }
        Ok(applied)
    }

    /// Whether a release newer than what serves here exists (an untraced read).
    async fn behind(&self) -> Result<bool, ReleaseError> {
        Ok(self
            .service
            .list()
            .await?
            .iter()
            .any(|r| r.generation > self.registry.slot_of(&r.name).map_or(-1, |s| s.generation)))
    }

    /// The `plugins.releases` worker: apply new releases as they appear (see the module doc).
    /// `listener` is PostgreSQL's announcement channel, when there is one.
    pub async fn run(
        self: Arc<Self>,
        listen_url: Option<SecretUrl>,
        ctx: WorkerContext,
    ) -> Result<(), WorkerError> {
        let mut listener = None;
        loop {
            if listener.is_none()
                && let Some(url) = &listen_url
            {
                match ReleaseListener::connect(url.expose()).await {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %crate::support::chain(&e), "cannot listen for release announcements; polling");
                    }
                }
            }
            match self.behind().await {
                Ok(true) => {
                    let _ = ctx.unit(self.sync()).await;
                }
                Ok(false) => self.synced.store(true, Ordering::Release),
                Err(e) => {
                    tracing::warn!(error = %crate::support::chain(&e), "cannot read the plugin releases");
                }
            }
            let announced = async {
                match listener.as_mut() {
                    Some(l) => {
                        if let Err(e) = l.recv().await {
                            tracing::debug!(error = %e, "release announcements interrupted; polling meanwhile");
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = ctx.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.sync_interval) => {}
                () = announced => {}
            }
        }
    }

    /// Record one call of `version` in its `role`: `unexpected` for traps, exhausted budgets,
    /// timeouts, contract violations and plugin-internal errors. A canary is judged against
    /// the stable version on every call.
    pub fn observe(
        self: &Arc<Self>,
        version: &PluginVersion,
        role: Role,
        unexpected: bool,
        elapsed: Duration,
    ) {
        if role == Role::Shadow {
            return;
        }
        let window = self.config.window;
        let (canary_counts, stable_counts, generation) = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows.entry(version.meta.digest.clone()).or_default();
            w.calls.push_back((
                Instant::now(),
                unexpected,
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            ));
            if w.calls.len() > WINDOW_CAP {
                w.calls.pop_front();
            }
            w.prune(window);
            if role != Role::Canary {
                return;
            }
            let canary = w.counts();
            let Some(slot) = self.registry.slot_of(&version.meta.name) else {
                return;
            };
            let stable = windows
                .get_mut(&slot.stable.meta.digest)
                .map(|w| {
                    w.prune(window);
                    w.counts()
                })
                .unwrap_or_default();
            (canary, stable, slot.generation)
        };
        let Some(reason) = should_roll_back(canary_counts, stable_counts, &self.config.rollback)
        else {
            return;
        };
        let name = version.meta.name.clone();
        if !self
            .rolling_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone())
        {
            return;
        }
        let this = self.clone();
        let canary = version.meta.clone();
        tokio::spawn(async move {
            let result = this
                .change(
                    &name,
                    &ReleaseChange::DropCanary,
                    Some(generation),
                    AUTO_ROLLBACK,
                    Some(&reason),
                )
                .await;
            match result {
                Ok(release) => {
                    this.rollbacks_total.fetch_add(1, Ordering::Relaxed);
                    this.metrics.rollbacks.add(
                        1,
                        &[
                            KeyValue::new("plugin.name", name.clone()),
                            KeyValue::new("plugin.version", canary.version.clone()),
                            KeyValue::new("plugin.digest", canary.digest.clone()),
                        ],
                    );
                    tracing::error!(
                        plugin = %name,
                        version = %canary.version,
                        digest = %canary.digest,
                        generation = release.generation,
                        reason = %reason,
                        "canary rolled back automatically"
                    );
                    let mut recent = this.rollbacks.lock().unwrap_or_else(|p| p.into_inner());
                    recent.push_back(RollbackRecord {
                        name: name.clone(),
                        digest: canary.digest.clone(),
                        at: Utc::now(),
                        reason,
                        generation: release.generation,
                    });
                    while recent.len() > 16 {
                        recent.pop_front();
                    }
                }
                // An operator changed the release meanwhile: theirs stands.
                Err(ReleaseError::Stale { .. }) => {}
                Err(e) => {
                    tracing::error!(plugin = %name, error = %crate::support::chain(&e), "automatic canary rollback failed")
                }
            }
            this.rolling_back
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
        });
    }

    /// A permit to run one shadow call, or `None` when `shadow_max_in_flight` are running
    /// (the comparison is skipped and counted).
    pub fn shadow_permit(
        &self,
        shadow: &PluginVersion,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.shadow_slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics
                .shadow
                .add(1, &Self::shadow_labels(shadow, "skipped"));
        }
        permit
    }

    /// Count a shadow call that found no free plugin instance (shadows never wait for one):
    /// skipped like one beyond `shadow_max_in_flight`, not a failure of the shadow version.
    pub fn shadow_skipped(&self, shadow: &PluginVersion) {
        self.metrics
            .shadow
            .add(1, &Self::shadow_labels(shadow, "skipped"));
    }

    fn shadow_labels(shadow: &PluginVersion, outcome: &'static str) -> [KeyValue; 4] {
        [
            KeyValue::new("plugin.name", shadow.meta.name.clone()),
            KeyValue::new("plugin.version", shadow.meta.version.clone()),
            KeyValue::new("plugin.digest", shadow.meta.digest.clone()),
            KeyValue::new("outcome", outcome),
        ]
    }

    /// Count and (on a difference) log a shadow comparison.
    pub fn compare_shadow(
        &self,
        shadow: &PluginVersion,
        serving: &PluginVersion,
        compared: &Compared,
    ) {
        let Compared {
            function,
            request_hash,
            comparison,
            serving: serving_summary,
            shadow: shadow_summary,
        } = compared;
        let comparison = *comparison;
        self.metrics
            .shadow
            .add(1, &Self::shadow_labels(shadow, comparison.as_str()));
        {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let counts = &mut windows
                .entry(shadow.meta.digest.clone())
                .or_default()
                .shadow;
            match comparison {
                Comparison::Match => counts.matches += 1,
                Comparison::Mismatch => counts.mismatches += 1,
                Comparison::ShadowFailed => counts.failed += 1,
            }
        }
        if comparison != Comparison::Match {
            tracing::warn!(
                plugin = %shadow.meta.name,
                function,
                serving.version = %serving.meta.version,
                serving.digest = %serving.meta.digest,
                shadow.version = %shadow.meta.version,
                shadow.digest = %shadow.meta.digest,
                request_hash = %request_hash,
                outcome = comparison.as_str(),
                serving_decision = %serving_summary,
                shadow_decision = %shadow_summary,
                "shadow decision differs from the serving version's"
            );
        }
    }

    /// This replica's figures of `digest`.
    pub fn stats(&self, digest: &str) -> VersionStats {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(digest.to_owned()).or_default();
        w.prune(self.config.window);
        let counts = w.counts();
        VersionStats {
            calls: counts.calls,
            unexpected: counts.unexpected,
            unexpected_rate: counts.rate(),
            latency: w.latency(),
            shadow: w.shadow,
        }
    }

    /// Automatic rollbacks since start (all plugins).
    pub fn rollbacks_total(&self) -> u64 {
        self.rollbacks_total.load(Ordering::Relaxed)
    }

    /// The recent automatic rollbacks, oldest first.
    pub fn recent_rollbacks(&self) -> Vec<RollbackRecord> {
        self.rollbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
