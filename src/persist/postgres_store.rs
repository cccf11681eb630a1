//! `JobStore` on PostgreSQL (tokio-postgres behind a deadpool pool): the production store, shared
//! by every node. Same semantics as the embedded store, to the order of a listing.
//!
//! Tables (see `migrations/postgres/`): `jobs` holds each record whole as `jsonb` beside copies of
//! the columns queries filter and sort on; `idempotency` maps `(tenant, key)` to a job. Every
//! call is one short transaction (most are one statement). Ids are UUIDv7 and Postgres compares
//! uuids bytewise, so `ORDER BY id DESC` is newest first, exactly as redb's byte order.
//!
//! Migrations are embedded SQL files applied at connect, each in its own transaction under a
//! transaction-scoped advisory lock, and recorded in `schema_migrations`: nodes that start
//! together apply each one once, and connecting again is a no-op.
//!
//! The pool checks a connection before handing it out and replaces dead ones, so the store
//! recovers by itself when Postgres restarts; meanwhile calls fail fast with `Unavailable`.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};
use tracing::{debug, info, warn};

use super::{JobPage, JobStore, StoreError, Usage};
use crate::config::PostgresConfig;
use crate::job::{BatchId, BatchRecord, JobId, JobRecord, JobStatus, TenantId};

/// One schema change, applied once per database.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// In order; never edit an applied one, add the next.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "jobs", sql: include_str!("../../migrations/postgres/0001_jobs.sql") },
    Migration { version: 2, name: "batches", sql: include_str!("../../migrations/postgres/0002_batches.sql") },
];

/// Advisory lock key serialising migrations across nodes: "clipmill" in ASCII.
const MIGRATION_LOCK: i64 = 0x636c_6970_6d69_6c6c;

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// A dead address must not hang a call (the OS default is minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a free connection when the pool is exhausted.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Jobs deleted per retention statement, so no prune holds locks for long.
const PRUNE_BATCH: i64 = 500;
const DAY_MS: u64 = 86_400_000;

const PUT: &str = "INSERT INTO jobs (id, tenant, status, created_ms, updated_ms, record)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_ms = EXCLUDED.updated_ms, record = EXCLUDED.record";
const GET: &str = "SELECT record FROM jobs WHERE id = $1";
const UNFINISHED: &str =
    "SELECT record FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY id";
const CLAIM: &str = "INSERT INTO idempotency (tenant, key, job) VALUES ($1, $2, $3)
    ON CONFLICT (tenant, key) DO NOTHING RETURNING job";
const CLAIMED: &str = "SELECT job FROM idempotency WHERE tenant = $1 AND key = $2";
const PUT_BATCH: &str = "INSERT INTO batches (id, tenant, created_ms, record) VALUES ($1, $2, $3, $4)
    ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record";
const USAGE: &str = "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')),
    coalesce(sum((record->>'source_seconds')::float8) FILTER (WHERE created_ms >= $2), 0),
    coalesce(sum((record->>'bytes_stored')::int8), 0)::int8
    FROM jobs WHERE tenant = $1";
const GET_BATCH: &str = "SELECT record FROM batches WHERE id = $1";
const PRUNE_BATCHES: &str = "DELETE FROM batches WHERE created_ms < $1";

/// Finished jobs that finished (were last updated) before `$1`, oldest first, `$2` at most; their
/// idempotency keys go with them. `FOR UPDATE` re-checks the status of a row a put is changing.
const DELETE_FINISHED: &str = "WITH gone AS (
        DELETE FROM jobs WHERE id = $1 AND status IN ('succeeded', 'failed', 'cancelled') RETURNING id
    ), keys AS (
        DELETE FROM idempotency WHERE job IN (SELECT id FROM gone)
    )
    SELECT count(*) FROM gone";
const PRUNE_OLD: &str = "WITH doomed AS (
        SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND updated_ms < $1
        ORDER BY updated_ms, id LIMIT $2 FOR UPDATE
    ), gone AS (
        DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING id
    ), keys AS (
        DELETE FROM idempotency WHERE job IN (SELECT id FROM gone)
    )
    SELECT count(*) FROM gone";
