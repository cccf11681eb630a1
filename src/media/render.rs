//! Rendering one clip: decode only its range, frame it (crop path, fit or original), scale, burn
//! captions with the spoken word highlighted, encode, mux into a faststart MP4, and write SRT and
//! VTT sidecars.
//!
//! Threads: the decoder runs in the source pipeline; the output pipeline has a queue before the
//! caption overlay and before the encoder, so framing, overlay and encoding run side by side.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::pipeline::{Control, Pipeline, Position, drive, link_chain, make};
use super::source::{self, Branch, Seek, SourceSpec};
use super::{MediaEngine, MediaError, PartFile, TimeRange, cut, probe};
use crate::edit::captions::{self, Cue};
use crate::edit::{CaptionStyle, ClipEdit, CropPath, Mode, Rect, Size};

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
    /// Whether the clip was stream-copied rather than re-encoded.
    pub copied: bool,
}

pub(crate) fn render_blocking(engine: &MediaEngine, req: &RenderRequest, ctl: &Control) -> Result<RenderOutput, MediaError> {
    let info = probe::probe_blocking(&req.input)?;
    let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
    info.audio.as_ref().ok_or(MediaError::NoAudio)?;
    let clip = &req.clip;
    let range = TimeRange::new(clip.start, clip.end).validate(info.duration)?;
    let frame = video.display_size();
    let style = &clip.captions;
    let cues = if style.enabled { captions::layout(&clip.words, range.start, range.end, style) } else { vec![] };

    if clip.mode == Mode::Original && cues.is_empty() && cut::copyable(&info) {
        let cut = cut::cut_blocking(&req.input, range, &req.out, ctl)?;
        return Ok(RenderOutput {
            file: req.out.clone(),
            srt: None,
            vtt: None,
            start: cut.start,
            end: cut.end,
            width: frame.0,
            height: frame.1,
            copied: true,
        });
    }

    let size = match clip.mode {
        Mode::Original => Size { width: frame.0 & !1, height: frame.1 & !1 },
        _ => clip.size.unwrap_or(req.default_size),
    };
    let part = PartFile::new(&req.out);
    let moov = format!("{}.moov", part.path().display());
    let output = Pipeline::new("render-output");
    let threads = crate::config::media_threads(&engine.config);

    // Video: appsrc ! queue ! framing ! [overlay] ! queue ! encoder ! h264parse ! mux
    let vsrc = app_src("video-in", 4);
    let vqueue = make("queue")?;
    output.add_many(&[vsrc.upcast_ref(), &vqueue])?;
    link_chain(&[vsrc.upcast_ref(), &vqueue])?;
    let framed = match clip.mode {
        Mode::Fit => fit_framing(&output, &vqueue, frame, size, threads)?,
        Mode::Track | Mode::Original => scale_framing(&output, &vqueue, size, threads)?,
    };
    let overlay_out = if cues.is_empty() { framed } else { caption_overlay(&output, &framed, cues.clone(), range.start, style, size)? };
    let enc_queue = make("queue")?;
    let encoder = engine.encoders.video_encoder(video.fps)?;
    let parse = make("h264parse")?;
    let mux = make("mp4mux")?;
    mux.set_property("faststart", true);
    mux.set_property("faststart-file", &moov);
    let filesink = make("filesink")?;
    filesink.set_property("location", part.path().to_string_lossy().to_string());
    output.add_many(&[&enc_queue, &encoder, &parse, &mux, &filesink])?;
    link_chain(&[&overlay_out, &enc_queue, &encoder, &parse, &mux, &filesink])?;

    // Audio: appsrc ! audioconvert ! audioresample ! aac ! queue ! mux
    let asrc = app_src("audio-in", 64);
    let aconv = make("audioconvert")?;
    let aresample = make("audioresample")?;
    let aenc = engine.encoders.audio_encoder()?;
    let aqueue = make("queue")?;
    output.add_many(&[asrc.upcast_ref(), &aconv, &aresample, &aenc, &aqueue])?;
    link_chain(&[asrc.upcast_ref(), &aconv, &aresample, &aenc, &aqueue, &mux])?;
    output.set_state(gst::State::Playing)?;

    let flip = make("videoflip")?;
    flip.set_property_from_str("video-direction", "auto");
    let i420 = make("capsfilter")?;
    i420.set_property("caps", gst::Caps::builder("video/x-raw").field("format", "I420").build());
    let decode = vec![make("videoconvert")?, flip, make("videoconvert")?, i420];
    let video = match clip.mode {
        Mode::Fit => forward(vsrc, decode),
        Mode::Track | Mode::Original => {
            cropping_forward(vsrc, decode, CropPath::new(&clip.crop_path, frame, size.width as f64 / size.height as f64))
        }
    };
    let position = Position::default();
    let spec = SourceSpec {
        path: &req.input,
        range,
        seek: Seek::Accurate,
        parse_only: false,
        video: Some(video),
        audio: Some(forward(asrc, vec![])),
    };
    let source = source::start(spec, ctl, &position)?;
    let result = drive(&[&source, &output], ctl, &position, range.span_ns());
    // Output first: stopping it flushes the app sources, which releases a source thread blocked
    // pushing into a full one; stopping the source first would wait for that push.
    drop(output);
    drop(source);
    let _ = std::fs::remove_file(&moov);
    result?;
    part.commit(&req.out)?;

    let (srt, vtt) = if cues.is_empty() { (None, None) } else { write_sidecars(&req.out, &cues, range.start)? };
    Ok(RenderOutput {
        file: req.out.clone(),
        srt,
        vtt,
        start: range.start,
        end: range.end,
        width: size.width,
        height: size.height,
        copied: false,
    })
}

