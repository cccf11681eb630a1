//! Several real `clipmill serve` processes sharing a real Redis, Postgres and S3-compatible server
//! (each test starts private ones on loopback): work submitted to one node is done by others and
//! watched live from the first; a worker killed with `kill -9` mid-job is replaced without a clip
//! made twice; Redis and Postgres restarted mid-run lose no accepted job, and the API answers 503
//! while they are down and recovers by itself.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::node::Node;
use common::pg_server::PgServer;
use common::redis_server::RedisServer;
use common::s3_server::S3Server;
use common::server::{JobEvents, KEY_A, follow_job, talk_url, ws_at};
use serde_json::json;

const STAGES: [&str; 7] = ["download", "audio", "transcribe", "score", "faces", "render", "upload"];

/// The three shared backends of one test deployment.
struct Backends {
    redis: RedisServer,
    pg: PgServer,
    s3: S3Server,
}

impl Backends {
    async fn start() -> Backends {
        Backends { redis: RedisServer::start(), pg: PgServer::start().await, s3: S3Server::start().await }
    }

    /// The backends part of every node's config.
    fn toml(&self) -> String {
        let s3 = self.s3.config("clipmill");
        format!(
            "[redis]\nurl = {:?}\nlease_s = 3\nnode_ttl_s = 3\n[postgres]\nurl = {:?}\n[s3]\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\naccess_key = {:?}\nsecret_key = {:?}\n",
            self.redis.url(),
            self.pg.url(),
            s3.endpoint,
            s3.region,
            s3.bucket,
            s3.access_key,
            s3.secret_key,
        )
    }
}

/// The sum of a Prometheus counter or histogram count with the given labels.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name) && l.contains(labels)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_submitted_to_the_api_node_is_done_by_a_worker_and_watched_live_there() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::start().await;
    let config = backends.toml();
    let api = Node::start(dir.path(), "api", "api", "", &config).await;
    let worker = Node::start(dir.path(), "worker", "worker", "", &config).await;
    assert_eq!(reqwest::Client::new().get(format!("{}/api/jobs", worker.base)).bearer_auth(KEY_A).send().await.unwrap().status(), 404, "a worker takes no API traffic");

    let mut ws = ws_at(api.addr(), &format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(ws.json(Duration::from_secs(10)).await["type"], "snapshot");
    let url = talk_url().await;
    let id = api.create(json!({ "url": url, "options": { "clips": 2, "min_len": 5, "max_len": 9 } })).await;

    let JobEvents { started, clips, .. } = follow_job(&mut ws, &id, Duration::from_secs(240)).await;
    assert_eq!(started, STAGES, "every stage, in order, seen from the api node");
    assert_eq!(clips.len(), 2, "one clip_ready per clip");

    let job = api.job(&id).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    // The clips come from S3 through presigned URLs.
    for clip in &clips {
        let mp4 = reqwest::get(clip["urls"]["mp4"].as_str().unwrap()).await.unwrap();
        assert_eq!(mp4.status(), 200);
        let bytes = mp4.bytes().await.unwrap();
        assert_eq!(&bytes[4..8], b"ftyp");
    }
    // The worker did the stages; the api node none.
    let (worker_metrics, api_metrics) = (worker.metrics().await, api.metrics().await);
    assert!(metric(&worker_metrics, "clipmill_stage_duration_seconds_count", "stage=\"render\"") >= 2.0, "{worker_metrics}");
    assert_eq!(metric(&api_metrics, "clipmill_stage_duration_seconds_count", ""), 0.0);
    let (status, ready) = api.readyz().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["nodes"].as_array().unwrap().len(), 2, "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_job_is_replaced_and_no_clip_is_made_twice() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::start().await;
    let config = backends.toml();
    let api = Node::start(dir.path(), "api", "api", "", &config).await;
    let mut workers = [Node::start(dir.path(), "w1", "worker", "", &config).await, Node::start(dir.path(), "w2", "worker", "", &config).await];
    let mut ws = ws_at(api.addr(), &format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(ws.json(Duration::from_secs(10)).await["type"], "snapshot");
    let url = talk_url().await;
    let id = api.create(json!({ "url": url, "options": { "clips": 3, "min_len": 5, "max_len": 9 } })).await;

    // Kill the worker that is rendering, once the first clip is stored.
    api.wait_for(&id, Duration::from_secs(240), |j| !j["clips"].as_array().unwrap().is_empty()).await;
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim.is_none() {
        for (i, w) in workers.iter().enumerate() {
            if metric(&w.metrics().await, "clipmill_stage_running", "stage=\"render\"") >= 1.0 {
                victim = Some(i);
            }
        }
        assert!(Instant::now() < deadline, "no worker was seen rendering");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers[victim.unwrap()].kill_9();

    let done = api.wait_final(&id, Duration::from_secs(300)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let indexes: Vec<u64> = done["clips"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [1, 2, 3], "every clip once");
    let mut announced: BTreeMap<u64, usize> = BTreeMap::new();
    loop {
        let event = ws.json(Duration::from_secs(30)).await;
        match event["type"].as_str().unwrap() {
            "clip_ready" => *announced.entry(event["clip"]["index"].as_u64().unwrap()).or_default() += 1,
            "job_done" => break,
            _ => {}
        }
    }
    assert!(announced.values().all(|&n| n == 1), "no clip announced twice: {announced:?}");
    let result: serde_json::Value =
        reqwest::Client::new().get(format!("{}/api/jobs/{id}/result", api.base)).bearer_auth(KEY_A).send().await.unwrap().json().await.unwrap();
    for clip in result["clips"].as_array().unwrap() {
        assert_eq!(reqwest::get(clip["urls"]["mp4"].as_str().unwrap()).await.unwrap().status(), 200);
    }
}

/// No-op stages (timed sleeps): these tests are about the backends, not the media.
const NOOP: &str = "noop = true\nnoop_stage_ms = 150";

async fn submit_all(node: &Node, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(node.create(json!({ "url": "http://127.0.0.1:9/none.mp4" })).await);
    }
    ids
}

/// How many of the jobs are not finished yet.
async fn in_flight(node: &Node, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if node.job(id).await.is_some_and(|j| !matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))) {
            n += 1;
        }
    }
    n
}

