//! Whether the previous run's drain finished cleanly, observable after that process is gone.
//!
//! A drain's result is known only as the process exits, after Prometheus' last scrape (the
//! operations listener closes at `stop_accepting`). It is made observable two ways:
//!
//! - **A marker file**, `<data_dir>/shutdown.json`: [`RunMarker::serving`] writes
//!   `{"state":"running",..}` once the server serves; the end of the drain replaces it with
//!   `{"state":"stopped","outcome":..,"finished_at":..,"report":{..}}` ([`RunMarker::drained`]),
//!   and a second signal with `outcome: forced` ([`RunMarker::forced`]). The next start in the
//!   same data directory ([`RunMarker::open`]) reads it, logs it, and exports the gauge
//!   `weir_previous_shutdown_timestamp_seconds{outcome}`: one series for the previous run's
//!   [`Outcome`], valued at the Unix time that run ended (for `killed`, when this start found
//!   it: the real end is unknown). No series on a first start.
//! - **A counter**, `weir_shutdown_drains_total{outcome}` (`clean`, `deadline`), incremented
//!   at the end of the drain. Prometheus never scrapes that increment; it leaves the process
//!   through the OTLP metrics export, whose final flush runs after the drain (`main.rs`:
//!   `telemetry.shutdown()`). Both outcomes are created at 0 when the process starts so that
//!   `increase()` over the exported series sees the step.
//!
//! The marker needs a data directory that outlives the process (systemd, a StatefulSet's
//! volume, a container restarted in the same pod). A replaced Kubernetes pod with an
//! `emptyDir` loses it; there only the OTLP counter tells (and nothing tells about a
//! `killed` run). Writing it never fails the server: an unwritable directory is logged.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};
use serde::{Deserialize, Serialize};

use super::DrainReport;

/// File name of the marker in the data directory.
pub const MARKER_FILE: &str = "shutdown.json";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The drain finished before its deadline: nothing was interrupted.
    Clean,
    /// The drain deadline cut work off (plugin calls interrupted, connections closed).
    Deadline,
    /// A second signal stopped the drain; the process exited at once (exit code 3).
    Forced,
    /// The run never recorded an end: SIGKILL, OOM kill, crash, power loss.
    Killed,
}

impl Outcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Deadline => "deadline",
            Self::Forced => "forced",
            Self::Killed => "killed",
        }
    }

    /// The outcome of a finished drain.
    pub fn of(report: &DrainReport) -> Self {
        if report.clean {
            Self::Clean
        } else {
            Self::Deadline
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Marker {
    Running {
        pid: u32,
        started_at: DateTime<Utc>,
    },
    Stopped {
        outcome: Outcome,
        finished_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        report: Option<serde_json::Value>,
    },
}

/// What the marker said about the previous run (also shown by `/infoz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousRun {
    /// How it ended.
    pub outcome: Outcome,
    /// When it ended (for [`Outcome::Killed`], when this start found the marker).
    pub ended_at: DateTime<Utc>,
}

/// The marker of this run and its instruments.
#[derive(Debug)]
pub struct RunMarker {
    path: Option<PathBuf>,
    previous: Option<PreviousRun>,
    drains: Counter<u64>,
    _previous_gauge: Gauge<f64>,
}

impl RunMarker {
    /// Read the previous run's outcome from `data_dir` (created if needed), log it and export
    /// it, with instruments on the global meter provider. Writes nothing yet.
    pub fn open(data_dir: &Path) -> Self {
        Self::open_with(data_dir, &opentelemetry::global::meter("weir.lifecycle"))
    }

    /// [`RunMarker::open`] with instruments from `meter`.
    pub fn open_with(data_dir: &Path, meter: &Meter) -> Self {
        let drains = meter
            .u64_counter("weir.shutdown.drains")
            .with_description("Drains finished by this process, by outcome (clean, deadline)")
            .build();
        for outcome in [Outcome::Clean, Outcome::Deadline] {
            drains.add(0, &[KeyValue::new("outcome", outcome.as_str())]);
        }
        let gauge = meter
            .f64_gauge("weir.previous_shutdown.timestamp")
            .with_unit("s")
            .with_description(
                "Unix time the previous run in this data directory ended, labelled with how \
                 (clean, deadline, forced, killed)",
            )
            .build();
        let path = match std::fs::create_dir_all(data_dir) {
            Ok(()) => Some(data_dir.join(MARKER_FILE)),
            Err(e) => {
                tracing::warn!(
                    data_dir = %data_dir.display(),
                    error = %e,
                    "cannot create the data directory: the outcome of this run's shutdown will \
                     not be known to the next start"
                );
                None
            }
        };
        let previous = path.as_deref().and_then(read_previous);
        if let Some(p) = &previous {
            gauge.record(
                p.ended_at.timestamp_millis() as f64 / 1000.0,
                &[KeyValue::new("outcome", p.outcome.as_str())],
            );
            if p.outcome == Outcome::Clean {
                tracing::info!(
                    outcome = p.outcome.as_str(),
                    ended_at = %p.ended_at.to_rfc3339(),
                    "previous run shut down cleanly"
                );
            } else {
                tracing::warn!(
                    outcome = p.outcome.as_str(),
                    ended_at = %p.ended_at.to_rfc3339(),
                    "previous run did not shut down cleanly ({}): see RUNBOOK.md, WeirUncleanShutdown",
                    p.outcome.as_str()
                );
            }
        }
        Self {
            path,
            previous,
            drains,
            _previous_gauge: gauge,
        }
    }

    /// The previous run's outcome, if the data directory had a marker.
    pub fn previous(&self) -> Option<&PreviousRun> {
        self.previous.as_ref()
    }

    /// This run serves: a start that finds this marker unchanged reports [`Outcome::Killed`].
    pub fn serving(&self) {
        self.write(&Marker::Running {
            pid: std::process::id(),
            started_at: Utc::now(),
        });
    }

    /// The drain finished: count it and record its outcome with the report.
    pub fn drained(&self, report: &DrainReport) {
        let outcome = Outcome::of(report);
        self.drains
            .add(1, &[KeyValue::new("outcome", outcome.as_str())]);
        self.write(&Marker::Stopped {
            outcome,
            finished_at: Utc::now(),
            report: serde_json::to_value(report).ok(),
        });
    }

    /// A second signal cut the drain short; the process exits right after.
    pub fn forced(&self) {
        self.write(&Marker::Stopped {
            outcome: Outcome::Forced,
            finished_at: Utc::now(),
            report: None,
        });
    }

    /// Write through a temporary file and a rename, so a crash mid-write never leaves a
    /// half-written marker.
    fn write(&self, marker: &Marker) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(marker)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot write the shutdown marker: the next start will not know how this run ended"
            );
        }
    }
}

