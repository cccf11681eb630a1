//! Running one stage's work: on its pool, with retries and backoff, transitions persisted,
//! progress published, cancellation, and a heartbeat that stops a stage gone silent.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Halt, JobRun, STORE_PATIENCE};
use crate::actors::messages::EventKind;
use crate::backoff::Backoff;
use crate::job::{JobError, JobRecord, Stage, StageStatus, now_ms};
use crate::media::{Control, MediaError};
use crate::persist::{JobStore, StoreError};
use crate::pipeline::StageError;
use crate::usage::Meter;

impl JobRun {
    /// Runs one stage's work on its pool, with retries, transitions and progress events.
    pub(super) async fn stage<T, F, Fut>(&mut self, stage: Stage, work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        self.stage_scaled(stage, (0.0, 1.0), work).await
    }

    /// As `stage`, with progress mapped into `offset + fraction * span` (for per-clip stages).
    pub(super) async fn stage_scaled<T, F, Fut>(&mut self, stage: Stage, span: (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        if self.record.stage(stage).status != StageStatus::Running {
            self.mark(stage, StageStatus::Running, span.0).await;
            self.publish(EventKind::StageStarted { stage });
        }
        let tried = self.tries(stage, span, work).await;
        self.settle(stage, span, tried).await
    }

    /// Tries `work` on the stage's pool (see `tries`) and records what the tries used, without
    /// the stage's transitions.
    pub(super) async fn attempt<T, F, Fut>(&mut self, stage: Stage, span: (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        let tried = self.tries(stage, span, work).await;
        self.charged(stage, tried).await
    }

    /// `work` tried up to the configured attempts with exponential backoff, on the stage's pool,
    /// stopping at once on cancellation: a future that owns what it needs, so it can run
    /// beside another stage of the job (a clip framed while the one before it renders); what
    /// they used and how they ended go to the record with `settle`.
    pub(super) fn tries<T, F, Fut>(&self, stage: Stage, (offset, span): (f64, f64), work: F) -> impl Future<Output = Tried<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        let (ctx, job, tenant, report, cancel) = (self.ctx.clone(), self.record.id, self.record.tenant.clone(), self.report.clone(), self.cancel.clone());
        let work = Arc::new(work);
        async move {
            let server = &ctx.services.config.server;
            let retry = server.retry.clone();
            let (stall, first) = (Duration::from_secs(server.stall_s.max(1)), Duration::from_secs(server.first_report_s.max(1)));
            let mut backoff = Backoff::new(Duration::from_secs_f64(retry.base_s), Duration::from_secs(300));
            let mut tried = Tried { result: Err(Halt::Cancelled), attempts: 0, cpu: Duration::ZERO, gpu: Duration::ZERO, wall: Duration::ZERO };
            loop {
                tried.attempts += 1;
                let beat = Arc::new(Heartbeat::default());
                let beat_in = beat.clone();
                let (ctx_in, tenant_in, report_in) = (ctx.clone(), tenant.clone(), report.clone());
                let ctl = Control {
                    cancel: cancel.child_token(),
                    on_progress: Some(Arc::new(move |f| {
                        beat_in.beat();
                        let progress = offset + f * span;
                        if let Some(report) = &report_in {
                            report.send_modify(|stages| stages.iter_mut().filter(|s| s.stage == stage).for_each(|s| s.progress = progress));
                        }
                        ctx_in.publish(job, &tenant_in, EventKind::StageProgress { stage, progress });
                    })),
                };
                let (make, meter, cancel_in, began) = (work.clone(), Meter::new(), cancel.clone(), Instant::now());
                let charged = meter.clone();
                // Made again if its worker dies running it.
                let run = ctx.pool(stage).run(move || {
                    let (work, ctl, cancel, beat, meter) = (make.clone(), ctl.clone(), cancel_in.clone(), beat.clone(), charged.clone());
                    async move {
                        let stop = ctl.cancel.clone();
                        tokio::select! {
                            result = meter.measure(work(ctl)) => result,
                            _ = cancel.cancelled() => Err(StageError::Media(MediaError::Cancelled)),
                            silent = beat.stalled(stall, first) => {
                                stop.cancel();
                                Err(StageError::Stalled(silent.as_secs()))
                            }
                        }
                    }
                });
                let outcome = run.await;
                (tried.cpu, tried.gpu, tried.wall) = (tried.cpu + meter.cpu(), tried.gpu + meter.gpu(), tried.wall + began.elapsed());
                let metrics = &ctx.metrics;
                metrics.stage_cpu_seconds.with_label_values(&[stage.name()]).inc_by(meter.cpu().as_secs_f64());
                metrics.stage_gpu_seconds.with_label_values(&[stage.name()]).inc_by(meter.gpu().as_secs_f64());
                let error = match outcome {
                    Ok(Ok(value)) => {
                        tried.result = Ok(value);
                        return tried;
                    }
                    Ok(Err(e)) if e.is_cancelled() || cancel.is_cancelled() => return tried,
                    Ok(Err(e)) => e,
                    Err(pool) => StageError::Crashed(pool.to_string()),
                };
                metrics.stage_failures.with_label_values(&[stage.name(), error.code()]).inc();
                tracing::warn!(job = %job, stage = stage.name(), attempt = tried.attempts, code = error.code(), error = %error, "stage failed");
                if !error.is_retryable() || tried.attempts >= retry.attempts {
                    tried.result = Err(Halt::Failed(JobError { code: error.code().into(), message: error.to_string(), stage: Some(stage) }));
                    return tried;
                }
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = cancel.cancelled() => return tried,
                }
            }
        }
    }

