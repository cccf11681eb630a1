//! `ProgressHub`: numbers every event, keeps a bounded replay buffer, and fans events out to
//! WebSocket subscribers through a broadcast channel, so a slow subscriber can never slow a
//! publisher: it lags, and the socket side coalesces or disconnects it.
//!
//! A child of the supervisor: if it fails, the next incarnation carries on numbering where the
//! last stopped (the counter outlives it), its subscribers' streams end (their sessions close with
//! 1001 and `last_id`), and a client resuming from before the restart gets a fresh snapshot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast;

use super::messages::{Event, HubMessage, Subscription};

/// Events kept for reconnecting clients; one that missed more gets a fresh snapshot.
pub const REPLAY_CAPACITY: usize = 8192;
/// Events a subscriber may fall behind by before it lags.
pub const FANOUT_CAPACITY: usize = 4096;

pub struct ProgressHub;

pub struct HubState {
    next_id: u64,
    /// `next_id`, kept outside the actor for the incarnation after a restart.
    numbering: Arc<AtomicU64>,
    /// A subscriber resuming after an id below this missed events no longer kept (ids need
    /// not be dense: in a cluster they come from the bus).
    unknown_before: u64,
    replay: VecDeque<Arc<Event>>,
    fanout: broadcast::Sender<Arc<Event>>,
}

impl HubState {
    fn deliver(&mut self, event: Arc<Event>) {
        if self.replay.is_empty() && self.unknown_before == 0 {
            // Ids in a cluster start wherever the bus is: nothing before the first is known here.
            self.unknown_before = event.id.saturating_sub(1);
        }
        self.next_id = event.id + 1;
        self.numbering.store(self.next_id, Ordering::Relaxed);
        if self.replay.len() == REPLAY_CAPACITY
            && let Some(evicted) = self.replay.pop_front()
        {
            self.unknown_before = evicted.id;
        }
        self.replay.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.fanout.send(event);
    }
}

impl Actor for ProgressHub {
    type Msg = HubMessage;
    type State = HubState;
    /// The next event id, shared with the incarnations before and after this one.
    type Arguments = Arc<AtomicU64>;

    async fn pre_start(&self, _: ActorRef<Self::Msg>, numbering: Arc<AtomicU64>) -> Result<HubState, ActorProcessingErr> {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let next_id = numbering.load(Ordering::Relaxed).max(1);
        // Whatever came before this incarnation is not held here.
        let unknown_before = next_id - 1;
        Ok(HubState { next_id, numbering, unknown_before, replay: VecDeque::with_capacity(REPLAY_CAPACITY), fanout })
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, message: HubMessage, state: &mut HubState) -> Result<(), ActorProcessingErr> {
        match message {
            HubMessage::Publish { job, tenant, ts_ms, kind } => {
                let event = Arc::new(Event::new(state.next_id, job, tenant, ts_ms, *kind));
                state.deliver(event);
            }
            HubMessage::Deliver(event) => {
                if event.id >= state.next_id {
                    state.deliver(event);
                }
            }
            HubMessage::Subscribe { watch, last_id, reply } => {
                // Backlog and live stream are taken in one step of the actor, so nothing published
                // in between can fall through the gap.
                let live = state.fanout.subscribe();
                let (backlog, needs_snapshot) = match last_id {
                    None => (vec![], true),
                    Some(last) if last < state.unknown_before => (vec![], true),
                    Some(last) => (
                        state
                            .replay
                            .iter()
                            .filter(|e| e.id > last && watch.sees(e))
                            .cloned()
                            .collect(),
                        false,
                    ),
                };
                let _ = reply.send(Subscription { backlog, needs_snapshot, live });
            }
        }
        Ok(())
    }
}
