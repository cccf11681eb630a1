//! A slow WebSocket client never slows the pipeline or other clients: it is disconnected with a
//! close reason once it falls too far behind, having seen every event up to the `last_id` the
//! close names, while a client that keeps up sees every event and
//! every job finishes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::server::{KEY_A, Msg, TestServer, ws_over};
use serde_json::json;

/// Jobs submitted; each makes 15 events (7 stages started and finished, then done), far more in
/// all than the hub's fan-out buffer (4096) plus what the sockets hold.
const JOBS: usize = 1600;

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_disconnected_with_a_reason_while_a_fast_one_sees_everything() {
    let server = Arc::new(
        TestServer::start(|c| {
            c.server.noop = true;
            c.server.noop_stage_ms = 0;
            c.server.max_jobs_in_flight = 100_000;
        })
        .await,
    );
    let path = format!("/api/events?api_key={KEY_A}");

    // The slow client: a tiny receive buffer, one message read every 5 ms.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut slow = ws_over(stream, server.addr, &path).await;
    assert!(matches!(slow.next(Duration::from_secs(10)).await, Msg::Json(v) if v["type"] == "snapshot"));
    let slow_reader = tokio::spawn(async move {
        let (mut read, mut last_id) = (0usize, 0u64);
        loop {
            match slow.next(Duration::from_secs(120)).await {
                Msg::Json(event) => {
                    // No progress events in noop mode, so nothing is coalesced: ids go up by one
                    // from the first (which is where this run's numbering started).
                    let id = event["id"].as_u64().unwrap();
                    assert!(read == 0 || id == last_id + 1, "the slow client saw a gap before it was closed");
                    (read, last_id) = (read + 1, id);
                }
                Msg::Closed(code, reason) => return (read, last_id, code, reason),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // The fast client counts finished jobs.
    let mut fast = server.ws(&path).await;
    assert!(matches!(fast.next(Duration::from_secs(10)).await, Msg::Json(v) if v["type"] == "snapshot"));
    let done = Arc::new(AtomicUsize::new(0));
    let fast_done = done.clone();
    let fast_reader = tokio::spawn(async move {
        let mut last_id = None;
        while fast_done.load(Ordering::SeqCst) < JOBS {
            match fast.next(Duration::from_secs(120)).await {
                Msg::Json(event) => {
                    let id = event["id"].as_u64().unwrap();
                    assert!(last_id.is_none_or(|last| id == last + 1), "the fast client misses nothing");
                    last_id = Some(id);
                    if event["type"] == "job_done" {
                        fast_done.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Msg::Closed(code, reason) => panic!("the fast client was closed: {code} {reason}"),
            }
        }
    });

    let submitters: Vec<_> = (0..8)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                for _ in 0..JOBS / 8 {
                    server.create(KEY_A, json!({ "url": "http://127.0.0.1:9/none.mp4" })).await;
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(240), fast_reader).await.expect("the fast client saw every job finish in time").unwrap();
    assert_eq!(done.load(Ordering::SeqCst), JOBS);

    let (read, last_id, code, reason) = tokio::time::timeout(Duration::from_secs(120), slow_reader).await.expect("the slow client was closed").unwrap();
    assert_eq!(code, 1008, "policy violation: {reason}");
    assert!(reason.contains("too slow"), "{reason}");
    assert!(reason.ends_with(&format!("last_id={last_id}")), "the close says where to resume: {reason} (last seen {last_id})");
    assert!(read < JOBS * 15, "the slow client was cut off before the end ({read} events)");
    // Operators see it too (counted once the session has ended, after the close handshake).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.metric(r#"clipmill_ws_closed_total{reason="too_slow"}"#).await != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "the slow client's disconnect is not counted in /metrics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
