//! Retention for the embedded store: deletes finished jobs by age and by count, with the same
//! rules and order as the Postgres store (most recently finished kept, ids breaking ties).
//!
//! Candidates are chosen from a read snapshot, so puts are not held up while every record is
//! scanned; the write transaction then touches only the jobs it deletes, and skips any job a put
//! changed in between.

use std::collections::HashSet;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{BATCHES, IDEMPOTENCY, JOBS, TENANT_JOBS, tenant_key};
use crate::job::{JobStatus, TenantId};
use crate::persist::StoreError;

pub(super) const DAY_MS: u64 = 86_400_000;

/// The fields retention looks at; serde skips the rest of the record without building it.
#[derive(serde::Deserialize)]
struct RetentionView {
    tenant: TenantId,
    status: JobStatus,
    updated_ms: u64,
}

fn view(bytes: &[u8]) -> Result<RetentionView, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A finished job chosen for deletion.
struct Doomed {
    id: u128,
    updated_ms: u64,
    tenant: TenantId,
}

/// Deletes the finished jobs that finished before `cutoff_ms` or rank beyond the `keep_max` most
/// recently finished (`None` disables a rule), with their idempotency keys. Returns the count.
pub(super) fn prune_finished(db: &Database, cutoff_ms: Option<u64>, keep_max: Option<u64>) -> Result<u64, StoreError> {
    let (doomed, keys) = choose(db, cutoff_ms, keep_max)?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let txn = db.begin_write()?;
    let mut deleted = HashSet::new();
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut index = txn.open_table(TENANT_JOBS)?;
        for job in &doomed {
            let unchanged = match jobs.get(job.id)? {
                Some(value) => {
                    let now = view(value.value())?;
                    now.status.is_final() && now.updated_ms == job.updated_ms
                }
                None => false,
            };
            if unchanged {
                jobs.remove(job.id)?;
                index.remove(tenant_key(&job.tenant, &job.id.to_be_bytes()).as_slice())?;
                deleted.insert(job.id);
            }
        }
        let mut idempotency = txn.open_table(IDEMPOTENCY)?;
        for (key, owner) in &keys {
            // Only if it still names the job: another prune may have freed it for a new claim.
            let current = idempotency.get(key.as_slice())?.map(|v| v.value());
            if deleted.contains(owner) && current == Some(*owner) {
                idempotency.remove(key.as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(deleted.len() as u64)
}

/// Deletes one finished job, its list entry and its idempotency keys; false when it is absent or
/// not finished (the write transaction reads its status, so a put cannot slip in between).
pub(super) fn delete_finished(db: &Database, id: u128) -> Result<bool, StoreError> {
    let txn = db.begin_write()?;
    {
        let mut jobs = txn.open_table(JOBS)?;
        let job = match jobs.get(id)? {
            Some(value) => view(value.value())?,
            None => return Ok(false),
        };
        if !job.status.is_final() {
            return Ok(false);
        }
        jobs.remove(id)?;
        txn.open_table(TENANT_JOBS)?.remove(tenant_key(&job.tenant, &id.to_be_bytes()).as_slice())?;
        txn.open_table(IDEMPOTENCY)?.retain(|_, owner| owner != id)?;
    }
    txn.commit()?;
    Ok(true)
}

/// Deletes the batch records created before `cutoff_ms`.
pub(super) fn prune_batches(db: &Database, cutoff_ms: u64) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct Created {
        created_ms: u64,
    }
    let txn = db.begin_write()?;
    txn.open_table(BATCHES)?.retain(|_, value| serde_json::from_slice::<Created>(value).is_ok_and(|b| b.created_ms >= cutoff_ms))?;
    Ok(txn.commit()?)
}

/// Idempotency keys (the table's raw key) and the job each maps to.
type Keys = Vec<(Vec<u8>, u128)>;

/// The jobs either rule condemns and the idempotency keys that point at them, from a snapshot.
fn choose(db: &Database, cutoff_ms: Option<u64>, keep_max: Option<u64>) -> Result<(Vec<Doomed>, Keys), StoreError> {
    let txn = db.begin_read()?;
    let mut finished = Vec::new();
    for entry in txn.open_table(JOBS)?.iter()? {
        let (id, value) = entry?;
        let view = view(value.value())?;
        if view.status.is_final() {
            finished.push(Doomed { id: id.value(), updated_ms: view.updated_ms, tenant: view.tenant });
        }
    }
    // Most recently finished first, as Postgres's `ORDER BY updated_ms DESC, id DESC` (uuids
    // compare bytewise there, as these big-endian u128s do here).
    finished.sort_unstable_by_key(|job| std::cmp::Reverse((job.updated_ms, job.id)));
    let doomed: Vec<Doomed> = finished
        .into_iter()
        .enumerate()
        .filter(|(rank, job)| {
            cutoff_ms.is_some_and(|cutoff| job.updated_ms < cutoff) || keep_max.is_some_and(|keep| *rank as u64 >= keep)
        })
        .map(|(_, job)| job)
        .collect();

    let ids: HashSet<u128> = doomed.iter().map(|job| job.id).collect();
    let mut keys = Vec::new();
    if !ids.is_empty() {
        for entry in txn.open_table(IDEMPOTENCY)?.iter()? {
            let (key, owner) = entry?;
            if ids.contains(&owner.value()) {
                keys.push((key.value().to_vec(), owner.value()));
            }
        }
    }
    Ok((doomed, keys))
}
