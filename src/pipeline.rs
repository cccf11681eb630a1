//! The stages of a clipping job as plain async functions over shared services, used by both the
//! one-shot `clip` command and the server's actors: fetch, audio, transcribe, score, faces, render.
//! Each takes explicit input and output paths, so a caller can name outputs deterministically and
//! skip a stage whose output already exists.

use std::path::{Path, PathBuf};

use crate::analysis::faces::FaceDetector;
use crate::analysis::fetch::{FetchError, Fetcher};
use crate::analysis::score::{self, Candidate, Loudness};
use crate::analysis::source_meta::SourceMeta;
use crate::analysis::transcribe::{Transcriber, Transcript};
use crate::analysis::tracking::{Framing, Scene, Want};
use crate::analysis::{AnalysisError, llm, picture, tracking};
use crate::config::{Config, Scorer};
use crate::edit::captions::Look;
use crate::edit::{CaptionStyle, ClipEdit, Mode, Size, Word};
use crate::job::{Reframe, Truncation};
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
    /// The stage's worker died running it (a panic), every time it was handed out.
    #[error("{0}")]
    Crashed(String),
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
            Self::Crashed(_) => "stage_crashed",
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
            Self::Crashed(_) => false,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Media(MediaError::Cancelled))
    }
}

/// The size of a WAV header with no samples after it.
const EMPTY_WAV_BYTES: u64 = 44;

/// What the score stage chose, and what it noticed.
#[derive(Debug, Clone)]
pub struct Scored {
    pub chosen: Vec<Candidate>,
    pub fallbacks: Vec<String>,
    /// Set when the source's data ends before its header says (the probe reads where it ends).
    pub truncated: Option<Truncation>,
}

