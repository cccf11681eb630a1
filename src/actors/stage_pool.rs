//! `StagePool`: one actor per stage, the supervisor of that stage's workers. The stage's queue is
//! shared: `StagePoolRef::run` puts work on it and the pool's `StageWorker`s (child actors, as
//! many as the stage's parallelism) take it from there, so a piece of work passes through no
//! actor's mailbox on its way. A worker whose work panics fails; the pool starts another after a
//! capped backoff and puts the same work back on the queue, up to `MAX_DELIVERIES` times, after
//! which the caller gets `PoolError::Panicked`.
//!
//! ractor mailboxes are unbounded, so the bound lives in the handle: `StagePoolRef::run` first
//! takes one of `QUEUE_CAPACITY` slots (waiting when all are taken: backpressure on the job), and
//! only then queues the work. Time spent waiting for a slot and for a worker is exported per stage.
//! The queue belongs to the handle, not to the actor, so work queued while a failed pool restarts
//! waits for the new one's workers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::stage_worker::{StageWorker, WorkerArgs};
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
    pub concurrency: usize,
    pub queue: StagePoolRef,
}

pub struct PoolState {
    queue: StagePoolRef,
    /// Cancelled when this incarnation of the pool ends (stopped or failed): its idle workers
    /// then stop, and a restarted pool's workers take over.
    _closing: DropGuard,
    closing: CancellationToken,
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
    /// Start a worker in place of one that failed (sent after its backoff).
    Respawn,
}

impl Actor for StagePool {
    type Msg = PoolMessage;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(&self, myself: ActorRef<PoolMessage>, args: PoolArgs) -> Result<PoolState, ActorProcessingErr> {
        let stage = args.queue.stage.name();
        tracing::info!(stage, concurrency = args.concurrency, capacity = QUEUE_CAPACITY, "stage pool started");
        let closing = CancellationToken::new();
        let state = PoolState { queue: args.queue, _closing: closing.clone().drop_guard(), closing };
        for _ in 0..args.concurrency.max(1) {
            spawn_worker(&myself, &state).await?;
        }
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<PoolMessage>, PoolMessage::Respawn: PoolMessage, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        spawn_worker(&myself, state).await
    }

    async fn handle_supervisor_evt(&self, myself: ActorRef<PoolMessage>, event: SupervisionEvent, state: &mut PoolState) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else { return Ok(()) };
        let queue = &state.queue.shared;
        let name = state.queue.stage.name();
        let failures = queue.failures.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = Backoff::nth(RESTART_BASE, RESTART_CAP, failures - 1);
        queue.metrics.stage_worker_restarts.with_label_values(&[name]).inc();
        if let Some(mut work) = queue.finished(cell.get_id()) {
            if work.deliveries >= MAX_DELIVERIES {
                tracing::error!(stage = name, error = %error, deliveries = work.deliveries, "stage work keeps killing its worker; giving it up");
                (work.give_up)(PoolError::Panicked(name));
            } else {
                tracing::warn!(stage = name, error = %error, delay_ms = delay.as_millis() as u64, "stage worker failed; restarting it and handing its work out again");
                work.deliveries += 1;
                let _ = queue.tx.send(work);
            }
        }
        myself.send_after(delay, || PoolMessage::Respawn);
        Ok(())
    }
}

async fn spawn_worker(myself: &ActorRef<PoolMessage>, state: &PoolState) -> Result<(), ActorProcessingErr> {
    let args = WorkerArgs { queue: state.queue.shared.clone(), closing: state.closing.clone() };
    Actor::spawn_linked(None, StageWorker, args, myself.get_cell()).await?;
    Ok(())
}

/// A stage's queue, shared by the handle that fills it and the workers that empty it.
pub struct StageQueue {
    stage: Stage,
    tx: mpsc::UnboundedSender<Work>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>,
    /// What each worker is running, to hand it out again if the worker dies.
    running: Mutex<HashMap<ActorId, Work>>,
    /// Workers failed since work last finished: the restart backoff.
    failures: AtomicU32,
    metrics: Arc<Metrics>,
}

impl StageQueue {
    /// The next piece of work, waiting for one; `None` once `closing` fires first.
    pub async fn next(&self, closing: &CancellationToken) -> Option<Work> {
        tokio::select! {
            biased;
            () = closing.cancelled() => None,
            work = async { self.rx.lock().await.recv().await } => work,
        }
    }

    /// The next piece of work if one waits now.
    pub fn try_next(&self) -> Option<Work> {
        self.rx.try_lock().ok()?.try_recv().ok()
    }

    /// Records `work` as `worker`'s and returns what to run.
    pub fn started(&self, worker: ActorId, work: Work) -> Task {
        let name = self.stage.name();
        if work.deliveries == 1 {
            self.metrics.stage_wait.with_label_values(&[name]).observe(work.enqueued.elapsed().as_secs_f64());
        }
        self.metrics.stage_running.with_label_values(&[name]).inc();
        let task = work.task.clone();
        self.running.lock().expect("running work").insert(worker, work);
        task
    }

    /// Takes back what `worker` ran (its slot is freed when the work is dropped).
    pub fn finished(&self, worker: ActorId) -> Option<Work> {
        let work = self.running.lock().expect("running work").remove(&worker)?;
        self.metrics.stage_running.with_label_values(&[self.stage.name()]).dec();
        Some(work)
    }

    /// Work ran to its end: the restart backoff starts over.
    pub fn succeeded(&self, worker: ActorId) {
        self.finished(worker);
        self.failures.store(0, Ordering::Relaxed);
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
    shared: Arc<StageQueue>,
    slots: Arc<Semaphore>,
}

impl StagePoolRef {
    /// The way in to a stage's pool: its queue, which the pool's workers take from.
    pub fn new(stage: Stage, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = StageQueue {
            stage,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            running: Mutex::new(HashMap::new()),
            failures: AtomicU32::new(0),
            metrics,
        };
        Self { stage, shared: Arc::new(shared), slots: Arc::new(Semaphore::new(QUEUE_CAPACITY)) }
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
        let depth = self.shared.metrics.stage_queued.with_label_values(&[name]);
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
        self.shared.tx.send(work).map_err(|_| PoolError::Stopped(name))?;
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
        let pool = StagePoolRef::new(Stage::Render, metrics.clone());
        let (actor, _) = Actor::spawn(None, StagePool, PoolArgs { concurrency, queue: pool.clone() }).await.unwrap();
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
