//! Rendering one clip: decode only its range (dropping frames above `media.max_fps`), frame it
//! (crop path, two stacked crop paths in split, fit or original), scale, burn captions with the
//! spoken word highlighted, encode, mux into a faststart MP4 (video only when the source has no
//! audio), and write SRT and VTT sidecars (`overlay.rs`: the captions).
//!
//! Threads: the decoder runs in the source pipeline; the output pipeline has a queue before the
//! caption overlay and before the encoder, so framing, overlay and encoding run side by side (in
//! split mode each panel's scaler has its own queue too).

mod overlay;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::mp4_out::{Mp4Sink, app_src, forward};
use super::pipeline::{Control, Pipeline, Position, link_chain, make};
use super::source::{self, Branch, Seek, SourceSpec};
use super::{MediaEngine, MediaError, TimeRange, crop, cut, probe};
use crate::edit::{ClipEdit, CropPath, Half, Mode, Size, captions};
use overlay::{caption_overlay, overlay_style, write_sidecars};

/// One clip to render.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub input: PathBuf,
    pub clip: ClipEdit,
    /// Output size when the clip does not set one.
    pub default_size: Size,
    /// The MP4 to write; sidecars go beside it with `.srt` and `.vtt` extensions.
    pub out: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RenderOutput {
    pub file: PathBuf,
    pub srt: Option<PathBuf>,
    pub vtt: Option<PathBuf>,
    /// The range actually rendered, in source seconds (a stream copy starts on a keyframe).
    pub start: f64,
    pub end: f64,
    pub width: u32,
    pub height: u32,
    /// The video decoder the render used (`avdec_h264`, `nvh264dec`…); `None` when the clip
    /// was stream-copied rather than re-encoded.
    pub decoder: Option<String>,
}

impl RenderOutput {
    /// Whether the clip was stream-copied rather than re-encoded.
    pub fn copied(&self) -> bool {
        self.decoder.is_none()
    }
}

pub(crate) fn render_blocking(engine: &MediaEngine, req: &RenderRequest, ctl: &Control) -> Result<RenderOutput, MediaError> {
    let info = probe::probe_blocking(&req.input)?;
    let (rendered, silent) = render_with(engine, req, ctl, &info, info.audio.is_some())?;
    if silent {
        // The source's sound ends before the clip starts (its picture goes on): the muxer got no
        // sample for its audio track and wrote a file no player opens. Rendered again, picture only.
        tracing::warn!(input = %req.input.display(), start = req.clip.start, "no sound in the clip's range; rendered without audio");
        return Ok(render_with(engine, req, ctl, &info, false)?.0);
    }
    Ok(rendered)
}

