//! `JobQueue` in this process: the Redis queue's semantics (`redis_queue.rs`) for one node.
//!
//! Per stage a FIFO of waiting entries; a claimed entry is leased until `complete`,
//! `dead_letter` or its lease running out, when `reclaim` hands it out again, counting
//! deliveries, and dead-letters it past `max_deliveries`. A lease is held by the delivery that
//! took it: a heartbeat or a dead letter from an earlier delivery of a reclaimed entry finds the
//! lease lost, and completing it again queues nothing, as on Redis. Nothing survives the
//! process: after a restart the job store is the truth, and its unfinished jobs are queued again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Delivery, JobQueue, Reclaimed, StoreError, WorkItem};
use crate::job::Stage;

/// Dead letters kept (oldest dropped first), as Redis caps its dead-letter stream.
pub const DEAD_KEPT: usize = 10_000;

/// Why a work item left the queue without finishing.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub delivery: Delivery,
    pub error: String,
}

pub struct MemoryQueue {
    state: Mutex<State>,
    /// Per stage (in `Stage::ALL` order): woken when work arrives.
    arrived: [Notify; Stage::ALL.len()],
    lease: Duration,
    max_deliveries: u64,
    /// Whether `claim_epoch` has answered yet.
    epoch_claimed: AtomicBool,
}

#[derive(Default)]
struct State {
    next_entry: u64,
    waiting: HashMap<Stage, VecDeque<(u64, WorkItem)>>,
    leased: BTreeMap<u64, Lease>,
    dead: VecDeque<DeadLetter>,
}

struct Lease {
    item: WorkItem,
    deliveries: u64,
    until: Instant,
}

impl MemoryQueue {
    pub fn new(lease: Duration, max_deliveries: u64) -> Self {
        Self { state: Mutex::default(), arrived: Default::default(), lease, max_deliveries, epoch_claimed: AtomicBool::new(false) }
    }

    /// True once, at the first call: a queue in this process starts empty with the process, so
    /// the job store's unfinished jobs are to be queued again (as when Redis comes back empty).
    pub fn claim_epoch(&self) -> bool {
        !self.epoch_claimed.swap(true, Ordering::SeqCst)
    }

    /// Entries waiting or claimed, over every stage.
    pub fn entries(&self) -> u64 {
        let state = self.lock();
        (state.waiting.values().map(VecDeque::len).sum::<usize>() + state.leased.len()) as u64
    }

    /// The most recent dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }

    fn arrived(&self, stage: Stage) -> &Notify {
        &self.arrived[Stage::ALL.iter().position(|s| *s == stage).expect("a stage of Stage::ALL")]
    }

    /// As `complete` with a next stage, but when no other work waits at that stage, `next` is
    /// claimed at once and handed back, as `claim` would hand it to the next claim of its stage.
    pub fn complete_and_claim(&self, delivery: &Delivery, next: WorkItem) -> Option<Delivery> {
        let mut state = self.lock();
        if !state.finish(delivery) {
            return None;
        }
        if state.waiting.get(&next.stage).is_some_and(|waiting| !waiting.is_empty()) {
            state.push(next);
            drop(state);
            self.arrived(next.stage).notify_waiters();
            return None;
        }
        let entry = state.new_entry();
        Some(state.lease(entry, next, Instant::now() + self.lease))
    }

    fn take_waiting(&self, stage: Stage, max: usize) -> Vec<Delivery> {
        let mut state = self.lock();
        let until = Instant::now() + self.lease;
        let taken: Vec<_> = match state.waiting.get_mut(&stage) {
            Some(waiting) => waiting.drain(..max.min(waiting.len())).collect(),
            None => return Vec::new(),
        };
        taken.into_iter().map(|(entry, item)| state.lease(entry, item, until)).collect()
    }
}

impl State {
    fn push(&mut self, item: WorkItem) {
        let entry = self.new_entry();
        self.waiting.entry(item.stage).or_default().push_back((entry, item));
    }

