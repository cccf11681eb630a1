//! The real server on 127.0.0.1:0 with its own data and scratch folders, and a client for it:
//! HTTP through reqwest, WebSocket through fastwebsockets' client handshake.

use std::net::SocketAddr;
use std::time::Duration;

use clipmill::config::Config;
use clipmill::server::Server;
use fastwebsockets::{Frame, OpCode, WebSocket};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub const KEY_A: &str = "key-tenant-a";
pub const KEY_B: &str = "key-tenant-b";

pub struct TestServer {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::load(None).unwrap();
    c.python.interpreter = super::python();
    c.python.scripts = super::root().join("python");
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = dir.join("data");
    c.scratch.dir = dir.join("scratch");
    c.server.api_keys = [(KEY_A.to_string(), "tenant-a".to_string()), (KEY_B.to_string(), "tenant-b".to_string())].into();
    c.server.retry.base_s = 0.2;
    c.fetch.allowed_networks = vec!["127.0.0.1".into()];
    c
}

impl TestServer {
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        adjust(&mut c);
        let server = Server::start(&c).await.expect("server starts");
        let addr = server.addr;
        Self { server: Some(server), addr, dir, http: reqwest::Client::new() }
    }

    /// Waits until the job is final and returns it.
    pub async fn wait_final(&self, key: &str, id: &str, within: Duration) -> serde_json::Value {
        let until = tokio::time::Instant::now() + within;
        loop {
            let job = self.get_json(key, &format!("/api/jobs/{id}")).await;
            if ["succeeded", "failed", "cancelled"].iter().any(|s| job["status"] == *s) {
                return job;
            }
            assert!(tokio::time::Instant::now() < until, "job not final in {within:?}: {job}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_json(&self, key: &str, path: &str, body: &str) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(key).header("content-type", "application/json").body(body.to_string()).send().await.unwrap()
    }

    pub async fn get(&self, key: &str, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    pub async fn get_json(&self, key: &str, path: &str) -> serde_json::Value {
        self.get(key, path).await.json().await.unwrap()
    }

    /// Creates a job and returns its id.
    pub async fn create(&self, key: &str, body: serde_json::Value) -> String {
        let resp = self.post_json(key, "/api/jobs", &body.to_string()).await;
        assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
        resp.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    pub async fn ws(&self, path: &str) -> Ws {
        ws_at(self.addr, path).await
    }

    /// The value of one sample of `/metrics` (`name` with its labels, as exposed), if present.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        clipmill::metrics::sample(&self.get(KEY_A, "/metrics").await.text().await.unwrap(), sample)
    }
}

/// Opens a WebSocket to `path` on the server at `addr`.
pub async fn ws_at(addr: std::net::SocketAddr, path: &str) -> Ws {
    ws_over(tokio::net::TcpStream::connect(addr).await.unwrap(), addr, path).await
}

/// Opens a WebSocket to `path` over a connection the caller made (to set socket options).
pub async fn ws_over(stream: tokio::net::TcpStream, addr: std::net::SocketAddr, path: &str) -> Ws {
    let req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", fastwebsockets::handshake::generate_key())
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (ws, _) = fastwebsockets::handshake::client(&Spawn, req, stream).await.expect("websocket handshake");
    Ws(fastwebsockets::FragmentCollector::new(ws))
}

pub struct Ws(pub fastwebsockets::FragmentCollector<TokioIo<hyper::upgrade::Upgraded>>);

/// What a WebSocket read gave: a JSON message, or the close code and reason.
#[derive(Debug)]
pub enum Msg {
    Json(serde_json::Value),
    Closed(u16, String),
}

impl Ws {
    pub async fn next(&mut self, within: Duration) -> Msg {
        loop {
            let frame = tokio::time::timeout(within, self.0.read_frame()).await.expect("websocket message in time").expect("websocket frame");
            match frame.opcode {
                OpCode::Text => return Msg::Json(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => {
                    let p = frame.payload.to_vec();
                    let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                    return Msg::Closed(code, String::from_utf8_lossy(p.get(2..).unwrap_or_default()).to_string());
                }
                _ => {}
            }
        }
    }

    pub async fn json(&mut self, within: Duration) -> serde_json::Value {
        match self.next(within).await {
            Msg::Json(v) => v,
            Msg::Closed(code, reason) => panic!("websocket closed: {code} {reason}"),
        }
    }

    pub async fn send_raw(&mut self, frame: Frame<'_>) {
        self.0.write_frame(frame).await.unwrap();
    }
}

struct Spawn;

impl<Fut> hyper::rt::Executor<Fut> for Spawn
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// Serves the talk fixture over HTTP on 127.0.0.1 and returns its URL.
pub async fn talk_url() -> String {
    fixture_url("talk.mp4").await
}

/// A generated fixture served over http on loopback.
pub async fn fixture_url(name: &str) -> String {
    let video = std::fs::read(super::fixture(name)).unwrap();
    let addr = super::http::serve(move |_, _| {
        let video = video.clone();
        async move { super::http::reply(200, "video/mp4", video) }
    })
    .await;
    format!("http://{addr}/{name}")
}

pub type WsSocket = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// What a watcher saw of one job until it was done: the stages started, in order, and the
/// clip_ready events. Checks that event ids increase and every event is the job's.
pub struct JobEvents {
    pub started: Vec<String>,
    pub clips: Vec<serde_json::Value>,
    /// Every event's type, and its stage if it has one ("stage_finished faces"), in order.
    pub timeline: Vec<String>,
    /// The id of the job_done event.
    pub last_id: u64,
}

pub async fn follow_job(ws: &mut Ws, id: &str, within: Duration) -> JobEvents {
    let (mut last_id, mut started, mut clips, mut timeline) = (0, Vec::new(), Vec::new(), Vec::new());
    loop {
        let event = ws.json(within).await;
        let event_id = event["id"].as_u64().unwrap();
        assert!(event_id > last_id, "event ids increase: {event}");
        last_id = event_id;
        assert_eq!(event["job"], id);
        timeline.push(format!("{} {}", event["type"].as_str().unwrap(), event["stage"].as_str().unwrap_or("")).trim_end().to_string());
        match event["type"].as_str().unwrap() {
            "stage_started" => started.push(event["stage"].as_str().unwrap().to_string()),
            "clip_ready" => clips.push(event),
            "job_done" => return JobEvents { started, clips, timeline, last_id },
            "job_failed" => panic!("job failed: {event}"),
            _ => {}
        }
    }
}
