//! EDIT.json: the portable edit format every clip is rendered from and exported as.
//!
//! One file describes every clip of a source: its range, how it is framed (a crop path that
//! follows the speaker, or `fit`), the words with their times for captions, and the caption style.
//! Times are source seconds; pixel positions are source display pixels. The JSON Schema is
//! generated from these types (`clipmill schema`) and kept in `schemas/edit.schema.json`.

pub mod captions;
pub mod crop_path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use captions::{Cue, CaptionStyle};
pub use crop_path::{CropKey, CropPath, Half, Rect};

/// The current version of the format.
pub const EDIT_VERSION: u32 = 1;

/// A whole edit: every clip to cut from one source.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditFile {
    /// Format version; this build reads version 1.
    pub version: u32,
    /// Where the source came from (a path or URL); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub clips: Vec<ClipEdit>,
}

/// One clip.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipEdit {
    /// Start of the clip in source seconds.
    pub start: f64,
    /// End of the clip in source seconds (exclusive).
    pub end: f64,
    #[serde(default)]
    pub mode: Mode,
    /// Output size; the configured default (1080x1920) when absent. Ignored by `original`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Crop windows over time for `track`, and for the top panel of `split`; empty means a
    /// centred crop (in `split`, a centred window of the left half of the source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crop_path: Vec<CropKey>,
    /// `split` only: the bottom panel's crop windows over time, same semantics as `crop_path`;
    /// empty means a centred window of the right half of the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crop_path_bottom: Vec<CropKey>,
    /// Which detected face (track id) the `track` window follows, from when: one entry per shot.
    /// Informational: rendering reads only the crop path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follows: Vec<Follow>,
    /// Spoken words with source times, for captions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
    #[serde(default)]
    pub captions: CaptionStyle,
    /// Free-form metadata (title, score, …) carried into clips.json untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// How the source frame becomes the output frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Crop a window that follows `crop_path`, scaled to fill the output.
    #[default]
    Track,
    /// The whole frame scaled into the output over a blurred, zoomed copy of itself.
    Fit,
    /// The source framing as it is: stream copy when the codecs allow and no captions are asked,
    /// otherwise a re-encode at the source size.
    Original,
    /// Two people in quick exchange: the output is two stacked panels of half its height, the top
    /// one following `crop_path`, the bottom one `crop_path_bottom`, each window at the panel's
    /// aspect (output width / half the output height). Captions sit on the seam between them.
    Split,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const VERTICAL_1080: Size = Size { width: 1080, height: 1920 };

    pub fn parse(s: &str) -> Option<Size> {
        let (w, h) = s.split_once(['x', 'X'])?;
        Some(Size { width: w.trim().parse().ok()?, height: h.trim().parse().ok()? })
    }
}

/// From `t` (source seconds) on, the window follows the face tracked as `track`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Follow {
    pub t: f64,
    pub track: u32,
}

/// A spoken word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Why an edit cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("edit file is not valid json for this format: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("unsupported edit version {0} (this build reads {EDIT_VERSION})")]
    Version(u32),
    #[error("clip {index}: {reason}")]
    Clip { index: usize, reason: String },
}

impl EditFile {
    pub fn from_json(text: &str) -> Result<Self, EditError> {
        let edit: EditFile = serde_json::from_str(text)?;
        edit.validate()?;
        Ok(edit)
    }

    /// Checks what the types cannot: times, sizes and ordering.
    pub fn validate(&self) -> Result<(), EditError> {
        if self.version != EDIT_VERSION {
            return Err(EditError::Version(self.version));
        }
        for (i, clip) in self.clips.iter().enumerate() {
            clip.validate().map_err(|reason| EditError::Clip { index: i + 1, reason })?;
        }
        Ok(())
    }

    pub fn schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(EditFile)).expect("schema serialises")
    }
}

