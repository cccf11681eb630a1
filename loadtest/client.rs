//! The client side: loopback target checks, HTTP connections (hyper or reqwest), the closed-loop
//! driver that issues a bounded number of requests from a fixed number of workers, and WebSocket
//! connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;

use crate::stats::Samples;

/// Parses `http://127.x.x.x:PORT` or `http://[::1]:PORT`; anything else is refused.
pub fn loopback_addr(target: &str) -> anyhow::Result<SocketAddr> {
    let url = url::Url::parse(target).with_context(|| format!("target {target:?} is not a url"))?;
    ensure!(url.scheme() == "http", "target must be http://127.x.x.x:PORT or http://[::1]:PORT");
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.into(),
        Some(url::Host::Ipv6(ip)) => ip.into(),
        _ => bail!("target host must be a loopback address literal (127.0.0.0/8 or [::1]), not a name"),
    };
    let addr = SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80));
    ensure_loopback(addr)?;
    Ok(addr)
}

/// The one check every connection passes: this tool only ever talks to this machine.
pub fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    // `is_loopback` is exactly 127.0.0.0/8 for IPv4 and ::1 for IPv6.
    ensure!(addr.ip().is_loopback(), "refusing {addr}: only loopback targets are allowed");
    Ok(())
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ClientKind {
    /// One hyper http1 connection per worker, kept alive.
    Hyper,
    /// One reqwest client (connection pool) shared by all workers.
    Reqwest,
}

/// What a request got back.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// Makes connections of one kind to one server.
#[derive(Clone)]
pub struct Connector {
    kind: ClientKind,
    addr: SocketAddr,
    key: Arc<str>,
    reqwest: reqwest::Client,
}

impl Connector {
    pub fn new(kind: ClientKind, addr: SocketAddr, api_key: &str) -> anyhow::Result<Self> {
        ensure_loopback(addr)?;
        let reqwest = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(30)).build()?;
        Ok(Self { kind, addr, key: api_key.into(), reqwest })
    }

    pub fn connection(&self) -> Connection {
        Connection { connector: self.clone(), sender: None }
    }
}

