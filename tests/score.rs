//! Scoring: the heuristic on the real transcript of the talk (with and without the page's
//! chapters and "most replayed" heatmap), and the LLM scorer against a real HTTP server speaking
//! the chat-completions API (instruction and schema received, sub-scores back, a server that
//! refuses JSON schemas, malformed and out-of-range answers, errors, timeouts), and through
//! `Services::score`, which falls back to the heuristic and says why.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clipmill::analysis::llm::{self, Steer};
use clipmill::analysis::score::{self, Candidate, Loudness};
use clipmill::analysis::source_meta::SourceMeta;
use clipmill::config::{Config, LlmConfig, Scorer};
use clipmill::media::Control;
use clipmill::pipeline::{ScoreRequest, Services};
use common::http::{reply, serve};
use common::*;
use serde_json::{Value, json};

fn candidates() -> Vec<score::Candidate> {
    let truth = truth("talk.truth.json");
    let loud = Loudness { rms: vec![0.1; 300] };
    score::heuristic(&truth.words(), &loud, truth.duration, 6, 4.0, 8.0)
}

/// The talk's page as yt-dlp would describe it: three chapters, and viewers replaying 19..25 s
/// ("My sister likes to read. Please close the door.": no question, number or exclamation, so
/// nothing but the heatmap favours it).
fn talk_info() -> Value {
    json!({
        "id": "talk", "title": "A talk about food, birds and trains", "uploader": "Clipmill Tests", "duration": 30.0,
        "chapters": [
            {"start_time": 0.0, "end_time": 9.2, "title": "Welcome"},
            {"start_time": 9.2, "end_time": 16.0, "title": "Birds"},
            {"start_time": 16.0, "end_time": 30.0, "title": "Everyday things"},
        ],
        "heatmap": (0..30).map(|i| {
            let t = i as f64;
            json!({"start_time": t, "end_time": t + 1.0, "value": if (19.0..25.0).contains(&t) { 1.0 } else { 0.15 }})
        }).collect::<Vec<_>>(),
    })
}

async fn talk_loudness(dir: &std::path::Path) -> (std::path::PathBuf, Loudness) {
    let wav = dir.join("talk.wav");
    engine().extract_audio(&fixture("talk.mp4"), &wav, Control::default()).await.unwrap();
    let loudness = Loudness::from_wav(&wav).unwrap();
    (wav, loudness)
}

/// Everything the server received, in order.
type Seen = Arc<Mutex<Vec<Value>>>;

