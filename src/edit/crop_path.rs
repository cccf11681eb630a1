//! Crop paths: keyframed windows over time, interpolated into one window per output frame.
//!
//! Between keys the window's centre and size follow a monotone cubic (Fritsch–Carlson), which is
//! smooth and never overshoots past a key, so a window between two in-frame keys stays in frame.
//! A key marked `cut` is a shot change: the window jumps there instead of panning.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A crop window at a source time, in source display pixels (top-left corner and size).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CropKey {
    pub t: f64,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// A shot change: jump to this window at `t` rather than pan into it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// An integer window inside the frame, with even coordinates (4:2:0 chroma needs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// One half of the source frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Left,
    Right,
}

/// A crop path bound to a frame size and an output aspect ratio.
#[derive(Debug, Clone)]
pub struct CropPath {
    keys: Vec<CropKey>,
    /// Per key, the tangents of (cx, cy, w, h).
    tangents: Vec<[f64; 4]>,
    frame: (u32, u32),
    aspect: f64,
}

impl CropPath {
    /// `frame` is the source display size, `aspect` the output width / height.
    pub fn new(keys: &[CropKey], frame: (u32, u32), aspect: f64) -> Self {
        let mut keys = keys.to_vec();
        if keys.is_empty() {
            let (fw, fh) = (frame.0 as f64, frame.1 as f64);
            keys.push(CropKey { t: 0.0, x: 0.0, y: 0.0, w: fw, h: fh, cut: false });
        }
        let tangents = tangents(&keys);
        Self { keys, tangents, frame, aspect }
    }

    /// Like `new`, but an empty path is the largest window of `aspect` centred in one half of the
    /// frame: split mode's default, the left half for the top panel and the right for the bottom.
    pub fn in_half(keys: &[CropKey], frame: (u32, u32), aspect: f64, half: Half) -> Self {
        if !keys.is_empty() {
            return Self::new(keys, frame, aspect);
        }
        let (half_w, fh) = (frame.0 as f64 / 2.0, frame.1 as f64);
        let w = half_w.min(fh * aspect);
        let h = w / aspect;
        let left = match half {
            Half::Left => 0.0,
            Half::Right => half_w,
        };
        let key = CropKey { t: 0.0, x: left + (half_w - w) / 2.0, y: (fh - h) / 2.0, w, h, cut: false };
        Self::new(&[key], frame, aspect)
    }

    /// The window to show at source time `t`.
    pub fn window_at(&self, t: f64) -> Rect {
        let v = self.values_at(t);
        fit_window(v, self.frame, self.aspect)
    }

    fn values_at(&self, t: f64) -> [f64; 4] {
        let k = &self.keys;
        let last = k.len() - 1;
        if t <= k[0].t {
            return values(&k[0]);
        }
        if t >= k[last].t {
            return values(&k[last]);
        }
        let i = k.partition_point(|key| key.t <= t) - 1;
        let (a, b) = (&k[i], &k[i + 1]);
        let (va, vb) = (values(a), values(b));
        let dt = b.t - a.t;
        if b.cut || dt <= 0.0 {
            return va;
        }
        let s = (t - a.t) / dt;
        let (h00, h10, h01, h11) = hermite(s);
        let mut out = [0.0; 4];
        for c in 0..4 {
            out[c] = h00 * va[c] + h10 * dt * self.tangents[i][c] + h01 * vb[c] + h11 * dt * self.tangents[i + 1][c];
        }
        out
    }
}

/// (centre x, centre y, width, height) of a key.
fn values(k: &CropKey) -> [f64; 4] {
    [k.x + k.w / 2.0, k.y + k.h / 2.0, k.w, k.h]
}

fn hermite(s: f64) -> (f64, f64, f64, f64) {
    let (s2, s3) = (s * s, s * s * s);
    (2.0 * s3 - 3.0 * s2 + 1.0, s3 - 2.0 * s2 + s, -2.0 * s3 + 3.0 * s2, s3 - s2)
}

