//! The per-clip work: each clip's edit framed (the faces stage), then rendered, stored, recorded
//! and announced at once (render and upload), so the first clip is out before the last is made.

use std::path::{Path, PathBuf};

use super::work_files::{read_json, write_json};
use super::{Halt, JobRun};
use crate::actors::ServerCtx;
use crate::actors::messages::{ClipUrls, EventKind};
use crate::analysis::score::Candidate;
use crate::edit::{ClipEdit, EDIT_VERSION, EditFile, Word};
use crate::job::{ClipRecord, Source, Stage, now_ms};
use crate::media::{MediaInfo, RenderRequest};
use crate::persist::{BlobStore, StoreError};
use crate::pipeline::{base_clip, note_render_fallback};

impl JobRun {
    /// Frames every clip not made yet (faces), and with `render` renders, stores and announces
    /// each one right after framing it.
    pub(super) async fn clips(&mut self, render: bool) -> Result<(), Halt> {
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

    /// The clip's edit with its crop path (the faces stage for one clip), made once.
    pub(super) async fn framed(&mut self, index: usize, n: usize, candidate: &Candidate, words: &[Word], source: &Path, info: &MediaInfo) -> Result<(ClipEdit, Vec<String>), Halt> {
        let name = format!("edit-{index:02}.json");
        let edit_path = self.dir().join(&name);
        if self.pull(&name, &edit_path).await?
            && let Some(framed) = read_json(&edit_path).await
        {
            self.progress(Stage::Faces, index as f64 / n as f64);
            return Ok(framed);
        }
        let opts = &self.record.spec.options;
        let (clip, reframe) = (base_clip(candidate, words, opts.size, &opts.captions), opts.mode);
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
    pub(super) async fn render_and_store(&mut self, index: usize, n: usize, candidate: &Candidate, mut clip: ClipEdit, mut fallbacks: Vec<String>, source: &Path) -> Result<(), Halt> {
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
        self.record.bytes_stored += bytes;
        self.record.clips.sort_by_key(|c| c.index);
        self.save().await.map_err(Halt::store)?;
        let urls = clip_urls(&self.ctx, &record).await.map_err(Halt::store)?;
        self.notify(|job| serde_json::json!({ "event": "clip_ready", "job": job.id, "clip": &record, "urls": &urls }));
        self.publish(EventKind::ClipReady { clip: Box::new(record), urls });
        Ok(())
    }
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
