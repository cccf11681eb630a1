//! `watchers`: W WebSocket clients on `/api/events` while J no-op jobs run; every event's delivery
//! latency is its receive time minus its `ts_ms`, stamped when the job reported it. The same clients then
//! watch a plain fan-out server (`fanout`) replaying those events on the same schedule, for a
//! floor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use hyper::Method;
use hyper::body::Bytes;
use serde_json::json;

use crate::Common;
use crate::client::{Connector, Load, WsClient, drive, ws_connect};
use crate::events::{Countdown, EVENTS_PER_JOB, Message, Published, next_message};
use crate::fanout::Fanout;
use crate::harness::{JOB_BODY, ServerRuntime, Target, raise_nofile_limit};
use crate::stats::{Report, Samples, Summary, ms, ratio, round};

pub struct Plan {
    pub count: u64,
    pub jobs: u64,
    pub stage_ms: u64,
    pub batch: u64,
}

/// One server's run: how many watchers held on, and every delivery they timed.
struct Phase {
    connected: u64,
    connect_failures: u64,
    first_connect_error: Option<String>,
    jobs: u64,
    delivered: u64,
    disconnects: u64,
    first_disconnect: Option<String>,
    latency: Summary,
}

impl Phase {
    fn expected(&self) -> u64 {
        self.connected * self.jobs * EVENTS_PER_JOB
    }

    fn json(&self) -> serde_json::Value {
        json!({ "connected": self.connected, "jobs": self.jobs, "delivered": self.delivered, "expected": self.expected(),
                "disconnects": self.disconnects, "latency_ms": self.latency.json() })
    }
}

pub async fn run(servers: &ServerRuntime, common: &Common, plan: Plan) -> anyhow::Result<Report> {
    let limit = raise_nofile_limit();
    // An in-process server holds the other end of every socket.
    let elsewhere = common.target.is_some() || common.servers_process;
    let needed = plan.count * if elsewhere { 1 } else { 2 } + 256;
    ensure!(
        limit >= needed,
        "{} watchers need about {needed} open files; the limit is {limit}{}",
        plan.count,
        if elsewhere { "" } else { " (--servers-process halves it)" }
    );

    let target = Target::open(servers, common, plan.stage_ms).await?;
    let path = format!("/api/events?api_key={}", target.api_key);
    let connector = Connector::new(common.client, target.addr, &target.api_key)?;
    let (jobs, timeout) = (plan.jobs, common.timeout());
    let scraper = connector.clone();
    let submit = async move {
        let load = Load { count: jobs, concurrency: jobs.min(8), deadline: Instant::now() + timeout };
        let body = Bytes::from_static(JOB_BODY.as_bytes());
        drive(&connector, load, false, move |_| (Method::POST, "/api/jobs".into(), Some(body.clone()))).await.ok
    };
    let clipmill = phase(target.addr, &path, &plan, common.timeout(), submit).await;
    let writes = ws_writes(&scraper).await;
    target.close(servers).await;
    let (clipmill, mut schedule) = clipmill?;
    if schedule.is_empty() {
        schedule = crate::fanout::burst(plan.jobs);
    }

    let mut fanout = Fanout::start(servers, common.servers_process.then_some(common)).await?;
    let addr = fanout.addr;
    let baseline = phase(addr, "/", &plan, common.timeout(), fanout.publish(servers, schedule)).await;
    fanout.close().await;
    Ok(report(common, &plan, clipmill, baseline?.0, writes))
}

/// The server's own count of WebSocket writes and of the events they carried (`/metrics`), when
/// it exports them: how well fan-out batched.
async fn ws_writes(connector: &Connector) -> Option<WsWrites> {
    let reply = connector.connection().send(Method::GET, "/metrics", None).await.ok()?;
    let text = std::str::from_utf8(&reply.body).ok()?;
    let value = |name| clipmill::metrics::sample(text, name).map(|v| v as u64);
    Some(WsWrites { writes: value("clipmill_ws_writes_total")?, events: value("clipmill_ws_events_total")? })
}

struct WsWrites {
    writes: u64,
    events: u64,
}

/// Connects the watchers, waits for their snapshots, sets off `fire` (which returns how many
/// jobs it started), and collects deliveries until all arrived or the time cap passes. Also
/// returns the events as the first watcher saw them: the publishing schedule.
async fn phase(
    addr: SocketAddr,
    path: &str,
    plan: &Plan,
    timeout: Duration,
    fire: impl Future<Output = u64>,
) -> anyhow::Result<(Phase, Vec<Published>)> {
    let deadline = Instant::now() + timeout;
    let (sockets, connect_failures, first_connect_error) = connect_all(addr, path, plan.count, plan.batch, deadline).await;
    ensure!(!sockets.is_empty(), "no watcher could connect: {}", first_connect_error.unwrap_or_default());
    let connected = sockets.len() as u64;
    let expected_each = plan.jobs * EVENTS_PER_JOB;
    let countdown = Countdown::new(connected * expected_each);
    let readers: Vec<_> =
        sockets.into_iter().enumerate().map(|(i, ws)| tokio::spawn(read_events(ws, countdown.clone(), expected_each, i == 0))).collect();
    let jobs = fire.await;
    countdown.expect(connected * jobs * EVENTS_PER_JOB);
    let cap = countdown.cap(deadline);
    let mut all = Samples::with_capacity((connected * expected_each) as usize);
    let (mut disconnects, mut first_disconnect, mut schedule) = (0, None, vec![]);
    for reader in readers {
        let mut watcher = reader.await?;
        if watcher.schedule.len() > schedule.len() {
            schedule = std::mem::take(&mut watcher.schedule);
        }
        if let Some(reason) = watcher.closed {
            disconnects += 1;
            first_disconnect.get_or_insert(reason);
        }
        all.append(watcher.latencies);
    }
    cap.abort();
    let delivered = all.len() as u64;
    let phase = Phase { connected, connect_failures, first_connect_error, jobs, delivered, disconnects, first_disconnect, latency: all.summary() };
    Ok((phase, schedule))
}

