//! Recorded cases: real plugin inputs kept for replay.
//!
//! A case is one plugin call as the plugin saw it: the function and its input (the order
//! request, or the order and the event of a transition), the catalog and configuration
//! answers its imports gave, and the decision that came back (with the version that made
//! it). A cases file (`weir.cases/1`, JSON, [`CasesFile`]) holds many; it is what
//! `weir plugin cases export` writes, what `weir plugin test --cases` replays, and the format
//! of the SDK's conformance kit (whose cases also carry an [`Expect`]ation).
//!
//! # Recording
//! An operator starts a [`Recorder`] on a running instance (`PUT /admin/recording`) for a
//! window, a sample percentage and a maximum number of cases. While it runs, a sampled
//! `place-order` or `transition` by the serving version (stable or canary; never a shadow)
//! carries a [`CallTrace`] and ends as a case. Bounded on every axis: at most
//! [`MAX_CASES`] cases in a recording, at most [`MAX_CASE_BYTES`] of JSON per case (a larger
//! one is dropped and counted), at most [`MAX_TRACED`](crate::capabilities::trace::MAX_TRACED)
//! answers per kind per call (an overflowing call is dropped: its case would be incomplete),
//! and nothing after the window ends. Every outcome of a sampled call is counted in
//! `weir.plugin.cases.recorded{outcome}`.
//!
//! Redaction (on by default): the customer id and every metadata value, in the request and in
//! a transition's order, are replaced by a pseudonym of the same shape ([`pseudonym`]): a
//! short type prefix such as `cus_` is kept, every other ASCII letter or digit becomes a
//! letter or digit of the same kind derived from a keyed SHA-256 of the value, everything else
//! (separators, spaces, length) stays. So a redacted request still passes the plugin's own
//! validation (a customer id must look like one) and replays to the same decision, equal values
//! stay equal within a recording (a plugin keyed on a customer still sees one customer), and
//! the value is not in the file. The key is random per recording and never leaves the
//! process, so a pseudonym cannot be reversed by hashing guesses. A plugin whose decision
//! depends on the value itself (a discount for one customer id) replays differently from
//! redacted cases; record without redaction (`redact: false`) only on data you may copy.
//!
//! Recordings live in the process's memory: one per instance, lost on restart, exported from
//! each replica on its own.
//!
//! # Replay
//! [`Runtime::replay`] runs one case on a fresh instance like any call, under the default
//! budget, with a [`Script`]: the catalog and configuration answer from the case, never from
//! a database, so a replay is deterministic (a plugin that reads WASI clocks or randomness is
//! the exception). What the plugin asked for that the case does not hold is answered as
//! missing and listed (`unscripted`). The result is the decision and the budget the call
//! used: time, memory of its instance, host calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use weir_core::domain::{
    Money, OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, PricedOrder,
};

use super::{InvokeError, PluginVersion, Role, Runtime, invoke};
use crate::capabilities::trace::{CallTrace, CaseMoney, CatalogAnswer, ConfigAnswer, Script};
use crate::world::bindings;

/// The `format` of a cases file this host reads and writes.
pub const FORMAT: &str = "weir.cases/1";

/// Largest cases file `weir plugin test` reads.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Most cases in a file, and in one recording.
pub const MAX_CASES: usize = 10_000;

/// Largest recorded case, in bytes of JSON: a larger one is dropped (`oversized`).
pub const MAX_CASE_BYTES: usize = 256 * 1024;

/// Longest recording window.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// A cases file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// How the cases were recorded, when they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStatus>,
    /// The cases, in the order they were recorded or written.
    pub cases: Vec<Case>,
}

/// Why a cases file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CasesFileError {
    /// Not JSON, or not this format (the message names the line, column and field).
    #[error("not a {FORMAT} cases file: {0}")]
    Parse(String),
    /// A format this host does not read.
    #[error("cases file format {0:?} is not {FORMAT:?}")]
    Format(String),
    /// More than [`MAX_CASES`] cases, or two cases with one id.
    #[error("{0}")]
    Invalid(String),
}

impl CasesFile {
    /// An empty file of this format.
    pub fn new(cases: Vec<Case>) -> Self {
        Self {
            format: FORMAT.to_owned(),
            recording: None,
            cases,
        }
    }

