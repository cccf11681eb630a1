//! `StagePool`: one actor per stage, the supervisor of that stage's workers. It holds the stage's
//! queue and hands each piece of work to an idle `StageWorker` (a child actor); the number of
//! workers is the stage's parallelism. A worker whose work panics fails; the pool starts another
//! after a capped backoff and hands the same work out again, up to `MAX_DELIVERIES` times, after
//! which the caller gets `PoolError::Panicked`.
//!
//! ractor mailboxes are unbounded, so the bound lives in the handle: `StagePoolRef::run` first
//! takes one of `QUEUE_CAPACITY` slots (waiting when all are taken: backpressure on the job), and
//! only then sends the work. Time spent waiting for a slot and for a worker is exported per stage.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::ActorSlot;
use super::stage_worker::{StageWorker, WorkerMessage};
use crate::backoff::Backoff;
use crate::job::Stage;
use crate::metrics::Metrics;

/// Work queued or running per stage before senders wait.
pub const QUEUE_CAPACITY: usize = 256;
/// Times one piece of work is handed out while its workers keep failing.
pub const MAX_DELIVERIES: u32 = 3;
const RESTART_BASE: Duration = Duration::from_millis(100);
const RESTART_CAP: Duration = Duration::from_secs(10);

/// A piece of work as a worker runs it; it can be run again when a worker died running it.
pub type Task = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub struct StagePool;

pub struct PoolArgs {
    pub stage: Stage,
    pub concurrency: usize,
    pub metrics: Arc<Metrics>,
}

pub struct PoolState {
    stage: Stage,
    metrics: Arc<Metrics>,
    pending: VecDeque<Work>,
    idle: Vec<ActorRef<WorkerMessage>>,
    busy: HashMap<ActorId, (ActorRef<WorkerMessage>, Work)>,
    /// Workers failed since work last finished: the restart backoff.
    failures: u32,
}

pub struct Work {
    enqueued: Instant,
    task: Task,
    /// Answers the caller when the work is given up.
    give_up: Box<dyn FnOnce(PoolError) + Send>,
    deliveries: u32,
    _slot: QueueSlot,
}

pub enum PoolMessage {
    Run(Work),
    /// A worker finished its work and is idle.
    Done(ActorId),
    /// Start a worker in place of one that failed (sent after its backoff).
    Respawn,
}

impl Actor for StagePool {
    type Msg = PoolMessage;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(&self, myself: ActorRef<PoolMessage>, args: PoolArgs) -> Result<PoolState, ActorProcessingErr> {
        tracing::info!(stage = args.stage.name(), concurrency = args.concurrency, capacity = QUEUE_CAPACITY, "stage pool started");
        let mut state =
            PoolState { stage: args.stage, metrics: args.metrics, pending: VecDeque::new(), idle: vec![], busy: HashMap::new(), failures: 0 };
        for _ in 0..args.concurrency.max(1) {
            spawn_worker(&myself, &mut state).await?;
        }
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<PoolMessage>, message: PoolMessage, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        match message {
            PoolMessage::Run(work) => state.pending.push_back(work),
            PoolMessage::Done(worker) => {
                if let Some((worker, _work)) = state.busy.remove(&worker) {
                    state.metrics.stage_running.with_label_values(&[state.stage.name()]).dec();
                    state.failures = 0;
                    state.idle.push(worker);
                }
            }
            PoolMessage::Respawn => spawn_worker(&myself, state).await?,
        }
        dispatch(state);
        Ok(())
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<PoolMessage>, event: SupervisionEvent, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else { return Ok(()) };
        let name = state.stage.name();
        state.idle.retain(|w| w.get_id() != cell.get_id());
        state.failures += 1;
        let delay = Backoff::nth(RESTART_BASE, RESTART_CAP, state.failures - 1);
        state.metrics.stage_worker_restarts.with_label_values(&[name]).inc();
        if let Some((_, mut work)) = state.busy.remove(&cell.get_id()) {
            state.metrics.stage_running.with_label_values(&[name]).dec();
            if work.deliveries >= MAX_DELIVERIES {
                tracing::error!(stage = name, error = %error, deliveries = work.deliveries, "stage work keeps killing its worker; giving it up");
                (work.give_up)(PoolError::Panicked(name));
            } else {
                tracing::warn!(stage = name, error = %error, delay_ms = delay.as_millis() as u64, "stage worker failed; restarting it and handing its work out again");
                work.deliveries += 1;
                state.pending.push_front(work);
            }
        }
        myself.send_after(delay, || PoolMessage::Respawn);
        Ok(())
    }
}

async fn spawn_worker(myself: &ActorRef<PoolMessage>, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
    let (worker, _) = Actor::spawn_linked(None, StageWorker, myself.clone(), myself.get_cell()).await?;
    state.idle.push(worker);
    Ok(())
}

/// Hands pending work to idle workers, oldest first.
fn dispatch(state: &mut PoolState) {
    while !state.pending.is_empty() {
        let Some(worker) = state.idle.pop() else { return };
        let work = state.pending.pop_front().expect("checked");
        if work.deliveries == 1 {
            state.metrics.stage_wait.with_label_values(&[state.stage.name()]).observe(work.enqueued.elapsed().as_secs_f64());
        }
        if worker.send_message(WorkerMessage::Run(work.task.clone())).is_err() {
            // The worker is gone (its failure is on its way to us): keep the work for another.
            state.pending.push_front(work);
            continue;
        }
        state.metrics.stage_running.with_label_values(&[state.stage.name()]).inc();
        state.busy.insert(worker.get_id(), (worker, work));
    }
}

