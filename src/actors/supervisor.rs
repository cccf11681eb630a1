//! `Supervisor`: the root. It starts the stage pools and the hub as its children (restarted if
//! they fail; `ServerCtx` reaches them through their `ActorSlot`s), admits jobs up to the
//! in-flight bound, runs one `JobActor` per job, resumes unfinished jobs at start, and restarts a
//! job actor that fails (panics, or its store writes fail) with capped exponential backoff,
//! failing the job for good past `server.max_restarts`.
//!
//! Batch entries wait for `Admission`, a child that hands them over as `Submit`s; the supervisor
//! forwards it new entries and cancels of jobs it is not running, and restarts it if it fails.
//!
//! In a cluster (Redis configured) jobs are not run by job actors: a submitted job is persisted
//! and queued at its first stage, and on worker nodes the supervisor runs one `StageConsumer`
//! per stage instead (restarted if it fails). Cancels go out on the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::admission::{Admission, AdmissionArgs, AdmissionMessage};
use super::job::{JobActor, JobArgs};
use super::job_run::fail_stored;
use super::messages::{AdmitError, EventKind, JobMessage, SupervisorMessage};
use super::progress_hub::ProgressHub;
use super::stage_consumer::{ConsumerArgs, StageConsumer};
use super::stage_pool::{PoolArgs, StagePool};
use crate::job::{Failure, JobError, JobId, JobRecord, JobStatus, Stage};
use crate::persist::{EventBus, JobQueue, JobStore, WorkItem};

const RESTART_BASE: Duration = Duration::from_millis(500);
const RESTART_CAP: Duration = Duration::from_secs(30);

pub struct Supervisor;

struct Running {
    actor: ActorRef<JobMessage>,
    restarts: u32,
}

