//! The SSRF guard: a tenant's URL reaches no private or reserved address, however it is spelled,
//! redirected or handed to yt-dlp, unless `fetch.allow_private_networks` (or an allow-listed
//! network) says so. Real servers on 127.0.0.1 and 127.0.0.2, the real yt-dlp, a real server.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clipmill::analysis::fetch::{FetchError, Fetcher};
use clipmill::config::{Config, FetchConfig};
use clipmill::persist::Scratch;
use common::http::{Reply, reply, serve_at};
use common::server::{KEY_A, TestServer};
use common::*;
use serde_json::json;

fn fetcher(cache: &std::path::Path, adjust: impl FnOnce(&mut FetchConfig)) -> Fetcher {
    let loaded = Config::load(None).unwrap();
    let mut config = loaded.fetch;
    config.ytdlp = root().join(".venv/bin/yt-dlp");
    config.timeout_s = 120;
    adjust(&mut config);
    Fetcher::new(&config, cache.to_path_buf(), Scratch::new(cache.to_path_buf(), &loaded.scratch), engine().clone())
}

/// A server on `ip` answering `route(path)`, and how many requests it has had.
async fn counted(ip: &str, route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let route = Arc::new(route);
    let addr = serve_at(ip, move |path, _| {
        count.fetch_add(1, Ordering::SeqCst);
        let route = route.clone();
        async move { route(&path) }
    })
    .await;
    (addr, hits)
}

fn redirect(to: String) -> Reply {
    hyper::Response::builder().status(302).header("location", to).body(http_body_util::Full::new(Default::default())).unwrap()
}

/// The "internal" server on 127.0.0.2 with the media, and the "public" one on 127.0.0.1 whose
/// pages and redirects point at it.
async fn servers() -> ((SocketAddr, Arc<AtomicUsize>), (SocketAddr, Arc<AtomicUsize>)) {
    let video = std::fs::read(fixture("talk.mp4")).unwrap();
    let inner = counted("127.0.0.2", move |path| match path {
        "/talk.mp4" => reply(200, "video/mp4", video.clone()),
        _ => reply(404, "text/plain", "not found"),
    })
    .await;
    let private = inner.0;
    let video = std::fs::read(fixture("talk.mp4")).unwrap();
    let outer = counted("127.0.0.1", move |path| match path {
        "/talk.mp4" => reply(200, "video/mp4", video.clone()),
        "/to-private" => redirect(format!("http://{private}/talk.mp4")),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/".into()),
        "/to-mapped" => redirect(format!("http://[::ffff:127.0.0.2]:{}/talk.mp4", private.port())),
        "/watch" => reply(200, "text/html", format!("<html><body><video src=\"http://{private}/talk.mp4\"></video></body></html>")),
        _ => reply(404, "text/plain", "not found"),
    })
    .await;
    (outer, inner)
}