/// A chat-completions server; the model name chooses its behaviour.
async fn llm_server() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let addr = serve(move |_, body| {
        let log = log.clone();
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            log.lock().unwrap().push(request.clone());
            let model = request["model"].as_str().unwrap_or("").to_string();
            let format = request["response_format"]["type"].as_str().unwrap_or("").to_string();
            let listing: Value = serde_json::from_str(request["messages"][1]["content"].as_str().unwrap_or("{}")).unwrap_or_default();
            let ids: Vec<u64> = listing["candidates"].as_array().map(|a| a.iter().filter_map(|c| c["id"].as_u64()).collect()).unwrap_or_default();
            // Later candidates score higher; sub-scores differ from the total so they are traceable.
            let good = || json!({ "clips": ids.iter().map(|&id| json!({
                "id": id, "hook": 9.0, "flow": 5.0, "payoff": 1.5, "total": (id as f64).min(10.0),
                "title": format!("Title {id}"), "hook_line": "hook", "reason": "later is better"
            })).collect::<Vec<_>>() }).to_string();
            let content = match model.as_str() {
                "good" => good(),
                // Refuses `json_schema` as older llama.cpp and Ollama builds do; fine with `json_object`.
                "no-schema" if format == "json_schema" => {
                    return reply(400, "application/json", r#"{"error":{"message":"response_format type json_schema is not supported"}}"#);
                }
                "no-schema" => good(),
                "fenced" => format!("```json\n{}\n```", json!({"clips": [{"id": 0, "total": 9, "hook": 8, "flow": 7, "payoff": 6, "title": "Only"}]})),
                "old-score" => json!({"clips": [{"id": 1, "score": 6, "hook": 6, "flow": 6, "payoff": 6, "title": "Named score"}]}).to_string(),
                "malformed" => "here are my picks: clip 2 is great".to_string(),
                "out-of-range" => json!({"clips": [{"id": 0, "total": 14, "hook": 8, "flow": 7, "payoff": 6, "title": "Too good"}]}).to_string(),
                "unknown-id" => json!({"clips": [{"id": 99, "total": 5, "hook": 8, "flow": 7, "payoff": 6, "title": "Ghost"}]}).to_string(),
                "no-subscores" => json!({"clips": [{"id": 0, "total": 5, "title": "Flat"}]}).to_string(),
                "twice" => json!({"clips": [{"id": 0, "total": 5, "hook": 1, "flow": 1, "payoff": 1, "title": "A"},
                                              {"id": 0, "total": 6, "hook": 1, "flow": 1, "payoff": 1, "title": "B"}]}).to_string(),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "{}".into()
                }
                _ => return reply(500, "application/json", "{\"error\":\"overloaded\"}"),
            };
            let completion = json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
            reply(200, "application/json", completion.to_string())
        }
    })
    .await;
    (addr, seen)
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
        // Sub-scores are always there, the total is the score ranked by.
        let s = c.scores;
        assert_eq!(s.total, c.score);
        assert!([s.hook, s.flow, s.payoff].iter().all(|v| (0.0..=10.0).contains(v)) && s.hook + s.flow + s.payoff > 0.0, "{s:?}");
    }
    assert_eq!(picked, candidates());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_heatmap_moves_clips_to_the_most_replayed_moment_and_chapters_bound_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, loudness) = talk_loudness(dir.path()).await;
    let truth = truth("talk.truth.json");
    let words = truth.words();
    let meta = SourceMeta::from_info(&talk_info());
    let peak = (19.0, 25.0);
    let on_peak = |c: &Candidate| c.end.min(peak.1) - c.start.max(peak.0) >= 0.5 * (c.end - c.start);

    let plain = score::heuristic(&words, &loudness, truth.duration, 2, 4.0, 8.0);
    assert!(!plain.iter().any(on_peak), "without the heatmap the talk's hooks win elsewhere: {plain:?}");
    assert!(plain.iter().all(|c| !c.reason.contains("replayed")));

    let steered = score::heuristic_with(&words, &loudness, truth.duration, 2, 4.0, 8.0, Some(&meta));
    assert!(on_peak(&steered[0]), "the best clip moves to the most replayed moment: {steered:?}");
    assert!(steered[0].reason.starts_with("most replayed"), "{}", steered[0].reason);
    assert!(steered[0].scores.payoff > plain[0].scores.payoff, "replays count as payoff: {:?} vs {:?}", steered[0].scores, plain[0].scores);
    // Chapter starts are clip edges: no clip spans two chapters (nor pads across a chapter start),
    // and one that opens a chapter says so.
    let all = score::heuristic_with(&words, &loudness, truth.duration, 10, 4.0, 8.0, Some(&meta));
    for c in &all {
        for cut in meta.chapter_cuts() {
            assert!(c.end <= cut + 1e-6 || c.start >= cut - 1e-6, "{c:?} spans the chapter start at {cut}");
        }
    }
    let birds = all.iter().find(|c| c.reason.contains("opens chapter \u{201c}Birds\u{201d}")).expect("a clip opens the Birds chapter");
    assert!(birds.start >= 9.2 && birds.start < truth.sentences[3].start, "{birds:?}");
    assert!(plain.iter().any(|c| c.start < 9.2 && c.end > 9.2), "without chapters a clip spans 9.2 s: {plain:?}");
    assert_eq!(steered, score::heuristic_with(&words, &loudness, truth.duration, 2, 4.0, 8.0, Some(&meta)), "deterministic");
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_gets_the_instruction_schema_and_page_and_returns_sub_scores() {
    let (addr, seen) = llm_server().await;
    let pool = candidates();
    let meta = SourceMeta::from_info(&talk_info());
    let steer = Steer { instruction: Some("only the moments about birds"), meta: Some(&meta) };
    let picked = llm::rescore(&llm_config(addr, "good"), &pool, 2, steer).await.unwrap();
    assert_eq!(picked.len(), 2);
    assert!(picked.iter().all(|c| c.scorer == "llm" && c.title.starts_with("Title ")));
    assert!(picked[0].score >= picked[1].score);
    for c in &picked {
        assert_eq!((c.scores.hook, c.scores.flow, c.scores.payoff, c.scores.total), (9.0, 5.0, 1.5, c.score), "{c:?}");
    }

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let format = &requests[0]["response_format"];
    assert_eq!(format["type"], "json_schema");
    let item = &format["json_schema"]["schema"]["properties"]["clips"]["items"];
    for field in ["id", "hook", "flow", "payoff", "total", "title"] {
        assert!(item["required"].as_array().unwrap().contains(&json!(field)), "{field} required: {item}");
    }
    let sent: Value = serde_json::from_str(requests[0]["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["instruction"], "only the moments about birds");
    assert_eq!(sent["source"]["title"], "A talk about food, birds and trains");
    assert_eq!(sent["source"]["chapters"].as_array().unwrap().len(), 3);
    let listed = sent["candidates"].as_array().unwrap();
    assert_eq!(listed.len(), pool.len());
    assert!(listed.iter().all(|c| c["replay"].is_number() && c["chapter"].is_string() && c["transcript"].is_string()), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_refusing_json_schema_is_asked_again_for_a_json_object() {
    let (addr, seen) = llm_server().await;
    let picked = llm::rescore(&llm_config(addr, "no-schema"), &candidates(), 2, Steer::default()).await.unwrap();
    assert_eq!(picked.len(), 2);
    assert!(picked.iter().all(|c| c.scorer == "llm" && c.scores.hook == 9.0));
    let formats: Vec<Value> = seen.lock().unwrap().iter().map(|r| r["response_format"]["type"].clone()).collect();
    assert_eq!(formats, [json!("json_schema"), json!("json_object")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_answer_or_failure_is_an_error_to_fall_back_on() {
    let (addr, _) = llm_server().await;
    let pool = candidates();
    let fenced = llm::rescore(&llm_config(addr, "fenced"), &pool, 2, Steer::default()).await.unwrap();
    assert_eq!(fenced[0].title, "Only");
    let named = llm::rescore(&llm_config(addr, "old-score"), &pool, 2, Steer::default()).await.unwrap();
    assert_eq!((named[0].score, named[0].scores.total), (6.0, 6.0));

    for (model, needle) in [
        ("malformed", "not the json"),
        ("out-of-range", "not within 0..10"),
        ("unknown-id", "unknown candidate id 99"),
        ("no-subscores", "missing field `hook`"),
        ("twice", "scored twice"),
        ("slow", "timed out"),
        ("down", "500"),
    ] {
        let err = llm::rescore(&llm_config(addr, model), &pool, 2, Steer::default()).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{model}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_score_stage_keeps_the_heuristic_when_the_llm_answer_is_bad() {
    let (addr, seen) = llm_server().await;
    let dir = tempfile::tempdir().unwrap();
    let (wav, _) = talk_loudness(dir.path()).await;
    let truth = truth("talk.truth.json");
    let info = engine().probe(&fixture("talk.mp4")).await.unwrap();
    let meta = SourceMeta::from_info(&talk_info());
    let request = ScoreRequest { count: 2, min_len: 4.0, max_len: 8.0, instruction: Some("find the funny moments".into()) };
    let services = |model: &str| {
        let mut config = Config::load(None).unwrap();
        config.scratch.dir = dir.path().join("scratch");
        config.score.scorer = Scorer::Llm;
        config.score.llm = llm_config(addr, model);
        Services::new(&config).unwrap()
    };

    let scored = services("malformed").score(&truth.words(), &wav, None, &info, &request, Some(&meta)).await.unwrap();
    assert_eq!(scored.chosen.len(), 2);
    assert!(scored.chosen.iter().all(|c| c.scorer == "heuristic" && c.scores.total == c.score), "{:?}", scored.chosen);
    assert!(scored.chosen[0].reason.starts_with("most replayed"), "the heuristic still uses the page: {:?}", scored.chosen[0]);
    assert!(scored.fallbacks.iter().any(|f| f.starts_with("score: llm failed") && f.ends_with("→ heuristic")), "{:?}", scored.fallbacks);
    let sent: Value = serde_json::from_str(seen.lock().unwrap()[0]["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["instruction"], "find the funny moments");

    let scored = services("good").score(&truth.words(), &wav, None, &info, &request, Some(&meta)).await.unwrap();
    assert!(scored.fallbacks.is_empty() && scored.chosen.iter().all(|c| c.scorer == "llm"), "{scored:?}");

    // Without the LLM scorer the instruction cannot be followed, and the job says so.
    let mut config = Config::load(None).unwrap();
    config.scratch.dir = dir.path().join("scratch");
    let heuristic = Services::new(&config).unwrap().score(&truth.words(), &wav, None, &info, &request, Some(&meta)).await.unwrap();
    assert!(heuristic.chosen.iter().all(|c| c.scorer == "heuristic"));
    assert!(heuristic.fallbacks.iter().any(|f| f.contains("instruction not used")), "{:?}", heuristic.fallbacks);
}

#[test]
fn instructions_are_bounded_and_checked() {
    assert_eq!(llm::check_instruction("  find the funny moments\n").unwrap(), "find the funny moments");
    assert!(llm::check_instruction("   ").is_err());
    assert!(llm::check_instruction(&"a".repeat(llm::MAX_INSTRUCTION_CHARS + 1)).unwrap_err().contains("limit is 500"));
    assert!(llm::check_instruction(&"é".repeat(llm::MAX_INSTRUCTION_CHARS)).is_ok(), "characters, not bytes");
    assert!(llm::check_instruction("stop\u{1b}[2J").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn clip_reads_the_info_json_beside_a_local_file_and_steers_the_llm() {
    let (addr, seen) = llm_server().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("talk.mp4");
    std::fs::copy(fixture("talk.mp4"), &input).unwrap();
    // yt-dlp's --write-info-json name for talk.mp4.
    std::fs::write(dir.path().join("talk.info.json"), talk_info().to_string()).unwrap();
    let out = dir.path().join("out");
    let mut cmd = clipmill(&dir.path().join("scratch"));
    cmd.arg("clip")
        .arg(&input)
        .args(["--out", out.to_str().unwrap(), "--clips", "2", "--min-len", "4", "--max-len", "8", "--mode", "fit"])
        .args(["--instruction", "find the moments about birds"])
        .env("CLIPMILL__SCORE__SCORER", "llm")
        .env("CLIPMILL__SCORE__LLM__BASE_URL", format!("http://{addr}/v1"))
        .env("CLIPMILL__SCORE__LLM__MODEL", "good")
        .env("CLIPMILL__SCORE__LLM__TIMEOUT_S", "30");
    let status = tokio::task::spawn_blocking(move || cmd.status().unwrap()).await.unwrap();
    assert!(status.success());

    let listing: Value = serde_json::from_str(&std::fs::read_to_string(out.join("clips.json")).unwrap()).unwrap();
    assert_eq!(listing["source"]["title"], "A talk about food, birds and trains");
    assert_eq!(listing["source"]["uploader"], "Clipmill Tests");
    let clips = listing["clips"].as_array().unwrap();
    assert_eq!(clips.len(), 2);
    for clip in clips {
        let meta = &clip["meta"];
        assert_eq!(meta["scorer"], "llm", "{listing}");
        assert_eq!((meta["scores"]["hook"].as_f64(), meta["scores"]["payoff"].as_f64()), (Some(9.0), Some(1.5)));
        assert_eq!(meta["scores"]["total"], meta["score"]);
    }
    let edit: Value = serde_json::from_str(&std::fs::read_to_string(out.join("edit.json")).unwrap()).unwrap();
    assert!(edit["clips"].as_array().unwrap().iter().all(|c| c["meta"]["scores"]["flow"] == 5.0), "{edit}");

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_str(requests[0]["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["instruction"], "find the moments about birds");
    assert_eq!(sent["source"]["chapters"][1]["title"], "Birds");
}

/// The server's job run: the page's metadata travels from the download stage to the score stage
/// as a work file, the job's instruction reaches the LLM, and the result carries the source's
/// title and each clip's sub-scores and reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_job_sends_its_instruction_and_the_page_to_the_llm_and_reports_sub_scores() {
    use common::server::{KEY_A, TestServer, follow_job};
    let (llm, seen) = llm_server().await;
    let page = common::http::serve_described_talk().await;
    let server = TestServer::start(move |c| {
        c.score.scorer = Scorer::Llm;
        c.score.llm = LlmConfig { timeout_s: 30, ..llm_config(llm, "good") };
        c.fetch.ytdlp = root().join(".venv/bin/yt-dlp");
    })
    .await;
    let mut events = server.ws(&format!("/api/events?api_key={KEY_A}")).await;
    events.json(Duration::from_secs(10)).await;
    let options = json!({ "clips": 2, "min_len": 4, "max_len": 8, "mode": "fit", "instruction": "only the moments about birds" });
    let id = server.create(KEY_A, json!({ "url": format!("http://{page}/show"), "options": options })).await;
    follow_job(&mut events, &id, Duration::from_secs(240)).await;

    let job = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
    assert_eq!(job["source_meta"]["title"], "A talk about food", "{job}");
    assert_eq!(job["source_meta"]["uploader"], "Clipmill Tests");
    assert_eq!(job["options"]["instruction"], "only the moments about birds");
    let result = server.get_json(KEY_A, &format!("/api/jobs/{id}/result")).await;
    assert_eq!(result["source_meta"]["chapters"], 3);
    let clips = result["clips"].as_array().unwrap();
    assert_eq!(clips.len(), 2, "{result}");
    for clip in clips {
        assert_eq!(clip["scorer"], "llm", "{result}");
        assert_eq!(clip["reason"], "later is better");
        assert_eq!((clip["scores"]["hook"].as_f64(), clip["scores"]["flow"].as_f64()), (Some(9.0), Some(5.0)));
        assert_eq!(clip["scores"]["total"], clip["score"]);
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_str(requests[0]["messages"][1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(sent["instruction"], "only the moments about birds");
    assert_eq!(sent["source"]["chapters"].as_array().map(Vec::len), Some(3), "{sent}");
}
