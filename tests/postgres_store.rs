//! `PgStore` against a real, private PostgreSQL per test (see `common::pg_server`): the shared
//! `JobStore` contract (`common::store_contract`, which the embedded store passes too), plus what
//! only a shared server has (the copied columns, concurrent claims, nodes migrating together,
//! Postgres restarting under a live pool).

mod common;

use std::time::{Duration, Instant};

use clipmill::config::PostgresConfig;
use clipmill::job::{JobId, JobStatus, new_job_id};
use clipmill::persist::{JobStore, PgStore, StoreError};
use common::pg_server::PgServer;
use common::store_contract::{self as contract, record};
use futures_util::future::join_all;

fn config(server: &PgServer, pool_size: usize) -> PostgresConfig {
    PostgresConfig { url: server.url(), pool_size, retention_days: 0, retention_max_jobs: 0 }
}

async fn setup() -> (PgServer, PgStore) {
    let server = PgServer::start().await;
    let store = PgStore::connect(&config(&server, 8)).await.expect("connect to the test postgres");
    (server, store)
}

/// A plain client beside the store, to look at the tables themselves.
async fn raw(server: &PgServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn round_trip_and_replace() {
    let (server, store) = setup().await;
    store.ping().await.unwrap();
    let job = contract::round_trip_and_replace(&store).await;

    // The copied columns follow the record (listing and retention rely on them).
    let row = raw(&server)
        .await
        .query_one("SELECT tenant, status, created_ms, updated_ms FROM jobs WHERE id = $1", &[&job.id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "acme");
    assert_eq!(row.get::<_, String>(1), "running");
    assert_eq!(row.get::<_, i64>(2) as u64, job.created_ms);
    assert_eq!(row.get::<_, i64>(3) as u64, job.updated_ms);
}

#[tokio::test]
async fn lists_newest_first_per_tenant() {
    contract::lists_newest_first_per_tenant(&setup().await.1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_are_unique_per_tenant() {
    let (server, store) = setup().await;
    contract::idempotency_keys_are_unique_per_tenant(&store).await;

    // Twenty requests with the same key at once (over a pool of 8): one wins, all see it.
    let candidates: Vec<JobId> = (0..20).map(|_| new_job_id()).collect();
    let claims = candidates.iter().map(|&id| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_idempotency_key(&"acme".into(), "race", id).await.unwrap() })
    });
    let owners: Vec<JobId> = join_all(claims).await.into_iter().map(Result::unwrap).collect();
    assert!(candidates.contains(&owners[0]));
    assert!(owners.iter().all(|&o| o == owners[0]), "claims disagree: {owners:?}");
    let rows: i64 = raw(&server)
        .await
        .query_one("SELECT count(*) FROM idempotency WHERE key = 'race'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn migrations_apply_once_when_nodes_start_together() {
    let server = PgServer::start().await;
    let cfg = config(&server, 2);
    let (a, b, c) = tokio::join!(PgStore::connect(&cfg), PgStore::connect(&cfg), PgStore::connect(&cfg));
    let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());

    let client = raw(&server).await;
    let applied = || async {
        let rows = client.query("SELECT version, name, applied_at::text FROM schema_migrations", &[]).await.unwrap();
        rows.iter().map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1), r.get::<_, String>(2))).collect::<Vec<_>>()
    };
    let before = applied().await;
    assert_eq!(before.iter().map(|(v, n, _)| (*v, n.as_str())).collect::<Vec<_>>(), vec![(1, "jobs"), (2, "batches")]);

    // Connecting again is a no-op.
    PgStore::connect(&cfg).await.unwrap();
    assert_eq!(applied().await, before);

    // Both nodes share the one schema.
    let job = record("acme");
    a.put(&job).await.unwrap();
    assert_eq!(b.get(job.id).await.unwrap(), Some(job));
}

#[tokio::test]
async fn unfinished_skips_final_states() {
    contract::unfinished_skips_final_states(&setup().await.1).await;
}

#[tokio::test]
async fn usage_counts_one_tenants_jobs() {
    contract::usage_counts_one_tenants_jobs(&setup().await.1).await;
}

#[tokio::test]
async fn batches_round_trip_and_age_out() {
    contract::batches_round_trip_and_age_out(&setup().await.1).await;
}

#[tokio::test]
async fn deletes_one_finished_job_on_request() {
    contract::deletes_one_finished_job_on_request(&setup().await.1).await;
}

#[tokio::test]
async fn retention_deletes_only_finished_jobs_by_age_and_count() {
    let (server, store) = setup().await;
    contract::retention_deletes_only_finished_jobs_by_age_and_count(&store).await;
    // The keys of the deleted jobs went with them (k0 was claimed again after its job went).
    let rows = raw(&server).await.query("SELECT key FROM idempotency ORDER BY key", &[]).await.unwrap();
    let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(keys, vec!["k0", "k2", "k3", "k6"]);
}

#[tokio::test]
async fn survives_postgres_restart() {
    let (mut server, store) = setup().await;
    let job = record("acme");
    store.put(&job).await.unwrap();
    // Fill the pool with several connections, all of which the restart will kill.
    join_all((0..6).map(|_| store.get(job.id))).await.into_iter().for_each(|r| assert!(r.unwrap().is_some()));

    server.stop().await;
    let started = Instant::now();
    let down = [
        store.get(job.id).await.map(|_| ()),
        store.put(&job).await,
        store.list(&"acme".into(), None, None, 10).await.map(|_| ()),
        store.claim_idempotency_key(&"acme".into(), "k", job.id).await.map(|_| ()),
        store.ping().await,
    ];
    for result in down {
        match result {
            Err(e @ StoreError::Unavailable(_)) => {
                assert!(e.is_retryable());
                let text = e.to_string();
                assert!(text.starts_with("store is unavailable: postgres"), "{text}");
            }
            other => panic!("expected Unavailable while postgres is down, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "failing took {:?}", started.elapsed());

    // Same store, no reconstruction: the pool replaces its dead connections.
    server.start_again().await;
    store.ping().await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    let mut later = job.clone();
    later.status = JobStatus::Succeeded;
    store.put(&later).await.unwrap();
    let all = join_all((0..8).map(|_| store.get(job.id))).await;
    assert!(all.into_iter().all(|r| r.unwrap().unwrap().status == JobStatus::Succeeded));
}
