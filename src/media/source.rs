//! Reading one time range of an input into app sinks: decoded frames and samples, or parsed
//! (still compressed) packets for stream copy.
//!
//! Seeking needs a prerolled pipeline, and a muxer-fed file sink cannot preroll, so every operation
//! is split in two: this source pipeline (which prerolls into app sinks, then seeks to the range)
//! and, where needed, an output pipeline fed through `appsrc`. Samples cross with their segment, so
//! the output side sees source timestamps and the muxer rebases them to start at zero.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::pipeline::{Control, Pipeline, Position, drop_stream, make};
use super::{MediaError, TimeRange};

/// Consumes each sample a branch delivers; an error stops the stream.
pub(crate) type SampleSink = Box<dyn FnMut(gst::Sample) -> Result<gst::FlowSuccess, gst::FlowError> + Send>;

/// One stream's path from the demuxer or decoder to our code.
pub(crate) struct Branch {
    /// Elements between the decoder's pad and the app sink (converters, scalers, rate changers).
    pub elements: Vec<gst::Element>,
    pub on_sample: SampleSink,
    pub on_eos: Box<dyn FnMut() + Send>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seek {
    /// Frame-exact start: decode from the keyframe before and drop up to the start.
    Accurate,
    /// Start at the keyframe at or before the start (stream copy cannot start elsewhere).
    KeyframeBefore,
    /// The whole input, read on from where it prerolled, without a seek. After the flushing
    /// seek to 0 the decoded audio came out different from run to run, in bursts of a few
    /// milliseconds where the sound is noise-like (likely AAC's noise substitution, whose random
    /// state a flush does not reset and the preroll advances by however much it decoded), and
    /// so did the transcript: the WAV for the ASR is read this way.
    Whole,
}

pub(crate) struct SourceSpec<'a> {
    pub path: &'a Path,
    pub range: TimeRange,
    pub seek: Seek,
    /// Parse only (for stream copy) instead of decoding.
    pub parse_only: bool,
    /// Only a few frames a second are wanted (face sampling): the decoder skips the frames no
    /// other frame refers to, which the sampling can do without.
    pub sparse: bool,
    pub video: Option<Branch>,
    pub audio: Option<Branch>,
}

const PREROLL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Builds the source pipeline, prerolls it, seeks to the range and starts it playing.
/// Timestamps of delivered samples are recorded in `position`.
pub(crate) fn start(spec: SourceSpec<'_>, ctl: &Control, position: &Position) -> Result<Pipeline, MediaError> {
    let pipeline = Pipeline::new("source");
    let filesrc = make("filesrc")?;
    filesrc.set_property("location", spec.path.to_string_lossy().to_string());
    let demux = make(if spec.parse_only { "parsebin" } else { "decodebin" })?;
    pipeline.add_many(&[&filesrc, &demux])?;
    filesrc.link(&demux).map_err(|e| MediaError::Build(e.to_string()))?;

    if !spec.parse_only {
        skip_unwanted_decoding(&demux, spec.video.is_some(), spec.audio.is_some());
    }
    if spec.sparse {
        skip_unreferenced_frames(&demux);
    }
    let video = spec.video.map(|b| add_branch(&pipeline, "video", b, position)).transpose()?;
    let audio = spec.audio.map(|b| add_branch(&pipeline, "audio", b, position)).transpose()?;
    let entries = Arc::new(Mutex::new((video, audio)));
    demux.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let kind = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
        let mut entries = entries.lock().expect("pad-added lock");
        let slot = if kind.starts_with("video/") {
            &mut entries.0
        } else if kind.starts_with("audio/") {
            &mut entries.1
        } else {
            &mut None
        };
        // The first stream of each kind goes to its branch; anything else is dropped.
        match slot.take() {
            Some(target) => {
                if let Err(e) = pad.link(&target) {
                    tracing::warn!(stream = %kind, error = ?e, "cannot link stream");
                }
            }
            None => drop_stream(pad),
        }
    });

    pipeline.set_state(gst::State::Paused)?;
    pipeline.wait_prerolled(ctl, PREROLL_TIMEOUT)?;
    let flags = match spec.seek {
        Seek::Accurate => gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        Seek::KeyframeBefore => gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
        Seek::Whole => {
            pipeline.set_state(gst::State::Playing)?;
            return Ok(pipeline);
        }
    };
    pipeline
        .bin()
        .seek(
            1.0,
            flags,
            gst::SeekType::Set,
            spec.range.start_time(),
            gst::SeekType::Set,
            spec.range.end_time(),
        )
        .map_err(|_| MediaError::Unreadable("input is not seekable".into()))?;
    pipeline.set_state(gst::State::Playing)?;
    Ok(pipeline)
}

