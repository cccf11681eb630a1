//! Transcription with the real faster-whisper worker, the OpenAI-compatible backend over real
//! HTTP, and the worker pool's crash and hang handling with a real misbehaving worker.

mod common;

use std::time::Duration;

use clipmill::analysis::transcribe::Transcriber;
use clipmill::analysis::{WorkerError, WorkerPool, WorkerSpec};
use clipmill::config::{Config, TranscribeBackend};
use clipmill::media::Control;
use common::http::{reply, serve};
use common::*;

fn config() -> Config {
    let mut c = Config::load(None).unwrap();
    c.python.interpreter = python();
    c.python.scripts = root().join("python");
    c
}

/// Lowercase words without punctuation, numbers spelled out the way espeak says them.
fn normalise(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .flat_map(|w| match w.parse::<u32>() {
            Ok(n) => spell(n),
            Err(_) => vec![w],
        })
        .collect()
}

fn spell(n: u32) -> Vec<String> {
    const ONES: [&str; 20] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ];
    const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    let mut out = Vec::new();
    let (h, rest) = (n / 100, n % 100);
    if h > 0 {
        out.extend([ONES[h as usize % 20].to_string(), "hundred".into()]);
    }
    if rest >= 20 {
        out.push(TENS[rest as usize / 10].into());
        if rest % 10 > 0 {
            out.push(ONES[rest as usize % 10].into());
        }
    } else if rest > 0 || n == 0 {
        out.push(ONES[rest as usize].into());
    }
    out
}

