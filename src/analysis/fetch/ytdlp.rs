//! Sources through yt-dlp without ffmpeg: the best video up to `fetch.max_height` and the best
//! audio as two files, remuxed into one by the media engine; one file when the site offers no
//! separate streams.
//!
//! Two runs of yt-dlp. The first (`-J`) extracts and chooses formats with [`selector`], and writes
//! the info JSON; we read the choice from it and refuse what we must before any byte is
//! downloaded (audio only, too long, too large). The second (`--load-info-json`, no second
//! extraction) downloads exactly the chosen format ids, comma-separated so yt-dlp never wants
//! ffmpeg to merge them, each as `stream.f<ID>.<ext>`. Its progress lines name the format and the
//! file, so both halves are accounted for and their progress is reported as one fraction.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{FetchError, Fetched, Fetcher, classify_ytdlp};
use crate::analysis::source_meta::SourceMeta;
use crate::media::Control;

/// The part of a pair's fetch progress that is the remux (a stream copy: quick next to a download).
const REMUX_SHARE: f64 = 0.05;

/// Prefix of our progress lines on yt-dlp's stdout (its other output is free text).
const PROGRESS_MARK: &str = "clipmill-progress ";

/// yt-dlp's format selector: separate video-only and audio-only streams first (H.264, then VP9,
/// then AV1; AAC, then Opus, then any audio), then the best single file. `+` only selects (the
/// download names the ids apart), and unlike `,` it fails when either half matches nothing, so
/// `/` moves on to the next choice.
pub(super) fn selector(max_height: u32) -> String {
    let video = |codec: &str| format!("bv[height<={max_height}][vcodec~='^({codec})']");
    // Audio MP4 can carry first (the pair is remuxed into MP4); any audio before no pair at all.
    let audio = "(ba[acodec^=mp4a]/ba[acodec^=opus]/ba)";
    [
        format!("{}+{audio}", video("avc1|h264")),
        format!("{}+{audio}", video("vp0?9")),
        format!("{}+{audio}", video("av01")),
        format!("b[height<={max_height}][vcodec~='^(avc1|h264)']"),
        format!("b[height<={max_height}]"),
        "b".to_string(),
    ]
    .join("/")
}

/// One format yt-dlp chose.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Format {
    pub id: String,
    /// Bytes when the site says (exactly or roughly).
    pub size: Option<f64>,
    /// How much of the whole download this format is: its size, else its bitrate.
    pub weight: f64,
}

/// What the first run chose.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Plan {
    /// Separate streams: downloaded apart, remuxed into one file.
    Pair { video: Format, audio: Format },
    /// One file, used as it is.
    Single(Format),
}

impl Plan {
    /// Reads the choice from yt-dlp's info JSON. A choice without video (a presentation with
    /// audio only, where yt-dlp's last resort `b` settles for it) is refused here.
    pub fn from_info(info: &Value, url: &str) -> Result<Self, FetchError> {
        let has_video = |f: &Value| f["vcodec"].as_str() != Some("none");
        match info["requested_formats"].as_array().map(Vec::as_slice) {
            Some([a, b]) => {
                let (video, audio) = if has_video(a) { (a, b) } else { (b, a) };
                if !has_video(video) {
                    return Err(FetchError::AudioOnly { url: url.to_string() });
                }
                Ok(Self::Pair { video: format(video)?, audio: format(audio)? })
            }
            Some(other) => Err(FetchError::YtDlp(format!("expected one video and one audio format, yt-dlp chose {}", other.len()))),
            None if has_video(info) => Ok(Self::Single(format(info)?)),
            None => Err(FetchError::AudioOnly { url: url.to_string() }),
        }
    }

    fn formats(&self) -> Vec<&Format> {
        match self {
            Self::Pair { video, audio } => vec![video, audio],
            Self::Single(f) => vec![f],
        }
    }

    /// The bytes the site announces, if it announces every part.
    pub fn size(&self) -> Option<f64> {
        self.formats().iter().map(|f| f.size).sum()
    }
}

