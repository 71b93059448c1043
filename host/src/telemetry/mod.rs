//! Telemetry: JSON logs on stdout and OpenTelemetry traces, metrics and logs over OTLP.
//!
//! # What is built
//! - A `tracing` subscriber with two sides. Stdout gets one JSON object per line
//!   ([`JsonLines`]) filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]); every line carries
//!   `trace_id`/`span_id` of the active span and the `request_id` of the enclosing request.
//!   The OpenTelemetry side is the `tracing-opentelemetry` layer (spans) and the
//!   `opentelemetry-appender-tracing` bridge (log records, correlated with the active span),
//!   each behind its own filter that drops the exporter's own crates (hyper, h2, tonic, tower,
//!   reqwest, opentelemetry) so the exporter never reports on itself.
//! - Three SDK providers sharing one [`Resource`]: `service.name` (`telemetry.service_name`
//!   or `OTEL_SERVICE_NAME`), `service.version`, `service.instance.id` (a UUID per process
//!   unless `OTEL_RESOURCE_ATTRIBUTES` names one), `deployment.environment.name` and the older
//!   `deployment.environment` (`environment`), `cloud.region` (`region`), plus everything in
//!   `OTEL_RESOURCE_ATTRIBUTES`.
//! - Export: a signal is exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` or its
//!   signal-specific `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` is set (and neither
//!   `OTEL_SDK_DISABLED=true` nor `OTEL_{TRACES,METRICS,LOGS}_EXPORTER=none`). The protocol
//!   follows `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL` (`grpc` or `http/protobuf`, the
//!   default); timeouts, headers and batch/interval settings follow the standard `OTEL_*`
//!   variables the SDK reads. With no endpoint nothing is exported and nothing is logged about
//!   it: spans still get real trace ids so logs and problem bodies stay correlated.
//! - Sampling: parent-based with a live root ratio and per-route overrides, a caller's
//!   sampled flag honoured only on routes `telemetry.sampling.trust_incoming` trusts
//!   ([`sampling`]);
//!   operators change the ratio through the operations API (`PUT /admin/telemetry/sampling`)
//!   and see it in `/infoz`.
//! - Propagation: W3C `traceparent`/`tracestate` ([`extract_http`], [`inject_current`],
//!   [`context_from`], [`traceparent_of`]).
//!
//! # For other modules
//! - Outbox writers call [`inject_current`] inside the request span; the relay publishing a
//!   row later (and a consumer receiving a message) calls [`context_from`] with the stored
//!   `traceparent`/`tracestate` and sets it as the parent of its `amqp.*` span with
//!   `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent` before first entering it.
//! - Outbox rows written in a request take `RequestContext::traceparent`/`tracestate` (the
//!   `http.server` span's context), so the relay continues the request's trace.
//! - Metrics: [`metrics`] owns the process's `SdkMeterProvider` (Prometheus `/metrics`)
//!   and passes its builder through [`extend_meter_provider`], which merges in this pipeline's
//!   resource and adds the OTLP periodic reader ([`otlp_metric_reader`]) when metrics are
//!   exported. [`Telemetry`] builds a provider of its own only when asked to
//!   ([`TelemetryOptions::meter_provider`], for embedding and tests).
//! - Database calls: the storage module's traced store wraps every call in [`traced`] with a
//!   [`db_span`]; besides the span it shields
//!   the request's spans from drivers that keep `Span::current()` alive (sqlx's SQLite
//!   worker), which would otherwise hold the request's root span open.
//!
//! # Shutdown
//! [`TelemetryGuard::shutdown`] flushes and shuts down the three providers (the meter
//! provider of [`metrics`] included) in parallel on a blocking thread (their exporters
//! block), bounded by `telemetry.shutdown_timeout_ms`; `main` calls it after the drain. At the
//! bound the flush thread is abandoned (warning with `code` [`FLUSH_TIMEOUT_CODE`]) and `main`
//! stops the Tokio runtime without waiting for blocking threads, so an exporter stuck on a
//! collector that never answers cannot hold the exit: the SDK's own shutdown timeouts are
//! not all honoured (the periodic metric reader waits a fixed 5 s) and an exporter's request
//! timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`) is the operator's to set.

