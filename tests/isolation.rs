//! Tenants never see or touch each other's work: every route that takes an id answers another
//! tenant's key as if the id did not exist (404, or 400 `unknown_upload` for a job's upload),
//! listings and event streams (WebSockets) carry only the caller's own jobs, and nothing another
//! tenant tried changed anything.

mod common;

use std::time::Duration;

use common::server::{KEY_A, KEY_B, Msg, TestServer};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_key_finds_nothing_on_any_route() {
    let server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 200;
        c.server.batches.max_in_flight = 1;
    })
    .await;
    let mut b_events = server.ws(&format!("/api/events?api_key={KEY_B}")).await;
    assert_eq!(b_events.json(Duration::from_secs(10)).await["jobs"], json!([]), "b's snapshot is empty");

    // Tenant A's work: a job, a batch, a finished upload and one in progress.
    let job = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/a.mp4" })).await;
    let created: Value = server.post_json(KEY_A, "/api/batches", &json!({ "urls": ["http://127.0.0.1:9/b.mp4", "http://127.0.0.1:9/c.mp4"] }).to_string()).await.json().await.unwrap();
    let batch = created["id"].as_str().unwrap().to_string();
    let upload: Value = server.http.post(server.url("/api/uploads")).bearer_auth(KEY_A).body(vec![7u8; 64]).send().await.unwrap().json().await.unwrap();
    let upload = upload["upload_id"].as_str().unwrap().to_string();
    let tus = server.http.post(server.url("/api/uploads/tus")).bearer_auth(KEY_A).header("tus-resumable", "1.0.0").header("upload-length", 10).send().await.unwrap();
    let tus = tus.headers()["location"].to_str().unwrap().to_string();

    let tus_req = |method: reqwest::Method| server.http.request(method, server.url(&tus)).bearer_auth(KEY_B).header("tus-resumable", "1.0.0");
    let statuses = [
        ("GET job", server.get(KEY_B, &format!("/api/jobs/{job}")).await.status()),
        ("GET result", server.get(KEY_B, &format!("/api/jobs/{job}/result")).await.status()),
        ("DELETE job", server.http.delete(server.url(&format!("/api/jobs/{job}"))).bearer_auth(KEY_B).send().await.unwrap().status()),
        ("GET batch", server.get(KEY_B, &format!("/api/batches/{batch}")).await.status()),
        ("DELETE batch", server.http.delete(server.url(&format!("/api/batches/{batch}"))).bearer_auth(KEY_B).send().await.unwrap().status()),
        ("HEAD tus", tus_req(reqwest::Method::HEAD).send().await.unwrap().status()),
        ("PATCH tus", tus_req(reqwest::Method::PATCH).header("upload-offset", 0).header("content-type", "application/offset+octet-stream").body(vec![1u8; 10]).send().await.unwrap().status()),
        ("DELETE tus", tus_req(reqwest::Method::DELETE).send().await.unwrap().status()),
    ];
    for (route, status) in statuses {
        assert_eq!(status, 404, "{route} with another tenant's key");
    }
    // Event streams of A's job and batch: refused before the upgrade.
    for path in [format!("/api/jobs/{job}/events"), format!("/api/batches/{batch}/events")] {
        let resp = server.http.get(server.url(&path)).bearer_auth(KEY_B).header("upgrade", "websocket").header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==").header("sec-websocket-version", "13").send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} with another tenant's key");
    }
    let borrowed = server.post_json(KEY_B, "/api/jobs", &json!({ "upload_id": upload }).to_string()).await;
    assert_eq!(borrowed.status(), 400);
    assert_eq!(borrowed.json::<Value>().await.unwrap()["error"]["code"], "unknown_upload", "another tenant's upload is no source");
    assert_eq!(server.get_json(KEY_B, "/api/jobs").await["jobs"], json!([]), "b lists none of a's jobs");

    // Nothing b tried changed a's work, and b's stream never carried a's events.
    let done = server.wait_final(KEY_A, &job, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "a's job ran on: {done}");
    let a_batch = server.get_json(KEY_A, &format!("/api/batches/{batch}")).await;
    assert!(a_batch["counts"].get("cancelled").is_none(), "{a_batch}");
    let head = server.http.head(server.url(&tus)).bearer_auth(KEY_A).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.status(), 200, "a's upload in progress is still there");
    let own = server.create(KEY_B, json!({ "url": "http://127.0.0.1:9/own.mp4" })).await;
    loop {
        match b_events.next(Duration::from_secs(30)).await {
            Msg::Json(event) => {
                assert_eq!(event["job"], own.as_str(), "b's stream carries b's jobs only: {event}");
                if event["type"] == "job_done" {
                    break;
                }
            }
            Msg::Closed(code, reason) => panic!("b's stream closed: {code} {reason}"),
        }
    }
}