/// One worker's way to the server: its own keep-alive connection (hyper), or the shared pool.
pub struct Connection {
    connector: Connector,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub async fn send(&mut self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Reply> {
        match self.connector.kind {
            ClientKind::Hyper => {
                let result = self.send_hyper(method, path, body).await;
                if result.is_err() {
                    // Start over on a fresh connection next time.
                    self.sender = None;
                }
                result
            }
            ClientKind::Reqwest => self.send_reqwest(method, path, body).await,
        }
    }

    async fn send_hyper(&mut self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Reply> {
        let c = &self.connector;
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(http1_connect(c.addr).await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, c.addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {}", c.key));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let resp = sender.send_request(req.body(Full::new(body.unwrap_or_default()))?).await?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()));
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, retry_after, body })
    }

    async fn send_reqwest(&mut self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Reply> {
        let c = &self.connector;
        let mut req = c.reqwest.request(method, format!("http://{}{path}", c.addr)).bearer_auth(&c.key);
        if let Some(body) = body {
            req = req.header(header::CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()));
        let body = resp.bytes().await?;
        Ok(Reply { status, retry_after, body })
    }
}

fn retry_after(value: Option<&str>) -> Option<Duration> {
    value.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

async fn http1_connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    ensure_loopback(addr)?;
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A closed loop: `concurrency` workers share `count` requests, each sending its next one when
/// the previous answered, until all are sent or `deadline` passes.
pub struct Load {
    pub count: u64,
    pub concurrency: u64,
    pub deadline: Instant,
}

/// What the workers saw, merged.
#[derive(Default)]
pub struct LoadResult {
    /// Milliseconds from send to full body, of 2xx replies only.
    pub latencies: Samples,
    pub ok: u64,
    /// 429 replies (each retried after Retry-After, at most one second).
    pub throttled: u64,
    /// Other non-2xx replies.
    pub rejected: u64,
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// When the clock started (connections open, first request about to go).
    pub started: Option<Instant>,
    /// From the first send to the last 2xx reply.
    pub busy: Duration,
    /// 2xx bodies, when asked for.
    pub bodies: Vec<Bytes>,
}

impl LoadResult {
    pub fn ok_per_s(&self) -> f64 {
        if self.busy.is_zero() { 0.0 } else { self.ok as f64 / self.busy.as_secs_f64() }
    }

    pub fn errors(&self) -> u64 {
        self.rejected + self.transport_errors
    }

    fn merge(&mut self, other: LoadResult) {
        self.latencies.append(other.latencies);
        self.ok += other.ok;
        self.throttled += other.throttled;
        self.rejected += other.rejected;
        self.transport_errors += other.transport_errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.busy = self.busy.max(other.busy);
        self.bodies.extend(other.bodies);
    }
}

/// Tries of one request that keeps getting 429, before it counts as rejected.
const MAX_TRIES: u32 = 100;
/// A worker that fails this many times in a row stops: the server is gone.
const MAX_ERRORS_IN_A_ROW: u32 = 50;

/// Runs `load` against `connector`: request `i` is `make(i)`. Connections are opened (and warmed
/// with one `GET /healthz`) before the clock starts. Keeps 2xx bodies when `keep_bodies`.
pub async fn drive<F>(connector: &Connector, load: Load, keep_bodies: bool, make: F) -> LoadResult
where
    F: Fn(u64) -> (Method, String, Option<Bytes>) + Send + Sync + 'static,
{
    let mut connections = Vec::new();
    for _ in 0..load.concurrency {
        let mut conn = connector.connection();
        let _ = conn.send(Method::GET, "/healthz", None).await;
        connections.push(conn);
    }
    let next = Arc::new(AtomicU64::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut workers = Vec::new();
    for conn in connections {
        let (next, make) = (next.clone(), make.clone());
        let Load { count, deadline, .. } = load;
        workers.push(tokio::spawn(async move { worker(conn, next, count, deadline, started, keep_bodies, &*make).await }));
    }
    let mut total = LoadResult { started: Some(started), ..Default::default() };
    for w in workers {
        match w.await {
            Ok(part) => total.merge(part),
            Err(e) => total.first_error = total.first_error.or(Some(format!("worker panicked: {e}"))),
        }
    }
    total
}

async fn worker<F>(mut conn: Connection, next: Arc<AtomicU64>, count: u64, deadline: Instant, started: Instant, keep_bodies: bool, make: &F) -> LoadResult
where
    F: Fn(u64) -> (Method, String, Option<Bytes>),
{
    let mut out = LoadResult { latencies: Samples::with_capacity(1024), ..Default::default() };
    let mut errors_in_a_row = 0;
    'requests: while Instant::now() < deadline && errors_in_a_row < MAX_ERRORS_IN_A_ROW {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            break;
        }
        let (method, path, body) = make(i);
        for _ in 0..MAX_TRIES {
            let sent = Instant::now();
            let reply = match tokio::time::timeout_at(deadline.into(), conn.send(method.clone(), &path, body.clone())).await {
                Err(_) => break 'requests,
                Ok(reply) => reply,
            };
            match reply {
                Ok(r) if (200..300).contains(&r.status) => {
                    out.latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    out.ok += 1;
                    out.busy = started.elapsed();
                    if keep_bodies {
                        out.bodies.push(r.body);
                    }
                    errors_in_a_row = 0;
                }
                Ok(r) if r.status == 429 => {
                    out.throttled += 1;
                    let wait = r.retry_after.unwrap_or(Duration::from_millis(100)).min(Duration::from_secs(1));
                    if Instant::now() + wait >= deadline {
                        break 'requests;
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(r) => {
                    out.rejected += 1;
                    errors_in_a_row += 1;
                    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned();
                    out.first_error.get_or_insert(format!("{} {path}: {} {text}", method, r.status));
                }
                Err(e) => {
                    out.transport_errors += 1;
                    errors_in_a_row += 1;
                    out.first_error.get_or_insert(format!("{method} {path}: {e:#}"));
                }
            }
            continue 'requests;
        }
        // Still throttled after every try.
        out.rejected += 1;
    }
    out
}

/// A client WebSocket, with fragments reassembled and pings answered.
pub type WsClient = fastwebsockets::FragmentCollector<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a WebSocket to `path` on `addr` (path carries any query, e.g. `?api_key=`).
pub async fn ws_connect(addr: SocketAddr, path: &str) -> anyhow::Result<WsClient> {
    ensure_loopback(addr)?;
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header("sec-websocket-key", fastwebsockets::handshake::generate_key())
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())?;
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await?;
    Ok(fastwebsockets::FragmentCollector::new(ws))
}

/// Runs hyper's connection futures on the current tokio runtime.
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_pass() {
        assert_eq!(loopback_addr("http://127.0.0.1:8080").unwrap().port(), 8080);
        assert!(loopback_addr("http://127.1.2.3:1").is_ok());
        assert!(loopback_addr("http://[::1]:9").is_ok());
        for bad in ["http://10.0.0.1:80", "http://localhost:80", "http://example.com", "https://127.0.0.1:1", "http://[::2]:1", "127.0.0.1:80"] {
            assert!(loopback_addr(bad).is_err(), "{bad} should be refused");
        }
    }
}