mod json;
pub mod metrics;
pub mod sampling;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_semantic_conventions::resource as semres;
use serde::{Deserialize, Serialize};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

pub use json::{JsonLines, SpanFields};
pub use sampling::{SamplingControl, SamplingView, TrustIncoming};

use crate::support::{InvalidKey, ensure};

/// Stdout log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str =
    "info,sqlx=warn,hyper=warn,h2=warn,tower=warn,tonic=warn,reqwest=warn,opentelemetry=warn";

/// Targets never sent to the OpenTelemetry layers: the exporter's own stack.
const EXPORTER_TARGETS: [&str; 8] = [
    "hyper",
    "hyper_util",
    "h2",
    "tonic",
    "tower",
    "reqwest",
    "opentelemetry",
    "opentelemetry_sdk",
];

/// Target of the detached span database drivers see (see [`traced`]); never exported.
const DB_CARRIER_TARGET: &str = "weir::db_carrier";

/// Instrumentation scope of Weir's spans and log records.
pub const SCOPE: &str = "weir";

/// `[telemetry]`: service identity, sampling and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
    /// Head sampling.
    pub sampling: SamplingConfig,
    /// Bound on flushing all providers at shutdown.
    #[serde(with = "crate::support::duration_ms", rename = "shutdown_timeout_ms")]
    pub shutdown_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "weir".to_owned(),
            sampling: SamplingConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// `[telemetry.sampling]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Fraction of root traces sampled (0.0-1.0); callers' sampled flags always win.
    pub ratio: f64,
    /// Route template (e.g. `/v1/products`) -> ratio for root traces of that route.
    pub routes: BTreeMap<String, f64>,
    /// Where the sampled flag of an incoming `traceparent` is honoured: `"none"` (default:
    /// the ratio decides, so a client cannot force or suppress export), `"all"`, or a list
    /// of route templates. See [`sampling`].
    pub trust_incoming: TrustIncoming,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            routes: BTreeMap::new(),
            trust_incoming: TrustIncoming::None,
        }
    }
}

/// The `code` of the warning logged when the shutdown flush outlives its bound (a collector
/// that is down, or accepts connections and never answers); what was not exported by then is
/// dropped and the process exits anyway.
pub const FLUSH_TIMEOUT_CODE: &str = "TELEMETRY_FLUSH_TIMEOUT";

/// How long the flush thread gets beyond `telemetry.shutdown_timeout_ms` before
/// [`TelemetryGuard::shutdown`] gives up on it.
pub const FLUSH_THREAD_MARGIN: Duration = Duration::from_millis(500);

impl TelemetryConfig {
    /// The longest [`TelemetryGuard::shutdown`] (the last step of `weir serve`) waits:
    /// `shutdown_timeout` plus [`FLUSH_THREAD_MARGIN`].
    pub fn flush_bound(&self) -> Duration {
        self.shutdown_timeout + FLUSH_THREAD_MARGIN
    }

    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        ensure(
            !self.service_name.trim().is_empty(),
            "telemetry.service_name",
            "must not be empty",
        )?;
        sampling::check_ratio(self.sampling.ratio)
            .map_err(|e| InvalidKey::new("telemetry.sampling.ratio", e.to_string()))?;
        for (route, ratio) in &self.sampling.routes {
            if !route.starts_with('/') {
                return Err(InvalidKey::new(
                    "telemetry.sampling.routes",
                    format!("{route:?} must be a route template starting with /"),
                ));
            }
            sampling::check_ratio(*ratio).map_err(|e| {
                InvalidKey::new("telemetry.sampling.routes", format!("{route}: {e}"))
            })?;
        }
        if let TrustIncoming::Routes(routes) = &self.sampling.trust_incoming
            && let Some(route) = routes.iter().find(|r| !r.starts_with('/'))
        {
            return Err(InvalidKey::new(
                "telemetry.sampling.trust_incoming",
                format!("{route:?} must be a route template starting with /"),
            ));
        }
        ensure(
            !self.shutdown_timeout.is_zero(),
            "telemetry.shutdown_timeout_ms",
            "must be positive",
        )
    }
}

