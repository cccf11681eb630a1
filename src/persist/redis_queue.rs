//! `JobQueue` on Redis streams, shared by every node.
//!
//! One stream per stage (`{prefix}:stage:{name}`, entries `job=<uuid>`) read through one consumer
//! group (`{prefix}:workers`, consumer = the node's name), so each entry goes to one node and
//! stays in the group's pending list (PEL) until acknowledged. The PEL entry's idle time is the
//! lease: `heartbeat` resets it, `reclaim` takes over entries idle longer than the lease, and the
//! PEL's delivery counter sends work that keeps failing to `{prefix}:dead`.
//!
//! Every acknowledged entry is also deleted, so a stage stream holds exactly the waiting and the
//! in-flight work; `depth` is then `XLEN - pending`. Multi-step changes (ack + queue next, ack +
//! dead-letter, claim + count + dead-letter) run as Lua scripts: Redis runs a script atomically, so
//! a crash cannot split them, and fred here is built without MULTI support.
//!
//! After a Redis restart without persistence the streams and group are gone: commands that need
//! the group recreate it on NOGROUP and carry on, and `state_losses` counts those events so the
//! lead can re-queue unfinished jobs from the job store (the queued items are lost with Redis).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::ExclusivePool;
use fred::prelude::*;

use super::redis_client::{self as rc, command, store_error};
use super::{Delivery, JobQueue, Reclaimed, StoreError, WorkItem};
use crate::config::RedisConfig;
use crate::job::{JobId, Stage};

/// Connections reserved for blocking claims. A blocked XREADGROUP holds its connection for the
/// whole wait, so claims never share the multiplexed client; more concurrent claims than this
/// queue for a connection (bounded by their own `wait`).
pub const BLOCKING_CONNECTIONS: usize = 8;
/// Approximate cap of the dead-letter stream (oldest trimmed first).
pub const DEAD_MAXLEN: u64 = 100_000;

/// Acks the delivery and, only if this call acknowledged it, queues the next stage: when another
/// node already finished the entry (it reclaimed it after our lease ran out) the job moved on
/// once already. Returns 1 if acknowledged here.
const COMPLETE: &str = r#"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if acked == 1 and ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[3])
end
return acked
"#;

/// Renews the lease of an entry this consumer still holds. XCLAIM alone would also steal an
/// entry another node reclaimed meanwhile, so ownership is checked first. 1 if renewed.
const HEARTBEAT: &str = r#"
local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if held.err or #held == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"#;

/// Moves one entry to the dead-letter stream (always recorded: it is the audit trail of why a
/// job failed) and acknowledges it.
const DEAD_LETTER: &str = r#"
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[3], 'stage', ARGV[4],
  'deliveries', ARGV[5], 'entry', ARGV[2], 'error', ARGV[6])
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
"#;