fn format(f: &Value) -> Result<Format, FetchError> {
    let id = f["format_id"].as_str().ok_or_else(|| FetchError::YtDlp("a chosen format has no format_id".into()))?;
    let size = f["filesize"].as_f64().or_else(|| f["filesize_approx"].as_f64());
    let weight = size.or_else(|| f["tbr"].as_f64()).filter(|w| *w > 0.0).unwrap_or(1.0);
    Ok(Format { id: id.to_string(), size, weight })
}

/// Folds each format's own progress into one fraction of the whole download, weighted by size
/// (or bitrate), never going back (estimates of fragmented downloads grow as they go).
pub(super) struct Progress {
    parts: Vec<(String, f64, f64)>,
    reported: f64,
}

impl Progress {
    pub fn new(plan: &Plan) -> Self {
        let parts = plan.formats().iter().map(|f| (f.id.clone(), f.weight, 0.0)).collect();
        Self { parts, reported: 0.0 }
    }

    /// Takes one of yt-dlp's progress objects for `id`; returns the overall fraction.
    pub fn update(&mut self, id: &str, p: &Value) -> f64 {
        let done = p["downloaded_bytes"].as_f64().unwrap_or(0.0);
        let total = p["total_bytes"].as_f64().or_else(|| p["total_bytes_estimate"].as_f64()).unwrap_or(0.0);
        let fraction = if p["status"] == "finished" {
            1.0
        } else if total > 0.0 {
            done / total
        } else {
            let (i, n) = (p["fragment_index"].as_f64().unwrap_or(0.0), p["fragment_count"].as_f64().unwrap_or(0.0));
            if n > 0.0 { i / n } else { 0.0 }
        };
        if let Some(part) = self.parts.iter_mut().find(|(pid, ..)| pid == id) {
            part.2 = fraction.clamp(0.0, 1.0);
        }
        let all: f64 = self.parts.iter().map(|(_, w, _)| w).sum();
        let now = self.parts.iter().map(|(_, w, f)| w * f).sum::<f64>() / all.max(f64::MIN_POSITIVE);
        self.reported = self.reported.max(now.min(1.0));
        self.reported
    }
}

impl Fetcher {
    pub(super) async fn ytdlp(&self, url: &url::Url, dir: &Path, on_progress: &(dyn Fn(f64) + Send + Sync)) -> Result<Fetched, FetchError> {
        let info_path = dir.join(super::INFO_JSON);
        let plan = self.plan(url, &info_path).await?;
        if plan.size().is_some_and(|n| n > self.config.max_bytes as f64) {
            return Err(FetchError::TooLarge { max: self.config.max_bytes });
        }
        let template = match plan {
            Plan::Pair { .. } => "stream.f%(format_id)s.%(ext)s",
            Plan::Single(_) => "source.%(ext)s",
        };
        // A pair's downloads are the first REMUX_SHARE of the fetch's progress, its remux the rest.
        let share = if matches!(plan, Plan::Pair { .. }) { 1.0 - REMUX_SHARE } else { 1.0 };
        let downloads = |f: f64| on_progress(f * share);
        let files = self.download_formats(url, &info_path, &plan, dir.join(template), &downloads).await?;
        let mut total = 0;
        for file in &files {
            total += tokio::fs::metadata(file).await.map_err(|source| FetchError::Io { path: file.clone(), source })?.len();
        }
        // Segmented downloads announce no size, so --max-filesize cannot stop them: count here.
        if total > self.config.max_bytes {
            return Err(FetchError::TooLarge { max: self.config.max_bytes });
        }
        let path = match (&plan, files.as_slice()) {
            (Plan::Pair { .. }, [video, audio]) => {
                let out = dir.join("source.mp4");
                // Dropping this future (the fetch timeout) cancels the remux through the guard.
                let (tx, mut remuxed) = tokio::sync::mpsc::unbounded_channel();
                let ctl = Control::with_progress(move |f| {
                    let _ = tx.send(f);
                });
                let _stop = ctl.cancel.clone().drop_guard();
                // MP4, or Matroska for codecs mp4mux cannot take (VP9, Vorbis): the extension says.
                let mut remux = std::pin::pin!(self.engine.remux(video, audio, &out, ctl));
                let joined = loop {
                    tokio::select! {
                        joined = &mut remux => break joined.map_err(FetchError::Remux)?,
                        Some(f) = remuxed.recv() => on_progress(share + REMUX_SHARE * f),
                    }
                };
                on_progress(1.0);
                for file in [video, audio] {
                    let _ = tokio::fs::remove_file(file).await;
                }
                joined.path
            }
            _ => files.into_iter().next().expect("a single download has one file"),
        };
        // The info JSON stays beside the source (and so in the cache): the page's title,
        // chapters and heatmap for scoring.
        let meta = SourceMeta::load(&info_path).await;
        Ok(Fetched { path, via: "yt-dlp", cached: false, meta })
    }

