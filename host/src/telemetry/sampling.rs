//! Head sampling: parent-based, with a root ratio operators can change at runtime, and a
//! caller's sampling decision honoured only where it is trusted.
//!
//! [`SamplingControl`] holds the ratio for root spans as an atomic (so the admin endpoint can
//! raise it during an incident without a restart), the per-route overrides from
//! `telemetry.sampling.routes`, keyed by route template (`http.route`), and which routes trust
//! the sampled flag of an incoming `traceparent` (`telemetry.sampling.trust_incoming`,
//! [`TrustIncoming`]).
//!
//! [`EdgeSampler`] decides, for every span:
//! - a span whose parent is local (a child inside this process) or a remote parent that is
//!   not an HTTP request (the outbox relay continuing the context it stored itself, a
//!   consumer continuing a broker message) follows the parent's sampled flag;
//! - the `http.server` span of a request (it carries `http.route`) whose `traceparent` comes
//!   from a *trusted* route follows the caller's flag (`...-01` always exported, `...-00`
//!   never);
//! - the same span on an untrusted route (the default: `none`) ignores the caller's flag:
//!   the route's ratio decides with a fresh random draw, not with the trace id, because a
//!   client chooses its trace id and the SDK's trace-id ratio sampler keeps every trace whose
//!   id is small enough. So a client can neither force export (`-01` on every request, or
//!   chosen ids) nor hide its requests (`-00`). The trace id and parent span id are kept:
//!   the request stays linked to the caller's trace in the problem body, the logs and the
//!   exported span; only the decision is ours. Downstream (outbox events, children) follows
//!   that decision through our own span's context.
//! - a root span (no parent) uses the trace-id ratio (the trace id is ours, random).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};
use serde::{Deserialize, Serialize};

/// Where the sampled flag of an incoming `traceparent` is honoured
/// (`telemetry.sampling.trust_incoming`). Elsewhere the ratio decides.
///
/// In TOML: `"none"` (the default), `"all"`, or a list of route templates such as
/// `["/v1/orders/{id}"]` (both listeners' routes; `unmatched` requests are never trusted).
/// Trust a route only when every caller that can reach it is yours (e.g. behind a gateway
/// that sets or strips `traceparent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TrustRepr", into = "TrustRepr")]
pub enum TrustIncoming {
    /// No caller's decision is honoured.
    #[default]
    None,
    /// Every caller's decision is honoured (the behaviour before this setting existed).
    All,
    /// Honoured on these route templates only.
    Routes(BTreeSet<String>),
}

/// How [`TrustIncoming`] is written in configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum TrustRepr {
    Word(String),
    Routes(BTreeSet<String>),
}

impl TryFrom<TrustRepr> for TrustIncoming {
    type Error = String;

    fn try_from(repr: TrustRepr) -> Result<Self, String> {
        match repr {
            TrustRepr::Word(w) if w == "none" => Ok(Self::None),
            TrustRepr::Word(w) if w == "all" => Ok(Self::All),
            TrustRepr::Word(w) => Err(format!(
                "expected \"none\", \"all\" or a list of route templates, got {w:?}"
            )),
            TrustRepr::Routes(routes) => Ok(Self::Routes(routes)),
        }
    }
}

impl From<TrustIncoming> for TrustRepr {
    fn from(t: TrustIncoming) -> Self {
        match t {
            TrustIncoming::None => Self::Word("none".to_owned()),
            TrustIncoming::All => Self::Word("all".to_owned()),
            TrustIncoming::Routes(routes) => Self::Routes(routes),
        }
    }
}

impl TrustIncoming {
    /// Whether the caller's decision is honoured on `route` (a template).
    pub fn trusts(&self, route: &str) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Routes(routes) => routes.contains(route),
        }
    }
}

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
    /// Where a caller's sampled flag is honoured.
    trust: TrustIncoming,
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
    /// Where an incoming `traceparent`'s sampled flag is honoured.
    pub trust_incoming: TrustIncoming,
    /// How the decision is made, for humans.
    pub sampler: &'static str,
}

impl SamplingControl {
    /// A control starting at `ratio` with per-route overrides, trusting callers' decisions
    /// where `trust` says. Ratios must be valid.
    pub fn new(
        ratio: f64,
        routes: BTreeMap<String, f64>,
        trust: TrustIncoming,
    ) -> Result<Self, InvalidRatio> {
        check_ratio(ratio)?;
        for r in routes.values() {
            check_ratio(*r)?;
        }
        Ok(Self {
            ratio: AtomicU64::new(ratio.to_bits()),
            configured: ratio,
            routes,
            trust,
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
            trust_incoming: self.trust.clone(),
            sampler: "parentbased_traceidratio, callers trusted per trust_incoming",
        }
    }
}

/// The process's sampler (see the module doc for the rules).
#[derive(Debug, Clone)]
pub struct EdgeSampler {
    control: Arc<SamplingControl>,
}

impl EdgeSampler {
    /// A sampler following `control`.
    pub fn new(control: Arc<SamplingControl>) -> Self {
        Self { control }
    }

    fn ratio_of(&self, route: Option<&str>) -> f64 {
        route
            .and_then(|r| self.control.route_ratio(r))
            .unwrap_or_else(|| self.control.ratio())
    }
}

fn route_of(attributes: &[KeyValue]) -> Option<std::borrow::Cow<'_, str>> {
    attributes
        .iter()
        .find(|kv| kv.key.as_str() == "http.route")
        .map(|kv| kv.value.as_str())
}

