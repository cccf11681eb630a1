//! `JobRun`: one job's stages, shared by the embedded `JobActor` (which runs them all in order on
//! this node) and the `StageConsumer`s of a cluster (which run one stage per delivery, on
//! whichever node claimed it).
//!
//! Every stage writes its output under a deterministic name in the job's folder and is skipped
//! when that output exists, and clips already recorded are not made again, so running a stage
//! twice (after a crash, a restart or a redelivery) redoes nothing and duplicates nothing. In a
//! cluster the outputs are also kept in the blob store under `work/JOB/NAME`, so the next stage can
//! run on another node. Retryable stage errors are retried with exponential backoff; the design's
//! degradations (faces, LLM, captions, transcription) happen inside the stages and are recorded.

mod execute;
mod work_files;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::messages::{ClipUrls, EventKind};
use crate::analysis::score::Candidate;
use crate::analysis::source_meta::SourceMeta;
use crate::analysis::transcribe::Transcript;
use crate::edit::{CaptionStyle, ClipEdit, Word};
use crate::job::{ClipRecord, Failure, JobError, JobId, JobRecord, JobStatus, Source, Stage, StageStatus, now_ms};
use crate::media::{MediaInfo, RenderRequest};
use crate::persist::{BlobStore, JobStore, StoreError};
use work_files::{read_json, write_json, written};
use crate::pipeline::{ScoreRequest, StageError, base_clip, transcribe_or_degrade};

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
    /// Where a job actor reads the job's state while it runs: every save, and progress reports.
    report: Option<Arc<tokio::sync::watch::Sender<JobRecord>>>,
}

impl JobRun {
    pub fn new(ctx: Arc<ServerCtx>, record: JobRecord, cancel: CancellationToken) -> Self {
        Self { ctx, record, cancel, unannounced: vec![], last_webhook: None, report: None }
    }

    /// Reports the job's state to `report` as it changes.
    pub fn reporting_to(mut self, report: tokio::sync::watch::Sender<JobRecord>) -> Self {
        self.report = Some(Arc::new(report));
        self
    }

    fn dir(&self) -> PathBuf {
        self.ctx.jobs_dir.join(self.record.id.to_string())
    }

    fn shared(&self) -> bool {
        self.ctx.cluster.is_some()
    }