/// Renders the clip, with an audio track when `audio`; says whether that track got no sample.
fn render_with(engine: &MediaEngine, req: &RenderRequest, ctl: &Control, info: &super::MediaInfo, audio: bool) -> Result<(RenderOutput, bool), MediaError> {
    let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
    let clip = &req.clip;
    let range = TimeRange::new(clip.start, clip.end).validate(info.readable_seconds())?;
    let frame = video.display_size();
    let style = &clip.captions;
    let cues = if style.enabled { captions::layout(&clip.words, range.start, range.end, style) } else { vec![] };

    if clip.mode == Mode::Original && cues.is_empty() && cut::copyable(info) {
        let cut = cut::cut_blocking(&req.input, range, &req.out, ctl)?;
        let rendered = RenderOutput {
            file: req.out.clone(),
            srt: None,
            vtt: None,
            start: cut.start,
            end: cut.end,
            width: frame.0,
            height: frame.1,
            decoder: None,
        };
        return Ok((rendered, false));
    }

    let size = match clip.mode {
        Mode::Original => Size { width: frame.0 & !1, height: frame.1 & !1 },
        _ => clip.size.unwrap_or(req.default_size),
    };
    let output = Pipeline::new("render-output");
    let threads = crate::config::media_threads(&engine.config);

    // Video: appsrc(s) ! queue ! framing ! [overlay] ! queue ! encoder ! h264parse ! mux
    let (video_in, framed) = framing(&output, clip.mode, frame, size, threads)?;
    let overlay_out =
        if cues.is_empty() { framed } else { caption_overlay(&output, &framed, cues.clone(), range.start, &overlay_style(clip), size)? };
    let enc_queue = make("queue")?;
    // A faster source is brought down to the ceiling (0: none).
    let max_fps = Some(engine.config.max_fps).filter(|&max| max > 0 && video.fps > f64::from(max) + 0.5);
    let encoder = engine.encoders.video_encoder(max_fps.map_or(video.fps, f64::from))?;
    let parse = make("h264parse")?;
    let sink = Mp4Sink::add(&output, &req.out)?;
    output.add_many(&[&enc_queue, &encoder, &parse])?;
    link_chain(&[&overlay_out, &enc_queue, &encoder, &parse, &sink.mux])?;
    // A source without audio (b-roll, a screen recording) makes a video-only clip.
    let asrc = audio.then(|| audio_input(&output, engine, &sink.mux)).transpose()?;
    let heard = Arc::new(AtomicBool::new(false));
    output.set_state(gst::State::Playing)?;

    let position = Position::default();
    let spec = SourceSpec {
        path: &req.input,
        range,
        seek: Seek::Accurate,
        parse_only: false,
        sparse: false,
        video: Some(video_branch(video_in, clip, video, size, max_fps)?),
        audio: asrc.map(|a| {
            let heard = heard.clone();
            forward(a, vec![], move |_| {
                heard.store(true, Ordering::Relaxed);
                Ok(())
            })
        }),
    };
    let source = source::start(spec, ctl, &position)?;
    let decoder = super::decoder::video_decoder(source.bin());
    sink.run(source, output, ctl, &position, range, &req.out)?;

    let silent = audio && !heard.load(Ordering::Relaxed);
    let (srt, vtt) = if cues.is_empty() { (None, None) } else { write_sidecars(&req.out, &cues, range.start)? };
    let rendered = RenderOutput {
        file: req.out.clone(),
        srt,
        vtt,
        start: range.start,
        end: range.end,
        width: size.width,
        height: size.height,
        decoder,
    };
    Ok((rendered, silent))
}


/// Where decoded frames enter the output pipeline.
enum VideoIn {
    /// Whole frames (fit).
    Whole(gst_app::AppSrc),
    /// One crop window per frame (track, original).
    Window(gst_app::AppSrc),
    /// Two windows per frame, the top and bottom panels' (split).
    Panels([gst_app::AppSrc; 2]),
}

/// The output pipeline's framing for `mode`: where frames enter it, and the element the framed
/// picture, at the output size, leaves from.
fn framing(output: &Pipeline, mode: Mode, frame: (u32, u32), size: Size, threads: u32) -> Result<(VideoIn, gst::Element), MediaError> {
    if mode == Mode::Split {
        let srcs = [app_src("video-top", 4), app_src("video-bottom", 4)];
        let framed = split_framing(output, &srcs, size, threads)?;
        return Ok((VideoIn::Panels(srcs), framed));
    }
    let vsrc = app_src("video-in", 4);
    let queue = queued(output, &vsrc)?;
    Ok(match mode {
        Mode::Fit => (VideoIn::Whole(vsrc), fit_framing(output, &queue, frame, size, threads)?),
        _ => (VideoIn::Window(vsrc), scale_framing(output, &queue, size, threads)?),
    })
}

/// `appsrc ! queue`, added to `output`; returns the queue.
fn queued(output: &Pipeline, src: &gst_app::AppSrc) -> Result<gst::Element, MediaError> {
    let queue = make("queue")?;
    output.add_many(&[src.upcast_ref(), &queue])?;
    link_chain(&[src.upcast_ref(), &queue])?;
    Ok(queue)
}

