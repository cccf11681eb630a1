//! Storage, one small trait per concern, with the embedded implementation beside the production
//! one: `JobStore` (job records, idempotency keys), `BlobStore` (clips and sidecars, served by
//! signed URL). The embedded defaults need nothing running: `redb` for jobs, local files for blobs.

pub mod embedded_store;
pub mod local_blobs;

use std::path::Path;

use crate::job::{JobId, JobRecord, JobStatus, TenantId};

pub use embedded_store::EmbeddedStore;
pub use local_blobs::LocalBlobs;

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
            Self::Io(_) => "io",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Io(_))
    }
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
}

/// Clip files and sidecars under keys like `TENANT/JOB/clip-01.mp4`.
pub trait BlobStore: Send + Sync + 'static {
    /// Copies the file at `from` to `key` (replacing it: uploads are idempotent).
    fn put_file(&self, key: &str, from: &Path) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A URL that serves `key` until `expires_unix_s`.
    fn signed_url(&self, key: &str, expires_unix_s: u64) -> String;
}
