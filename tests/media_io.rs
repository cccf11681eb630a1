//! Probe, audio extraction and frame files: the inputs the analysis stages read.

mod common;

use clipmill::media::{Control, FRAME_MAGIC, MediaError, TimeRange};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn probe_reports_streams_and_classifies_garbage() {
    let info = engine().probe(&fixture("talk.mp4")).await.unwrap();
    let video = info.video.unwrap();
    assert_eq!((video.width, video.height, video.rotation), (1920, 1080, 0));
    assert!((video.fps - 30.0).abs() < 0.01);
    assert_eq!(info.audio.unwrap().sample_rate, 48_000);
    assert!((info.duration - 30.0).abs() < 0.1);

    let mkv = engine().probe(&fixture("mpeg4.mkv")).await.unwrap();
    let mime = mkv.video.unwrap().mime;
    assert!(mime == "video/mpeg" || mime == "video/x-divx", "{mime}");
    assert!(matches!(engine().probe(&fixture("random.mp4")).await, Err(MediaError::UnknownFormat(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn audio_is_16k_mono_wav_of_the_whole_input() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    let out = engine().extract_audio(&fixture("talk.mp4"), &wav, Control::default()).await.unwrap();
    assert_eq!(out.sample_rate, 16_000);
    assert!((out.duration - 30.0).abs() < 0.1, "{}", out.duration);
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 1, "mono");
    assert_eq!(bytes.len() as u64, 44 + out.samples * 2);
    // The first sync beep is where the truth says.
    let mark = truth("talk.truth.json").sync_marks[0];
    let onset = beep_onset(&wav, mark - 0.12).unwrap();
    assert!((onset - mark).abs() < 0.02, "beep at {onset}, truth {mark}");

    // The same input gives the same samples every time (it did not after a flushing seek to 0):
    // the transcript, and so the clips chosen, do not change from one run to the next.
    let again = dir.path().join("b.wav");
    engine().extract_audio(&fixture("talk.mp4"), &again, Control::default()).await.unwrap();
    assert!(bytes == std::fs::read(&again).unwrap(), "a second extraction of the same input differs");

    let err = engine().extract_audio(&fixture("noaudio.mp4"), &wav, Control::default()).await.unwrap_err();
    assert!(matches!(err, MediaError::NoAudio));
}

#[tokio::test(flavor = "multi_thread")]
async fn frame_file_has_its_header_and_the_sampled_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (path, frames) = frames(&fixture("talk.mp4"), TimeRange::new(4.0, 7.0), 2.0, 480, dir.path()).await;
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], FRAME_MAGIC);
    assert_eq!((frames.header.width, frames.header.height), (480, 270));
    assert_eq!((frames.header.fps_num, frames.header.fps_den), (2, 1));
    assert_eq!(frames.frames.len(), 6);
    assert!((frames.frames[0].0 - 4.0).abs() < 0.02, "first frame at {}", frames.frames[0].0);

    // The detector finds the face where the truth puts it (frame pixels are source / 4).
    let truth = truth("talk.truth.json");
    for (t, face) in detect_faces(&path, "haar") {
        let [x, y] = face.expect("face found");
        let [tx, ty] = truth.face_at(t);
        assert!((x * 4.0 - tx).abs() < 40.0 && (y * 4.0 - ty).abs() < 40.0, "at {t}: {x},{y} vs {tx},{ty}");
    }
}
