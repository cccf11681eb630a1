//! `StageConsumer`: in a cluster, one actor per stage on every worker node. It claims work of
//! its stage from the shared queue (never more than its free slots: the bound that makes a busy
//! node leave work to the others), runs each delivery as one `JobRun::step` while heart-beating
//! its lease, then acknowledges it and queues the job's next stage in one step. Work whose node
//! died is reclaimed after the lease; work delivered too often is dead-lettered and its job failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServerCtx;
use super::job_run::{Halt, JobRun, fail_stored};
use crate::job::{Failure, JobError, Stage};
use crate::persist::{Delivery, JobQueue, JobStore, WorkItem};

/// How long one claim waits for new work before the actor looks around again.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// Pause after the queue failed, before trying again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

pub struct StageConsumer;

pub struct ConsumerArgs {
    pub stage: Stage,
    pub ctx: Arc<ServerCtx>,
}

pub struct ConsumerState {
    stage: Stage,
    ctx: Arc<ServerCtx>,
    slots: Arc<Semaphore>,
    /// Set while the consumer waits for a slot; the run that frees one wakes it.
    parked: Arc<AtomicBool>,
    last_reclaim: Instant,
}

pub enum ConsumerMessage {
    Poll,
}

impl Actor for StageConsumer {
    type Msg = ConsumerMessage;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(&self, myself: ActorRef<ConsumerMessage>, args: ConsumerArgs) -> Result<ConsumerState, ActorProcessingErr> {
        let concurrency = args.ctx.services.config.server.concurrency.of(args.stage);
        tracing::info!(stage = args.stage.name(), concurrency, "stage consumer started");
        myself.send_message(ConsumerMessage::Poll)?;
        Ok(ConsumerState { stage: args.stage, ctx: args.ctx, slots: Arc::new(Semaphore::new(concurrency.max(1))), parked: Arc::default(), last_reclaim: Instant::now() })
    }

    async fn handle(&self, myself: ActorRef<ConsumerMessage>, _: ConsumerMessage, state: &mut ConsumerState) -> Result<(), ActorProcessingErr> {
        let cluster = state.ctx.cluster.as_ref().expect("consumers run in a cluster");
        // Draining: what runs finishes, and no new work is claimed from a shared queue (other
        // nodes take it); alone, the jobs in the queue carry on until the shutdown's deadline.
        if state.ctx.drain.is_cancelled() && cluster.queue.shared() {
            return Ok(());
        }
        let free = state.slots.available_permits();
        if free == 0 {
            // Every slot is busy: the run that ends first wakes us.
            state.parked.store(true, Ordering::SeqCst);
            if state.slots.available_permits() > 0 && state.parked.swap(false, Ordering::SeqCst) {
                myself.send_message(ConsumerMessage::Poll)?;
            }
            return Ok(());
        }
        if let Err(e) = state.ctx.services.scratch.check_free() {
            // Leave the work to nodes with room; what runs here already carries on.
            tracing::warn!(stage = state.stage.name(), error = %e, "not claiming work");
            myself.send_after(QUEUE_RETRY * 5, || ConsumerMessage::Poll);
            return Ok(());
        }
        let mut pause = Duration::ZERO;
        if state.last_reclaim.elapsed() >= cluster.lease / 2 {
            state.last_reclaim = Instant::now();
            match cluster.queue.reclaim(state.stage, free).await {
                Ok(reclaimed) => {
                    for delivery in reclaimed.dead {
                        fail_dead_letter(&state.ctx, &delivery).await;
                    }
                    for delivery in reclaimed.live {
                        tracing::warn!(job = %delivery.item.job, stage = state.stage.name(), deliveries = delivery.deliveries, "reclaimed work of a node that stopped");
                        start(&myself, state, delivery);
                    }
                }
                Err(e) => {
                    tracing::warn!(stage = state.stage.name(), error = %e, "reclaim failed");
                    pause = QUEUE_RETRY;
                }
            }
        }
        let free = state.slots.available_permits();
        if free > 0 && pause.is_zero() {
            match cluster.queue.claim(state.stage, free, CLAIM_WAIT).await {
                Ok(deliveries) => {
                    for delivery in deliveries {
                        start(&myself, state, delivery);
                    }
                }
                Err(e) => {
                    tracing::warn!(stage = state.stage.name(), error = %e, "claim failed");
                    pause = QUEUE_RETRY;
                }
            }
        }
        if pause.is_zero() {
            myself.send_message(ConsumerMessage::Poll)?;
        } else {
            myself.send_after(pause, || ConsumerMessage::Poll);
        }
        Ok(())
    }
}

