//! Where the servers under test live: a tokio runtime of their own (so they do not share worker
//! queues with the load they are answering, as in separate processes), and clipmill itself,
//! started in-process in no-op mode with throwaway data folders, or a running one at `--target`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clipmill::config::Config;
use clipmill::server::Server;

use crate::Common;
use crate::host::{HostProcess, Hosted};

/// The runtime that hosts every in-process server (clipmill and the baselines).
pub struct ServerRuntime {
    rt: tokio::runtime::Runtime,
}

impl ServerRuntime {
    /// `threads` workers, or one per core when 0.
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        let rt = builder.thread_name("server").enable_all().build()?;
        Ok(Self { rt })
    }

    /// Runs `future` on the server runtime and waits for it from the caller's.
    pub async fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(future).await.expect("server-side task panicked")
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(future)
    }

    /// Drops whatever still runs there (listeners, sockets); callable from async code.
    pub fn close(self) {
        self.rt.shutdown_background();
    }
}

/// The clipmill being measured.
pub struct Target {
    pub addr: SocketAddr,
    pub api_key: String,
    local: Option<LocalClipmill>,
    /// `--servers-process`: the same no-op clipmill, in a child process.
    child: Option<HostProcess>,
}

struct LocalClipmill {
    server: Server,
    dir: PathBuf,
}

impl Target {
    /// The server at `--target`, or a fresh in-process one whose stages each sleep `stage_ms`.
    pub async fn open(servers: &ServerRuntime, common: &Common, stage_ms: u64) -> anyhow::Result<Self> {
        let api_key = common.api_key.clone();
        if let Some(target) = &common.target {
            let addr = crate::client::loopback_addr(target)?;
            eprintln!("measuring the clipmill at {addr}; its jobs are only no-ops if it runs with server.noop = true");
            return Ok(Self { addr, api_key, local: None, child: None });
        }
        if common.servers_process {
            let child = HostProcess::start(Hosted::Clipmill, common, stage_ms).await?;
            return Ok(Self { addr: child.addr, api_key, local: None, child: Some(child) });
        }
        let base = common.data_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("clipmill-loadtest-{}", uuid::Uuid::new_v4().simple()));
        let config = noop_config(&dir, &api_key, stage_ms)?;
        let server = servers.run(async move { Server::start(&config).await }).await.context("cannot start clipmill in-process")?;
        let addr = server.addr;
        Ok(Self { addr, api_key, local: Some(LocalClipmill { server, dir }), child: None })
    }

    /// The in-process server's own metrics, when there is one.
    pub fn metrics(&self) -> Option<std::sync::Arc<clipmill::metrics::Metrics>> {
        self.local.as_ref().map(|l| l.server.ctx.metrics.clone())
    }

    /// Stops an in-process server (a short drain: no-op jobs are quick) and removes its folders;
    /// a child process does the same for its own.
    pub async fn close(self, servers: &ServerRuntime) {
        if let Some(child) = self.child {
            child.close().await;
        }
        if let Some(LocalClipmill { server, dir }) = self.local {
            servers.run(server.shutdown(Duration::from_secs(2))).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
    }
}

/// The shipped defaults, in no-op mode, on 127.0.0.1:0, with admission raised out of the way and
/// 127.0.0.1 allowed as a source.
fn noop_config(dir: &std::path::Path, api_key: &str, stage_ms: u64) -> anyhow::Result<Config> {
    let mut c = Config::load(None)?;
    c.server.bind = "127.0.0.1:0".into();
    c.server.data_dir = dir.join("data");
    c.scratch.dir = dir.join("scratch");
    c.server.api_keys = [(api_key.to_string(), "loadtest".to_string())].into();
    c.server.max_jobs_in_flight = 100_000;
    c.server.noop = true;
    c.server.noop_stage_ms = stage_ms;
    // The jobs name a source on 127.0.0.1 (never fetched in no-op mode), which the SSRF guard
    // would refuse at submission.
    c.fetch.allowed_networks = vec!["127.0.0.1".into()];
    c.validate()?;
    Ok(c)
}