/// Telemetry set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OTLP exporter could not be built (bad endpoint, protocol or headers).
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// Cause.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The sampling configuration is invalid.
    #[error(transparent)]
    Sampling(#[from] sampling::InvalidRatio),
    /// A global subscriber was already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Where the OTLP exporters send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// Export nothing.
    Disabled,
    /// The standard `OTEL_*` environment variables decide (see the module doc).
    FromEnv,
    /// Every signal over OTLP/gRPC to this endpoint (tests and embedding).
    Grpc(String),
}

/// Which signals are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Signals {
    /// Spans.
    pub traces: bool,
    /// Metrics.
    pub metrics: bool,
    /// Log records.
    pub logs: bool,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

impl Export {
    /// The signals this target exports.
    pub fn signals(&self) -> Signals {
        match self {
            Export::Disabled => Signals::default(),
            Export::Grpc(_) => Signals {
                traces: true,
                metrics: true,
                logs: true,
            },
            Export::FromEnv => {
                if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim() == "true") {
                    return Signals::default();
                }
                let generic = env_set("OTEL_EXPORTER_OTLP_ENDPOINT");
                let on = |signal: &str| {
                    let exporter = std::env::var(format!("OTEL_{signal}_EXPORTER"))
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    (generic || env_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
                        && exporter.trim() != "none"
                };
                Signals {
                    traces: on("TRACES"),
                    metrics: on("METRICS"),
                    logs: on("LOGS"),
                }
            }
        }
    }
}

/// Identity and sampling of one telemetry pipeline.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// `service.name` (ignored when `OTEL_SERVICE_NAME` is set).
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// `service.instance.id`.
    pub instance_id: String,
    /// `deployment.environment.name`.
    pub environment: String,
    /// `cloud.region`.
    pub region: Option<String>,
    /// Root ratio and route overrides.
    pub sampling: SamplingConfig,
    /// Export target.
    pub export: Export,
    /// Build an `SdkMeterProvider` with the OTLP reader (when metrics are exported). Off when
    /// another module owns the process's meter provider and adds [`otlp_metric_reader`].
    pub meter_provider: bool,
}

impl TelemetryOptions {
    /// Options for `config` in `environment` (and `region`), exporting per the process
    /// environment (`OTEL_*`).
    pub fn from_config(config: &TelemetryConfig, environment: &str, region: Option<&str>) -> Self {
        Self {
            service_name: config.service_name.clone(),
            service_version: crate::support::VERSION.to_owned(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            environment: environment.to_owned(),
            region: region.map(str::to_owned),
            sampling: config.sampling.clone(),
            export: Export::FromEnv,
            // [`metrics`] owns the process's meter provider (Prometheus + OTLP).
            meter_provider: false,
        }
    }
}

/// The resource every signal carries (see the module doc for precedence).
pub fn resource(opts: &TelemetryOptions) -> Resource {
    let from_env = Resource::builder().build();
    let mut builder = Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        builder = builder.with_service_name(opts.service_name.clone());
    }
    let instance_key = opentelemetry::Key::from_static_str(semres::SERVICE_INSTANCE_ID);
    if from_env.get(&instance_key).is_none() {
        builder = builder.with_attribute(KeyValue::new(
            semres::SERVICE_INSTANCE_ID,
            opts.instance_id.clone(),
        ));
    }
    builder = builder.with_attributes([
        KeyValue::new(semres::SERVICE_VERSION, opts.service_version.clone()),
        KeyValue::new(
            semres::DEPLOYMENT_ENVIRONMENT_NAME,
            opts.environment.clone(),
        ),
        // The pre-1.27 key, still what many dashboards group by.
        KeyValue::new("deployment.environment", opts.environment.clone()),
    ]);
    if let Some(region) = &opts.region {
        builder = builder.with_attribute(KeyValue::new(semres::CLOUD_REGION, region.clone()));
    }
    builder.build()
}

