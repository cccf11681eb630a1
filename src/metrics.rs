//! Prometheus metrics: queue depth and wait per stage, stage durations, failures by stage and code,
//! jobs in flight, batch entries waiting, WebSocket watchers and their writes. Rendered by `GET /metrics`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::job::Cost;

pub struct Metrics {
    registry: Registry,
    pub stage_queued: IntGaugeVec,
    pub stage_running: IntGaugeVec,
    pub stage_wait: HistogramVec,
    pub stage_duration: HistogramVec,
    pub stage_failures: IntCounterVec,
    /// CPU and GPU seconds stages used (`crate::usage`).
    pub stage_cpu_seconds: CounterVec,
    pub stage_gpu_seconds: CounterVec,
    /// Seconds of source and dollars of jobs that succeeded here, and their ratio per hour.
    job_source_seconds: Counter,
    job_cost_usd: Counter,
    cost_per_source_hour: Gauge,
    /// Stage workers restarted after their work panicked.
    pub stage_worker_restarts: IntCounterVec,
    pub jobs_in_flight: IntGauge,
    /// Batch entries waiting for admission on this node.
    pub batch_entries_waiting: IntGauge,
    pub jobs_finished: IntCounterVec,
    pub ws_sessions: IntGauge,
    /// Writes of a batch of events to one socket; `ws_events` / `ws_writes` is how well fan-out
    /// batches under load.
    pub ws_writes: IntCounter,
    pub ws_events: IntCounter,
    pub ws_closed: IntCounterVec,
    /// Tokio tasks alive in the server's runtime, read when the metrics are rendered (a leak of
    /// sessions or workers shows here first).
    pub tasks_alive: IntGauge,
    /// When jobs finished over the last minute, for the jobs-per-minute figure.
    recent_finishes: Mutex<VecDeque<Instant>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let buckets = vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
        let stage_queued = IntGaugeVec::new(Opts::new("clipmill_stage_queue_depth", "work queued or running per stage"), &["stage"]).unwrap();
        let stage_running = IntGaugeVec::new(Opts::new("clipmill_stage_running", "work running per stage"), &["stage"]).unwrap();
        let stage_wait = HistogramVec::new(
            HistogramOpts::new("clipmill_stage_wait_seconds", "time work waits for a stage worker").buckets(buckets.clone()),
            &["stage"],
        )
        .unwrap();
        let stage_duration =
            HistogramVec::new(HistogramOpts::new("clipmill_stage_duration_seconds", "stage run time").buckets(buckets), &["stage"]).unwrap();
        let stage_failures =
            IntCounterVec::new(Opts::new("clipmill_stage_failures_total", "stage failures by code"), &["stage", "code"]).unwrap();
        let stage_cpu_seconds =
            CounterVec::new(Opts::new("clipmill_stage_cpu_seconds_total", "CPU seconds stages used"), &["stage"]).unwrap();
        let stage_gpu_seconds =
            CounterVec::new(Opts::new("clipmill_stage_gpu_seconds_total", "GPU seconds stages used"), &["stage"]).unwrap();
        let job_source_seconds = Counter::new("clipmill_job_source_seconds_total", "seconds of source of the jobs that succeeded").unwrap();
        let job_cost_usd = Counter::new("clipmill_job_cost_usd_total", "what the jobs that succeeded cost, at the configured prices").unwrap();
        let cost_per_source_hour =
            Gauge::new("clipmill_cost_per_source_hour_usd", "cost of the jobs that succeeded per hour of their source").unwrap();
        let stage_worker_restarts =
            IntCounterVec::new(Opts::new("clipmill_stage_worker_restarts_total", "stage workers restarted after a panic"), &["stage"]).unwrap();
        let jobs_in_flight = IntGauge::new("clipmill_jobs_in_flight", "jobs admitted and not finished").unwrap();
        let batch_entries_waiting = IntGauge::new("clipmill_batch_entries_waiting", "batch entries waiting for admission").unwrap();
        let jobs_finished = IntCounterVec::new(Opts::new("clipmill_jobs_finished_total", "jobs by final status"), &["status"]).unwrap();
        let ws_sessions = IntGauge::new("clipmill_ws_sessions", "websocket event streams open").unwrap();
        let ws_writes = IntCounter::new("clipmill_ws_writes_total", "batches of events written to a websocket").unwrap();
        let ws_events = IntCounter::new("clipmill_ws_events_total", "events written to websockets").unwrap();
        let tasks_alive = IntGauge::new("clipmill_tasks_alive", "tokio tasks alive in the server's runtime").unwrap();
        let ws_closed =
            IntCounterVec::new(Opts::new("clipmill_ws_closed_total", "websocket event streams ended, by reason"), &["reason"]).unwrap();
        for c in [
            Box::new(stage_queued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stage_running.clone()),
            Box::new(stage_wait.clone()),
            Box::new(stage_duration.clone()),
            Box::new(stage_failures.clone()),
            Box::new(stage_cpu_seconds.clone()),
            Box::new(stage_gpu_seconds.clone()),
            Box::new(job_source_seconds.clone()),
            Box::new(job_cost_usd.clone()),
            Box::new(cost_per_source_hour.clone()),
            Box::new(stage_worker_restarts.clone()),
            Box::new(jobs_in_flight.clone()),
            Box::new(batch_entries_waiting.clone()),
            Box::new(jobs_finished.clone()),
            Box::new(ws_sessions.clone()),
            Box::new(ws_writes.clone()),
            Box::new(ws_events.clone()),
            Box::new(ws_closed.clone()),
            Box::new(tasks_alive.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            stage_queued,
            stage_running,
            stage_wait,
            stage_duration,
            stage_failures,
            stage_cpu_seconds,
            stage_gpu_seconds,
            job_source_seconds,
            job_cost_usd,
            cost_per_source_hour,
            stage_worker_restarts,
            jobs_in_flight,
            batch_entries_waiting,
            jobs_finished,
            ws_sessions,
            ws_writes,
            ws_events,
            ws_closed,
            tasks_alive,
            recent_finishes: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts a job that ended (`succeeded`, `failed`, `cancelled`).
    pub fn job_finished(&self, status: &str) {
        self.jobs_finished.with_label_values(&[status]).inc();
        let mut recent = self.recent_finishes.lock().expect("the finishes window is never poisoned");
        let now = Instant::now();
        recent.push_back(now);
        while recent.front().is_some_and(|t| now.duration_since(*t) > MINUTE) {
            recent.pop_front();
        }
    }

    /// Adds a job that succeeded to the cost per hour of source.
    pub fn job_cost(&self, cost: &Cost) {
        self.job_source_seconds.inc_by(cost.source_s);
        self.job_cost_usd.inc_by(cost.usd);
        let hours = self.job_source_seconds.get() / 3600.0;
        if hours > 0.0 {
            self.cost_per_source_hour.set(self.job_cost_usd.get() / hours);
        }
    }

    /// Jobs that ended in the last minute.
    pub fn jobs_last_minute(&self) -> usize {
        let recent = self.recent_finishes.lock().expect("the finishes window is never poisoned");
        recent.iter().filter(|t| t.elapsed() <= MINUTE).count()
    }

    /// What the operators' view shows of this node besides its stages: failures by stage and
    /// code, jobs by final status, and the live gauges.
    pub fn overview(&self) -> serde_json::Value {
        let failures: Vec<_> = samples(&self.stage_failures)
            .into_iter()
            .map(|(labels, count)| serde_json::json!({ "stage": labels[0], "code": labels[1], "count": count }))
            .collect();
        let finished: serde_json::Map<String, serde_json::Value> =
            samples(&self.jobs_finished).into_iter().map(|(labels, n)| (labels[0].clone(), n.into())).collect();
        serde_json::json!({
            "failures": failures,
            "jobs_finished": finished,
            "jobs_in_flight": self.jobs_in_flight.get(),
            "jobs_last_minute": self.jobs_last_minute(),
            "batch_entries_waiting": self.batch_entries_waiting.get(),
            "ws_sessions": self.ws_sessions.get(),
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks_alive.set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is utf-8")
    }
}

/// Every sample of a counter family: its label values (in declared order) and count.
fn samples(counter: &IntCounterVec) -> Vec<(Vec<String>, f64)> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for family in counter.collect() {
        for metric in family.get_metric() {
            let labels = metric.get_label().iter().map(|l| l.value().to_string()).collect();
            out.push((labels, metric.get_counter().get_value()));
        }
    }
    out
}

/// The value of one sample in a Prometheus text exposition: `name` exactly as exposed, labels
/// included (`clipmill_ws_closed_total{reason="too_slow"}`).
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_read_back_by_its_exact_name_and_labels() {
        let m = Metrics::new();
        m.ws_closed.with_label_values(&["too_slow"]).inc();
        m.ws_writes.inc_by(3);
        let text = m.render();
        assert_eq!(sample(&text, r#"clipmill_ws_closed_total{reason="too_slow"}"#), Some(1.0));
        assert_eq!(sample(&text, "clipmill_ws_writes_total"), Some(3.0));
        assert_eq!(sample(&text, "clipmill_ws_writes"), None, "a prefix of a name is not the name");
        assert_eq!(sample(&text, r#"clipmill_ws_closed_total{reason="stalled"}"#), None);
    }
}
