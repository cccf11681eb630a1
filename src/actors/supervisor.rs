//! `Supervisor`: the root. It starts the stage pools, the hub, `Admission` (batch entries, on
//! nodes that serve the API) and one `StageConsumer` per stage (on nodes that run stages) as its
//! children, restarting any that fails; `ServerCtx` reaches the pools and the hub through their
//! `ActorSlot`s.
//!
//! Every job runs as stages: a submitted job is persisted and queued at its first stage (the
//! in-process queue alone, Redis's in a cluster), and the consumers claim its stages. A stage of a
//! job with no actor on this node comes here (`Deliver`): the supervisor starts the job's
//! `JobActor` as its child and hands it the delivery (alone, a job's actor is started, as its
//! child too, when the job is submitted). A job actor that fails leaves its delivery
//! unacknowledged; the queue hands it out again after its lease (and dead-letters it, failing the
//! job, past `max_deliveries`). Cancels go out on the bus, which brings them back to every node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::ServerCtx;
use super::admission::{Admission, AdmissionArgs, AdmissionMessage};
use super::job_run::fail_stored;
use super::messages::{AdmitError, EventKind, JobMessage, SupervisorMessage};
use super::progress_hub::ProgressHub;
use super::stage_consumer::{ConsumerArgs, Slot, StageConsumer};
use super::stage_pool::{PoolArgs, StagePool};
use crate::job::{Failure, JobError, JobId, JobRecord, JobStatus, Stage};
use crate::persist::{Delivery, EventBus, JobQueue, JobStore, WorkItem};

const RESTART_BASE: Duration = Duration::from_millis(500);

pub struct Supervisor;

pub struct SupervisorState {
    ctx: Arc<ServerCtx>,
    /// Stage consumers, by actor id.
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
        if ctx.cluster.role.serves_api() {
            start_admission(&myself, &mut state).await?;
        }
        // The queue holds the work; unfinished jobs resume wherever they are claimed (alone, the
        // first housekeeping tick queues them again: an in-process queue starts empty).
        if ctx.cluster.role.runs_stages() {
            for stage in Stage::ALL {
                start_consumer(&myself, &mut state, stage).await?;
            }
        }
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: SupervisorMessage, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Submit { record, reply } => {
                if state.ctx.drain.is_cancelled() {
                    let _ = reply.send(Err(AdmitError::ShuttingDown));
                } else {
                    // Off the supervisor's mailbox: admissions are not serialised behind commits.
                    let (ctx, supervisor) = (state.ctx.clone(), myself.get_cell());
                    crate::task::spawn_named("submit-to-queue", async move {
                        let _ = reply.send(submit_to_queue(&ctx, supervisor, *record).await);
                    });
                }
            }
            SupervisorMessage::Cancel { job, reply } => {
                // A batch entry still waiting is Admission's (it may be releasing it right now);
                // anything else is stopped wherever it runs. Off the mailbox: both wait on the store.
                let (ctx, admission) = (state.ctx.clone(), state.admission.clone());
                crate::task::spawn_named("cancel", async move {
                    let waiting = match admission {
                        Some(admission) => ractor::call!(admission, |reply| AdmissionMessage::Cancel { job, reply }).unwrap_or(false),
                        None => false,
                    };
                    let _ = reply.send(waiting || cancel_everywhere(&ctx, job).await);
                });
            }
            SupervisorMessage::Enqueue { tenant, jobs } => match &state.admission {
                Some(admission) => {
                    let _ = admission.send_message(AdmissionMessage::Enqueue { tenant, jobs });
                }
                None => tracing::error!(entries = jobs.len(), "batch entries created on a node that does not admit them"),
            },
            SupervisorMessage::Deliver { delivery, slot } => deliver(&myself, state, delivery, slot).await?,
            SupervisorMessage::InFlight { reply } => {
                let _ = reply.send(in_flight(&state.ctx).await);
            }
            SupervisorMessage::LiveJobs { reply } => {
                let _ = reply.send(state.ctx.cluster.running_jobs());
            }
        }
        state.ctx.metrics.jobs_in_flight.set(state.ctx.cluster.job_actors() as i64);
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<Self::Msg>, event: SupervisionEvent, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.ctx.cluster.forget_actor(cell.get_id());
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
            SupervisionEvent::ActorFailed(cell, error) => match state.ctx.cluster.forget_actor(cell.get_id()) {
                Some(job) => tracing::error!(job = %job, error = %error, "job actor failed; its stage will be handed out again after its lease"),
                None => tracing::error!(actor = %cell.get_id(), error = %error, "a child actor failed"),
            },
            _ => {}
        }
        state.ctx.metrics.jobs_in_flight.set(state.ctx.cluster.job_actors() as i64);
        Ok(())
    }
}

