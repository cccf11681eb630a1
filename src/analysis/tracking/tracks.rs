//! Tracks: detections linked from sample to sample into faces with a stable identity, and the
//! rule that tells a face from a pattern that only looks like one.

use super::{Scene, median};
use crate::analysis::faces::FaceBox;

/// MediaPipe detections below this confidence are ignored. The Haar cascade's score (its stage
/// weight) says little (real faces score 0.01–1.0, patterns 0.25–0.53 on the generated media):
/// all its detections count, and persistence tells faces from patterns.
const MIN_SCORE: f64 = 0.5;
/// A detection continues a track when its centre is within this many face widths of the track's.
const GATE: f64 = 0.8;
/// ... and its size is within this factor of the track's.
const SIZE_RATIO: f64 = 1.6;
/// A track missed for longer than this ends; a face seen again later is a new track.
const MAX_GAP_S: f64 = 1.0;
/// A track is confirmed after this many consecutive samples (a second at 5 fps: false positives
/// of the Haar cascade on scenery last up to 4) ...
const CONFIRM_RUN: usize = 5;
/// ... seen in at least this share of the samples it spans ...
const MIN_COVERAGE: f64 = 0.7;
/// ... with a median face height of at least this fraction of the frame height.
const MIN_FACE_FRACTION: f64 = 0.06;
/// ... and, where the face mesh ran, landmarks found in at least this fraction of its samples.
const MIN_LANDMARK_SHARE: f64 = 0.5;
/// One sample of one track, in source pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Obs {
    pub(super) sample: usize,
    pub(super) cx: f64,
    pub(super) cy: f64,
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) face: FaceBox,
}

#[derive(Debug, Clone)]
pub(super) struct Track {
    pub(super) id: u32,
    pub(super) obs: Vec<Obs>,
}

impl Track {
    pub(super) fn last(&self) -> &Obs {
        self.obs.last().expect("a track has at least one sample")
    }

    pub(super) fn at(&self, sample: usize) -> Option<&Obs> {
        self.obs.binary_search_by_key(&sample, |o| o.sample).ok().map(|i| &self.obs[i])
    }

    /// The centre at `sample`, held from the nearest sample seen when it was missed, and that
    /// sample's index.
    pub(super) fn centre_near(&self, sample: usize) -> ((f64, f64), usize) {
        let i = self.obs.partition_point(|o| o.sample < sample);
        let o = match (i.checked_sub(1).map(|j| &self.obs[j]), self.obs.get(i)) {
            (Some(before), Some(after)) if after.sample - sample < sample - before.sample => after,
            (Some(before), _) => before,
            (None, Some(after)) => after,
            (None, None) => unreachable!("a track has at least one sample"),
        };
        ((o.cx, o.cy), o.sample)
    }

    pub(super) fn median_height(&self) -> f64 {
        median(self.obs.iter().map(|o| o.h).collect())
    }
}

/// Links detections into tracks: greedy nearest matches within the gate, best first.
pub(super) fn build_tracks(scene: &Scene) -> Vec<Track> {
    let mut done: Vec<Track> = Vec::new();
    let mut live: Vec<Track> = Vec::new();
    let mut next_id = 1;
    let min_score = if scene.detections.backend == "haar" { 0.0 } else { MIN_SCORE };
    for (i, frame) in scene.detections.frames.iter().enumerate() {
        let t = frame.t;
        if frame.shot_change {
            done.append(&mut live);
        }
        let times = &scene.detections.frames;
        let (ended, kept): (Vec<Track>, Vec<Track>) = live.drain(..).partition(|tr| t - times[tr.last().sample].t > MAX_GAP_S);
        done.extend(ended);
        live = kept;

        let obs: Vec<Obs> = frame
            .faces
            .iter()
            .filter(|f| f.score >= min_score)
            .map(|f| {
                let (cx, cy) = f.centre();
                Obs { sample: i, cx: cx * scene.scale, cy: cy * scene.scale, w: f.w * scene.scale, h: f.h * scene.scale, face: *f }
            })
            .collect();
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (ti, tr) in live.iter().enumerate() {
            let last = tr.last();
            for (oi, o) in obs.iter().enumerate() {
                let distance = ((o.cx - last.cx).powi(2) + (o.cy - last.cy).powi(2)).sqrt() / last.w.max(o.w);
                let ratio = (o.h / last.h).max(last.h / o.h);
                if distance <= GATE && ratio <= SIZE_RATIO {
                    pairs.push((distance + (ratio - 1.0), ti, oi));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut track_used, mut obs_used) = (vec![false; live.len()], vec![false; obs.len()]);
        for (_, ti, oi) in pairs {
            if !track_used[ti] && !obs_used[oi] {
                (track_used[ti], obs_used[oi]) = (true, true);
                live[ti].obs.push(obs[oi]);
            }
        }
        for (oi, o) in obs.into_iter().enumerate() {
            if !obs_used[oi] {
                live.push(Track { id: next_id, obs: vec![o] });
                next_id += 1;
            }
        }
    }
    done.append(&mut live);
    done.sort_by_key(|t| t.id);
    done
}

/// A face, not a pattern: a run of consecutive samples, seen most of its life, a plausible size
/// and shape, and landmarks where the face mesh ran (on the generated scenery, MediaPipe's false
/// positives never had landmarks; every real face did).
pub(super) fn confirmed(track: &Track, scene: &Scene) -> bool {
    let longest_run = track
        .obs
        .windows(2)
        .fold((1usize, 1usize), |(best, run), w| {
            let run = if w[1].sample == w[0].sample + 1 { run + 1 } else { 1 };
            (best.max(run), run)
        })
        .0;
    let fh = scene.frame.1 as f64;
    let shaped = median(track.obs.iter().map(|o| o.w / o.h).collect());
    let span = track.last().sample - track.obs[0].sample + 1;
    let covered = track.obs.len() as f64 >= MIN_COVERAGE * span as f64;
    let meshed: Vec<bool> = track.obs.iter().filter_map(|o| o.face.landmarks).collect();
    let landmarks_ok = meshed.is_empty() || meshed.iter().filter(|&&m| m).count() as f64 >= MIN_LANDMARK_SHARE * meshed.len() as f64;
    longest_run >= CONFIRM_RUN && covered && track.median_height() >= MIN_FACE_FRACTION * fh && (0.5..=2.0).contains(&shaped) && landmarks_ok
}