/// Claims up to ARGV[4] entries idle past ARGV[3] ms, following the XAUTOCLAIM cursor through
/// the whole PEL; those handed out more than ARGV[5] times are dead-lettered on the spot.
/// Returns `{id, job, deliveries, dead}` per claimed entry.
const RECLAIM: &str = r#"
local max = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local out = {}
local cursor = '0-0'
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', max - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local id, fields, job = e[1], e[2], ''
    if fields then
      for i = 1, #fields, 2 do if fields[i] == 'job' then job = fields[i + 1] end end
    end
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local n = 1
    if p[1] then n = p[1][4] end
    local dead = 0
    if n > limit then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'job', job, 'stage', ARGV[6],
        'deliveries', n, 'entry', id,
        'error', 'lease expired ' .. (n - 1) .. ' times; limit is ' .. limit .. ' deliveries')
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      dead = 1
    end
    out[#out + 1] = {id, job, n, dead}
  end
until cursor == '0-0' or #out >= max
return out
"#;

/// Entries not yet handed out: every acknowledged entry is deleted, so the stream holds the
/// waiting ones plus the pending ones. Without a group nothing was handed out.
const DEPTH: &str = r#"
local len = redis.call('XLEN', KEYS[1])
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if p.err then return len end
local n = len - p[1]
if n < 0 then n = 0 end
return n
"#;

pub struct RedisQueue {
    /// Multiplexed: every command that answers at once.
    client: Client,
    /// Exclusive connections for XREADGROUP ... BLOCK.
    blocking: ExclusivePool,
    prefix: String,
    group: String,
    node: String,
    lease: Duration,
    max_deliveries: u64,
    state_losses: AtomicU64,
}

impl RedisQueue {
    /// Connects to `cfg.url` as consumer `node` (unique per node: it owns that node's leases) and
    /// creates the stage streams and the group. Fails with `Unavailable` when Redis cannot be
    /// reached now; once connected, outages make calls fail with `Unavailable` within
    /// `redis_client::COMMAND_TIMEOUT` while the client reconnects in the background.
    pub async fn connect(cfg: &RedisConfig, node: &str) -> Result<RedisQueue, StoreError> {
        let client = rc::connect(&cfg.url).await?;
        let blocking = rc::builder(&cfg.url, true)?.build_exclusive_pool(BLOCKING_CONNECTIONS).map_err(|e| store_error("connect", e))?;
        if let Err(e) = blocking.init().await {
            rc::quit_in_background(client);
            return Err(store_error("connect", e));
        }
        let queue = RedisQueue {
            client,
            blocking,
            prefix: cfg.prefix.clone(),
            group: format!("{}:workers", cfg.prefix),
            node: node.to_string(),
            lease: Duration::from_secs(cfg.lease_s),
            max_deliveries: cfg.max_deliveries,
            state_losses: AtomicU64::new(0),
        };
        for stage in Stage::ALL {
            queue.ensure_group(stage).await?;
        }
        tracing::info!(node, prefix = %cfg.prefix, lease_s = cfg.lease_s, "redis queue connected");
        Ok(queue)
    }

    /// Overrides the lease (`cfg.lease_s`); tests use sub-second leases.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How many times a consumer group had to be recreated since connecting, i.e. how often
    /// Redis was found to have lost the queue (restart without persistence). When this grows the
    /// queued items are gone: re-queue unfinished jobs from the job store.
    pub fn state_losses(&self) -> u64 {
        self.state_losses.load(Ordering::Relaxed)
    }

    /// Marks this life of the queue: true when this call began a new one, i.e. Redis held no
    /// queue (first start, or a restart that lost its data). The one node that gets true
    /// re-queues the unfinished jobs from the job store; every other node gets false.
    pub async fn claim_epoch(&self) -> Result<bool, StoreError> {
        let args = vec![format!("{}:epoch", self.prefix), uuid::Uuid::now_v7().to_string(), "NX".into()];
        let reply = self.client.custom::<Value, _>(command("SET", false), args).await.map_err(|e| store_error("epoch", e))?;
        Ok(!reply.is_null())
    }

    pub fn stage_key(&self, stage: Stage) -> String {
        format!("{}:stage:{}", self.prefix, stage.name())
    }

    /// The dead-letter stream: entries `job, stage, deliveries, entry, error`.
    pub fn dead_key(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// Creates the stage stream and group if missing. The group starts at `0`, not `$`, so work
    /// pushed before the group existed (right after a Redis restart) is still delivered.
    async fn ensure_group(&self, stage: Stage) -> Result<bool, StoreError> {
        let key = self.stage_key(stage);
        let args = vec!["CREATE".to_string(), key, self.group.clone(), "0".into(), "MKSTREAM".into()];
        match self.client.custom::<Value, _>(command("XGROUP", false), args).await {
            Ok(_) => Ok(true),
            Err(e) if rc::is_busygroup(&e) => Ok(false),
            Err(e) => Err(store_error("xgroup create", e)),
        }
    }

    /// After a NOGROUP: recreate the group and count the loss.
    async fn recover_group(&self, stage: Stage) -> Result<(), StoreError> {
        if self.ensure_group(stage).await? {
            let losses = self.state_losses.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(stage = stage.name(), losses, "redis lost the queue (restart without persistence?); group recreated");
        }
        Ok(())
    }

    /// Runs a script by its SHA-1 (`EVALSHA`), sending its text only when Redis does not hold it
    /// yet (`NOSCRIPT`: first use, or a restart emptied the script cache).
    async fn eval(&self, script: &str, keys: &[String], args: Vec<String>) -> Result<Value, Error> {
        let sha = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(script.as_bytes()));
        let mut all = Vec::with_capacity(2 + keys.len() + args.len());
        all.push(sha);
        all.push(keys.len().to_string());
        all.extend(keys.iter().cloned());
        all.extend(args);
        match self.client.custom(command("EVALSHA", false), all.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.client.custom::<Value, _>(command("SCRIPT", false), vec!["LOAD".to_string(), script.to_string()]).await?;
                self.client.custom(command("EVALSHA", false), all).await
            }
            answered => answered,
        }
    }

    async fn read_group(&self, stage: Stage, max: usize, wait: Duration) -> Result<Option<Value>, Error> {
        let mut args = vec!["GROUP".to_string(), self.group.clone(), self.node.clone(), "COUNT".into(), max.to_string()];
        if wait.is_zero() {
            args.extend(["STREAMS".to_string(), self.stage_key(stage), ">".into()]);
            return self.client.custom(command("XREADGROUP", false), args).await.map(Some);
        }
        // BLOCK 0 would mean forever: at least 1 ms.
        let block_ms = wait.as_millis().max(1);
        args.extend(["BLOCK".to_string(), block_ms.to_string(), "STREAMS".into(), self.stage_key(stage), ">".into()]);
        let Ok(connection) = tokio::time::timeout(wait, self.blocking.acquire()).await else {
            // Every blocking connection is busy for longer than the caller wanted to wait.
            return Ok(None);
        };
        connection.with_options(&rc::blocking_options(wait)).custom(command("XREADGROUP", true), args).await.map(Some)
    }

    /// Acks and deletes an entry no job can be read from (nothing to hand out or fail).
    async fn drop_unreadable(&self, stage: Stage, entry: &str) {
        tracing::error!(stage = stage.name(), entry, "queue entry without a readable job id; dropped");
        let key = self.stage_key(stage);
        let _ = self.client.custom::<Value, _>(command("XACK", false), vec![key.clone(), self.group.clone(), entry.into()]).await;
        let _ = self.client.custom::<Value, _>(command("XDEL", false), vec![key, entry.to_string()]).await;
    }

    async fn reclaim_once(&self, stage: Stage, max: usize) -> Result<Value, Error> {
        let keys = [self.stage_key(stage), self.dead_key()];
        let args = vec![
            self.group.clone(),
            self.node.clone(),
            self.lease.as_millis().to_string(),
            max.to_string(),
            self.max_deliveries.to_string(),
            stage.name().to_string(),
            DEAD_MAXLEN.to_string(),
        ];
        self.eval(RECLAIM, &keys, args).await
    }
}

