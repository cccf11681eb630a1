//! Decoding a time range at a few frames per second into a raw RGB frame file: the IPC contract
//! the face detector reads.
//!
//! File layout (all integers little-endian):
//! - header, 32 bytes: magic `CMFRAME1` (8 bytes), width u32, height u32, channels u32 (always 3,
//!   RGB), fps numerator u32, fps denominator u32, reserved u32 (0);
//! - then frames until the end of the file, each: source timestamp in nanoseconds u64, then
//!   `width * height * 3` bytes of tightly packed RGB rows, top row first.
//!
//! The frame count is `(file size - 32) / (8 + width * height * 3)`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::pipeline::{Control, Position, drive, make};
use super::source::{self, Branch, Seek, SourceSpec};
use super::{MediaError, PartFile, TimeRange, probe};

pub const FRAME_MAGIC: &[u8; 8] = b"CMFRAME1";
pub const HEADER_LEN: usize = 32;

/// The header of a frame file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FramesHeader {
    pub width: u32,
    pub height: u32,
    pub fps_num: u32,
    pub fps_den: u32,
}

impl FramesHeader {
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(FRAME_MAGIC);
        for (i, v) in [self.width, self.height, 3, self.fps_num, self.fps_den, 0].into_iter().enumerate() {
            h[8 + i * 4..12 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != FRAME_MAGIC {
            return None;
        }
        let word = |i: usize| u32::from_le_bytes(bytes[8 + i * 4..12 + i * 4].try_into().expect("4 bytes"));
        (word(2) == 3).then(|| Self { width: word(0), height: word(1), fps_num: word(3), fps_den: word(4) })
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FramesOutput {
    pub header: FramesHeader,
    pub frames: u64,
    /// Ratio from frame-file pixels to source display pixels.
    pub scale: f64,
}

pub(crate) fn extract_blocking(
    input: &Path,
    range: TimeRange,
    fps: f64,
    width: u32,
    out: &Path,
    ctl: &Control,
) -> Result<FramesOutput, MediaError> {
    let info = probe::probe_blocking(input)?;
    let video = info.video.as_ref().ok_or(MediaError::NoVideo)?;
    let range = range.validate(info.readable_seconds())?;
    if !(0.1..=120.0).contains(&fps) || !(16..=7680).contains(&width) {
        return Err(MediaError::Build(format!("unsupported frame sampling: {fps} fps at width {width}")));
    }
    let (dw, dh) = video.display_size();
    let width = width.min(dw) & !1;
    let height = ((width as f64 * dh as f64 / dw as f64).round() as u32).max(2) & !1;
    let rate = gst::Fraction::approximate_f64(fps).unwrap_or_else(|| gst::Fraction::new(5, 1));
    let header = FramesHeader { width, height, fps_num: rate.numer() as u32, fps_den: rate.denom() as u32 };

    let part = PartFile::new(out);
    let file = File::create(part.path()).map_err(|e| MediaError::io(part.path(), e))?;
    let writer = Arc::new(Mutex::new((BufWriter::with_capacity(1 << 20, file), 0u64)));
    writer.lock().expect("frames lock").0.write_all(&header.encode()).map_err(|e| MediaError::io(out, e))?;

    // Frames are dropped to the sampling rate and scaled down first, right after the decoder, so
    // a 4K or 60 fps source is converted and turned only at the small size and rate. The scaler
    // works before the turn, so it aims at the stored (unturned) size.
    let rate_caps = make("capsfilter")?;
    rate_caps.set_property("caps", gst::Caps::builder("video/x-raw").field("framerate", rate).build());
    let (sw, sh) = if video.rotation % 180 == 90 { (height, width) } else { (width, height) };
    let small = make("capsfilter")?;
    small.set_property(
        "caps",
        gst::Caps::builder("video/x-raw").field("width", sw as i32).field("height", sh as i32).build(),
    );
    let flip = make("videoflip")?;
    flip.set_property_from_str("video-direction", "auto");
    // No size here: the turn (known only once the orientation tag arrives) makes it.
    let caps = make("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("framerate", rate)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let sink_writer = writer.clone();
    let branch = Branch {
        elements: vec![make("videorate")?, rate_caps, make("videoscale")?, small, make("videoconvert")?, flip, make("videoconvert")?, caps],
        on_sample: Box::new(move |sample| write_frame(&sample, &sink_writer)),
        on_eos: Box::new(|| {}),
    };
    let position = Position::default();
    let spec = SourceSpec { path: input, range, seek: Seek::Accurate, parse_only: false, sparse: true, video: Some(branch), audio: None };
    let pipeline = source::start(spec, ctl, &position)?;
    drive(&[&pipeline], ctl, &position, range.span_ns())?;
    drop(pipeline);

    let mut guard = writer.lock().expect("frames lock");
    guard.0.flush().map_err(|e| MediaError::io(part.path(), e))?;
    let frames = guard.1;
    drop(guard);
    part.commit(out).map_err(|e| MediaError::io(out, e))?;
    Ok(FramesOutput { header, frames, scale: dw as f64 / width as f64 })
}

fn write_frame(sample: &gst::Sample, writer: &Mutex<(BufWriter<File>, u64)>) -> Result<gst::FlowSuccess, gst::FlowError> {
    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| gst::FlowError::Error)?;
    let row = info.width() as usize * 3;
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
    let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);

    let mut guard = writer.lock().map_err(|_| gst::FlowError::Error)?;
    let (file, count) = &mut *guard;
    let result = (|| {
        file.write_all(&pts.to_le_bytes())?;
        for y in 0..info.height() as usize {
            file.write_all(&data[y * stride..y * stride + row])?;
        }
        std::io::Result::Ok(())
    })();
    result.map_err(|e| {
        tracing::error!(error = %e, "cannot write frame file");
        gst::FlowError::Error
    })?;
    *count += 1;
    Ok(gst::FlowSuccess::Ok)
}