/// What scoring is asked for.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub count: usize,
    pub min_len: f64,
    pub max_len: f64,
    /// The job's instruction for the LLM scorer (checked by `llm::check_instruction`).
    pub instruction: Option<String>,
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
        Ok(self.engine.probe_limited(path, self.config.fetch.max_duration_s as f64).await?)
    }

    /// The audio stage: the 16 kHz WAV the ASR reads, or, for a source without an audio track,
    /// a WAV of no samples (the stages after it then take the picture instead).
    pub async fn audio(&self, source: &Path, info: &MediaInfo, wav: &Path, ctl: Control) -> Result<(), StageError> {
        if info.audio.is_none() {
            let wav = wav.to_path_buf();
            tokio::task::spawn_blocking(move || crate::media::write_empty_wav(&wav))
                .await
                .map_err(|e| StageError::Invalid(format!("audio task: {e}")))??;
            return Ok(());
        }
        self.engine.extract_audio(source, wav, ctl).await?;
        Ok(())
    }

    /// Chooses the clips. With speech: the heuristic, then with the LLM scorer configured its
    /// best candidates go to the LLM (any failure there keeps the heuristic's choice, with the
    /// reason). With nothing to hear: windows from the picture. Either way only the readable
    /// part of the source is used, and a source that ends before its header says is reported.
    /// `source` is read only when there is nothing to hear (a cluster node need not fetch it).
    /// `meta` (the page's chapters and replay heatmap) steers the heuristic and goes to the LLM.
    pub async fn score(&self, words: &[Word], wav: &Path, source: Option<&Path>, info: &MediaInfo, req: &ScoreRequest, meta: Option<&SourceMeta>) -> Result<Scored, StageError> {
        let wav_path = wav.to_path_buf();
        let loudness = tokio::task::spawn_blocking(move || Loudness::from_wav(&wav_path))
            .await
            .map_err(|e| StageError::Invalid(format!("loudness task: {e}")))?
            .map_err(|source| AnalysisError::Io { path: PathBuf::from("audio.wav"), source })?;
        let mut fallbacks = Vec::new();
        let readable = info.readable_seconds();
        let chosen = if loudness.rms.is_empty() {
            fallbacks.push("score: the source has no audio track → clips chosen from the picture".into());
            let source = source.ok_or_else(|| StageError::Invalid("the picture scan needs the source".into()))?;
            let samples = self.scan_picture(source, readable, wav).await?;
            picture::candidates(&samples, readable, req.count, req.min_len, req.max_len)
        } else {
            let heard = loudness.duration().min(readable);
            let heuristic = score::heuristic_with(words, &loudness, heard, req.count, req.min_len, req.max_len, meta);
            if self.config.score.scorer != Scorer::Llm || words.is_empty() {
                if req.instruction.is_some() {
                    let why = if words.is_empty() { "nothing was transcribed" } else { "the llm scorer is not configured (score.scorer)" };
                    fallbacks.push(format!("score: instruction not used: {why} → heuristic"));
                }
                heuristic
            } else {
                let pool = score::heuristic_with(words, &loudness, heard, req.count * 3, req.min_len, req.max_len, meta);
                let steer = llm::Steer { instruction: req.instruction.as_deref(), meta };
                match llm::rescore(&self.config.score.llm, &pool, req.count, steer).await {
                    Ok(picked) => picked,
                    Err(e) => {
                        tracing::warn!(error = %e, "llm scorer failed; using the heuristic");
                        fallbacks.push(format!("score: llm failed ({e}) → heuristic"));
                        heuristic
                    }
                }
            }
        };
        let truncated = info.readable_duration.map(|r| Truncation { declared_s: info.duration, readable_s: (r * 1000.0).round() / 1000.0 });
        Ok(Scored { chosen, fallbacks, truncated })
    }

    /// The first `seconds` of the source at one small frame per second: shot changes and motion.
    async fn scan_picture(&self, source: &Path, seconds: f64, wav: &Path) -> Result<Vec<picture::Sample>, StageError> {
        let path = wav.with_file_name("picture-scan.raw");
        let range = TimeRange::new(0.0, seconds);
        self.engine.extract_frames(source, range, picture::SCAN_FPS, picture::SCAN_WIDTH, &path, Control::default()).await?;
        let read = path.clone();
        let samples = tokio::task::spawn_blocking(move || picture::scan(&read)).await;
        let _ = tokio::fs::remove_file(&path).await;
        samples
            .map_err(|e| StageError::Invalid(format!("picture scan task: {e}")))?
            .map_err(|source| StageError::Analysis(AnalysisError::Io { path, source }))
    }

    /// Frames a clip as `reframe` asks, from the faces detected in it: the crop path(s) and the
    /// mode chosen. When detection fails the crop is centred; when no face is confirmed, `auto`
    /// fits the whole frame and `track`/`split` centre the crop. Returns the fallbacks taken.
    pub async fn frame(&self, clip: &mut ClipEdit, reframe: Reframe, input: &Path, info: &MediaInfo, scratch: &Path) -> Vec<String> {
        let want = match reframe {
            Reframe::Fit => {
                clip.mode = Mode::Fit;
                return vec![];
            }
            Reframe::Auto => Want::Auto,
            Reframe::Track => Want::Track,
            Reframe::Split => Want::Split,
        };
        clip.mode = Mode::Track;
        match self.faces_in(clip, want, input, info, scratch).await {
            Ok(Framing::NoFace) if reframe == Reframe::Auto => {
                clip.mode = Mode::Fit;
                vec!["faces: none confirmed → fit".into()]
            }
            Ok(Framing::NoFace) => vec!["faces: none confirmed → centre crop".into()],
            Ok(Framing::Track { keys, follows, face_rows }) => {
                (clip.crop_path, clip.follows) = (keys, follows);
                let moved = clear_of_face(&clip.captions.look(), clip.size.unwrap_or(Size::VERTICAL_1080), face_rows);
                if moved != clip.captions.look().position {
                    clip.captions.position = Some(moved);
                }
                if reframe == Reframe::Split { vec!["faces: fewer than two in view → track".into()] } else { vec![] }
            }
            Ok(Framing::Split { top, bottom }) => {
                clip.mode = Mode::Split;
                (clip.crop_path, clip.crop_path_bottom) = (top, bottom);
                vec![]
            }
            Err(e) => {
                tracing::warn!(error = %e, "face detection failed; centre crop");
                vec![format!("faces: {e} → centre crop")]
            }
        }
    }

    async fn faces_in(&self, clip: &ClipEdit, want: Want, input: &Path, info: &MediaInfo, scratch: &Path) -> Result<Framing, StageError> {
        let tag = format!("{:.3}-{:.3}", clip.start, clip.end);
        let frames_path = scratch.join(format!("frames-{tag}.raw"));
        let (fps, width) = (self.config.faces.fps, self.config.faces.width);
        let range = TimeRange::new(clip.start, clip.end);
        let expected = (range.duration() * fps).ceil() as u64;
        // Decoding and detection at once: the detector reads the frame file as it is written.
        // Should decoding fail, the detection is dropped (its worker, left waiting, is replaced).
        let extract = async { self.engine.extract_frames(input, range, fps, width, &frames_path, Control::default()).await.map_err(StageError::from) };
        let detect = async { self.faces.detect(&frames_path, scratch, &tag, expected).await.map_err(StageError::from) };
        tokio::pin!(extract, detect);
        let both = tokio::select! {
            biased;
            frames = &mut extract => match frames {
                Ok(frames) => Ok((frames, detect.await)),
                Err(e) => Err(e),
            },
            detections = &mut detect => extract.await.map(|frames| (frames, detections)),
        };
        let _ = tokio::fs::remove_file(&frames_path).await;
        let (frames, detections) = both?;
        let detections = detections?;
        let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
        let size = clip.size.unwrap_or(Size::VERTICAL_1080);
        let aspect = size.width as f64 / size.height as f64;
        let scene = Scene { detections: &detections, scale: frames.scale, frame: video.display_size(), words: &clip.words };
        Ok(tracking::frame(&scene, want, aspect, &self.config.tracking))
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

/// Records on a clip what its render fell back to: captions dropped (`Services::render`), so its
/// edit renders as the clip came out, and the reason among its fallbacks.
pub fn note_render_fallback(fallback: Option<String>, clip: &mut ClipEdit, fallbacks: &mut Vec<String>) {
    if let Some(f) = fallback {
        clip.captions.enabled = false;
        fallbacks.push(f);
    }
}

/// The caption block's position moved off the followed face when it would cover it: below the
/// face if it fits above the platforms' bottom UI, else above it.
fn clear_of_face(style: &Look, size: Size, (top, bottom): (f64, f64)) -> f64 {
    // Line height about 1.25 font sizes; the font size is a fraction of the output width.
    let half = 0.5 * style.max_lines.max(1) as f64 * 1.25 * style.size * size.width as f64 / size.height as f64;
    let margin = 0.02;
    let position = style.position;
    if position + half < top - margin || position - half > bottom + margin {
        return position;
    }
    let below = bottom + margin + half;
    let above = top - margin - half;
    if below <= LOWEST_CAPTION { below } else if above >= HIGHEST_CAPTION { above } else { position }
}

/// The caption block's centre stays within these fractions of the output height (the bottom of
/// Shorts, Reels and TikTok is covered by their UI; the top by the status bar and title).
const LOWEST_CAPTION: f64 = 0.8;
const HIGHEST_CAPTION: f64 = 0.12;

/// The clip to render for a chosen candidate, before `Services::frame` frames it. `words` is the
/// whole transcript: without one (no audio, or the transcriber failed) there are no captions.
pub fn base_clip(c: &Candidate, words: &[Word], size: Size, captions: &CaptionStyle) -> ClipEdit {
    ClipEdit {
        start: c.start,
        end: c.end,
        mode: Mode::Track,
        size: Some(size),
        crop_path: vec![],
        crop_path_bottom: vec![],
        follows: vec![],
        words: words.iter().filter(|w| w.end > c.start && w.start < c.end).cloned().collect(),
        captions: CaptionStyle { enabled: captions.enabled && !words.is_empty(), ..captions.clone() },
        meta: None,
    }
}

/// Transcribes, or on failure returns an empty transcript and the fallback to record. A WAV of
/// no samples (a source without audio) is not sent to the transcriber.
pub async fn transcribe_or_degrade(transcriber: &Transcriber, wav: &Path, scratch: &Path) -> (Transcript, Option<String>) {
    if tokio::fs::metadata(wav).await.is_ok_and(|m| m.len() <= EMPTY_WAV_BYTES) {
        return (Transcript::default(), Some("transcribe: the source has no audio track → no captions".into()));
    }
    match transcriber.transcribe(wav, scratch).await {
        Ok(t) => (t, None),
        Err(e) => {
            tracing::warn!(error = %e, "transcription failed; scoring on loudness, no captions");
            (Transcript::default(), Some(format!("transcribe: {e} → loudness-only scoring, no captions")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_move_off_the_face_they_would_cover() {
        let style = CaptionStyle::default().look();
        let size = Size::VERTICAL_1080;
        assert_eq!(clear_of_face(&style, size, (0.25, 0.5)), style.position, "a face above the captions leaves them be");
        let below = clear_of_face(&style, size, (0.5, 0.72));
        assert!(below > 0.72 && below <= LOWEST_CAPTION, "moved below the face: {below}");
        let above = clear_of_face(&style, size, (0.45, 0.9));
        assert!((HIGHEST_CAPTION..0.45).contains(&above), "no room below, moved above: {above}");
    }
}
