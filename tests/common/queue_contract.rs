//! What every `JobQueue` and `EventBus` must do: run against Redis (tests/redis_queue.rs, each
//! node its own connection) and the in-process queue and bus (tests/memory_queue.rs, the nodes
//! sharing one), so the two cannot drift apart. Each check takes fresh, empty queues or buses.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clipmill::job::{JobId, Stage, new_job_id};
use clipmill::persist::{BusMessage, Delivery, EventBus, JobQueue, WorkItem};

pub fn item(stage: Stage) -> WorkItem {
    WorkItem { job: new_job_id(), stage }
}

pub async fn push_claim_complete_moves_the_job_to_the_next_stage(q: &impl JobQueue) {
    let work = item(Stage::Download);
    q.push(work).await.unwrap();
    assert_eq!(q.depth(Stage::Download).await.unwrap(), 1);

    let got = q.claim(Stage::Download, 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].item, got[0].deliveries), (work, 1));
    assert_eq!(q.depth(Stage::Download).await.unwrap(), 0, "a claimed item is no longer waiting");

    let next = WorkItem { job: work.job, stage: Stage::Audio };
    q.complete(&got[0], Some(next)).await.unwrap();
    assert_eq!(q.depth(Stage::Audio).await.unwrap(), 1);
    let audio = q.claim(Stage::Audio, 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(audio.iter().map(|d| d.item).collect::<Vec<_>>(), vec![next]);
    q.complete(&audio[0], None).await.unwrap();

    // Nothing left anywhere, and an empty claim waits about `wait`, not forever.
    let started = Instant::now();
    assert!(q.claim(Stage::Download, 10, Duration::from_millis(300)).await.unwrap().is_empty());
    assert!(q.claim(Stage::Audio, 10, Duration::ZERO).await.unwrap().is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(2), "waited {waited:?}");
    // Completing twice (a node that lost its lease finishing late) queues nothing again.
    q.complete(&got[0], Some(next)).await.unwrap();
    assert_eq!(q.depth(Stage::Audio).await.unwrap(), 0);
}

pub async fn concurrent_claimers_never_receive_the_same_item<Q: JobQueue>(pusher: Arc<Q>, claimers: Vec<Arc<Q>>) {
    let mut pushed = HashSet::new();
    for _ in 0..200 {
        let work = item(Stage::Transcribe);
        pusher.push(work).await.unwrap();
        pushed.insert(work.job);
    }
    let mut running = Vec::new();
    for q in claimers {
        running.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = q.claim(Stage::Transcribe, 7, Duration::from_millis(200)).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                for d in got {
                    mine.push(d.item.job);
                    q.complete(&d, None).await.unwrap();
                }
            }
        }));
    }
    let mut seen = Vec::new();
    for claimer in running {
        seen.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<JobId> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 200, "every item handed out exactly once");
    assert_eq!(distinct, pushed);
    assert_eq!(pusher.depth(Stage::Transcribe).await.unwrap(), 0);
}

/// `a` and `b` are two nodes' queues, both with leases of `lease`.
pub async fn a_heartbeaten_lease_holds_and_an_abandoned_one_is_reclaimed(a: &impl JobQueue, b: &impl JobQueue, lease: Duration) {
    a.push(item(Stage::Faces)).await.unwrap();
    a.push(item(Stage::Faces)).await.unwrap();
    let held = a.claim(Stage::Faces, 2, Duration::from_secs(1)).await.unwrap();
    assert_eq!(held.len(), 2);
    let (kept, abandoned) = (&held[0], &held[1]);

    // node-a keeps heart-beating the first item only, for well over a lease.
    let until = Instant::now() + lease * 2;
    while Instant::now() < until {
        a.heartbeat(kept).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.heartbeat(kept).await.unwrap();
    let taken = b.reclaim(Stage::Faces, 10).await.unwrap();
    assert_eq!(taken.live.len(), 1, "only the abandoned item is reclaimed: {taken:?}");
    assert!(taken.dead.is_empty());
    assert_eq!((taken.live[0].item, &taken.live[0].entry), (abandoned.item, &abandoned.entry));
    assert_eq!(taken.live[0].deliveries, 2);

    // node-a finds out it lost the lease; it cannot steal the item back by heart-beating.
    let lost = a.heartbeat(abandoned).await.unwrap_err();
    assert!(lost.to_string().contains("lease lost"), "{lost}");
    b.heartbeat(&taken.live[0]).await.unwrap();
    // node-b finishes it once; node-a finishing late queues nothing more.
    let next = WorkItem { job: abandoned.item.job, stage: Stage::Render };
    b.complete(&taken.live[0], Some(next)).await.unwrap();
    a.complete(abandoned, Some(next)).await.unwrap();
    assert_eq!(a.depth(Stage::Render).await.unwrap(), 1);
    a.complete(kept, None).await.unwrap();
    assert!(b.reclaim(Stage::Faces, 10).await.unwrap().live.is_empty());
}

/// A dead letter as a queue records it.
#[derive(Debug)]
pub struct Dead {
    pub job: String,
    pub stage: String,
    pub deliveries: u64,
    pub error: String,
}

/// `a` and `b` are two nodes' queues with leases of `lease` and at most 2 deliveries; `dead`
/// reads what the queue recorded as dead letters.
pub async fn work_delivered_too_often_is_dead_lettered<Q: JobQueue, F: Future<Output = Vec<Dead>>>(
    a: &Q,
    b: &Q,
    lease: Duration,
    dead: impl FnOnce() -> F,
) {
    let work = item(Stage::Score);
    a.push(work).await.unwrap();
    assert_eq!(a.claim(Stage::Score, 1, Duration::from_secs(1)).await.unwrap().len(), 1);
    // node-a dies; node-b takes it (delivery 2) and dies too.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let second = b.reclaim(Stage::Score, 10).await.unwrap();
    assert_eq!(second.live.iter().map(|d| (d.item, d.deliveries)).collect::<Vec<_>>(), vec![(work, 2)]);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    // A third delivery would exceed max_deliveries: dead, not live.
    let third = a.reclaim(Stage::Score, 10).await.unwrap();
    assert!(third.live.is_empty(), "{third:?}");
    assert_eq!(third.dead.iter().map(|d| d.item).collect::<Vec<_>>(), vec![work]);
    assert_eq!(a.depth(Stage::Score).await.unwrap(), 0);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(b.reclaim(Stage::Score, 10).await.unwrap().live.is_empty(), "a dead item is acknowledged");

    // Explicit dead letters, with the worker's error.
    let failing = item(Stage::Score);
    a.push(failing).await.unwrap();
    let d: Delivery = a.claim(Stage::Score, 1, Duration::from_secs(1)).await.unwrap().remove(0);
    a.dead_letter(&d, "render failed: no video stream").await.unwrap();
    assert_eq!(a.depth(Stage::Score).await.unwrap(), 0);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(b.reclaim(Stage::Score, 10).await.unwrap().live.is_empty());

    let dead = dead().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].job, work.job.to_string());
    assert_eq!(dead[0].stage, "score");
    assert_eq!(dead[0].deliveries, 3);
    assert!(dead[0].error.contains("lease expired"), "{:?}", dead[0]);
    assert_eq!(dead[1].job, failing.job.to_string());
    assert_eq!(dead[1].error, "render failed: no video stream");
}

