//! Clips chosen from the picture, for a source with nothing to hear (b-roll, a screen
//! recording): the source sampled at two small frames per second, shot changes and motion measured
//! between samples, windows that start and end on shot changes and move the most; evenly spaced
//! windows when nothing stands out.

use std::path::Path;

use super::score::{Candidate, pick};
use crate::media::{FRAMES_HEADER_LEN as HEADER_LEN, FramesHeader};

/// Samples per second of the scan (a shot change is known to half a second), and their width in
/// pixels.
pub const SCAN_FPS: f64 = 2.0;
pub const SCAN_WIDTH: u32 = 64;
/// Mean absolute change (0..255) above which two samples belong to different shots.
const CUT_CHANGE: f64 = 40.0;
/// Windows whose scores differ by less than this are "nothing stands out".
const FLAT: f64 = 0.25;

/// One sample of the scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Source seconds.
    pub t: f64,
    /// Mean absolute change of the pixels since the previous sample, 0..255.
    pub change: f64,
}

/// Reads a frame file (see `media::frames`) into samples. Blocking: use `spawn_blocking`.
pub fn scan(path: &Path) -> std::io::Result<Vec<Sample>> {
    let bytes = std::fs::read(path)?;
    let header = FramesHeader::decode(&bytes).ok_or_else(|| std::io::Error::other("not a frame file"))?;
    let record = 8 + header.frame_bytes();
    let mut samples = Vec::new();
    let mut previous: Option<&[u8]> = None;
    for chunk in bytes[HEADER_LEN..].chunks_exact(record) {
        let t = u64::from_le_bytes(chunk[..8].try_into().expect("8 bytes")) as f64 / 1e9;
        let pixels = &chunk[8..];
        let change = previous.map_or(0.0, |p| p.iter().zip(pixels).map(|(a, b)| a.abs_diff(*b) as u64).sum::<u64>() as f64 / pixels.len().max(1) as f64);
        samples.push(Sample { t, change });
        previous = Some(pixels);
    }
    Ok(samples)
}

/// The best `count` windows of `min_len..=max_len` seconds within `duration`.
pub fn candidates(samples: &[Sample], duration: f64, count: usize, min_len: f64, max_len: f64) -> Vec<Candidate> {
    // A cut happened after the sample before the one that changed wholesale, and by that one: a
    // clip starts on the later (all new shot) and ends on the earlier (all old shot).
    let cuts: Vec<(f64, f64)> = samples.windows(2).filter(|w| w[1].change >= CUT_CHANGE).map(|w| (w[0].t, w[1].t)).collect();
    let motion = |a: f64, b: f64| {
        let inside: Vec<f64> = samples.iter().filter(|s| s.t > a && s.t <= b && s.change < CUT_CHANGE).map(|s| s.change).collect();
        inside.iter().sum::<f64>() / inside.len().max(1) as f64
    };
    let global = motion(0.0, duration).max(1e-6);
    // Windows start at the shot changes, and every two seconds away from them.
    let near_cut = |t: f64| cuts.iter().any(|&(before, after)| t > before - 0.5 && t < after + 0.5);
    let mut starts: Vec<f64> = std::iter::once(0.0).chain(cuts.iter().map(|c| c.1)).collect();
    starts.extend((1..).map(|i| i as f64 * 2.0).take_while(|&t| t + min_len <= duration).filter(|&t| !near_cut(t)));
    starts.sort_by(f64::total_cmp);

    // Shot boundaries, the source's ends included once there are shots at all.
    let shots = !cuts.is_empty();
    let starts_shot = |t: f64| shots && (t == 0.0 || cuts.iter().any(|c| c.1 == t));
    let ends_shot = |t: f64| shots && (t >= duration - 1e-9 || cuts.iter().any(|c| c.0 == t));
    let mut windows = Vec::new();
    for &start in &starts {
        let mut ends: Vec<f64> = cuts.iter().map(|c| c.0).filter(|&c| c - start >= min_len && c - start <= max_len).collect();
        ends.push((start + (min_len + max_len) / 2.0).min(duration));
        for end in ends {
            if end - start < min_len - 1e-9 || end > duration + 1e-9 {
                continue;
            }
            let moving = (motion(start, end) / global).min(3.0);
            let inner_cuts = cuts.iter().filter(|&&(before, after)| before >= start && after <= end).count();
            let framed = starts_shot(start) as u8 + ends_shot(end) as u8;
            let score = (2.0 * moving + framed as f64 - 0.5 * inner_cuts as f64 + 3.0).clamp(0.0, 10.0);
            let reason = format!("from the picture: {framed} shot boundaries, motion {moving:.1}× the source's, {inner_cuts} cuts inside");
            windows.push(window(start, end, score, reason));
        }
    }
    let (lo, hi) = windows.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| (lo.min(c.score), hi.max(c.score)));
    if windows.is_empty() || hi - lo < FLAT {
        return evenly_spaced(duration, count, min_len, max_len);
    }
    pick(windows, count)
}

/// `count` windows spread over the source, as long as fits between `min_len` and `max_len`.
fn evenly_spaced(duration: f64, count: usize, min_len: f64, max_len: f64) -> Vec<Candidate> {
    let n = count.min((duration / min_len).floor() as usize);
    if n == 0 {
        return vec![];
    }
    let len = (duration / n as f64).min((min_len + max_len) / 2.0).max(min_len);
    (0..n)
        .map(|i| {
            let centre = (i as f64 + 0.5) * duration / n as f64;
            let start = (centre - len / 2.0).clamp(0.0, duration - len);
            window(start, start + len, 5.0, "from the picture: evenly spaced (nothing stands out)".into())
        })
        .collect()
}

fn window(start: f64, end: f64, score: f64, reason: String) -> Candidate {
    let ms = |t: f64| (t * 1000.0).round() / 1000.0;
    let title = format!("Moment at {}:{:02}", (start as u64) / 60, (start as u64) % 60);
    Candidate { start: ms(start), end: ms(end), score: (score * 100.0).round() / 100.0, hook: title.clone(), title, reason, scorer: "heuristic".into(), text: String::new(), scores: super::score::Scores::uniform(score) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every half second; the first sample after each cut changed wholesale.
    fn samples(cuts: &[f64], busy: (f64, f64), duration: f64) -> Vec<Sample> {
        (0..(duration * 2.0) as usize)
            .map(|i| {
                let t = i as f64 / 2.0;
                let cut = cuts.iter().any(|&c| c <= t && c > t - 0.5);
                let change = if cut { 90.0 } else if (busy.0..busy.1).contains(&t) { 12.0 } else { 2.0 };
                Sample { t, change }
            })
            .collect()
    }

    #[test]
    fn windows_follow_shots_and_motion() {
        let s = samples(&[6.2, 12.2, 18.2], (12.2, 18.2), 24.0);
        let picked = candidates(&s, 24.0, 2, 4.0, 8.0);
        assert_eq!(picked.len(), 2);
        assert_eq!((picked[0].start, picked[0].end), (12.5, 18.0), "the busy shot first, inside its cuts: {picked:?}");
        assert!(picked[1].end <= 12.0 || picked[1].start >= 18.0);
    }

    #[test]
    fn a_still_source_gives_evenly_spaced_windows() {
        let s = samples(&[], (0.0, 0.0), 60.0);
        let picked = candidates(&s, 60.0, 3, 5.0, 10.0);
        let starts: Vec<f64> = picked.iter().map(|c| c.start).collect();
        assert_eq!(starts, [6.25, 26.25, 46.25]);
        assert!(picked.iter().all(|c| (c.end - c.start - 7.5).abs() < 1e-9));
    }
}
