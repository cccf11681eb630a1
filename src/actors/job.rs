//! `JobActor`: one job while its stages run on this node, a child of the supervisor. The stage
//! consumers hand it the job's deliveries (`Run`); it runs each as one `JobRun::step` in a task of
//! its own and gets the `JobRun` back when the stage ends (`Stepped`). So its mailbox stays free
//! to answer `Status` and `Cancel` while a stage runs, and the job's record, with the changes not
//! saved yet, stays here from one stage to the next instead of being read back from the store.
//!
//! Alone (the in-process queue) the actor starts as its job is submitted, with the record, and
//! lives until the job ends. A stage's end is saved with the next stage's start: one write per
//! stage. When the next stage has a free slot and no other job waits at it, the run claims it at
//! once and carries on in the same task (`MemoryQueue::complete_and_claim`); otherwise the
//! stage's consumer claims it in turn and hands it back here. With a shared queue the next stage
//! may run on another node: the run saves the stage's end and waits until its events are on the
//! bus, the actor leaves the node's registry, and only then is the job handed on; the actor then
//! stops.
//! A delivery that cannot be finished (the store unreachable, the run panicked) is left
//! unacknowledged: the queue hands it out again after its lease, and past `max_deliveries`
//! dead-letters it, failing the job.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ServerCtx;
use super::cluster::Cluster;
use super::job_run::{Halt, JobRun};
use super::messages::JobMessage;
use super::stage_consumer::Slot;
use crate::job::{JobId, JobRecord, StageState};
use crate::persist::{Delivery, JobQueue, JobStore, WorkItem};

pub struct JobActor;

pub struct JobArgs {
    ctx: Arc<ServerCtx>,
    job: JobId,
    /// Fires when the job is cancelled (from anywhere).
    cancel: CancellationToken,
    /// The job's record, when whoever starts the actor has it (a job just submitted here).
    record: Option<JobRecord>,
}

pub struct JobState {
    ctx: Arc<ServerCtx>,
    job: JobId,
    cancel: CancellationToken,
    /// The job between stages; `None` before its record is loaded, and while a stage holds it.
    run: Option<JobRun>,
    /// A stage (or the job's end) is running in a task.
    busy: bool,
    /// Deliveries that came while a stage ran: the next stage, claimed before the last one handed
    /// the run back, or a redelivery.
    pending: VecDeque<(Delivery, Slot)>,
    report: Arc<watch::Sender<Vec<StageState>>>,
    live: watch::Receiver<Vec<StageState>>,
}

/// What a stage's task hands back.
pub struct Stepped {
    run: Option<JobRun>,
    /// Whether the actor carries on with the job: its next stage comes to this node.
    keep: bool,
    /// The task panicked (with this message).
    panicked: Option<String>,
}

impl Actor for JobActor {
    type Msg = JobMessage;
    type State = JobState;
    type Arguments = JobArgs;

    async fn pre_start(&self, _: ActorRef<JobMessage>, args: JobArgs) -> Result<JobState, ActorProcessingErr> {
        let JobArgs { ctx, job, cancel, record } = args;
        let (report, live) = watch::channel(record.as_ref().map(|r| r.stages.clone()).unwrap_or_default());
        let report = Arc::new(report);
        let run = record.map(|record| JobRun::new(ctx.clone(), record, cancel.clone()).reporting_to(report.clone()));
        Ok(JobState { ctx, job, cancel, run, busy: false, pending: VecDeque::new(), report, live })
    }

    async fn handle(&self, myself: ActorRef<JobMessage>, message: JobMessage, state: &mut JobState) -> Result<(), ActorProcessingErr> {
        match message {
            JobMessage::Run(delivery, slot) => {
                state.pending.push_back((delivery, slot));
                start_next(&myself, state);
            }
            JobMessage::Stepped(stepped) => {
                state.busy = false;
                if let Some(panic) = stepped.panicked {
                    return Err(format!("the job's stage panicked: {panic}").into());
                }
                state.run = stepped.run.filter(|_| stepped.keep);
                if stepped.keep || !state.pending.is_empty() {
                    start_next(&myself, state);
                } else {
                    myself.stop(Some("job handed on or ended".into()));
                }
            }
            JobMessage::Status(reply) => {
                let _ = reply.send(state.live.borrow().clone());
            }
            JobMessage::Cancel => {
                state.cancel.cancel();
                // Between stages: end it now rather than when its next stage is claimed.
                if let (false, Some(run)) = (state.busy, state.run.take()) {
                    state.busy = true;
                    spawn_step(&myself, async move { end_cancelled(run).await });
                }
            }
        }
        Ok(())
    }

