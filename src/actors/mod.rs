//! The server's actor tree (ractor):
//!
//! ```text
//! Supervisor ─┬─ StagePool × 7 (download, audio, …, upload) ── StageWorker × the stage's concurrency
//!             ├─ ProgressHub
//!             ├─ Admission (batch entries, released fairly; nodes that serve the API)
//!             ├─ StageConsumer × 7 (nodes that run stages: claim from the queue, this process's alone)
//!             └─ JobActor × jobs with a stage on this node (alone: every job in flight,
//!                           ≤ server.max_jobs_in_flight, from its submission)
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
pub mod stage_worker;
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

/// A child actor's current address. Its supervisor puts every new incarnation here, so whoever
/// holds the slot reaches the one that runs now, across restarts.
pub struct ActorSlot<M: ractor::Message>(std::sync::RwLock<Option<ActorRef<M>>>);

#[derive(Debug, thiserror::Error)]
#[error("the actor is not running")]
pub struct ActorGone;

impl<M: ractor::Message> Default for ActorSlot<M> {
    fn default() -> Self {
        Self(std::sync::RwLock::new(None))
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    pub fn set(&self, actor: ActorRef<M>) {
        *self.0.write().expect("actor slot") = Some(actor);
    }

    pub fn get(&self) -> Result<ActorRef<M>, ActorGone> {
        self.0.read().expect("actor slot").clone().ok_or(ActorGone)
    }

    pub fn send(&self, message: M) -> Result<(), ActorGone> {
        self.get()?.send_message(message).map_err(|_| ActorGone)
    }
}

/// What every actor and route shares: services, stores, pools, the hub, metrics.
pub struct ServerCtx {
    pub services: Arc<Services>,
    pub store: Jobs,
    pub blobs: Blobs,
    /// The queue and bus: in this process when the node is alone (a cluster of one), Redis's
    /// when it is one of several.
    pub cluster: Cluster,
    pub pools: HashMap<Stage, StagePoolRef>,
    /// The progress hub (a child of the supervisor, restarted if it fails).
    pub hub: ActorSlot<HubMessage>,
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

    /// Announces an event. On a shared bus it goes out in this node's publication order and comes
    /// back to every node's hub, this one's too. Alone, this node's hub is the bus's only reader:
    /// the event goes to it directly (numbered there), without the bus's round trip.
    pub fn publish(&self, job: crate::job::JobId, tenant: &TenantId, kind: EventKind) {
        if self.cluster.bus.shared() {
            self.cluster.publish(job, tenant, kind);
        } else {
            let _ = self.hub.send(HubMessage::Publish { job, tenant: tenant.clone(), ts_ms: crate::job::now_ms(), kind: Box::new(kind) });
        }
    }

    /// Whether other processes run this node's jobs' stages too: then stage outputs and uploads
    /// go to the blob store, where they can reach them.
    pub fn shares_work(&self) -> bool {
        self.cluster.queue.shared()
    }

    pub fn url_ttl(&self) -> u64 {
        self.services.config.server.url_ttl_s
    }
}
