//! Named tasks. tokio's own task names need `tokio_unstable`, so the name travels as a tracing
//! span instead: every log line from the task carries `task=NAME`.

use std::future::Future;

use tracing::Instrument;

/// Spawns `future` on the runtime inside a span carrying its name.
pub fn spawn_named<F>(name: &str, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.instrument(tracing::info_span!("task", task = name)))
}