    async fn post_stop(&self, myself: ActorRef<JobMessage>, state: &mut JobState) -> Result<(), ActorProcessingErr> {
        state.ctx.cluster.forget(state.job, myself.get_id());
        Ok(())
    }
}

/// Starts `job`'s actor on this node as a child of `supervisor` and registers it; with the
/// job's `record` when the caller has it, so its first stage need not read it back.
pub async fn start(ctx: &Arc<ServerCtx>, supervisor: ActorCell, job: JobId, record: Option<JobRecord>) -> Result<ActorRef<JobMessage>, SpawnErr> {
    let cluster = &ctx.cluster;
    let cancel = cluster.cancel_token(job);
    let args = JobArgs { ctx: ctx.clone(), job, cancel: cancel.clone(), record };
    let (actor, _) = Actor::spawn_linked(None, JobActor, args, supervisor).await?;
    cluster.register(job, actor.clone(), cancel);
    Ok(actor)
}

/// Hands a delivery to its job's actor on this node; gives it back when there is none (or the
/// one there has just stopped).
pub fn offer(cluster: &Cluster, delivery: Delivery, slot: Slot) -> Result<(), (Delivery, Slot)> {
    let Some(actor) = cluster.job_actor(delivery.item.job) else { return Err((delivery, slot)) };
    match actor.send_message(JobMessage::Run(delivery, slot)) {
        Err(ractor::MessagingErr::SendErr(JobMessage::Run(delivery, slot))) => Err((delivery, slot)),
        _ => Ok(()),
    }
}

/// Runs the first pending delivery, unless a stage runs already.
fn start_next(myself: &ActorRef<JobMessage>, state: &mut JobState) {
    if state.busy {
        return;
    }
    let Some(first) = state.pending.pop_front() else { return };
    state.busy = true;
    let mut run = state.run.take();
    let (ctx, cancel, report) = (state.ctx.clone(), state.cancel.clone(), state.report.clone());
    let me = myself.get_id();
    spawn_step(myself, async move {
        let mut next = first;
        loop {
            let (delivery, slot) = next;
            let ran = run_delivery(&ctx, &mut run, delivery, &cancel, &report, me).await;
            drop(slot);
            next = match ran {
                // The next stage came straight back to this run: no trip through the actor.
                Ran::Next(delivery, slot) => (delivery, slot),
                Ran::Keep => return Stepped { run, keep: true, panicked: None },
                Ran::Leave => return Stepped { run: None, keep: false, panicked: None },
            };
        }
    });
}

/// Runs `step` in a task that reports back with `Stepped`, a panic included.
fn spawn_step(myself: &ActorRef<JobMessage>, step: impl Future<Output = Stepped> + Send + 'static) {
    let myself = myself.clone();
    // Boxed once here: the task then moves a pointer, not the stage's future, at every wrapping.
    let step = Box::pin(step);
    crate::task::spawn_named("job-stage", async move {
        let stepped = AssertUnwindSafe(step).catch_unwind().await.unwrap_or_else(|panic| Stepped { run: None, keep: false, panicked: Some(panic_message(&panic).into()) });
        let _ = myself.send_message(JobMessage::Stepped(Box::new(stepped)));
    });
}

/// What became of a delivery.
enum Ran {
    /// The job is no longer this actor's: handed on, ended, or left to be delivered again.
    Leave,
    /// Its next stage comes to this node through its stage's consumer.
    Keep,
    /// Its next stage, claimed for this node as this one ended.
    Next(Delivery, Slot),
}

