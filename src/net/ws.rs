//! WebSocket progress: `/api/jobs/{id}/events`, `/api/batches/{id}/events` (the batch's jobs)
//! and `/api/events` (all of a tenant's jobs).
//!
//! On connect a client gets a snapshot (or, reconnecting with `?last_id=N`, the events it missed
//! while they are still in the hub's replay buffer), then live events in order. Progress events
//! that pile up for a slow client are coalesced to the newest per stage (the only events a client
//! is not sent: each is superseded by a later one); a client that falls further behind than the
//! hub's fan-out buffer is sent everything up to the first event it lost, then closed with 1008
//! and `last_id=N` in the reason, N being the last event it was sent, so it can resume without a
//! gap. A socket that stalls is dropped. A slow client never slows the pipeline or anyone else. The server pings every 20 s.
//!
//! Events are serialised once for all sockets (`Event::json`), and each socket gathers the frames
//! of everything pending into one buffered write (one per 32 KiB) on the TCP stream's own write
//! half: at 10,000 watchers the kernel's per-send cost, not JSON or the runtime, is what fan-out
//! spends its time on (about four fifths of the server's CPU, see BENCHMARKS.md).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::BufWriter;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, mpsc};

use super::{Api, ApiError, Resp, query_param};
use crate::actors::ServerCtx;
use crate::actors::messages::{Event, HubMessage, Subscription, Watch};
use crate::job::{JobId, TenantId};
use crate::persist::JobStore;

const PING_EVERY: Duration = Duration::from_secs(20);
/// A socket that takes longer than this to accept one write is too slow to keep.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client gets to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Events written per batch; progress within a batch is coalesced.
const BATCH: usize = 256;
/// Bytes of frames gathered before they are written out, even mid-batch.
const WRITE_BUFFER: usize = 32 * 1024;

/// The events of one job, or of every job of the tenant.
pub async fn job_events(api: &Api, tenant: TenantId, job: Option<&str>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let jobs = match job {
        None => None,
        Some(id) => {
            let id: JobId = id.parse().map_err(|_| ApiError::NotFound)?;
            match api.ctx.store.get(id).await? {
                Some(j) if j.tenant == tenant => Some(Arc::new(HashSet::from([id]))),
                _ => return Err(ApiError::NotFound),
            }
        }
    };
    events(api, Watch { tenant, jobs }, req).await
}

/// Upgrades to a WebSocket streaming what `watch` sees (its owner already checked).
pub async fn events(api: &Api, watch: Watch, mut req: Request<Incoming>) -> Result<Resp, ApiError> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::bad("websocket_required", "this endpoint speaks websocket only"));
    }
    // A session opened now would be closed at once: the client should go to another node.
    if api.ctx.drain.is_cancelled() {
        return Err(ApiError::Unavailable("server is shutting down".into()));
    }
    let last_id = query_param(&req, "last_id")
        .or_else(|| req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string))
        .map(|s| s.parse::<u64>().map_err(|_| ApiError::bad("invalid_request", "last_id must be a number")))
        .transpose()?;
    let (response, upgrade) =
        fastwebsockets::upgrade::upgrade(&mut req).map_err(|e| ApiError::bad("websocket_handshake", e.to_string().to_lowercase()))?;
    // Subscribe before answering, so nothing published from here on can be missed.
    let hub = api.ctx.hub.get().map_err(|e| ApiError::Unavailable(format!("progress hub: {e}")))?;
    let subscription = ractor::call!(hub, |reply| HubMessage::Subscribe { watch: watch.clone(), last_id, reply })
        .map_err(|e| ApiError::Unavailable(format!("progress hub: {e}")))?;
    let ctx = api.ctx.clone();
    crate::task::spawn_named("websocket", async move {
        match upgrade.await {
            Ok(ws) => {
                let metrics = ctx.metrics.clone();
                metrics.ws_sessions.inc();
                let ended = session(ws, ctx, watch, subscription).await;
                metrics.ws_sessions.dec();
                let reason = ended.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "websocket session ended with an error");
                    "io_error"
                });
                metrics.ws_closed.with_label_values(&[reason]).inc();
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(response.map(|b| b.map_err(|never| match never {}).boxed()))
}

enum Control {
    Pong(Vec<u8>),
    Close(u16, String),
}

type Socket = fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>;
/// The receiving half: whatever hyper read past the handshake, then the socket.
type Receiver = fastwebsockets::WebSocketRead<tokio::io::Chain<std::io::Cursor<Bytes>, OwnedReadHalf>>;
/// The sending half: frames collect in a buffer (up to `WRITE_BUFFER`) and go to the kernel at
/// each `flush`, so a burst of events costs a socket one syscall instead of one per event.
type Sender = fastwebsockets::WebSocketWrite<BufWriter<OwnedWriteHalf>>;

