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

use anyhow::Context;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all, ready};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::progress::Progress;
use super::render::{ClipEntry, entry};
use crate::analysis::faces::FaceDetector;
use crate::analysis::fetch::Fetcher;
use crate::analysis::score::{self, Candidate, Loudness};
use crate::analysis::transcribe::{Transcriber, Transcript};
use crate::analysis::{llm, tracking};
use crate::config::{Config, Scorer};
use crate::edit::{CaptionStyle, ClipEdit, EDIT_VERSION, EditFile, Mode, Size, Word};
use crate::media::{Control, MediaEngine, MediaInfo, RenderRequest, TimeRange};

#[derive(Debug, clap::Args)]
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
    #[arg(long, value_enum, default_value = "track")]
    pub mode: ModeArg,
    #[arg(long)]
    pub no_captions: bool,
    /// Run the stages strictly one after another (the baseline the overlap is measured against).
    #[arg(long, hide = true)]
    pub no_overlap: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Track,
    Fit,
}

fn parse_size(s: &str) -> Result<Size, String> {
    Size::parse(s).filter(|s| s.width % 2 == 0 && s.height % 2 == 0).ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT with even numbers"))
}

/// What clips.json holds for one clip beyond the render result.
#[derive(Debug, Clone, Serialize)]
struct ClipMeta {
    score: f64,
    title: String,
    hook: String,
    reason: String,
    scorer: &'static str,
    fallbacks: Vec<String>,
}

