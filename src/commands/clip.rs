//! `clipmill clip INPUT --out DIR`: the one-shot pipeline on one machine with nothing else running:
//! fetch → audio → transcribe → score → faces → render, degrading gracefully where the design says
//! (faces → centre crop or fit; LLM → heuristic; transcription → loudness-only scoring without
//! captions; captions → a clip without them), every fallback recorded in clips.json.
//!
//! Stages overlap where their inputs allow: the ASR model loads while the source downloads, and
//! faces for the next clip are found while the current one renders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all, ready};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::progress::Progress;
use super::render::{CaptionArgs, ClipEntry, entry};
use crate::analysis::fetch::FetchError;
use crate::analysis::llm;
use crate::analysis::score::Scores;
use crate::analysis::source_meta::{SourceMeta, SourceSummary};
use crate::config::Config;
use crate::edit::{EDIT_VERSION, EditFile, Size};
use crate::job::{Cost, Reframe, StageUsage, Truncation};
use crate::media::{Control, RenderRequest};
use crate::pipeline::{ScoreRequest, Services, base_clip, note_render_fallback, transcribe_or_degrade};
use crate::usage::Meter;

#[derive(Debug, Clone, clap::Args)]
pub struct ClipArgs {
    /// A local file, an http(s) URL of a media file, or any URL yt-dlp understands.
    pub input: String,
    #[arg(long)]
    pub out: PathBuf,
    /// How many clips (default from config).
    #[arg(long)]
    pub clips: Option<usize>,
    #[arg(long)]
    pub min_len: Option<f64>,
    #[arg(long)]
    pub max_len: Option<f64>,
    /// Output size, e.g. 1080x1920, 720x1280, 1080x1080.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<Size>,
    /// auto: per clip, track one speaker, split two in quick exchange, fit when no face is seen.
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: Reframe,
    /// What the LLM scorer should look for ("find the funny moments"); needs `score.scorer = "llm"`.
    #[arg(long)]
    pub instruction: Option<String>,
    /// yt-dlp's info JSON for the input (title, chapters, "most replayed" heatmap). Without it a
    /// local file's `<stem>.info.json` beside it is used, and a yt-dlp download's own.
    #[arg(long)]
    pub info: Option<PathBuf>,
    /// Caption style over config.toml's `[captions]`.
    #[command(flatten)]
    pub captions: CaptionArgs,
    /// Run the stages strictly one after another (the baseline the overlap is measured against).
    #[arg(long, hide = true)]
    pub no_overlap: bool,
}

fn parse_size(s: &str) -> Result<Size, String> {
    Size::parse(s).filter(|s| s.width % 2 == 0 && s.height % 2 == 0).ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT with even numbers"))
}

/// What clips.json holds for one clip beyond the render result.
#[derive(Debug, Clone, Serialize)]
struct ClipMeta {
    score: f64,
    /// Sub-scores (hook, flow, payoff) and the total, 0..10.
    scores: Scores,
    title: String,
    hook: String,
    reason: String,
    scorer: String,
    fallbacks: Vec<String>,
}

#[derive(Serialize)]
struct ClipsJson {
    /// The source's title, uploader and duration when its page said.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceSummary>,
    clips: Vec<ClipEntry>,
    fallbacks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_truncated: Option<Truncation>,
    timings_ms: BTreeMap<&'static str, u64>,
    usage: UsageReport,
}

/// What each stage used and what the run cost per hour of source (`job::usage`).
#[derive(Serialize, Default)]
struct UsageReport {
    stages: BTreeMap<&'static str, StageUsage>,
    cost: Option<Cost>,
}

impl UsageReport {
    /// Records a finished stage: its wall time in `timings`, and what `meter` measured.
    fn add(&mut self, timings: &mut BTreeMap<&'static str, u64>, stage: &'static str, wall_ms: u64, meter: &Meter) {
        timings.insert(stage, wall_ms);
        self.stages.entry(stage).or_default().add(Duration::from_millis(wall_ms), meter.cpu(), meter.gpu());
    }
}