/// The previous run's outcome from the marker at `path`; `None` without a readable one.
fn read_previous(path: &Path) -> Option<PreviousRun> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the shutdown marker");
            return None;
        }
    };
    match serde_json::from_slice::<Marker>(&bytes) {
        Ok(Marker::Running { .. }) => Some(PreviousRun {
            outcome: Outcome::Killed,
            ended_at: Utc::now(),
        }),
        Ok(Marker::Stopped {
            outcome,
            finished_at,
            ..
        }) => Some(PreviousRun {
            outcome,
            ended_at: finished_at,
        }),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable shutdown marker ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter on its own provider and registry, so other tests' instruments do not mix in.
    fn meter() -> (
        Meter,
        prometheus::Registry,
        opentelemetry_sdk::metrics::SdkMeterProvider,
    ) {
        crate::telemetry::metrics::test_meter("weir.lifecycle")
    }

    fn render(registry: &prometheus::Registry) -> String {
        crate::telemetry::metrics::render_text(registry)
    }

    fn sample(text: &str, name: &str, outcome: &str) -> Option<f64> {
        crate::telemetry::metrics::samples(text, name, &[("outcome", outcome)])
            .first()
            .copied()
    }

    const GAUGE: &str = "weir_previous_shutdown_timestamp_seconds";

    #[test]
    fn each_way_a_run_ends_is_reported_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");

        // First start: nothing to report; the counters exist at 0.
        let (m, registry, _p) = meter();
        let first = RunMarker::open_with(&data, &m);
        assert_eq!(first.previous(), None);
        let text = render(&registry);
        assert!(!text.contains(GAUGE), "{text}");
        assert_eq!(
            sample(&text, "weir_shutdown_drains_total", "clean"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "weir_shutdown_drains_total", "deadline"),
            Some(0.0)
        );

        // Serving, then gone without a drain: the next start reports `killed`, now.
        first.serving();
        let before = Utc::now().timestamp() as f64;
        let (m, registry, _p) = meter();
        let second = RunMarker::open_with(&data, &m);
        assert_eq!(second.previous().unwrap().outcome, Outcome::Killed);
        let at = sample(&render(&registry), GAUGE, "killed").expect("killed reported");
        assert!(
            at >= before && at <= Utc::now().timestamp() as f64 + 1.0,
            "{at}"
        );

        // A clean drain: counted, and the next start reports `clean` at its end time.
        second.serving();
        let clean = DrainReport {
            clean: true,
            ..DrainReport::default()
        };
        second.drained(&clean);
        let (m, registry, _p) = meter();
        let third = RunMarker::open_with(&data, &m);
        assert_eq!(third.previous().unwrap().outcome, Outcome::Clean);
        let text = render(&registry);
        assert!(sample(&text, GAUGE, "clean").is_some(), "{text}");
        assert!(
            sample(&text, GAUGE, "killed").is_none(),
            "one outcome only: {text}"
        );

        // A drain cut off by its deadline.
        third.serving();
        third.drained(&DrainReport::default());
        let text = render(&registry);
        assert_eq!(
            sample(&text, "weir_shutdown_drains_total", "deadline"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "weir_shutdown_drains_total", "clean"),
            Some(0.0)
        );
        let (m, _registry, _p) = meter();
        let fourth = RunMarker::open_with(&data, &m);
        assert_eq!(fourth.previous().unwrap().outcome, Outcome::Deadline);

        // A second signal.
        fourth.serving();
        fourth.forced();
        let (m, _registry, _p) = meter();
        let fifth = RunMarker::open_with(&data, &m);
        assert_eq!(fifth.previous().unwrap().outcome, Outcome::Forced);
    }

    #[test]
    fn a_garbled_marker_is_ignored_and_an_unusable_directory_does_not_fail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), b"{not json").unwrap();
        let (m, _r, _p) = meter();
        let marker = RunMarker::open_with(dir.path(), &m);
        assert_eq!(marker.previous(), None);
        marker.serving();
        assert!(
            std::fs::read_to_string(dir.path().join(MARKER_FILE))
                .unwrap()
                .contains("\"state\":\"running\"")
        );

        // The data directory is a file: nothing is written, nothing panics.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let (m, _r, _p) = meter();
        let marker = RunMarker::open_with(&file, &m);
        marker.serving();
        marker.drained(&DrainReport::default());
        assert_eq!(std::fs::read(&file).unwrap(), b"");
    }
}
