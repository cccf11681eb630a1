//! `JobActor`: drives one job through its stages in order, persisting every transition.
//!
//! Every stage writes its output under a deterministic name in the job's folder and is skipped
//! when that output exists, and clips already recorded are not made again, so running a job twice
//! (after a crash or a restart) redoes nothing and duplicates nothing. Retryable stage errors are
//! retried with exponential backoff; the design's degradations (faces, LLM, captions,
//! transcription) happen inside the stages and are recorded as fallbacks.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::messages::{ClipUrls, EventKind, JobMessage};
use crate::analysis::score::Candidate;
use crate::analysis::transcribe::Transcript;
use crate::edit::{CaptionStyle, ClipEdit};
use crate::job::{ClipRecord, JobError, JobRecord, JobStatus, Source, Stage, StageStatus, now_ms};
use crate::media::{Control, MediaError, MediaInfo, RenderRequest};
use crate::persist::{BlobStore, JobStore};
use crate::pipeline::{ScoreRequest, StageError, base_clip, transcribe_or_degrade};

pub struct JobActor;

pub struct JobArgs {
    pub record: JobRecord,
    pub ctx: Arc<ServerCtx>,
    pub cancel: CancellationToken,
}

impl Actor for JobActor {
    type Msg = JobMessage;
    type State = JobArgs;
    type Arguments = JobArgs;

    async fn pre_start(&self, myself: ActorRef<JobMessage>, args: JobArgs) -> Result<JobArgs, ActorProcessingErr> {
        myself.send_message(JobMessage::Start)?;
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<JobMessage>, _: JobMessage, state: &mut JobArgs) -> Result<(), ActorProcessingErr> {
        let mut run = JobRun { ctx: state.ctx.clone(), record: state.record.clone(), cancel: state.cancel.clone() };
        run.drive().await?;
        myself.stop(Some(format!("{:?}", run.record.status)));
        Ok(())
    }
}

/// How a stage ended when it did not succeed.
enum Halt {
    Cancelled,
    Failed(JobError),
}

struct JobRun {
    ctx: Arc<ServerCtx>,
    record: JobRecord,
    cancel: CancellationToken,
}

impl JobRun {
    fn dir(&self) -> PathBuf {
        self.ctx.jobs_dir.join(self.record.id.to_string())
    }

    /// Runs the job to a final state. Only the store failing is an error of the actor itself
    /// (the supervisor then restarts it).
    async fn drive(&mut self) -> Result<(), crate::persist::StoreError> {
        if self.record.status.is_final() {
            return Ok(());
        }
        let _ = tokio::fs::create_dir_all(self.dir()).await;
        self.record.status = JobStatus::Running;
        self.save().await?;
        let outcome = self.stages().await;
        let (status, kind) = match outcome {
            Ok(()) => (JobStatus::Succeeded, EventKind::JobDone),
            Err(Halt::Cancelled) => (JobStatus::Cancelled, EventKind::JobCancelled),
            Err(Halt::Failed(error)) => {
                self.record.error = Some(error.clone());
                (JobStatus::Failed, EventKind::JobFailed { error })
            }
        };
        self.record.status = status;
        self.save().await?;
        self.ctx.metrics.jobs_finished.with_label_values(&[&format!("{status:?}").to_lowercase()]).inc();
        self.publish(kind);
        self.notify(serde_json::json!({ "event": "job_finished", "job": self.record.id, "status": status, "error": self.record.error }));
        let _ = tokio::fs::remove_dir_all(self.dir()).await;
        Ok(())
    }

