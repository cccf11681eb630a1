//! Choosing who decodes, once per process, by probing the registry: the GPU's decoders (NVDEC
//! through GStreamer's `nvcodec` plugin, then VA) when they work on this machine, libav's
//! otherwise.
//!
//! `decodebin` takes the highest-ranked decoder for a stream, so the choice is made with ranks. A
//! hardware decoder that reaches `READY` here (its device opened) is ranked above libav's; one
//! registered without its device, or every one when `media.decoder = "software"`, is ranked out,
//! so decodebin never picks a decoder that cannot run. H100/H200 have NVDEC but no NVENC: there
//! the GPU decodes and x264 encodes.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::encoder::usable;
use crate::config::MediaConfig;

/// Hardware video decoders, by preference: NVDEC, then VA.
const HARDWARE_DECODERS: &[&str] =
    &["nvh264dec", "nvh265dec", "nvav1dec", "nvvp9dec", "vah264dec", "vah265dec", "vaav1dec", "vavp9dec"];

/// The hardware decoders this process lets decodebin use (empty: libav decodes everything).
#[derive(Debug, Clone, Default)]
pub struct Decoders {
    pub hardware: Vec<String>,
}

impl Decoders {
    pub fn probe(config: &MediaConfig) -> Self {
        let wanted = config.decoder != "software";
        let hardware: Vec<String> = HARDWARE_DECODERS
            .iter()
            .filter_map(|name| {
                let factory = gst::ElementFactory::find(name)?;
                let works = wanted && usable(name);
                factory.set_rank(if works { gst::Rank::PRIMARY + 10 } else { gst::Rank::NONE });
                works.then(|| name.to_string())
            })
            .collect();
        tracing::info!(hardware = ?hardware, requested = %config.decoder, "decoders chosen");
        Self { hardware }
    }
}

/// The video decoder a prerolled pipeline's decodebin picked (its element factory's name).
pub(crate) fn video_decoder(pipeline: &gst::Pipeline) -> Option<String> {
    pipeline.iterate_recurse().into_iter().flatten().find_map(|element| {
        let factory = element.factory()?;
        let klass = factory.klass();
        (klass.contains("Decoder") && klass.contains("Video")).then(|| factory.name().to_string())
    })
}
