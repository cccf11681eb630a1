//! Probing an input with GStreamer's discoverer: duration, streams, codecs, size, rate, rotation;
//! and whether the data reaches the duration the header declares.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::Serialize;

use super::pipeline::{Control, Position, drive};
use super::source::{self, Branch, Seek, SourceSpec};
use super::{MediaError, TimeRange};

/// What an input holds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MediaInfo {
    /// Seconds, as the header declares.
    pub duration: f64,
    /// Where the data actually ends, when that is well before `duration`: a file cut short (an
    /// interrupted download or copy) whose header, written first, promises more. None when the
    /// data reaches the declared end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readable_duration: Option<f64>,
    pub container: Option<String>,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
}

impl MediaInfo {
    /// The seconds that can actually be read: ranges must end within them.
    pub fn readable_seconds(&self) -> f64 {
        self.readable_duration.unwrap_or(self.duration)
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VideoInfo {
    /// Human-readable codec, e.g. "H.264 (High Profile)".
    pub codec: String,
    /// Caps name, e.g. "video/x-h264".
    pub mime: String,
    /// Coded size, before rotation.
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Clockwise degrees a player applies (0, 90, 180, 270).
    pub rotation: u32,
}

impl VideoInfo {
    /// The size a viewer sees: width and height swapped for 90 and 270 degrees.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 == 90 { (self.height, self.width) } else { (self.width, self.height) }
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AudioInfo {
    pub codec: String,
    pub mime: String,
    pub sample_rate: u32,
    pub channels: u32,
}

const DISCOVER_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(30);
/// Streams an input may have (a phone video has two or three, a film a dozen with its subtitles).
pub const MAX_STREAMS: usize = 32;
/// Pixels a side of a frame (8K UHD is 7680x4320): past it one decoded frame alone is hundreds of MiB.
pub const MAX_FRAME_SIDE: u32 = 8192;

/// Probes `path`. Blocking: call it from a media thread.
pub(crate) fn probe_blocking(path: &Path) -> Result<MediaInfo, MediaError> {
    probe_within(path, None)
}

/// Probes `path`, refusing an input that declares more than `max_seconds` before reading any of
/// its packets. Besides the limits every input has: `MAX_STREAMS` and `MAX_FRAME_SIDE`, checked
/// on what the headers declare, before anything is decoded.
pub(crate) fn probe_within(path: &Path, max_seconds: Option<f64>) -> Result<MediaInfo, MediaError> {
    let uri = super::file_uri(path)?;
    let discoverer = pbutils::Discoverer::new(DISCOVER_TIMEOUT).map_err(|e| MediaError::Build(e.to_string()))?;
    let info = discoverer.discover_uri(&uri).map_err(|e| classify(&e.to_string()))?;
    let streams = info.stream_list().len();
    if streams > MAX_STREAMS {
        return Err(MediaError::TooManyStreams(streams));
    }
    if let Some(v) = info.video_streams().into_iter().find(|v| v.width() > MAX_FRAME_SIDE || v.height() > MAX_FRAME_SIDE) {
        return Err(MediaError::FrameTooLarge(v.width(), v.height()));
    }
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::Unreadable("probe timed out".into())),
        pbutils::DiscovererResult::MissingPlugins => return Err(MediaError::NoDecoder(missing(&info))),
        other => return Err(MediaError::Unreadable(format!("probe failed: {other:?}"))),
    }

    let video = info.video_streams().into_iter().find(|v| !v.is_image()).map(|v| {
        let fr = v.framerate();
        let fps = if fr.denom() > 0 && fr.numer() > 0 { fr.numer() as f64 / fr.denom() as f64 } else { 30.0 };
        VideoInfo {
            codec: codec_name(v.caps()),
            mime: mime_of(v.caps()),
            width: v.width(),
            height: v.height(),
            fps,
            rotation: v.tags().as_ref().map(rotation_of).unwrap_or(0),
        }
    });
    let audio = info.audio_streams().into_iter().next().map(|a| AudioInfo {
        codec: codec_name(a.caps()),
        mime: mime_of(a.caps()),
        sample_rate: a.sample_rate(),
        channels: a.channels(),
    });
    if video.is_none() && audio.is_none() {
        return Err(MediaError::UnknownFormat("no audio or video streams".into()));
    }
    let duration = info.duration().map(|d| d.nseconds() as f64 / 1e9).unwrap_or(0.0);
    if duration <= 0.0 {
        return Err(MediaError::Unreadable("duration is unknown or zero".into()));
    }
    if let Some(limit) = max_seconds.filter(|&limit| duration > limit) {
        return Err(MediaError::TooLong { declared: duration, limit });
    }
    let container = info
        .stream_info()
        .and_then(|s| s.downcast::<pbutils::DiscovererContainerInfo>().ok())
        .and_then(|c| c.caps())
        .map(|c| codec_name(Some(c)));
    let readable_duration = readable_end(path, duration, if video.is_some() { Stream::Video } else { Stream::Audio })?;
    Ok(MediaInfo { duration, readable_duration, container, video, audio })
}

/// How far before the declared end the data may stop and still count as complete (streams of one
/// file end a little apart, and the tail is read from the keyframe before it).
const COMPLETE_SLACK: f64 = 0.5;

/// Where the data ends, when well before the declared `duration`. Demuxers trust the header, and
/// reading past the data ends the stream quietly, so this reads packets (parse only, nothing is
/// decoded): first the last second, which is all a complete file costs; only when that comes up
/// short, the whole file from the start, to find the last packet.
///
/// Only one stream is read: the picture when there is one, since clips are made of it. A file
/// cut short loses every stream, while one whose sound stops before its picture is whole (and an
/// app sink that no packet of the range reaches would never preroll: the read would stall).
fn readable_end(path: &Path, duration: f64, stream: Stream) -> Result<Option<f64>, MediaError> {
    let tail = TimeRange::new((duration - 1.0).max(0.0), duration);
    if last_packet_end(path, tail, stream)? + COMPLETE_SLACK >= duration {
        return Ok(None);
    }
    let end = last_packet_end(path, TimeRange::new(0.0, duration), stream)?;
    tracing::warn!(path = %path.display(), declared = duration, readable = end, "input data ends before its declared duration");
    Ok(Some(end))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Video,
    Audio,
}

/// The end (timestamp plus duration) of the last packet of `stream` read over `range`.
fn last_packet_end(path: &Path, range: TimeRange, stream: Stream) -> Result<f64, MediaError> {
    let end_ns = Arc::new(AtomicU64::new(0));
    let branch = || {
        let end_ns = end_ns.clone();
        Branch {
            elements: vec![],
            on_sample: Box::new(move |sample| {
                if let Some(b) = sample.buffer()
                    && let Some(pts) = b.pts().or(b.dts())
                {
                    end_ns.fetch_max((pts + b.duration().unwrap_or(gst::ClockTime::ZERO)).nseconds(), Ordering::Relaxed);
                }
                Ok(gst::FlowSuccess::Ok)
            }),
            on_eos: Box::new(|| {}),
        }
    };
    let position = Position::default();
    let ctl = Control::default();
    let spec = SourceSpec { path, range, seek: Seek::KeyframeBefore, parse_only: true, sparse: false, video: (stream == Stream::Video).then(branch), audio: (stream == Stream::Audio).then(branch) };
    let pipeline = source::start(spec, &ctl, &position)?;
    drive(&[&pipeline], &ctl, &position, range.span_ns())?;
    Ok(end_ns.load(Ordering::Relaxed) as f64 / 1e9)
}

/// What the discoverer found no plugin for, e.g. "AV1 (video/x-av1)": each installer detail is
/// `gstreamer|1.0|app|description|decoder-caps`.
fn missing(info: &pbutils::DiscovererInfo) -> String {
    let details = info.missing_elements_installer_details();
    let names: Vec<String> = details
        .iter()
        .map(|d| {
            let parts: Vec<&str> = d.split('|').collect();
            let caps = parts.get(4).map(|c| c.trim_start_matches("decoder-").split(',').next().unwrap_or("")).unwrap_or("");
            match parts.get(3) {
                Some(desc) if !caps.is_empty() => format!("{desc} ({caps})"),
                Some(desc) => desc.to_string(),
                None => d.to_string(),
            }
        })
        .collect();
    if names.is_empty() { "a stream of the input".into() } else { names.join(", ") }
}

fn classify(message: &str) -> MediaError {
    let m = message.to_lowercase();
    if m.contains("could not determine type") || m.contains("not-negotiated") {
        MediaError::UnknownFormat(m)
    } else {
        MediaError::Unreadable(m)
    }
}

fn codec_name(caps: Option<gst::Caps>) -> String {
    let Some(caps) = caps else { return "unknown".into() };
    pbutils::pb_utils_get_codec_description(&caps).to_string()
}

fn mime_of(caps: Option<gst::Caps>) -> String {
    caps.and_then(|c| c.structure(0).map(|s| s.name().to_string())).unwrap_or_default()
}

fn rotation_of(tags: &gst::TagList) -> u32 {
    let Some(orientation) = tags.get::<gst::tags::ImageOrientation>() else { return 0 };
    match orientation.get() {
        "rotate-90" => 90,
        "rotate-180" => 180,
        "rotate-270" => 270,
        _ => 0,
    }
}
