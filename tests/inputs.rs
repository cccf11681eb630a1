//! Every common input kind (scripts/gen_media_inputs.py): H.264, HEVC, VP9 and AV1 video; AAC,
//! MP3, AC-3 and Opus audio; MOV, MPEG-TS, MP4, Matroska and WebM; phone footage (rotated,
//! portrait) and a 4K 60 fps source. Each is probed, its audio extracted, its face frames read and
//! a clip rendered, checked as a viewer would: size and codecs, the face where it belongs, and the
//! flash/beep sync mark within 40 ms.

mod common;

use clipmill::edit::{ClipEdit, CropPath, Mode, Size};
use clipmill::media::{Control, RenderRequest, TimeRange};
use common::*;

/// One input kind: its file, the caps names its streams probe as, and the size a viewer sees.
struct Kind {
    file: &'static str,
    video: &'static str,
    audio: &'static str,
    display: (u32, u32),
}

impl Kind {
    fn truth(&self) -> Truth {
        truth(&format!("{}.truth.json", self.file.rsplit_once('.').unwrap().0))
    }
}

const HD: (u32, u32) = (1280, 720);

/// Probe, audio (the beep where the truth says), face frames (the detector finds the face where
/// the truth puts it, so the picture is upright and unscaled), and a track render.
async fn check(kind: Kind) {
    let input = fixture(kind.file);
    let truth = kind.truth();
    let dir = tempfile::tempdir().unwrap();

    let info = engine().probe(&input).await.unwrap();
    let video = info.video.as_ref().expect("video stream");
    let audio = info.audio.as_ref().expect("audio stream");
    assert_eq!((video.mime.as_str(), audio.mime.as_str()), (kind.video, kind.audio), "{}", kind.file);
    assert_eq!(video.display_size(), kind.display, "{}", kind.file);
    assert!((info.duration - truth.duration).abs() < 0.15, "{}: duration {}", kind.file, info.duration);

    // Where the file's timeline puts the first picture: 0, except MPEG-TS (mpegtsmux starts the
    // clock 125 ms ahead of the first frame); the truth's times are from that frame.
    let (_, first) = frames(&input, TimeRange::new(0.0, 0.5), video.fps, 64, dir.path()).await;
    let t0 = first.frames[0].0;
    assert!(t0 < 0.2, "{}: first frame at {t0}", kind.file);

    // The ASR input: the beep where the truth puts it (the encoders' priming is hidden or small),
    // on the file's timeline.
    let wav = dir.path().join("audio.wav");
    engine().extract_audio(&input, &wav, Control::default()).await.unwrap();
    let mark = truth.sync_marks[0] + t0;
    let onset = beep_onset(&wav, mark - 0.12).expect("beep in the audio");
    assert!((onset - mark).abs() < 0.04, "{}: beep at {onset}, expected {mark}", kind.file);

    // The face detector's input: upright frames, the face where the truth puts it.
    let width = 640;
    let (raw, frames) = frames(&input, TimeRange::new(0.5, 2.0), 2.0, width, dir.path()).await;
    assert_eq!((frames.header.width, frames.header.height), (width, width * kind.display.1 / kind.display.0));
    assert_eq!(frames.frames.len(), 3, "{}", kind.file);
    let scale = kind.display.0 as f64 / width as f64;
    for (t, face) in detect_faces(&raw, "haar") {
        let [x, y] = face.unwrap_or_else(|| panic!("{}: no face at {t}", kind.file));
        let [tx, ty] = truth.face_at(t - t0);
        let tolerance = truth.face_size[0] / 4.0;
        assert!((x * scale - tx).abs() < tolerance && (y * scale - ty).abs() < tolerance, "{} at {t}: {x},{y} vs {tx},{ty}", kind.file);
    }

    render_and_check(&kind, truth.clip(1.0, 3.0), dir.path(), 0.3..=0.7).await;
}

