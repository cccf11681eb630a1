//! What a source's page says about it, from yt-dlp's info JSON: title, uploader, duration,
//! chapters, and the "most replayed" heatmap (the audience's own replay signal, per slice of the
//! video, 0..1). yt-dlp's info JSON is kept with the download (`info.json` in the fetch cache); a
//! local file brings its own as `<stem>.info.json` beside it (yt-dlp's `--write-info-json`
//! name), or `clipmill clip --info FILE`. Scoring uses chapters as clip boundaries and the heatmap
//! as a feature, and sends both to the LLM scorer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::job::SourceSummary;

/// A chapter as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chapter {
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub title: String,
}

/// One slice of the "most replayed" heatmap: how often `[start, end)` was replayed, 0..1
/// relative to the most replayed slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatPoint {
    pub start: f64,
    pub end: f64,
    pub value: f64,
}

/// The parts of yt-dlp's info JSON that clipmill uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chapters: Vec<Chapter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heatmap: Vec<HeatPoint>,
}

/// A chapter or heatmap list longer than this is cut (a page cannot make scoring quadratic).
const MAX_ENTRIES: usize = 1000;

impl SourceMeta {
    /// Reads yt-dlp's info JSON. Entries with times that are not finite, or that end before they
    /// start, are dropped; both lists are sorted by start.
    pub fn from_info(info: &Value) -> Self {
        let text = |key: &str| info[key].as_str().map(str::trim).filter(|s| !s.is_empty()).map(|s| s.chars().take(300).collect::<String>());
        let span = |v: &Value| -> Option<(f64, f64)> {
            let (start, end) = (v["start_time"].as_f64()?, v["end_time"].as_f64()?);
            (start.is_finite() && end.is_finite() && start >= 0.0 && end > start).then_some((start, end))
        };
        let list = |key: &str| info[key].as_array().map(|a| a.iter().take(MAX_ENTRIES).collect::<Vec<_>>()).unwrap_or_default();
        let mut chapters: Vec<Chapter> = list("chapters")
            .into_iter()
            .filter_map(|c| span(c).map(|(start, end)| Chapter { start, end, title: c["title"].as_str().unwrap_or("").chars().take(200).collect() }))
            .collect();
        chapters.sort_by(|a, b| a.start.total_cmp(&b.start));
        let mut heatmap: Vec<HeatPoint> = list("heatmap")
            .into_iter()
            .filter_map(|h| {
                let value = h["value"].as_f64().filter(|v| v.is_finite())?;
                span(h).map(|(start, end)| HeatPoint { start, end, value: value.max(0.0) })
            })
            .collect();
        heatmap.sort_by(|a, b| a.start.total_cmp(&b.start));
        Self {
            title: text("title").or_else(|| text("fulltitle")),
            uploader: text("uploader").or_else(|| text("channel")),
            duration: info["duration"].as_f64().filter(|d| d.is_finite() && *d > 0.0),
            chapters,
            heatmap,
        }
    }

