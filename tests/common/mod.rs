//! Shared helpers for the integration tests: the generated fixtures and their truth, an engine,
//! and ways to look at outputs as a viewer would (frames, OCR, face detection, box order).
#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod node;
pub mod pg_server;
pub mod redis_server;
pub mod s3_server;
pub mod server;
pub mod queue_contract;
pub mod store_contract;
pub mod streaming;
pub mod subtitles;
pub mod words;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clipmill::config::Config;
use clipmill::edit::{ClipEdit, CropKey, Word};
use clipmill::media::{Control, FramesHeader, MediaEngine, TimeRange};
use serde::Deserialize;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A line for the test command to print above its closing line (`target/suite-notes/NAME.txt`):
/// what a test tried and found, for counts the pass/fail line does not carry.
pub fn suite_note(name: &str, line: &str) {
    let notes = root().join("target/suite-notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join(format!("{name}.txt")), format!("{line}\n")).unwrap();
}

pub fn python() -> PathBuf {
    let venv = root().join(".venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// `fetch.allowed_networks` for tests whose servers listen on 127.0.0.1 (other loopback addresses,
/// 127.0.0.2 and up, stay refused).
pub const LOOPBACK_ALLOWED: &str = r#"["127.0.0.1"]"#;

/// The `clipmill` binary as a user runs it, with its scratch in `scratch` and this checkout's
/// Python workers.
pub fn clipmill(scratch: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clipmill"));
    cmd.env("CLIPMILL__SCRATCH__DIR", scratch)
        .env("CLIPMILL__PYTHON__INTERPRETER", python())
        .env("CLIPMILL__PYTHON__SCRIPTS", root().join("python"))
        .env("CLIPMILL__LOG__FILTER", "warn")
        // The tests' media servers listen on 127.0.0.1, which the SSRF guard refuses by default.
        .env("CLIPMILL__FETCH__ALLOWED_NETWORKS", LOOPBACK_ALLOWED);
    cmd
}

/// The generated test media, made once (the generator skips up-to-date outputs).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("CLIPMILL_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root().join("target/fixtures"));
        let status = Command::new(python())
            .arg(root().join("scripts/gen_media.py"))
            .arg("--out")
            .arg(&dir)
            .status()
            .expect("run scripts/gen_media.py (run scripts/setup.sh first)");
        assert!(status.success(), "test media generation failed");
        dir
    })
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

#[derive(Debug, Deserialize)]
pub struct Truth {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub duration: f64,
    pub face_size: [f64; 2],
    pub sentences: Vec<Sentence>,
    pub face_centers: Vec<[f64; 2]>,
    pub sync_marks: Vec<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Sentence {
    pub text: String,
    pub start: f64,
    pub end: f64,
    pub words: Vec<TruthWord>,
}

#[derive(Debug, Deserialize)]
pub struct TruthWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

pub fn truth(name: &str) -> Truth {
    let text = std::fs::read_to_string(fixture(name)).expect("truth json");
    serde_json::from_str(&text).expect("truth parses")
}

impl Truth {
    pub fn words(&self) -> Vec<Word> {
        self.sentences
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| Word { text: w.word.clone(), start: w.start, end: w.end })
            .collect()
    }

    pub fn face_at(&self, t: f64) -> [f64; 2] {
        let i = ((t * self.fps).round() as usize).min(self.face_centers.len() - 1);
        self.face_centers[i]
    }

    /// A crop path that follows the true face: a 9:16 full-height window every 3 frames.
    pub fn crop_path(&self, start: f64, end: f64) -> Vec<CropKey> {
        let (w, h) = (self.height as f64 * 9.0 / 16.0, self.height as f64);
        let first = (start * self.fps).floor() as usize;
        let last = (end * self.fps).ceil() as usize;
        (first..=last)
            .step_by(3)
            .map(|i| {
                let t = i as f64 / self.fps;
                let [cx, _] = self.face_at(t);
                CropKey { t, x: cx - w / 2.0, y: 0.0, w, h, cut: false }
            })
            .collect()
    }

    /// The clip a perfect analysis would produce for `[start, end)`.
    pub fn clip(&self, start: f64, end: f64) -> ClipEdit {
        serde_json::from_value(serde_json::json!({
            "start": start, "end": end,
            "crop_path": self.crop_path(start, end),
            "words": self.words(),
        }))
        .expect("clip edit")
    }
}

pub fn engine() -> &'static MediaEngine {
    static ENGINE: OnceLock<MediaEngine> = OnceLock::new();
    ENGINE.get_or_init(|| MediaEngine::new(&Config::load(None).expect("config").media).expect("media engine"))
}

/// Decoded frames of a file: (source seconds, RGB rows) at `fps`, `width` wide.
pub struct Frames {
    pub header: FramesHeader,
    pub frames: Vec<(f64, Vec<u8>)>,
}

