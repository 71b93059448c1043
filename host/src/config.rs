//! Configuration: defaults, then a TOML file, then `WEIR__SECTION__KEY` environment
//! overrides, then the command line (whose flags also read `WEIR_LISTEN`, `WEIR_OPS_LISTEN`,
//! `WEIR_DATA_DIR`, `WEIR_CONFIG`, `DATABASE_URL`, `WEIR_ADMIN_TOKEN`).
//!
//! Validation happens once at start-up and every error names the offending key. Secrets
//! (database password, admin token) are wrapped in [`Secret`] or redacted in [`DatabaseUrl`]
//! so they never reach logs, `Debug` output or `/infoz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::runtime::RuntimeConfig;

/// A secret string: `Debug` and `Serialize` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A database URL whose password is redacted everywhere it is shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wrap a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included; pass only to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (userinfo or `password=` parameter) replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        crate::storage::redact_url(&self.0)
    }

    /// `postgres` or `sqlite`, or `None` for other schemes.
    pub fn backend(&self) -> Option<&'static str> {
        let scheme = self.0.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Some("postgres"),
            "sqlite" => Some("sqlite"),
            _ => None,
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(DatabaseUrl)
    }
}

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
    /// Database; `None` means SQLite in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Bearer token of the admin endpoints; without it they are disabled.
    pub admin_token: Option<Secret>,
    /// `deployment.environment` of telemetry.
    pub environment: String,
    /// Region label of telemetry.
    pub region: Option<String>,
    /// Seed a small demo catalog into an empty products table at start-up.
    pub seed_demo_catalog: bool,
    /// HTTP edge settings.
    pub http: HttpConfig,
    /// Idempotency key handling.
    pub idempotency: IdempotencyConfig,
    /// Connection pool.
    pub database: DatabaseConfig,
    /// Plugin runtime budgets and sizing.
    pub runtime: RuntimeConfig,
    /// Which plugins run and with what configuration.
    pub plugins: PluginsConfig,
    /// RabbitMQ URL (`AMQP_URL`); set, events go over the broker (outbox relay, consumer,
    /// backpressure); unset, the embedded default serves them at `/v1/events`. The password
    /// is redacted wherever the URL is shown.
    pub amqp_url: Option<crate::events::AmqpUrl>,
    /// Exchange, queue, retry and backpressure settings of the broker path.
    pub events: crate::events::EventsConfig,
    /// Edge and dependency policies, and the catalog cache.
    pub policy: crate::policy::PolicyConfig,
    /// Telemetry: service name, sampling, shutdown flush bound (OTLP export itself is
    /// configured by the standard `OTEL_*` environment variables).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Graceful shutdown: pre-stop delay, drain deadline, interrupt grace.
    pub shutdown: crate::shutdown::ShutdownConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: PathBuf::from("weir-data"),
            database_url: None,
            admin_token: None,
            environment: "development".to_owned(),
            region: None,
            seed_demo_catalog: true,
            http: HttpConfig::default(),
            idempotency: IdempotencyConfig::default(),
            database: DatabaseConfig::default(),
            runtime: RuntimeConfig::default(),
            plugins: PluginsConfig::default(),
            amqp_url: None,
            events: crate::events::EventsConfig::default(),
            policy: crate::policy::PolicyConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
            shutdown: crate::shutdown::ShutdownConfig::default(),
        }
    }
}

/// HTTP edge settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Deadline of one request, plugin call and database work included.
    #[serde(with = "duration_ms", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 << 10,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Idempotency key handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a key and its stored response are kept.
    #[serde(with = "duration_secs", rename = "retention_secs")]
    pub retention: Duration,
    /// How long an in-progress key blocks others before a crashed holder is presumed dead.
    #[serde(with = "duration_ms", rename = "lock_ttl_ms")]
    pub lock_ttl: Duration,
    /// How often expired keys are purged.
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

/// Connection pool settings.
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

