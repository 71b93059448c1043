//! The full configuration: defaults, then a TOML file, then `WEIR__SECTION__KEY` environment
//! overrides, then the command line (whose flags also read `WEIR_LISTEN`, `WEIR_OPS_LISTEN`,
//! `WEIR_DATA_DIR`, `WEIR_CONFIG`, `DATABASE_URL`, `WEIR_ADMIN_TOKEN`, `AMQP_URL`,
//! `REDIS_URL`).
//!
//! This is the only place that knows every section: each module owns its section's type and
//! its `validate` (all return [`InvalidKey`]); [`Config::validate`] runs them and checks what
//! spans sections. Every error names the offending key. Secrets (database password, admin
//! token, broker and cache passwords) are wrapped in [`Secret`] or [`SecretUrl`] so they never reach
//! logs, `Debug` output or `/infoz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::AuthConfig;
use crate::events::{AmqpUrl, EventsConfig};
use crate::http::HttpConfig;
use crate::lifecycle::ShutdownConfig;
use crate::policy::PolicyConfig;
use crate::runtime::RuntimeConfig;
pub use crate::storage::DatabaseUrl;
use crate::storage::backend_of;
pub use crate::support::{InvalidKey, Secret, SecretUrl};
use crate::support::{duration_ms, duration_secs, ensure};
use crate::telemetry::TelemetryConfig;

/// Most worker threads `server_threads` may ask for.
pub const MAX_SERVER_THREADS: usize = 256;

/// The whole host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the public API listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the operations listener (health, info, metrics, admin).
    pub ops_listen: SocketAddr,
    /// Directory of the embedded SQLite database and other local state.
    pub data_dir: PathBuf,
    /// Worker threads of the server's async runtime (HTTP, storage, events, telemetry);
    /// 0, the default, is half the CPUs, at least one ([`Config::server_workers`]). Plugin
    /// code runs apart, on `runtime.threads` (one per CPU), so the two pools together do not
    /// ask for twice the cores (RUNBOOK.md, "Sizing the threads").
    pub server_threads: usize,
    /// Database; `None` means SQLite in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Bearer token of the admin endpoints (its name in audit trails is `admin`); without it
    /// and `admin_tokens` they are disabled.
    pub admin_token: Option<Secret>,
    /// More admin bearer tokens, by name (the name is the actor in the release audit trail),
    /// e.g. `[admin_tokens] ci = "..."`.
    pub admin_tokens: BTreeMap<String, Secret>,
    /// `deployment.environment` of telemetry.
    pub environment: String,
    /// Region label of telemetry.
    pub region: Option<String>,
    /// Seed a small demo catalog into an empty products table at start-up.
    pub seed_demo_catalog: bool,
    /// HTTP edge settings.
    pub http: HttpConfig,
    /// Authentication of the public API: mode, credential cache, JWT validation.
    pub auth: AuthConfig,
    /// Idempotency key handling.
    pub idempotency: IdempotencyConfig,
    /// Data retention: how long published events and inbox records are kept, purge batches.
    pub retention: super::retention::RetentionConfig,
    /// Connection pool.
    pub database: DatabaseConfig,
    /// Plugin runtime budgets and sizing.
    pub runtime: RuntimeConfig,
    /// Which plugins run and with what configuration.
    pub plugins: PluginsConfig,
    /// RabbitMQ URL (`AMQP_URL`); set, events go over the broker (outbox relay, consumer,
    /// backpressure); unset, the embedded default serves them at `/v1/events`. The password
    /// is redacted wherever the URL is shown.
    pub amqp_url: Option<AmqpUrl>,
    /// Exchange, queue, retry and backpressure settings of the broker path.
    pub events: EventsConfig,
    /// Edge and dependency policies, and the catalog cache.
    pub policy: PolicyConfig,
    /// Telemetry: service name, sampling, shutdown flush bound (OTLP export itself is
    /// configured by the standard `OTEL_*` environment variables).
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown: pre-stop delay, drain deadline, interrupt grace.
    pub shutdown: ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("weir-data"),
            server_threads: 0,
            database_url: None,
            admin_token: None,
            admin_tokens: BTreeMap::new(),
            environment: "development".to_owned(),
            region: None,
            seed_demo_catalog: true,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            idempotency: IdempotencyConfig::default(),
            retention: super::retention::RetentionConfig::default(),
            database: DatabaseConfig::default(),
            runtime: RuntimeConfig::default(),
            plugins: PluginsConfig::default(),
            amqp_url: None,
            events: EventsConfig::default(),
            policy: PolicyConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

