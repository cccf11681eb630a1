//! Face detection: frame files of the candidate ranges go to the Python detector workers
//! (MediaPipe, Haar as fallback), detections come back as JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AnalysisError, WorkerPool, python_spec, read_json};
use crate::config::{FacesConfig, PythonConfig};

/// What the detector saw in one frame file. Boxes are in frame-file pixels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detections {
    pub backend: String,
    pub width: u32,
    pub height: u32,
    pub frames: Vec<FrameFaces>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameFaces {
    /// Source seconds.
    pub t: f64,
    pub faces: Vec<FaceBox>,
    /// The picture changed wholesale since the previous sampled frame (a cut in the source).
    #[serde(default)]
    pub shot_change: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FaceBox {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub score: f64,
    /// Inner-lip gap over face height from MediaPipe's face mesh; `None` without landmarks.
    #[serde(default)]
    pub mouth_open: Option<f64>,
    /// Mean absolute luma change (0..255) of the mouth region since the previous sampled frame;
    /// the Haar fallback's only mouth signal.
    #[serde(default)]
    pub mouth_motion: Option<f64>,
    /// Whether the face mesh found a plausible face in the box; `None` when it was not run.
    #[serde(default)]
    pub landmarks: Option<bool>,
}

impl FaceBox {
    pub fn centre(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
}

pub struct FaceDetector {
    pool: WorkerPool,
}

impl FaceDetector {
    pub fn new(config: &FacesConfig, python: &PythonConfig) -> Self {
        let args = vec!["--backend".into(), config.backend.clone()];
        Self { pool: WorkerPool::new(python_spec(python, "faces", "face_detect.py", args, config.workers, config.timeout_s)) }
    }

    pub async fn warm_up(&self) -> Result<(), AnalysisError> {
        Ok(self.pool.warm_up().await?)
    }

    /// Detects faces in every frame of `frames`, a frame file still being written
    /// (`media::extract_frames` writes it as FRAMES.part and renames it whole): the worker reads
    /// the frames as they arrive. `expected` is about how many there will be, for the worker's
    /// progress reports; `scratch` holds the IPC files.
    pub async fn detect(&self, frames: &Path, scratch: &Path, tag: &str, expected: u64) -> Result<Detections, AnalysisError> {
        let out = scratch.join(format!("faces-{tag}.json"));
        let request = serde_json::json!({ "frames": frames, "follow": true, "expected": expected, "out": out });
        self.pool.call(&request, &scratch.join(format!("faces-{tag}.request.json"))).await?;
        read_json(&out, "face detections").await
    }
}
