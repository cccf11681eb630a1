//! `Admission`: releases the entries of batches (jobs stored as `waiting`) to the supervisor, at
//! most `server.batches.max_in_flight` at a time, one tenant after another in turn. A tenant's
//! 500-video playlist therefore holds a few jobs in flight, another tenant's batch gets every
//! other free place, and single jobs (`POST /api/jobs`) never wait behind either: they are
//! admitted at once as before.
//!
//! The store is the truth: at start (and after a restart by the supervisor) the waiting entries
//! and the batch jobs in flight are read back from it, so a crash loses no entry. A release
//! re-reads the job first, so an entry cancelled meanwhile is skipped. In a cluster every API
//! node admits the entries it knows; an idempotency key claimed per job makes sure only one
//! node releases each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ServerCtx;
use super::messages::{AdmitError, EventKind, SupervisorMessage};
use crate::job::{JobId, JobStatus, TenantId};
use crate::persist::JobStore;

/// How often finished entries are noticed and their places given to waiting ones.
const TICK: Duration = Duration::from_millis(500);

pub enum AdmissionMessage {
    /// Entries of a new batch, stored as `waiting`, in the batch's order.
    Enqueue { tenant: TenantId, jobs: Vec<JobId> },
    /// Cancels an entry that is still waiting; replies whether it was.
    Cancel { job: JobId, reply: RpcReplyPort<bool> },
    Tick,
}

pub struct Admission;

pub struct AdmissionArgs {
    pub ctx: Arc<ServerCtx>,
    pub supervisor: ActorRef<SupervisorMessage>,
}

pub struct AdmissionState {
    ctx: Arc<ServerCtx>,
    supervisor: ActorRef<SupervisorMessage>,
    waiting: FairQueue,
    /// Released entries not yet final.
    running: HashSet<JobId>,
    /// This instance's claim on the entries it releases (cluster only).
    token: uuid::Uuid,
}

impl Actor for Admission {
    type Msg = AdmissionMessage;
    type State = AdmissionState;
    type Arguments = AdmissionArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: AdmissionArgs) -> Result<AdmissionState, ActorProcessingErr> {
        let mut state = AdmissionState {
            ctx: args.ctx,
            supervisor: args.supervisor,
            waiting: FairQueue::default(),
            running: HashSet::new(),
            token: uuid::Uuid::now_v7(),
        };
        // Oldest first, so each tenant's entries keep their batch's order.
        for job in state.ctx.store.unfinished().await?.into_iter().filter(|j| j.batch.is_some()) {
            match job.status {
                JobStatus::Waiting => state.waiting.push(job.tenant, job.id),
                _ => {
                    state.running.insert(job.id);
                }
            }
        }
        if state.waiting.len() > 0 {
            tracing::info!(waiting = state.waiting.len(), running = state.running.len(), "batch entries waiting for admission");
        }
        myself.send_interval(TICK, || AdmissionMessage::Tick);
        Ok(state)
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, message: AdmissionMessage, state: &mut AdmissionState) -> Result<(), ActorProcessingErr> {
        match message {
            AdmissionMessage::Enqueue { tenant, jobs } => {
                for job in jobs {
                    state.waiting.push(tenant.clone(), job);
                }
                state.release().await;
            }
            AdmissionMessage::Cancel { job, reply } => {
                state.waiting.remove(job);
                let _ = reply.send(state.cancel_waiting(job).await);
            }
            AdmissionMessage::Tick => {
                state.forget_finished().await;
                state.release().await;
            }
        }
        state.ctx.metrics.batch_entries_waiting.set(state.waiting.len() as i64);
        Ok(())
    }
}

/// What became of one entry offered to the supervisor.
enum Released {
    Yes,
    /// Cancelled, gone, or taken by another node: nothing to do.
    Skipped,
    /// No room now (or the store failed): try again at the next tick.
    NotNow,
}

impl AdmissionState {
    /// Entries in flight that have ended make room.
    async fn forget_finished(&mut self) {
        let mut ended = Vec::new();
        for &job in &self.running {
            match self.ctx.store.get(job).await {
                Ok(Some(record)) if !record.status.is_final() => {}
                Ok(_) => ended.push(job),
                Err(e) => tracing::warn!(job = %job, error = %e, "cannot read a batch entry's state"),
            }
        }
        for job in ended {
            self.running.remove(&job);
        }
    }

    /// Releases waiting entries, tenant after tenant, while there is room.
    async fn release(&mut self) {
        let limit = self.ctx.services.config.server.batches.in_flight();
        while self.running.len() < limit {
            let Some((tenant, job)) = self.waiting.pop() else { return };
            match self.offer(job).await {
                Released::Yes => {
                    self.running.insert(job);
                }
                Released::Skipped => {}
                Released::NotNow => {
                    self.waiting.push_front(tenant, job);
                    return;
                }
            }
        }
    }

