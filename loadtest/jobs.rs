//! `jobs`: N no-op jobs submitted by C workers, while one `/api/events` watcher waits for every
//! one of them to end. Measures how fast the API admits jobs and how fast the actor tree, the
//! store and the hub carry them to `job_done`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::Method;
use hyper::body::Bytes;
use serde_json::json;

use crate::Common;
use crate::client::{Connector, Load, LoadResult, WsClient, drive, ws_connect};
use crate::events::{Countdown, Message, next_message};
use crate::harness::{JOB_BODY, ServerRuntime, Target};
use crate::stats::{Report, Summary, ms, per_s, round};

pub struct Plan {
    pub count: u64,
    pub concurrency: u64,
    pub stage_ms: u64,
}

/// How the watcher saw the jobs end.
#[derive(Default)]
struct Ends {
    done: u64,
    failed: u64,
    cancelled: u64,
    events: u64,
    last_end: Option<Instant>,
    closed: Option<String>,
}

impl Ends {
    fn total(&self) -> u64 {
        self.done + self.failed + self.cancelled
    }
}

pub async fn run(servers: &ServerRuntime, common: &Common, plan: Plan) -> anyhow::Result<Report> {
    let target = Target::open(servers, common, plan.stage_ms).await?;
    let measured = measure(&target, common, &plan).await;
    let waits = target.metrics().map(|m| stage_waits(&m));
    target.close(servers).await;
    let (load, ends) = measured?;
    Ok(report(common, &plan, load, ends, waits))
}

async fn measure(target: &Target, common: &Common, plan: &Plan) -> anyhow::Result<(LoadResult, Ends)> {
    let deadline = Instant::now() + common.timeout();
    let mut ws = ws_connect(target.addr, &format!("/api/events?api_key={}", target.api_key)).await.context("cannot open /api/events")?;
    match next_message(&mut ws, Instant::now() + Duration::from_secs(10)).await {
        Message::Snapshot => {}
        other => anyhow::bail!("expected a snapshot first, got {other:?}"),
    }
    let ended = Countdown::new(plan.count);
    let watcher = tokio::spawn(watch(ws, ended.clone()));
    let cap = ended.cap(deadline);
    let connector = Connector::new(common.client, target.addr, &target.api_key)?;
    let load = Load { count: plan.count, concurrency: plan.concurrency, deadline };
    let body = Bytes::from_static(JOB_BODY.as_bytes());
    let result = drive(&connector, load, false, move |_| (Method::POST, "/api/jobs".into(), Some(body.clone()))).await;
    // Jobs that were never accepted will never end.
    ended.expect(result.ok);
    let ends = watcher.await.context("watcher task")?;
    cap.abort();
    Ok((result, ends))
}

/// Reads events until as many jobs ended as `ended` expects, or the time cap.
async fn watch(ws: WsClient, ended: Arc<Countdown>) -> Ends {
    let mut ends = Ends::default();
    let mut reader = ended.reader(ws);
    while let Some(message) = reader.next().await {
        match message {
            Message::Event { kind, .. } => {
                ends.events += 1;
                match kind.as_str() {
                    "job_done" => ends.done += 1,
                    "job_failed" => ends.failed += 1,
                    "job_cancelled" => ends.cancelled += 1,
                    _ => continue,
                }
                ends.last_end = Some(Instant::now());
                ended.arrive();
            }
            Message::Snapshot | Message::TimedOut => {}
            Message::Closed(reason) => {
                ends.closed = Some(reason);
                break;
            }
        }
    }
    ends
}

/// The server's mean wait for a stage worker, per stage, in milliseconds.
fn stage_waits(metrics: &clipmill::metrics::Metrics) -> Vec<(&'static str, f64)> {
    clipmill::job::Stage::ALL
        .iter()
        .map(|s| {
            let h = metrics.stage_wait.with_label_values(&[s.name()]);
            let n = h.get_sample_count().max(1) as f64;
            (s.name(), h.get_sample_sum() / n * 1000.0)
        })
        .collect()
}

fn report(common: &Common, plan: &Plan, load: LoadResult, ends: Ends, waits: Option<Vec<(&'static str, f64)>>) -> Report {
    let started = load.started.unwrap_or_else(Instant::now);
    let e2e = ends.last_end.map(|t| t.duration_since(started)).unwrap_or_default();
    let e2e_per_s = if e2e.is_zero() { 0.0 } else { ends.done as f64 / e2e.as_secs_f64() };
    let submit_per_s = load.ok_per_s();
    let (accepted, throttled, errors) = (load.ok, load.throttled, load.errors());
    let first_error = load.first_error.clone();
    let post: Summary = load.latencies.summary();
    let json = json!({
        "scenario": "jobs", "client": format!("{:?}", common.client).to_lowercase(), "count": plan.count,
        "concurrency": plan.concurrency, "stage_ms": common.stage_ms_json(plan.stage_ms), "accepted": accepted,
        "submit_per_s": round(submit_per_s), "e2e_per_s": round(e2e_per_s), "e2e_s": round(e2e.as_secs_f64()),
        "done": ends.done, "failed": ends.failed, "cancelled": ends.cancelled, "events": ends.events,
        "post_ms": post.json(), "throttled_429": throttled, "errors": errors,
    });
    let server = common.server_label(plan.stage_ms);
    let title = format!("jobs: {} no-op jobs, {} submitters, {server}, {:?} client", plan.count, plan.concurrency, common.client);
    let mut r = Report::new(title, &["metric", "value"], json);
    r.row(["jobs accepted (202)".into(), format!("{accepted} of {}", plan.count)]);
    r.row(["submit throughput".into(), per_s(submit_per_s)]);
    r.row(["jobs ended (done/failed/cancelled)".into(), format!("{}/{}/{}", ends.done, ends.failed, ends.cancelled)]);
    r.row(["end-to-end throughput".into(), format!("{} (over {:.2} s)", per_s(e2e_per_s), e2e.as_secs_f64())]);
    r.row(["events seen by the watcher".into(), ends.events.to_string()]);
    r.row(["POST p50 / p95 / p99".into(), format!("{} / {} / {}", ms(post.p50), ms(post.p95), ms(post.p99))]);
    r.row(["POST max".into(), ms(post.max)]);
    r.row(["429 answers".into(), throttled.to_string()]);
    r.row(["errors".into(), errors.to_string()]);
    if let Some(e) = first_error {
        r.note(format!("first error: {e}"));
    }
    if let Some(reason) = &ends.closed {
        r.note(format!("the watcher was disconnected: {reason}"));
    }
    if ends.total() < accepted {
        r.note(format!("{} accepted jobs had not ended by the time cap", accepted - ends.total()));
    }
    if let Some(waits) = waits {
        let waits: Vec<String> = waits.iter().map(|(stage, w)| format!("{stage} {w:.2}")).collect();
        r.note(format!("server's mean wait for a stage worker, ms: {}", waits.join(", ")));
    }
    r
}