/// Idempotency key handling (`[idempotency]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key and its stored response are kept.
    #[serde(with = "duration_secs", rename = "retention_secs")]
    pub retention: Duration,
    /// How long an in-progress key blocks others before a crashed holder is presumed dead.
    #[serde(with = "duration_ms", rename = "lock_ttl_ms")]
    pub lock_ttl: Duration,
    /// How often expired keys are purged (in batches of `retention.batch_size`).
    #[serde(with = "duration_secs", rename = "purge_interval_secs")]
    pub purge_interval: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            lock_ttl: Duration::from_secs(30),
            purge_interval: Duration::from_secs(600),
        }
    }
}

/// Connection pool settings (`[database]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a connection.
    #[serde(with = "duration_ms", rename = "acquire_timeout_ms")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

/// Which plugins run and with what configuration (`[plugins]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory of `*.wasm` components loaded at start-up, in addition to the built-in
    /// reference `orders` plugin.
    pub dir: Option<PathBuf>,
    /// Name of the plugin that serves the orders API.
    pub orders: String,
    /// Per-plugin configuration, visible to the plugin through its `config` import.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// Keep compiled components in `<data_dir>/artifacts` so restarts and swaps do not
    /// compile them again.
    pub artifact_cache: bool,
    /// The plugin lifecycle: uploads, sync between replicas, shadows, automatic rollback.
    pub releases: crate::runtime::releases::ReleasesConfig,
    /// Fail closed: any component of `dir` that admission refuses stops start-up. Off, a
    /// refused component is logged, counted and left out, and the rest start.
    pub strict: bool,
    /// What decides orders: the `orders` plugin's component (the default), or, for the
    /// end-to-end benchmark only, the reference plugin's logic linked natively (needs a build
    /// with the `native-decider` feature; see `scripts/bench`).
    pub decider: DeciderKind,
    /// `weir serve --plugin FILE [--watch]` only (no configuration key): the component file
    /// that serves the orders API, and whether it is followed as it changes.
    #[serde(skip)]
    pub file: Option<PluginFile>,
}

/// `weir serve --plugin FILE [--watch]`: the plugin author's dev loop
/// ([`crate::runtime::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFile {
    /// The component file. Loaded at start-up (after `plugins.dir`) and made the stable
    /// version of its plugin, whose name becomes `plugins.orders`; a refusal stops start-up.
    pub path: PathBuf,
    /// Admit the file again whenever it changes, and serve it once admitted.
    pub watch: bool,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            orders: "orders".to_owned(),
            config: BTreeMap::new(),
            artifact_cache: true,
            releases: crate::runtime::releases::ReleasesConfig::default(),
            strict: false,
            decider: DeciderKind::Component,
            file: None,
        }
    }
}

/// `plugins.decider`: what makes the order decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeciderKind {
    /// The active versions of the `plugins.orders` component, sandboxed (production).
    Component,
    /// The reference plugin's logic called natively (benchmarks; `native-decider` builds).
    Native,
}

/// Values from the command line (or their environment variables) that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config` / `WEIR_CONFIG`.
    pub config_file: Option<PathBuf>,
    /// `--listen` / `WEIR_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--ops-listen` / `WEIR_OPS_LISTEN`.
    pub ops_listen: Option<SocketAddr>,
    /// `--data-dir` / `WEIR_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `WEIR_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `AMQP_URL`.
    pub amqp_url: Option<String>,
    /// `REDIS_URL`: `policy.cache.redis_url`.
    pub redis_url: Option<String>,
    /// `weir serve --strict`: sets `plugins.strict` (it never turns it off).
    pub plugins_strict: bool,
    /// `weir serve --plugin FILE [--watch]`: `plugins.file`.
    pub plugin_file: Option<PluginFile>,
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an override could not be read or parsed; the message names the key.
    #[error("configuration error: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidKey),
}

