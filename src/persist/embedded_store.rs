//! `JobStore` on redb, an embedded ACID key-value file: the default store, needing no server.
//!
//! Three tables, written together in one transaction so they never disagree after a crash:
//! - `jobs`: job id (the UUIDv7 as a `u128`) → the record as JSON;
//! - `tenant_jobs`: `tenant prefix ‖ 16 id bytes` → `()`, so a reversed range scan over one
//!   tenant's prefix lists its jobs newest first (UUIDv7 bytes sort by creation time);
//! - `idempotency`: `tenant prefix ‖ key` → job id;
//! - `batches`: batch id (`u128`) → the batch record as JSON (written once, outside the group
//!   commit: batches are few).
//!
//! The tenant prefix is the tenant's length (u32, big-endian) then its bytes, so no tenant's keys
//! can fall inside another tenant's range whatever characters the names hold.
//!
//! Retention (`prune`) is in `embedded_store/retention.rs`.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{JobPage, JobStore, StoreError, Usage};
use crate::job::{BatchId, BatchRecord, JobId, JobRecord, JobStatus, TenantId};

mod retention;

const JOBS: TableDefinition<u128, &[u8]> = TableDefinition::new("jobs");
const TENANT_JOBS: TableDefinition<&[u8], ()> = TableDefinition::new("tenant_jobs");
const IDEMPOTENCY: TableDefinition<&[u8], u128> = TableDefinition::new("idempotency");
const BATCHES: TableDefinition<u128, &[u8]> = TableDefinition::new("batches");

/// Job records in one redb file. Cheap to clone; clones share the database and its writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// The group-commit thread; the last store clone to go closes its queue and waits for it, so the
/// database file is closed when the store is gone (and can be opened again at once).
struct Writer {
    queue: Option<mpsc::Sender<Put>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One record to write, and who waits for it to be durable.
struct Put {
    id: u128,
    json: Vec<u8>,
    index_key: Vec<u8>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Puts waiting for the writer; each job's run has at most one outstanding.
const WRITE_QUEUE: usize = 4096;
/// Records committed together at most.
const MAX_BATCH: usize = 512;

impl EmbeddedStore {
    /// Opens the database at `path`, creating it (and its parent folders) if needed, with a
    /// page cache of `cache_bytes` (the store's share of resident memory).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        // Read transactions fail on a table that was never created, so create all of them now.
        let txn = db.begin_write()?;
        txn.open_table(JOBS)?;
        txn.open_table(TENANT_JOBS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(BATCHES)?;
        txn.commit()?;
        let db = Arc::new(db);
        Ok(Self { writer: Arc::new(spawn_writer(db.clone())?), db })
    }

    /// Runs a redb operation on the blocking pool: redb does file I/O and fsyncs.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Group commit: one thread takes every put waiting and writes them in one transaction, so a
/// busy server pays one fsync per batch instead of one per state change (each job persists every
/// transition). A put returns only once its batch is committed: durability is unchanged.
fn spawn_writer(db: Arc<Database>) -> Result<Writer, StoreError> {
    let (tx, mut rx) = mpsc::channel::<Put>(WRITE_QUEUE);
    let thread = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(put) => batch.push(put),
                        Err(_) => break,
                    }
                }
                let result = write_batch(&db, &batch);
                for put in batch {
                    let _ = put.done.send(result.as_ref().map(|_| ()).map_err(|e| StoreError::Unavailable(e.to_string())));
                }
            }
        })
        .map_err(StoreError::Io)?;
    Ok(Writer { queue: Some(tx), thread: Some(thread) })
}

/// Writes a batch in order (a later put of the same job wins) in one transaction.
fn write_batch(db: &Database, batch: &[Put]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut index = txn.open_table(TENANT_JOBS)?;
        for put in batch {
            jobs.insert(put.id, put.json.as_slice())?;
            // A job never changes tenant, so the index entry written first stays right.
            index.insert(put.index_key.as_slice(), ())?;
        }
    }
    Ok(txn.commit()?)
}

/// Every redb failure (I/O, lock, full disk, a damaged file) leaves the store unusable for now, so
/// all map to `Unavailable`; these impls let `?` do it. JSON that fails to parse is `Corrupt`.
macro_rules! unavailable_from {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                Self::Unavailable(e.to_string())
            }
        }
    )*};
}
unavailable_from!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + tenant.len() + 16);
    key.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    key.extend_from_slice(tenant.as_bytes());
    key
}

fn tenant_key(tenant: &str, rest: &[u8]) -> Vec<u8> {
    let mut key = tenant_prefix(tenant);
    key.extend_from_slice(rest);
    key
}

/// The record an entry of the tenant index (the tenant's prefix, then the job's 16-byte id)
/// points at.
fn indexed_job(jobs: &impl ReadableTable<u128, &'static [u8]>, prefix: usize, key: &[u8]) -> Result<JobRecord, StoreError> {
    let id: [u8; 16] = key[prefix..].try_into().map_err(|_| StoreError::Corrupt("tenant index key has a bad length".into()))?;
    let id = JobId::from_bytes(id);
    let value = jobs.get(id.as_u128())?.ok_or_else(|| StoreError::Corrupt(format!("indexed job {id} has no record")))?;
    decode(value.value())
}

