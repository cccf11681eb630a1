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
    pub(super) async fn stage_scaled<T, F, Fut>(&mut self, stage: Stage, (offset, span): (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        if self.record.stage(stage).status != StageStatus::Running {
            self.mark(stage, StageStatus::Running, offset).await;
            self.publish(EventKind::StageStarted { stage });
        }
        let started = Instant::now();
        let result = self.attempt(stage, (offset, span), work).await;
        self.ctx.metrics.stage_duration.with_label_values(&[stage.name()]).observe(started.elapsed().as_secs_f64());
        let value = result?;
        if offset + span >= 1.0 - 1e-9 {
            // Persisted with the next transition (the next stage starting, or the job ending),
            // which follows at once: half the writes per job. A crash in between loses nothing,
            // the stage's output is on disk and the stage is skipped when the job resumes. It is
            // announced with that save too, so the two events of a stage boundary go out together.
            let s = self.record.stage_mut(stage);
            (s.status, s.progress) = (StageStatus::Done, 1.0);
            self.unannounced.push(EventKind::StageFinished { stage });
        }
        Ok(value)
    }

    /// Tries `work` up to the configured attempts with exponential backoff, on the stage's pool,
    /// stopping at once on cancellation.
    pub(super) async fn attempt<T, F, Fut>(&mut self, stage: Stage, (offset, span): (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        let retry = self.ctx.services.config.server.retry.clone();
        let server = &self.ctx.services.config.server;
        let (stall, first) = (Duration::from_secs(server.stall_s.max(1)), Duration::from_secs(server.first_report_s.max(1)));
        let work = Arc::new(work);
        let mut attempt = 0;
        let mut backoff = Backoff::new(Duration::from_secs_f64(retry.base_s), Duration::from_secs(300));
        loop {
            attempt += 1;
            self.record.stage_mut(stage).attempts += 1;
            let cancel = self.cancel.clone();
            let (ctx, job, tenant, report) = (self.ctx.clone(), self.record.id, self.record.tenant.clone(), self.report.clone());
            let beat = Arc::new(Heartbeat::default());
            let beat_in = beat.clone();
            let ctl = Control {
                cancel: cancel.child_token(),
                on_progress: Some(Arc::new(move |f| {
                    beat_in.beat();
                    let progress = offset + f * span;
                    if let Some(report) = &report {
                        report.send_modify(|stages| stages.iter_mut().filter(|s| s.stage == stage).for_each(|s| s.progress = progress));
                    }
                    ctx.publish(job, &tenant, EventKind::StageProgress { stage, progress });
                })),
            };
            let make = work.clone();
            let (meter, started) = (Meter::new(), Instant::now());
            let charged = meter.clone();
            // Made again if its worker dies running it.
            let run = self.ctx.pool(stage).run(move || {
                let (work, ctl, cancel, beat, meter) = (make.clone(), ctl.clone(), cancel.clone(), beat.clone(), charged.clone());
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
            self.charge(stage, started.elapsed(), &meter);
            let error = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if e.is_cancelled() || self.cancel.is_cancelled() => return Err(Halt::Cancelled),
                Ok(Err(e)) => e,
                Err(pool) => StageError::Crashed(pool.to_string()),
            };
            self.ctx.metrics.stage_failures.with_label_values(&[stage.name(), error.code()]).inc();
            tracing::warn!(job = %self.record.id, stage = stage.name(), attempt, code = error.code(), error = %error, "stage failed");
            if !error.is_retryable() || attempt >= retry.attempts {
                self.mark(stage, StageStatus::Failed, self.record.stage(stage).progress).await;
                return Err(Halt::Failed(JobError { code: error.code().into(), message: error.to_string(), stage: Some(stage) }));
            }
            tokio::select! {
                _ = backoff.wait() => {}
                _ = self.cancel.cancelled() => return Err(Halt::Cancelled),
            }
        }
    }

    /// Adds what an attempt used to its stage's usage and to the node's counters.
    fn charge(&mut self, stage: Stage, wall: Duration, meter: &Meter) {
        self.record.stage_mut(stage).usage.add(wall, meter.cpu(), meter.gpu());
        let metrics = &self.ctx.metrics;
        metrics.stage_cpu_seconds.with_label_values(&[stage.name()]).inc_by(meter.cpu().as_secs_f64());
        metrics.stage_gpu_seconds.with_label_values(&[stage.name()]).inc_by(meter.gpu().as_secs_f64());
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

