//! The configured backend of each concern, chosen once at start: `Jobs` (redb or Postgres),
//! `Blobs` (local files or S3), `Queue` and `Bus` (in this process, or Redis). The traits use
//! `impl Future` returns, which are not object-safe, so the choice is an enum that forwards every
//! call.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    BlobStore, BusMessage, Delivery, EmbeddedStore, EventBus, JobPage, JobQueue, JobStore, LocalBlobs, MemoryBus, MemoryQueue, PgStore,
    Reclaimed, RedisBus, RedisQueue, S3Blobs, StoreError, Usage, WorkItem,
};
use crate::job::{BatchId, BatchRecord, JobId, JobRecord, JobStatus, Stage, TenantId};

/// The job store in use.
pub enum Jobs {
    Embedded(EmbeddedStore),
    Postgres(PgStore),
}

/// Forwards a call to whichever backend is in use.
macro_rules! forward {
    ($self:ident, $enum:ident { $($variant:ident),+ }, $inner:ident => $call:expr) => {
        match $self {
            $($enum::$variant($inner) => $call,)+
        }
    };
}

impl Jobs {
    pub fn kind(&self) -> &'static str {
        match self {
            Jobs::Embedded(_) => "redb",
            Jobs::Postgres(_) => "postgres",
        }
    }

    /// Whether the store answers (for /readyz).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Jobs::Embedded(s) => s.get(uuid::Uuid::nil()).await.map(|_| ()),
            Jobs::Postgres(s) => s.ping().await,
        }
    }
}

impl JobStore for Jobs {
    async fn put(&self, job: &JobRecord) -> Result<(), StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.put(job).await)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.get(id).await)
    }

    async fn list(&self, tenant: &TenantId, status: Option<JobStatus>, after: Option<JobId>, limit: usize) -> Result<JobPage, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.list(tenant, status, after, limit).await)
    }

    async fn unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.unfinished().await)
    }

    async fn claim_idempotency_key(&self, tenant: &TenantId, key: &str, id: JobId) -> Result<JobId, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.claim_idempotency_key(tenant, key, id).await)
    }

    async fn usage(&self, tenant: &TenantId, since_ms: u64) -> Result<Usage, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.usage(tenant, since_ms).await)
    }

    async fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.put_batch(batch).await)
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.get_batch(id).await)
    }

    async fn prune(&self, now_ms: u64, older_than_days: u64, keep_max_finished: u64) -> Result<u64, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.prune(now_ms, older_than_days, keep_max_finished).await)
    }

    async fn delete_finished(&self, id: JobId) -> Result<bool, StoreError> {
        forward!(self, Jobs { Embedded, Postgres }, s => s.delete_finished(id).await)
    }
}

/// The blob store in use.
pub enum Blobs {
    Local(LocalBlobs),
    S3(S3Blobs),
}

impl Blobs {
    pub fn kind(&self) -> &'static str {
        match self {
            Blobs::Local(_) => "local",
            Blobs::S3(_) => "s3",
        }
    }

    /// Local blobs are served by this server's `/blobs` route; other stores serve their own.
    pub fn local(&self) -> Option<&LocalBlobs> {
        match self {
            Blobs::Local(b) => Some(b),
            Blobs::S3(_) => None,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Blobs::Local(b) => b.exists("ping").await.map(|_| ()),
            Blobs::S3(b) => b.ping().await,
        }
    }
}

impl BlobStore for Blobs {
    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        forward!(self, Blobs { Local, S3 }, b => b.put_file(key, from).await)
    }

    async fn get_file(&self, key: &str, to: &Path) -> Result<(), StoreError> {
        forward!(self, Blobs { Local, S3 }, b => b.get_file(key, to).await)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        forward!(self, Blobs { Local, S3 }, b => b.exists(key).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        forward!(self, Blobs { Local, S3 }, b => b.delete_prefix(prefix).await)
    }

    async fn signed_url(&self, key: &str, expires_unix_s: u64) -> Result<String, StoreError> {
        forward!(self, Blobs { Local, S3 }, b => b.signed_url(key, expires_unix_s).await)
    }
}

