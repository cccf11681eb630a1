//! The clip a viewer sees on harder footage, `clipmill clip` run as a user runs it on generated
//! media with known truth (scripts/gen_media_scenes.py): two people taking turns, scenery with
//! face-like patterns and no face, a video without audio, a file cut short, a talk that repeats.

mod common;

use std::path::{Path, PathBuf};

use clipmill::edit::{CropKey, CropPath, EditFile, Mode};
use clipmill::media::TimeRange;
use common::*;
use serde::Deserialize;

/// Runs `clip` on a fixture; returns the output folder, its edit.json and clips.json.
fn clip(dir: &Path, fixture_name: &str, args: &[&str]) -> (PathBuf, EditFile, serde_json::Value) {
    clip_with(dir, fixture_name, args, "auto")
}

/// `clip` with the face detector's backend set (`auto` is MediaPipe, `haar` its fallback).
fn clip_with(dir: &Path, fixture_name: &str, args: &[&str], backend: &str) -> (PathBuf, EditFile, serde_json::Value) {
    let out = dir.join("out");
    let output = clipmill(&dir.join("scratch")).env("CLIPMILL__FACES__BACKEND", backend).arg("clip").arg(fixture(fixture_name)).arg("--out").arg(&out).args(args).output().unwrap();
    assert!(output.status.success(), "clip {fixture_name} failed: {}", String::from_utf8_lossy(&output.stderr));
    let edit = EditFile::from_json(&std::fs::read_to_string(out.join("edit.json")).unwrap()).expect("edit.json is a valid EDIT.json");
    let listing = serde_json::from_str(&std::fs::read_to_string(out.join("clips.json")).unwrap()).unwrap();
    (out, edit, listing)
}

#[derive(Deserialize)]
struct Interview {
    speakers: Vec<Speaker>,
    turns: Vec<Turn>,
    fps: f64,
}

#[derive(Deserialize)]
struct Speaker {
    face_centers: Vec<[f64; 2]>,
}

#[derive(Deserialize)]
struct Turn {
    speaker: usize,
    start: f64,
    end: f64,
}

impl Interview {
    fn face(&self, speaker: usize, t: f64) -> [f64; 2] {
        let centres = &self.speakers[speaker].face_centers;
        centres[((t * self.fps).round() as usize).min(centres.len() - 1)]
    }

    /// Who speaks at `t` (both in an overlap); `None` when nobody does (in a pause either face
    /// is right) or within `settle` seconds after the floor changes hands.
    fn speaking(&self, t: f64, settle: f64) -> Option<Vec<usize>> {
        let mut changes = self.turns.windows(2).filter(|w| w[0].speaker != w[1].speaker).map(|w| w[1].start);
        if changes.any(|c| t >= c && t < c + settle) {
            return None;
        }
        let now: Vec<usize> = self.turns.iter().filter(|u| u.start <= t && t < u.end).map(|u| u.speaker).collect();
        (!now.is_empty()).then_some(now)
    }
}

/// The crop window's centre x and width at source time `t` (a 1920x1080 source).
fn window(path: &[CropKey], t: f64, aspect: f64) -> (f64, f64) {
    let rect = CropPath::new(path, (1920, 1080), aspect).window_at(t);
    (rect.x as f64 + rect.w as f64 / 2.0, rect.w as f64)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_people_taking_turns_the_crop_follows_whoever_speaks() {
    follows_the_speaker("auto").await;
}

/// The Haar fallback has no landmarks: the mouth region's change between samples decides.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_haar_fallback_the_crop_still_follows_whoever_speaks() {
    follows_the_speaker("haar").await;
}

