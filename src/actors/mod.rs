//! The server's actor tree (ractor):
//!
//! ```text
//! Supervisor ─┬─ StagePool × 7 (download, audio, transcribe, score, faces, render, upload)
//!             ├─ ProgressHub
//!             ├─ Admission (batch entries, released fairly; nodes that serve the API)
//!             ├─ JobActor × jobs in flight (≤ server.max_jobs_in_flight)      single node
//!             └─ StageConsumer × 7 (worker nodes of a cluster: claim from Redis)  cluster
//! ```
//!
//! Bounds: admission stops at `max_jobs_in_flight` (the API answers 429), batch entries run at
//! most `server.batches.max_in_flight` at once (the rest wait in the store), each stage pool takes
//! `stage_pool::QUEUE_CAPACITY` pieces of work before senders wait, the hub's fan-out holds
//! `progress_hub::FANOUT_CAPACITY` events per subscriber and replays `REPLAY_CAPACITY`.

pub mod admission;
pub mod cluster;
pub mod job;
pub mod job_run;
pub mod messages;
pub mod progress_hub;
pub mod stage_consumer;
pub mod stage_pool;
pub mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::ActorRef;

use crate::job::{Stage, TenantId};
use crate::metrics::Metrics;
use crate::persist::{Blobs, Jobs};
use crate::pipeline::Services;
use cluster::Cluster;
use messages::{EventKind, HubMessage};
use stage_pool::StagePoolRef;

/// What every actor and route shares: services, stores, pools, the hub, metrics.
pub struct ServerCtx {
    pub services: Arc<Services>,
    pub store: Jobs,
    pub blobs: Blobs,
    /// Set when the queue is shared (Redis): this node is one of several.
    pub cluster: Option<Cluster>,
    pub pools: HashMap<Stage, StagePoolRef>,
    pub hub: ActorRef<HubMessage>,
    pub metrics: Arc<Metrics>,
    /// Per-job working files, under deterministic names.
    pub jobs_dir: PathBuf,
    pub uploads_dir: PathBuf,
    /// For webhooks: keeps to `egress`, like every connection a tenant's URL asks for.
    pub http: reqwest::Client,
    /// Where a tenant's URLs may lead (the SSRF guard).
    pub egress: crate::egress::Policy,
    /// The one drain signal, fired once when shutdown begins: readiness answers 503, intake
    /// refuses new jobs, WebSocket sessions close with 1001 and their `last_id`, consumers claim
    /// nothing more; work already running finishes within the shutdown deadline.
    pub drain: tokio_util::sync::CancellationToken,
    pub secret: Vec<u8>,
}

impl ServerCtx {
    pub fn pool(&self, stage: Stage) -> &StagePoolRef {
        &self.pools[&stage]
    }

    /// Announces an event: to this node's hub, or in a cluster to the bus (which brings it back
    /// to every node's hub, this one included).
    pub fn publish(&self, job: crate::job::JobId, tenant: &TenantId, kind: EventKind) {
        match &self.cluster {
            Some(cluster) => cluster.publish(job, tenant, kind),
            None => {
                let _ = self.hub.send_message(HubMessage::Publish { job, tenant: tenant.clone(), ts_ms: crate::job::now_ms(), kind: Box::new(kind) });
            }
        }
    }

    pub fn url_ttl(&self) -> u64 {
        self.services.config.server.url_ttl_s
    }
}
