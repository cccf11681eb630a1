//! The LLM scorer: the heuristic's best candidates are sent to an OpenAI-compatible
//! chat-completions endpoint, with the job's instruction when it has one ("find the funny
//! moments") and what the source's page says (title, chapters, how much each candidate was
//! replayed), and it scores (hook, flow, payoff, total) and titles them. The answer is asked for
//! as JSON matching a schema (`response_format: json_schema`); a server that refuses that with
//! 400 (older llama.cpp, Ollama) is asked once more with `json_object`. The answer is validated
//! (known ids, each once; scores within 0..10; a title). On any failure (unreachable, timeout, an
//! error status, an answer that is not what was asked) the caller keeps the heuristic result and
//! records why.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::AnalysisError;
use super::score::{Candidate, Scores, pick};
use super::source_meta::SourceMeta;
use crate::config::LlmConfig;

const SERVICE: &str = "llm";

/// The longest instruction a job may carry, in characters.
pub const MAX_INSTRUCTION_CHARS: usize = 500;

const SYSTEM: &str = "You choose the moments of a long video that make the best short vertical clips. \
For each candidate you get its id, times and transcript, and when known the chapter it is in and `replay`: \
how much viewers replayed it (1 = the video's most replayed moment, 0 = average, below 0 = skipped). \
Score each candidate from 0 to 10 on hook (the first seconds make a viewer stay), flow (it makes sense on \
its own), payoff (it ends on something worth the watch) and total (how good a clip it is overall), and \
write a short title, its hook_line (the opening line) and the reason. When the user gives an instruction, \
it decides what a good clip is: a candidate that does not fit it gets a low total. Answer with JSON only: \
{\"clips\": [{\"id\": 0, \"hook\": 7, \"flow\": 6, \"payoff\": 8, \"total\": 7.5, \"title\": \"...\", \
\"hook_line\": \"...\", \"reason\": \"...\"}]}";

/// What steers the LLM beyond the transcript: the job's instruction and the page's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steer<'a> {
    pub instruction: Option<&'a str>,
    pub meta: Option<&'a SourceMeta>,
}

/// Checks a job's instruction: trimmed, not empty, at most `MAX_INSTRUCTION_CHARS` characters,
/// no control characters but line breaks and tabs. Returns the trimmed text.
pub fn check_instruction(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("instruction is empty".into());
    }
    let n = text.chars().count();
    if n > MAX_INSTRUCTION_CHARS {
        return Err(format!("instruction is {n} characters; the limit is {MAX_INSTRUCTION_CHARS}"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("instruction holds control characters".into());
    }
    Ok(text.to_string())
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: String,
}

#[derive(Deserialize)]
struct Scored {
    clips: Vec<ScoredClip>,
}

#[derive(Deserialize)]
struct ScoredClip {
    id: usize,
    title: String,
    hook: f64,
    flow: f64,
    payoff: f64,
    /// Older prompts (and some models in plain JSON mode) call it `score`.
    #[serde(alias = "score")]
    total: f64,
    #[serde(default)]
    hook_line: String,
    #[serde(default)]
    reason: String,
}

/// The JSON schema the answer must match (OpenAI's structured outputs; llama.cpp turns it into a
/// grammar).
fn answer_schema() -> Value {
    let score = json!({ "type": "number", "minimum": 0, "maximum": 10 });
    let text = json!({ "type": "string" });
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "clip_scores",
            "strict": true,
            "schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["clips"],
                "properties": { "clips": { "type": "array", "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["id", "hook", "flow", "payoff", "total", "title", "hook_line", "reason"],
                    "properties": {
                        "id": { "type": "integer", "minimum": 0 },
                        "hook": score, "flow": score, "payoff": score, "total": score,
                        "title": text, "hook_line": text, "reason": text,
                    },
                } } },
            },
        },
    })
}

/// What the LLM is sent besides the system prompt: the instruction, the source, the candidates.
fn user_message(candidates: &[Candidate], steer: Steer) -> Value {
    let meta = steer.meta;
    let listing: Vec<_> = candidates
        .iter()
        .enumerate()
        .map(|(id, c)| {
            let mut item = json!({ "id": id, "start": c.start, "end": c.end, "transcript": c.text });
            if let Some(chapter) = meta.and_then(|m| m.chapter_at(c.start)) {
                item["chapter"] = json!(chapter.title);
            }
            if let Some(replay) = meta.and_then(|m| m.replay(c.start, c.end)) {
                item["replay"] = json!((replay * 100.0).round() / 100.0);
            }
            item
        })
        .collect();
    let mut message = json!({ "candidates": listing });
    if let Some(instruction) = steer.instruction {
        message["instruction"] = json!(instruction);
    }
    if let Some(meta) = meta {
        message["source"] = json!({
            "title": meta.title, "uploader": meta.uploader, "duration": meta.duration,
            "chapters": meta.chapters.iter().map(|c| json!({ "start": c.start, "end": c.end, "title": c.title })).collect::<Vec<_>>(),
        });
    }
    message
}

