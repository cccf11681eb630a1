//! Chaos (issue 15): no-op jobs with webhooks while what they run on is killed at random moments.
//! A single node is killed with `kill -9` and restarted; on a two-node cluster the worker node,
//! Redis and Postgres are taken down in turn. Every job must end (succeeded, or failed with a
//! reason), none may be lost, and no webhook may arrive twice with different content (receivers
//! deduplicate on `X-Clipmill-Delivery`). `loadtest/chaos.sh` runs the same with more jobs and
//! kills (`CLIPMILL_CHAOS_JOBS`, `CLIPMILL_CHAOS_KILLS`).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{Recorded, serve_recording};
use common::node::Node;
use common::pg_server::PgServer;
use common::redis_server::RedisServer;
use common::s3_server::S3Server;
use serde_json::json;

const NOOP: &str = "noop = true\nnoop_stage_ms = 200";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A seeded xorshift: random moments that are the same on every run.
struct Moments(u64);

impl Moments {
    /// A pause of 300..1500 ms.
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(300 + self.0 % 1200)
    }
}

/// How many of `ids` are not final: the jobs a disruption now would hit mid-run.
async fn unfinished(node: &Node, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if node.job(id).await.is_some_and(|j| !matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))) {
            n += 1;
        }
    }
    n
}

/// Submits `n` jobs as a client does: a 429 (the node is at capacity) is waited out and sent again.
async fn submit(node: &Node, n: usize, hook: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match node.submit(json!({ "url": "http://127.0.0.1:9/none.mp4", "options": { "webhook": hook } })).await {
            (202, created) => ids.push(created["id"].as_str().unwrap().to_string()),
            (429, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (status, answer) => panic!("submit answered {status}: {answer}"),
        }
    }
    ids
}

/// What the jobs and webhooks came to: every job final, and each delivery id's bodies identical.
struct Outcome {
    succeeded: usize,
    failed: usize,
    webhooked: usize,
    redelivered: usize,
}

async fn settle(node: &Node, ids: &[String], deliveries: &Arc<Mutex<Vec<Recorded>>>) -> Outcome {
    let (mut succeeded, mut failed) = (0, 0);
    for id in ids {
        let job = node.wait_final(id, Duration::from_secs(180)).await;
        match job["status"].as_str().unwrap() {
            "succeeded" => succeeded += 1,
            "failed" => {
                let error = &job["error"];
                assert!(error["code"].is_string() && !error["message"].as_str().unwrap_or("").is_empty(), "failed without a reason: {job}");
                failed += 1;
            }
            other => panic!("job {id} ended {other}: {job}"),
        }
    }
    // Webhooks still on their way get a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut by_id: BTreeMap<String, Vec<hyper::body::Bytes>> = BTreeMap::new();
    for (headers, body) in deliveries.lock().unwrap().iter() {
        let id = headers.get("x-clipmill-delivery").expect("every webhook carries its delivery id").to_str().unwrap().to_string();
        by_id.entry(id).or_default().push(body.clone());
    }
    for (id, bodies) in &by_id {
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "delivery {id} arrived with different content: {bodies:?}");
    }
    let finished = by_id.keys().filter(|id| id.ends_with("/job_finished")).count();
    let redelivered = by_id.values().map(|b| b.len() - 1).sum();
    Outcome { succeeded, failed, webhooked: finished, redelivered }
}

fn report(name: &str, jobs: usize, disruptions: usize, hit: usize, o: &Outcome) -> String {
    let line = format!(
        "chaos ({name}): {jobs} jobs, {disruptions} disruptions, which caught jobs mid-run {hit} times: {} succeeded, {} failed with a reason, 0 lost; job_finished webhooks for {} jobs, {} repeated with the same content",
        o.succeeded, o.failed, o.webhooked, o.redelivered
    );
    println!("{line}");
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_at_random_moments_loses_no_job_and_repeats_no_webhook_differently() {
    let (jobs, kills) = (env_or("CLIPMILL_CHAOS_JOBS", 60), env_or("CLIPMILL_CHAOS_KILLS", 3));
    let dir = tempfile::tempdir().unwrap();
    let (receiver, deliveries) = serve_recording().await;
    let hook = format!("http://{receiver}/hook");
    let mut node = Node::start(dir.path(), "node", "all", NOOP, "").await;
    let mut moments = Moments(0x9E37_79B9_7F4A_7C15);
    let wave = jobs / (kills + 1);
    let (mut ids, mut hit) = (vec![], 0);
    for _ in 0..kills {
        ids.extend(submit(&node, wave, &hook).await);
        tokio::time::sleep(moments.next()).await;
        hit += unfinished(&node, &ids).await;
        node.kill_9();
        node.restart().await;
    }
    ids.extend(submit(&node, jobs - ids.len(), &hook).await);
    let outcome = settle(&node, &ids, &deliveries).await;
    assert_eq!(outcome.succeeded + outcome.failed, jobs);
    assert!(hit > 0, "no kill came while jobs ran");
    common::suite_note("chaos-node", &report("one node, kill -9", jobs, kills, hit, &outcome));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_whose_worker_redis_and_postgres_go_down_loses_no_job() {
    let jobs = env_or("CLIPMILL_CHAOS_JOBS", 60) / 2;
    let dir = tempfile::tempdir().unwrap();
    let (receiver, deliveries) = serve_recording().await;
    let hook = format!("http://{receiver}/hook");
    let (mut redis, mut pg, s3) = (RedisServer::start(), PgServer::start().await, S3Server::start().await);
    let s3c = s3.config("clipmill");
    let backends = format!(
        "[redis]\nurl = {:?}\nlease_s = 3\nnode_ttl_s = 3\n[postgres]\nurl = {:?}\n[s3]\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\naccess_key = {:?}\nsecret_key = {:?}\n",
        redis.url(), pg.url(), s3c.endpoint, s3c.region, s3c.bucket, s3c.access_key, s3c.secret_key,
    );
    let mut api = Node::start(dir.path(), "api", "all", NOOP, &backends).await;
    let mut worker = Node::start(dir.path(), "worker", "worker", NOOP, &backends).await;
    let mut moments = Moments(0xD1B5_4A32_D192_ED03);
    let wave = jobs / 3;
    let mut ids = submit(&api, wave, &hook).await;
    tokio::time::sleep(moments.next()).await;
    let mut hit = unfinished(&api, &ids).await;
    worker.kill_9();
    worker.restart().await;

    ids.extend(submit(&api, wave, &hook).await);
    tokio::time::sleep(moments.next()).await;
    hit += unfinished(&api, &ids).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.start_again();
    api.wait_ready(Duration::from_secs(30)).await;

    ids.extend(submit(&api, wave, &hook).await);
    tokio::time::sleep(moments.next()).await;
    hit += unfinished(&api, &ids).await;
    pg.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again().await;
    api.wait_ready(Duration::from_secs(30)).await;

    ids.extend(submit(&api, jobs - ids.len(), &hook).await);
    let outcome = settle(&api, &ids, &deliveries).await;
    assert_eq!(outcome.succeeded + outcome.failed, jobs);
    assert!(hit > 0, "no disruption came while jobs ran");
    common::suite_note("chaos-cluster", &report("two nodes; worker kill -9, Redis and Postgres restarted", jobs, 3, hit, &outcome));
}