/// Fritsch–Carlson tangents; zero at the ends, at extremes and next to cuts, so no overshoot.
fn tangents(keys: &[CropKey]) -> Vec<[f64; 4]> {
    let n = keys.len();
    let secant = |i: usize, c: usize| -> Option<f64> {
        let (a, b) = (&keys[i], &keys[i + 1]);
        (!b.cut && b.t > a.t).then(|| (values(b)[c] - values(a)[c]) / (b.t - a.t))
    };
    (0..n)
        .map(|i| {
            let mut m = [0.0; 4];
            if i == 0 || i == n - 1 {
                return m;
            }
            for (c, slot) in m.iter_mut().enumerate() {
                if let (Some(d0), Some(d1)) = (secant(i - 1, c), secant(i, c))
                    && d0 * d1 > 0.0
                {
                    *slot = 2.0 / (1.0 / d0 + 1.0 / d1);
                }
            }
            m
        })
        .collect()
}

/// The largest window of `aspect` no bigger than the requested one's height (or the frame),
/// centred where it was asked for, then pushed inside the frame.
fn fit_window([cx, cy, w, h]: [f64; 4], (fw, fh): (u32, u32), aspect: f64) -> Rect {
    let (fw, fh) = (fw as f64, fh as f64);
    let mut height = h.max(w / aspect).min(fh);
    let mut width = height * aspect;
    if width > fw {
        width = fw;
        height = width / aspect;
    }
    let x = (cx - width / 2.0).clamp(0.0, fw - width);
    let y = (cy - height / 2.0).clamp(0.0, fh - height);
    let even = |v: f64| (v.round() as u32) & !1;
    let (w, h) = (even(width).max(2), even(height).max(2));
    Rect { x: even(x).min(fw as u32 - w), y: even(y).min(fh as u32 - h), w, h }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: f64, x: f64, cut: bool) -> CropKey {
        CropKey { t, x, y: 0.0, w: 608.0, h: 1080.0, cut }
    }

    #[test]
    fn empty_path_is_a_centred_vertical_window() {
        let p = CropPath::new(&[], (1920, 1080), 9.0 / 16.0);
        let r = p.window_at(3.0);
        assert_eq!((r.w, r.h), (608, 1080));
        assert!((r.x as i32 + r.w as i32 / 2 - 960).abs() <= 2);
    }

    #[test]
    fn empty_split_paths_are_centred_in_their_halves() {
        // 1080x960 panels: windows of aspect 1.125, as wide as half of a 1920x1080 frame.
        let aspect = 1080.0 / 960.0;
        let left = CropPath::in_half(&[], (1920, 1080), aspect, Half::Left).window_at(1.0);
        let right = CropPath::in_half(&[], (1920, 1080), aspect, Half::Right).window_at(1.0);
        assert_eq!((left.w, left.h), (960, 852));
        assert_eq!((left.x, right.x), (0, 960));
        assert_eq!((left.y, right.y), (112, 112));
        let keys = [key(0.0, 700.0, false)];
        assert_eq!(CropPath::in_half(&keys, (1920, 1080), aspect, Half::Left).window_at(0.0), CropPath::new(&keys, (1920, 1080), aspect).window_at(0.0));
    }

    #[test]
    fn interpolation_is_monotone_and_stays_in_frame() {
        let keys = [key(0.0, 0.0, false), key(1.0, 600.0, false), key(2.0, 1300.0, false), key(3.0, 1300.0, false)];
        let p = CropPath::new(&keys, (1920, 1080), 9.0 / 16.0);
        let mut prev = 0;
        for i in 0..=300 {
            let r = p.window_at(i as f64 / 100.0);
            assert!(r.x + r.w <= 1920 && r.y + r.h <= 1080);
            assert!(r.x + 2 >= prev, "window moved backwards at step {i}");
            prev = r.x;
        }
        assert_eq!(p.window_at(1.0).x, 600);
    }

    #[test]
    fn cut_jumps_instead_of_panning() {
        let keys = [key(0.0, 100.0, false), key(2.0, 1200.0, true)];
        let p = CropPath::new(&keys, (1920, 1080), 9.0 / 16.0);
        assert_eq!(p.window_at(1.99).x, 100);
        assert_eq!(p.window_at(2.0).x, 1200);
    }

    #[test]
    fn window_takes_the_output_aspect_and_is_clamped() {
        let keys = [CropKey { t: 0.0, x: 1800.0, y: 500.0, w: 300.0, h: 300.0, cut: false }];
        let p = CropPath::new(&keys, (1920, 1080), 1.0);
        let r = p.window_at(0.0);
        assert_eq!((r.w, r.h), (300, 300));
        assert_eq!(r.x, 1620);
    }
}
