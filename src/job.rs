//! The job domain shared by the server's actors, API and stores: what a job asks for, where it
//! stands, and what it produced. Plain data, serialisable, no behaviour beyond small helpers.

use serde::{Deserialize, Serialize};

use crate::edit::Size;

mod batch;
pub mod usage;
pub use batch::{BatchEntry, BatchRecord, Playlist, PlaylistEntry};
pub use usage::{Cost, StageUsage};

/// A job's id: a UUIDv7, so ids sort by creation time (cursor paging relies on that).
pub type JobId = uuid::Uuid;

pub fn new_job_id() -> JobId {
    uuid::Uuid::now_v7()
}

/// The tenant an API key maps to; every record and event is scoped by it.
pub type TenantId = String;

/// The stages a job goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Download,
    Audio,
    Transcribe,
    Score,
    Faces,
    Render,
    Upload,
}

impl Stage {
    pub const ALL: [Stage; 7] =
        [Stage::Download, Stage::Audio, Stage::Transcribe, Stage::Score, Stage::Faces, Stage::Render, Stage::Upload];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Audio => "audio",
            Stage::Transcribe => "transcribe",
            Stage::Score => "score",
            Stage::Faces => "faces",
            Stage::Render => "render",
            Stage::Upload => "upload",
        }
    }
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A URL to fetch, or an upload made earlier through `POST /api/uploads`.
    pub source: Source,
    pub options: JobOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Url(String),
    Upload(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    pub clips: usize,
    pub min_len: f64,
    pub max_len: f64,
    pub size: Size,
    pub mode: Reframe,
    /// The clips' caption style: config.toml's `[captions]` with the request's choices over it.
    /// Records written before styles existed hold `true` or `false`.
    #[serde(deserialize_with = "style_or_switch")]
    pub captions: crate::edit::CaptionStyle,
    pub webhook: Option<String>,
    /// What the LLM scorer should look for ("find the funny moments"), bounded and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
}

/// A stored `captions` option: a style, or the bool of older records (the default style on or off).
fn style_or_switch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<crate::edit::CaptionStyle, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Switch(bool),
        Style(crate::edit::CaptionStyle),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Switch(enabled) => crate::edit::CaptionStyle { enabled, ..Default::default() },
        Stored::Style(style) => style,
    })
}

/// How clips are reframed, as asked by the user; the clip's EDIT.json records what was chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Reframe {
    /// Per clip, from what was seen: track one speaker, split two in quick exchange, or fit the
    /// whole frame when no face is confirmed.
    #[default]
    Auto,
    /// Follow the active speaker (a centred crop when no face is confirmed).
    Track,
    /// Two faces, each in its own panel (track when fewer than two are in view).
    Split,
    /// The whole frame over a blurred copy of itself.
    Fit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// An entry of a batch, held until admission releases it (`actors::admission`).
    Waiting,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// Its serde name, which `parse` reads back.
    pub fn name(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Pending,
    Running,
    Done,
    Failed,
}

/// One stage's state within a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    pub stage: Stage,
    pub status: StageStatus,
    pub progress: f64,
    pub attempts: u32,
    /// Seconds of wall, CPU and GPU time it used (records made before it was measured: zeros).
    #[serde(default)]
    pub usage: StageUsage,
}

/// A finished clip, as stored and announced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    pub index: usize,
    pub start: f64,
    pub end: f64,
    pub score: f64,
    pub title: String,
    pub scorer: String,
    /// Why the scorer chose it ("most replayed (…)", "opens with a question", the LLM's words).
    #[serde(default)]
    pub reason: String,
    /// Sub-scores and total (`total == score`); records made before they existed hold zeros.
    #[serde(default)]
    pub scores: Scores,
    /// Blob keys of the mp4 and its sidecars.
    pub mp4: String,
    pub srt: Option<String>,
    pub vtt: Option<String>,
    /// The clip's EDIT.json (records made before it was kept have none).
    #[serde(default)]
    pub edit: Option<String>,
    pub fallbacks: Vec<String>,
}

