//! Head sampling: parent-based, with a root ratio operators can change at runtime.
//!
//! [`SamplingControl`] holds the ratio for root spans as an atomic (so the admin endpoint can
//! raise it during an incident without a restart) and the per-route overrides from
//! `telemetry.sampling.routes`, keyed by route template (`http.route`). [`RootSampler`] is the
//! root branch of the SDK's parent-based sampler: a span whose parent is known follows the
//! parent's sampled flag (so `traceparent: ...-00` is never exported and `...-01` always is);
//! only a root span consults the ratio.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::trace::{Link, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingResult, ShouldSample};
use serde::Serialize;

/// A sampling ratio outside `0.0..=1.0`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("sampling ratio must be between 0.0 and 1.0, got {0}")]
pub struct InvalidRatio(pub f64);

/// Check a ratio: finite and within `0.0..=1.0`.
pub fn check_ratio(ratio: f64) -> Result<f64, InvalidRatio> {
    if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(InvalidRatio(ratio))
    }
}

/// The live sampling configuration of one telemetry pipeline.
#[derive(Debug)]
pub struct SamplingControl {
    /// `f64::to_bits` of the root ratio.
    ratio: AtomicU64,
    /// The ratio configured at start-up, for `/infoz` and resets.
    configured: f64,
    /// Route template -> ratio; wins over `ratio` for root spans of that route.
    routes: BTreeMap<String, f64>,
}

/// What `/infoz` and the admin endpoint show.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SamplingView {
    /// Ratio of root spans sampled now.
    pub ratio: f64,
    /// Ratio configured at start-up.
    pub configured_ratio: f64,
    /// Per-route overrides (route template -> ratio).
    pub routes: BTreeMap<String, f64>,
    /// How the decision is made, for humans.
    pub sampler: &'static str,
}

impl SamplingControl {
    /// A control starting at `ratio` with per-route overrides. Ratios must be valid.
    pub fn new(ratio: f64, routes: BTreeMap<String, f64>) -> Result<Self, InvalidRatio> {
        check_ratio(ratio)?;
        for r in routes.values() {
            check_ratio(*r)?;
        }
        Ok(Self {
            ratio: AtomicU64::new(ratio.to_bits()),
            configured: ratio,
            routes,
        })
    }

    /// The root ratio in effect.
    pub fn ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }

    /// Change the root ratio; takes effect for the next root span.
    pub fn set_ratio(&self, ratio: f64) -> Result<f64, InvalidRatio> {
        let ratio = check_ratio(ratio)?;
        let old = f64::from_bits(self.ratio.swap(ratio.to_bits(), Ordering::Relaxed));
        Ok(old)
    }

    /// The ratio for a root span of `route` (a template), if overridden.
    pub fn route_ratio(&self, route: &str) -> Option<f64> {
        self.routes.get(route).copied()
    }

    /// Snapshot for display.
    pub fn view(&self) -> SamplingView {
        SamplingView {
            ratio: self.ratio(),
            configured_ratio: self.configured,
            routes: self.routes.clone(),
            sampler: "parentbased_traceidratio",
        }
    }
}

/// Root branch of the parent-based sampler: trace-id ratio with the live ratio, or the
/// route's override when the span carries an `http.route` attribute that has one.
#[derive(Debug, Clone)]
pub struct RootSampler {
    control: Arc<SamplingControl>,
}

impl RootSampler {
    /// The full sampler: `ParentBased(RootSampler)`.
    pub fn parent_based(control: Arc<SamplingControl>) -> impl ShouldSample {
        Sampler::parent_based(RootSampler { control })
    }
}

impl ShouldSample for RootSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let ratio = attributes
            .iter()
            .find(|kv| kv.key.as_str() == "http.route")
            .and_then(|kv| self.control.route_ratio(kv.value.as_str().as_ref()))
            .unwrap_or_else(|| self.control.ratio());
        Sampler::TraceIdRatioBased(ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags};
    use opentelemetry_sdk::trace::SamplingDecision;

    use super::*;

    fn decide(s: &impl ShouldSample, parent: Option<&Context>, route: Option<&str>) -> bool {
        let attrs: Vec<KeyValue> = route
            .map(|r| vec![KeyValue::new("http.route", r.to_owned())])
            .unwrap_or_default();
        let r = s.should_sample(
            parent,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            "x",
            &SpanKind::Server,
            &attrs,
            &[],
        );
        r.decision == SamplingDecision::RecordAndSample
    }

    fn parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            Default::default(),
        ))
    }

    #[test]
    fn parent_flag_wins_and_roots_follow_the_live_ratio_and_route_overrides() {
        let routes = BTreeMap::from([("/v1/products".to_owned(), 0.0)]);
        let control = Arc::new(SamplingControl::new(1.0, routes).unwrap());
        let s = RootSampler::parent_based(control.clone());
        assert!(decide(&s, None, Some("/v1/orders")));
        assert!(!decide(&s, None, Some("/v1/products")));
        assert!(!decide(&s, Some(&parent(false)), Some("/v1/orders")));
        assert!(decide(&s, Some(&parent(true)), Some("/v1/products")));

        assert_eq!(control.set_ratio(0.0), Ok(1.0));
        assert!(!decide(&s, None, Some("/v1/orders")));
        assert!(decide(&s, Some(&parent(true)), None));
        assert_eq!(control.view().ratio, 0.0);
        assert_eq!(control.view().configured_ratio, 1.0);
    }

    #[test]
    fn invalid_ratios_are_rejected() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(check_ratio(bad).is_err(), "{bad}");
        }
        let control = SamplingControl::new(0.5, BTreeMap::new()).unwrap();
        assert!(control.set_ratio(2.0).is_err());
        assert_eq!(control.ratio(), 0.5);
        assert!(SamplingControl::new(0.5, BTreeMap::from([("/x".to_owned(), 7.0)])).is_err());
    }
}
