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
pub use crop_path::{CropKey, CropPath, Rect};

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
    /// Crop windows over time for `track`; empty means a centred crop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crop_path: Vec<CropKey>,
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
        if self.crop_path.windows(2).any(|w| w[1].t < w[0].t) {
            return Err("crop_path keys must be in time order".into());
        }
        if self.crop_path.iter().any(|k| k.w <= 0.0 || k.h <= 0.0) {
            return Err("crop_path windows must have a positive size".into());
        }
        if self.words.iter().any(|w| w.end < w.start) {
            return Err("a word ends before it starts".into());
        }
        self.captions.validate().map_err(|e| format!("captions.{e}"))?;
        Ok(())
    }
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
            (r#"{"version":1,"clips":[{"start":0,"end":1,"captions":{"preset":"word","size":0.9}}]}"#, "captions.size"),
        ] {
            let err = EditFile::from_json(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
