//! An input whose codec this machine cannot decode fails at once with a clear, specific error
//! (never a stall or a garbled clip). Debian 12's GStreamer decodes every common codec, so the
//! missing plugin is simulated: the AV1 decoder's rank is set to none, which hides it from
//! autoplugging exactly as an uninstalled plugin would be. Its own test binary, since the rank
//! is process-wide.

mod common;

use clipmill::edit::Size;
use clipmill::media::{Control, MediaError, RenderRequest, TimeRange};
use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_codec_without_a_decoder_fails_clearly_in_every_operation() {
    let input = fixture("in_av1_opus.mkv");
    let engine = engine();
    for name in ["av1dec", "dav1ddec", "avdec_av1"] {
        if let Some(feature) = gst::Registry::get().lookup_feature(name) {
            feature.set_rank(gst::Rank::NONE);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let clip = truth("in_av1_opus.truth.json").clip(1.0, 3.0);
    let req = RenderRequest { input: input.clone(), clip, default_size: Size::VERTICAL_1080, out: out.clone() };
    let errors = [
        engine.probe(&input).await.map(|_| ()).unwrap_err(),
        engine.render(req, Control::default()).await.map(|_| ()).unwrap_err(),
        engine.extract_frames(&input, TimeRange::new(0.0, 1.0), 2.0, 320, &dir.path().join("f.raw"), Control::default()).await.map(|_| ()).unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(&err, MediaError::NoDecoder(what) if what.contains("video/x-av1")), "{err:?}");
        assert_eq!(err.code(), "codec_unsupported");
        assert!(err.is_bad_input());
        assert!(err.to_string().starts_with("no decoder for "), "{err}");
    }
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing is left: {left:?}");
}
