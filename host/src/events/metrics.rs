//! The events instruments, from `opentelemetry::global::meter("weir.events")` (the metrics
//! module installs the provider before the server starts). Labels are bounded: event types
//! and dead-letter reasons are closed sets; no ids ever become labels.

use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge, UpDownCounter};

use super::backpressure::BackpressureSnapshot;

/// Every counter and gauge of the events subsystem.
#[derive(Debug)]
pub(crate) struct EventMetrics {
    /// Messages handed to the broker by the relay.
    pub(crate) published: Counter<u64>,
    /// Publisher confirms (acks) received; rows marked published.
    pub(crate) confirmed: Counter<u64>,
    /// Mandatory messages the broker could not route (not marked published).
    pub(crate) returned: Counter<u64>,
    /// Nacked, timed-out or failed publishes (not marked published), by `reason`
    /// (`nacked`, `confirm_timeout`, `link_broken`: see [`super::relay`]).
    pub(crate) failed: Counter<u64>,
    /// Consumer deliveries by outcome (`applied`, `no_change`, `duplicate`, `retried`,
    /// `dead_lettered`).
    pub(crate) consumed: Counter<u64>,
    /// Dead-lettered deliveries by reason (a closed set of codes).
    pub(crate) dead_lettered: Counter<u64>,
    /// Deliveries being processed right now.
    pub(crate) in_flight: UpDownCounter<i64>,
    gauges: Mutex<Gauges>,
}

/// The observable gauges, kept alive as long as the metrics are.
#[derive(Debug, Default)]
struct Gauges {
    _counts: Vec<ObservableGauge<u64>>,
    _age: Option<ObservableGauge<f64>>,
}

impl EventMetrics {
    pub(crate) fn new() -> Self {
        let meter = opentelemetry::global::meter("weir.events");
        Self {
            published: meter
                .u64_counter("weir.events.published")
                .with_description("Order events handed to the broker by the outbox relay")
                .build(),
            confirmed: meter
                .u64_counter("weir.events.confirmed")
                .with_description("Order events confirmed by the broker and marked published")
                .build(),
            returned: meter
                .u64_counter("weir.events.returned")
                .with_description("Order events returned as unroutable (left in the outbox)")
                .build(),
            failed: meter
                .u64_counter("weir.events.publish_failed")
                .with_description(
                    "Order events nacked or unconfirmed (left in the outbox), by reason",
                )
                .build(),
            consumed: meter
                .u64_counter("weir.events.consumed")
                .with_description("Consumed messages by outcome")
                .build(),
            dead_lettered: meter
                .u64_counter("weir.events.dead_lettered")
                .with_description("Dead-lettered messages by reason")
                .build(),
            in_flight: meter
                .i64_up_down_counter("weir.events.consumer.in_flight")
                .with_description("Deliveries being processed")
                .build(),
            gauges: Mutex::new(Gauges::default()),
        }
    }

    /// Outbox lag, consumer backlog and the backpressure state, read from `snapshot` at each
    /// collection.
    pub(crate) fn observe_backpressure(&self, snapshot: Arc<Mutex<BackpressureSnapshot>>) {
        let meter = opentelemetry::global::meter("weir.events");
        let age = {
            let snapshot = snapshot.clone();
            meter
                .f64_observable_gauge("weir.outbox.oldest_unpublished_age")
                .with_unit("s")
                .with_description("Age of the oldest unpublished outbox event")
                .with_callback(move |o| {
                    let s = snapshot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    o.observe(s.oldest_unpublished_age_ms as f64 / 1000.0, &[]);
                })
                .build()
        };
        let read = move |f: fn(&BackpressureSnapshot) -> u64| {
            let snapshot = snapshot.clone();
            move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
                let s = snapshot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                o.observe(f(&s), &[]);
            }
        };
        let gauges = vec![
            meter
                .u64_observable_gauge("weir.outbox.unpublished")
                .with_description("Outbox events not yet confirmed by the broker")
                .with_callback(read(|s| s.unpublished))
                .build(),
            meter
                .u64_observable_gauge("weir.events.consumer.backlog")
                .with_description("Messages waiting in the consumer queue")
                .with_callback(read(|s| s.consumer_backlog))
                .build(),
            meter
                .u64_observable_gauge("weir.events.backpressure.active")
                .with_description("1 while order intake is rejected with BACKPRESSURE")
                .with_callback(read(|s| u64::from(s.active)))
                .build(),
        ];
        *self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Gauges {
            _counts: gauges,
            _age: Some(age),
        };
    }

    pub(crate) fn consumed(&self, outcome: &'static str, event_type: &'static str) {
        self.consumed.add(
            1,
            &[
                KeyValue::new("outcome", outcome),
                KeyValue::new("event_type", event_type),
            ],
        );
    }

    pub(crate) fn dead_lettered(&self, reason: &'static str, event_type: &'static str) {
        self.dead_lettered.add(
            1,
            &[
                KeyValue::new("reason", reason),
                KeyValue::new("event_type", event_type),
            ],
        );
    }
}
