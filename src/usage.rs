//! What work costs: the CPU and GPU time a stage used, measured while it runs.
//!
//! A stage runs inside a [`Meter`]'s scope (a tokio task-local). Two kinds of work charge it:
//! - a Python worker's request: the worker process's own CPU time over the request, read from
//!   `/proc/PID/stat` before and after (exact: a worker serves one request at a time), and, for a
//!   worker whose model sits on a GPU, the request's wall time as GPU time;
//! - in-process media work (every media operation, `media::run_blocking`): the CPU time of the
//!   threads it owns, read from `/proc/self/task` four times a second and whenever work starts
//!   or ends. A work owns the thread that runs it and the threads named after the elements of
//!   its pipelines (GStreamer names a streaming thread `element:pad`; threads that x264 or libav
//!   start inherit their creator's name). What no running work owns (a thread that ended between
//!   two readings, the runtime's own threads) is shared equally among the work running then, so
//!   the charges add up to the process's CPU time while any work runs.
//!
//! Not counted: yt-dlp's own process (the download itself is network-bound; its remux is
//! in-process and counted) and the small CPU of the async code between pipelines.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
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
    parse_stat(&stat).map(|(_, ticks)| ticks_to_time(ticks))
}

/// In-process work running now (one media operation: its thread and its pipelines). The CPU
/// time of the threads it owns goes to the meter current where it started (or to nobody, outside
/// any meter); what no running work owns (threads that ended between two samples, the runtime)
/// is shared equally among the work running at the time.
pub struct InProcess {
    id: u64,
}

/// Whether some work owns the element of this name (a thread's name up to its `:`): GStreamer
/// names its streaming threads `element:pad`, and the threads a library such as x264 or libav
/// starts from one keep its name.
pub type Owns = Box<dyn Fn(&str) -> bool + Send>;

struct Work {
    id: u64,
    meter: Option<Arc<Meter>>,
    owns: Vec<Owns>,
}

struct Seen {
    /// CPU time so far, in clock ticks.
    ticks: u64,
    comm: String,
    owner: Option<u64>,
}

struct Ledger {
    /// This process's CPU time at the last settlement.
    settled: Duration,
    running: Vec<Work>,
    /// This process's threads at the last settlement, by thread id.
    threads: HashMap<u32, Seen>,
    /// Threads that run a piece of work themselves (its media thread).
    claimed: HashMap<u32, u64>,
    next_id: u64,
}

static LEDGER: LazyLock<Mutex<Ledger>> = LazyLock::new(|| {
    // Settles four times a second while work runs, so a thread that ends loses at most that much.
    let sampler = std::thread::Builder::new().name("usage-sampler".into()).spawn(|| loop {
        std::thread::sleep(SAMPLE_EVERY);
        let mut ledger = lock();
        if !ledger.running.is_empty() {
            ledger.settle();
        }
    });
    if let Err(e) = sampler {
        tracing::warn!(error = %e, "no usage sampler: CPU is shared at the edges of work only");
    }
    Mutex::new(Ledger { settled: own_cpu(), running: Vec::new(), threads: HashMap::new(), claimed: HashMap::new(), next_id: 0 })
});

const SAMPLE_EVERY: Duration = Duration::from_millis(250);

thread_local! {
    /// The work this thread runs (set on media threads).
    static WORKING_ON: Cell<Option<u64>> = const { Cell::new(None) };
}

fn lock() -> std::sync::MutexGuard<'static, Ledger> {
    LEDGER.lock().expect("the usage ledger is never poisoned")
}

impl InProcess {
    pub fn start() -> Self {
        let mut ledger = lock();
        ledger.settle();
        let id = ledger.next_id;
        ledger.next_id += 1;
        ledger.running.push(Work { id, meter: current(), owns: Vec::new() });
        Self { id }
    }

    /// The work's id, to hand to the thread that runs it (`WorkId::enter`).
    pub fn id(&self) -> WorkId {
        WorkId(self.id)
    }
}

/// A piece of in-process work, as the thread that runs it knows it.
#[derive(Debug, Clone, Copy)]
pub struct WorkId(u64);

impl WorkId {
    /// Marks the calling thread as running this work: its CPU time and that of the threads it
    /// claims (`claim_threads`) are the work's.
    pub fn enter(self) {
        WORKING_ON.set(Some(self.0));
        lock().claimed.insert(thread_id(), self.0);
    }
}

/// Gives the work the calling thread runs (see `InProcess::enter`) the threads `owns` names.
pub fn claim_threads(owns: Owns) {
    if let Some(id) = WORKING_ON.get()
        && let Some(work) = lock().running.iter_mut().find(|w| w.id == id)
    {
        work.owns.push(owns);
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let mut ledger = lock();
        ledger.settle();
        ledger.running.retain(|w| w.id != self.id);
        ledger.claimed.retain(|_, id| *id != self.id);
    }
}

