//! Crash safety and graceful stop of the real `clipmill serve` process: `kill -9` mid-job and a
//! restart finish the job with no clip made twice; SIGTERM drains, persists and exits 0.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{KEY_A, talk_url};
use common::*;
use serde_json::json;

struct Serve {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, deadline_s: u64) -> std::path::PathBuf {
    let path = dir.join("clipmill.toml");
    let text = format!(
        "[python]\ninterpreter = {:?}\nscripts = {:?}\n[scratch]\ndir = {:?}\n[server]\nbind = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nshutdown_deadline_s = {deadline_s}\n[server.api_keys]\n{KEY_A} = \"tenant-a\"\n[server.retry]\nbase_s = 0.2\n",
        python(),
        root().join("python"),
        dir.join("scratch"),
        dir.join("data"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(config: &Path, port: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_clipmill"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("CLIPMILL__LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Serve { child, base }
}

async fn create(base: &str, body: serde_json::Value) -> String {
    let resp = reqwest::Client::new().post(format!("{base}/api/jobs")).bearer_auth(KEY_A).json(&body).send().await.unwrap();
    let created: serde_json::Value = resp.json().await.unwrap();
    created["id"].as_str().unwrap().to_string()
}

async fn job(base: &str, id: &str) -> serde_json::Value {
    reqwest::Client::new().get(format!("{base}/api/jobs/{id}")).bearer_auth(KEY_A).send().await.unwrap().json().await.unwrap()
}

async fn wait_for(base: &str, id: &str, within: Duration, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job(base, id).await;
        if done(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "job did not get there in time: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_job_then_restart_completes_it_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, 30);
    let url = talk_url().await;
    let mut serve = start(&config, port).await;
    let id = create(&serve.base, json!({ "url": url, "options": { "clips": 3, "min_len": 5, "max_len": 9 } })).await;

    // Kill it hard as soon as the first clip is stored, while the next one renders.
    let first = wait_for(&serve.base, &id, Duration::from_secs(180), |j| !j["clips"].as_array().unwrap().is_empty()).await;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let first_key = first["clips"][0]["mp4"].as_str().unwrap().to_string();
    let first_blob = dir.path().join("data/blobs").join(&first_key);
    let stored_at = mtime(&first_blob);

    let mut serve = start(&config, port).await;
    let done = wait_for(&serve.base, &id, Duration::from_secs(180), |j| j["status"] != "running" && j["status"] != "queued").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let indexes: Vec<u64> = done["clips"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3], "every clip once");
    assert_eq!(done["clips"][0]["mp4"], first_key.as_str());
    assert_eq!(mtime(&first_blob), stored_at, "the clip stored before the crash was not made again");
    let blobs = std::fs::read_dir(first_blob.parent().unwrap()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "mp4")).count();
    assert_eq!(blobs, 3);
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_intake_persists_and_exits_zero_and_the_job_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, 1);
    let url = talk_url().await;
    let mut serve = start(&config, port).await;
    let id = create(&serve.base, json!({ "url": url, "options": { "clips": 1, "min_len": 5, "max_len": 9 } })).await;
    wait_for(&serve.base, &id, Duration::from_secs(60), |j| j["status"] == "running").await;

    let asked = Instant::now();
    send_sigterm(serve.child.id());
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(asked.elapsed() < Duration::from_secs(15), "took {:?}", asked.elapsed());

    let mut serve = start(&config, port).await;
    let done = wait_for(&serve.base, &id, Duration::from_secs(180), |j| j["status"] == "succeeded" || j["status"] == "failed").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
}

fn send_sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
