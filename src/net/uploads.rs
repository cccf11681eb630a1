//! `/api/uploads`: a source video sent to the server, in one of two ways.
//!
//! - `POST /api/uploads`: the whole file as one streamed body.
//! - tus 1.0 (core, creation, checksum, termination, expiration) under `/api/uploads/tus`, the
//!   resumable upload protocol browser and mobile clients speak: `POST` declares the length,
//!   `PATCH`es append at the offset `HEAD` reports, so an upload that breaks off resumes where
//!   its bytes stopped. Bytes go to `uploads/.tus/ID.part` (its length is the offset), the
//!   upload's length and expiry to `ID.json`; a chunk sent with `Upload-Checksum` counts only if
//!   its digest matches (460 and the part cut back otherwise). Only a complete upload is renamed
//!   to `uploads/ID`, where jobs find it, so nothing half-written is ever a source. One `PATCH`
//!   at a time per upload (423 otherwise), its bytes written by a task of its own so that a
//!   client hanging up cannot stop it half-way through settling them; an upload past its expiry
//!   answers 410 and the scratch sweep removes it.
//!   Until complete an upload lives on the API node that took it (in a cluster, clients keep
//!   to one node, as tus clients do with one URL).
//!
//! Both keep to `server.max_upload_bytes` (413 past it); ids are `TENANT-UUID`, as
//! `POST /api/jobs {"upload_id"}` expects.

mod checksum;
mod chunk;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Api, ApiError, Resp, full, json};
use crate::actors::ServerCtx;
use crate::job::TenantId;
use crate::persist::BlobStore;
use checksum::Checksum;
use chunk::{Chunk, complete};

const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,checksum,termination,expiration";
/// Where uploads in progress live, inside the uploads folder.
const IN_PROGRESS: &str = ".tus";

/// Streams the body to the uploads folder, refusing it past the configured limit.
pub async fn upload(api: &Api, tenant: &TenantId, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let limit = api.ctx.services.config.server.max_upload_bytes;
    let declared = req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let id = new_upload_id(tenant);
    let path = api.ctx.uploads_dir.join(&id);
    let mut received = 0u64;
    // Our own errors travel through the stream as `io::Error`s and are taken back out below.
    let body = req.into_body().into_data_stream().map(move |data| {
        let data = data.map_err(|e| std::io::Error::other(ApiError::bad("invalid_request", format!("upload body: {e}"))))?;
        received += data.len() as u64;
        if received > limit {
            return Err(std::io::Error::other(ApiError::TooLarge(limit)));
        }
        Ok(data)
    });
    let written = api.ctx.services.scratch.write_stream(&path, body).await.map_err(|e| {
        crate::persist::scratch::own_error(e).unwrap_or_else(|e| ApiError::Internal(format!("upload: {e}")))
    })?;
    share(&api.ctx, &id, &path).await?;
    Ok(json(StatusCode::CREATED, &json!({ "upload_id": id, "bytes": written })))
}

fn new_upload_id(tenant: &TenantId) -> String {
    format!("{tenant}-{}", uuid::Uuid::now_v7().simple())
}

/// In a cluster, whichever worker downloads the job's source fetches it from shared storage.
async fn share(ctx: &ServerCtx, id: &str, path: &Path) -> Result<(), ApiError> {
    if ctx.shares_work() {
        ctx.blobs.put_file(&format!("uploads/{id}"), path).await?;
    }
    Ok(())
}

/// The tus uploads something is at work on: a `PATCH` (held by its chunk task until its bytes
/// are settled, even after the request is gone), a `DELETE`, or the expiry sweep. A checksummed
/// chunk pins the offset `HEAD` reports at where it began: its bytes count only once verified.
#[derive(Clone, Default)]
pub struct Busy(Arc<Mutex<HashMap<String, Option<u64>>>>);

impl Busy {
    fn take(&self, id: &str) -> Option<BusyGuard> {
        let mut held = self.0.lock().expect("busy map");
        if held.contains_key(id) {
            return None;
        }
        held.insert(id.to_string(), None);
        Some(BusyGuard(self.clone(), id.to_string()))
    }

    fn pinned(&self, id: &str) -> Option<u64> {
        self.0.lock().expect("busy map").get(id).copied().flatten()
    }
}

struct BusyGuard(Busy, String);

impl BusyGuard {
    fn pin(&self, offset: u64) {
        self.0.0.lock().expect("busy map").insert(self.1.clone(), Some(offset));
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.0.lock().expect("busy map").remove(&self.1);
    }
}

fn busy() -> ApiError {
    ApiError::Tus { status: StatusCode::LOCKED, code: "upload_busy", message: "another request on this upload is in progress".into() }
}

/// What is kept beside an upload in progress.
#[derive(Debug, Serialize, Deserialize)]
struct TusInfo {
    length: u64,
    /// `Upload-Metadata` as the client sent it.
    #[serde(default)]
    metadata: Option<String>,
    expires_unix_s: u64,
}