fn exporter_error(
    signal: &'static str,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> TelemetryError {
    move |source| TelemetryError::Exporter { signal, source }
}

/// The OTLP periodic metric reader for `export`, or `None` when metrics are not exported.
/// Must be called inside a Tokio runtime when the protocol is gRPC.
pub fn otlp_metric_reader(
    export: &Export,
) -> Result<Option<PeriodicReader<opentelemetry_otlp::MetricExporter>>, TelemetryError> {
    if !export.signals().metrics {
        return Ok(None);
    }
    let exporter = match export {
        Export::Grpc(endpoint) => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build(),
        _ => opentelemetry_otlp::MetricExporter::builder().build(),
    }
    .map_err(exporter_error("metrics"))?;
    Ok(Some(PeriodicReader::builder(exporter).build()))
}

/// For the module that builds the process's `SdkMeterProvider` ([`metrics`]): merge in
/// the resource of the pipeline installed by [`init`] and add its OTLP periodic reader when
/// metrics are exported. Without an installed pipeline the builder is returned unchanged.
/// Call inside the Tokio runtime (the gRPC exporter needs it).
pub fn extend_meter_provider(
    builder: MeterProviderBuilder,
) -> Result<MeterProviderBuilder, TelemetryError> {
    let Some(t) = global() else {
        return Ok(builder);
    };
    let builder = builder.with_resource(t.resource.clone());
    Ok(match otlp_metric_reader(&t.export)? {
        Some(reader) if t.signals.metrics => builder.with_reader(reader),
        _ => builder,
    })
}

/// One telemetry pipeline: the three providers, their resource and the live sampling.
#[derive(Debug)]
pub struct Telemetry {
    resource: Resource,
    tracer_provider: SdkTracerProvider,
    logger_provider: Option<SdkLoggerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    sampling: Arc<SamplingControl>,
    signals: Signals,
    export: Export,
}

impl Telemetry {
    /// Build the providers. gRPC exporters need to be built inside a Tokio runtime.
    pub fn build(opts: &TelemetryOptions) -> Result<Self, TelemetryError> {
        let resource = resource(opts);
        let signals = opts.export.signals();
        let sampling = Arc::new(SamplingControl::new(
            opts.sampling.ratio,
            opts.sampling.routes.clone(),
            opts.sampling.trust_incoming.clone(),
        )?);

        let mut tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(sampling::EdgeSampler::new(sampling.clone()));
        if signals.traces {
            let exporter = match &opts.export {
                Export::Grpc(endpoint) => opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build(),
                _ => opentelemetry_otlp::SpanExporter::builder().build(),
            }
            .map_err(exporter_error("traces"))?;
            tracer = tracer.with_batch_exporter(exporter);
        }
        let tracer_provider = tracer.build();

        let logger_provider = if signals.logs {
            let exporter = match &opts.export {
                Export::Grpc(endpoint) => opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build(),
                _ => opentelemetry_otlp::LogExporter::builder().build(),
            }
            .map_err(exporter_error("logs"))?;
            Some(
                SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(exporter)
                    .build(),
            )
        } else {
            None
        };

        let meter_provider = if opts.meter_provider {
            otlp_metric_reader(&opts.export)?.map(|reader| {
                SdkMeterProvider::builder()
                    .with_resource(resource.clone())
                    .with_reader(reader)
                    .build()
            })
        } else {
            None
        };

        Ok(Self {
            resource,
            tracer_provider,
            logger_provider,
            meter_provider,
            sampling,
            signals,
            export: opts.export.clone(),
        })
    }