    async fn stages(&mut self) -> Result<(), Halt> {
        let server = &self.ctx.services.config.server;
        if server.noop {
            let pause = Duration::from_millis(server.noop_stage_ms);
            for stage in Stage::ALL {
                self.stage(stage, move |_| async move {
                    tokio::time::sleep(pause).await;
                    Ok(())
                })
                .await?;
            }
            return Ok(());
        }
        let dir = self.dir();
        let source_path = dir.join("source.json");
        let source: PathBuf = match self.cached(Stage::Download, &source_path).await {
            Some(source) => source,
            None => self.download().await.map(|p| written(&source_path, p))?.await,
        };
        let info: MediaInfo = {
            let (s, p) = (self.ctx.services.clone(), source.clone());
            self.attempt(Stage::Download, (0.0, 1.0), move |_| {
                let (s, p) = (s.clone(), p.clone());
                async move { s.check_source(&p).await }
            })
            .await?
        };

        let wav = dir.join("audio.wav");
        if !wav.exists() {
            let (s, src, out) = (self.ctx.services.clone(), source.clone(), wav.clone());
            self.stage(Stage::Audio, move |ctl| {
                let (s, src, out) = (s.clone(), src.clone(), out.clone());
                async move { Ok(s.engine.extract_audio(&src, &out, ctl).await?) }
            })
            .await?;
        }

        let transcript_path = dir.join("transcript.json");
        let transcript: Transcript = match self.cached(Stage::Transcribe, &transcript_path).await {
            Some(t) => t,
            None => self.transcribe(wav.clone()).await.map(|t| written(&transcript_path, t))?.await,
        };
        let words = transcript.words();
        let opts = self.record.spec.options.clone();
        let candidates_path = dir.join("candidates.json");
        let candidates: Vec<Candidate> = match self.cached(Stage::Score, &candidates_path).await {
            Some(c) => c,
            None => {
                let (s, w, wav) = (self.ctx.services.clone(), words.clone(), wav.clone());
                let request = ScoreRequest { count: opts.clips, min_len: opts.min_len, max_len: opts.max_len };
                let (chosen, fallback) = self
                    .stage(Stage::Score, move |_| {
                        let (s, w, wav) = (s.clone(), w.clone(), wav.clone());
                        async move { s.score(&w, &wav, info.duration, request).await }
                    })
                    .await?;
                self.record.fallbacks.extend(fallback);
                written(&candidates_path, chosen).await
            }
        };
        if candidates.is_empty() {
            return Err(Halt::Failed(JobError {
                code: "no_clips".into(),
                message: format!("no window of {}..{} s fits this source", opts.min_len, opts.max_len),
                stage: Some(Stage::Score),
            }));
        }

        let captions = CaptionStyle { enabled: opts.captions && !words.is_empty(), ..CaptionStyle::default() };
        let n = candidates.len();
        for (i, candidate) in candidates.iter().enumerate() {
            let index = i + 1;
            if self.record.clips.iter().any(|c| c.index == index) {
                continue;
            }
            self.clip(index, n, candidate, base_clip(candidate, &words, opts.mode, opts.size, &captions), &source, &info).await?;
        }
        for stage in [Stage::Faces, Stage::Render, Stage::Upload] {
            self.mark(stage, StageStatus::Done, 1.0).await;
        }
        Ok(())
    }

