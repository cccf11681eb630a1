//! The guarded proxy yt-dlp connects through (`--proxy`): yt-dlp makes its own connections, so
//! they are made for it, here, under the same [`Policy`] as our own clients.
//!
//! It listens on a loopback port (reaching through it only what the policy allows, it offers a
//! local process nothing it could not reach directly), opens `CONNECT host:port` tunnels (https) to allowed addresses only, and forwards plain http
//! requests (absolute-form) through a guarded client that follows no redirects itself: yt-dlp
//! follows them, through the proxy again. A refusal is a 403 whose reason phrase is
//! `url_not_allowed`, which yt-dlp repeats in its error and the fetcher turns back into the code;
//! an upstream it cannot reach is a 502 `source_unreachable`, likewise.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::AbortOnDropHandle;

use super::{EgressError, Policy};

type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, std::io::Error>;

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: [&str; 9] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// A running proxy; it stops when dropped.
pub struct GuardedProxy {
    url: String,
    _accept: AbortOnDropHandle<()>,
}

impl GuardedProxy {
    pub async fn start(policy: Policy) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let client = policy.client(reqwest::Client::builder().connect_timeout(Duration::from_secs(15)), 0).map_err(std::io::Error::other)?;
        let shared = std::sync::Arc::new(Shared { policy, client });
        let accept = crate::task::spawn_named("egress-proxy", async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = shared.clone();
                crate::task::spawn_named("egress-proxy-connection", async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(shared.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
                });
            }
        });
        Ok(Self { url: format!("http://{addr}"), _accept: AbortOnDropHandle::new(accept) })
    }

    /// The proxy URL to hand to yt-dlp (`--proxy`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

struct Shared {
    policy: Policy,
    /// Our guarded client, redirects not followed.
    client: reqwest::Client,
}

impl Shared {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let result = if req.method() == Method::CONNECT { self.tunnel(req).await } else { self.forward(req).await };
        result.unwrap_or_else(|refused| {
            tracing::info!(reason = %refused, "egress proxy refused a connection");
            let mut resp = answer(StatusCode::FORBIDDEN, &refused.to_string());
            resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"url_not_allowed"));
            resp
        })
    }

    /// `CONNECT host:port`: connect to an allowed address, answer 200, then copy both ways.
    async fn tunnel(&self, req: Request<Incoming>) -> Result<Response<Body>, EgressError> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Ok(answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port"));
        };
        let addrs = self.policy.resolve(authority.host(), authority.port_u16().unwrap_or(443)).await?;
        let Some(upstream) = connect(&addrs).await else {
            return Ok(unreachable("cannot connect"));
        };
        crate::task::spawn_named("egress-proxy-tunnel", async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
            }
        });
        Ok(Response::new(empty()))
    }

    /// A plain http request in absolute form, sent on with our guarded client.
    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Body>, EgressError> {
        let Ok(url) = url::Url::parse(&req.uri().to_string()) else {
            return Ok(answer(StatusCode::BAD_REQUEST, "a proxy request needs an absolute http url"));
        };
        self.policy.check_url(&url)?;
        let (parts, body) = req.into_parts();
        let mut out = self.client.request(parts.method, url);
        for (name, value) in parts.headers.iter().filter(|(n, _)| !hop_by_hop(n.as_str()) && *n != hyper::header::HOST) {
            out = out.header(name, value);
        }
        let body = BodyStream::new(body).try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
        let sent = out.body(reqwest::Body::wrap_stream(body)).send().await;
        let upstream = match sent {
            Ok(upstream) => upstream,
            Err(e) => {
                if let Some(refused) = EgressError::find(&e) {
                    return Err(refused.clone());
                }
                return Ok(unreachable(&e.to_string()));
            }
        };
        let mut resp = Response::builder().status(upstream.status().as_u16());
        for (name, value) in upstream.headers().iter().filter(|(n, _)| !hop_by_hop(n.as_str())) {
            resp = resp.header(name.as_str(), value.as_bytes());
        }
        let stream = upstream.bytes_stream().map_ok(Frame::data).map_err(std::io::Error::other);
        Ok(resp.body(BodyExt::boxed(StreamBody::new(stream))).unwrap_or_else(|e| answer(StatusCode::BAD_GATEWAY, &e.to_string())))
    }
}

async fn connect(addrs: &[SocketAddr]) -> Option<TcpStream> {
    for addr in addrs {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(15), TcpStream::connect(addr)).await {
            return Some(stream);
        }
    }
    None
}

fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// The answer when the upstream cannot be reached: a 502 whose reason phrase is
/// `source_unreachable`, which yt-dlp repeats and the fetcher reads (a 502 the site itself gave
/// is a different error).
fn unreachable(message: &str) -> Response<Body> {
    let mut resp = answer(StatusCode::BAD_GATEWAY, message);
    resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"source_unreachable"));
    resp
}

fn answer(status: StatusCode, message: &str) -> Response<Body> {
    let body = http_body_util::Full::new(hyper::body::Bytes::from(format!("{message}\n"))).map_err(|never| match never {}).boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}
