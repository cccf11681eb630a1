//! The LLM scorer: the heuristic's best candidates are sent to an OpenAI-compatible
//! chat-completions endpoint, which scores and titles them. On any failure (unreachable, timeout,
//! an error status, output that is not the JSON asked for) the caller keeps the heuristic result
//! and records why.

use std::time::Duration;

use serde::Deserialize;

use super::AnalysisError;
use super::score::{Candidate, pick};
use crate::config::LlmConfig;

const SERVICE: &str = "llm";

const SYSTEM: &str = "You choose the moments of a long video that make the best short vertical clips. \
For each candidate you get its id and transcript. Score how likely it is to hold a viewer from the \
first second (0 to 10), and write a short title, the hook (its opening line) and the reason. \
Answer with JSON only: {\"clips\": [{\"id\": 0, \"score\": 7.5, \"title\": \"...\", \"hook\": \"...\", \"reason\": \"...\"}]}";

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
    score: f64,
    title: String,
    #[serde(default)]
    hook: String,
    #[serde(default)]
    reason: String,
}

/// Rescores `candidates` (already sentence-aligned) and returns the best `count` that do not overlap.
pub async fn rescore(config: &LlmConfig, candidates: &[Candidate], count: usize) -> Result<Vec<Candidate>, AnalysisError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_s))
        .build()
        .map_err(|e| AnalysisError::Http { service: SERVICE, message: e.to_string() })?;
    let listing: Vec<_> = candidates
        .iter()
        .enumerate()
        .map(|(id, c)| serde_json::json!({ "id": id, "start": c.start, "end": c.end, "transcript": c.text }))
        .collect();
    let body = serde_json::json!({
        "model": config.model,
        "temperature": 0,
        "response_format": { "type": "json_object" },
        "messages": [
            { "role": "system", "content": SYSTEM },
            { "role": "user", "content": serde_json::json!({ "candidates": listing }).to_string() },
        ],
    });
    let mut request = client.post(format!("{}/chat/completions", config.base_url.trim_end_matches('/'))).json(&body);
    if !config.api_key.is_empty() {
        request = request.bearer_auth(&config.api_key);
    }
    let response = request.send().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: describe(&e) })?;
    let status = response.status();
    let text = response.text().await.map_err(|e| AnalysisError::Http { service: SERVICE, message: describe(&e) })?;
    if !status.is_success() {
        return Err(AnalysisError::Status { service: SERVICE, status: status.as_u16(), body: text.chars().take(300).collect() });
    }
    let bad = |message: String| AnalysisError::BadOutput { what: "llm", message };
    let completion: Completion = serde_json::from_str(&text).map_err(|e| bad(format!("not a chat completion: {e}")))?;
    let content = completion.choices.first().map(|c| c.message.content.as_str()).ok_or_else(|| bad("no choices".into()))?;
    let scored: Scored = serde_json::from_str(strip_fences(content)).map_err(|e| bad(format!("content is not the json asked for: {e}")))?;

    let mut rescored = Vec::with_capacity(scored.clips.len());
    for s in scored.clips {
        let base = candidates.get(s.id).ok_or_else(|| bad(format!("unknown candidate id {}", s.id)))?;
        if !s.score.is_finite() {
            return Err(bad(format!("score of candidate {} is not a number", s.id)));
        }
        rescored.push(Candidate {
            score: s.score.clamp(0.0, 10.0),
            title: s.title,
            hook: if s.hook.is_empty() { base.hook.clone() } else { s.hook },
            reason: s.reason,
            scorer: "llm".into(),
            ..base.clone()
        });
    }
    if rescored.is_empty() {
        return Err(bad("no clips scored".into()));
    }
    Ok(pick(rescored, count))
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
