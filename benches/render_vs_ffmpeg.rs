//! clipmill's in-process render against the ffmpeg CLI doing the same edit, side by side.
//!
//! Both render the same 30 s of the generated 40 s talk (1920x1080, 30 fps) into a 1080x1920 MP4:
//! a 9:16 window that follows the face, scaled up, captions burned in, H.264 (x264 veryfast,
//! constant quality 23, a keyframe every 2 s), AAC 128 kbit/s, faststart. After one warm-up of
//! each, the measured rounds alternate clipmill and ffmpeg so both see the same machine state;
//! what matters is the ratio, not the absolute times.
//!
//! CPU time is user + system from getrusage: RUSAGE_SELF around the render (its pipelines run on
//! threads of this process, and exited threads stay counted) and RUSAGE_CHILDREN around the
//! waited-for ffmpeg child. Results and how to read them: BENCHMARKS.md.
//!
//! Run: `cargo bench --bench render_vs_ffmpeg` (BENCH_ROUNDS=n for more or fewer rounds).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clipmill::config::Config;
use clipmill::edit::captions::{self, Cue};
use clipmill::edit::{ClipEdit, CropPath, Size};
use clipmill::media::{Control, MediaEngine, RenderRequest};
use common::Truth;

/// The rendered range of the 40 s talk, in source seconds.
const START: f64 = 5.0;
const END: f64 = 35.0;
const SOURCE_SECONDS: u32 = 40;
const OUT: Size = Size::VERTICAL_1080;
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
/// ffmpeg's crop window is a piecewise-linear path through clipmill's windows at this step.
const CROP_STEP: f64 = 0.5;

#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    /// CPU seconds the rest of the machine used meanwhile: near zero on a quiet machine.
    others: f64,
}

/// A run is quiet when the rest of the machine used under this share of all cores meanwhile. On
/// a shared machine the side with more threads gets more of it, so busy runs mislead on wall time.
const QUIET_SHARE: f64 = 0.05;