impl ClipEdit {
    fn validate(&self) -> Result<(), String> {
        if !(self.start.is_finite() && self.end.is_finite()) || self.start < 0.0 || self.end <= self.start {
            return Err(format!("range {}..{} is empty or invalid", self.start, self.end));
        }
        if let Some(size) = self.size
            && (size.width < 16 || size.height < 16 || size.width > 4096 || size.height > 4096 || size.width % 2 == 1 || size.height % 2 == 1)
        {
            return Err(format!("size {}x{} must be even and within 16..4096", size.width, size.height));
        }
        if !self.crop_path_bottom.is_empty() && self.mode != Mode::Split {
            return Err("crop_path_bottom is only for mode split".into());
        }
        check_path("crop_path", &self.crop_path)?;
        check_path("crop_path_bottom", &self.crop_path_bottom)?;
        if self.words.iter().any(|w| w.end < w.start) {
            return Err("a word ends before it starts".into());
        }
        Ok(())
    }
}

/// Keys in time order, windows with a positive size.
fn check_path(name: &str, keys: &[CropKey]) -> Result<(), String> {
    if keys.windows(2).any(|w| w[1].t < w[0].t) {
        return Err(format!("{name} keys must be in time order"));
    }
    if keys.iter().any(|k| !(k.w > 0.0 && k.h > 0.0)) {
        return Err(format!("{name} windows must have a positive size"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_current() {
        let committed: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/edit.schema.json")).expect("schema file parses");
        assert_eq!(committed, EditFile::schema(), "run `clipmill schema > schemas/edit.schema.json`");
    }

    #[test]
    fn edit_files_are_validated() {
        let ok = r#"{"version":1,"clips":[{"start":1,"end":4,"mode":"fit","size":{"width":720,"height":1280}}]}"#;
        assert_eq!(EditFile::from_json(ok).unwrap().clips[0].mode, Mode::Fit);
        for (bad, needle) in [
            (r#"{"version":2,"clips":[]}"#, "version"),
            (r#"{"version":1,"clips":[{"start":4,"end":1}]}"#, "clip 1"),
            (r#"{"version":1,"clips":[{"start":0,"end":1,"zoom":2}]}"#, "zoom"),
            (r#"{"version":1,"clips":[{"start":0,"end":1,"size":{"width":721,"height":1280}}]}"#, "even"),
        ] {
            let err = EditFile::from_json(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn split_mode_takes_a_second_path() {
        let key = |x: f64| format!(r#"{{"t":0,"x":{x},"y":0,"w":600,"h":533}}"#);
        let split = format!(
            r#"{{"version":1,"clips":[{{"start":0,"end":2,"mode":"split","crop_path":[{}],"crop_path_bottom":[{}]}}]}}"#,
            key(100.0),
            key(900.0)
        );
        let clip = &EditFile::from_json(&split).unwrap().clips[0];
        assert_eq!(clip.mode, Mode::Split);
        assert_eq!((clip.crop_path[0].x, clip.crop_path_bottom[0].x), (100.0, 900.0));
        // It round-trips, and a clip without it still serialises without the field.
        let back = serde_json::to_string(clip).unwrap();
        assert!(back.contains(r#""mode":"split""#) && back.contains("crop_path_bottom"), "{back}");
        let track = EditFile::from_json(r#"{"version":1,"clips":[{"start":0,"end":2}]}"#).unwrap();
        assert!(!serde_json::to_string(&track.clips[0]).unwrap().contains("crop_path_bottom"));

        let bottom = |mode: &str, keys: &str| {
            format!(r#"{{"version":1,"clips":[{{"start":0,"end":2,"mode":"{mode}","crop_path_bottom":{keys}}}]}}"#)
        };
        let late = r#"{"t":1,"x":0,"y":0,"w":600,"h":533}"#;
        for (bad, needle) in [
            (bottom("track", &format!("[{}]", key(0.0))), "only for mode split"),
            (bottom("fit", &format!("[{}]", key(0.0))), "only for mode split"),
            (bottom("split", &format!("[{late},{}]", key(0.0))), "crop_path_bottom keys must be in time order"),
            (bottom("split", r#"[{"t":0,"x":0,"y":0,"w":0,"h":533}]"#), "crop_path_bottom windows must have a positive size"),
        ] {
            let err = EditFile::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
