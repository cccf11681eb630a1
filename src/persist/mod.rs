//! Storage, one small trait per concern, with the embedded implementation beside the production
//! one: `JobStore` (job records, idempotency keys), `BlobStore` (clips, sidecars and stage outputs,
//! served by signed URL), `JobQueue` (work per stage, claimed with a lease) and `EventBus`
//! (progress events, cancels and node liveness across nodes). The embedded defaults need nothing
//! running: `redb` for jobs, local files for blobs, the in-process actors for queue and events.
//! `Scratch` moves bulk bytes to and from local scratch (io_uring where the kernel allows it).

pub mod backends;
pub mod embedded_store;
pub mod local_blobs;
pub mod memory_bus;
pub mod memory_queue;
pub mod part_file;
pub mod postgres_store;
pub mod redis_bus;
pub mod redis_client;
pub mod redis_queue;
pub mod s3_blobs;
pub mod scratch;

use std::path::Path;
use std::time::Duration;

use crate::job::{BatchId, BatchRecord, JobId, JobRecord, JobStatus, Stage, TenantId};

pub use backends::{Blobs, Bus, Jobs, Queue};
pub use embedded_store::EmbeddedStore;
pub use local_blobs::LocalBlobs;
pub use memory_bus::MemoryBus;
pub use memory_queue::{DeadLetter, MemoryQueue};
pub use postgres_store::PgStore;
pub use redis_bus::RedisBus;
pub use redis_queue::RedisQueue;
pub use s3_blobs::S3Blobs;
pub use scratch::Scratch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("blob not found: {0}")]
    BlobNotFound(String),
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// The store answered, and said no in a way that asking again will not change (bad
    /// credentials, no permission, a malformed request): a configuration error to report, not
    /// an outage to wait out.
    #[error("store refused the request: {0}")]
    Refused(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "store_unavailable",
            Self::Corrupt(_) => "store_corrupt",
            Self::BlobNotFound(_) => "not_found",
            Self::InvalidKey(_) => "invalid_key",
            Self::Refused(_) => "store_refused",
            Self::Io(_) => "io",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Io(_))
    }
}

/// The Content-Type a blob is served with, from its key's extension (browsers play an mp4
/// inline only when it says video/mp4).
pub fn content_type(key: &str) -> &'static str {
    mime_guess::from_path(key).first_raw().unwrap_or("application/octet-stream")
}

/// What a tenant uses, for its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Jobs queued or running (not waiting batch entries, not final).
    pub in_flight: u64,
    /// Seconds of source of the jobs created at or after the `since` asked for.
    pub source_seconds: f64,
    /// Bytes of clips and sidecars of every job still kept.
    pub bytes_stored: u64,
}

/// One page of a job listing.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass back as `after` for the next page; `None` on the last page.
    pub next: Option<JobId>,
}