/// Renders `clip` (which holds the first sync mark) and checks the output: vertical H.264 + AAC
/// of the clip's length at the source's frame rate up to the 30 fps ceiling (`media.max_fps`),
/// the face inside `face_x` (fractions of the width), flash and beep together.
async fn render_and_check(kind: &Kind, clip: ClipEdit, dir: &std::path::Path, face_x: std::ops::RangeInclusive<f64>) {
    let (start, end) = (clip.start, clip.end);
    let out = dir.join("clip.mp4");
    let req = RenderRequest { input: fixture(kind.file), clip, default_size: Size::VERTICAL_1080, out: out.clone() };
    let rendered = engine().render(req, Control::default()).await.unwrap();
    assert_eq!((rendered.width, rendered.height), (1080, 1920));
    let info = engine().probe(&out).await.unwrap();
    let video = info.video.expect("video stream");
    assert_eq!((video.width, video.height, video.mime.as_str()), (1080, 1920, "video/x-h264"), "{}", kind.file);
    let source_fps = engine().probe(&fixture(kind.file)).await.unwrap().video.unwrap().fps;
    assert!((video.fps - source_fps.min(30.0)).abs() < 0.01, "{}: {} fps from a {source_fps} fps source", kind.file, video.fps);
    assert_eq!(info.audio.expect("audio stream").mime, "audio/mpeg", "{}", kind.file);
    assert!((info.duration - (end - start)).abs() <= 0.1, "{}: duration {}", kind.file, info.duration);

    // The face, found by the real detector in the output.
    let (raw, frames) = frames(&out, TimeRange::new(0.0, end - start), 4.0, 540, dir).await;
    let bright: Vec<bool> = frames.frames.iter().map(|(_, f)| frames.mean(f) > 235.0).collect();
    let faces = detect_faces(&raw, "mediapipe");
    let sampled: Vec<_> = faces.iter().zip(&bright).filter(|(_, flash)| !**flash).map(|(f, _)| f).collect();
    assert!(sampled.len() as f64 >= 4.0 * (end - start) - 2.0, "{}: sampled {} frames", kind.file, sampled.len());
    let placed = sampled
        .iter()
        .filter(|(_, face)| face.is_some_and(|[x, _]| face_x.contains(&(x / 540.0))))
        .count();
    assert!(placed as f64 >= 0.9 * sampled.len() as f64, "{}: face placed in {placed}/{}: {faces:?}", kind.file, sampled.len());

    // Flash and beep as far apart as in the source (MPEG-TS files from GStreamer's mpegtsmux
    // read with the picture 125 ms behind the sound; a clip keeps what the source has).
    let (src_flash, src_beep) = flash_and_beep(&fixture(kind.file), start, end, dir).await;
    let (flash, beep) = flash_and_beep(&out, 0.0, end - start, dir).await;
    assert!((flash - (src_flash - start)).abs() < 0.034, "{}: flash at {flash}, source's at {src_flash}", kind.file);
    let (gap, src_gap) = (beep - flash, src_beep - src_flash);
    assert!((gap - src_gap).abs() <= 0.040, "{}: beep - flash {gap:.3} s, in the source {src_gap:.3} s", kind.file);
}

/// The times of the flash frame and of the beep's onset in `[start, end)` of a file, in its own
/// timeline (the flash measured from the range's start, so an encoder's initial delay counts).
async fn flash_and_beep(file: &std::path::Path, start: f64, end: f64, dir: &std::path::Path) -> (f64, f64) {
    let fps = engine().probe(file).await.unwrap().video.unwrap().fps;
    let (_, frames) = frames(file, TimeRange::new(start, end), fps, 160, dir).await;
    let flash = frames.frames.iter().find(|(_, f)| frames.mean(f) > 235.0).expect("flash frame").0;
    let wav = dir.join("flash_and_beep.wav");
    engine().extract_audio(file, &wav, Control::default()).await.unwrap();
    let beep = beep_onset(&wav, flash - 0.3).expect("beep");
    (flash, beep)
}