fn refused(result: Result<clipmill::analysis::fetch::Fetched, FetchError>, url: &str) {
    let err = result.map(|f| f.path).expect_err(url);
    assert_eq!(err.code(), "url_not_allowed", "{url}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_fetches_and_their_redirects_never_reach_a_private_address_unless_allowed() {
    let ((outer, outer_hits), (_, inner_hits)) = servers().await;
    let port = outer.port();
    let cache = tempfile::tempdir().unwrap();

    // The default policy: loopback in every spelling, a name resolving to it, private, link-local
    // (the cloud metadata service) and IPv4-mapped IPv6 addresses are refused before any byte
    // is sent.
    let guarded = fetcher(cache.path(), |_| {});
    for url in [
        format!("http://127.0.0.1:{port}/talk.mp4"),
        format!("http://localhost:{port}/talk.mp4"),
        format!("http://[::1]:{port}/talk.mp4"),
        format!("http://[::ffff:127.0.0.1]:{port}/talk.mp4"),
        format!("http://2130706433:{port}/talk.mp4"),
        "http://10.0.0.1/talk.mp4".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00::1]/talk.mp4".into(),
    ] {
        refused(guarded.fetch(&url, &|_| {}).await, &url);
    }
    assert_eq!(outer_hits.load(Ordering::SeqCst), 0, "no request left the guard");

    // 127.0.0.1 allowed (as a public host here): its redirects to 127.0.0.2, to the metadata
    // service and to an IPv4-mapped 127.0.0.2 are refused, and the internal server sees nothing.
    let listed = fetcher(cache.path(), |c| c.allowed_networks = vec!["127.0.0.1".into()]);
    for path in ["/to-private", "/to-metadata", "/to-mapped"] {
        let url = format!("http://{outer}{path}");
        refused(listed.fetch(&url, &|_| {}).await, &url);
    }
    assert_eq!(inner_hits.load(Ordering::SeqCst), 0, "the internal server was never reached");
    assert!(listed.fetch(&format!("http://{outer}/talk.mp4"), &|_| {}).await.is_ok(), "the allow-listed host is fetched");

    // The switch lets everything through: the same redirect lands on the internal server.
    let open = fetcher(tempfile::tempdir().unwrap().path(), |c| c.allow_private_networks = true);
    let fetched = open.fetch(&format!("http://{outer}/to-private"), &|_| {}).await.unwrap();
    assert_eq!(std::fs::read(fetched.path).unwrap(), std::fs::read(fixture("talk.mp4")).unwrap());
    assert_eq!(inner_hits.load(Ordering::SeqCst), 1);
    assert!(open.fetch(&format!("http://localhost:{port}/talk.mp4"), &|_| {}).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn ytdlp_connects_only_through_the_guard() {
    let ((outer, _), (_, inner_hits)) = servers().await;
    let page = format!("http://{outer}/watch");

    // The page is allowed; the video it points yt-dlp at, on 127.0.0.2, is not.
    let cache = tempfile::tempdir().unwrap();
    let listed = fetcher(cache.path(), |c| c.allowed_networks = vec!["127.0.0.1".into()]);
    refused(listed.fetch(&page, &|_| {}).await, &page);
    assert_eq!(inner_hits.load(Ordering::SeqCst), 0, "yt-dlp never reached the internal server");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "nothing is kept");

    let open = fetcher(tempfile::tempdir().unwrap().path(), |c| c.allow_private_networks = true);
    let fetched = open.fetch(&page, &|_| {}).await.unwrap();
    assert_eq!(fetched.via, "yt-dlp");
    assert!(inner_hits.load(Ordering::SeqCst) >= 1, "through the proxy when allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_private_sources_and_webhooks_at_once_and_fails_a_redirect_to_one() {
    let ((outer, _), (_, inner_hits)) = servers().await;
    let server = TestServer::start(|c| c.fetch.allowed_networks.clear()).await;
    let port = outer.port();
    for url in [
        format!("http://127.0.0.1:{port}/talk.mp4"),
        format!("http://localhost:{port}/talk.mp4"),
        format!("http://[::ffff:127.0.0.1]:{port}/talk.mp4"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.1.2.3/v.mp4".into(),
        "file:///etc/passwd".into(),
        "gopher://example.com/".into(),
    ] {
        let resp = server.post_json(KEY_A, "/api/jobs", &json!({ "url": url }).to_string()).await;
        assert_eq!(resp.status(), 400, "{url}");
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["error"]["code"], "url_not_allowed", "{url}");
    }
    for hook in [format!("http://127.0.0.1:{port}/hook"), "http://localhost/hook".into(), "http://[::1]/hook".into()] {
        let body = json!({ "url": "http://example.invalid/v.mp4", "options": { "webhook": hook } });
        let resp = server.post_json(KEY_A, "/api/jobs", &body.to_string()).await;
        assert_eq!(resp.status(), 400, "{hook}");
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["error"]["code"], "url_not_allowed", "{hook}");
    }

    // What cannot be told at once fails the job with the same code: an allowed host redirecting
    // to a private one.
    let server = TestServer::start(|_| {}).await;
    let id = server.create(KEY_A, json!({ "url": format!("http://{outer}/to-private") })).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
        if job["status"] == "failed" || job["status"] == "succeeded" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "the job ends: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "url_not_allowed", "{job}");
    assert_eq!(inner_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_opens_tunnels_to_allowed_addresses_only() {
    use clipmill::egress::{Policy, proxy::GuardedProxy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ((outer, outer_hits), _) = servers().await;
    // Sends CONNECT and, when the tunnel opens, a request through it; returns all it read.
    async fn through(proxy: &GuardedProxy, target: SocketAddr) -> String {
        let addr = proxy.url().trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
        let mut head = vec![0u8; 1024];
        let n = stream.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_string();
        if !head.starts_with("HTTP/1.1 200") {
            return head;
        }
        stream.write_all(format!("GET /missing HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        head + &rest
    }

    let guarded = GuardedProxy::start(Policy::default()).await.unwrap();
    let answer = through(&guarded, outer).await;
    assert!(answer.starts_with("HTTP/1.1 403 url_not_allowed"), "{answer}");
    assert_eq!(outer_hits.load(Ordering::SeqCst), 0);

    let open = GuardedProxy::start(Policy::open()).await.unwrap();
    let answer = through(&open, outer).await;
    assert!(answer.contains("HTTP/1.1 404"), "the tunnel carries the request: {answer}");
    assert_eq!(outer_hits.load(Ordering::SeqCst), 1);
}
