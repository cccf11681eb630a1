//! This node's part in a cluster: several nodes sharing Redis, Postgres and S3 (no home-made
//! cluster), or one node alone, a cluster of one over the queue and bus in its own process. Its
//! role, the queue and event bus, and the job actors running here.
//!
//! - Jobs wait at a stage in the queue (a Redis stream per stage, or `MemoryQueue`); the stage
//!   consumers claim them (`actors::stage_consumer`), the job's actor runs one stage, and the
//!   next is queued.
//! - On a shared bus events go out in publication order (one publisher task per node) and come
//!   back to every node's `ProgressHub`, so a watcher on any node sees work done on all of them;
//!   alone they go straight to the hub (`ServerCtx::publish`).
//! - Cancels travel on the bus too; whoever runs the job stops it.
//! - The job store is the source of truth: if the queue starts empty (Redis restarted without
//!   persistence, or this process started), the first node to notice queues every unfinished job
//!   again at the stage it had reached.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{ActorId, ActorRef};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actors::messages::{Event, EventKind, HubMessage, JobMessage};
use crate::actors::stage_consumer::{Slot, Slots};
use crate::config::Config;
use crate::job::{JobId, JobRecord, JobStatus, Stage, StageStatus, TenantId};
use crate::persist::{Bus, BusMessage, Delivery, EventBus, JobQueue, JobStore, MemoryBus, MemoryQueue, Queue, RedisBus, RedisQueue, StoreError, WorkItem};

/// What a node does: `api` takes requests and watchers, `worker` runs stages, `all` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Api,
    Worker,
    All,
}

