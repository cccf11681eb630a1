//! The per-clip work: each clip's edit framed, then rendered, stored, recorded and announced at
//! once (render and upload), so the first clip is out before the last is made. The faces stage
//! frames the first clip; the render frames each later one while the one before it renders.

use std::path::{Path, PathBuf};

use futures_util::future::{BoxFuture, OptionFuture};

use super::work_files::{read_json, write_json};
use super::{Halt, JobRun};
use crate::actors::ServerCtx;
use crate::actors::messages::{ClipUrls, EventKind};
use crate::analysis::score::Candidate;
use crate::edit::{ClipEdit, EDIT_VERSION, EditFile, Word};
use crate::job::{ClipRecord, Source, Stage, now_ms};
use crate::media::{Control, MediaInfo, RenderRequest};
use crate::persist::{BlobStore, StoreError};
use crate::pipeline::{StageError, base_clip, note_render_fallback};

/// A clip's edit with its crop path, and the degradations framing it took.
type Framed = (ClipEdit, Vec<String>);

impl JobRun {
    /// Frames the first clip not made yet (faces); with `render`, renders, stores and announces
    /// each clip not made yet, framing the next one on the faces pool while one renders. Faces is
    /// done once the last clip is framed.
    pub(super) async fn clips(&mut self, render: bool) -> Result<(), Halt> {
        let words = self.transcript().await?.words();
        let info = self.info().await?;
        let candidates = self.candidates(&words, &info).await?;
        let source = self.source().await?;
        let n = candidates.len();
        let made = |index: usize| self.record.clips.iter().any(|c| c.index == index);
        let todo: Vec<(usize, &Candidate)> = candidates.iter().enumerate().map(|(i, c)| (i + 1, c)).filter(|(index, _)| !made(*index)).collect();
        let Some((&(first, candidate), rest)) = todo.split_first() else {
            self.finished(Stage::Faces);
            return Ok(());
        };
        let mut framed = self.framed(first, n, candidate, &words, &source, &info).await?;
        if !render {
            if rest.is_empty() {
                self.finished(Stage::Faces);
            }
            return Ok(());
        }
        for (&(index, candidate), &(next, next_candidate)) in todo.iter().zip(rest) {
            let span = clip_span(next, n);
            let before = self.framed_before(next).await?;
            let ahead = before.is_none().then(|| self.tries(Stage::Faces, span, self.framing(next_candidate, &words, &source, &info)));
            let rendering = self.render_and_store(index, n, candidate, framed, &source);
            let ((), tried) = tokio::try_join!(rendering, async { Ok(OptionFuture::from(ahead).await) })?;
            framed = match before {
                Some(framed) => framed,
                None => {
                    let framed = self.settle(Stage::Faces, span, tried.expect("framed beside the render when not before")).await?;
                    self.store_framed(next, &framed).await?;
                    framed
                }
            };
            self.progress(Stage::Faces, next as f64 / n as f64);
        }
        self.finished(Stage::Faces);
        let &(last, candidate) = todo.last().expect("one clip at least");
        self.render_and_store(last, n, candidate, framed, &source).await
    }

    /// The clip's edit with its crop path, framed once (the faces stage's work for one clip).
    async fn framed(&mut self, index: usize, n: usize, candidate: &Candidate, words: &[Word], source: &Path, info: &MediaInfo) -> Result<Framed, Halt> {
        let framed = match self.framed_before(index).await? {
            Some(framed) => framed,
            None => {
                let work = self.framing(candidate, words, source, info);
                let framed = self.stage_scaled(Stage::Faces, clip_span(index, n), work).await?;
                self.store_framed(index, &framed).await?;
                framed
            }
        };
        self.progress(Stage::Faces, index as f64 / n as f64);
        Ok(framed)
    }

    /// Clip `index`'s framing as a run before kept it (here or in the cluster's work files).
    async fn framed_before(&self, index: usize) -> Result<Option<Framed>, Halt> {
        let (name, path) = self.edit_file(index);
        Ok(if self.pull(&name, &path).await? { read_json(&path).await } else { None })
    }