    /// Hands `entry` out for the first time, leased until `until`.
    fn lease(&mut self, entry: u64, item: WorkItem, until: Instant) -> Delivery {
        self.leased.insert(entry, Lease { item, deliveries: 1, until });
        Delivery { item, entry: entry.to_string(), deliveries: 1 }
    }

    fn new_entry(&mut self) -> u64 {
        self.next_entry += 1;
        self.next_entry
    }

    /// Ends the lease `delivery` took; false when it was finished already (by an earlier
    /// delivery of the same entry), so the job is moved on once.
    fn finish(&mut self, delivery: &Delivery) -> bool {
        delivery.entry.parse::<u64>().ok().and_then(|entry| self.leased.remove(&entry)).is_some()
    }

    /// The lease `delivery` took, if that delivery still holds it.
    fn held(&mut self, delivery: &Delivery) -> Option<&mut Lease> {
        let entry = delivery.entry.parse::<u64>().ok()?;
        self.leased.get_mut(&entry).filter(|lease| lease.deliveries == delivery.deliveries)
    }

    fn bury(&mut self, delivery: Delivery, error: String) {
        if self.dead.len() == DEAD_KEPT {
            self.dead.pop_front();
        }
        self.dead.push_back(DeadLetter { delivery, error });
    }
}

fn lease_lost(delivery: &Delivery) -> StoreError {
    StoreError::Unavailable(format!("lease lost: entry {} of {} was handed out again", delivery.entry, delivery.item.stage.name()))
}

impl JobQueue for MemoryQueue {
    async fn push(&self, item: WorkItem) -> Result<(), StoreError> {
        self.lock().push(item);
        self.arrived(item.stage).notify_waiters();
        Ok(())
    }

    async fn claim(&self, stage: Stage, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // Listening before looking: a push between the two still wakes this claim.
            let mut arrived = pin!(self.arrived(stage).notified());
            arrived.as_mut().enable();
            let taken = self.take_waiting(stage, max);
            if !taken.is_empty() || tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(taken);
            }
        }
    }

    async fn heartbeat(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let mut state = self.lock();
        let lease = state.held(delivery).ok_or_else(|| lease_lost(delivery))?;
        lease.until = Instant::now() + self.lease;
        Ok(())
    }

    async fn complete(&self, delivery: &Delivery, next: Option<WorkItem>) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let (true, Some(next)) = (state.finish(delivery), next) {
            state.push(next);
            drop(state);
            self.arrived(next.stage).notify_waiters();
        }
        Ok(())
    }

    async fn reclaim(&self, stage: Stage, max: usize) -> Result<Reclaimed, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let expired: Vec<u64> =
            state.leased.iter().filter(|(_, l)| l.item.stage == stage && l.until <= now).map(|(entry, _)| *entry).take(max).collect();
        let mut reclaimed = Reclaimed::default();
        for entry in expired {
            let lease = state.leased.get_mut(&entry).expect("an expired lease");
            lease.deliveries += 1;
            lease.until = now + self.lease;
            let delivery = Delivery { item: lease.item, entry: entry.to_string(), deliveries: lease.deliveries };
            if delivery.deliveries > self.max_deliveries {
                state.leased.remove(&entry);
                let error = format!("lease expired {} times; limit is {} deliveries", delivery.deliveries - 1, self.max_deliveries);
                tracing::warn!(job_id = %delivery.item.job, stage = stage.name(), deliveries = delivery.deliveries, "work dead-lettered after too many deliveries");
                state.bury(delivery.clone(), error);
                reclaimed.dead.push(delivery);
            } else {
                tracing::info!(job_id = %delivery.item.job, stage = stage.name(), deliveries = delivery.deliveries, "work reclaimed");
                reclaimed.live.push(delivery);
            }
        }
        Ok(reclaimed)
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Ok(entry) = delivery.entry.parse::<u64>() {
            state.leased.remove(&entry);
        }
        state.bury(delivery.clone(), error.to_string());
        Ok(())
    }

    async fn depth(&self, stage: Stage) -> Result<u64, StoreError> {
        Ok(self.lock().waiting.get(&stage).map_or(0, |w| w.len() as u64))
    }
}