fn start(myself: &ActorRef<ConsumerMessage>, state: &ConsumerState, delivery: Delivery) {
    let consumer = (myself.clone(), state.parked.clone());
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        // Claimed more than there were slots for (a reclaim and a claim together): run it
        // anyway rather than leave it leased and idle.
        let (ctx, slots) = (state.ctx.clone(), state.slots.clone());
        crate::task::spawn_named("stage-run", async move {
            if let Ok(permit) = slots.acquire_owned().await {
                run(ctx, delivery, permit, consumer).await;
            }
        });
        return;
    };
    crate::task::spawn_named("stage-run", run(state.ctx.clone(), delivery, permit, consumer));
}

/// Runs one delivery, then frees its slot and tells the consumer, which may be waiting for one.
async fn run(ctx: Arc<ServerCtx>, delivery: Delivery, permit: OwnedSemaphorePermit, (consumer, parked): (ActorRef<ConsumerMessage>, Arc<AtomicBool>)) {
    run_delivery(ctx, delivery).await;
    drop(permit);
    if parked.swap(false, Ordering::SeqCst) {
        let _ = consumer.send_message(ConsumerMessage::Poll);
    }
}

/// One delivery: the job's stage, under a renewed lease, then acknowledged with its next stage.
async fn run_delivery(ctx: Arc<ServerCtx>, delivery: Delivery) {
    let cluster = ctx.cluster.as_ref().expect("consumers run in a cluster");
    let WorkItem { job, stage } = delivery.item;
    let record = match ctx.store.get(job).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::warn!(job = %job, "queued job has no record; dropping it");
            let _ = cluster.queue.complete(&delivery, None).await;
            return;
        }
        Err(e) => {
            // Not acknowledged: it comes back after the lease.
            tracing::warn!(job = %job, error = %e, "cannot load job; leaving it to be redelivered");
            return;
        }
    };
    if record.status.is_final() {
        let _ = cluster.queue.complete(&delivery, None).await;
        return;
    }
    // After the load: a cancel heard meanwhile is remembered, and `track` sees it.
    let (guard, report) = cluster.track(job, record.stages.clone());
    let mut job_run = JobRun::new(ctx.clone(), record, guard.token.clone()).reporting_to(report);
    let work = async {
        job_run.begin().await.map_err(Halt::store)?;
        job_run.step(stage).await
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = keep_leased(cluster, &delivery) => unreachable!("the heartbeat never ends"),
    };
    let next = match outcome {
        Ok(Some(next)) => match job_run.flush().await {
            Ok(()) => Some(WorkItem { job, stage: next }),
            Err(e) => return tracing::warn!(job = %job, error = %e, "cannot persist the stage; leaving it to be redelivered"),
        },
        Ok(None) => match job_run.finish(Ok(())).await {
            Ok(()) => None,
            Err(e) => return tracing::warn!(job = %job, error = %e, "cannot finish job; leaving it to be redelivered"),
        },
        Err(Halt::Unavailable(e)) => return tracing::warn!(job = %job, stage = stage.name(), error = %e, "storage unavailable; leaving the stage to be redelivered"),
        Err(halt) => match job_run.finish(Err(halt)).await {
            Ok(()) => None,
            Err(e) => return tracing::warn!(job = %job, error = %e, "cannot finish job; leaving it to be redelivered"),
        },
    };
    cluster.flush_events().await;
    if let Err(e) = cluster.queue.complete(&delivery, next).await {
        tracing::warn!(job = %job, stage = stage.name(), error = %e, "cannot acknowledge; the stage will be redelivered and skipped");
    }
}

/// Renews the delivery's lease a few times per lease period, forever.
async fn keep_leased(cluster: &crate::actors::cluster::Cluster, delivery: &Delivery) {
    let mut tick = tokio::time::interval(cluster.lease / 4);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = cluster.queue.heartbeat(delivery).await {
            tracing::warn!(job = %delivery.item.job, error = %e, "lease heartbeat failed");
        }
    }
}

/// Work that kept killing (or losing) its workers: the job fails with a reason.
async fn fail_dead_letter(ctx: &ServerCtx, delivery: &Delivery) {
    let stage = delivery.item.stage;
    tracing::error!(job = %delivery.item.job, stage = stage.name(), deliveries = delivery.deliveries, "dead-lettered");
    let message = format!("the {} stage was handed out {} times without finishing", stage.name(), delivery.deliveries);
    fail_stored(ctx, delivery.item.job, JobError::new(Failure::DeadLetter, message, Some(stage))).await;
}