pub async fn run(config: &Config, args: ClipArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (count, min_len, max_len) = (
        args.clips.unwrap_or(config.score.clips),
        args.min_len.unwrap_or(config.score.min_len),
        args.max_len.unwrap_or(config.score.max_len),
    );
    anyhow::ensure!(count > 0 && min_len >= 1.0 && max_len >= min_len, "need --clips > 0 and 1 <= --min-len <= --max-len");
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let scratch = config.scratch.dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create scratch {}", scratch.display()))?;
    let _cleanup = RemoveOnDrop(scratch.clone());

    let engine = MediaEngine::new(&config.media)?;
    let progress = Progress::new();
    let mut timings = BTreeMap::new();
    let mut job_fallbacks = Vec::new();

    // The ASR model loads while the source is fetched.
    let transcriber = Arc::new(Transcriber::new(&config.transcribe, &config.python));
    let warm = (!args.no_overlap).then(|| {
        let t = transcriber.clone();
        crate::task::spawn_named("asr-warm-up", async move { t.warm_up().await })
    });

    let stage = progress.stage("fetch");
    let fetcher = Fetcher::new(&config.fetch, config.scratch.dir.join("cache"));
    let fetched = fetcher.fetch(&args.input, &*stage.reporter()).await?;
    timings.insert("fetch", stage.finish(fetched.via));
    let info = engine.probe(&fetched.path).await?;
    anyhow::ensure!(
        info.duration <= config.fetch.max_duration_s as f64,
        "source is {:.0} s long; the limit is {} s (fetch.max_duration_s)",
        info.duration,
        config.fetch.max_duration_s
    );

    let stage = progress.stage("audio");
    let wav = scratch.join("audio.wav");
    engine.extract_audio(&fetched.path, &wav, Control { on_progress: Some(stage.reporter()), ..Default::default() }).await?;
    timings.insert("audio", stage.finish(""));

    let stage = progress.stage("transcribe");
    if let Some(warm) = warm {
        let _ = warm.await;
    }
    let transcript = match transcriber.transcribe(&wav, &scratch).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "transcription failed; scoring on loudness, no captions");
            job_fallbacks.push(format!("transcribe: {e} → loudness-only scoring, no captions"));
            Transcript::default()
        }
    };
    let words = transcript.words();
    timings.insert("transcribe", stage.finish(&format!("{} words", words.len())));
    write_json(&args.out.join("transcript.json"), &transcript)?;

    let stage = progress.stage("score");
    let wav_path = wav.clone();
    let loudness = tokio::task::spawn_blocking(move || Loudness::from_wav(&wav_path)).await?.context("cannot read audio")?;
    let (chosen, score_fallback) = choose(config, &words, &loudness, info.duration, count, min_len, max_len).await;
    job_fallbacks.extend(score_fallback);
    anyhow::ensure!(!chosen.is_empty(), "no window of {min_len}..{max_len} s fits this source");
    timings.insert("score", stage.finish(&format!("{} clips by {}", chosen.len(), chosen[0].scorer)));

    let mode = match args.mode {
        ModeArg::Track => Mode::Track,
        ModeArg::Fit => Mode::Fit,
    };
    let size = args.size.unwrap_or(Size { width: config.render.width, height: config.render.height });
    let captions = CaptionStyle { enabled: !args.no_captions && !words.is_empty(), ..CaptionStyle::default() };
    let faces = Arc::new(FaceDetector::new(&config.faces, &config.python));

    // Faces for every clip run one at a time in the background, ahead of the renders.
    let faces_stage = progress.stage("faces");
    let one_at_a_time = Arc::new(Semaphore::new(1));
    let planned: Vec<_> = chosen
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let clip = base_clip(c, &words, mode, size, &captions);
            let job = FacesJob {
                engine: engine.clone(),
                faces: faces.clone(),
                input: fetched.path.clone(),
                info: info.clone(),
                scratch: scratch.clone(),
                config: config.clone(),
                gate: one_at_a_time.clone(),
                stage: faces_stage.clone(),
                done_of: (i, chosen.len()),
            };
            crate::task::spawn_named("clip-faces", job.frame(clip))
        })
        .collect();

    // Without overlap every face step finishes before the first render starts.
    let planned: Vec<BoxFuture<'static, _>> = if args.no_overlap {
        join_all(planned).await.into_iter().map(|r| ready(r).boxed()).collect()
    } else {
        planned.into_iter().map(FutureExt::boxed).collect()
    };
    let render_stage = progress.stage("render");
    let (mut entries, mut clips) = (Vec::new(), Vec::new());
    let mut faces_ms = 0;
    let mut render_ms = 0;
    for (i, (handle, candidate)) in planned.into_iter().zip(&chosen).enumerate() {
        let (mut clip, mut fallbacks, ms) = handle.await.context("face task panicked")?;
        faces_ms += ms;
        let name = format!("clip-{:02}", i + 1);
        let out = args.out.join(format!("{name}.mp4"));
        let t0 = std::time::Instant::now();
        let n = chosen.len() as f64;
        let report = render_stage.reporter();
        let ctl = Control::with_progress(move |f| report((i as f64 + f) / n));
        let request = RenderRequest { input: fetched.path.clone(), clip: clip.clone(), default_size: size, out: out.clone() };
        let rendered = match engine.render(request.clone(), ctl.clone()).await {
            Err(e) if clip.captions.enabled && !e.is_bad_input() => {
                fallbacks.push(format!("captions: {e} → none"));
                clip.captions.enabled = false;
                engine.render(RenderRequest { clip: clip.clone(), ..request }, ctl).await
            }
            other => other,
        }
        .with_context(|| format!("{name} failed"))?;
        render_ms += t0.elapsed().as_millis() as u64;
        let meta = ClipMeta {
            score: candidate.score,
            title: candidate.title.clone(),
            hook: candidate.hook.clone(),
            reason: candidate.reason.clone(),
            scorer: candidate.scorer,
            fallbacks,
        };
        clip.meta = Some(serde_json::to_value(&meta)?);
        entries.push(entry(&rendered, clip.meta.clone()));
        clips.push(clip);
    }
    faces_stage.finish("");
    render_stage.finish(&format!("{} clips", entries.len()));
    timings.insert("faces", faces_ms);
    timings.insert("render", render_ms);
    timings.insert("total", started.elapsed().as_millis() as u64);

    let edit = EditFile { version: EDIT_VERSION, source: Some(args.input.clone()), clips };
    write_json(&args.out.join("edit.json"), &edit)?;
    write_json(&args.out.join("clips.json"), &ClipsJson { clips: entries, fallbacks: job_fallbacks, timings_ms: timings })?;
    println!("wrote {} clip(s) to {}", edit.clips.len(), args.out.display());
    Ok(())
}