async fn wait_status(node: &Node, want: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = node.readyz().await;
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "readyz never answered {want}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which shared backend a restart test takes down.
#[derive(Clone, Copy)]
enum Down {
    Redis,
    Postgres,
}

/// Twelve jobs in flight, `down` stopped: the API answers 503 (readyz names the backend) and
/// accepts nothing; `down` started again: the API recovers by itself and every job accepted
/// before, during or after ends succeeded.
async fn restart_mid_run(down: Down) {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Backends::start().await;
    let config = backends.toml();
    let api = Node::start(dir.path(), "a", "all", NOOP, &config).await;
    let _worker = Node::start(dir.path(), "b", "worker", NOOP, &config).await;
    let mut ids = submit_all(&api, 12).await;
    assert!(in_flight(&api, &ids).await > 0, "the restart happens mid-run");

    let part = match down {
        Down::Redis => {
            backends.redis.stop();
            "queue"
        }
        Down::Postgres => {
            backends.pg.stop().await;
            "store"
        }
    };
    let ready = wait_status(&api, 503, Duration::from_secs(15)).await;
    assert!(ready[part]["state"].as_str().unwrap().starts_with("down"), "{ready}");
    let (status, refused) = api.submit(json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    assert_eq!(status, 503, "no job is accepted while {part} is down: {refused}");
    if let Down::Postgres = down {
        let resp = reqwest::Client::new().get(format!("{}/api/jobs/{}", api.base, ids[0])).bearer_auth(KEY_A).send().await.unwrap();
        assert_eq!(resp.status(), 503, "reads answer 503 while the store is down");
    }

    match down {
        Down::Redis => backends.redis.start_again(),
        Down::Postgres => backends.pg.start_again().await,
    }
    wait_status(&api, 200, Duration::from_secs(30)).await;
    ids.extend(submit_all(&api, 3).await);
    for id in &ids {
        let done = api.wait_final(id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_mid_run_loses_no_job_and_the_api_recovers() {
    restart_mid_run(Down::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_mid_run_loses_no_job_and_the_api_recovers() {
    restart_mid_run(Down::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_on_the_api_node_stops_the_job_on_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::start().await;
    let config = backends.toml();
    let slow = "noop = true\nnoop_stage_ms = 20000";
    let api = Node::start(dir.path(), "api", "api", slow, &config).await;
    let _worker = Node::start(dir.path(), "worker", "worker", slow, &config).await;
    let running = api.create(json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
    api.wait_for(&running, Duration::from_secs(30), |j| j["status"] == "running").await;

    let asked = Instant::now();
    let resp = reqwest::Client::new().delete(format!("{}/api/jobs/{running}", api.base)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let done = api.wait_final(&running, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    // Well inside one 20 s stage: the worker stopped it, nobody waited the stage out.
    assert!(asked.elapsed() < Duration::from_secs(10), "cancel took {:?}", asked.elapsed());
}

/// Batch entries in a cluster: the API node that took the batch releases them, a second API node
/// started later reads the same waiting entries back from Postgres and releases too, and the
/// claim per entry lets only one of them queue each: every entry runs exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn batch_entries_known_to_two_api_nodes_each_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let backends = Backends::start().await;
    let config = format!("{}\n[server.batches]\nmax_in_flight = 2\n", backends.toml());
    let api = Node::start(dir.path(), "api", "api", "", &config).await;
    let urls: Vec<String> = (0..6).map(|i| format!("http://127.0.0.1:9/e{i}.mp4")).collect();
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/batches", api.base))
        .bearer_auth(KEY_A)
        .json(&json!({ "urls": urls }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs: Vec<String> = created["jobs"].as_array().expect("job ids").iter().map(|j| j.as_str().unwrap().to_string()).collect();
    let second = Node::start(dir.path(), "api2", "api", "", &config).await;
    let worker = Node::start(dir.path(), "worker", "worker", NOOP, &config).await;
    assert!(second.log().contains("batch entries waiting for admission"), "the second node read the waiting entries back:\n{}", second.log());
    for id in &jobs {
        let job = second.wait_final(id, Duration::from_secs(90)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let attempts = job["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "download").unwrap()["attempts"].clone();
        assert_eq!(attempts, 1, "released and run once: {job}\n{}\n{}", api.log(), second.log());
    }

    // The dashboard works from any API node: each serves the page, and a token made by one opens
    // the event stream on the other (the nodes share the signing secret); a worker serves no page.
    let page = reqwest::get(format!("{}/", second.base)).await.unwrap();
    assert_eq!((page.status().as_u16(), page.headers()["content-type"].to_str().unwrap()), (200, "text/html; charset=utf-8"));
    assert_eq!(reqwest::get(format!("{}/", worker.base)).await.unwrap().status(), 404);
    let made: serde_json::Value =
        reqwest::Client::new().post(format!("{}/api/tokens", api.base)).bearer_auth(KEY_A).send().await.unwrap().json().await.unwrap();
    let mut events = ws_at(second.addr(), &format!("/api/events?token={}", made["token"].as_str().unwrap())).await;
    let snapshot = events.json(Duration::from_secs(10)).await;
    assert_eq!(snapshot["jobs"].as_array().map(Vec::len), Some(jobs.len()), "{snapshot}");
    let overview: serde_json::Value =
        reqwest::Client::new().get(format!("{}/api/overview", second.base)).bearer_auth(KEY_A).send().await.unwrap().json().await.unwrap();
    assert_eq!(overview["nodes"].as_array().map(Vec::len), Some(3), "every live node: {overview}");
}
