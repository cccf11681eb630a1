//! The heuristic scorer (the embedded default): sentences from word timings, candidate windows
//! snapped to sentence boundaries, scored on speech density, loudness peaks, an opening hook
//! (question, exclamation, number) and little silence; the top N that do not overlap.
//! With the source's page metadata (`source_meta.rs`): sentences are cut at chapter starts, a
//! window that opens a chapter gains and one that spans two loses, and the "most replayed"
//! heatmap is a feature of its own. Every candidate carries sub-scores (`Scores`).
//! Deterministic: the same words, loudness, metadata and settings give the same clips.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::source_meta::SourceMeta;
use crate::edit::Word;

/// A candidate's sub-scores and total (plain data in `job.rs`). The heuristic derives them from
/// its features: `hook` from the opening (question, exclamation, number, the start of a chapter),
/// `flow` from speech density and little silence (less for a window that spans two chapters),
/// `payoff` from loudness, its peaks and the replay heatmap (and ending where a chapter ends);
/// `total` is the score it ranks by.
pub use crate::job::Scores;

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A moment worth clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub start: f64,
    pub end: f64,
    /// 0..10, higher is better.
    pub score: f64,
    pub title: String,
    pub hook: String,
    pub reason: String,
    /// "heuristic" or "llm".
    pub scorer: String,
    /// The transcript text of the window.
    #[serde(default)]
    pub text: String,
    /// Sub-scores and total (`scores.total == score`).
    #[serde(default)]
    pub scores: Scores,
}

/// Loudness as RMS per `STEP` seconds of a 16 kHz mono WAV.
#[derive(Debug, Clone, Default)]
pub struct Loudness {
    pub rms: Vec<f32>,
}

const STEP: f64 = 0.1;
/// A gap between words longer than this ends a sentence even without punctuation.
const SENTENCE_GAP: f64 = 0.7;
/// Windows start this much before the first word and end this much after the last.
const PAD: f64 = 0.2;
/// A 100 ms frame quieter than this fraction of the mean level is silence.
const SILENCE: f32 = 0.25;
/// Speech the transcript missed (heard before a sentence's first word, after a pause no longer
/// than `ONSET_PAUSE`) moves a clip's start back by at most this much.
const MAX_ONSET_SHIFT: f64 = 2.0;
const ONSET_PAUSE: f64 = 0.5;
/// Two clips repeat each other when this share of the shorter one's word triples is in the other
/// (one shared sentence out of two or three is already a repeat a viewer notices).
const REPEAT_SHARE: f64 = 0.3;

impl Loudness {
    /// Reads a 16-bit mono WAV as written by `media::extract_audio`. Blocking: use spawn_blocking.
    pub fn from_wav(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        let data = bytes.get(44..).unwrap_or_default();
        let per_step = (16_000.0 * STEP) as usize * 2;
        let rms = data
            .chunks(per_step)
            .map(|chunk| {
                let n = (chunk.len() / 2).max(1) as f64;
                let sum: f64 = chunk.chunks_exact(2).map(|s| (i16::from_le_bytes([s[0], s[1]]) as f64 / 32768.0).powi(2)).sum();
                (sum / n).sqrt() as f32
            })
            .collect();
        Ok(Self { rms })
    }

    /// Widens `[start, end)` (ASR word times, often a little late or early) out to the silence
    /// around the speech, plus a small pad, without crossing `lower`/`upper` (the neighbouring
    /// sentences): a clip must never begin or end inside a word.
    fn snap(&self, start: f64, end: f64, lower: f64, upper: f64, global: f32) -> (f64, f64) {
        let quiet = |i: usize| self.rms.get(i).is_none_or(|&v| v < SILENCE * global);
        let frame = |t: f64| (t / STEP).floor().max(0.0) as usize;
        let mut i = frame(start);
        while i > frame(lower) && !quiet(i) {
            i -= 1;
        }
        // Speech the transcript missed, just before: walk back through short pauses to its onset.
        let limit = frame((start - MAX_ONSET_SHIFT).max(lower));
        let pause = (ONSET_PAUSE / STEP).round() as usize;
        loop {
            let mut k = i;
            while k > limit && quiet(k) {
                k -= 1;
            }
            if quiet(k) || i - k > pause {
                break;
            }
            while k > limit && !quiet(k) {
                k -= 1;
            }
            if k == i {
                break;
            }
            i = k;
        }
        let mut j = frame(end);
        while j < frame(upper) && !quiet(j) {
            j += 1;
        }
        let speech_start = start.min((i + 1) as f64 * STEP);
        let speech_end = end.max(j as f64 * STEP);
        ((speech_start - PAD).max(lower).max(0.0), (speech_end + PAD).min(upper))
    }

