//! The plugin lifecycle through the operations API of a real server: uploads and their
//! refusals, swaps under load, canary routing and automatic rollback, shadow comparisons.
//! Replicas, the compiled-artifact cache and the CLI run as real processes in
//! `host/tests/process/releases.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use weir_host::server::config::{Config, Secret};
use weir_plugin_artifacts as artifacts;

use crate::support::{Backend, TestServer, eventually, order_body};

const TOKEN: &str = "release-tests-admin-token-0123";

fn with_admin(c: &mut Config) {
    c.admin_token = Some(Secret::new(TOKEN));
}

/// The operations API of `s` with the admin token.
struct Admin<'a> {
    s: &'a TestServer,
}

impl Admin<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/admin/v1/plugins{path}", self.s.ops)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let res = req.bearer_auth(TOKEN).send().await.expect("admin request");
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.send(self.s.client.post(self.url("")).body(bytes))
            .await
    }

    async fn upload_file(&self, path: &str) -> String {
        let (status, body) = self.upload(std::fs::read(path).unwrap()).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body["digest"].as_str().unwrap().to_owned()
    }

    async fn plugin(&self, name: &str) -> Value {
        let (status, body) = self
            .send(self.s.client.get(self.url(&format!("/{name}"))))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn generation(&self, name: &str) -> i64 {
        self.plugin(name).await["release"]["generation"]
            .as_i64()
            .unwrap_or(0)
    }

    async fn release(&self, name: &str, desired: Value) -> (StatusCode, Value) {
        self.send(
            self.s
                .client
                .put(self.url(&format!("/{name}/release")))
                .json(&desired),
        )
        .await
    }

    async fn set(&self, name: &str, mut desired: Value) -> Value {
        desired["generation"] = json!(self.generation(name).await);
        let (status, body) = self.release(name, desired).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn stable_digest(s: &TestServer) -> String {
    s.state().orders_plugin().unwrap().meta.digest.clone()
}

/// Place an order with `key`: status, the deciding digest, the body.
async fn place(s: &TestServer, key: &str, lines: &[(&str, u32)]) -> (StatusCode, String, Value) {
    let (status, _, body) = s
        .post_order(Some(key), &order_body("cus_release", lines))
        .await;
    let digest = body["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, digest, body)
}

/// Place orders until the canary of `orders` is gone (rolled back automatically): every
/// answer is the stable's order (`stable` digest), the canary's failure `code` (500), or a
/// short-circuit while its breaker is open. Returns (failed, served).
async fn until_rolled_back(
    s: &TestServer,
    admin: &Admin<'_>,
    stable: &str,
    prefix: &str,
    code: &str,
) -> (u64, u64) {
    let (mut failed, mut served) = (0, 0);
    let mut i = 0;
    while admin.plugin("orders").await["release"]["canary"] != Value::Null {
        i += 1;
        assert!(i < 500, "the {prefix} canary was never rolled back");
        let (status, digest, body) = place(s, &format!("{prefix}-{i}"), &[("MS-002", 1)]).await;
        match status.as_u16() {
            201 => {
                assert_eq!(digest, stable, "only the stable serves");
                served += 1;
            }
            500 => {
                assert_eq!(body["code"], code, "{body}");
                assert_eq!(body["retryable"], false, "{body}");
                failed += 1;
            }
            503 => assert_eq!(body["code"], "PLUGIN_UNAVAILABLE", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (failed, served)
}

/// A client placing orders continuously until `stop`: every answer, in order.
fn load(
    s: &TestServer,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(StatusCode, String)>> {
    let (client, base, prefix) = (s.client.clone(), s.base.clone(), prefix.to_owned());
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let res = client
                .post(format!("{base}/v1/orders"))
                .header("Idempotency-Key", format!("{prefix}-{i}"))
                .json(&order_body("cus_load", &[("CB-004", 10)]))
                .send()
                .await
                .expect("request");
            let status = res.status();
            let body: Value = res.json().await.unwrap_or_default();
            seen.push((
                status,
                body["plugin"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        seen
    })
}

async fn swap_under_load(backend: Backend) {
    let s = TestServer::start(backend, |c, _| {
        with_admin(c);
        // A slow call must be slow in the catalog read, not answered from the cache, and
        // have time to be held there.
        c.policy.cache.ttl = Duration::ZERO;
        c.policy.database.timeout = Duration::from_secs(30);
        c.runtime.catalog_timeout = Duration::from_secs(30);
        c.runtime.budget.timeout = Duration::from_secs(30);
        c.http.request_timeout = Duration::from_secs(30);
        c.idempotency.lock_ttl = Duration::from_secs(60);
    })
    .await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let b = admin.upload_file(artifacts::ORDERS_NEXT).await;
    assert_ne!(a, b);
    assert_eq!(stable_digest(&s), a, "an upload alone changes nothing");

    // Traffic on A, then a slow call held in its catalog read while the release flips to B.
    let stop = Arc::new(AtomicBool::new(false));
    let before = load(&s, "before", stop.clone());
    eventually(
        "traffic served by A",
        500,
        Duration::from_millis(10),
        || {
            let s = &s;
            async move { s.state().store.count_rows().await.unwrap().orders >= 10 }
        },
    )
    .await;
    let fault = s.state().deps.database.fault.clone();
    fault.hold();
    let slow = {
        let (client, base) = (s.client.clone(), s.base.clone());
        tokio::spawn(async move {
            let res = client
                .post(format!("{base}/v1/orders"))
                .header("Idempotency-Key", "slow-across-the-flip")
                .json(&order_body("cus_slow", &[("KB-001", 1)]))
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        })
    };
    eventually(
        "the slow call to wait in its catalog read",
        1000,
        Duration::from_millis(10),
        || {
            let f = fault.clone();
            async move { f.waiting() >= 2 }
        },
    )
    .await;
    assert!(
        s.state().runtime.in_flight() >= 2,
        "the calls are inside plugin A"
    );
    let release = admin.set("orders", json!({"stable": b})).await;
    assert_eq!(release["stable"], b.as_str());
    fault.release();
    let (status, slow_body) = slow.await.unwrap();
    assert_eq!(status, 201, "{slow_body}");
    assert_eq!(
        slow_body["plugin"]["digest"],
        a.as_str(),
        "a call started on A finishes on A after the flip"
    );
    assert_eq!(slow_body["discount"], 0, "A's pricing");

    // Everything started after the flip is B's.
    let after = load(&s, "after", stop.clone());
    for i in 0..20 {
        let (status, digest, body) = place(&s, &format!("probe-{i}"), &[("CB-004", 10)]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(digest, b, "only B after the flip");
        assert_eq!(body["discount"], 90, "B's loyalty discount: 1% of 9000");
    }
    stop.store(true, Ordering::SeqCst);
    let (before, after) = (before.await.unwrap(), after.await.unwrap());
    assert!(!before.is_empty() && !after.is_empty());
    for (status, digest) in before.iter().chain(&after) {
        assert_eq!(*status, 201, "zero failed requests");
        assert!(
            *digest == a || *digest == b,
            "every answer is A's or B's: {digest}"
        );
    }
    assert!(
        after.iter().all(|(_, d)| *d == b),
        "a request sent after the flip is B's"
    );
    // The retired version is gone from the registry once nothing uses it.
    assert!(s.state().registry.get(&a).is_none());
    // Replays stay byte-identical after the swap.
    let (status, headers, replay) = s
        .post_order(
            Some("slow-across-the-flip"),
            &order_body("cus_slow", &[("KB-001", 1)]),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay, slow_body, "byte-identical replay of A's answer");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_load_fails_nothing_and_in_flight_calls_finish_on_their_version_sqlite() {
    swap_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_load_fails_nothing_and_in_flight_calls_finish_on_their_version_postgres() {
    swap_under_load(Backend::Postgres).await;
}

/// A component binary with a custom section appended: valid, same behaviour and `describe`,
/// another digest.
fn with_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"weir-test";
    let payload = b"another build";
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(size).unwrap()); // LEB128, < 128
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_upload_names_its_stage_while_the_running_version_serves() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        with_admin(c);
        c.plugins.releases.upload_limit_bytes = 4 << 20;
        c.runtime.budget.timeout = Duration::from_millis(300);
    })
    .await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&s, "during-refusals", stop.clone());
    let read = |p: &str| std::fs::read(p).unwrap();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str, &str)> = vec![
        (
            "not WebAssembly",
            b"hello, world".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "decode",
        ),
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "decode",
        ),
        (
            "a broken component",
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "compile",
        ),
        (
            "another world",
            read(artifacts::WRONG_WORLD),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "world",
        ),
        (
            "describe traps",
            read(artifacts::HOSTILE_DESCRIBE_PANIC),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "describe",
        ),
        (
            "describe never returns",
            read(artifacts::HOSTILE_DESCRIBE_SPIN),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_REJECTED",
            "describe",
        ),
        (
            "oversized",
            vec![0u8; 5 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "PLUGIN_TOO_LARGE",
            "size",
        ),
    ];
    for (what, bytes, status, code, stage) in cases {
        let (got, body) = admin.upload(bytes).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert_eq!(body["stage"], stage, "{what}: {body}");
        assert_eq!(body["status"], status.as_u16());
    }
    // The same bytes again: idempotent; other bytes under an admitted version: refused.
    let next = read(artifacts::ORDERS_NEXT);
    let (status, first) = admin.upload(next.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["new"], true);
    let (status, again) = admin.upload(next.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["new"].clone(), again["digest"].clone()),
        (json!(false), first["digest"].clone())
    );
    let (status, body) = admin.upload(with_custom_section(next)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        (body["code"].as_str(), body["stage"].as_str()),
        (Some("PLUGIN_REJECTED"), Some("policy"))
    );
    assert!(body["detail"].as_str().unwrap().contains("0.2.0"), "{body}");
    // A stale generation.
    let (status, body) = admin
        .release(
            "orders",
            json!({"generation": 0, "stable": first["digest"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "RELEASE_CONFLICT");

    stop.store(true, Ordering::SeqCst);
    let served = traffic.await.unwrap();
    assert!(!served.is_empty());
    assert!(
        served.iter().all(|(st, d)| *st == 201 && *d == a),
        "the running version kept serving every request: {served:?}"
    );
    assert_eq!(stable_digest(&s), a);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_gets_a_sticky_share_and_a_trapping_one_is_rolled_back_automatically() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        with_admin(c);
        c.plugins.releases.rollback.min_calls = 5;
        c.plugins.releases.rollback.margin = 0.2;
    })
    .await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let registry = s.state().registry.clone();
    // A key made on demand (a quote's hash of its body) is not made while one version serves
    // every key, and is made once per route while a canary shares the keys.
    let made = std::sync::atomic::AtomicUsize::new(0);
    let make = || {
        made.fetch_add(1, Ordering::SeqCst);
        "default/POST /v1/orders:canary-0".to_owned()
    };
    let route = registry
        .route("orders", weir_core::ports::RoutingKey::made_by(&make))
        .unwrap();
    assert_eq!(route.version.meta.digest, a);
    assert_eq!(
        made.load(Ordering::SeqCst),
        0,
        "no canary: the key is not made"
    );
    let b = admin.upload_file(artifacts::ORDERS_NEXT).await;
    admin
        .set(
            "orders",
            json!({"stable": a, "canary": {"digest": b, "weight": 20}}),
        )
        .await;

    // 20% of distinct keys: n = 300, p = 0.2, sd = sqrt(300 * 0.2 * 0.8) = 6.9; 4 sd around 60.
    let mut on_b = 0;
    let mut routed = Vec::new();
    for i in 0..300 {
        let key = format!("canary-{i}");
        let (status, digest, body) = place(&s, &key, &[("MS-002", 1)]).await;
        assert_eq!(status, 201, "{body}");
        assert!(digest == a || digest == b);
        on_b += usize::from(digest == b);
        routed.push((key, digest));
    }
    assert!(
        (32..=88).contains(&on_b),
        "{on_b} of 300 keys on the canary"
    );
    // A key the canary serves, made on demand: it routes as its text, and is made once.
    let (on_canary, _) = routed
        .iter()
        .find(|(_, digest)| *digest == b)
        .expect("some key on the canary");
    let text = format!("default/POST /v1/orders:{on_canary}");
    let make_canary = || {
        made.fetch_add(1, Ordering::SeqCst);
        text.clone()
    };
    let route = registry
        .route(
            "orders",
            weir_core::ports::RoutingKey::made_by(&make_canary),
        )
        .unwrap();
    assert_eq!(
        route.version.meta.digest, b,
        "the made key routes as its text"
    );
    assert_eq!(made.load(Ordering::SeqCst), 1, "made once for the route");
    // Sticky: the key's bucket decides, every time.
    for (key, digest) in &routed {
        for _ in 0..3 {
            let route = registry
                .route(
                    "orders",
                    weir_core::ports::RoutingKey::new(&format!("default/POST /v1/orders:{key}")),
                )
                .unwrap();
            assert_eq!(&route.version.meta.digest, digest, "{key}");
        }
    }

    // A trapping canary: traps on its share, the stable keeps serving, then it is removed.
    let trap = admin.upload_file(artifacts::HOSTILE_ORDERS_TRAP).await;
    admin
        .set(
            "orders",
            json!({"stable": a, "canary": {"digest": trap, "weight": 50}}),
        )
        .await;
    let (trapped, served) = until_rolled_back(&s, &admin, &a, "trap", "PLUGIN_TRAPPED").await;
    assert!(
        trapped >= 5 && served > 0,
        "trapped {trapped}, served {served}"
    );
    for j in 0..20 {
        let (status, digest, _) = place(&s, &format!("after-rollback-{j}"), &[("MS-002", 1)]).await;
        assert_eq!((status, digest.as_str()), (StatusCode::CREATED, a.as_str()));
    }
    let (_, history) = admin
        .send(s.client.get(admin.url("/orders/history?limit=1")))
        .await;
    let last = &history["history"][0];
    assert_eq!(last["action"], "auto_rollback", "{history}");
    assert_eq!(last["actor"], "auto-rollback");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("unexpected-outcome rate")
    );
    let (_, info) = s.ops_get("/infoz").await;
    assert_eq!(info["releases"]["rollbacks_total"], 1, "{info}");
    assert_eq!(
        info["releases"]["recent_rollbacks"][0]["digest"],
        trap.as_str()
    );
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_plugin_rollbacks_total{") && l.contains(&trap)),
        "{metrics}"
    );
    s.stop().await;
}

/// A canary whose decisions break the host's contract counts those against itself like
/// traps: the stable keeps serving, nothing of the lies is stored, and it is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_breaks_the_contract_is_rolled_back_and_stores_nothing() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        with_admin(c);
        c.plugins.releases.rollback.min_calls = 5;
        c.plugins.releases.rollback.margin = 0.2;
    })
    .await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let liar = admin.upload_file(artifacts::HOSTILE_ORDERS_LIAR).await;
    admin
        .set(
            "orders",
            json!({"stable": a, "canary": {"digest": liar, "weight": 50}}),
        )
        .await;
    let (refused, served) =
        until_rolled_back(&s, &admin, &a, "liar", "PLUGIN_CONTRACT_VIOLATION").await;
    assert!(
        refused >= 5 && served > 0,
        "refused {refused}, served {served}"
    );
    let counts = s.state().store.count_rows().await.unwrap();
    assert_eq!(counts.orders, served, "no lying order was stored");
    let (_, history) = admin
        .send(s.client.get(admin.url("/orders/history?limit=1")))
        .await;
    assert_eq!(
        history["history"][0]["action"], "auto_rollback",
        "{history}"
    );
    let metrics = s.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_plugin_contract_violations_total{")
                && l.contains("rule=\"total\"")
                && l.contains("0.9.1-liar")),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_prices_differently_is_counted_and_changes_nothing() {
    let s = TestServer::start(Backend::Sqlite, with_admin_and_nothing_else).await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let b = admin.upload_file(artifacts::ORDERS_NEXT).await;
    admin
        .set(
            "orders",
            json!({"stable": a, "shadow": {"digest": b, "sample": 1.0}}),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, digest, body) = place(&s, &format!("shadowed-{i}"), &[("CB-004", 10)]).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(digest, a);
        assert_eq!(body["discount"], 0, "A's answer, never B's");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Both refuse an invalid request the same way: a match.
    let (status, _, _) = place(&s, "shadowed-invalid", &[]).await;
    assert_eq!(status, 422);
    // Shadow calls run off the response path: poll (bounded) until all are counted.
    let (plugins, digest_b) = (&admin, b.as_str());
    let version_b = move || async move {
        plugins.plugin("orders").await["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["digest"] == digest_b)
            .cloned()
            .unwrap()
    };
    eventually(
        "every shadow call counted",
        500,
        Duration::from_millis(10),
        move || async move {
            let shadow = version_b().await;
            shadow["stats"]["shadow"]["mismatches"] == 10
                && shadow["stats"]["shadow"]["matches"] == 1
        },
    )
    .await;
    let shadow = version_b().await;
    assert_eq!(shadow["stats"]["shadow"]["mismatches"], 10, "{shadow}");
    assert_eq!(shadow["stats"]["shadow"]["matches"], 1, "{shadow}");
    assert_eq!(shadow["state"], "shadow");
    assert_eq!(shadow["sample"], 1.0);
    for id in ids {
        let (_, order) = s.get(&format!("/v1/orders/{id}")).await;
        assert_eq!(
            (order["discount"].clone(), order["plugin"]["digest"].clone()),
            (json!(0), json!(a))
        );
    }
    let metrics = s.metrics().await;
    let count = |outcome: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("weir_plugin_shadow_comparisons_total{")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(
        (count("mismatch"), count("match")),
        (10.0, 1.0),
        "{metrics}"
    );
    s.stop().await;
}

fn with_admin_and_nothing_else(c: &mut Config, _: &std::path::Path) {
    with_admin(c);
}

#[tokio::test]
async fn admin_requests_without_a_valid_token_or_body_are_refused_with_their_codes() {
    let s = TestServer::start(Backend::Sqlite, with_admin_and_nothing_else).await;
    let url = format!("{}/admin/v1/plugins", s.ops);
    let c = &s.client;
    let code = |res: reqwest::Response| async move {
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        code(c.get(&url).send().await.unwrap()).await,
        (401, "ADMIN_UNAUTHORIZED".into())
    );
    assert_eq!(
        code(
            c.get(&url)
                .bearer_auth("wrong-token-wrong-token")
                .send()
                .await
                .unwrap()
        )
        .await,
        (401, "ADMIN_UNAUTHORIZED".into())
    );
    let put = |body: &'static str| {
        c.put(format!("{url}/orders/release"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_eq!(
        code(put("{nope").send().await.unwrap()).await,
        (400, "MALFORMED_JSON".into())
    );
    assert_eq!(
        code(
            put(r#"{"generation":1,"stable":"x","colour":"red"}"#)
                .send()
                .await
                .unwrap()
        )
        .await,
        (422, "UNKNOWN_FIELD".into())
    );
    assert_eq!(
        code(
            put(r#"{"generation":1,"stable":"not-a-digest"}"#)
                .send()
                .await
                .unwrap()
        )
        .await,
        (422, "RELEASE_INVALID".into())
    );
    assert_eq!(
        code(
            put(r#"{"generation":7,"stable":"x"}"#)
                .send()
                .await
                .unwrap()
        )
        .await,
        (409, "RELEASE_CONFLICT".into())
    );
    assert_eq!(
        code(
            c.get(format!("{url}/nothing-here"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
        )
        .await,
        (404, "PLUGIN_NOT_FOUND".into())
    );
    assert_eq!(
        code(
            c.post(format!("{url}/orders/promote"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
        )
        .await,
        (422, "RELEASE_INVALID".into()),
        "nothing to promote"
    );
    let names: BTreeSet<String> = {
        let res = c.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        body["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names, BTreeSet::from(["orders".to_owned()]));
    s.stop().await;
    // Disabled without a token.
    let s = TestServer::start(Backend::Sqlite, |_, _| {}).await;
    let res = s
        .client
        .get(format!("{}/admin/v1/plugins", s.ops))
        .send()
        .await
        .unwrap();
    assert_eq!(code(res).await, (404, "ADMIN_DISABLED".into()));
    s.stop().await;
}

/// A replica whose stored release cannot be applied serves what it loaded locally and stays
/// unready, saying why, until the release applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_until_the_stored_release_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |data: std::path::PathBuf| {
        TestServer::start(Backend::Sqlite, move |c, _| {
            with_admin(c);
            c.data_dir = data;
            c.plugins.artifact_cache = false;
        })
    };
    let s = start(data.clone()).await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let b = admin.upload_file(artifacts::ORDERS_NEXT).await;
    admin.set("orders", json!({"stable": b})).await;
    s.stop().await;

    // B's stored bytes are damaged: nothing can load it.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("weir.db").display()))
        .await
        .unwrap();
    sqlx::query("UPDATE plugin_components SET bytes = X'00' WHERE digest = ?1")
        .bind(&b)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let s = start(data.clone()).await;
    let (status, ready) = s.readyz().await;
    assert_eq!(status, 503, "{ready}");
    let plugin = crate::support::check(&ready, "plugin");
    assert_eq!(plugin["ok"], false);
    assert!(
        plugin["detail"]
            .as_str()
            .unwrap()
            .contains("releases not applied yet"),
        "{plugin}"
    );
    // Meanwhile it serves what it loaded itself.
    let (status, digest, _) = place(&s, "unready", &[("CB-004", 1)]).await;
    assert_eq!((status, digest), (StatusCode::CREATED, a.clone()));
    // Releasing a loadable version applies, and the replica becomes ready.
    let admin = Admin { s: &s };
    admin.set("orders", json!({"stable": a})).await;
    let (status, ready) = s.readyz().await;
    assert_eq!(status, 200, "{ready}");
    s.stop().await;
}

/// The sum of `weir_plugin_admission_refusals_total` for uploads refused at `stage`.
fn upload_refusals(metrics: &str, stage: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("weir_plugin_admission_refusals_total{")
                && l.contains(&format!("stage=\"{stage}\""))
                && l.contains("source=\"upload\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_built_against_another_contract_is_refused_naming_what_differs() {
    let s = TestServer::start(Backend::Sqlite, |c, _| with_admin(c)).await;
    let admin = Admin { s: &s };
    let a = stable_digest(&s);
    let before = s.metrics().await;
    // Operators see the accepted versions.
    let (_, info) = s.ops_get("/infoz").await;
    assert_eq!(
        info["runtime"]["contract"],
        json!({"package": "weir:orders", "accepted_versions": ["0.1.0"]}),
        "{info}"
    );

    // A changed copy of weir:orders@0.1.0: a retyped field and an extra parameter.
    let (status, body) = admin
        .upload(std::fs::read(artifacts::CONTRACT_DRIFT).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        (body["code"].as_str(), body["stage"].as_str()),
        (Some("PLUGIN_REJECTED"), Some("contract")),
        "{body}"
    );
    let contract = &body["contract"];
    assert_eq!(contract["accepted_versions"], json!(["0.1.0"]), "{body}");
    assert_eq!(contract["omitted"], 0, "{body}");
    let mismatches = contract["mismatches"].as_array().expect("mismatches");
    assert!(
        mismatches.contains(&json!({
            "kind": "type",
            "interface": "types",
            "name": "order-line",
            "change": {"change": "field_type", "field": "quantity", "expected": "u32", "found": "u64"},
        })),
        "{body}"
    );
    assert!(
        mismatches.contains(&json!({
            "kind": "param_count",
            "interface": null,
            "function": "transition",
            "expected": ["order", "event"],
            "found": ["order", "event", "reason"],
        })),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not match the weir:orders contract"),
        "{body}"
    );

    // The same contract declared as a future version.
    let (status, body) = admin
        .upload(std::fs::read(artifacts::CONTRACT_NEXT).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["stage"], "contract", "{body}");
    assert_eq!(
        body["contract"]["mismatches"],
        json!([{
            "kind": "unsupported_version",
            "direction": "import",
            "item": "weir:orders/types@0.2.0",
            "version": "0.2.0",
            "accepted": ["0.1.0"],
        }]),
        "{body}"
    );

    let after = s.metrics().await;
    assert_eq!(
        upload_refusals(&after, "contract") - upload_refusals(&before, "contract"),
        2.0,
        "both refusals counted by stage"
    );
    assert_eq!(stable_digest(&s), a, "the running version is untouched");
    s.stop().await;
}