    /// The work that frames a candidate's clip (on the faces pool).
    fn framing(&self, candidate: &Candidate, words: &[Word], source: &Path, info: &MediaInfo) -> impl Fn(Control) -> BoxFuture<'static, Result<Framed, StageError>> + Send + Sync + 'static {
        let opts = &self.record.spec.options;
        let (clip, reframe) = (base_clip(candidate, words, opts.size, &opts.captions), opts.mode);
        let (s, src, info, d) = (self.ctx.services.clone(), source.to_path_buf(), info.clone(), self.dir());
        move |_| {
            let (s, src, info, d, mut clip) = (s.clone(), src.clone(), info.clone(), d.clone(), clip.clone());
            Box::pin(async move {
                let fallbacks = s.frame(&mut clip, reframe, &src, &info, &d).await;
                Ok((clip, fallbacks))
            })
        }
    }

    /// Keeps a clip's framing as a work file, for a run that takes the job up again.
    async fn store_framed(&self, index: usize, framed: &Framed) -> Result<(), Halt> {
        let (name, path) = self.edit_file(index);
        write_json(&path, framed).await;
        self.push(&name, &path).await
    }

    /// The work file of clip `index`'s framing: its name, and its path here.
    fn edit_file(&self, index: usize) -> (String, PathBuf) {
        let name = format!("edit-{index:02}.json");
        let path = self.dir().join(&name);
        (name, path)
    }

    /// Renders one clip, uploads it and its sidecars, records and announces it at once.
    async fn render_and_store(&mut self, index: usize, n: usize, candidate: &Candidate, (mut clip, mut fallbacks): Framed, source: &Path) -> Result<(), Halt> {
        let dir = self.dir();
        let span = clip_span(index, n);
        let out = dir.join(format!("clip-{index:02}.mp4"));
        let size = clip.size.unwrap_or(crate::edit::Size::VERTICAL_1080);
        if !out.exists() {
            let request = RenderRequest { input: source.to_path_buf(), clip: clip.clone(), default_size: size, out: out.clone() };
            let s = self.ctx.services.clone();
            let (_, fallback) = self
                .stage_scaled(Stage::Render, span, move |ctl| {
                    let (s, request) = (s.clone(), request.clone());
                    async move { s.render(request, ctl).await }
                })
                .await?;
            note_render_fallback(fallback, &mut clip, &mut fallbacks);
        }

        // The clip's EDIT.json, as rendered: `clipmill render` makes the same clip from it.
        let source = match &self.record.spec.source {
            Source::Url(url) => Some(url.clone()),
            Source::Upload(_) => None,
        };
        write_json(&out.with_extension("edit.json"), &EditFile { version: EDIT_VERSION, source, clips: vec![clip] }).await;

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
            edit: sidecar("edit.json"),
            fallbacks,
        };
        let uploads: Vec<(String, PathBuf)> = std::iter::once((record.mp4.clone(), out.clone()))
            .chain(record.srt.iter().map(|k| (k.clone(), out.with_extension("srt"))))
            .chain(record.vtt.iter().map(|k| (k.clone(), out.with_extension("vtt"))))
            .chain(record.edit.iter().map(|k| (k.clone(), out.with_extension("edit.json"))))
            .collect();
        let mut bytes = 0;
        for (_, path) in &uploads {
            bytes += tokio::fs::metadata(path).await.map_or(0, |m| m.len());
        }
        let ctx = self.ctx.clone();
        self.stage_scaled(Stage::Upload, span, move |_| {
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
        self.record.bytes_stored += bytes;
        self.record.clips.sort_by_key(|c| c.index);
        self.save().await.map_err(Halt::store)?;
        let urls = clip_urls(&self.ctx, &record).await.map_err(Halt::store)?;
        self.notify(|job| serde_json::json!({ "event": "clip_ready", "job": job.id, "clip": &record, "urls": &urls }));
        self.publish(EventKind::ClipReady { clip: Box::new(record), urls });
        Ok(())
    }
}

/// Where clip `index` of `n` lies in a per-clip stage's progress: its offset and span.
fn clip_span(index: usize, n: usize) -> (f64, f64) {
    ((index - 1) as f64 / n as f64, 1.0 / n as f64)
}

/// Signed URLs of a clip's files, valid for the configured time.
pub async fn clip_urls(ctx: &ServerCtx, clip: &ClipRecord) -> Result<ClipUrls, StoreError> {
    let expires = now_ms() / 1000 + ctx.url_ttl();
    let sidecar = async |key: &Option<String>| match key {
        Some(k) => ctx.blobs.signed_url(k, expires).await.map(Some),
        None => Ok(None),
    };
    Ok(ClipUrls {
        mp4: ctx.blobs.signed_url(&clip.mp4, expires).await?,
        srt: sidecar(&clip.srt).await?,
        vtt: sidecar(&clip.vtt).await?,
        edit: sidecar(&clip.edit).await?,
    })
}
