//! Getting a source onto local scratch: a local file as it is, an http(s) media URL streamed to
//! disk, anything else handed to yt-dlp (`ytdlp.rs`: separate video and audio remuxed into one
//! file, or a single file). Remote sources are cached by normalised URL for a configurable time,
//! so a repeat URL is not downloaded again. Downloaded bytes go to disk through `Scratch`
//! (io_uring where available).

mod playlist;
mod ytdlp;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::source_meta::{self, SourceMeta};
use crate::config::FetchConfig;
use crate::egress::{EgressError, Policy, proxy::GuardedProxy};
use crate::media::{MediaEngine, MediaError};
use crate::persist::{Scratch, scratch};

/// yt-dlp's info JSON, kept beside the source in its cache folder.
const INFO_JSON: &str = "info.json";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("input file not found: {0}")]
    NotFound(PathBuf),
    #[error("not a file path or an http(s) url: {0}")]
    BadInput(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered http {status}")]
    Status { url: String, status: u16 },
    #[error("no video found at {url}: {reason}")]
    NoMedia { url: String, reason: String },
    #[error("source is larger than the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("source is longer than the limit of {max} s")]
    TooLong { max: u64 },
    #[error("download took longer than {0} s")]
    Timeout(u64),
    #[error("yt-dlp failed: {0}")]
    YtDlp(String),
    #[error("{url} offers audio only, no video")]
    AudioOnly { url: String },
    #[error("cannot join the separate video and audio: {0}")]
    Remux(MediaError),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{url} is a playlist of {entries} videos: submit it to POST /api/batches as {{\"playlist\": url}} (clipmill clip takes it as it is)")]
    Playlist { url: String, entries: usize },
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl From<EgressError> for FetchError {
    fn from(refused: EgressError) -> Self {
        Self::NotAllowed(refused.to_string())
    }
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "input_not_found",
            Self::BadInput(_) => "bad_input",
            Self::Unreachable { .. } => "source_unreachable",
            Self::Status { .. } => "source_http_error",
            Self::NoMedia { .. } => "no_media_at_url",
            Self::TooLarge { .. } => "source_too_large",
            Self::TooLong { .. } => "source_too_long",
            Self::Timeout(_) => "fetch_timeout",
            Self::YtDlp(_) => "ytdlp_failed",
            Self::AudioOnly { .. } => "source_audio_only",
            Self::Remux(_) => "source_remux_failed",
            Self::NotAllowed(_) => "url_not_allowed",
            Self::Playlist { .. } => "source_is_playlist",
            Self::Io { .. } => "io",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout(_) | Self::Io { .. } | Self::YtDlp(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Remux(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A source on local disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    pub path: PathBuf,
    /// "file", "http" or "yt-dlp".
    pub via: &'static str,
    pub cached: bool,
    /// What the source's page says (yt-dlp's info JSON, kept as `info.json` beside the cached
    /// source; for a local file, a `<stem>.info.json` beside it).
    pub meta: Option<SourceMeta>,
}

pub struct Fetcher {
    config: FetchConfig,
    cache_dir: PathBuf,
    /// Where tenant URLs may lead; `client` and yt-dlp's proxy keep to it.
    policy: Policy,
    client: reqwest::Client,
    /// yt-dlp's way out, started on its first use.
    proxy: tokio::sync::OnceCell<GuardedProxy>,
    scratch: Scratch,
    /// Joins separate video and audio downloads into one file.
    engine: MediaEngine,
}

impl Fetcher {
    pub fn new(config: &FetchConfig, cache_dir: PathBuf, scratch: Scratch, engine: MediaEngine) -> Self {
        let policy = Policy::from_config(config);
        let client = policy.client(reqwest::Client::builder().connect_timeout(Duration::from_secs(15)), crate::egress::MAX_REDIRECTS).expect("http client builds");
        Self { config: config.clone(), cache_dir, policy, client, proxy: tokio::sync::OnceCell::new(), scratch, engine }
    }

    /// The URL of the guarded proxy yt-dlp must connect through.
    async fn proxy_url(&self) -> Result<&str, FetchError> {
        let proxy = self
            .proxy
            .get_or_try_init(|| GuardedProxy::start(self.policy.clone()))
            .await
            .map_err(|e| FetchError::YtDlp(format!("cannot start the egress proxy: {e}")))?;
        Ok(proxy.url())
    }

    /// Fetches `input` (a path or a URL). `on_progress` gets the fraction downloaded when known.
    pub async fn fetch(&self, input: &str, on_progress: &(dyn Fn(f64) + Send + Sync)) -> Result<Fetched, FetchError> {
        let Some(url) = remote_url(input) else {
            let path = PathBuf::from(input);
            if !path.is_file() {
                return Err(FetchError::NotFound(path));
            }
            let meta = match source_meta::sidecar_of(&path) {
                Some(sidecar) => SourceMeta::load(&sidecar).await,
                None => None,
            };
            return Ok(Fetched { path, via: "file", cached: false, meta });
        };
        let dir = self.cache_dir.join(cache_key(&url));
        if let Some(path) = self.cached(&dir).await {
            tracing::info!(url = %url, path = %path.display(), "source cache hit");
            let meta = SourceMeta::load(&dir.join(INFO_JSON)).await;
            return Ok(Fetched { path, via: "cache", cached: true, meta });
        }
        tokio::fs::create_dir_all(&dir).await.map_err(|source| FetchError::Io { path: dir.clone(), source })?;
        let limit = Duration::from_secs(self.config.timeout_s);
        let fetched = tokio::time::timeout(limit, self.download(&url, &dir, on_progress))
            .await
            .map_err(|_| FetchError::Timeout(self.config.timeout_s))?;
        if fetched.is_err() {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        fetched
    }

    async fn download(&self, url: &url::Url, dir: &Path, on_progress: &(dyn Fn(f64) + Send + Sync)) -> Result<Fetched, FetchError> {
        let unreachable = |e: reqwest::Error| match EgressError::find(&e) {
            Some(refused) => refused.clone().into(),
            None => FetchError::Unreachable { url: url.to_string(), reason: root_cause(&e) },
        };
        self.policy.check_url(url)?;
        let response = self.client.get(url.clone()).send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_media = content_type.starts_with("video/")
            || content_type.starts_with("audio/")
            || content_type.starts_with("application/octet-stream")
            || content_type.starts_with("application/mp4");
        if !is_media {
            drop(response);
            return self.ytdlp(url, dir, on_progress).await;
        }
        let total = response.content_length();
        if total.is_some_and(|n| n > self.config.max_bytes) {
            return Err(FetchError::TooLarge { max: self.config.max_bytes });
        }
        let path = dir.join(format!("source.{}", extension_for(url, &content_type)));
        let max = self.config.max_bytes;
        let mut received = 0u64;
        // Our own errors travel through the stream as `io::Error`s and are taken back out below.
        let body = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(|e| io::Error::other(unreachable(e)))?;
            received += chunk.len() as u64;
            if received > max {
                return Err(io::Error::other(FetchError::TooLarge { max }));
            }
            if let Some(total) = total {
                on_progress(received as f64 / total.max(1) as f64);
            }
            Ok(chunk)
        });
        match self.scratch.write_stream(&path, body).await {
            Ok(_) => Ok(Fetched { path, via: "http", cached: false, meta: None }),
            Err(e) => Err(scratch::own_error(e).unwrap_or_else(|source| FetchError::Io { path, source })),
        }
    }

    async fn cached(&self, dir: &Path) -> Option<PathBuf> {
        let path = first_source(dir).await?;
        let modified = tokio::fs::metadata(&path).await.ok()?.modified().ok()?;
        let age = SystemTime::now().duration_since(modified).unwrap_or_default();
        (age < Duration::from_secs(self.config.cache_ttl_s)).then_some(path)
    }
}

/// `Some` for an http(s) URL; `None` for anything that should be a local path.
fn remote_url(input: &str) -> Option<url::Url> {
    let url = url::Url::parse(input).ok()?;
    matches!(url.scheme(), "http" | "https").then_some(url)
}

/// The cache key of a URL: the fragment dropped and query pairs sorted, so trivially different
/// spellings of one URL share an entry (the `url` crate already lowercases the host and drops
/// default ports).
pub fn cache_key(url: &url::Url) -> String {
    let mut normal = url.clone();
    normal.set_fragment(None);
    let mut pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    pairs.sort();
    if pairs.is_empty() {
        normal.set_query(None);
    } else {
        normal.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let digest = Sha256::digest(normal.as_str().as_bytes());
    hex::encode(&digest[..12])
}

async fn first_source(dir: &Path) -> Option<PathBuf> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        // Not a part file, nor yt-dlp's resume state or fragments of an interrupted download.
        if name.starts_with("source.") && !name.ends_with(".part") && !name.ends_with(".ytdl") && !name.contains("-Frag") {
            return Some(entry.path());
        }
    }
    None
}

fn extension_for(url: &url::Url, content_type: &str) -> String {
    let from_path = Path::new(url.path()).extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    match from_path.as_deref() {
        Some(e @ ("mp4" | "mkv" | "webm" | "mov" | "m4a" | "m4v" | "ts")) => e.to_string(),
        _ if content_type.contains("webm") => "webm".into(),
        _ if content_type.contains("matroska") => "mkv".into(),
        _ => "mp4".into(),
    }
}

fn classify_ytdlp(url: &url::Url, errors: &str) -> FetchError {
    let e = errors.to_lowercase();
    let url = url.to_string();
    if e.contains("url_not_allowed") {
        // The guarded proxy's refusal, as yt-dlp repeats it.
        FetchError::NotAllowed(format!("url not allowed: {url} leads to a private or reserved address (fetch.allow_private_networks is off)"))
    } else if e.contains("unsupported url") || e.contains("no video formats") || e.contains("no suitable formats") {
        FetchError::NoMedia { url, reason: "the page holds no video yt-dlp can read".into() }
    } else if e.contains("source_unreachable") {
        // The guarded proxy could not reach the site (its 502 is not the site's).
        FetchError::Unreachable { url, reason: errors.to_string() }
    } else if let Some(code) = e.split("http error ").nth(1).and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()) {
        FetchError::Status { url, status: code }
    } else if e.contains("connection refused") || e.contains("name or service not known") || e.contains("timed out") {
        FetchError::Unreachable { url, reason: errors.to_string() }
    } else {
        FetchError::YtDlp(if errors.is_empty() { "exited without an error message".into() } else { errors.to_string() })
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_urls_share_a_cache_key() {
        let key = |s: &str| cache_key(&url::Url::parse(s).unwrap());
        assert_eq!(key("https://EXAMPLE.com:443/v?b=2&a=1#t=5"), key("https://example.com/v?a=1&b=2"));
        assert_ne!(key("https://example.com/v?a=1"), key("https://example.com/v?a=2"));
    }

    #[test]
    fn local_paths_are_not_urls() {
        assert!(remote_url("/tmp/x.mp4").is_none());
        assert!(remote_url("ftp://host/x").is_none());
        assert!(remote_url("http://127.0.0.1:8080/x.mp4").is_some());
    }
}
