//! Where the servers under test live: a tokio runtime of their own (so they do not share worker
//! queues with the load they are answering, as in separate processes), and clipmill itself,
//! started in-process in no-op mode with throwaway data folders, or a running one at `--target`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clipmill::config::Config;
use clipmill::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::Common;
use crate::events::Published;

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

    /// The process the server runs in: the child's with `--servers-process`, else this one
    /// (which then counts the load generator too); a `--target`'s is unknown here (0).
    pub fn pid(&self) -> u32 {
        match (&self.child, &self.local) {
            (Some(child), _) => child.pid(),
            (None, Some(_)) => std::process::id(),
            (None, None) => 0,
        }
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

/// A job whose source is never fetched: in no-op mode no stage touches it.
pub const JOB_BODY: &str = r#"{"url": "http://127.0.0.1:9/x.mp4", "options": {"clips": 1}}"#;

/// Which server a child hosts.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Hosted {
    Clipmill,
    Fanout,
}

/// A child process hosting one server, seen from the parent.
pub struct HostProcess {
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl HostProcess {
    /// Starts `loadtest host WHAT` with this run's server options and waits for its address.
    pub async fn start(what: Hosted, common: &Common, stage_ms: u64) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(std::env::current_exe().context("cannot find this program")?);
        let name = clap::ValueEnum::to_possible_value(&what).expect("no variant is skipped");
        command.args(["host", name.get_name(), "--stage-ms", &stage_ms.to_string()]);
        command.args(["--server-threads", &common.server_threads.to_string(), "--api-key", &common.api_key]);
        if let Some(dir) = &common.data_dir {
            command.arg("--data-dir").arg(dir);
        }
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).kill_on_drop(true).spawn().context("cannot start the server process")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.context("the server process did not start in 60 s")??;
        let Some(addr) = line.as_deref().and_then(|l| l.strip_prefix("listening ")) else {
            bail!("the server process said {line:?} instead of its address");
        };
        Ok(Self { addr: addr.parse().context("the server process's address")?, child, stdin, stdout })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Has a fan-out child replay `schedule`; returns how many jobs' worth of events went out.
    pub async fn replay(&mut self, schedule: &[Published]) -> anyhow::Result<u64> {
        let mut line = serde_json::to_vec(schedule)?;
        line.push(b'\n');
        let stdin = self.stdin.as_mut().context("the server process is closing")?;
        stdin.write_all(&line).await?;
        stdin.flush().await?;
        let answer = self.stdout.next_line().await?.unwrap_or_default();
        answer.strip_prefix("replayed ").and_then(|n| n.parse().ok()).with_context(|| format!("the fan-out process said {answer:?}"))
    }

    /// Closes the child's stdin (its signal to stop) and waits for it; kills it after 30 s.
    pub async fn close(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Raises the soft open-files limit to the hard one; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}
