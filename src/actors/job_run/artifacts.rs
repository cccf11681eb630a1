//! What the stages before the clips make, each once: the source (fetched, or an upload), what
//! it holds, its audio, the transcript, the chosen windows. Each is a work file under a
//! deterministic name, read back when present (locally, or from the cluster's work files).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::work_files::{read_json, write_json, written};
use super::{Halt, JobRun, SOURCE_META};
use crate::analysis::score::Candidate;
use crate::analysis::source_meta::SourceMeta;
use crate::analysis::transcribe::Transcript;
use crate::edit::Word;
use crate::config::quotas;
use crate::job::{Failure, JobError, Source, Stage, StageStatus, now_ms};
use crate::media::MediaInfo;
use crate::persist::{BlobStore, JobStore, StoreError};
use crate::pipeline::{ScoreRequest, StageError, transcribe_or_degrade};

impl JobRun {
    /// The fetched source on this node: already here, or pulled from the cluster's work files,
    /// or downloaded (and then shared).
    pub(super) async fn source(&mut self) -> Result<PathBuf, Halt> {
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

    pub(super) async fn source_and_info(&mut self) -> Result<(PathBuf, MediaInfo), Halt> {
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
        self.count_source(&info).await?;
        write_json(&info_path, &info).await;
        self.push("info.json", &info_path).await?;
        Ok((source, info))
    }

    /// Counts the probed source against its tenant's daily minutes; one that would take the
    /// tenant past them fails the job.
    async fn count_source(&mut self, info: &MediaInfo) -> Result<(), Halt> {
        let seconds = info.readable_seconds();
        let limits = self.ctx.services.config.server.quotas.limits(&self.record.tenant);
        if limits.source_minutes_per_day > 0 {
            let since = now_ms().saturating_sub(quotas::WINDOW_MS);
            let usage = self.ctx.store.usage(&self.record.tenant, since).await.map_err(Halt::store)?;
            // A run again after a crash finds this job's own seconds in the store already.
            let others = usage.source_seconds - self.record.source_seconds.unwrap_or(0.0);
            if let Some(e) = limits.exceeded(0, others, seconds, 0) {
                // Refused: not counted.
                self.record.source_seconds = None;
                return Err(Halt::Failed(JobError::new(Failure::QuotaSourceMinutes, e.message, Some(Stage::Download))));
            }
        }
        self.record.source_seconds = Some(seconds);
        Ok(())
    }

    /// What the source holds, without fetching the source when another node probed it already.
    pub(super) async fn info(&mut self) -> Result<MediaInfo, Halt> {
        let info_path = self.dir().join("info.json");
        if self.pull("info.json", &info_path).await?
            && let Some(info) = read_json(&info_path).await
        {
            return Ok(info);
        }
        Ok(self.source_and_info().await?.1)
    }

    pub(super) async fn audio(&mut self, source: &Path) -> Result<PathBuf, Halt> {
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

    pub(super) async fn transcript(&mut self) -> Result<Transcript, Halt> {
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
    pub(super) async fn candidates(&mut self, words: &[Word], info: &MediaInfo) -> Result<Vec<Candidate>, Halt> {
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

    pub(super) async fn download(&mut self) -> Result<(PathBuf, Option<SourceMeta>), Halt> {
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