/// Which plugins run and with what configuration.
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
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            orders: "orders".to_owned(),
            config: BTreeMap::new(),
        }
    }
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
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an override could not be read or parsed; the message names the key.
    #[error("configuration error: {0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `runtime.budget.timeout_ms`.
        key: &'static str,
        /// Why it is rejected.
        reason: String,
    },
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
            self.amqp_url = Some(crate::events::AmqpUrl::new(v.clone()));
        }
        if let Some(v) = &o.admin_token {
            self.admin_token = Some(Secret::new(v.clone()));
        }
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Some(url) = &self.database_url
            && url.backend().is_none()
        {
            return invalid(
                "database_url",
                "must start with postgres://, postgresql:// or sqlite:",
            );
        }
        if let Some(t) = &self.admin_token
            && t.expose().len() < 16
        {
            return invalid("admin_token", "must be at least 16 characters");
        }
        if self.listen == self.ops_listen && self.listen.port() != 0 {
            return invalid("ops_listen", "must differ from listen");
        }
        if self.http.body_limit_bytes < 1024 {
            return invalid("http.body_limit_bytes", "must be at least 1024");
        }
        if self.http.request_timeout.is_zero() {
            return invalid("http.request_timeout_ms", "must be positive");
        }
        let b = &self.runtime.budget;
        if b.timeout.is_zero() {
            return invalid("runtime.budget.timeout_ms", "must be positive");
        }
        if b.memory_bytes < (1 << 20) {
            return invalid("runtime.budget.memory_bytes", "must be at least 1 MiB");
        }
        if self.runtime.epoch_tick.is_zero() || self.runtime.epoch_tick > b.timeout {
            return invalid(
                "runtime.epoch_tick_ms",
                "must be positive and not above runtime.budget.timeout_ms",
            );
        }
        if self.runtime.max_instances == 0 {
            return invalid("runtime.max_instances", "must be positive");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be positive");
        }
        if self.idempotency.lock_ttl <= self.http.request_timeout {
            return invalid(
                "idempotency.lock_ttl_ms",
                "must be longer than http.request_timeout_ms",
            );
        }
        if let Err((key, reason)) = self.telemetry.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Err((key, reason)) = self.shutdown.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if let Some(url) = &self.amqp_url
            && !url.expose().starts_with("amqp://")
        {
            return invalid(
                "amqp_url",
                "must start with amqp:// (this build has no TLS support for amqps://)",
            );
        }
        if let Err((key, reason)) = self.events.validate() {
            return Err(ConfigError::Invalid { key, reason });
        }
        if self.plugins.orders.is_empty() {
            return invalid("plugins.orders", "must name a plugin");
        }
        self.policy.validate()?;
        Ok(())
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

/// Serde helper: a [`Duration`] written as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialize from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Serde helper: a [`Duration`] written as whole seconds.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Deserialize from seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_password_never_shows() {
        let url = DatabaseUrl::new("postgres://app:hunter2@db:5432/weir");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&url).unwrap().contains("hunter2"));
        let query = DatabaseUrl::new("postgres://db/weir?user=app&password=hunter2");
        assert!(!format!("{query:?}").contains("hunter2"), "{query:?}");
        assert_eq!(url.backend(), Some("postgres"));
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:0\"\n[runtime.budget]\ntimeout_ms = 250\n",
        )
        .unwrap();
        let cfg = Config::load(&Overrides {
            config_file: Some(path.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.runtime.budget.timeout, Duration::from_millis(250));

        std::fs::write(&path, "[runtime.budget]\ntimeout_msec = 250\n").unwrap();
        let err = Config::load(&Overrides {
            config_file: Some(path.clone()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("timeout_msec"), "{err}");

        std::fs::write(&path, "[runtime.budget]\ntimeout_ms = 0\n").unwrap();
        let err = Config::load(&Overrides {
            config_file: Some(path),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("runtime.budget.timeout_ms"), "{err}");
    }
}
