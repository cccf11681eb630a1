//! Captions as a viewer reads them: whole written tokens ("$1,500", "30%") from the real
//! transcriber to the burned-in frames and the sidecars, the presets' looks, and the helpers that
//! compare captions with what was said.

mod common;

use std::path::Path;
use std::time::Duration;

use clipmill::analysis::transcribe::Transcript;
use clipmill::edit::captions::Preset;
use clipmill::edit::{CaptionStyle, EditFile, Size};
use clipmill::media::{Control, RenderRequest, TimeRange};
use common::server::{KEY_A, TestServer, follow_job, talk_url};
use common::subtitles::srt_cues;
use common::words::{in_order, normalise, spell};
use common::*;
use serde_json::json;

/// A word as a token of caption text: sentence punctuation after it does not make it another word.
fn token(word: &str) -> &str {
    word.trim_end_matches(['.', ',', '?', '!'])
}

/// `clipmill clip` on the numbers talk: one clip of the whole of it, with the real workers.
#[tokio::test(flavor = "multi_thread")]
async fn numbers_and_currency_stay_whole_from_the_transcript_to_the_burned_captions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let status = clipmill(&dir.path().join("scratch"))
        .arg("clip")
        .arg(fixture("numbers.mp4"))
        // Only the whole talk is 18..22 s long, so the clip holds every sentence.
        .args(["--out", out.to_str().unwrap(), "--clips", "1", "--min-len", "18", "--max-len", "22"])
        .status()
        .unwrap();
    assert!(status.success());

    // The transcript holds the written tokens whole: no orphaned "%" or ",500" pieces.
    let transcript: Transcript = serde_json::from_str(&std::fs::read_to_string(out.join("transcript.json")).unwrap()).unwrap();
    let words = transcript.words();
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    assert!(!texts.iter().any(|t| *t == "%" || t.starts_with(',') || t.trim() != *t || t.is_empty()), "pieces left: {texts:?}");
    let truth = truth("numbers.truth.json");
    let written: Vec<&str> = truth.sentences.iter().flat_map(|s| &s.words).map(|w| w.word.as_str()).collect();
    let whole = |sign: char| written.iter().filter(|w| w.contains(sign)).filter(|w| texts.iter().any(|t| token(t) == **w)).count();
    assert!(whole('$') >= 1 && whole('%') >= 1, "no currency or percentage came back whole: {texts:?}");
    let money = *written.iter().find(|w| w.starts_with('$') && texts.iter().any(|t| token(t) == **w)).expect("a whole amount");

    // EDIT.json carries the same words.
    let edit = EditFile::from_json(&std::fs::read_to_string(out.join("edit.json")).unwrap()).unwrap();
    let clip = &edit.clips[0];
    let inside: Vec<_> = words.iter().filter(|w| w.end > clip.start && w.start < clip.end).cloned().collect();
    assert_eq!(clip.words, inside);

    // Every SRT cue says exactly the transcript's words spoken while it shows, the amount whole.
    let srt = std::fs::read_to_string(out.join("clip-01.srt")).unwrap();
    let cues = srt_cues(&srt);
    for cue in &cues {
        let (from, to) = (cue.start + clip.start, cue.end + clip.start);
        let spoken: Vec<&str> =
            words.iter().filter(|w| (from..to).contains(&((w.start + w.end) / 2.0))).map(|w| w.text.as_str()).collect();
        assert_eq!(cue.text.split_whitespace().collect::<Vec<_>>(), spoken, "cue {cue:?}");
    }
    assert_eq!(cues.iter().map(|c| c.text.split_whitespace().count()).sum::<usize>(), inside.len(), "every word in a cue");
    assert!(srt.split_whitespace().any(|t| token(t) == money), "{money} not whole in {srt}");
    let vtt = std::fs::read_to_string(out.join("clip-01.vtt")).unwrap();
    assert!(vtt.split_whitespace().any(|t| token(t) == money), "{money} not whole in {vtt}");

    // And the frames show it whole: OCR of the caption band while the amount is spoken.
    let said = words.iter().find(|w| token(&w.text) == money).unwrap();
    let (from, to) = (said.start - clip.start, said.end - clip.start);
    let (_, frames) = frames(&out.join("clip-01.mp4"), TimeRange::new(from, to), 5.0, 1080, dir.path()).await;
    let read: Vec<String> = frames.frames.iter().map(|(_, f)| ocr_captions(&frames, f, (0.60, 0.80), dir.path())).collect();
    assert!(read.iter().any(|text| text.split_whitespace().any(|t| token(t) == money)), "{money} not read whole in {read:?}");
}