/// Takes the upgraded connection back to its TCP stream and splits that into owned halves: a
/// write then goes straight to the socket, not through hyper's boxed connection and a lock
/// shared with the reader.
fn split(ws: Socket) -> Result<(Receiver, Sender), WebSocketError> {
    let parts = ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<tokio::net::TcpStream>>()
        .map_err(|_| WebSocketError::IoError(std::io::Error::other("the upgraded connection is not a tcp stream")))?;
    let (read, write) = parts.io.into_inner().into_split();
    let read = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(parts.read_buf), read);
    Ok(fastwebsockets::after_handshake_split(read, BufWriter::with_capacity(WRITE_BUFFER, write), fastwebsockets::Role::Server))
}

/// Streams events to one client until it or the server ends it; says why it ended (a metric label).
async fn session(
    ws: Socket,
    ctx: Arc<ServerCtx>,
    watch: Watch,
    sub: Subscription,
) -> Result<&'static str, WebSocketError> {
    let (rx, mut tx) = split(ws)?;
    let mut rx = fastwebsockets::FragmentCollectorRead::new(rx);
    let (control, mut controls) = mpsc::channel::<Control>(8);

    // Reader: answers pings, notices closes and protocol errors.
    let reader_control = control.clone();
    let mut reader = crate::task::spawn_named("websocket-reader", async move {
        loop {
            let obligated = reader_control.clone();
            let frame = rx
                .read_frame(&mut move |frame: Frame<'_>| {
                    let obligated = obligated.clone();
                    let msg = match frame.opcode {
                        OpCode::Pong => Some(Control::Pong(frame.payload.to_vec())),
                        _ => None,
                    };
                    async move {
                        if let Some(msg) = msg {
                            let _ = obligated.send(msg).await;
                        }
                        Ok::<_, WebSocketError>(())
                    }
                })
                .await;
            match frame {
                Ok(f) if f.opcode == OpCode::Close => {
                    let _ = reader_control.send(Control::Close(1000, "bye".into())).await;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = reader_control.send(Control::Close(1002, format!("protocol error: {e}").to_lowercase())).await;
                    return;
                }
            }
        }
    });

    let Subscription { backlog, needs_snapshot, mut live } = sub;
    if needs_snapshot {
        let snapshot = snapshot(&ctx, &watch).await.to_string();
        send(&mut tx, Frame::text(Payload::Borrowed(snapshot.as_bytes()))).await?;
    }
    let mut seen = backlog.last().map_or(0, |e| e.id);
    for event in &backlog {
        tx.write_frame(text(event)).await?;
    }
    tx.flush().await?;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let close = loop {
        tokio::select! {
            // Events first: when one is waiting, the controls and the ping timer are not even
            // polled (at 10,000 watchers every wake-up counts); they get their turn as soon as
            // the events are written.
            biased;
            first = live.recv() => {
                let mut batch = match first {
                    Ok(event) => vec![event],
                    Err(broadcast::error::RecvError::Lagged(_)) => break too_slow(seen),
                    Err(broadcast::error::RecvError::Closed) => break going_away(seen),
                };
                // Events the hub dropped for this client after `batch`: what was gathered has no
                // gap, so it is still sent, and then the client is told where to resume from.
                let mut lagged = false;
                while batch.len() < BATCH {
                    match live.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {
                            lagged = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let batch = coalesce(batch, &watch, seen);
                let Some(last) = batch.last() else {
                    if lagged {
                        break too_slow(seen);
                    }
                    continue;
                };
                seen = last.id;
                let write = async {
                    for event in &batch {
                        tx.write_frame(text(event)).await?;
                    }
                    tx.flush().await
                };
                // The timer is armed only for a write the socket does not take at once.
                let mut write = std::pin::pin!(write);
                let written = match futures_util::FutureExt::now_or_never(write.as_mut()) {
                    Some(result) => Ok(result),
                    None => tokio::time::timeout(WRITE_TIMEOUT, write).await,
                };
                match written {
                    Ok(result) => result?,
                    Err(_) => {
                        reader.abort();
                        return Ok("stalled");
                    }
                }
                ctx.metrics.ws_writes.inc();
                ctx.metrics.ws_events.inc_by(batch.len() as u64);
                if lagged {
                    break too_slow(seen);
                }
            }
            _ = ctx.drain.cancelled() => break going_away(seen),
            msg = controls.recv() => match msg {
                Some(Control::Pong(payload)) => send(&mut tx, Frame::pong(Payload::Owned(payload))).await?,
                Some(Control::Close(code, reason)) => break (code, reason),
                None => break (1000, "bye".into()),
            },
            _ = ping.tick() => send(&mut tx, Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"ping"))).await?,
        }
    };
    // A client too slow to read its events may be too slow to read the close frame too. Once it
    // is sent, wait for the client's close before dropping the socket: dropping it with unread
    // input resets the connection, and the close frame would be lost with it.
    if let Ok(Ok(())) = tokio::time::timeout(WRITE_TIMEOUT, send(&mut tx, Frame::close(close.0, close.1.as_bytes()))).await {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
    }
    reader.abort();
    Ok(match close.0 {
        1000 => "client_closed",
        1001 => "server_shutdown",
        1008 => "too_slow",
        _ => "protocol_error",
    })
}

