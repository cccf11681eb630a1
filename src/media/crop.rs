//! Cutting crop windows out of decoded frames as they cross from the source pipeline to the output
//! pipeline: one plane copy per window into a buffer of the window's size.
//!
//! The window can move on every frame without renegotiating anything downstream (a moving
//! `videocrop` reconfigures its source pad, and with it the scaler's buffer pool, whenever its
//! window changes). Split mode cuts two windows from each frame, one per panel.

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::source::Branch;
use crate::edit::{CropPath, Rect};

/// A decoding branch that pushes each frame's crop window into `appsrc`.
pub(crate) fn cropping_forward(appsrc: gst_app::AppSrc, elements: Vec<gst::Element>, path: CropPath) -> Branch {
    let eos_src = appsrc.clone();
    let mut window = Cropper::new(path);
    Branch {
        elements,
        on_sample: Box::new(move |sample| appsrc.push_sample(&window.cut(&sample)?)),
        on_eos: Box::new(move || {
            let _ = eos_src.end_of_stream();
        }),
    }
}

/// A decoding branch that cuts two windows out of each frame, the top panel's into `top` and the
/// bottom panel's into `bottom`. Both get every frame, in the same order, so the compositor that
/// stacks them always finds a pair and neither bounded app source can starve the other.
pub(crate) fn split_forward(
    [top, bottom]: [gst_app::AppSrc; 2],
    elements: Vec<gst::Element>,
    [top_path, bottom_path]: [CropPath; 2],
) -> Branch {
    let eos = [top.clone(), bottom.clone()];
    let (mut top_window, mut bottom_window) = (Cropper::new(top_path), Cropper::new(bottom_path));
    Branch {
        elements,
        on_sample: Box::new(move |sample| {
            top.push_sample(&top_window.cut(&sample)?)?;
            bottom.push_sample(&bottom_window.cut(&sample)?)
        }),
        on_eos: Box::new(move || {
            for src in &eos {
                let _ = src.end_of_stream();
            }
        }),
    }
}

/// Cuts one crop path's windows out of I420 samples.
struct Cropper {
    path: CropPath,
    /// Caps of the last window size: the size changes only while the path zooms.
    caps: Option<((u32, u32), gst::Caps)>,
}

impl Cropper {
    fn new(path: CropPath) -> Self {
        Self { path, caps: None }
    }

    /// The window for this sample's time, as a sample of its own with the source's segment.
    fn cut(&mut self, sample: &gst::Sample) -> Result<gst::Sample, gst::FlowError> {
        let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
        let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
        // Source pipeline buffers carry source timestamps (the seek segment), so PTS is the
        // source time the crop path is keyed on.
        let t = buffer.pts().map_or(0.0, |p| p.nseconds() as f64 / 1e9);
        let rect = self.path.window_at(t);
        let out_caps = self.caps_for(rect, &info)?;
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
        Ok(builder.build())
    }

    fn caps_for(&mut self, rect: Rect, source: &gst_video::VideoInfo) -> Result<gst::Caps, gst::FlowError> {
        if let Some((size, caps)) = &self.caps
            && *size == (rect.w, rect.h)
        {
            return Ok(caps.clone());
        }
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, rect.w, rect.h)
            .fps(source.fps())
            .par(gst::Fraction::new(1, 1))
            .build()
            .map_err(|_| gst::FlowError::NotNegotiated)?;
        let caps = info.to_caps().map_err(|_| gst::FlowError::NotNegotiated)?;
        self.caps = Some(((rect.w, rect.h), caps.clone()));
        Ok(caps)
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
