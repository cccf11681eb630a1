//! `StageConsumer`: one actor per stage on every node that runs stages. It claims work of its
//! stage from the queue, never more than its free slots: with a shared queue as many as the stage
//! runs at once (the bound that makes a busy node leave work to the others); alone, as many as
//! the stage's pool holds, whose workers bound the work. Each delivery goes to its job's
//! `JobActor` on this node with the slot it holds until its stage ends. The slots are the
//! stage's, not the consumer's: alone, a job's run that ends the stage before takes one to
//! claim its next stage itself (`Slots`). Work whose node died is
//! reclaimed after the lease; work delivered too often is dead-lettered and its job failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServerCtx;
use super::job_run::fail_stored;
use super::messages::SupervisorMessage;
use crate::job::{Failure, JobError, Stage};
use crate::persist::{Delivery, JobQueue};

/// How long one claim waits for new work before the actor looks around again.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// Pause after the queue failed, before trying again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

pub struct StageConsumer;

pub struct ConsumerArgs {
    pub stage: Stage,
    pub ctx: Arc<ServerCtx>,
    /// Starts job actors for jobs with none on this node.
    pub supervisor: ActorRef<SupervisorMessage>,
}

pub struct ConsumerState {
    stage: Stage,
    ctx: Arc<ServerCtx>,
    supervisor: ActorRef<SupervisorMessage>,
    slots: Arc<Slots>,
    last_reclaim: Instant,
}

pub enum ConsumerMessage {
    Poll,
}

/// A stage's slots on this node: how much of its work may be claimed here at once. Besides its
/// consumer, a job whose run has just ended the stage before takes one to claim its next stage
/// at once (`Cluster::free_slot`).
pub struct Slots {
    permits: Arc<Semaphore>,
    /// Set while the consumer waits for a slot; the run that frees one wakes it.
    parked: AtomicBool,
    consumer: ActorRef<ConsumerMessage>,
}

impl Slots {
    /// A free slot, if there is one.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Slot { permit: Some(permit), slots: self.clone() })
    }

    /// The next slot to free up.
    async fn take(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Slot { permit: Some(permit), slots: self.clone() })
    }

    fn free(&self) -> usize {
        self.permits.available_permits()
    }
}

/// One of a stage's slots, held by the delivery that took it until its stage ends; freeing it
/// wakes the consumer if it waits for one.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Freed before the wake-up, so the consumer it wakes finds it free.
        drop(self.permit.take());
        if self.slots.parked.swap(false, Ordering::SeqCst) {
            let _ = self.slots.consumer.send_message(ConsumerMessage::Poll);
        }
    }
}

impl Actor for StageConsumer {
    type Msg = ConsumerMessage;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(&self, myself: ActorRef<ConsumerMessage>, args: ConsumerArgs) -> Result<ConsumerState, ActorProcessingErr> {
        let concurrency = args.ctx.services.config.server.concurrency.of(args.stage);
        // A shared queue: claim no more than this node can run, leaving the rest to the others.
        // Alone: claim what the stage's pool can hold (its workers bound the work), so the
        // bookkeeping around many deliveries (saves, acknowledgements) overlaps.
        let shared = args.ctx.cluster.queue.shared();
        let claims = if shared { concurrency.max(1) } else { super::stage_pool::QUEUE_CAPACITY };
        tracing::info!(stage = args.stage.name(), concurrency, claims, "stage consumer started");
        let slots = Arc::new(Slots { permits: Arc::new(Semaphore::new(claims)), parked: AtomicBool::new(false), consumer: myself.clone() });
        args.ctx.cluster.set_slots(args.stage, slots.clone());
        myself.send_message(ConsumerMessage::Poll)?;
        Ok(ConsumerState { stage: args.stage, ctx: args.ctx, supervisor: args.supervisor, slots, last_reclaim: Instant::now() })
    }

    async fn handle(&self, myself: ActorRef<ConsumerMessage>, _: ConsumerMessage, state: &mut ConsumerState) -> Result<(), ActorProcessingErr> {
        let cluster = &state.ctx.cluster;
        // Draining: what runs finishes, and no new work is claimed from a shared queue (other
        // nodes take it); alone, the jobs in the queue carry on until the shutdown's deadline.
        if state.ctx.drain.is_cancelled() && cluster.queue.shared() {
            return Ok(());
        }
        let free = state.slots.free();
        if free == 0 {
            // Every slot is busy: the run that ends first wakes us.
            state.slots.parked.store(true, Ordering::SeqCst);
            if state.slots.free() > 0 && state.slots.parked.swap(false, Ordering::SeqCst) {
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
                        start(state, delivery);
                    }
                }
                Err(e) => {
                    tracing::warn!(stage = state.stage.name(), error = %e, "reclaim failed");
                    pause = QUEUE_RETRY;
                }
            }
        }
        let free = state.slots.free();
        if free > 0 && pause.is_zero() {
            match cluster.queue.claim(state.stage, free, CLAIM_WAIT).await {
                Ok(deliveries) => {
                    for delivery in deliveries {
                        start(state, delivery);
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

/// Hands a delivery to its job's actor on this node (through the supervisor, which starts one,
/// when there is none); the actor frees the slot when the stage ends.
fn start(state: &ConsumerState, delivery: Delivery) {
    let Some(slot) = state.slots.try_take() else {
        // Claimed more than there were slots for (a reclaim and a claim together): hand it
        // on once a slot frees rather than leave it leased and idle.
        let (slots, ctx, supervisor) = (state.slots.clone(), state.ctx.clone(), state.supervisor.clone());
        crate::task::spawn_named("stage-slot-wait", async move {
            if let Some(slot) = slots.take().await {
                hand_over(&ctx, &supervisor, delivery, slot);
            }
        });
        return;
    };
    hand_over(&state.ctx, &state.supervisor, delivery, slot);
}

fn hand_over(ctx: &ServerCtx, supervisor: &ActorRef<SupervisorMessage>, delivery: Delivery, slot: Slot) {
    let Err((delivery, slot)) = super::job::offer(&ctx.cluster, delivery, slot) else { return };
    if supervisor.send_message(SupervisorMessage::Deliver { delivery, slot }).is_err() {
        tracing::warn!("supervisor gone; the delivery is handed out again after its lease");
    }
}

/// Work that kept killing (or losing) its workers: the job fails with a reason.
async fn fail_dead_letter(ctx: &ServerCtx, delivery: &Delivery) {
    let stage = delivery.item.stage;
    tracing::error!(job = %delivery.item.job, stage = stage.name(), deliveries = delivery.deliveries, "dead-lettered");
    let message = format!("the {} stage was handed out {} times without finishing", stage.name(), delivery.deliveries);
    fail_stored(ctx, delivery.item.job, JobError::new(Failure::DeadLetter, message, Some(stage))).await;
}
