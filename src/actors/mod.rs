//! The server's actor tree (ractor):
//!
//! ```text
//! Supervisor ─┬─ StagePool × 7 (download, audio, transcribe, score, faces, render, upload)
//!             ├─ ProgressHub
//!             └─ JobActor × jobs in flight (≤ server.max_jobs_in_flight)
//! ```
//!
//! Bounds: admission stops at `max_jobs_in_flight` (the API answers 429), each stage pool takes
//! `stage_pool::QUEUE_CAPACITY` pieces of work before senders wait, the hub's fan-out holds
//! `progress_hub::FANOUT_CAPACITY` events per subscriber and replays `REPLAY_CAPACITY`.

pub mod job;
pub mod messages;
pub mod progress_hub;
pub mod stage_pool;
pub mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::ActorRef;

use crate::job::{Stage, TenantId};
use crate::metrics::Metrics;
use crate::persist::{EmbeddedStore, LocalBlobs};
use crate::pipeline::Services;
use messages::{EventKind, HubMessage};
use stage_pool::StagePoolRef;

/// What every actor and route shares: services, stores, pools, the hub, metrics.
pub struct ServerCtx {
    pub services: Arc<Services>,
    pub store: EmbeddedStore,
    pub blobs: LocalBlobs,
    pub pools: HashMap<Stage, StagePoolRef>,
    pub hub: ActorRef<HubMessage>,
    pub metrics: Arc<Metrics>,
    /// Per-job working files, under deterministic names.
    pub jobs_dir: PathBuf,
    pub uploads_dir: PathBuf,
    pub http: reqwest::Client,
    pub secret: Vec<u8>,
}

impl ServerCtx {
    pub fn pool(&self, stage: Stage) -> &StagePoolRef {
        &self.pools[&stage]
    }

    pub fn publish(&self, job: crate::job::JobId, tenant: &TenantId, kind: EventKind) {
        let _ = self.hub.send_message(HubMessage::Publish { job, tenant: tenant.clone(), kind: Box::new(kind) });
    }

    pub fn url_ttl(&self) -> u64 {
        self.services.config.server.url_ttl_s
    }
}
