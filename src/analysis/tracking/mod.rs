//! From face detections to the framing a camera operator would choose.
//!
//! 1. **Tracks.** Detections are linked from sample to sample into tracks with a stable identity
//!    (nearest centre within a gate scaled by face size, similar size), ended by a shot change or a
//!    long miss.
//! 2. **Confirmation.** Only a confirmed track is a face: seen in several consecutive samples, at a
//!    plausible size, with a face-shaped box, and (when the face mesh ran) with plausible landmarks.
//!    Scenery with face-like patterns never moves the crop.
//! 3. **Active speaker.** Per track, how much its mouth moves (inner-lip gap from the face mesh, or
//!    the mouth region's change between samples with the Haar fallback), weighed only while speech
//!    is heard. The followed track over the whole clip is chosen at once (a Viterbi pass with a
//!    price per switch), so a cut lands where a turn starts, and a one-word reply does not pay
//!    for two cuts; shots shorter than a minimum are folded into their neighbour.
//! 4. **Camera.** Inside a shot the window follows its face with a dead zone and eased,
//!    speed-capped pans; a switch between speakers, or a shot change in the source, is a cut.
//!
//! `split` frames two confirmed tracks, each in its own panel; `auto` picks track, split or fit
//! from what was seen.

mod speaker;
mod tracks;

use self::speaker::{activity, choose_shots, runs, speech};
use self::tracks::{Track, build_tracks, confirmed};
use super::faces::Detections;
use crate::config::TrackingConfig;
use crate::edit::{CropKey, Follow, Word};

/// A switch between tracks farther apart than this (fraction of frame width) is a cut, not a pan.
const CUT_DISTANCE: f64 = 0.1;
/// How quickly a pan closes the gap to its target (per second) before the speed cap.
const EASE_RATE: f64 = 4.0;
/// In a split panel the window is this many face heights tall.
const SPLIT_ZOOM: f64 = 3.2;
/// `auto` splits when two confirmed faces are both in view at least this share of the clip ...
const SPLIT_COVISIBLE: f64 = 0.6;
/// ... and they either talk over each other for this share of the speech ...
const SPLIT_OVERLAP: f64 = 0.15;
/// ... or the shots between them average less than this.
const SPLIT_MEAN_SHOT_S: f64 = 3.0;

/// What a clip's framing is made from.
pub struct Scene<'a> {
    pub detections: &'a Detections,
    /// Frame-file pixels to source pixels.
    pub scale: f64,
    /// Source display size.
    pub frame: (u32, u32),
    /// The clip's words: when speech is heard.
    pub words: &'a [Word],
}

/// How a clip was framed.
#[derive(Debug, Clone, PartialEq)]
pub enum Framing {
    /// No confirmed face.
    NoFace,
    /// One window following the speaker; `follows` lists which track from when; `face_rows` is
    /// where the followed face sits in the output (top and bottom, fractions of its height).
    Track { keys: Vec<CropKey>, follows: Vec<Follow>, face_rows: (f64, f64) },
    /// Two panels, top and bottom, each following one track.
    Split { top: Vec<CropKey>, bottom: Vec<CropKey> },
}

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Track,
    Split,
    Auto,
}

/// Frames a clip as asked; `aspect` is the output width / height.
pub fn frame(scene: &Scene, want: Want, aspect: f64, config: &TrackingConfig) -> Framing {
    let tracks: Vec<Track> = build_tracks(scene).into_iter().filter(|t| confirmed(t, scene)).collect();
    if tracks.is_empty() {
        return Framing::NoFace;
    }
    let activity = activity(&tracks, scene);
    let speech = speech(scene);
    let shots = choose_shots(&tracks, &activity, &speech, scene);
    let pair = (want != Want::Track).then(|| split_pair(&tracks, scene)).flatten();
    let split = match (want, pair) {
        (Want::Split, Some(_)) => true,
        (Want::Auto, Some(pair)) => quick_exchange(pair, &activity, &speech, &shots, scene),
        _ => false,
    };
    match pair {
        Some((a, b)) if split => {
            let panel = aspect * 2.0;
            Framing::Split {
                top: follow(&tracks, &vec![a; shots.len()], scene, panel, Some(tracks[a].median_height() * SPLIT_ZOOM), config),
                bottom: follow(&tracks, &vec![b; shots.len()], scene, panel, Some(tracks[b].median_height() * SPLIT_ZOOM), config),
            }
        }
        _ => {
            let keys = follow(&tracks, &shots, scene, aspect, None, config);
            let mut follows: Vec<Follow> = Vec::new();
            for (i, &k) in shots.iter().enumerate() {
                if follows.last().is_none_or(|f| f.track != tracks[k].id) {
                    follows.push(Follow { t: scene.detections.frames[i].t, track: tracks[k].id });
                }
            }
            let face_rows = face_rows(&tracks, &shots, &keys);
            Framing::Track { keys, follows, face_rows }
        }
    }
}