impl Sample {
    fn quiet(&self) -> bool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        self.others <= QUIET_SHARE * self.wall * cores
    }
}

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let media = common::root().join("target/bench-media");
    generate(&media)?;
    let input = media.join("talk.mp4");
    let truth: Truth = serde_json::from_str(&std::fs::read_to_string(media.join("talk.truth.json"))?)?;
    let clip = truth.clip(START, END);
    let out_dir = media.join("out");
    std::fs::create_dir_all(&out_dir)?;
    let (ours, theirs) = (out_dir.join("clipmill.mp4"), out_dir.join("ffmpeg.mp4"));

    let config = Config::load(None)?;
    let engine = MediaEngine::new(&config.media)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let args = ffmpeg_args(&input, &clip, (truth.width, truth.height), &out_dir, &theirs)?;
    let frames = ((END - START) * truth.fps).round();
    let load_before = load_average();

    println!(
        "render_vs_ffmpeg: {START}..{END} s of talk.mp4 ({}x{} {} fps) -> {}x{}, {frames} frames; {rounds} rounds after one warm-up each",
        truth.width, truth.height, truth.fps, OUT.width, OUT.height
    );
    println!(
        "machine: {} cores, {}; clipmill: {} + {}, media.threads {}; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        engine.encoders().video,
        engine.encoders().audio,
        clipmill::config::media_threads(&config.media),
        ffmpeg_version()?,
    );

    let clipmill = |out: &Path| -> anyhow::Result<Sample> {
        let request = RenderRequest { input: input.clone(), clip: clip.clone(), default_size: OUT, out: out.to_path_buf() };
        measure(libc::RUSAGE_SELF, || {
            runtime.block_on(engine.render(request, Control::default())).context("clipmill render")?;
            Ok(())
        })
    };
    let ffmpeg = || -> anyhow::Result<Sample> {
        measure(libc::RUSAGE_CHILDREN, || {
            let status = Command::new("ffmpeg").args(&args).stdin(Stdio::null()).status().context("run ffmpeg")?;
            ensure!(status.success(), "ffmpeg failed: {status}");
            Ok(())
        })
    };

    println!("\n{:<8} {:<29}   {:<29}", "", "clipmill", "ffmpeg");
    println!("{:<8} {:>9} {:>9} {:>9}   {:>9} {:>9} {:>9}", "round", "wall", "cpu", "others", "wall", "cpu", "others");
    let warm = (clipmill(&ours)?, ffmpeg()?);
    print_row("warm-up", warm.0, warm.1);
    let mut samples = Vec::with_capacity(rounds);
    for i in 1..=rounds {
        let pair = (clipmill(&ours)?, ffmpeg()?);
        print_row(&i.to_string(), pair.0, pair.1);
        samples.push(pair);
    }
    let (ours_med, theirs_med) = medians(&samples);
    print_row("median", ours_med, theirs_med);
    println!("(cpu: user + system of the render; others: CPU the rest of the machine used meanwhile)");

    let quiet: Vec<(Sample, Sample)> = samples.iter().copied().filter(|(a, b)| a.quiet() && b.quiet()).collect();
    println!("\nffmpeg / clipmill (>1 means clipmill is faster)");
    let ratio = |label: String, (a, b): (Sample, Sample)| {
        println!("  {label:<18} wall {:>5.2}x   cpu {:>5.2}x", b.wall / a.wall, b.cpu / a.cpu);
    };
    ratio(format!("all {} rounds", samples.len()), (ours_med, theirs_med));
    if quiet.len() < samples.len() {
        if !quiet.is_empty() {
            ratio(format!("{} quiet rounds", quiet.len()), medians(&quiet));
        }
        println!(
            "  ! {} of {} rounds ran beside other work (marked busy). A busy machine skews wall times toward the\n    side with more threads; trust quiet rounds, or rerun on an idle machine.",
            samples.len() - quiet.len(),
            samples.len()
        );
    }
    let (a, b) = if quiet.is_empty() { (ours_med, theirs_med) } else { medians(&quiet) };
    let which = if quiet.is_empty() { "all rounds" } else { "quiet rounds" };
    println!("frames per second of wall time (median of {which})");
    println!("  clipmill {:>6.1}   ffmpeg {:>6.1}", frames / a.wall, frames / b.wall);
    println!("cores busy (cpu / wall, median of {which})");
    println!("  clipmill {:>6.2}   ffmpeg {:>6.2}", a.cpu / a.wall, b.cpu / b.wall);

    println!("\noutputs (last round)");
    for (name, path) in [("clipmill", &ours), ("ffmpeg", &theirs)] {
        let info = runtime.block_on(engine.probe(path))?;
        let video = info.video.as_ref().context("output has no video")?;
        ensure!((video.width, video.height) == (OUT.width, OUT.height), "{name}: {}x{}", video.width, video.height);
        ensure!(info.audio.is_some(), "{name}: no audio");
        ensure!((info.duration - (END - START)).abs() <= 0.1, "{name}: {:.3} s long", info.duration);
        let bytes = std::fs::metadata(path)?.len();
        println!(
            "  {name:<8} {}x{} {} {:.2} s, {:.2} MB ({:.0} kbit/s) {}",
            video.width,
            video.height,
            video.mime,
            info.duration,
            bytes as f64 / 1e6,
            bytes as f64 * 8.0 / info.duration / 1e3,
            path.display()
        );
    }

    println!("\nload average before / after: {load_before} / {}", load_average());
    println!("\nffmpeg command:\n{}", std::iter::once("ffmpeg".to_string()).chain(args.iter().map(|a| shell_quote(a))).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// Generates the 40 s talk once; the generator skips outputs that are up to date.
fn generate(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new(common::python())
        .arg(common::root().join("scripts/gen_media.py"))
        .arg("--out")
        .arg(dir)
        .args(["--duration", &SOURCE_SECONDS.to_string()])
        .status()
        .context("run scripts/gen_media.py (run scripts/setup.sh --bench first)")?;
    ensure!(status.success(), "test media generation failed");
    Ok(())
}

/// Wall time and user + system CPU time of `f`, CPU time as getrusage reports it for `who`.
/// Also what everything else on the machine used meanwhile (busy time from /proc/stat less ours).
fn measure(who: libc::c_int, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Sample> {
    let (busy0, cpu0, t0) = (machine_busy_seconds()?, cpu_seconds(who)?, Instant::now());
    f()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(who)? - cpu0;
    Ok(Sample { wall, cpu, others: (machine_busy_seconds()? - busy0 - cpu).max(0.0) })
}

/// CPU seconds all cores spent busy since boot (the `cpu` line of /proc/stat, less idle and iowait).
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    ensure!(ticks.len() == 8, "unexpected /proc/stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // user nice system idle iowait irq softirq steal
    Ok((ticks.iter().sum::<f64>() - ticks[3] - ticks[4]) / hz)
}

fn cpu_seconds(who: libc::c_int) -> anyhow::Result<f64> {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            bail!("getrusage: {}", std::io::Error::last_os_error());
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn medians(pairs: &[(Sample, Sample)]) -> (Sample, Sample) {
    (median_sample(pairs.iter().map(|p| p.0)), median_sample(pairs.iter().map(|p| p.1)))
}

fn median_sample(samples: impl Iterator<Item = Sample>) -> Sample {
    let samples: Vec<Sample> = samples.collect();
    let of = |f: fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Sample { wall: of(|s| s.wall), cpu: of(|s| s.cpu), others: of(|s| s.others) }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn print_row(label: &str, ours: Sample, theirs: Sample) {
    let cells = |s: Sample| format!("{:>7.2} s {:>7.2} s {:>7.2} s", s.wall, s.cpu, s.others);
    let busy = if label != "median" && !(ours.quiet() && theirs.quiet()) { "  busy" } else { "" };
    println!("{label:<8} {}   {}{busy}", cells(ours), cells(theirs));
}

/// The ffmpeg arguments for the same edit: input seeking, the crop window moving along
/// clipmill's own crop path, the same scale, one caption overlay per cue, the same encoders.
fn ffmpeg_args(input: &Path, clip: &ClipEdit, frame: (u32, u32), out_dir: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let path = CropPath::new(&clip.crop_path, frame, OUT.width as f64 / OUT.height as f64);
    let window = path.window_at(START);
    let mut filters = vec![
        format!("crop=w={}:h={}:x={}:y={}", window.w, window.h, crop_x_expr(&path), window.y),
        // videoscale's default method is bilinear; ffmpeg's default (bicubic) would cost it more.
        format!("scale={}:{}:flags=bilinear", OUT.width, OUT.height),
    ];
    let style = &clip.captions;
    let cue_dir = out_dir.join("ffmpeg-cues");
    std::fs::create_dir_all(&cue_dir)?;
    for (i, cue) in captions::layout(&clip.words, START, END, style).iter().enumerate() {
        filters.push(drawtext(cue, &cue_dir.join(format!("cue{i:02}.txt")), style)?);
    }
    let seconds = |s: f64| format!("{s}");
    let mut args: Vec<String> = ["-y", "-loglevel", "error", "-ss", &seconds(START), "-t", &seconds(END - START), "-i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(input.to_string_lossy().into_owned());
    args.extend(["-vf".to_string(), filters.join(",")]);
    // `-bf 0`: clipmill's x264 codes no B-frames (GStreamer 1.22's mp4mux writes no edit list
    // for their reorder delay, so picture would start late against sound); the same here, so
    // both encoders do the same work.
    args.extend(
        "-c:v libx264 -preset veryfast -crf 23 -g 60 -bf 0 -c:a aac -b:a 128k -movflags +faststart -threads 0"
            .split(' ')
            .map(String::from),
    );
    args.push(out.to_string_lossy().into_owned());
    Ok(args)
}

/// The crop window's left edge as an ffmpeg expression of output time `t`: linear between
/// clipmill's windows every `CROP_STEP` seconds, one constant where the window holds still.
/// Commas are escaped for the filtergraph parser.
fn crop_x_expr(path: &CropPath) -> String {
    let steps = ((END - START) / CROP_STEP).round() as usize;
    let xs: Vec<f64> = (0..=steps).map(|k| path.window_at(START + k as f64 * CROP_STEP).x as f64).collect();
    // (segment end, value on the segment), adjacent holds merged.
    let mut segments: Vec<(f64, String)> = Vec::new();
    for k in 0..steps {
        let (t0, t1) = (k as f64 * CROP_STEP, (k + 1) as f64 * CROP_STEP);
        let slope = (xs[k + 1] - xs[k]) / CROP_STEP;
        let value = if slope == 0.0 { format!("{}", xs[k]) } else { format!("{}{slope:+}*(t-{t0})", xs[k]) };
        match segments.last_mut() {
            Some((end, last)) if slope == 0.0 && *last == value => *end = t1,
            _ => segments.push((t1, value)),
        }
    }
    let mut expr = format!("{}", xs[steps]);
    for (end, value) in segments.iter().rev() {
        expr = format!("if(lt(t,{end}),{value},{expr})");
    }
    expr.replace(',', "\\,")
}

/// One `drawtext` showing `cue` (its text in a file, so nothing needs escaping) while it is on.
fn drawtext(cue: &Cue, text_file: &Path, style: &captions::CaptionStyle) -> anyhow::Result<String> {
    std::fs::write(text_file, cue.text())?;
    let style = style.look();
    let px = (style.size * OUT.width as f64).round();
    Ok(format!(
        "drawtext=fontfile={FONT_FILE}:textfile={}:expansion=none:fontsize={px}:fontcolor=0x{}:borderw=3:bordercolor=black:\
         shadowx=2:shadowy=2:x=(w-text_w)/2:y=h*{}-text_h/2:enable=between(t\\,{:.3}\\,{:.3})",
        text_file.display(),
        style.color.trim_start_matches('#'),
        style.position,
        cue.start - START,
        cue.end - START,
    ))
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "_-+=./:,".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown cpu".into())
}

/// The 1, 5 and 15 minute load averages: anything else running shows here.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn ffmpeg_version() -> anyhow::Result<String> {
    let out = Command::new("ffmpeg").arg("-version").output().context("ffmpeg is not installed (scripts/setup.sh --bench)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("ffmpeg").split(" Copyright").next().unwrap_or("ffmpeg").to_string())
}
