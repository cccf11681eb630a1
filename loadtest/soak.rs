//! `soak`: a steady mix for a set time (jobs submitted at a fixed rate, every tenth cancelled
//! at once, status reads, and watchers that connect, read for a while and leave) while the
//! server's resident memory, open files, threads and live tokio tasks are sampled. A leak shows
//! as growth after the warm-up; the report lists the samples and that growth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::client::{Connector, ws_connect};
use crate::events::{Message, next_message};
use crate::harness::{JOB_BODY, ServerRuntime, Target};
use crate::stats::Report;

pub struct Plan {
    pub minutes: f64,
    /// Jobs submitted per second.
    pub rate: u64,
    pub watchers: u64,
    pub stage_ms: u64,
    pub sample_s: u64,
}

/// What the load did, counted across its tasks.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    throttled: AtomicU64,
    cancels: AtomicU64,
    reads: AtomicU64,
    sessions: AtomicU64,
    events: AtomicU64,
    errors: AtomicU64,
}

/// One look at the server process.
#[derive(Clone, Copy, serde::Serialize)]
struct Sample {
    t_s: f64,
    rss_mib: f64,
    open_files: u64,
    threads: u64,
    tasks: f64,
    /// Jobs admitted and not ended: growing means the mix is past what the server keeps up with,
    /// which is not a leak.
    jobs_in_flight: f64,
    jobs_finished: f64,
}

pub async fn run(servers: &ServerRuntime, common: &Common, plan: Plan) -> anyhow::Result<Report> {
    let target = Target::open(servers, common, plan.stage_ms).await?;
    let result = soak(&target, common, &plan).await;
    target.close(servers).await;
    let (samples, counts) = result?;
    Ok(report(common, &plan, &samples, &counts))
}

async fn soak(target: &Target, common: &Common, plan: &Plan) -> anyhow::Result<(Vec<Sample>, Counts)> {
    let connector = Connector::new(common.client, target.addr, &target.api_key)?;
    let counts = Arc::new(Counts::default());
    let recent = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<String>::new()));
    let stop = CancellationToken::new();
    let mut tasks = vec![tokio::spawn(submit(connector.clone(), plan.rate, counts.clone(), recent.clone(), stop.clone()))];
    tasks.push(tokio::spawn(read(connector.clone(), counts.clone(), recent.clone(), stop.clone())));
    for i in 0..plan.watchers {
        let path = format!("/api/events?api_key={}", target.api_key);
        tasks.push(tokio::spawn(watch(target.addr, path, i, counts.clone(), stop.clone())));
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.minutes * 60.0);
    let mut samples = vec![];
    let mut metrics = connector.connection();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(plan.sample_s).min(end.saturating_duration_since(Instant::now()))).await;
        let exposition = match metrics.send(Method::GET, "/metrics", None).await {
            Ok(reply) => String::from_utf8_lossy(&reply.body).into_owned(),
            Err(_) => String::new(),
        };
        let finished: f64 = exposition.lines().filter(|l| l.starts_with("clipmill_jobs_finished_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
        let sample = process_sample(target.pid(), started.elapsed().as_secs_f64(), &exposition, finished);
        eprintln!(
            "soak {:>6.0} s: rss {:.0} MiB, {} open files, {} threads, {:.0} tasks, {:.0} jobs in flight, {:.0} finished",
            sample.t_s, sample.rss_mib, sample.open_files, sample.threads, sample.tasks, sample.jobs_in_flight, sample.jobs_finished
        );
        samples.push(sample);
    }
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let counts = Arc::try_unwrap(counts).map_err(|_| anyhow::anyhow!("a load task outlived the run"))?;
    Ok((samples, counts))
}

fn process_sample(pid: u32, t_s: f64, exposition: &str, jobs_finished: f64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0);
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    let tasks = clipmill::metrics::sample(exposition, "clipmill_tasks_alive").unwrap_or(0.0);
    let jobs_in_flight = clipmill::metrics::sample(exposition, "clipmill_jobs_in_flight").unwrap_or(0.0);
    Sample { t_s, rss_mib: field("VmRSS:") as f64 / 1024.0, open_files, threads: field("Threads:"), tasks, jobs_in_flight, jobs_finished }
}