    /// Reads an info JSON file; `None` when it is missing or not JSON (a warning is logged for
    /// the latter: a broken sidecar must not stop a job).
    pub async fn load(path: &Path) -> Option<Self> {
        let bytes = tokio::fs::read(path).await.ok()?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(info) => Some(Self::from_info(&info)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "info json is not json; ignored");
                None
            }
        }
    }

    /// Whether it has anything scoring can use.
    pub fn has_signals(&self) -> bool {
        !self.chapters.is_empty() || !self.heatmap.is_empty()
    }

    /// Times where a chapter begins, after the very start.
    pub fn chapter_cuts(&self) -> Vec<f64> {
        self.chapters.iter().map(|c| c.start).filter(|&s| s > 0.0).collect()
    }

    /// The chapter playing at `t`.
    pub fn chapter_at(&self, t: f64) -> Option<&Chapter> {
        self.chapters.iter().rev().find(|c| c.start <= t + 1e-6 && t < c.end)
    }

    /// The time-weighted mean heat over `[start, end)`; `None` without a heatmap.
    pub fn heat(&self, start: f64, end: f64) -> Option<f64> {
        if self.heatmap.is_empty() || end <= start {
            return None;
        }
        let (mut sum, mut covered) = (0.0, 0.0);
        for h in &self.heatmap {
            let overlap = h.end.min(end) - h.start.max(start);
            if overlap > 0.0 {
                sum += h.value * overlap;
                covered += overlap;
            }
        }
        Some(if covered > 0.0 { sum / covered } else { 0.0 })
    }

    /// How far `[start, end)` stands out in the heatmap: 0 at the video's mean heat, 1 at its
    /// most replayed slice, negative below the mean (down to -1). `None` without a heatmap, or
    /// when it is flat.
    pub fn replay(&self, start: f64, end: f64) -> Option<f64> {
        let heat = self.heat(start, end)?;
        let total: f64 = self.heatmap.iter().map(|h| h.end - h.start).sum();
        let mean = self.heatmap.iter().map(|h| h.value * (h.end - h.start)).sum::<f64>() / total.max(1e-9);
        let peak = self.heatmap.iter().map(|h| h.value).fold(0.0, f64::max);
        if peak - mean < 1e-6 {
            return None;
        }
        Some(if heat >= mean { (heat - mean) / (peak - mean) } else { ((heat - mean) / mean.max(1e-9)).max(-1.0) })
    }

    /// The short summary a job result carries.
    pub fn summary(&self) -> SourceSummary {
        SourceSummary { title: self.title.clone(), uploader: self.uploader.clone(), duration: self.duration, chapters: self.chapters.len() }
    }
}

/// The info JSON yt-dlp's `--write-info-json` would put beside `video`: `<stem>.info.json`.
pub fn sidecar_of(video: &Path) -> Option<PathBuf> {
    let stem = video.file_stem()?.to_string_lossy().to_string();
    Some(video.with_file_name(format!("{stem}.info.json"))).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> Value {
        json!({
            "title": " A talk ", "uploader": "Someone", "duration": 30.0,
            "chapters": [
                {"start_time": 13.0, "end_time": 30.0, "title": "Second"},
                {"start_time": 0.0, "end_time": 13.0, "title": "First"},
                {"start_time": 5.0, "end_time": 2.0, "title": "backwards"},
            ],
            "heatmap": [
                {"start_time": 0.0, "end_time": 10.0, "value": 0.2},
                {"start_time": 10.0, "end_time": 20.0, "value": 1.0},
                {"start_time": 20.0, "end_time": 30.0, "value": 0.2},
                {"start_time": 30.0, "end_time": 31.0},
            ],
        })
    }

    #[test]
    fn reads_yt_dlp_info_and_drops_bad_entries() {
        let meta = SourceMeta::from_info(&info());
        assert_eq!(meta.title.as_deref(), Some("A talk"));
        assert_eq!(meta.uploader.as_deref(), Some("Someone"));
        assert_eq!(meta.chapters.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(), ["First", "Second"]);
        assert_eq!(meta.heatmap.len(), 3);
        assert_eq!(meta.chapter_cuts(), [13.0]);
        assert_eq!(meta.chapter_at(14.0).unwrap().title, "Second");
        assert_eq!(SourceMeta::from_info(&json!({})), SourceMeta::default());
    }

    #[test]
    fn replay_is_one_at_the_peak_and_negative_below_the_mean() {
        let meta = SourceMeta::from_info(&info());
        assert!((meta.replay(12.0, 18.0).unwrap() - 1.0).abs() < 1e-9);
        assert!(meta.replay(0.0, 5.0).unwrap() < 0.0);
        let half = meta.replay(7.0, 13.0).unwrap();
        assert!(half > 0.0 && half < 1.0, "{half}");
        assert_eq!(SourceMeta::default().replay(0.0, 5.0), None);
    }
}
