//! `/api/batches`: many jobs at once, from a list of URLs or a playlist (yt-dlp's flat listing).
//! Every entry becomes a job at once (status `waiting`, ids in the answer), all with the same
//! options; `Admission` releases them a few at a time and tenant after tenant in turn. A batch
//! is read back with each entry's state, streamed as the events of its jobs, and cancelled as one.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::try_join_all;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::jobs::{OptionsIn, allowed_url, idempotency_key, options, read_limited, stop};
use super::{Api, ApiError, Resp, json};
use crate::actors::messages::{SupervisorMessage, Watch};
use crate::job::{BatchEntry, BatchId, BatchRecord, JobRecord, JobSpec, JobStatus, Playlist, PlaylistEntry, Source, TenantId, new_job_id};
use crate::persist::JobStore;

/// Largest batch request body: room for the longest list of URLs `max_entries` allows.
const MAX_BATCH_BODY: u64 = 4 * 1024 * 1024;
/// Job records written or read at once.
const AT_ONCE: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    urls: Option<Vec<String>>,
    playlist: Option<String>,
    /// Only the playlist's first N entries.
    first: Option<usize>,
    #[serde(default)]
    options: OptionsIn,
}

pub async fn create(api: &Api, tenant: &TenantId, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let idempotency = idempotency_key(&req)?;
    let body = read_limited(req.into_body(), MAX_BATCH_BODY).await?;
    let create: CreateBatch = serde_json::from_slice(&body).map_err(|e| ApiError::bad("invalid_request", e.to_string()))?;
    let options = options(api, create.options).await?;
    super::jobs::check_quotas(api, tenant).await?;
    let max = api.ctx.services.config.server.batches.max_entries;
    let list = match (create.urls, create.playlist, create.first) {
        (Some(urls), None, None) => {
            check_count(urls.len(), max, "the list")?;
            for (i, url) in urls.iter().enumerate() {
                allowed_url(api, url, &format!("urls[{i}]")).await?;
            }
            let entries = urls.into_iter().map(|url| PlaylistEntry { url, title: None }).collect();
            Playlist { url: String::new(), title: None, entries }
        }
        (None, Some(url), first) => {
            allowed_url(api, &url, "playlist").await?;
            let mut list = api.ctx.services.fetcher.playlist(&url).await?.ok_or_else(|| {
                ApiError::bad("not_a_playlist", format!("{url} is one video, not a playlist: submit it to POST /api/jobs"))
            })?;
            if let Some(first) = first {
                if !(1..=max).contains(&first) {
                    return Err(ApiError::bad("invalid_request", format!("first must be 1..={max}")));
                }
                list.entries.truncate(first);
            }
            check_count(list.entries.len(), max, &format!("the playlist {url}"))?;
            list
        }
        (None, None, _) | (Some(_), Some(_), _) => return Err(ApiError::bad("invalid_request", "give exactly one of urls and playlist")),
        (Some(_), None, Some(_)) => return Err(ApiError::bad("invalid_request", "first applies to a playlist only")),
    };
    api.ctx.services.scratch.check_free().map_err(|e| ApiError::Unavailable(e.to_string()))?;

    let id = new_job_id();
    if let Some(key) = idempotency {
        // Batch keys apart from job keys: the same key may name a job and a batch.
        let owner = api.ctx.store.claim_idempotency_key(tenant, &format!("batch:{key}"), id).await?;
        if owner != id {
            let existing = api.ctx.store.get_batch(owner).await?.ok_or(ApiError::NotFound)?;
            return Ok(json(StatusCode::OK, &created(&existing)));
        }
    }
    let records: Vec<JobRecord> = list
        .entries
        .iter()
        .map(|entry| {
            let spec = JobSpec { source: Source::Url(entry.url.clone()), options: options.clone() };
            let mut record = JobRecord::new(new_job_id(), tenant.clone(), spec);
            record.status = JobStatus::Waiting;
            record.batch = Some(id);
            record
        })
        .collect();
    // The jobs first: a crash before the batch record leaves jobs that run without a batch,
    // never a batch naming jobs that do not exist.
    for chunk in records.chunks(AT_ONCE) {
        try_join_all(chunk.iter().map(|r| api.ctx.store.put(r))).await?;
    }
    let entries = records.iter().zip(&list.entries).map(|(r, e)| BatchEntry { job: r.id, title: e.title.clone() }).collect();
    let playlist = (!list.url.is_empty()).then_some(list.url);
    let batch = BatchRecord { id, tenant: tenant.clone(), playlist, title: list.title, entries, created_ms: crate::job::now_ms() };
    api.ctx.store.put_batch(&batch).await?;
    let jobs = records.iter().map(|r| r.id).collect();
    api.supervisor
        .send_message(SupervisorMessage::Enqueue { tenant: tenant.clone(), jobs })
        .map_err(|e| ApiError::Unavailable(format!("supervisor: {e}")))?;
    Ok(json(StatusCode::ACCEPTED, &created(&batch)))
}

