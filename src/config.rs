//! Configuration: `config.toml` compiled in as the base, an optional file over it, then
//! `CLIPMILL__SECTION__KEY` environment variables. Unknown keys are errors; everything is
//! validated before anything starts.

mod cost;
mod load;
pub mod quotas;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use cost::CostConfig;
pub use load::ConfigError;

/// The defaults, documented, exactly as shipped in the repository's `config.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub media: MediaConfig,
    pub render: RenderConfig,
    pub scratch: ScratchConfig,
    pub python: PythonConfig,
    pub fetch: FetchConfig,
    pub transcribe: TranscribeConfig,
    /// The caption style new edits start from (`clip` and jobs); requests override it field by field.
    pub captions: crate::edit::CaptionStyle,
    pub faces: FacesConfig,
    pub tracking: TrackingConfig,
    pub score: ScoreConfig,
    pub server: ServerConfig,
    pub redis: RedisConfig,
    pub postgres: PostgresConfig,
    pub s3: S3Config,
    /// Prices for the cost per hour of source each job reports.
    pub cost: CostConfig,
}

/// The job queue and cross-node events on Redis; an empty `url` keeps the in-process queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub prefix: String,
    pub lease_s: u64,
    pub max_deliveries: u64,
    pub node_ttl_s: u64,
    pub events_maxlen: u64,
}

/// Job state on Postgres; an empty `url` keeps the embedded store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    pub pool_size: usize,
    pub retention_days: u64,
    pub retention_max_jobs: u64,
}

/// Clips and stage outputs on S3; an empty `bucket` keeps local blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub path_style: bool,
    pub multipart_threshold_mb: u64,
    pub part_size_mb: u64,
    /// Compare the ETags the store answers with the data's MD5s. Off for SSE-KMS and SSE-C
    /// buckets, whose ETags are not MD5s (every upload still carries Content-MD5, which the store
    /// checks, and the stored size is verified).
    pub check_etags: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub store_cache_mib: usize,
    pub signing_secret: String,
    pub url_ttl_s: u64,
    pub max_jobs_in_flight: usize,
    pub max_upload_bytes: u64,
    pub upload_expiry_s: u64,
    pub shutdown_deadline_s: u64,
    pub stall_s: u64,
    pub first_report_s: u64,
    pub noop: bool,
    pub noop_stage_ms: u64,
    pub api_keys: std::collections::BTreeMap<String, String>,
    pub retry: RetryConfig,
    pub concurrency: ConcurrencyConfig,
    pub batches: BatchConfig,
    pub quotas: quotas::Quotas,
}

/// Batches and playlists: how many entries a batch may have and how many run at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub max_entries: usize,
    /// 0: half this machine's cores, at least 2.
    pub max_in_flight: usize,
}

impl BatchConfig {
    /// Batch entries this node runs at once, over every tenant.
    pub fn in_flight(&self) -> usize {
        match self.max_in_flight {
            0 => (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(2),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub attempts: u32,
    pub base_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    pub download: usize,
    pub audio: usize,
    pub transcribe: usize,
    pub score: usize,
    pub faces: usize,
    pub render: usize,
    pub upload: usize,
}

impl ConcurrencyConfig {
    /// The configured parallelism of `stage`, or the seed's default scaled to this machine.
    pub fn of(&self, stage: crate::job::Stage) -> usize {
        use crate::job::Stage;
        let (configured, seed) = match stage {
            Stage::Download => (self.download, 8),
            Stage::Audio => (self.audio, 2),
            Stage::Transcribe => (self.transcribe, 4),
            Stage::Score => (self.score, 8),
            Stage::Faces => (self.faces, 2),
            Stage::Render => (self.render, 2),
            Stage::Upload => (self.upload, 8),
        };
        if configured > 0 {
            return configured;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        (seed * cores / 4).max(1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScratchConfig {
    pub dir: PathBuf,
    pub sweep_every_s: u64,
    /// "auto" (io_uring where it can be set up, else ordinary async I/O) or "off".
    pub io_uring: String,
    /// New work is refused (503) while the scratch file system has less free space than this.
    pub min_free_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonConfig {
    pub interpreter: PathBuf,
    pub scripts: PathBuf,
    /// Seconds a worker may stay silent once it has reported progress on a request.
    pub stall_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    pub ytdlp: PathBuf,
    pub timeout_s: u64,
    pub max_bytes: u64,
    pub max_duration_s: u64,
    pub max_height: u32,
    pub cache_ttl_s: u64,
    /// Lets tenant URLs (sources, webhooks) reach private and reserved addresses (the SSRF guard
    /// in `egress` is off).
    pub allow_private_networks: bool,
    /// Addresses or networks let through even while the guard is on, e.g. "127.0.0.1/32".
    pub allowed_networks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscribeBackend {
    Local,
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscribeConfig {
    pub backend: TranscribeBackend,
    pub model: String,
    pub device: String,
    pub workers: usize,
    /// CPU threads each local worker decodes with (0: CTranslate2's default, 4 or fewer).
    pub threads: u32,
    pub language: String,
    pub timeout_s: u64,
    /// Beam search width of the local model (1: greedy).
    pub beam_size: u32,
    /// faster-whisper's BatchedInferencePipeline (audio cut at silences, chunks decoded together).
    pub batched: bool,
    /// Chunks decoded at once when `batched`.
    pub batch_size: u32,
    pub openai: OpenAiConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacesConfig {
    pub backend: String,
    pub workers: usize,
    pub fps: f64,
    pub width: u32,
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingConfig {
    pub dead_zone: f64,
    pub max_speed: f64,
    pub hold_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scorer {
    Heuristic,
    Llm,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    pub scorer: Scorer,
    pub clips: usize,
    pub min_len: f64,
    pub max_len: f64,
    pub llm: LlmConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub timeout_s: u64,
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
    pub decoder: String,
    pub x264_preset: String,
    pub quality: u32,
    pub audio_bitrate: u32,
    pub threads: u32,
    pub max_fps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderConfig {
    pub width: u32,
    pub height: u32,
}

impl Config {
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

/// A network or a single address, as `fetch.allowed_networks` writes them.
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| format!("{s:?} is not an address or a network"))
}

#[cfg(test)]
mod tests;