    /// The first run: extract, choose, write the info JSON, refuse what cannot be used.
    async fn plan(&self, url: &url::Url, info_path: &Path) -> Result<Plan, FetchError> {
        // `--`: the URL is a tenant's, and nothing it holds may read as an option.
        // `--flat-playlist`: a playlist (refused here) is listed, not extracted entry by entry.
        let args: Vec<OsString> =
            ["-J", "--no-playlist", "--flat-playlist", "-f", &selector(self.config.max_height), "--", url.as_str()].map(OsString::from).into();
        let mut json = String::new();
        let (status, errors) = self.run(&args, |line| json.push_str(line)).await?;
        if !status.success() {
            return Err(classify_ytdlp(url, &errors));
        }
        let info: Value = serde_json::from_str(&json).map_err(|e| FetchError::YtDlp(format!("unreadable info json: {e}")))?;
        if let Some(list) = super::playlist::listing(&info, url.as_str()) {
            return Err(FetchError::Playlist { url: url.to_string(), entries: list.entries.len() });
        }
        if info["duration"].as_f64().is_some_and(|d| d > self.config.max_duration_s as f64) {
            return Err(FetchError::TooLong { max: self.config.max_duration_s });
        }
        let plan = Plan::from_info(&info, url.as_str())?;
        tokio::fs::write(info_path, json).await.map_err(|source| FetchError::Io { path: info_path.to_path_buf(), source })?;
        tracing::info!(url = %url, plan = ?plan, "yt-dlp formats chosen");
        Ok(plan)
    }