/// The close when the server drains or its hub stops: reconnecting (to another node, or to this
/// one once it is back) with `last_id=seen` resumes without a gap.
fn going_away(seen: u64) -> (u16, String) {
    (1001, format!("server going away: reconnect with last_id={seen}"))
}

/// The close of a client the hub had to drop events for: everything up to `seen` was sent without
/// a gap, and reconnecting with `last_id=seen` replays the rest while the hub still holds it.
fn too_slow(seen: u64) -> (u16, String) {
    (1008, format!("client too slow: reconnect with last_id={seen}"))
}

/// The events of this subscriber, in order, with all but the newest progress of each stage dropped.
fn coalesce(batch: Vec<Arc<Event>>, watch: &Watch, seen: u64) -> Vec<Arc<Event>> {
    let mine: Vec<_> = batch.into_iter().filter(|e| e.id > seen && watch.sees(e)).collect();
    let mut newest = HashSet::new();
    let mut keep = vec![false; mine.len()];
    for (i, e) in mine.iter().enumerate().rev() {
        keep[i] = match &e.kind {
            crate::actors::messages::EventKind::StageProgress { stage, .. } => newest.insert((e.job, *stage)),
            _ => true,
        };
    }
    mine.into_iter().zip(keep).filter(|(_, k)| *k).map(|(e, _)| e).collect()
}

/// An event's frame; its JSON is made once and shared by every socket that sends it.
fn text(event: &Event) -> Frame<'_> {
    Frame::text(Payload::Borrowed(event.json().as_bytes()))
}

async fn snapshot(ctx: &ServerCtx, watch: &Watch) -> serde_json::Value {
    let jobs = match &watch.jobs {
        Some(ids) => {
            let mut jobs = Vec::with_capacity(ids.len());
            for &id in ids.iter() {
                jobs.extend(ctx.store.get(id).await.ok().flatten());
            }
            jobs.sort_by_key(|j| j.id);
            jobs
        }
        None => ctx.store.list(&watch.tenant, None, None, 50).await.map(|p| p.jobs).unwrap_or_default(),
    };
    json!({ "type": "snapshot", "jobs": jobs.iter().map(super::jobs::view).collect::<Vec<_>>() })
}

/// Writes one frame and sends it at once.
async fn send(tx: &mut Sender, frame: Frame<'_>) -> Result<(), WebSocketError> {
    tx.write_frame(frame).await?;
    tx.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::messages::EventKind;
    use crate::job::Stage;

    fn event(id: u64, job: JobId, tenant: &str, kind: EventKind) -> Arc<Event> {
        Arc::new(Event::new(id, job, tenant.into(), 0, kind))
    }

    #[test]
    fn coalescing_keeps_order_and_the_newest_progress_per_stage_only() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let progress = |stage, progress| EventKind::StageProgress { stage, progress };
        let batch = vec![
            event(1, a, "t", EventKind::StageStarted { stage: Stage::Render }),
            event(2, a, "t", progress(Stage::Render, 0.1)),
            event(3, b, "t", progress(Stage::Render, 0.5)),
            event(4, a, "t", progress(Stage::Render, 0.2)),
            event(5, a, "other", progress(Stage::Render, 0.9)),
            event(6, a, "t", progress(Stage::Audio, 0.3)),
            event(7, a, "t", progress(Stage::Render, 0.3)),
            event(8, a, "t", EventKind::JobDone),
        ];
        let all = Watch { tenant: "t".into(), jobs: None };
        let ids: Vec<u64> = coalesce(batch.clone(), &all, 0).iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 3, 6, 7, 8], "newest progress per (job, stage), other tenants out, order kept");
        let one = Watch { tenant: "t".into(), jobs: Some(Arc::new(HashSet::from([a]))) };
        let ids: Vec<u64> = coalesce(batch.clone(), &one, 0).iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 6, 7, 8], "one job only");
        let ids: Vec<u64> = coalesce(batch, &all, 6).iter().map(|e| e.id).collect();
        assert_eq!(ids, [7, 8], "nothing already sent");
    }
}