    /// Records the tries of a part of `stage` (`offset`, `span`, see `stage_scaled`): what they
    /// used, the stage failed if they failed it, and done when the part is its last.
    pub(super) async fn settle<T>(&mut self, stage: Stage, (offset, span): (f64, f64), tried: Tried<T>) -> Result<T, Halt> {
        self.ctx.metrics.stage_duration.with_label_values(&[stage.name()]).observe(tried.wall.as_secs_f64());
        let value = self.charged(stage, tried).await?;
        if offset + span >= 1.0 - 1e-9 {
            self.finished(stage);
        }
        Ok(value)
    }

    /// Marks `stage` done, persisted with the next transition (the next stage starting, or the
    /// job ending), which follows at once: half the writes per job. A crash in between loses
    /// nothing, the stage's output is on disk and the stage is skipped when the job resumes. It
    /// is announced with that save too, so the two events of a stage boundary go out together.
    pub(super) fn finished(&mut self, stage: Stage) {
        let s = self.record.stage_mut(stage);
        if s.status != StageStatus::Done {
            (s.status, s.progress) = (StageStatus::Done, 1.0);
            self.unannounced.push(EventKind::StageFinished { stage });
        }
    }

    /// Adds what tries used to their stage's usage, counts them, and marks the stage failed if
    /// they failed it.
    async fn charged<T>(&mut self, stage: Stage, tried: Tried<T>) -> Result<T, Halt> {
        let s = self.record.stage_mut(stage);
        s.attempts += tried.attempts;
        s.usage.add(tried.wall, tried.cpu, tried.gpu);
        let progress = s.progress;
        if matches!(tried.result, Err(Halt::Failed(_))) {
            self.mark(stage, StageStatus::Failed, progress).await;
        }
        tried.result
    }

    pub(super) async fn mark(&mut self, stage: Stage, status: StageStatus, progress: f64) {
        let s = self.record.stage_mut(stage);
        if s.status == status && (s.progress - progress).abs() < 1e-9 {
            return;
        }
        s.status = status;
        s.progress = progress;
        if let Err(e) = self.save().await {
            tracing::error!(job = %self.record.id, error = %e, "cannot persist stage transition");
        }
    }

    pub(super) fn progress(&mut self, stage: Stage, progress: f64) {
        self.record.stage_mut(stage).progress = progress;
    }