    /// The second run: downloads the chosen formats; returns their files in the plan's order
    /// (video first), failing if yt-dlp did not finish every one of them.
    async fn download_formats(
        &self,
        url: &url::Url,
        info_path: &Path,
        plan: &Plan,
        template: PathBuf,
        on_progress: &(dyn Fn(f64) + Send + Sync),
    ) -> Result<Vec<PathBuf>, FetchError> {
        let ids: Vec<&str> = plan.formats().iter().map(|f| f.id.as_str()).collect();
        let mut args: Vec<OsString> = vec!["--load-info-json".into(), info_path.into(), "-f".into(), ids.join(",").into()];
        for arg in ["--no-part", "--force-overwrites", "--newline", "--fixup", "never", "--max-filesize"] {
            args.push(arg.into());
        }
        args.push(self.config.max_bytes.to_string().into());
        args.push("--progress-template".into());
        args.push(format!(r#"download:{PROGRESS_MARK}{{"id":%(info.format_id)j,"p":%(progress)j}}"#).into());
        args.push("-o".into());
        args.push(template.into());

        let mut progress = Progress::new(plan);
        let mut finished: Vec<(String, PathBuf)> = Vec::new();
        let mut too_large = false;
        let dir = info_path.parent().unwrap_or(Path::new("."));
        let (status, errors) = self
            .run(&args, |line| {
                // yt-dlp skips a format past --max-filesize with a message, not an error.
                too_large |= line.contains("larger than max-filesize");
                let Some(json) = line.strip_prefix(PROGRESS_MARK) else { return };
                let Ok(line) = serde_json::from_str::<Value>(json) else { return };
                let id = line["id"].as_str().unwrap_or_default();
                on_progress(progress.update(id, &line["p"]));
                if line["p"]["status"] == "finished"
                    && let Some(file) = line["p"]["filename"].as_str()
                {
                    finished.push((id.to_string(), dir.join(Path::new(file).file_name().unwrap_or_default())));
                }
            })
            .await?;
        if !status.success() {
            return Err(classify_ytdlp(url, &errors));
        }
        if too_large {
            return Err(FetchError::TooLarge { max: self.config.max_bytes });
        }
        ids.iter()
            .map(|id| {
                let file = finished.iter().find(|(fid, path)| fid == id && path.is_file());
                file.map(|(_, path)| path.clone())
                    .ok_or_else(|| FetchError::YtDlp(format!("yt-dlp exited without delivering format {id}")))
            })
            .collect()
    }

    /// Runs yt-dlp with `args` and every connection through the guarded proxy, handing each stdout line to `on_line`; returns how it exited and
    /// its `ERROR` lines. The child dies with the future (`kill_on_drop`).
    pub(super) async fn run(&self, args: &[OsString], mut on_line: impl FnMut(&str)) -> Result<(ExitStatus, String), FetchError> {
        let proxy = self.proxy_url().await?;
        // Before `args`, which may end with `--` and the URL.
        let mut child = tokio::process::Command::new(&self.config.ytdlp)
            .arg("--proxy")
            .arg(proxy)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| FetchError::YtDlp(format!("cannot run {}: {e}", self.config.ytdlp.display())))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let errors = crate::task::spawn_named("ytdlp-stderr", async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("ERROR") {
                    kept.push(line);
                }
            }
            kept.join("; ")
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
        }
        let status = child.wait().await.map_err(|e| FetchError::YtDlp(e.to_string()))?;
        Ok((status, errors.await.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_selector_prefers_separate_h264_then_vp9_then_av1_then_one_file() {
        let s = selector(720);
        let order: Vec<_> = ["avc1|h264)']+(ba[acodec^=mp4a]/ba[acodec^=opus]/ba)", "vp0?9", "av01", "b[height<=720][vcodec", "b[height<=720]/b"]
            .iter()
            .map(|part| s.find(part).unwrap_or_else(|| panic!("{part} in {s}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
        assert!(s.starts_with("bv[height<=720]"), "{s}");
        assert!(!s.contains(','), "a comma would download an audio half alone: {s}");
    }

    #[test]
    fn a_pair_is_read_video_first_whatever_the_order() {
        let info = json!({"format_id": "a+v", "requested_formats": [
            {"format_id": "a", "vcodec": "none", "acodec": "mp4a.40.2", "tbr": 128.0},
            {"format_id": "v", "vcodec": "avc1.640028", "acodec": "none", "filesize": 9000.0},
        ]});
        let plan = Plan::from_info(&info, "u").unwrap();
        let Plan::Pair { video, audio } = &plan else { panic!("{plan:?}") };
        assert_eq!((video.id.as_str(), audio.id.as_str()), ("v", "a"));
        assert_eq!((video.weight, audio.weight), (9000.0, 128.0));
        assert_eq!(plan.size(), None, "the audio's size is unknown");
    }

    #[test]
    fn audio_alone_is_refused_and_unknown_codecs_count_as_video() {
        let audio = json!({"format_id": "a", "vcodec": "none", "acodec": "mp4a.40.2"});
        assert!(matches!(Plan::from_info(&audio, "u"), Err(FetchError::AudioOnly { .. })));
        // A plain <video src> page: yt-dlp knows nothing of the codecs.
        let page = json!({"format_id": "0", "url": "http://x/v.mp4", "filesize": 10.0});
        assert_eq!(Plan::from_info(&page, "u").unwrap().size(), Some(10.0));
    }

    #[test]
    fn progress_is_one_fraction_over_both_downloads_and_never_goes_back() {
        let video = Format { id: "v".into(), size: None, weight: 300.0 };
        let audio = Format { id: "a".into(), size: None, weight: 100.0 };
        let mut p = Progress::new(&Plan::Pair { video, audio });
        assert_eq!(p.update("v", &json!({"downloaded_bytes": 50, "total_bytes": 100})), 0.375);
        // A growing estimate would move a fragmented download back; the report holds.
        assert_eq!(p.update("v", &json!({"downloaded_bytes": 60, "total_bytes_estimate": 200})), 0.375);
        assert_eq!(p.update("v", &json!({"status": "finished"})), 0.75);
        assert_eq!(p.update("a", &json!({"fragment_index": 2, "fragment_count": 4})), 0.875);
        assert_eq!(p.update("a", &json!({"status": "finished", "downloaded_bytes": 5, "total_bytes": 5})), 1.0);
    }
}
