//! `loadtest`: a loopback-only load generator for clipmill.
//!
//! ```text
//! cargo run --release --bin loadtest -- jobs --count 200 --concurrency 8 [--stage-ms 0]
//! cargo run --release --bin loadtest -- status --count 5000 --concurrency 16
//! cargo run --release --bin loadtest -- watchers --count 200 --jobs 5
//! cargo run --release --bin loadtest -- soak --minutes 30 --servers-process
//! ```
//!
//! Each scenario starts clipmill in-process in no-op mode (every stage is a timed sleep, so only
//! the server's own overhead is measured), unless `--target http://127.0.0.1:PORT` points at a
//! running server. `status` and `watchers` also measure, in the same run, a minimal hyper or
//! fastwebsockets server doing the same job, so the numbers come with a floor to compare against.
//! Servers run on their own tokio runtime, apart from the clients, as a separate process would.
//!
//! Only loopback targets are accepted, every loop is bounded in count and in time, and the
//! program stops by itself. Results are printed as a table, then as one JSON line.

mod client;
mod events;
mod fanout;
mod harness;
mod host;
mod jobs;
mod soak;
mod stats;
mod status;
mod watchers;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use client::ClientKind;

#[derive(Parser)]
#[command(name = "loadtest", about = "Loopback load generator for clipmill (in-process no-op server by default)")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

/// Options every scenario takes.
#[derive(Args, Clone)]
pub struct Common {
    /// Time cap of each measured phase (clipmill, then the baseline), in seconds; whatever
    /// finished by then is reported.
    #[arg(long, global = true, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_s: u64,
    /// HTTP client: one hyper connection per worker, or a shared reqwest pool.
    #[arg(long, global = true, value_enum, default_value_t = ClientKind::Hyper)]
    pub client: ClientKind,
    /// Worker threads of the runtime hosting the in-process servers (0: one per core).
    #[arg(long, global = true, default_value_t = 0)]
    pub server_threads: usize,
    /// Folder for the in-process server's data and scratch (default: the system temp folder);
    /// /dev/shm takes disk syncs out of the measurement.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// A running clipmill to measure instead of an in-process one: http://127.0.0.1:PORT or
    /// http://[::1]:PORT only. Baselines still run in-process.
    #[arg(long, global = true)]
    pub target: Option<String>,
    /// Run the servers under test (clipmill, and the fan-out baseline of `watchers`) in a child
    /// process instead of this one, so each side has its own open-files limit: 10,000 watchers need 20,000 sockets in one
    /// process, 10,000 in each of two.
    #[arg(long, global = true)]
    pub servers_process: bool,
    /// API key sent to the server (an in-process server is configured to accept it).
    #[arg(long, global = true, default_value = "loadtest-key")]
    pub api_key: String,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// What the report title says about the server: its stage time, or where it runs (a target's
    /// stage time is its own configuration, unknown here).
    pub fn server_label(&self, stage_ms: u64) -> String {
        match &self.target {
            Some(target) => format!("clipmill at {target}"),
            None if self.servers_process => format!("{stage_ms} ms per stage, servers in a child process"),
            None => format!("{stage_ms} ms per stage"),
        }
    }

    /// `stage_ms` for the JSON line: null when a target's own configuration decides it.
    pub fn stage_ms_json(&self, stage_ms: u64) -> serde_json::Value {
        if self.target.is_some() { serde_json::Value::Null } else { stage_ms.into() }
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Submit no-op jobs and wait for every job_done on one /api/events watcher.
    Jobs {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        count: u64,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        concurrency: u64,
        /// How long each no-op stage sleeps, in milliseconds.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        stage_ms: u64,
    },
    /// GET one job's JSON over and over; then the same against a hyper hello-world baseline.
    Status {
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        count: u64,
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
        concurrency: u64,
    },
    /// Hold many /api/events sockets, run jobs, and measure event delivery latency; then the same
    /// against a plain fastwebsockets fan-out baseline.
    Watchers {
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        count: u64,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        jobs: u64,
        /// How long each no-op stage sleeps, in milliseconds.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        stage_ms: u64,
        /// Sockets opened at once while connecting, so the accept queue is never overrun.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1024))]
        batch: u64,
    },
    /// A steady mix (submits, cancels, status reads, watchers coming and going) for a set time,
    /// sampling the server's memory, open files, threads and tasks; best with --servers-process.
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Jobs submitted per second.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rate: u64,
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=20_000))]
        watchers: u64,
        /// How long each no-op stage sleeps, in milliseconds (keep the rate within what the
        /// stages' workers carry: with 100 ms a one-worker stage takes 10 jobs a second).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        stage_ms: u64,
        /// Seconds between two samples of the server process.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        sample_s: u64,
    },
    /// (internal) Host one server for a parent run with --servers-process, until stdin closes.
    #[command(hide = true)]
    Host {
        #[arg(value_enum)]
        server: harness::Hosted,
        #[arg(long, default_value_t = 0)]
        stage_ms: u64,
    },
}

/// mimalloc: many small short-lived allocations per request and per event (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("loadtest: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let common = cli.common;
    // Refuse a bad target before starting anything.
    if let Some(target) = &common.target {
        client::loopback_addr(target)?;
    }
    let servers = harness::ServerRuntime::new(common.server_threads)?;
    let result = match cli.scenario {
        Scenario::Jobs { count, concurrency, stage_ms } => {
            jobs::run(&servers, &common, jobs::Plan { count, concurrency, stage_ms }).await
        }
        Scenario::Status { count, concurrency } => status::run(&servers, &common, status::Plan { count, concurrency }).await,
        Scenario::Watchers { count, jobs, stage_ms, batch } => {
            watchers::run(&servers, &common, watchers::Plan { count, jobs, stage_ms, batch }).await
        }
        Scenario::Soak { minutes, rate, watchers, stage_ms, sample_s } => {
            anyhow::ensure!(minutes > 0.0 && minutes <= 24.0 * 60.0, "--minutes must be in (0, 1440]");
            soak::run(&servers, &common, soak::Plan { minutes, rate, watchers, stage_ms, sample_s }).await
        }
        Scenario::Host { server, stage_ms } => {
            servers.close();
            return host::serve(server, &common, stage_ms).await;
        }
    };
    servers.close();
    let report = result?;
    report.print();
    Ok(())
}
