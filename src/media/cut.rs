//! Stream copy: a range of the input into an MP4 without re-encoding ("stream copy first").
//!
//! Copy can only start on a keyframe, so the cut starts at the keyframe at or before the requested
//! start; the range actually written is returned. Audio, when the input has any, is cut on the
//! same timeline, so the two stay in sync; an input without audio makes a video-only MP4.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::mp4_out::{Mp4Sink, app_src, forward};
use super::pipeline::{Control, Pipeline, Position, link_chain, make};
use super::source::{self, Seek, SourceSpec};
use super::{MediaError, TimeRange, probe};

/// Codecs MP4 carries that we copy as they are. Not VP9: GStreamer 1.22's mp4mux crashes on
/// parsed VP9 (and refuses it unparsed), so VP9 clips are re-encoded.
pub(crate) const COPYABLE_VIDEO: &[&str] = &["video/x-h264", "video/x-h265", "video/x-av1"];
pub(crate) const COPYABLE_AUDIO: &[&str] = &["audio/mpeg", "audio/x-ac3", "audio/x-opus"];

/// The parser that puts a stream into the form mp4mux takes (MPEG-TS carries H.264 and HEVC as
/// byte-stream and AAC as ADTS; MP4 wants length-prefixed NAL units and raw AAC).
fn parser_for(mime: &str, codec: &str) -> Option<&'static str> {
    Some(match mime {
        "video/x-h264" => "h264parse",
        "video/x-h265" => "h265parse",
        "video/x-av1" => "av1parse",
        "audio/mpeg" if codec.contains("AAC") => "aacparse",
        "audio/mpeg" => "mpegaudioparse",
        "audio/x-ac3" => "ac3parse",
        _ => return None,
    })
}

/// The range that was written, in source seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CutOutput {
    pub start: f64,
    pub end: f64,
}

/// Whether the input's codecs can be copied into MP4 as they are (no audio at all is fine).
pub(crate) fn copyable(info: &super::MediaInfo) -> bool {
    info.video.as_ref().is_some_and(|v| COPYABLE_VIDEO.contains(&v.mime.as_str()))
        && info.audio.as_ref().is_none_or(|a| COPYABLE_AUDIO.contains(&a.mime.as_str()))
}

pub(crate) fn cut_blocking(input: &Path, range: TimeRange, out: &Path, ctl: &Control) -> Result<CutOutput, MediaError> {
    let info = probe::probe_blocking(input)?;
    let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
    if !copyable(&info) {
        let audio = info.audio.as_ref().map_or("no audio", |a| a.codec.as_str());
        return Err(MediaError::CopyUnsupported(format!("{} + {audio}", video.codec)));
    }
    let range = range.validate(info.readable_seconds())?;

    let output = Pipeline::new("cut-output");
    let sink = Mp4Sink::add(&output, out)?;
    let vsrc = copy_input(&output, &sink.mux, "video", parser_for(&video.mime, &video.codec))?;
    let asrc = info.audio.as_ref().map(|a| copy_input(&output, &sink.mux, "audio", parser_for(&a.mime, &a.codec))).transpose()?;
    output.set_state(gst::State::Playing)?;

    // The span of the video packets copied: where the cut really starts and ends.
    let span = Arc::new(Mutex::new((f64::MAX, 0.0f64)));
    let seen = span.clone();
    let video_branch = forward(vsrc, vec![], move |sample| {
        if let Some(buffer) = sample.buffer()
            && let Some(pts) = buffer.pts()
        {
            let t = pts.nseconds() as f64 / 1e9;
            let d = buffer.duration().map(|d| d.nseconds() as f64 / 1e9).unwrap_or(0.0);
            let mut s = seen.lock().map_err(|_| gst::FlowError::Error)?;
            *s = (s.0.min(t), s.1.max(t + d));
        }
        Ok(())
    });
    let audio_branch = asrc.map(|a| forward(a, vec![], |_| Ok(())));
    let position = Position::default();
    let spec = SourceSpec {
        path: input,
        range,
        seek: Seek::KeyframeBefore,
        parse_only: true,
        sparse: false,
        video: Some(video_branch),
        audio: audio_branch,
    };
    let source = source::start(spec, ctl, &position)?;
    sink.run(source, output, ctl, &position, range, out)?;
    let (start, end) = *span.lock().expect("span lock");
    Ok(CutOutput { start: if start == f64::MAX { range.start } else { start }, end: end.max(start) })
}

/// An `appsrc ! queue [! parser]` feeding a request pad of the muxer.
fn copy_input(output: &Pipeline, mux: &gst::Element, kind: &str, parser: Option<&str>) -> Result<gst_app::AppSrc, MediaError> {
    let src = app_src(&format!("{kind}-in"), 64);
    let mut chain = vec![src.clone().upcast::<gst::Element>(), make("queue")?];
    if let Some(parser) = parser {
        chain.push(make(parser)?);
    }
    output.add_many(&chain.iter().collect::<Vec<_>>())?;
    link_chain(&chain.iter().collect::<Vec<_>>())?;
    let last = chain.last().expect("a queue at least");
    let pad = mux
        .request_pad_simple(&format!("{kind}_%u"))
        .ok_or_else(|| MediaError::Build(format!("mp4mux has no {kind} pad")))?;
    last.static_pad("src")
        .expect("queue and parsers have a src pad")
        .link(&pad)
        .map_err(|e| MediaError::Build(format!("cannot link {kind} to mp4mux: {e:?}")))?;
    Ok(src)
}
