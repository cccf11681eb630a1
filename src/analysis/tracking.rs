//! From face detections to a crop path a camera operator would make: one speaker followed, small
//! moves ignored (dead zone), pans eased and speed-capped, position held through missed
//! detections, and a cut (not a pan) at a shot change.

use super::faces::{Detections, FaceBox};
use crate::config::TrackingConfig;
use crate::edit::CropKey;

/// Detections below this confidence are ignored.
const MIN_SCORE: f64 = 0.5;
/// A face within this fraction of the frame width of the one followed is the same person.
const STICKY: f64 = 0.12;
/// How quickly a pan closes the gap to its target (per second) before the speed cap.
const EASE_RATE: f64 = 4.0;

/// Builds the crop path for a clip, or `None` when no face was seen at all (the caller falls back
/// to `fit` or a centred crop). `scale` maps frame-file pixels to source pixels; `frame` is the
/// source display size and `aspect` the output width / height.
pub fn crop_path(
    detections: &Detections,
    scale: f64,
    frame: (u32, u32),
    aspect: f64,
    config: &TrackingConfig,
) -> Option<Vec<CropKey>> {
    let (fw, fh) = (frame.0 as f64, frame.1 as f64);
    let (win_h, win_w) = if fh * aspect <= fw { (fh, fh * aspect) } else { (fw / aspect, fw) };
    let dead_zone = config.dead_zone * fw;
    let max_speed = config.max_speed * fw;

    let mut followed: Option<(f64, f64)> = None; // centre of the face being followed
    let mut last_seen = f64::NEG_INFINITY;
    let mut camera: Option<(f64, f64)> = None; // centre of the window
    let mut prev_t: Option<f64> = None;
    let mut seen_any = false;
    let mut keys = Vec::with_capacity(detections.frames.len());

    for frame_faces in &detections.frames {
        let t = frame_faces.t;
        let faces: Vec<(f64, f64, f64)> = frame_faces
            .faces
            .iter()
            .filter(|f| f.score >= MIN_SCORE)
            .map(|f: &FaceBox| {
                let (cx, cy) = f.centre();
                (cx * scale, cy * scale, f.w * f.h * scale * scale)
            })
            .collect();
        if frame_faces.shot_change {
            followed = None;
        }
        let pick = choose(&faces, followed, fw, fh);
        let mut cut = frame_faces.shot_change && camera.is_some();
        match pick {
            Some(centre) => {
                seen_any = true;
                followed = Some(centre);
                last_seen = t;
            }
            None if t - last_seen > config.hold_s => followed = None,
            None => {}
        }
        let target = followed.unwrap_or_else(|| camera.unwrap_or((fw / 2.0, fh / 2.0)));
        let next = match (camera, prev_t) {
            (Some(cam), Some(pt)) if !cut => step(cam, target, t - pt, dead_zone, max_speed),
            _ => {
                cut = cut && camera != Some(target);
                target
            }
        };
        camera = Some(next);
        prev_t = Some(t);
        let x = (next.0 - win_w / 2.0).clamp(0.0, fw - win_w);
        let y = (next.1 - win_h / 2.0).clamp(0.0, fh - win_h);
        keys.push(CropKey { t, x: x.round(), y: y.round(), w: win_w.round(), h: win_h.round(), cut });
    }
    seen_any.then_some(keys)
}

/// The face to follow: the one near the followed face if it is still there (stickiness), else the
/// largest, discounted by distance from the centre.
fn choose(faces: &[(f64, f64, f64)], followed: Option<(f64, f64)>, fw: f64, fh: f64) -> Option<(f64, f64)> {
    if let Some((fx, fy)) = followed
        && let Some(&(x, y, _)) = faces
            .iter()
            .filter(|(x, y, _)| ((x - fx).powi(2) + (y - fy).powi(2)).sqrt() < STICKY * fw)
            .min_by(|a, b| dist(a, fx, fy).total_cmp(&dist(b, fx, fy)))
    {
        return Some((x, y));
    }
    faces
        .iter()
        .max_by(|a, b| prominence(a, fw, fh).total_cmp(&prominence(b, fw, fh)))
        .map(|&(x, y, _)| (x, y))
}

fn dist(&(x, y, _): &(f64, f64, f64), fx: f64, fy: f64) -> f64 {
    (x - fx).powi(2) + (y - fy).powi(2)
}

fn prominence(&(x, y, area): &(f64, f64, f64), fw: f64, fh: f64) -> f64 {
    let off = ((x / fw - 0.5).powi(2) + (y / fh - 0.5).powi(2)).sqrt();
    area * (1.0 - off)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::faces::FrameFaces;

    fn config() -> TrackingConfig {
        TrackingConfig { dead_zone: 0.06, max_speed: 0.5, hold_s: 2.0 }
    }

    /// (time, face centres, shot change) per sampled frame.
    type Sample = (f64, Vec<(f64, f64)>, bool);

    fn det(frames: Vec<Sample>) -> Detections {
        Detections {
            backend: "test".into(),
            width: 1920,
            height: 1080,
            frames: frames
                .into_iter()
                .map(|(t, faces, shot_change)| FrameFaces {
                    t,
                    faces: faces.into_iter().map(|(x, y)| FaceBox { x: x - 100.0, y: y - 100.0, w: 200.0, h: 200.0, score: 0.9 }).collect(),
                    shot_change,
                })
                .collect(),
        }
    }

    fn centre(k: &CropKey) -> f64 {
        k.x + k.w / 2.0
    }

    #[test]
    fn small_moves_stay_put_and_big_ones_pan_at_capped_speed() {
        let mut frames = vec![(0.0, vec![(900.0, 500.0)], false), (0.2, vec![(950.0, 500.0)], false)];
        frames.extend((2..20).map(|i| (i as f64 * 0.2, vec![(1500.0, 500.0)], false)));
        let keys = crop_path(&det(frames), 1.0, (1920, 1080), 9.0 / 16.0, &config()).unwrap();
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
        let frames = vec![
            (0.0, vec![(600.0, 500.0)], false),
            (0.2, vec![], false),
            (0.4, vec![], false),
            (0.6, vec![(1400.0, 500.0)], true),
        ];
        let keys = crop_path(&det(frames), 1.0, (1920, 1080), 9.0 / 16.0, &config()).unwrap();
        assert_eq!(centre(&keys[1]), centre(&keys[0]));
        assert_eq!(centre(&keys[2]), centre(&keys[0]));
        assert!(keys[3].cut && (centre(&keys[3]) - 1400.0).abs() < 2.0);
    }

    #[test]
    fn sticks_to_the_followed_speaker_and_reports_no_face() {
        let frames = (0..10).map(|i| (i as f64 * 0.2, vec![(500.0, 500.0), (1400.0, 500.0)], false)).collect();
        let keys = crop_path(&det(frames), 1.0, (1920, 1080), 9.0 / 16.0, &config()).unwrap();
        let first = centre(&keys[0]);
        assert!(keys.iter().all(|k| centre(k) == first), "camera must not wander between speakers");
        assert!(crop_path(&det(vec![(0.0, vec![], false)]), 1.0, (1920, 1080), 0.5625, &config()).is_none());
    }
}
