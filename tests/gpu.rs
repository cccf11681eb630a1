//! The GPU's decoders (NVDEC through GStreamer's `nvcodec` plugin, VA), chosen by probing as the
//! encoders are. Everywhere: a render says which decoder it used, and `media.decoder = "software"`
//! keeps libav's. Where the machine has NVDEC (an H100/H200: NVDEC, no NVENC), `auto` renders
//! decode on it, and the clip is still the clip; elsewhere that half is skipped, and the test
//! command's closing lines say so. (CUDA transcription: `tests/transcribe.rs`.)

mod common;

use clipmill::config::Config;
use clipmill::edit::Size;
use clipmill::media::{Control, MediaEngine, RenderRequest, TimeRange};
use common::*;

fn engine_with(decoder: &str) -> MediaEngine {
    let mut config = Config::load(None).unwrap();
    config.media.decoder = decoder.into();
    MediaEngine::new(&config.media).unwrap()
}

async fn render(engine: &MediaEngine, out: &std::path::Path) -> clipmill::media::RenderOutput {
    let request = RenderRequest { input: fixture("talk.mp4"), clip: truth("talk.truth.json").clip(2.0, 5.0), default_size: Size::VERTICAL_1080, out: out.into() };
    engine.render(request, Control::default()).await.unwrap()
}

/// One test, so the two engines (whose choice is the process's decoder ranks) never overlap.
#[tokio::test(flavor = "multi_thread")]
async fn renders_decode_on_the_gpu_where_it_has_nvdec_and_in_software_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let software = render(&engine_with("software"), &dir.path().join("software.mp4")).await;
    assert_eq!(software.decoder.as_deref(), Some("avdec_h264"));

    let auto = engine_with("auto");
    let nvdec = auto.decoders().hardware.iter().any(|d| d == "nvh264dec");
    let rendered = render(&auto, &dir.path().join("auto.mp4")).await;
    let info = engine().probe(&rendered.file).await.unwrap();
    let video = info.video.expect("video");
    assert_eq!((video.width, video.height), (1080, 1920));
    assert!((info.duration - 3.0).abs() < 0.1, "{}", info.duration);
    // The face is where it was: the crop decoded on the GPU frames the same person.
    let (frame_file, _) = frames(&rendered.file, TimeRange::new(0.0, 2.9), 5.0, 360, dir.path()).await;
    let faces = detect_faces(&frame_file, "mediapipe");
    assert!(faces.iter().filter(|(_, f)| f.is_some()).count() * 10 >= faces.len() * 9, "{faces:?}");
    if nvdec {
        assert_eq!(rendered.decoder.as_deref(), Some("nvh264dec"));
        suite_note("gpu-decode", "gpu: renders decoded by NVDEC (nvh264dec)");
    } else {
        assert_eq!(rendered.decoder.as_deref(), Some("avdec_h264"), "hardware decoders: {:?}", auto.decoders().hardware);
        suite_note("gpu-decode", "gpu: no NVDEC on this machine; the NVDEC render was skipped (libav decoded)");
    }
}