pub struct SupervisorState {
    ctx: Arc<ServerCtx>,
    jobs: HashMap<JobId, Running>,
    /// Which job each job actor runs, to find it in O(1) when the actor ends.
    by_actor: HashMap<ractor::ActorId, JobId>,
    restarts: HashMap<JobId, u32>,
    /// Stage consumers (worker nodes of a cluster), by actor id.
    consumers: HashMap<ractor::ActorId, Stage>,
    /// Releases batch entries (on nodes that serve the API).
    admission: Option<ActorRef<AdmissionMessage>>,
    /// The stage pools, by actor id.
    pools: HashMap<ractor::ActorId, Stage>,
    hub: Option<ractor::ActorId>,
    /// The hub's next event id, carried over its restarts.
    hub_numbering: Arc<AtomicU64>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = Arc<ServerCtx>;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, ctx: Arc<ServerCtx>) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            ctx: ctx.clone(),
            jobs: HashMap::new(),
            by_actor: HashMap::new(),
            restarts: HashMap::new(),
            consumers: HashMap::new(),
            admission: None,
            pools: HashMap::new(),
            hub: None,
            hub_numbering: Arc::new(AtomicU64::new(first_event_id())),
        };
        start_hub(&myself, &mut state).await?;
        for stage in Stage::ALL {
            start_pool(&myself, &mut state, stage).await?;
        }
        if ctx.cluster.as_ref().is_none_or(|c| c.role.serves_api()) {
            start_admission(&myself, &mut state).await?;
        }
        if let Some(cluster) = &ctx.cluster {
            // The shared queue holds the work; unfinished jobs resume wherever they are claimed.
            if cluster.role.runs_stages() {
                for stage in Stage::ALL {
                    start_consumer(&myself, &mut state, stage).await?;
                }
            }
            return Ok(state);
        }
        let unfinished = ctx.store.unfinished().await?;
        if !unfinished.is_empty() {
            tracing::info!(jobs = unfinished.len(), "resuming unfinished jobs");
        }
        // Waiting batch entries are Admission's.
        for record in unfinished.into_iter().filter(|r| r.status != JobStatus::Waiting) {
            start_job(&myself, &mut state, record, 0, None).await?;
        }
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: SupervisorMessage, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Submit { record, reply } if state.ctx.cluster.is_some() => {
                if state.ctx.drain.is_cancelled() {
                    let _ = reply.send(Err(AdmitError::ShuttingDown));
                } else {
                    // Off the supervisor's mailbox: admissions are not serialised behind commits.
                    let ctx = state.ctx.clone();
                    crate::task::spawn_named("submit-to-queue", async move {
                        let _ = reply.send(submit_to_queue(&ctx, *record).await);
                    });
                }
            }
            SupervisorMessage::Submit { record, reply } => {
                let limit = state.ctx.services.config.server.max_jobs_in_flight;
                if state.ctx.drain.is_cancelled() {
                    let _ = reply.send(Err(AdmitError::ShuttingDown));
                } else if state.jobs.len() >= limit {
                    let _ = reply.send(Err(AdmitError::Full(limit)));
                } else {
                    // The job actor persists the record, then answers: the supervisor never waits
                    // for a store write, so admissions are not serialised behind commits.
                    start_job(&myself, state, *record, 0, Some(reply)).await?;
                }
            }
            SupervisorMessage::Cancel { job, reply } if state.ctx.cluster.is_some() => {
                let _ = reply.send(cancel_in_cluster(&state.ctx, job).await);
            }
            SupervisorMessage::Cancel { job, reply } => match (state.jobs.get(&job), &state.admission) {
                (Some(running), _) => {
                    let _ = reply.send(running.actor.send_message(JobMessage::Cancel).is_ok());
                }
                // Perhaps a batch entry still waiting: Admission answers.
                (None, Some(admission)) => {
                    let _ = admission.send_message(AdmissionMessage::Cancel { job, reply });
                }
                (None, None) => {
                    let _ = reply.send(false);
                }
            },
            SupervisorMessage::Enqueue { tenant, jobs } => match &state.admission {
                Some(admission) => {
                    let _ = admission.send_message(AdmissionMessage::Enqueue { tenant, jobs });
                }
                None => tracing::error!(entries = jobs.len(), "batch entries created on a node that does not admit them"),
            },
            SupervisorMessage::Restart { job } => {
                let restarts = state.restarts.remove(&job).unwrap_or(0);
                match state.ctx.store.get(job).await {
                    Ok(Some(record)) if !record.status.is_final() => start_job(&myself, state, record, restarts, None).await?,
                    Ok(_) => {}
                    Err(e) => tracing::error!(job = %job, error = %e, "cannot reload job to restart it"),
                }
            }
            SupervisorMessage::InFlight { reply } => {
                let _ = reply.send(in_flight(state).await);
            }
            SupervisorMessage::JobActor { job, reply } => {
                let _ = reply.send(state.jobs.get(&job).map(|running| running.actor.clone()));
            }
            SupervisorMessage::LiveJobs { reply } => {
                let mut live: Vec<JobId> = state.jobs.keys().copied().collect();
                if let Some(cluster) = &state.ctx.cluster {
                    live.extend(cluster.running_jobs());
                }
                let _ = reply.send(live);
            }
        }
        state.ctx.metrics.jobs_in_flight.set(state.jobs.len() as i64);
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<Self::Msg>, event: SupervisionEvent, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(job) = state.by_actor.remove(&cell.get_id()) {
                    state.jobs.remove(&job);
                }
            }
            SupervisionEvent::ActorFailed(cell, error) if state.admission.as_ref().is_some_and(|a| a.get_id() == cell.get_id()) => {
                tracing::error!(error = %error, "admission failed; restarting it");
                tokio::time::sleep(RESTART_BASE).await;
                start_admission(&myself, state).await?;
            }
            SupervisionEvent::ActorFailed(cell, error) if state.hub == Some(cell.get_id()) => {
                tracing::error!(error = %error, "progress hub failed; restarting it");
                tokio::time::sleep(RESTART_BASE).await;
                start_hub(&myself, state).await?;
            }
            SupervisionEvent::ActorFailed(cell, error) if state.pools.contains_key(&cell.get_id()) => {
                let stage = state.pools.remove(&cell.get_id()).expect("checked");
                tracing::error!(stage = stage.name(), error = %error, "stage pool failed; restarting it");
                tokio::time::sleep(RESTART_BASE).await;
                start_pool(&myself, state, stage).await?;
            }
            SupervisionEvent::ActorFailed(cell, error) if state.consumers.contains_key(&cell.get_id()) => {
                let stage = state.consumers.remove(&cell.get_id()).expect("checked");
                tracing::error!(stage = stage.name(), error = %error, "stage consumer failed; restarting it");
                tokio::time::sleep(RESTART_BASE).await;
                start_consumer(&myself, state, stage).await?;
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((job, running)) = state.by_actor.remove(&cell.get_id()).and_then(|job| Some((job, state.jobs.remove(&job)?))) else {
                    tracing::error!(actor = %cell.get_id(), error = %error, "a child actor failed");
                    return Ok(());
                };
                let restarts = running.restarts + 1;
                if restarts > state.ctx.services.config.server.max_restarts {
                    tracing::error!(job = %job, error = %error, "job actor failed too often; failing the job");
                    let error = JobError::new(Failure::JobActorFailed, format!("the job kept failing: {error}"), None);
                    fail_stored(&state.ctx, job, error).await;
                } else {
                    let delay = crate::backoff::Backoff::nth(RESTART_BASE, RESTART_CAP, restarts - 1);
                    tracing::warn!(job = %job, error = %error, restarts, delay_ms = delay.as_millis() as u64, "job actor failed; restarting");
                    state.restarts.insert(job, restarts);
                    myself.send_after(delay, move || SupervisorMessage::Restart { job });
                }
            }
            _ => {}
        }
        state.ctx.metrics.jobs_in_flight.set(state.jobs.len() as i64);
        Ok(())
    }
}

