//! The face stage against the render, on the same clips: issue 17 asks for the face stage to cost
//! at most 15% of the render. Clips of 30 s spread over the generated 10-minute talk (made once
//! under `target/bench-media-600`), each framed (`Services::frame`: frames decoded and scaled to
//! the detector's size while the face worker reads them, detection, tracking) and then rendered
//! (`Services::render`), with the face worker started before the clock (a server's workers are
//! long-lived). Wall time per stage, and CPU time as each stage's `usage::Meter` measured it
//! (the face worker's own CPU over its requests, the media threads' CPU). And, so a cheaper face
//! stage is not bought with a worse crop, how far the crop's centre is from the true face centre
//! (`talk.truth.json`) over every crop key of every clip: mean and 95th percentile, in source pixels.
//!
//! Run: `cargo bench --bench faces_vs_render` (BENCH_CLIPS=n for more or fewer clips, default 4).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clipmill::config::Config;
use clipmill::edit::Size;
use clipmill::job::Reframe;
use clipmill::media::{Control, RenderRequest};
use clipmill::pipeline::Services;
use clipmill::usage::Meter;
use common::Truth;

const SOURCE_SECONDS: u32 = 600;
const CLIP_SECONDS: f64 = 30.0;

fn main() -> anyhow::Result<()> {
    let clips: usize = std::env::var("BENCH_CLIPS").ok().and_then(|s| s.parse().ok()).unwrap_or(4).max(1);
    let media = common::root().join(format!("target/bench-media-{SOURCE_SECONDS}"));
    let status = Command::new(common::python())
        .arg(common::root().join("scripts/gen_media.py"))
        .args(["--out".as_ref(), media.as_os_str(), "--duration".as_ref(), SOURCE_SECONDS.to_string().as_ref()])
        .status()
        .context("run scripts/gen_media.py (run scripts/setup.sh --bench first)")?;
    ensure!(status.success(), "test media generation failed");
    let input = media.join("talk.mp4");
    let truth: Truth = serde_json::from_str(&std::fs::read_to_string(media.join("talk.truth.json"))?)?;
    let scratch = tempfile::tempdir()?;
    let services = Services::new(&Config::load(None)?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    runtime.block_on(async {
        let info = services.check_source(&input).await?;
        services.faces.warm_up().await?;
        let (faces, render) = (Meter::new(), Meter::new());
        let (mut faces_wall, mut render_wall) = (Duration::ZERO, Duration::ZERO);
        let mut errors = vec![];
        println!("{:>8} {:>10} {:>10} {:>10} {:>10}", "clip at", "faces wall", "faces CPU", "rend. wall", "rend. CPU");
        for i in 0..clips {
            let start = 30.0 + i as f64 * (f64::from(SOURCE_SECONDS) - 60.0) / clips as f64;
            let mut clip = truth.clip(start, start + CLIP_SECONDS);
            let (cpu0, t0) = (faces.cpu(), Instant::now());
            let fallbacks = faces.measure(services.frame(&mut clip, Reframe::Auto, &input, &info, scratch.path())).await;
            ensure!(fallbacks.is_empty(), "the face stage fell back: {fallbacks:?}");
            let (face_wall, face_cpu) = (t0.elapsed(), faces.cpu() - cpu0);
            errors.extend(clip.crop_path.iter().map(|key| (key.x + key.w / 2.0 - truth.face_at(key.t)[0]).abs()));
            let out = scratch.path().join(format!("clip-{i}.mp4"));
            let request = RenderRequest { input: input.clone(), clip, default_size: Size::VERTICAL_1080, out };
            let (cpu0, t0) = (render.cpu(), Instant::now());
            render.measure(services.render(request, Control::default())).await?;
            let (wall, cpu) = (t0.elapsed(), render.cpu() - cpu0);
            println!("{start:>7.0}s {:>9.2}s {:>9.2}s {:>9.2}s {:>9.2}s", face_wall.as_secs_f64(), face_cpu.as_secs_f64(), wall.as_secs_f64(), cpu.as_secs_f64());
            (faces_wall, render_wall) = (faces_wall + face_wall, render_wall + wall);
        }
        let (fw, rw) = (faces_wall.as_secs_f64(), render_wall.as_secs_f64());
        let (fc, rc) = (faces.cpu().as_secs_f64(), render.cpu().as_secs_f64());
        println!("\n{clips} clips of {CLIP_SECONDS} s: faces {fw:.2} s wall, {fc:.2} s CPU; render {rw:.2} s wall, {rc:.2} s CPU");
        println!("faces / render: {:.3} wall, {:.3} CPU (issue 17's target: 0.15)", fw / rw, fc / rc);
        errors.sort_by(f64::total_cmp);
        let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
        let p95 = errors.get(errors.len() * 95 / 100).copied().unwrap_or(0.0);
        println!("crop centre from the true face: {mean:.1} px mean, {p95:.1} px p95 ({} crop keys)", errors.len());
        anyhow::Ok(())
    })
}
