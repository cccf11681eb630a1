//! `BlobStore` on an S3-compatible object store (AWS S3, MinIO, R2; s3s-fs in the tests) through
//! rust-s3, so every node of a deployment sees the same clips and stage outputs, and clients fetch
//! clips straight from the store through presigned URLs.
//!
//! Keys follow the same rules as `LocalBlobs` (see `local_blobs::valid_key`). Uploads are checked
//! end to end: a single PUT's ETag must be the file's MD5, each multipart part's ETag its part's
//! MD5, and the finished object's ETag the multipart ETag of those parts (rust-s3 also sends
//! `Content-MD5`, which S3 checks on receipt). Downloads are checked against HEAD's length.
//! File bytes go through `Scratch` (io_uring where the kernel allows it): uploads read the file in
//! part-sized chunks, downloads stream into a part file that is renamed only once complete.
//! Every S3 call is retried a few times with exponential backoff when the failure is transient
//! (connection errors, 5xx, 429), never on other 4xx answers, which would only repeat themselves.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::serde_types::{ObjectIdentifier, Part};
use s3::{Bucket, BucketConfiguration, Region};
use super::local_blobs::valid_key;
use super::scratch::own_error;
use super::{BlobStore, Scratch, StoreError};
use crate::config::S3Config;

/// Retries after the first attempt of every S3 call.
const RETRIES: u32 = 3;
/// First backoff; doubled on each retry (0.5 s, 1 s, 2 s: a store that restarts within about 3.5 s
/// costs no failed upload).
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// A readiness probe must answer fast; the other calls keep rust-s3's 60 s request timeout, which
/// a large part on a slow link needs.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// S3's limits: parts per upload and presigned URL lifetime.
const MAX_PARTS: u64 = 10_000;
const MAX_PRESIGN_S: u64 = 7 * 24 * 3600;
/// DeleteObjects takes at most 1000 keys per request.
const DELETE_BATCH: usize = 1000;
const MIB: u64 = 1024 * 1024;

/// Blobs in one S3 bucket.
pub struct S3Blobs {
    bucket: Box<Bucket>,
    /// The same bucket with a short request timeout, for `ping`.
    probe: Box<Bucket>,
    multipart_threshold: u64,
    part_size: u64,
    /// Whether answered ETags must be the data's MD5s (`s3.check_etags`).
    check_etags: bool,
    scratch: Scratch,
}

impl S3Blobs {
    /// Connects to the bucket of `cfg`, creating it when it does not exist yet (so a store that
    /// already has it needs no CreateBucket permission). Files are read and written through
    /// `scratch`.
    pub async fn connect(cfg: &S3Config, scratch: Scratch) -> Result<Self, StoreError> {
        // Our backoff (`with_retries`) is the only retry layer: rust-s3's own retry of idempotent
        // calls would multiply attempts and sleep whole seconds. The setting is process-wide; this
        // is the only user of rust-s3.
        s3::set_retries(0);
        let region = Region::Custom { region: cfg.region.clone(), endpoint: cfg.endpoint.trim_end_matches('/').to_string() };
        let credentials = Credentials::new(Some(&cfg.access_key), Some(&cfg.secret_key), None, None, None)
            .map_err(|e| StoreError::Unavailable(format!("s3 credentials: {e}")))?;
        let mut bucket = Bucket::new(&cfg.bucket, region.clone(), credentials.clone()).map_err(|e| s3_failure("new bucket", &cfg.bucket, e))?;
        if cfg.path_style {
            bucket = bucket.with_path_style();
        }
        let probe = bucket.with_request_timeout(PING_TIMEOUT).map_err(|e| s3_failure("new bucket", &cfg.bucket, e))?;
        let blobs = Self {
            bucket,
            probe,
            multipart_threshold: cfg.multipart_threshold_mb.saturating_mul(MIB),
            part_size: cfg.part_size_mb.max(5).saturating_mul(MIB),
            check_etags: cfg.check_etags,
            scratch,
        };
        match with_retries("list", &cfg.bucket, || blobs.probe_bucket(&blobs.bucket)).await {
            Ok(()) => {}
            Err(S3Error::HttpFailWithBody(404, _)) => blobs.create_bucket(cfg, region, credentials).await?,
            Err(e) => return Err(s3_failure("list", &cfg.bucket, e)),
        }
        tracing::info!(endpoint = %cfg.endpoint, bucket = %cfg.bucket, path_style = cfg.path_style, "s3 blob store connected");
        Ok(blobs)
    }