/// A job asks for a caption style over the API: refused with the reason when wrong, and when
/// right, recorded on the job and burned into its clips (here: one word per cue).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_chooses_its_caption_preset_over_the_api() {
    let server = TestServer::start(|_| {}).await;
    let url = talk_url().await;
    for (captions, needle) in [
        (json!({"preset": "fancy"}), "unknown variant `fancy`"),
        (json!({"preset": "word", "size": 2}), "options.captions.size must be within 0.01..=0.3"),
        (json!("word"), "options.captions must be true, false or a caption style object"),
    ] {
        let body = json!({ "url": url, "options": { "captions": captions } }).to_string();
        let resp = server.post_json(KEY_A, "/api/jobs", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err = resp.json::<serde_json::Value>().await.unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains(needle), "{body}: {err}");
    }

    // The tenant's stream is open before the job exists, so its end cannot be missed.
    let mut ws = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    assert_eq!(ws.json(Duration::from_secs(10)).await["type"], "snapshot");
    let options = json!({ "clips": 1, "min_len": 5, "max_len": 8, "captions": { "preset": "word" } });
    let id = server.create(KEY_A, json!({ "url": url, "options": options })).await;
    let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["options"]["captions"], json!({"enabled": true, "preset": "word"}), "{job}");
    follow_job(&mut ws, &id, Duration::from_secs(240)).await;

    let result = server.get_json(KEY_A, &format!("/api/jobs/{id}/result")).await;
    let srt_url = result["clips"][0]["urls"]["srt"].as_str().unwrap_or_else(|| panic!("no srt url: {result}"));
    let srt = server.http.get(srt_url).send().await.unwrap().text().await.unwrap();
    let cues = srt_cues(&srt);
    assert!(cues.len() >= 5 && cues.iter().all(|c| c.text.split_whitespace().count() == 1), "{srt}");
    assert!(cues.iter().all(|c| c.text == c.text.to_uppercase()), "the word preset is upper-case: {srt}");
}

