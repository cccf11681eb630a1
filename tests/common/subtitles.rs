//! SubRip sidecars read back: cues with their times and text, as a player would show them.

/// One SRT cue: seconds from the clip's start, and its lines joined by newlines.
#[derive(Debug, Clone, PartialEq)]
pub struct SrtCue {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// Parses SubRip text (`N`, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, lines, a blank line); panics on
/// anything else, since the files under test must be well formed.
pub fn srt_cues(srt: &str) -> Vec<SrtCue> {
    srt.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines = block.lines();
            let index = lines.next().expect("cue number");
            assert!(index.trim().parse::<u32>().is_ok(), "cue number expected, got {index:?} in {srt:?}");
            let times = lines.next().expect("cue times");
            let (start, end) = times.split_once(" --> ").unwrap_or_else(|| panic!("cue times expected, got {times:?}"));
            SrtCue { start: seconds(start), end: seconds(end), text: lines.collect::<Vec<_>>().join("\n") }
        })
        .collect()
}

/// The text of every cue, in order, separated by newlines.
pub fn srt_text(srt: &str) -> String {
    srt_cues(srt).into_iter().map(|c| c.text).collect::<Vec<_>>().join("\n")
}

fn seconds(stamp: &str) -> f64 {
    let parts: Vec<f64> = stamp.trim().split([':', ',']).map(|p| p.parse().expect("a timestamp field")).collect();
    assert_eq!(parts.len(), 4, "HH:MM:SS,mmm expected, got {stamp:?}");
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2] + parts[3] / 1000.0
}