/// Submits `rate` jobs a second; cancels every tenth right away; keeps the last ids for reads.
async fn submit(connector: Connector, rate: u64, counts: Arc<Counts>, recent: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>, stop: CancellationToken) {
    let mut conn = connector.connection();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut n = 0u64;
    while !stop.is_cancelled() {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        n += 1;
        let reply = match conn.send(Method::POST, "/api/jobs", Some(Bytes::from_static(JOB_BODY.as_bytes()))).await {
            Ok(reply) => reply,
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match reply.status {
            202 => {
                counts.accepted.fetch_add(1, Ordering::Relaxed);
                let id = serde_json::from_slice::<serde_json::Value>(&reply.body).ok().and_then(|v| v["id"].as_str().map(String::from));
                let Some(id) = id else { continue };
                if n.is_multiple_of(10) && conn.send(Method::DELETE, &format!("/api/jobs/{id}"), None).await.is_ok_and(|r| r.status < 300) {
                    counts.cancels.fetch_add(1, Ordering::Relaxed);
                }
                let mut recent = recent.lock().expect("recent ids");
                recent.push_back(id);
                if recent.len() > 100 {
                    recent.pop_front();
                }
            }
            429 => {
                counts.throttled.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Ten reads a second: a recent job, and the first page of the listing.
async fn read(connector: Connector, counts: Arc<Counts>, recent: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>, stop: CancellationToken) {
    let mut conn = connector.connection();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n = 0usize;
    while !stop.is_cancelled() {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => return }
        n += 1;
        let id = {
            let recent = recent.lock().expect("recent ids");
            recent.get(n % recent.len().max(1)).cloned()
        };
        let path = match id {
            Some(id) if n.is_multiple_of(2) => format!("/api/jobs/{id}"),
            _ => "/api/jobs".to_string(),
        };
        match conn.send(Method::GET, &path, None).await {
            Ok(reply) if reply.status == 200 => counts.reads.fetch_add(1, Ordering::Relaxed),
            _ => counts.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A watcher that stays 5 to 60 s (different for each), leaves, and comes back, until the end.
async fn watch(addr: std::net::SocketAddr, path: String, seed: u64, counts: Arc<Counts>, stop: CancellationToken) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while !stop.is_cancelled() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let stay = Duration::from_secs(5 + state % 56);
        let Ok(mut ws) = ws_connect(addr, &path).await else {
            counts.errors.fetch_add(1, Ordering::Relaxed);
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
        };
        counts.sessions.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + stay;
        loop {
            let message = tokio::select! { m = next_message(&mut ws, until) => m, _ = stop.cancelled() => return };
            match message {
                Message::Event { .. } => counts.events.fetch_add(1, Ordering::Relaxed),
                Message::Snapshot => 0,
                Message::TimedOut => break,
                Message::Closed(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
        }
    }
}

fn report(common: &Common, plan: &Plan, samples: &[Sample], counts: &Counts) -> Report {
    // Growth is measured from the first sample after a quarter of the run (the warm-up).
    let warm = samples.iter().find(|s| s.t_s >= plan.minutes * 15.0).or(samples.first()).copied();
    let last = samples.last().copied();
    let growth = |f: fn(&Sample) -> f64| match (warm, last) {
        (Some(w), Some(l)) => f(&l) - f(&w),
        _ => 0.0,
    };
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let json = json!({
        "scenario": "soak", "minutes": plan.minutes, "rate": plan.rate, "watchers": plan.watchers, "stage_ms": common.stage_ms_json(plan.stage_ms),
        "accepted": load(&counts.accepted), "throttled": load(&counts.throttled), "cancels": load(&counts.cancels), "reads": load(&counts.reads),
        "sessions": load(&counts.sessions), "events": load(&counts.events), "errors": load(&counts.errors),
        "growth_after_warmup": { "rss_mib": growth(|s| s.rss_mib), "open_files": growth(|s| s.open_files as f64), "threads": growth(|s| s.threads as f64), "tasks": growth(|s| s.tasks), "jobs_in_flight": growth(|s| s.jobs_in_flight) },
        "samples": samples,
    });
    let title = format!("soak: {} min, {} jobs/s, {} watchers coming and going, {}", plan.minutes, plan.rate, plan.watchers, common.server_label(plan.stage_ms));
    let mut r = Report::new(title, &["t (s)", "rss (MiB)", "open files", "threads", "tasks", "jobs in flight", "jobs finished"], json);
    let every = (samples.len() / 12).max(1);
    for s in samples.iter().enumerate().filter(|(i, _)| i % every == 0 || *i + 1 == samples.len()).map(|(_, s)| s) {
        r.row([
            format!("{:.0}", s.t_s),
            format!("{:.0}", s.rss_mib),
            s.open_files.to_string(),
            s.threads.to_string(),
            format!("{:.0}", s.tasks),
            format!("{:.0}", s.jobs_in_flight),
            format!("{:.0}", s.jobs_finished),
        ]);
    }
    r.note(format!(
        "after the warm-up (from {:.0} s): rss {:+.0} MiB, open files {:+.0}, threads {:+.0}, tasks {:+.0}, jobs in flight {:+.0}",
        warm.map_or(0.0, |w| w.t_s),
        growth(|s| s.rss_mib),
        growth(|s| s.open_files as f64),
        growth(|s| s.threads as f64),
        growth(|s| s.tasks),
        growth(|s| s.jobs_in_flight)
    ));
    r.note(format!(
        "load: {} jobs accepted ({} throttled, {} cancelled), {} reads, {} watcher sessions, {} events, {} errors",
        load(&counts.accepted),
        load(&counts.throttled),
        load(&counts.cancels),
        load(&counts.reads),
        load(&counts.sessions),
        load(&counts.events),
        load(&counts.errors)
    ));
    r
}
