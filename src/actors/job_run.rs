//! `JobRun`: one job's stages, run one stage per delivery by the job's `JobActor` on whichever
//! node claimed it (the only one, alone).
//!
//! Every stage writes its output under a deterministic name in the job's folder and is skipped
//! when that output exists, and clips already recorded are not made again, so running a stage
//! twice (after a crash, a restart or a redelivery) redoes nothing and duplicates nothing. In a
//! cluster the outputs are also kept in the blob store under `work/JOB/NAME`, so the next stage can
//! run on another node. Retryable stage errors are retried with exponential backoff; the design's
//! degradations (faces, LLM, captions, transcription) happen inside the stages and are recorded.
//!
//! Here: the plan (which stage comes next, what each one does) and the job's start and end. `artifacts.rs`: what the stages before the clips make; `clips.rs`: framing,
//! rendering and storing each clip; `execute.rs`: running a stage's work on its pool (retries,
//! progress, stalls) and the record (saved, then announced; webhooks); `work_files.rs`: the
//! work files, local and shared.

mod artifacts;
mod clips;
mod execute;
mod work_files;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::messages::EventKind;
use crate::job::{Cost, Failure, JobError, JobId, JobRecord, JobStatus, Stage, StageState, StageStatus, now_ms};
use crate::persist::{BlobStore, JobStore, StoreError};

pub use clips::clip_urls;

/// The work file holding what the source's page says (chapters, heatmap, title).
const SOURCE_META: &str = "source-meta.json";

/// How long a state write keeps retrying while the job store is unreachable.
const STORE_PATIENCE: Duration = Duration::from_secs(60);

/// How a stage ended when it did not succeed.
#[derive(Debug)]
pub enum Halt {
    Cancelled,
    Failed(JobError),
    /// The job store or blob store is unreachable: nothing is decided, try again later.
    Unavailable(StoreError),
}

impl Halt {
    /// A store failure: one that asking again cannot fix (refused credentials, say) fails the
    /// job with its code at once; the rest leave it undecided, to be tried again.
    pub fn store(error: StoreError) -> Self {
        match error {
            StoreError::Refused(_) => Self::Failed(JobError { code: error.code().into(), message: error.to_string(), stage: None }),
            error => Self::Unavailable(error),
        }
    }
}

pub struct JobRun {
    pub ctx: Arc<ServerCtx>,
    pub record: JobRecord,
    pub cancel: CancellationToken,
    /// The record's changes not persisted yet (a stage's end, saved with the next transition), as
    /// the events that announce them: they go out with the next successful save (see `save`),
    /// and `flush` saves while any wait.
    unannounced: Vec<EventKind>,
    /// The job's last webhook delivery: the next waits for it, so a receiver gets them in order
    /// (every `clip_ready` before `job_finished`).
    last_webhook: Option<tokio::task::JoinHandle<()>>,
    /// Where a job actor reads the job's stages while it runs: as saved, and progress reports.
    report: Option<Arc<tokio::sync::watch::Sender<Vec<StageState>>>>,
}

impl JobRun {
    pub fn new(ctx: Arc<ServerCtx>, record: JobRecord, cancel: CancellationToken) -> Self {
        Self { ctx, record, cancel, unannounced: vec![], last_webhook: None, report: None }
    }

    /// Reports the job's stages to `report` as they change.
    pub fn reporting_to(mut self, report: Arc<tokio::sync::watch::Sender<Vec<StageState>>>) -> Self {
        self.report = Some(report);
        self
    }

    fn dir(&self) -> PathBuf {
        self.ctx.jobs_dir.join(self.record.id.to_string())
    }

    fn shared(&self) -> bool {
        self.ctx.shares_work()
    }

    /// The job's folder is the media stages' workspace; no-op stages (load testing) never touch
    /// it, so no-op jobs neither make nor remove one.
    fn has_workspace(&self) -> bool {
        !self.ctx.services.config.server.noop
    }

    /// Marks the job running (once) and makes its folder.
    pub async fn begin(&mut self) -> Result<(), StoreError> {
        if self.has_workspace() {
            let _ = tokio::fs::create_dir_all(self.dir()).await;
        }
        if self.record.status != JobStatus::Running {
            self.record.status = JobStatus::Running;
            self.save().await?;
        }
        Ok(())
    }

