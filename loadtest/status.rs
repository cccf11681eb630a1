//! `status`: `GET /api/jobs/{id}` of one finished job, N times from C workers; then the same load
//! on a hyper hello-world server answering fixed JSON, for a floor. The baseline answers the very
//! bytes clipmill answered, so the two differ only in the work done per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::client::{Connection, Connector, Load, LoadResult, drive};
use crate::harness::{JOB_BODY, ServerRuntime, Target};
use crate::stats::{Report, Summary, ms, per_s, ratio, round};

pub struct Plan {
    pub count: u64,
    pub concurrency: u64,
}

pub async fn run(servers: &ServerRuntime, common: &Common, plan: Plan) -> anyhow::Result<Report> {
    let target = Target::open(servers, common, 0).await?;
    let connector = Connector::new(common.client, target.addr, &target.api_key)?;
    let prepared = finished_job(&mut connector.connection()).await;
    let measured = match prepared {
        Ok((path, body)) => Ok((get_load(&connector, &plan, common, &path).await, path, body)),
        Err(e) => Err(e),
    };
    target.close(servers).await;
    let (clipmill, path, body) = measured?;

    let hello = Hello::start(servers, body.clone()).await?;
    let baseline = get_load(&Connector::new(common.client, hello.addr, &common.api_key)?, &plan, common, &path).await;
    hello.close();
    Ok(report(common, &plan, clipmill, baseline, body.len()))
}

/// Creates a job, waits (at most 10 s) until it ended, and returns its path and JSON.
async fn finished_job(conn: &mut Connection) -> anyhow::Result<(String, Bytes)> {
    let created = conn.send(Method::POST, "/api/jobs", Some(Bytes::from_static(JOB_BODY.as_bytes()))).await?;
    ensure!(created.status == 202, "POST /api/jobs answered {}: {}", created.status, String::from_utf8_lossy(&created.body));
    let created: serde_json::Value = serde_json::from_slice(&created.body)?;
    let id = created["id"].as_str().context("POST /api/jobs answered no id")?;
    let path = format!("/api/jobs/{id}");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = conn.send(Method::GET, &path, None).await?;
        ensure!(reply.status == 200, "GET {path} answered {}", reply.status);
        let job: serde_json::Value = serde_json::from_slice(&reply.body)?;
        let status = job["status"].as_str().unwrap_or_default();
        if matches!(status, "succeeded" | "failed" | "cancelled") || Instant::now() >= until {
            return Ok((path, reply.body));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_load(connector: &Connector, plan: &Plan, common: &Common, path: &str) -> LoadResult {
    let load = Load { count: plan.count, concurrency: plan.concurrency, deadline: Instant::now() + common.timeout() };
    let path = path.to_string();
    drive(connector, load, false, move |_| (Method::GET, path.clone(), None)).await
}

/// The baseline: hyper 1, http1, one `service_fn` answering fixed JSON to every request.
struct Hello {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Hello {
    async fn start(servers: &ServerRuntime, body: Bytes) -> anyhow::Result<Self> {
        let listener = servers.run(tokio::net::TcpListener::bind("127.0.0.1:0")).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        servers.spawn(serve_hello(listener, body, stop.clone()));
        Ok(Self { addr, stop })
    }

    fn close(self) {
        self.stop.cancel();
    }
}

async fn serve_hello(listener: tokio::net::TcpListener, body: Bytes, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Nagle left on, as clipmill leaves it, so only the work per request differs.
        let body = body.clone();
        let service = hyper::service::service_fn(move |_req| {
            let resp = Response::builder().header("content-type", "application/json").body(Full::new(body.clone()));
            async move { Ok::<_, Infallible>(resp.expect("valid response")) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn report(common: &Common, plan: &Plan, clipmill: LoadResult, baseline: LoadResult, body_len: usize) -> Report {
    let (c_rate, b_rate) = (clipmill.ok_per_s(), baseline.ok_per_s());
    let (c_ok, b_ok, c_err, b_err) = (clipmill.ok, baseline.ok, clipmill.errors(), baseline.errors());
    let notes: Vec<String> = [("clipmill", &clipmill.first_error), ("baseline", &baseline.first_error)]
        .iter()
        .filter_map(|(who, e)| e.as_ref().map(|e| format!("{who}: first error: {e}")))
        .collect();
    let (c, b): (Summary, Summary) = (clipmill.latencies.summary(), baseline.latencies.summary());
    let side = |rate: f64, s: &Summary, ok: u64, errors: u64| {
        json!({ "ok": ok, "errors": errors, "req_per_s": round(rate), "latency_ms": s.json() })
    };
    let json = json!({
        "scenario": "status", "client": format!("{:?}", common.client).to_lowercase(), "count": plan.count,
        "concurrency": plan.concurrency, "body_bytes": body_len,
        "clipmill": side(c_rate, &c, c_ok, c_err), "baseline": side(b_rate, &b, b_ok, b_err),
        "throughput_ratio": round(c_rate / b_rate.max(1e-9)), "p50_ratio": round(c.p50 / b.p50.max(1e-9)),
    });
    let title = format!("status: {} GETs of one job, {} workers, {:?} client", plan.count, plan.concurrency, common.client);
    let mut r = Report::new(title, &["metric", "clipmill", "baseline", "ratio"], json);
    r.row(["ok (200)".into(), c_ok.to_string(), b_ok.to_string(), String::new()]);
    r.row(["errors".into(), c_err.to_string(), b_err.to_string(), String::new()]);
    r.row(["throughput".into(), per_s(c_rate), per_s(b_rate), ratio(c_rate, b_rate)]);
    for (name, pick) in [("latency p50", 0), ("latency p95", 1), ("latency p99", 2), ("latency max", 3)] {
        let get = |s: &Summary| [s.p50, s.p95, s.p99, s.max][pick];
        r.row([name.into(), ms(get(&c)), ms(get(&b)), ratio(get(&c), get(&b))]);
    }
    r.note(format!("the baseline answers the same {body_len}-byte JSON clipmill answered"));
    for n in notes {
        r.note(n);
    }
    r
}
