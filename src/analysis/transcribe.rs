//! Speech to text with word timestamps: local faster-whisper workers, or an OpenAI-compatible
//! `/audio/transcriptions` endpoint (hosted or self-hosted Whisper).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AnalysisError, WorkerPool, python_spec, read_json};
use crate::config::{PythonConfig, TranscribeBackend, TranscribeConfig};
use crate::edit::Word;

/// A transcript: segments (roughly sentences) of timed words.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Transcript {
    pub language: Option<String>,
    pub duration: f64,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default)]
    pub words: Vec<TimedWord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimedWord {
    pub text: String,
    pub start: f64,
    pub end: f64,
    #[serde(default = "one")]
    pub prob: f64,
}

fn one() -> f64 {
    1.0
}

impl Transcript {
    /// Every word in time order, in the edit format.
    pub fn words(&self) -> Vec<Word> {
        self.segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| Word { text: w.text.clone(), start: w.start, end: w.end })
            .collect()
    }
}

pub enum Transcriber {
    Local { pool: WorkerPool, language: String },
    OpenAi { client: reqwest::Client, config: TranscribeConfig },
}

impl Transcriber {
    pub fn new(config: &TranscribeConfig, python: &PythonConfig) -> Self {
        match config.backend {
            TranscribeBackend::Local => {
                let args = vec!["--model".into(), config.model.clone(), "--device".into(), config.device.clone()];
                let spec = python_spec(python, "transcribe", "transcribe.py", args, config.workers, config.timeout_s);
                Self::Local { pool: WorkerPool::new(spec), language: config.language.clone() }
            }
            TranscribeBackend::Openai => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(config.timeout_s))
                    .build()
                    .expect("http client builds");
                Self::OpenAi { client, config: config.clone() }
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::OpenAi { .. } => "openai",
        }
    }

    /// Starts a local worker ahead of time (the model loads while other stages run).
    pub async fn warm_up(&self) -> Result<(), AnalysisError> {
        if let Self::Local { pool, .. } = self {
            pool.warm_up().await?;
        }
        Ok(())
    }

    /// Transcribes a 16 kHz mono WAV; `scratch` holds the IPC files.
    pub async fn transcribe(&self, wav: &Path, scratch: &Path) -> Result<Transcript, AnalysisError> {
        match self {
            Self::Local { pool, language } => {
                let out = scratch.join("transcript.json");
                let request = serde_json::json!({
                    "audio": wav,
                    "out": out,
                    "language": if language.is_empty() { None } else { Some(language) },
                });
                pool.call(&request, &scratch.join("transcribe.request.json")).await?;
                read_json(&out, "transcript").await
            }
            Self::OpenAi { client, config } => openai(client, config, wav).await,
        }
    }
}

#[derive(Deserialize)]
struct VerboseJson {
    language: Option<String>,
    duration: Option<f64>,
    #[serde(default)]
    words: Vec<ApiWord>,
    #[serde(default)]
    segments: Vec<ApiSegment>,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct ApiWord {
    word: String,
    start: f64,
    end: f64,
}

#[derive(Deserialize)]
struct ApiSegment {
    start: f64,
    end: f64,
    text: String,
}

const SERVICE: &str = "transcription api";

async fn openai(client: &reqwest::Client, config: &TranscribeConfig, wav: &Path) -> Result<Transcript, AnalysisError> {
    let bytes = tokio::fs::read(wav).await.map_err(|source| AnalysisError::Io { path: wav.to_path_buf(), source })?;
    let file = reqwest::multipart::Part::bytes(bytes).file_name("audio.wav").mime_str("audio/wav").expect("valid mime");
    let mut form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", config.openai.model.clone())
        .text("response_format", "verbose_json")
        .text("timestamp_granularities[]", "word")
        .text("timestamp_granularities[]", "segment");
    if !config.language.is_empty() {
        form = form.text("language", config.language.clone());
    }
    let url = format!("{}/audio/transcriptions", config.openai.base_url.trim_end_matches('/'));
    let mut request = client.post(url).multipart(form);
    if !config.openai.api_key.is_empty() {
        request = request.bearer_auth(&config.openai.api_key);
    }
    let response = request.send().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: e.to_string() })?;
    let status = response.status();
    let body = response.text().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: e.to_string() })?;
    if !status.is_success() {
        return Err(AnalysisError::Status { service: SERVICE, status: status.as_u16(), body: body.chars().take(300).collect() });
    }
    let parsed: VerboseJson =
        serde_json::from_str(&body).map_err(|e| AnalysisError::BadOutput { what: "transcription api", message: e.to_string() })?;
    Ok(from_verbose(parsed))
}

/// Puts the word list into the segments that contain them (one segment if there are none).
fn from_verbose(v: VerboseJson) -> Transcript {
    let words: Vec<TimedWord> = v
        .words
        .into_iter()
        .map(|w| TimedWord { text: w.word.trim().to_string(), start: w.start, end: w.end, prob: 1.0 })
        .filter(|w| !w.text.is_empty())
        .collect();
    let duration = v.duration.unwrap_or_else(|| words.last().map_or(0.0, |w| w.end));
    let mut segments: Vec<Segment> = if v.segments.is_empty() {
        vec![Segment { start: 0.0, end: duration, text: v.text.trim().to_string(), words: vec![] }]
    } else {
        v.segments.into_iter().map(|s| Segment { start: s.start, end: s.end, text: s.text.trim().to_string(), words: vec![] }).collect()
    };
    for word in words {
        let mid = (word.start + word.end) / 2.0;
        let i = segments.iter().position(|s| mid < s.end).unwrap_or(segments.len() - 1);
        segments[i].words.push(word);
    }
    Transcript { language: v.language, duration, segments }
}
