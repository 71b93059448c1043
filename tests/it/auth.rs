//! Authentication, authorization and tenant isolation of the public API, over loopback.
//!
//! - the auth matrix: no credential, malformed, unknown, revoked and under-scoped API keys,
//!   and API keys created through the admin API (the CLI's client) working at once;
//! - JWT bearer tokens against a JWKS file: valid, expired, wrong audience, wrong issuer,
//!   signed by another key, no tenant, missing scope, `alg: none`;
//! - tenant isolation on SQLite and PostgreSQL: reads, lists, cancels, the events feed and
//!   idempotency keys never cross tenants;
//! - a client inventing a new API key per request stays within the per-peer limit of
//!   unverified credentials (no database lookup beyond it).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use weir_host::auth::{AuthMode, jwt::JwtConfig};
use weir_host::cli::AdminClient;
use weir_host::server::config::Secret;

use crate::support::{Backend, TestServer, metric, order_body};

const TOKEN: &str = "admin-token-for-auth-tests";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name)
}

async fn keys_server(backend: Backend) -> TestServer {
    TestServer::start(backend, |c, _| {
        c.admin_token = Some(Secret::new(TOKEN));
        c.auth.mode = Some(AuthMode::ApiKeys);
    })
    .await
}

fn admin(s: &TestServer) -> AdminClient {
    AdminClient::new(&s.ops, Some(TOKEN.to_owned())).unwrap()
}

