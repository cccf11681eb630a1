//! `/api/jobs`: create (strictly validated, idempotent), read, list with cursors, results with
//! signed URLs, cancel, retry, delete.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Api, ApiError, Resp, json, query_param};
use crate::actors::job_run::clip_urls;
use crate::analysis::llm;
use crate::actors::messages::{JobMessage, SupervisorMessage};
use crate::config::quotas;
use crate::edit::{CaptionStyle, Size};
use crate::job::{JobId, JobOptions, JobRecord, JobSpec, JobStatus, Reframe, Source, StageState, TenantId, new_job_id};
use crate::persist::{BlobStore, JobStore};

/// Largest job request body; anything bigger is not a job request.
const MAX_JOB_BODY: u64 = 64 * 1024;
const PAGE: usize = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJob {
    url: Option<String>,
    upload_id: Option<String>,
    #[serde(default)]
    options: OptionsIn,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct OptionsIn {
    clips: Option<usize>,
    min_len: Option<f64>,
    max_len: Option<f64>,
    size: Option<String>,
    mode: Option<Reframe>,
    /// true, false, or a style object; checked by `caption_options`.
    captions: Option<serde_json::Value>,
    webhook: Option<String>,
    /// For the LLM scorer; checked by `llm::check_instruction`.
    instruction: Option<String>,
}

pub async fn create(api: &Api, tenant: &TenantId, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let idempotency = idempotency_key(&req)?;
    let body = read_limited(req.into_body(), MAX_JOB_BODY).await?;
    let create: CreateJob = serde_json::from_slice(&body).map_err(|e| ApiError::bad("invalid_request", e.to_string()))?;
    let spec = validate(api, tenant, create).await?;
    // Refuse new work while scratch space is short, rather than fail it half-way.
    api.ctx.services.scratch.check_free().map_err(|e| ApiError::Unavailable(e.to_string()))?;
    check_quotas(api, tenant).await?;
    let id = new_job_id();
    if let Some(key) = idempotency {
        let owner = api.ctx.store.claim_idempotency_key(tenant, &key, id).await?;
        if owner != id {
            let existing = api.ctx.store.get(owner).await?.ok_or(ApiError::NotFound)?;
            return Ok(json(StatusCode::OK, &json!({ "id": existing.id, "status": existing.status })));
        }
    }
    submit(api, JobRecord::new(id, tenant.clone(), spec)).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "id": id, "status": JobStatus::Queued })))
}

async fn submit(api: &Api, record: JobRecord) -> Result<(), ApiError> {
    ractor::call!(api.supervisor, |reply| SupervisorMessage::Submit { record: Box::new(record), reply })
        .map_err(|e| ApiError::Unavailable(format!("supervisor: {e}")))??;
    Ok(())
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job runs again as a new job with the same
/// source and options, its source checked again as at creation.
pub async fn retry(api: &Api, tenant: &TenantId, id: &str) -> Result<Resp, ApiError> {
    let job = owned(api, tenant, id).await?;
    if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
        let message = format!("the job is {}: only a failed or cancelled job is retried", job.status.name());
        return Err(ApiError::Conflict("not_retryable", message));
    }
    match &job.spec.source {
        Source::Url(url) => _ = allowed_url(api, url, "url").await?,
        Source::Upload(upload) => _ = upload_source(api, tenant, upload.clone()).await?,
    }
    api.ctx.services.scratch.check_free().map_err(|e| ApiError::Unavailable(e.to_string()))?;
    check_quotas(api, tenant).await?;
    let id = new_job_id();
    submit(api, JobRecord::new(id, tenant.clone(), job.spec)).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "id": id, "status": JobStatus::Queued, "retry_of": job.id })))
}

/// `GET /api/usage`: the tenant's quotas (0: none) and what it uses of them.
pub async fn usage(api: &Api, tenant: &TenantId) -> Result<Resp, ApiError> {
    let limits = api.ctx.services.config.server.quotas.limits(tenant.as_str());
    let usage = usage_now(api, tenant).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "limits": { "jobs_in_flight": limits.jobs_in_flight, "source_minutes_per_day": limits.source_minutes_per_day, "bytes_stored": limits.bytes_stored },
            "usage": { "jobs_in_flight": usage.in_flight, "source_minutes_last_24h": usage.source_seconds / 60.0, "bytes_stored": usage.bytes_stored },
        }),
    ))
}

