//! `StageWorker`: one of a stage pool's workers, a child actor of its `StagePool`. It runs one
//! piece of work at a time inside its own `handle`, so a panic in the work fails this actor
//! (ractor catches it) and its pool, the supervisor, restarts it and hands the work out again.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::stage_pool::{PoolMessage, Task};

pub struct StageWorker;

pub enum WorkerMessage {
    Run(Task),
}

impl Actor for StageWorker {
    type Msg = WorkerMessage;
    /// Its pool, told when the work is done.
    type State = ActorRef<PoolMessage>;
    type Arguments = ActorRef<PoolMessage>;

    async fn pre_start(&self, _: ActorRef<WorkerMessage>, pool: ActorRef<PoolMessage>) -> Result<Self::State, ActorProcessingErr> {
        Ok(pool)
    }

    async fn handle(&self, myself: ActorRef<WorkerMessage>, WorkerMessage::Run(task): WorkerMessage, pool: &mut ActorRef<PoolMessage>) -> Result<(), ActorProcessingErr> {
        task().await;
        pool.send_message(PoolMessage::Done(myself.get_id()))?;
        Ok(())
    }
}
