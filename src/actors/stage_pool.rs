//! `StagePool`: one actor per stage that runs that stage's work with a fixed parallelism.
//!
//! ractor mailboxes are unbounded, so the bound lives in the handle: `StagePoolRef::run` first
//! takes one of `QUEUE_CAPACITY` slots (waiting when all are taken: backpressure on the job), and
//! only then sends the work. Time spent waiting for a slot and for a worker is exported per stage.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::job::Stage;
use crate::metrics::Metrics;

/// Work queued or running per stage before senders wait.
pub const QUEUE_CAPACITY: usize = 256;

pub struct StagePool;

pub struct PoolArgs {
    pub stage: Stage,
    pub concurrency: usize,
    pub metrics: Arc<Metrics>,
}

pub struct PoolState {
    stage: Stage,
    workers: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

pub struct Work {
    enqueued: Instant,
    _slot: OwnedSemaphorePermit,
    task: BoxFuture<'static, ()>,
}

impl Actor for StagePool {
    type Msg = Work;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(&self, _: ActorRef<Work>, args: PoolArgs) -> Result<PoolState, ActorProcessingErr> {
        tracing::info!(stage = args.stage.name(), concurrency = args.concurrency, capacity = QUEUE_CAPACITY, "stage pool started");
        Ok(PoolState { stage: args.stage, workers: Arc::new(Semaphore::new(args.concurrency.max(1))), metrics: args.metrics })
    }

    async fn handle(&self, _: ActorRef<Work>, work: Work, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        let (workers, metrics, stage) = (state.workers.clone(), state.metrics.clone(), state.stage);
        crate::task::spawn_named(&format!("stage-{}", stage.name()), async move {
            let _worker = workers.acquire_owned().await.expect("pool semaphore is never closed");
            metrics.stage_wait.with_label_values(&[stage.name()]).observe(work.enqueued.elapsed().as_secs_f64());
            metrics.stage_running.with_label_values(&[stage.name()]).inc();
            work.task.await;
            metrics.stage_running.with_label_values(&[stage.name()]).dec();
            drop(work._slot);
            metrics.stage_queued.with_label_values(&[stage.name()]).dec();
        });
        Ok(())
    }
}

/// Why a stage's work did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0} stage pool is not running")]
    Stopped(&'static str),
    #[error("{0} stage work panicked")]
    Panicked(&'static str),
}

/// The bounded way in to a stage pool.
#[derive(Clone)]
pub struct StagePoolRef {
    pub stage: Stage,
    actor: ActorRef<Work>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl StagePoolRef {
    pub fn new(stage: Stage, actor: ActorRef<Work>, metrics: Arc<Metrics>) -> Self {
        Self { stage, actor, slots: Arc::new(Semaphore::new(QUEUE_CAPACITY)), metrics }
    }

    /// Runs `work` on this stage's pool, waiting for a queue slot first, and returns its output.
    pub async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T, PoolError> {
        let name = self.stage.name();
        let enqueued = Instant::now();
        let slot = self.slots.clone().acquire_owned().await.map_err(|_| PoolError::Stopped(name))?;
        self.metrics.stage_queued.with_label_values(&[name]).inc();
        let (tx, rx) = oneshot::channel();
        let task = async move {
            let _ = tx.send(AssertUnwindSafe(work).catch_unwind().await);
        }
        .boxed();
        if self.actor.send_message(Work { enqueued, _slot: slot, task }).is_err() {
            self.metrics.stage_queued.with_label_values(&[name]).dec();
            return Err(PoolError::Stopped(name));
        }
        match rx.await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(_)) => Err(PoolError::Panicked(name)),
            Err(_) => Err(PoolError::Stopped(name)),
        }
    }

    /// Work waiting or running in this stage.
    pub fn depth(&self) -> usize {
        QUEUE_CAPACITY - self.slots.available_permits()
    }
}
