//! The output end that a cut and a render share: app sources fed from the source pipeline, a
//! faststart `mp4mux ! filesink` writing a part file, and the run that keeps that file only when
//! the whole range made it through.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::pipeline::{Control, Pipeline, Position, drive, link_chain, make};
use super::source::{self, Branch};
use super::{MediaError, PartFile, TimeRange};

/// `mp4mux(faststart) ! filesink` into the part file of `out`, added to the output pipeline;
/// link the streams to `mux`.
pub(crate) struct Mp4Sink {
    pub mux: gst::Element,
    part: PartFile,
    /// The muxer's scratch file for the moov it moves to the front.
    moov: String,
}

impl Mp4Sink {
    pub fn add(output: &Pipeline, out: &Path) -> Result<Self, MediaError> {
        let part = PartFile::new(out);
        let moov = format!("{}.moov", part.path().display());
        let mux = make("mp4mux")?;
        mux.set_property("faststart", true);
        mux.set_property("faststart-file", &moov);
        let filesink = make("filesink")?;
        filesink.set_property("location", part.path().to_string_lossy().to_string());
        output.add_many(&[&mux, &filesink])?;
        link_chain(&[&mux, &filesink])?;
        Ok(Self { mux, part, moov })
    }

    /// Runs `source` into `output` over `range`, then stops both and renames the part file to
    /// `out` if the whole range was written; on any failure the part and moov files go.
    pub fn run(self, source: Pipeline, output: Pipeline, ctl: &Control, position: &Position, range: TimeRange, out: &Path) -> Result<(), MediaError> {
        let result = drive(&[&source, &output], ctl, position, range.span_ns());
        // Output first: stopping it flushes the app sources, which releases a source thread
        // blocked pushing into a full one; stopping the source first would wait for that push.
        drop(output);
        drop(source);
        let _ = std::fs::remove_file(&self.moov);
        result?;
        source::check_reached_end(position, range)?;
        self.part.commit(out).map_err(|e| MediaError::io(out, e))
    }
}

/// An app source in time format that blocks when `max_buffers` are queued (the backpressure
/// between the two pipelines), taking each sample's segment so downstream sees source timestamps.
pub(crate) fn app_src(name: &str, max_buffers: u64) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder().name(name).format(gst::Format::Time).block(true).max_buffers(max_buffers).build();
    src.set_property("handle-segment-change", true);
    src
}

/// A source branch (through `elements`) that pushes every sample, with its segment, into
/// `appsrc`, showing each to `inspect` first.
pub(crate) fn forward(appsrc: gst_app::AppSrc, elements: Vec<gst::Element>, inspect: impl Fn(&gst::Sample) -> Result<(), gst::FlowError> + Send + 'static) -> Branch {
    let eos_src = appsrc.clone();
    Branch {
        elements,
        on_sample: Box::new(move |sample| {
            inspect(&sample)?;
            appsrc.push_sample(&sample)
        }),
        on_eos: Box::new(move || {
            let _ = eos_src.end_of_stream();
        }),
    }
}