#[tokio::test(flavor = "multi_thread")]
async fn h264_aac_in_quicktime_mov() {
    check(Kind { file: "in_h264_aac.mov", video: "video/x-h264", audio: "audio/mpeg", display: HD }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h264_mp3_in_mpeg_ts() {
    check(Kind { file: "in_h264_mp3.ts", video: "video/x-h264", audio: "audio/mpeg", display: HD }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hevc_aac_in_mp4() {
    check(Kind { file: "in_hevc_aac.mp4", video: "video/x-h265", audio: "audio/mpeg", display: HD }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hevc_ac3_in_matroska() {
    check(Kind { file: "in_hevc_ac3.mkv", video: "video/x-h265", audio: "audio/x-ac3", display: HD }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vp9_opus_in_webm() {
    check(Kind { file: "in_vp9_opus.webm", video: "video/x-vp9", audio: "audio/x-opus", display: HD }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn av1_opus_in_matroska() {
    check(Kind { file: "in_av1_opus.mkv", video: "video/x-av1", audio: "audio/x-opus", display: HD }).await;
}

/// A phone held sideways: the picture is stored a quarter turn round with the orientation tag.
/// Probe reports the turn, and the frames and the clip show it upright (the detector, which
/// finds upright faces only, finds the face where the upright truth puts it).
#[tokio::test(flavor = "multi_thread")]
async fn rotated_phone_clip_is_seen_upright() {
    let info = engine().probe(&fixture("in_rotated.mp4")).await.unwrap();
    let video = info.video.unwrap();
    assert_eq!((video.width, video.height, video.rotation), (720, 1280, 90));
    check(Kind { file: "in_rotated.mp4", video: "video/x-h264", audio: "audio/mpeg", display: HD }).await;
}

/// A portrait source already 9:16 is scaled, never cropped: the crop window is the whole frame
/// whatever the crop path asks, and the face sits in the output where it sits in the source.
#[tokio::test(flavor = "multi_thread")]
async fn portrait_source_is_scaled_not_cropped() {
    let kind = Kind { file: "in_portrait.mp4", video: "video/x-h264", audio: "audio/mpeg", display: (608, 1080) };
    let truth = kind.truth();
    let clip = truth.clip(1.5, 3.0);
    let path = CropPath::new(&clip.crop_path, kind.display, 9.0 / 16.0);
    for t in [1.5, 2.0, 2.5, 3.0] {
        let w = path.window_at(t);
        assert_eq!((w.x, w.y, w.w, w.h), (0, 0, 608, 1080), "window at {t}");
    }
    let dir = tempfile::tempdir().unwrap();
    // Over 1.5..3.0 s the face moves from x 100 to about 390 of 608.
    let lo = truth.face_at(1.5)[0] / 608.0 - 0.1;
    let hi = truth.face_at(3.0)[0] / 608.0 + 0.1;
    render_and_check(&kind, clip, dir.path(), lo..=hi).await;

    let info = engine().probe(&fixture(kind.file)).await.unwrap();
    assert_eq!(info.video.unwrap().display_size(), (608, 1080));
}

/// A 4K 60 fps source: probed, its face frames read at a few per second, and a clip rendered
/// at 30 fps (every other frame dropped before any conversion).
#[tokio::test(flavor = "multi_thread")]
async fn uhd_60fps_source_renders() {
    let kind = Kind { file: "in_uhd60.mp4", video: "video/x-h264", audio: "audio/mpeg", display: (3840, 2160) };
    let info = engine().probe(&fixture(kind.file)).await.unwrap();
    assert!((info.video.as_ref().unwrap().fps - 60.0).abs() < 0.01);
    check(kind).await;
}

/// Original mode without captions copies the stream where MP4 can carry the codecs as they are,
/// from any container (MPEG-TS's byte-stream H.264 included); VP9, which GStreamer 1.22's mp4mux
/// cannot take, is re-encoded instead.
#[tokio::test(flavor = "multi_thread")]
async fn stream_copy_from_other_containers() {
    let dir = tempfile::tempdir().unwrap();
    for (file, video, audio) in [
        ("in_h264_mp3.ts", "video/x-h264", "audio/mpeg"),
        ("in_h264_aac.mov", "video/x-h264", "audio/mpeg"),
        ("in_hevc_aac.mp4", "video/x-h265", "audio/mpeg"),
        ("in_hevc_ac3.mkv", "video/x-h265", "audio/x-ac3"),
        ("in_av1_opus.mkv", "video/x-av1", "audio/x-opus"),
    ] {
        let truth = truth(&format!("{}.truth.json", file.rsplit_once('.').unwrap().0));
        let mut clip = truth.clip(2.1, 3.9);
        clip.mode = Mode::Original;
        clip.captions.enabled = false;
        let out = dir.path().join(format!("{file}.copy.mp4"));
        let req = RenderRequest { input: fixture(file), clip, default_size: Size::VERTICAL_1080, out: out.clone() };
        let rendered = engine().render(req, Control::default()).await.unwrap();
        let info = engine().probe(&out).await.unwrap();
        let v = info.video.unwrap();
        assert_eq!((v.mime.as_str(), v.width, v.height), (video, 1280, 720), "{file}");
        assert_eq!(info.audio.unwrap().mime, audio, "{file}");
        assert!(rendered.copied(), "{file} was re-encoded");
        // Copy starts on the keyframe at or before 2.1 s (every 2 s): 2.0 s, or earlier where
        // the demuxer's seek is approximate (MPEG-TS has no index).
        assert!(rendered.start <= 2.05 && rendered.end >= 3.85, "{file}: {}..{}", rendered.start, rendered.end);
        assert!((info.duration - (rendered.end - rendered.start)).abs() < 0.15, "{file}: duration {}", info.duration);

        // The flash and the beep as far apart as in the source.
        let (src_flash, src_beep) = flash_and_beep(&fixture(file), rendered.start, rendered.end, dir.path()).await;
        let (flash, beep) = flash_and_beep(&out, 0.0, info.duration, dir.path()).await;
        let (gap, src_gap) = (beep - flash, src_beep - src_flash);
        assert!((gap - src_gap).abs() <= 0.040, "{file}: beep - flash {gap:.3} s, in the source {src_gap:.3} s");
    }

    let truth = truth("in_vp9_opus.truth.json");
    let mut clip = truth.clip(2.1, 3.9);
    clip.mode = Mode::Original;
    clip.captions.enabled = false;
    let out = dir.path().join("vp9.mp4");
    let req = RenderRequest { input: fixture("in_vp9_opus.webm"), clip, default_size: Size::VERTICAL_1080, out: out.clone() };
    let rendered = engine().render(req, Control::default()).await.unwrap();
    assert!(!rendered.copied());
    let info = engine().probe(&out).await.unwrap();
    assert_eq!((info.video.unwrap().mime.as_str(), info.audio.unwrap().mime.as_str()), ("video/x-h264", "audio/mpeg"));
}




/// YouTube-style separate streams (a video-only and an audio-only file, as yt-dlp downloads a
/// DASH pair) joined by the engine's remux: MP4 where mp4mux carries both codecs, Matroska for
/// VP9 and Vorbis; progress reported; then rendered with sound and picture in sync.
#[tokio::test(flavor = "multi_thread")]
async fn separate_video_and_audio_are_remuxed_per_codec_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let truth = truth("in_vp9_opus.truth.json");
    for (video, audio, container, mimes) in [
        ("in_dash_vp9.webm", "in_dash_opus.webm", "mkv", ("video/x-vp9", "audio/x-opus")),
        ("in_dash_vp9.webm", "in_dash_vorbis.webm", "mkv", ("video/x-vp9", "audio/x-vorbis")),
        ("in_dash_av1.mkv", "in_dash_opus.webm", "mp4", ("video/x-av1", "audio/x-opus")),
    ] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let report = seen.clone();
        let ctl = Control::with_progress(move |f| report.lock().unwrap().push(f));
        let out = dir.path().join(format!("{video}-{audio}.joined"));
        let joined = engine().remux(&fixture(video), &fixture(audio), &out, ctl).await.unwrap();
        assert_eq!(joined.container, container, "{video} + {audio}");
        assert_eq!(joined.path, out.with_extension(container));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.last(), Some(&1.0), "{video} + {audio}: progress {seen:?}");
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {seen:?}");

        let info = engine().probe(&joined.path).await.unwrap();
        assert_eq!((info.video.as_ref().unwrap().mime.as_str(), info.audio.as_ref().unwrap().mime.as_str()), mimes);
        assert!((info.duration - truth.duration).abs() < 0.15, "duration {}", info.duration);

        // The joined file renders, the flash and beep as far apart as in the source.
        let clip = truth.clip(1.0, 3.0);
        let rendered = dir.path().join("clip.mp4");
        let req = RenderRequest { input: joined.path.clone(), clip, default_size: Size::VERTICAL_1080, out: rendered.clone() };
        engine().render(req, Control::default()).await.unwrap();
        let (src_flash, src_beep) = flash_and_beep(&joined.path, 1.0, 3.0, dir.path()).await;
        let (flash, beep) = flash_and_beep(&rendered, 0.0, 2.0, dir.path()).await;
        assert!((src_flash - truth.sync_marks[0]).abs() < 0.034, "{video}: flash at {src_flash}");
        assert!((src_beep - src_flash).abs() <= 0.040, "{video} + {audio}: beep at {src_beep}, flash at {src_flash}");
        assert!((flash - (src_flash - 1.0)).abs() < 0.034, "flash at {flash}");
        assert!((beep - flash).abs() <= 0.040, "{video} + {audio}: clip's beep at {beep}, flash at {flash}");
    }
}


