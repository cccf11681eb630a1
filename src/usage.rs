//! What work costs: the CPU and GPU time a stage used, measured while it runs.
//!
//! A stage runs inside a [`Meter`]'s scope (a tokio task-local). Two kinds of work charge it:
//! - a Python worker's request: the worker process's own CPU time over the request, read from
//!   `/proc/PID/stat` before and after (exact: a worker serves one request at a time), and, for a
//!   worker whose model sits on a GPU, the request's wall time as GPU time;
//! - in-process media work (every GStreamer pipeline, `media::run_blocking`): this process's CPU
//!   time, shared equally among the in-process work running at the same moment. The share is
//!   settled whenever such work starts or ends, so the shares add up to the process's CPU time
//!   while any runs. With one job at a time it is that job's; with several it is an attribution.
//!
//! Not counted: yt-dlp's own process (the download itself is network-bound; its remux is
//! in-process and counted) and the small CPU of the async code between pipelines.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// CPU and GPU time charged to one stage (or one attempt of it).
#[derive(Debug, Default)]
pub struct Meter {
    cpu_ns: AtomicU64,
    gpu_ns: AtomicU64,
}

tokio::task_local! {
    static CURRENT: Arc<Meter>;
}

impl Meter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs `work` with this meter charged for what it uses.
    pub async fn measure<F: Future>(self: &Arc<Self>, work: F) -> F::Output {
        CURRENT.scope(self.clone(), work).await
    }

    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }

    pub fn gpu(&self) -> Duration {
        Duration::from_nanos(self.gpu_ns.load(Ordering::Relaxed))
    }

    fn charge(&self, cpu: Duration, gpu: Duration) {
        self.cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
        self.gpu_ns.fetch_add(gpu.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The meter of the task this is called from, if it runs inside one.
pub fn current() -> Option<Arc<Meter>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Charges the current meter, if any, with a worker's CPU and GPU time.
pub fn charge(cpu: Duration, gpu: Duration) {
    if let Some(meter) = current() {
        meter.charge(cpu, gpu);
    }
}

/// The CPU time (user and system) a process has used so far, from `/proc/PID/stat`; `None` when
/// it cannot be read (no procfs, the process gone).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // state is field 3, utime and stime fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

/// In-process work running now: while it lives, it takes its share of this process's CPU time
/// for the meter current where it started (or for nobody, outside any meter).
pub struct InProcess {
    id: u64,
}

struct Ledger {
    /// This process's CPU time at the last settlement.
    settled: Duration,
    running: Vec<(u64, Option<Arc<Meter>>)>,
    next_id: u64,
}

static LEDGER: Mutex<Ledger> = Mutex::new(Ledger { settled: Duration::ZERO, running: Vec::new(), next_id: 0 });

impl InProcess {
    pub fn start() -> Self {
        let mut ledger = LEDGER.lock().expect("the usage ledger is never poisoned");
        ledger.settle();
        let id = ledger.next_id;
        ledger.next_id += 1;
        ledger.running.push((id, current()));
        Self { id }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let mut ledger = LEDGER.lock().expect("the usage ledger is never poisoned");
        ledger.settle();
        ledger.running.retain(|(id, _)| *id != self.id);
    }
}

impl Ledger {
    /// Shares the CPU time used since the last settlement among the work running through it.
    fn settle(&mut self) {
        let now = own_cpu();
        let spent = now.saturating_sub(self.settled);
        self.settled = now;
        if self.running.is_empty() {
            return;
        }
        let share = spent / self.running.len() as u32;
        for meter in self.running.iter().filter_map(|(_, m)| m.as_ref()) {
            meter.charge(share, Duration::ZERO);
        }
    }
}

/// This process's CPU time, all threads.
fn own_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < d {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[tokio::test]
    async fn in_process_work_is_charged_to_the_meter_it_started_in() {
        let (busy, idle) = (Meter::new(), Meter::new());
        busy.measure(async {
            let _work = InProcess::start();
            spin(Duration::from_millis(200));
        })
        .await;
        idle.measure(async { tokio::time::sleep(Duration::from_millis(50)).await }).await;
        // At least half of the spin, should another test's pipeline have run at the same time.
        assert!(busy.cpu() >= Duration::from_millis(90), "charged {:?}", busy.cpu());
        assert_eq!(idle.cpu(), Duration::ZERO, "nothing in-process ran under it");
    }

    #[tokio::test]
    async fn a_child_process_cpu_is_read_from_proc() {
        let mut child = std::process::Command::new("sh").args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cpu = process_cpu(child.id()).expect("a live child's stat is readable");
        let meter = Meter::new();
        meter.measure(async { charge(cpu, Duration::from_secs(1)) }).await;
        assert!(meter.cpu() >= Duration::from_millis(100) && meter.cpu() <= Duration::from_secs(3), "read {:?}", meter.cpu());
        assert_eq!(meter.gpu(), Duration::from_secs(1));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
