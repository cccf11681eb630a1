//! Choosing the H.264 and AAC encoders once, by probing the registry, and configuring them.
//!
//! Order of preference: NVENC, then VA (new `va` plugin, then legacy `vaapi`), then x264. A plugin
//! can be registered without its hardware (NVENC on an H200, VA without a render node), so a
//! candidate counts only if it reaches `READY`.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;
use super::pipeline::make;
use crate::config::MediaConfig;

pub const H264_CANDIDATES: &[&str] = &["nvh264enc", "vah264enc", "vaapih264enc", "x264enc", "openh264enc"];
const AAC_CANDIDATES: &[&str] = &["avenc_aac", "fdkaacenc", "voaacenc"];

/// The encoders this process uses, picked once at start.
#[derive(Debug, Clone)]
pub struct Encoders {
    pub video: String,
    pub audio: String,
    preset: String,
    quality: u32,
    audio_bitrate: u32,
}

impl Encoders {
    pub fn probe(config: &MediaConfig) -> Result<Self, MediaError> {
        let video = if config.encoder == "auto" {
            H264_CANDIDATES
                .iter()
                .find(|name| usable(name))
                .map(|s| s.to_string())
                .ok_or(MediaError::NoEncoder("h264"))?
        } else if usable(&config.encoder) {
            config.encoder.clone()
        } else {
            return Err(MediaError::EncoderUnavailable(config.encoder.clone()));
        };
        let audio = AAC_CANDIDATES
            .iter()
            .find(|name| usable(name))
            .map(|s| s.to_string())
            .ok_or(MediaError::NoEncoder("aac"))?;
        tracing::info!(video = %video, audio = %audio, requested = %config.encoder, "encoders chosen");
        Ok(Self {
            video,
            audio,
            preset: config.x264_preset.clone(),
            quality: config.quality,
            audio_bitrate: config.audio_bitrate,
        })
    }

    /// A configured H.264 encoder for `fps` frames per second (keyframe every two seconds).
    pub fn video_encoder(&self, fps: f64) -> Result<gst::Element, MediaError> {
        let enc = make(&self.video)?;
        let gop = (fps * 2.0).round().max(1.0) as u32;
        match self.video.as_str() {
            "x264enc" => {
                enc.set_property_from_str("speed-preset", &self.preset);
                enc.set_property_from_str("pass", "qual");
                enc.set_property("quantizer", self.quality);
                enc.set_property("key-int-max", gop);
                // Without this x264enc caps "constant quality" at its default 2048 kbit/s bitrate.
                enc.set_property("vbv-buf-capacity", 0u32);
                // GStreamer 1.22's mp4mux writes no edit list for the B-frame reorder delay, so
                // with B-frames every clip's picture starts two frames late against its sound.
                enc.set_property("bframes", 0u32);
            }
            "nvh264enc" => {
                enc.set_property_from_str("rc-mode", "constqp");
                enc.set_property("qp-const", self.quality as i32);
                enc.set_property("gop-size", gop as i32);
            }
            "vah264enc" => {
                enc.set_property_from_str("rate-control", "cqp");
                enc.set_property("qpi", self.quality);
                enc.set_property("key-int-max", gop);
            }
            "vaapih264enc" => {
                enc.set_property_from_str("rate-control", "cqp");
                enc.set_property("init-qp", self.quality as i32);
                enc.set_property("keyframe-period", gop);
            }
            _ => {}
        }
        Ok(enc)
    }

    pub fn audio_encoder(&self) -> Result<gst::Element, MediaError> {
        let enc = make(&self.audio)?;
        if enc.has_property("bitrate") {
            enc.set_property_from_str("bitrate", &self.audio_bitrate.to_string());
        }
        Ok(enc)
    }
}

/// Whether `name` exists and its element can reach READY on this machine.
pub(super) fn usable(name: &str) -> bool {
    let Some(factory) = gst::ElementFactory::find(name) else { return false };
    let Ok(element) = factory.create().build() else { return false };
    let ok = element.set_state(gst::State::Ready).is_ok();
    let _ = element.set_state(gst::State::Null);
    ok
}
