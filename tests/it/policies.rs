//! Edge and dependency policies end to end, through the real server over loopback HTTP:
//! real PostgreSQL/SQLite, real Redis, the real plugin. The only artificial part is the
//! dependency fault hook (delay or hold catalog reads), which stands in for a slow database.

use std::time::Duration;

use serde_json::Value;
use weir_host::policy::circuit_breaker::BreakerState;

use crate::support::{Backend, TestServer, check, eventually, metric, order_body};

async fn place(s: &TestServer, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let (status, headers, body) = s
        .post_order(Some(key), &order_body("cus_policy", &[("KB-001", 1)]))
        .await;
    (status.as_u16(), headers, body)
}

/// The scenario: a slow catalog makes lookups time out at the configured bound and
/// opens the database breaker (readiness goes false); while open, requests fail fast with
/// `DEPENDENCY_UNAVAILABLE` without touching the database; after recovery the breaker
/// half-opens, a probe succeeds and it closes.
#[tokio::test]
async fn slow_catalog_times_out_opens_the_breaker_fails_fast_and_recovers() {
    let s = TestServer::start(Backend::Postgres, |c, _| {
        c.policy.cache.ttl = Duration::ZERO; // every lookup reaches the database
        let db = &mut c.policy.database;
        db.timeout = Duration::from_millis(100);
        db.breaker.min_calls = 3;
        db.breaker.failure_rate = 0.5;
        // Long enough that "still open" never races a loaded machine's clock; the test ends
        // the open period as an explicit event (`end_open_period`, feature fault-injection).
        db.breaker.open_for = Duration::from_secs(120);
        db.breaker.half_open_probes = 1;
    })
    .await;
    let deps = s.state().deps.clone();
    let timeouts = |t: &str| {
        metric(
            t,
            "weir_dependency_calls_total",
            &[("dependency", "database"), ("outcome", "timeout")],
        )
    };
    let shorted = |t: &str| {
        metric(
            t,
            "weir_dependency_calls_total",
            &[("dependency", "database"), ("outcome", "short_circuited")],
        )
    };

    let (status, _, body) = place(&s, "healthy").await;
    assert_eq!(status, 201, "{body}");
    let before = s.metrics().await;

    // Slow catalog: far beyond the 100ms bound of a database attempt. With the healthy call
    // above, two timeouts make 2 failures of 3 calls: the breaker opens; the third request is
    // already refused by it. The client sees the same retryable code either way.
    deps.database.fault.set_delay(Duration::from_secs(5));
    for i in 0..3 {
        let (status, headers, body) = place(&s, &format!("slow-{i}")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "DEPENDENCY_UNAVAILABLE", "{body}");
        assert_eq!(body["retryable"], true);
        assert!(headers.contains_key("retry-after"));
    }
    let after_slow = s.metrics().await;
    assert!(
        timeouts(&after_slow) - timeouts(&before) >= 2.0,
        "slow lookups ended as timeouts of the database attempt"
    );
    assert!(
        shorted(&after_slow) > shorted(&before),
        "the third was short-circuited"
    );
    assert_eq!(deps.database.breaker.state(), BreakerState::Open);
    let (status, body) = s.readyz().await;
    assert_eq!(
        status, 503,
        "an open breaker on the database makes the instance unready: {body}"
    );
    assert_eq!(check(&body, "database.breaker")["ok"], false);

    // While open: fail fast. The database is not called (no new timeout), the attempt is
    // short-circuited by the breaker.
    let (status, _, body) = place(&s, "while-open").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("DEPENDENCY_UNAVAILABLE"))
    );
    let while_open = s.metrics().await;
    assert_eq!(
        timeouts(&while_open),
        timeouts(&after_slow),
        "no call reached the database"
    );
    assert!(shorted(&while_open) > shorted(&after_slow));

    // Still open after all of the above, however slow the machine: the period is 120 s.
    assert_eq!(deps.database.breaker.state(), BreakerState::Open);

    // Recovery: the dependency is healthy again; once the open period ends the breaker
    // reports half-open, readiness returns, and the first request is the probe that closes it.
    deps.database.fault.set_delay(Duration::ZERO);
    deps.database.breaker.end_open_period();
    assert_eq!(deps.database.breaker.state(), BreakerState::HalfOpen);
    assert_eq!(s.readyz().await.0, 200);
    let (status, _, body) = place(&s, "recovered").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(deps.database.breaker.state(), BreakerState::Closed);
    let closed = s.metrics().await;
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        assert!(
            metric(
                &closed,
                "weir_breaker_transitions_total",
                &[("dependency", "database"), ("from", from), ("to", to)]
            ) >= 1.0,
            "transition {from} -> {to} counted"
        );
    }
    s.stop().await;
}

