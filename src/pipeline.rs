//! The stages of a clipping job as plain async functions over shared services, used by both the
//! one-shot `clip` command and the server's actors: fetch, audio, transcribe, score, faces, render.
//! Each takes explicit input and output paths, so a caller can name outputs deterministically and
//! skip a stage whose output already exists.

use std::path::{Path, PathBuf};

use crate::analysis::faces::FaceDetector;
use crate::analysis::fetch::{FetchError, Fetcher};
use crate::analysis::score::{self, Candidate, Loudness};
use crate::analysis::transcribe::{Transcriber, Transcript};
use crate::analysis::{AnalysisError, llm, tracking};
use crate::config::{Config, Scorer};
use crate::edit::{CaptionStyle, ClipEdit, CropKey, Mode, Size, Word};
use crate::media::{Control, MediaEngine, MediaError, MediaInfo, RenderOutput, RenderRequest, TimeRange};
use crate::persist::Scratch;

/// Any stage's failure, with a stable code and whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error("{0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Store(#[from] crate::persist::StoreError),
    #[error("stage stopped making progress for {0} s")]
    Stalled(u64),
}

impl StageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Fetch(e) => e.code(),
            Self::Media(e) => e.code(),
            Self::Analysis(e) => e.code(),
            Self::Invalid(_) => "invalid",
            Self::Store(e) => e.code(),
            Self::Stalled(_) => "stalled",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Fetch(e) => e.is_retryable(),
            Self::Media(e) => e.is_retryable(),
            Self::Analysis(e) => e.is_retryable(),
            Self::Invalid(_) => false,
            Self::Store(e) => e.is_retryable(),
            Self::Stalled(_) => true,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Media(MediaError::Cancelled))
    }
}

/// What scoring is asked for.
#[derive(Debug, Clone, Copy)]
pub struct ScoreRequest {
    pub count: usize,
    pub min_len: f64,
    pub max_len: f64,
}

/// The long-lived services every stage uses: created once per process.
pub struct Services {
    pub config: Config,
    pub engine: MediaEngine,
    pub fetcher: Fetcher,
    /// Bulk bytes to and from local scratch: downloads, uploads, copies.
    pub scratch: Scratch,
    pub transcriber: Transcriber,
    pub faces: FaceDetector,
}

impl Services {
    pub fn new(config: &Config) -> Result<Self, MediaError> {
        let scratch = Scratch::new(config.scratch.dir.clone(), &config.scratch);
        let engine = MediaEngine::new(&config.media)?;
        Ok(Self {
            fetcher: Fetcher::new(&config.fetch, config.scratch.dir.join("cache"), scratch.clone(), engine.clone()),
            engine,
            scratch,
            transcriber: Transcriber::new(&config.transcribe, &config.python),
            faces: FaceDetector::new(&config.faces, &config.python),
            config: config.clone(),
        })
    }

    /// Probes a fetched source and applies the duration limit.
    pub async fn check_source(&self, path: &Path) -> Result<MediaInfo, StageError> {
        let info = self.engine.probe(path).await?;
        let max = self.config.fetch.max_duration_s;
        if info.duration > max as f64 {
            return Err(StageError::Invalid(format!(
                "source is {:.0} s long; the limit is {max} s (fetch.max_duration_s)",
                info.duration
            )));
        }
        Ok(info)
    }

    /// Heuristic first; with the LLM scorer configured, its best candidates go to the LLM, and
    /// any failure there keeps the heuristic's choice (returned with the reason).
    pub async fn score(&self, words: &[Word], wav: &Path, duration: f64, req: ScoreRequest) -> Result<(Vec<Candidate>, Option<String>), StageError> {
        let wav = wav.to_path_buf();
        let loudness = tokio::task::spawn_blocking(move || Loudness::from_wav(&wav))
            .await
            .map_err(|e| StageError::Invalid(format!("loudness task: {e}")))?
            .map_err(|source| AnalysisError::Io { path: PathBuf::from("audio.wav"), source })?;
        let heuristic = score::heuristic(words, &loudness, duration, req.count, req.min_len, req.max_len);
        if self.config.score.scorer != Scorer::Llm || words.is_empty() {
            return Ok((heuristic, None));
        }
        let pool = score::heuristic(words, &loudness, duration, req.count * 3, req.min_len, req.max_len);
        Ok(match llm::rescore(&self.config.score.llm, &pool, req.count).await {
            Ok(picked) => (picked, None),
            Err(e) => {
                tracing::warn!(error = %e, "llm scorer failed; using the heuristic");
                (heuristic, Some(format!("score: llm failed ({e}) → heuristic")))
            }
        })
    }

