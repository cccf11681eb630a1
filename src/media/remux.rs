//! Stream copy of a separate video file and audio file into one MP4 or Matroska file.
//!
//! Sites like YouTube serve their better pictures as video-only streams with the sound apart.
//! Remuxing the pair once, without re-encoding, leaves every later operation (probe, audio, frames,
//! cut, render) reading a single ordinary source.
//!
//! ```text
//! filesrc(video) ! parsebin ─ first video pad ─ queue ─┐
//!                                                      ├─ mp4mux|matroskamux ! filesink(.part)
//! filesrc(audio) ! parsebin ─ first audio pad ─ queue ─┘
//! ```
//!
//! The container is chosen per codec: MP4 where GStreamer 1.22's mp4mux carries both streams
//! (H.264, HEVC, AV1; AAC, MP3, AC-3, Opus) with exact timestamps, and Matroska otherwise (VP9,
//! which that mp4mux crashes on; Vorbis, VP8), which carries anything at millisecond
//! timestamps. Sync is kept by the muxer: it writes each buffer at its running time, and both
//! inputs start their timeline at the same zero (a DASH or HLS presentation's common media
//! timeline). Progress is the newest timestamp muxed over the longer input's duration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{Control, Pipeline, Position, drive, drop_stream, link_chain, make};
use super::{MediaError, PartFile, cut, probe};

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemuxOutput {
    /// The file written: the requested path with the chosen container's extension.
    pub path: PathBuf,
    /// "mp4" or "mkv".
    pub container: &'static str,
    /// Seconds, the longer of the two inputs.
    pub duration: f64,
}

/// MP4 when mp4mux can take both codecs as they are, else Matroska.
fn container_for(video: &super::VideoInfo, audio: &super::AudioInfo) -> (&'static str, &'static str) {
    let mp4 = cut::COPYABLE_VIDEO.contains(&video.mime.as_str()) && cut::COPYABLE_AUDIO.contains(&audio.mime.as_str());
    if mp4 { ("mp4mux", "mp4") } else { ("matroskamux", "mkv") }
}

/// The first error found on a streaming thread, kept typed (the bus only carries text).
type Failure = Arc<Mutex<Option<MediaError>>>;

pub(crate) fn remux_blocking(video: &Path, audio: &Path, out: &Path, ctl: &Control) -> Result<RemuxOutput, MediaError> {
    let video_info = probe::probe_blocking(video)?;
    let video_stream = video_info.video.as_ref().ok_or(MediaError::NoVideo)?;
    let audio_info = probe::probe_blocking(audio)?;
    let audio_stream = audio_info.audio.as_ref().ok_or(MediaError::NoAudio)?;
    let duration = video_info.duration.max(audio_info.duration);
    let (muxer, container) = container_for(video_stream, audio_stream);
    let out = out.with_extension(container);
    let part = PartFile::new(&out);

    let pipeline = Pipeline::new("remux");
    let mux = make(muxer)?;
    let sink = make("filesink")?;
    sink.set_property("location", part.path().to_string_lossy().to_string());
    pipeline.add_many(&[&mux, &sink])?;
    link_chain(&[&mux, &sink])?;

    let failure = Failure::default();
    let position = Position::default();
    // Both muxer pads exist before anything flows: the muxer refuses pads once it writes.
    add_input(&pipeline, video, Kind::Video, &mux, &failure, &position)?;
    add_input(&pipeline, audio, Kind::Audio, &mux, &failure, &position)?;
    pipeline.set_state(gst::State::Playing)?;
    let result = drive(&[&pipeline], ctl, &position, (0, (duration * 1e9) as u64));
    drop(pipeline);
    if let Some(e) = failure.lock().expect("failure lock").take() {
        return Err(e);
    }
    result?;
    part.commit(&out).map_err(|e| MediaError::io(&out, e))?;
    tracing::debug!(path = %out.display(), container, "remuxed");
    Ok(RemuxOutput { path: out, container, duration })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Video,
    Audio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
        }
    }
}

/// `filesrc ! parsebin`, whose first stream of `kind` goes through a queue to a new muxer pad;
/// any other stream (a muxed file's own sound, subtitles) is dropped.
fn add_input(pipeline: &Pipeline, path: &Path, kind: Kind, mux: &gst::Element, failure: &Failure, position: &Position) -> Result<(), MediaError> {
    let src = make("filesrc")?;
    src.set_property("location", path.to_string_lossy().to_string());
    let parse = make("parsebin")?;
    pipeline.add_many(&[&src, &parse])?;
    link_chain(&[&src, &parse])?;
    let mux_pad = mux
        .request_pad_simple(&format!("{}_%u", kind.name()))
        .ok_or_else(|| MediaError::Build(format!("{} has no {} pad", mux.name(), kind.name())))?;

    let bin = pipeline.bin().clone();
    let (failure, position) = (failure.clone(), position.clone());
    let taken = AtomicBool::new(false);
    parse.connect_pad_added(move |parse, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let mime = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let wanted = mime.starts_with(kind.name()) && !taken.swap(true, Ordering::SeqCst);
        if let Err(e) = link_stream(&bin, pad, wanted.then_some(&mux_pad), &caps, &mime, &position) {
            let text = e.to_string();
            failure.lock().expect("failure lock").get_or_insert(e);
            // Stops the pipeline now; the typed error above is what the caller gets.
            gst::element_error!(parse, gst::StreamError::Format, ["{}", text]);
        }
    });
    Ok(())
}

/// Links one parsed stream: to `mux_pad` through a queue, or nowhere when `None`.
fn link_stream(
    bin: &gst::Pipeline,
    pad: &gst::Pad,
    mux_pad: Option<&gst::Pad>,
    caps: &gst::Caps,
    mime: &str,
    position: &Position,
) -> Result<(), MediaError> {
    let Some(mux_pad) = mux_pad else {
        drop_stream(pad);
        return Ok(());
    };
    if !mux_pad.pad_template_caps().can_intersect(caps) {
        return Err(MediaError::CopyUnsupported(format!("the container cannot carry {mime}")));
    }
    let queue = make("queue")?;
    bin.add(&queue)?;
    queue.sync_state_with_parent()?;
    let (queue_sink, queue_src) = (queue.static_pad("sink").expect("queue sink"), queue.static_pad("src").expect("queue src"));
    pad.link(&queue_sink).map_err(|e| MediaError::Build(format!("cannot link {mime}: {e:?}")))?;
    queue_src.link(mux_pad).map_err(|e| MediaError::CopyUnsupported(format!("the muxer refused {mime}: {e:?}")))?;
    let position = position.clone();
    queue_src.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            position.set(pts.nseconds());
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}
