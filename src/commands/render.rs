//! `clipmill render --input SRC --edit EDIT.json --out DIR`: every clip of an edit, plus clips.json.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::edit::captions::Preset;
use crate::edit::{CaptionStyle, EditFile, Size};
use crate::media::{Control, MediaEngine, RenderOutput, RenderRequest};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The source video.
    #[arg(long)]
    pub input: PathBuf,
    /// The EDIT.json describing the clips.
    #[arg(long)]
    pub edit: PathBuf,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Given, these override every clip's caption style in the edit.
    #[command(flatten)]
    pub captions: CaptionArgs,
}

/// Caption flags of `clip` and `render`: a preset, a few of its values, or no captions.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CaptionArgs {
    /// Caption preset: karaoke (outlined, spoken word highlighted), boxed (on a dark box), bold
    /// (large upper-case) or word (one word at a time).
    #[arg(long, value_name = "PRESET", conflicts_with = "no_captions")]
    pub captions: Option<Preset>,
    /// No captions.
    #[arg(long)]
    pub no_captions: bool,
    /// Caption font: a Pango family and weight, e.g. "DejaVu Sans Bold".
    #[arg(long, value_name = "FONT")]
    pub caption_font: Option<String>,
    /// Caption font size as a fraction of the output width, e.g. 0.05.
    #[arg(long, value_name = "FRACTION")]
    pub caption_size: Option<f64>,
    /// Caption text colour.
    #[arg(long, value_name = "#RRGGBB")]
    pub caption_color: Option<String>,
    /// Colour of the word being spoken.
    #[arg(long, value_name = "#RRGGBB")]
    pub caption_highlight: Option<String>,
    /// Caption outline colour.
    #[arg(long, value_name = "#RRGGBB")]
    pub caption_outline: Option<String>,
    /// Centre of the captions as a fraction of the output height, e.g. 0.7.
    #[arg(long, value_name = "FRACTION")]
    pub caption_position: Option<f64>,
    /// Words per caption line at most (0: no limit).
    #[arg(long, value_name = "N")]
    pub caption_max_words: Option<usize>,
    /// Characters per caption line before wrapping.
    #[arg(long, value_name = "N")]
    pub caption_max_chars: Option<usize>,
    /// Lines per caption.
    #[arg(long, value_name = "N")]
    pub caption_lines: Option<usize>,
}

impl CaptionArgs {
    /// The style these flags make of `base`: what they set wins, `--captions` switches captions
    /// on and `--no-captions` off.
    pub fn over(&self, base: &CaptionStyle) -> anyhow::Result<CaptionStyle> {
        let layer = CaptionStyle {
            enabled: !self.no_captions && (self.captions.is_some() || base.enabled),
            preset: self.captions,
            font: self.caption_font.clone(),
            size: self.caption_size,
            color: self.caption_color.clone(),
            highlight: self.caption_highlight.clone(),
            outline: self.caption_outline.clone(),
            position: self.caption_position,
            max_words: self.caption_max_words,
            max_chars: self.caption_max_chars,
            max_lines: self.caption_lines,
            uppercase: None,
        };
        layer.validate().map_err(|e| anyhow::anyhow!("caption flags: {e}"))?;
        Ok(layer.over(base))
    }
}

/// One entry of clips.json.
#[derive(Debug, Serialize)]
pub struct ClipEntry {
    pub file: String,
    pub start: f64,
    pub end: f64,
    pub width: u32,
    pub height: u32,
    pub captions: Option<String>,
    pub vtt: Option<String>,
    pub copied: bool,
    /// The video decoder used: `nvh264dec` where the GPU decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

pub async fn run(config: &Config, args: RenderArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.edit).with_context(|| format!("cannot read {}", args.edit.display()))?;
    let edit = EditFile::from_json(&text)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let engine = MediaEngine::new(&config.media)?;
    let default_size = Size { width: config.render.width, height: config.render.height };

    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    let mut entries = Vec::with_capacity(edit.clips.len());
    for (i, clip) in edit.clips.iter().enumerate() {
        let name = format!("clip-{:02}", i + 1);
        let mut clip = clip.clone();
        clip.captions = args.captions.over(&clip.captions)?;
        let request = RenderRequest {
            input: args.input.clone(),
            clip: clip.clone(),
            default_size,
            out: args.out.join(format!("{name}.mp4")),
        };
        let ctl = Control { cancel: cancel.clone(), on_progress: Some(progress_printer(name.clone())) };
        let started = std::time::Instant::now();
        let output = engine.render(request, ctl).await.with_context(|| format!("{name} failed"))?;
        tracing::info!(clip = %name, duration_ms = started.elapsed().as_millis() as u64, copied = output.copied(), decoder = ?output.decoder, "clip rendered");
        entries.push(entry(&output, clip.meta.clone()));
    }
    let clips_json = args.out.join("clips.json");
    std::fs::write(&clips_json, serde_json::to_string_pretty(&serde_json::json!({ "clips": entries }))?)?;
    println!("wrote {} clip(s) and {}", entries.len(), clips_json.display());
    Ok(())
}

pub(crate) fn entry(output: &RenderOutput, meta: Option<serde_json::Value>) -> ClipEntry {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    ClipEntry {
        file: name(&output.file),
        start: output.start,
        end: output.end,
        width: output.width,
        height: output.height,
        captions: output.srt.as_deref().map(name),
        vtt: output.vtt.as_deref().map(name),
        copied: output.copied(),
        decoder: output.decoder.clone(),
        meta,
    }
}

/// Progress as a rewritten line on a terminal, as a few plain lines otherwise.
fn progress_printer(name: String) -> std::sync::Arc<dyn Fn(f64) + Send + Sync> {
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(-1i64);
    std::sync::Arc::new(move |fraction: f64| {
        let pct = (fraction * 100.0).round() as i64;
        let step = if tty { pct } else { pct / 25 * 25 };
        let mut last = last.lock().expect("progress lock");
        if step != *last {
            *last = step;
            if tty {
                eprint!("\r{name}: {pct:3}%{}", if pct >= 100 { "\n" } else { "" });
            } else {
                eprintln!("{name}: {step}%");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caption_flags_override_the_style_under_them() {
        let base = CaptionStyle { enabled: false, preset: Some(Preset::Boxed), size: Some(0.04), ..Default::default() };
        let none = CaptionArgs::default();
        assert_eq!(none.over(&base).unwrap(), base, "no flags, no change");
        let word = CaptionArgs { captions: Some(Preset::Word), caption_color: Some("#00FF00".into()), ..Default::default() };
        let style = word.over(&base).unwrap();
        assert!(style.enabled, "--captions switches captions on");
        assert_eq!((style.preset, style.size, style.color.as_deref()), (Some(Preset::Word), Some(0.04), Some("#00FF00")));
        let off = CaptionArgs { no_captions: true, ..Default::default() };
        assert!(!off.over(&CaptionStyle::default()).unwrap().enabled);
        let bad = CaptionArgs { caption_lines: Some(9), ..Default::default() };
        assert!(bad.over(&base).unwrap_err().to_string().contains("max_lines must be 1..=5"));
    }
}