/// Hands a delivery to its job's actor on this node, starting one when there is none (or the
/// one there has just stopped).
async fn deliver(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState, delivery: Delivery, slot: Slot) -> Result<(), ActorProcessingErr> {
    let cluster = &state.ctx.cluster;
    let Err((delivery, slot)) = super::job::offer(cluster, delivery, slot) else { return Ok(()) };
    let actor = super::job::start(&state.ctx, myself.get_cell(), delivery.item.job, None).await?;
    let _ = actor.send_message(JobMessage::Run(delivery, slot));
    Ok(())
}

async fn start_consumer(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState, stage: Stage) -> Result<(), ActorProcessingErr> {
    let args = ConsumerArgs { stage, ctx: state.ctx.clone(), supervisor: myself.clone() };
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

/// Jobs this node has yet to finish: alone, every job in its queue (no other node will take
/// them on); in a cluster, the jobs with a stage running here.
async fn in_flight(ctx: &ServerCtx) -> usize {
    let cluster = &ctx.cluster;
    if cluster.queue.shared() {
        cluster.running_jobs().len()
    } else {
        cluster.queue.backlog().await.unwrap_or(0) as usize
    }
}

/// Admission to the queue: its backlog is the bound (`Queue::backlog`); the record is persisted
/// before it is queued, and a job that cannot be queued is failed at once rather than left waiting.
/// Alone, the job's actor starts here with the record, since its stages will run on this node.
async fn submit_to_queue(ctx: &Arc<ServerCtx>, supervisor: ractor::ActorCell, record: JobRecord) -> Result<(), AdmitError> {
    let cluster = &ctx.cluster;
    let limit = ctx.services.config.server.max_jobs_in_flight;
    let waiting = cluster.queue.backlog().await.map_err(|e| AdmitError::Store(format!("queue: {e}")))?;
    if waiting >= limit as u64 {
        return Err(AdmitError::Full(limit));
    }
    ctx.store.put(&record).await.map_err(|e| AdmitError::Store(e.to_string()))?;
    let job = record.id;
    // Without one, the first delivery starts an actor that reads the record back.
    let actor = if cluster.queue.shared() { None } else { super::job::start(ctx, supervisor, job, Some(record)).await.ok() };
    if let Err(e) = cluster.queue.push(WorkItem { job, stage: Stage::Download }).await {
        if let Some(actor) = actor {
            actor.stop(Some("the job could not be queued".into()));
        }
        fail_stored(ctx, job, JobError::new(Failure::QueueUnavailable, format!("the job could not be queued: {e}"), None)).await;
        return Err(AdmitError::Store(format!("queue: {e}")));
    }
    Ok(())
}

/// Tells every node to stop the job; a job still waiting in the queue with no actor here is
/// cancelled here (the node that claims it later finds it final and drops it). Replies whether
/// the job was live.
async fn cancel_everywhere(ctx: &ServerCtx, job: JobId) -> bool {
    let cluster = &ctx.cluster;
    if let Err(e) = cluster.bus.cancel(job).await {
        tracing::warn!(job = %job, error = %e, "cannot send the cancel on the bus");
        return false;
    }
    if cluster.job_actor(job).is_some() {
        // Its actor here ends it (saved and announced once), queued or running.
        return true;
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