/// A new key of `tenant` with `scopes`; its text.
async fn new_key(s: &TestServer, tenant: &str, scopes: &[&str]) -> (String, String) {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let created = admin(s)
        .create_api_key(tenant, "test", &scopes, None)
        .await
        .expect("create an API key");
    (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// One API call with `credential` as `Authorization: Bearer`: status, headers, body.
async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = s.client.request(method, format!("{}{path}", s.base));
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

async fn place(s: &TestServer, credential: Option<&str>, key: &str) -> (u16, Value) {
    let (status, _, body) = call(
        s,
        reqwest::Method::POST,
        "/v1/orders",
        credential,
        Some(&order_body("cus_auth", &[("KB-001", 1)])),
        Some(key),
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn api_key_matrix() {
    let s = keys_server(Backend::Sqlite).await;
    let (writer, writer_id) = new_key(&s, "acme", &["orders:write", "orders:read"]).await;
    let (reader, _) = new_key(&s, "acme", &["orders:read"]).await;

    // A key created through the admin API works at once.
    let (status, body) = place(&s, Some(&writer), "m-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "acme");

    // No credential: 401 with the scheme named.
    let (status, headers, body) =
        call(&s, reqwest::Method::GET, "/v1/orders", None, None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"weir\"");

    // Malformed, well-formed but unknown, and a forged secret of a real prefix: 401.
    let forged = format!("{}A", &writer[..writer.len() - 1]);
    let forged = if forged == writer {
        format!("{}B", &writer[..writer.len() - 1])
    } else {
        forged
    };
    for bad in [
        "weir_nonsense",
        "weir_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        forged.as_str(),
    ] {
        let (status, headers, body) = call(
            &s,
            reqwest::Method::GET,
            "/v1/orders",
            Some(bad),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{bad}"
        );
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    // Also through X-Api-Key, and a JWT where only API keys are accepted.
    let res = s
        .client
        .get(format!("{}/v1/orders", s.base))
        .header("x-api-key", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (status, _, _) = call(
        &s,
        reqwest::Method::GET,
        "/v1/orders",
        Some("eyJhbGciOiJFZERTQSJ9.e30.sig"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A missing scope: 403, whatever the route.
    let (status, _, body) = call(
        &s,
        reqwest::Method::POST,
        "/v1/orders",
        Some(&reader),
        Some(&order_body("cus_auth", &[("KB-001", 1)])),
        Some("r-1"),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    for (method, path, body) in [
        (
            reqwest::Method::PUT,
            "/v1/products/KB-001",
            Some(json!({"name": "free", "unit_price": 0, "currency": "EUR", "stock": 5})),
        ),
        (reqwest::Method::GET, "/v1/events", None),
    ] {
        let (status, _, problem) = call(&s, method, path, Some(&writer), body.as_ref(), None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{path}"
        );
    }
    // HEAD runs the GET handler: it needs the same scope.
    let (status, _, _) = call(
        &s,
        reqwest::Method::HEAD,
        "/v1/events",
        Some(&writer),
        None,
        None,
    )
    .await;
    assert_eq!(status, 403, "HEAD /v1/events without events:read");
    // The product was not changed to a price of 0.
    let (_, _, products) = call(
        &s,
        reqwest::Method::GET,
        "/v1/products",
        Some(&reader),
        None,
        None,
    )
    .await;
    let kb = products["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sku"] == "KB-001")
        .unwrap()
        .clone();
    assert_ne!(kb["unit_price"], 0);

    // Revoked: refused at once on this instance.
    admin(&s).revoke_api_key(&writer_id).await.unwrap();
    let (status, body) = place(&s, Some(&writer), "m-2").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );

    // The key list never shows a secret; the revoked key is marked.
    let listed = admin(&s).list_api_keys(Some("acme")).await.unwrap();
    let text = listed.to_string();
    assert!(!text.contains(&writer[20..]) && !text.contains(&reader[20..]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == writer_id.as_str() && !k["revoked_at"].is_null())
    );

    // Bad key requests are typed refusals.
    let err = admin(&s)
        .create_api_key("Not A Tenant", "x", &["admin".to_owned()], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("API_KEY_INVALID"), "{err}");

    let failures = metric(&s.metrics().await, "weir_auth_failures_total", &[]);
    assert!(failures >= 7.0, "auth failures counted: {failures}");
    s.stop().await;
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    exp: u64,
    nbf: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    scope: &'a str,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: &Claims<'_>, key_file: &str) -> String {
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("test-1".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

fn good<'a>() -> Claims<'a> {
    Claims {
        iss: "https://idp.test",
        aud: "weir-api",
        sub: "user-1",
        exp: now() + 600,
        nbf: now() - 10,
        tenant: Some("globex"),
        scope: "orders:write orders:read openid",
    }
}

#[tokio::test]
async fn jwt_matrix() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.auth.mode = Some(AuthMode::Jwt);
        c.auth.jwt = Some(JwtConfig {
            jwks_file: Some(fixture("jwks.json")),
            issuer: "https://idp.test".to_owned(),
            audience: "weir-api".to_owned(),
            leeway_s: 5,
            ..JwtConfig::default()
        });
    })
    .await;
    let valid = token(&good(), "signing-key.pem");
    let (status, body) = place(&s, Some(&valid), "j-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "globex");

    let refused = [
        (
            "expired",
            token(
                &Claims {
                    exp: now() - 60,
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        (
            "not yet valid",
            token(
                &Claims {
                    nbf: now() + 600,
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        (
            "wrong audience",
            token(
                &Claims {
                    aud: "other-api",
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        (
            "wrong issuer",
            token(
                &Claims {
                    iss: "https://evil.test",
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        ("another key", token(&good(), "other-key.pem")),
        (
            "no tenant",
            token(
                &Claims {
                    tenant: None,
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        (
            "bad tenant",
            token(
                &Claims {
                    tenant: Some("../x"),
                    ..good()
                },
                "signing-key.pem",
            ),
        ),
        ("alg none", {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let claims = serde_json::to_vec(&good()).unwrap();
            format!(
                "{}.{}.",
                b64.encode(br#"{"alg":"none","typ":"JWT","kid":"test-1"}"#),
                b64.encode(claims)
            )
        }),
        (
            "an API key",
            "weir_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ),
    ];
    for (what, t) in &refused {
        let (status, body) = place(&s, Some(t), "j-2").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("UNAUTHENTICATED")),
            "{what}: {body}"
        );
    }
    // Signed and valid, but without the scope the route needs.
    let reader = token(
        &Claims {
            scope: "orders:read",
            ..good()
        },
        "signing-key.pem",
    );
    let (status, body) = place(&s, Some(&reader), "j-3").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    // The scope it has is enough to list.
    let (status, _, page) = call(
        &s,
        reqwest::Method::GET,
        "/v1/orders",
        Some(&reader),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    s.stop().await;
}

async fn tenants_are_isolated(backend: Backend) {
    let s = keys_server(backend).await;
    let all = ["orders:write", "orders:read", "events:read"];
    let (a, _) = new_key(&s, "acme", &all).await;
    let (b, _) = new_key(&s, "bravo", &all).await;

    let (status, order_a) = place(&s, Some(&a), "shared-key").await;
    assert_eq!(status, 201, "{order_a}");
    let id_a = order_a["id"].as_str().unwrap().to_owned();

    // The same Idempotency-Key in another tenant is another order, not a replay of A's.
    let (status, headers, order_b) = call(
        &s,
        reqwest::Method::POST,
        "/v1/orders",
        Some(&b),
        Some(&order_body("cus_auth", &[("KB-001", 1)])),
        Some("shared-key"),
    )
    .await;
    assert_eq!(status, 201, "{order_b}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_ne!(order_b["id"], order_a["id"]);
    assert_eq!(order_b["tenant"], "bravo");
    // Within one tenant the key still replays.
    let (status, headers, again) = call(
        &s,
        reqwest::Method::POST,
        "/v1/orders",
        Some(&a),
        Some(&order_body("cus_auth", &[("KB-001", 1)])),
        Some("shared-key"),
    )
    .await;
    assert_eq!((status, again["id"].clone()), (201, order_a["id"].clone()));
    assert_eq!(headers["idempotent-replayed"], "true");

    // B cannot read, list, cancel or see events of A's order: 404, as if it did not exist.
    let path = format!("/v1/orders/{id_a}");
    let (status, _, body) = call(&s, reqwest::Method::GET, &path, Some(&b), None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ORDER_NOT_FOUND"))
    );
    let (status, _, body) = call(
        &s,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        Some(&b),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, _, mine) = call(&s, reqwest::Method::GET, &path, Some(&a), None, None).await;
    assert_eq!(mine["status"], "placed", "B's cancel changed nothing");

    let ids = |page: &Value, field: &str| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o[field].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, list_b) = call(&s, reqwest::Method::GET, "/v1/orders", Some(&b), None, None).await;
    assert_eq!(
        ids(&list_b, "id"),
        vec![order_b["id"].as_str().unwrap().to_owned()]
    );
    let (_, _, list_a) = call(
        &s,
        reqwest::Method::GET,
        "/v1/orders?customer_id=cus_auth",
        Some(&a),
        None,
        None,
    )
    .await;
    assert_eq!(ids(&list_a, "id"), vec![id_a.clone()]);
    let (_, _, events_b) = call(&s, reqwest::Method::GET, "/v1/events", Some(&b), None, None).await;
    let subjects = ids(&events_b, "subject");
    assert!(
        !subjects.is_empty() && !subjects.contains(&id_a),
        "{events_b}"
    );
    let (_, _, events_a) = call(&s, reqwest::Method::GET, "/v1/events", Some(&a), None, None).await;
    assert_eq!(ids(&events_a, "subject"), vec![id_a.clone()]);

    // A can cancel its own order.
    let (status, _, cancelled) = call(
        &s,
        reqwest::Method::POST,
        &format!("{path}/cancel"),
        Some(&a),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    s.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated_on_sqlite() {
    tenants_are_isolated(Backend::Sqlite).await;
}

#[tokio::test]
async fn tenants_are_isolated_on_postgres() {
    tenants_are_isolated(Backend::Postgres).await;
}

#[tokio::test]
async fn invented_api_keys_stay_within_the_per_peer_limit() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.auth.mode = Some(AuthMode::ApiKeys);
        c.auth.unverified_per_second = 1;
        c.auth.unverified_burst = 3;
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..20 {
        // A fresh, well-formed, random key every time: none is in the cache.
        let key = format!("weir_{:016x}_{:0>43}", fastrand_u64(i), i);
        let (status, _, body) = call(
            &s,
            reqwest::Method::GET,
            "/v1/orders",
            Some(&key),
            None,
            None,
        )
        .await;
        codes.push((status, body["code"].as_str().unwrap_or("").to_owned()));
    }
    let limited = codes
        .iter()
        .filter(|(s, c)| *s == 429 && c == "RATE_LIMITED")
        .count();
    let looked_up = codes.iter().filter(|(s, _)| *s == 401).count();
    assert!(
        looked_up <= 4 && limited >= 16,
        "at most the burst (3, +1 refill) reached the key store: {codes:?}"
    );
    let text = s.metrics().await;
    assert!(
        metric(
            &text,
            "weir_auth_failures_total",
            &[("reason", "unverified_rate")]
        ) >= 16.0
    );
    s.stop().await;
}

/// A deterministic spread of 64-bit values (no RNG dependency needed in this test).
fn fastrand_u64(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5_5A5A_DEAD_BEEF
}

/// A JWKS endpoint on loopback whose key set the test can change; counts its fetches.
struct JwksServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(initial: &str) -> Self {
        let body = std::sync::Arc::new(std::sync::Mutex::new(initial.to_owned()));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (b, f) = (b.clone(), f.clone());
                async move {
                    f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let text = b.lock().unwrap().clone();
                    ([("content-type", "application/json")], text)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, body, fetches }
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_a_rotated_key_is_picked_up() {
    let jwks = JwksServer::start(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).await;
    let url = jwks.url.clone();
    let s = TestServer::start(Backend::Sqlite, move |c, _| {
        c.auth.mode = Some(AuthMode::Jwt);
        // Nothing remembered: each request is checked against the current key set.
        c.auth.cache_ttl = std::time::Duration::ZERO;
        c.auth.jwt = Some(JwtConfig {
            jwks_url: Some(url),
            issuer: "https://idp.test".to_owned(),
            audience: "weir-api".to_owned(),
            refresh_interval: std::time::Duration::from_secs(1),
            ..JwtConfig::default()
        });
    })
    .await;
    assert!(jwks.fetches.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let old = token(&good(), "signing-key.pem");
    let (status, body) = place(&s, Some(&old), "u-1").await;
    assert_eq!(status, 201, "{body}");

    // The identity provider rotates to a new key (kid test-2) and drops the old one.
    let mut new_header = Header::new(Algorithm::EdDSA);
    new_header.kid = Some("test-2".to_owned());
    let pem = std::fs::read(fixture("other-key.pem")).unwrap();
    let new = jsonwebtoken::encode(
        &new_header,
        &good(),
        &EncodingKey::from_ed_pem(&pem).unwrap(),
    )
    .unwrap();
    let (status, _) = place(&s, Some(&new), "u-2").await;
    assert_eq!(status, 401, "a key not yet published is refused");
    *jwks.body.lock().unwrap() = std::fs::read_to_string(fixture("rotated-jwks.json")).unwrap();
    // Picked up by the periodic refresh (every second here): bounded polling.
    let mut accepted = false;
    for i in 0..100 {
        if place(&s, Some(&new), &format!("u-3-{i}")).await.0 == 201 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the rotated key was not picked up within 10 s");
    // The old key left the set: its tokens no longer pass.
    let (status, _) = place(&s, Some(&old), "u-4").await;
    assert_eq!(status, 401);
    s.stop().await;
}