    /// Fills in the crop path of a `track` clip from detected faces; a centred crop when detection
    /// fails, `fit` when no face is seen. Returns the fallbacks taken.
    pub async fn frame(&self, clip: &mut ClipEdit, input: &Path, info: &MediaInfo, scratch: &Path) -> Vec<String> {
        if clip.mode != Mode::Track {
            return vec![];
        }
        match self.track(clip, input, info, scratch).await {
            Ok(Some(keys)) => {
                clip.crop_path = keys;
                vec![]
            }
            Ok(None) => {
                clip.mode = Mode::Fit;
                vec!["faces: none found → fit".into()]
            }
            Err(e) => {
                tracing::warn!(error = %e, "face detection failed; centre crop");
                vec![format!("faces: {e} → centre crop")]
            }
        }
    }

    async fn track(&self, clip: &ClipEdit, input: &Path, info: &MediaInfo, scratch: &Path) -> Result<Option<Vec<CropKey>>, StageError> {
        let tag = format!("{:.3}-{:.3}", clip.start, clip.end);
        let frames_path = scratch.join(format!("frames-{tag}.raw"));
        let (fps, width) = (self.config.faces.fps, self.config.faces.width);
        let frames = self.engine.extract_frames(input, TimeRange::new(clip.start, clip.end), fps, width, &frames_path, Control::default()).await?;
        let detections = self.faces.detect(&frames_path, scratch, &tag).await;
        let _ = tokio::fs::remove_file(&frames_path).await;
        let detections = detections?;
        let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
        let size = clip.size.unwrap_or(Size::VERTICAL_1080);
        let aspect = size.width as f64 / size.height as f64;
        Ok(tracking::crop_path(&detections, frames.scale, video.display_size(), aspect, &self.config.tracking))
    }

    /// Renders a clip; if burning captions fails (and the input is fine), renders it without.
    pub async fn render(&self, mut request: RenderRequest, ctl: Control) -> Result<(RenderOutput, Option<String>), StageError> {
        match self.engine.render(request.clone(), ctl.clone()).await {
            Err(e) if request.clip.captions.enabled && !e.is_bad_input() && !matches!(e, MediaError::Cancelled) => {
                request.clip.captions.enabled = false;
                let out = self.engine.render(request, ctl).await?;
                Ok((out, Some(format!("captions: {e} → none"))))
            }
            other => Ok((other?, None)),
        }
    }
}

/// The clip to render for a chosen candidate, before faces fill in its crop path.
pub fn base_clip(c: &Candidate, words: &[Word], mode: Mode, size: Size, captions: &CaptionStyle) -> ClipEdit {
    ClipEdit {
        start: c.start,
        end: c.end,
        mode,
        size: Some(size),
        crop_path: vec![],
        words: words.iter().filter(|w| w.end > c.start && w.start < c.end).cloned().collect(),
        captions: captions.clone(),
        meta: None,
    }
}

/// Transcribes, or on failure returns an empty transcript and the fallback to record.
pub async fn transcribe_or_degrade(transcriber: &Transcriber, wav: &Path, scratch: &Path) -> (Transcript, Option<String>) {
    match transcriber.transcribe(wav, scratch).await {
        Ok(t) => (t, None),
        Err(e) => {
            tracing::warn!(error = %e, "transcription failed; scoring on loudness, no captions");
            (Transcript::default(), Some(format!("transcribe: {e} → loudness-only scoring, no captions")))
        }
    }
}
