//! `--servers-process`: the servers under test (clipmill in no-op mode, the fan-out baseline) in
//! a child process of their own instead of this one. A process may hold only so many open files
//! (20,000 on the machine BENCHMARKS.md was measured on), and an in-process server holds the other
//! end of every client socket: 10,000 watchers need 20,000 descriptors in one process, but 10,000
//! in each of two.
//!
//! The child is this same binary, run as `loadtest host clipmill|fanout`. It prints `listening
//! ADDR` once its server is up. A fan-out child then reads one schedule per stdin line (JSON),
//! replays it and answers `replayed JOBS`. Either stops its server and exits when stdin closes.

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Common;
use crate::events::Published;
use crate::fanout::Fanout;
use crate::harness::{Hosted, ServerRuntime, Target, raise_nofile_limit};

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