/// A clip's sub-scores, each 0..10, and the total it was ranked by. The LLM scorer gives its
/// own; the heuristic derives them from its features (see `analysis::score`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub hook: f64,
    pub flow: f64,
    pub payoff: f64,
    pub total: f64,
}

impl Scores {
    /// Every part the same as the total: for windows chosen on one signal (the picture).
    pub fn uniform(total: f64) -> Self {
        let t = (total * 100.0).round() / 100.0;
        Self { hook: t, flow: t, payoff: t, total: t }
    }
}

/// What a job's result says of its source, when its page (yt-dlp's info JSON) said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// How many chapters the page lists.
    #[serde(default)]
    pub chapters: usize,
}

/// A source whose data ends before its header says: clips come only from the readable part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Truncation {
    /// The duration the container declares, in seconds.
    pub declared_s: f64,
    /// How much of it could be read, in seconds.
    pub readable_s: f64,
}

/// Why a job failed, for people and programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub stage: Option<Stage>,
}

/// The ways a job fails of its own, beside a stage's error (whose code its module's error type
/// gives): every code a job can end with is either one of these or a stage error's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No window of the asked length fits the source.
    NoClips,
    /// A clip in the record is missing from storage.
    ClipMissing,
    /// The job could not be queued (cluster).
    QueueUnavailable,
    /// A stage was handed out too often without finishing (cluster).
    DeadLetter,
    /// The source would take its tenant past `server.quotas.source_minutes_per_day`.
    QuotaSourceMinutes,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoClips => "no_clips",
            Self::ClipMissing => "clip_missing",
            Self::QueueUnavailable => "queue_unavailable",
            Self::DeadLetter => "dead_letter",
            Self::QuotaSourceMinutes => "quota_source_minutes",
        }
    }
}

impl JobError {
    pub fn new(failure: Failure, message: impl Into<String>, stage: Option<Stage>) -> Self {
        Self { code: failure.code().into(), message: message.into(), stage }
    }
}

/// Everything known about a job; persisted on every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant: TenantId,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub stages: Vec<StageState>,
    pub clips: Vec<ClipRecord>,
    pub fallbacks: Vec<String>,
    /// Set when the source's data ends before its header says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_truncated: Option<Truncation>,
    /// The source's title and uploader, when its page said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_meta: Option<SourceSummary>,
    pub error: Option<JobError>,
    /// The batch this job is an entry of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchId>,
    /// Seconds of source the job took on (what can be read), once probed: a tenant's daily
    /// source minutes are the sum over its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_seconds: Option<f64>,
    /// Bytes of clips and sidecars the job has in storage.
    #[serde(default)]
    pub bytes_stored: u64,
    /// What the job used and cost, per hour of source too; set when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Unix milliseconds.
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl JobRecord {
    pub fn new(id: JobId, tenant: TenantId, spec: JobSpec) -> Self {
        let now = now_ms();
        Self {
            id,
            tenant,
            spec,
            status: JobStatus::Queued,
            stages: Stage::ALL
                .iter()
                .map(|&stage| StageState { stage, status: StageStatus::Pending, progress: 0.0, attempts: 0, usage: StageUsage::default() })
                .collect(),
            clips: Vec::new(),
            fallbacks: Vec::new(),
            source_truncated: None,
            source_meta: None,
            error: None,
            batch: None,
            source_seconds: None,
            bytes_stored: 0,
            cost: None,
            created_ms: now,
            updated_ms: now,
        }
    }

    pub fn stage_mut(&mut self, stage: Stage) -> &mut StageState {
        self.stages.iter_mut().find(|s| s.stage == stage).expect("every stage has a state")
    }

    pub fn stage(&self, stage: Stage) -> &StageState {
        self.stages.iter().find(|s| s.stage == stage).expect("every stage has a state")
    }
}

/// A batch's id: a UUIDv7, like a job's.
pub type BatchId = uuid::Uuid;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