/// How far before a range's end the data may stop (the last frame starts a frame early, a
/// stream may end a little before the others) and still count as reaching it.
const END_SLACK: f64 = 0.5;

/// After a pipeline reached EOS: fails when the newest sample started well before the range's
/// end. Demuxers reading a file cut short (its header promising more) end the stream quietly
/// where the data stops, which would otherwise make a short or empty output look finished.
pub(crate) fn check_reached_end(position: &Position, range: TimeRange) -> Result<(), MediaError> {
    let at = (position.get() as f64 / 1e9).max(range.start);
    if at + END_SLACK < range.end {
        return Err(MediaError::DataEndsEarly { at, end: range.end });
    }
    Ok(())
}

/// Adds `queue ! elements… ! appsink` and returns the queue's sink pad, the branch's entry.
fn add_branch(pipeline: &Pipeline, kind: &str, branch: Branch, position: &Position) -> Result<gst::Pad, MediaError> {
    let queue = make("queue")?;
    let sink = gst_app::AppSink::builder().name(format!("{kind}-sink")).sync(false).max_buffers(4).build();
    let mut chain: Vec<gst::Element> = vec![queue.clone()];
    chain.extend(branch.elements);
    chain.push(sink.clone().upcast());
    pipeline.add_many(&chain.iter().collect::<Vec<_>>())?;
    super::pipeline::link_chain(&chain.iter().collect::<Vec<_>>())?;

    let Branch { mut on_sample, mut on_eos, .. } = branch;
    let position = position.clone();
    let video = kind == "video";
    let mut last_pts: Option<gst::ClockTime> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
                    // A frame that starts no later than the one before is dropped: after an
                    // accurate seek into a file with millisecond timestamps (Matroska, WebM) the
                    // frame just before the start overlaps it by a fraction of a millisecond and
                    // is clipped to the start, the same time as the next frame, which the
                    // encoder and muxer cannot take twice.
                    if video && last_pts.is_some_and(|last| pts <= last) {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    last_pts = Some(pts);
                    position.set(pts.nseconds());
                }
                on_sample(sample)
            })
            .eos(move |_| on_eos())
            .build(),
    );
    Ok(queue.static_pad("sink").expect("queue has a sink pad"))
}

/// Has the libav video decoders decodebin picks skip non-reference frames (`skip-frame`, whose
/// value 1 is libav's "non-reference"); other decoders decode every frame as before.
fn skip_unreferenced_frames(decodebin: &gst::Element) {
    decodebin.connect("element-added", false, |args| {
        let element = args.get(1).and_then(|v| v.get::<gst::Element>().ok());
        if let Some(decoder) = element.filter(|e| e.find_property("skip-frame").is_some()) {
            decoder.set_property_from_str("skip-frame", "1");
        }
        None
    });
}

/// Stops decodebin from decoding a kind of stream nobody asked for (audio extraction would
/// otherwise decode every video frame only to throw it away): such streams are exposed still
/// compressed and discarded.
fn skip_unwanted_decoding(decodebin: &gst::Element, video: bool, audio: bool) {
    decodebin.connect("autoplug-continue", false, move |args| {
        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let Some(s) = caps.as_ref().and_then(|c| c.structure(0)) else { return Some(true.to_value()) };
        let name = s.name().as_str();
        // Containers have media-type names too: keep demuxing them.
        let container = CONTAINERS.contains(&name) || s.get::<bool>("systemstream").unwrap_or(false);
        let unwanted = !container && ((name.starts_with("video/") && !video) || (name.starts_with("audio/") && !audio));
        Some((!unwanted).to_value())
    });
}

/// Container formats whose caps name starts with `video/` or `audio/`.
const CONTAINERS: &[&str] = &[
    "video/quicktime", "video/x-matroska", "video/webm", "video/mpegts", "video/x-msvideo", "video/x-flv",
    "video/x-ms-asf", "audio/x-m4a", "audio/ogg", "audio/x-wav", "audio/x-matroska", "audio/webm",
];