/// The work queue in use.
pub enum Queue {
    InProcess(Box<MemoryQueue>),
    Redis(RedisQueue),
}

impl Queue {
    pub fn kind(&self) -> &'static str {
        match self {
            Queue::InProcess(_) => "in-process",
            Queue::Redis(_) => "redis",
        }
    }

    /// Whether other processes take work from this queue too (then a stage's outputs must be
    /// where they can reach them).
    pub fn shared(&self) -> bool {
        matches!(self, Queue::Redis(_))
    }

    /// What admission weighs against `server.max_jobs_in_flight`: in this process every job in
    /// flight (each is one entry, waiting or claimed), shared the first stage's backlog (the
    /// other nodes' work is theirs to bound).
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        match self {
            Queue::InProcess(q) => Ok(q.entries()),
            Queue::Redis(q) => q.depth(Stage::Download).await,
        }
    }

    /// Acknowledges `delivery` and queues `next`, as `complete`; when `next` can be claimed for
    /// this node at once (this process's queue, with nothing else waiting at its stage), it is
    /// and comes back, so the job's next stage needs no trip through its stage's consumer. A
    /// shared queue leaves it to whichever node claims it.
    pub async fn complete_and_claim(&self, delivery: &Delivery, next: WorkItem) -> Result<Option<Delivery>, StoreError> {
        match self {
            Queue::InProcess(q) => Ok(q.complete_and_claim(delivery, next)),
            Queue::Redis(q) => q.complete(delivery, Some(next)).await.map(|()| None),
        }
    }

    /// True when this call began a new life of the queue (it holds nothing that was queued
    /// before): the caller then queues the job store's unfinished jobs again.
    pub async fn claim_epoch(&self) -> Result<bool, StoreError> {
        match self {
            Queue::InProcess(q) => Ok(q.claim_epoch()),
            Queue::Redis(q) => q.claim_epoch().await,
        }
    }
}

impl JobQueue for Queue {
    async fn push(&self, item: WorkItem) -> Result<(), StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.push(item).await)
    }

    async fn claim(&self, stage: Stage, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.claim(stage, max, wait).await)
    }

    async fn heartbeat(&self, delivery: &Delivery) -> Result<(), StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.heartbeat(delivery).await)
    }

    async fn complete(&self, delivery: &Delivery, next: Option<WorkItem>) -> Result<(), StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.complete(delivery, next).await)
    }

    async fn reclaim(&self, stage: Stage, max: usize) -> Result<Reclaimed, StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.reclaim(stage, max).await)
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.dead_letter(delivery, error).await)
    }

    async fn depth(&self, stage: Stage) -> Result<u64, StoreError> {
        forward!(self, Queue { InProcess, Redis }, q => q.depth(stage).await)
    }
}

/// The event bus in use.
pub enum Bus {
    InProcess(MemoryBus),
    Redis(Box<RedisBus>),
}

impl Bus {
    /// Whether other processes read and write this bus too.
    pub fn shared(&self) -> bool {
        matches!(self, Bus::Redis(_))
    }
}

impl EventBus for Bus {
    async fn publish(&self, job: JobId, tenant: &TenantId, kind: serde_json::Value) -> Result<u64, StoreError> {
        forward!(self, Bus { InProcess, Redis }, b => b.publish(job, tenant, kind).await)
    }

    async fn cancel(&self, job: JobId) -> Result<(), StoreError> {
        forward!(self, Bus { InProcess, Redis }, b => b.cancel(job).await)
    }

    fn subscribe(&self) -> mpsc::Receiver<BusMessage> {
        forward!(self, Bus { InProcess, Redis }, b => b.subscribe())
    }

    async fn heartbeat_node(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        forward!(self, Bus { InProcess, Redis }, b => b.heartbeat_node(node, ttl).await)
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        forward!(self, Bus { InProcess, Redis }, b => b.nodes().await)
    }
}