    /// Persists what is not yet (a stage that just finished); a cluster does it before handing
    /// the job to its next stage.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.unannounced.is_empty() { Ok(()) } else { self.save().await }
    }

    /// Persists the record, then announces the changes waiting for it (`unannounced`); an
    /// unreachable store is retried with backoff for a while (a restart of Postgres should not
    /// fail the jobs in flight). Announcements wait for a save that succeeds: a client that sees
    /// an event and reads the job sees the change; a run abandoned unsaved announces nothing, and
    /// the run that redoes its stage announces it then.
    pub async fn save(&mut self) -> Result<(), StoreError> {
        self.record.updated_ms = now_ms();
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.ctx.store.put(&self.record).await {
                Err(e) if e.is_retryable() && started.elapsed() < STORE_PATIENCE && !self.cancel.is_cancelled() => {
                    tracing::warn!(job = %self.record.id, error = %e, "job store unavailable; retrying");
                    backoff.wait().await;
                }
                Ok(()) => {
                    if let Some(report) = &self.report {
                        report.send_replace(self.record.stages.clone());
                    }
                    for kind in std::mem::take(&mut self.unannounced) {
                        self.publish(kind);
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn publish(&self, kind: EventKind) {
        self.ctx.publish(self.record.id, &self.record.tenant, kind);
    }

    /// Posts to the job's webhook, if any, in the background (signed, retried), after the job's
    /// previous delivery has ended, so they arrive in the order they were made. The body is only
    /// built when there is a webhook to send it to.
    pub(super) fn notify(&mut self, body: impl FnOnce(&JobRecord) -> serde_json::Value) {
        if let Some(url) = self.record.spec.options.webhook.clone() {
            let (ctx, body, previous) = (self.ctx.clone(), body(&self.record), self.last_webhook.take());
            self.last_webhook = Some(crate::task::spawn_named("webhook", async move {
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                crate::egress::webhook::deliver(&ctx.http, &ctx.egress, &ctx.secret, &url, &body).await
            }));
        }
    }
}

/// How the tries of a stage's work ended, and what they used (CPU and GPU as metered, wall
/// summed over the tries, their waits for a worker included, the backoffs between them not).
pub(super) struct Tried<T> {
    result: Result<T, Halt>,
    attempts: u32,
    cpu: Duration,
    gpu: Duration,
    wall: Duration,
}

/// A stage's heartbeat: its progress reports. A stage that has reported and then says nothing for
/// `stall` is hung; so is one that has reported nothing at all for `first` since its work began
/// (not since it was queued for a slot), so work that cannot report progress still has a bound.
#[derive(Default)]
struct Heartbeat {
    /// Milliseconds since the epoch of the last report; 0 before the first.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    fn beat(&self) {
        self.last_ms.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Watches the work from its start (call it as the work begins); resolves once the stage
    /// counts as hung (see above), with how long it has been silent.
    async fn stalled(&self, stall: Duration, first: Duration) -> Duration {
        let begun = now_ms();
        let check = (stall.min(first) / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        loop {
            tokio::time::sleep(check).await;
            let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
            let (since, limit) = if last > 0 { (last, stall) } else { (begun, first) };
            let silent = Duration::from_millis(now_ms().saturating_sub(since));
            if silent >= limit {
                return silent;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_heartbeat_fires_on_silence_after_a_report_and_on_a_stage_that_never_reports() {
        let (limit, first) = (Duration::from_millis(200), Duration::from_millis(800));
        let beat = Heartbeat::default();
        // Reporting more often than the limit keeps it alive, past `first` too.
        let alive = async {
            for _ in 0..24 {
                beat.beat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            () = alive => {}
            _ = beat.stalled(limit, first) => panic!("a stage that reports is not stalled"),
        }
        // Then silence: stalled after about the limit.
        let started = Instant::now();
        let silent = beat.stalled(limit, first).await;
        assert!(silent >= limit && started.elapsed() < first, "{silent:?} after {:?}", started.elapsed());
        // Never reported: left alone until `first` has passed since the start, then stalled.
        let quiet = Heartbeat::default();
        let watch = quiet.stalled(limit, first);
        tokio::pin!(watch);
        assert!(tokio::time::timeout(first / 2, &mut watch).await.is_err());
        let silent = watch.await;
        assert!(silent >= first && silent < first * 3, "{silent:?}");
    }
}

