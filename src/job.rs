//! The job domain shared by the server's actors, API and stores: what a job asks for, where it
//! stands, and what it produced. Plain data, serialisable, no behaviour beyond small helpers.

use serde::{Deserialize, Serialize};

use crate::edit::Size;

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
    pub captions: bool,
    pub webhook: Option<String>,
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
    /// Blob keys of the mp4 and its sidecars.
    pub mp4: String,
    pub srt: Option<String>,
    pub vtt: Option<String>,
    pub fallbacks: Vec<String>,
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
    pub error: Option<JobError>,
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
                .map(|&stage| StageState { stage, status: StageStatus::Pending, progress: 0.0, attempts: 0 })
                .collect(),
            clips: Vec::new(),
            fallbacks: Vec::new(),
            source_truncated: None,
            error: None,
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