    async fn offer(&self, job: JobId) -> Released {
        let mut record = match self.ctx.store.get(job).await {
            Ok(Some(record)) if record.status == JobStatus::Waiting => record,
            Ok(_) => return Released::Skipped,
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "cannot read a waiting batch entry");
                return Released::NotNow;
            }
        };
        if self.ctx.cluster.queue.shared() {
            match self.ctx.store.claim_idempotency_key(&record.tenant, &format!("admission:{job}"), self.token).await {
                Ok(owner) if owner == self.token => {}
                Ok(_) => return Released::Skipped,
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "cannot claim a batch entry");
                    return Released::NotNow;
                }
            }
        }
        record.status = JobStatus::Queued;
        record.updated_ms = crate::job::now_ms();
        let submitted = ractor::call!(self.supervisor, |reply| SupervisorMessage::Submit { record: Box::new(record), reply });
        match submitted {
            Ok(Ok(())) => Released::Yes,
            Ok(Err(AdmitError::Full(_) | AdmitError::ShuttingDown)) => Released::NotNow,
            Ok(Err(e)) => {
                tracing::warn!(job = %job, error = %e, "batch entry not admitted");
                Released::NotNow
            }
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "supervisor did not answer");
                Released::NotNow
            }
        }
    }

    /// Marks a job that is still waiting cancelled; `false` when it is not waiting.
    async fn cancel_waiting(&self, job: JobId) -> bool {
        let Ok(Some(mut record)) = self.ctx.store.get(job).await else { return false };
        if record.status != JobStatus::Waiting {
            return false;
        }
        record.status = JobStatus::Cancelled;
        record.updated_ms = crate::job::now_ms();
        match self.ctx.store.put(&record).await {
            Ok(()) => {
                self.ctx.publish(job, &record.tenant, EventKind::JobCancelled);
                true
            }
            Err(e) => {
                tracing::warn!(job = %job, error = %e, "cannot cancel a waiting batch entry");
                false
            }
        }
    }
}

/// Waiting entries per tenant, taken round robin: each tenant's own in the order given.
#[derive(Default)]
struct FairQueue {
    per_tenant: HashMap<TenantId, VecDeque<JobId>>,
    /// Tenants with entries, whose turn is next first.
    turns: VecDeque<TenantId>,
}

impl FairQueue {
    fn push(&mut self, tenant: TenantId, job: JobId) {
        let queue = self.per_tenant.entry(tenant.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(tenant);
        }
        queue.push_back(job);
    }

    /// Puts back an entry that could not be released, keeping its tenant's turn.
    fn push_front(&mut self, tenant: TenantId, job: JobId) {
        self.per_tenant.entry(tenant.clone()).or_default().push_front(job);
        // Its turn was passed on when the entry was taken: it takes it back.
        self.turns.retain(|t| t != &tenant);
        self.turns.push_front(tenant);
    }

    /// The next tenant's first entry; that tenant goes to the back of the turns.
    fn pop(&mut self) -> Option<(TenantId, JobId)> {
        let tenant = self.turns.pop_front()?;
        let queue = self.per_tenant.get_mut(&tenant).expect("a tenant with a turn has entries");
        let job = queue.pop_front().expect("a tenant with a turn has entries");
        if queue.is_empty() {
            self.per_tenant.remove(&tenant);
        } else {
            self.turns.push_back(tenant.clone());
        }
        Some((tenant, job))
    }

    fn remove(&mut self, job: JobId) {
        let Some(tenant) = self.per_tenant.iter().find(|(_, q)| q.contains(&job)).map(|(t, _)| t.clone()) else { return };
        let queue = self.per_tenant.get_mut(&tenant).expect("just found");
        queue.retain(|j| *j != job);
        if queue.is_empty() {
            self.per_tenant.remove(&tenant);
            self.turns.retain(|t| t != &tenant);
        }
    }

    fn len(&self) -> usize {
        self.per_tenant.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<JobId> {
        (0..n).map(|_| uuid::Uuid::now_v7()).collect()
    }

    fn drain(q: &mut FairQueue) -> Vec<(String, JobId)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn tenants_take_turns_and_each_keeps_its_order() {
        let (a, b) = (ids(4), ids(2));
        let mut q = FairQueue::default();
        a.iter().for_each(|&j| q.push("a".into(), j));
        b.iter().for_each(|&j| q.push("b".into(), j));
        let order: Vec<_> = drain(&mut q);
        let expected = [("a", a[0]), ("b", b[0]), ("a", a[1]), ("b", b[1]), ("a", a[2]), ("a", a[3])];
        assert_eq!(order, expected.map(|(t, j)| (t.to_string(), j)));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_tenant_arriving_late_gets_the_next_turn_not_the_end_of_the_line() {
        let (a, b) = (ids(500), ids(1));
        let mut q = FairQueue::default();
        a.iter().for_each(|&j| q.push("a".into(), j));
        assert_eq!(q.pop().unwrap().1, a[0]);
        q.push("b".into(), b[0]);
        assert_eq!(q.pop().unwrap().1, a[1], "a's turn came before b arrived");
        assert_eq!(q.pop().unwrap(), ("b".to_string(), b[0]));
    }

    #[test]
    fn an_entry_put_back_is_next_again_and_removed_entries_never_come() {
        let (a, b) = (ids(3), ids(1));
        let mut q = FairQueue::default();
        a.iter().for_each(|&j| q.push("a".into(), j));
        b.iter().for_each(|&j| q.push("b".into(), j));
        let (tenant, first) = q.pop().unwrap();
        q.push_front(tenant, first);
        q.remove(a[1]);
        q.remove(b[0]);
        let order: Vec<JobId> = drain(&mut q).into_iter().map(|(_, j)| j).collect();
        assert_eq!(order, [a[0], a[2]]);
    }
}
