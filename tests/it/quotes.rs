//! `POST /v1/quotes` on SQLite and PostgreSQL: a quote is the price placing gets, it writes
//! nothing (no order, event, idempotency record or reservation), its refusals are the ones
//! placing gives, its body is refused like placing's, and it needs `orders:write`.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use weir_host::auth::AuthMode;
use weir_host::server::config::{Config, Secret};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, Orders, TestServer, metric, order_body, plugin_dir};

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

/// What a request could have written: (orders, order lines, outbox events, idempotency keys
/// in any state, units reserved over the catalog).
async fn footprint(s: &TestServer) -> (u64, u64, u64, u64, i64) {
    let c = s.state().store.count_rows().await.unwrap();
    let products = s.get("/v1/products?limit=100").await.1;
    let reserved = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reserved"].as_i64().unwrap())
        .sum();
    (
        c.orders,
        c.order_lines,
        c.outbox_events,
        c.idempotency_keys,
        reserved,
    )
}

/// A SQLite server whose orders plugin is `hostile-liar`: it prices whatever it is asked and
/// never looks at the catalog, so a quote's own lookups are its only catalog reads. `tweak`
/// sets more.
async fn liar_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start(Backend::Sqlite, |c, dir| {
        c.plugins.dir = Some(plugin_dir(dir, &[artifacts::HOSTILE_LIAR]));
        c.plugins.orders = "hostile-liar".into();
        tweak(c);
    })
    .await
}

/// The priced part of an order or a quote: what both must agree on.
fn priced(v: &Value) -> Value {
    json!({
        "currency": v["currency"],
        "lines": v["lines"].as_array().unwrap().iter().map(|l| json!({
            "sku": l["sku"], "quantity": l["quantity"],
            "unit_price": l["unit_price"], "line_total": l["line_total"],
        })).collect::<Vec<_>>(),
        "subtotal": v["subtotal"], "discount": v["discount"], "tax": v["tax"], "total": v["total"],
        "plugin": v["plugin"],
    })
}

/// A problem without what differs per request.
fn problem_kind(status: StatusCode, headers: &HeaderMap, body: &Value) -> Value {
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{body}"
    );
    let mut b = body.clone();
    let o = b.as_object_mut().unwrap();
    for per_request in ["request_id", "trace_id", "instance"] {
        assert!(o.remove(per_request).is_some(), "{per_request} in {body}");
    }
    json!({"status": status.as_u16(), "body": b})
}