    /// Faces → render → upload for one clip, then it is stored and announced at once.
    async fn clip(&mut self, index: usize, n: usize, candidate: &Candidate, clip: ClipEdit, source: &Path, info: &MediaInfo) -> Result<(), Halt> {
        let dir = self.dir();
        let base = (index - 1) as f64 / n as f64;
        let edit_path = dir.join(format!("edit-{index:02}.json"));
        let (mut clip, mut fallbacks): (ClipEdit, Vec<String>) = match read_json(&edit_path).await {
            Some(framed) => framed,
            None => {
                let (s, src, info, d) = (self.ctx.services.clone(), source.to_path_buf(), info.clone(), dir.clone());
                let framed = self
                    .stage_scaled(Stage::Faces, (base, 1.0 / n as f64), move |_| {
                        let (s, src, info, d, mut clip) = (s.clone(), src.clone(), info.clone(), d.clone(), clip.clone());
                        async move {
                            let fallbacks = s.frame(&mut clip, &src, &info, &d).await;
                            Ok((clip, fallbacks))
                        }
                    })
                    .await?;
                write_json(&edit_path, &framed).await;
                framed
            }
        };
        self.progress(Stage::Faces, index as f64 / n as f64);

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
                    ctx.blobs.put_file(key, path).await.map_err(|e| StageError::Invalid(format!("upload: {e}")))?;
                }
                Ok(())
            }
        })
        .await?;
        self.progress(Stage::Upload, index as f64 / n as f64);
        self.record.clips.retain(|c| c.index != index);
        self.record.clips.push(record.clone());
        self.record.clips.sort_by_key(|c| c.index);
        self.save().await.map_err(store_halt)?;
        let urls = clip_urls(&self.ctx, &record);
        self.notify(serde_json::json!({ "event": "clip_ready", "job": self.record.id, "clip": record, "urls": urls }));
        self.publish(EventKind::ClipReady { clip: record, urls });
        Ok(())
    }

    async fn download(&mut self) -> Result<PathBuf, Halt> {
        let ctx = self.ctx.clone();
        let source = self.record.spec.source.clone();
        let job = self.record.id;
        self.stage(Stage::Download, move |ctl| {
            let (ctx, source) = (ctx.clone(), source.clone());
            async move {
                match source {
                    Source::Url(url) => {
                        let report = ctl.on_progress.clone().unwrap_or_else(|| Arc::new(|_| {}));
                        Ok(ctx.services.fetcher.fetch(&url, &*report).await?.path)
                    }
                    Source::Upload(id) => {
                        let path = ctx.uploads_dir.join(&id);
                        if path.is_file() {
                            Ok(path)
                        } else {
                            Err(StageError::Invalid(format!("upload {id} of job {job} is gone")))
                        }
                    }
                }
            }
        })
        .await
    }

    async fn transcribe(&mut self, wav: PathBuf) -> Result<Transcript, Halt> {
        let (s, dir) = (self.ctx.services.clone(), self.dir());
        let (transcript, fallback) = self
            .stage(Stage::Transcribe, move |_| {
                let (s, dir, wav) = (s.clone(), dir.clone(), wav.clone());
                async move { Ok(transcribe_or_degrade(&s.transcriber, &wav, &dir).await) }
            })
            .await?;
        self.record.fallbacks.extend(fallback);
        Ok(transcript)
    }

    /// The stage's output from `path` if an earlier run wrote it (the stage is then done).
    async fn cached<T: DeserializeOwned>(&mut self, stage: Stage, path: &Path) -> Option<T> {
        let value = read_json(path).await?;
        self.mark(stage, StageStatus::Done, 1.0).await;
        Some(value)
    }

    /// Runs one stage's work on its pool, with retries, transitions and progress events.
    async fn stage<T, F, Fut>(&mut self, stage: Stage, work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        self.stage_scaled(stage, (0.0, 1.0), work).await
    }

    /// As `stage`, with progress mapped into `offset + fraction * span` (for per-clip stages).
    async fn stage_scaled<T, F, Fut>(&mut self, stage: Stage, (offset, span): (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        if self.record.stage(stage).status != StageStatus::Running {
            self.mark(stage, StageStatus::Running, offset).await;
            self.publish(EventKind::StageStarted { stage });
        }
        let started = std::time::Instant::now();
        let result = self.attempt(stage, (offset, span), work).await;
        self.ctx.metrics.stage_duration.with_label_values(&[stage.name()]).observe(started.elapsed().as_secs_f64());
        let value = result?;
        if offset + span >= 1.0 - 1e-9 {
            self.mark(stage, StageStatus::Done, 1.0).await;
            self.publish(EventKind::StageFinished { stage });
        }
        Ok(value)
    }

    /// Tries `work` up to the configured attempts with exponential backoff, on the stage's pool,
    /// stopping at once on cancellation.
    async fn attempt<T, F, Fut>(&mut self, stage: Stage, (offset, span): (f64, f64), work: F) -> Result<T, Halt>
    where
        T: Send + 'static,
        F: Fn(Control) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StageError>> + Send + 'static,
    {
        let retry = self.ctx.services.config.server.retry.clone();
        let work = Arc::new(work);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.record.stage_mut(stage).attempts += 1;
            let cancel = self.cancel.clone();
            let (ctx, job, tenant) = (self.ctx.clone(), self.record.id, self.record.tenant.clone());
            let ctl = Control {
                cancel: cancel.child_token(),
                on_progress: Some(Arc::new(move |f| {
                    ctx.publish(job, &tenant, EventKind::StageProgress { stage, progress: offset + f * span });
                })),
            };
            let w = work.clone();
            let run = self.ctx.pool(stage).run(async move {
                tokio::select! {
                    result = w(ctl) => result,
                    _ = cancel.cancelled() => Err(StageError::Media(MediaError::Cancelled)),
                }
            });
            let error = match run.await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if e.is_cancelled() || self.cancel.is_cancelled() => return Err(Halt::Cancelled),
                Ok(Err(e)) => e,
                Err(pool) => StageError::Invalid(pool.to_string()),
            };
            self.ctx.metrics.stage_failures.with_label_values(&[stage.name(), error.code()]).inc();
            tracing::warn!(job = %self.record.id, stage = stage.name(), attempt, code = error.code(), error = %error, "stage failed");
            if !error.is_retryable() || attempt >= retry.attempts {
                self.mark(stage, StageStatus::Failed, self.record.stage(stage).progress).await;
                return Err(Halt::Failed(JobError { code: error.code().into(), message: error.to_string(), stage: Some(stage) }));
            }
            let backoff = Duration::from_secs_f64((retry.base_s * 2f64.powi(attempt as i32 - 1)).min(300.0));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.cancel.cancelled() => return Err(Halt::Cancelled),
            }
        }
    }

    async fn mark(&mut self, stage: Stage, status: StageStatus, progress: f64) {
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

    fn progress(&mut self, stage: Stage, progress: f64) {
        self.record.stage_mut(stage).progress = progress;
    }

    async fn save(&mut self) -> Result<(), crate::persist::StoreError> {
        self.record.updated_ms = now_ms();
        self.ctx.store.put(&self.record).await
    }

    fn publish(&self, kind: EventKind) {
        self.ctx.publish(self.record.id, &self.record.tenant, kind);
    }

    /// Posts to the job's webhook, if any, in the background (signed, retried).
    fn notify(&self, body: serde_json::Value) {
        if let Some(url) = self.record.spec.options.webhook.clone() {
            let ctx = self.ctx.clone();
            crate::task::spawn_named("webhook", async move { crate::net::webhook::deliver(&ctx, &url, &body).await });
        }
    }
}

/// Signed URLs of a clip's files, valid for the configured time.
pub fn clip_urls(ctx: &ServerCtx, clip: &ClipRecord) -> ClipUrls {
    let expires = now_ms() / 1000 + ctx.url_ttl();
    ClipUrls {
        mp4: ctx.blobs.sign(&clip.mp4, expires),
        srt: clip.srt.as_ref().map(|k| ctx.blobs.sign(k, expires)),
        vtt: clip.vtt.as_ref().map(|k| ctx.blobs.sign(k, expires)),
    }
}

fn store_halt(e: crate::persist::StoreError) -> Halt {
    Halt::Failed(JobError { code: e.code().into(), message: e.to_string(), stage: None })
}

/// Writes a stage's output and hands it on.
async fn written<T: Serialize>(path: &Path, value: T) -> T {
    write_json(path, &value).await;
    value
}

async fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes through a temporary name, so a crash never leaves a half-written stage output.
async fn write_json<T: Serialize>(path: &Path, value: &T) {
    let tmp = path.with_extension("json.part");
    let bytes = serde_json::to_vec(value).expect("stage outputs serialise");
    if tokio::fs::write(&tmp, bytes).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, path).await;
    }
}
