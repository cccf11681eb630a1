//! Caption layout: words grouped into short cues of a line or two (or one word at a time), the
//! spoken word highlighted, and the same cues written as SRT and WebVTT sidecars, so the sidecars
//! say exactly what is burned in. How captions look is in `style`.

mod style;

pub use style::{CaptionStyle, Look, Preset};

use super::Word;

/// A caption shown from `start` to `end` (seconds on the same timeline as the words).
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    /// Lines of words.
    pub lines: Vec<Vec<Word>>,
}

/// A pause longer than this starts a new cue.
const PAUSE_SPLIT: f64 = 0.8;
/// How long a cue stays after its last word when nothing follows at once.
const HOLD_AFTER: f64 = 0.4;

/// Groups the words that overlap `[from, to)` into cues, with times clamped to that range.
pub fn layout(words: &[Word], from: f64, to: f64, style: &CaptionStyle) -> Vec<Cue> {
    let style = style.look();
    let mut words: Vec<Word> = words
        .iter()
        .filter(|w| w.end > from && w.start < to && !w.text.trim().is_empty())
        .map(|w| Word {
            text: if style.uppercase { w.text.trim().to_uppercase() } else { w.text.trim().to_string() },
            start: w.start.max(from),
            end: w.end.min(to),
        })
        .collect();
    words.sort_by(|a, b| a.start.total_cmp(&b.start));

    let mut cues: Vec<Cue> = Vec::new();
    let mut lines: Vec<Vec<Word>> = Vec::new();
    for word in words {
        let prev = lines.last().and_then(|l| l.last());
        let sentence_end = prev.is_some_and(|p| p.text.ends_with(['.', '?', '!']) && !is_abbreviation(&p.text));
        let paused = prev.is_some_and(|p| word.start - p.end > PAUSE_SPLIT);
        if sentence_end || paused {
            flush(&mut cues, &mut lines);
        }
        let fits_line = lines.last().is_some_and(|l| {
            line_len(l) + 1 + word.text.chars().count() <= style.max_chars && (style.max_words == 0 || l.len() < style.max_words)
        });
        if !fits_line {
            if lines.len() >= style.max_lines.max(1) {
                flush(&mut cues, &mut lines);
            }
            lines.push(Vec::new());
        }
        lines.last_mut().expect("a line was pushed").push(word);
    }
    flush(&mut cues, &mut lines);
    for i in 0..cues.len() {
        let next = cues.get(i + 1).map_or(to, |c| c.start);
        cues[i].end = (cues[i].end + HOLD_AFTER).min(next).min(to);
    }
    cues
}

/// "U.S.", "a.m." or "Mr.": its last dot ends the abbreviation, not the sentence.
fn is_abbreviation(word: &str) -> bool {
    const TITLES: [&str; 6] = ["mr.", "mrs.", "ms.", "dr.", "st.", "vs."];
    let letters: Vec<&str> = word.split_terminator('.').collect();
    TITLES.contains(&word.to_lowercase().as_str())
        || (letters.len() >= 2 && letters.iter().all(|l| l.chars().count() == 1 && l.chars().all(char::is_alphabetic)))
}

fn line_len(line: &[Word]) -> usize {
    line.iter().map(|w| w.text.chars().count()).sum::<usize>() + line.len().saturating_sub(1)
}

fn flush(cues: &mut Vec<Cue>, lines: &mut Vec<Vec<Word>>) {
    let lines = std::mem::take(lines);
    let (Some(first), Some(last)) = (lines.first().and_then(|l| l.first()), lines.last().and_then(|l| l.last())) else {
        return;
    };
    cues.push(Cue { start: first.start, end: last.end, lines: lines.clone() });
}

/// The cue showing at `t`, if any.
pub fn cue_at(cues: &[Cue], t: f64) -> Option<&Cue> {
    let i = cues.partition_point(|c| c.start <= t);
    cues[..i].last().filter(|c| t < c.end)
}

impl Cue {
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| l.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
    }

    /// Pango markup with the word being spoken at `t` (the last one started) in `highlight`. A
    /// cue of one word is not highlighted: it is always the word being spoken, and showing it in
    /// the text colour lets a one-word style choose its colour with `color`.
    pub fn markup_at(&self, t: f64, highlight: &str) -> String {
        let words = self.lines.iter().map(Vec::len).sum::<usize>();
        let current = self.lines.iter().flatten().filter(|w| w.start <= t).count().checked_sub(1).filter(|_| words > 1);
        let mut index = 0;
        let mut out = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let mut parts = Vec::with_capacity(line.len());
            for word in line {
                let text = escape(&word.text);
                parts.push(if Some(index) == current {
                    format!("<span foreground=\"{highlight}\">{text}</span>")
                } else {
                    text
                });
                index += 1;
            }
            out.push(parts.join(" "));
        }
        out.join("\n")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// SubRip text for `cues`, with times shifted by `-offset`.
