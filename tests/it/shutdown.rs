//! Health latches and the in-process drain: taking an instance out of rotation through the
//! admin API (bearer token), readiness failing while draining, and the pre-stop delay during
//! which the listeners still serve. Process-level shutdown (signals, exit codes, kill -9) is
//! in `host/tests/process/chaos.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, TestServer, check, eventually, order_body};

const TOKEN: &str = "admin-token-for-rotation-tests";

#[tokio::test]
async fn operators_take_an_instance_out_of_rotation_and_back() {
    let s = TestServer::start(Backend::Sqlite, |c, _| {
        c.admin_token = Some(weir_host::server::config::Secret::new(TOKEN));
    })
    .await;
    let (status, ready) = s.ops_get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(check(&ready, "in_rotation")["ok"], true);
    assert_eq!(check(&ready, "draining")["ok"], true);

    let rotation = format!("{}/admin/rotation", s.ops);
    // Without the token, or with a wrong one: 401 with a challenge; nothing changes.
    for auth in [None, Some("not-the-admin-token-at-all")] {
        let mut req = s.client.put(&rotation).json(&json!({"in_rotation": false}));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "ADMIN_UNAUTHORIZED");
    }
    assert_eq!(s.ops_get("/readyz").await.0, 200);

    // Out of rotation: readiness fails, liveness stays, the API still serves.
    let r = s
        .client
        .put(&rotation)
        .bearer_auth(TOKEN)
        .json(&json!({"in_rotation": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"in_rotation": false, "draining": false, "previous": true})
    );
    let (status, ready) = s.ops_get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(check(&ready, "in_rotation")["ok"], false);
    assert_eq!(s.ops_get("/livez").await.0, 200);
    let (status, _, _) = s
        .post_order(
            Some("out-of-rotation"),
            &order_body("cus_rotation", &[("CB-004", 1)]),
        )
        .await;
    assert_eq!(status, 201, "requests that still arrive are served");
    let r = s
        .client
        .get(&rotation)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["in_rotation"], false);

    // Back in rotation.
    let r = s
        .client
        .put(&rotation)
        .bearer_auth(TOKEN)
        .json(&json!({"in_rotation": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.ops_get("/readyz").await.0, 200);
    let (_, info) = s.ops_get("/infoz").await;
    assert_eq!(info["features"]["admin_api"], true, "{info}");
    assert_eq!(info["shutdown"]["in_rotation"], true, "{info}");
    assert_eq!(info["shutdown"]["draining"], false, "{info}");
    assert!(
        info["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "retention.idempotency_keys"),
        "the purge runs on the worker supervisor: {info}"
    );
    s.stop().await;
}

#[tokio::test]
async fn admin_endpoints_are_disabled_without_a_token() {
    let s = TestServer::start(Backend::Sqlite, |_, _| {}).await;
    let r = s
        .client
        .put(format!("{}/admin/rotation", s.ops))
        .bearer_auth("anything-at-all-0123456789")
        .json(&json!({"in_rotation": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "ADMIN_DISABLED");
    assert_eq!(s.ops_get("/readyz").await.0, 200, "nothing changed");
    s.stop().await;
}

#[tokio::test]
async fn readiness_fails_at_once_while_listeners_serve_through_the_pre_stop_delay() {
    let mut s = TestServer::start(Backend::Sqlite, |c, _| {
        // Long enough to observe; the test ends the drain itself (no timing assertion).
        c.shutdown.pre_stop_delay = Duration::from_secs(600);
        c.shutdown.drain_deadline = Duration::from_secs(1200);
    })
    .await;
    let state = s.state().clone();
    let server = s.server.take().expect("running");
    let drain = tokio::spawn(server.drain());
    // Bounded polling: the drain task sets the latch as its first step.
    let latch = &state.shutdown;
    eventually(
        "the drain started",
        500,
        Duration::from_millis(10),
        || async move { latch.is_draining() },
    )
    .await;
    let (status, ready) = s.ops_get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(check(&ready, "draining")["ok"], false);
    assert_eq!(s.ops_get("/livez").await.0, 200, "liveness is unaffected");
    assert_eq!(s.ops_get("/infoz").await.1["shutdown"]["draining"], true);
    // During the pre-stop delay the API still admits and serves requests.
    let (status, _, _) = s
        .post_order(
            Some("during-pre-stop"),
            &order_body("cus_prestop", &[("CB-004", 1)]),
        )
        .await;
    assert_eq!(status, 201);
    drain.abort();
    state.store.close().await;
}
