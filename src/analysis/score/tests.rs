use super::*;

fn talk() -> Vec<Word> {
    let text = "We start slowly here. Nothing much. Did you know the answer? It is 42! Then we rest. And we end.";
    let mut t = 0.0;
    let mut words = Vec::new();
    for w in text.split_whitespace() {
        words.push(Word { text: w.into(), start: t, end: t + 0.3 });
        t += if w.ends_with(['.', '?', '!']) { 1.2 } else { 0.4 };
    }
    words
}

#[test]
fn windows_snap_to_sentences_and_favour_a_hook() {
    let words = talk();
    let loud = Loudness { rms: vec![0.1; 200] };
    let picked = heuristic(&words, &loud, 20.0, 2, 2.0, 4.0);
    assert_eq!(picked.len(), 2);
    assert!(picked[0].hook.starts_with("Did you know"), "{picked:?}");
    for c in &picked {
        assert!(c.end - c.start <= 4.0 + 1e-9 && c.end - c.start >= 2.0);
        assert!(words.iter().all(|w| w.end <= c.start || w.start >= c.end || (w.start >= c.start && w.end <= c.end)), "cuts a word");
    }
    assert!(picked[1].end <= picked[0].start || picked[1].start >= picked[0].end);
    assert_eq!(picked, heuristic(&words, &loud, 20.0, 2, 2.0, 4.0), "deterministic");
}

#[test]
fn a_talk_that_repeats_gives_different_clips() {
    let block = "The river rises every spring. Farmers move their goats uphill. Then the rain stops!";
    let mut t = 0.0;
    let mut words = Vec::new();
    for _ in 0..4 {
        for w in block.split_whitespace() {
            words.push(Word { text: w.into(), start: t, end: t + 0.3 });
            t += if w.ends_with(['.', '?', '!']) { 1.2 } else { 0.4 };
        }
        t += 2.0;
    }
    let picked = heuristic(&words, &Loudness { rms: vec![0.1; 1000] }, t, 3, 2.0, 4.0);
    assert!(!picked.is_empty());
    for (i, a) in picked.iter().enumerate() {
        for b in &picked[i + 1..] {
            assert!(!repeats(&a.text, &b.text), "{:?} repeats {:?}", a.text, b.text);
        }
    }
    // Each sentence appears once in the whole talk's windows of one sentence.
    let sentences = heuristic(&words, &Loudness { rms: vec![0.1; 1000] }, t, 10, 0.5, 3.0);
    assert!(sentences.len() <= 3, "only three different sentences exist: {sentences:?}");
}

#[test]
fn a_start_moves_back_to_speech_the_transcript_missed() {
    // Words from 10 s; the audio has speech from 8.6 s (two missed words, a 0.3 s pause).
    let words: Vec<Word> = (0..8).map(|i| Word { text: if i == 7 { "end.".into() } else { "w".into() }, start: 10.0 + i as f64 * 0.4, end: 10.3 + i as f64 * 0.4 }).collect();
    let mut rms = vec![0.0f32; 200];
    for (i, v) in rms.iter_mut().enumerate() {
        let t = i as f64 * STEP;
        if (8.6..9.5).contains(&t) || (9.8..13.2).contains(&t) {
            *v = 0.5;
        }
    }
    let picked = heuristic(&words, &Loudness { rms }, 20.0, 1, 2.0, 10.0);
    assert!((picked[0].start - 8.4).abs() < 0.15, "{:?}", picked[0]);
}

#[test]
fn a_transcript_without_punctuation_or_pauses_still_gives_clips() {
    let words: Vec<Word> = (0..60).map(|i| Word { text: format!("w{i}"), start: i as f64 * 0.5, end: i as f64 * 0.5 + 0.5 }).collect();
    let picked = heuristic(&words, &Loudness { rms: vec![0.1; 300] }, 30.0, 2, 6.0, 10.0);
    assert_eq!(picked.len(), 2, "{picked:?}");
    assert!(picked.iter().all(|c| c.end - c.start <= 10.0 + 1e-9));
}

#[test]
fn a_chapter_start_cuts_a_sentence_and_windows_keep_within_chapters() {
    // One unpunctuated run of words; a chapter starts at 6 s, inside it.
    let words: Vec<Word> = (0..24).map(|i| Word { text: format!("w{i}"), start: i as f64 * 0.5, end: i as f64 * 0.5 + 0.4 }).collect();
    let meta = SourceMeta {
        chapters: vec![
            super::super::source_meta::Chapter { start: 0.0, end: 6.0, title: "One".into() },
            super::super::source_meta::Chapter { start: 6.0, end: 12.0, title: "Two".into() },
        ],
        ..Default::default()
    };
    let cut = sentences_cut(&words, 20.0, &meta.chapter_cuts());
    assert_eq!(cut.iter().map(|s| s.start).collect::<Vec<_>>(), [0.0, 6.0], "{cut:?}");
    let picked = heuristic_with(&words, &Loudness { rms: vec![0.1; 120] }, 12.0, 2, 4.0, 7.0, Some(&meta));
    assert_eq!(picked.len(), 2, "{picked:?}");
    for c in &picked {
        assert!(c.end <= 6.0 + PAD + 1e-9 || c.start >= 6.0 - PAD - 1e-9, "{c:?} spans two chapters");
        assert!(c.reason.contains("opens chapter"), "{c:?}");
        assert!(c.scores.hook >= 5.0 && c.scores.total == c.score, "{:?}", c.scores);
    }
}

#[test]
fn no_words_falls_back_to_loudness_windows() {
    let mut rms = vec![0.05f32; 600];
    rms[300..400].iter_mut().for_each(|v| *v = 0.5);
    let picked = heuristic(&[], &Loudness { rms }, 60.0, 1, 10.0, 10.0);
    assert_eq!(picked.len(), 1);
    assert!(picked[0].start >= 25.0 && picked[0].end <= 45.0, "{:?}", picked[0]);
}