/// Clips one video; a playlist (yt-dlp's flat listing) is clipped entry by entry, each into its
/// own folder `OUT/NN-title`, with `OUT/playlist.json` saying which folder holds which entry and
/// how it went. One entry failing does not stop the others (the command fails at the end).
pub async fn run(config: &Config, args: ClipArgs) -> anyhow::Result<()> {
    let refused = match clip_one(config, &args).await {
        Err(e) => match e.downcast_ref::<FetchError>() {
            Some(FetchError::Playlist { .. }) => e,
            _ => return Err(e),
        },
        ok => return ok,
    };
    let list = Services::new(config)?.fetcher.playlist(&args.input).await?.ok_or(refused)?;
    println!("{} is a playlist of {} videos", args.input, list.entries.len());
    let mut report = Vec::with_capacity(list.entries.len());
    for (i, entry) in list.entries.iter().enumerate() {
        let folder = format!("{:02}-{}", i + 1, folder_name(entry.title.as_deref().unwrap_or("video")));
        let one = ClipArgs { input: entry.url.clone(), out: args.out.join(&folder), info: None, ..args.clone() };
        let result = clip_one(config, &one).await;
        if let Err(e) = &result {
            eprintln!("entry {} ({}) failed: {e:#}", i + 1, entry.url);
        }
        report.push(serde_json::json!({
            "index": i + 1, "url": entry.url, "title": entry.title, "folder": folder,
            "ok": result.is_ok(), "error": result.err().map(|e| format!("{e:#}")),
        }));
    }
    let failed = report.iter().filter(|r| r["ok"] == false).count();
    write_json(&args.out.join("playlist.json"), &serde_json::json!({ "url": list.url, "title": list.title, "entries": report }))?;
    anyhow::ensure!(failed == 0, "{failed} of {} playlist entries failed (see {})", report.len(), args.out.join("playlist.json").display());
    Ok(())
}

