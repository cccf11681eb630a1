//! The media engine on the generated talk video, checked as a viewer would check the clips.

mod common;

use std::path::{Path, PathBuf};

use clipmill::edit::{ClipEdit, CropKey, Mode, Size};
use clipmill::media::{Control, FramesHeader, MediaError, RenderRequest, TimeRange};
use common::*;

fn request(clip: clipmill::edit::ClipEdit, out: std::path::PathBuf) -> RenderRequest {
    RenderRequest { input: fixture("talk.mp4"), clip, default_size: Size::VERTICAL_1080, out }
}

#[tokio::test(flavor = "multi_thread")]
async fn track_clip_is_vertical_h264_aac_faststart_with_the_face_centred() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    // 10.5..16.5 s: the face sweeps from one side of the frame to the other.
    let rendered = engine().render(request(truth.clip(10.5, 16.5), out.clone()), Control::default()).await.unwrap();
    assert_eq!((rendered.width, rendered.height), (1080, 1920));

    let info = engine().probe(&out).await.unwrap();
    let video = info.video.expect("video stream");
    assert_eq!((video.width, video.height, video.mime.as_str()), (1080, 1920, "video/x-h264"));
    assert_eq!(info.audio.expect("audio stream").mime, "audio/mpeg");
    assert!((info.duration - 6.0).abs() <= 0.1, "duration {}", info.duration);
    let boxes = mp4_boxes(&out);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(moov < mdat, "moov must come first: {boxes:?}");

    // The face, found by the real detector in the output, stays in the middle 40% of the width.
    let (raw, frames) = frames(&out, TimeRange::new(0.0, 6.0), 5.0, 540, dir.path()).await;
    let bright: Vec<bool> = frames.frames.iter().map(|(_, f)| frames.mean(f) > 235.0).collect();
    let faces = detect_faces(&raw, "mediapipe");
    let sampled: Vec<_> = faces.iter().zip(&bright).filter(|(_, flash)| !**flash).map(|(f, _)| f).collect();
    assert!(sampled.len() >= 25, "sampled {} frames", sampled.len());
    let centred = sampled
        .iter()
        .filter(|(_, face)| face.is_some_and(|[x, _]| (0.3 * 540.0..=0.7 * 540.0).contains(&x)))
        .count();
    assert!(centred as f64 >= 0.95 * sampled.len() as f64, "face centred in {centred}/{} frames: {faces:?}", sampled.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn captions_show_the_words_being_spoken() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let (start, end) = (3.0, 13.0);
    let rendered = engine().render(request(truth.clip(start, end), out.clone()), Control::default()).await.unwrap();
    let srt = std::fs::read_to_string(rendered.srt.expect("srt sidecar")).unwrap();
    let vtt = std::fs::read_to_string(rendered.vtt.expect("vtt sidecar")).unwrap();
    assert!(srt.starts_with("1\n00:00:00,081 --> "), "{srt}");
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.081 --> "), "{vtt}");

    // Sample the middle of every spoken word of 3+ letters and OCR the caption band.
    let (_, frames) = frames(&out, TimeRange::new(0.0, end - start), 10.0, 1080, dir.path()).await;
    let mut checked = 0;
    let mut found = 0;
    let mut misses = Vec::new();
    for word in truth.sentences.iter().flat_map(|s| &s.words).filter(|w| w.start >= start && w.end <= end && w.word.len() >= 3) {
        let mid = (word.start + word.end) / 2.0 - start;
        let Some((_, frame)) = frames.frames.iter().min_by(|a, b| (a.0 - mid).abs().total_cmp(&(b.0 - mid).abs())) else {
            continue;
        };
        let text = ocr_captions(&frames, frame, (0.60, 0.80), dir.path());
        checked += 1;
        if text.contains(&word.word.to_lowercase()) {
            found += 1;
        } else {
            misses.push(format!("{} -> {text:?}", word.word));
        }
    }
    assert!(checked >= 10, "checked only {checked} words");
    assert!(found as f64 >= 0.9 * checked as f64, "OCR found {found}/{checked}; misses: {misses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn audio_stays_in_sync_with_video() {
    let truth = truth("talk.truth.json");
    let mark = truth.sync_marks[1];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let start = (mark - 2.3).max(0.0);
    engine().render(request(truth.clip(start, start + 4.0), out.clone()), Control::default()).await.unwrap();

    let (_, frames) = frames(&out, TimeRange::new(0.0, 4.0), 30.0, 160, dir.path()).await;
    let flash = frames.frames.iter().find(|(_, f)| frames.mean(f) > 235.0).expect("flash frame in the clip").0;
    let wav = dir.path().join("audio.wav");
    engine().extract_audio(&out, &wav, Control::default()).await.unwrap();
    let beep = beep_onset(&wav, flash - 0.12).expect("beep in the clip");
    assert!((flash - (mark - start)).abs() < 0.034, "flash at {flash}, expected {}", mark - start);
    assert!((beep - flash).abs() <= 0.040, "beep at {beep} s, flash at {flash} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn fit_and_other_sizes_render() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    for (mode, size) in [(Mode::Fit, Size { width: 720, height: 1280 }), (Mode::Track, Size { width: 1080, height: 1080 })] {
        let mut clip = truth.clip(20.0, 22.0);
        clip.mode = mode;
        clip.size = Some(size);
        let out = dir.path().join(format!("{mode:?}.mp4"));
        engine().render(request(clip, out.clone()), Control::default()).await.unwrap();
        let video = engine().probe(&out).await.unwrap().video.unwrap();
        assert_eq!((video.width, video.height), (size.width, size.height), "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn non_h264_input_renders() {
    let truth = truth("mpeg4.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mp4");
    let req = RenderRequest {
        input: fixture("mpeg4.mkv"),
        clip: truth.clip(1.0, 5.0),
        default_size: Size::VERTICAL_1080,
        out: out.clone(),
    };
    engine().render(req, Control::default()).await.unwrap();
    let info = engine().probe(&out).await.unwrap();
    assert_eq!(info.video.unwrap().mime, "video/x-h264");
    assert!((info.duration - 4.0).abs() <= 0.1, "duration {}", info.duration);
}

#[tokio::test(flavor = "multi_thread")]
async fn original_mode_without_captions_is_a_keyframe_aligned_stream_copy() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.mp4");
    let mark = truth.sync_marks[1];
    let mut clip = truth.clip(mark - 1.2, mark + 2.0);
    clip.mode = Mode::Original;
    clip.captions.enabled = false;
    let rendered = engine().render(request(clip, out.clone()), Control::default()).await.unwrap();
    assert!(rendered.copied());
    // Keyframes are every 2 s in the fixture: the copy starts on the one before.
    let keyframe = ((mark - 1.2) / 2.0).floor() * 2.0;
    assert!((rendered.start - keyframe).abs() < 0.01, "copy starts at {}", rendered.start);
    let info = engine().probe(&out).await.unwrap();
    assert_eq!(info.video.as_ref().unwrap().width, 1920);
    assert!((info.duration - (mark + 2.0 - keyframe)).abs() <= 0.1, "duration {}", info.duration);

    let (_, frames) = frames(&out, TimeRange::new(0.0, info.duration), 30.0, 160, dir.path()).await;
    let flash = frames.frames.iter().find(|(_, f)| frames.mean(f) > 235.0).expect("flash frame").0;
    let wav = dir.path().join("audio.wav");
    engine().extract_audio(&out, &wav, Control::default()).await.unwrap();
    let beep = beep_onset(&wav, flash - 0.12).expect("beep");
    assert!((flash - (mark - keyframe)).abs() < 0.034, "flash at {flash}");
    assert!((beep - flash).abs() <= 0.040, "beep at {beep} s, flash at {flash} s");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_inputs_fail_with_their_error_and_leave_nothing() {
    let truth = truth("talk.truth.json");
    type Expect = fn(&MediaError) -> bool;
    let cases: [(&str, Expect); 4] = [
        ("truncated.mp4", |e| matches!(e, MediaError::Unreadable(_) | MediaError::UnknownFormat(_))),
        ("random.mp4", |e| matches!(e, MediaError::UnknownFormat(_))),
        ("audioonly.m4a", |e| matches!(e, MediaError::NoVideo)),
        ("missing.mp4", |e| matches!(e, MediaError::NotFound(_))),
    ];
    for (name, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let req = RenderRequest {
            input: fixtures().join(name),
            clip: truth.clip(1.0, 3.0),
            default_size: Size::VERTICAL_1080,
            out: dir.path().join("clip.mp4"),
        };
        let err = engine().render(req, Control::default()).await.expect_err(name);
        assert!(expected(&err), "{name}: unexpected error {err:?}");
        assert!(err.is_bad_input() && !err.to_string().is_empty(), "{name}: {err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{name} left files behind");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ranges_are_refused() {
    let truth = truth("talk.truth.json");
    for (start, end) in [(40.0, 45.0), (28.0, 35.0), (5.0, 5.0), (-1.0, 2.0)] {
        let dir = tempfile::tempdir().unwrap();
        let mut clip = truth.clip(0.0, 1.0);
        (clip.start, clip.end) = (start, end);
        let err = engine().render(request(clip, dir.path().join("c.mp4")), Control::default()).await.unwrap_err();
        assert!(matches!(err, MediaError::InvalidRange { .. }), "{start}..{end}: {err:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_render_promptly_and_cleans_up() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let ctl = Control::default();
    let cancel = ctl.cancel.clone();
    let render = tokio::spawn(engine().render(request(truth.clip(0.5, 29.0), dir.path().join("c.mp4")), ctl));
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let asked = std::time::Instant::now();
    cancel.cancel();
    let err = render.await.unwrap().unwrap_err();
    assert!(matches!(err, MediaError::Cancelled), "{err:?}");
    assert!(asked.elapsed() < std::time::Duration::from_secs(1), "took {:?}", asked.elapsed());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Split panels of a 1080x1920 output: 1080x958 each, a 4 px seam between them.
const PANEL: (f64, f64) = (1080.0, 958.0);

/// Windows at the panel's aspect centred on the true face, every 3 frames: the face fills about
/// half the panel's width, so the detector sees it clearly.
fn face_path(truth: &Truth, start: f64, end: f64) -> Vec<CropKey> {
    let (w, h) = (600.0, 600.0 * PANEL.1 / PANEL.0);
    truth
        .crop_path(start, end)
        .into_iter()
        .map(|k| {
            let [cx, cy] = truth.face_at(k.t);
            CropKey { x: cx - w / 2.0, y: cy - h / 2.0, w, h, ..k }
        })
        .collect()
}

/// A fixed window the face never enters: the face's centre stays within x 500..1400 and
/// y 400..480 and it is 240x264, so it never reaches below y 612.
fn faceless_path(start: f64) -> Vec<CropKey> {
    vec![CropKey { t: start, x: 0.0, y: 620.0, w: 480.0, h: 480.0 * PANEL.1 / PANEL.0, cut: false }]
}

/// Rows `rows` of every frame, as a frame file of their own for the face detector.
fn panel_frames(frames: &Frames, rows: std::ops::Range<u32>, out: &Path) -> PathBuf {
    let header = FramesHeader { height: rows.end - rows.start, ..frames.header };
    let row = frames.header.width as usize * 3;
    let mut bytes = header.encode().to_vec();
    for (t, frame) in &frames.frames {
        bytes.extend_from_slice(&((t * 1e9).round() as u64).to_le_bytes());
        bytes.extend_from_slice(&frame[rows.start as usize * row..rows.end as usize * row]);
    }
    std::fs::write(out, bytes).unwrap();
    out.to_path_buf()
}

/// Renders 10.5..14.5 s of the talk in split mode, the face-following path on the top panel or
/// the bottom one, and checks with the real detector that the face is centred in that panel in
/// every frame (while it sweeps across the source) and never seen in the other.
async fn check_split(face_on_top: bool) {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("split.mp4");
    let (start, end) = (10.5, 14.5);
    let mut clip = truth.clip(start, end);
    clip.mode = Mode::Split;
    let (face, faceless) = (face_path(&truth, start, end), faceless_path(start));
    (clip.crop_path, clip.crop_path_bottom) = if face_on_top { (face, faceless) } else { (faceless, face) };
    let rendered = engine().render(request(clip, out.clone()), Control::default()).await.unwrap();
    assert_eq!((rendered.width, rendered.height), (1080, 1920));

    let info = engine().probe(&out).await.unwrap();
    let video = info.video.expect("video stream");
    assert_eq!((video.width, video.height, video.mime.as_str()), (1080, 1920, "video/x-h264"));
    assert_eq!(info.audio.expect("audio stream").mime, "audio/mpeg");
    assert!((info.duration - (end - start)).abs() <= 0.1, "duration {}", info.duration);

    // At 540x960 each panel is 540x479; keep clear of the seam (rows 479..481).
    let (_, frames) = frames(&out, TimeRange::new(0.0, end - start), 5.0, 540, dir.path()).await;
    let bright: Vec<bool> = frames.frames.iter().map(|(_, f)| frames.mean(f) > 235.0).collect();
    let top = detect_faces(&panel_frames(&frames, 0..476, &dir.path().join("top.raw")), "mediapipe");
    let bottom = detect_faces(&panel_frames(&frames, 484..960, &dir.path().join("bottom.raw")), "mediapipe");
    let (with_face, without) = if face_on_top { (top, bottom) } else { (bottom, top) };

    let sampled: Vec<_> = with_face.iter().zip(&bright).filter(|(_, flash)| !**flash).map(|(f, _)| f).collect();
    assert!(sampled.len() >= 18, "sampled {} frames", sampled.len());
    let centred = |[x, y]: [f64; 2]| (0.3 * 540.0..=0.7 * 540.0).contains(&x) && (0.3 * 476.0..=0.7 * 476.0).contains(&y);
    let hits = sampled.iter().filter(|(_, face)| face.is_some_and(centred)).count();
    assert!(hits as f64 >= 0.95 * sampled.len() as f64, "face centred in {hits}/{} frames: {with_face:?}", sampled.len());
    let seen: Vec<_> = without.iter().filter(|(_, face)| face.is_some()).collect();
    assert!(seen.is_empty(), "a face in the faceless panel: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn split_clip_shows_the_face_in_the_top_panel_only() {
    check_split(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_clip_with_the_panels_swapped_shows_the_face_in_the_bottom_panel_only() {
    check_split(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn split_clip_puts_the_captions_on_the_seam() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("split.mp4");
    let (start, end) = (3.0, 8.0);
    let mut clip = truth.clip(start, end);
    clip.mode = Mode::Split;
    (clip.crop_path, clip.crop_path_bottom) = (face_path(&truth, start, end), faceless_path(start));
    engine().render(request(clip, out.clone()), Control::default()).await.unwrap();

    // The middle of every spoken word of 3+ letters: the word is read on the seam, and the
    // default caption band (70% of the height) shows nothing but picture.
    // A cue shows all its words for its whole time, so 5 fps finds each word on screen.
    let (_, frames) = frames(&out, TimeRange::new(0.0, end - start), 5.0, 1080, dir.path()).await;
    let words: Vec<_> = truth.sentences.iter().flat_map(|s| &s.words).filter(|w| w.start >= start && w.end <= end && w.word.len() >= 3).collect();
    assert!(words.len() >= 5, "only {} words", words.len());
    let mut found = 0;
    let mut misses = Vec::new();
    for word in &words {
        let mid = (word.start + word.end) / 2.0 - start;
        let (_, frame) = frames.frames.iter().min_by(|a, b| (a.0 - mid).abs().total_cmp(&(b.0 - mid).abs())).unwrap();
        let seam = ocr_captions(&frames, frame, (0.40, 0.60), dir.path());
        if seam.contains(&word.word.to_lowercase()) {
            found += 1;
        } else {
            misses.push(format!("{} -> {seam:?}", word.word));
        }
        let low = ocr_captions(&frames, frame, (0.62, 0.78), dir.path());
        assert!(!low.contains(&word.word.to_lowercase()), "{} read below the seam: {low:?}", word.word);
    }
    assert!(found as f64 >= 0.8 * words.len() as f64, "OCR found {found}/{}; misses: {misses:?}", words.len());
}

/// A clip with no crop path and no words.
fn plain_clip(mode: Mode, start: f64, end: f64) -> ClipEdit {
    serde_json::from_value(serde_json::json!({ "start": start, "end": end, "mode": mode })).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn video_only_source_renders_video_only_clips() {
    // 6 s, 1920x1080 H.264, no audio track.
    let input = fixture("noaudio.mp4");
    let dir = tempfile::tempdir().unwrap();
    let source = engine().probe(&input).await.unwrap();
    assert!(source.audio.is_none() && source.video.is_some(), "{source:?}");
    // Frame sampling (the face detector's input) reads it too.
    let sampled = engine()
        .extract_frames(&input, TimeRange::new(1.0, 3.0), 5.0, 320, &dir.path().join("source.raw"), Control::default())
        .await
        .unwrap();
    assert_eq!(sampled.frames, 10);

    // Keyframes are every 2 s, so `original` copies exactly 2..5 s.
    for (mode, size) in [(Mode::Track, (1080, 1920)), (Mode::Fit, (1080, 1920)), (Mode::Split, (1080, 1920)), (Mode::Original, (1920, 1080))] {
        let out = dir.path().join(format!("{mode:?}.mp4"));
        let req = RenderRequest { input: input.clone(), clip: plain_clip(mode, 2.0, 5.0), default_size: Size::VERTICAL_1080, out: out.clone() };
        let rendered = engine().render(req, Control::default()).await.unwrap();
        assert_eq!(rendered.copied(), mode == Mode::Original, "{mode:?}");
        assert!(rendered.srt.is_none(), "{mode:?}: captions without words");

        let info = engine().probe(&out).await.unwrap();
        let video = info.video.as_ref().expect("video stream");
        assert_eq!((video.width, video.height, video.mime.as_str()), (size.0, size.1, "video/x-h264"), "{mode:?}");
        assert!(info.audio.is_none(), "{mode:?}: audio stream in a clip of a silent source");
        assert!((info.duration - 3.0).abs() <= 0.1, "{mode:?}: duration {}", info.duration);
        // Playable: every frame decodes, and they show the picture, not black.
        let (_, frames) = frames(&out, TimeRange::new(0.0, info.duration), 30.0, 160, dir.path()).await;
        assert!(frames.frames.len().abs_diff(90) <= 2, "{mode:?}: {} frames", frames.frames.len());
        assert!(frames.frames.iter().all(|(_, f)| frames.mean(f) > 40.0), "{mode:?}: black frames");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_short_source_renders_inside_its_data_and_refuses_past_it() {
    // The header declares 90 s; the bytes stop after 35.0 s of video.
    let input = fixture("cutshort.mp4");
    let info = engine().probe(&input).await.unwrap();
    assert!((info.duration - 90.02).abs() < 0.1, "declared {}", info.duration);
    let readable = info.readable_duration.expect("the probe sees where the data ends");
    assert!((readable - 35.0).abs() < 0.1, "readable {readable}");
    assert_eq!(engine().probe(&fixture("talk.mp4")).await.unwrap().readable_duration, None);

    let dir = tempfile::tempdir().unwrap();
    let render = |start: f64, end: f64, mode: Mode| {
        let clip = plain_clip(mode, start, end);
        let out = dir.path().join(format!("{mode:?}-{start}.mp4"));
        (engine().render(RenderRequest { input: input.clone(), clip, default_size: Size::VERTICAL_1080, out: out.clone() }, Control::default()), out)
    };
    let (inside, out) = render(10.0, 14.0, Mode::Track);
    inside.await.unwrap();
    let clip = engine().probe(&out).await.unwrap();
    assert!((clip.duration - 4.0).abs() <= 0.1, "duration {}", clip.duration);
    assert_eq!(clip.readable_duration, None);

    std::fs::remove_file(&out).unwrap();
    for (start, end, mode) in [(33.0, 37.0, Mode::Track), (40.0, 44.0, Mode::Track), (33.0, 37.0, Mode::Original)] {
        let err = render(start, end, mode).0.await.unwrap_err();
        assert!(matches!(err, MediaError::InvalidRange { .. }), "{start}..{end} {mode:?}: {err:?}");
        assert!(err.to_string().contains("35.0"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "refused renders left files");
}