/// Where the followed face sits in the output, as fractions of its height from the top: the
/// 10th percentile of its top edge and the 90th of its bottom edge over the clip.
fn face_rows(tracks: &[Track], shots: &[usize], keys: &[CropKey]) -> (f64, f64) {
    let (mut tops, mut bottoms) = (Vec::new(), Vec::new());
    for (i, (&j, key)) in shots.iter().zip(keys).enumerate() {
        if let Some(o) = tracks[j].at(i) {
            tops.push((o.cy - o.h / 2.0 - key.y) / key.h);
            bottoms.push((o.cy + o.h / 2.0 - key.y) / key.h);
        }
    }
    (percentile(tops, 0.1), percentile(bottoms, 0.9))
}

/// The two confirmed tracks most often in view together, left one first, if they share at
/// least `SPLIT_COVISIBLE` of the samples.
fn split_pair(tracks: &[Track], scene: &Scene) -> Option<(usize, usize)> {
    let n = scene.detections.frames.len() as f64;
    let mut best: Option<(usize, usize, usize)> = None;
    for a in 0..tracks.len() {
        for b in a + 1..tracks.len() {
            let both = tracks[a].obs.iter().filter(|o| tracks[b].at(o.sample).is_some()).count();
            if best.is_none_or(|(_, _, most)| both > most) {
                best = Some((a, b, both));
            }
        }
    }
    let (a, b, both) = best?;
    if (both as f64) < SPLIT_COVISIBLE * n {
        return None;
    }
    let mean_x = |t: &Track| t.obs.iter().map(|o| o.cx).sum::<f64>() / t.obs.len() as f64;
    Some(if mean_x(&tracks[a]) <= mean_x(&tracks[b]) { (a, b) } else { (b, a) })
}

/// Two people in quick exchange or talking over each other.
fn quick_exchange((a, b): (usize, usize), activity: &[Vec<f64>], speech: &[bool], shots: &[usize], scene: &Scene) -> bool {
    let frames = &scene.detections.frames;
    let spoken: Vec<usize> = (0..frames.len()).filter(|&i| speech[i]).collect();
    let peak = |j: usize| activity[j].iter().cloned().fold(0.0, f64::max).max(1e-9);
    let (pa, pb) = (peak(a), peak(b));
    let overlap = spoken.iter().filter(|&&i| activity[a][i] > 0.4 * pa && activity[b][i] > 0.4 * pb).count();
    let talk_over = !spoken.is_empty() && overlap as f64 >= SPLIT_OVERLAP * spoken.len() as f64;
    let between: Vec<(usize, usize)> = runs(shots).into_iter().filter(|&(s, _)| shots[s] == a || shots[s] == b).collect();
    let duration = frames.last().map_or(0.0, |f| f.t) - frames.first().map_or(0.0, |f| f.t);
    let quick = between.len() >= 3 && duration / between.len() as f64 <= SPLIT_MEAN_SHOT_S;
    talk_over || quick
}

/// The crop keys that follow `path` (a track index per sample): eased inside a shot, a cut where
/// the followed track jumps far or the source cuts. `zoom` sets the window height (else the
/// largest window of the aspect that fits the frame).
fn follow(tracks: &[Track], path: &[usize], scene: &Scene, aspect: f64, zoom: Option<f64>, config: &TrackingConfig) -> Vec<CropKey> {
    let (fw, fh) = (scene.frame.0 as f64, scene.frame.1 as f64);
    let (mut win_w, mut win_h) = if fh * aspect <= fw { (fh * aspect, fh) } else { (fw, fw / aspect) };
    if let Some(h) = zoom
        && h < win_h
    {
        (win_w, win_h) = (h * aspect, h);
    }
    let dead_zone = config.dead_zone * fw;
    let max_speed = config.max_speed * fw;
    let frames = &scene.detections.frames;
    let mut keys: Vec<CropKey> = Vec::with_capacity(path.len());
    let mut camera: Option<(f64, f64)> = None;
    for (i, &j) in path.iter().enumerate() {
        // A face lost for longer than `hold_s` (it left the picture) gives way to the centre.
        let (seen, at) = tracks[j].centre_near(i);
        let target = if (frames[at].t - frames[i].t).abs() > config.hold_s { (fw / 2.0, fh / 2.0) } else { seen };
        let switched = i > 0 && path[i - 1] != j;
        let far = camera.is_some_and(|c: (f64, f64)| (c.0 - target.0).abs() > CUT_DISTANCE * fw);
        let cut = camera.is_some() && (frames[i].shot_change || (switched && far));
        let next = match camera {
            Some(cam) if !cut => step(cam, target, frames[i].t - frames[i - 1].t, dead_zone, max_speed),
            _ => target,
        };
        camera = Some(next);
        let x = (next.0 - win_w / 2.0).clamp(0.0, fw - win_w);
        let y = (next.1 - win_h / 2.0).clamp(0.0, fh - win_h);
        keys.push(CropKey { t: frames[i].t, x: x.round(), y: y.round(), w: win_w.round(), h: win_h.round(), cut });
    }
    keys
}

