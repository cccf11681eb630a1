//! The render's captions: the overlay that burns the current cue with its spoken word
//! highlighted, the style it is drawn in, and the SRT and VTT sidecars.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::edit::captions::{self, Cue};
use crate::edit::{CaptionStyle, ClipEdit, Mode, Size};
use crate::media::MediaError;
use crate::media::pipeline::{Pipeline, link_chain, make};

/// The caption style as the overlay applies it: in split mode the block sits on the seam
/// between the panels, where it hides neither face.
pub(super) fn overlay_style(clip: &ClipEdit) -> CaptionStyle {
    let mut style = clip.captions.clone();
    if clip.mode == Mode::Split {
        style.position = Some(0.5);
    }
    style
}

/// `textoverlay` whose text is set per frame from the cues: the current cue, current word
/// highlighted, drawn as the style's look says (outlined, or on a shaded box).
pub(super) fn caption_overlay(
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

/// Writes the cues as SRT and VTT beside `out`, timed from the clip's start (`offset`).
pub(super) fn write_sidecars(out: &Path, cues: &[Cue], offset: f64) -> Result<(Option<PathBuf>, Option<PathBuf>), MediaError> {
    let srt = out.with_extension("srt");
    let vtt = out.with_extension("vtt");
    std::fs::write(&srt, captions::to_srt(cues, offset)).map_err(|e| MediaError::io(&srt, e))?;
    std::fs::write(&vtt, captions::to_vtt(cues, offset)).map_err(|e| MediaError::io(&vtt, e))?;
    Ok((Some(srt), Some(vtt)))
}

/// Source seconds of a buffer: the clip start plus its running time. Aggregators (the fit
/// compositor) restart timestamps at zero, so the raw PTS is not comparable downstream of them.
fn source_time(pad: &gst::Pad, pts: gst::ClockTime, clip_start: f64) -> Option<f64> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?.clone();
    let running = segment.to_running_time(pts)?;
    Some(clip_start + running.nseconds() as f64 / 1e9)
}