pub async fn depth_counts_waiting_items_only(q: &impl JobQueue) {
    for stage in Stage::ALL {
        assert_eq!(q.depth(stage).await.unwrap(), 0);
    }
    for _ in 0..5 {
        q.push(item(Stage::Upload)).await.unwrap();
    }
    assert_eq!(q.depth(Stage::Upload).await.unwrap(), 5);
    let got = q.claim(Stage::Upload, 2, Duration::from_secs(1)).await.unwrap();
    assert_eq!(q.depth(Stage::Upload).await.unwrap(), 3);
    q.complete(&got[0], None).await.unwrap();
    q.dead_letter(&got[1], "gave up").await.unwrap();
    assert_eq!(q.depth(Stage::Upload).await.unwrap(), 3);
    assert_eq!(q.depth(Stage::Download).await.unwrap(), 0);
}

pub async fn next_events(rx: &mut tokio::sync::mpsc::Receiver<BusMessage>, n: usize) -> Vec<BusMessage> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            other => panic!("bus went quiet after {} of {n} messages: {other:?}", got.len()),
        }
    }
    got
}

/// `a` and `b` are two nodes' buses.
pub async fn every_node_sees_every_event_in_one_order<B: EventBus>(a: Arc<B>, b: Arc<B>) {
    let job = new_job_id();
    // Published well before anyone subscribed: the stream's history is not replayed.
    a.publish(job, &"tenant".to_string(), serde_json::json!({"before": true})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());

    let mut publishers = Vec::new();
    for (name, bus) in [("a", a.clone()), ("b", b.clone())] {
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                ids.push(bus.publish(job, &"tenant".to_string(), serde_json::json!({"from": name, "i": i})).await.unwrap());
            }
            ids
        }));
    }
    let mut published = HashSet::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    let (seen_a, seen_b) = (next_events(&mut rx_a, 100).await, next_events(&mut rx_b, 100).await);
    assert_eq!(seen_a, seen_b, "both nodes see one order");
    let ids: Vec<u64> = seen_a
        .iter()
        .map(|m| match m {
            BusMessage::Event(e) => {
                assert_eq!((e.job, e.tenant.as_str()), (job, "tenant"));
                e.id
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), published);

    // A cancel through node-a reaches node-b, ordered after the events before it.
    let doomed = new_job_id();
    a.publish(doomed, &"tenant".to_string(), serde_json::json!({"state": "running"})).await.unwrap();
    a.cancel(doomed).await.unwrap();
    let got = next_events(&mut rx_b, 2).await;
    assert!(matches!(&got[0], BusMessage::Event(e) if e.job == doomed));
    assert_eq!(got[1], BusMessage::Cancel(doomed));
}

pub async fn a_node_that_stops_heart_beating_disappears(bus: &impl EventBus) {
    let ttl = Duration::from_millis(500);
    bus.heartbeat_node("node-a", ttl).await.unwrap();
    bus.heartbeat_node("node-b", ttl).await.unwrap();
    assert_eq!(bus.nodes().await.unwrap(), vec!["node-a", "node-b"]);
    // node-b keeps beating; node-a went silent.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bus.heartbeat_node("node-b", ttl).await.unwrap();
    }
    assert_eq!(bus.nodes().await.unwrap(), vec!["node-b"]);
}
