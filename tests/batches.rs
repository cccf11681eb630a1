//! Batches and playlists: a playlist feed on 127.0.0.1 becomes one job per entry, all clipped;
//! one tenant's long batch does not hold back another tenant's job or batch; waiting entries are
//! cancelled with their batch and survive a crash; `clipmill clip` on a playlist page writes
//! one folder per video.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::node::Node;
use common::server::{KEY_A, KEY_B, TestServer, Ws};
use serde_json::{Value, json};

/// Serves the fixtures named in `files` and an RSS feed (`/feed.rss`) and an HTML page with one
/// `<video>` per file (`/page.html`), both listing them with their titles; returns the base URL.
async fn serve_playlist(files: &[(&'static str, &'static str)]) -> String {
    let videos: HashMap<String, Vec<u8>> = files.iter().map(|(name, _)| (format!("/{name}"), std::fs::read(common::fixture(name)).unwrap())).collect();
    let files = files.to_vec();
    // The listings name the server's own address, known once it listens.
    let base = Arc::new(OnceLock::<String>::new());
    let known = base.clone();
    let addr = common::http::serve(move |path, _| {
        let base = known.get().expect("the address is set before any request");
        let reply = match path.as_str() {
            "/feed.rss" => {
                let items: String = files
                    .iter()
                    .map(|(name, title)| format!(r#"<item><title>{title}</title><link>{base}/{name}.html</link><enclosure url="{base}/{name}" type="video/mp4" length="1"/></item>"#))
                    .collect();
                let feed = format!(r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Our talks</title><link>{base}/</link>{items}</channel></rss>"#);
                common::http::reply(200, "application/rss+xml", feed)
            }
            "/page.html" => {
                let tags: String = files.iter().map(|(name, _)| format!(r#"<video src="{name}"></video>"#)).collect();
                common::http::reply(200, "text/html", format!("<html><head><title>Our talks</title></head><body>{tags}</body></html>"))
            }
            p => match videos.get(p) {
                Some(bytes) => common::http::reply(200, "video/mp4", bytes.clone()),
                None => common::http::reply(404, "text/plain", "no such file"),
            },
        };
        async move { reply }
    })
    .await;
    base.set(format!("http://{addr}")).unwrap();
    base.get().unwrap().clone()
}

async fn post_batch(server: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let resp = server.post_json(key, "/api/batches", &body.to_string()).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn wait_finished(server: &TestServer, key: &str, id: &str, within: Duration) -> Value {
    let until = tokio::time::Instant::now() + within;
    loop {
        let batch = server.get_json(key, &format!("/api/batches/{id}")).await;
        if batch["status"] == "finished" {
            return batch;
        }
        assert!(tokio::time::Instant::now() < until, "batch not finished in {within:?}: {batch}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playlist_feed_becomes_one_job_per_entry_and_every_entry_is_clipped() {
    let server = TestServer::start(|_| {}).await;
    let base = serve_playlist(&[("talk.mp4", "The talk"), ("noface.mp4", "The scenery")]).await;
    let feed = format!("{base}/feed.rss");

    // A playlist where one video is expected fails its job, and says where it belongs.
    let single = server.create(KEY_A, json!({ "url": feed })).await;
    let failed = server.wait_final(KEY_A, &single, Duration::from_secs(60)).await;
    assert_eq!(failed["error"]["code"], "source_is_playlist", "{failed}");
    assert!(failed["error"]["message"].as_str().unwrap().contains("POST /api/batches"), "{failed}");

    let options = json!({ "clips": 1, "min_len": 5, "max_len": 9 });
    let (status, created) = post_batch(&server, KEY_A, json!({ "playlist": feed, "options": options })).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!((created["entries"].as_u64(), created["title"].as_str()), (Some(2), Some("Our talks")), "{created}");
    let id = created["id"].as_str().unwrap();
    let jobs: Vec<String> = created["jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().to_string()).collect();

    // The batch's stream: a snapshot of its jobs, then only their events.
    let mut ws = server.ws(&format!("/api/batches/{id}/events?api_key={KEY_A}")).await;
    let snapshot = ws.json(Duration::from_secs(10)).await;
    let in_snapshot: Vec<&str> = snapshot["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(in_snapshot, jobs, "{snapshot}");
    let mut done = 0;
    while done < jobs.len() {
        let event = ws.json(Duration::from_secs(300)).await;
        assert!(jobs.iter().any(|j| event["job"] == j.as_str()), "an event of another job: {event}");
        assert_ne!(event["type"], "job_failed", "{event}");
        done += (event["type"] == "job_done") as usize;
    }

    let batch = wait_finished(&server, KEY_A, id, Duration::from_secs(30)).await;
    assert_eq!(batch["counts"], json!({ "succeeded": 2 }), "{batch}");
    let titles: Vec<&str> = batch["entries"].as_array().unwrap().iter().map(|e| e["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["The talk", "The scenery"]);
    for (entry, file) in batch["entries"].as_array().unwrap().iter().zip(["talk.mp4", "noface.mp4"]) {
        assert_eq!(entry["url"], format!("{base}/{file}"), "each entry is its own video: {entry}");
        assert_eq!(entry["clips"], 1, "{entry}");
        let job = server.get_json(KEY_A, &format!("/api/jobs/{}", entry["job"].as_str().unwrap())).await;
        assert_eq!(job["batch"], id, "{job}");
    }
    assert_eq!(server.get(KEY_B, &format!("/api/batches/{id}")).await.status(), 404, "another tenant's batch");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_batches_get_clear_errors() {
    let server = TestServer::start(|c| c.server.batches.max_entries = 3).await;
    let base = serve_playlist(&[("noaudio.mp4", "Short")]).await;
    let video = format!("{base}/noaudio.mp4");
    for (body, code) in [
        (json!({ "urls": [] }), "empty_batch"),
        (json!({ "urls": [&video, &video, &video, &video] }), "batch_too_large"),
        (json!({ "urls": [&video], "playlist": &video }), "invalid_request"),
        (json!({ "urls": [&video], "first": 1 }), "invalid_request"),
        (json!({ "urls": [&video, "http://127.0.0.2/x.mp4"] }), "url_not_allowed"),
        (json!({ "urls": ["file:///etc/passwd"] }), "url_not_allowed"),
        (json!({ "playlist": &video }), "not_a_playlist"),
        (json!({ "urls": [&video], "options": { "clips": 0 } }), "invalid_request"),
    ] {
        let (status, answer) = post_batch(&server, KEY_A, body.clone()).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{body}: {answer}");
    }
    let (status, answer) = post_batch(&server, KEY_A, json!({ "playlist": format!("http://127.0.0.1:{}/gone", common::node::free_port()) })).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("source_unreachable")), "{answer}");
    assert!(server.get_json(KEY_A, "/api/jobs").await["jobs"].as_array().unwrap().is_empty(), "no job from a refused batch");
}

/// The first `stage_started` of each job, by event id, from a tenant's stream, until `until`
/// says enough was seen.
async fn starts(ws: &mut Ws, seen: &mut HashMap<String, u64>, until: impl Fn(&HashMap<String, u64>) -> bool) {
    while !until(seen) {
        let event = ws.json(Duration::from_secs(60)).await;
        if event["type"] == "stage_started" {
            seen.entry(event["job"].as_str().unwrap().to_string()).or_insert(event["id"].as_u64().unwrap());
        }
    }
}

fn ids(created: &Value) -> Vec<String> {
    created["jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_tenants_long_batch_does_not_hold_back_another_tenants_work() {
    let adjust = |c: &mut clipmill::config::Config| {
        c.server.noop = true;
        c.server.noop_stage_ms = 150;
        c.server.batches.max_in_flight = 2;
    };
    let server = TestServer::start(adjust).await;
    let mut a_events = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    let mut b_events = server.ws(&format!("/api/events?api_key={KEY_B}")).await;
    a_events.json(Duration::from_secs(10)).await;
    b_events.json(Duration::from_secs(10)).await;

    let urls: Vec<String> = (0..20).map(|i| format!("http://127.0.0.1:9/a{i}.mp4")).collect();
    let (status, created) = post_batch(&server, KEY_A, json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{created}");
    let a = ids(&created);
    let single = server.create(KEY_B, json!({ "url": "http://127.0.0.1:9/b.mp4" })).await;
    let (_, created) = post_batch(&server, KEY_B, json!({ "urls": ["http://127.0.0.1:9/b0.mp4", "http://127.0.0.1:9/b1.mp4"] })).await;
    let b = ids(&created);

    let mut seen = HashMap::new();
    starts(&mut b_events, &mut seen, |s| s.contains_key(&single) && b.iter().all(|j| s.contains_key(j))).await;
    starts(&mut a_events, &mut seen, |s| s.contains_key(&a[4])).await;
    let start = |job: &String| seen[job];
    assert!(start(&single) < start(&a[2]), "the single job starts before the batch's third entry");
    assert!(b.iter().all(|j| start(j) < start(&a[4])), "the other tenant's batch takes turns with the long one");
    let order: Vec<&String> = a.iter().filter(|j| seen.contains_key(*j)).collect();
    assert_eq!(order, a[..order.len()].iter().collect::<Vec<_>>(), "a batch's entries start in its order");

    let batch_id = server.get_json(KEY_A, &format!("/api/jobs/{}", a[19])).await["batch"].as_str().unwrap().to_string();
    let batch = server.get_json(KEY_A, &format!("/api/batches/{batch_id}")).await;
    let waiting_before = batch["counts"]["waiting"].as_u64().unwrap_or(0);
    assert!(waiting_before >= 10, "most of the batch still waits: {batch}");

    // Cancelling the batch cancels what waits and stops what runs; nothing is left behind.
    let resp = server.http.delete(server.url(&format!("/api/batches/{batch_id}"))).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let cancelled = resp.json::<Value>().await.unwrap()["cancelled"].as_u64().unwrap();
    assert!(cancelled >= waiting_before - 4, "{cancelled} cancelled, {waiting_before} were waiting");
    let batch = wait_finished(&server, KEY_A, &batch_id, Duration::from_secs(30)).await;
    let counts = &batch["counts"];
    assert_eq!(counts.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 20, "{batch}");
    assert!(counts["cancelled"].as_u64().unwrap() >= 10, "{batch}");
    assert_eq!(counts.get("failed"), None, "{batch}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for job in &a {
        let status = server.get_json(KEY_A, &format!("/api/jobs/{job}")).await["status"].clone();
        assert!(status == "succeeded" || status == "cancelled", "{job}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_entries_survive_a_crash_and_all_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), "node", "all", "noop = true\nnoop_stage_ms = 150", "[server.batches]\nmax_in_flight = 2").await;
    let http = reqwest::Client::new();
    let urls: Vec<String> = (0..8).map(|i| format!("http://127.0.0.1:9/a{i}.mp4")).collect();
    let created: Value = http.post(format!("{}/api/batches", node.base)).bearer_auth(KEY_A).json(&json!({ "urls": urls })).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().expect("a batch id").to_string();
    let url = format!("{}/api/batches/{id}", node.base);
    let batch = || async { http.get(&url).bearer_auth(KEY_A).send().await.ok()?.json::<Value>().await.ok() };
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while batch().await.is_none_or(|b| b["counts"]["succeeded"].as_u64().unwrap_or(0) < 1) {
        assert!(tokio::time::Instant::now() < until, "no entry finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.kill_9();
    node.restart().await;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = batch().await.expect("the batch after the restart");
        if b["status"] == "finished" {
            assert_eq!(b["counts"], json!({ "succeeded": 8 }), "every entry ran once the node was back: {b}");
            break;
        }
        assert!(tokio::time::Instant::now() < until, "batch not finished after the restart: {b}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn clip_on_a_playlist_page_writes_one_folder_per_video() {
    let base = serve_playlist(&[("noface.mp4", "Scenery"), ("noaudio.mp4", "Silent film")]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let page = format!("{base}/page.html");
    let status = tokio::process::Command::from(common::clipmill(&dir.path().join("scratch")))
        .args(["clip", &page, "--out", out.to_str().unwrap(), "--clips", "1", "--min-len", "3", "--max-len", "5"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let report: Value = serde_json::from_slice(&std::fs::read(out.join("playlist.json")).unwrap()).unwrap();
    assert_eq!(report["title"], "Our talks");
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{report}");
    for (entry, file) in entries.iter().zip(["noface.mp4", "noaudio.mp4"]) {
        assert_eq!((entry["ok"].as_bool(), entry["url"].as_str()), (Some(true), Some(format!("{base}/{file}").as_str())), "{entry}");
        let folder = out.join(entry["folder"].as_str().unwrap());
        assert!(folder.join("clip-01.mp4").is_file() && folder.join("edit.json").is_file(), "{}", folder.display());
        let edit: Value = serde_json::from_slice(&std::fs::read(folder.join("edit.json")).unwrap()).unwrap();
        assert_eq!(edit["source"], format!("{base}/{file}"));
    }
}
