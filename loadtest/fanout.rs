//! The `watchers` baseline: the least a WebSocket fan-out can do. A hyper http1 server upgrades
//! every request with fastwebsockets, sends a snapshot, then writes each message of one tokio
//! broadcast channel to the socket. Messages are serialised once, carry `ts_ms` like clipmill's
//! events, and replay the schedule clipmill published its events on (same count, same spacing),
//! so both servers face the same load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clipmill::job::{Stage, now_ms};
use fastwebsockets::{Frame, Payload};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::events::Published;
use crate::harness::{HostProcess, Hosted, ServerRuntime};

/// As clipmill's hub, so a lagging client is treated alike.
const CAPACITY: usize = clipmill::actors::progress_hub::FANOUT_CAPACITY;
const SNAPSHOT: &[u8] = br#"{"type":"snapshot","jobs":[]}"#;

pub struct Fanout {
    pub addr: SocketAddr,
    place: Place,
}

enum Place {
    Here { tx: broadcast::Sender<Bytes>, next_id: Arc<AtomicU64>, stop: CancellationToken },
    /// `--servers-process`: the same server, in a child process.
    Child(Box<HostProcess>),
}

impl Fanout {
    /// Listens on 127.0.0.1:0 on the server runtime, or, given the run's options, in a child
    /// process (`--servers-process`).
    pub async fn start(servers: &ServerRuntime, child: Option<&Common>) -> anyhow::Result<Self> {
        if let Some(common) = child {
            let host = HostProcess::start(Hosted::Fanout, common, 0).await?;
            return Ok(Self { addr: host.addr, place: Place::Child(Box::new(host)) });
        }
        let listener = servers.run(tokio::net::TcpListener::bind("127.0.0.1:0")).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel(CAPACITY);
        let stop = CancellationToken::new();
        servers.spawn(accept(listener, tx.clone(), stop.clone()));
        Ok(Self { addr, place: Place::Here { tx, next_id: Arc::new(AtomicU64::new(1)), stop } })
    }

    /// Publishes `schedule`: each event when its `ts_ms` comes round again (relative to the
    /// first), stamped with the time it is sent. Returns how many jobs' worth of events went out.
    ///
    /// The publisher is a thread of the server runtime's blocking pool rather than a task, so its
    /// pace does not depend on how busy the socket tasks keep the runtime.
    pub async fn publish(&mut self, servers: &ServerRuntime, schedule: Vec<Published>) -> u64 {
        match &mut self.place {
            Place::Here { tx, next_id, .. } => {
                let (tx, ids) = (tx.clone(), next_id.clone());
                let jobs = schedule.iter().filter(|e| e.kind == "job_done").count() as u64;
                let replay = servers.handle().spawn_blocking(move || replay(&tx, &ids, schedule));
                if replay.await.is_ok() { jobs } else { 0 }
            }
            Place::Child(host) => host.replay(&schedule).await.unwrap_or_else(|e| {
                eprintln!("loadtest: the fan-out process failed to replay: {e:#}");
                0
            }),
        }
    }

    pub async fn close(self) {
        match self.place {
            Place::Here { stop, .. } => stop.cancel(),
            Place::Child(host) => host.close().await,
        }
    }
}

/// Sends `schedule` with its original spacing (blocking: run it on a thread of its own). Each
/// message is serialised once, in the shape of a clipmill event.
fn replay(tx: &broadcast::Sender<Bytes>, ids: &AtomicU64, schedule: Vec<Published>) {
    let (origin, first) = (std::time::Instant::now(), schedule.first().map_or(0, |e| e.ts_ms));
    for event in schedule {
        let due = origin + Duration::from_millis(event.ts_ms.saturating_sub(first));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let stage = if event.kind.starts_with("stage_") { r#","stage":"download""# } else { "" };
        let (id, job) = (ids.fetch_add(1, Ordering::Relaxed), uuid::Uuid::now_v7());
        let msg = format!(r#"{{"id":{id},"job":"{job}","ts_ms":{},"type":"{}"{stage}}}"#, now_ms(), event.kind);
        let _ = tx.send(Bytes::from(msg));
    }
}

/// What no-op jobs publish when nothing was recorded to replay: every event of `jobs` jobs at once.
pub fn burst(jobs: u64) -> Vec<Published> {
    let one_job = Stage::ALL.iter().flat_map(|_| ["stage_started", "stage_finished"]).chain(["job_done"]);
    (0..jobs).flat_map(|_| one_job.clone()).map(|kind| Published { ts_ms: 0, kind: kind.into() }).collect()
}

async fn accept(listener: tokio::net::TcpListener, tx: broadcast::Sender<Bytes>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, most likely: back off rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Socket options as clipmill's, which leaves Nagle on. It matters: with TCP_NODELAY every
        // small frame is a segment of its own, and at 2000 watchers on 2 cores this server
        // measured 2-3x slower than with Nagle batching frames under load.
        let tx = tx.clone();
        let service = hyper::service::service_fn(move |req| {
            let tx = tx.clone();
            async move { Ok::<_, Infallible>(upgrade(req, &tx)) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
        });
    }
}

fn upgrade(mut req: Request<Incoming>, tx: &broadcast::Sender<Bytes>) -> Response<Empty<Bytes>> {
    let refuse = |status| Response::builder().status(status).body(Empty::new()).expect("valid response");
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let Ok((response, upgraded)) = fastwebsockets::upgrade::upgrade(&mut req) else {
        return refuse(StatusCode::BAD_REQUEST);
    };
    // Subscribe before answering, as clipmill does, so nothing published afterwards is missed.
    let mut rx = tx.subscribe();
    tokio::spawn(async move {
        let Ok(mut ws) = upgraded.await else { return };
        if ws.write_frame(Frame::text(Payload::Borrowed(SNAPSHOT))).await.is_err() {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if ws.write_frame(Frame::text(Payload::Borrowed(&msg))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = ws.write_frame(Frame::close(1008, b"client too slow")).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    response
}
