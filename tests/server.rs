//! The server as a client uses it: real jobs on the generated talk over HTTP and WebSocket,
//! cancellation, backpressure, tenant isolation, signed URLs and bad input.

mod common;

use std::time::Duration;

use common::server::{JobEvents, KEY_A, KEY_B, Msg, TestServer, fixture_url, follow_job, talk_url};
use fastwebsockets::{Frame, OpCode, Payload};
use serde_json::json;

const STAGES: [&str; 7] = ["download", "audio", "transcribe", "score", "faces", "render", "upload"];

#[tokio::test(flavor = "multi_thread")]
async fn a_job_streams_its_stages_and_clips_and_the_clips_download() {
    let server = TestServer::start(|_| {}).await;
    let url = talk_url().await;
    let (hook, deliveries) = common::http::serve_recording().await;
    let options = json!({ "clips": 2, "min_len": 5, "max_len": 9, "webhook": format!("http://{hook}/hook") });
    // The tenant's stream is open before the job exists, so even its first event cannot be missed.
    let mut all = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(all.json(Duration::from_secs(10)).await["jobs"], json!([]), "an empty snapshot first");
    let id = server.create(KEY_A, json!({ "url": url, "options": options })).await;
    let mut ws = server.ws(&format!("/api/jobs/{id}/events?api_key={KEY_A}")).await;
    let snapshot = ws.json(Duration::from_secs(10)).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["jobs"][0]["id"], id.as_str());
    drop(ws);

    let JobEvents { started, clips, timeline, last_id } = follow_job(&mut all, &id, Duration::from_secs(240)).await;
    assert_eq!(started, STAGES, "every stage, in order");
    // The faces stage frames the first clip and hands the job on; the render frames the second
    // while it makes the first, so the first clip is out before the faces stage is done.
    let at = |event: &str| timeline.iter().position(|e| e == event).unwrap_or_else(|| panic!("no {event} in {timeline:?}"));
    assert!(at("stage_started render") < at("stage_finished faces"), "{timeline:?}");
    assert!(at("clip_ready") < at("stage_finished faces"), "{timeline:?}");
    assert!(at("stage_finished faces") < at("stage_finished render"), "{timeline:?}");
    assert_eq!(clips.len(), 2, "one clip_ready per clip");
    assert_ne!(clips[0]["clip"]["index"], clips[1]["clip"]["index"]);

    let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["status"], "succeeded");
    assert!(job["stages"].as_array().unwrap().iter().all(|s| s["status"] == "done"), "{job}");
    let result = server.get_json(KEY_A, &format!("/api/jobs/{id}/result")).await;
    let first = &result["clips"][0]["urls"];
    let mp4 = server.http.get(first["mp4"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(mp4.status(), 200);
    assert_eq!(mp4.headers()["content-type"], "video/mp4");
    let bytes = mp4.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");
    let vtt = server.http.get(first["vtt"].as_str().unwrap_or_else(|| panic!("no vtt url: {result}"))).send().await.unwrap().text().await.unwrap();
    assert!(vtt.starts_with("WEBVTT"));

    // Signed URLs: a tampered signature and an expired link are refused.
    let tampered = first["mp4"].as_str().unwrap().replace("sig=", "sig=00");
    assert_eq!(server.http.get(tampered).send().await.unwrap().status(), 403);
    let key = result["clips"][0]["urls"]["mp4"].as_str().unwrap().split("/blobs/").nth(1).unwrap().split('?').next().unwrap().to_string();
    let ctx = &server.server.as_ref().unwrap().ctx;
    let expired = ctx.blobs.local().expect("local blobs").sign(&key, 1);
    let resp = server.http.get(expired).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("\"expired\""));

    // Reconnecting with the last id seen resumes without a gap: nothing is missed or repeated.
    let mut again = server.ws(&format!("/api/jobs/{id}/events?api_key={KEY_A}&last_id={}", last_id - 3)).await;
    let replayed: Vec<u64> = vec![
        again.json(Duration::from_secs(5)).await["id"].as_u64().unwrap(),
        again.json(Duration::from_secs(5)).await["id"].as_u64().unwrap(),
        again.json(Duration::from_secs(5)).await["id"].as_u64().unwrap(),
    ];
    assert_eq!(replayed, [last_id - 2, last_id - 1, last_id]);

    // Tenant isolation: tenant B sees nothing of tenant A's job.
    for path in [format!("/api/jobs/{id}"), format!("/api/jobs/{id}/result")] {
        assert_eq!(server.get(KEY_B, &path).await.status(), 404, "{path}");
    }
    let delete = server.http.delete(server.url(&format!("/api/jobs/{id}"))).bearer_auth(KEY_B).send().await.unwrap();
    assert_eq!(delete.status(), 404);
    assert_eq!(server.get_json(KEY_B, "/api/jobs").await["jobs"], json!([]));
    assert_eq!(server.get_json(KEY_A, "/api/jobs?status=succeeded").await["jobs"][0]["id"], id.as_str());

    // Webhooks: one per clip and one at the end, each signed with the server's secret.
    let secret = std::fs::read(server.dir.path().join("data/secret")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while deliveries.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = deliveries.lock().unwrap().clone();
    let kinds: Vec<String> = deliveries.iter().map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap()["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["clip_ready", "clip_ready", "job_finished"]);
    let mut ids = std::collections::HashSet::new();
    for (headers, body) in &deliveries {
        assert_eq!(headers["x-clipmill-signature"], clipmill::egress::webhook::signature(&secret, body).as_str());
        // An idempotency id per event, for receivers to drop a repeat.
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        let expected = match body["clip"]["index"].as_u64() {
            Some(index) => format!("{id}/clip_ready/{index}"),
            None => format!("{id}/job_finished"),
        };
        assert_eq!(headers["x-clipmill-delivery"], expected.as_str());
        ids.insert(expected);
    }
    assert_eq!(ids.len(), 3, "one id per event");

    let metrics = server.get(KEY_A, "/metrics").await.text().await.unwrap();
    for name in ["clipmill_stage_queue_depth", "clipmill_stage_wait_seconds", "clipmill_stage_duration_seconds", "clipmill_jobs_in_flight"] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }

    // What the job used, by stage, and its cost per hour of source: in the result, the job and
    // /metrics, the same figures.
    let (usage, cost) = (&result["usage"], &result["cost"]);
    for stage in ["transcribe", "faces", "render"] {
        assert!(usage[stage]["cpu_s"].as_f64().unwrap() > 0.0, "{stage}: {usage}");
    }
    let total: f64 = usage.as_object().unwrap().values().map(|u| u["cpu_s"].as_f64().unwrap()).sum();
    assert!((cost["cpu_s"].as_f64().unwrap() - total).abs() < 0.01, "{cost} vs {usage}");
    assert_eq!(job["cost"], *cost);
    assert_eq!(cost["gpu_s"], 0.0, "no GPU here");
    let sample = |name: &str| clipmill::metrics::sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in {metrics}"));
    assert!(sample(r#"clipmill_stage_cpu_seconds_total{stage="render"}"#) >= usage["render"]["cpu_s"].as_f64().unwrap() - 0.01);
    let per_hour = sample("clipmill_cost_per_source_hour_usd");
    assert!((per_hour / cost["usd_per_source_hour"].as_f64().unwrap() - 1.0).abs() < 0.02, "{per_hour} vs {cost}");
}

/// Harder sources over the API: a video without audio is clipped from the picture without
/// captions, and a file cut short is clipped from its readable part, which the job reports.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_on_silent_and_cut_short_sources_succeed_and_say_what_they_did() {
    let server = TestServer::start(|_| {}).await;
    let mut all = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(all.json(Duration::from_secs(10)).await["jobs"], json!([]));
    let options = json!({ "clips": 1, "min_len": 3, "max_len": 6 });
    let broll = server.create(KEY_A, json!({ "url": fixture_url("broll.mp4").await, "options": options })).await;
    follow_job(&mut all, &broll, Duration::from_secs(240)).await;
    let cut = server.create(KEY_A, json!({ "url": fixture_url("cutshort.mp4").await, "options": options })).await;
    follow_job(&mut all, &cut, Duration::from_secs(240)).await;

    let job = server.get_json(KEY_A, &format!("/api/jobs/{broll}")).await;
    assert!(job["fallbacks"].to_string().contains("no audio track"), "{job}");
    let result = server.get_json(KEY_A, &format!("/api/jobs/{broll}/result")).await;
    assert_eq!(result["clips"].as_array().unwrap().len(), 1);
    assert!(result["clips"][0]["urls"]["srt"].is_null(), "no captions without speech: {result}");

    let result = server.get_json(KEY_A, &format!("/api/jobs/{cut}/result")).await;
    let readable = result["source_truncated"]["readable_s"].as_f64().unwrap_or_else(|| panic!("not reported: {result}"));
    assert!((33.0..=36.0).contains(&readable) && result["source_truncated"]["declared_s"].as_f64().unwrap() > 89.0, "{result}");
    assert!(result["clips"][0]["end"].as_f64().unwrap() <= readable);
}

/// An event announces a change the job's record already holds: a client that reads the job when
/// a stage is announced finished sees that stage done. `/metrics` counts the watcher and its writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_is_announced_finished_once_the_job_record_says_so() {
    let server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 20;
    })
    .await;
    let mut ws = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(ws.json(Duration::from_secs(10)).await["type"], "snapshot");
    assert_eq!(server.metric("clipmill_ws_sessions").await, Some(1.0));
    let id = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    let mut finished = vec![];
    let mut events = 0.0;
    loop {
        let event = ws.json(Duration::from_secs(30)).await;
        events += 1.0;
        match event["type"].as_str().unwrap() {
            "stage_finished" => {
                let stage = event["stage"].as_str().unwrap().to_string();
                let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
                let state = job["stages"].as_array().unwrap().iter().find(|s| s["stage"] == stage.as_str()).cloned();
                assert_eq!(state.map(|s| s["status"].clone()), Some(json!("done")), "{stage} was announced finished: {job}");
                finished.push(stage);
            }
            "job_done" => break,
            "job_failed" => panic!("job failed: {event}"),
            _ => {}
        }
    }
    assert_eq!(finished, STAGES, "every stage announced finished, in order");
    assert_eq!(server.metric("clipmill_ws_events_total").await, Some(events));
    let writes = server.metric("clipmill_ws_writes_total").await.expect("writes are counted");
    assert!((1.0..=events).contains(&writes), "{writes} writes for {events} events");
}

