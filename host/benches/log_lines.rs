//! The stdout JSON log lines of one served quote, written through the stdout layer's own
//! formatters ([`JsonLines`], [`SpanFields`]) into a discarding writer: the request span and
//! the plugin call's span made by the server's own constructors (`request_span`,
//! `plugin_span`) with the values a served quote records, the plugin's `order priced` record
//! through the `log` import's own path (`emit_record`) and the access line. Run with `cargo bench -p weir-host --bench
//! log_lines`.
//!
//! `one_request_served_layers` adds the OpenTelemetry span layer as `weir serve` installs it
//! with nothing exported (the spans still get trace and span ids). `spans_only` makes the
//! same spans with no line written (the span-field formatting a request pays whenever its
//! spans pass the stdout filter, `info` by default); `no_layer` the same with no layer at all
//! (the registry alone, about 0.5 us): the difference between `one_request` and `no_layer`
//! is what the JSON layer costs a request. BENCHMARKS.md has the figures.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tracing_subscriber::layer::SubscriberExt;
use weir_host::capabilities::log::emit_record;
use weir_host::telemetry::{
    Export, JsonLines, SamplingConfig, SpanFields, Telemetry, TelemetryOptions,
};

/// The spans and the two lines of one quote, with the field values of a served one.
fn one_request(write_lines: bool) {
    let request = weir_host::http::context::request_span(
        "POST",
        "/v1/quotes",
        "/v1/quotes",
        "9a96cf9a2b264ea699caf33cc7942dd4",
        None,
    );
    let _request = request.enter();
    request.record("weir.tenant", "default");
    request.record("weir.auth", "anonymous");
    {
        let invoke = weir_host::runtime::plugin_span(
            "orders",
            "0.1.0",
            "590d7d0cba155baa2c4882260ff8be4fbfab72f4e01f27fc03545da0c86fd5ca",
            "stable",
            "place-order",
        );
        let _invoke = invoke.enter();
        invoke.record("instance_wait_us", 14);
        invoke.record("instantiate_us", 66);
        if write_lines {
            let fields = [("lines", "1"), ("total", "8900"), ("currency", "EUR")];
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            emit_record(
                tracing::Level::INFO,
                "orders",
                "0.1.0",
                "order priced",
                &fields,
            );
        }
    }
    if write_lines {
        tracing::info!(
            target: "weir::access",
            method = %"POST",
            route = %"/v1/quotes",
            status = 200_u16,
            duration_ms = 0.518_587,
            client = %"ip:127.0.0.1",
            tenant = "default",
            idempotency_key_hash = Option::<&str>::None,
            customer_id_hash = Option::<&str>::None,
            headers = %r#"{"user-agent":"curl/7.88.1"}"#,
            "request"
        );
    }
    request.record("http.response.status_code", 200);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_lines");
    let json = || {
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFields)
                .event_format(JsonLines)
                .with_writer(std::io::sink),
        )
    };
    tracing::subscriber::with_default(json(), || {
        group.bench_function("one_request", |b| b.iter(|| one_request(black_box(true))));
        group.bench_function("spans_only", |b| b.iter(|| one_request(black_box(false))));
    });
    // As `weir serve` runs with nothing exported: the OpenTelemetry span layer beside the
    // JSON layer (the spans still get trace ids, for the lines and problem responses).
    let telemetry = Telemetry::build(&TelemetryOptions {
        service_name: "weir-bench".to_owned(),
        service_version: "0".to_owned(),
        instance_id: "bench".to_owned(),
        environment: "bench".to_owned(),
        region: None,
        sampling: SamplingConfig::default(),
        export: Export::Disabled,
        meter_provider: false,
    })
    .expect("telemetry without export");
    tracing::subscriber::with_default(json().with(telemetry.layer()), || {
        group.bench_function("one_request_served_layers", |b| {
            b.iter(|| one_request(black_box(true)))
        });
    });
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        group.bench_function("no_layer", |b| b.iter(|| one_request(black_box(true))));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
