//! Per-tenant quotas (issue 15): jobs in flight, source minutes per day and bytes stored, each
//! refusing new work with 429, its code and Retry-After, per tenant (overrides included), and a
//! source that would pass the daily minutes failing its job once probed.

mod common;

use std::time::Duration;

use clipmill::config::quotas::TenantQuotas;
use common::server::{KEY_A, KEY_B, TestServer, fixture_url};
use serde_json::json;

const NONE_URL: &str = "http://127.0.0.1:9/none.mp4";

#[tokio::test(flavor = "multi_thread")]
async fn jobs_in_flight_are_limited_per_tenant_and_free_again_when_jobs_end() {
    let server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 200;
        c.server.quotas.jobs_in_flight = 2;
        c.server.quotas.tenants.insert("tenant-b".into(), TenantQuotas { jobs_in_flight: Some(3), ..Default::default() });
    })
    .await;
    let a = [server.create(KEY_A, json!({ "url": NONE_URL })).await, server.create(KEY_A, json!({ "url": NONE_URL })).await];
    let refused = server.post_json(KEY_A, "/api/jobs", &json!({ "url": NONE_URL }).to_string()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_jobs_in_flight", "{body}");
    let batch = server.post_json(KEY_A, "/api/batches", &json!({ "urls": [NONE_URL] }).to_string()).await;
    assert_eq!(batch.status(), 429, "a batch is refused too");

    // Another tenant has its own count, and its own limit.
    for _ in 0..3 {
        server.create(KEY_B, json!({ "url": NONE_URL })).await;
    }
    assert_eq!(server.post_json(KEY_B, "/api/jobs", &json!({ "url": NONE_URL }).to_string()).await.status(), 429);
    let usage = server.get_json(KEY_B, "/api/usage").await;
    assert_eq!(usage["limits"]["jobs_in_flight"], 3, "{usage}");

    for id in &a {
        assert_eq!(server.wait_final(KEY_A, id, Duration::from_secs(30)).await["status"], "succeeded");
    }
    assert_eq!(server.post_json(KEY_A, "/api/jobs", &json!({ "url": NONE_URL }).to_string()).await.status(), 202, "free again");
}

#[tokio::test(flavor = "multi_thread")]
async fn source_minutes_and_bytes_stored_are_counted_and_refuse_past_their_limits() {
    let server = TestServer::start(|c| {
        c.server.quotas.source_minutes_per_day = 1;
        c.server.quotas.tenants.insert("tenant-b".into(), TenantQuotas { source_minutes_per_day: Some(0), bytes_stored: Some(1), ..Default::default() });
    })
    .await;
    let options = json!({ "clips": 1, "min_len": 3, "max_len": 8 });
    let (talk, repeat) = (fixture_url("talk.mp4").await, fixture_url("repeat.mp4").await);

    // Tenant A: a 30 s source fits its minute; a 60 s one would pass it and fails once probed.
    let first = server.create(KEY_A, json!({ "url": talk, "options": options })).await;
    let first = server.wait_final(KEY_A, &first, Duration::from_secs(240)).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert!((first["source_seconds"].as_f64().unwrap() - 30.0).abs() < 1.0, "{first}");
    let second = server.create(KEY_A, json!({ "url": repeat, "options": options })).await;
    let second = server.wait_final(KEY_A, &second, Duration::from_secs(120)).await;
    assert_eq!((second["status"].as_str(), second["error"]["code"].as_str()), (Some("failed"), Some("quota_source_minutes")), "{second}");
    assert_eq!(second["error"]["stage"], "download", "refused before any work on it: {second}");
    let usage = server.get_json(KEY_A, "/api/usage").await;
    let minutes = usage["usage"]["source_minutes_last_24h"].as_f64().unwrap();
    assert!((minutes - 0.5).abs() < 0.02, "only the source taken on counts: {usage}");

    // Tenant B: no minutes limit, but one byte of storage: its first clips pass it.
    let stored = server.create(KEY_B, json!({ "url": talk, "options": options })).await;
    let stored = server.wait_final(KEY_B, &stored, Duration::from_secs(240)).await;
    assert_eq!(stored["status"], "succeeded", "{stored}");
    assert!(stored["bytes_stored"].as_u64().unwrap() > 10_000, "the clip and its sidecars are counted: {stored}");
    let refused = server.post_json(KEY_B, "/api/jobs", &json!({ "url": talk }).to_string()).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "3600");
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "quota_bytes_stored");
    // Tenant A's storage is its own.
    assert_eq!(server.get_json(KEY_A, "/api/usage").await["usage"]["bytes_stored"], first["bytes_stored"]);
}