/// The stage watchdog: a stage that never reports progress and never ends (here a no-op stage
/// that sleeps far longer than `first_report_s`) is stopped as `stalled`, retried, and once its
/// attempts are spent the job fails with that reason instead of holding its slot for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_hangs_without_reporting_is_stopped_and_retried_then_fails_the_job() {
    let server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 600_000;
        c.server.first_report_s = 1;
        c.server.retry.attempts = 2;
        c.server.retry.base_s = 0.1;
    })
    .await;
    let id = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    let job = server.wait_final(KEY_A, &id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "stalled", "{job}");
    assert_eq!(job["error"]["stage"], "download", "{job}");
    let download = &job["stages"][0];
    assert_eq!((download["stage"].as_str(), download["attempts"].as_u64()), (Some("download"), Some(2)), "{job}");
    // The server carries on: the next job is admitted and stopped the same way.
    let next = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    assert_eq!(server.wait_final(KEY_A, &next, Duration::from_secs(30)).await["error"]["code"], "stalled");
}

/// One drain signal: from the first moment of a shutdown readiness answers 503, new jobs and
/// sessions are refused, open sessions are closed with 1001 and the last id they were sent, and
/// the job already running still finishes.
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_turns_readiness_to_503_at_once_and_closes_sessions_with_their_last_id() {
    let mut server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 300;
    })
    .await;
    let mut ws = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    ws.json(Duration::from_secs(10)).await;
    let id = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    let mut last = 0;
    while last == 0 {
        let event = ws.json(Duration::from_secs(10)).await;
        if event["type"] == "stage_started" {
            last = event["id"].as_u64().unwrap();
        }
    }
    assert_eq!(server.get(KEY_A, "/readyz").await.status(), 200);

    let ctx = server.server.as_ref().unwrap().ctx.clone();
    let draining = tokio::spawn(server.server.take().unwrap().shutdown(Duration::from_secs(10)));
    let (code, reason) = loop {
        match ws.next(Duration::from_secs(5)).await {
            Msg::Json(event) => last = event["id"].as_u64().unwrap(),
            Msg::Closed(code, reason) => break (code, reason),
        }
    };
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.ends_with(&format!("last_id={last}")), "the close names the last event sent ({last}): {reason}");
    // The listener still answers while the job finishes, and says it is not ready.
    assert_eq!(server.get(KEY_A, "/readyz").await.status(), 503);
    assert_eq!(server.post_json(KEY_A, "/api/jobs", &json!({ "url": "http://127.0.0.1:9/x.mp4" }).to_string()).await.status(), 503);
    let upgrade = server.http.get(server.url("/api/events")).bearer_auth(KEY_A).header("upgrade", "websocket").header("connection", "upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==").header("sec-websocket-version", "13").send().await.unwrap();
    assert_eq!(upgrade.status(), 503, "no new session during a drain");
    assert_eq!(server.get_json(KEY_A, &format!("/api/jobs/{id}")).await["status"], "running");
    draining.await.unwrap();
    let job = clipmill::persist::JobStore::get(&ctx.store, id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.status, clipmill::job::JobStatus::Succeeded, "the running job finished within the deadline");
}