    /// The OpenTelemetry layers (spans, and log records when logs are exported), each with
    /// its own filter. Add them to a registry beside the stdout layer.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let quiet = |default: LevelFilter| {
            Targets::new()
                .with_default(default)
                .with_targets(EXPORTER_TARGETS.map(|t| (t, LevelFilter::OFF)))
                .with_target(DB_CARRIER_TARGET, LevelFilter::OFF)
        };
        // Debug-level spans (the `plugin.import.*` spans) belong in traces even when stdout
        // is at info. When traces are not exported nobody can see them, and making them
        // costs the most on the plugin path (a `place-order` makes nine imports): the
        // info-level spans stay, for the trace ids of log lines and problem responses, and
        // events are left out (a span's events, status and exceptions are only ever read by
        // the exporter).
        let exported = self.signals.traces;
        let span_level = if exported {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        };
        // The level test repeats `quiet`'s so the filter can carry a level hint: joined with
        // `and`, a filter without one would take the span layer's hint away.
        let events = tracing_subscriber::filter::filter_fn(move |meta| {
            (exported || meta.is_span()) && span_level >= *meta.level()
        })
        .with_max_level_hint(span_level);
        // No thread attributes (a request's spans hop between the server's and the plugin
        // threads, so a thread name says little) and no busy/idle timings (two clock reads
        // at every enter and exit of every span): neither is read by our dashboards, and
        // both cost on every span of the plugin path.
        let spans = tracing_opentelemetry::layer()
            .with_tracer(self.tracer_provider.tracer(SCOPE))
            .with_level(true)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(quiet(span_level).and(events));
        // Keeps the database carrier span (see [`traced`]) enabled whatever the other
        // filters say: a disabled span cannot become the current span.
        let carrier = tracing_subscriber::layer::Identity::new()
            .with_filter(Targets::new().with_target(DB_CARRIER_TARGET, LevelFilter::INFO));
        // The span layer goes last (outermost). `tracing-subscriber` (0.3) gives a stack of
        // layers joined with `and_then` over the registry the level hint of its outermost
        // layer alone; the span layer's is the highest of the three, so a subscriber made of
        // these layers alone still enables debug-level spans (a test pins this).
        let inner = match &self.logger_provider {
            Some(provider) => carrier
                .and_then(
                    OpenTelemetryTracingBridge::new(provider).with_filter(quiet(LevelFilter::INFO)),
                )
                .boxed(),
            None => carrier.boxed(),
        };
        inner.and_then(spans).boxed()
    }

    /// The resource shared by every signal.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The live sampling control.
    pub fn sampling(&self) -> &Arc<SamplingControl> {
        &self.sampling
    }

    /// Signals being exported.
    pub fn signals(&self) -> Signals {
        self.signals
    }

    /// The meter provider this pipeline built, if any.
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter_provider.as_ref()
    }

    /// Export everything buffered now, off the async threads.
    pub async fn flush(&self) {
        let tracer = self.tracer_provider.clone();
        let logger = self.logger_provider.clone();
        let meter = self.meter_provider.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = tracer.force_flush();
            if let Some(l) = logger {
                let _ = l.force_flush();
            }
            if let Some(m) = meter {
                let _ = m.force_flush();
            }
        })
        .await;
    }

    /// Flush and shut down the three providers in parallel, each bounded by `timeout`.
    /// Blocks: call from a blocking thread.
    fn shutdown_blocking(
        &self,
        timeout: Duration,
        extra_meter: Option<SdkMeterProvider>,
    ) -> Vec<(&'static str, String)> {
        let meter = self.meter_provider.clone().or(extra_meter);
        std::thread::scope(|s| {
            let traces = s.spawn(|| self.tracer_provider.shutdown_with_timeout(timeout));
            let logs = s.spawn(|| {
                self.logger_provider
                    .as_ref()
                    .map(|l| l.shutdown_with_timeout(timeout))
            });
            let metrics = s.spawn(|| meter.as_ref().map(|m| m.shutdown_with_timeout(timeout)));
            let mut failures = Vec::new();
            let mut note = |signal, r: Option<opentelemetry_sdk::error::OTelSdkResult>| {
                if let Some(Err(e)) = r {
                    failures.push((signal, e.to_string()));
                }
            };
            note("traces", traces.join().ok());
            note("logs", logs.join().ok().flatten());
            note("metrics", metrics.join().ok().flatten());
            failures
        })
    }
}