    /// Whether the bucket answers a listing with these credentials (for /readyz): one attempt,
    /// at most `PING_TIMEOUT`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.probe_bucket(&self.probe).await.map_err(|e| match e {
            S3Error::HttpFailWithBody(404, _) => StoreError::Unavailable(format!("s3 bucket {} does not exist", self.bucket.name())),
            e => s3_failure("ping", &self.bucket.name(), e),
        })
    }

    async fn probe_bucket(&self, bucket: &Bucket) -> Result<(), S3Error> {
        bucket.list_page(String::new(), None, None, None, Some(1)).await.map(|_| ())
    }

    async fn create_bucket(&self, cfg: &S3Config, region: Region, credentials: Credentials) -> Result<(), StoreError> {
        let name = cfg.bucket.as_str();
        let created = with_retries("create bucket", name, || async {
            let config = BucketConfiguration::default();
            if cfg.path_style {
                Bucket::create_with_path_style(name, region.clone(), credentials.clone(), config).await
            } else {
                Bucket::create(name, region.clone(), credentials.clone(), config).await
            }
        })
        .await;
        match created {
            // 409: another node created it meanwhile (BucketAlreadyExists / AlreadyOwnedByYou).
            Ok(_) | Err(S3Error::HttpFailWithBody(409, _)) => {
                tracing::info!(bucket = name, "s3 bucket created");
                Ok(())
            }
            Err(e) => Err(s3_failure("create bucket", name, e)),
        }
    }

    /// One PUT of the whole file (it is below the multipart threshold).
    async fn put_single(&self, key: &str, from: &Path, size: u64, content_type: &str) -> Result<(), StoreError> {
        let mut body = Vec::with_capacity(size as usize);
        let mut chunks = self.scratch.read_chunks(from, size as usize);
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
        }
        let (body, md5_hex) = md5_of(body).await?;
        let response = with_retries("put", key, || self.bucket.put_object_with_content_type(key, &body, content_type))
            .await
            .map_err(|e| to_store_error("put", key, e))?;
        let etag = response.headers().get("etag").cloned().unwrap_or_default();
        if self.check_etags { check_etag(key, &etag, &md5_hex) } else { Ok(()) }
    }

    /// A multipart upload, read part by part; aborted (best effort) when any step fails.
    async fn put_multipart(&self, key: &str, from: &Path, size: u64, content_type: &str) -> Result<(), StoreError> {
        let parts = size.div_ceil(self.part_size);
        if parts > MAX_PARTS {
            return Err(StoreError::Unavailable(format!("{key}: {size} bytes need {parts} parts of {} MiB, more than S3 allows", self.part_size / MIB)));
        }
        let upload = with_retries("initiate multipart", key, || self.bucket.initiate_multipart_upload(key, content_type))
            .await
            .map_err(|e| to_store_error("initiate multipart", key, e))?;
        let upload_id = upload.upload_id;
        let result = self.upload_parts(key, from, &upload_id, content_type).await;
        if let Err(error) = &result {
            tracing::warn!(key, upload_id, error = %error, "s3 multipart upload failed, aborting it");
            if let Err(e) = with_retries("abort multipart", key, || self.bucket.abort_upload(key, &upload_id)).await {
                tracing::warn!(key, upload_id, error = %e, "s3 multipart abort failed; a lifecycle rule must clean it");
            }
        }
        result
    }

    async fn upload_parts(&self, key: &str, from: &Path, upload_id: &str, content_type: &str) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut chunks = self.scratch.read_chunks(from, self.part_size as usize);
        let mut parts: Vec<Part> = Vec::new();
        let mut digests: Vec<u8> = Vec::new();
        let mut uploaded = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = Vec::from(chunk?);
            let part_number = parts.len() as u32 + 1;
            let len = chunk.len() as u64;
            let (chunk, md5_hex) = md5_of(chunk).await?;
            // rust-s3 takes the part by value, so each attempt gets its own copy.
            let part = with_retries("upload part", key, || self.bucket.put_multipart_chunk(chunk.clone(), key, part_number, upload_id, content_type))
                .await
                .map_err(|e| to_store_error("upload part", key, e))?;
            if self.check_etags {
                check_etag(key, &part.etag, &md5_hex)?;
            }
            digests.extend_from_slice(&hex::decode(&md5_hex).expect("an md5 digest is hex"));
            uploaded += len;
            tracing::debug!(key, part_number, bytes = len, "s3 part uploaded");
            parts.push(part);
        }
        let expected = format!("{:x}-{}", md5::compute(&digests), parts.len());
        let count = parts.len();
        let completed = with_retries("complete multipart", key, || self.bucket.complete_multipart_upload(key, upload_id, parts.clone())).await;
        match completed {
            Ok(_) => {}
            // The upload is gone: either a retried complete whose first try did succeed, or a real
            // loss. The HEAD below tells which, by the object's multipart ETag.
            Err(S3Error::HttpFailWithBody(404, _)) => tracing::warn!(key, upload_id, "s3 multipart upload not found on complete, checking the object"),
            Err(e) => return Err(to_store_error("complete multipart", key, e)),
        }
        let (head, _) = with_retries("head", key, || self.bucket.head_object(key)).await.map_err(|e| to_store_error("head", key, e))?;
        let etag = head.e_tag.unwrap_or_default();
        if head.content_length != Some(uploaded as i64) || (self.check_etags && !same_etag(&etag, &expected)) {
            return Err(StoreError::Corrupt(format!(
                "{key}: stored object has {:?} bytes and etag {etag}, uploaded {uploaded} bytes with etag {expected}",
                head.content_length
            )));
        }
        tracing::debug!(key, parts = count, bytes = uploaded, duration_ms = started.elapsed().as_millis() as u64, "s3 multipart upload complete");
        Ok(())
    }

    /// Streams `key` into `to` through scratch (a part file, fsynced and renamed once complete).
    /// A body whose length is not `expected` leaves nothing behind and is `Corrupt`.
    async fn download(&self, key: &str, to: &Path, expected: u64) -> Result<(), StoreError> {
        let written = with_retries("get", key, || async {
            let response = self.bucket.get_object_stream(key).await?;
            let counted = Arc::new(AtomicU64::new(0));
            let count = counted.clone();
            let body = response.bytes.map(move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Ok(chunk)
            });
            // At the end of the body, a wrong length fails the write, so the part file is never renamed.
            let end = futures_util::stream::once(async move {
                let got = counted.load(Ordering::Relaxed);
                (got != expected).then(|| Err(std::io::Error::other(WrongLength(got))))
            })
            .filter_map(std::future::ready);
            match self.scratch.write_stream(to, body.chain(end)).await {
                Ok(_) => Ok(Ok(())),
                Err(e) => match own_error::<WrongLength>(e) {
                    Ok(WrongLength(got)) => Ok(Err(got)),
                    Err(e) => Err(own_error::<S3Error>(e).unwrap_or_else(S3Error::Io)),
                },
            }
        })
        .await
        .map_err(|e| to_store_error("get", key, e))?;
        written.map_err(|got| StoreError::Corrupt(format!("{key}: downloaded {got} bytes, the store says {expected}")))
    }
}

