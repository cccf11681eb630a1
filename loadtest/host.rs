//! `--servers-process`: the servers under test (clipmill in no-op mode, the fan-out baseline) in
//! a child process of their own instead of this one. A process may hold only so many open files
//! (20,000 on the machine BENCHMARKS.md was measured on), and an in-process server holds the other
//! end of every client socket: 10,000 watchers need 20,000 descriptors in one process, but 10,000
//! in each of two.
//!
//! The child is this same binary, run as `loadtest host clipmill|fanout`. It prints `listening
//! ADDR` once its server is up. A fan-out child then reads one schedule per stdin line (JSON),
//! replays it and answers `replayed JOBS`. Either stops its server and exits when stdin closes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::Common;
use crate::fanout::Fanout;
use crate::harness::{ServerRuntime, Target};
use crate::watchers::{Published, raise_nofile_limit};

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

/// The child's side: host `what` until stdin closes.
pub async fn serve(what: Hosted, common: &Common, stage_ms: u64) -> anyhow::Result<()> {
    raise_nofile_limit();
    let servers = ServerRuntime::new(common.server_threads)?;
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    match what {
        Hosted::Clipmill => {
            let target = Target::open(&servers, common, stage_ms).await?;
            println!("listening {}", target.addr);
            while input.next_line().await?.is_some() {}
            target.close(&servers).await;
        }
        Hosted::Fanout => {
            let mut fanout = Fanout::start(&servers, None).await?;
            println!("listening {}", fanout.addr);
            while let Some(line) = input.next_line().await? {
                let schedule: Vec<Published> = serde_json::from_str(&line).context("a schedule")?;
                let jobs = fanout.publish(&servers, schedule).await;
                println!("replayed {jobs}");
            }
            fanout.close().await;
        }
    }
    servers.close();
    Ok(())
}