impl Frames {
    pub fn pixel(&self, frame: &[u8], x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.header.width as usize + x as usize) * 3;
        [frame[i], frame[i + 1], frame[i + 2]]
    }
    pub fn mean(&self, frame: &[u8]) -> f64 {
        frame.iter().map(|&v| v as f64).sum::<f64>() / frame.len() as f64
    }
}

pub async fn frames(input: &Path, range: TimeRange, fps: f64, width: u32, dir: &Path) -> (PathBuf, Frames) {
    let path = dir.join(format!("frames-{fps}-{width}.raw"));
    engine().extract_frames(input, range, fps, width, &path, Control::default()).await.expect("frames extract");
    let bytes = std::fs::read(&path).expect("read frames");
    let header = FramesHeader::decode(&bytes).expect("frame header");
    let record = 8 + header.frame_bytes();
    let frames = bytes[32..]
        .chunks_exact(record)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap()) as f64 / 1e9, c[8..].to_vec()))
        .collect();
    (path, Frames { header, frames })
}

/// Runs the real face detector on a frame file; per frame, the best face's centre, if any.
pub fn detect_faces(frames: &Path, backend: &str) -> Vec<(f64, Option<[f64; 2]>)> {
    detect_all_faces(frames, backend).into_iter().map(|(t, faces)| (t, faces.first().copied())).collect()
}

/// Runs the real face detector on a frame file; per frame, every face's centre, best first.
pub fn detect_all_faces(frames: &Path, backend: &str) -> Vec<(f64, Vec<[f64; 2]>)> {
    let out = frames.with_extension("faces.json");
    let request = frames.with_extension("request.json");
    std::fs::write(&request, serde_json::json!({ "frames": frames, "out": out }).to_string()).unwrap();
    let status = Command::new(python())
        .arg(root().join("python/face_detect.py"))
        .args(["--request", request.to_str().unwrap(), "--backend", backend])
        .status()
        .expect("run face detector");
    assert!(status.success(), "face detector failed");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    json["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let faces = f["faces"].as_array().unwrap().iter().map(|b| {
                let v = |k: &str| b[k].as_f64().unwrap();
                [v("x") + v("w") / 2.0, v("y") + v("h") / 2.0]
            });
            (f["t"].as_f64().unwrap(), faces.collect())
        })
        .collect()
}

/// OCR of the caption band of an RGB frame: keeps caption-coloured pixels (white or the yellow
/// highlight, both far brighter than the background), black on white, then tesseract.
pub fn ocr_captions(frames: &Frames, frame: &[u8], band: (f64, f64), scratch: &Path) -> String {
    let (w, h) = (frames.header.width, frames.header.height);
    let (y0, y1) = ((band.0 * h as f64) as u32, (band.1 * h as f64) as u32);
    let mut pgm = format!("P5\n{w} {}\n255\n", y1 - y0).into_bytes();
    for y in y0..y1 {
        for x in 0..w {
            let [r, g, b] = frames.pixel(frame, x, y);
            let white = r > 215 && g > 215 && b > 215;
            let yellow = r > 215 && g > 170 && b < 110;
            pgm.push(if white || yellow { 0 } else { 255 });
        }
    }
    let image = scratch.join("ocr.pgm");
    std::fs::write(&image, pgm).unwrap();
    let out = Command::new("tesseract").arg(&image).arg("stdout").args(["--psm", "6"]).output().expect("run tesseract");
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

/// Top-level MP4 box names in order.
pub fn mp4_boxes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut i = 0usize;
    while i + 8 <= bytes.len() {
        let mut size = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(&bytes[i + 4..i + 8]).to_string();
        if size == 1 {
            size = u64::from_be_bytes(bytes[i + 8..i + 16].try_into().unwrap()) as usize;
        }
        boxes.push(name);
        if size < 8 {
            break;
        }
        i += size;
    }
    boxes
}

/// Onset of the first loud 1 kHz-ish beep in a 16 kHz mono WAV after `after` seconds.
pub fn beep_onset(wav: &Path, after: f64) -> Option<f64> {
    let bytes = std::fs::read(wav).unwrap();
    let samples: Vec<i16> = bytes[44..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    let from = (after * 16_000.0) as usize;
    // The beep is the loudest sound in the fixtures and follows at least 150 ms of silence.
    let loud = i16::MAX as i32 / 3;
    (from..samples.len()).find(|&i| (samples[i] as i32).abs() > loud).map(|i| {
        // Walk back to where the waveform left silence: the onset.
        let mut j = i;
        while j > from && (samples[j - 1] as i32).abs() > 300 {
            j -= 1;
        }
        j as f64 / 16_000.0
    })
}