/// The source pipeline's video branch: decoded frames (brought down to `max_fps` a second if
/// given, dropped before any conversion), upright and in I420, handed over whole (fit), cut to the
/// crop window (track, original) or to both panels' windows (split). Only a rotated source gets a
/// `videoflip`: one that has nothing to turn still copies every frame.
fn video_branch(input: VideoIn, clip: &ClipEdit, video: &super::VideoInfo, size: Size, max_fps: Option<u32>) -> Result<Branch, MediaError> {
    let frame = video.display_size();
    let mut decode = vec![];
    if let Some(max) = max_fps {
        let rate = make("videorate")?;
        rate.set_property("drop-only", true);
        rate.set_property("max-rate", max as i32);
        decode.push(rate);
    }
    decode.push(make("videoconvert")?);
    if video.rotation != 0 {
        let flip = make("videoflip")?;
        flip.set_property_from_str("video-direction", "auto");
        decode.extend([flip, make("videoconvert")?]);
    }
    let i420 = make("capsfilter")?;
    i420.set_property("caps", gst::Caps::builder("video/x-raw").field("format", "I420").build());
    decode.push(i420);
    let aspect = |s: Size| s.width as f64 / s.height as f64;
    Ok(match input {
        VideoIn::Whole(src) => forward(src, decode, |_| Ok(())),
        VideoIn::Window(src) => crop::cropping_forward(src, decode, CropPath::new(&clip.crop_path, frame, aspect(size))),
        VideoIn::Panels(srcs) => {
            let panel = aspect(panel_size(size));
            let top = CropPath::in_half(&clip.crop_path, frame, panel, Half::Left);
            let bottom = CropPath::in_half(&clip.crop_path_bottom, frame, panel, Half::Right);
            crop::split_forward(srcs, decode, [top, bottom])
        }
    })
}

/// `appsrc ! audioconvert ! audioresample ! aac ! queue`, into the muxer.
fn audio_input(output: &Pipeline, engine: &MediaEngine, mux: &gst::Element) -> Result<gst_app::AppSrc, MediaError> {
    let asrc = app_src("audio-in", 64);
    let aconv = make("audioconvert")?;
    let aresample = make("audioresample")?;
    let aenc = engine.encoders.audio_encoder()?;
    let aqueue = make("queue")?;
    output.add_many(&[asrc.upcast_ref(), &aconv, &aresample, &aenc, &aqueue])?;
    link_chain(&[asrc.upcast_ref(), &aconv, &aresample, &aenc, &aqueue, mux])?;
    Ok(asrc)
}

/// The window is cut out in the hand-over (`crop::cropping_forward`), so here it is only scaled.
fn scale_framing(output: &Pipeline, upstream: &gst::Element, size: Size, threads: u32) -> Result<gst::Element, MediaError> {
    let scale = scaler(threads)?;
    let caps = size_caps(size)?;
    output.add_many(&[&scale, &caps])?;
    link_chain(&[upstream, &scale, &caps])?;
    Ok(caps)
}

/// The black line between split panels, at least this many output pixels high.
const SEAM_PX: u32 = 4;

/// One split panel: the output's width, half its height less the seam, even for 4:2:0 chroma.
fn panel_size(size: Size) -> Size {
    Size { width: size.width, height: (size.height.saturating_sub(SEAM_PX) / 2) & !1 }
}

/// Split mode: each panel's window (cut out in the hand-over, `split_forward`) scaled to a panel,
/// the two stacked by a compositor over black, which shows as the seam between them. Each panel
/// has its own queue, so the two scale on two threads.
fn split_framing(output: &Pipeline, [top, bottom]: &[gst_app::AppSrc; 2], size: Size, threads: u32) -> Result<gst::Element, MediaError> {
    let compositor = make("compositor")?;
    compositor.set_property_from_str("background", "black");
    output.add_many(&[&compositor])?;
    let panel = panel_size(size);
    for (src, ypos) in [(top, 0), (bottom, size.height - panel.height)] {
        let queue = queued(output, src)?;
        let scaled = scale_framing(output, &queue, panel, threads)?;
        let pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| MediaError::Build("compositor pad".into()))?;
        pad.set_property("ypos", ypos as i32);
        link_to_pad(&scaled, &pad)?;
    }
    let out_caps = size_caps(size)?;
    output.add_many(&[&out_caps])?;
    link_chain(&[&compositor, &out_caps])?;
    Ok(out_caps)
}

