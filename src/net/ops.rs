//! Operational routes: health, readiness, metrics, the OpenAPI document, and signed blob downloads.

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{Api, ApiError, Resp, full, json, query_param};
use crate::job::Stage;
use crate::persist::local_blobs::BlobAccessError;
use crate::persist::{EventBus, JobQueue, StoreError};

/// The whole API, kept true by a test that checks every route against it.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn healthz() -> Resp {
    json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Ready when intake is open and every backend answers; the body says how each one is.
pub async fn readyz(api: &Api) -> Result<Resp, ApiError> {
    if api.ctx.drain.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    let ctx = &api.ctx;
    let state = |r: Result<(), StoreError>| r.map_or_else(|e| format!("down: {e}"), |()| "ok".to_string());
    let (store, blobs) = tokio::join!(ctx.store.ping(), ctx.blobs.ping());
    let mut body = json!({ "store": { "kind": ctx.store.kind(), "state": state(store) }, "blobs": { "kind": ctx.blobs.kind(), "state": state(blobs) } });
    let cluster = &ctx.cluster;
    let queue = cluster.queue.depth(crate::job::Stage::Download).await.map(|_| ());
    body["queue"] = json!({ "kind": cluster.queue.kind(), "state": state(queue) });
    if cluster.queue.shared() {
        let nodes = cluster.bus.nodes().await.unwrap_or_default();
        body["node"] = json!({ "id": cluster.node, "role": format!("{:?}", cluster.role).to_lowercase() });
        body["nodes"] = json!(nodes);
    }
    let down: Vec<&str> = ["store", "blobs", "queue"].into_iter().filter(|k| body[*k]["state"].as_str().is_some_and(|s| s != "ok")).collect();
    if !down.is_empty() {
        body["status"] = json!("unavailable");
        return Ok(json(StatusCode::SERVICE_UNAVAILABLE, &body));
    }
    if let Err(e) = ctx.services.scratch.check_free() {
        body["status"] = json!("unavailable");
        body["scratch"] = json!(e.to_string());
        return Ok(json(StatusCode::SERVICE_UNAVAILABLE, &body));
    }
    body["status"] = json!("ready");
    Ok(json(StatusCode::OK, &body))
}

/// `GET /api/overview`: the operators' view. Per stage the work waiting (in a cluster, in the
/// shared queue) and running on this node, failures by stage and code, jobs by final status and
/// in the last minute, and the live nodes: what `/metrics` and `/readyz` say, as one JSON.
pub async fn overview(api: &Api) -> Result<Resp, ApiError> {
    let ctx = &api.ctx;
    let mut body = ctx.metrics.overview();
    let mut stages = Vec::with_capacity(Stage::ALL.len());
    for stage in Stage::ALL {
        let label = [stage.name()];
        let running = ctx.metrics.stage_running.with_label_values(&label).get().max(0);
        let waiting = ctx.cluster.queue.depth(stage).await?;
        stages.push(json!({ "stage": stage.name(), "waiting": waiting, "running": running }));
    }
    body["stages"] = json!(stages);
    body["draining"] = json!(ctx.drain.is_cancelled());
    body["nodes"] = json!(ctx.cluster.bus.nodes().await?);
    Ok(json(StatusCode::OK, &body))
}

pub fn metrics(api: &Api) -> Resp {
    Response::builder()
        .header("content-type", "text/plain; version=0.0.4")
        .body(full(api.ctx.metrics.render()))
        .expect("valid response")
}

pub fn openapi() -> Resp {
    Response::builder().header("content-type", "application/json").body(full(OPENAPI)).expect("valid response")
}

/// `GET /blobs/{key}?expires=&sig=`: a file, if the signature is ours and has not expired.
pub async fn blob(api: &Api, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let key = req.uri().path().trim_start_matches("/blobs/");
    let expires = query_param(req, "expires").and_then(|e| e.parse::<u64>().ok());
    let sig = query_param(req, "sig");
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Err(ApiError::bad("invalid_request", "a signed url has expires (unix seconds) and sig"));
    };
    let now = crate::job::now_ms() / 1000;
    let local = api.ctx.blobs.local().ok_or(ApiError::NotFound)?;
    let path = local.verify(key, expires, &sig, now).map_err(|e| match e {
        BlobAccessError::Expired => ApiError::Forbidden("expired", e.to_string()),
        BlobAccessError::BadSignature => ApiError::Forbidden("bad_signature", e.to_string()),
        BlobAccessError::NotFound | BlobAccessError::InvalidKey => ApiError::NotFound,
    })?;
    let file = tokio::fs::File::open(&path).await.map_err(|_| ApiError::NotFound)?;
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::new(file).map_ok(Frame::data);
    let content_type = crate::persist::content_type(key);
    Ok(Response::builder()
        .header("content-type", content_type)
        .header("content-length", len)
        .body(StreamBody::new(stream).boxed())
        .expect("valid response"))
}