/// A flood beyond the global concurrency limit is refused at once with `503 OVERLOADED`
/// (never queued) while the admitted requests complete successfully.
#[tokio::test]
async fn a_flood_beyond_the_concurrency_limit_is_shed_while_admitted_requests_succeed() {
    const LIMIT: usize = 4;
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.policy.max_concurrency = LIMIT;
        c.policy.cache.ttl = Duration::ZERO;
        // Admitted requests wait on the held catalog: give them all the time they need.
        c.policy.database.timeout = Duration::from_secs(60);
        c.runtime.catalog_timeout = Duration::from_secs(60);
        c.runtime.budget.timeout = Duration::from_secs(60);
        c.http.request_timeout = Duration::from_secs(60);
        c.idempotency.lock_ttl = Duration::from_secs(120);
    })
    .await;
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let admitted: Vec<_> = (0..LIMIT)
        .map(|i| {
            let c = s.client.clone();
            let url = format!("{}/v1/orders", s.base);
            tokio::spawn(async move {
                c.post(url)
                    .header("Idempotency-Key", format!("admitted-{i}"))
                    .json(&order_body("cus_flood", &[("KB-001", 1)]))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    eventually(
        "all admitted requests are inside the catalog read",
        200,
        Duration::from_millis(25),
        || {
            let n = fault.waiting();
            async move { n == LIMIT }
        },
    )
    .await;

    // The flood: 10x the limit, concurrently. If shed requests were queued they would wait
    // for the held ones, which are not released until the flood is answered.
    let flood = futures::future::join_all((0..LIMIT * 10).map(|i| {
        let c = s.client.clone();
        let base = s.base.clone();
        async move {
            let req = if i % 2 == 0 {
                c.get(format!("{base}/v1/products"))
            } else {
                c.post(format!("{base}/v1/orders"))
                    .header("Idempotency-Key", format!("flood-{i}"))
                    .json(&order_body("cus_flood", &[("KB-001", 1)]))
            };
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            (status, retry_after, res.json::<Value>().await.unwrap())
        }
    }));
    let answers = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("shed requests must be answered while the admitted ones still hold their slots");
    for (status, retry_after, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["code"], "OVERLOADED");
        assert_eq!(body["retryable"], true);
        assert!(*retry_after, "OVERLOADED carries Retry-After");
        assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }

    fault.release();
    for a in admitted {
        assert_eq!(a.await.unwrap(), 201, "admitted requests succeed");
    }
    let text = s.metrics().await;
    assert!(
        metric(
            &text,
            "weir_http_server_rejections_total",
            &[("policy", "shed")]
        ) >= (LIMIT * 10) as f64
    );
    // Capacity is back.
    assert_eq!(place(&s, "after-flood").await.0, 201);
    s.stop().await;
}

/// A plugin version that keeps trapping is refused by its breaker with the retryable
/// `PLUGIN_UNAVAILABLE` instead of being instantiated again and again.
#[tokio::test]
async fn a_trapping_plugin_version_is_short_circuited_by_its_breaker() {
    let s = TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(crate::support::plugin_dir(
            dir,
            &[weir_plugin_artifacts::HOSTILE_PANIC],
        ));
        c.plugins.orders = "hostile-panic".into();
        c.policy.plugin_breaker.min_calls = 2;
        c.policy.plugin_breaker.open_for = Duration::from_secs(60);
    })
    .await;
    for i in 0..2 {
        let (status, _, body) = place(&s, &format!("trap-{i}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (500, Some("PLUGIN_TRAPPED")),
            "{body}"
        );
    }
    let (status, headers, body) = place(&s, "refused").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "PLUGIN_UNAVAILABLE");
    assert!(headers.contains_key("retry-after"));
    // The hint is the breaker's remaining open period, not the generic one second.
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        retry_after > 1,
        "Retry-After {retry_after}s should reflect the 60 s open period"
    );
    let states = s.state().runtime.plugin_breakers().states();
    assert!(
        states
            .iter()
            .any(|(k, st)| k.starts_with("plugin:hostile-panic@") && *st == BreakerState::Open),
        "{states:?}"
    );
    s.stop().await;
}

