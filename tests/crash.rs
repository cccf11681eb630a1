//! Crash safety and graceful stop of the real `clipmill serve` process: `kill -9` mid-job and a
//! restart finish the job with no clip made twice (the queue in the node's process is lost with
//! it, and the restart queues the unfinished job again from the job store); SIGTERM drains,
//! persists and exits 0.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::Node;
use common::server::talk_url;
use serde_json::json;

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_job_then_restart_completes_it_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let url = talk_url().await;
    let mut node = Node::start(dir.path(), "node", "all", "", "").await;
    let id = node.create(json!({ "url": url, "options": { "clips": 3, "min_len": 5, "max_len": 9 } })).await;

    // Kill it hard as soon as the first clip is stored, while the next one renders.
    let first = node.wait_for(&id, Duration::from_secs(180), |j| !j["clips"].as_array().unwrap().is_empty()).await;
    node.kill_9();
    let first_key = first["clips"][0]["mp4"].as_str().unwrap().to_string();
    let first_blob = node.home.join("data/blobs").join(&first_key);
    let stored_at = mtime(&first_blob);

    node.restart().await;
    let done = node.wait_final(&id, Duration::from_secs(180)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let indexes: Vec<u64> = done["clips"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3], "every clip once");
    assert_eq!(done["clips"][0]["mp4"], first_key.as_str());
    assert_eq!(mtime(&first_blob), stored_at, "the clip stored before the crash was not made again");
    let blobs = std::fs::read_dir(first_blob.parent().unwrap()).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "mp4")).count();
    assert_eq!(blobs, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_intake_persists_and_exits_zero_and_the_job_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let url = talk_url().await;
    let mut node = Node::start(dir.path(), "node", "all", "shutdown_deadline_s = 1", "").await;
    let id = node.create(json!({ "url": url, "options": { "clips": 1, "min_len": 5, "max_len": 9 } })).await;
    node.wait_for(&id, Duration::from_secs(60), |j| j["status"] == "running").await;

    let asked = Instant::now();
    send_sigterm(node.child.id());
    let status = node.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(asked.elapsed() < Duration::from_secs(15), "took {:?}", asked.elapsed());

    node.restart().await;
    let done = node.wait_for(&id, Duration::from_secs(180), |j| j["status"] == "succeeded" || j["status"] == "failed").await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

fn send_sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
