//! The active speaker: per track, how much its mouth moves while speech is heard, and the track
//! to follow at each sample, chosen over the whole clip with a price per switch.

use super::Scene;
use super::tracks::{Obs, Track};

/// Speech is "heard" this long around each transcribed word.
const SPEECH_PAD_S: f64 = 0.25;
/// The mouth region's change counts only while the head moved less than this many face widths
/// since the previous sample.
const STILL_HEAD: f64 = 0.04;
/// Mouth activity is measured over this many seconds on either side of a sample.
const ACTIVITY_HALF_WINDOW_S: f64 = 0.5;
/// The price of a switch between speakers, in samples of clear evidence for the new one.
const SWITCH_PRICE: f64 = 2.5;
/// A shot shorter than this is folded into its neighbour.
const MIN_SHOT_S: f64 = 1.2;
/// Per track and sample, how much the mouth moves (0 where nothing is known), over a short
/// window. With the face mesh: the spread of the inner-lip gap (a speaking mouth opens and shuts;
/// a still one, open or shut, does not), which is comparable across faces. Without it: the
/// mouth region's change between samples, counted only while the head itself is nearly still
/// (that change also counts a head that moves).
pub(super) fn activity(tracks: &[Track], scene: &Scene) -> Vec<Vec<f64>> {
    let all: Vec<&Obs> = tracks.iter().flat_map(|t| &t.obs).collect();
    let with_mesh = all.iter().filter(|o| o.face.mouth_open.is_some()).count();
    let use_mesh = with_mesh * 2 >= all.len().max(1);
    let frames = &scene.detections.frames;
    let window = |i: usize| (0..frames.len()).filter(move |&j| (frames[j].t - frames[i].t).abs() <= ACTIVITY_HALF_WINDOW_S);
    tracks
        .iter()
        .map(|track| {
            let mut signal: Vec<Option<f64>> = vec![None; frames.len()];
            for (k, o) in track.obs.iter().enumerate() {
                signal[o.sample] = if use_mesh {
                    o.face.mouth_open
                } else {
                    let still = k > 0 && {
                        let p = &track.obs[k - 1];
                        p.sample + 1 == o.sample && ((o.cx - p.cx).powi(2) + (o.cy - p.cy).powi(2)).sqrt() <= STILL_HEAD * o.w
                    };
                    o.face.mouth_motion.filter(|_| still)
                };
            }
            (0..frames.len())
                .map(|i| {
                    let near: Vec<f64> = window(i).filter_map(|j| signal[j]).collect();
                    if near.len() < 2 {
                        0.0
                    } else if use_mesh {
                        let mean = near.iter().sum::<f64>() / near.len() as f64;
                        (near.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / near.len() as f64).sqrt()
                    } else {
                        near.iter().sum::<f64>() / near.len() as f64
                    }
                })
                .collect()
        })
        .collect()
}

/// Per sample, whether speech is heard; everywhere when there are no words (mouths alone decide).
pub(super) fn speech(scene: &Scene) -> Vec<bool> {
    scene
        .detections
        .frames
        .iter()
        .map(|f| scene.words.is_empty() || scene.words.iter().any(|w| f.t >= w.start - SPEECH_PAD_S && f.t <= w.end + SPEECH_PAD_S))
        .collect()
}

/// The track to follow at each sample: the best path through "whose mouth moves while speech is
/// heard", paying `SWITCH_PRICE` per switch (free at a shot change), then shots shorter than
/// `MIN_SHOT_S` folded into the one before.
pub(super) fn choose_shots(tracks: &[Track], activity: &[Vec<f64>], speech: &[bool], scene: &Scene) -> Vec<usize> {
    let frames = &scene.detections.frames;
    let (n, k) = (frames.len(), tracks.len());
    let evidence = |i: usize, j: usize| -> f64 {
        if tracks[j].at(i).is_none() {
            // Following a face that is not there is worse than any speaker.
            return if alive(&tracks[j], i) { -0.2 } else { -2.0 };
        }
        if !speech[i] {
            return 0.0;
        }
        let best = (0..k).map(|m| activity[m][i]).fold(0.0, f64::max);
        if best <= 1e-9 { 0.0 } else { activity[j][i] / best }
    };
    // Before any evidence, the most prominent face.
    let prominence: Vec<f64> = tracks.iter().map(|t| t.obs.len() as f64 * t.median_height()).collect();
    let top = prominence.iter().cloned().fold(0.0, f64::max).max(1e-9);
    let mut score: Vec<f64> = (0..k).map(|j| evidence(0, j) + 0.01 * prominence[j] / top).collect();
    let mut back: Vec<Vec<usize>> = vec![(0..k).collect()];
    for (i, frame) in frames.iter().enumerate().skip(1) {
        let price = if frame.shot_change { 0.0 } else { SWITCH_PRICE };
        let (best_prev, best_score) = best(&score);
        let (from, next): (Vec<usize>, Vec<f64>) = score
            .iter()
            .enumerate()
            .map(|(j, &stay)| {
                let (p, s) = if stay >= best_score - price { (j, stay) } else { (best_prev, best_score - price) };
                (p, s + evidence(i, j))
            })
            .unzip();
        back.push(from);
        score = next;
    }
    let mut path = vec![0; n];
    path[n - 1] = best(&score).0;
    for i in (1..n).rev() {
        path[i - 1] = back[i][path[i]];
    }
    let times: Vec<f64> = frames.iter().map(|f| f.t).collect();
    let cuts: Vec<bool> = frames.iter().map(|f| f.shot_change).collect();
    fold_short_shots(&mut path, &times, &cuts);
    path
}

/// The index and value of the highest score (the first on ties).
fn best(scores: &[f64]) -> (usize, f64) {
    scores.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (j, &s)| if s > b.1 { (j, s) } else { b })
}

/// Whether the track exists around sample `i` (seen before and after it).
fn alive(track: &Track, i: usize) -> bool {
    track.obs.first().is_some_and(|o| o.sample <= i) && track.last().sample >= i
}

/// Merges runs shorter than `MIN_SHOT_S` into the run before them (or after, for the first),
/// except across a shot change in the source.
fn fold_short_shots(path: &mut [usize], times: &[f64], shot_change: &[bool]) {
    loop {
        let runs = runs(path);
        let Some(&(a, b)) = runs.iter().find(|&&(a, b)| {
            let end = times.get(b).copied().unwrap_or(times[b - 1] + 0.2);
            end - times[a] < MIN_SHOT_S && runs.len() > 1 && !shot_change[a]
        }) else {
            return;
        };
        let fill = if a > 0 { path[a - 1] } else { path[b] };
        path[a..b].iter_mut().for_each(|p| *p = fill);
    }
}

/// `[start, end)` sample ranges of equal values.
pub(super) fn runs(path: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=path.len() {
        if i == path.len() || path[i] != path[start] {
            out.push((start, i));
            start = i;
        }
    }
    out
}