/// Opens `count` sockets, `batch` at a time, each waiting for its snapshot.
async fn connect_all(addr: SocketAddr, path: &str, count: u64, batch: u64, deadline: Instant) -> (Vec<WsClient>, u64, Option<String>) {
    let mut sockets = Vec::with_capacity(count as usize);
    let (mut failures, mut first_error) = (0, None);
    let mut left = count;
    while left > 0 && Instant::now() < deadline {
        let n = left.min(batch);
        left -= n;
        let attempts: Vec<_> = (0..n)
            .map(|_| {
                let path = path.to_string();
                tokio::spawn(async move {
                    let mut ws = ws_connect(addr, &path).await?;
                    match next_message(&mut ws, Instant::now() + Duration::from_secs(10)).await {
                        Message::Snapshot => Ok(ws),
                        other => anyhow::bail!("expected a snapshot, got {other:?}"),
                    }
                })
            })
            .collect();
        for attempt in attempts {
            match attempt.await.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(ws) => sockets.push(ws),
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
            }
        }
    }
    (sockets, failures + left, first_error)
}

/// What one watcher received.
struct Watcher {
    latencies: Samples,
    /// Why the socket ended before everything arrived, if it did.
    closed: Option<String>,
    /// Every event received, when asked to keep them.
    schedule: Vec<Published>,
}

/// Reads events until every watcher has all it should get (`countdown`), or the socket ends.
async fn read_events(ws: WsClient, countdown: Arc<Countdown>, capacity: u64, record: bool) -> Watcher {
    let mut w = Watcher { latencies: Samples::with_capacity(capacity as usize), closed: None, schedule: vec![] };
    let mut reader = countdown.reader(ws);
    while let Some(message) = reader.next().await {
        match message {
            Message::Event { kind, ts_ms, latency_ms } => {
                w.latencies.push(latency_ms);
                if record {
                    w.schedule.push(Published { ts_ms, kind });
                }
                countdown.arrive();
            }
            Message::Snapshot => {}
            Message::TimedOut => break,
            Message::Closed(reason) => {
                w.closed = Some(reason);
                break;
            }
        }
    }
    w
}

fn report(common: &Common, plan: &Plan, clipmill: Phase, baseline: Phase, writes: Option<WsWrites>) -> Report {
    let json = json!({
        "server_ws_writes": writes.as_ref().map(|w| w.writes), "server_ws_events": writes.as_ref().map(|w| w.events),
        "scenario": "watchers", "watchers": plan.count, "jobs": plan.jobs, "stage_ms": common.stage_ms_json(plan.stage_ms),
        "events_per_job": EVENTS_PER_JOB, "clipmill": clipmill.json(), "baseline": baseline.json(),
        "p50_ratio": round(clipmill.latency.p50 / baseline.latency.p50.max(1e-9)),
        "p99_ratio": round(clipmill.latency.p99 / baseline.latency.p99.max(1e-9)),
    });
    let server = common.server_label(plan.stage_ms);
    let title = format!("watchers: {} sockets, {} no-op jobs ({EVENTS_PER_JOB} events each), {server}", plan.count, plan.jobs);
    let mut r = Report::new(title, &["metric", "clipmill", "baseline", "ratio"], json);
    let (c, b) = (&clipmill, &baseline);
    r.row(["watchers connected".into(), c.connected.to_string(), b.connected.to_string(), String::new()]);
    r.row(["events delivered / expected".into(), format!("{} / {}", c.delivered, c.expected()), format!("{} / {}", b.delivered, b.expected()), String::new()]);
    r.row(["disconnects".into(), c.disconnects.to_string(), b.disconnects.to_string(), String::new()]);
    for (name, pick) in [("latency p50", 0), ("latency p95", 1), ("latency p99", 2), ("latency max", 3)] {
        let get = |s: &Summary| [s.p50, s.p95, s.p99, s.max][pick];
        r.row([name.into(), ms(get(&c.latency)), ms(get(&b.latency)), ratio(get(&c.latency), get(&b.latency))]);
    }
    if let Some(w) = &writes {
        let per_write = w.events as f64 / w.writes.max(1) as f64;
        r.row(["socket writes (events each)".into(), format!("{} ({per_write:.1})", w.writes), format!("{} (1.0)", b.delivered), String::new()]);
    }
    r.note("latency = receive time - ts_ms; ts_ms is whole milliseconds, so values carry up to +1 ms");
    r.note("the baseline replays the events clipmill published, with the same spacing");
    for (who, p) in [("clipmill", c), ("baseline", b)] {
        if p.connect_failures > 0 {
            r.note(format!("{who}: {} watchers failed to connect: {}", p.connect_failures, p.first_connect_error.clone().unwrap_or_default()));
        }
        if let Some(reason) = &p.first_disconnect {
            r.note(format!("{who}: first disconnect: {reason}"));
        }
        if p.jobs < plan.jobs {
            r.note(format!("{who}: only {} of {} jobs started", p.jobs, plan.jobs));
        }
    }
    r
}
