//! `PgStore` against a real, private PostgreSQL per test (see `common::pg_server`): the same
//! behaviour as the embedded store, plus what only a shared server has (concurrent claims, nodes
//! migrating together, Postgres restarting under a live pool).

mod common;

use std::time::{Duration, Instant};

use clipmill::config::PostgresConfig;
use clipmill::edit::{Mode, Size};
use clipmill::job::{
    ClipRecord, JobError, JobId, JobOptions, JobRecord, JobSpec, JobStatus, Source, Stage, StageStatus, TenantId,
    new_job_id,
};
use clipmill::persist::{JobStore, PgStore, StoreError};
use common::pg_server::PgServer;
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

fn record(tenant: &str) -> JobRecord {
    let options = JobOptions {
        clips: 3,
        min_len: 15.0,
        max_len: 60.0,
        size: Size::VERTICAL_1080,
        mode: Mode::Track,
        captions: true,
        webhook: None,
    };
    let spec = JobSpec { source: Source::Url("https://example.com/talk.mp4".into()), options };
    JobRecord::new(new_job_id(), tenant.into(), spec)
}

fn ids(jobs: &[JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn put_get_round_trip_and_replace() {
    let (server, store) = setup().await;
    store.ping().await.unwrap();

    let mut job = record("acme");
    job.spec.options.webhook = Some("https://example.com/hook?a=1&b=\"é\"".into());
    job.stage_mut(Stage::Download).status = StageStatus::Done;
    job.stage_mut(Stage::Audio).progress = 0.1 + 0.2; // not exact in decimal: must survive jsonb
    job.clips.push(ClipRecord {
        index: 0,
        start: 12.345,
        end: 47.0,
        score: 0.87,
        title: "Why 1/3 ≠ 0.333…".into(),
        scorer: "llm".into(),
        mp4: "acme/job/clip-01.mp4".into(),
        srt: Some("acme/job/clip-01.srt".into()),
        vtt: None,
        fallbacks: vec!["no face: centre crop".into()],
    });
    job.error = Some(JobError { code: "x".into(), message: "tab\there".into(), stage: Some(Stage::Render) });
    job.created_ms = u64::from(u32::MAX) * 1000;
    store.put(&job).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));

    job.status = JobStatus::Running;
    job.updated_ms += 5;
    store.put(&job).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(store.get(new_job_id()).await.unwrap(), None);

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
async fn list_pages_newest_first_per_tenant() {
    let (_server, store) = setup().await;
    let mut all = Vec::new();
    for i in 0..5 {
        let mut job = record("acme");
        job.status = if i % 2 == 0 { JobStatus::Succeeded } else { JobStatus::Queued };
        store.put(&job).await.unwrap();
        all.push(job.id);
    }
    store.put(&record("globex")).await.unwrap();
    all.reverse();
    let acme = TenantId::from("acme");

    let first = store.list(&acme, None, None, 2).await.unwrap();
    assert_eq!(ids(&first.jobs), all[..2]);
    assert_eq!(first.next, Some(all[1]));
    let second = store.list(&acme, None, first.next, 2).await.unwrap();
    assert_eq!(ids(&second.jobs), all[2..4]);
    let last = store.list(&acme, None, second.next, 2).await.unwrap();
    assert_eq!(ids(&last.jobs), all[4..]);
    assert_eq!(last.next, None);
    // An exactly full last page must not promise another; a zero limit still moves on.
    assert_eq!(store.list(&acme, None, None, 5).await.unwrap().next, None);
    assert_eq!(ids(&store.list(&acme, None, None, 0).await.unwrap().jobs), all[..1]);

    let done = store.list(&acme, Some(JobStatus::Succeeded), None, 2).await.unwrap();
    assert_eq!(ids(&done.jobs), vec![all[0], all[2]]);
    let rest = store.list(&acme, Some(JobStatus::Succeeded), done.next, 2).await.unwrap();
    assert_eq!((ids(&rest.jobs), rest.next), (vec![all[4]], None));
    assert!(store.list(&acme, Some(JobStatus::Failed), None, 10).await.unwrap().jobs.is_empty());

    let other = store.list(&"globex".into(), None, None, 10).await.unwrap();
    assert_eq!(other.jobs.len(), 1);
    assert!(other.jobs.iter().all(|j| j.tenant == "globex"));
    assert!(store.list(&"acm".into(), None, None, 10).await.unwrap().jobs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_are_unique_per_tenant() {
    let (server, store) = setup().await;
    let (first, second, third) = (new_job_id(), new_job_id(), new_job_id());
    let acme = TenantId::from("acme");
    assert_eq!(store.claim_idempotency_key(&acme, "k1", first).await.unwrap(), first);
    assert_eq!(store.claim_idempotency_key(&acme, "k1", second).await.unwrap(), first);
    assert_eq!(store.claim_idempotency_key(&"globex".into(), "k1", third).await.unwrap(), third);
    assert_eq!(store.claim_idempotency_key(&acme, "k2", second).await.unwrap(), second);

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
    assert_eq!(before.iter().map(|(v, n, _)| (*v, n.as_str())).collect::<Vec<_>>(), vec![(1, "jobs")]);

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
    let (_server, store) = setup().await;
    let mut expected = Vec::new();
    for status in [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled] {
        let mut job = record(if expected.len() % 2 == 0 { "acme" } else { "globex" });
        job.status = status;
        store.put(&job).await.unwrap();
        if !status.is_final() {
            expected.push(job);
        }
    }
    // Oldest first, as the embedded store returns them.
    assert_eq!(store.unfinished().await.unwrap(), expected);
}

#[tokio::test]
async fn retention_deletes_only_finished_jobs_by_age_and_count() {
    let (server, store) = setup().await;
    const DAY: u64 = 86_400_000;
    let now = 100 * DAY;
    // (status, finished days ago); the first two carry idempotency keys.
    let plan = [
        (JobStatus::Succeeded, 40),
        (JobStatus::Failed, 35),
        (JobStatus::Queued, 50),
        (JobStatus::Running, 45),
        (JobStatus::Cancelled, 5),
        (JobStatus::Succeeded, 3),
        (JobStatus::Succeeded, 1),
    ];
    let mut jobs = Vec::new();
    for (i, (status, age)) in plan.into_iter().enumerate() {
        let mut job = record(if i % 2 == 0 { "acme" } else { "globex" });
        job.status = status;
        job.updated_ms = now - age * DAY;
        store.put(&job).await.unwrap();
        store.claim_idempotency_key(&job.tenant, &format!("k{i}"), job.id).await.unwrap();
        jobs.push(job);
    }
    let present = || async {
        let mut found = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            if store.get(job.id).await.unwrap().is_some() {
                found.push(i);
            }
        }
        found
    };
    let client = raw(&server).await;
    let keys = || async {
        let rows = client.query("SELECT key FROM idempotency ORDER BY key", &[]).await.unwrap();
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    };

    assert_eq!(store.prune(now, 0, 0).await.unwrap(), 0, "both rules off");
    // By age: the two finished over 30 days ago go, with their keys; older unfinished ones stay.
    assert_eq!(store.prune(now, 30, 0).await.unwrap(), 2);
    assert_eq!(present().await, vec![2, 3, 4, 5, 6]);
    assert_eq!(keys().await, vec!["k2", "k3", "k4", "k5", "k6"]);
    let fresh = new_job_id();
    assert_eq!(store.claim_idempotency_key(&jobs[0].tenant, "k0", fresh).await.unwrap(), fresh, "key freed");

    // By count: keep the 2 most recently finished; unfinished jobs neither count nor go.
    assert_eq!(store.prune(now, 0, 2).await.unwrap(), 1);
    assert_eq!(present().await, vec![2, 3, 5, 6]);
    assert_eq!(store.prune(now, 0, 2).await.unwrap(), 0, "nothing more to do");
    assert_eq!(store.prune(now, 30, 1).await.unwrap(), 1);
    assert_eq!(present().await, vec![2, 3, 6]);
    assert_eq!(keys().await, vec!["k0", "k2", "k3", "k6"]);

    // More than one batch (500) of old finished jobs goes in one call.
    let old: Vec<JobRecord> = (0..1100)
        .map(|_| {
            let mut job = record("bulk");
            job.status = JobStatus::Failed;
            job.updated_ms = now - 60 * DAY;
            job
        })
        .collect();
    for chunk in old.chunks(50) {
        join_all(chunk.iter().map(|job| store.put(job))).await.into_iter().collect::<Result<Vec<_>, _>>().unwrap();
    }
    assert_eq!(store.prune(now, 30, 0).await.unwrap(), 1100);
    assert_eq!(present().await, vec![2, 3, 6]);
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
