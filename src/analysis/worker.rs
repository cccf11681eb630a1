//! A pool of long-lived Python workers spoken to through files (see python/ipc.py).
//!
//! Each worker loads its model once and answers requests one at a time: we write a request JSON
//! on scratch, send its path as a line on stdin, and wait for the worker's reply line. A worker
//! that crashes or hangs past the timeout is killed (never left running: `kill_on_drop`) and
//! replaced, and the request is tried once more on the new one. A worker that answers with an
//! error is healthy; that error is the request's.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, Semaphore};

/// How to start one kind of worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub name: &'static str,
    pub interpreter: PathBuf,
    pub script: PathBuf,
    pub args: Vec<String>,
    pub size: usize,
    /// Time to load the model and say ready.
    pub start_timeout: Duration,
    pub request_timeout: Duration,
    /// Silence allowed after a request's first progress line: a worker quiet for longer is hung.
    pub stall_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{worker} worker could not start: {reason}")]
    Start { worker: &'static str, reason: String },
    #[error("{worker} worker died: {stderr}")]
    Crashed { worker: &'static str, stderr: String },
    #[error("{worker} worker gave no answer within {secs} s")]
    Timeout { worker: &'static str, secs: u64 },
    #[error("{worker} worker reported progress, then nothing for {secs} s")]
    Stalled { worker: &'static str, secs: u64 },
    #[error("{worker} worker failed the request: {message}")]
    Failed { worker: &'static str, message: String },
    #[error("{worker} request i/o on {path}: {source}")]
    Io { worker: &'static str, path: PathBuf, source: std::io::Error },
}

impl WorkerError {
    /// Crashes and hangs are the worker's fault: a fresh worker may well succeed.
    fn worker_at_fault(&self) -> bool {
        matches!(self, Self::Crashed { .. } | Self::Timeout { .. } | Self::Stalled { .. })
    }
}

pub struct WorkerPool {
    spec: Arc<WorkerSpec>,
    idle: Mutex<Vec<Worker>>,
    slots: Semaphore,
    next_id: AtomicU64,
}

impl WorkerPool {
    /// Workers start on first use, so a pool costs nothing until it is needed.
    pub fn new(spec: WorkerSpec) -> Self {
        let slots = Semaphore::new(spec.size.max(1));
        Self { spec: Arc::new(spec), idle: Mutex::new(Vec::new()), slots, next_id: AtomicU64::new(1) }
    }

    /// Writes `request` to `request_path` and has a worker serve it; retried once on a fresh
    /// worker if the first one crashes or hangs.
    pub async fn call(&self, request: &serde_json::Value, request_path: &Path) -> Result<(), WorkerError> {
        let name = self.spec.name;
        let body = serde_json::to_vec(request).expect("request serialises");
        tokio::fs::write(request_path, body)
            .await
            .map_err(|source| WorkerError::Io { worker: name, path: request_path.to_path_buf(), source })?;
        let _slot = self.slots.acquire().await.expect("pool semaphore is never closed");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut worker = match self.idle.lock().await.pop() {
                Some(w) => w,
                None => Worker::start(&self.spec).await?,
            };
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let served = worker.serve_charged(id, request_path, &self.spec).await;
            match served {
                Ok(()) => {
                    self.idle.lock().await.push(worker);
                    return Ok(());
                }
                Err(e) if e.worker_at_fault() && attempt == 1 => {
                    tracing::warn!(worker = name, error = %e, "worker failed; restarting it and retrying once");
                    worker.kill().await;
                }
                Err(e) if e.worker_at_fault() => {
                    worker.kill().await;
                    return Err(e);
                }
                Err(e) => {
                    self.idle.lock().await.push(worker);
                    return Err(e);
                }
            }
        }
    }

    /// Starts the pool's first worker now, so model loading is not on the first request's path.
    pub async fn warm_up(&self) -> Result<(), WorkerError> {
        if self.idle.lock().await.is_empty() {
            let worker = Worker::start(&self.spec).await?;
            self.idle.lock().await.push(worker);
        }
        Ok(())
    }
}

struct Worker {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<std::sync::Mutex<VecDeque<String>>>,
    /// Its model runs on a GPU (the ready message said `"device": "cuda"`).
    on_gpu: bool,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<u64>,
    ok: Option<bool>,
    ready: Option<bool>,
    error: Option<String>,
    device: Option<String>,
    /// Why a worker that saw a GPU runs on the CPU instead.
    cuda_error: Option<String>,
    progress: Option<f64>,
}

const STDERR_LINES: usize = 20;

impl Worker {
    async fn start(spec: &WorkerSpec) -> Result<Self, WorkerError> {
        let name = spec.name;
        let mut child = Command::new(&spec.interpreter)
            .arg(&spec.script)
            .arg("--serve")
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WorkerError::Start {
                worker: name,
                reason: format!("cannot run {} {}: {e}", spec.interpreter.display(), spec.script.display()),
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(STDERR_LINES)));
        let tail = stderr.clone();
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        crate::task::spawn_named(&format!("{name}-worker-stderr"), async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(worker = name, line = %line, "worker stderr");
                    let mut tail = tail.lock().expect("stderr lock");
                    if tail.len() == STDERR_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        let mut worker = Self { name, child, stdin, stdout, stderr, on_gpu: false };
        match tokio::time::timeout(spec.start_timeout, worker.read_reply()).await {
            Ok(Ok(reply)) if reply.ready == Some(true) => {
                worker.on_gpu = reply.device.as_deref() == Some("cuda");
                if let Some(error) = &reply.cuda_error {
                    tracing::warn!(worker = name, %error, "the GPU is visible but its model runs on the CPU");
                }
                tracing::info!(worker = name, pid = worker.child.id(), on_gpu = worker.on_gpu, "worker ready");
                Ok(worker)
            }
            Ok(Ok(_)) => Err(WorkerError::Start { worker: name, reason: "first line was not a ready message".into() }),
            Ok(Err(e)) => Err(WorkerError::Start { worker: name, reason: e.to_string() }),
            Err(_) => {
                worker.kill().await;
                Err(WorkerError::Start { worker: name, reason: format!("not ready within {} s", spec.start_timeout.as_secs()) })
            }
        }
    }

    /// As `serve`, charging the current stage (`usage`) with the worker's CPU time over the
    /// request and, on a GPU, the request's wall time as GPU time.
    async fn serve_charged(&mut self, id: u64, request: &Path, spec: &WorkerSpec) -> Result<(), WorkerError> {
        let pid = self.child.id();
        let (cpu_before, started) = (pid.and_then(crate::usage::process_cpu), std::time::Instant::now());
        let served = self.serve(id, request, spec).await;
        if let (Some(before), Some(after)) = (cpu_before, pid.and_then(crate::usage::process_cpu)) {
            let gpu = if self.on_gpu { started.elapsed() } else { Duration::ZERO };
            crate::usage::charge(after.saturating_sub(before), gpu);
        }
        served
    }

    /// Sends one request and waits for its answer: within the spec's request timeout, and, once
    /// the worker has reported progress on it, with no silence longer than its stall timeout.
    async fn serve(&mut self, id: u64, request: &Path, spec: &WorkerSpec) -> Result<(), WorkerError> {
        let line = format!("{}\n", serde_json::json!({ "id": id, "request": request }));
        let deadline = tokio::time::Instant::now() + spec.request_timeout;
        let timeout = WorkerError::Timeout { worker: self.name, secs: spec.request_timeout.as_secs() };
        let sent = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        };
        let sent = tokio::time::timeout_at(deadline, sent).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(self.crashed()),
            Err(_) => return Err(timeout),
        }
        let mut progressed = false;
        loop {
            let wait = if progressed { deadline.min(tokio::time::Instant::now() + spec.stall_timeout) } else { deadline };
            let reply = match tokio::time::timeout_at(wait, self.read_reply()).await {
                Ok(reply) => reply?,
                Err(_) if wait < deadline => return Err(WorkerError::Stalled { worker: self.name, secs: spec.stall_timeout.as_secs() }),
                Err(_) => return Err(timeout),
            };
            if reply.id != Some(id) {
                continue;
            }
            if reply.progress.is_some() {
                progressed = true;
                continue;
            }
            return match reply.ok {
                Some(true) => Ok(()),
                _ => Err(WorkerError::Failed { worker: self.name, message: reply.error.unwrap_or_default() }),
            };
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, WorkerError> {
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                    Ok(reply) => return Ok(reply),
                    Err(_) => tracing::debug!(worker = self.name, line = %line, "ignoring non-protocol stdout line"),
                },
                _ => {
                    // Give the stderr reader a moment to collect the traceback.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Err(self.crashed());
                }
            }
        }
    }

    fn crashed(&self) -> WorkerError {
        let tail = self.stderr.lock().expect("stderr lock");
        let stderr = tail.iter().rev().take(5).rev().cloned().collect::<Vec<_>>().join(" | ");
        WorkerError::Crashed { worker: self.name, stderr: if stderr.is_empty() { "no output".into() } else { stderr } }
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
