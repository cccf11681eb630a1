//! The HTTP API (hyper 1) and WebSocket progress (fastwebsockets): routing, auth, and the
//! accept loop with graceful shutdown. Routes live one resource per file.

mod batches;
pub mod dashboard;
pub mod error;
mod jobs;
mod ops;
mod tokens;
pub mod uploads;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;

use crate::actors::ServerCtx;
use crate::actors::messages::SupervisorMessage;
use crate::job::TenantId;
pub use error::ApiError;

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

/// What handlers share.
pub struct Api {
    pub ctx: Arc<ServerCtx>,
    pub supervisor: ActorRef<SupervisorMessage>,
    /// A worker node answers only the operational routes.
    pub role: crate::actors::cluster::Role,
    /// tus uploads a request (or the expiry sweep) is at work on.
    pub uploads_busy: uploads::Busy,
    /// What the dashboard's pages may load.
    pub dashboard: dashboard::Policy,
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(value).expect("responses serialise");
    Response::builder().status(status).header("content-type", "application/json").body(full(body)).expect("valid response")
}

/// Serves `api` on `listener` until `stop` fires, then lets open requests finish.
pub async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>, stop: CancellationToken) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        bound_send_buffer(&stream);
        let api = api.clone();
        let service = hyper::service::service_fn(move |req| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(route(&api, req, peer).await) }
        });
        let stop = stop.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connections.wait()).await;
}

/// What the kernel may hold unsent per connection. Linux grows it up to 4 MiB by default, which
/// lets a client that stopped reading hide thousands of events there (and 10,000 watchers 40 GB);
/// bounded, a slow client falls behind where the server sees it, and its close frame gets through.
const SEND_BUFFER: usize = 64 * 1024;

fn bound_send_buffer(stream: &tokio::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(SEND_BUFFER) {
        tracing::debug!(error = %e, "cannot bound the send buffer");
    }
}

async fn route(api: &Api, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(ops::healthz()),
        (&Method::GET, ["readyz"]) => ops::readyz(api).await,
        (&Method::GET, ["metrics"]) => Ok(ops::metrics(api)),
        (&Method::GET, ["api", "openapi.json"]) => Ok(ops::openapi()),
        (&Method::GET, ["blobs", ..]) => ops::blob(api, &req).await,
        (_, ["api", ..] | [""] | ["assets", ..]) if !api.role.serves_api() => Err(ApiError::NotFound),
        (&Method::GET, [""]) => Ok(api.dashboard.page()),
        (&Method::GET, ["assets", name]) => {
            api.dashboard.asset(name, req.headers().get(hyper::header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()))
        }
        // Discovery needs no key: it says only what the server speaks.
        (&Method::OPTIONS, ["api", "uploads", "tus"]) => Ok(uploads::tus_options(api)),
        (_, ["api", ..]) => match tenant(api, &req) {
            Err(e) => Err(e),
            Ok(tenant) => match (&method, &segments[1..]) {
                (&Method::POST, ["jobs"]) => jobs::create(api, &tenant, req).await,
                (&Method::GET, ["jobs"]) => jobs::list(api, &tenant, &req).await,
                (&Method::GET, ["jobs", id]) => jobs::get(api, &tenant, id).await,
                (&Method::DELETE, ["jobs", id]) => jobs::cancel(api, &tenant, id, &req).await,
                (&Method::POST, ["jobs", id, "retry"]) => jobs::retry(api, &tenant, id).await,
                (&Method::GET, ["jobs", id, "result"]) => jobs::result(api, &tenant, id).await,
                (&Method::GET, ["usage"]) => jobs::usage(api, &tenant).await,
                (&Method::GET, ["overview"]) => ops::overview(api).await,
                (&Method::POST, ["tokens"]) => Ok(tokens::create(api, &tenant)),
                (&Method::GET, ["jobs", id, "events"]) => ws::job_events(api, tenant, Some(id), req).await,
                (&Method::GET, ["events"]) => ws::job_events(api, tenant, None, req).await,
                (&Method::POST, ["batches"]) => batches::create(api, &tenant, req).await,
                (&Method::GET, ["batches", id]) => batches::get(api, &tenant, id).await,
                (&Method::DELETE, ["batches", id]) => batches::cancel(api, &tenant, id).await,
                (&Method::GET, ["batches", id, "events"]) => batches::events(api, tenant, id, req).await,
                (&Method::POST, ["uploads"]) => uploads::upload(api, &tenant, req).await,
                (&Method::POST, ["uploads", "tus"]) => uploads::tus_create(api, &tenant, req).await,
                (&Method::HEAD, ["uploads", "tus", id]) => uploads::tus_head(api, &tenant, id, req).await,
                (&Method::PATCH, ["uploads", "tus", id]) => uploads::tus_patch(api, &tenant, id, req).await,
                (&Method::DELETE, ["uploads", "tus", id]) => uploads::tus_delete(api, &tenant, id, req).await,
                _ => Err(unrouted(&segments)),
            },
        },
        _ => Err(unrouted(&segments)),
    };
    let mut resp = result.unwrap_or_else(ApiError::into_response);
    if method != Method::OPTIONS && segments.starts_with(&["api", "uploads", "tus"]) {
        uploads::mark_tus(&mut resp);
    }
    tracing::debug!(%method, %path, %peer, status = resp.status().as_u16(), duration_ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// No handler for the method: 405 with the route's methods when the path is a route, else 404.
fn unrouted(segments: &[&str]) -> ApiError {
    let allow = match segments {
        ["healthz"] | ["readyz"] | ["metrics"] | ["api", "openapi.json"] | ["blobs", _, ..] | [""] | ["assets", _] => "GET",
        ["api", "jobs", _, "result" | "events"] | ["api", "events" | "usage" | "overview"] | ["api", "batches", _, "events"] => "GET",
        ["api", "jobs", _, "retry"] | ["api", "tokens"] => "POST",
        ["api", "jobs"] => "GET, POST",
        ["api", "jobs" | "batches", _] => "GET, DELETE",
        ["api", "batches" | "uploads"] => "POST",
        ["api", "uploads", "tus"] => "OPTIONS, POST",
        ["api", "uploads", "tus", _] => "HEAD, PATCH, DELETE",
        _ => return ApiError::NotFound,
    };
    ApiError::MethodNotAllowed(allow)
}

/// The tenant of the request's API key (`Authorization: Bearer KEY`), or of the short-lived
/// `?token=` (or, for older clients, `?api_key=`) a WebSocket client that cannot set headers sends.
/// A token opens event streams only: one that leaks with its URL lets nobody act for the tenant.
fn tenant(api: &Api, req: &Request<Incoming>) -> Result<TenantId, ApiError> {
    let events = req.method() == Method::GET && req.uri().path().ends_with("/events");
    if let Some(token) = query_param(req, "token").filter(|_| events) {
        let tenant = tokens::verify(&api.ctx.secret, &token, crate::job::now_ms() / 1000)?;
        // A tenant whose keys were all withdrawn has no tokens either.
        let configured = api.ctx.services.config.server.api_keys.values().any(|t| *t == tenant);
        return if configured { Ok(tenant) } else { Err(ApiError::Unauthorized) };
    }
    let from_header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let key = from_header.or_else(|| query_param(req, "api_key")).ok_or(ApiError::Unauthorized)?;
    api.ctx.services.config.server.api_keys.get(key.trim()).cloned().ok_or(ApiError::Unauthorized)
}

pub(crate) fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
