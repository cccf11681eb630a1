//! `EventBus` on Redis: progress events and cancels as entries of one stream, node liveness as
//! expiring keys.
//!
//! Events and cancels share `{prefix}:events` (field `type` = `event` | `cancel`), so every node
//! reads both in the one order Redis assigned, and a watcher that reconnects resumes after the
//! last entry it saw instead of losing what was published meanwhile (pub/sub would drop it). The
//! stream is capped with `MAXLEN ~ events_maxlen`; a subscriber further behind than that skips
//! the trimmed entries. A subscriber starts where the stream is at the call, by Redis' clock as
//! estimated at connect (`subscribe` cannot wait for Redis); it may also get the events of the
//! few milliseconds before the call, never miss one after it.
//!
//! Event ids: a stream id `MS-SEQ` maps to `MS << 20 | SEQ`. Redis keeps stream ids increasing
//! (even if its clock steps back), MS needs 44 bits until the year 2527 and SEQ (entries within
//! one millisecond) stays far below 2^20, so the u64 order is the stream order.
//!
//! Liveness: `heartbeat_node` sets `{prefix}:node:{id}` with a time to live; `nodes` scans for
//! those keys, so a node that stops heart-beating disappears by itself.

use std::time::Duration;

use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::redis_client::{self as rc, command, store_error};
use super::{BusEvent, BusMessage, EventBus, StoreError};
use crate::backoff::Backoff;
use crate::config::RedisConfig;
use crate::job::{JobId, TenantId, now_ms};

/// Messages a subscriber may have buffered before its reader waits for the receiver.
pub const SUBSCRIBER_CAPACITY: usize = 1024;
/// Entries read per XREAD.
const READ_BATCH: usize = 256;
/// How long one XREAD blocks; bounds how late a subscriber notices it should stop.
const READ_BLOCK: Duration = Duration::from_secs(1);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
const SEQ_BITS: u32 = 20;

pub struct RedisBus {
    client: Client,
    /// Subscribers get their own connection (a blocked XREAD holds it), built from this.
    subscriber_builder: Builder,
    prefix: String,
    events_key: String,
    events_maxlen: u64,
    /// Redis clock minus ours, in ms, measured at connect: where "now" is in the stream.
    clock_offset_ms: i64,
    /// How far that estimate may be off (the TIME round trip) plus the current millisecond.
    clock_slack_ms: u64,
    shutdown: CancellationToken,
}

impl RedisBus {
    /// Connects to `cfg.url`; fails with `Unavailable` when Redis cannot be reached now. Once
    /// connected, outages make calls fail with `Unavailable` within a few seconds while the
    /// client reconnects in the background.
    pub async fn connect(cfg: &RedisConfig) -> Result<RedisBus, StoreError> {
        let client = rc::connect(&cfg.url).await?;
        let before = now_ms() as i64;
        let time = client.custom::<Value, String>(command("TIME", false), Vec::new()).await;
        let after = now_ms() as i64;
        let clock_offset_ms = match time.map(rc::array) {
            Ok(parts) if parts.len() == 2 => {
                let secs = parts[0].as_i64().unwrap_or(0);
                let micros = parts[1].as_i64().unwrap_or(0);
                secs * 1000 + micros / 1000 - (before + after) / 2
            }
            Ok(other) => {
                rc::quit_in_background(client);
                return Err(StoreError::Corrupt(format!("redis TIME returned {other:?}")));
            }
            Err(e) => {
                rc::quit_in_background(client);
                return Err(store_error("time", e));
            }
        };
        tracing::info!(prefix = %cfg.prefix, clock_offset_ms, "redis bus connected");
        Ok(RedisBus {
            client,
            subscriber_builder: rc::builder(&cfg.url, false)?,
            prefix: cfg.prefix.clone(),
            events_key: format!("{}:events", cfg.prefix),
            events_maxlen: cfg.events_maxlen,
            clock_offset_ms,
            clock_slack_ms: (after - before).max(0) as u64 + 1,
            shutdown: CancellationToken::new(),
        })
    }