fn parse_job(fields: &std::collections::HashMap<String, String>) -> Option<JobId> {
    fields.get("job").and_then(|j| JobId::parse_str(j).ok())
}

impl JobQueue for RedisQueue {
    async fn push(&self, item: WorkItem) -> Result<(), StoreError> {
        let args = vec![self.stage_key(item.stage), "*".into(), "job".into(), item.job.to_string()];
        self.client.custom::<Value, _>(command("XADD", false), args).await.map_err(|e| store_error("push", e))?;
        Ok(())
    }

    async fn claim(&self, stage: Stage, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let reply = match self.read_group(stage, max, wait).await {
            Err(e) if rc::is_nogroup(&e) => {
                self.recover_group(stage).await?;
                self.read_group(stage, max, wait).await
            }
            other => other,
        }
        .map_err(|e| store_error("claim", e))?;
        let mut out = Vec::new();
        for (entry, fields) in reply.map(rc::read_reply).unwrap_or_default() {
            match parse_job(&fields) {
                Some(job) => out.push(Delivery { item: WorkItem { job, stage }, entry, deliveries: 1 }),
                None => self.drop_unreadable(stage, &entry).await,
            }
        }
        Ok(out)
    }

    async fn heartbeat(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let keys = [self.stage_key(delivery.item.stage)];
        let args = vec![self.group.clone(), self.node.clone(), delivery.entry.clone()];
        let renewed = self.eval(HEARTBEAT, &keys, args).await.map_err(|e| store_error("heartbeat", e))?;
        if renewed.as_i64() == Some(1) {
            return Ok(());
        }
        // Another node reclaimed it after our lease ran out, or Redis lost it. The error is
        // retryable-shaped but retrying will not bring the lease back: stop the work or finish
        // it knowing it may run twice.
        tracing::warn!(job_id = %delivery.item.job, stage = delivery.item.stage.name(), entry = %delivery.entry, node = %self.node, "lease lost");
        Err(StoreError::Unavailable(format!(
            "lease lost: entry {} of {} is no longer held by {}",
            delivery.entry,
            delivery.item.stage.name(),
            self.node
        )))
    }