    /// Runs every stage on this node, then ends the job. Only the store failing is an error of
    /// the caller's (the supervisor then restarts the job actor).
    pub async fn drive(&mut self) -> Result<(), StoreError> {
        if self.record.status.is_final() {
            return Ok(());
        }
        self.begin().await?;
        let outcome = self.stages().await;
        self.finish(outcome).await
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
        self.save().await?;
        self.ctx.metrics.jobs_finished.with_label_values(&[&format!("{status:?}").to_lowercase()]).inc();
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

    async fn stages(&mut self) -> Result<(), Halt> {
        if self.ctx.services.config.server.noop {
            for stage in Stage::ALL {
                self.noop(stage).await?;
            }
            return Ok(());
        }
        // The source is probed (and refused when broken) before anything else reads it.
        let (source, _) = self.source_and_info().await?;
        self.audio(&source).await?;
        self.clips(true).await?;
        for stage in [Stage::Faces, Stage::Render, Stage::Upload] {
            self.mark(stage, StageStatus::Done, 1.0).await;
        }
        Ok(())
    }

    /// Runs one stage (a cluster delivery) and says which stage comes next (`None`: the job is
    /// complete). Per-clip work is split by stage: faces frames every clip, render makes, stores
    /// and announces each clip, upload checks every clip is in storage.
    pub async fn step(&mut self, stage: Stage) -> Result<Option<Stage>, Halt> {
        let next = Stage::ALL.iter().copied().find(|s| *s > stage);
        if self.ctx.services.config.server.noop {
            self.noop(stage).await?;
            return Ok(next);
        }
        match stage {
            Stage::Download => {
                self.source_and_info().await?;
            }
            Stage::Audio => {
                let source = self.source().await?;
                self.audio(&source).await?;
            }
            Stage::Transcribe => {
                self.transcript().await?;
            }
            Stage::Score => {
                let words = self.transcript().await?.words();
                let info = self.info().await?;
                self.candidates(&words, &info).await?;
            }
            Stage::Faces | Stage::Render => {
                self.clips(stage == Stage::Render).await?;
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

    /// Frames every clip not made yet (faces), and with `render` renders, stores and announces
    /// each one right after framing it.
    async fn clips(&mut self, render: bool) -> Result<(), Halt> {
        let words = self.transcript().await?.words();
        let info = self.info().await?;
        let candidates = self.candidates(&words, &info).await?;
        let source = self.source().await?;
        let n = candidates.len();
        for (i, candidate) in candidates.iter().enumerate() {
            let index = i + 1;
            if self.record.clips.iter().any(|c| c.index == index) {
                continue;
            }
            let (clip, fallbacks) = self.framed(index, n, candidate, &words, &source, &info).await?;
            if render {
                self.render_and_store(index, n, candidate, clip, fallbacks, &source).await?;
            }
        }
        Ok(())
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

    /// The fetched source on this node: already here, or pulled from the cluster's work files,
    /// or downloaded (and then shared).
    async fn source(&mut self) -> Result<PathBuf, Halt> {
        let source_json = self.dir().join("source.json");
        if let Some(path) = read_json::<PathBuf>(&source_json).await.filter(|p| p.exists()) {
            self.mark(Stage::Download, StageStatus::Done, 1.0).await;
            return Ok(path);
        }
        let local = self.dir().join("source.media");
        if self.pull("source", &local).await? {
            write_json(&source_json, &local).await;
            self.mark(Stage::Download, StageStatus::Done, 1.0).await;
            return Ok(local);
        }
        let (path, meta) = self.download().await?;
        // The page's metadata travels as a work file beside the source, for the score stage.
        if let Some(meta) = meta {
            let meta_path = self.dir().join(SOURCE_META);
            write_json(&meta_path, &meta).await;
            self.push(SOURCE_META, &meta_path).await?;
        }
        self.push("source", &path).await?;
        Ok(written(&source_json, path).await)
    }

    async fn source_and_info(&mut self) -> Result<(PathBuf, MediaInfo), Halt> {
        let source = self.source().await?;
        let info_path = self.dir().join("info.json");
        if let Some(info) = read_json(&info_path).await {
            return Ok((source, info));
        }
        let (s, p) = (self.ctx.services.clone(), source.clone());
        let info = self
            .attempt(Stage::Download, (0.0, 1.0), move |_| {
                let (s, p) = (s.clone(), p.clone());
                async move { s.check_source(&p).await }
            })
            .await?;
        write_json(&info_path, &info).await;
        self.push("info.json", &info_path).await?;
        Ok((source, info))
    }

    /// What the source holds, without fetching the source when another node probed it already.
    async fn info(&mut self) -> Result<MediaInfo, Halt> {
        let info_path = self.dir().join("info.json");
        if self.pull("info.json", &info_path).await?
            && let Some(info) = read_json(&info_path).await
        {
            return Ok(info);
        }
        Ok(self.source_and_info().await?.1)
    }

    async fn audio(&mut self, source: &Path) -> Result<PathBuf, Halt> {
        let wav = self.dir().join("audio.wav");
        if self.pull("audio.wav", &wav).await? {
            self.mark(Stage::Audio, StageStatus::Done, 1.0).await;
            return Ok(wav);
        }
        let info = self.info().await?;
        let (s, src, out) = (self.ctx.services.clone(), source.to_path_buf(), wav.clone());
        self.stage(Stage::Audio, move |ctl| {
            let (s, src, out, info) = (s.clone(), src.clone(), out.clone(), info.clone());
            async move { s.audio(&src, &info, &out, ctl).await }
        })
        .await?;
        self.push("audio.wav", &wav).await?;
        Ok(wav)
    }

    async fn transcript(&mut self) -> Result<Transcript, Halt> {
        let path = self.dir().join("transcript.json");
        if let Some(t) = self.cached(Stage::Transcribe, "transcript.json").await? {
            return Ok(t);
        }
        let wav = self.dir().join("audio.wav");
        if !self.pull("audio.wav", &wav).await? {
            let source = self.source().await?;
            self.audio(&source).await?;
        }
        let (s, dir) = (self.ctx.services.clone(), self.dir());
        let (transcript, fallback) = self
            .stage(Stage::Transcribe, move |_| {
                let (s, dir, wav) = (s.clone(), dir.clone(), wav.clone());
                async move { Ok(transcribe_or_degrade(&s.transcriber, &wav, &dir).await) }
            })
            .await?;
        self.record.fallbacks.extend(fallback);
        write_json(&path, &transcript).await;
        self.push("transcript.json", &path).await?;
        Ok(transcript)
    }

    /// The chosen windows (the score stage); no window at all fails the job.
    async fn candidates(&mut self, words: &[Word], info: &MediaInfo) -> Result<Vec<Candidate>, Halt> {
        let opts = self.record.spec.options.clone();
        let candidates = match self.cached::<Vec<Candidate>>(Stage::Score, "candidates.json").await? {
            Some(c) => c,
            None => {
                let wav = self.dir().join("audio.wav");
                if !self.pull("audio.wav", &wav).await? {
                    let source = self.source().await?;
                    self.audio(&source).await?;
                }
                // Only a source without audio is looked at here (its clips come from the picture).
                let source = if info.audio.is_none() { Some(self.source().await?) } else { None };
                let meta_path = self.dir().join(SOURCE_META);
                let meta: Option<SourceMeta> = if self.pull(SOURCE_META, &meta_path).await? { read_json(&meta_path).await } else { None };
                let (s, w, info) = (self.ctx.services.clone(), words.to_vec(), info.clone());
                let request = ScoreRequest { count: opts.clips, min_len: opts.min_len, max_len: opts.max_len, instruction: opts.instruction.clone() };
                let steer = meta.clone();
                let scored = self
                    .stage(Stage::Score, move |_| {
                        let (s, w, wav, source, info, request, meta) = (s.clone(), w.clone(), wav.clone(), source.clone(), info.clone(), request.clone(), steer.clone());
                        async move { s.score(&w, &wav, source.as_deref(), &info, &request, meta.as_ref()).await }
                    })
                    .await?;
                self.record.source_meta = meta.as_ref().map(SourceMeta::summary);
                self.record.fallbacks.extend(scored.fallbacks);
                self.record.source_truncated = scored.truncated;
                let chosen = scored.chosen;
                let path = self.dir().join("candidates.json");
                write_json(&path, &chosen).await;
                self.push("candidates.json", &path).await?;
                chosen
            }
        };
        if candidates.is_empty() {
            let message = format!("no window of {}..{} s fits this source", opts.min_len, opts.max_len);
            return Err(Halt::Failed(JobError::new(Failure::NoClips, message, Some(Stage::Score))));
        }
        Ok(candidates)
    }

    /// The clip's edit with its crop path (the faces stage for one clip), made once.
    async fn framed(&mut self, index: usize, n: usize, candidate: &Candidate, words: &[Word], source: &Path, info: &MediaInfo) -> Result<(ClipEdit, Vec<String>), Halt> {
        let name = format!("edit-{index:02}.json");
        let edit_path = self.dir().join(&name);
        if self.pull(&name, &edit_path).await?
            && let Some(framed) = read_json(&edit_path).await
        {
            self.progress(Stage::Faces, index as f64 / n as f64);
            return Ok(framed);
        }
        let opts = &self.record.spec.options;
        let captions = CaptionStyle { enabled: opts.captions.enabled && !words.is_empty(), ..opts.captions.clone() };
        let (clip, reframe) = (base_clip(candidate, words, opts.size, &captions), opts.mode);
        let (s, src, info, d) = (self.ctx.services.clone(), source.to_path_buf(), info.clone(), self.dir());
        let base = (index - 1) as f64 / n as f64;
        let framed: (ClipEdit, Vec<String>) = self
            .stage_scaled(Stage::Faces, (base, 1.0 / n as f64), move |_| {
                let (s, src, info, d, mut clip) = (s.clone(), src.clone(), info.clone(), d.clone(), clip.clone());
                async move {
                    let fallbacks = s.frame(&mut clip, reframe, &src, &info, &d).await;
                    Ok((clip, fallbacks))
                }
            })
            .await?;
        write_json(&edit_path, &framed).await;
        self.push(&name, &edit_path).await?;
        self.progress(Stage::Faces, index as f64 / n as f64);
        Ok(framed)
    }

    /// Renders one clip, uploads it and its sidecars, records and announces it at once.
    async fn render_and_store(&mut self, index: usize, n: usize, candidate: &Candidate, mut clip: ClipEdit, mut fallbacks: Vec<String>, source: &Path) -> Result<(), Halt> {
        let dir = self.dir();
        let base = (index - 1) as f64 / n as f64;
        let out = dir.join(format!("clip-{index:02}.mp4"));
        let size = clip.size.unwrap_or(crate::edit::Size::VERTICAL_1080);
        if !out.exists() {
            let request = RenderRequest { input: source.to_path_buf(), clip: clip.clone(), default_size: size, out: out.clone() };
            let s = self.ctx.services.clone();
            let (_, fallback) = self
                .stage_scaled(Stage::Render, (base, 1.0 / n as f64), move |ctl| {
                    let (s, request) = (s.clone(), request.clone());
                    async move { s.render(request, ctl).await }
                })
                .await?;
            if let Some(f) = fallback {
                clip.captions.enabled = false;
                fallbacks.push(f);
            }
        }

        let prefix = format!("{}/{}", self.record.tenant, self.record.id);
        let key = |ext: &str| format!("{prefix}/clip-{index:02}.{ext}");
        let sidecar = |ext: &str| Some(out.with_extension(ext)).filter(|p| p.exists()).map(|_| key(ext));
        let record = ClipRecord {
            index,
            start: candidate.start,
            end: candidate.end,
            score: candidate.score,
            title: candidate.title.clone(),
            scorer: candidate.scorer.clone(),
            reason: candidate.reason.clone(),
            scores: candidate.scores,
            mp4: key("mp4"),
            srt: sidecar("srt"),
            vtt: sidecar("vtt"),
            fallbacks,
        };
        let uploads: Vec<(String, PathBuf)> = std::iter::once((record.mp4.clone(), out.clone()))
            .chain(record.srt.iter().map(|k| (k.clone(), out.with_extension("srt"))))
            .chain(record.vtt.iter().map(|k| (k.clone(), out.with_extension("vtt"))))
            .collect();
        let ctx = self.ctx.clone();
        self.stage_scaled(Stage::Upload, (base, 1.0 / n as f64), move |_| {
            let (ctx, uploads) = (ctx.clone(), uploads.clone());
            async move {
                for (key, path) in &uploads {
                    ctx.blobs.put_file(key, path).await?;
                }
                Ok(())
            }
        })
        .await?;
        self.progress(Stage::Render, index as f64 / n as f64);
        self.progress(Stage::Upload, index as f64 / n as f64);
        self.record.clips.retain(|c| c.index != index);
        self.record.clips.push(record.clone());
        self.record.clips.sort_by_key(|c| c.index);
        self.save().await.map_err(Halt::store)?;
        let urls = clip_urls(&self.ctx, &record).await.map_err(Halt::store)?;
        self.notify(|job| serde_json::json!({ "event": "clip_ready", "job": job.id, "clip": &record, "urls": &urls }));
        self.publish(EventKind::ClipReady { clip: Box::new(record), urls });
        Ok(())
    }

    async fn download(&mut self) -> Result<(PathBuf, Option<SourceMeta>), Halt> {
        let ctx = self.ctx.clone();
        let source = self.record.spec.source.clone();
        let job = self.record.id;
        self.stage(Stage::Download, move |ctl| {
            let (ctx, source) = (ctx.clone(), source.clone());
            async move {
                match source {
                    Source::Url(url) => {
                        let report = ctl.on_progress.clone().unwrap_or_else(|| Arc::new(|_| {}));
                        let fetched = ctx.services.fetcher.fetch(&url, &*report).await?;
                        Ok((fetched.path, fetched.meta))
                    }
                    Source::Upload(id) => {
                        let path = ctx.uploads_dir.join(&id);
                        if path.is_file() {
                            return Ok((path, None));
                        }
                        // In a cluster the upload was taken by another node's API.
                        match ctx.blobs.get_file(&format!("uploads/{id}"), &path).await {
                            Ok(()) => Ok((path, None)),
                            Err(StoreError::BlobNotFound(_)) => Err(StageError::Invalid(format!("upload {id} of job {job} is gone"))),
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
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
        ctx.metrics.jobs_finished.with_label_values(&["failed"]).inc();
        ctx.publish(job, &record.tenant, EventKind::JobFailed { error });
    }
}

/// Signed URLs of a clip's files, valid for the configured time.
pub async fn clip_urls(ctx: &ServerCtx, clip: &ClipRecord) -> Result<ClipUrls, StoreError> {
    let expires = now_ms() / 1000 + ctx.url_ttl();
    let sidecar = async |key: &Option<String>| match key {
        Some(k) => ctx.blobs.signed_url(k, expires).await.map(Some),
        None => Ok(None),
    };
    Ok(ClipUrls { mp4: ctx.blobs.signed_url(&clip.mp4, expires).await?, srt: sidecar(&clip.srt).await?, vtt: sidecar(&clip.vtt).await? })
}