    /// Parse and check a cases file: its format, at most [`MAX_CASES`] cases, unique ids.
    /// Unknown fields are refused (a typo in a hand-written case is an error, not ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, CasesFileError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let file: CasesFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            CasesFileError::Parse(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
        if file.format != FORMAT {
            return Err(CasesFileError::Format(file.format));
        }
        if file.cases.len() > MAX_CASES {
            return Err(CasesFileError::Invalid(format!(
                "{} cases, at most {MAX_CASES} are read",
                file.cases.len()
            )));
        }
        let mut ids = std::collections::BTreeSet::new();
        for case in &file.cases {
            if !ids.insert(case.id.as_str()) {
                return Err(CasesFileError::Invalid(format!(
                    "two cases have the id {:?}",
                    case.id
                )));
            }
        }
        Ok(file)
    }
}

/// One plugin call: its input, what its imports answered, and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique in its file.
    pub id: String,
    /// What the case is about (hand-written cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The function called and its input.
    pub call: CaseCall,
    /// The catalog's answers, one per sku looked up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog: Vec<CatalogAnswer>,
    /// The configuration's answers, one per key read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigAnswer>,
    /// The decision recorded with the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The version that made the recorded decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
    /// What any conforming plugin must decide (conformance cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// The plugin version that decided a recorded case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecidedBy {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// `sha256:<hex>` of its component.
    pub digest: String,
}

/// The function a case calls, with its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum CaseCall {
    /// `place-order(request)`.
    PlaceOrder {
        /// The order request.
        request: OrderRequest,
    },
    /// `transition(order, event)`.
    Transition {
        /// The order.
        order: CaseOrder,
        /// The event.
        event: OrderEvent,
    },
}

impl CaseCall {
    /// The WIT function name.
    pub fn function(&self) -> &'static str {
        match self {
            CaseCall::PlaceOrder { .. } => "place-order",
            CaseCall::Transition { .. } => "transition",
        }
    }
}

/// The order a transition is about, as the plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseOrder {
    /// Order id.
    pub id: String,
    /// Customer id.
    pub customer_id: String,
    /// Current status.
    pub status: OrderStatus,
    /// Amount due.
    pub total: CaseMoney,
}

impl From<&OrderSnapshot> for CaseOrder {
    fn from(o: &OrderSnapshot) -> Self {
        Self {
            id: o.id.to_string(),
            customer_id: o.customer_id.clone(),
            status: o.status,
            total: CaseMoney {
                amount: o.total.amount,
                currency: o.total.currency.clone(),
            },
        }
    }
}

/// What a call decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Decision {
    /// `place-order` priced the order.
    Priced(PricedOrder),
    /// `transition` moved the order to this status.
    Status(OrderStatus),
    /// The plugin answered with an `order-error`.
    Refused(OrderError),
    /// No answer: the call trapped, ran out of budget, broke the contract...
    Failed(CaseFailure),
}

/// A call that produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFailure {
    /// The outcome label (`trap`, `timeout`, `budget_exceeded`, `contract_violation`,
    /// `capability_denied`, ...), as in `weir.plugin.invocations`.
    pub outcome: String,
    /// The trap kind, budget, contract rule or capability, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The error's one-line description (no guest backtrace).
    pub message: String,
}

impl From<&InvokeError> for CaseFailure {
    fn from(e: &InvokeError) -> Self {
        let kind = match e {
            InvokeError::Trap { kind, .. } => Some(kind.as_str().to_owned()),
            InvokeError::Budget(b) => Some(b.as_str().to_owned()),
            InvokeError::Contract(v) => Some(v.rule.as_str().to_owned()),
            InvokeError::CapabilityDenied { capability } => Some((*capability).to_owned()),
            _ => None,
        };
        Self {
            outcome: e.outcome().to_owned(),
            kind,
            message: e.to_string(),
        }
    }
}

impl Decision {
    /// The decision a call's result stands for.
    pub fn of<T>(
        result: &Result<Result<T, OrderError>, InvokeError>,
        ok: impl Fn(&T) -> Self,
    ) -> Self {
        match result {
            Ok(Ok(value)) => ok(value),
            Ok(Err(refusal)) | Err(InvokeError::Refused(refusal)) => Self::Refused(refusal.clone()),
            Err(e) => Self::Failed(CaseFailure::from(e)),
        }
    }