    async fn complete(&self, delivery: &Delivery, next: Option<WorkItem>) -> Result<(), StoreError> {
        let this = self.stage_key(delivery.item.stage);
        let (next_key, next_job) = match next {
            Some(item) => (self.stage_key(item.stage), item.job.to_string()),
            None => (this.clone(), String::new()),
        };
        let args = vec![self.group.clone(), delivery.entry.clone(), next_job];
        let acked = self.eval(COMPLETE, &[this, next_key], args).await.map_err(|e| store_error("complete", e))?;
        if acked.as_i64() != Some(1) {
            tracing::warn!(
                job_id = %delivery.item.job, stage = delivery.item.stage.name(), entry = %delivery.entry,
                "completed work was already acknowledged (finished elsewhere, or lost by redis); next stage not queued again"
            );
        }
        Ok(())
    }

    async fn reclaim(&self, stage: Stage, max: usize) -> Result<Reclaimed, StoreError> {
        let mut reclaimed = Reclaimed::default();
        if max == 0 {
            return Ok(reclaimed);
        }
        let reply = match self.reclaim_once(stage, max).await {
            Err(e) if rc::is_nogroup(&e) => {
                // Nothing can be pending in a group that did not exist.
                self.recover_group(stage).await?;
                return Ok(reclaimed);
            }
            other => other.map_err(|e| store_error("reclaim", e))?,
        };
        for row in rc::array(reply) {
            let row = rc::array(row);
            let [id, job, deliveries, dead] = row.as_slice() else {
                return Err(StoreError::Corrupt(format!("reclaim script returned {row:?}")));
            };
            let entry = rc::text(id).unwrap_or_default().into_owned();
            let Some(job) = rc::text(job).and_then(|j| JobId::parse_str(&j).ok()) else {
                if dead.as_i64() != Some(1) {
                    self.drop_unreadable(stage, &entry).await;
                }
                continue;
            };
            let delivery = Delivery { item: WorkItem { job, stage }, entry, deliveries: deliveries.as_u64().unwrap_or(1) };
            if dead.as_i64() == Some(1) {
                tracing::warn!(job_id = %job, stage = stage.name(), deliveries = delivery.deliveries, "work dead-lettered after too many deliveries");
                reclaimed.dead.push(delivery);
            } else {
                tracing::info!(job_id = %job, stage = stage.name(), deliveries = delivery.deliveries, node = %self.node, "work reclaimed");
                reclaimed.live.push(delivery);
            }
        }
        Ok(reclaimed)
    }

    async fn dead_letter(&self, delivery: &Delivery, error: &str) -> Result<(), StoreError> {
        let keys = [self.stage_key(delivery.item.stage), self.dead_key()];
        let args = vec![
            self.group.clone(),
            delivery.entry.clone(),
            delivery.item.job.to_string(),
            delivery.item.stage.name().to_string(),
            delivery.deliveries.to_string(),
            error.to_string(),
            DEAD_MAXLEN.to_string(),
        ];
        self.eval(DEAD_LETTER, &keys, args).await.map_err(|e| store_error("dead letter", e))?;
        Ok(())
    }

    async fn depth(&self, stage: Stage) -> Result<u64, StoreError> {
        let depth = self.eval(DEPTH, &[self.stage_key(stage)], vec![self.group.clone()]).await.map_err(|e| store_error("depth", e))?;
        depth.as_u64().ok_or_else(|| StoreError::Corrupt(format!("depth script returned {depth:?}")))
    }
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        rc::quit_in_background(self.client.clone());
        let pool = self.blocking.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(rc::COMMAND_TIMEOUT, pool.quit()).await;
            });
        }
    }
}
