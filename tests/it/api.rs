//! The HTTP API, run against SQLite and against PostgreSQL.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use weir_host::http::error::codes::CATALOG;
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, Orders, TestServer, order_body, plugin_dir};

fn assert_problem(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    code: &str,
) {
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{code} content type"
    );
    for field in [
        "type",
        "title",
        "detail",
        "request_id",
        "trace_id",
        "retryable",
        "instance",
    ] {
        assert!(
            !body[field].is_null(),
            "{code}: problem lacks {field}: {body}"
        );
    }
    assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);
    if body["retryable"] == true {
        assert!(
            headers.contains_key("retry-after"),
            "{code}: retryable without Retry-After"
        );
    }
    if status.is_server_error() {
        let detail = body["detail"].as_str().unwrap();
        assert!(
            !detail.contains("wasm") && !detail.contains("sqlx"),
            "{code}: 5xx leaks detail: {detail}"
        );
    }
}

pub(crate) async fn api_suite(backend: Backend, orders: Orders) {
    let s = TestServer::start_with(backend, orders, |_, _| {}).await;

    // Health.
    let (status, ready) = s.readyz().await;
    assert_eq!(status, 200);
    assert_eq!(ready["ready"], true);
    let info = s.ops_get("/infoz").await.1;
    assert_eq!(info["plugins"][0]["name"], "orders");
    assert!(!info["version"].as_str().unwrap().is_empty(), "{info}");
    assert!(!info["git_commit"].as_str().unwrap().is_empty(), "{info}");
    let hash = info["config_hash"].as_str().unwrap();
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{info}"
    );
    assert_eq!(info["plugins"][0]["stable"]["version"], orders.version());
    let digest = info["plugins"][0]["stable"]["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{info}"
    );
    assert_eq!(
        s.client
            .get(format!("{}/livez", s.ops))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Demo catalog is seeded.
    let products = s.get("/v1/products").await.1;
    assert!(products["items"].as_array().unwrap().len() >= 4);

    // Place, then replay.
    let body = order_body("cus_alice", &[("KB-001", 1), ("CB-004", 3)]);
    let (status, headers, order) = s.post_order(Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/v1/orders/{id}"));
    assert_eq!(order["status"], "placed");
    assert_eq!(order["subtotal"], 8900 + 3 * 900);
    // No discount or tax configured.
    assert_eq!(
        (&order["discount"], &order["tax"], &order["total"]),
        (&json!(0), &json!(0), &json!(8900 + 3 * 900)),
        "{order}"
    );
    assert_eq!(order["plugin"]["name"], "orders");
    assert_eq!(
        order["plugin"]["version"],
        orders.version(),
        "decided by {orders:?}"
    );
    assert_eq!(order["plugin"]["digest"].as_str().unwrap().len(), 64);

    let (status, headers, replayed) = s.post_order(Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, order);

    // Same key, different body.
    let other = order_body("cus_alice", &[("KB-001", 2)]);
    let (status, headers, problem) = s.post_order(Some("k-1"), &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(status, &headers, &problem, "IDEMPOTENCY_KEY_REUSED");

    // Read back, list, paginate.
    let got = s.get(&format!("/v1/orders/{id}")).await.1;
    assert_eq!(got, order);
    for i in 0..4 {
        let (st, _, _) = s
            .post_order(
                Some(&format!("page-{i}")),
                &order_body("cus_bob", &[("MS-002", 1)]),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/orders?customer_id=cus_bob&limit=3", s.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = s
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for o in page["items"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");

    // Cancel twice: idempotent.
    for _ in 0..2 {
        let (status, o) = s.cancel(&id).await;
        assert_eq!(status, 200, "{o}");
        assert_eq!(o["status"], "cancelled");
        assert_eq!(o["version"], 2);
    }

    // Event feed: placed events for 5 orders and one cancel, as CloudEvents.
    let feed = s.get("/v1/events?after=0&limit=100").await.1;
    let items = feed["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "{feed}");
    assert_eq!(items[0]["specversion"], "1.0");
    assert_eq!(items[0]["type"], "order.placed");
    assert_eq!(items[0]["subject"], id.as_str());
    assert_eq!(items[5]["type"], "order.cancelled");
    let seqs: Vec<i64> = items
        .iter()
        .map(|e| e["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let next = s
        .get(&format!("/v1/events?after={}", feed["next_after"]))
        .await
        .1;
    assert!(next["items"].as_array().unwrap().is_empty());

    // OpenAPI.
    let doc: Value = s
        .client
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/orders"]["post"].is_object());

    s.stop().await;
}

#[tokio::test]
async fn api_on_sqlite() {
    api_suite(Backend::Sqlite, Orders::Rust).await;
}

#[tokio::test]
async fn api_on_postgres() {
    api_suite(Backend::Postgres, Orders::Rust).await;
}

pub(crate) async fn concurrent_same_key(backend: Backend, orders: Orders) {
    // 16 requests at once: about one order per key, not about time.
    let s = TestServer::start_with(backend, orders, |c, _| crate::support::patient(c)).await;
    let body = order_body("cus_carol", &[("KB-001", 1)]);
    let results =
        futures::future::join_all((0..16).map(|_| s.post_order(Some("same-key"), &body))).await;
    let mut ids = BTreeSet::new();
    for (status, headers, body) in &results {
        match *status {
            StatusCode::CREATED => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_problem(*status, headers, body, "IDEMPOTENCY_KEY_IN_PROGRESS")
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "exactly one order id across all 201s: {ids:?}"
    );
    let page = s.get("/v1/orders?customer_id=cus_carol").await.1;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let counts = s.state().store.count_rows().await.unwrap();
    assert_eq!((counts.orders, counts.outbox_events), (1, 1));
    s.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order_sqlite() {
    concurrent_same_key(Backend::Sqlite, Orders::Rust).await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_order_postgres() {
    concurrent_same_key(Backend::Postgres, Orders::Rust).await;
}

/// The same key, provably concurrent: the first request is held inside its plugin call (its
/// catalog read waits on the database fault hook) while 15 more with the same key arrive;
/// each of them is `409 IDEMPOTENCY_KEY_IN_PROGRESS` with `Retry-After`, and once released
/// the first creates the one order, which a retry then replays.
pub(crate) async fn same_key_while_the_first_is_held(backend: Backend, orders: Orders) {
    let s = TestServer::start_with(backend, orders, |c, _| {
        c.policy.cache.ttl = std::time::Duration::ZERO;
        c.policy.database.timeout = std::time::Duration::from_secs(60);
        c.runtime.catalog_timeout = std::time::Duration::from_secs(60);
        c.runtime.budget.timeout = std::time::Duration::from_secs(60);
        c.http.request_timeout = std::time::Duration::from_secs(20);
    })
    .await;
    let body = order_body("cus_held", &[("KB-001", 1)]);
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let first = {
        let client = s.client.clone();
        let url = format!("{}/v1/orders", s.base);
        let body = body.clone();
        tokio::spawn(async move {
            let res = client
                .post(url)
                .header("Idempotency-Key", "held-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        })
    };
    // Bounded wait for the event "the first request is inside its plugin call".
    for _ in 0..1000 {
        if fault.waiting() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        fault.waiting(),
        1,
        "the first request never reached its catalog read"
    );
    let others =
        futures::future::join_all((0..15).map(|_| s.post_order(Some("held-key"), &body))).await;
    for (status, headers, problem) in &others {
        assert_problem(*status, headers, problem, "IDEMPOTENCY_KEY_IN_PROGRESS");
        assert!(headers.contains_key("retry-after"), "{headers:?}");
    }
    assert_eq!(fault.waiting(), 1, "the first request was held throughout");
    fault.release();
    let (status, created) = first.await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, headers, replayed) = s.post_order(Some("held-key"), &body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed["id"], created["id"]);
    let counts = s.state().store.count_rows().await.unwrap();
    assert_eq!((counts.orders, counts.outbox_events), (1, 1));
    s.stop().await;
}

#[tokio::test]
async fn a_key_held_in_flight_answers_409_to_every_concurrent_retry_sqlite() {
    same_key_while_the_first_is_held(Backend::Sqlite, Orders::Rust).await;
}

#[tokio::test]
async fn a_key_held_in_flight_answers_409_to_every_concurrent_retry_postgres() {
    same_key_while_the_first_is_held(Backend::Postgres, Orders::Rust).await;
}

/// `POST /v1/orders` declaring a 100-byte body and sending one byte, then waiting for the
/// answer: status, headers and JSON body of the raw HTTP/1.1 response.
async fn stalled_body(base: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Idempotency-Key: stalled\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    // The server closes the connection after its answer (the body was never read).
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("an answer to the stalled body")
    .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            reqwest::header::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    (
        StatusCode::from_u16(status).unwrap(),
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Every code of the catalog is produced by at least one request and asserted on status,
/// code and body shape. A code added without a case here fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_produced_and_well_formed() {
    every_error_code(Orders::Rust).await;
}

/// [`every_error_code_is_produced_and_well_formed`] with `orders` serving every server but
/// those that serve a test plugin (`errors`, the hostile ones) in its place.
pub(crate) async fn every_error_code(orders: Orders) {
    let mut produced = BTreeSet::new();
    let mut check =
        |status: StatusCode, headers: &reqwest::header::HeaderMap, body: &Value, code: &str| {
            let spec = CATALOG
                .iter()
                .find(|s| s.code == code)
                .unwrap_or_else(|| panic!("{code} not in catalog"));
            assert_eq!(status.as_u16(), spec.status.as_u16(), "{code}: {body}");
            assert_problem(status, headers, body, code);
            assert_eq!(body["retryable"], spec.retryable, "{code}");
            produced.insert(code.to_owned());
        };

    let s = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.http.body_limit_bytes = 4096;
        // Short, for REQUEST_BODY_TIMEOUT below; every other body here arrives at once.
        c.http.body_timeout = std::time::Duration::from_millis(1000);
        c.http.body_min_bytes_per_sec = 0;
    })
    .await;
    let c = &s.client;
    let url = |p: &str| format!("{}{p}", s.base);
    let send = |req: reqwest::RequestBuilder| async move {
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        (
            status,
            headers,
            res.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let good = order_body("cus_dave", &[("KB-001", 1)]);

    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("MALFORMED_JSON", c.post(url("/v1/orders")).header("Idempotency-Key", "a").header("content-type", "application/json").body("{nope")),
        ("UNSUPPORTED_MEDIA_TYPE", c.post(url("/v1/orders")).header("Idempotency-Key", "a").header("content-type", "text/plain").body("{}")),
        ("UNKNOWN_FIELD", c.post(url("/v1/orders")).header("Idempotency-Key", "a").json(&json!({"customer_id":"cus_x","currency":"EUR","lines":[],"colour":"red"}))),
        ("REQUEST_SCHEMA_INVALID", c.post(url("/v1/orders")).header("Idempotency-Key", "a").json(&json!({"customer_id":"cus_x","currency":"EUR","lines":[{"sku":"KB-001","quantity":-1}]}))),
        ("PAYLOAD_TOO_LARGE", c.post(url("/v1/orders")).header("Idempotency-Key", "a").header("content-type", "application/json").body(format!("{{\"customer_id\":\"{}\"}}", "x".repeat(10_000)))),
        ("INVALID_PATH_PARAMETER", c.get(url("/v1/orders/not-a-uuid"))),
        ("INVALID_PATH_PARAMETER", c.post(url("/v1/orders/not-a-uuid/cancel"))),
        ("INVALID_PATH_PARAMETER", c.put(url("/v1/products/bad%20sku")).json(&json!({"name":"x","unit_price":5,"currency":"EUR","stock":1}))),
        ("INVALID_QUERY_PARAMETER", c.get(url("/v1/orders?limit=0"))),
        ("INVALID_CURSOR", c.get(url("/v1/orders?cursor=garbage"))),
        ("ROUTE_NOT_FOUND", c.get(url("/v2/nothing"))),
        ("METHOD_NOT_ALLOWED", c.delete(url("/v1/orders"))),
        ("IDEMPOTENCY_KEY_MISSING", c.post(url("/v1/orders")).json(&good)),
        ("IDEMPOTENCY_KEY_INVALID", c.post(url("/v1/orders")).header("Idempotency-Key", "has space").json(&good)),
        ("ORDER_NOT_FOUND", c.get(url(&format!("/v1/orders/{}", uuid::Uuid::now_v7())))),
        ("PRODUCT_INVALID", c.put(url("/v1/products/NEW-1")).json(&json!({"name":"x","unit_price":-5,"currency":"EUR","stock":1}))),
        ("ORDER_INVALID", c.post(url("/v1/orders")).header("Idempotency-Key", "inv").json(&json!({"customer_id":"bad id","currency":"EUR","lines":[]}))),
        ("ORDER_REJECTED", c.post(url("/v1/orders")).header("Idempotency-Key", "rej").json(&order_body("cus_dave", &[("NOPE-1", 1)]))),
    ];
    for (code, req) in cases {
        let (status, headers, body) = send(req).await;
        check(status, &headers, &body, code);
        if code == "ORDER_INVALID" {
            assert!(!body["violations"].as_array().unwrap().is_empty());
        }
        if code == "ORDER_REJECTED" {
            assert_eq!(body["reason"], "UNKNOWN_SKU");
        }
    }
    // Retention deleted the events after a reader's cursor (the order placed above and its
    // event, expired by a cutoff in the future).
    let (status, _, placed) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "feed")
            .json(&good),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let future = chrono::Utc::now() + chrono::Duration::days(1);
    let deleted = s
        .state()
        .store
        .purge_expired(weir_host::storage::Expiring::FeedEvents, future, 100)
        .await
        .unwrap();
    assert!(deleted >= 1);
    let (status, headers, body) = send(c.get(url("/v1/events?after=0"))).await;
    check(status, &headers, &body, "EVENTS_CURSOR_EXPIRED");

    // A body that stops arriving: the head and one byte of a declared 100, over raw TCP.
    let (status, headers, body) = stalled_body(&s.base).await;
    check(status, &headers, &body, "REQUEST_BODY_TIMEOUT");

    // Deterministic plugin errors are stored: the replay is identical.
    let (status, headers, body) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "rej")
            .json(&order_body("cus_dave", &[("NOPE-1", 1)])),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body["code"], "ORDER_REJECTED");

    // Reused key.
    let (st, _, _) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "reuse")
            .json(&good),
    )
    .await;
    assert_eq!(st, 201);
    let (status, headers, body) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "reuse")
            .json(&order_body("cus_dave", &[("KB-001", 2)])),
    )
    .await;
    check(status, &headers, &body, "IDEMPOTENCY_KEY_REUSED");

    // In progress: hold the key as a running request would.
    let hash = weir_host::http::orders::request_hash("POST /v1/orders", &good);
    let begin = s
        .state()
        .store
        .idempotency_begin(
            "default",
            "default/POST /v1/orders:held",
            &hash,
            chrono_now(),
            std::time::Duration::from_secs(30),
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(begin, weir_host::storage::IdempotencyBegin::Started);
    let (status, headers, body) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "held")
            .json(&good),
    )
    .await;
    check(status, &headers, &body, "IDEMPOTENCY_KEY_IN_PROGRESS");

    // Corrupt row -> unexpected error, generic body.
    let (st, _, placed) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "corrupt")
            .json(&good),
    )
    .await;
    assert_eq!(st, 201);
    let db_url = format!("sqlite://{}", s.dir.path().join("data/weir.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();
    // Bypass the schema's CHECK constraint to simulate a corrupt row.
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET status = 'teleported' WHERE id = ?")
        .bind(placed["id"].as_str().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (status, headers, body) = send(c.get(url(&format!(
        "/v1/orders/{}",
        placed["id"].as_str().unwrap()
    ))))
    .await;
    check(status, &headers, &body, "INTERNAL_ERROR");

    // No active plugin.
    let active_digest = s
        .state()
        .registry
        .slot_of("orders")
        .unwrap()
        .stable
        .meta
        .digest
        .clone();
    s.state().registry.deactivate("orders").unwrap();
    let (status, ready) = s.readyz().await;
    assert_eq!(status, 503);
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "plugin" && c["ok"] == false),
        "{ready}"
    );
    let (status, headers, body) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "noplugin")
            .json(&good),
    )
    .await;
    check(status, &headers, &body, "PLUGIN_UNAVAILABLE");
    let digest = s
        .state()
        .registry
        .slot_of("orders")
        .map(|s| s.stable.meta.digest.clone());
    assert!(digest.is_none());
    // The failed attempt released its key: once a plugin is back the retry succeeds.
    s.state()
        .registry
        .activate("orders", &active_digest)
        .unwrap();
    let (status, _, body) = send(
        c.post(url("/v1/orders"))
            .header("Idempotency-Key", "noplugin")
            .json(&good),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Interrupted by shutdown.
    let s2 = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(
            "admin-token-for-tests-0123",
        ));
    })
    .await;
    s2.state().runtime.interrupt_all();
    let (status, headers, body) = send(
        s2.client
            .post(format!("{}/v1/orders", s2.base))
            .header("Idempotency-Key", "int")
            .json(&good),
    )
    .await;
    check(status, &headers, &body, "SHUTTING_DOWN");
    // Storage unavailable: the pool is closed under the running server.
    s2.state().store.close().await;
    let (status, ready) = s2.readyz().await;
    assert_eq!(status, 503);
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "database" && c["ok"] == false),
        "{ready}"
    );
    let (status, headers, body) = send(s2.client.get(format!("{}/v1/products", s2.base))).await;
    check(status, &headers, &body, "STORAGE_UNAVAILABLE");
    // Admin endpoints (operations listener): disabled without a configured token; 401 with a
    // wrong bearer token.
    let (status, headers, body) = send(c.get(format!("{}/admin/telemetry/sampling", s.ops))).await;
    check(status, &headers, &body, "ADMIN_DISABLED");
    let (status, headers, body) = send(
        s2.client
            .put(format!("{}/admin/telemetry/sampling", s2.ops))
            .bearer_auth("not-the-admin-token-at-all")
            .json(&json!({"ratio": 1.0})),
    )
    .await;
    check(status, &headers, &body, "ADMIN_UNAUTHORIZED");
    assert!(headers.contains_key("www-authenticate"), "{headers:?}");
    s2.stop().await;
    s.stop().await;

    // Plugin-decided errors, through the errors test plugin serving the orders API.
    let s3 = TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::ERRORS]));
        c.plugins.orders = "errors".into();
    })
    .await;
    for (customer, code) in [
        ("not-found", "RESOURCE_NOT_FOUND"),
        ("conflict", "ORDER_CONFLICT"),
        ("unavailable", "DEPENDENCY_UNAVAILABLE"),
        ("internal", "PLUGIN_INTERNAL_ERROR"),
    ] {
        let (status, headers, body) = send(
            s3.client
                .post(format!("{}/v1/orders", s3.base))
                .header("Idempotency-Key", customer)
                .json(&order_body(customer, &[("KB-001", 1)])),
        )
        .await;
        check(status, &headers, &body, code);
    }
    s3.stop().await;

    // Misbehaving plugins serving the API.
    for (plugin, path, code) in [
        ("hostile-panic", artifacts::HOSTILE_PANIC, "PLUGIN_TRAPPED"),
        ("hostile-spin", artifacts::HOSTILE_SPIN, "PLUGIN_TIMEOUT"),
        (
            "hostile-alloc",
            artifacts::HOSTILE_ALLOC,
            "PLUGIN_BUDGET_EXCEEDED",
        ),
    ] {
        let s4 = TestServer::start(Backend::Sqlite, |c, dir| {
            c.plugins.dir = Some(plugin_dir(dir, &[path]));
            c.plugins.orders = plugin.into();
            c.runtime.budget.timeout = std::time::Duration::from_millis(300);
            c.runtime.budget.memory_bytes = 16 << 20;
        })
        .await;
        let (status, headers, body) = send(
            s4.client
                .post(format!("{}/v1/orders", s4.base))
                .header("Idempotency-Key", "h")
                .json(&good),
        )
        .await;
        check(status, &headers, &body, code);
        // Nothing was written and the key was released: no order, no event.
        let counts = s4.state().store.count_rows().await.unwrap();
        assert_eq!(
            (
                counts.orders,
                counts.outbox_events,
                counts.idempotency_completed
            ),
            (0, 0, 0),
            "{plugin}"
        );
        s4.stop().await;
    }

    // A decision that breaks the host's contract (a total that does not add up).
    let s4 = TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_LIAR]));
        c.plugins.orders = "hostile-liar".into();
    })
    .await;
    let mut lying = good.clone();
    lying["metadata"] = json!({"lie": "total"});
    let (status, headers, body) = send(
        s4.client
            .post(format!("{}/v1/orders", s4.base))
            .header("Idempotency-Key", "liar")
            .json(&lying),
    )
    .await;
    check(status, &headers, &body, "PLUGIN_CONTRACT_VIOLATION");
    let counts = s4.state().store.count_rows().await.unwrap();
    assert_eq!((counts.orders, counts.idempotency_completed), (0, 0));
    s4.stop().await;

    // A plugin calling a capability it did not declare (hostile-flood declares log and
    // catalog; this request makes it read its configuration).
    let s4 = TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_FLOOD]));
        c.plugins.orders = "hostile-flood".into();
    })
    .await;
    let mut undeclared = good.clone();
    undeclared["metadata"] = json!({"flood": "config"});
    let (status, headers, body) = send(
        s4.client
            .post(format!("{}/v1/orders", s4.base))
            .header("Idempotency-Key", "undeclared")
            .json(&undeclared),
    )
    .await;
    check(status, &headers, &body, "CAPABILITY_DENIED");
    let counts = s4.state().store.count_rows().await.unwrap();
    assert_eq!((counts.orders, counts.idempotency_completed), (0, 0));
    s4.stop().await;

    // Events backpressure: the broker path with an unreachable broker (a closed port), so
    // the outbox only grows; one unpublished event trips the threshold.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s5 = TestServer::start_with(Backend::Sqlite, orders, move |c, _| {
        c.amqp_url = Some(weir_host::events::AmqpUrl::new(format!(
            "amqp://guest:guest@127.0.0.1:{closed}/%2f"
        )));
        c.events.backpressure.max_unpublished = 1;
        c.events.backpressure.resume_unpublished = 0;
    })
    .await;
    let post = |key: &'static str| {
        s5.client
            .post(format!("{}/v1/orders", s5.base))
            .header("Idempotency-Key", key)
            .json(&good)
    };
    let (st, _, _) = send(post("bp-1")).await;
    assert_eq!(st, 201);
    s5.state().events.refresh_backpressure().await;
    let (status, headers, body) = send(post("bp-2")).await;
    check(status, &headers, &body, "BACKPRESSURE");
    s5.stop().await;

    // Edge policies (issue 4): rate limit, load shedding, route timeout.
    const S6_ADMIN: &str = "admin-token-for-policy-tests";
    let s6 = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(S6_ADMIN));
        c.policy.rate_limit.per_second = 1;
        c.policy.rate_limit.burst = 1;
        c.policy.max_concurrency = 1;
        c.policy.cache.ttl = std::time::Duration::ZERO;
        c.policy.route_timeouts_ms.insert("/v1/orders".into(), 1500);
        c.policy.database.timeout = std::time::Duration::from_secs(60);
        c.runtime.catalog_timeout = std::time::Duration::from_secs(60);
        c.runtime.budget.timeout = std::time::Duration::from_secs(60);
    })
    .await;
    // Two principals: the rate limit keys on the authenticated caller (one bucket each).
    let held_key = s6.api_key(S6_ADMIN, "default").await;
    let shed_key = s6.api_key(S6_ADMIN, "default").await;
    let fault = s6.state().deps.database.fault.clone();
    fault.hold();
    let held = tokio::spawn(send(
        s6.client
            .post(format!("{}/v1/orders", s6.base))
            .bearer_auth(&held_key)
            .header("Idempotency-Key", "held-by-policy")
            .json(&good),
    ));
    for _ in 0..500 {
        if fault.waiting() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        fault.waiting(),
        1,
        "the held request never reached the catalog"
    );
    let (status, headers, body) = send(
        s6.client
            .get(format!("{}/v1/products", s6.base))
            .bearer_auth(&shed_key),
    )
    .await;
    check(status, &headers, &body, "OVERLOADED");
    let (status, headers, body) = send(
        s6.client
            .get(format!("{}/v1/products", s6.base))
            .bearer_auth(&shed_key),
    )
    .await;
    check(status, &headers, &body, "RATE_LIMITED");
    let (status, headers, body) = held.await.unwrap();
    check(status, &headers, &body, "REQUEST_TIMEOUT");
    fault.release();
    s6.stop().await;

    // The plugin lifecycle API (operations listener, admin token).
    const ADMIN: &str = "admin-token-for-tests-0123";
    let s7 = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(ADMIN));
        c.plugins.releases.upload_limit_bytes = 4 << 20;
        c.runtime.budget.timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN);
    let plugins = format!("{}/admin/v1/plugins", s7.ops);
    let (status, headers, body) = send(admin(s7.client.post(&plugins).body("not wasm"))).await;
    check(status, &headers, &body, "PLUGIN_REJECTED");
    assert_eq!(body["stage"], "decode");
    // One byte over the limit: the server reads the whole body before it can tell, so the
    // client has written everything when the answer comes (with a larger body the server may
    // answer and close while the client still writes: a broken pipe instead of the answer).
    let (status, headers, body) = send(admin(
        s7.client.post(&plugins).body(vec![0u8; (4 << 20) + 1]),
    ))
    .await;
    check(status, &headers, &body, "PLUGIN_TOO_LARGE");
    assert_eq!(body["stage"], "size");
    let (status, headers, body) = send(admin(s7.client.get(format!("{plugins}/nothing")))).await;
    check(status, &headers, &body, "PLUGIN_NOT_FOUND");
    let (status, headers, body) = send(admin(
        s7.client
            .put(format!("{plugins}/orders/release"))
            .json(&json!({"generation": 99, "stable": "x"})),
    ))
    .await;
    check(status, &headers, &body, "RELEASE_CONFLICT");
    let (status, headers, body) =
        send(admin(s7.client.post(format!("{plugins}/orders/rollback")))).await;
    check(status, &headers, &body, "RELEASE_INVALID");
    // One admission at a time per instance: a second upload while `describe` spins is busy.
    let spin = std::fs::read(artifacts::HOSTILE_DESCRIBE_SPIN).unwrap();
    let (first, second) = tokio::join!(
        send(admin(s7.client.post(&plugins).body(spin.clone()))),
        send(admin(s7.client.post(&plugins).body(spin.clone()))),
    );
    let (busy, other) = if first.0 == 503 {
        (first, second)
    } else {
        (second, first)
    };
    let (status, headers, body) = busy;
    check(status, &headers, &body, "ADMISSION_BUSY");
    assert_eq!(other.0, 422, "the other one ran: {}", other.2);
    s7.stop().await;

    // Authentication (API keys): 401, 403, the admin API's key errors, and a key store that
    // cannot answer.
    let s8 = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(ADMIN));
        c.auth.mode = Some(weir_host::auth::AuthMode::ApiKeys);
    })
    .await;
    let (status, headers, body) = send(s8.client.get(format!("{}/v1/orders", s8.base))).await;
    check(status, &headers, &body, "UNAUTHENTICATED");
    let admin_client = weir_host::cli::AdminClient::new(&s8.ops, Some(ADMIN.to_owned())).unwrap();
    let reader = admin_client
        .create_api_key("acme", "reader", &["orders:read".to_owned()], None)
        .await
        .unwrap();
    let reader = reader["key"].as_str().unwrap().to_owned();
    let (status, headers, body) = send(
        s8.client
            .put(format!("{}/v1/products/KB-001", s8.base))
            .bearer_auth(&reader)
            .json(&json!({"name": "free", "unit_price": 0, "currency": "EUR", "stock": 1})),
    )
    .await;
    check(status, &headers, &body, "FORBIDDEN");
    let keys = format!("{}/admin/v1/apikeys", s8.ops);
    let (status, headers, body) = send(
        admin(s8.client.post(&keys))
            .json(&json!({"tenant": "Bad Tenant", "name": "x", "scopes": ["orders:read"]})),
    )
    .await;
    check(status, &headers, &body, "API_KEY_INVALID");
    assert_eq!(body["violations"][0]["field"], "tenant");
    let (status, headers, body) = send(admin(
        s8.client.delete(format!("{keys}/{}", uuid::Uuid::now_v7())),
    ))
    .await;
    check(status, &headers, &body, "API_KEY_NOT_FOUND");
    // The key store is gone: a key not in the cache cannot be checked.
    s8.state().store.close().await;
    let unknown = "weir_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, headers, body) = send(
        s8.client
            .get(format!("{}/v1/orders", s8.base))
            .bearer_auth(unknown),
    )
    .await;
    check(status, &headers, &body, "AUTHENTICATION_UNAVAILABLE");
    s8.stop().await;

    // The instance pool: its one instance is held inside a plugin call (a catalog read the
    // test holds), so the next order waits its bounded time for an instance and is refused.
    let s9 = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.runtime.max_instances = 1;
        c.policy.max_concurrency = 4;
        c.runtime.instance_wait = std::time::Duration::from_millis(100);
        c.policy.cache.ttl = std::time::Duration::ZERO;
        c.policy.database.timeout = std::time::Duration::from_secs(60);
        c.runtime.catalog_timeout = std::time::Duration::from_secs(60);
        c.runtime.budget.timeout = std::time::Duration::from_secs(60);
    })
    .await;
    let fault = s9.state().deps.database.fault.clone();
    fault.hold();
    let held = tokio::spawn(send(
        s9.client
            .post(format!("{}/v1/orders", s9.base))
            .header("Idempotency-Key", "holds-the-instance")
            .json(&good),
    ));
    let runtime = s9.state().runtime.clone();
    for _ in 0..500 {
        if fault.waiting() == 1 && runtime.instances_in_use() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        (fault.waiting(), runtime.instances_in_use()),
        (1, 1),
        "the first order never held the only instance"
    );
    let (status, headers, body) = send(
        s9.client
            .post(format!("{}/v1/orders", s9.base))
            .header("Idempotency-Key", "finds-the-pool-busy")
            .json(&good),
    )
    .await;
    check(status, &headers, &body, "PLUGIN_BUSY");
    fault.release();
    assert_eq!(held.await.unwrap().0, StatusCode::CREATED);
    s9.stop().await;

    let missing: Vec<_> = CATALOG
        .iter()
        .map(|s| s.code)
        .filter(|c| !produced.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes never produced by this test: {missing:?}"
    );
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// The catalog in RUNBOOK.md and the code agree.
#[test]
fn runbook_catalog_matches_the_code() {
    let whole =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../RUNBOOK.md")).unwrap();
    // The section "Error catalog" only: other tables start rows with upper-case names too.
    let runbook = whole
        .split_once("\n## Error catalog\n")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .expect("RUNBOOK.md has a section \"Error catalog\"");
    let documented: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
        .map(str::to_owned)
        .collect();
    let code: BTreeSet<String> = CATALOG.iter().map(|s| s.code.to_owned()).collect();
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "RUNBOOK.md error catalog is out of date: undocumented {undocumented:?}, no longer in code {stale:?}"
    );
    for spec in CATALOG {
        let row = runbook
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", spec.code)))
            .unwrap();
        assert!(
            row.contains(&format!("| {} |", spec.status.as_u16())),
            "RUNBOOK row for {} must state status {}",
            spec.code,
            spec.status.as_u16()
        );
        let class = match spec.class {
            weir_host::http::error::ErrorClass::Expected => "expected",
            weir_host::http::error::ErrorClass::Unexpected => "unexpected",
        };
        let retry = if spec.retryable { "yes" } else { "no" };
        assert!(
            row.contains(&format!("| {class} | {retry} |")),
            "RUNBOOK row for {} must state class {class} and retryable {retry}",
            spec.code
        );
    }
}

