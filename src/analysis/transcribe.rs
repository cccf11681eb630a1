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
    /// The words are the model's raw pieces, as the local worker writes them (a leading space
    /// starts a word, see python/transcribe.py), not yet joined by `join_pieces`. Absent in
    /// transcripts of whole words: this crate's own, and the worker's before it kept the spaces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub word_pieces: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default)]
    pub words: Vec<TimedWord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// The same transcript in whole words: pieces joined where the worker wrote pieces.
    pub fn into_whole_words(mut self) -> Transcript {
        if self.word_pieces {
            for segment in &mut self.segments {
                segment.words = join_pieces(std::mem::take(&mut segment.words));
            }
            self.word_pieces = false;
        }
        self
    }
}

/// Whole words from faster-whisper's pieces. The model writes "$1,500" as " $1" ",500" and "30%"
/// as " 30" "%": a piece without a leading space continues the word before it (text joined,
/// start of the first piece, end of the last, the least sure piece's probability), so a word is
/// shown and matched as it is written. A segment's first piece always starts a word.
pub fn join_pieces(pieces: Vec<TimedWord>) -> Vec<TimedWord> {
    let mut words: Vec<TimedWord> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let text = piece.text.trim();
        if text.is_empty() {
            continue;
        }
        match words.last_mut() {
            Some(word) if !piece.text.starts_with(char::is_whitespace) => {
                word.text.push_str(text);
                word.end = word.end.max(piece.end);
                word.prob = word.prob.min(piece.prob);
            }
            _ => words.push(TimedWord { text: text.to_string(), ..piece }),
        }
    }
    words
}

pub enum Transcriber {
    Local { pool: WorkerPool, language: String },
    OpenAi { client: reqwest::Client, config: TranscribeConfig },
}

impl Transcriber {
    pub fn new(config: &TranscribeConfig, python: &PythonConfig) -> Self {
        match config.backend {
            TranscribeBackend::Local => {
                let mut args = vec![
                    "--model".into(),
                    config.model.clone(),
                    "--device".into(),
                    config.device.clone(),
                    "--threads".into(),
                    config.threads.to_string(),
                    "--beam-size".into(),
                    config.beam_size.to_string(),
                ];
                if config.batched {
                    args.extend(["--batched".into(), "--batch-size".into(), config.batch_size.to_string()]);
                }
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
                // Not transcript.json: that name holds whole words once the pieces are joined.
                let out = scratch.join("transcript.pieces.json");
                let request = serde_json::json!({
                    "audio": wav,
                    "out": out,
                    "language": if language.is_empty() { None } else { Some(language) },
                });
                pool.call(&request, &scratch.join("transcribe.request.json")).await?;
                let pieces: Transcript = read_json(&out, "transcript").await?;
                Ok(pieces.into_whole_words())
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

/// Puts the word list into the segments that contain them (one segment if there are none). The
/// API's words are whole words already ("$1,500" is one), so they are only trimmed.
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
    Transcript { language: v.language, duration, segments, word_pieces: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, start: f64, end: f64, prob: f64) -> TimedWord {
        TimedWord { text: text.into(), start, end, prob }
    }

    fn texts(words: &[TimedWord]) -> Vec<&str> {
        words.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn pieces_without_a_leading_space_join_the_word_before() {
        let pieces = vec![
            piece(" It", 0.0, 0.2, 0.9),
            piece(" costs", 0.2, 0.5, 0.9),
            piece(" $1", 0.5, 0.9, 0.8),
            piece(",500", 0.9, 1.6, 0.6),
            piece(" today.", 1.7, 2.0, 0.9),
            piece(" 30", 2.5, 2.8, 0.9),
            piece("%", 2.8, 3.1, 0.7),
            piece(" U", 3.2, 3.3, 0.9),
            piece(".S.", 3.3, 3.6, 0.9),
            piece(" don't", 3.7, 4.0, 0.9),
        ];
        let words = join_pieces(pieces);
        assert_eq!(texts(&words), ["It", "costs", "$1,500", "today.", "30%", "U.S.", "don't"]);
        assert_eq!(words[2], piece("$1,500", 0.5, 1.6, 0.6), "first start, last end, least sure piece");
        assert_eq!((words[4].start, words[4].end), (2.5, 3.1));
    }

    #[test]
    fn a_segment_starts_with_a_word_and_blank_pieces_are_dropped() {
        let words = join_pieces(vec![piece("%", 0.0, 0.1, 1.0), piece("  ", 0.1, 0.2, 1.0), piece(" ok", 0.2, 0.4, 1.0)]);
        assert_eq!(texts(&words), ["%", "ok"]);
    }

    #[test]
    fn worker_pieces_become_whole_words_and_old_transcripts_stay_as_written() {
        let segment = |words: &[&str]| {
            serde_json::json!({"start": 0, "end": 2, "text": "", "words":
                words.iter().enumerate().map(|(i, w)| serde_json::json!({"text": w, "start": i, "end": i + 1})).collect::<Vec<_>>()})
        };
        let pieces: Transcript = serde_json::from_value(serde_json::json!({
            "duration": 4, "word_pieces": true, "segments": [segment(&[" Sales", " grew", " 30", "%"]), segment(&["%", " off"])]
        }))
        .unwrap();
        let whole = pieces.into_whole_words();
        assert_eq!(whole.words().iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), ["Sales", "grew", "30%", "%", "off"]);
        // Written back, it is a transcript of whole words, and reading it again changes nothing.
        let again: Transcript = serde_json::from_str(&serde_json::to_string(&whole).unwrap()).unwrap();
        assert!(!again.word_pieces);
        assert_eq!(again.into_whole_words().words(), whole.words());

        // The worker's old output: words already stripped, one per piece, no marker.
        let old: Transcript = serde_json::from_value(serde_json::json!({"duration": 2, "segments": [segment(&["30", "%"])]})).unwrap();
        assert_eq!(old.into_whole_words().words().iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), ["30", "%"]);
    }

    #[test]
    fn the_api_backend_keeps_its_whole_words() {
        let v: VerboseJson = serde_json::from_value(serde_json::json!({
            "language": "english", "duration": 3.0, "text": "It costs $1,500.",
            "words": [{"word": " It", "start": 0.0, "end": 0.3}, {"word": "costs", "start": 0.3, "end": 0.7},
                      {"word": "$1,500.", "start": 0.8, "end": 1.9}, {"word": " ", "start": 1.9, "end": 2.0}],
            "segments": [{"start": 0.0, "end": 2.0, "text": " It costs $1,500."}]
        }))
        .unwrap();
        let t = from_verbose(v);
        assert_eq!(t.words().iter().map(|w| w.text.as_str()).collect::<Vec<_>>(), ["It", "costs", "$1,500."]);
        assert_eq!(t.segments[0].text, "It costs $1,500.");
    }
}