    pub fn events_key(&self) -> &str {
        &self.events_key
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    async fn append(&self, fields: Vec<String>) -> Result<String, StoreError> {
        let mut args = vec![self.events_key.clone(), "MAXLEN".into(), "~".into(), self.events_maxlen.to_string(), "*".into()];
        args.extend(fields);
        let id: Value = self.client.custom(command("XADD", false), args).await.map_err(|e| store_error("publish", e))?;
        rc::text(&id).map(|id| id.into_owned()).ok_or_else(|| StoreError::Corrupt(format!("XADD returned {id:?}")))
    }
}

/// `MS-SEQ` as `MS << 20 | SEQ` (see the module doc).
pub fn event_id(stream_id: &str) -> Option<u64> {
    let (ms, seq) = stream_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (ms < 1 << (64 - SEQ_BITS) && seq < 1 << SEQ_BITS).then_some((ms << SEQ_BITS) | seq)
}

impl EventBus for RedisBus {
    async fn publish(&self, job: JobId, tenant: &TenantId, kind: serde_json::Value) -> Result<u64, StoreError> {
        let fields = vec![
            "type".to_string(),
            "event".into(),
            "job".into(),
            job.to_string(),
            "tenant".into(),
            tenant.clone(),
            "ts_ms".into(),
            now_ms().to_string(),
            "kind".into(),
            kind.to_string(),
        ];
        let id = self.append(fields).await?;
        event_id(&id).ok_or_else(|| StoreError::Corrupt(format!("stream id {id} does not fit an event id")))
    }

    async fn cancel(&self, job: JobId) -> Result<(), StoreError> {
        self.append(vec!["type".into(), "cancel".into(), "job".into(), job.to_string()]).await?;
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<BusMessage> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        // "From now on" is fixed here, synchronously, rather than when the task first reads
        // (an event published meanwhile would be lost). Our estimate of Redis' clock is off by
        // up to the slack, so start that much earlier: a subscriber may also get events from the
        // last few milliseconds before the call, never fewer than those after it.
        let redis_now = (now_ms() as i64 + self.clock_offset_ms).max(0) as u64;
        let from_ms = redis_now.saturating_sub(self.clock_slack_ms);
        // Stream ids greater than this one: everything stamped `from_ms` or later.
        let start = format!("{}-{}", from_ms.saturating_sub(1), u64::MAX);
        match self.subscriber_builder.build() {
            Ok(client) => {
                let reader = Subscriber { client, key: self.events_key.clone(), last: start, tx, shutdown: self.shutdown.clone() };
                crate::task::spawn_named("redis-bus-subscriber", reader.run());
            }
            // Only a bad config fails here, and connect already built a client from it.
            Err(e) => tracing::error!(error = %e, "redis bus subscriber not started"),
        }
        rx
    }