    /// `ok`, the `order-error` case, or the failure's outcome.
    pub fn outcome(&self) -> &str {
        match self {
            Self::Priced(_) | Self::Status(_) => "ok",
            Self::Refused(r) => r.tag(),
            Self::Failed(f) => &f.outcome,
        }
    }
}

/// What a conforming plugin must decide for a case: the outcome (`ok` or an `order-error`
/// case), and optionally the status a transition moves to, the reason of a rejection, or a
/// field one of the violations of `invalid` must name. Amounts are not part of it: pricing is
/// the plugin's business, the host's contract on it is checked on every call anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `ok`, or `invalid`, `not-found`, `conflict`, `rejected`, `unavailable`, `internal`.
    pub outcome: String,
    /// The status a transition must move the order to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<OrderStatus>,
    /// The reason a rejection must give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A field a violation of `invalid` must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Expect {
    /// Whether `decision` meets the expectation; otherwise what is wrong.
    pub fn check(&self, decision: &Decision) -> Result<(), String> {
        let outcome = decision.outcome();
        if outcome != self.outcome {
            return Err(format!("expected {}, got {outcome}", self.outcome));
        }
        if let Some(want) = self.status {
            match decision {
                Decision::Status(got) if *got == want => {}
                _ => {
                    return Err(format!(
                        "expected status {}, got {}",
                        want.as_str(),
                        match decision {
                            Decision::Status(s) => s.as_str(),
                            _ => "no status",
                        }
                    ));
                }
            }
        }
        if let Some(want) = &self.reason {
            match decision {
                Decision::Refused(OrderError::Rejected(r)) if &r.reason == want => {}
                Decision::Refused(OrderError::Rejected(r)) => {
                    return Err(format!("expected reason {want}, got {}", r.reason));
                }
                _ => return Err(format!("expected a rejection with reason {want}")),
            }
        }
        if let Some(want) = &self.field {
            match decision {
                Decision::Refused(OrderError::Invalid(v)) if v.iter().any(|v| &v.field == want) => {
                }
                Decision::Refused(OrderError::Invalid(v)) => {
                    let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
                    return Err(format!(
                        "expected a violation of {want}, got violations of {}",
                        fields.join(", ")
                    ));
                }
                _ => return Err(format!("expected a violation of {want}")),
            }
        }
        Ok(())
    }
}

/// How a recording is configured (the body of `PUT /admin/recording`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// Percentage of calls recorded, 1-100.
    #[serde(default = "default_sample_percent")]
    pub sample_percent: u8,
    /// Most cases kept, 1-[`MAX_CASES`].
    #[serde(default = "default_max_cases")]
    pub max_cases: usize,
    /// How long the recording runs, in seconds (1 to 86400).
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// Replace the customer id and metadata values by digests.
    #[serde(default = "default_redact")]
    pub redact: bool,
}

fn default_sample_percent() -> u8 {
    100
}
fn default_max_cases() -> usize {
    1000
}
fn default_window_seconds() -> u64 {
    600
}
fn default_redact() -> bool {
    true
}

impl Default for RecordingSpec {
    fn default() -> Self {
        Self {
            sample_percent: default_sample_percent(),
            max_cases: default_max_cases(),
            window_seconds: default_window_seconds(),
            redact: default_redact(),
        }
    }
}

impl RecordingSpec {
    /// Whether every field is in its range; otherwise the first field that is not and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=100).contains(&self.sample_percent) {
            return Err(("sample_percent", "must be 1-100".into()));
        }
        if !(1..=MAX_CASES).contains(&self.max_cases) {
            return Err(("max_cases", format!("must be 1-{MAX_CASES}")));
        }
        if !(1..=MAX_WINDOW.as_secs()).contains(&self.window_seconds) {
            return Err((
                "window_seconds",
                format!("must be 1-{}", MAX_WINDOW.as_secs()),
            ));
        }
        Ok(())
    }
}