fn link_to_pad(from: &gst::Element, to: &gst::Pad) -> Result<(), MediaError> {
    let src = from.static_pad("src").ok_or_else(|| MediaError::Build(format!("{} has no src pad", from.name())))?;
    src.link(to).map(|_| ()).map_err(|e| MediaError::Build(format!("cannot link {} to {}: {e:?}", from.name(), to.name())))
}

/// The whole frame scaled to the output width, centred over a blurred, darkened, zoomed copy.
fn fit_framing(
    output: &Pipeline,
    upstream: &gst::Element,
    (fw, fh): (u32, u32),
    size: Size,
    threads: u32,
) -> Result<gst::Element, MediaError> {
    let tee = make("tee")?;
    let compositor = make("compositor")?;
    output.add_many(&[&tee, &compositor])?;
    link_chain(&[upstream, &tee])?;

    // Background: crop to the output aspect, shrink hard, darken, grow back (a cheap wide blur).
    let aspect = size.width as f64 / size.height as f64;
    let bg_rect = CropPath::new(&[], (fw, fh), aspect).window_at(0.0);
    let bg_queue = make("queue")?;
    let bg_crop = make("videocrop")?;
    bg_crop.set_property("left", bg_rect.x as i32);
    bg_crop.set_property("right", (fw - bg_rect.x - bg_rect.w) as i32);
    bg_crop.set_property("top", bg_rect.y as i32);
    bg_crop.set_property("bottom", (fh - bg_rect.y - bg_rect.h) as i32);
    let shrink = scaler(threads)?;
    let small = size_caps(Size { width: (size.width / 24).max(2) & !1, height: (size.height / 24).max(2) & !1 })?;
    let darken = make("videobalance")?;
    darken.set_property("brightness", -0.2f64);
    let grow = scaler(threads)?;
    let bg_caps = size_caps(size)?;
    output.add_many(&[&bg_queue, &bg_crop, &shrink, &small, &darken, &grow, &bg_caps])?;
    link_chain(&[&tee, &bg_queue, &bg_crop, &shrink, &small, &darken, &grow, &bg_caps])?;

    // Foreground: the whole frame at the output width, centred vertically.
    let fg_h = ((size.width as f64 * fh as f64 / fw as f64).round() as u32).min(size.height) & !1;
    let fg_w = ((fg_h as f64 * fw as f64 / fh as f64).round() as u32).min(size.width) & !1;
    let fg_queue = make("queue")?;
    let fg_scale = scaler(threads)?;
    let fg_caps = size_caps(Size { width: fg_w, height: fg_h })?;
    output.add_many(&[&fg_queue, &fg_scale, &fg_caps])?;
    link_chain(&[&tee, &fg_queue, &fg_scale, &fg_caps])?;

    let bg_pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| MediaError::Build("compositor pad".into()))?;
    let fg_pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| MediaError::Build("compositor pad".into()))?;
    bg_pad.set_property("zorder", 0u32);
    fg_pad.set_property("zorder", 1u32);
    fg_pad.set_property("xpos", ((size.width - fg_w) / 2) as i32);
    fg_pad.set_property("ypos", ((size.height - fg_h) / 2) as i32);
    link_to_pad(&bg_caps, &bg_pad)?;
    link_to_pad(&fg_caps, &fg_pad)?;

    let convert = make("videoconvert")?;
    let out_caps = size_caps(size)?;
    output.add_many(&[&convert, &out_caps])?;
    link_chain(&[&compositor, &convert, &out_caps])?;
    Ok(out_caps)
}

/// A scaler that stretches to the caps it is given: windows are already at the output aspect,
/// and black bars from rounding would show.
fn scaler(threads: u32) -> Result<gst::Element, MediaError> {
    let scale = make("videoscale")?;
    scale.set_property("n-threads", threads);
    scale.set_property("add-borders", false);
    Ok(scale)
}

fn size_caps(size: Size) -> Result<gst::Element, MediaError> {
    let caps = make("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", size.width as i32)
            .field("height", size.height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    Ok(caps)
}
