//! Caption styles: a named preset, the look to start from, with any of its values overridden.
//!
//! EDIT.json, config.toml's `[captions]`, the `clip`/`render` flags and a job's
//! `options.captions` each carry a `CaptionStyle`: a preset name and the fields someone chose.
//! Layers merge field by field (`over`: a field set on top wins), and `look` fills whatever no
//! layer set from the preset. An EDIT.json written before presets existed sets every field and
//! no preset, so it keeps its look.

use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named caption look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// White text with a dark outline, the word being spoken in the highlight colour.
    #[default]
    Karaoke,
    /// White text on a dark semi-opaque box, the word being spoken highlighted.
    Boxed,
    /// Large bold upper-case text, the word being spoken highlighted.
    Bold,
    /// One large word at a time, as it is spoken.
    Word,
}

impl Preset {
    pub const NAMES: &'static str = "karaoke, boxed, bold or word";

    /// Every value of the preset.
    pub fn look(self) -> Look {
        let karaoke = Look {
            font: "DejaVu Sans Bold".into(),
            size: 0.05,
            color: "#FFFFFF".into(),
            highlight: "#FFD400".into(),
            outline: "#000000".into(),
            position: 0.70,
            max_words: 0,
            max_chars: 18,
            max_lines: 2,
            uppercase: false,
            boxed: false,
        };
        match self {
            Preset::Karaoke => karaoke,
            Preset::Boxed => Look { size: 0.045, max_chars: 22, boxed: true, ..karaoke },
            Preset::Bold => Look { size: 0.075, max_chars: 14, uppercase: true, ..karaoke },
            Preset::Word => Look { size: 0.1, max_words: 1, max_lines: 1, uppercase: true, position: 0.65, ..karaoke },
        }
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("unknown caption preset {s:?}: use {}", Self::NAMES))
    }
}

/// How captions look: a preset, and the values chosen over it. Sizes are relative to the output,
/// so one style fits every output size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionStyle {
    pub enabled: bool,
    /// The look to start from; `karaoke` when absent. Every field below that is set overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// A Pango font family and weight, e.g. "DejaVu Sans Bold".
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub font: Option<String>,
    /// Font size as a fraction of the output width, 0.01..=0.3.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 0.3))]
    pub size: Option<f64>,
    /// Text colour, `#RRGGBB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub color: Option<String>,
    /// Colour of the word being spoken, `#RRGGBB`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub highlight: Option<String>,
    /// Colour of the text's outline, `#RRGGBB` (the `boxed` preset draws a box instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub outline: Option<String>,
    /// Vertical position of the caption block's centre, as a fraction of the output height
    /// (0.05..=0.95). The presets keep it above the bottom UI of Shorts, Reels and TikTok.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.05, max = 0.95))]
    pub position: Option<f64>,
    /// Words per line at most; 0 for no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 50))]
    pub max_words: Option<usize>,
    /// Characters per line before wrapping.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 200))]
    pub max_chars: Option<usize>,
    /// Lines per cue.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub max_lines: Option<usize>,
    /// Upper-case text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uppercase: Option<bool>,
}

impl Default for CaptionStyle {
    fn default() -> Self {
        Self {
            enabled: true,
            preset: None,
            font: None,
            size: None,
            color: None,
            highlight: None,
            outline: None,
            position: None,
            max_words: None,
            max_chars: None,
            max_lines: None,
            uppercase: None,
        }
    }
}

/// Every value a caption is drawn with: a preset's, with a style's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub font: String,
    pub size: f64,
    pub color: String,
    pub highlight: String,
    pub outline: String,
    pub position: f64,
    /// 0: no limit.
    pub max_words: usize,
    pub max_chars: usize,
    pub max_lines: usize,
    pub uppercase: bool,
    /// Text on a shaded box instead of outlined; only the `boxed` preset has it.
    pub boxed: bool,
}

impl CaptionStyle {
    /// This style over `base`: each field set here wins, the rest come from `base`; `enabled` is
    /// this layer's (a layer that means to switch captions on or off says so).
    pub fn over(&self, base: &CaptionStyle) -> CaptionStyle {
        CaptionStyle {
            enabled: self.enabled,
            preset: self.preset.or(base.preset),
            font: self.font.clone().or_else(|| base.font.clone()),
            size: self.size.or(base.size),
            color: self.color.clone().or_else(|| base.color.clone()),
            highlight: self.highlight.clone().or_else(|| base.highlight.clone()),
            outline: self.outline.clone().or_else(|| base.outline.clone()),
            position: self.position.or(base.position),
            max_words: self.max_words.or(base.max_words),
            max_chars: self.max_chars.or(base.max_chars),
            max_lines: self.max_lines.or(base.max_lines),
            uppercase: self.uppercase.or(base.uppercase),
        }
    }

    /// The values to draw with: the preset's, overridden by the fields set here.
    pub fn look(&self) -> Look {
        let preset = self.preset.unwrap_or_default().look();
        Look {
            font: self.font.clone().unwrap_or(preset.font),
            size: self.size.unwrap_or(preset.size),
            color: self.color.clone().unwrap_or(preset.color),
            highlight: self.highlight.clone().unwrap_or(preset.highlight),
            outline: self.outline.clone().unwrap_or(preset.outline),
            position: self.position.unwrap_or(preset.position),
            max_words: self.max_words.unwrap_or(preset.max_words),
            max_chars: self.max_chars.unwrap_or(preset.max_chars),
            max_lines: self.max_lines.unwrap_or(preset.max_lines),
            uppercase: self.uppercase.unwrap_or(preset.uppercase),
            boxed: preset.boxed,
        }
    }