/// The catalog write path: a valid PUT is stored, listed and priced from; each invalid field
/// is reported as its own violation.
#[tokio::test]
async fn products_are_written_listed_priced_and_validated() {
    products_are_written(Orders::Rust).await;
}

pub(crate) async fn products_are_written(orders: Orders) {
    let s = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.policy.cache.ttl = std::time::Duration::ZERO
    })
    .await;
    let c = &s.client;
    let res = c
        .put(format!("{}/v1/products/NEW-1", s.base))
        .json(&json!({"name": "New thing", "unit_price": 1234, "currency": "EUR", "stock": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(
        (
            saved["sku"].as_str(),
            saved["unit_price"].as_i64(),
            saved["stock"].as_i64()
        ),
        (Some("NEW-1"), Some(1234), Some(7))
    );
    let list: Value = c
        .get(format!("{}/v1/products", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["sku"] == "NEW-1" && p["name"] == "New thing")
    );
    let (status, _, order) = s
        .post_order(Some("new-1"), &order_body("cus_erin", &[("NEW-1", 2)]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["subtotal"], 2468);

    let res = c
        .put(format!("{}/v1/products/NEW-2", s.base))
        .json(&json!({"name": " ", "unit_price": -1, "currency": "euro", "stock": -3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "PRODUCT_INVALID");
    let mut got: Vec<(String, String)> = problem["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["field"].as_str().unwrap().to_owned(),
                v["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("currency", "INVALID_FORMAT"),
        ("name", "INVALID_LENGTH"),
        ("stock", "OUT_OF_RANGE"),
        ("unit_price", "OUT_OF_RANGE"),
    ];
    assert_eq!(got, want.map(|(f, c)| (f.to_owned(), c.to_owned())));
    s.stop().await;
}

/// `idempotency.retention_secs` reaches the running service: once a key has expired, the
/// same key starts a new request instead of being reported as reused.
#[tokio::test]
async fn idempotency_keys_expire_after_the_configured_retention() {
    idempotency_keys_expire(Orders::Rust).await;
}

pub(crate) async fn idempotency_keys_expire(orders: Orders) {
    let s = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.idempotency.retention = std::time::Duration::from_secs(1);
    })
    .await;
    let (status, _, first) = s
        .post_order(
            Some("short-lived"),
            &order_body("cus_frank", &[("KB-001", 1)]),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let other = order_body("cus_frank", &[("KB-001", 2)]);
    let (status, _, body) = s.post_order(Some("short-lived"), &other).await;
    assert_eq!(body["code"], "IDEMPOTENCY_KEY_REUSED", "{status} {body}");
    // Expiry is time-based: poll, bounded, until the key is past its retention.
    let mut second = None;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, _, body) = s.post_order(Some("short-lived"), &other).await;
        if status == StatusCode::CREATED {
            second = Some(body);
            break;
        }
        assert_eq!(body["code"], "IDEMPOTENCY_KEY_REUSED", "{status} {body}");
    }
    let second = second.expect("the key never expired after its 1 s retention");
    assert_ne!(second["id"], first["id"]);
    s.stop().await;
}