pub(crate) async fn quotes_suite(backend: Backend, orders: Orders) {
    let s = TestServer::start_with(backend, orders, |_, _| {}).await;
    let body = order_body("cus_quote", &[("KB-001", 1), ("CB-004", 3)]);
    let before = footprint(&s).await;

    // A quote: 200, not cached, the priced order with availability, nothing written.
    let (status, headers, q) = s.post_quote(None, &body).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(q["currency"], "EUR");
    assert_eq!(q["subtotal"], 8900 + 3 * 900);
    assert_eq!(q["plugin"]["name"], "orders");
    assert_eq!(
        q["plugin"]["version"],
        orders.version(),
        "priced by {orders:?}"
    );
    assert_eq!(q["plugin"]["digest"].as_str().unwrap().len(), 64);
    for line in q["lines"].as_array().unwrap() {
        assert_eq!(line["available"], true, "{q}");
    }
    assert!(
        chrono::DateTime::parse_from_rfc3339(q["quoted_at"].as_str().unwrap()).is_ok(),
        "{q}"
    );
    assert!(q.get("id").is_none() && q.get("status").is_none(), "{q}");
    assert_eq!(footprint(&s).await, before, "a quote writes nothing");

    // With an Idempotency-Key: still nothing stored or replayed under it.
    for _ in 0..2 {
        let (status, headers, again) = s.post_quote(Some("q-1"), &body).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert!(headers.get("idempotent-replayed").is_none());
        assert_eq!(priced(&again), priced(&q));
    }
    assert_eq!(footprint(&s).await, before, "no key claimed by a quote");
    let (status, _, problem) = s.post_quote(Some("has space"), &body).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::BAD_REQUEST, &json!("IDEMPOTENCY_KEY_INVALID"))
    );

    // Placing the quoted request, with the quote's key, gets the quoted price: a new order.
    let (status, headers, order) = s.post_order(Some("q-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(priced(&order), priced(&q));
    let (o, l, e, k, r) = before;
    assert_eq!(footprint(&s).await, (o + 1, l + 2, e + 1, k + 1, r + 4));
    let after_place = footprint(&s).await;

    // Refusals are the ones placing gives, typed the same.
    let refused = [
        order_body("cus_quote", &[("NOPE-1", 1)]),
        json!({"customer_id": "bad id", "currency": "EUR", "lines": []}),
        order_body("cus_quote", &[("KB-001", 1), ("KB-001", 2)]),
    ];
    let mut quoted = Vec::new();
    for refused in &refused {
        quoted.push(s.post_quote(None, refused).await);
    }
    assert_eq!(
        footprint(&s).await,
        after_place,
        "a refused quote writes nothing"
    );
    for (i, (refused, (qs, qh, qb))) in refused.iter().zip(quoted).enumerate() {
        let (ps, ph, pb) = s.post_order(Some(&format!("refused-{i}")), refused).await;
        assert_eq!(qs, StatusCode::UNPROCESSABLE_ENTITY, "{qb}");
        assert_eq!(problem_kind(qs, &qh, &qb), problem_kind(ps, &ph, &pb));
    }
    // (Placing stored its three refusals with their keys.)
    let after_place = footprint(&s).await;
    assert_eq!(
        s.post_quote(None, &refused[0]).await.2["reason"],
        "UNKNOWN_SKU"
    );

    // The body is refused like placing's.
    let url = format!("{}/v1/quotes", s.base);
    let c = &s.client;
    let cases = [
        (
            "MALFORMED_JSON",
            c.post(&url)
                .header("content-type", "application/json")
                .body("{nope"),
        ),
        (
            "UNKNOWN_FIELD",
            c.post(&url)
                .json(&json!({"customer_id":"cus_x","currency":"EUR","lines":[],"colour":"red"})),
        ),
        (
            "REQUEST_SCHEMA_INVALID",
            c.post(&url).json(
                &json!({"customer_id":"cus_x","currency":"EUR","lines":[{"sku":"KB-001","quantity":-1}]}),
            ),
        ),
        (
            "UNSUPPORTED_MEDIA_TYPE",
            c.post(&url).header("content-type", "text/plain").body("{}"),
        ),
        (
            "PAYLOAD_TOO_LARGE",
            c.post(&url)
                .header("content-type", "application/json")
                // Over the 64 KiB default, small enough to sit in the socket buffers.
                .body(vec![b' '; 70_000]),
        ),
        ("METHOD_NOT_ALLOWED", c.get(&url)),
    ];
    for (code, req) in cases {
        let (status, headers, body) = send(req).await;
        assert_eq!(body["code"], code, "{status} {body}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    assert_eq!(
        footprint(&s).await,
        after_place,
        "refused quotes write nothing either"
    );

    // The route is labelled in the metrics and described in the OpenAPI document.
    let metrics = s.metrics().await;
    assert!(
        metric(
            &metrics,
            "http_server_request_duration_seconds_count",
            &[
                ("http_route", "/v1/quotes"),
                ("http_request_method", "POST")
            ]
        ) >= 1.0,
        "no /v1/quotes series"
    );
    let doc = s.get("/openapi.json").await.1;
    let op = &doc["paths"]["/v1/quotes"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PlaceOrderBody"
    );
    assert!(
        op["responses"]["200"]["headers"]["Cache-Control"].is_object(),
        "{op}"
    );
    s.stop().await;
}

/// A quote's availability is read through the catalog read path, after the plugin priced
/// (this plugin never looks at the catalog itself, so the read reaches the database): a
/// database that does not answer within the dependency's timeout is a retryable 503
/// `DEPENDENCY_UNAVAILABLE`, and the quote writes nothing. Once it answers, the same quote
/// is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_whose_catalog_read_times_out_is_a_retryable_503() {
    let s =
        liar_server(|c| c.policy.database.timeout = std::time::Duration::from_millis(100)).await;
    let before = footprint(&s).await;
    let body = order_body("cus_held", &[("KB-001", 1), ("MS-002", 2)]);
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let (status, headers, problem) = s.post_quote(None, &body).await;
    fault.release();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["code"], "DEPENDENCY_UNAVAILABLE", "{problem}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(footprint(&s).await, before);
    let (status, _, q) = s.post_quote(None, &body).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert!(
        q["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["available"] == true),
        "{q}"
    );
    s.stop().await;
}

/// Quotes for one sku that miss the catalog cache together make one database read: while
/// the database is held, every quote's plugin call is running (so they overlapped), one
/// read is waiting at the database and the others are counted in
/// `weir_catalog_coalesced_lookups_total`; once it answers, every quote is priced from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_quotes_of_an_uncached_sku_share_one_database_read() {
    use std::time::Duration;
    const QUOTES: usize = 8;
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        crate::support::patient(c);
        // The held read outlasts the wait below (10 s), so a failure shows what was held.
        c.policy.database.timeout = Duration::from_secs(60);
        c.policy.cache.ttl = Duration::from_secs(600);
    })
    .await;
    // The meter provider is the test process's: count from here.
    let coalesced = |text: &str| {
        metric(
            text,
            "weir_catalog_coalesced_lookups_total",
            &[("backend", "memory")],
        )
    };
    let before = coalesced(&s.metrics().await);
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let body = order_body("cus_rush", &[("KB-001", 1)]);
    let quotes: Vec<_> = (0..QUOTES)
        .map(|_| {
            let (c, url, body) = (
                s.client.clone(),
                format!("{}/v1/quotes", s.base),
                body.clone(),
            );
            tokio::spawn(async move { send(c.post(url).json(&body)).await })
        })
        .collect();
    let runtime = s.state().runtime.clone();
    // The counter is the process's (other tests' servers add to it): the held read and the
    // running calls are this server's own.
    let (running, reads, joined) = crate::support::settle(
        400,
        Duration::from_millis(25),
        || async {
            (
                runtime.in_flight(),
                fault.waiting(),
                coalesced(&s.metrics().await) - before,
            )
        },
        |&(running, reads, joined)| {
            running == QUOTES && reads == 1 && joined >= (QUOTES - 1) as f64
        },
    )
    .await;
    fault.release();
    assert_eq!(
        (running, reads),
        (QUOTES, 1),
        "(plugin calls running, reads at the database) with {joined} lookups coalesced"
    );
    assert!(joined >= (QUOTES - 1) as f64, "{joined} lookups coalesced");
    for quote in quotes {
        let (status, _, q) = quote.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{q}");
        assert_eq!(q["lines"][0]["available"], true, "{q}");
        assert_eq!(q["lines"][0]["sku"], "KB-001", "{q}");
    }
    s.stop().await;
}