/// Word-level edit distance and the index pairs of matched words (an alignment).
fn align(hyp: &[String], reference: &[String]) -> (usize, Vec<(usize, usize)>) {
    let (n, m) = (hyp.len(), reference.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=m).collect();
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + usize::from(hyp[i - 1] != reference[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let (mut i, mut j, mut pairs) = (n, m, Vec::new());
    while i > 0 && j > 0 {
        if hyp[i - 1] == reference[j - 1] && d[i][j] == d[i - 1][j - 1] {
            pairs.push((i - 1, j - 1));
            (i, j) = (i - 1, j - 1);
        } else if d[i][j] == d[i - 1][j - 1] + 1 {
            (i, j) = (i - 1, j - 1);
        } else if d[i][j] == d[i - 1][j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    (d[n][m], pairs)
}

#[tokio::test(flavor = "multi_thread")]
async fn local_whisper_transcribes_the_talk_with_good_words_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    engine().extract_audio(&fixture("talk.mp4"), &wav, Control::default()).await.unwrap();
    let config = config();
    let transcriber = Transcriber::new(&config.transcribe, &config.python);
    let transcript = transcriber.transcribe(&wav, dir.path()).await.unwrap();
    assert_good_words_and_times(&transcript);
}

/// On a machine whose GPU CUDA sees (ctranslate2's count, as the worker's "auto" asks), the
/// worker runs on it in float16 and its requests are charged GPU time; elsewhere the test is
/// skipped, and the test command's closing lines say so.
#[tokio::test(flavor = "multi_thread")]
async fn transcription_runs_on_cuda_where_a_gpu_is_visible() {
    let count = std::process::Command::new(python())
        .args(["-c", "import ctranslate2; print(ctranslate2.get_cuda_device_count())"])
        .output()
        .expect("run python");
    assert!(count.status.success(), "{}", String::from_utf8_lossy(&count.stderr));
    if String::from_utf8_lossy(&count.stdout).trim() == "0" {
        suite_note("gpu-asr", "gpu: no CUDA device on this machine; CUDA transcription was skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    engine().extract_audio(&fixture("talk.mp4"), &wav, Control::default()).await.unwrap();
    let mut config = config();
    config.transcribe.device = "cuda".into();
    let transcriber = Transcriber::new(&config.transcribe, &config.python);
    let meter = clipmill::usage::Meter::new();
    let transcript = meter.measure(transcriber.transcribe(&wav, dir.path())).await.unwrap();
    assert_good_words_and_times(&transcript);
    assert!(meter.gpu() > Duration::ZERO, "the request was not charged GPU time");
    suite_note("gpu-asr", &format!("gpu: transcribed on CUDA, {:.2} GPU-s", meter.gpu().as_secs_f64()));
}

/// The talk's words, at most 15% wrong, and 90% of those right starting within 0.3 s.
fn assert_good_words_and_times(transcript: &clipmill::analysis::transcribe::Transcript) {
    let truth = truth("talk.truth.json");
    let reference: Vec<String> = truth.sentences.iter().flat_map(|s| s.words.iter().map(|w| w.word.to_lowercase())).collect();
    let reference_starts: Vec<f64> = truth.sentences.iter().flat_map(|s| s.words.iter().map(|w| w.start)).collect();
    let mut hyp = Vec::new();
    let mut hyp_starts = Vec::new();
    for w in transcript.segments.iter().flat_map(|s| &s.words) {
        for part in normalise(&w.text) {
            hyp.push(part);
            hyp_starts.push(w.start);
        }
    }
    let (errors, pairs) = align(&hyp, &reference);
    let wer = errors as f64 / reference.len() as f64;
    assert!(wer <= 0.15, "WER {wer:.3}: {hyp:?}");
    let close = pairs.iter().filter(|&&(h, r)| (hyp_starts[h] - reference_starts[r]).abs() <= 0.3).count();
    assert!(close as f64 >= 0.9 * pairs.len() as f64, "{close}/{} matched words start within 0.3 s", pairs.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_compatible_backend_speaks_verbose_json() {
    let truth = truth("talk.truth.json");
    let words: Vec<_> = truth.words().iter().map(|w| serde_json::json!({"word": w.text, "start": w.start, "end": w.end})).collect();
    let segments: Vec<_> =
        truth.sentences.iter().map(|s| serde_json::json!({"start": s.start, "end": s.end, "text": s.text})).collect();
    let answer = serde_json::json!({"language": "english", "duration": truth.duration, "text": "", "words": words, "segments": segments}).to_string();
    let addr = serve(move |path, body| {
        let answer = answer.clone();
        async move {
            let form = String::from_utf8_lossy(&body).to_string();
            let wants = ["name=\"file\"", "RIFF", "name=\"model\"", "verbose_json", "timestamp_granularities[]", "word"];
            if path != "/v1/audio/transcriptions" || !wants.iter().all(|w| form.contains(w)) {
                return reply(400, "application/json", "{\"error\":\"bad request\"}");
            }
            reply(200, "application/json", answer)
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    engine().extract_audio(&fixture("noface.mp4"), &wav, Control::default()).await.unwrap();
    let mut config = config();
    config.transcribe.backend = TranscribeBackend::Openai;
    config.transcribe.openai.base_url = format!("http://{addr}/v1");
    let transcriber = Transcriber::new(&config.transcribe, &config.python);
    let transcript = transcriber.transcribe(&wav, dir.path()).await.unwrap();
    assert_eq!(transcript.segments.len(), truth.sentences.len());
    assert_eq!(transcript.words(), truth.words());
    assert_eq!(transcript.segments[2].words.first().map(|w| w.text.as_str()), truth.sentences[2].words.first().map(|w| w.word.as_str()));

    config.transcribe.openai.base_url = format!("http://{addr}/wrong");
    let err = Transcriber::new(&config.transcribe, &config.python).transcribe(&wav, dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("answered 404") || err.to_string().contains("400"), "{err}");
}

fn flaky_pool(state: &std::path::Path, timeout: Duration) -> WorkerPool {
    flaky_pool_stalling_after(state, timeout, timeout)
}

fn flaky_pool_stalling_after(state: &std::path::Path, timeout: Duration, stall: Duration) -> WorkerPool {
    WorkerPool::new(WorkerSpec {
        name: "flaky",
        interpreter: python(),
        script: root().join("tests/support/flaky_worker.py"),
        args: vec!["--state".into(), state.to_string_lossy().into()],
        size: 1,
        start_timeout: Duration::from_secs(30),
        request_timeout: timeout,
        stall_timeout: stall,
    })
}

async fn call(pool: &WorkerPool, dir: &std::path::Path, mode: &str) -> Result<u64, WorkerError> {
    let out = dir.join(format!("{mode}.json"));
    pool.call(&serde_json::json!({"mode": mode, "out": out}), &dir.join(format!("{mode}.req.json"))).await?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    Ok(v["pid"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn crashed_or_hung_workers_are_replaced_and_the_request_retried_once() {
    let dir = tempfile::tempdir().unwrap();
    let pool = flaky_pool(&dir.path().join("state-crash"), Duration::from_secs(3));
    let first = call(&pool, dir.path(), "ok").await.unwrap();
    let after_crash = call(&pool, dir.path(), "crash_once").await.unwrap();
    assert_ne!(first, after_crash, "a new worker served the retried request");

    // A request that fails in the worker is its own error; the worker lives on.
    let err = call(&pool, dir.path(), "fail").await.unwrap_err();
    assert!(matches!(&err, WorkerError::Failed { message, .. } if message.contains("this request is bad")), "{err:?}");
    assert_eq!(call(&pool, dir.path(), "ok").await.unwrap(), after_crash);

    // Crashing every time: one retry, then the error, with the worker's stderr in it.
    let err = call(&pool, dir.path(), "crash").await.unwrap_err();
    assert!(matches!(&err, WorkerError::Crashed { stderr, .. } if stderr.contains("on purpose")), "{err:?}");

    let pool = flaky_pool(&dir.path().join("state-hang"), Duration::from_secs(2));
    let started = std::time::Instant::now();
    call(&pool, dir.path(), "hang_once").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "hung worker was not killed in time");

    // A worker that reported progress and then went silent is hung long before the request's
    // own timeout (a minute here): killed after 2 s of silence, and the request served again.
    let pool = flaky_pool_stalling_after(&dir.path().join("state-stall"), Duration::from_secs(60), Duration::from_secs(2));
    let first = call(&pool, dir.path(), "ok").await.unwrap();
    let started = std::time::Instant::now();
    let after_stall = call(&pool, dir.path(), "stall_once").await.unwrap();
    assert_ne!(first, after_stall, "a new worker served the retried request");
    assert!(started.elapsed() < Duration::from_secs(20), "the silent worker was not taken for hung: {:?}", started.elapsed());
}
