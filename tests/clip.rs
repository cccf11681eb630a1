//! `clipmill clip` end to end, run as a user runs it: the binary on the generated talk, with the
//! real workers, checked clip by clip.

mod common;

use std::path::Path;
use std::process::Command;

use clipmill::edit::EditFile;
use clipmill::media::TimeRange;
use common::http::{reply, serve};
use common::*;

fn clipmill(scratch: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipmill"));
    cmd.env("CLIPMILL__SCRATCH__DIR", scratch)
        .env("CLIPMILL__PYTHON__INTERPRETER", python())
        .env("CLIPMILL__PYTHON__SCRIPTS", root().join("python"))
        .env("CLIPMILL__LOG__FILTER", "warn");
    cmd
}

fn clips_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("clips.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn clip_turns_the_talk_into_captioned_face_tracked_clips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let status = clipmill(&dir.path().join("scratch"))
        .arg("clip")
        .arg(fixture("talk.mp4"))
        .args(["--out", out.to_str().unwrap(), "--clips", "3", "--min-len", "5", "--max-len", "9"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!dir.path().join("scratch").join(format!("run-{}", std::process::id())).exists());

    let truth = truth("talk.truth.json");
    let edit = EditFile::from_json(&std::fs::read_to_string(out.join("edit.json")).unwrap()).expect("edit.json is a valid EDIT.json");
    let listing = clips_json(&out);
    let clips = listing["clips"].as_array().unwrap();
    assert_eq!((clips.len(), edit.clips.len()), (3, 3));
    for (entry, clip) in clips.iter().zip(&edit.clips) {
        let (start, end) = (entry["start"].as_f64().unwrap(), entry["end"].as_f64().unwrap());
        assert_eq!(entry["meta"]["scorer"], "heuristic");
        assert!(entry["meta"]["score"].as_f64().is_some() && entry["meta"]["title"].as_str().is_some_and(|t| !t.is_empty()));
        // On sentence boundaries: no spoken word is cut.
        for w in truth.sentences.iter().flat_map(|s| &s.words) {
            assert!(w.end <= start || w.start >= end || (w.start >= start - 0.05 && w.end <= end + 0.05), "{start}..{end} cuts {w:?}");
        }
        // Captions carry the words spoken in the clip.
        let srt = std::fs::read_to_string(out.join(entry["captions"].as_str().unwrap())).unwrap().to_lowercase();
        let spoken: Vec<_> = truth.sentences.iter().flat_map(|s| &s.words).filter(|w| w.start >= start && w.end <= end).collect();
        let heard = spoken.iter().filter(|w| srt.contains(&w.word)).count();
        assert!(heard as f64 >= 0.8 * spoken.len() as f64, "{heard}/{} words in {srt}", spoken.len());
        assert!(!clip.crop_path.is_empty(), "track clips carry their crop path");

        // The face stays in the middle 40% of the vertical frame.
        let file = out.join(entry["file"].as_str().unwrap());
        let (raw, frames) = frames(&file, TimeRange::new(0.0, end - start - 0.05), 3.0, 540, dir.path()).await;
        let flashes: Vec<bool> = frames.frames.iter().map(|(_, f)| frames.mean(f) > 235.0).collect();
        let faces: Vec<_> = detect_faces(&raw, "auto").into_iter().zip(flashes).filter(|(_, flash)| !flash).map(|(f, _)| f).collect();
        let centred = faces.iter().filter(|(_, f)| f.is_some_and(|[x, _]| (162.0..=378.0).contains(&x))).count();
        assert!(centred as f64 >= 0.95 * faces.len() as f64, "{} centred in {centred}/{}: {faces:?}", entry["file"], faces.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_face_and_a_failing_llm_degrade_gracefully_and_say_so() {
    let addr = serve(|_, _| async { reply(200, "application/json", "{\"choices\":[{\"message\":{\"content\":\"no json here\"}}]}") }).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = clipmill(&dir.path().join("scratch"))
        .env("CLIPMILL__SCORE__SCORER", "llm")
        .env("CLIPMILL__SCORE__LLM__BASE_URL", format!("http://{addr}/v1"))
        .arg("clip")
        .arg(fixture("noface.mp4"))
        .args(["--out", out.to_str().unwrap(), "--clips", "1", "--min-len", "3", "--max-len", "8"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listing = clips_json(&out);
    let fallbacks = listing["fallbacks"].to_string();
    assert!(fallbacks.contains("llm failed") && fallbacks.contains("heuristic"), "{fallbacks}");
    let clip = &listing["clips"][0];
    assert_eq!(clip["meta"]["scorer"], "heuristic");
    assert!(clip["meta"]["fallbacks"].to_string().contains("none confirmed → fit"), "{clip}");
    assert_eq!((clip["width"].as_u64(), clip["height"].as_u64()), (Some(1080), Some(1920)));
    assert!(out.join("clip-01.mp4").is_file());
}

#[test]
fn a_corrupt_source_fails_with_a_reason_and_writes_no_clips() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = clipmill(&dir.path().join("scratch"))
        .arg("clip")
        .arg(fixture("truncated.mp4"))
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error: input is unreadable or truncated") || stderr.contains("not a media file"), "{stderr}");
    assert!(std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn a_source_past_the_duration_limit_is_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = clipmill(&dir.path().join("scratch"))
        .env("CLIPMILL__FETCH__MAX_DURATION_S", "10")
        .arg("clip")
        .arg(fixture("talk.mp4"))
        .args(["--out", dir.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the limit is 10 s"), "{stderr}");
}