impl Ledger {
    /// Charges each running work with what its threads used since the last settlement, and
    /// shares the rest of this process's CPU time since then equally among them.
    fn settle(&mut self) {
        let now = own_cpu();
        let spent = now.saturating_sub(self.settled);
        self.settled = now;
        let mut owned = Duration::ZERO;
        let mut threads = HashMap::with_capacity(self.threads.len());
        for (tid, comm, ticks) in own_threads() {
            // A thread seen before adds what it used since; a new one (or a thread id used again)
            // all it has used. A pooled thread renamed for a new task may change hands, and one
            // that entered its work (`WorkId::enter`) after it was first seen is that work's.
            let (used, owner) = match self.threads.remove(&tid) {
                Some(seen) if ticks >= seen.ticks && seen.comm == comm => {
                    (ticks - seen.ticks, self.claimed.get(&tid).copied().or(seen.owner))
                }
                Some(seen) if ticks >= seen.ticks => (ticks - seen.ticks, self.owner_of(tid, &comm)),
                _ => (ticks, self.owner_of(tid, &comm)),
            };
            let used = ticks_to_time(used);
            if let Some(work) = owner.and_then(|o| self.running.iter().find(|w| w.id == o)) {
                owned += used;
                if let Some(meter) = &work.meter {
                    meter.charge(used, Duration::ZERO);
                }
            }
            threads.insert(tid, Seen { ticks, comm, owner });
        }
        self.threads = threads;
        if self.running.is_empty() {
            return;
        }
        let share = spent.saturating_sub(owned) / self.running.len() as u32;
        for meter in self.running.iter().filter_map(|w| w.meter.as_ref()) {
            meter.charge(share, Duration::ZERO);
        }
    }

    /// The running work that owns a thread: the one it runs, or the only one that owns the
    /// element its name starts with.
    fn owner_of(&self, tid: u32, comm: &str) -> Option<u64> {
        if let Some(id) = self.claimed.get(&tid) {
            return Some(*id);
        }
        let (element, _) = comm.split_once(':')?;
        let mut owners = self.running.iter().filter(|w| w.owns.iter().any(|owns| owns(element)));
        match (owners.next(), owners.next()) {
            (Some(work), None) => Some(work.id),
            _ => None,
        }
    }
}

/// This process's threads: id, name and CPU time so far in clock ticks (`/proc/self/task`).
fn own_threads() -> Vec<(u32, String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (comm, ticks) = parse_stat(&stat)?;
            Some((tid, comm, ticks))
        })
        .collect()
}

/// The name and user + system CPU ticks in a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    // The name may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    // After the name: state is field 3, utime and stime fields 14 and 15.
    let mut fields = rest.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

fn ticks_to_time(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
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

    /// Burns `d` of this thread's own CPU time: not of wall time, which on a loaded machine (the
    /// suite runs tests side by side on 2 cores) may hold much less CPU than the assertions need.
    fn spin(d: Duration) {
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < d {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    fn thread_cpu() -> Duration {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given and nothing else.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) }, 0);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[tokio::test]
    async fn in_process_work_is_charged_to_the_meter_it_started_in() {
        let (busy, idle) = (Meter::new(), Meter::new());
        // Other work running beside it (as other tests' pipelines may) takes an equal share of
        // what nobody owns, not of the thread the busy work entered after it was first seen.
        let _beside = InProcess::start();
        busy.measure(async {
            let work = InProcess::start();
            work.id().enter();
            spin(Duration::from_millis(200));
        })
        .await;
        idle.measure(async { tokio::time::sleep(Duration::from_millis(50)).await }).await;
        assert!(busy.cpu() >= Duration::from_millis(150), "charged {:?}", busy.cpu());
        assert_eq!(idle.cpu(), Duration::ZERO, "nothing in-process ran under it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_running_side_by_side_is_charged_for_its_own_threads() {
        let (heavy, light) = (Meter::new(), Meter::new());
        let light_side = light.measure(async {
            let _work = InProcess::start();
            tokio::time::sleep(Duration::from_millis(900)).await;
        });
        let heavy_side = heavy.measure(async {
            let work = InProcess::start();
            let id = work.id();
            // A media thread that claims an element and starts a thread named after it, as
            // GStreamer and x264 do; the thread does the work.
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    id.enter();
                    claim_threads(Box::new(|element| element == "spinner7"));
                    let worker = std::thread::Builder::new().name("spinner7:src".into());
                    worker.spawn_scoped(scope, || spin(Duration::from_millis(600))).unwrap().join().unwrap();
                });
            });
            drop(work);
        });
        tokio::join!(light_side, heavy_side);
        assert!(heavy.cpu() >= Duration::from_millis(400), "heavy charged {:?}", heavy.cpu());
        // An equal share would give the light side about half; it owns no busy thread.
        assert!(light.cpu() < Duration::from_millis(200), "light charged {:?} (heavy {:?})", light.cpu(), heavy.cpu());
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