/// One delivery: the job's stage, under a renewed lease, then acknowledged with its next stage.
/// `run` is the job as this actor holds it (loaded here when it holds none).
async fn run_delivery(
    ctx: &Arc<ServerCtx>,
    run: &mut Option<JobRun>,
    delivery: Delivery,
    cancel: &CancellationToken,
    report: &Arc<watch::Sender<Vec<StageState>>>,
    me: ractor::ActorId,
) -> Ran {
    let cluster = &ctx.cluster;
    let WorkItem { job, stage } = delivery.item;
    let job_run = match run {
        Some(run) => run,
        None => match ctx.store.get(job).await {
            Ok(Some(record)) => {
                report.send_replace(record.stages.clone());
                run.insert(JobRun::new(ctx.clone(), record, cancel.clone()).reporting_to(report.clone()))
            }
            Ok(None) => {
                tracing::warn!(job = %job, "queued job has no record; dropping it");
                let _ = cluster.queue.complete(&delivery, None).await;
                return Ran::Leave;
            }
            Err(e) => {
                // Not acknowledged: it comes back after the lease.
                tracing::warn!(job = %job, error = %e, "cannot load job; leaving it to be redelivered");
                return Ran::Leave;
            }
        },
    };
    if job_run.record.status.is_final() {
        let _ = cluster.queue.complete(&delivery, None).await;
        return Ran::Leave;
    }
    let outcome = if job_run.cancel.is_cancelled() {
        // Cancelled as the last stage ended: the job ends without starting this one.
        Err(Halt::Cancelled)
    } else {
        let _leased = cluster.hold(&delivery);
        match job_run.begin().await {
            Ok(()) => job_run.step(stage).await,
            Err(e) => Err(Halt::store(e)),
        }
    };
    let shared = cluster.queue.shared();
    let next = match outcome {
        // Alone, the stage's end is saved with the next stage's start, here.
        Ok(Some(next)) if !shared => Some(WorkItem { job, stage: next }),
        Ok(Some(next)) => match job_run.flush().await {
            Ok(()) => Some(WorkItem { job, stage: next }),
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "cannot persist the stage; leaving it to be redelivered");
                return Ran::Leave;
            }
        },
        Err(Halt::Unavailable(e)) => {
            tracing::warn!(job = %job, stage = stage.name(), error = %e, "storage unavailable; leaving the stage to be redelivered");
            return Ran::Leave;
        }
        outcome => match job_run.finish(outcome.map(|_| ())).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "cannot finish job; leaving it to be redelivered");
                return Ran::Leave;
            }
        },
    };
    let Some(next) = next else {
        if let Err(e) = cluster.queue.complete(&delivery, None).await {
            tracing::warn!(job = %job, stage = stage.name(), error = %e, "cannot acknowledge; the stage will be redelivered and skipped");
        }
        return Ran::Leave;
    };
    if shared {
        // The next stage may run on another node: its events must follow this one's, and a
        // delivery of it here must find a new actor, not this one, which is leaving.
        cluster.flush_events().await;
        cluster.forget(job, me);
    }
    // Alone, the next stage is claimed at once when a slot of it is free and no other job waits
    // for one; otherwise its consumer claims it in turn.
    let slot = if shared { None } else { cluster.free_slot(next.stage) };
    let acknowledged = match slot {
        Some(slot) => cluster.queue.complete_and_claim(&delivery, next).await.map(|claimed| claimed.map(|d| Ran::Next(d, slot))),
        None => cluster.queue.complete(&delivery, Some(next)).await.map(|()| None),
    };
    match acknowledged {
        Ok(Some(next)) => next,
        Ok(None) if shared => Ran::Leave,
        Ok(None) => Ran::Keep,
        Err(e) => {
            tracing::warn!(job = %job, stage = stage.name(), error = %e, "cannot acknowledge; the stage will be redelivered and skipped");
            if shared { Ran::Leave } else { Ran::Keep }
        }
    }
}

/// A cancel heard between two stages: the job ends cancelled now.
async fn end_cancelled(mut run: JobRun) -> Stepped {
    if let Err(e) = run.finish(Err(Halt::Cancelled)).await {
        tracing::warn!(job = %run.record.id, error = %e, "cannot persist the cancel; the job's next stage will");
    }
    Stepped { run: None, keep: false, panicked: None }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("no message")
}