impl ShouldSample for EdgeSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let route = route_of(attributes);
        let parent = parent_context
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        match (&parent, &route) {
            // A caller's context on an HTTP route that does not trust it: our own draw.
            (Some(sc), Some(route)) if sc.is_remote() && !self.control.trust.trusts(route) => {
                let ratio = self.ratio_of(Some(route.as_ref()));
                let sampled = ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio);
                SamplingResult {
                    decision: if sampled {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state: sc.trace_state().clone(),
                }
            }
            // Anything else with a parent follows it; roots use the trace-id ratio.
            _ => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                self.ratio_of(route.as_deref()),
            )))
            .should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceFlags};

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

    fn control(ratio: f64, routes: &[(&str, f64)], trust: TrustIncoming) -> Arc<SamplingControl> {
        let routes = routes.iter().map(|(r, x)| ((*r).to_owned(), *x)).collect();
        Arc::new(SamplingControl::new(ratio, routes, trust).unwrap())
    }

    fn local_parent(sampled: bool) -> Context {
        let sc = parent(sampled).span().span_context().clone();
        Context::new().with_remote_span_context(SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            false,
            Default::default(),
        ))
    }

    #[test]
    fn trusted_parent_flag_wins_and_roots_follow_the_live_ratio_and_route_overrides() {
        let control = control(1.0, &[("/v1/products", 0.0)], TrustIncoming::All);
        let s = EdgeSampler::new(control.clone());
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
    fn an_untrusted_callers_flag_is_ignored_and_the_ratio_decides() {
        let trusted = TrustIncoming::Routes(BTreeSet::from(["/v1/products".to_owned()]));
        let control = control(0.0, &[("/v1/orders/{id}", 1.0)], trusted);
        let s = EdgeSampler::new(control.clone());
        for _ in 0..100 {
            // Ratio 0: a caller's `-01` on an untrusted route exports nothing ...
            assert!(!decide(&s, Some(&parent(true)), Some("/v1/orders")));
            assert!(!decide(&s, Some(&parent(true)), Some("unmatched")));
            // ... and at ratio 1 its `-00` does not hide the request.
            assert!(decide(&s, Some(&parent(false)), Some("/v1/orders/{id}")));
        }
        // Trusted route: the caller's flag, whatever the ratio.
        assert!(decide(&s, Some(&parent(true)), Some("/v1/products")));
        // Local parents and remote parents outside HTTP (relay, consumer) are followed.
        assert!(decide(&s, Some(&local_parent(true)), Some("/v1/orders")));
        assert!(!decide(
            &s,
            Some(&local_parent(false)),
            Some("/v1/orders/{id}")
        ));
        assert!(decide(&s, Some(&parent(true)), None));

        // An untrusted caller cannot pick a trace id that the ratio always keeps: the draw
        // does not depend on it.
        control.set_ratio(0.5).unwrap();
        let tiny = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("00000000000000000000000000000001").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            Default::default(),
        ));
        let kept = (0..400)
            .filter(|_| {
                s.should_sample(
                    Some(&tiny),
                    TraceId::from_hex("00000000000000000000000000000001").unwrap(),
                    "x",
                    &SpanKind::Server,
                    &[KeyValue::new("http.route", "/v1/orders")],
                    &[],
                )
                .decision
                    == SamplingDecision::RecordAndSample
            })
            .count();
        assert!(
            (100..300).contains(&kept),
            "{kept} of 400 kept at ratio 0.5"
        );
    }

    #[test]
    fn by_default_no_caller_can_force_or_suppress_export() {
        let default = crate::telemetry::SamplingConfig::default().trust_incoming;
        assert_eq!(default, TrustIncoming::None);
        let s = EdgeSampler::new(control(0.0, &[("/v1/products", 1.0)], default));
        for route in ["/v1/orders", "/v1/orders/{id}", "unmatched"] {
            assert!(!decide(&s, Some(&parent(true)), Some(route)), "{route}");
        }
        assert!(decide(&s, Some(&parent(false)), Some("/v1/products")));
    }

    #[test]
    fn trust_is_written_as_a_word_or_a_route_list() {
        let parse = |v: serde_json::Value| serde_json::from_value::<TrustIncoming>(v);
        assert_eq!(
            parse(serde_json::json!("none")).unwrap(),
            TrustIncoming::None
        );
        assert_eq!(parse(serde_json::json!("all")).unwrap(), TrustIncoming::All);
        assert_eq!(
            parse(serde_json::json!(["/v1/orders"])).unwrap(),
            TrustIncoming::Routes(BTreeSet::from(["/v1/orders".to_owned()]))
        );
        assert!(parse(serde_json::json!("some")).is_err());
        assert_eq!(
            serde_json::to_value(TrustIncoming::None).unwrap(),
            serde_json::json!("none")
        );
    }

    #[test]
    fn invalid_ratios_are_rejected() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(check_ratio(bad).is_err(), "{bad}");
        }
        let control = SamplingControl::new(0.5, BTreeMap::new(), TrustIncoming::None).unwrap();
        assert!(control.set_ratio(2.0).is_err());
        assert_eq!(control.ratio(), 0.5);
        assert!(
            SamplingControl::new(
                0.5,
                BTreeMap::from([("/x".to_owned(), 7.0)]),
                TrustIncoming::None
            )
            .is_err()
        );
    }
}