/// Finished jobs beyond the newest `$1` (by finish time), `$2` at most, with their keys.
const PRUNE_EXCESS: &str = "WITH doomed AS (
        SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')
        ORDER BY updated_ms DESC, id DESC OFFSET $1 LIMIT $2 FOR UPDATE
    ), gone AS (
        DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING id
    ), keys AS (
        DELETE FROM idempotency WHERE job IN (SELECT id FROM gone)
    )
    SELECT count(*) FROM gone";

/// Job records in Postgres. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    // The pool's config holds the password: show only its state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore").field("size", &status.size).field("available", &status.available).finish()
    }
}

impl PgStore {
    /// Builds the pool (`pool_size` connections at most, opened on demand) and brings the schema
    /// up to date. Fails with `Unavailable` when Postgres cannot be reached.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&cfg.url)
            .map_err(|e| StoreError::Unavailable(format!("postgres url is invalid: {}", describe(&e))))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("clipmill");
        }
        // Verified: a connection left dead by a Postgres restart fails its check at checkout
        // and is replaced, instead of failing the caller's statement.
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Verified });
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool cannot be built: {e}")))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Checks that Postgres answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies the migrations this database lacks, in order.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        for m in MIGRATIONS {
            let tx = client.transaction().await?;
            // Held until this transaction ends: a node starting at the same time waits here,
            // then sees the migration recorded and skips it.
            tx.execute("SELECT pg_advisory_xact_lock($1::bigint)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute(MIGRATIONS_TABLE).await?;
            let applied =
                tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&m.version]).await?.is_some();
            if applied {
                tx.rollback().await?;
                continue;
            }
            tx.batch_execute(m.sql).await?;
            tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&m.version, &m.name])
                .await?;
            tx.commit().await?;
            info!(version = m.version, name = m.name, "applied postgres migration");
        }
        let newest: Option<i32> = column(&client.query_one("SELECT max(version) FROM schema_migrations", &[]).await?)?;
        let known = MIGRATIONS.last().map(|m| m.version);
        if newest > known {
            // A newer node migrated further; migrations only add, so this node can still run.
            warn!(database_version = newest, known_version = known, "postgres schema is newer than this build");
        }
        Ok(())
    }

    /// Runs one retention statement in batches until it deletes less than a full batch.
    async fn prune_batches(&self, sql: &str, bound: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        let mut deleted = 0;
        loop {
            let row = client.query_one(&statement, &[&bound, &PRUNE_BATCH]).await?;
            let batch: i64 = column(&row)?;
            deleted += batch as u64;
            if batch < PRUNE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

impl JobStore for PgStore {
    async fn put(&self, job: &JobRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(PUT).await?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &job.id,
            &job.tenant,
            &job.status.name(),
            &millis(job.created_ms),
            &millis(job.updated_ms),
            &Json(job),
        ];
        client.execute(&statement, &params).await?;
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(GET).await?;
        client.query_opt(&statement, &[&id]).await?.as_ref().map(record).transpose()
    }

    async fn list(
        &self,
        tenant: &TenantId,
        status: Option<JobStatus>,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        // A page of zero could never carry a cursor forward; the API bounds it, this is a backstop.
        let limit = limit.max(1);
        // One more than asked tells whether another page follows.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let status = status.map(JobStatus::name);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![tenant, &fetch];
        let mut filter = String::new();
        // A statement per shape rather than `$n IS NULL OR …`, so each plan can use its index.
        if let Some(status) = &status {
            params.push(status);
            filter.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(cursor) = &after {
            params.push(cursor);
            filter.push_str(&format!(" AND id < ${}", params.len()));
        }
        let sql = format!("SELECT record FROM jobs WHERE tenant = $1{filter} ORDER BY id DESC LIMIT $2");

        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &params).await?;
        let mut jobs = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next })
    }

    async fn unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(UNFINISHED).await?;
        client.query(&statement, &[]).await?.iter().map(record).collect()
    }

    async fn claim_idempotency_key(&self, tenant: &TenantId, key: &str, id: JobId) -> Result<JobId, StoreError> {
        let client = self.client().await?;
        let claim = client.prepare_cached(CLAIM).await?;
        let claimed = client.prepare_cached(CLAIMED).await?;
        // The insert waits for a concurrent claim of the same key to commit, and the select (a
        // new statement, a new snapshot) then sees the winner. Only retention deleting the key
        // in between sends us round again.
        for _ in 0..3 {
            if let Some(row) = client.query_opt(&claim, &[tenant, &key, &id]).await? {
                return column(&row);
            }
            if let Some(row) = client.query_opt(&claimed, &[tenant, &key]).await? {
                return column(&row);
            }
        }
        Err(StoreError::Unavailable(format!("idempotency key {key:?} kept changing owner")))
    }

    async fn usage(&self, tenant: &TenantId, since_ms: u64) -> Result<Usage, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(USAGE).await?;
        let row = client.query_one(&statement, &[tenant, &millis(since_ms)]).await?;
        let (in_flight, seconds, bytes): (i64, f64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(Usage { in_flight: in_flight as u64, source_seconds: seconds, bytes_stored: bytes as u64 })
    }

    async fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(PUT_BATCH).await?;
        client.execute(&statement, &[&batch.id, &batch.tenant, &millis(batch.created_ms), &Json(batch)]).await?;
        Ok(())
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(GET_BATCH).await?;
        let Some(row) = client.query_opt(&statement, &[&id]).await? else { return Ok(None) };
        let Json(batch) = column::<Json<BatchRecord>>(&row)?;
        Ok(Some(batch))
    }

    async fn prune(&self, now_ms: u64, older_than_days: u64, keep_max_finished: u64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        if older_than_days > 0 {
            let cutoff = now_ms.saturating_sub(older_than_days.saturating_mul(DAY_MS));
            deleted += self.prune_batches(PRUNE_OLD, millis(cutoff)).await?;
            let client = self.client().await?;
            let statement = client.prepare_cached(PRUNE_BATCHES).await?;
            client.execute(&statement, &[&millis(cutoff)]).await?;
        }
        if keep_max_finished > 0 {
            deleted += self.prune_batches(PRUNE_EXCESS, millis(keep_max_finished)).await?;
        }
        debug!(deleted, older_than_days, keep_max_finished, "pruned finished jobs");
        Ok(deleted)
    }

    async fn delete_finished(&self, id: JobId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(DELETE_FINISHED).await?;
        let deleted: i64 = column(&client.query_one(&statement, &[&id]).await?)?;
        Ok(deleted == 1)
    }
}

