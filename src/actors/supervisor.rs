//! `Supervisor`: the root. It starts the stage pools and the hub, admits jobs up to the in-flight
//! bound, runs one `JobActor` per job, resumes unfinished jobs at start, and restarts a job actor
//! that fails (panics, or its store writes fail) with capped exponential backoff, failing the job
//! for good past `server.max_restarts`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::job::{JobActor, JobArgs};
use super::messages::{AdmitError, EventKind, SupervisorMessage};
use crate::job::{JobError, JobId, JobRecord, JobStatus};
use crate::persist::JobStore;

const RESTART_BASE: Duration = Duration::from_millis(500);
const RESTART_CAP: Duration = Duration::from_secs(30);

pub struct Supervisor;

struct Running {
    cell: ActorCell,
    cancel: CancellationToken,
    restarts: u32,
}

pub struct SupervisorState {
    ctx: Arc<ServerCtx>,
    jobs: HashMap<JobId, Running>,
    restarts: HashMap<JobId, u32>,
    draining: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = Arc<ServerCtx>;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, ctx: Arc<ServerCtx>) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState { ctx: ctx.clone(), jobs: HashMap::new(), restarts: HashMap::new(), draining: false };
        let unfinished = ctx.store.unfinished().await?;
        if !unfinished.is_empty() {
            tracing::info!(jobs = unfinished.len(), "resuming unfinished jobs");
        }
        for record in unfinished {
            start_job(&myself, &mut state, record, 0).await?;
        }
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, message: SupervisorMessage, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Submit { record, reply } => {
                let limit = state.ctx.services.config.server.max_jobs_in_flight;
                let result = if state.draining {
                    Err(AdmitError::ShuttingDown)
                } else if state.jobs.len() >= limit {
                    Err(AdmitError::Full(limit))
                } else {
                    match state.ctx.store.put(&record).await {
                        Ok(()) => start_job(&myself, state, *record, 0).await.map_err(|e| AdmitError::Store(e.to_string())),
                        Err(e) => Err(AdmitError::Store(e.to_string())),
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMessage::Cancel { job, reply } => {
                let found = state.jobs.get(&job).map(|r| r.cancel.cancel()).is_some();
                let _ = reply.send(found);
            }
            SupervisorMessage::Restart { job } => {
                let restarts = state.restarts.remove(&job).unwrap_or(0);
                match state.ctx.store.get(job).await {
                    Ok(Some(record)) if !record.status.is_final() => start_job(&myself, state, record, restarts).await?,
                    Ok(_) => {}
                    Err(e) => tracing::error!(job = %job, error = %e, "cannot reload job to restart it"),
                }
            }
            SupervisorMessage::Drain { reply } => {
                state.draining = true;
                let _ = reply.send(state.jobs.len());
            }
            SupervisorMessage::InFlight { reply } => {
                let _ = reply.send(state.jobs.len());
            }
            SupervisorMessage::LiveJobs { reply } => {
                let _ = reply.send(state.jobs.keys().copied().collect());
            }
        }
        state.ctx.metrics.jobs_in_flight.set(state.jobs.len() as i64);
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<Self::Msg>, event: SupervisionEvent, state: &mut SupervisorState) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.jobs.retain(|_, r| r.cell.get_id() != cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((&job, running)) = state.jobs.iter().find(|(_, r)| r.cell.get_id() == cell.get_id()) else {
                    tracing::error!(actor = %cell.get_id(), error = %error, "a child actor failed");
                    return Ok(());
                };
                let restarts = running.restarts + 1;
                state.jobs.remove(&job);
                if restarts > state.ctx.services.config.server.max_restarts {
                    tracing::error!(job = %job, error = %error, "job actor failed too often; failing the job");
                    fail_job(&state.ctx, job, &error.to_string()).await;
                } else {
                    let delay = (RESTART_BASE * 2u32.pow(restarts - 1)).min(RESTART_CAP);
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

async fn start_job(myself: &ActorRef<SupervisorMessage>, state: &mut SupervisorState, record: JobRecord, restarts: u32) -> Result<(), ActorProcessingErr> {
    let id = record.id;
    let cancel = CancellationToken::new();
    let args = JobArgs { record, ctx: state.ctx.clone(), cancel: cancel.clone() };
    let (actor, _) = Actor::spawn_linked(None, JobActor, args, myself.get_cell()).await?;
    state.jobs.insert(id, Running { cell: actor.get_cell(), cancel, restarts });
    Ok(())
}

async fn fail_job(ctx: &ServerCtx, job: JobId, reason: &str) {
    let Ok(Some(mut record)) = ctx.store.get(job).await else { return };
    let error = JobError { code: "job_actor_failed".into(), message: format!("the job kept failing: {reason}"), stage: None };
    record.status = JobStatus::Failed;
    record.error = Some(error.clone());
    record.updated_ms = crate::job::now_ms();
    if ctx.store.put(&record).await.is_ok() {
        ctx.publish(job, &record.tenant, EventKind::JobFailed { error });
    }
}
