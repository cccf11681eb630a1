//! Scoring: the heuristic on the real transcript of the talk, and the LLM scorer against a real
//! HTTP server speaking the chat-completions API (good answers, malformed JSON, errors, timeouts).

mod common;

use std::time::Duration;

use clipmill::analysis::llm;
use clipmill::analysis::score::{self, Loudness};
use clipmill::config::LlmConfig;
use common::http::{reply, serve};
use common::*;

fn candidates() -> Vec<score::Candidate> {
    let truth = truth("talk.truth.json");
    let loud = Loudness { rms: vec![0.1; 300] };
    score::heuristic(&truth.words(), &loud, truth.duration, 6, 4.0, 8.0)
}

async fn llm_server() -> std::net::SocketAddr {
    serve(|_, body| async move {
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let model = request["model"].as_str().unwrap_or("").to_string();
        let listing: serde_json::Value =
            serde_json::from_str(request["messages"][1]["content"].as_str().unwrap_or("{}")).unwrap_or_default();
        let ids: Vec<u64> = listing["candidates"].as_array().map(|a| a.iter().filter_map(|c| c["id"].as_u64()).collect()).unwrap_or_default();
        let content = match model.as_str() {
            "good" => serde_json::json!({ "clips": ids.iter().map(|&id| serde_json::json!({
                "id": id, "score": id as f64, "title": format!("Title {id}"), "hook": "hook", "reason": "later is better"
            })).collect::<Vec<_>>() })
            .to_string(),
            "fenced" => format!("```json\n{}\n```", serde_json::json!({"clips": [{"id": 0, "score": 9, "title": "Only"}]})),
            "malformed" => "here are my picks: clip 2 is great".to_string(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "{}".into()
            }
            _ => return reply(500, "application/json", "{\"error\":\"overloaded\"}"),
        };
        let completion = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
        reply(200, "application/json", completion.to_string())
    })
    .await
}

fn llm_config(addr: std::net::SocketAddr, model: &str) -> LlmConfig {
    LlmConfig { base_url: format!("http://{addr}/v1"), api_key: "k".into(), model: model.into(), timeout_s: 1 }
}

#[tokio::test(flavor = "multi_thread")]
async fn heuristic_picks_sentence_aligned_windows_deterministically() {
    let picked = candidates();
    assert!(picked.len() >= 3, "{picked:?}");
    let truth = truth("talk.truth.json");
    for c in &picked {
        for w in truth.sentences.iter().flat_map(|s| &s.words) {
            assert!(w.end <= c.start || w.start >= c.end || (w.start >= c.start && w.end <= c.end), "{c:?} cuts {w:?}");
        }
        assert!(c.end - c.start >= 4.0 && c.end - c.start <= 8.0);
    }
    assert_eq!(picked, candidates());
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_scores_and_titles_and_every_failure_is_an_error_to_fall_back_on() {
    let addr = llm_server().await;
    let pool = candidates();
    let picked = llm::rescore(&llm_config(addr, "good"), &pool, 2).await.unwrap();
    assert_eq!(picked.len(), 2);
    assert!(picked.iter().all(|c| c.scorer == "llm" && c.title.starts_with("Title ")));
    assert!(picked[0].score >= picked[1].score);

    let fenced = llm::rescore(&llm_config(addr, "fenced"), &pool, 2).await.unwrap();
    assert_eq!(fenced[0].title, "Only");

    for (model, needle) in [("malformed", "not the json"), ("slow", "timed out"), ("down", "500")] {
        let err = llm::rescore(&llm_config(addr, model), &pool, 2).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{model}: {err}");
    }
}