/// One camera step towards `target`: nothing inside the dead zone, otherwise an eased move capped
/// at `max_speed` pixels per second.
fn step(cam: (f64, f64), target: (f64, f64), dt: f64, dead_zone: f64, max_speed: f64) -> (f64, f64) {
    let axis = |c: f64, t: f64| {
        let gap = t - c;
        if gap.abs() <= dead_zone {
            return c;
        }
        let eased = gap * (EASE_RATE * dt).min(1.0);
        c + eased.clamp(-max_speed * dt, max_speed * dt)
    };
    (axis(cam.0, target.0), axis(cam.1, target.1))
}

fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::faces::{FaceBox, FrameFaces};

    fn config() -> TrackingConfig {
        TrackingConfig { dead_zone: 0.06, max_speed: 0.5, hold_s: 2.0 }
    }

    /// A face centred at (x, y), 200 px, with a mouth opening.
    fn face(x: f64, y: f64, mouth: f64) -> FaceBox {
        FaceBox { x: x - 100.0, y: y - 100.0, w: 200.0, h: 200.0, score: 0.9, mouth_open: Some(mouth), landmarks: Some(true), ..Default::default() }
    }

    fn det(frames: Vec<(f64, Vec<FaceBox>, bool)>) -> Detections {
        Detections {
            backend: "test".into(),
            width: 1920,
            height: 1080,
            frames: frames.into_iter().map(|(t, faces, shot_change)| FrameFaces { t, faces, shot_change }).collect(),
        }
    }

    fn run(d: &Detections, words: &[Word], want: Want) -> Framing {
        frame(&Scene { detections: d, scale: 1.0, frame: (1920, 1080), words }, want, 9.0 / 16.0, &config())
    }

    fn keys(f: Framing) -> Vec<CropKey> {
        match f {
            Framing::Track { keys, .. } => keys,
            other => panic!("expected a tracked framing, got {other:?}"),
        }
    }

    fn centre(k: &CropKey) -> f64 {
        k.x + k.w / 2.0
    }

    /// A mouth that opens and closes while `speaking`, shut otherwise.
    fn mouth(i: usize, speaking: bool) -> f64 {
        if speaking { [0.02, 0.08, 0.12, 0.05][i % 4] } else { 0.01 }
    }

    #[test]
    fn small_moves_stay_put_and_big_ones_pan_at_capped_speed() {
        let mut frames = vec![(0.0, vec![face(900.0, 500.0, 0.0)], false), (0.2, vec![face(950.0, 500.0, 0.0)], false)];
        frames.extend((2..20).map(|i| (i as f64 * 0.2, vec![face(1500.0, 500.0, 0.0)], false)));
        let keys = keys(run(&det(frames), &[], Want::Track));
        assert_eq!(centre(&keys[1]), centre(&keys[0]), "a 50 px move is inside the dead zone");
        for pair in keys.windows(2) {
            let speed = (centre(&pair[1]) - centre(&pair[0])).abs() / 0.2;
            assert!(speed <= 0.5 * 1920.0 + 1.0, "pan too fast: {speed}");
        }
        assert!((centre(keys.last().unwrap()) - 1500.0).abs() < 0.06 * 1920.0);
        assert!(keys.iter().all(|k| !k.cut));
    }

    #[test]
    fn holds_through_misses_and_cuts_at_shot_changes() {
        let mut frames: Vec<_> = (0..5).map(|i| (i as f64 * 0.2, vec![face(600.0, 500.0, 0.0)], false)).collect();
        frames.push((1.0, vec![], false));
        frames.push((1.2, vec![], false));
        frames.extend((7..12).map(|i| (i as f64 * 0.2, vec![face(1400.0, 500.0, 0.0)], i == 7)));
        let keys = keys(run(&det(frames), &[], Want::Track));
        assert_eq!(centre(&keys[5]), centre(&keys[4]));
        assert_eq!(centre(&keys[6]), centre(&keys[4]));
        assert!(keys[7].cut && (centre(&keys[7]) - 1400.0).abs() < 2.0, "{:?}", keys[7]);
    }

    #[test]
    fn a_face_that_leaves_gives_way_to_the_centre_after_the_hold() {
        let mut frames: Vec<_> = (0..10).map(|i| (i as f64 * 0.2, vec![face(400.0, 540.0, 0.0)], false)).collect();
        frames.extend((10..40).map(|i| (i as f64 * 0.2, vec![], false)));
        let keys = keys(run(&det(frames), &[], Want::Track));
        assert!((centre(&keys[15]) - 400.0).abs() < 1.0, "held within hold_s: {:?}", keys[15]);
        assert!((centre(keys.last().unwrap()) - 960.0).abs() < 0.06 * 1920.0, "back to the centre: {:?}", keys.last());
    }

    #[test]
    fn patterns_that_are_not_confirmed_faces_never_move_the_crop() {
        // A tiny face, a face seen in one sample at a time, and a box the face mesh rejects.
        let frames = (0..20)
            .map(|i| {
                let mut faces = vec![FaceBox { x: 300.0, y: 300.0, w: 30.0, h: 30.0, score: 0.9, ..Default::default() }];
                if i % 2 == 0 {
                    faces.push(face(1500.0, 400.0, 0.0));
                }
                faces.push(FaceBox { landmarks: Some(false), ..face(400.0, 600.0, 0.0) });
                (i as f64 * 0.2, faces, false)
            })
            .collect();
        assert_eq!(run(&det(frames), &[], Want::Auto), Framing::NoFace);
    }

    #[test]
    fn follows_whoever_speaks_and_cuts_once_per_turn() {
        // Left speaks for 0..3 s, right 3..6 s, a one-sample reply by the left at 6.2 s, right
        // again to 8 s. Samples every 0.2 s.
        let speaker = |t: f64| if t < 3.0 || (6.2..6.4).contains(&t) { 0 } else { 1 };
        let frames: Vec<_> = (0..40)
            .map(|i| {
                let t = i as f64 * 0.2;
                (t, vec![face(500.0, 500.0, mouth(i, speaker(t) == 0)), face(1400.0, 500.0, mouth(i, speaker(t) == 1))], false)
            })
            .collect();
        let words: Vec<Word> = (0..40).map(|i| Word { text: "w".into(), start: i as f64 * 0.2, end: i as f64 * 0.2 + 0.15 }).collect();
        let Framing::Track { keys, follows, face_rows } = run(&det(frames), &words, Want::Track) else { panic!("tracked") };
        assert!((face_rows.0 - 400.0 / 1080.0).abs() < 0.01 && (face_rows.1 - 600.0 / 1080.0).abs() < 0.01, "{face_rows:?}");
        assert_eq!(follows.len(), 2, "one switch at the turn, none for the one-sample reply: {follows:?}");
        assert!((follows[1].t - 3.0).abs() <= 0.5, "the cut lands on the turn (within the activity window): {follows:?}");
        for k in &keys {
            let want = if k.t < 2.6 { 500.0 } else if k.t > 3.4 { 1400.0 } else { continue };
            assert!((centre(k) - want).abs() < 0.07 * 1920.0, "at {} the crop is at {}", k.t, centre(k));
        }
        assert_eq!(keys.iter().filter(|k| k.cut).count(), 1);
    }

    #[test]
    fn two_people_talking_over_each_other_are_split_in_auto() {
        let frames: Vec<_> = (0..30)
            .map(|i| (i as f64 * 0.2, vec![face(1400.0, 500.0, mouth(i, true)), face(500.0, 500.0, mouth(i + 1, true))], false))
            .collect();
        let words = [Word { text: "w".into(), start: 0.0, end: 6.0 }];
        let Framing::Split { top, bottom } = run(&det(frames.clone()), &words, Want::Auto) else { panic!("split") };
        assert!((centre(&top[0]) - 500.0).abs() < 2.0 && (centre(&bottom[0]) - 1400.0).abs() < 2.0, "left on top");
        assert!(top[0].h < 1080.0, "panels are zoomed in on their face");
        // One speaker at a time, long turns: track, not split.
        let calm: Vec<_> = (0..30).map(|i| (i as f64 * 0.2, vec![face(500.0, 500.0, mouth(i, true)), face(1400.0, 500.0, 0.01)], false)).collect();
        assert!(matches!(run(&det(calm), &words, Want::Auto), Framing::Track { .. }));
    }
}