impl BlobStore for S3Blobs {
    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        check_key(key)?;
        let started = Instant::now();
        let size = tokio::fs::metadata(from).await?.len();
        let content_type = super::content_type(key);
        if size < self.multipart_threshold {
            self.put_single(key, from, size, content_type).await?;
        } else {
            self.put_multipart(key, from, size, content_type).await?;
        }
        tracing::debug!(key, bytes = size, duration_ms = started.elapsed().as_millis() as u64, "s3 blob stored");
        Ok(())
    }

    async fn get_file(&self, key: &str, to: &Path) -> Result<(), StoreError> {
        check_key(key)?;
        let (head, _) = with_retries("head", key, || self.bucket.head_object(key)).await.map_err(|e| to_store_error("head", key, e))?;
        let expected = head.content_length.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| StoreError::Corrupt(format!("{key}: no content-length")))?;
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        self.download(key, to, expected).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        match with_retries("head", key, || self.bucket.head_object(key)).await {
            Ok(_) => Ok(true),
            Err(S3Error::HttpFailWithBody(404, _)) => Ok(false),
            Err(e) => Err(to_store_error("head", key, e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = prefix.trim_end_matches('/');
        check_key(dir)?;
        // As a folder, like `LocalBlobs`: "work/J1" must not take "work/J10/..." with it.
        let prefix = format!("{dir}/");
        let pages = with_retries("list", &prefix, || self.bucket.list(prefix.clone(), None)).await.map_err(|e| to_store_error("list", &prefix, e))?;
        let keys: Vec<String> = pages.into_iter().flat_map(|page| page.contents).map(|object| object.key).collect();
        for batch in keys.chunks(DELETE_BATCH) {
            let ids: Vec<ObjectIdentifier> = batch.iter().map(ObjectIdentifier::new).collect();
            let result = with_retries("delete objects", &prefix, || self.bucket.delete_objects(ids.clone()))
                .await
                .map_err(|e| to_store_error("delete objects", &prefix, e))?;
            if let Some(error) = result.errors.first() {
                return Err(StoreError::Unavailable(format!("s3 delete of {prefix}: {} of {} keys refused, first: {error:?}", result.errors.len(), batch.len())));
            }
        }
        tracing::debug!(prefix, keys = keys.len(), "s3 prefix deleted");
        Ok(())
    }

    async fn signed_url(&self, key: &str, expires_unix_s: u64) -> Result<String, StoreError> {
        check_key(key)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut expiry = expires_unix_s.saturating_sub(now).max(1);
        if expiry > MAX_PRESIGN_S {
            // S3 refuses longer presigned URLs; a shorter link beats none.
            tracing::warn!(key, requested_s = expiry, max_s = MAX_PRESIGN_S, "presigned url lifetime capped at s3's maximum");
            expiry = MAX_PRESIGN_S;
        }
        self.bucket.presign_get(key, expiry as u32, None).await.map_err(|e| to_store_error("presign", key, e))
    }
}

/// Runs `call` until it succeeds, fails for good, or has been retried `RETRIES` times.
async fn with_retries<T, F, Fut>(op: &'static str, key: &str, mut call: F) -> Result<T, S3Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S3Error>>,
{
    let (mut retry, mut backoff) = (0, crate::backoff::Backoff::new(BACKOFF_BASE, Duration::MAX));
    loop {
        match call().await {
            Err(e) if retry < RETRIES && is_retryable(&e) => {
                let delay = backoff.next_delay();
                retry += 1;
                tracing::warn!(op, key, retry, delay_ms = delay.as_millis() as u64, error = %e, "s3 call failed, retrying");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

/// Transient failures: the connection, the server (5xx, or an error document inside a 200, which
/// S3 can send for CompleteMultipartUpload), throttling (429) and the 4xx answers about one
/// request's transfer (see `transient_4xx`). Other 4xx answers would repeat.
fn is_retryable(error: &S3Error) -> bool {
    match error {
        S3Error::HttpFailWithBody(status, body) => *status >= 500 || (200..300).contains(status) || transient_4xx(*status, body),
        S3Error::Reqwest(e) => !e.is_builder(),
        S3Error::Io(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// 4xx answers about one request, not the setup: throttling, a timed-out request (408, or S3's 400
/// RequestTimeout on an idle upload) and a body damaged on the way (BadDigest, IncompleteBody,
/// caught by the Content-MD5 every upload carries).
fn transient_4xx(status: u16, body: &str) -> bool {
    const CODES: [&str; 3] = ["<Code>RequestTimeout</Code>", "<Code>BadDigest</Code>", "<Code>IncompleteBody</Code>"];
    status == 429 || status == 408 || (status == 400 && CODES.iter().any(|c| body.contains(c)))
}

fn to_store_error(op: &str, key: &str, error: S3Error) -> StoreError {
    match error {
        S3Error::HttpFailWithBody(404, _) => StoreError::BlobNotFound(key.to_string()),
        e => s3_failure(op, key, e),
    }
}

/// A failed call as a `StoreError`: `Refused` for answers that would repeat (4xx but throttling,
/// e.g. 403 for wrong credentials), `Unavailable` for the rest.
fn s3_failure(op: &str, key: &str, error: S3Error) -> StoreError {
    let message = match &error {
        // S3 error documents are XML; the code and message are what matter, keep it short.
        S3Error::HttpFailWithBody(status, body) => format!("HTTP {status}: {}", body.chars().take(300).collect::<String>()),
        e => e.to_string(),
    };
    let message = format!("s3 {op} {key}: {message}");
    match error {
        S3Error::HttpFailWithBody(status, body) if (400..500).contains(&status) && !transient_4xx(status, &body) => StoreError::Refused(message),
        _ => StoreError::Unavailable(message),
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if valid_key(key) { Ok(()) } else { Err(StoreError::InvalidKey(key.to_string())) }
}

/// MD5 of `bytes` (in hex) off the tokio workers: a 16 MiB part takes tens of milliseconds.
async fn md5_of(bytes: Vec<u8>) -> Result<(Vec<u8>, String), StoreError> {
    tokio::task::spawn_blocking(move || {
        let digest = format!("{:x}", md5::compute(&bytes));
        (bytes, digest)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("md5 task failed: {e}")))
}

/// ETags come quoted (`"abc…"`), sometimes with their quotes escaped, and in either case.
fn same_etag(etag: &str, expected: &str) -> bool {
    etag.trim_matches(|c| c == '"' || c == '\\').trim_start_matches("&quot;").trim_end_matches("&quot;").eq_ignore_ascii_case(expected)
}

fn check_etag(key: &str, etag: &str, md5_hex: &str) -> Result<(), StoreError> {
    if same_etag(etag, md5_hex) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("{key}: store answered etag {etag:?}, the data's md5 is {md5_hex}")))
    }
}

/// A download whose body was not as long as HEAD said (the bytes it had).
#[derive(Debug, thiserror::Error)]
#[error("downloaded {0} bytes, not the length the store gave")]
struct WrongLength(u64);

#[cfg(test)]
mod tests;