/// A recording's configuration and counts (`GET /admin/recording`, and in exported files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingStatus {
    /// How it was configured.
    #[serde(flatten)]
    pub spec: RecordingSpec,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its window ends (or ended).
    pub ends_at: DateTime<Utc>,
    /// Whether it still takes cases (window open, room left).
    pub active: bool,
    /// Cases kept.
    pub kept: u64,
    /// Calls not sampled.
    pub sampled_out: u64,
    /// Sampled calls dropped because `max_cases` were kept already.
    pub dropped_full: u64,
    /// Sampled calls dropped for a case over [`MAX_CASE_BYTES`].
    pub dropped_oversized: u64,
    /// Sampled calls dropped because the call asked for more answers than a case keeps.
    pub dropped_incomplete: u64,
}

/// One running recording (see the module doc).
pub struct Recorder {
    spec: RecordingSpec,
    /// The pseudonyms' key: random, never exported.
    key: [u8; 16],
    started_at: DateTime<Utc>,
    ends: Instant,
    cases: std::sync::Mutex<Vec<Case>>,
    next_id: AtomicU64,
    sampled_out: AtomicU64,
    dropped_full: AtomicU64,
    dropped_oversized: AtomicU64,
    dropped_incomplete: AtomicU64,
    counter: Counter<u64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("spec", &self.spec)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recording of `spec` starting now (the spec must be [valid](RecordingSpec::validate)).
    pub fn start(spec: RecordingSpec) -> Self {
        let window = Duration::from_secs(spec.window_seconds).min(MAX_WINDOW);
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // No entropy source: a key from the clock is still unknown outside the process.
            let now = Utc::now().timestamp_nanos_opt().unwrap_or_default();
            key[..8].copy_from_slice(&now.to_le_bytes());
        }
        Self {
            key,
            started_at: Utc::now(),
            ends: Instant::now() + window,
            cases: std::sync::Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            sampled_out: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_oversized: AtomicU64::new(0),
            dropped_incomplete: AtomicU64::new(0),
            counter: opentelemetry::global::meter("weir.runtime")
                .u64_counter("weir.plugin.cases.recorded")
                .with_description(
                    "Plugin calls seen by a case recording, by outcome (kept, sampled_out, dropped_full, dropped_oversized, dropped_incomplete)",
                )
                .build(),
            spec,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Case>> {
        self.cases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, outcome: &'static str) {
        self.counter.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Whether the window is open (room is checked when a case is kept).
    fn open(&self) -> bool {
        Instant::now() < self.ends
    }

    /// Whether to record this call: the window is open and the call is in the sample.
    pub(super) fn sample(&self) -> bool {
        if !self.open() {
            return false;
        }
        if self.spec.sample_percent >= 100 {
            return true;
        }
        let mut byte = [0u8; 2];
        let roll = match getrandom::fill(&mut byte) {
            Ok(()) => u16::from_le_bytes(byte) % 100,
            Err(_) => 0,
        };
        if roll < u16::from(self.spec.sample_percent) {
            true
        } else {
            self.sampled_out.fetch_add(1, Ordering::Relaxed);
            self.count("sampled_out");
            false
        }
    }

    /// Keep the case of one recorded call, unless it is incomplete, too large, or the
    /// recording is full.
    pub(super) fn keep(
        &self,
        plugin: &PluginVersion,
        call: CaseCall,
        trace: &CallTrace,
        decision: Decision,
    ) {
        let seen = trace.snapshot();
        if seen.overflowed {
            self.dropped_incomplete.fetch_add(1, Ordering::Relaxed);
            self.count("dropped_incomplete");
            return;
        }
        let call = if self.spec.redact {
            redact(&self.key, call)
        } else {
            call
        };
        let mut case = Case {
            id: String::new(),
            note: None,
            call,
            catalog: seen.catalog,
            config: seen.config,
            decision: Some(decision),
            decided_by: Some(DecidedBy {
                name: plugin.meta.name.clone(),
                version: plugin.meta.version.clone(),
                digest: format!("sha256:{}", plugin.meta.digest),
            }),
            expect: None,
        };
        let size = serde_json::to_vec(&case).map_or(usize::MAX, |v| v.len());
        if size > MAX_CASE_BYTES {
            self.dropped_oversized.fetch_add(1, Ordering::Relaxed);
            self.count("dropped_oversized");
            return;
        }
        let mut cases = self.lock();
        if cases.len() >= self.spec.max_cases {
            drop(cases);
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            self.count("dropped_full");
            return;
        }
        case.id = format!("case-{:05}", self.next_id.fetch_add(1, Ordering::Relaxed));
        cases.push(case);
        drop(cases);
        self.count("kept");
    }

    /// The recording's configuration and counts.
    pub fn status(&self) -> RecordingStatus {
        let kept = self.lock().len();
        let left = self.ends.saturating_duration_since(Instant::now());
        let ends_at = Utc::now() + chrono::Duration::from_std(left).unwrap_or_default();
        RecordingStatus {
            spec: self.spec.clone(),
            started_at: self.started_at,
            ends_at,
            active: self.open() && kept < self.spec.max_cases,
            kept: kept as u64,
            sampled_out: self.sampled_out.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_oversized: self.dropped_oversized.load(Ordering::Relaxed),
            dropped_incomplete: self.dropped_incomplete.load(Ordering::Relaxed),
        }
    }

    /// The cases kept so far, as a cases file.
    pub fn export(&self) -> CasesFile {
        CasesFile {
            format: FORMAT.to_owned(),
            recording: Some(self.status()),
            cases: self.lock().clone(),
        }
    }
}

/// Longest type prefix [`pseudonym`] keeps: ASCII letters and then `_` or `-` (`cus_`).
const MAX_KEPT_PREFIX: usize = 8;

/// A pseudonym of `value` under `key`, of the same shape (see the module doc): a leading
/// type prefix of at most [`MAX_KEPT_PREFIX`] letters followed by `_` or `-` is kept; each
/// other ASCII digit, lower-case and upper-case letter is replaced by one of the same kind,
/// drawn from `SHA-256(key, value, block)`; every other character is kept.
pub fn pseudonym(key: &[u8; 16], value: &str) -> String {
    let prefix = value
        .char_indices()
        .find(|(_, c)| *c == '_' || *c == '-')
        .filter(|(at, _)| {
            *at > 0
                && *at <= MAX_KEPT_PREFIX
                && value[..*at].bytes().all(|b| b.is_ascii_alphabetic())
        })
        .map_or(0, |(at, _)| at + 1);
    let mut stream = Vec::new();
    let mut block: u32 = 0;
    let mut next = |modulus: u8| {
        if stream.is_empty() {
            let mut h = Sha256::new();
            h.update(key);
            h.update((value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
            h.update(block.to_le_bytes());
            block += 1;
            stream = h.finalize().to_vec();
        }
        stream.pop().unwrap_or_default() % modulus
    };
    let mut out = String::with_capacity(value.len());
    out.push_str(&value[..prefix]);
    for c in value[prefix..].chars() {
        out.push(match c {
            '0'..='9' => char::from(b'0' + next(10)),
            'a'..='z' => char::from(b'a' + next(26)),
            'A'..='Z' => char::from(b'A' + next(26)),
            c => c,
        });
    }
    out
}

fn redact(key: &[u8; 16], call: CaseCall) -> CaseCall {
    match call {
        CaseCall::PlaceOrder { mut request } => {
            request.customer_id = pseudonym(key, &request.customer_id);
            for value in request.metadata.values_mut() {
                *value = pseudonym(key, value);
            }
            CaseCall::PlaceOrder { request }
        }
        CaseCall::Transition { mut order, event } => {
            order.customer_id = pseudonym(key, &order.customer_id);
            CaseCall::Transition { order, event }
        }
    }
}

/// One replayed case: the decision and the budget it used.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// What the plugin decided.
    pub decision: Decision,
    /// Wall time of the call (waiting for an instance, instantiation, the call, the check).
    pub duration: Duration,
    /// Bytes of linear memory its instance had at the end.
    pub memory_bytes: usize,
    /// Import calls it made.
    pub host_calls: u32,
    /// What it asked for that the case does not hold (answered as missing).
    pub unscripted: Vec<String>,
}

impl Runtime {
    /// Start a recording (replacing any running one; its cases are discarded).
    pub fn start_recording(&self, spec: RecordingSpec) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::start(spec));
        self.inner.recording.store(Some(recorder.clone()));
        recorder
    }

    /// The current recording (running or over), if any.
    pub fn recording(&self) -> Option<Arc<Recorder>> {
        self.inner.recording.load_full()
    }

    /// Stop the current recording and discard it; returns it.
    pub fn stop_recording(&self) -> Option<Arc<Recorder>> {
        self.inner.recording.swap(None)
    }

    /// Whether a recording exists whose window is open (cheap; no sampling).
    pub(super) fn recording_active(&self) -> bool {
        let current = self.inner.recording.load();
        Option::as_ref(&current).is_some_and(|r| r.open())
    }

    /// The recording to trace a call by a version in `role` in, if the call is sampled.
    pub(super) fn recorder_for(&self, role: Role) -> Option<Arc<Recorder>> {
        if role == Role::Shadow {
            return None;
        }
        let current = self.inner.recording.load();
        Option::as_ref(&current).filter(|r| r.sample()).cloned()
    }

    /// Replay `case` on `plugin` (see the module doc).
    pub async fn replay(&self, plugin: &PluginVersion, case: &Case) -> Replayed {
        let trace = CallTrace::scripted(Arc::new(Script::new(&case.catalog, &case.config)));
        let started = Instant::now();
        let decision = match &case.call {
            CaseCall::PlaceOrder { request } => {
                let call = invoke::PlaceOrder {
                    wire: bindings::OrderRequest::from(request),
                    request: request.clone(),
                };
                let result = self
                    .invoke_traced(plugin, Role::Stable, call, None, Some(trace.clone()))
                    .await;
                Decision::of(&result, |p: &PricedOrder| Decision::Priced(p.clone()))
            }
            CaseCall::Transition { order, event } => {
                let wire = bindings::OrderSnapshot {
                    id: order.id.clone(),
                    customer_id: order.customer_id.clone(),
                    status: order.status.into(),
                    total: (&Money::new(order.total.amount, order.total.currency.clone())).into(),
                };
                let call = invoke::Transition {
                    wire,
                    order: None,
                    from: order.status,
                    event: *event,
                };
                let result = self
                    .invoke_traced(plugin, Role::Stable, call, None, Some(trace.clone()))
                    .await;
                Decision::of(&result, |s: &OrderStatus| Decision::Status(*s))
            }
        };
        let duration = started.elapsed();
        let seen = trace.snapshot();
        Replayed {
            decision,
            duration,
            memory_bytes: seen.memory_bytes,
            host_calls: seen.host_calls,
            unscripted: seen.unscripted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::domain::{Rejection, Violation};

    fn request() -> OrderRequest {
        OrderRequest {
            customer_id: "cus_alice".into(),
            currency: "EUR".into(),
            lines: vec![weir_core::domain::LineRequest {
                sku: "apple".into(),
                quantity: 2,
            }],
            metadata: [("note".to_owned(), "leave at the door".to_owned())].into(),
        }
    }

    #[test]
    fn a_cases_file_round_trips_and_refuses_unknown_fields_and_other_formats() {
        let file = CasesFile::new(vec![Case {
            id: "one".into(),
            note: None,
            call: CaseCall::PlaceOrder { request: request() },
            catalog: vec![],
            config: vec![],
            decision: Some(Decision::Refused(OrderError::Rejected(Rejection {
                reason: "UNKNOWN_SKU".into(),
                message: "unknown sku apple".into(),
            }))),
            decided_by: None,
            expect: Some(Expect {
                outcome: "rejected".into(),
                status: None,
                reason: Some("UNKNOWN_SKU".into()),
                field: None,
            }),
        }]);
        let json = serde_json::to_vec(&file).unwrap();
        assert_eq!(CasesFile::parse(&json).unwrap(), file);

        let typo = String::from_utf8(json.clone())
            .unwrap()
            .replace("\"catalog\"", "\"catalogue\"")
            .replace("\"expect\"", "\"expectt\"");
        let err = CasesFile::parse(typo.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("cases[0]") && err.contains("expectt"), "{err}");

        let other = String::from_utf8(json)
            .unwrap()
            .replace(FORMAT, "weir.cases/2");
        assert!(matches!(
            CasesFile::parse(other.as_bytes()),
            Err(CasesFileError::Format(f)) if f == "weir.cases/2"
        ));
        let twice = serde_json::to_vec(&CasesFile::new(vec![
            file.cases[0].clone(),
            file.cases[0].clone(),
        ]))
        .unwrap();
        assert!(
            CasesFile::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("two cases")
        );
        assert!(matches!(
            CasesFile::parse(b"{\"format\": "),
            Err(CasesFileError::Parse(_))
        ));
    }

    #[test]
    fn redaction_keeps_the_shape_and_equality_but_not_the_value() {
        let key = [7u8; 16];
        let CaseCall::PlaceOrder { request: r } =
            redact(&key, CaseCall::PlaceOrder { request: request() })
        else {
            unreachable!()
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("alice") && !text.contains("door"), "{text}");
        // The type prefix stays, the rest keeps its length and the kind of each character.
        assert!(r.customer_id.starts_with("cus_"), "{}", r.customer_id);
        assert_eq!(r.customer_id.len(), "cus_alice".len());
        assert!(
            r.customer_id[4..].bytes().all(|b| b.is_ascii_lowercase()),
            "{}",
            r.customer_id
        );
        let note = &r.metadata["note"];
        assert_eq!(note.len(), "leave at the door".len());
        assert_eq!(note.matches(' ').count(), 3, "{note}");
        assert_eq!(
            r.lines,
            request().lines,
            "the lines are the business input: kept"
        );
        // Equal values stay equal under one key; another key gives another pseudonym.
        assert_eq!(pseudonym(&key, "cus_alice"), r.customer_id);
        assert_ne!(pseudonym(&key, "cus_alicf"), r.customer_id);
        assert_ne!(pseudonym(&[8u8; 16], "cus_alice"), r.customer_id);
        let shaped = pseudonym(&key, "Order-2024-XY9_long");
        assert!(shaped.starts_with("Order-"), "{shaped}");
        assert_eq!(shaped.len(), 19);
        assert!(
            shaped[6..10].bytes().all(|b| b.is_ascii_digit()),
            "{shaped}"
        );
        assert!(
            shaped[11..13].bytes().all(|b| b.is_ascii_uppercase()),
            "{shaped}"
        );
        // No prefix kept when the first segment is long or not letters only.
        assert!(!pseudonym(&key, "customers_1").starts_with("customers_"));
        assert!(!pseudonym(&key, "c1_x").starts_with("c1_"));
        let long = "x".repeat(100);
        assert_eq!(
            pseudonym(&key, &long).len(),
            100,
            "the stream extends past one digest"
        );
    }

    #[test]
    fn an_expectation_names_what_differs() {
        let rejected = Decision::Refused(OrderError::Rejected(Rejection {
            reason: "INSUFFICIENT_STOCK".into(),
            message: "none".into(),
        }));
        let expect = |outcome: &str| Expect {
            outcome: outcome.into(),
            status: None,
            reason: None,
            field: None,
        };
        assert_eq!(expect("rejected").check(&rejected), Ok(()));
        assert_eq!(
            expect("ok").check(&rejected),
            Err("expected ok, got rejected".into())
        );
        let reason = Expect {
            reason: Some("UNKNOWN_SKU".into()),
            ..expect("rejected")
        };
        assert_eq!(
            reason.check(&rejected),
            Err("expected reason UNKNOWN_SKU, got INSUFFICIENT_STOCK".into())
        );
        let status = Expect {
            status: Some(OrderStatus::Paid),
            ..expect("ok")
        };
        assert_eq!(status.check(&Decision::Status(OrderStatus::Paid)), Ok(()));
        assert!(
            status
                .check(&Decision::Status(OrderStatus::Cancelled))
                .is_err()
        );
        let field = Expect {
            field: Some("lines".into()),
            ..expect("invalid")
        };
        let invalid = |f: &str| {
            Decision::Refused(OrderError::Invalid(vec![Violation::new(
                f, "REQUIRED", "x",
            )]))
        };
        assert_eq!(field.check(&invalid("lines")), Ok(()));
        assert!(field.check(&invalid("currency")).is_err());
    }

    #[test]
    fn a_recording_spec_is_bounded() {
        assert!(RecordingSpec::default().validate().is_ok());
        for bad in [
            RecordingSpec {
                sample_percent: 0,
                ..Default::default()
            },
            RecordingSpec {
                max_cases: MAX_CASES + 1,
                ..Default::default()
            },
            RecordingSpec {
                window_seconds: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
