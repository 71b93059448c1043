//! A telemetry collector that accepts connections and never answers, while `weir` serves.
//!
//! Export runs on the SDK's own batch threads, off the request path: a hung collector must
//! neither fail nor hold up a request. (Shutdown with such a collector, bounded by
//! `telemetry.shutdown_timeout_ms`, is covered with the SIGTERM tests.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::{WAIT, Weir, client, order_body, serve};

/// Accepts every connection, reads what arrives (counting the bytes), answers nothing and
/// never closes.
async fn hung_collector() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n, Ordering::SeqCst);
                }
                // Keep the socket open (no FIN) until the test ends.
                std::future::pending::<()>().await;
            });
        }
    });
    (endpoint, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_fail_requests() {
    let (endpoint, received) = hung_collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(&dir.path().join("data"));
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        // Export early and often, so exports are hung while the requests run.
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_BLRP_SCHEDULE_DELAY", "50")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100");
    let weir = Weir::spawn_in(cmd, Some(dir)).await;
    let c = client();

    // Not vacuous: the exporter reached the collector (and waits on it) before the requests.
    let deadline = tokio::time::Instant::now() + WAIT;
    while received.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exporter never connected to the collector"
        );
        let _ = c.get(format!("{}/livez", weir.ops)).send().await;
        tokio::time::sleep(crate::support::POLL).await;
    }

    for i in 0..40 {
        let res = tokio::time::timeout(
            WAIT,
            c.post(format!("{}/v1/orders", weir.api))
                .header("Idempotency-Key", format!("hung-otlp-{i}"))
                .json(&order_body("cus_otlp", "KB-001"))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("order {i} hung with the collector hung"))
        .expect("POST /v1/orders");
        assert_eq!(
            res.status(),
            201,
            "order {i}: {}",
            res.text().await.unwrap()
        );
    }
    let ready = c.get(format!("{}/readyz", weir.ops)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    weir.kill9().await;
}