/// A job's actor answers while its stages run: mid-render, the job read over the API shows the
/// render's progress as reported, which the store does not hold yet (a stage's progress is
/// persisted only at its transitions).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_actor_answers_with_its_live_progress_while_its_render_runs() {
    let server = TestServer::start(|_| {}).await;
    let url = talk_url().await;
    let id = server.create(KEY_A, json!({ "url": url, "options": { "clips": 1, "min_len": 5, "max_len": 9 } })).await;
    let ctx = server.server.as_ref().unwrap().ctx.clone();
    let render = |job: &serde_json::Value| job["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "render").cloned().unwrap();
    let mut ws = server.ws(&format!("/api/jobs/{id}/events?api_key={KEY_A}")).await;
    let mut answered_live = 0;
    loop {
        let event = ws.json(Duration::from_secs(120)).await;
        match event["type"].as_str().unwrap() {
            "stage_progress" if event["stage"] == "render" && event["progress"].as_f64().unwrap() < 0.8 => {
                let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
                let stored = clipmill::persist::JobStore::get(&ctx.store, id.parse().unwrap()).await.unwrap().unwrap();
                let stored_progress = stored.stage(clipmill::job::Stage::Render).progress;
                let live = render(&job);
                if live["status"] == "running" && live["progress"].as_f64().unwrap() > stored_progress {
                    answered_live += 1;
                }
            }
            "job_done" => break,
            "job_failed" | "job_cancelled" => panic!("the job did not finish: {event}"),
            _ => {}
        }
    }
    assert!(answered_live > 0, "no answer mid-render showed progress beyond the stored record");
    let done = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
    assert_eq!(render(&done)["status"], "done", "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_running_job_within_a_second_and_capacity_answers_429() {
    let server = TestServer::start(|c| c.server.max_jobs_in_flight = 1).await;
    let url = talk_url().await;
    let id = server.create(KEY_A, json!({ "url": url, "options": { "clips": 2, "min_len": 5, "max_len": 9 } })).await;

    let full = server.post_json(KEY_A, "/api/jobs", &json!({ "url": url }).to_string()).await;
    assert_eq!(full.status(), 429);
    assert_eq!(full.headers()["retry-after"], "5");
    assert_eq!(full.json::<serde_json::Value>().await.unwrap()["error"]["code"], "at_capacity");

    let mut ws = server.ws(&format!("/api/jobs/{id}/events?api_key={KEY_A}")).await;
    loop {
        let event = ws.json(Duration::from_secs(60)).await;
        if event["type"] == "stage_started" && event["stage"] == "transcribe" {
            break;
        }
    }
    let asked = std::time::Instant::now();
    let resp = server.http.delete(server.url(&format!("/api/jobs/{id}"))).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    loop {
        let event = ws.json(Duration::from_secs(5)).await;
        if event["type"] == "job_cancelled" {
            break;
        }
    }
    assert!(asked.elapsed() < Duration::from_secs(1), "cancel took {:?}", asked.elapsed());
    assert_eq!(server.get_json(KEY_A, &format!("/api/jobs/{id}")).await["status"], "cancelled");
    // Capacity is free again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = server.post_json(KEY_A, "/api/jobs", &json!({ "url": url, "options": {"clips": 1} }).to_string()).await;
    assert_eq!(next.status(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let server = TestServer::start(|c| c.server.max_upload_bytes = 1000).await;
    let cases = [
        ("{not json", "invalid_request", "key must be a string"),
        (r#"{"url": "http://x/v.mp4", "colour": "red"}"#, "invalid_request", "unknown field `colour`"),
        (r#"{"url": 42}"#, "invalid_request", "invalid type"),
        (r#"{"url": "http://x/v.mp4", "options": {"clips": 0}}"#, "invalid_request", "options.clips"),
        (r#"{"url": "ftp://x/v.mp4"}"#, "url_not_allowed", "only http and https"),
        (r#"{"upload_id": "tenant-a-nope"}"#, "unknown_upload", "no upload"),
        (r#"{"url": "http://x/v.mp4", "upload_id": "x"}"#, "invalid_request", "exactly one"),
        (r#"{"url": "http://x/v.mp4", "options": {"instruction": "  "}}"#, "invalid_request", "options.instruction is empty"),
    ];
    let long = json!({ "url": "http://x/v.mp4", "options": { "instruction": "a".repeat(501) } }).to_string();
    let cases = cases.into_iter().map(|(b, c, n)| (b.to_string(), c, n)).chain([(long, "invalid_request", "the limit is 500")]);
    for (body, code, needle) in cases {
        let body = body.as_str();
        let resp = server.post_json(KEY_A, "/api/jobs", body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err = resp.json::<serde_json::Value>().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(needle), "{body}: {err}");
    }
    let huge = format!(r#"{{"url": "http://x/{}"}}"#, "a".repeat(100_000));
    assert_eq!(server.post_json(KEY_A, "/api/jobs", &huge).await.status(), 413);
    let upload = server.http.post(server.url("/api/uploads")).bearer_auth(KEY_A).body(vec![0u8; 5000]).send().await.unwrap();
    assert_eq!(upload.status(), 413);
    let small = server.http.post(server.url("/api/uploads")).bearer_auth(KEY_A).body(vec![1u8; 500]).send().await.unwrap();
    assert_eq!(small.status(), 201);
    assert_eq!(server.http.get(server.url("/api/jobs")).send().await.unwrap().status(), 401);
    assert_eq!(server.get("nope", "/api/jobs").await.status(), 401);
    assert_eq!(server.get(KEY_A, "/api/jobs/not-a-uuid").await.status(), 404);
    assert_eq!(server.get(KEY_A, "/api/jobs/events").await.status(), 404);
    let no_upgrade = server.get(KEY_A, "/api/events").await;
    assert_eq!(no_upgrade.status(), 400);

    // Idempotency: a repeat with the same key returns the same job.
    let body = json!({ "url": "http://127.0.0.1:9/none.mp4", "options": { "clips": 1 } }).to_string();
    let send = || server.http.post(server.url("/api/jobs")).bearer_auth(KEY_A).header("idempotency-key", "k-1").body(body.clone()).send();
    let first: serde_json::Value = send().await.unwrap().json().await.unwrap();
    let second: serde_json::Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"]);

    // A client sending garbage frames is closed with a reason; everyone else carries on.
    let mut ws = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(ws.json(Duration::from_secs(5)).await["type"], "snapshot");
    ws.send_raw(Frame::new(true, OpCode::Text, None, Payload::Owned(vec![0xff, 0xfe, 0xfd]))).await;
    // (Events of the job created above may still arrive before the close.)
    loop {
        match ws.next(Duration::from_secs(5)).await {
            Msg::Closed(code, reason) => {
                assert!(code == 1002 || code == 1007, "{code} {reason}");
                break;
            }
            Msg::Json(event) => assert_ne!(event["type"], "snapshot", "{event}"),
        }
    }
    assert_eq!(server.get(KEY_A, "/healthz").await.status(), 200);
    assert_eq!(server.get(KEY_A, "/readyz").await.status(), 200);

    // The OpenAPI document describes every route the server answers.
    let doc = server.get_json(KEY_A, "/api/openapi.json").await;
    for path in ["/healthz", "/readyz", "/metrics", "/blobs/{key}", "/api/jobs", "/api/jobs/{id}", "/api/jobs/{id}/result", "/api/jobs/{id}/events", "/api/events", "/api/uploads", "/api/batches", "/api/batches/{id}", "/api/batches/{id}/events", "/api/uploads/tus", "/api/uploads/tus/{id}",
                 "/", "/assets/{name}", "/api/jobs/{id}/retry", "/api/overview", "/api/tokens"] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scratch_sweep_removes_folders_no_live_job_owns() {
    let server = TestServer::start(|c| c.scratch.sweep_every_s = 1).await;
    let jobs = server.dir.path().join("scratch/jobs");
    let stale = jobs.join(clipmill::job::new_job_id().to_string());
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("audio.wav"), b"left over").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stale.exists() {
        assert!(std::time::Instant::now() < deadline, "stale scratch folder was not swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn short_scratch_space_refuses_new_jobs_with_503_and_a_reason() {
    let server = TestServer::start(|c| c.scratch.min_free_mb = 1 << 40).await;
    let resp = server.post_json(KEY_A, "/api/jobs", &json!({ "url": "http://127.0.0.1:9/none.mp4" }).to_string()).await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].as_str().unwrap().contains("scratch space is low"), "{body}");
    let ready = server.get(KEY_A, "/readyz").await;
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("scratch space is low"));
    // Reads still work: only new work is refused.
    assert_eq!(server.get(KEY_A, "/api/jobs").await.status(), 200);
}

/// The dashboard's actions through the API: retry and delete only when final, only by the
/// owner; event-stream tokens stand for the key; the operators' overview counts what happened.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_retried_and_deleted_only_when_final_and_tokens_open_event_streams() {
    let server = TestServer::start(|c| {
        c.server.noop = true;
        c.server.noop_stage_ms = 300;
    })
    .await;
    let options = json!({ "clips": 2, "min_len": 5, "max_len": 9 });
    let id = server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4", "options": options })).await;
    let purge = |key: &'static str, id: String| server.http.delete(server.url(&format!("/api/jobs/{id}?purge=true"))).bearer_auth(key).send();
    let code = |v: serde_json::Value| v["error"]["code"].as_str().unwrap_or_default().to_string();

    // While it runs, neither retry nor delete.
    let resp = purge(KEY_A, id.clone()).await.unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(code(resp.json().await.unwrap()), "job_running");
    let resp = server.post_json(KEY_A, &format!("/api/jobs/{id}/retry"), "").await;
    assert_eq!(resp.status(), 409);
    assert_eq!(code(resp.json().await.unwrap()), "not_retryable");

    // Cancelled, it is retried as a new job with the same source and options.
    server.http.delete(server.url(&format!("/api/jobs/{id}"))).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(server.wait_final(KEY_A, &id, Duration::from_secs(30)).await["status"], "cancelled");
    assert_eq!(server.post_json(KEY_B, &format!("/api/jobs/{id}/retry"), "").await.status(), 404, "not another tenant's to retry");
    let resp = server.post_json(KEY_A, &format!("/api/jobs/{id}/retry"), "").await;
    assert_eq!(resp.status(), 202);
    let retried: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(retried["retry_of"], id.as_str());
    let again = server.get_json(KEY_A, &format!("/api/jobs/{}", retried["id"].as_str().unwrap())).await;
    assert_eq!(again["source"], json!({ "url": "http://127.0.0.1:9/none.mp4" }));
    assert_eq!((again["options"]["clips"].clone(), again["options"]["max_len"].clone()), (json!(2), json!(9.0)));

    // Deleted: gone from reads and listings, and only by its owner.
    assert_eq!(purge(KEY_B, id.clone()).await.unwrap().status(), 404);
    let resp = purge(KEY_A, id.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["status"], "deleted");
    assert_eq!(server.get(KEY_A, &format!("/api/jobs/{id}")).await.status(), 404);
    let listed = server.get_json(KEY_A, "/api/jobs").await;
    assert!(listed["jobs"].as_array().unwrap().iter().all(|j| j["id"] != id.as_str()), "{listed}");
    let resp = server.http.delete(server.url(&format!("/api/jobs/{}?purge=maybe", retried["id"].as_str().unwrap()))).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // A token opens the tenant's event stream; a tampered one opens nothing.
    let resp = server.post_json(KEY_A, "/api/tokens", "").await;
    assert_eq!(resp.status(), 201);
    let token = resp.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    assert!(!token.contains(KEY_A));
    let mut ws = server.ws(&format!("/api/events?token={token}")).await;
    let snapshot = ws.json(Duration::from_secs(10)).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["jobs"][0]["id"], retried["id"], "tenant a's jobs");
    let tampered = token.replace("tenant-a", "tenant-b");
    assert_eq!(server.http.get(server.url(&format!("/api/events?token={tampered}"))).send().await.unwrap().status(), 401);
    assert_eq!(server.http.get(server.url(&format!("/api/jobs?token={token}"))).send().await.unwrap().status(), 401, "events only");

    // The operators' overview: every stage, and the cancelled job counted.
    server.wait_final(KEY_A, retried["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    let overview = server.get_json(KEY_A, "/api/overview").await;
    assert_eq!(overview["stages"].as_array().map(Vec::len), Some(7), "{overview}");
    assert_eq!(overview["jobs_finished"]["cancelled"], json!(1.0), "{overview}");
    assert_eq!(overview["jobs_finished"]["succeeded"], json!(1.0), "{overview}");
    assert_eq!(overview["jobs_last_minute"], json!(2), "{overview}");
    assert_eq!(overview["nodes"], json!(["embedded"]));
}