/// What the tenant uses now, its source minutes over the quotas' window.
async fn usage_now(api: &Api, tenant: &TenantId) -> Result<crate::persist::Usage, ApiError> {
    Ok(api.ctx.store.usage(tenant, crate::job::now_ms().saturating_sub(quotas::WINDOW_MS)).await?)
}

/// Refuses new work past one of the tenant's quotas (429 with the quota's code).
pub(super) async fn check_quotas(api: &Api, tenant: &TenantId) -> Result<(), ApiError> {
    let limits = api.ctx.services.config.server.quotas.limits(tenant.as_str());
    if !limits.any() {
        return Ok(());
    }
    let usage = usage_now(api, tenant).await?;
    match limits.exceeded(usage.in_flight, usage.source_seconds, 0.0, usage.bytes_stored) {
        Some(exceeded) => Err(exceeded.into()),
        None => Ok(()),
    }
}

/// The request's `Idempotency-Key`, checked.
pub(super) fn idempotency_key<B>(req: &Request<B>) -> Result<Option<String>, ApiError> {
    let Some(key) = req.headers().get("idempotency-key") else { return Ok(None) };
    match key.to_str() {
        Ok(key) if (1..=200).contains(&key.len()) => Ok(Some(key.to_string())),
        _ => Err(ApiError::bad("invalid_request", "idempotency-key must be 1..=200 visible ascii characters")),
    }
}

async fn validate(api: &Api, tenant: &TenantId, c: CreateJob) -> Result<JobSpec, ApiError> {
    let source = match (c.url, c.upload_id) {
        (Some(url), None) => {
            allowed_url(api, &url, "url").await?;
            Source::Url(url)
        }
        (None, Some(upload)) => upload_source(api, tenant, upload).await?,
        _ => return Err(ApiError::bad("invalid_request", "give exactly one of url and upload_id")),
    };
    Ok(JobSpec { source, options: options(api, c.options).await? })
}

/// The tenant's complete upload `upload` as a source.
async fn upload_source(api: &Api, tenant: &TenantId, upload: String) -> Result<Source, ApiError> {
    let valid = upload.starts_with(&format!("{tenant}-")) && upload.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let here = valid && api.ctx.uploads_dir.join(&upload).is_file();
    // In a cluster the upload may have been taken by another API node.
    let shared = valid && !here && api.ctx.shares_work() && api.ctx.blobs.exists(&format!("uploads/{upload}")).await?;
    if !here && !shared {
        return Err(ApiError::bad("unknown_upload", format!("no upload {upload}")));
    }
    Ok(Source::Upload(upload))
}

/// A source URL the SSRF guard lets through; `field` names it in the error.
pub(super) async fn allowed_url(api: &Api, url: &str, field: &str) -> Result<url::Url, ApiError> {
    let parsed = url::Url::parse(url).map_err(|e| ApiError::bad("invalid_request", format!("{field}: {e}")))?;
    api.ctx.egress.precheck(&parsed).await.map_err(not_allowed)?;
    Ok(parsed)
}

/// The job options asked for, checked, over the configured defaults.
pub(super) async fn options(api: &Api, o: OptionsIn) -> Result<JobOptions, ApiError> {
    let bad = |m: &str| ApiError::bad("invalid_request", m);
    let config = &api.ctx.services.config;
    let clips = o.clips.unwrap_or(config.score.clips);
    let min_len = o.min_len.unwrap_or(config.score.min_len);
    let max_len = o.max_len.unwrap_or(config.score.max_len);
    if !(1..=20).contains(&clips) {
        return Err(bad("options.clips must be 1..=20"));
    }
    if !(min_len.is_finite() && max_len.is_finite()) || min_len < 1.0 || max_len > 600.0 || min_len > max_len {
        return Err(bad("options.min_len and max_len must satisfy 1 <= min_len <= max_len <= 600"));
    }
    let size = match o.size {
        None => Size { width: config.render.width, height: config.render.height },
        Some(s) => Size::parse(&s)
            .filter(|s| s.width % 2 == 0 && s.height % 2 == 0 && (16..=4096).contains(&s.width) && (16..=4096).contains(&s.height))
            .ok_or_else(|| bad("options.size must be WIDTHxHEIGHT, even, within 16..=4096"))?,
    };
    let mode = o.mode.unwrap_or_default();
    if let Some(hook) = &o.webhook {
        let hook = url::Url::parse(hook).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
        let hook = hook.ok_or_else(|| bad("options.webhook must be an http(s) url"))?;
        api.ctx.egress.precheck(&hook).await.map_err(not_allowed)?;
    }
    let captions = caption_options(o.captions, &config.captions)?;
    let instruction = o.instruction.as_deref().map(llm::check_instruction).transpose().map_err(|e| bad(&format!("options.{e}")))?;
    Ok(JobOptions { clips, min_len, max_len, size, mode, captions, webhook: o.webhook, instruction })
}