pub fn to_srt(cues: &[Cue], offset: f64) -> String {
    let mut out = String::new();
    for (i, c) in cues.iter().enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(c.start - offset, ','),
            timestamp(c.end - offset, ','),
            c.text()
        ));
    }
    out
}

/// WebVTT text for `cues`, with times shifted by `-offset`.
pub fn to_vtt(cues: &[Cue], offset: f64) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for c in cues {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(c.start - offset, '.'),
            timestamp(c.end - offset, '.'),
            c.text()
        ));
    }
    out
}

fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(spec: &[(&str, f64)]) -> Vec<Word> {
        spec.iter().map(|(t, s)| Word { text: t.to_string(), start: *s, end: s + 0.3 }).collect()
    }

    #[test]
    fn words_wrap_into_two_line_cues_and_split_at_sentences() {
        let w = words(&[("welcome", 1.0), ("to", 1.4), ("the", 1.8), ("clip", 2.2), ("mill.", 2.6), ("today", 3.5)]);
        let cues = layout(&w, 0.0, 10.0, &CaptionStyle { max_chars: Some(10), ..Default::default() });
        let texts: Vec<String> = cues.iter().map(Cue::text).collect();
        assert_eq!(texts, ["welcome to\nthe clip", "mill.", "today"]);
    }

    #[test]
    fn markup_highlights_the_current_word_and_escapes() {
        let w = words(&[("a&b", 0.0), ("<c>", 1.0)]);
        let cue = &layout(&w, 0.0, 5.0, &CaptionStyle::default())[0];
        assert_eq!(cue.markup_at(1.1, "#FF0000"), "a&amp;b <span foreground=\"#FF0000\">&lt;c&gt;</span>");
    }

    #[test]
    fn sidecars_are_relative_to_the_clip() {
        let w = words(&[("hello", 10.0), ("world", 10.5)]);
        let cues = layout(&w, 9.0, 20.0, &CaptionStyle::default());
        assert_eq!(to_srt(&cues, 9.0), "1\n00:00:01,000 --> 00:00:02,200\nhello world\n\n");
        assert!(to_vtt(&cues, 9.0).starts_with("WEBVTT\n\n00:00:01.000 --> 00:00:02.200\n"));
        assert!(cue_at(&cues, 10.2).is_some() && cue_at(&cues, 12.5).is_none());
    }

    #[test]
    fn whole_tokens_stay_whole_and_abbreviations_do_not_end_sentences() {
        let w = words(&[("It", 0.0), ("costs", 0.4), ("$1,500", 0.8), ("in", 1.2), ("the", 1.6), ("U.S.", 2.0), ("today.", 2.4), ("Next", 2.8)]);
        let cues = layout(&w, 0.0, 10.0, &CaptionStyle::default());
        let texts: Vec<String> = cues.iter().map(Cue::text).collect();
        assert_eq!(texts, ["It costs $1,500 in\nthe U.S. today.", "Next"]);
        let w = words(&[("Mr.", 0.0), ("Brown", 0.4), ("is", 0.8), ("here.", 1.2)]);
        assert_eq!(layout(&w, 0.0, 10.0, &CaptionStyle::default()).len(), 1);
    }

    #[test]
    fn max_words_and_lines_make_one_word_cues() {
        let w = words(&[("we", 0.0), ("don't", 0.4), ("stop", 0.8)]);
        let style = CaptionStyle { preset: Some(Preset::Word), ..Default::default() };
        let cues = layout(&w, 0.0, 10.0, &style);
        let texts: Vec<String> = cues.iter().map(Cue::text).collect();
        assert_eq!(texts, ["WE", "DON'T", "STOP"]);
        // Each shows until the next starts, and its single word is not highlighted.
        assert_eq!((cues[0].start, cues[0].end), (0.0, 0.4));
        assert_eq!(cues[1].markup_at(0.5, "#FF0000"), "DON'T");
        let two_per_line = CaptionStyle { max_words: Some(2), max_lines: Some(1), ..Default::default() };
        let texts: Vec<String> = layout(&w, 0.0, 10.0, &two_per_line).iter().map(Cue::text).collect();
        assert_eq!(texts, ["we don't", "stop"]);
    }
}