async fn follows_the_speaker(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--mode", "track", "--clips", "1", "--min-len", "20", "--max-len", "31"];
    let (out, edit, _) = clip_with(dir.path(), "interview.mp4", &args, backend);
    let truth: Interview = serde_json::from_str(&std::fs::read_to_string(fixture("interview.truth.json")).unwrap()).unwrap();
    let clip = &edit.clips[0];
    assert_eq!(clip.mode, Mode::Track);

    // Sampled at 2 fps while someone speaks, away from the half second after the floor changes
    // hands, the window's centre is on the face of the person speaking.
    let (mut right, mut counted) = (0, 0);
    let mut t = clip.start;
    while t < clip.end {
        if let Some(speakers) = truth.speaking(t, 0.5) {
            counted += 1;
            let (cx, w) = window(&clip.crop_path, t, 1080.0 / 1920.0);
            if speakers.iter().any(|&s| (truth.face(s, t)[0] - cx).abs() < 0.2 * w) {
                right += 1;
            }
        }
        t += 0.5;
    }
    assert!(right as f64 >= 0.9 * counted as f64, "{backend}: the speaker is centred in {right}/{counted} samples; follows {:?}", clip.follows);

    // At most one cut per change of speaker, and edit.json says whom it followed.
    let changes = truth.turns.windows(2).filter(|w| w[0].speaker != w[1].speaker && w[1].start > clip.start && w[1].start < clip.end).count();
    assert!(clip.follows.len() >= 2 && clip.follows.len() - 1 <= changes, "{} switches for {changes} changes of speaker", clip.follows.len() - 1);
    assert!(clip.crop_path.iter().filter(|k| k.cut).count() <= changes);

    // As a viewer sees it: a face in the middle of the frame.
    let file = out.join("clip-01.mp4");
    let (raw, _) = frames(&file, TimeRange::new(0.0, clip.end - clip.start - 0.1), 2.0, 540, dir.path()).await;
    let faces = detect_faces(&raw, "auto");
    let centred = faces.iter().filter(|(_, f)| f.is_some_and(|[x, _]| (162.0..=378.0).contains(&x))).count();
    assert!(centred as f64 >= 0.9 * faces.len() as f64, "a face centred in {centred}/{} frames", faces.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn split_puts_each_person_in_a_panel_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (out, edit, listing) = clip(dir.path(), "interview.mp4", &["--mode", "split", "--clips", "1", "--min-len", "8", "--max-len", "14"]);
    let clip = &edit.clips[0];
    assert_eq!(clip.mode, Mode::Split, "{listing}");
    let truth: Interview = serde_json::from_str(&std::fs::read_to_string(fixture("interview.truth.json")).unwrap()).unwrap();
    let mid = (clip.start + clip.end) / 2.0;
    let panel = 1080.0 / 960.0;
    let (top_x, top_w) = window(&clip.crop_path, mid, panel);
    let (bottom_x, bottom_w) = window(&clip.crop_path_bottom, mid, panel);
    assert!((truth.face(0, mid)[0] - top_x).abs() < 0.15 * top_w, "top panel on the left person");
    assert!((truth.face(1, mid)[0] - bottom_x).abs() < 0.15 * bottom_w, "bottom panel on the right person");

    // Both halves of the picture show a face.
    let file = out.join("clip-01.mp4");
    let (raw, frames) = frames(&file, TimeRange::new(0.5, 2.5), 1.0, 540, dir.path()).await;
    assert_eq!(frames.header.height, 960);
    for (t, faces) in detect_all_faces(&raw, "auto") {
        let ys: Vec<f64> = faces.iter().map(|[_, y]| *y).collect();
        assert!(ys.iter().any(|&y| y < 480.0) && ys.iter().any(|&y| y > 480.0), "at {t} s faces at y {ys:?}");
    }
}

#[test]
fn scenery_without_a_face_keeps_the_crop_centred_and_says_so() {
    for backend in ["auto", "haar"] {
        scenery_keeps_the_crop_centred(backend);
    }
}

fn scenery_keeps_the_crop_centred(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--mode", "track", "--clips", "1", "--min-len", "10", "--max-len", "18"];
    let (_, edit, listing) = clip_with(dir.path(), "scenery.mp4", &args, backend);
    let clip = &edit.clips[0];
    let fallbacks = listing["clips"][0]["meta"]["fallbacks"].to_string();
    assert!(fallbacks.contains("none confirmed"), "{backend}: {fallbacks}");
    let mut t = clip.start;
    let (mut centred, mut n) = (0, 0);
    while t < clip.end {
        let (cx, _) = window(&clip.crop_path, t, 1080.0 / 1920.0);
        centred += usize::from((cx - 960.0).abs() <= 0.05 * 1920.0);
        n += 1;
        t += 0.5;
    }
    assert!(centred as f64 >= 0.95 * n as f64, "{backend}: centred in {centred}/{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_video_without_audio_is_clipped_from_the_picture_without_captions() {
    let dir = tempfile::tempdir().unwrap();
    let (out, edit, listing) = clip(dir.path(), "broll.mp4", &["--clips", "2", "--min-len", "3", "--max-len", "6"]);
    assert_eq!(edit.clips.len(), 2);
    assert!(listing["fallbacks"].to_string().contains("no audio track"), "{listing}");
    // Each clip shows one shot: no cut inside, no flash of the shot before or after.
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("broll.truth.json")).unwrap()).unwrap();
    let cuts: Vec<f64> = truth["shots"].as_array().unwrap().iter().skip(1).map(|s| s["start"].as_f64().unwrap()).collect();
    for clip in &edit.clips {
        assert!(cuts.iter().all(|&c| c <= clip.start + 0.05 || c >= clip.end - 0.05), "{}..{} spans a cut of {cuts:?}", clip.start, clip.end);
    }
    for (entry, clip) in listing["clips"].as_array().unwrap().iter().zip(&edit.clips) {
        assert!(entry["captions"].is_null() && clip.words.is_empty(), "{entry}");
        let info = engine().probe(&out.join(entry["file"].as_str().unwrap())).await.unwrap();
        assert!(info.video.is_some() && info.audio.is_none());
        assert!((info.duration - (clip.end - clip.start)).abs() < 0.2);
    }
}

