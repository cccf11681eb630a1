//! Probing an input with GStreamer's discoverer: duration, streams, codecs, size, rate, rotation.

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::Serialize;

use super::MediaError;

/// What an input holds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MediaInfo {
    pub duration: f64,
    pub container: Option<String>,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
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

/// Probes `path`. Blocking: call it from a media thread.
pub(crate) fn probe_blocking(path: &Path) -> Result<MediaInfo, MediaError> {
    let uri = super::file_uri(path)?;
    let discoverer = pbutils::Discoverer::new(DISCOVER_TIMEOUT).map_err(|e| MediaError::Build(e.to_string()))?;
    let info = discoverer.discover_uri(&uri).map_err(|e| classify(&e.to_string()))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::Unreadable("probe timed out".into())),
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
    let container = info
        .stream_info()
        .and_then(|s| s.downcast::<pbutils::DiscovererContainerInfo>().ok())
        .and_then(|c| c.caps())
        .map(|c| codec_name(Some(c)));
    Ok(MediaInfo { duration, container, video, audio })
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