impl Role {
    pub fn serves_api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }

    pub fn runs_stages(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

/// What the publisher task is handed: an event, or a barrier answered once everything queued
/// before it is on the bus.
pub enum Outgoing {
    Event(JobId, TenantId, Box<EventKind>),
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Events waiting for the publisher task; past this, progress events are dropped (the next one
/// supersedes them) and others wait.
const PUBLISH_BACKLOG: usize = 8192;
/// The one node's name when nothing is shared (as `/readyz` and the overview say without a cluster).
pub const EMBEDDED_NODE: &str = "embedded";
/// Cancels remembered for jobs not running here yet (a claim racing the cancel).
const RECENT_CANCELS: usize = 4096;

pub struct Cluster {
    pub node: String,
    pub role: Role,
    pub queue: Queue,
    pub bus: Bus,
    pub lease: Duration,
    publisher: mpsc::Sender<Outgoing>,
    /// The job actors on this node.
    jobs: Mutex<JobActors>,
    /// Each stage's slots on this node, from its consumer.
    slots: Mutex<HashMap<Stage, Arc<Slots>>>,
    /// The deliveries this node is working on, whose leases `renew_leases` keeps.
    held: Mutex<HashMap<u64, Delivery>>,
    next_held: AtomicU64,
    cancelled: Mutex<(VecDeque<JobId>, HashSet<JobId>)>,
}

impl Cluster {
    /// This node's share of the Redis queue and bus.
    pub async fn connect(config: &Config, role: Role) -> Result<(Cluster, mpsc::Receiver<Outgoing>), StoreError> {
        let node = node_name();
        let queue = Queue::Redis(RedisQueue::connect(&config.redis, &node).await?);
        let bus = Bus::Redis(Box::new(RedisBus::connect(&config.redis).await?));
        Ok(Self::with(node, role, queue, bus, config))
    }

    /// One node alone: the queue and bus in this process, with Redis's lease and delivery limits.
    pub fn in_process(config: &Config) -> (Cluster, mpsc::Receiver<Outgoing>) {
        let lease = Duration::from_secs(config.redis.lease_s);
        let queue = Queue::InProcess(Box::new(MemoryQueue::new(lease, config.redis.max_deliveries)));
        Self::with(EMBEDDED_NODE.into(), Role::All, queue, Bus::InProcess(MemoryBus::default()), config)
    }

    fn with(node: String, role: Role, queue: Queue, bus: Bus, config: &Config) -> (Cluster, mpsc::Receiver<Outgoing>) {
        let (publisher, events) = mpsc::channel(PUBLISH_BACKLOG);
        let cluster = Cluster {
            node,
            role,
            queue,
            bus,
            lease: Duration::from_secs(config.redis.lease_s),
            publisher,
            jobs: Mutex::default(),
            slots: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            next_held: AtomicU64::new(0),
            cancelled: Mutex::new((VecDeque::new(), HashSet::new())),
        };
        (cluster, events)
    }

    /// Queues an event for the bus, keeping this node's publication order.
    pub fn publish(&self, job: JobId, tenant: &TenantId, kind: EventKind) {
        match self.publisher.try_send(Outgoing::Event(job, tenant.clone(), Box::new(kind))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Outgoing::Event(_, _, kind))) if kind.is_progress() => {
                tracing::debug!(job = %job, "event backlog full; progress event dropped");
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                let publisher = self.publisher.clone();
                crate::task::spawn_named("bus-publish-wait", async move {
                    let _ = publisher.send(event).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Waits until every event this node published so far is on the bus. A stage run calls it
    /// before handing the job on, so the job's events stay in order when the next stage runs
    /// on another node.
    pub async fn flush_events(&self) {
        let (done, published) = tokio::sync::oneshot::channel();
        if self.publisher.send(Outgoing::Barrier(done)).await.is_ok() {
            let _ = published.await;
        }
    }

    /// A new job actor's cancel token: already fired when the job was cancelled before it came.
    pub fn cancel_token(&self, job: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        if self.cancelled.lock().expect("cancel set").1.contains(&job) {
            token.cancel();
        }
        token
    }

    /// Records `actor` as the one running `job` on this node.
    pub fn register(&self, job: JobId, actor: ActorRef<JobMessage>, cancel: CancellationToken) {
        let mut jobs = self.jobs.lock().expect("job actors");
        jobs.by_actor.insert(actor.get_id(), job);
        if let Some(replaced) = jobs.by_job.insert(job, Local { actor, cancel }) {
            jobs.by_actor.remove(&replaced.actor.get_id());
        }
    }

    /// The actor running `job` on this node, if any.
    pub fn job_actor(&self, job: JobId) -> Option<ActorRef<JobMessage>> {
        self.jobs.lock().expect("job actors").by_job.get(&job).map(|local| local.actor.clone())
    }

    /// Removes `actor` from the registry, unless another actor has taken `job` over since.
    pub fn forget(&self, job: JobId, actor: ActorId) {
        let mut jobs = self.jobs.lock().expect("job actors");
        jobs.by_actor.remove(&actor);
        if jobs.by_job.get(&job).is_some_and(|local| local.actor.get_id() == actor) {
            jobs.by_job.remove(&job);
        }
    }

    /// Removes a job actor that stopped or failed; the job it ran, if it was one.
    pub fn forget_actor(&self, actor: ActorId) -> Option<JobId> {
        let job = self.jobs.lock().expect("job actors").by_actor.get(&actor).copied()?;
        self.forget(job, actor);
        Some(job)
    }

    /// Records the slots of `stage` on this node (its consumer's, started or restarted).
    pub fn set_slots(&self, stage: Stage, slots: Arc<Slots>) {
        self.slots.lock().expect("stage slots").insert(stage, slots);
    }

    /// A free slot of `stage` on this node, if there is one.
    pub fn free_slot(&self, stage: Stage) -> Option<Slot> {
        self.slots.lock().expect("stage slots").get(&stage)?.try_take()
    }

    /// Keeps `delivery`'s lease renewed until the returned guard is dropped.
    pub fn hold(&self, delivery: &Delivery) -> Held<'_> {
        let key = self.next_held.fetch_add(1, Ordering::Relaxed);
        self.held.lock().expect("held deliveries").insert(key, delivery.clone());
        Held { cluster: self, key }
    }

    /// A cancel heard on the bus: stop the job if it runs here, and remember it in case a claim
    /// of it is on its way.
    pub fn cancel_local(&self, job: JobId) {
        {
            let mut recent = self.cancelled.lock().expect("cancel set");
            if recent.1.insert(job) {
                recent.0.push_back(job);
                if recent.0.len() > RECENT_CANCELS
                    && let Some(old) = recent.0.pop_front()
                {
                    recent.1.remove(&old);
                }
            }
        }
        if let Some(local) = self.jobs.lock().expect("job actors").by_job.get(&job) {
            local.cancel.cancel();
            let _ = local.actor.send_message(JobMessage::Cancel);
        }
    }

    /// The jobs with an actor on this node.
    pub fn running_jobs(&self) -> Vec<JobId> {
        self.jobs.lock().expect("job actors").by_job.keys().copied().collect()
    }

    /// How many job actors this node has.
    pub fn job_actors(&self) -> usize {
        self.jobs.lock().expect("job actors").by_job.len()
    }
}

/// A delivery this node works on: its lease is renewed until this is dropped.
pub struct Held<'a> {
    cluster: &'a Cluster,
    key: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.cluster.held.lock().expect("held deliveries").remove(&self.key);
    }
}

/// The job actors on this node, by job and by actor (a supervision event names the actor).
#[derive(Default)]
struct JobActors {
    by_job: HashMap<JobId, Local>,
    by_actor: HashMap<ActorId, JobId>,
}

/// A job's actor on this node, and the token that stops its stages.
struct Local {
    actor: ActorRef<JobMessage>,
    cancel: CancellationToken,
}

/// The stage a job should be queued at to carry on: the first one not done.
pub fn resume_stage(record: &JobRecord) -> Stage {
    Stage::ALL.iter().copied().find(|&s| record.stage(s).status != StageStatus::Done).unwrap_or(Stage::Upload)
}

/// Publishes this node's events on the bus, in order, retrying while Redis is away.
pub async fn publish_events(ctx: std::sync::Arc<crate::actors::ServerCtx>, mut events: mpsc::Receiver<Outgoing>) {
    let c = &ctx.cluster;
    while let Some(outgoing) = events.recv().await {
        let (job, tenant, kind) = match outgoing {
            Outgoing::Event(job, tenant, kind) => (job, tenant, *kind),
            Outgoing::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let value = serde_json::to_value(&kind).expect("events serialise");
        let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            match c.bus.publish(job, &tenant, value.clone()).await {
                Ok(_) => break,
                Err(e) if !kind.is_progress() => {
                    tracing::warn!(job = %job, error = %e, "event bus unavailable; retrying");
                    backoff.wait().await;
                }
                Err(_) => break,
            }
        }
    }
}

/// Feeds what the bus carries into this node's hub (events) and running work (cancels).
pub async fn bridge_bus(ctx: std::sync::Arc<crate::actors::ServerCtx>) {
    let c = &ctx.cluster;
    let mut messages = c.bus.subscribe();
    while let Some(message) = messages.recv().await {
        match message {
            BusMessage::Event(e) => match serde_json::from_value::<EventKind>(e.kind) {
                Ok(kind) => {
                    let event = Event::new(e.id, e.job, e.tenant, e.ts_ms, kind);
                    if ctx.hub.send(HubMessage::Deliver(std::sync::Arc::new(event))).is_err() {
                        tracing::warn!(job = %e.job, "progress hub is restarting; event not delivered here");
                    }
                }
                Err(err) => tracing::warn!(job = %e.job, error = %err, "unreadable event on the bus"),
            },
            BusMessage::Cancel(job) => c.cancel_local(job),
        }
    }
}

/// Renews the lease of every delivery this node works on, a few times per lease period: one
/// timer for the node, not one per delivery (each of those woke the runtime's driver).
pub async fn renew_leases(ctx: std::sync::Arc<crate::actors::ServerCtx>) {
    let c = &ctx.cluster;
    let mut tick = tokio::time::interval(c.lease / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held: Vec<(u64, Delivery)> = c.held.lock().expect("held deliveries").iter().map(|(k, d)| (*k, d.clone())).collect();
        let renewals = held.iter().map(|(key, delivery)| async move {
            let renewed = c.queue.heartbeat(delivery).await;
            // A delivery finished since the list was taken has no lease to renew.
            if let Err(e) = renewed
                && c.held.lock().expect("held deliveries").contains_key(key)
            {
                tracing::warn!(job = %delivery.item.job, error = %e, "lease heartbeat failed");
            }
        });
        futures_util::future::join_all(renewals).await;
    }
}

/// Keeps this node in rotation, and re-queues every unfinished job when Redis comes back empty.
pub async fn housekeeping(ctx: std::sync::Arc<crate::actors::ServerCtx>, node_ttl: Duration) {
    let c = &ctx.cluster;
    let mut tick = tokio::time::interval((node_ttl / 3).max(Duration::from_millis(200)));
    loop {
        tick.tick().await;
        if let Err(e) = c.bus.heartbeat_node(&c.node, node_ttl).await {
            tracing::warn!(node = %c.node, error = %e, "node heartbeat failed");
            continue;
        }
        // Whichever node notices first, API nodes too: one that started before any worker must
        // claim the queue's new life, or the first worker would queue its jobs a second time.
        match c.queue.claim_epoch().await {
            Ok(true) => requeue_unfinished(&ctx).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check the queue's epoch"),
        }
    }
}

/// The queue started empty (first start, a Redis that lost its data, or an in-process queue's
/// process start): queue every unfinished job again at the stage it reached. Stages are
/// idempotent, so a job that was also still queued is harmless.
async fn requeue_unfinished(ctx: &crate::actors::ServerCtx) {
    let c = &ctx.cluster;
    let jobs = match ctx.store.unfinished().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "cannot list unfinished jobs to re-queue them");
            return;
        }
    };
    let mut queued = 0;
    // Waiting batch entries are Admission's to release, in turn.
    for record in jobs.iter().filter(|r| r.status != JobStatus::Waiting) {
        let item = WorkItem { job: record.id, stage: resume_stage(record) };
        match c.queue.push(item).await {
            Ok(()) => queued += 1,
            Err(e) => tracing::error!(job = %record.id, error = %e, "cannot re-queue job"),
        }
    }
    tracing::warn!(jobs = queued, queue = c.queue.kind(), "queue was empty (new, or restarted): unfinished jobs re-queued");
}

fn node_name() -> String {
    format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "node".into())
}