/// Per-client rate limit: 429 with `Retry-After` and `RateLimit-*`; other clients unaffected.
#[tokio::test]
async fn rate_limited_clients_get_429_with_headers_and_others_are_unaffected() {
    const ADMIN: &str = "admin-token-for-rate-limit-test";
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(ADMIN));
        c.policy.rate_limit.per_second = 1;
        c.policy.rate_limit.burst = 3;
    })
    .await;
    // Two authenticated principals of one tenant, from one address: one bucket each.
    let client_a = s.api_key(ADMIN, "default").await;
    let client_b = s.api_key(ADMIN, "default").await;
    let get = |key: &str| {
        s.client
            .get(format!("{}/v1/products", s.base))
            .bearer_auth(key)
            .send()
    };
    // The bucket starts full: the burst always passes. Then the bucket refills at one token
    // a second, so on a machine slow enough to take a second per request a token may be back
    // in time for the next one: ask until the first refusal (bounded) rather than assuming
    // the fourth request is refused within the same second.
    for _ in 0..3 {
        assert_eq!(get(&client_a).await.unwrap().status(), 200);
    }
    let mut refused = None;
    for _ in 0..50 {
        let res = get(&client_a).await.unwrap();
        if res.status() == 429 {
            refused = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let res = refused.expect("50 requests in a row at 1/s with a burst of 3 were never refused");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["ratelimit-limit"], "3");
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    assert!(
        !body.to_string().contains(&client_a[5..]),
        "the key never appears"
    );
    assert_eq!(get(&client_b).await.unwrap().status(), 200);
    // Without a key the peer address is the client: loopback has its own bucket.
    let res = s
        .client
        .get(format!("{}/v1/products", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.stop().await;
}

/// The route timeout answers 504 at its bound and cancels the plugin call inside it.
#[tokio::test]
async fn a_route_timeout_answers_504_and_cancels_the_plugin_call() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.policy.cache.ttl = Duration::ZERO;
        c.policy.route_timeouts_ms.insert("/v1/orders".into(), 1500);
        c.policy.database.timeout = Duration::from_secs(60);
        c.runtime.catalog_timeout = Duration::from_secs(60);
        c.runtime.budget.timeout = Duration::from_secs(60);
    })
    .await;
    let state = s.state().clone();
    state.deps.database.fault.hold();
    let request = {
        let c = s.client.clone();
        let url = format!("{}/v1/orders", s.base);
        tokio::spawn(async move {
            let res = c
                .post(url)
                .header("Idempotency-Key", "too-slow")
                .json(&order_body("cus_policy", &[("KB-001", 1)]))
                .send()
                .await
                .unwrap();
            let (status, headers) = (res.status().as_u16(), res.headers().clone());
            (status, headers, res.json::<Value>().await.unwrap())
        })
    };
    // The cancellation below is only meaningful if the plugin call was running when the
    // route's bound hit: see it inside its (held) catalog read first.
    eventually(
        "the plugin call is inside its held catalog read",
        300,
        Duration::from_millis(5),
        || {
            let (held, running) = (
                state.deps.database.fault.waiting(),
                state.runtime.in_flight(),
            );
            async move { held == 1 && running == 1 }
        },
    )
    .await;
    let (status, headers, body) = request.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "REQUEST_TIMEOUT");
    assert_eq!(headers["retry-after"], "1");
    // The plugin invocation was dropped with the handler: nothing is left running and
    // nothing was written.
    eventually(
        "plugin call cancelled",
        100,
        Duration::from_millis(20),
        || {
            let n = state.runtime.in_flight();
            async move { n == 0 }
        },
    )
    .await;
    assert_eq!(state.store.count_rows().await.unwrap().orders, 0);
    state.deps.database.fault.release();
    // The cancelled handler released its idempotency key (asynchronously, on drop): the
    // client's retry with the same key runs again instead of waiting for the lock to expire.
    let mut retried = None;
    for _ in 0..100 {
        let (status, _, body) = place(&s, "too-slow").await;
        if status != 409 {
            retried = Some((status, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = retried.expect("the key of the cancelled request was never released");
    assert_eq!(status, 201, "{body}");
    assert_eq!(state.store.count_rows().await.unwrap().orders, 1);
    // Other routes keep the default bound.
    let res = s
        .client
        .get(format!("{}/v1/products", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.stop().await;
}

/// Catalog reads are served from Redis when configured; a slow or unreachable cache
/// degrades to the database, never fails the request, and never makes the instance unready.
#[tokio::test]
async fn the_redis_cache_serves_reads_and_its_failures_degrade_to_the_database() {
    let prefix = format!("weir:test:{}:", uuid::Uuid::new_v4().simple());
    let p = prefix.clone();
    let s = TestServer::start(Backend::Sqlite, move |c, _| {
        c.policy.cache.redis_url = Some("redis://127.0.0.1:6379/0".into());
        c.policy.cache.key_prefix = p;
        c.policy.cache.ttl = Duration::from_secs(60);
        c.policy.cache.dependency.breaker.min_calls = 2;
        c.policy.cache.dependency.breaker.open_for = Duration::from_secs(60);
    })
    .await;
    let cache = s.state().deps.cache.clone().expect("cache enabled");
    let hits = |t: &str, outcome: &str| {
        metric(
            t,
            "weir_dependency_calls_total",
            &[
                ("dependency", "cache"),
                ("operation", "catalog.cache"),
                ("outcome", outcome),
            ],
        )
    };
    let db_reads = |t: &str| {
        metric(
            t,
            "weir_dependency_calls_total",
            &[("dependency", "database"), ("outcome", "ok")],
        )
    };

    // First order fills the cache (write-back is asynchronous: wait for it in Redis).
    assert_eq!(place(&s, "fill").await.0, 201);
    let key = format!("{prefix}KB-001");
    eventually(
        "product written to Redis",
        100,
        Duration::from_millis(20),
        || {
            let key = key.clone();
            async move { redis_get(&key).await.is_some() }
        },
    )
    .await;
    let cached: Value = serde_json::from_str(&redis_get(&key).await.unwrap()).unwrap();
    assert_eq!(cached["sku"], "KB-001");
    let before = s.metrics().await;
    assert_eq!(place(&s, "cached").await.0, 201);
    let after = s.metrics().await;
    assert!(hits(&after, "ok") > hits(&before, "ok"));

    // A slow cache: every lookup times out at the cache bound, the breaker opens, and
    // orders are still placed from the database; readiness is unaffected.
    cache.fault.set_delay(Duration::from_secs(5));
    for i in 0..3 {
        let (status, _, body) = place(&s, &format!("slow-cache-{i}")).await;
        assert_eq!(
            status, 201,
            "cache failure must not fail the request: {body}"
        );
    }
    assert_eq!(cache.breaker.state(), BreakerState::Open);
    let (status, body) = s.readyz().await;
    assert_eq!(status, 200, "the cache is optional: {body}");
    assert_eq!(check(&body, "cache.breaker")["ok"], true);
    let degraded = s.metrics().await;
    assert!(hits(&degraded, "timeout") >= 2.0);
    assert!(
        db_reads(&degraded) > db_reads(&after),
        "reads fell through to the database"
    );
    s.stop().await;

    // An unreachable Redis (nothing listens on port 1): same, from the first request.
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.policy.cache.redis_url = Some("redis://127.0.0.1:1/0".into());
    })
    .await;
    for i in 0..2 {
        assert_eq!(place(&s, &format!("no-redis-{i}")).await.0, 201);
    }
    s.stop().await;
}

/// `GET key` on the local Redis over RESP (enough for a check; the host uses the redis crate).
async fn redis_get(key: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .expect("Redis on 127.0.0.1:6379 (.ci/run starts it)");
    let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    conn.write_all(cmd.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "Redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with("$-1\r\n") {
            return None;
        }
        if let Some(rest) = text.strip_prefix('$')
            && let Some((len, body)) = rest.split_once("\r\n")
        {
            let len: usize = len.parse().unwrap();
            if body.len() >= len + 2 {
                return Some(body[..len].to_owned());
            }
        }
    }
}

/// `/metrics` is valid Prometheus text (checked by `promtool`), names the route template
/// and never a raw path or id.
#[tokio::test]
async fn metrics_pass_promtool_and_labels_are_bounded() {
    let s = TestServer::start(Backend::Sqlite, |_, _| {}).await;
    let (status, _, order) = place(&s, "metrics").await;
    assert_eq!(status, 201);
    let id = order["id"].as_str().unwrap().to_owned();
    for path in [format!("/v1/orders/{id}"), "/v1/nothing/here".to_owned()] {
        s.client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
    }
    let text = s.metrics().await;
    for name in [
        "http_server_request_duration_seconds_bucket",
        "http_server_active_requests",
        "weir_dependency_calls_total",
        "weir_dependency_duration_seconds_bucket",
        "weir_breaker_state",
        "weir_plugin_call_duration_seconds_bucket",
        "weir_plugin_instantiate_duration_seconds_bucket",
        "weir_plugin_invocations_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metric(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", "/v1/orders/{id}"),
                ("http_response_status_class", "2xx")
            ]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "http_server_request_duration_seconds_count",
            &[("http_route", "unmatched")]
        ) >= 1.0
    );
    assert!(!text.contains(&id), "an order id leaked into a label");
    assert!(
        !text.contains("/v1/nothing/here"),
        "a raw path leaked into a label"
    );

    match std::process::Command::new("promtool")
        .arg("--version")
        .output()
    {
        Ok(_) => {}
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("promtool is required in CI (.ci/run installs it): {e}")
        }
        Err(e) => {
            eprintln!("note: promtool not installed ({e}); skipping the format check outside CI");
            s.stop().await;
            return;
        }
    }
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The alert rules over these metrics: `prometheus.rs` (promtool check and test).
    s.stop().await;
}