impl Config {
    /// Load from the file named by `overrides` (if any) and `WEIR__*` variables, apply the
    /// overrides, and validate.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &overrides.config_file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("WEIR")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut cfg: Config = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.apply(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Apply command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.ops_listen {
            self.ops_listen = v;
        }
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &o.database_url {
            self.database_url = Some(DatabaseUrl::new(v.clone()));
        }
        if let Some(v) = &o.amqp_url {
            self.amqp_url = Some(AmqpUrl::new(v.clone()));
        }
        if let Some(v) = &o.admin_token {
            self.admin_token = Some(Secret::new(v.clone()));
        }
        if let Some(v) = &o.redis_url {
            self.policy.cache.redis_url = Some(SecretUrl::new(v.clone()));
        }
        if o.plugins_strict {
            self.plugins.strict = true;
        }
        if let Some(file) = &o.plugin_file {
            self.plugins.file = Some(file.clone());
        }
    }

    /// The worker threads the server's async runtime is built with: `server_threads`, or
    /// when 0 half of `cpus`, at least one.
    pub fn server_workers(&self, cpus: usize) -> usize {
        match self.server_threads {
            0 => (cpus / 2).max(1),
            n => n,
        }
    }

    /// Check values that parse but cannot work: each section's own rules, then what spans
    /// sections.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            self.server_threads <= MAX_SERVER_THREADS,
            "server_threads",
            &format!("must be at most {MAX_SERVER_THREADS} (0: half the CPUs, at least one)"),
        )?;
        if let Some(url) = &self.database_url {
            ensure(
                backend_of(url.expose()).is_some(),
                "database_url",
                "must start with postgres://, postgresql:// or sqlite:",
            )?;
        }
        if let Some(t) = &self.admin_token {
            ensure(
                t.expose().len() >= 16,
                "admin_token",
                "must be at least 16 characters",
            )?;
        }
        for (name, token) in &self.admin_tokens {
            ensure(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "admin_tokens",
                "names must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            )?;
            ensure(
                token.expose().len() >= 16,
                "admin_tokens",
                "every token must be at least 16 characters",
            )?;
        }
        ensure(
            self.admin_token.is_none() || !self.admin_tokens.contains_key("admin"),
            "admin_tokens",
            "`admin` is the name of admin_token; choose another name",
        )?;
        ensure(
            self.listen != self.ops_listen || self.listen.port() == 0,
            "ops_listen",
            "must differ from listen",
        )?;
        self.http.validate()?;
        self.auth.validate()?;
        // Refuses an API on a non-loopback address without an authentication mode.
        self.auth.resolve(self.listen)?;
        self.runtime.validate()?;
        ensure(
            self.plugins.decider == DeciderKind::Component || cfg!(feature = "native-decider"),
            "plugins.decider",
            "\"native\" needs a weir built with the native-decider feature \
             (cargo build --release -p weir-host --features native-decider; see scripts/bench)",
        )?;
        ensure(
            self.runtime.instance_wait < self.http.request_timeout,
            "runtime.instance_wait_ms",
            "must be shorter than http.request_timeout_ms (a request refused for want of a \
             plugin instance must get its 503 PLUGIN_BUSY before its own deadline)",
        )?;
        ensure(
            self.database.max_connections > 0,
            "database.max_connections",
            "must be positive",
        )?;
        ensure(
            self.idempotency.lock_ttl > self.http.request_timeout,
            "idempotency.lock_ttl_ms",
            "must be longer than http.request_timeout_ms",
        )?;
        self.telemetry.validate()?;
        self.shutdown.validate()?;
        self.retention.validate()?;
        if let Some(url) = &self.amqp_url {
            ensure(
                url.expose().starts_with("amqp://"),
                "amqp_url",
                "must start with amqp:// (this build has no TLS support for amqps://)",
            )?;
        }
        self.events.validate()?;
        ensure(
            !self.plugins.orders.is_empty(),
            "plugins.orders",
            "must name a plugin",
        )?;
        self.plugins.releases.validate()?;
        self.policy.validate()?;
        // A catalog read tries the cache first and falls back to the database, all within the
        // plugin's catalog deadline: a cache bound at or past that deadline turns a slow or
        // refusing cache into failed orders instead of a fallback.
        ensure(
            self.policy.cache.redis_url.is_none()
                || self.policy.cache.dependency.timeout < self.runtime.catalog_timeout,
            "policy.cache.dependency.timeout_ms",
            "must be shorter than runtime.catalog_timeout_ms (a slow cache must leave time to \
             read the database)",
        )
    }

    /// Settings that work but are likely not what the operator meant, one sentence each
    /// (logged as warnings at start-up). The capacity rule: `policy.max_concurrency` must not
    /// exceed `runtime.max_instances`, so every request the edge admits can hold a plugin
    /// instance; beyond it, requests wait for one (`runtime.instance_wait_ms`) and may be
    /// refused with `503 PLUGIN_BUSY` although the edge admitted them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let (concurrency, instances) = (self.policy.max_concurrency, self.runtime.max_instances);
        if concurrency > instances as usize {
            warnings.push(format!(
                "policy.max_concurrency ({concurrency}) exceeds runtime.max_instances \
                 ({instances}): up to {} admitted requests can find every plugin instance busy, \
                 wait up to runtime.instance_wait_ms ({} ms) and get 503 PLUGIN_BUSY; set \
                 policy.max_concurrency <= runtime.max_instances",
                concurrency - instances as usize,
                self.runtime.instance_wait.as_millis()
            ));
        }
        warnings
    }

    /// The database URL in effect: the configured one or SQLite in `data_dir`.
    pub fn effective_database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| {
            DatabaseUrl::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("weir.db").display()
            ))
        })
    }

    /// The longest `weir serve` takes from its first SIGTERM to exiting, as far as the code
    /// bounds it: the drain ([`ShutdownConfig::drain_bound`]), then the telemetry flush
    /// ([`TelemetryConfig::flush_bound`]). Closing the storage pool in between waits for
    /// connections still checked out and has no bound of its own: an orchestrator's kill
    /// timeout (Kubernetes `terminationGracePeriodSeconds`, systemd `TimeoutStopSec`) should
    /// exceed this by a few seconds (deploy/k8s and deploy/systemd do, checked by
    /// `host/tests/process/deploy.rs`).
    pub fn stop_bound(&self) -> Duration {
        self.shutdown.drain_bound() + self.telemetry.flush_bound()
    }

    /// Every admin token with its name (`admin` for `admin_token`).
    pub fn admin_tokens(&self) -> Vec<(String, Secret)> {
        self.admin_token
            .iter()
            .map(|t| ("admin".to_owned(), t.clone()))
            .chain(
                self.admin_tokens
                    .iter()
                    .map(|(n, t)| (n.clone(), t.clone())),
            )
            .collect()
    }

    /// Short hash of the configuration with secrets redacted, for `/infoz`.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Data directory, created if needed.
    pub fn ensure_data_dir(&self) -> std::io::Result<&Path> {
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(&self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
    }

    /// Unset, the server takes half the CPUs (at least one) and leaves the rest to the plugin
    /// threads; set, exactly what was asked; over 256, refused naming the key.
    #[test]
    fn server_threads_default_to_half_the_cpus() {
        let unset = load("").unwrap();
        let by_cpus: Vec<usize> = [1, 2, 3, 4, 8, 64]
            .into_iter()
            .map(|cpus| unset.server_workers(cpus))
            .collect();
        assert_eq!(by_cpus, [1, 1, 1, 2, 4, 32]);
        let three = load("server_threads = 3").unwrap();
        assert_eq!(three.server_workers(1), 3);
        assert_eq!(three.server_workers(64), 3);
        let err = load("server_threads = 257").unwrap_err().to_string();
        assert!(err.contains("server_threads"), "{err}");
    }

    #[test]
    fn database_password_never_shows() {
        let url = DatabaseUrl::new("postgres://app:hunter2@db:5432/weir");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&url).unwrap().contains("hunter2"));
        let query = DatabaseUrl::new("postgres://db/weir?user=app&password=hunter2");
        assert!(!format!("{query:?}").contains("hunter2"), "{query:?}");
        assert_eq!(backend_of(url.expose()), Some("postgres"));
        let cfg = Config {
            database_url: Some(url),
            admin_token: Some(Secret::new("super-secret-admin-token")),
            ..Config::default()
        };
        let shown = format!("{cfg:?} {}", serde_json::to_string(&cfg).unwrap());
        assert!(!shown.contains("hunter2") && !shown.contains("super-secret"));
    }

    #[test]
    fn file_values_load_and_bad_keys_are_named() {
        let cfg = load("listen = \"127.0.0.1:0\"\n[runtime.budget]\ntimeout_ms = 250\n").unwrap();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.runtime.budget.timeout, Duration::from_millis(250));

        let err = load("[runtime.budget]\ntimeout_msec = 250\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timeout_msec"), "{err}");

        let err = load("[runtime.budget]\ntimeout_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.budget.timeout_ms"), "{err}");
    }

    #[test]
    fn listener_limits_take_their_own_listener_defaults_and_bad_values_are_named() {
        use crate::http::ListenerLimits;
        let cfg =
            load("[http.ops]\nmax_connections = 10\n[http]\nbody_timeout_ms = 3000\n").unwrap();
        assert_eq!(
            cfg.http.ops,
            ListenerLimits {
                max_connections: 10,
                ..ListenerLimits::OPS
            },
            "keys missing from [http.ops] take the operations listener's defaults"
        );
        assert_eq!(cfg.http.api, ListenerLimits::API);
        assert_eq!(cfg.http.body_timeout, Duration::from_secs(3));
        let env_like = load("[http.api]\nheader_read_timeout_ms = 20000\n").unwrap();
        assert_eq!(
            env_like.http.api.header_read_timeout,
            Duration::from_secs(20)
        );

        for (toml, key) in [
            (
                "[http.api]\nmax_connections = 0\n",
                "http.api.max_connections",
            ),
            (
                "[http.ops]\nidle_timeout_ms = 6000\n",
                "http.ops.idle_timeout_ms",
            ),
            (
                "[http.api]\nmax_header_bytes = 100\n",
                "http.api.max_header_bytes",
            ),
            ("[http]\nbody_timeout_ms = 0\n", "http.body_timeout_ms"),
            (
                "[http]\nbody_timeout_ms = 1000\n",
                "http.body_min_rate_grace_ms",
            ),
            ("[http.api]\nmax_conections = 5\n", "max_conections"),
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn policy_settings_load_from_toml_and_bad_values_are_named() {
        let cfg = load(
            "[policy]\nmax_concurrency = 32\nroute_timeouts_ms = { \"/v1/orders\" = 3000 }\n\
             [policy.rate_limit]\nper_second = 10\nburst = 20\n\
             [policy.database.breaker]\nfailure_rate = 0.25\nopen_ms = 1000\n\
             [policy.cache]\nttl_ms = 0\n\
             [policy.adaptive_concurrency]\nenabled = true\nmin_concurrency = 4\n\
             min_rtt_interval_ms = 30000\n",
        )
        .unwrap();
        let p = &cfg.policy;
        assert_eq!(p.max_concurrency, 32);
        assert!(p.adaptive_concurrency.enabled);
        assert_eq!(p.adaptive_concurrency.min_concurrency, 4);
        assert_eq!(
            p.adaptive_concurrency.min_rtt_interval,
            Duration::from_secs(30)
        );
        assert_eq!(p.adaptive_concurrency.update_interval.as_millis(), 100);
        assert_eq!(p.route_timeouts_ms["/v1/orders"], 3000);
        assert_eq!((p.rate_limit.per_second, p.rate_limit.burst), (10, 20));
        assert_eq!(p.database.breaker.failure_rate, 0.25);
        assert_eq!(p.database.breaker.open_for, Duration::from_secs(1));
        assert!(p.cache.ttl.is_zero());

        for (toml, key) in [
            ("[policy]\nmax_concurrency = 0\n", "policy.max_concurrency"),
            (
                "[policy]\nmax_concurrency = 8\n\
                 [policy.adaptive_concurrency]\nenabled = true\nmin_concurrency = 9\n",
                "policy.adaptive_concurrency",
            ),
            (
                "[policy.adaptive_concurrency]\nenabled = true\nupdate_interval_ms = 0\n",
                "policy.adaptive_concurrency",
            ),
            ("[policy.adaptive_concurrency]\nenabld = true\n", "enabld"),
            (
                "[policy.database.breaker]\nfailure_rate = 1.5\n",
                "policy.database",
            ),
            (
                "[policy.plugin_breaker]\nmin_calls = 0\n",
                "policy.plugin_breaker",
            ),
            (
                "[policy.cache]\nredis_url = \"redis://127.0.0.1:6379/0\"\n\
                 [policy.cache.dependency]\ntimeout_ms = 200\n",
                "policy.cache.dependency.timeout_ms",
            ),
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let err = load("[policy]\nmax_concurency = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurency"), "{err}");
    }

    #[test]
    fn concurrency_and_instances_agree_by_default_and_a_mismatch_is_warned() {
        let cfg = load("").unwrap();
        assert!(
            cfg.policy.max_concurrency <= cfg.runtime.max_instances as usize,
            "defaults: max_concurrency {} > max_instances {}",
            cfg.policy.max_concurrency,
            cfg.runtime.max_instances
        );
        assert_eq!(cfg.warnings(), Vec::<String>::new());
        assert_eq!(cfg.runtime.instance_wait, Duration::from_millis(1000));

        let cfg = load("[runtime]\nmax_instances = 16\ninstance_wait_ms = 250\n").unwrap();
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        for part in [
            "policy.max_concurrency (128) exceeds runtime.max_instances (16)",
            "up to 112 admitted requests",
            "250 ms",
            "503 PLUGIN_BUSY",
        ] {
            assert!(warnings[0].contains(part), "{part:?} not in {warnings:?}");
        }
        let cfg = load("[runtime]\nmax_instances = 16\n[policy]\nmax_concurrency = 16\n").unwrap();
        assert_eq!(cfg.warnings(), Vec::<String>::new());
    }

    #[test]
    fn the_instance_wait_is_bounded_and_shorter_than_the_request_timeout() {
        let cfg = load("[runtime]\ninstance_wait_ms = 0\n").unwrap();
        assert!(cfg.runtime.instance_wait.is_zero());
        for toml in [
            "[runtime]\ninstance_wait_ms = 5000\n",
            "[runtime]\ninstance_wait_ms = 3000\n[http]\nrequest_timeout_ms = 2000\n",
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(
                err.contains("runtime.instance_wait_ms") && err.contains("http.request_timeout_ms"),
                "{toml}: {err}"
            );
        }
        let err =
            load("[runtime]\ninstance_wait_ms = 60001\n[http]\nrequest_timeout_ms = 120000\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("runtime.instance_wait_ms"), "{err}");
        let err = load("[runtime]\nmax_instances = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime.max_instances"), "{err}");
    }

    #[test]
    fn core_instances_per_component_are_bounded() {
        assert_eq!(load("").unwrap().runtime.budget.core_instances, 32);
        let cfg = load("[runtime.budget]\ncore_instances = 64\n").unwrap();
        assert_eq!(cfg.runtime.budget.core_instances, 64);
        for toml in [
            "[runtime.budget]\ncore_instances = 0\n",
            "[runtime.budget]\ncore_instances = 1025\n",
            "[runtime]\nmax_instances = 65536\n[runtime.budget]\ncore_instances = 17\n",
        ] {
            let err = load(toml).unwrap_err().to_string();
            assert!(
                err.contains("runtime.budget.core_instances"),
                "{toml}: {err}"
            );
        }
    }

    #[test]
    fn the_redis_url_comes_from_its_override_and_its_password_never_shows() {
        let mut cfg = load("").unwrap();
        cfg.apply(&Overrides {
            redis_url: Some("redis://:hunter2@cache:6379/0".into()),
            ..Overrides::default()
        });
        let url = cfg
            .policy
            .cache
            .redis_url
            .as_ref()
            .expect("set by REDIS_URL");
        assert_eq!(url.expose(), "redis://:hunter2@cache:6379/0");
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&cfg).unwrap().contains("hunter2"));
    }

    #[test]
    fn the_plugin_file_comes_only_from_the_command_line() {
        assert_eq!(load("").unwrap().plugins.file, None);
        let err = load("[plugins]\nfile = \"x.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("file"), "not a configuration key: {err}");
        let mut cfg = load("").unwrap();
        let file = PluginFile {
            path: PathBuf::from("x.wasm"),
            watch: true,
        };
        cfg.apply(&Overrides {
            plugin_file: Some(file.clone()),
            ..Overrides::default()
        });
        assert_eq!(cfg.plugins.file, Some(file));
    }

    #[test]
    fn plugins_strict_is_off_by_default_and_set_by_the_file_or_the_flag() {
        assert!(!load("").unwrap().plugins.strict);
        assert!(load("[plugins]\nstrict = true\n").unwrap().plugins.strict);
        let mut cfg = load("[plugins]\nstrict = false\n").unwrap();
        cfg.apply(&Overrides {
            plugins_strict: true,
            ..Overrides::default()
        });
        assert!(cfg.plugins.strict, "--strict turns it on");
        let mut cfg = load("[plugins]\nstrict = true\n").unwrap();
        cfg.apply(&Overrides::default());
        assert!(cfg.plugins.strict, "no flag leaves the file's value");
    }

    #[test]
    fn amqp_password_never_shows() {
        let url = AmqpUrl::new("amqp://weir:hunter2@mq:5672/%2f");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&url).unwrap().contains("hunter2"));
        assert_eq!(url.redacted(), "amqp://weir:[redacted]@mq:5672/%2f");
        let config = Config {
            amqp_url: Some(url),
            ..Config::default()
        };
        let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(config.validate().is_ok());
        let bad = Config {
            amqp_url: Some(AmqpUrl::new("amqps://mq")),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("amqp_url"));
    }

    #[test]
    fn the_events_section_loads_from_a_file_and_bad_keys_are_named() {
        let cfg = load(
            "amqp_url = \"amqp://u:p@mq:5672/%2f\"\n[events]\nqueue = \"q1\"\nprefetch = 4\n\
             retry_delay_ms = 100\n[events.backpressure]\nmax_unpublished = 10\n\
             resume_unpublished = 5\nretry_after_secs = 3\n",
        )
        .unwrap();
        assert_eq!(cfg.amqp_url.unwrap().expose(), "amqp://u:p@mq:5672/%2f");
        assert_eq!(cfg.events.queue, "q1");
        assert_eq!(cfg.events.dead_letter_queue(), "q1.dlq");
        assert_eq!(cfg.events.prefetch, 4);
        assert_eq!(cfg.events.retry_delay, Duration::from_millis(100));
        assert_eq!(cfg.events.backpressure.max_unpublished, 10);
        assert_eq!(cfg.events.backpressure.retry_after, Duration::from_secs(3));
        assert_eq!(cfg.events.exchange, "weir.orders", "defaults fill the rest");

        let err = load("[events.backpressure]\nmax_unpublished = 10\nresume_unpublished = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("events.backpressure.resume_unpublished"),
            "{err}"
        );
    }
}
