//! The in-process work queue and event bus (the embedded default's) against the contract the
//! Redis ones pass (`common::queue_contract`): one process's "nodes" share one queue and one bus.

mod common;

use std::sync::Arc;
use std::time::Duration;

use clipmill::persist::{MemoryBus, MemoryQueue};
use common::queue_contract::{self as contract, Dead};

fn queue() -> MemoryQueue {
    MemoryQueue::new(Duration::from_secs(30), 5)
}

#[tokio::test]
async fn push_claim_complete_moves_the_job_to_the_next_stage() {
    contract::push_claim_complete_moves_the_job_to_the_next_stage(&queue()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_receive_the_same_item() {
    let q = Arc::new(queue());
    contract::concurrent_claimers_never_receive_the_same_item(q.clone(), vec![q.clone(), q.clone(), q.clone(), q]).await;
}

#[tokio::test]
async fn a_heartbeaten_lease_holds_and_an_abandoned_one_is_reclaimed() {
    let lease = Duration::from_millis(600);
    let q = MemoryQueue::new(lease, 5);
    contract::a_heartbeaten_lease_holds_and_an_abandoned_one_is_reclaimed(&q, &q, lease).await;
}

#[tokio::test]
async fn work_delivered_too_often_is_dead_lettered() {
    let lease = Duration::from_millis(200);
    let q = MemoryQueue::new(lease, 2);
    let dead = || async {
        q.dead_letters()
            .into_iter()
            .map(|d| Dead {
                job: d.delivery.item.job.to_string(),
                stage: d.delivery.item.stage.name().into(),
                deliveries: d.delivery.deliveries,
                error: d.error,
            })
            .collect()
    };
    contract::work_delivered_too_often_is_dead_lettered(&q, &q, lease, dead).await;
}

#[tokio::test]
async fn depth_counts_waiting_items_only() {
    contract::depth_counts_waiting_items_only(&queue()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_every_event_in_one_order() {
    let bus = Arc::new(MemoryBus::default());
    contract::every_node_sees_every_event_in_one_order(bus.clone(), bus).await;
}

#[tokio::test]
async fn a_node_that_stops_heart_beating_disappears() {
    contract::a_node_that_stops_heart_beating_disappears(&MemoryBus::default()).await;
}

/// A job's next stage is claimed at once by the run that ends the last one only when no other
/// job waits at that stage (otherwise it queues behind them, in order); either way it is leased,
/// and a completion from a delivery that lost its lease moves nothing.
#[tokio::test]
async fn the_next_stage_is_claimed_at_once_only_when_nothing_waits_for_it() {
    use clipmill::job::{JobId, Stage, new_job_id};
    use clipmill::persist::{JobQueue, WorkItem};
    let q = queue();
    let wait = Duration::from_millis(50);
    let (a, b) = (new_job_id(), new_job_id());
    q.push(WorkItem { job: a, stage: Stage::Download }).await.unwrap();
    let first = q.claim(Stage::Download, 1, wait).await.unwrap().remove(0);
    let next = q.complete_and_claim(&first, WorkItem { job: a, stage: Stage::Audio }).expect("nothing waits at audio");
    assert_eq!((next.item.job, next.item.stage, next.deliveries), (a, Stage::Audio, 1));
    assert_eq!(q.depth(Stage::Audio).await.unwrap(), 0, "claimed, not waiting");
    assert!(q.complete_and_claim(&first, WorkItem { job: a, stage: Stage::Audio }).is_none(), "already completed: moves nothing");
    assert_eq!(q.entries(), 1, "only the claimed audio entry");

    // Another job waits at transcribe: `a`'s transcribe queues behind it.
    q.push(WorkItem { job: b, stage: Stage::Transcribe }).await.unwrap();
    assert!(q.complete_and_claim(&next, WorkItem { job: a, stage: Stage::Transcribe }).is_none());
    let order: Vec<JobId> = q.claim(Stage::Transcribe, 2, wait).await.unwrap().iter().map(|d| d.item.job).collect();
    assert_eq!(order, [b, a], "first come, first claimed");
}