impl TusInfo {
    fn expired(&self) -> bool {
        self.expires_unix_s <= unix_now()
    }
}

fn part_path(uploads_dir: &Path, id: &str) -> PathBuf {
    uploads_dir.join(IN_PROGRESS).join(format!("{id}.part"))
}

fn info_path(uploads_dir: &Path, id: &str) -> PathBuf {
    uploads_dir.join(IN_PROGRESS).join(format!("{id}.json"))
}

/// A tus answer: every one carries `Tus-Resumable`.
fn tus(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder().status(status).header("tus-resumable", TUS_VERSION).header("cache-control", "no-store")
}

/// Marks any answer under `/api/uploads/tus` but `OPTIONS`'s as tus's, errors included (the
/// protocol wants `Tus-Resumable` on every one; `ApiError` stays protocol-blind).
pub fn mark_tus(resp: &mut Resp) {
    resp.headers_mut().insert("tus-resumable", hyper::header::HeaderValue::from_static(TUS_VERSION));
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Every tus request but `OPTIONS` says which version it speaks.
fn check_version(req: &Request<Incoming>) -> Result<(), ApiError> {
    match header(req, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::Tus { status: StatusCode::PRECONDITION_FAILED, code: "tus_version", message: format!("Tus-Resumable must be {TUS_VERSION}") }),
    }
}

/// Another tenant's upload, or no upload id at all, is "not found", before anything else is
/// looked at (not even whether it is busy).
fn check_owner(tenant: &TenantId, id: &str) -> Result<(), ApiError> {
    let valid = id.starts_with(&format!("{tenant}-")) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid { Ok(()) } else { Err(ApiError::NotFound) }
}

/// `OPTIONS /api/uploads/tus`: what this server speaks.
pub fn tus_options(api: &Api) -> Resp {
    tus(StatusCode::NO_CONTENT)
        .header("tus-version", TUS_VERSION)
        .header("tus-extension", TUS_EXTENSIONS)
        .header("tus-checksum-algorithm", checksum::ALGORITHMS)
        .header("tus-max-size", api.ctx.services.config.server.max_upload_bytes)
        .body(full(""))
        .expect("valid response")
}

/// `POST /api/uploads/tus`: declares an upload of `Upload-Length` bytes.
pub async fn tus_create(api: &Api, tenant: &TenantId, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let limit = api.ctx.services.config.server.max_upload_bytes;
    let length = header(&req, "upload-length")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::bad("invalid_request", "Upload-Length must be the upload's size in bytes"))?;
    check_version(&req)?;
    if length > limit {
        return Err(ApiError::TooLarge(limit));
    }
    let metadata = header(&req, "upload-metadata").map(str::to_string);
    if metadata.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::bad("invalid_request", "Upload-Metadata is longer than 4096 bytes"));
    }
    api.ctx.services.scratch.check_free().map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let id = new_upload_id(tenant);
    let expires_unix_s = unix_now() + api.ctx.services.config.server.upload_expiry_s;
    let dir = &api.ctx.uploads_dir;
    let io = |e: std::io::Error| ApiError::Internal(format!("upload: {e}"));
    tokio::fs::create_dir_all(dir.join(IN_PROGRESS)).await.map_err(io)?;
    // The info first: a crash between the two leaves info without a part, which the sweep
    // removes at its expiry; a part without info would be found by nothing.
    write_info(&info_path(dir, &id), &TusInfo { length, metadata, expires_unix_s }).await.map_err(io)?;
    tokio::fs::File::create(part_path(dir, &id)).await.map_err(io)?;
    if length == 0 {
        complete(&api.ctx, &id).await?;
    }
    Ok(tus(StatusCode::CREATED)
        .header("location", format!("/api/uploads/tus/{id}"))
        .header("upload-expires", expires(expires_unix_s))
        .header("upload-offset", 0)
        .body(full(json!({ "upload_id": id }).to_string()))
        .expect("valid response"))
}

/// Written through a part file: a reader never sees half of it.
async fn write_info(path: &Path, info: &TusInfo) -> std::io::Result<()> {
    crate::persist::part_file::write(path, serde_json::to_vec(info).expect("upload info serialises")).await
}

/// Where an upload of the tenant stands.
enum Found {
    InProgress { info: TusInfo, offset: u64 },
    /// A source now, of this many bytes.
    Complete(u64),
}

async fn find(uploads_dir: &Path, tenant: &TenantId, id: &str) -> Result<Found, ApiError> {
    check_owner(tenant, id)?;
    let done = || async { tokio::fs::metadata(uploads_dir.join(id)).await.map(|m| Found::Complete(m.len())).map_err(|_| ApiError::NotFound) };
    let Ok(text) = tokio::fs::read(info_path(uploads_dir, id)).await else { return done().await };
    let info: TusInfo = serde_json::from_slice(&text).map_err(|e| ApiError::Internal(format!("upload info: {e}")))?;
    match tokio::fs::metadata(part_path(uploads_dir, id)).await {
        Ok(part) => Ok(Found::InProgress { info, offset: part.len() }),
        // Completed, and stopped before its info was removed; or info whose part never came.
        Err(_) => done().await,
    }
}

