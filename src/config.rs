//! Configuration: `config.toml` compiled in as the base, an optional file over it, then
//! `CLIPMILL__SECTION__KEY` environment variables. Unknown keys are errors; everything is
//! validated before anything starts.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The defaults, documented, exactly as shipped in the repository's `config.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub media: MediaConfig,
    pub render: RenderConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub encoder: String,
    pub x264_preset: String,
    pub quality: u32,
    pub audio_bitrate: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderConfig {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

const X264_PRESETS: &[&str] =
    &["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"];

impl Config {
    /// Loads the defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Load(format!("file {} not found", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("CLIPMILL__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string().to_lowercase()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_string() });
        if !X264_PRESETS.contains(&self.media.x264_preset.as_str()) {
            return invalid("media.x264_preset", "not an x264 preset name");
        }
        if self.media.quality > 51 {
            return invalid("media.quality", "must be 0..=51");
        }
        if !(16_000..=512_000).contains(&self.media.audio_bitrate) {
            return invalid("media.audio_bitrate", "must be 16000..=512000");
        }
        let r = &self.render;
        if r.width % 2 == 1 || r.height % 2 == 1 || !(16..=4096).contains(&r.width) || !(16..=4096).contains(&r.height) {
            return invalid("render", "width and height must be even and within 16..=4096");
        }
        Ok(())
    }

    /// Threads for scalers and converters: the configured count, or one per core.
    pub fn media_threads(&self) -> u32 {
        media_threads(&self.media)
    }
}

pub fn media_threads(media: &MediaConfig) -> u32 {
    if media.threads > 0 {
        media.threads
    } else {
        std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_load_and_validate() {
        let c = Config::load(None).expect("defaults are valid");
        assert_eq!((c.render.width, c.render.height), (1080, 1920));
        assert_eq!(c.media.encoder, "auto");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[media]\nencodr = \"x\"\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("encodr"), "{err}");
        std::fs::write(&path, "[media]\nquality = 99\n").unwrap();
        assert!(Config::load(Some(&path)).unwrap_err().to_string().contains("media.quality"));
    }
}
