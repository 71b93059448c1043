//! Connection and request hardening of the real binary over loopback (issue 14): trickling
//! bodies and partial request heads do not starve normal clients, the connection cap and the
//! header-read, idle and head-size limits hold, the operations listener keeps answering, and
//! HTTP/2 is not served.
//!
//! Every wait is for an event (a response, an EOF, a metric reaching a value), bounded by
//! [`WAIT`]; nothing asserts how fast anything was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{POLL, WAIT, Weir, client, order_body, serve};

/// Start `weir serve` with `toml` as its configuration file.
async fn start(toml: &str) -> Weir {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, toml).expect("write the config");
    let mut cmd = serve(&dir.path().join("data"));
    cmd.arg("--config").arg(&config);
    Weir::spawn_in(cmd, Some(dir)).await
}

/// `host:port` of an `http://` address.
fn authority(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// The sum of the samples of the Prometheus metric `name` whose labels contain every one of
/// `labels` (`key="value"`), from the operations listener's `/metrics`.
async fn metric(weir: &Weir, name: &str, labels: &[&str]) -> f64 {
    let text = client()
        .get(format!("{}/metrics", weir.ops))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Wait (bounded) until `metric` satisfies `pred`; returns the value seen.
async fn wait_metric(
    weir: &Weir,
    name: &str,
    labels: &[&str],
    what: &str,
    pred: impl Fn(f64) -> bool,
) -> f64 {
    let started = tokio::time::Instant::now();
    loop {
        let v = metric(weir, name, labels).await;
        if pred(v) {
            return v;
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for {what}: {name}{labels:?} = {v}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Read until the server closes the connection (bounded); the bytes read.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => out,
        // A reset after the response counts as closed too.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Ok(Err(e)) => panic!("read failed: {e}"),
        Err(_) => panic!(
            "the server did not close the connection within {WAIT:?}; read so far: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// One connection sending the head of `POST /v1/orders` with `Content-Length: 60000`, then
/// two bytes every half second until the server answers; returns what the server sent.
async fn trickle(api: String, i: usize) -> String {
    let stream = TcpStream::connect(&api).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST /v1/orders HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Idempotency-Key: trickle-{i}\r\nContent-Length: 60000\r\n\r\n{{"
    );
    wr.write_all(head.as_bytes()).await.expect("send the head");
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            // Whitespace is valid JSON: the body stays well-formed as far as it goes.
            if wr.write_all(b"  ").await.is_err() {
                return;
            }
        }
    });
    let response = read_until_closed(&mut rd).await;
    writer.abort();
    String::from_utf8_lossy(&response).into_owned()
}

/// The problem `code` of a raw HTTP/1.1 response.
fn problem_code(response: &str) -> Option<String> {
    let body = response.split_once("\r\n\r\n")?.1;
    let v: Value = serde_json::from_str(body).ok()?;
    v["code"].as_str().map(str::to_owned)
}

const FLOOD_CONFIG: &str = r#"
[http]
# The trickles are cut by the deadline alone (the minimum rate has its own unit tests).
body_timeout_ms = 10000
body_min_bytes_per_sec = 0

[http.api]
max_connections = 3000
header_read_timeout_ms = 4000
idle_timeout_ms = 4000
"#;

/// 300 trickling bodies and 2,000 partial heads open: normal clients still get 201, the
/// trickles get `408 REQUEST_BODY_TIMEOUT`, the partial heads are closed by the header
/// timeout, `/livez` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_and_partial_heads_do_not_starve_normal_clients() {
    const TRICKLES: usize = 300;
    const PARTIAL_HEADS: usize = 2000;
    let weir = start(FLOOD_CONFIG).await;
    let api = authority(&weir.api).to_owned();

    // `/livez` on the operations listener, probed on fresh connections throughout.
    let probes = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let probe = {
        let (probes, url) = (probes.clone(), format!("{}/livez", weir.ops));
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(WAIT)
            .build()
            .expect("client");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let ok = matches!(fresh.get(&url).send().await, Ok(r) if r.status() == 200);
                let counter = if ok { &probes.0 } else { &probes.1 };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // The attack: every trickle's head sent and its body being read, then the partial heads.
    let mut trickles = JoinSet::new();
    for i in 0..TRICKLES {
        trickles.spawn(trickle(api.clone(), i));
    }
    let started = tokio::time::Instant::now();
    loop {
        if let Some(answered) = trickles.try_join_next() {
            panic!(
                "a trickling body was answered before its deadline: {:?}",
                answered.expect("trickle")
            );
        }
        let reading = metric(
            &weir,
            "weir_http_server_body_reads_active",
            &[r#"http_route="/v1/orders""#],
        )
        .await;
        if reading >= TRICKLES as f64 {
            assert_eq!(reading, TRICKLES as f64);
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "timed out waiting for the trickling bodies to be read: {reading} being read"
        );
        tokio::time::sleep(POLL).await;
    }
    let mut partial = Vec::with_capacity(PARTIAL_HEADS);
    for _ in 0..PARTIAL_HEADS {
        let mut s = TcpStream::connect(&api).await.expect("connect");
        s.write_all(b"GET /v1/orders HTTP/1.1\r\nHost: x\r\nX-Wait: ")
            .await
            .expect("send half a head");
        partial.push(s);
    }
    // Accepted: open, or already closed by the header timeout on a slow machine (then the
    // attack is weaker, never absent: the trickles are checked below).
    let started = tokio::time::Instant::now();
    let open_at_start = loop {
        let open = metric(&weir, "weir_http_connections_open", &[r#"listener="api""#]).await;
        let timed_out = metric(
            &weir,
            "weir_http_connections_closed_total",
            &[r#"listener="api""#, r#"reason="header_timeout""#],
        )
        .await;
        if open + timed_out >= (TRICKLES + PARTIAL_HEADS) as f64 {
            break open;
        }
        assert!(
            started.elapsed() < WAIT,
            "the partial heads were not accepted: {open} open, {timed_out} timed out"
        );
        tokio::time::sleep(POLL).await;
    };
    eprintln!("API connections open when the normal clients start: {open_at_start}");

    // Normal clients while the attack is in place.
    let normal = client();
    let mut orders = JoinSet::new();
    for i in 0..20 {
        let (normal, url) = (normal.clone(), format!("{}/v1/orders", weir.api));
        orders.spawn(async move {
            let res = normal
                .post(url)
                .header("Idempotency-Key", format!("normal-{i}"))
                .json(&order_body(&format!("cus_edge{i:03}"), "CB-004"))
                .send()
                .await
                .expect("POST /v1/orders");
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        });
    }
    while let Some(joined) = orders.join_next().await {
        let (status, body) = joined.expect("normal client");
        assert_eq!(
            status, 201,
            "a normal client under attack got {status}: {body}"
        );
    }
    // The trickles were still being read when the last normal order was placed.
    assert_eq!(
        metric(
            &weir,
            "weir_http_server_body_reads_active",
            &[r#"http_route="/v1/orders""#]
        )
        .await,
        TRICKLES as f64,
        "the trickling bodies must still hold their connections after the normal requests"
    );

    // The partial heads are closed by the header-read timeout, without a response.
    for mut s in partial {
        let answered = read_until_closed(&mut s).await;
        assert!(
            answered.is_empty(),
            "a partial head got an answer: {:?}",
            String::from_utf8_lossy(&answered)
        );
    }
    let timed_out = metric(
        &weir,
        "weir_http_connections_closed_total",
        &[r#"listener="api""#, r#"reason="header_timeout""#],
    )
    .await;
    assert!(
        timed_out >= PARTIAL_HEADS as f64,
        "{timed_out} header timeouts counted"
    );

    // The trickles get 408 REQUEST_BODY_TIMEOUT and the connection is closed.
    while let Some(joined) = trickles.join_next().await {
        let response = joined.expect("trickle");
        assert!(
            response.starts_with("HTTP/1.1 408"),
            "a trickling body got {response:?}"
        );
        assert_eq!(
            problem_code(&response).as_deref(),
            Some("REQUEST_BODY_TIMEOUT"),
            "{response}"
        );
    }
    let refused = wait_metric(
        &weir,
        "weir_http_server_rejections_total",
        &[r#"policy="body_timeout""#],
        "the body timeouts counted",
        |v| v >= TRICKLES as f64,
    )
    .await;
    assert_eq!(refused, TRICKLES as f64);

    probe.abort();
    let (ok, failed) = (
        probes.0.load(Ordering::SeqCst),
        probes.1.load(Ordering::SeqCst),
    );
    assert_eq!(failed, 0, "/livez failed {failed} times ({ok} answered)");
    assert!(ok > 0, "/livez was never probed");
    weir.kill9().await;
}

const CAP_CONFIG: &str = r#"
[http.api]
max_connections = 20
header_read_timeout_ms = 30000
idle_timeout_ms = 1000
max_header_bytes = 8192
"#;

/// The connection cap closes connection N+1 at once and counts it, the operations listener
/// answers while the API listener is full; an idle kept-alive connection is closed after the
/// idle timeout; an oversized head gets 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_idle_timeout_and_head_size_hold() {
    let weir = start(CAP_CONFIG).await;
    let api = authority(&weir.api).to_owned();

    // Idle: one request answered, then the server closes the kept-alive connection.
    let mut s = TcpStream::connect(&api).await.expect("connect");
    s.write_all(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let response = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    wait_metric(
        &weir,
        "weir_http_connections_closed_total",
        &[r#"listener="api""#, r#"reason="idle_timeout""#],
        "the idle connection counted",
        |v| v >= 1.0,
    )
    .await;

    // Head size: a head over max_header_bytes gets 431.
    let mut s = TcpStream::connect(&api).await.expect("connect");
    let big = format!(
        "GET /v1/products HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    s.write_all(big.as_bytes()).await.expect("send");
    let response = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");

    // The cap: 20 connections holding half a head (the header timeout is long; the idle
    // timeout leaves a head in progress alone), then one more.
    wait_metric(
        &weir,
        "weir_http_connections_open",
        &[r#"listener="api""#],
        "no API connection open",
        |v| v == 0.0,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&api).await.expect("connect");
        s.write_all(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("send half a head");
        held.push(s);
    }
    wait_metric(
        &weir,
        "weir_http_connections_open",
        &[r#"listener="api""#],
        "the 20 connections accepted",
        |v| v == 20.0,
    )
    .await;
    // One more, with half a head too: only the cap can close it before the header timeout
    // (30 s) would; it is closed at once, so half that is a generous bound.
    let mut over = TcpStream::connect(&api).await.expect("connect");
    let _ = over
        .write_all(b"GET /v1/products HTTP/1.1\r\nHost: x\r\n")
        .await;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), over.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => assert!(answer.is_empty(), "answered over the cap: {answer:?}"),
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the connection over the cap was not closed"),
    }
    wait_metric(
        &weir,
        "weir_http_connections_refused_total",
        &[r#"listener="api""#],
        "the refused connection counted",
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        metric(&weir, "weir_http_connections_open", &[r#"listener="api""#]).await,
        20.0,
        "the connection over the cap must not have been served"
    );
    // Separate limits: the operations listener still answers.
    for path in ["/livez", "/readyz"] {
        let res = client()
            .get(format!("{}{path}", weir.ops))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} while the API is full: {e}"));
        assert_eq!(res.status(), 200, "{path} while the API listener is full");
    }
    // A slot freed is a slot usable again.
    drop(held.pop());
    wait_metric(
        &weir,
        "weir_http_connections_open",
        &[r#"listener="api""#],
        "the closed connection released",
        |v| v == 19.0,
    )
    .await;
    let res = client()
        .get(format!("{}/v1/products", weir.api))
        .send()
        .await
        .expect("GET /v1/products with a free slot");
    assert_eq!(res.status(), 200);
    drop(held);
    weir.kill9().await;
}

/// The HTTP/2 connection preface (what `curl --http2-prior-knowledge` sends) is not served
/// as HTTP/2 on either listener: the binary speaks HTTP/1.x only, even built with the
/// workspace's features (this test's build unifies tonic's HTTP/2 server into hyper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_is_not_served() {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let weir = start("").await;
    for url in [&weir.api, &weir.ops] {
        let mut s = TcpStream::connect(authority(url)).await.expect("connect");
        s.write_all(PREFACE).await.expect("send the preface");
        s.write_all(SETTINGS).await.expect("send SETTINGS");
        // An HTTP/2 server answers with its own SETTINGS frame (type 4 in byte 3) and keeps
        // the connection open: look at the first bytes, then expect the close.
        let mut first = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut first))
            .await
            .expect("an answer or a close")
            .unwrap_or(0);
        assert!(
            n == 0 || first[..n].starts_with(b"HTTP/1.1 "),
            "{url} answered the HTTP/2 preface with {:?}",
            &first[..n]
        );
        read_until_closed(&mut s).await;
    }
    // HTTP/1.1 on both listeners works.
    let livez = client()
        .get(format!("{}/livez", weir.ops))
        .send()
        .await
        .expect("GET /livez");
    assert_eq!(livez.status(), 200);
    let res = client()
        .get(format!("{}/v1/products", weir.api))
        .send()
        .await
        .expect("GET /v1/products");
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(res.status(), 200);
    weir.kill9().await;
}
