//! What every `JobStore` must do, whatever holds the records: run against the embedded redb store
//! (tests/embedded_store.rs) and Postgres (tests/postgres_store.rs), so the two cannot drift apart.
//! Each check takes a fresh, empty store.

use clipmill::edit::Size;
use clipmill::job::{
    ClipRecord, JobError, JobId, JobOptions, Reframe, JobRecord, JobSpec, JobStatus, Source, Stage, StageStatus, TenantId,
    new_job_id,
};
use clipmill::persist::JobStore;
use futures_util::future::join_all;

const DAY_MS: u64 = 86_400_000;

pub fn record(tenant: &str) -> JobRecord {
    let options = JobOptions {
        clips: 3,
        min_len: 15.0,
        max_len: 60.0,
        size: Size::VERTICAL_1080,
        mode: Reframe::Track,
        captions: clipmill::edit::CaptionStyle { preset: Some(clipmill::edit::captions::Preset::Boxed), ..Default::default() },
        webhook: None,
        instruction: Some("find the \"funny\" moments".into()),
    };
    let spec = JobSpec { source: Source::Url("https://example.com/talk.mp4".into()), options };
    JobRecord::new(new_job_id(), tenant.into(), spec)
}

pub fn ids(jobs: &[JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// A record with every field filled, awkward text and a float not exact in decimal survives a
/// put and a replace exactly; returns it as last written.
pub async fn round_trip_and_replace(store: &impl JobStore) -> JobRecord {
    let mut job = record("acme");
    job.spec.options.webhook = Some("https://example.com/hook?a=1&b=\"é\"".into());
    job.stage_mut(Stage::Download).status = StageStatus::Done;
    job.stage_mut(Stage::Audio).progress = 0.1 + 0.2;
    job.clips.push(ClipRecord {
        index: 0,
        start: 12.345,
        end: 47.0,
        score: 0.87,
        title: "Why 1/3 ≠ 0.333…".into(),
        scorer: "llm".into(),
        reason: "most replayed (92% of the peak)".into(),
        scores: clipmill::job::Scores { hook: 7.5, flow: 0.1 + 0.2, payoff: 9.0, total: 0.87 },
        mp4: "acme/job/clip-01.mp4".into(),
        srt: Some("acme/job/clip-01.srt".into()),
        vtt: None,
        edit: Some("acme/job/clip-01.edit.json".into()),
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
    assert_eq!(ids(&store.list(&"acme".into(), None, None, 10).await.unwrap().jobs), vec![job.id], "replaced, not added");
    assert_eq!(store.get(new_job_id()).await.unwrap(), None);
    job
}

/// Pages newest first, one tenant at a time, optionally by status; a tenant whose name is a
/// prefix of another's sees none of its jobs.
pub async fn lists_newest_first_per_tenant(store: &impl JobStore) {
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

/// Waiting, queued and running jobs of every tenant, oldest first; nothing final.
pub async fn unfinished_skips_final_states(store: &impl JobStore) {
    let mut expected = Vec::new();
    for status in [JobStatus::Waiting, JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded, JobStatus::Failed, JobStatus::Cancelled] {
        let mut job = record(if expected.len() % 2 == 0 { "acme" } else { "globex" });
        job.status = status;
        store.put(&job).await.unwrap();
        if !status.is_final() {
            expected.push(job);
        }
    }
    assert_eq!(store.unfinished().await.unwrap(), expected);
}

/// A batch record reads back as written; an unknown id is `None`; retention by age deletes old
/// batch records and keeps new ones.
pub async fn batches_round_trip_and_age_out(store: &impl JobStore) {
    let now = 100 * DAY_MS;
    let batch = |created_ms| clipmill::job::BatchRecord {
        id: new_job_id(),
        tenant: "acme".into(),
        playlist: Some("http://example.com/list".into()),
        title: Some("Talks".into()),
        entries: vec![
            clipmill::job::BatchEntry { job: new_job_id(), title: Some("Talk A".into()) },
            clipmill::job::BatchEntry { job: new_job_id(), title: None },
        ],
        created_ms,
    };
    let (old, new) = (batch(now - 40 * DAY_MS), batch(now - DAY_MS));
    for b in [&old, &new] {
        store.put_batch(b).await.unwrap();
    }
    assert_eq!(store.get_batch(old.id).await.unwrap().as_ref(), Some(&old));
    assert_eq!(store.get_batch(new_job_id()).await.unwrap(), None);
    store.prune(now, 30, 0).await.unwrap();
    assert_eq!(store.get_batch(old.id).await.unwrap(), None, "older than the retention age");
    assert_eq!(store.get_batch(new.id).await.unwrap().as_ref(), Some(&new));
}

/// A tenant's usage: its queued and running jobs (not waiting or final ones), the source
/// seconds of its jobs created since the time asked, the bytes of all its jobs; nothing of
/// another tenant's.
pub async fn usage_counts_one_tenants_jobs(store: &impl JobStore) {
    let now = 100 * DAY_MS;
    let job = |tenant: &str, status, created_ms, seconds: Option<f64>, bytes| {
        let mut j = record(tenant);
        (j.status, j.created_ms, j.source_seconds, j.bytes_stored) = (status, created_ms, seconds, bytes);
        j
    };
    let jobs = [
        job("acme", JobStatus::Running, now - 1000, Some(30.5), 1_000),
        job("acme", JobStatus::Queued, now - 2000, None, 0),
        job("acme", JobStatus::Waiting, now - 2000, None, 0),
        job("acme", JobStatus::Succeeded, now - 3000, Some(60.0), 5_000_000_000),
        job("acme", JobStatus::Failed, now - 2 * DAY_MS, Some(600.0), 7),
        job("other", JobStatus::Running, now - 1000, Some(90.0), 9_999),
    ];
    for j in &jobs {
        store.put(j).await.unwrap();
    }
    let usage = store.usage(&"acme".to_string(), now - DAY_MS).await.unwrap();
    assert_eq!(usage.in_flight, 2);
    assert!((usage.source_seconds - 90.5).abs() < 1e-9, "{usage:?}");
    assert_eq!(usage.bytes_stored, 5_000_001_007);
    assert_eq!(store.usage(&"nobody".to_string(), 0).await.unwrap(), clipmill::persist::Usage::default());
}

/// A key names one job per tenant: the first claim wins and later ones get its job.
pub async fn idempotency_keys_are_unique_per_tenant(store: &impl JobStore) {
    let (first, second, third) = (new_job_id(), new_job_id(), new_job_id());
    let acme = TenantId::from("acme");
    assert_eq!(store.claim_idempotency_key(&acme, "k1", first).await.unwrap(), first);
    assert_eq!(store.claim_idempotency_key(&acme, "k1", second).await.unwrap(), first);
    assert_eq!(store.claim_idempotency_key(&"globex".into(), "k1", third).await.unwrap(), third);
    assert_eq!(store.claim_idempotency_key(&acme, "k2", second).await.unwrap(), second);
}

/// Retention deletes only finished jobs, by age and by count, with their keys and list entries,
/// and more than one internal batch in a call.
pub async fn retention_deletes_only_finished_jobs_by_age_and_count(store: &impl JobStore) {
    let now = 100 * DAY_MS;
    // (status, finished days ago); each carries an idempotency key k<index>.
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
        job.updated_ms = now - age * DAY_MS;
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

    assert_eq!(store.prune(now, 0, 0).await.unwrap(), 0, "both rules off");
    // By age: the two finished over 30 days ago go, with their keys; older unfinished ones stay.
    assert_eq!(store.prune(now, 30, 0).await.unwrap(), 2);
    assert_eq!(present().await, vec![2, 3, 4, 5, 6]);
    let fresh = new_job_id();
    assert_eq!(store.claim_idempotency_key(&jobs[0].tenant, "k0", fresh).await.unwrap(), fresh, "key freed");
    assert!(store.list(&"acme".into(), None, None, 10).await.unwrap().jobs.iter().all(|j| j.id != jobs[0].id), "listing updated");

    // By count: keep the 2 most recently finished; unfinished jobs neither count nor go.
    assert_eq!(store.prune(now, 0, 2).await.unwrap(), 1);
    assert_eq!(present().await, vec![2, 3, 5, 6]);
    assert_eq!(store.prune(now, 0, 2).await.unwrap(), 0, "nothing more to do");
    assert_eq!(store.prune(now, 30, 1).await.unwrap(), 1);
    assert_eq!(present().await, vec![2, 3, 6]);
    assert_eq!(store.claim_idempotency_key(&jobs[6].tenant, "k6", new_job_id()).await.unwrap(), jobs[6].id, "a kept job keeps its key");

    // More than one batch (500) of old finished jobs goes in one call.
    let old: Vec<JobRecord> = (0..1100)
        .map(|_| {
            let mut job = record("bulk");
            job.status = JobStatus::Failed;
            job.updated_ms = now - 60 * DAY_MS;
            job
        })
        .collect();
    for chunk in old.chunks(50) {
        join_all(chunk.iter().map(|job| store.put(job))).await.into_iter().collect::<Result<Vec<_>, _>>().unwrap();
    }
    assert_eq!(store.prune(now, 30, 0).await.unwrap(), 1100);
    assert_eq!(present().await, vec![2, 3, 6]);
}

/// One finished job is deleted on request with its key and list entry; a job still running and
/// a job that is not there are left alone.
pub async fn deletes_one_finished_job_on_request(store: &impl JobStore) {
    let mut done = record("acme");
    done.status = JobStatus::Succeeded;
    let mut running = record("acme");
    running.status = JobStatus::Running;
    for job in [&done, &running] {
        store.put(job).await.unwrap();
        store.claim_idempotency_key(&job.tenant, &format!("key-{}", job.id), job.id).await.unwrap();
    }
    assert!(!store.delete_finished(running.id).await.unwrap(), "a running job stays");
    assert!(store.get(running.id).await.unwrap().is_some());
    assert!(store.delete_finished(done.id).await.unwrap());
    assert!(store.get(done.id).await.unwrap().is_none());
    assert!(!store.delete_finished(done.id).await.unwrap(), "already gone");
    assert_eq!(ids(&store.list(&"acme".into(), None, None, 10).await.unwrap().jobs), vec![running.id], "listing updated");
    let fresh = new_job_id();
    assert_eq!(store.claim_idempotency_key(&done.tenant, &format!("key-{}", done.id), fresh).await.unwrap(), fresh, "key freed");
    assert_eq!(store.claim_idempotency_key(&running.tenant, &format!("key-{}", running.id), fresh).await.unwrap(), running.id, "other keys kept");
}