fn gone() -> ApiError {
    ApiError::Tus { status: StatusCode::GONE, code: "upload_expired", message: "the upload expired before it was complete".into() }
}

/// `HEAD /api/uploads/tus/{id}`: how many bytes have arrived.
pub async fn tus_head(api: &Api, tenant: &TenantId, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_version(&req)?;
    let resp = match find(&api.ctx.uploads_dir, tenant, id).await? {
        Found::InProgress { info, .. } if info.expired() => return Err(gone()),
        Found::InProgress { info, offset } => {
            let offset = api.uploads_busy.pinned(id).unwrap_or(offset);
            tus(StatusCode::OK).header("upload-offset", offset).header("upload-length", info.length).header("upload-expires", expires(info.expires_unix_s))
        }
        Found::Complete(size) => tus(StatusCode::OK).header("upload-offset", size).header("upload-length", size),
    };
    Ok(resp.body(full("")).expect("valid response"))
}

/// `PATCH /api/uploads/tus/{id}`: appends the body at `Upload-Offset`.
pub async fn tus_patch(api: &Api, tenant: &TenantId, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if header(&req, "content-type") != Some("application/offset+octet-stream") {
        return Err(ApiError::Tus {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "a PATCH body is application/offset+octet-stream".into(),
        });
    }
    let asked = header(&req, "upload-offset").and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| ApiError::bad("invalid_request", "Upload-Offset must be a number"))?;
    let checksum = header(&req, "upload-checksum").map(Checksum::parse).transpose()?;
    check_version(&req)?;
    check_owner(tenant, id)?;
    let declared = header(&req, "content-length").and_then(|v| v.parse::<u64>().ok());
    let busy = api.uploads_busy.take(id).ok_or_else(busy)?;
    let (info, offset) = match find(&api.ctx.uploads_dir, tenant, id).await? {
        Found::Complete(_) => return Err(conflict("the upload is complete; Upload-Offset is its length".into())),
        Found::InProgress { info, .. } if info.expired() => return Err(gone()),
        Found::InProgress { info, offset } => (info, offset),
    };
    if asked != offset {
        return Err(conflict(format!("Upload-Offset {asked} is not the upload's offset {offset}")));
    }
    if declared.is_some_and(|n| n > info.length - offset) {
        return Err(ApiError::bad("invalid_request", format!("the body goes past Upload-Length ({} bytes)", info.length)));
    }
    if checksum.is_some() {
        busy.pin(offset);
    }
    let expires_unix_s = info.expires_unix_s;
    let chunk = Chunk { ctx: api.ctx.clone(), id: id.to_string(), info, offset, declared, checksum, _busy: busy };
    let written = crate::task::spawn_named("tus-chunk", chunk.write(req.into_body()));
    let offset = written.await.map_err(|e| ApiError::Internal(format!("upload: {e}")))??;
    Ok(tus(StatusCode::NO_CONTENT).header("upload-offset", offset).header("upload-expires", expires(expires_unix_s)).body(full("")).expect("valid response"))
}

fn conflict(message: String) -> ApiError {
    ApiError::Tus { status: StatusCode::CONFLICT, code: "offset_mismatch", message }
}

/// `DELETE /api/uploads/tus/{id}`: drops an upload in progress.
pub async fn tus_delete(api: &Api, tenant: &TenantId, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    check_version(&req)?;
    check_owner(tenant, id)?;
    let _busy = api.uploads_busy.take(id).ok_or_else(busy)?;
    if let Found::Complete(_) = find(&api.ctx.uploads_dir, tenant, id).await? {
        return Err(conflict("the upload is complete: it is a source now, and goes with its jobs' retention".into()));
    }
    remove(&api.ctx.uploads_dir, id).await;
    Ok(tus(StatusCode::NO_CONTENT).body(full("")).expect("valid response"))
}

/// Removes an upload in progress: the part first, so that a stop between the two leaves info
/// alone, which `find` reads as no upload and the sweep removes.
async fn remove(uploads_dir: &Path, id: &str) {
    let _ = tokio::fs::remove_file(part_path(uploads_dir, id)).await;
    let _ = tokio::fs::remove_file(info_path(uploads_dir, id)).await;
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn expires(unix_s: u64) -> String {
    httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_s))
}

/// Removes the uploads in progress whose expiry has passed, but none a request is at work on;
/// returns how many.
pub async fn sweep_expired(uploads_dir: &Path, busy: &Busy) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(uploads_dir.join(IN_PROGRESS)).await else { return 0 };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let path = entry.path();
        let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else { continue };
        let expired = match tokio::fs::read(&path).await.ok().and_then(|t| serde_json::from_slice::<TusInfo>(&t).ok()) {
            Some(info) => info.expired(),
            None => true,
        };
        let Some(_held) = expired.then(|| busy.take(id)).flatten() else { continue };
        remove(uploads_dir, id).await;
        removed += 1;
    }
    removed
}