fn render_talk(style: CaptionStyle, start: f64, end: f64, out: &Path) -> RenderRequest {
    let mut clip = truth("talk.truth.json").clip(start, end);
    clip.captions = style;
    RenderRequest { input: fixture("talk.mp4"), clip, default_size: Size::VERTICAL_1080, out: out.to_path_buf() }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_word_preset_shows_one_word_at_a_time() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("word.mp4");
    let (start, end) = (3.0, 9.0);
    let style = CaptionStyle { preset: Some(Preset::Word), ..Default::default() };
    let rendered = engine().render(render_talk(style, start, end, &out), Control::default()).await.unwrap();
    let cues = srt_cues(&std::fs::read_to_string(rendered.srt.unwrap()).unwrap());
    let spoken: Vec<_> = truth.sentences.iter().flat_map(|s| &s.words).filter(|w| w.end > start && w.start < end).collect();
    assert_eq!(cues.len(), spoken.len(), "one cue per word: {cues:?}");
    assert!(cues.iter().zip(&spoken).all(|(c, w)| c.text == w.word.to_uppercase()), "{cues:?}");

    // On screen at each word's middle: that word alone (the word preset sits at 65% of the height).
    let (_, frames) = frames(&out, TimeRange::new(0.0, end - start), 10.0, 1080, dir.path()).await;
    let mut alone = 0;
    let mut misses = Vec::new();
    for word in spoken.iter().filter(|w| w.word.len() >= 3) {
        let mid = (word.start + word.end) / 2.0 - start;
        let (_, frame) = frames.frames.iter().min_by(|a, b| (a.0 - mid).abs().total_cmp(&(b.0 - mid).abs())).unwrap();
        let text = ocr_captions(&frames, frame, (0.55, 0.75), dir.path());
        if text.split_whitespace().collect::<Vec<_>>() == [word.word.as_str()] {
            alone += 1;
        } else {
            misses.push(format!("{} -> {text:?}", word.word));
        }
    }
    let checked = spoken.iter().filter(|w| w.word.len() >= 3).count();
    assert!(checked >= 5 && alone as f64 >= 0.8 * checked as f64, "{alone}/{checked} read alone; misses: {misses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_boxed_preset_draws_the_words_on_a_dark_box() {
    let truth = truth("talk.truth.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("boxed.mp4");
    let (start, end) = (3.0, 7.0);
    let style = CaptionStyle { preset: Some(Preset::Boxed), ..Default::default() };
    engine().render(render_talk(style, start, end, &out), Control::default()).await.unwrap();

    let word = truth.sentences.iter().flat_map(|s| &s.words).find(|w| w.start >= start + 0.5 && w.word.len() >= 4).unwrap();
    let mid = (word.start + word.end) / 2.0 - start;
    let (_, frames) = frames(&out, TimeRange::new(mid - 0.05, mid + 0.05), 10.0, 1080, dir.path()).await;
    let (_, frame) = &frames.frames[0];
    let text = ocr_captions(&frames, frame, (0.62, 0.82), dir.path());
    assert!(text.contains(&word.word), "{} not in {text:?}", word.word);

    // The box: around the white letters, the frame is far darker than the same columns above it.
    let luma = |x: u32, y: u32| {
        let [r, g, b] = frames.pixel(frame, x, y);
        0.2126 * r as f64 + 0.7152 * g as f64 + 0.0722 * b as f64
    };
    let (w, h) = (frames.header.width, frames.header.height);
    let band = (h as f64 * 0.62) as u32..(h as f64 * 0.82) as u32;
    let white: Vec<(u32, u32)> = band.flat_map(|y| (0..w).map(move |x| (x, y))).filter(|&(x, y)| luma(x, y) > 215.0).collect();
    let (x0, x1) = (white.iter().map(|p| p.0).min().unwrap(), white.iter().map(|p| p.0).max().unwrap());
    let (y0, y1) = (white.iter().map(|p| p.1).min().unwrap(), white.iter().map(|p| p.1).max().unwrap());
    let mean = |ys: std::ops::Range<u32>| {
        let values: Vec<f64> = ys.flat_map(|y| (x0..=x1).map(move |x| (x, y))).map(|(x, y)| luma(x, y)).filter(|&l| l <= 215.0).collect();
        values.iter().sum::<f64>() / values.len() as f64
    };
    let (inside, above) = (mean(y0..y1 + 1), mean(y0 - 150..y0 - 100));
    assert!(inside < 0.6 * above, "box luma {inside:.0}, above it {above:.0}");
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn normalised_words_spell_out_numbers_currency_and_percentages() {
    for (written, spoken) in [
        ("We counted 300 birds.", "we counted three hundred birds"),
        ("It costs $5!", "it costs five dollars"),
        ("$1 each", "one dollar each"),
        ("Sales grew 30%.", "sales grew thirty percent"),
        ("$1,500", "one thousand five hundred dollars"),
        ("$5.50", "five dollars fifty cents"),
        ("1,000,001 and 999,999", "one million one and nine hundred ninety nine thousand nine hundred ninety nine"),
        ("3.14", "three point one four"),
        ("the 21st and 2nd", "the twenty first and second"),
        ("twenty-one, U.S. don't", "twenty one us dont"),
        ("0 — 10", "zero ten"),
        ("1,5 x", "15 x"),
    ] {
        assert_eq!(normalise(written), words(spoken), "{written}");
    }
    assert_eq!(spell(40_012), words("forty thousand twelve"));
}

#[test]
fn words_in_order_count_a_slip_once_and_ignore_words_out_of_place() {
    let truth = words("we counted three hundred birds");
    assert_eq!(in_order(&truth, &words("we counted three hundred words")), 4);
    assert_eq!(in_order(&truth, &words("birds hundred three counted we")), 1);
    assert_eq!(in_order(&truth, &words("well we counted about three hundred birds today")), 5);
    assert_eq!(in_order(&truth, &[]), 0);
}

#[test]
fn srt_cues_read_back_with_times_and_lines() {
    let cues = srt_cues("1\n00:00:01,000 --> 00:00:02,250\nhello\nworld\n\n2\n01:00:00,000 --> 01:00:00,500\n$1,500\n\n");
    assert_eq!(cues.len(), 2);
    assert_eq!((cues[0].start, cues[0].end, cues[0].text.as_str()), (1.0, 2.25, "hello\nworld"));
    assert_eq!((cues[1].start, cues[1].text.as_str()), (3600.0, "$1,500"));
}
