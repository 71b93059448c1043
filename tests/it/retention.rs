//! Data retention end to end: the supervised workers of a running server delete expired
//! events in batches, the events feed tells a reader whose cursor fell behind, and the
//! catalog pages like the orders list.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{Backend, TestServer, eventually, metric, order_body};

/// Without a broker (the embedded default) events expire by age: the worker deletes them, a
/// reader with a cursor below the deleted ones gets `410 EVENTS_CURSOR_EXPIRED` naming the seq
/// to continue from, a reader without a cursor is told to continue after the gap, and the
/// deletion shows in the retention metrics.
async fn expired_events_leave_the_feed_and_readers_are_told(backend: Backend) {
    let s = TestServer::start(backend, |c, _| {
        c.retention.interval = Duration::from_secs(1);
        c.retention.events = Duration::from_secs(1);
        c.retention.batch_size = 2;
        c.retention.batch_pause = Duration::from_millis(1);
    })
    .await;
    for i in 0..3 {
        let body = order_body("cus_retention", &[("KB-001", 1)]);
        let (status, _, order) = s.post_order(Some(&format!("ret-{i}")), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    // Three events in three transactions; the workers' clock decides when they go.
    let next_after = AtomicI64::new(0);
    eventually(
        "the retention worker deleted every event",
        60,
        Duration::from_millis(250),
        || async {
            let (status, page) = s.get("/v1/events").await;
            assert_eq!(status, 200, "{page}");
            let next = page["next_after"].as_i64().unwrap();
            next_after.store(next, Ordering::Relaxed);
            page["items"].as_array().unwrap().is_empty() && next >= 3
        },
    )
    .await;
    let gap = next_after.load(Ordering::Relaxed);
    let metrics = s.metrics().await;
    assert!(
        metric(
            &metrics,
            "weir_retention_deleted_total",
            &[("record", "outbox_events")]
        ) >= 3.0,
        "{metrics}"
    );
    // Batches of 2: at least one run needed more than one batch.
    assert!(
        metric(
            &metrics,
            "weir_retention_batch_duration_seconds_count",
            &[("record", "outbox_events")]
        ) >= 2.0
    );

    let (status, problem) = s.get("/v1/events?after=0").await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "EVENTS_CURSOR_EXPIRED");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("after={gap}")),
        "{problem}"
    );
    let (status, page) = s.get(&format!("/v1/events?after={gap}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["next_after"], gap);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_leave_the_feed_sqlite() {
    expired_events_leave_the_feed_and_readers_are_told(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_events_leave_the_feed_postgres() {
    expired_events_leave_the_feed_and_readers_are_told(Backend::Postgres).await;
}

/// `GET /v1/products` pages by sku: every product exactly once, in order, `next_cursor`
/// absent on the last page; bad cursors and limits are typed 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_is_paginated_like_orders() {
    let s = TestServer::start(Backend::Sqlite, |_, _| {}).await;
    for i in 0..7 {
        let res = s
            .client
            .put(format!("{}/v1/products/PG-{i:03}", s.base))
            .json(&serde_json::json!({
                "name": format!("Paged {i}"), "unit_price": 100, "currency": "EUR", "stock": 1
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let (_, all) = s.get("/v1/products?limit=200").await;
    let all: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap().to_owned())
        .collect();
    assert!(all.len() >= 7 && all.is_sorted(), "{all:?}");

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/products?limit=3&cursor={c}"),
            None => "/v1/products?limit=3".to_owned(),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        paged.extend(items.iter().map(|p| p["sku"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(paged, all);
    assert_eq!(pages, all.len().div_ceil(3));

    for (path, code) in [
        ("/v1/products?cursor=garbage", "INVALID_CURSOR"),
        ("/v1/products?cursor=o1.00", "INVALID_CURSOR"),
        ("/v1/products?limit=0", "INVALID_QUERY_PARAMETER"),
        ("/v1/products?limit=201", "INVALID_QUERY_PARAMETER"),
        ("/v1/products?page=2", "INVALID_QUERY_PARAMETER"),
    ] {
        let (status, problem) = s.get(path).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some(code)),
            "{path}: {problem}"
        );
    }
    s.stop().await;
}
