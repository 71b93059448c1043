//! Authentication through the real binary: a key created with `weir apikey create` works at
//! once, revoking it with `weir apikey revoke` stops it, an API bound to a non-loopback
//! address without an authentication mode refuses to start naming `auth.mode`, and the
//! loopback default logs that authentication is off.

use serde_json::Value;

use crate::support::{Weir, client, message, order_body, serve, weir_command};

const TOKEN: &str = "admin-token-for-process-auth";

/// `weir apikey <args>` against `ops` with the admin token: exit success and stdout.
async fn apikey(ops: &str, args: &[&str]) -> (bool, String) {
    let out = weir_command()
        .arg("apikey")
        .args(args)
        .env("WEIR_ADMIN_URL", ops)
        .env("WEIR_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .expect("run weir apikey");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn place(w: &Weir, key: Option<&str>, idem: &str) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}/v1/orders", w.api))
        .header("Idempotency-Key", idem)
        .json(&order_body("cus_cli", "KB-001"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.expect("POST /v1/orders");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_key_created_with_the_cli_works_at_once_and_revoking_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    cmd.env("WEIR__AUTH__MODE", "api_keys")
        .env("WEIR_ADMIN_TOKEN", TOKEN);
    let w = Weir::spawn(cmd).await;
    assert_eq!(place(&w, None, "c-0").await.0, 401);

    let (ok, out) = apikey(
        &w.ops,
        &[
            "create",
            "--tenant",
            "acme",
            "--name",
            "cli",
            "--scope",
            "orders:write",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let created: Value = serde_json::from_str(&out).expect("--json output");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("weir_"), "{created}");

    let (status, body) = place(&w, Some(&key), "c-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "acme");

    let (ok, listed) = apikey(&w.ops, &["list", "--tenant", "acme"]).await;
    assert!(
        ok && listed.contains(&id) && listed.contains("active"),
        "{listed}"
    );
    assert!(
        !listed.contains(&key[22..]),
        "the secret is never listed: {listed}"
    );

    let (ok, out) = apikey(&w.ops, &["revoke", &id]).await;
    assert!(ok && out.contains("revoked"), "{out}");
    let (status, body) = place(&w, Some(&key), "c-2").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );

    // The key text never reached the service's log.
    let (_, log) = w.terminate().await;
    assert!(
        !log.iter().any(|l| l.contains(&key[22..])),
        "the key was logged"
    );
}

#[tokio::test]
async fn a_non_loopback_api_without_an_auth_mode_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = weir_command()
        .arg("serve")
        .args(["--listen", "0.0.0.0:0", "--ops-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.mode") && stderr.contains("not loopback"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_loopback_default_serves_the_default_tenant_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::spawn(serve(dir.path())).await;
    let (status, body) = place(&w, None, "o-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["tenant"], "default");
    let warnings: Vec<_> = w
        .log()
        .into_iter()
        .filter(|l| message(l).starts_with("authentication is off"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning at start-up");
    w.terminate().await;
}