/// A folder name from a title: letters and digits kept, runs of anything else one dash, at most
/// 60 characters.
fn folder_name(title: &str) -> String {
    let mut name = String::new();
    for c in title.chars() {
        if c.is_alphanumeric() {
            name.extend(c.to_lowercase());
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
        if name.chars().count() >= 60 {
            break;
        }
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() { "video".into() } else { name.into() }
}

async fn clip_one(config: &Config, args: &ClipArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let request = ScoreRequest {
        count: args.clips.unwrap_or(config.score.clips),
        min_len: args.min_len.unwrap_or(config.score.min_len),
        max_len: args.max_len.unwrap_or(config.score.max_len),
        instruction: args.instruction.as_deref().map(llm::check_instruction).transpose().map_err(|e| anyhow::anyhow!("--instruction: {e}"))?,
    };
    anyhow::ensure!(
        request.count > 0 && request.min_len >= 1.0 && request.max_len >= request.min_len,
        "need --clips > 0 and 1 <= --min-len <= --max-len"
    );
    let captions = args.captions.over(&config.captions)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = config.scratch.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create scratch {}", scratch.display()))?;
    let _cleanup = RemoveOnDrop(scratch.clone());

    let services = Arc::new(Services::new(config)?);
    let progress = Progress::new();
    let mut timings = BTreeMap::new();
    let mut usage = UsageReport::default();
    let mut job_fallbacks = Vec::new();

    // The ASR and face models load while the source is fetched (a face worker that fails to
    // start here fails again, with its reason, at the first clip's faces).
    let warm = (!args.no_overlap).then(|| {
        let s = services.clone();
        crate::task::spawn_named("faces-warm-up", async move { s.faces.warm_up().await });
        let s = services.clone();
        crate::task::spawn_named("asr-warm-up", async move { s.transcriber.warm_up().await })
    });

    let (stage, meter) = (progress.stage("fetch"), Meter::new());
    let fetched = meter.measure(services.fetcher.fetch(&args.input, &*stage.reporter())).await?;
    let info = meter.measure(services.check_source(&fetched.path)).await?;
    usage.add(&mut timings, "fetch", stage.finish(fetched.via), &meter);
    let meta = match &args.info {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("cannot read --info {}", path.display()))?;
            let info: serde_json::Value = serde_json::from_slice(&text).with_context(|| format!("--info {} is not json", path.display()))?;
            Some(SourceMeta::from_info(&info))
        }
        None => fetched.meta.clone(),
    };

    let (stage, meter) = (progress.stage("audio"), Meter::new());
    let wav = scratch.join("audio.wav");
    let ctl = Control { on_progress: Some(stage.reporter()), ..Default::default() };
    meter.measure(services.audio(&fetched.path, &info, &wav, ctl)).await?;
    usage.add(&mut timings, "audio", stage.finish(""), &meter);

    let (stage, meter) = (progress.stage("transcribe"), Meter::new());
    if let Some(warm) = warm {
        let _ = warm.await;
    }
    let (transcript, fallback) = meter.measure(transcribe_or_degrade(&services.transcriber, &wav, &scratch)).await;
    job_fallbacks.extend(fallback);
    let words = transcript.words();
    usage.add(&mut timings, "transcribe", stage.finish(&format!("{} words", words.len())), &meter);
    write_json(&args.out.join("transcript.json"), &transcript)?;

    let (stage, meter) = (progress.stage("score"), Meter::new());
    let scored = meter.measure(services.score(&words, &wav, Some(&fetched.path), &info, &request, meta.as_ref())).await?;
    job_fallbacks.extend(scored.fallbacks);
    let chosen = scored.chosen;
    anyhow::ensure!(!chosen.is_empty(), "no window of {}..{} s fits this source", request.min_len, request.max_len);
    usage.add(&mut timings, "score", stage.finish(&format!("{} clips by {}", chosen.len(), chosen[0].scorer)), &meter);

    let size = args.size.unwrap_or(Size { width: config.render.width, height: config.render.height });

    // Faces for every clip run one at a time in the background, ahead of the renders.
    let (faces_stage, faces_meter) = (progress.stage("faces"), Meter::new());
    let one_at_a_time = Arc::new(Semaphore::new(1));
    let n = chosen.len();
    let planned: Vec<_> = chosen
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut clip = base_clip(c, &words, size, &captions);
            let reframe = args.mode;
            let (services, gate, stage, meter) = (services.clone(), one_at_a_time.clone(), faces_stage.clone(), faces_meter.clone());
            let (input, info, scratch) = (fetched.path.clone(), info.clone(), scratch.clone());
            crate::task::spawn_named("clip-faces", async move {
                let _turn = gate.acquire().await.expect("gate is never closed");
                let t0 = std::time::Instant::now();
                let fallbacks = meter.measure(services.frame(&mut clip, reframe, &input, &info, &scratch)).await;
                stage.set((i + 1) as f64 / n as f64);
                (clip, fallbacks, t0.elapsed().as_millis() as u64)
            })
        })
        .collect();
    // Without overlap every face step finishes before the first render starts.
    let planned: Vec<BoxFuture<'static, _>> = if args.no_overlap {
        join_all(planned).await.into_iter().map(|r| ready(r).boxed()).collect()
    } else {
        planned.into_iter().map(FutureExt::boxed).collect()
    };

    let (render_stage, render_meter) = (progress.stage("render"), Meter::new());
    let (mut entries, mut clips) = (Vec::new(), Vec::new());
    let (mut faces_ms, mut render_ms) = (0, 0);
    for (i, (framed, candidate)) in planned.into_iter().zip(&chosen).enumerate() {
        let (mut clip, mut fallbacks, ms) = framed.await.context("face task panicked")?;
        faces_ms += ms;
        let name = format!("clip-{:02}", i + 1);
        let t0 = std::time::Instant::now();
        let report = render_stage.reporter();
        let ctl = Control::with_progress(move |f| report((i as f64 + f) / n as f64));
        let request = RenderRequest { input: fetched.path.clone(), clip: clip.clone(), default_size: size, out: args.out.join(format!("{name}.mp4")) };
        let (rendered, fallback) = render_meter.measure(services.render(request, ctl)).await.with_context(|| format!("{name} failed"))?;
        note_render_fallback(fallback, &mut clip, &mut fallbacks);
        render_ms += t0.elapsed().as_millis() as u64;
        let meta = ClipMeta {
            score: candidate.score,
            scores: candidate.scores,
            title: candidate.title.clone(),
            hook: candidate.hook.clone(),
            reason: candidate.reason.clone(),
            scorer: candidate.scorer.clone(),
            fallbacks,
        };
        clip.meta = Some(serde_json::to_value(&meta)?);
        entries.push(entry(&rendered, clip.meta.clone()));
        clips.push(clip);
    }
    faces_stage.finish("");
    render_stage.finish(&format!("{} clips", entries.len()));
    usage.add(&mut timings, "faces", faces_ms, &faces_meter);
    usage.add(&mut timings, "render", render_ms, &render_meter);
    timings.insert("total", started.elapsed().as_millis() as u64);
    usage.cost = Some(Cost::of(usage.stages.values(), info.readable_seconds(), config.cost.prices()));

    let edit = EditFile { version: EDIT_VERSION, source: Some(args.input.clone()), clips };
    write_json(&args.out.join("edit.json"), &edit)?;
    write_json(&args.out.join("clips.json"), &ClipsJson { source: meta.as_ref().map(SourceMeta::summary), clips: entries, fallbacks: job_fallbacks, source_truncated: scored.truncated, timings_ms: timings, usage })?;
    println!("wrote {} clip(s) to {}", edit.clips.len(), args.out.display());
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("cannot write {}", path.display()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn folder_names_are_plain_and_short() {
        assert_eq!(super::folder_name("Talk A: Rust & GStreamer!"), "talk-a-rust-gstreamer");
        assert_eq!(super::folder_name("../../etc/passwd"), "etc-passwd");
        assert_eq!(super::folder_name("???"), "video");
        assert_eq!(super::folder_name("Ünïcode 東京"), "ünïcode-東京");
        assert!(super::folder_name(&"x".repeat(500)).len() <= 60);
    }
}
