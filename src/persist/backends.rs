//! The configured backend of each concern, chosen once at start: `Jobs` (redb or Postgres) and
//! `Blobs` (local files or S3). The traits use `impl Future` returns, which are not object-safe,
//! so the choice is an enum that forwards every call.

use std::path::Path;

use super::{BlobStore, EmbeddedStore, JobPage, JobStore, LocalBlobs, PgStore, S3Blobs, StoreError, Usage};
use crate::job::{BatchId, BatchRecord, JobId, JobRecord, JobStatus, TenantId};

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
