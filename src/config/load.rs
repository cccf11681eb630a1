//! Loading the configuration (defaults, file, environment) and validating it.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};

use super::{Config, DEFAULT_TOML, parse_network};

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
        if !["auto", "software"].contains(&self.media.decoder.as_str()) {
            return invalid("media.decoder", "must be \"auto\" or \"software\"");
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
        if !["auto", "mediapipe", "haar"].contains(&self.faces.backend.as_str()) {
            return invalid("faces.backend", "must be auto, mediapipe or haar");
        }
        if !(0.5..=30.0).contains(&self.faces.fps) || !(160..=3840).contains(&self.faces.width) {
            return invalid("faces", "fps must be 0.5..=30 and width 160..=3840");
        }
        if self.python.stall_s == 0 {
            return invalid("python.stall_s", "must be at least 1 second");
        }
        if self.server.stall_s == 0 || self.server.first_report_s == 0 {
            return invalid("server.stall_s", "stall_s and first_report_s must be at least 1 second");
        }
        if self.transcribe.workers == 0 || self.faces.workers == 0 {
            return invalid("workers", "worker pools need at least one worker");
        }
        if !(1..=16).contains(&self.transcribe.beam_size) || !(1..=64).contains(&self.transcribe.batch_size) {
            return invalid("transcribe", "beam_size must be 1..=16 and batch_size 1..=64");
        }
        if !(self.cost.cpu_hour_usd >= 0.0 && self.cost.gpu_hour_usd >= 0.0) {
            return invalid("cost", "prices must be numbers, 0 or more");
        }
        if let Err(reason) = self.captions.validate() {
            return Err(ConfigError::Invalid { key: "captions", reason });
        }
        let s = &self.score;
        if s.clips == 0 || s.min_len < 1.0 || s.max_len < s.min_len {
            return invalid("score", "clips must be > 0 and 1 <= min_len <= max_len");
        }
        if self.tracking.max_speed <= 0.0 || !(0.0..0.5).contains(&self.tracking.dead_zone) {
            return invalid("tracking", "max_speed must be > 0 and dead_zone within 0..0.5");
        }
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return invalid("server.bind", "must be IP:PORT");
        }
        if self.server.max_jobs_in_flight == 0 || self.server.retry.attempts == 0 || self.server.store_cache_mib == 0 {
            return invalid("server", "max_jobs_in_flight, retry.attempts and store_cache_mib must be at least 1");
        }
        if !(1..=10_000).contains(&self.server.batches.max_entries) {
            return invalid("server.batches", "max_entries must be 1..=10000");
        }
        if !["auto", "off"].contains(&self.scratch.io_uring.as_str()) {
            return invalid("scratch.io_uring", "must be auto or off");
        }
        if !self.redis.url.is_empty() && self.redis.lease_s < 3 {
            return invalid("redis.lease_s", "must be at least 3 seconds");
        }
        if !self.redis.url.is_empty() && (self.postgres.url.is_empty() || self.s3.bucket.is_empty()) {
            return invalid("redis.url", "a shared queue needs shared state and storage: set postgres.url and s3.bucket too");
        }
        if !self.redis.url.is_empty() && self.server.signing_secret.is_empty() {
            // Webhook signatures and event-stream tokens made by one node are checked by others.
            return invalid("server.signing_secret", "the nodes of a cluster must share one: set the same secret on every node");
        }
        if !self.s3.bucket.is_empty() && (self.s3.endpoint.is_empty() || self.s3.part_size_mb < 5) {
            return invalid("s3", "a bucket needs an endpoint, and part_size_mb must be at least 5");
        }
        if let Some(reason) = self.fetch.allowed_networks.iter().find_map(|n| parse_network(n).err()) {
            return Err(ConfigError::Invalid { key: "fetch.allowed_networks", reason });
        }
        if self.server.api_keys.is_empty() {
            return invalid("server.api_keys", "at least one api key is needed");
        }
        Ok(())
    }
}
