//! `StageWorker`: one of a stage pool's workers, a child actor of its `StagePool`. It takes work
//! from the stage's shared queue and runs it inside its own `handle`, one piece at a time, so a
//! panic in the work fails this actor (ractor catches it) and its pool, the supervisor, restarts
//! it and puts the work back on the queue. While work keeps coming it runs piece after piece in
//! one `handle`; only an empty queue costs it a message to itself.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;

use super::stage_pool::StageQueue;

pub struct StageWorker;

pub struct WorkerArgs {
    pub queue: Arc<StageQueue>,
    /// Fires when the pool that started this worker ends.
    pub closing: CancellationToken,
}

/// Wait for work, run it and what queued behind it.
pub struct Take;

impl Actor for StageWorker {
    type Msg = Take;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<Take>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.send_message(Take)?;
        Ok(args)
    }

    async fn handle(&self, myself: ActorRef<Take>, _: Take, state: &mut WorkerArgs) -> Result<(), ActorProcessingErr> {
        let Some(mut work) = state.queue.next(&state.closing).await else {
            myself.stop(None);
            return Ok(());
        };
        let me = myself.get_id();
        loop {
            state.queue.started(me, work)().await;
            state.queue.succeeded(me);
            match state.queue.try_next() {
                Some(next) => work = next,
                None => break,
            }
        }
        myself.send_message(Take)?;
        Ok(())
    }
}