/// A URL the SSRF guard refuses, told at submission.
fn not_allowed(refused: crate::egress::EgressError) -> ApiError {
    ApiError::bad(refused.code(), refused.to_string())
}

/// `options.captions` over the configured style: absent keeps it, `true`/`false` switch it on
/// or off, an object (`{"preset": "boxed", "size": 0.06}`) chooses a preset and overrides.
fn caption_options(value: Option<serde_json::Value>, base: &CaptionStyle) -> Result<CaptionStyle, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_request", m);
    let layer = match value {
        None | Some(serde_json::Value::Null) => return Ok(base.clone()),
        Some(serde_json::Value::Bool(enabled)) => CaptionStyle { enabled, ..CaptionStyle::default() },
        Some(style @ serde_json::Value::Object(_)) => {
            serde_json::from_value(style).map_err(|e| bad(format!("options.captions: {e}")))?
        }
        Some(_) => return Err(bad("options.captions must be true, false or a caption style object".into())),
    };
    layer.validate().map_err(|e| bad(format!("options.captions.{e}")))?;
    Ok(layer.over(base))
}

/// The job, if it exists and belongs to `tenant` (another tenant's job is "not found").
pub(super) async fn owned(api: &Api, tenant: &TenantId, id: &str) -> Result<JobRecord, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
    match api.ctx.store.get(id).await? {
        Some(job) if &job.tenant == tenant => Ok(job),
        _ => Err(ApiError::NotFound),
    }
}

pub async fn get(api: &Api, tenant: &TenantId, id: &str) -> Result<Resp, ApiError> {
    let mut job = owned(api, tenant, id).await?;
    if !job.status.is_final()
        && let Some(stages) = live(api, job.id).await
    {
        job.stages = stages;
    }
    Ok(json(StatusCode::OK, &view(&job)))
}

/// The job's stages as its actor on this node sees them at this moment (the progress reported
/// since the last save included); `None` when no stage of it runs here.
async fn live(api: &Api, job: JobId) -> Option<Vec<StageState>> {
    let actor = api.ctx.cluster.job_actor(job)?;
    ractor::call!(actor, JobMessage::Status).ok().filter(|stages| !stages.is_empty())
}

pub fn view(job: &JobRecord) -> serde_json::Value {
    json!({
        "id": job.id, "status": job.status, "source": job.spec.source, "options": job.spec.options,
        "stages": job.stages, "clips": job.clips, "fallbacks": job.fallbacks, "source_truncated": job.source_truncated, "source_meta": job.source_meta, "error": job.error,
        "batch": job.batch, "source_seconds": job.source_seconds, "bytes_stored": job.bytes_stored,
        "cost": job.cost, "created_ms": job.created_ms, "updated_ms": job.updated_ms,
    })
}

pub async fn list(api: &Api, tenant: &TenantId, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let status = match query_param(req, "status") {
        None => None,
        Some(s) => Some(JobStatus::parse(&s).ok_or_else(|| ApiError::bad("invalid_request", format!("unknown status {s:?}")))?),
    };
    let after = match query_param(req, "cursor") {
        None => None,
        Some(c) => Some(c.parse::<JobId>().map_err(|_| ApiError::bad("invalid_request", "bad cursor"))?),
    };
    let page = api.ctx.store.list(tenant, status, after, PAGE).await?;
    let jobs: Vec<_> = page.jobs.iter().map(view).collect();
    Ok(json(StatusCode::OK, &json!({ "jobs": jobs, "next_cursor": page.next })))
}

pub async fn result(api: &Api, tenant: &TenantId, id: &str) -> Result<Resp, ApiError> {
    let job = owned(api, tenant, id).await?;
    let mut clips = Vec::with_capacity(job.clips.len());
    for c in &job.clips {
        let urls = clip_urls(&api.ctx, c).await?;
        clips.push(json!({ "index": c.index, "start": c.start, "end": c.end, "score": c.score, "scores": c.scores, "title": c.title,
                           "scorer": c.scorer, "reason": c.reason, "fallbacks": c.fallbacks, "urls": urls }));
    }
    let usage: serde_json::Map<_, _> = job.stages.iter().map(|s| (s.stage.name().to_string(), json!(s.usage))).collect();
    Ok(json(StatusCode::OK, &json!({ "id": job.id, "status": job.status, "source_meta": job.source_meta, "clips": clips, "fallbacks": job.fallbacks,
                                     "source_truncated": job.source_truncated, "usage": usage, "cost": job.cost })))
}