    /// Seconds of audio measured.
    pub fn duration(&self) -> f64 {
        self.rms.len() as f64 * STEP
    }

    fn window(&self, start: f64, end: f64) -> &[f32] {
        let a = ((start / STEP) as usize).min(self.rms.len());
        let b = ((end / STEP).ceil() as usize).clamp(a, self.rms.len());
        &self.rms[a..b]
    }
}

/// A run of words ending at punctuation or a pause.
#[derive(Debug, Clone)]
pub struct Sentence {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub words: usize,
}

/// Sentences of at most `max_len` seconds: runs of words ending at punctuation or a pause, and a
/// run longer than `max_len` (an ASR that wrote no punctuation) split at its widest pauses.
pub fn sentences(words: &[Word], max_len: f64) -> Vec<Sentence> {
    sentences_cut(words, max_len, &[])
}

/// `sentences`, also ended where a chapter starts (`cuts`), so chapter starts are window edges.
fn sentences_cut(words: &[Word], max_len: f64, cuts: &[f64]) -> Vec<Sentence> {
    let mut ranges = Vec::new();
    let mut first = 0;
    for (i, w) in words.iter().enumerate() {
        let next_gap = words.get(i + 1).map_or(f64::INFINITY, |n| n.start - w.end);
        let chapter_starts = words.get(i + 1).is_some_and(|n| cuts.iter().any(|&c| w.start < c && n.start >= c - 0.05));
        if w.text.ends_with(['.', '?', '!']) || next_gap > SENTENCE_GAP || chapter_starts {
            split_long(words, first..i + 1, max_len, &mut ranges);
            first = i + 1;
        }
    }
    ranges
        .into_iter()
        .map(|r: std::ops::Range<usize>| Sentence {
            start: words[r.start].start,
            end: words[r.end - 1].end,
            text: words[r.clone()].iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" "),
            words: r.len(),
        })
        .collect()
}

/// Pushes `range`, split at its widest pause (recursively) while it lasts longer than `max_len`.
fn split_long(words: &[Word], range: std::ops::Range<usize>, max_len: f64, out: &mut Vec<std::ops::Range<usize>>) {
    let span = words[range.end - 1].end - words[range.start].start;
    if span <= max_len || range.len() < 2 {
        out.push(range);
        return;
    }
    // The widest pause; among equal ones (ASR timings often leave none) the one nearest the middle.
    let middle = (words[range.start].start + words[range.end - 1].end) / 2.0;
    let pause = |i: usize| words[i].start - words[i - 1].end;
    let off_middle = |i: usize| (words[i].start - middle).abs();
    let cut = (range.start + 1..range.end)
        .max_by(|&a, &b| pause(a).total_cmp(&pause(b)).then(off_middle(b).total_cmp(&off_middle(a))))
        .expect("two words or more");
    split_long(words, range.start..cut, max_len, out);
    split_long(words, cut..range.end, max_len, out);
}

/// Scores every sentence-aligned window of `min_len..=max_len` seconds and returns the best
/// `count` that do not overlap, best first. Without words, windows are scored on loudness alone.
pub fn heuristic(words: &[Word], loudness: &Loudness, duration: f64, count: usize, min_len: f64, max_len: f64) -> Vec<Candidate> {
    heuristic_with(words, loudness, duration, count, min_len, max_len, None)
}