/// Job records. Every write is a whole record (short transactions, idempotent).
pub trait JobStore: Send + Sync + 'static {
    /// Inserts or replaces the record.
    fn put(&self, job: &JobRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<JobRecord>, StoreError>> + Send;
    /// A tenant's jobs, newest first, optionally of one status, `limit` per page, after the cursor.
    fn list(
        &self,
        tenant: &TenantId,
        status: Option<JobStatus>,
        after: Option<JobId>,
        limit: usize,
    ) -> impl Future<Output = Result<JobPage, StoreError>> + Send;
    /// Jobs that are neither finished nor cancelled (to resume after a restart).
    fn unfinished(&self) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;
    /// Maps (tenant, key) to `id` unless the key is taken; returns the id the key maps to.
    fn claim_idempotency_key(&self, tenant: &TenantId, key: &str, id: JobId)
    -> impl Future<Output = Result<JobId, StoreError>> + Send;
    /// What `tenant` uses: jobs in flight, source seconds of its jobs created since `since_ms`,
    /// bytes stored.
    fn usage(&self, tenant: &TenantId, since_ms: u64) -> impl Future<Output = Result<Usage, StoreError>> + Send;
    /// Stores a batch record (written once, when the batch is created).
    fn put_batch(&self, batch: &BatchRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_batch(&self, id: BatchId) -> impl Future<Output = Result<Option<BatchRecord>, StoreError>> + Send;
    /// Retention: deletes finished jobs (succeeded, failed, cancelled) with their idempotency
    /// keys, those that finished (were last updated) more than `older_than_days` before `now_ms`,
    /// and those beyond the `keep_max_finished` most recently finished. 0 disables a rule; jobs
    /// still queued or running are never deleted. Batch records older than `older_than_days`
    /// go too. Returns how many jobs were deleted.
    fn prune(&self, now_ms: u64, older_than_days: u64, keep_max_finished: u64)
    -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Deletes one finished job (succeeded, failed, cancelled) with its idempotency keys, as
    /// retention would; false when there is no such job or it is not finished.
    fn delete_finished(&self, id: JobId) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Clip files and sidecars under keys like `TENANT/JOB/clip-01.mp4`, and stage outputs shared
/// between nodes under `work/JOB/NAME`.
pub trait BlobStore: Send + Sync + 'static {
    /// Copies the file at `from` to `key` (replacing it: uploads are idempotent).
    fn put_file(&self, key: &str, from: &Path) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Copies `key` into the file at `to`, written under a temporary name and renamed, so `to`
    /// appears only complete. `BlobNotFound` when there is no such key.
    fn get_file(&self, key: &str, to: &Path) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes every key under `prefix` (a job's work files once it has ended).
    fn delete_prefix(&self, prefix: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A URL that serves `key` until `expires_unix_s`.
    fn signed_url(&self, key: &str, expires_unix_s: u64) -> impl Future<Output = Result<String, StoreError>> + Send;
}

/// A job waiting at a stage: the unit of queued work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkItem {
    pub job: JobId,
    pub stage: Stage,
}

/// A work item handed to this node, held under a lease until acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub item: WorkItem,
    /// The queue's own id for this entry (a Redis stream entry id).
    pub entry: String,
    /// How many times the entry has been handed out, this time included.
    pub deliveries: u64,
}

/// Work per stage, shared by every node: at-least-once, so every stage run must be idempotent.
pub trait JobQueue: Send + Sync + 'static {
    /// Queues `item` at the end of its stage's queue.
    fn push(&self, item: WorkItem) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Waits up to `wait` for new work of `stage` and claims at most `max` items for this node.
    fn claim(&self, stage: Stage, max: usize, wait: Duration) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;
    /// Renews the lease of work this node is still doing.
    fn heartbeat(&self, delivery: &Delivery) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Acknowledges finished work and queues `next` (if any) in one step, so a crash between
    /// the two cannot lose the job.
    fn complete(&self, delivery: &Delivery, next: Option<WorkItem>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Claims for this node the `stage` work whose lease ran out (its node died or hung). Items
    /// handed out more than the configured maximum are moved to the dead-letter queue and
    /// returned in `dead` (their jobs must then be failed); the rest are in `live`.
    fn reclaim(&self, stage: Stage, max: usize) -> impl Future<Output = Result<Reclaimed, StoreError>> + Send;
    /// Moves a delivery to the dead-letter queue with its error, acknowledging it.
    fn dead_letter(&self, delivery: &Delivery, error: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Items waiting (not yet handed out) at `stage`.
    fn depth(&self, stage: Stage) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[derive(Debug, Default)]
pub struct Reclaimed {
    pub live: Vec<Delivery>,
    pub dead: Vec<Delivery>,
}

/// A progress event as it crosses nodes: `kind` is the JSON of `actors::messages::EventKind`.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEvent {
    /// Increases across the whole deployment, in publication order.
    pub id: u64,
    pub job: JobId,
    pub tenant: TenantId,
    pub ts_ms: u64,
    pub kind: serde_json::Value,
}

/// What a node hears from the others.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    Event(BusEvent),
    /// A job was cancelled through some node's API: whoever runs it stops.
    Cancel(JobId),
}

/// Events, cancels and node liveness across nodes.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event; returns its deployment-wide id.
    fn publish(&self, job: JobId, tenant: &TenantId, kind: serde_json::Value) -> impl Future<Output = Result<u64, StoreError>> + Send;
    fn cancel(&self, job: JobId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Everything published from now on, by every node, in order (events by id), until the bus
    /// is dropped. Reconnects by itself and resumes after the last event seen.
    fn subscribe(&self) -> tokio::sync::mpsc::Receiver<BusMessage>;
    /// Marks this node alive for `ttl`; call it well within `ttl`.
    fn heartbeat_node(&self, node: &str, ttl: Duration) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The nodes alive now.
    fn nodes(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_types_follow_the_extension() {
        for (key, expected) in [
            ("t/j/clip-01.MP4", "video/mp4"),
            ("t/j/clip-01.srt", "application/x-subrip"),
            ("t/j/clip-01.vtt", "text/vtt"),
            ("t/j/edit.json", "application/json"),
            ("work/j/frames", "application/octet-stream"),
        ] {
            assert_eq!(super::content_type(key), expected, "{key}");
        }
    }
}