fn app_src(name: &str, max_buffers: u64) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder().name(name).format(gst::Format::Time).block(true).max_buffers(max_buffers).build();
    // Samples carry the source's segment, so downstream sees source timestamps.
    src.set_property("handle-segment-change", true);
    src
}

/// A decoding branch that pushes every sample, with its segment, into `appsrc`.
fn forward(appsrc: gst_app::AppSrc, elements: Vec<gst::Element>) -> Branch {
    let eos_src = appsrc.clone();
    Branch {
        elements,
        on_sample: Box::new(move |sample| appsrc.push_sample(&sample)),
        on_eos: Box::new(move || {
            let _ = eos_src.end_of_stream();
        }),
    }
}

/// The window is cut out in the hand-over (`cropping_forward`), so here it is only scaled.
fn scale_framing(output: &Pipeline, upstream: &gst::Element, size: Size, threads: u32) -> Result<gst::Element, MediaError> {
    let scale = scaler(threads)?;
    let caps = size_caps(size)?;
    output.add_many(&[&scale, &caps])?;
    link_chain(&[upstream, &scale, &caps])?;
    Ok(caps)
}

/// A decoding branch that cuts each frame's crop window out as it crosses to the output pipeline:
/// one plane copy per frame into a buffer of the window's size. The window can move on every
/// frame without renegotiating anything downstream (a moving `videocrop` reconfigures its source
/// pad, and with it the scaler's buffer pool, whenever its window changes).
fn cropping_forward(appsrc: gst_app::AppSrc, elements: Vec<gst::Element>, path: CropPath) -> Branch {
    let eos_src = appsrc.clone();
    let mut caps_cache: Option<((u32, u32), gst::Caps)> = None;
    Branch {
        elements,
        on_sample: Box::new(move |sample| {
            let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
            let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
            let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
            // Source pipeline buffers carry source timestamps (the seek segment), so PTS is the
            // source time the crop path is keyed on.
            let t = buffer.pts().map_or(0.0, |p| p.nseconds() as f64 / 1e9);
            let rect = path.window_at(t);
            let out_caps = match &caps_cache {
                Some((size, c)) if *size == (rect.w, rect.h) => c.clone(),
                _ => {
                    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, rect.w, rect.h)
                        .fps(info.fps())
                        .par(gst::Fraction::new(1, 1))
                        .build()
                        .map_err(|_| gst::FlowError::NotNegotiated)?;
                    let c = out_info.to_caps().map_err(|_| gst::FlowError::NotNegotiated)?;
                    caps_cache = Some(((rect.w, rect.h), c.clone()));
                    c
                }
            };
            let out_info = gst_video::VideoInfo::from_caps(&out_caps).map_err(|_| gst::FlowError::NotNegotiated)?;
            let mut out = gst::Buffer::with_size(out_info.size()).map_err(|_| gst::FlowError::Error)?;
            {
                let out_ref = out.get_mut().expect("a new buffer is writable");
                out_ref.set_pts(buffer.pts());
                out_ref.set_duration(buffer.duration());
                let src = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| gst::FlowError::Error)?;
                let mut dst = gst_video::VideoFrameRef::from_buffer_ref_writable(out_ref, &out_info).map_err(|_| gst::FlowError::Error)?;
                copy_window(&src, &mut dst, rect).map_err(|_| gst::FlowError::Error)?;
            }
            let mut builder = gst::Sample::builder().buffer(&out).caps(&out_caps);
            if let Some(segment) = sample.segment() {
                builder = builder.segment(segment);
            }
            appsrc.push_sample(&builder.build())
        }),
        on_eos: Box::new(move || {
            let _ = eos_src.end_of_stream();
        }),
    }
}

