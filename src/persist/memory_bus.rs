//! `EventBus` in this process: the Redis bus's semantics (`redis_bus.rs`) for one node.
//!
//! Events and cancels go out on one broadcast channel, numbered under the lock that sends them,
//! so every subscriber gets one order and the ids increase along it, one at a time. The first id
//! is the clock at the first publication in milliseconds times 1000: ids keep rising across
//! restarts, and start after the hub's own numbering (which starts at the clock so, before any
//! job runs), since the hub drops what comes from behind it. A subscriber starts at the call; one
//! more than `RETAINED` messages behind skips the oldest, as a Redis subscriber behind a trimmed
//! stream does. Liveness: a node is alive until its last heartbeat's time to
//! live runs out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::redis_bus::SUBSCRIBER_CAPACITY;
use super::{BusEvent, BusMessage, EventBus, StoreError};
use crate::job::{JobId, TenantId, now_ms};

/// Messages kept for subscribers that are behind.
pub const RETAINED: usize = 10_000;

pub struct MemoryBus {
    /// The last event id given, and the channel: one lock, so ids follow the send order.
    sender: Mutex<(u64, broadcast::Sender<BusMessage>)>,
    nodes: Mutex<HashMap<String, Instant>>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self { sender: Mutex::new((0, broadcast::channel(RETAINED).0)), nodes: Mutex::default() }
    }
}

impl MemoryBus {
    fn send(&self, message: impl FnOnce(u64) -> BusMessage) -> u64 {
        let mut sender = self.sender.lock().expect("bus lock");
        sender.0 = if sender.0 == 0 { now_ms() * 1000 } else { sender.0 + 1 };
        // No subscriber is not an error: nobody is listening yet.
        let _ = sender.1.send(message(sender.0));
        sender.0
    }
}

impl EventBus for MemoryBus {
    async fn publish(&self, job: JobId, tenant: &TenantId, kind: serde_json::Value) -> Result<u64, StoreError> {
        Ok(self.send(|id| BusMessage::Event(BusEvent { id, job, tenant: tenant.clone(), ts_ms: now_ms(), kind })))
    }

    async fn cancel(&self, job: JobId) -> Result<(), StoreError> {
        self.send(|_| BusMessage::Cancel(job));
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusMessage> {
        let mut from = self.sender.lock().expect("bus lock").1.subscribe();
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        crate::task::spawn_named("memory-bus-subscriber", async move {
            loop {
                match from.recv().await {
                    Ok(message) => {
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "a bus subscriber fell behind; the oldest messages were skipped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }

    async fn heartbeat_node(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        self.nodes.lock().expect("nodes lock").insert(node.to_string(), Instant::now() + ttl);
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let now = Instant::now();
        nodes.retain(|_, until| *until > now);
        let mut alive: Vec<String> = nodes.keys().cloned().collect();
        alive.sort();
        Ok(alive)
    }
}