/// `heuristic` with the source's page metadata: chapters and the replay heatmap.
pub fn heuristic_with(words: &[Word], loudness: &Loudness, duration: f64, count: usize, min_len: f64, max_len: f64, meta: Option<&SourceMeta>) -> Vec<Candidate> {
    let cuts = meta.map(SourceMeta::chapter_cuts).unwrap_or_default();
    let sentences = sentences_cut(words, max_len, &cuts);
    let global = mean(&loudness.rms).max(1e-6);
    let context = Context { loudness, global, meta };
    let mut candidates = Vec::new();
    if sentences.is_empty() {
        let len = ((min_len + max_len) / 2.0).min(duration);
        let mut start = 0.0;
        while start + len <= duration + 1e-9 {
            let level = mean(loudness.window(start, start + len)) / global;
            let (mut score, mut reason) = (5.0 * level.min(2.0) as f64, "loudness only (no speech found)".to_string());
            let mut scores = Scores::uniform(score);
            if let Some(replay) = meta.and_then(|m| m.replay(start, start + len)) {
                score = (score + REPLAY_WEIGHT * replay).clamp(0.0, 10.0);
                scores = Scores { payoff: round2((scores.payoff + 5.0 * replay.max(0.0)).min(10.0)), ..Scores::uniform(score) };
                if replay >= REPLAY_NOTED {
                    reason = format!("{reason}, {}", replay_reason(replay));
                }
            }
            candidates.push(candidate(start, start + len, scores, String::new(), &reason));
            start += 5.0;
        }
    }
    for i in 0..sentences.len() {
        for j in i..sentences.len() {
            let mut lower = if i > 0 { sentences[i - 1].end } else { 0.0 };
            let mut upper = sentences.get(j + 1).map_or(duration, |n| n.start);
            // A chapter start in the pause around the window is a hard edge: the window's
            // padding (and speech the transcript missed) stops there.
            if let Some(c) = cuts.iter().copied().rfind(|&c| c > lower && c <= sentences[i].start + 0.05) {
                lower = c.min(sentences[i].start);
            }
            if let Some(c) = cuts.iter().copied().find(|&c| c >= sentences[j].end && c < upper) {
                upper = c;
            }
            let (start, end) = loudness.snap(sentences[i].start, sentences[j].end, lower, upper, global);
            let len = end - start;
            if len > max_len {
                break;
            }
            if len < min_len {
                continue;
            }
            let window = &sentences[i..=j];
            let opens = meta.and_then(|m| m.chapters.iter().find(|c| c.start <= sentences[i].start + 0.05 && c.start >= lower - 0.05));
            let closes = meta.is_some_and(|m| m.chapters.iter().any(|c| c.end >= sentences[j].end - 0.05 && c.end <= upper + 0.05));
            let edges = Edges { opens, closes, crosses: cuts.iter().any(|&c| c > sentences[i].start + 0.05 && c < sentences[j].end - 0.05) };
            let (scores, reason) = features(window, &context, start, end, &edges);
            let text = window.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
            candidates.push(candidate(start, end, scores, text, &reason));
        }
    }
    pick(candidates, count)
}

fn candidate(start: f64, end: f64, scores: Scores, text: String, reason: &str) -> Candidate {
    let first = text.split_inclusive(['.', '?', '!']).next().unwrap_or("").trim().to_string();
    let ms = |t: f64| (t * 1000.0).round() / 1000.0;
    Candidate {
        start: ms(start),
        end: ms(end),
        score: round2(scores.total),
        title: truncate(&first, 60),
        hook: first,
        reason: reason.to_string(),
        scorer: "heuristic".into(),
        text,
        scores: Scores { total: round2(scores.total), ..scores },
    }
}

/// What the heuristic knows beyond the words of a window.
struct Context<'a> {
    loudness: &'a Loudness,
    global: f32,
    meta: Option<&'a SourceMeta>,
}

/// A window's place among the chapters.
struct Edges<'a> {
    /// The chapter the window's first sentence opens.
    opens: Option<&'a super::source_meta::Chapter>,
    /// Its last sentence is the last of a chapter.
    closes: bool,
    /// A chapter starts inside it.
    crosses: bool,
}

/// How much the replay heatmap weighs: a window at the most replayed moment gains this much over
/// one at the video's mean, which outweighs the opening's hooks together.
const REPLAY_WEIGHT: f64 = 4.0;
/// A window at least this far from the mean toward the peak is named "most replayed".
const REPLAY_NOTED: f64 = 0.5;
const OPENS_CHAPTER: f64 = 1.0;
const CLOSES_CHAPTER: f64 = 0.5;
const CROSSES_CHAPTER: f64 = 1.5;

fn replay_reason(replay: f64) -> String {
    format!("most replayed ({:.0}% of the peak)", replay * 100.0)
}

