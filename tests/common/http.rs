//! A real HTTP/1.1 server on 127.0.0.1 for tests (hyper), answering with a handler closure.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub type Reply = Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(String, Bytes) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves `handler(path, body)` on a free loopback port until the test's runtime ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    serve_at("127.0.0.1", handler).await
}

/// `serve` on a free port of another local address (e.g. 127.0.0.2, still loopback on Linux).
pub async fn serve_at<F, Fut>(ip: &str, handler: F) -> SocketAddr
where
    F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let handler: Handler = Arc::new(move |path, body| Box::pin(handler(path, body)));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handler(path, body).await)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

pub fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder().status(status).header("content-type", content_type).body(Full::new(body.into())).unwrap()
}

/// A request a recording server received.
pub type Recorded = (hyper::HeaderMap, Bytes);

/// Serves 200 to everything on a free loopback port and records each request's headers and body.
pub async fn serve_recording() -> (SocketAddr, Arc<std::sync::Mutex<Vec<Recorded>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        record.lock().unwrap().push((headers, body));
                        Ok::<_, Infallible>(reply(200, "text/plain", "ok"))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

/// Serves the generated talk at `/talk.mp4` and, at `/show`, a [`described_page`] of it.
pub async fn serve_described_talk() -> SocketAddr {
    let video = std::fs::read(super::fixture("talk.mp4")).unwrap();
    let me = Arc::new(std::sync::OnceLock::<SocketAddr>::new());
    let page = me.clone();
    let addr = serve(move |path, _| {
        let (video, page) = (video.clone(), page.clone());
        async move {
            match path.as_str() {
                "/talk.mp4" => reply(200, "video/mp4", video),
                "/show" => reply(200, "text/html", described_page(&format!("http://{}/talk.mp4", page.get().unwrap()))),
                _ => reply(404, "text/plain", "not found"),
            }
        }
    })
    .await;
    me.set(addr).unwrap();
    addr
}

/// A page describing its video with schema.org JSON-LD (title, author, chapters as `hasPart`
/// clips), which yt-dlp's generic extractor reads as it reads a real site's.
pub fn described_page(video_url: &str) -> String {
    let ld = serde_json::json!({
        "@context": "https://schema.org", "@type": "VideoObject",
        "name": "A talk about food", "author": {"@type": "Person", "name": "Clipmill Tests"}, "duration": "PT30S",
        "contentUrl": video_url, "encodingFormat": "video/mp4",
        "hasPart": [
            {"@type": "Clip", "name": "Welcome", "startOffset": 0, "endOffset": 9},
            {"@type": "Clip", "name": "Birds", "startOffset": 9, "endOffset": 16},
            {"@type": "Clip", "name": "Everyday things", "startOffset": 16, "endOffset": 30},
        ],
    });
    format!("<html><head><title>Talk</title><script type=\"application/ld+json\">{ld}</script></head><body><h1>Talk</h1></body></html>")
}
