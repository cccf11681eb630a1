//! Messages between the server's actors, and the progress events clients receive.

use std::sync::Arc;

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use super::job::Stepped;
use super::stage_consumer::Slot;
use crate::job::{ClipRecord, JobError, JobId, JobRecord, Stage, StageState, TenantId};
use crate::persist::Delivery;

/// A progress event as clients see it; `id` increases across the whole server.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: u64,
    pub job: JobId,
    #[serde(skip)]
    pub tenant: TenantId,
    pub ts_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
    /// The event as JSON, made once by whichever socket sends it first and shared by the rest.
    #[serde(skip)]
    json: std::sync::OnceLock<Box<str>>,
}

impl Event {
    pub fn new(id: u64, job: JobId, tenant: TenantId, ts_ms: u64, kind: EventKind) -> Self {
        Self { id, job, tenant, ts_ms, kind, json: std::sync::OnceLock::new() }
    }

    /// The event as clients receive it.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(self).expect("events serialise").into())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    StageStarted { stage: Stage },
    StageProgress { stage: Stage, progress: f64 },
    StageFinished { stage: Stage },
    /// Boxed: a clip record is much larger than the other events.
    ClipReady { clip: Box<ClipRecord>, urls: ClipUrls },
    JobDone,
    JobFailed { error: JobError },
    JobCancelled,
}

impl EventKind {
    /// Progress events may be coalesced for a slow client: only the newest per stage matters.
    pub fn is_progress(&self) -> bool {
        matches!(self, Self::StageProgress { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipUrls {
    pub mp4: String,
    pub srt: Option<String>,
    pub vtt: Option<String>,
    #[serde(default)]
    pub edit: Option<String>,
}

/// Which events a subscriber gets: its tenant's, of every job or only of the jobs given (one
/// job, or a batch's).
#[derive(Debug, Clone)]
pub struct Watch {
    pub tenant: TenantId,
    pub jobs: Option<Arc<std::collections::HashSet<JobId>>>,
}

impl Watch {
    pub fn sees(&self, event: &Event) -> bool {
        event.tenant == self.tenant && self.jobs.as_ref().is_none_or(|jobs| jobs.contains(&event.job))
    }
}

/// What a subscriber gets: events it missed (when they are still in the replay buffer), or a
/// flag saying it must start from a fresh snapshot, and the live stream from then on.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub needs_snapshot: bool,
    pub live: tokio::sync::broadcast::Receiver<Arc<Event>>,
}

pub enum HubMessage {
    /// An event of this node alone (the bus is in this process): the hub gives it its id.
    /// `ts_ms` is when the job reported it, so the time it waits for the hub counts in its
    /// delivery latency.
    Publish { job: JobId, tenant: TenantId, ts_ms: u64, kind: Box<EventKind> },
    /// An event from the cluster's bus, already numbered deployment-wide.
    Deliver(Arc<Event>),
    Subscribe { watch: Watch, last_id: Option<u64>, reply: RpcReplyPort<Subscription> },
}

/// Why a job was not admitted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmitError {
    #[error("server is at capacity ({0} jobs in flight)")]
    Full(usize),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("job store: {0}")]
    Store(String),
}

pub enum SupervisorMessage {
    /// Admit a new job (already validated); replies once it is persisted and queued.
    Submit { record: Box<JobRecord>, reply: RpcReplyPort<Result<(), AdmitError>> },
    /// Stops a job; replies whether it was running (or waiting, for a batch entry).
    Cancel { job: JobId, reply: RpcReplyPort<bool> },
    /// Entries of a new batch, stored as `waiting`, for admission.
    Enqueue { tenant: TenantId, jobs: Vec<JobId> },
    /// A stage of a job with no actor on this node: start one and hand it the delivery.
    Deliver { delivery: Delivery, slot: Slot },
    InFlight { reply: RpcReplyPort<usize> },
    /// The jobs with an actor on this node (their scratch folders are in use).
    LiveJobs { reply: RpcReplyPort<Vec<JobId>> },
}

pub enum JobMessage {
    /// Run a stage of the job (a delivery from the stage's queue), holding the consumer's slot
    /// until it ends.
    Run(Delivery, Slot),
    /// A stage's task ended, handing the job's run back.
    Stepped(Box<Stepped>),
    /// The job's stages as they are now: as last saved, with the progress reported since.
    Status(RpcReplyPort<Vec<StageState>>),
    Cancel,
}
