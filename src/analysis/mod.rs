//! The analysis stages: fetch a source, transcribe it, find faces, choose the moments.
//!
//! Python runs only where the ecosystem is Python (faster-whisper, MediaPipe), as worker processes
//! behind file-based IPC (`worker.rs`). Everything else (crop paths from detections, scoring,
//! fetching) is Rust.

pub mod faces;
pub mod fetch;
pub mod llm;
pub mod picture;
pub mod score;
pub mod source_meta;
pub mod tracking;
pub mod transcribe;
pub mod worker;

use std::path::{Path, PathBuf};

pub use worker::{WorkerError, WorkerPool, WorkerSpec};

/// Errors of transcription, face detection and scoring.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("{service} request failed: {message}")]
    Http { service: &'static str, message: String },
    #[error("{service} answered {status}: {body}")]
    Status { service: &'static str, status: u16, body: String },
    #[error("{what} output is not valid: {message}")]
    BadOutput { what: &'static str, message: String },
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl AnalysisError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Worker(WorkerError::Timeout { .. }) => "worker_timeout",
            Self::Worker(_) => "worker_failed",
            Self::Http { .. } => "upstream_unreachable",
            Self::Status { .. } => "upstream_error",
            Self::BadOutput { .. } => "bad_output",
            Self::Media(e) => e.code(),
            Self::Io { .. } => "io",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Worker(_) | Self::Http { .. } | Self::Io { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::BadOutput { .. } => false,
            Self::Media(e) => e.is_retryable(),
        }
    }
}

/// Reads and parses a JSON file a worker wrote.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, AnalysisError> {
    let bytes = tokio::fs::read(path).await.map_err(|source| AnalysisError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| AnalysisError::BadOutput { what, message: e.to_string() })
}

/// The worker spec for `script` with the configured interpreter.
pub(crate) fn python_spec(
    python: &crate::config::PythonConfig,
    name: &'static str,
    script: &str,
    args: Vec<String>,
    size: usize,
    request_timeout_s: u64,
) -> WorkerSpec {
    WorkerSpec {
        name,
        interpreter: python.interpreter.clone(),
        script: python.scripts.join(script),
        args,
        size,
        start_timeout: std::time::Duration::from_secs(120),
        request_timeout: std::time::Duration::from_secs(request_timeout_s),
        stall_timeout: std::time::Duration::from_secs(python.stall_s),
    }
}
