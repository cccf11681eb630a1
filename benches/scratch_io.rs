//! Scratch I/O: `Scratch` on io_uring against its `tokio::fs` fallback, on the same files in one
//! run, as the server uses it (a multi-threaded tokio runtime calling in).
//!
//! After a warm-up round (printed, left out of the medians: first touches of the buffers and of
//! fresh disk blocks cost both sides), each round measures, for both backends back to back
//! (io_uring first in even rounds, the fallback first in odd ones):
//! - `copy` of a 512 MiB file whose pages were evicted first (cold source),
//! - `copy` of the same file after reading it once (warm source, as right after a download),
//! - `write_stream` of 512 MiB from memory in 1 MiB chunks.
//!
//! Every operation ends with fsync and rename, so both pay for getting the bytes to disk. Page
//! cache, the same for both: before each timed operation the previous output is deleted and
//! `sync()` runs, so no earlier dirty data is flushed during it; for the cold copy the source is
//! fsynced and its pages dropped with `posix_fadvise(DONTNEED)` (our file only, not the whole
//! machine's cache); for the warm copy it is read whole just before. Also printed: CPU time of
//! this process (all its threads) and what the rest of the machine used meanwhile ("others").
//!
//! Run: `cargo bench --bench scratch_io` (BENCH_ROUNDS=n rounds, default 6; BENCH_MB=n file
//! size in MiB, default 512; BENCH_ONLY=text runs only the operations whose name contains it).
//! Results: BENCHMARKS.md.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure};
use clipmill::config::ScratchConfig;
use clipmill::persist::Scratch;
use clipmill::persist::scratch::BUF_SIZE;
use futures_util::stream;
use hyper::body::Bytes;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    CopyCold,
    CopyWarm,
    WriteStream,
}

impl Op {
    const ALL: [Op; 3] = [Op::CopyCold, Op::CopyWarm, Op::WriteStream];

    fn name(self) -> &'static str {
        match self {
            Op::CopyCold => "copy (cold source)",
            Op::CopyWarm => "copy (warm source)",
            Op::WriteStream => "write_stream 1 MiB chunks",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    mb_s: f64,
    cpu: f64,
    others: f64,
}

fn main() -> anyhow::Result<()> {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default).max(1);
    let (rounds, mib) = (env("BENCH_ROUNDS", 6), env("BENCH_MB", 512));
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new().prefix("bench-scratch-").tempdir_in(&target)?;
    let dir = tmp.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&dir, rounds, mib))
}

async fn run(dir: &Path, rounds: usize, mib: usize) -> anyhow::Result<()> {
    let config = |io_uring: &str| ScratchConfig { dir: dir.to_path_buf(), sweep_every_s: 60, io_uring: io_uring.into(), min_free_mb: 0 };
    let backends = [Scratch::new(dir.to_path_buf(), &config("auto")), Scratch::new(dir.to_path_buf(), &config("off"))];
    ensure!(backends[0].backend() == "io_uring", "io_uring is not available here, nothing to compare");
    let len = mib * 1024 * 1024;
    let data = Bytes::from(noise(len));
    let source = dir.join("source");
    std::fs::write(&source, &data)?;
    std::fs::File::open(&source)?.sync_all()?;
    println!("scratch_io: {mib} MiB per operation, {rounds} rounds, folder {}", dir.display());
    println!("{:<6} {:<27} {:<9} {:>9} {:>8} {:>9}", "round", "operation", "backend", "MB/s", "CPU s", "others s");

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let ops: Vec<Op> = Op::ALL.into_iter().filter(|op| op.name().contains(&only)).collect();
    let mut samples: Vec<(Op, usize, Sample)> = Vec::new();
    // Round 0 is the warm-up.
    for round in 0..=rounds {
        for op in ops.iter().copied() {
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut outputs = [PathBuf::new(), PathBuf::new()];
            for b in order {
                let scratch = &backends[b];
                let out = dir.join(format!("out-{}", scratch.backend()));
                let _ = std::fs::remove_file(&out);
                prepare(op, &source)?;
                let sample = measure(len, async {
                    let n = match op {
                        Op::CopyCold | Op::CopyWarm => scratch.copy(&source, &out).await?,
                        Op::WriteStream => {
                            let chunks = (0..len).step_by(BUF_SIZE).map(|at| Ok(data.slice(at..(at + BUF_SIZE).min(len))));
                            scratch.write_stream(&out, stream::iter(chunks)).await?
                        }
                    };
                    ensure!(n == len as u64, "{} wrote {n} bytes, not {len}", scratch.backend());
                    Ok(())
                })
                .await?;
                let label = if round == 0 { "warm".to_string() } else { round.to_string() };
                println!(
                    "{:<6} {:<27} {:<9} {:>9.0} {:>8.2} {:>9.2}",
                    label,
                    op.name(),
                    scratch.backend(),
                    sample.mb_s,
                    sample.cpu,
                    sample.others
                );
                if round > 0 {
                    samples.push((op, b, sample));
                }
                outputs[b] = out;
            }
            if round == 0 {
                ensure!(std::fs::read(&outputs[0])? == std::fs::read(&outputs[1])?, "the backends' outputs differ for {}", op.name());
            }
        }
    }

    println!("\nmedians over {rounds} rounds (MB = 10^6 bytes):");
    for op in ops {
        let median = |b: usize, f: fn(&Sample) -> f64| median(samples.iter().filter(|s| s.0 == op && s.1 == b).map(|s| f(&s.2)).collect());
        let (uring, fs) = (median(0, |s| s.mb_s), median(1, |s| s.mb_s));
        println!(
            "{:<27} io_uring {:>6.0} MB/s ({:.2} CPU s)   tokio-fs {:>6.0} MB/s ({:.2} CPU s)   io_uring / tokio-fs = {:.2}",
            op.name(),
            uring,
            median(0, |s| s.cpu),
            fs,
            median(1, |s| s.cpu),
            uring / fs
        );
    }
    Ok(())
}

/// The same starting state for both backends: no dirty data pending, the source cold or warm.
fn prepare(op: Op, source: &Path) -> io::Result<()> {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    match op {
        Op::CopyCold => {
            let file = std::fs::File::open(source)?;
            file.sync_all()?;
            // SAFETY: a valid open descriptor; length 0 means to the end of the file.
            let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
        }
        Op::CopyWarm => drop(std::fs::read(source)?),
        Op::WriteStream => {}
    }
    Ok(())
}

/// Times `op` (an async block does nothing until polled, so none of it runs before the clock).
async fn measure(len: usize, op: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<Sample> {
    let (busy0, cpu0, t0) = (machine_busy_seconds()?, cpu_seconds()?, Instant::now());
    op.await?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    let others = (machine_busy_seconds()? - busy0 - cpu).max(0.0);
    Ok(Sample { mb_s: len as f64 / wall / 1e6, cpu, others })
}

/// CPU seconds all cores spent busy since boot (the `cpu` line of /proc/stat, less idle and iowait).
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    ensure!(ticks.len() == 8, "unexpected /proc/stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // user nice system idle iowait irq softirq steal
    Ok((ticks.iter().sum::<f64>() - ticks[3] - ticks[4]) / hz)
}

/// User + system CPU seconds of this process, every thread counted (the io_uring thread, tokio's
/// workers and its blocking pool).
fn cpu_seconds() -> anyhow::Result<f64> {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            bail!("getrusage: {}", io::Error::last_os_error());
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 { f64::NAN } else if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// Deterministic incompressible bytes (splitmix64).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 7u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