/// Postgres has no unsigned integers; milliseconds since 1970 fit an i64 for 292 million years.
fn millis(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn record(row: &Row) -> Result<JobRecord, StoreError> {
    let Json(job) = column::<Json<JobRecord>>(row)?;
    Ok(job)
}

/// The row's first column; a value that does not decode is `Corrupt`, not a connection problem.
fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(row: &Row) -> Result<T, StoreError> {
    row.try_get(0).map_err(|e| StoreError::Corrupt(format!("postgres row: {}", describe(&e))))
}

/// An error and its causes on one line ("db error" alone says nothing).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Errors Postgres reports about the statement or data (SQLSTATE classes 22 data exception,
/// 23 integrity violation, 42 syntax or access rule, XX internal) will not go away on retry:
/// `Corrupt`. Everything else (no connection, shutdown, too many connections, serialization
/// failure, failed login) is `Unavailable`, for the caller to retry or report not ready.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = describe(&e);
        match e.code().map(|code| code.code().get(..2).unwrap_or_default()) {
            Some("22" | "23" | "42" | "XX") => Self::Corrupt(format!("postgres rejected the statement: {text}")),
            Some(_) => Self::Unavailable(format!("postgres failed: {text}")),
            None => Self::Unavailable(format!("postgres is unreachable: {text}")),
        }
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => e.into(),
        PoolError::Timeout(TimeoutType::Wait) => {
            StoreError::Unavailable(format!("no postgres connection came free within {} s", POOL_WAIT.as_secs()))
        }
        PoolError::Timeout(TimeoutType::Create) => StoreError::Unavailable("connecting to postgres timed out".into()),
        PoolError::Timeout(TimeoutType::Recycle) => {
            StoreError::Unavailable("checking a postgres connection timed out".into())
        }
        PoolError::Closed => StoreError::Unavailable("postgres pool is closed".into()),
        PoolError::NoRuntimeSpecified => StoreError::Unavailable("postgres pool has no runtime".into()),
        PoolError::PostCreateHook(e) => StoreError::Unavailable(format!("postgres connection hook failed: {e}")),
    }
}