/// Why a stage's work did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0} stage pool is not running")]
    Stopped(&'static str),
    #[error("{0} stage work panicked {MAX_DELIVERIES} times")]
    Panicked(&'static str),
}

/// One of a stage's queue places, held from `run` until the work is done or given up.
struct QueueSlot {
    _permit: OwnedSemaphorePermit,
    depth: prometheus::IntGauge,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.depth.dec();
    }
}

/// The bounded way in to a stage pool.
#[derive(Clone)]
pub struct StagePoolRef {
    pub stage: Stage,
    actor: Arc<ActorSlot<PoolMessage>>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl StagePoolRef {
    /// The way in to a stage's pool, reaching it once its actor is attached.
    pub fn new(stage: Stage, metrics: Arc<Metrics>) -> Self {
        Self { stage, actor: Arc::new(ActorSlot::default()), slots: Arc::new(Semaphore::new(QUEUE_CAPACITY)), metrics }
    }

    /// Points the handle at the pool's actor (its first start, or a restart).
    pub fn attach(&self, actor: ActorRef<PoolMessage>) {
        self.actor.set(actor);
    }

    /// Runs the work `make` makes on this stage's pool, waiting for a queue slot first, and
    /// returns its output. `make` is called again if a worker dies running its work.
    pub async fn run<T, F, Fut>(&self, make: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let name = self.stage.name();
        let enqueued = Instant::now();
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| PoolError::Stopped(name))?;
        let depth = self.metrics.stage_queued.with_label_values(&[name]);
        depth.inc();
        let (tx, rx) = oneshot::channel::<Result<T, PoolError>>();
        let reply = Arc::new(Mutex::new(Some(tx)));
        let answer = reply.clone();
        let task: Task = Arc::new(move || {
            let (work, answer) = (make(), answer.clone());
            async move {
                let output = work.await;
                if let Some(tx) = answer.lock().expect("reply lock").take() {
                    let _ = tx.send(Ok(output));
                }
            }
            .boxed()
        });
        let give_up = Box::new(move |error| {
            if let Some(tx) = reply.lock().expect("reply lock").take() {
                let _ = tx.send(Err(error));
            }
        });
        let work = Work { enqueued, task, give_up, deliveries: 1, _slot: QueueSlot { _permit: permit, depth } };
        self.actor.send(PoolMessage::Run(work)).map_err(|_| PoolError::Stopped(name))?;
        rx.await.unwrap_or(Err(PoolError::Stopped(name)))
    }

    /// Work waiting or running in this stage.
    pub fn depth(&self) -> usize {
        QUEUE_CAPACITY - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn pool(concurrency: usize) -> (StagePoolRef, Arc<Metrics>, ActorRef<PoolMessage>) {
        let metrics = Arc::new(Metrics::new());
        let args = PoolArgs { stage: Stage::Render, concurrency, metrics: metrics.clone() };
        let (actor, _) = Actor::spawn(None, StagePool, args).await.unwrap();
        let pool = StagePoolRef::new(Stage::Render, metrics.clone());
        pool.attach(actor.clone());
        (pool, metrics, actor)
    }

    fn restarts(metrics: &Metrics) -> u64 {
        metrics.stage_worker_restarts.with_label_values(&["render"]).get()
    }

    /// Waits for the pool to take back the slots of work whose answer is already out.
    async fn settled(metrics: &Metrics) -> (i64, i64) {
        let gauges = || (metrics.stage_queued.with_label_values(&["render"]).get(), metrics.stage_running.with_label_values(&["render"]).get());
        for _ in 0..100 {
            if gauges() == (0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gauges()
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_and_its_work_finishes() {
        let (pool, metrics, actor) = pool(1).await;
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let answer = pool
            .run(move || {
                let t = t.clone();
                async move {
                    if t.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("a worker's first try dies");
                    }
                    42
                }
            })
            .await;
        assert_eq!(answer.unwrap(), 42, "the same work, handed out again, finished");
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(restarts(&metrics), 1);
        // The only worker was replaced: later work runs too, and the queue is empty again.
        assert_eq!(pool.run(|| async { 7 }).await.unwrap(), 7);
        assert_eq!(settled(&metrics).await, (0, 0), "nothing queued or running once the work is done");
        assert_eq!(pool.depth(), 0);
        actor.stop(None);
    }

    #[tokio::test]
    async fn work_that_always_panics_is_given_up_and_the_pool_carries_on() {
        let (pool, metrics, actor) = pool(2).await;
        let doomed = pool.run(|| async { panic!("never works") });
        let fine = pool.run(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "done"
        });
        let (doomed, fine): (Result<(), _>, _) = tokio::join!(doomed, fine);
        assert!(matches!(doomed, Err(PoolError::Panicked("render"))), "{doomed:?}");
        assert_eq!(fine.unwrap(), "done");
        assert_eq!(restarts(&metrics), u64::from(MAX_DELIVERIES));
        assert_eq!(pool.run(|| async { 1 }).await.unwrap(), 1);
        assert_eq!(settled(&metrics).await, (0, 0), "the given-up work's slot is free again");
        actor.stop(None);
    }
}