async fn start_job(
    myself: &ActorRef<SupervisorMessage>,
    state: &mut SupervisorState,
    record: JobRecord,
    restarts: u32,
    admitted: Option<RpcReplyPort<Result<(), AdmitError>>>,
) -> Result<(), ActorProcessingErr> {
    let id = record.id;
    let args = JobArgs { record, ctx: state.ctx.clone(), cancel: CancellationToken::new(), admitted };
    let (actor, _) = Actor::spawn_linked(None, JobActor, args, myself.get_cell()).await?;
    state.by_actor.insert(actor.get_id(), id);
    state.jobs.insert(id, Running { actor, restarts });
    Ok(())
}

async fn start_consumer(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState, stage: Stage) -> Result<(), ActorProcessingErr> {
    let args = ConsumerArgs { stage, ctx: state.ctx.clone() };
    let (actor, _) = Actor::spawn_linked(None, StageConsumer, args, myself.get_cell()).await?;
    state.consumers.insert(actor.get_id(), stage);
    Ok(())
}

async fn start_hub(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
    let (actor, _) = Actor::spawn_linked(None, ProgressHub, state.hub_numbering.clone(), myself.get_cell()).await?;
    state.hub = Some(actor.get_id());
    state.ctx.hub.set(actor);
    Ok(())
}

async fn start_pool(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState, stage: Stage) -> Result<(), ActorProcessingErr> {
    let args = PoolArgs { concurrency: state.ctx.services.config.server.concurrency.of(stage), queue: state.ctx.pool(stage).clone() };
    let (actor, _) = Actor::spawn_linked(None, StagePool, args, myself.get_cell()).await?;
    state.pools.insert(actor.get_id(), stage);
    Ok(())
}

async fn start_admission(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
    let args = AdmissionArgs { ctx: state.ctx.clone(), supervisor: myself.clone() };
    let (actor, _) = Actor::spawn_linked(None, Admission, args, myself.get_cell()).await?;
    state.admission = Some(actor);
    Ok(())
}

/// Jobs this node has yet to finish: its job actors', and in a cluster the jobs in a stage here;
/// alone, every job in its queue (no other node will take them on).
async fn in_flight(state: &SupervisorState) -> usize {
    let queued = match &state.ctx.cluster {
        Some(c) if !c.queue.shared() => c.queue.backlog().await.unwrap_or(0) as usize,
        Some(c) => c.running_jobs().len(),
        None => 0,
    };
    state.jobs.len() + queued
}

/// Admission to the queue: its backlog is the bound (`Queue::backlog`); the record is persisted
/// before it is queued, and a job that cannot be queued is failed at once rather than left waiting.
async fn submit_to_queue(ctx: &ServerCtx, record: JobRecord) -> Result<(), AdmitError> {
    let cluster = ctx.cluster.as_ref().expect("called in a cluster");
    let limit = ctx.services.config.server.max_jobs_in_flight;
    let waiting = cluster.queue.backlog().await.map_err(|e| AdmitError::Store(format!("queue: {e}")))?;
    if waiting >= limit as u64 {
        return Err(AdmitError::Full(limit));
    }
    ctx.store.put(&record).await.map_err(|e| AdmitError::Store(e.to_string()))?;
    if let Err(e) = cluster.queue.push(WorkItem { job: record.id, stage: Stage::Download }).await {
        fail_stored(ctx, record.id, JobError::new(Failure::QueueUnavailable, format!("the job could not be queued: {e}"), None)).await;
        return Err(AdmitError::Store(format!("queue: {e}")));
    }
    Ok(())
}

/// Tells every node to stop the job; a job still waiting in the queue is cancelled here (the
/// node that claims it later finds it final and drops it). Replies whether the job was live.
async fn cancel_in_cluster(ctx: &ServerCtx, job: JobId) -> bool {
    let cluster = ctx.cluster.as_ref().expect("called in a cluster");
    if let Err(e) = cluster.bus.cancel(job).await {
        tracing::warn!(job = %job, error = %e, "cannot send the cancel on the bus");
        return false;
    }
    match ctx.store.get(job).await {
        Ok(Some(mut record)) if matches!(record.status, JobStatus::Queued | JobStatus::Waiting) => {
            record.status = JobStatus::Cancelled;
            record.updated_ms = crate::job::now_ms();
            if ctx.store.put(&record).await.is_ok() {
                ctx.publish(job, &record.tenant, EventKind::JobCancelled);
            }
            true
        }
        Ok(Some(record)) => !record.status.is_final(),
        _ => false,
    }
}

/// Where this process numbers its events from: the clock in microseconds, so ids keep rising
/// across restarts (no run publishes a million events a second for long), and a client resuming
/// from an id of the run before is below what the hub knows, and gets a fresh snapshot instead
/// of a gap. Still below 2^53, where JavaScript's numbers stop being exact. (In a cluster the
/// ids come from the bus, which keeps its own count.)
fn first_event_id() -> u64 {
    crate::job::now_ms() * 1000
}