    /// Ends the job with the outcome of its stages: final state persisted and announced, webhook
    /// sent, working files removed. An unavailable store is handed back undecided.
    pub async fn finish(&mut self, outcome: Result<(), Halt>) -> Result<(), StoreError> {
        let (status, kind) = match outcome {
            Ok(()) => (JobStatus::Succeeded, EventKind::JobDone),
            Err(Halt::Cancelled) => (JobStatus::Cancelled, EventKind::JobCancelled),
            Err(Halt::Failed(error)) => {
                self.record.error = Some(error.clone());
                (JobStatus::Failed, EventKind::JobFailed { error })
            }
            Err(Halt::Unavailable(e)) => return Err(e),
        };
        self.record.status = status;
        if status == JobStatus::Succeeded {
            let usage = self.record.stages.iter().map(|s| &s.usage);
            let source_s = self.record.source_seconds.unwrap_or(0.0);
            self.record.cost = Some(Cost::of(usage, source_s, self.ctx.services.config.cost.prices()));
        }
        self.save().await?;
        self.ctx.metrics.job_finished(status.name());
        if let Some(cost) = &self.record.cost {
            self.ctx.metrics.job_cost(cost);
        }
        self.publish(kind);
        self.notify(|job| serde_json::json!({ "event": "job_finished", "job": job.id, "status": status, "error": job.error }));
        if self.has_workspace() {
            let _ = tokio::fs::remove_dir_all(self.dir()).await;
        }
        if self.shared()
            && let Err(e) = self.ctx.blobs.delete_prefix(&format!("work/{}/", self.record.id)).await
        {
            tracing::warn!(job = %self.record.id, error = %e, "cannot remove the job's shared work files");
        }
        Ok(())
    }

    /// Runs one stage (a cluster delivery) and says which stage comes next (`None`: the job is
    /// complete). Per-clip work is split by stage: faces frames the first clip, render frames the
    /// others (each beside the render of the one before) and makes, stores and announces each
    /// clip, upload checks every clip is in storage.
    pub async fn step(&mut self, stage: Stage) -> Result<Option<Stage>, Halt> {
        let next = Stage::ALL.iter().copied().find(|s| *s > stage);
        if self.ctx.services.config.server.noop {
            self.noop(stage).await?;
            return Ok(next);
        }
        // The media stages' futures are large: each is boxed, so a delivery's future (moved into
        // a task per stage) stays small, and only the stage that runs pays for its own.
        match stage {
            Stage::Download => {
                Box::pin(self.source_and_info()).await?;
            }
            Stage::Audio => {
                let source = Box::pin(self.source()).await?;
                Box::pin(self.audio(&source)).await?;
            }
            Stage::Transcribe => {
                Box::pin(self.transcript()).await?;
            }
            Stage::Score => {
                let words = Box::pin(self.transcript()).await?.words();
                let info = Box::pin(self.info()).await?;
                Box::pin(self.candidates(&words, &info)).await?;
            }
            Stage::Faces => {
                Box::pin(self.clips(false)).await?;
            }
            Stage::Render => {
                Box::pin(self.clips(true)).await?;
                self.mark(stage, StageStatus::Done, 1.0).await;
            }
            Stage::Upload => {
                for clip in self.record.clips.clone() {
                    let keys = std::iter::once(&clip.mp4).chain(clip.srt.iter()).chain(clip.vtt.iter());
                    for key in keys {
                        if !self.ctx.blobs.exists(key).await.map_err(Halt::store)? {
                            let message = format!("clip {} was recorded but {key} is not in storage", clip.index);
                            return Err(Halt::Failed(JobError::new(Failure::ClipMissing, message, Some(Stage::Upload))));
                        }
                    }
                }
                self.mark(Stage::Upload, StageStatus::Done, 1.0).await;
            }
        }
        Ok(next)
    }

    /// Load testing: the stage is a sleep, with the same transitions and events as real work.
    async fn noop(&mut self, stage: Stage) -> Result<(), Halt> {
        let pause = Duration::from_millis(self.ctx.services.config.server.noop_stage_ms);
        self.stage(stage, move |_| async move {
            // Zero is no work at all. A zero sleep would still wait for the timer's next 1 ms
            // tick, and even a yield holds a one-worker stage's only slot for a whole pass of
            // the run queue (thousands of tasks under load): both would measure the scheduler
            // queue, not the server.
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Ok(())
        })
        .await
    }
}

/// Fails a job that no run holds (its actor gave up, its work was dead-lettered, it could not be
/// queued): the record is saved failed, then announced. A job already final is left alone.
pub async fn fail_stored(ctx: &ServerCtx, job: JobId, error: JobError) {
    let Ok(Some(mut record)) = ctx.store.get(job).await else { return };
    if record.status.is_final() {
        return;
    }
    record.status = JobStatus::Failed;
    record.error = Some(error.clone());
    record.updated_ms = now_ms();
    if ctx.store.put(&record).await.is_ok() {
        ctx.metrics.job_finished("failed");
        ctx.publish(job, &record.tenant, EventKind::JobFailed { error });
    }
}
