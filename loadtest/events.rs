//! What a watcher reads off an events socket: the messages this tool cares about, a countdown of
//! arrivals across sockets, and the schedule of events the fan-out baseline replays. Shared by
//! the scenarios and the baseline, and importing none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fastwebsockets::OpCode;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::client::WsClient;

/// What a no-op job publishes: started and finished per stage, then `job_done`.
pub const EVENTS_PER_JOB: u64 = clipmill::job::Stage::ALL.len() as u64 * 2 + 1;

/// One message off an events socket, as far as this tool cares.
#[derive(Debug)]
pub enum Message {
    Snapshot,
    /// `latency_ms`: receive time minus the event's `ts_ms` (unix milliseconds).
    Event { kind: String, ts_ms: u64, latency_ms: f64 },
    TimedOut,
    Closed(String),
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    ts_ms: Option<u64>,
}

/// The next snapshot or event, skipping control frames, until `deadline`.
pub async fn next_message(ws: &mut WsClient, deadline: Instant) -> Message {
    tokio::time::timeout_at(deadline.into(), read_message(ws)).await.unwrap_or(Message::TimedOut)
}

/// The next snapshot or event, skipping control frames, however long it takes. Readers of a
/// measured phase use this: a timer per frame would be client overhead charged to the server.
async fn read_message(ws: &mut WsClient) -> Message {
    loop {
        let frame = match ws.read_frame().await {
            Err(e) => return Message::Closed(format!("read error: {e}")),
            Ok(frame) => frame,
        };
        let received = unix_ms();
        match frame.opcode {
            OpCode::Text => {
                let Ok(head) = serde_json::from_slice::<Head>(&frame.payload) else {
                    return Message::Closed("a message that is not an event".into());
                };
                return match head.ts_ms {
                    _ if head.kind == "snapshot" => Message::Snapshot,
                    Some(ts) => Message::Event { kind: head.kind, ts_ms: ts, latency_ms: received - ts as f64 },
                    None => Message::Closed(format!("a {} event without ts_ms", head.kind)),
                };
            }
            OpCode::Close => {
                let p = &frame.payload;
                let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                return Message::Closed(format!("close {code} {}", String::from_utf8_lossy(p.get(2..).unwrap_or_default())));
            }
            _ => {}
        }
    }
}

fn unix_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// Counts arrivals across tasks and fires `done` once as many arrived as expected, where the
/// expectation may be lowered later (when fewer jobs started than planned). Readers then never
/// wait out the time cap for events that cannot come.
pub struct Countdown {
    arrived: AtomicU64,
    expected: AtomicU64,
    pub done: CancellationToken,
}

impl Countdown {
    pub fn new(expected: u64) -> Arc<Self> {
        Arc::new(Self { arrived: AtomicU64::new(0), expected: AtomicU64::new(expected), done: CancellationToken::new() })
    }

    pub fn arrive(&self) {
        // SeqCst here and in `expect`: whichever of the two runs second sees the other's write.
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 >= self.expected.load(Ordering::SeqCst) {
            self.done.cancel();
        }
    }

    pub fn expect(&self, expected: u64) {
        self.expected.store(expected, Ordering::SeqCst);
        if self.arrived.load(Ordering::SeqCst) >= expected {
            self.done.cancel();
        }
    }

    /// Reads `ws` until this countdown is done (the time cap included).
    pub fn reader(&self, ws: WsClient) -> Reader {
        Reader { ws, done: Box::pin(self.done.clone().cancelled_owned()) }
    }

    /// Fires `done` at `deadline` at the latest.
    pub fn cap(self: &Arc<Self>, deadline: Instant) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            me.done.cancel();
        })
    }
}

/// One socket's messages until a countdown is done.
pub struct Reader {
    ws: WsClient,
    done: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Reader {
    /// The next message, or `None` once the countdown is done.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            m = read_message(&mut self.ws) => Some(m),
            _ = &mut self.done => None,
        }
    }
}

/// An event as published: when, and what.
#[derive(serde::Serialize, Deserialize)]
pub struct Published {
    pub ts_ms: u64,
    pub kind: String,
}
