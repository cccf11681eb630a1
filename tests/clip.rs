//! `clipmill clip` end to end, run as a user runs it: the binary on the generated talk, with the
//! real workers, checked clip by clip.

mod common;

use std::path::Path;

use clipmill::edit::EditFile;
use clipmill::media::TimeRange;
use common::http::{reply, serve};
use common::*;
use common::{subtitles, words};

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
    // What each stage used: the CPU-bound stages measured, the cost the sum of them per hour of
    // the 30-second source, and no GPU time on a machine without one.
    let (usage, cost) = (&listing["usage"]["stages"], &listing["usage"]["cost"]);
    for stage in ["audio", "transcribe", "faces", "render"] {
        let cpu = usage[stage]["cpu_s"].as_f64().unwrap();
        assert!(cpu > 0.0 && usage[stage]["wall_s"].as_f64().unwrap() > 0.0, "{stage}: {usage}");
    }
    assert!(usage["render"]["cpu_s"].as_f64() > usage["audio"]["cpu_s"].as_f64(), "{usage}");
    let total: f64 = usage.as_object().unwrap().values().map(|u| u["cpu_s"].as_f64().unwrap()).sum();
    assert!((cost["cpu_s"].as_f64().unwrap() - total).abs() < 0.01, "{cost} vs {usage}");
    assert!((29.0..31.0).contains(&cost["source_s"].as_f64().unwrap()), "{cost}");
    let per_hour = cost["cpu_s_per_source_hour"].as_f64().unwrap();
    assert!((per_hour - total * 3600.0 / cost["source_s"].as_f64().unwrap()).abs() < 1.0 && cost["usd_per_source_hour"].as_f64().unwrap() > 0.0, "{cost}");
    for (entry, clip) in clips.iter().zip(&edit.clips) {
        let (start, end) = (entry["start"].as_f64().unwrap(), entry["end"].as_f64().unwrap());
        assert_eq!(entry["meta"]["scorer"], "heuristic");
        assert!(entry["meta"]["score"].as_f64().is_some() && entry["meta"]["title"].as_str().is_some_and(|t| !t.is_empty()));
        // On sentence boundaries: no spoken word is cut.
        for w in truth.sentences.iter().flat_map(|s| &s.words) {
            assert!(w.end <= start || w.start >= end || (w.start >= start - 0.05 && w.end <= end + 0.05), "{start}..{end} cuts {w:?}");
        }
        // Captions carry the words spoken in the clip, in order. Compared as normalised words
        // (no case or punctuation, numbers spelled out: ASR writes "300" for "three hundred").
        // tiny.en slips a word or two per clip on espeak-ng speech, and which ones differs by
        // machine (int8 arithmetic differs by CPU: "birds" came back as "words" on one), so 70%
        // leaves room for that; captions of the wrong part of the talk, or none, stay far below.
        let srt = std::fs::read_to_string(out.join(entry["captions"].as_str().unwrap())).unwrap();
        let spoken: Vec<String> = truth
            .sentences
            .iter()
            .flat_map(|s| &s.words)
            .filter(|w| w.start >= start && w.end <= end)
            .flat_map(|w| words::normalise(&w.word))
            .collect();
        let heard = words::normalise(&subtitles::srt_text(&srt));
        let matched = words::in_order(&spoken, &heard);
        assert!(matched as f64 >= 0.7 * spoken.len() as f64, "{matched}/{} words in order: {spoken:?} in {heard:?}", spoken.len());
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

/// Face frames are decoded and detected at once, the detector reading the frame file as it is
/// written. A decode that fails (here a range past the end, refused before any frame is written)
/// ends the detection too, rather than leaving the worker waiting for frames that never come:
/// the clip is framed centred, and the next one as usual, on a fresh worker.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_face_decode_does_not_leave_the_detector_waiting() {
    use clipmill::job::Reframe;
    use clipmill::pipeline::Services;
    let dir = tempfile::tempdir().unwrap();
    let mut config = clipmill::config::Config::load(None).unwrap();
    config.scratch.dir = dir.path().join("scratch");
    let services = Services::new(&config).unwrap();
    let (talk, truth) = (fixture("talk.mp4"), truth("talk.truth.json"));
    let info = services.check_source(&talk).await.unwrap();

    let mut past_end = truth.clip(info.duration + 5.0, info.duration + 10.0);
    let started = std::time::Instant::now();
    let fallbacks = services.frame(&mut past_end, Reframe::Track, &talk, &info, dir.path()).await;
    assert!(fallbacks.len() == 1 && fallbacks[0].ends_with("→ centre crop"), "{fallbacks:?}");
    // The worker would wait a minute for a frame file that never appears.
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the detection was left waiting: {:?}", started.elapsed());

    let mut clip = truth.clip(5.0, 12.0);
    let fallbacks = services.frame(&mut clip, Reframe::Track, &talk, &info, dir.path()).await;
    assert!(fallbacks.is_empty() && !clip.crop_path.is_empty(), "{fallbacks:?}");
}
