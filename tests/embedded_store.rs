//! The embedded redb store against the shared `JobStore` contract (`common::store_contract`), and
//! what only a file store has: its data outlives the process that wrote it.

mod common;

use clipmill::job::new_job_id;
use clipmill::persist::{EmbeddedStore, JobStore};
use common::store_contract as contract;

fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: opening makes it.
    let store = EmbeddedStore::open(&dir.path().join("nested/jobs.redb"), 16 << 20).unwrap();
    (dir, store)
}

#[tokio::test]
async fn round_trip_and_replace() {
    contract::round_trip_and_replace(&store().1).await;
}

#[tokio::test]
async fn lists_newest_first_per_tenant() {
    contract::lists_newest_first_per_tenant(&store().1).await;
}

#[tokio::test]
async fn unfinished_skips_final_states() {
    contract::unfinished_skips_final_states(&store().1).await;
}

#[tokio::test]
async fn usage_counts_one_tenants_jobs() {
    contract::usage_counts_one_tenants_jobs(&store().1).await;
}

#[tokio::test]
async fn batches_round_trip_and_age_out() {
    contract::batches_round_trip_and_age_out(&store().1).await;
}

#[tokio::test]
async fn deletes_one_finished_job_on_request() {
    contract::deletes_one_finished_job_on_request(&store().1).await;
}

#[tokio::test]
async fn idempotency_keys_are_unique_per_tenant() {
    contract::idempotency_keys_are_unique_per_tenant(&store().1).await;
}

#[tokio::test]
async fn retention_deletes_only_finished_jobs_by_age_and_count() {
    contract::retention_deletes_only_finished_jobs_by_age_and_count(&store().1).await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let job = contract::record("acme");
    let key_owner = new_job_id();
    {
        let store = EmbeddedStore::open(&path, 16 << 20).unwrap();
        store.put(&job).await.unwrap();
        store.claim_idempotency_key(&"acme".into(), "k", key_owner).await.unwrap();
    }
    let store = EmbeddedStore::open(&path, 16 << 20).unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(store.list(&"acme".into(), None, None, 10).await.unwrap().jobs, vec![job]);
    assert_eq!(store.claim_idempotency_key(&"acme".into(), "k", new_job_id()).await.unwrap(), key_owner);
}