/// The process's pipeline, returned by [`init`]; shut it down last.
#[derive(Debug)]
pub struct TelemetryGuard {
    telemetry: Arc<Telemetry>,
    shutdown_timeout: Duration,
}

impl TelemetryGuard {
    /// The pipeline.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Flush and shut down all providers on a blocking thread, bounded by the configured
    /// `telemetry.shutdown_timeout_ms` plus [`FLUSH_THREAD_MARGIN`] for the thread itself
    /// ([`TelemetryConfig::flush_bound`]).
    pub async fn shutdown(self) {
        let started = std::time::Instant::now();
        let timeout = self.shutdown_timeout;
        let telemetry = self.telemetry.clone();
        // The process's meter provider lives in [`metrics`]; its final collection goes
        // out over OTLP here.
        let meter = metrics::install().ok().map(|m| m.provider().clone());
        let task = tokio::task::spawn_blocking(move || telemetry.shutdown_blocking(timeout, meter));
        match tokio::time::timeout(timeout + FLUSH_THREAD_MARGIN, task).await {
            Ok(Ok(failures)) if failures.is_empty() => {
                tracing::info!(
                    duration_ms = started.elapsed().as_millis() as u64,
                    "telemetry flushed"
                );
            }
            Ok(Ok(failures)) => {
                for (signal, error) in failures {
                    tracing::warn!(signal, error, "telemetry flush failed; data may be lost");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "telemetry flush panicked"),
            // The flush thread is abandoned, still blocked in an exporter (a collector that
            // accepts and never answers); `main` does not wait for it either
            // (`Runtime::shutdown_background`), so the exit stays within this bound.
            Err(_) => tracing::warn!(
                code = FLUSH_TIMEOUT_CODE,
                timeout_ms = timeout.as_millis() as u64,
                duration_ms = started.elapsed().as_millis() as u64,
                "telemetry flush did not finish in time; the rest is dropped"
            ),
        }
    }
}

/// What `/infoz` shows about telemetry of this process.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryInfo {
    /// Live sampling.
    pub sampling: SamplingView,
    /// Signals exported over OTLP.
    pub export: Signals,
    /// `service.instance.id`.
    pub instance_id: Option<String>,
}

static GLOBAL: OnceLock<Arc<Telemetry>> = OnceLock::new();

/// The pipeline installed by [`init`], if any.
pub fn global() -> Option<&'static Arc<Telemetry>> {
    GLOBAL.get()
}

/// `/infoz` view of the installed pipeline (`None` when [`init`] was not called, e.g. in
/// tests that run the library without a global subscriber).
pub fn info() -> Option<TelemetryInfo> {
    let t = global()?;
    let key = opentelemetry::Key::from_static_str(semres::SERVICE_INSTANCE_ID);
    Some(TelemetryInfo {
        sampling: t.sampling.view(),
        export: t.signals,
        instance_id: t.resource.get(&key).map(|v| v.to_string()),
    })
}

/// The stdout JSON layer, filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]).
pub fn stdout_layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt::layer()
        .fmt_fields(json::SpanFields)
        .event_format(JsonLines)
        .with_writer(std::io::stdout)
        .with_filter(filter)
}

/// Logs only (no OpenTelemetry): for commands other than `serve`, and as the fallback when
/// [`init`] fails. Safe to call more than once.
pub fn init_logging() {
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(stdout_layer()),
    );
}

/// Install the process-wide pipeline for `config`: global subscriber (stdout JSON +
/// OpenTelemetry), W3C propagator, and the meter provider (when this module builds it).
/// Call once, inside the Tokio runtime, before anything creates instruments.
pub fn init(
    config: &TelemetryConfig,
    environment: &str,
    region: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    init_with(
        TelemetryOptions::from_config(config, environment, region),
        config.shutdown_timeout,
    )
}