/// `DELETE /api/jobs/{id}`: cancels a job that is not final. With `?purge=true` it deletes a
/// final job instead, its clips and record (409 while the job runs: cancel it first).
pub async fn cancel(api: &Api, tenant: &TenantId, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let job = owned(api, tenant, id).await?;
    match query_param(req, "purge").as_deref() {
        None | Some("false") => {}
        Some("true") => return purge(api, &job).await,
        Some(_) => return Err(ApiError::bad("invalid_request", "purge must be true or false")),
    }
    if job.status.is_final() {
        return Ok(json(StatusCode::OK, &json!({ "id": job.id, "status": job.status })));
    }
    let status = stop(api, &job).await?;
    Ok(json(StatusCode::ACCEPTED, &json!({ "id": job.id, "status": status })))
}

/// Deletes a final job: its files first, so that a failure leaves the record to try again from.
async fn purge(api: &Api, job: &JobRecord) -> Result<Resp, ApiError> {
    if !job.status.is_final() {
        return Err(ApiError::Conflict("job_running", format!("the job is {}: cancel it before deleting it", job.status.name())));
    }
    api.ctx.blobs.delete_prefix(&format!("{}/{}/", job.tenant, job.id)).await?;
    api.ctx.store.delete_finished(job.id).await?;
    Ok(json(StatusCode::OK, &json!({ "id": job.id, "status": "deleted" })))
}

/// Asks the supervisor to stop a job that is not final; says what became of it: "cancelled" (it
/// was still waiting), "cancelling" (it is running and stops at its next step) or "unknown".
pub(super) async fn stop(api: &Api, job: &JobRecord) -> Result<&'static str, ApiError> {
    let stopped = ractor::call!(api.supervisor, |reply| SupervisorMessage::Cancel { job: job.id, reply })
        .map_err(|e| ApiError::Unavailable(format!("supervisor: {e}")))?;
    Ok(match (stopped, job.status) {
        (true, JobStatus::Waiting) => "cancelled",
        (true, _) => "cancelling",
        (false, _) => "unknown",
    })
}

pub(super) async fn read_limited(body: Incoming, limit: u64) -> Result<hyper::body::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit as usize);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge(limit)),
        Err(e) => Err(ApiError::bad("invalid_request", format!("body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::captions::Preset;

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest { message, .. } => message,
            other => panic!("a 400 expected, got {other:?}"),
        }
    }

    #[test]
    fn captions_option_is_a_switch_or_a_style_over_the_configured_one() {
        let base = CaptionStyle { preset: Some(Preset::Bold), size: Some(0.06), ..Default::default() };
        assert_eq!(caption_options(None, &base).unwrap(), base);
        assert!(!caption_options(Some(json!(false)), &base).unwrap().enabled);
        assert_eq!(caption_options(Some(json!(true)), &base).unwrap(), base);
        let style = caption_options(Some(json!({"preset": "word", "color": "#00FF00"})), &base).unwrap();
        assert_eq!((style.preset, style.size, style.color.as_deref()), (Some(Preset::Word), Some(0.06), Some("#00FF00")));
        assert!(style.enabled);
    }

    #[test]
    fn a_bad_captions_option_says_what_is_wrong() {
        let base = CaptionStyle::default();
        for (value, needle) in [
            (json!("boxed"), "options.captions must be true, false or a caption style object"),
            (json!({"preset": "fancy"}), "unknown variant `fancy`"),
            (json!({"sise": 0.05}), "unknown field `sise`"),
            (json!({"size": "big"}), "options.captions: invalid type"),
            (json!({"size": 0.9}), "options.captions.size must be within 0.01..=0.3"),
            (json!({"highlight": "yellow"}), "options.captions.highlight must be a colour as #RRGGBB"),
            (json!({"max_lines": 0}), "options.captions.max_lines must be 1..=5"),
        ] {
            let m = message(caption_options(Some(value.clone()), &base).unwrap_err());
            assert!(m.contains(needle), "{value}: {m}");
        }
    }
}
