//! A `Pipeline` wrapper that always returns to `Null`, and the loop that drives pipelines to the end.
//!
//! Everything here blocks: it runs on the dedicated media thread that `run_blocking` starts, never on
//! a tokio worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio_util::sync::CancellationToken;

use super::MediaError;

/// How a caller watches and stops a media operation.
#[derive(Clone, Default)]
pub struct Control {
    pub cancel: CancellationToken,
    /// Called with the fraction of the range done, 0.0..=1.0, at most every `PROGRESS_EVERY`.
    pub on_progress: Option<Arc<dyn Fn(f64) + Send + Sync>>,
}

impl Control {
    pub fn with_progress(f: impl Fn(f64) + Send + Sync + 'static) -> Self {
        Self { cancel: CancellationToken::new(), on_progress: Some(Arc::new(f)) }
    }
}

const BUS_POLL: Duration = Duration::from_millis(50);
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// A pipeline whose position has not moved for this long is stuck, not slow.
const STALL_AFTER: Duration = Duration::from_secs(60);

/// Owns a `gst::Pipeline` and sets it to `Null` when dropped, on every path including errors.
pub(crate) struct Pipeline {
    inner: gst::Pipeline,
}

impl Pipeline {
    /// A new pipeline; its threads' CPU time is charged to the work of the calling thread.
    pub fn new(name: &str) -> Self {
        let inner = gst::Pipeline::with_name(name);
        let weak = inner.downgrade();
        crate::usage::claim_threads(Box::new(move |element| weak.upgrade().is_some_and(|p| p.by_name(element).is_some())));
        Self { inner }
    }

    pub fn bin(&self) -> &gst::Pipeline {
        &self.inner
    }

    pub fn add_many(&self, elements: &[&gst::Element]) -> Result<(), MediaError> {
        self.inner.add_many(elements.iter().copied())?;
        Ok(())
    }

    pub fn set_state(&self, state: gst::State) -> Result<(), MediaError> {
        self.inner
            .set_state(state)
            .map(|_| ())
            .map_err(|_| self.first_error().unwrap_or_else(|| MediaError::Build(format!("cannot set {state:?}"))))
    }

    /// Waits for the pipeline to preroll (all sinks hold a buffer), failing on the first error.
    pub fn wait_prerolled(&self, ctl: &Control, timeout: Duration) -> Result<(), MediaError> {
        let bus = self.inner.bus().expect("a pipeline has a bus");
        let deadline = Instant::now() + timeout;
        loop {
            if ctl.cancel.is_cancelled() {
                return Err(MediaError::Cancelled);
            }
            if Instant::now() > deadline {
                return Err(MediaError::Stalled(timeout.as_secs()));
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(BUS_POLL.as_millis() as u64)) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::AsyncDone(_) => return Ok(()),
                gst::MessageView::Error(e) => return Err(error_from_message(e)),
                _ => {}
            }
        }
    }

    /// The first error already posted on the bus, if any.
    fn first_error(&self) -> Option<MediaError> {
        let bus = self.inner.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(error_from_message(e));
            }
        }
        None
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.inner.set_state(gst::State::Null);
    }
}

/// Turns a bus error into a typed error, classified by the element that raised it.
pub(crate) fn error_from_message(e: &gst::message::Error) -> MediaError {
    let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
    let details = e.debug().map(|d| d.to_string()).unwrap_or_default();
    let err = e.error();
    let text = format!("{} ({src})", err.to_string().to_lowercase().trim_end_matches('.'));
    tracing::debug!(element = %src, error = %err, details = %details, "pipeline error");
    if err.is::<gst::StreamError>() {
        match err.kind::<gst::StreamError>() {
            Some(gst::StreamError::TypeNotFound | gst::StreamError::WrongType) => MediaError::UnknownFormat(text),
            Some(gst::StreamError::Demux | gst::StreamError::Format | gst::StreamError::Decode) => {
                MediaError::Unreadable(text)
            }
            Some(gst::StreamError::CodecNotFound) => MediaError::NoDecoder(text),
            Some(gst::StreamError::Encode) => MediaError::Encode(text),
            _ => MediaError::Decode(text),
        }
    } else if err.is::<gst::ResourceError>() {
        match err.kind::<gst::ResourceError>() {
            Some(gst::ResourceError::NotFound) => MediaError::Unreadable(text),
            _ => MediaError::Encode(text),
        }
    } else {
        MediaError::Decode(text)
    }
}

/// Where a running operation stands: the newest timestamp seen, in nanoseconds, written by the
/// streaming threads and read by the driver.
#[derive(Clone, Default)]
pub(crate) struct Position(Arc<AtomicU64>);

impl Position {
    pub fn set(&self, ns: u64) {
        self.0.fetch_max(ns, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Drives `pipelines` until `finished` reports EOS on the last one, watching every bus for errors,
/// reporting progress over `[start_ns, end_ns]`, honouring cancellation and detecting stalls.
pub(crate) fn drive(
    pipelines: &[&Pipeline],
    ctl: &Control,
    position: &Position,
    (start_ns, end_ns): (u64, u64),
) -> Result<(), MediaError> {
    let buses: Vec<gst::Bus> = pipelines.iter().map(|p| p.inner.bus().expect("a pipeline has a bus")).collect();
    let last = buses.len() - 1;
    let span = end_ns.saturating_sub(start_ns).max(1) as f64;
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut last_move = (position.get(), Instant::now());
    loop {
        if ctl.cancel.is_cancelled() {
            return Err(MediaError::Cancelled);
        }
        for (i, bus) in buses.iter().enumerate() {
            let wait = if i == last { BUS_POLL } else { Duration::ZERO };
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(wait.as_nanos() as u64)) else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Error(e) => return Err(error_from_message(e)),
                gst::MessageView::Eos(_) if i == last => {
                    if let Some(f) = &ctl.on_progress {
                        f(1.0);
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        let pos = position.get();
        if pos != last_move.0 {
            last_move = (pos, Instant::now());
        } else if last_move.1.elapsed() > STALL_AFTER {
            return Err(MediaError::Stalled(STALL_AFTER.as_secs()));
        }
        if let Some(f) = &ctl.on_progress
            && last_report.elapsed() >= PROGRESS_EVERY
        {
            last_report = Instant::now();
            f((pos.saturating_sub(start_ns) as f64 / span).clamp(0.0, 1.0));
        }
    }
}

/// Sends a stream nobody wants nowhere: its buffers are dropped on `pad` itself. (A fakesink
/// would take the first one and hold the demuxer's streaming thread in preroll until the
/// pipeline plays, while the pipeline cannot preroll until the streams it wants get past that
/// same thread: a file with a stream to drop stalled.)
pub(crate) fn drop_stream(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
}

/// Makes an element or says which plugin is missing.
pub(crate) fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::Build(format!("gstreamer element {factory:?} is missing (install its plugin)")))
}

/// Links a chain of elements in order.
pub(crate) fn link_chain(chain: &[&gst::Element]) -> Result<(), MediaError> {
    gst::Element::link_many(chain.iter().copied())
        .map_err(|e| MediaError::Build(format!("cannot link {}: {e}", names(chain))))
}

fn names(chain: &[&gst::Element]) -> String {
    chain.iter().map(|e| e.name().to_string()).collect::<Vec<_>>().join(" ! ")
}