    async fn heartbeat_node(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        let ttl_ms = ttl.as_millis().max(1);
        let args = vec![self.node_key(node), now_ms().to_string(), "PX".into(), ttl_ms.to_string()];
        self.client.custom::<Value, _>(command("SET", false), args).await.map_err(|e| store_error("node heartbeat", e))?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        let prefix = self.node_key("");
        let pattern = format!("{}*", rc::glob_escape(&prefix));
        let mut cursor = "0".to_string();
        let mut nodes = Vec::new();
        loop {
            let args = vec![cursor.clone(), "MATCH".into(), pattern.clone(), "COUNT".into(), "200".into()];
            let reply: Value = self.client.custom(command("SCAN", false), args).await.map_err(|e| store_error("nodes", e))?;
            let mut parts = rc::array(reply).into_iter();
            cursor = parts.next().and_then(|c| rc::text(&c).map(|c| c.into_owned())).unwrap_or_else(|| "0".into());
            for key in parts.next().map(rc::array).unwrap_or_default() {
                if let Some(node) = rc::text(&key).and_then(|k| k.strip_prefix(&prefix).map(str::to_string)) {
                    nodes.push(node);
                }
            }
            if cursor == "0" {
                break;
            }
        }
        // SCAN may return a key twice.
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.shutdown.cancel();
        rc::quit_in_background(self.client.clone());
    }
}

/// One subscriber's reader: its own connection, XREAD from the last id seen.
struct Subscriber {
    client: Client,
    key: String,
    last: String,
    tx: mpsc::Sender<BusMessage>,
    shutdown: CancellationToken,
}

impl Subscriber {
    async fn run(mut self) {
        // Reconnects forever on its own, the first connection included.
        let _driver = self.client.connect();
        let reader = self.client.with_options(&rc::blocking_options(READ_BLOCK));
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let args = vec![
                "COUNT".to_string(),
                READ_BATCH.to_string(),
                "BLOCK".into(),
                READ_BLOCK.as_millis().to_string(),
                "STREAMS".into(),
                self.key.clone(),
                self.last.clone(),
            ];
            let read = reader.custom::<Value, _>(command("XREAD", true), args);
            let reply = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.tx.closed() => break,
                reply = read => reply,
            };
            match reply {
                Ok(reply) => {
                    backoff.reset();
                    if !self.forward(rc::read_reply(reply)).await {
                        break;
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, last = %self.last, "redis bus read failed; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        let _ = tokio::time::timeout(rc::COMMAND_TIMEOUT, self.client.quit()).await;
    }

    /// Sends the entries on, waiting while the receiver is full; false once nobody listens.
    async fn forward(&mut self, entries: Vec<(String, std::collections::HashMap<String, String>)>) -> bool {
        for (id, fields) in entries {
            let message = decode(&id, &fields);
            self.last = id;
            let Some(message) = message else {
                tracing::warn!(entry = %self.last, ?fields, "unreadable bus entry skipped");
                continue;
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                sent = self.tx.send(message) => if sent.is_err() { return false },
            }
        }
        true
    }
}

fn decode(id: &str, fields: &std::collections::HashMap<String, String>) -> Option<BusMessage> {
    let job = JobId::parse_str(fields.get("job")?).ok()?;
    match fields.get("type")?.as_str() {
        "cancel" => Some(BusMessage::Cancel(job)),
        "event" => Some(BusMessage::Event(BusEvent {
            id: event_id(id)?,
            job,
            tenant: fields.get("tenant")?.clone(),
            ts_ms: fields.get("ts_ms")?.parse().ok()?,
            kind: serde_json::from_str(fields.get("kind")?).ok()?,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_stream_order() {
        let ids = ["1795333630789-0", "1795333630789-1", "1795333630789-1048575", "1795333630790-0"];
        let mapped: Vec<u64> = ids.iter().map(|id| event_id(id).unwrap()).collect();
        assert!(mapped.windows(2).all(|w| w[0] < w[1]), "{mapped:?}");
        assert_eq!(event_id("1795333630789-1048576"), None);
        assert_eq!(event_id("garbage"), None);
    }

    #[test]
    fn decode_reads_events_and_cancels() {
        let job = crate::job::new_job_id();
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cancel = decode("5-0", &map(&[("type", "cancel"), ("job", &job.to_string())]));
        assert_eq!(cancel, Some(BusMessage::Cancel(job)));
        let event =
            decode("5-1", &map(&[("type", "event"), ("job", &job.to_string()), ("tenant", "t"), ("ts_ms", "7"), ("kind", r#"{"a":1}"#)]));
        let Some(BusMessage::Event(event)) = event else { panic!("{event:?}") };
        assert_eq!((event.id, event.ts_ms, event.tenant.as_str()), ((5 << 20) | 1, 7, "t"));
        assert_eq!(event.kind, serde_json::json!({"a": 1}));
    }
}