#[derive(Serialize)]
struct ClipsJson {
    clips: Vec<ClipEntry>,
    fallbacks: Vec<String>,
    timings_ms: BTreeMap<&'static str, u64>,
}

/// Heuristic first; with the LLM scorer configured, its best candidates go to the LLM, and any
/// failure there keeps the heuristic's choice.
async fn choose(
    config: &Config,
    words: &[Word],
    loudness: &Loudness,
    duration: f64,
    count: usize,
    min_len: f64,
    max_len: f64,
) -> (Vec<Candidate>, Option<String>) {
    let heuristic = score::heuristic(words, loudness, duration, count, min_len, max_len);
    if config.score.scorer != Scorer::Llm || words.is_empty() {
        return (heuristic, None);
    }
    let pool = score::heuristic(words, loudness, duration, count * 3, min_len, max_len);
    match llm::rescore(&config.score.llm, &pool, count).await {
        Ok(picked) => (picked, None),
        Err(e) => {
            tracing::warn!(error = %e, "llm scorer failed; using the heuristic");
            (heuristic, Some(format!("score: llm failed ({e}) → heuristic")))
        }
    }
}

fn base_clip(c: &Candidate, words: &[Word], mode: Mode, size: Size, captions: &CaptionStyle) -> ClipEdit {
    ClipEdit {
        start: c.start,
        end: c.end,
        mode,
        size: Some(size),
        crop_path: vec![],
        words: words.iter().filter(|w| w.end > c.start && w.start < c.end).cloned().collect(),
        captions: captions.clone(),
        meta: None,
    }
}

/// Everything one clip's face step needs, owned so it can run as its own task.
struct FacesJob {
    engine: MediaEngine,
    faces: Arc<FaceDetector>,
    input: PathBuf,
    info: MediaInfo,
    scratch: PathBuf,
    config: Config,
    gate: Arc<Semaphore>,
    stage: super::progress::Stage,
    done_of: (usize, usize),
}

impl FacesJob {
    /// Fills in the crop path of a `track` clip from detected faces; falls back to a centred crop
    /// when detection fails and to `fit` when no face is seen. Returns the clip, the fallbacks
    /// taken and the milliseconds spent.
    async fn frame(self, mut clip: ClipEdit) -> (ClipEdit, Vec<String>, u64) {
        let mut fallbacks = Vec::new();
        if clip.mode != Mode::Track {
            return (clip, fallbacks, 0);
        }
        let _turn = self.gate.acquire().await.expect("gate is never closed");
        let t0 = std::time::Instant::now();
        match self.track(&clip).await {
            Ok(Some(keys)) => clip.crop_path = keys,
            Ok(None) => {
                fallbacks.push("faces: none found → fit".into());
                clip.mode = Mode::Fit;
            }
            Err(e) => {
                tracing::warn!(error = %e, "face detection failed; centre crop");
                fallbacks.push(format!("faces: {e} → centre crop"));
            }
        }
        self.stage.set((self.done_of.0 + 1) as f64 / self.done_of.1 as f64);
        (clip, fallbacks, t0.elapsed().as_millis() as u64)
    }

    async fn track(&self, clip: &ClipEdit) -> anyhow::Result<Option<Vec<crate::edit::CropKey>>> {
        let tag = format!("{:.3}-{:.3}", clip.start, clip.end);
        let frames_path = self.scratch.join(format!("frames-{tag}.raw"));
        let range = TimeRange::new(clip.start, clip.end);
        let frames = self
            .engine
            .extract_frames(&self.input, range, self.config.faces.fps, self.config.faces.width, &frames_path, Control::default())
            .await?;
        let detections = self.faces.detect(&frames_path, &self.scratch, &tag).await;
        let _ = tokio::fs::remove_file(&frames_path).await;
        let detections = detections?;
        let video = self.info.video.as_ref().context("no video")?;
        let size = clip.size.unwrap_or(Size::VERTICAL_1080);
        let aspect = size.width as f64 / size.height as f64;
        Ok(tracking::crop_path(&detections, frames.scale, video.display_size(), aspect, &self.config.tracking))
    }
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