#[test]
fn a_source_cut_short_is_clipped_from_its_readable_part_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, edit, listing) = clip(dir.path(), "cutshort.mp4", &["--clips", "2", "--min-len", "5", "--max-len", "9"]);
    let truncated = &listing["source_truncated"];
    let (declared, readable) = (truncated["declared_s"].as_f64().unwrap(), truncated["readable_s"].as_f64().unwrap());
    assert!((declared - 90.0).abs() < 1.0 && (33.0..=36.0).contains(&readable), "{truncated}");
    assert!(!edit.clips.is_empty() && edit.clips.iter().all(|c| c.end <= readable + 0.01), "clips past the readable part");
}

#[derive(Deserialize)]
struct Talk {
    sentences: Vec<TruthSentence>,
}

#[derive(Deserialize)]
struct TruthSentence {
    text: String,
    start: f64,
    end: f64,
}

#[test]
fn a_talk_that_repeats_itself_gives_clips_that_each_say_something_else() {
    let dir = tempfile::tempdir().unwrap();
    let (_, edit, _) = clip(dir.path(), "repeat.mp4", &["--clips", "3", "--min-len", "2", "--max-len", "5"]);
    let truth: Talk = serde_json::from_str(&std::fs::read_to_string(fixture("repeat.truth.json")).unwrap()).unwrap();
    let said: Vec<Vec<&str>> = edit
        .clips
        .iter()
        .map(|c| truth.sentences.iter().filter(|s| s.start >= c.start - 0.05 && s.end <= c.end + 0.05).map(|s| s.text.as_str()).collect())
        .collect();
    assert_eq!(said.len(), 3);
    for (i, a) in said.iter().enumerate() {
        assert!(!a.is_empty(), "clip {} holds no whole sentence", i + 1);
        for b in &said[i + 1..] {
            assert!(a.iter().all(|s| !b.contains(s)), "two clips say the same: {a:?} and {b:?}");
        }
    }
}