fn features(window: &[Sentence], context: &Context, start: f64, end: f64, edges: &Edges) -> (Scores, String) {
    let (loudness, global) = (context.loudness, context.global);
    let len = end - start;
    let words: usize = window.iter().map(|s| s.words).sum();
    let spoken: f64 = window.iter().map(|s| s.end - s.start).sum();
    let density = (words as f64 / len / 2.5).min(1.2);
    let silence = 1.0 - (spoken / len).min(1.0);
    let opening: String = window.iter().take(2).map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ");
    let question = opening.contains('?');
    let exclaim = opening.contains('!');
    let number = opening.split_whitespace().any(|w| w.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase().as_str()));
    let levels = loudness.window(start, end);
    let loud = (mean(levels) / global).min(2.0) as f64;
    let peaks = levels.iter().filter(|&&v| v > 1.5 * global).count() as f64 / levels.len().max(1) as f64;

    let replay = context.meta.and_then(|m| m.replay(start, end));
    let flag = |b: bool, w: f64| if b { w } else { 0.0 };
    let score = 3.0 * density + 1.5 * loud + 2.0 * peaks.min(0.5) * 2.0 - 3.0 * silence
        + flag(question, 1.5)
        + flag(exclaim, 1.0)
        + flag(number, 1.0)
        + REPLAY_WEIGHT * replay.unwrap_or(0.0)
        + flag(edges.opens.is_some(), OPENS_CHAPTER)
        + flag(edges.closes, CLOSES_CHAPTER)
        - flag(edges.crosses, CROSSES_CHAPTER);
    let scores = Scores {
        hook: round2((3.0 + flag(question, 3.0) + flag(exclaim, 2.0) + flag(number, 2.0) + flag(edges.opens.is_some(), 2.0)).min(10.0)),
        flow: round2((10.0 * density.min(1.0) - 10.0 * silence - flag(edges.crosses, 3.0)).clamp(0.0, 10.0)),
        payoff: round2((1.5 * loud + 10.0 * peaks.min(0.5) + 4.0 * replay.unwrap_or(0.0).max(0.0) + flag(edges.closes, 1.0)).clamp(0.0, 10.0)),
        total: score.clamp(0.0, 10.0),
    };
    let mut reasons = vec![format!("{:.1} words/s", words as f64 / len)];
    if let Some(replay) = replay.filter(|&r| r >= REPLAY_NOTED) {
        reasons.insert(0, replay_reason(replay));
    }
    if let Some(chapter) = edges.opens {
        reasons.push(if chapter.title.is_empty() { "opens a chapter".into() } else { format!("opens chapter \u{201c}{}\u{201d}", chapter.title) });
    }
    if edges.crosses {
        reasons.push("spans two chapters".into());
    }
    if question {
        reasons.push("opens with a question".into());
    }
    if exclaim {
        reasons.push("exclamation up front".into());
    }
    if number {
        reasons.push("a number in the opening".into());
    }
    if silence > 0.3 {
        reasons.push(format!("{:.0}% silence", silence * 100.0));
    }
    (scores, reasons.join(", "))
}

const NUMBER_WORDS: &[&str] =
    &["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "hundred", "thousand", "million", "billion"];

/// The best `count` candidates that do not overlap, best first (ties go to the earlier one).
pub fn pick(mut candidates: Vec<Candidate>, count: usize) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.start.total_cmp(&b.start)).then(a.end.total_cmp(&b.end)));
    let mut chosen: Vec<Candidate> = Vec::new();
    for c in candidates {
        if chosen.len() == count {
            break;
        }
        if chosen.iter().all(|k| (c.end <= k.start || c.start >= k.end) && !repeats(&c.text, &k.text)) {
            chosen.push(c);
        }
    }
    chosen
}

/// Whether two windows largely say the same thing (a looped segment, a re-uploaded intro, a
/// repeated line): most word triples of the shorter text also occur in the other.
fn repeats(a: &str, b: &str) -> bool {
    let triples = |text: &str| -> std::collections::HashSet<String> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        if words.len() < 3 { words.into_iter().collect() } else { words.windows(3).map(|w| w.join(" ")).collect() }
    };
    let (a, b) = (triples(a), triples(b));
    let shorter = a.len().min(b.len());
    shorter > 0 && a.intersection(&b).count() as f64 >= REPEAT_SHARE * shorter as f64
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max - 1).collect::<String>().trim_end()) }
}

#[cfg(test)]
mod tests;
