//! The OpenTelemetry meter provider and the Prometheus text of `/metrics`.
//!
//! [`install`] builds one [`SdkMeterProvider`] per process, installs it as the global meter
//! provider (every instrument in Weir comes from `opentelemetry::global::meter`), and returns
//! a [`Metrics`] handle whose [`Metrics::render`] produces the Prometheus text exposition
//! served on the operations listener at `/metrics`. Call it before creating instruments
//! (`Server::start` calls it first): instruments made from the no-op provider stay no-ops.
//! It is idempotent: later calls (several servers in one test process) get the same handle.
//!
//! Naming: instruments use OpenTelemetry names (`http.server.request.duration`, unit `s`);
//! the Prometheus reader rewrites them (`http_server_request_duration_seconds`, counters get
//! `_total`). Histogram buckets are set on each instrument.
//!
//! # Extension point: more readers
//! [`provider_builder`] is the one place readers are attached. To export over OTLP as well,
//! add a periodic reader there, e.g.
//! `builder.with_reader(PeriodicReader::builder(otlp_exporter).build())`; both readers see
//! the same instruments. Keep the Prometheus reader: `/metrics` depends on it.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the metrics pipeline could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("metrics set-up failed: {0}")]
pub struct MetricsError(String);

/// The installed metrics pipeline.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

/// The provider builder with Weir's resource and the Prometheus reader feeding `registry`.
/// Add further readers here (see the module doc).
pub fn provider_builder(
    registry: &prometheus::Registry,
) -> Result<MeterProviderBuilder, MetricsError> {
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .map_err(|e| MetricsError(e.to_string()))?;
    let resource = Resource::builder()
        .with_service_name("weir")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::support::VERSION,
        ))
        .build();
    // Telemetry merges in the process resource (the same as on spans and log records) and,
    // when OTLP metrics export is configured, the OTLP periodic reader.
    super::extend_meter_provider(
        SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(exporter),
    )
    .map_err(|e| MetricsError(e.to_string()))
}

/// For tests: a meter on a provider of its own with the Prometheus reader `/metrics` uses,
/// so a test's counts are its own (the installed provider is shared by every test in the
/// process). Keep the provider alive while measuring; read with [`render_text`].
#[cfg(test)]
pub(crate) fn test_meter(
    name: &'static str,
) -> (
    opentelemetry::metrics::Meter,
    prometheus::Registry,
    SdkMeterProvider,
) {
    use opentelemetry::metrics::MeterProvider as _;
    let registry = prometheus::Registry::new();
    let provider = provider_builder(&registry)
        .expect("a meter provider")
        .build();
    (provider.meter(name), registry, provider)
}

/// For tests: the Prometheus text of `registry`.
#[cfg(test)]
pub(crate) fn render_text(registry: &prometheus::Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("Prometheus text");
    String::from_utf8(out).expect("UTF-8")
}

/// For tests: the values of the samples of `name` in Prometheus `text` whose labels include
/// every `(label, value)` of `with`, in the order they appear.
#[cfg(test)]
pub(crate) fn samples(text: &str, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            with.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

static INSTALLED: OnceLock<Result<Metrics, MetricsError>> = OnceLock::new();

/// Build and install the global meter provider once; return the handle.
pub fn install() -> Result<Metrics, MetricsError> {
    INSTALLED
        .get_or_init(|| {
            let registry = prometheus::Registry::new();
            let provider = provider_builder(&registry)?.build();
            opentelemetry::global::set_meter_provider(provider.clone());
            Ok(Metrics { registry, provider })
        })
        .clone()
}

impl Metrics {
    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| MetricsError(e.to_string()))?;
        String::from_utf8(out).map_err(|e| MetricsError(e.to_string()))
    }

    /// The provider, e.g. to flush it at shutdown.
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }
}

/// `GET /metrics` on the operations listener: the Prometheus text of every instrument.
pub async fn handler() -> Response {
    match install().and_then(|m| m.render()) {
        Ok(text) => ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "metrics unavailable\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_instruments_in_prometheus_names() {
        let m = install().unwrap();
        let counter = opentelemetry::global::meter("weir.test")
            .u64_counter("weir.test.things")
            .build();
        counter.add(3, &[opentelemetry::KeyValue::new("kind", "a")]);
        let again = install().unwrap();
        let text = again.render().unwrap();
        assert!(text.contains("weir_test_things_total{kind=\"a\""), "{text}");
        // Both handles read the same registry.
        assert!(m.render().unwrap().contains("weir_test_things_total"));
    }
}