/// A quote's availability is the catalog read path's view, as fresh as its cache: with a
/// long cache lifetime, a stock change made after a quote cached the sku is not seen by the
/// next quote; with the cache off (`ttl_ms = 0`) it is seen at once. The plugin never looks
/// at the catalog, so the quote's own lookups are the only catalog reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quotes_availability_is_as_fresh_as_the_catalog_cache() {
    for (ttl, after_sold_out) in [
        (std::time::Duration::from_secs(3600), true),
        (std::time::Duration::ZERO, false),
    ] {
        let s = liar_server(|c| c.policy.cache.ttl = ttl).await;
        let body = order_body("cus_fresh", &[("KB-001", 1)]);
        let (status, _, q) = s.post_quote(None, &body).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        assert_eq!(q["lines"][0]["available"], true, "{q}");
        let (status, _, p) = send(
            s.client
                .put(format!("{}/v1/products/KB-001", s.base))
                .json(&json!({"name": "Mechanical keyboard", "unit_price": 8900, "currency": "EUR", "stock": 0})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let (status, _, q) = s.post_quote(None, &body).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        assert_eq!(
            q["lines"][0]["available"], after_sold_out,
            "cache lifetime {ttl:?}: {q}"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn quotes_on_sqlite() {
    quotes_suite(Backend::Sqlite, Orders::Rust).await;
}

#[tokio::test]
async fn quotes_on_postgres() {
    quotes_suite(Backend::Postgres, Orders::Rust).await;
}

/// A plugin that prices whatever it is asked (it never looks at stock): the quote says what
/// the stock covers, and a pricing that breaks the contract is refused as when placing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_reports_stock_and_is_held_to_the_contract() {
    let s = liar_server(|_| {}).await;
    let before = footprint(&s).await;
    // HD-005 is sold out in the demo catalog; NOPE-404 does not exist.
    let (status, _, q) = s
        .post_quote(
            None,
            &order_body("cus_liar", &[("KB-001", 1), ("HD-005", 1), ("NOPE-404", 1)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    let available: Vec<&Value> = q["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["available"])
        .collect();
    assert_eq!(
        available,
        [&json!(true), &json!(false), &json!(false)],
        "{q}"
    );

    let mut lying = order_body("cus_liar", &[("KB-001", 1), ("MS-002", 2)]);
    lying["metadata"] = json!({"lie": "total"});
    let (qs, qh, qb) = s.post_quote(None, &lying).await;
    assert_eq!(qb["code"], "PLUGIN_CONTRACT_VIOLATION", "{qb}");
    let (ps, ph, pb) = s.post_order(Some("lie"), &lying).await;
    assert_eq!(problem_kind(qs, &qh, &qb), problem_kind(ps, &ph, &pb));
    assert_eq!(footprint(&s).await, before);
    s.stop().await;
}

/// Quoting needs `orders:write`, like placing: a read-only credential runs no plugin.
#[tokio::test]
async fn quoting_needs_the_orders_write_scope() {
    quoting_needs_the_write_scope(Orders::Rust).await;
}

pub(crate) async fn quoting_needs_the_write_scope(orders: Orders) {
    const ADMIN: &str = "admin-token-for-quote-tests";
    let s = TestServer::start_with(Backend::Sqlite, orders, |c, _| {
        c.admin_token = Some(Secret::new(ADMIN));
        c.auth.mode = Some(AuthMode::ApiKeys);
    })
    .await;
    let admin = weir_host::cli::AdminClient::new(&s.ops, Some(ADMIN.to_owned())).unwrap();
    let key = |scopes: &'static [&'static str]| {
        let admin = &admin;
        async move {
            let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
            let created = admin
                .create_api_key("quotes", "test", &scopes, None)
                .await
                .unwrap();
            created["key"].as_str().unwrap().to_owned()
        }
    };
    let reader = key(&["orders:read", "events:read", "products:write"]).await;
    let writer = key(&["orders:write"]).await;
    let body = order_body("cus_quote", &[("KB-001", 1)]);
    let url = format!("{}/v1/quotes", s.base);

    let (status, headers, problem) = send(s.client.post(&url).json(&body)).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::UNAUTHORIZED, &json!("UNAUTHENTICATED"))
    );
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, problem) = send(s.client.post(&url).bearer_auth(&reader).json(&body)).await;
    assert_eq!(
        (status, &problem["code"]),
        (StatusCode::FORBIDDEN, &json!("FORBIDDEN")),
        "{problem}"
    );
    let (status, _, q) = send(s.client.post(&url).bearer_auth(&writer).json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    s.stop().await;
}

/// Under a canary, a quote sent with the key the order is then placed with is priced by the
/// version that prices the order; a quote without a key is routed by its content (the same
/// request, the same version; different requests, both versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_with_the_placing_key_is_priced_by_the_version_that_places() {
    const ADMIN: &str = "admin-token-for-quote-tests";
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.admin_token = Some(Secret::new(ADMIN));
    })
    .await;
    let plugins = format!("{}/admin/v1/plugins", s.ops);
    let res = s
        .client
        .post(&plugins)
        .bearer_auth(ADMIN)
        .body(std::fs::read(artifacts::ORDERS_NEXT).unwrap())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "upload: {}", res.status());
    let canary = res.json::<Value>().await.unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let stable = s.state().orders_plugin().unwrap().meta.digest.clone();
    let current: Value = s
        .client
        .get(format!("{plugins}/orders"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let release = json!({
        "generation": current["release"]["generation"].as_i64().unwrap_or(0),
        "stable": stable,
        "canary": {"digest": canary, "weight": 50},
    });
    let res = s
        .client
        .put(format!("{plugins}/orders/release"))
        .bearer_auth(ADMIN)
        .json(&release)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let body = order_body("cus_canary", &[("KB-001", 1)]);
    let mut versions = std::collections::BTreeSet::new();
    for i in 0..16 {
        let key = format!("canary-{i}");
        let (status, _, q) = s.post_quote(Some(&key), &body).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        let (status, _, order) = s.post_order(Some(&key), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(priced(&q), priced(&order), "{key}");
        versions.insert(q["plugin"]["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(versions.len(), 2, "both versions priced some keys");

    let first = s.post_quote(None, &body).await.2;
    for _ in 0..4 {
        assert_eq!(s.post_quote(None, &body).await.2["plugin"], first["plugin"]);
    }
    // Without a key, the content is the key: different requests go to both versions.
    let mut by_content = std::collections::BTreeSet::new();
    for i in 0..16 {
        let body = order_body(&format!("cus_content_{i}"), &[("KB-001", 1)]);
        let (status, _, q) = s.post_quote(None, &body).await;
        assert_eq!(status, StatusCode::OK, "{q}");
        by_content.insert(q["plugin"]["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_content.len(), 2, "quotes without a key split by content");
    s.stop().await;
}