fn check_count(n: usize, max: usize, what: &str) -> Result<(), ApiError> {
    match n {
        0 => Err(ApiError::bad("empty_batch", format!("{what} has no entries"))),
        n if n > max => Err(ApiError::bad(
            "batch_too_large",
            format!("{what} has {n} entries, more than the limit of {max} (server.batches.max_entries; a playlist takes \"first\")"),
        )),
        _ => Ok(()),
    }
}

/// The answer to a create: the batch's id and its entries' jobs.
fn created(batch: &BatchRecord) -> serde_json::Value {
    let jobs: Vec<_> = batch.entries.iter().map(|e| e.job).collect();
    json!({ "id": batch.id, "playlist": batch.playlist, "title": batch.title, "entries": jobs.len(), "jobs": jobs })
}

/// The batch, if it exists and belongs to `tenant` (another tenant's batch is "not found").
async fn owned(api: &Api, tenant: &TenantId, id: &str) -> Result<BatchRecord, ApiError> {
    let id: BatchId = id.parse().map_err(|_| ApiError::NotFound)?;
    match api.ctx.store.get_batch(id).await? {
        Some(batch) if &batch.tenant == tenant => Ok(batch),
        _ => Err(ApiError::NotFound),
    }
}

/// The batch's jobs, in its order (an entry whose job retention deleted is left out).
async fn jobs_of(api: &Api, batch: &BatchRecord) -> Result<Vec<(BatchEntry, JobRecord)>, ApiError> {
    let mut found = Vec::with_capacity(batch.entries.len());
    for chunk in batch.entries.chunks(AT_ONCE) {
        found.extend(try_join_all(chunk.iter().map(|e| api.ctx.store.get(e.job))).await?);
    }
    Ok(batch.entries.iter().cloned().zip(found).filter_map(|(e, j)| Some((e, j?))).collect())
}

pub async fn get(api: &Api, tenant: &TenantId, id: &str) -> Result<Resp, ApiError> {
    let batch = owned(api, tenant, id).await?;
    let jobs = jobs_of(api, &batch).await?;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for (_, job) in &jobs {
        *counts.entry(job.status.name()).or_default() += 1;
    }
    let finished = jobs.iter().all(|(_, j)| j.status.is_final());
    let entries: Vec<_> = jobs
        .iter()
        .map(|(entry, job)| {
            let url = match &job.spec.source {
                Source::Url(url) => Some(url.as_str()),
                Source::Upload(_) => None,
            };
            let title = entry.title.clone().or_else(|| job.source_meta.as_ref().and_then(|m| m.title.clone()));
            json!({ "job": job.id, "url": url, "title": title, "status": job.status, "clips": job.clips.len(), "error": job.error })
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "id": batch.id, "playlist": batch.playlist, "title": batch.title, "created_ms": batch.created_ms,
            "status": if finished { "finished" } else { "active" }, "counts": counts, "entries": entries,
        }),
    ))
}

/// Cancels every entry not yet final, the last first: those still waiting go before admission
/// can release them.
pub async fn cancel(api: &Api, tenant: &TenantId, id: &str) -> Result<Resp, ApiError> {
    let batch = owned(api, tenant, id).await?;
    let mut cancelled = 0;
    for (_, job) in jobs_of(api, &batch).await?.iter().rev() {
        if !job.status.is_final() && stop(api, job).await? != "unknown" {
            cancelled += 1;
        }
    }
    Ok(json(StatusCode::ACCEPTED, &json!({ "id": batch.id, "cancelled": cancelled })))
}

/// The events of the batch's jobs, as `/api/jobs/{id}/events` gives one job's.
pub async fn events(api: &Api, tenant: TenantId, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let batch = owned(api, &tenant, id).await?;
    let jobs: HashSet<_> = batch.entries.iter().map(|e| e.job).collect();
    super::ws::events(api, Watch { tenant, jobs: Some(Arc::new(jobs)) }, req).await
}