/// [`init`] with explicit options.
pub fn init_with(
    opts: TelemetryOptions,
    shutdown_timeout: Duration,
) -> Result<TelemetryGuard, TelemetryError> {
    let telemetry = Arc::new(Telemetry::build(&opts)?);
    let subscriber = tracing_subscriber::registry()
        .with(stdout_layer())
        .with(telemetry.layer());
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(mp) = telemetry.meter_provider() {
        opentelemetry::global::set_meter_provider(mp.clone());
    }
    let _ = GLOBAL.set(telemetry.clone());
    let signals = telemetry.signals();
    tracing::info!(
        traces = signals.traces,
        metrics = signals.metrics,
        logs = signals.logs,
        sampling_ratio = telemetry.sampling().ratio(),
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        telemetry,
        shutdown_timeout,
    })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The W3C trace context of incoming HTTP headers (empty when absent or invalid).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// `(traceparent, tracestate)` of an OpenTelemetry context; `(None, None)` when it has no
/// valid span.
pub fn traceparent_of(cx: &Context) -> (Option<String>, Option<String>) {
    if !cx.span().span_context().is_valid() {
        return (None, None);
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    (
        carrier.remove("traceparent"),
        carrier.remove("tracestate").filter(|s| !s.is_empty()),
    )
}

/// `(traceparent, tracestate)` of the current `tracing` span, for outbox rows and outgoing
/// messages. `(None, None)` outside any span or without the OpenTelemetry layer.
pub fn inject_current() -> (Option<String>, Option<String>) {
    traceparent_of(&tracing::Span::current().context())
}

/// The trace id and parent span id of a valid W3C `traceparent`
/// (`<version>-<32 hex>-<16 hex>-<2 hex>`, lower-case hex, version not `ff`, neither id all
/// zeros). The one parser of the header outside the OpenTelemetry propagator: the request
/// context falls back to it when no OpenTelemetry layer is installed, and the consumer
/// records the producer's ids with it.
pub fn parse_traceparent(tp: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let [version, trace_id, span_id, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (hex(version, 2)
        && *version != "ff"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(span_id, 16)
        && nonzero(span_id)
        && hex(flags, 2))
    .then_some((*trace_id, *span_id))
}

/// The remote parent described by stored or received `traceparent`/`tracestate` values (an
/// empty context when `traceparent` is absent or invalid). Set it as a span's parent with
/// `OpenTelemetrySpanExt::set_parent` before entering the span.
pub fn context_from(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let mut carrier = HashMap::new();
    if let Some(tp) = traceparent {
        carrier.insert("traceparent".to_owned(), tp.to_owned());
    }
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_owned(), ts.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// A whole number as a span field, typed so that traces carry it as an integer attribute:
/// OTLP has only signed 64-bit integers, and `tracing-opentelemetry` (0.34) writes a field
/// recorded as `u64` (also a `u16` or `u32`, which `tracing` widens to `u64`) as its decimal
/// text, a string attribute, after formatting it. Saturates at `i64::MAX`.
pub fn int_field(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Record `err` on `span` as an OpenTelemetry `exception` event: `exception.type` is the
/// stable error code, `exception.message` the error chain (`outer: cause: root cause`). Call it
/// once, on the span that detected the error; parents only set their status.
pub fn record_exception(
    span: &tracing::Span,
    code: &'static str,
    err: &(dyn std::error::Error + 'static),
) {
    let chain = crate::support::chain(err);
    span.add_event(
        "exception",
        vec![
            KeyValue::new("exception.type", code),
            KeyValue::new("exception.message", chain),
        ],
    );
}

/// A client span around one database call, exported as `db.<operation>` with
/// `db.system.name` (`sqlite`/`postgres`) and `db.operation.name`.
pub fn db_span(system: &'static str, operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("db.{operation}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        otel.status_code = tracing::field::Empty,
    )
}

/// Run a call (typically a database call) inside `span`; a failure is recorded on that
/// span, where it was detected: status `ERROR` and an `exception` event whose type is
/// `code(&error)` (a stable error code).
pub async fn traced<T, E>(
    span: tracing::Span,
    code: impl FnOnce(&E) -> &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: std::error::Error + 'static,
{
    use tracing::Instrument as _;
    // sqlx's SQLite worker thread keeps the `Span::current()` of a connection's commands
    // alive after the call returns. Were that the db span, its tracing parents (up to
    // `http.server`) could not close, and the request's root span would not be exported until
    // the connection is used again. The driver therefore sees a detached carrier span (no
    // tracing parent, never exported) inside the db span.
    let carrier = tracing::info_span!(target: DB_CARRIER_TARGET, parent: None, "db.driver");
    let result = call.instrument(carrier).instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("otel.status_code", "ERROR");
        record_exception(&span, code(e), e);
    }
    result
}

/// Trace id of a context as 32 lower-case hex digits, if valid.
pub fn trace_id_of(cx: &Context) -> Option<String> {
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_round_trips_through_strings() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from(Some(tp), Some("vendor=1"));
        assert_eq!(
            trace_id_of(&cx).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let (p, s) = traceparent_of(&cx);
        assert_eq!(p.as_deref(), Some(tp));
        assert_eq!(s.as_deref(), Some("vendor=1"));
        assert_eq!(
            traceparent_of(&context_from(Some("garbage"), None)),
            (None, None)
        );
        assert_eq!(inject_current(), (None, None));
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut c = TelemetryConfig::default();
        assert!(c.validate().is_ok());
        c.sampling.ratio = 1.5;
        assert_eq!(c.validate().unwrap_err().key, "telemetry.sampling.ratio");
        c.sampling.ratio = 0.5;
        c.sampling.routes.insert("v1/orders".to_owned(), 0.1);
        assert_eq!(c.validate().unwrap_err().key, "telemetry.sampling.routes");
        c.sampling.routes.clear();
        c.sampling.trust_incoming = TrustIncoming::Routes(["v1/orders".to_owned()].into());
        assert_eq!(
            c.validate().unwrap_err().key,
            "telemetry.sampling.trust_incoming"
        );
    }

    #[test]
    fn resource_has_the_identity_attributes() {
        let opts = TelemetryOptions {
            service_name: "weir-test".to_owned(),
            service_version: "1.2.3".to_owned(),
            instance_id: "i-1".to_owned(),
            environment: "staging".to_owned(),
            region: Some("eu-west-1".to_owned()),
            sampling: SamplingConfig::default(),
            export: Export::Disabled,
            meter_provider: false,
        };
        let r = resource(&opts);
        let get = |k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get("service.version").as_deref(), Some("1.2.3"));
        assert_eq!(
            get("deployment.environment.name").as_deref(),
            Some("staging")
        );
        assert_eq!(get("cloud.region").as_deref(), Some("eu-west-1"));
        assert!(get("service.instance.id").is_some());
        assert_eq!(Export::Disabled.signals(), Signals::default());
    }

    /// The level hint of a subscriber made of the pipeline's layers decides, process-wide,
    /// whether a debug-level span is made at all (`tracing`'s global max level). With traces
    /// exported it must be debug (the `plugin.import.*` spans), with or without the stdout
    /// layer beside; without export, info. Before the span layer went outermost, the
    /// layers alone reported the carrier's info (tests/it's trace pipeline lost every
    /// debug span).
    #[test]
    fn the_layers_enable_debug_spans_exactly_when_traces_are_exported() {
        use tracing::Subscriber as _;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _enter = rt.enter();
        for (export, want) in [
            (
                Export::Grpc("http://127.0.0.1:9".to_owned()),
                LevelFilter::DEBUG,
            ),
            (Export::Disabled, LevelFilter::INFO),
        ] {
            let mut opts = TelemetryOptions::from_config(&TelemetryConfig::default(), "test", None);
            opts.export = export.clone();
            let t = Telemetry::build(&opts).unwrap();
            let alone = tracing_subscriber::registry().with(t.layer());
            assert_eq!(alone.max_level_hint(), Some(want), "{export:?}, alone");
            let beside_stdout = tracing_subscriber::registry()
                .with(stdout_layer())
                .with(t.layer());
            assert!(
                beside_stdout.max_level_hint() >= Some(want),
                "{export:?}, beside stdout: {:?}",
                beside_stdout.max_level_hint()
            );
        }
    }
}
