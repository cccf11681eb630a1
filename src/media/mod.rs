//! The media engine: everything GStreamer, nothing else (no SQL, no HTTP).
//!
//! Each operation runs its pipelines on a dedicated, named OS thread and is awaited through a
//! oneshot, so no tokio worker ever blocks on a state change or a bus.

mod audio;
mod crop;
mod cut;
mod decoder;
mod encoder;
mod error;
mod frames;
mod mp4_out;
mod pipeline;
mod probe;
mod remux;
mod render;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Once;

use gstreamer as gst;

pub use audio::{AudioWav, write_empty_wav};
pub use cut::CutOutput;
pub use decoder::Decoders;
pub use encoder::{Encoders, H264_CANDIDATES};
pub use error::MediaError;
pub use frames::{FRAME_MAGIC, FramesHeader, FramesOutput, HEADER_LEN as FRAMES_HEADER_LEN};
pub use pipeline::Control;
pub use probe::{AudioInfo, MediaInfo, VideoInfo};
pub use remux::RemuxOutput;
pub use render::{RenderOutput, RenderRequest};

use crate::config::MediaConfig;
pub(crate) use crate::persist::part_file::PartFile;

/// A range of the source in seconds, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    pub start: f64,
    pub end: f64,
}

impl TimeRange {
    pub fn new(start: f64, end: f64) -> Self {
        Self { start, end }
    }
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
    fn start_time(&self) -> gst::ClockTime {
        gst::ClockTime::from_nseconds((self.start * 1e9).round() as u64)
    }
    fn end_time(&self) -> gst::ClockTime {
        gst::ClockTime::from_nseconds((self.end * 1e9).round() as u64)
    }
    fn span_ns(&self) -> (u64, u64) {
        (self.start_time().nseconds(), self.end_time().nseconds())
    }

    /// Checks the range against an input of `duration` seconds. An end just past the end (by less
    /// than a frame or two of rounding) is clamped; anything further is an error.
    pub fn validate(self, duration: f64) -> Result<Self, MediaError> {
        let bad = |reason: &str| MediaError::InvalidRange { start: self.start, end: self.end, reason: reason.into() };
        if !self.start.is_finite() || !self.end.is_finite() || self.start < 0.0 {
            return Err(bad("times must be finite and not negative"));
        }
        if self.end - self.start < 0.1 {
            return Err(bad("range is empty or shorter than 0.1 s"));
        }
        if self.start >= duration || self.end > duration + 0.1 {
            return Err(bad(&format!("input is only {duration:.3} s long")));
        }
        Ok(Self { start: self.start, end: self.end.min(duration) })
    }
}

/// The media engine: GStreamer initialised and encoders and decoders chosen, once per process.
#[derive(Debug, Clone)]
pub struct MediaEngine {
    encoders: Encoders,
    decoders: Decoders,
    config: MediaConfig,
}

impl MediaEngine {
    pub fn new(config: &MediaConfig) -> Result<Self, MediaError> {
        init()?;
        Ok(Self { encoders: Encoders::probe(config)?, decoders: Decoders::probe(config), config: config.clone() })
    }

    pub fn encoders(&self) -> &Encoders {
        &self.encoders
    }

    pub fn decoders(&self) -> &Decoders {
        &self.decoders
    }

    pub async fn probe(&self, input: &Path) -> Result<MediaInfo, MediaError> {
        let input = existing(input)?;
        run_blocking("media-probe", move || probe::probe_blocking(&input)).await
    }

    /// As `probe`, refusing (`TooLong`) an input that declares more than `max_seconds`, before
    /// any of its packets is read.
    pub async fn probe_limited(&self, input: &Path, max_seconds: f64) -> Result<MediaInfo, MediaError> {
        let input = existing(input)?;
        run_blocking("media-probe", move || probe::probe_within(&input, Some(max_seconds))).await
    }

    /// Decodes the input's first audio stream to 16 kHz mono 16-bit PCM WAV (the ASR input).
    pub async fn extract_audio(&self, input: &Path, out: &Path, ctl: Control) -> Result<AudioWav, MediaError> {
        let (input, out) = (existing(input)?, out.to_path_buf());
        run_blocking("media-audio", move || audio::extract_blocking(&input, &out, &ctl)).await
    }

    /// Decodes `range` at `fps` frames per second, scaled to `width`, into a raw frame file.
    pub async fn extract_frames(
        &self,
        input: &Path,
        range: TimeRange,
        fps: f64,
        width: u32,
        out: &Path,
        ctl: Control,
    ) -> Result<FramesOutput, MediaError> {
        let (input, out) = (existing(input)?, out.to_path_buf());
        run_blocking("media-frames", move || frames::extract_blocking(&input, range, fps, width, &out, &ctl)).await
    }

    /// Copies `range` into an MP4 without re-encoding, starting at the keyframe at or before it.
    pub async fn cut(&self, input: &Path, range: TimeRange, out: &Path, ctl: Control) -> Result<CutOutput, MediaError> {
        let (input, out) = (existing(input)?, out.to_path_buf());
        run_blocking("media-cut", move || cut::cut_blocking(&input, range, &out, &ctl)).await
    }

    /// Copies a video-only file and an audio-only file into one file, timestamps kept: MP4 where
    /// it carries both codecs, else Matroska; `out`'s extension is set to match.
    pub async fn remux(&self, video: &Path, audio: &Path, out: &Path, ctl: Control) -> Result<RemuxOutput, MediaError> {
        let (video, audio, out) = (existing(video)?, existing(audio)?, out.to_path_buf());
        run_blocking("media-remux", move || remux::remux_blocking(&video, &audio, &out, &ctl)).await
    }

    /// Renders one vertical clip: crop path or fit, scale, captions, encode, mux.
    pub async fn render(&self, request: RenderRequest, ctl: Control) -> Result<RenderOutput, MediaError> {
        existing(&request.input)?;
        let engine = self.clone();
        run_blocking("media-render", move || render::render_blocking(&engine, &request, &ctl)).await
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), MediaError> {
    static INIT: Once = Once::new();
    let mut result = Ok(());
    INIT.call_once(|| result = gst::init().map_err(|e| MediaError::Build(format!("gstreamer init: {e}"))));
    result
}

/// Runs `f` on a new named OS thread and awaits its result without blocking the runtime; the
/// CPU it uses is charged to the caller's stage (`usage`).
async fn run_blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, MediaError> + Send + 'static,
) -> Result<T, MediaError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let charged = crate::usage::InProcess::start();
    let work = charged.id();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            work.enter();
            let _ = tx.send(f());
        })
        .map_err(|e| MediaError::Build(format!("cannot start media thread: {e}")))?;
    rx.await.map_err(|_| MediaError::Build("media thread panicked".into()))?
}

fn existing(path: &Path) -> Result<PathBuf, MediaError> {
    let path = std::path::absolute(path).map_err(|e| MediaError::io(path, e))?;
    if path.is_file() { Ok(path) } else { Err(MediaError::NotFound(path)) }
}

fn file_uri(path: &Path) -> Result<String, MediaError> {
    let path = std::path::absolute(path).map_err(|e| MediaError::io(path, e))?;
    gst::glib::filename_to_uri(&path, None).map(|u| u.to_string()).map_err(|e| MediaError::Build(e.to_string()))
}