/// Rescores `candidates` (already sentence-aligned) and returns the best `count` that do not overlap.
pub async fn rescore(config: &LlmConfig, candidates: &[Candidate], count: usize, steer: Steer<'_>) -> Result<Vec<Candidate>, AnalysisError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_s))
        .build()
        .map_err(|e| AnalysisError::Http { service: SERVICE, message: e.to_string() })?;
    let mut body = json!({
        "model": config.model,
        "temperature": 0,
        "messages": [
            { "role": "system", "content": SYSTEM },
            { "role": "user", "content": user_message(candidates, steer).to_string() },
        ],
    });
    let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
    let formats = [answer_schema(), json!({ "type": "json_object" })];
    let mut text = String::new();
    for (attempt, format) in formats.into_iter().enumerate() {
        body["response_format"] = format;
        let mut request = client.post(&url).json(&body);
        if !config.api_key.is_empty() {
            request = request.bearer_auth(&config.api_key);
        }
        let response = request.send().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: describe(&e) })?;
        let status = response.status();
        text = response.text().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: describe(&e) })?;
        if status == reqwest::StatusCode::BAD_REQUEST && attempt == 0 {
            tracing::info!(body = %text.chars().take(200).collect::<String>(), "llm refused a json schema; asking for a json object");
            continue;
        }
        if !status.is_success() {
            return Err(AnalysisError::Status { service: SERVICE, status: status.as_u16(), body: text.chars().take(300).collect() });
        }
        break;
    }
    let bad = |message: String| AnalysisError::BadOutput { what: "llm", message };
    let completion: Completion = serde_json::from_str(&text).map_err(|e| bad(format!("not a chat completion: {e}")))?;
    let content = completion.choices.first().map(|c| c.message.content.as_str()).ok_or_else(|| bad("no choices".into()))?;
    let scored: Scored = serde_json::from_str(strip_fences(content)).map_err(|e| bad(format!("content is not the json asked for: {e}")))?;
    let rescored = validate(scored, candidates).map_err(bad)?;
    Ok(pick(rescored, count))
}

/// The answer's clips as candidates, or why the answer cannot be used.
fn validate(scored: Scored, candidates: &[Candidate]) -> Result<Vec<Candidate>, String> {
    let mut seen = vec![false; candidates.len()];
    let mut rescored = Vec::with_capacity(scored.clips.len());
    for s in scored.clips {
        let base = candidates.get(s.id).ok_or_else(|| format!("unknown candidate id {}", s.id))?;
        if std::mem::replace(&mut seen[s.id], true) {
            return Err(format!("candidate {} scored twice", s.id));
        }
        for (name, value) in [("hook", s.hook), ("flow", s.flow), ("payoff", s.payoff), ("total", s.total)] {
            if !(value.is_finite() && (0.0..=10.0).contains(&value)) {
                return Err(format!("{name} of candidate {} is {value}, not within 0..10", s.id));
            }
        }
        let title = s.title.trim();
        if title.is_empty() {
            return Err(format!("candidate {} has no title", s.id));
        }
        let hook_line = s.hook_line.trim();
        rescored.push(Candidate {
            score: s.total,
            scores: Scores { hook: s.hook, flow: s.flow, payoff: s.payoff, total: s.total },
            title: title.chars().take(120).collect(),
            hook: if hook_line.is_empty() { base.hook.clone() } else { hook_line.to_string() },
            reason: s.reason,
            scorer: "llm".into(),
            ..base.clone()
        });
    }
    if rescored.is_empty() {
        return Err("no clips scored".into());
    }
    Ok(rescored)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() { "timed out".into() } else { e.to_string() }
}

/// Models often wrap JSON in a markdown fence despite being asked not to.
fn strip_fences(s: &str) -> &str {
    let s = s.trim();
    let s = s.strip_prefix("```json").or_else(|| s.strip_prefix("```")).unwrap_or(s);
    s.strip_suffix("```").unwrap_or(s).trim()
}