    /// Checks the fields that are set; the message names the field ("size must be …").
    pub fn validate(&self) -> Result<(), String> {
        if let Some(font) = &self.font
            && (font.trim().is_empty() || font.len() > 200 || font.chars().any(char::is_control))
        {
            return Err("font must be a font name of 1..=200 characters".into());
        }
        if let Some(size) = self.size
            && !(0.01..=0.3).contains(&size)
        {
            return Err("size must be within 0.01..=0.3 (a fraction of the output width)".into());
        }
        for (name, colour) in [("color", &self.color), ("highlight", &self.highlight), ("outline", &self.outline)] {
            if let Some(c) = colour
                && !is_rgb(c)
            {
                return Err(format!("{name} must be a colour as #RRGGBB, got {c:?}"));
            }
        }
        if let Some(position) = self.position
            && !(0.05..=0.95).contains(&position)
        {
            return Err("position must be within 0.05..=0.95 (a fraction of the output height)".into());
        }
        if self.max_words.is_some_and(|n| n > 50) {
            return Err("max_words must be 0..=50 (0: no limit)".into());
        }
        if self.max_chars.is_some_and(|n| !(1..=200).contains(&n)) {
            return Err("max_chars must be 1..=200".into());
        }
        if self.max_lines.is_some_and(|n| !(1..=5).contains(&n)) {
            return Err("max_lines must be 1..=5".into());
        }
        Ok(())
    }
}

fn is_rgb(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_fills_what_is_not_set_and_set_fields_win() {
        let style = CaptionStyle { preset: Some(Preset::Word), color: Some("#00FF00".into()), ..Default::default() };
        let look = style.look();
        assert_eq!((look.max_words, look.max_lines, look.uppercase), (1, 1, true), "from the preset");
        assert_eq!(look.color, "#00FF00", "the override");
        assert_eq!(CaptionStyle::default().look(), Preset::Karaoke.look());
        assert!(CaptionStyle { preset: Some(Preset::Boxed), ..Default::default() }.look().boxed);
        assert!(Preset::Bold.look().size > Preset::Karaoke.look().size && Preset::Bold.look().uppercase);
    }

    #[test]
    fn layers_merge_field_by_field() {
        let config = CaptionStyle { preset: Some(Preset::Boxed), font: Some("DejaVu Serif Bold".into()), size: Some(0.04), ..Default::default() };
        let request = CaptionStyle { size: Some(0.06), max_lines: Some(1), ..Default::default() };
        let merged = request.over(&config);
        assert_eq!(merged.preset, Some(Preset::Boxed));
        assert_eq!((merged.font.as_deref(), merged.size, merged.max_lines), (Some("DejaVu Serif Bold"), Some(0.06), Some(1)));
        let off = CaptionStyle { enabled: false, ..Default::default() }.over(&config);
        assert!(!off.enabled && off.preset == Some(Preset::Boxed));
    }

    #[test]
    fn old_styles_keep_their_look_and_new_ones_stay_short() {
        // Every field of the style EDIT.json carried before presets.
        let old = r##"{"enabled":true,"font":"DejaVu Sans Bold","size":0.05,"color":"#FFFFFF","highlight":"#FFD400",
                       "position":0.7,"max_chars":18,"max_lines":2,"uppercase":false}"##;
        let old: CaptionStyle = serde_json::from_str(old).unwrap();
        assert_eq!(old.look(), Preset::Karaoke.look());
        let style = CaptionStyle { preset: Some(Preset::Word), size: Some(0.08), ..Default::default() };
        assert_eq!(serde_json::to_string(&style).unwrap(), r#"{"enabled":true,"preset":"word","size":0.08}"#);
        assert!(serde_json::from_str::<CaptionStyle>(r#"{"preset":"fancy"}"#).is_err());
        assert!(serde_json::from_str::<CaptionStyle>(r##"{"colour":"#FFFFFF"}"##).unwrap_err().to_string().contains("colour"));
        assert_eq!("boxed".parse::<Preset>(), Ok(Preset::Boxed));
        assert!("Boxy".parse::<Preset>().unwrap_err().contains("karaoke, boxed, bold or word"));
    }

    #[test]
    fn values_out_of_range_are_refused_by_name() {
        for (style, field) in [
            (CaptionStyle { size: Some(0.5), ..Default::default() }, "size"),
            (CaptionStyle { color: Some("white".into()), ..Default::default() }, "color"),
            (CaptionStyle { outline: Some("#12345".into()), ..Default::default() }, "outline"),
            (CaptionStyle { position: Some(1.0), ..Default::default() }, "position"),
            (CaptionStyle { max_lines: Some(0), ..Default::default() }, "max_lines"),
            (CaptionStyle { max_chars: Some(0), ..Default::default() }, "max_chars"),
            (CaptionStyle { max_words: Some(51), ..Default::default() }, "max_words"),
            (CaptionStyle { font: Some(" ".into()), ..Default::default() }, "font"),
        ] {
            assert!(style.validate().unwrap_err().starts_with(field), "{style:?}");
        }
        assert!(CaptionStyle { max_words: Some(0), highlight: Some("#00ff00".into()), ..Default::default() }.validate().is_ok());
    }
}