fn decode(bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl JobStore for EmbeddedStore {
    async fn put(&self, job: &JobRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (done, committed) = oneshot::channel();
        let put = Put { id: job.id.as_u128(), json, index_key: tenant_key(&job.tenant, job.id.as_bytes()), done };
        let gone = || StoreError::Unavailable("store writer stopped".into());
        let queue = self.writer.queue.as_ref().ok_or_else(gone)?;
        queue.send(put).await.map_err(|_| gone())?;
        committed.await.map_err(|_| gone())?
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |db| {
            let table = db.begin_read()?.open_table(JOBS)?;
            let found = table.get(id.as_u128())?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        status: Option<JobStatus>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        // A page of zero could never carry a cursor forward; the API bounds it, this is a backstop.
        let limit = limit.max(1);
        let tenant = tenant.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let index = txn.open_table(TENANT_JOBS)?;
            let jobs = txn.open_table(JOBS)?;
            let prefix = tenant_prefix(&tenant);
            let lower = tenant_key(&tenant, &[0; 16]);
            // Every index key of this tenant is the prefix plus exactly 16 bytes, so these bounds
            // hold all of them and nothing else.
            let entries = match after {
                Some(cursor) => index.range(lower.as_slice()..tenant_key(&tenant, cursor.as_bytes()).as_slice())?,
                None => index.range(lower.as_slice()..=tenant_key(&tenant, &[0xff; 16]).as_slice())?,
            };

            let mut page = Vec::with_capacity(limit + 1);
            for entry in entries.rev() {
                let job = indexed_job(&jobs, prefix.len(), entry?.0.value())?;
                if status.is_none_or(|s| s == job.status) {
                    page.push(job);
                    // One more than asked tells whether another page follows.
                    if page.len() > limit {
                        break;
                    }
                }
            }
            let next = if page.len() > limit {
                page.truncate(limit);
                page.last().map(|j| j.id)
            } else {
                None
            };
            Ok(JobPage { jobs: page, next })
        })
        .await
    }

    async fn unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.blocking(|db| {
            let table = db.begin_read()?.open_table(JOBS)?;
            let mut out = Vec::new();
            for entry in table.range::<u128>(..)? {
                let (_, value) = entry?;
                let job = decode(value.value())?;
                if !job.status.is_final() {
                    out.push(job);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn claim_idempotency_key(&self, tenant: &TenantId, key: &str, id: JobId) -> Result<JobId, StoreError> {
        let claim = tenant_key(tenant, key.as_bytes());
        self.blocking(move |db| {
            // redb serialises write transactions, so read-then-insert here is atomic.
            let txn = db.begin_write()?;
            let owner = {
                let mut table = txn.open_table(IDEMPOTENCY)?;
                let existing = table.get(claim.as_slice())?.map(|v| v.value());
                match existing {
                    Some(owner) => JobId::from_u128(owner),
                    None => {
                        table.insert(claim.as_slice(), id.as_u128())?;
                        id
                    }
                }
            };
            txn.commit()?;
            Ok(owner)
        })
        .await
    }

    async fn usage(&self, tenant: &TenantId, since_ms: u64) -> Result<Usage, StoreError> {
        let tenant = tenant.clone();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let index = txn.open_table(TENANT_JOBS)?;
            let jobs = txn.open_table(JOBS)?;
            let prefix = tenant_prefix(&tenant);
            let (lower, upper) = (tenant_key(&tenant, &[0; 16]), tenant_key(&tenant, &[0xff; 16]));
            let mut usage = Usage::default();
            for entry in index.range(lower.as_slice()..=upper.as_slice())? {
                let job = indexed_job(&jobs, prefix.len(), entry?.0.value())?;
                usage.in_flight += u64::from(matches!(job.status, JobStatus::Queued | JobStatus::Running));
                if job.created_ms >= since_ms {
                    usage.source_seconds += job.source_seconds.unwrap_or(0.0);
                }
                usage.bytes_stored += job.bytes_stored;
            }
            Ok(usage)
        })
        .await
    }

    async fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        let (id, json) = (batch.id.as_u128(), serde_json::to_vec(batch).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(BATCHES)?.insert(id, json.as_slice())?;
            Ok(txn.commit()?)
        })
        .await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        self.blocking(move |db| {
            let table = db.begin_read()?.open_table(BATCHES)?;
            let found = table.get(id.as_u128())?;
            found.map(|v| serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
        })
        .await
    }

    async fn prune(&self, now_ms: u64, older_than_days: u64, keep_max_finished: u64) -> Result<u64, StoreError> {
        let cutoff_ms =
            (older_than_days > 0).then(|| now_ms.saturating_sub(older_than_days.saturating_mul(retention::DAY_MS)));
        let keep_max = (keep_max_finished > 0).then_some(keep_max_finished);
        if cutoff_ms.is_none() && keep_max.is_none() {
            return Ok(0);
        }
        self.blocking(move |db| {
            if let Some(cutoff) = cutoff_ms {
                retention::prune_batches(db, cutoff)?;
            }
            retention::prune_finished(db, cutoff_ms, keep_max)
        })
        .await
    }

    async fn delete_finished(&self, id: JobId) -> Result<bool, StoreError> {
        self.blocking(move |db| retention::delete_finished(db, id.as_u128())).await
    }
}