/// Copies the `rect` window of an I420 frame into `dst` (which has the window's size).
fn copy_window(
    src: &gst_video::VideoFrameRef<&gst::BufferRef>,
    dst: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    rect: Rect,
) -> Result<(), gst::glib::BoolError> {
    for plane in 0..3u32 {
        let shift = if plane == 0 { 0 } else { 1 };
        let (x, y) = ((rect.x >> shift) as usize, (rect.y >> shift) as usize);
        let (w, h) = ((rect.w >> shift) as usize, (rect.h >> shift) as usize);
        let src_stride = src.plane_stride()[plane as usize] as usize;
        let dst_stride = dst.plane_stride()[plane as usize] as usize;
        let from = src.plane_data(plane)?;
        let to = dst.plane_data_mut(plane)?;
        for row in 0..h {
            let s = (y + row) * src_stride + x;
            to[row * dst_stride..row * dst_stride + w].copy_from_slice(&from[s..s + w]);
        }
    }
    Ok(())
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
    let link = |from: &gst::Element, to: &gst::Pad| {
        from.static_pad("src").expect("capsfilter has a src pad").link(to).map(|_| ()).map_err(|e| MediaError::Build(format!("{e:?}")))
    };
    link(&bg_caps, &bg_pad)?;
    link(&fg_caps, &fg_pad)?;

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

/// Source seconds of a buffer: the clip start plus its running time. Aggregators (the fit
/// compositor) restart timestamps at zero, so the raw PTS is not comparable downstream of them.
fn source_time(pad: &gst::Pad, pts: gst::ClockTime, clip_start: f64) -> Option<f64> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?.clone();
    let running = segment.to_running_time(pts)?;
    Some(clip_start + running.nseconds() as f64 / 1e9)
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

/// `textoverlay` whose text is set per frame from the cues: the current cue, current word
/// highlighted, drawn as the style's look says (outlined, or on a shaded box).
fn caption_overlay(
    output: &Pipeline,
    upstream: &gst::Element,
    cues: Vec<Cue>,
    clip_start: f64,
    style: &CaptionStyle,
    size: Size,
) -> Result<gst::Element, MediaError> {
    let look = style.look();
    let queue = make("queue")?;
    let overlay = make("textoverlay")?;
    // Pango sizes are points at 72 dpi here, so points equal pixels of the output.
    let px = (look.size * size.width as f64).round().max(8.0);
    overlay.set_property("font-desc", format!("{} {px}px", look.font));
    overlay.set_property("auto-resize", false);
    overlay.set_property_from_str("wrap-mode", "none");
    overlay.set_property_from_str("halignment", "center");
    overlay.set_property_from_str("line-alignment", "center");
    overlay.set_property_from_str("valignment", "position");
    overlay.set_property("ypos", look.position.clamp(0.05, 0.95));
    overlay.set_property("color", argb(&look.color));
    overlay.set_property("outline-color", argb(&look.outline));
    // The box is the text's own extent darkened; an outline or shadow on it only blurs the letters.
    overlay.set_property("shaded-background", look.boxed);
    overlay.set_property("shading-value", BOX_SHADING);
    overlay.set_property("draw-outline", !look.boxed);
    overlay.set_property("draw-shadow", !look.boxed);
    overlay.set_property("text", "");
    output.add_many(&[&queue, &overlay])?;
    link_chain(&[upstream, &queue, &overlay])?;

    let highlight = look.highlight;
    let element = overlay.clone();
    let last = Mutex::new(String::new());
    let cues = Arc::new(cues);
    overlay.static_pad("video_sink").expect("textoverlay has a video pad").add_probe(
        gst::PadProbeType::BUFFER,
        move |pad, info| {
            let Some(t) = info.buffer().and_then(|b| b.pts()).and_then(|pts| source_time(pad, pts, clip_start)) else {
                return gst::PadProbeReturn::Ok;
            };
            let text = captions::cue_at(&cues, t).map(|c| c.markup_at(t, &highlight)).unwrap_or_default();
            let mut last = last.lock().expect("caption lock");
            if *last != text {
                element.set_property("text", &text);
                *last = text;
            }
            gst::PadProbeReturn::Ok
        },
    );
    Ok(overlay)
}

/// How much the `boxed` preset darkens the box under the text (textoverlay's 1..=255 scale:
/// luma is lowered by this much), so white text reads on any frame and the frame shows through.
const BOX_SHADING: u32 = 160;

/// `#RRGGBB` to textoverlay's big-endian ARGB; white when unparsable (validated earlier).
fn argb(hex: &str) -> u32 {
    u32::from_str_radix(hex.trim_start_matches('#'), 16).map(|rgb| 0xFF00_0000 | rgb).unwrap_or(0xFFFF_FFFF)
}

fn write_sidecars(out: &Path, cues: &[Cue], offset: f64) -> Result<(Option<PathBuf>, Option<PathBuf>), MediaError> {
    let srt = out.with_extension("srt");
    let vtt = out.with_extension("vtt");
    std::fs::write(&srt, captions::to_srt(cues, offset)).map_err(|e| MediaError::io(&srt, e))?;
    std::fs::write(&vtt, captions::to_vtt(cues, offset)).map_err(|e| MediaError::io(&vtt, e))?;
    Ok((Some(srt), Some(vtt)))
}
