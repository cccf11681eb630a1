//! What a job's stages used (wall, CPU and GPU seconds, measured by `crate::usage`) and what the
//! job cost per hour of source, at the configured prices.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a stage used, summed over its attempts (and its clips, for the per-clip stages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageUsage {
    /// Seconds the stage ran (clips of a per-clip stage may overlap others' stages).
    pub wall_s: f64,
    /// CPU seconds: its Python workers' own, plus its share of this process's media work.
    pub cpu_s: f64,
    /// GPU seconds: the wall time of its requests to workers whose model is on a GPU.
    pub gpu_s: f64,
}

impl StageUsage {
    pub fn add(&mut self, wall: Duration, cpu: Duration, gpu: Duration) {
        self.wall_s = round_ms(self.wall_s + wall.as_secs_f64());
        self.cpu_s = round_ms(self.cpu_s + cpu.as_secs_f64());
        self.gpu_s = round_ms(self.gpu_s + gpu.as_secs_f64());
    }
}

/// What a whole job used and cost, absolute and per hour of source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub cpu_s: f64,
    pub gpu_s: f64,
    /// At `cost.cpu_hour_usd` per CPU-hour and `cost.gpu_hour_usd` per GPU-hour.
    pub usd: f64,
    pub source_s: f64,
    pub cpu_s_per_source_hour: f64,
    pub gpu_s_per_source_hour: f64,
    pub usd_per_source_hour: f64,
}

impl Cost {
    /// What `stages` cost for `source_s` seconds of source, at dollars per CPU-hour and per
    /// GPU-hour (`config.cost`).
    pub fn of<'a>(stages: impl IntoIterator<Item = &'a StageUsage>, source_s: f64, (cpu_hour_usd, gpu_hour_usd): (f64, f64)) -> Self {
        let (cpu_s, gpu_s) = stages.into_iter().fold((0.0, 0.0), |(c, g), s| (c + s.cpu_s, g + s.gpu_s));
        let usd = (cpu_s * cpu_hour_usd + gpu_s * gpu_hour_usd) / 3600.0;
        let per_hour = |x: f64| if source_s > 0.0 { x * 3600.0 / source_s } else { 0.0 };
        Self {
            cpu_s: round_ms(cpu_s),
            gpu_s: round_ms(gpu_s),
            usd: round_micro(usd),
            source_s: round_ms(source_s),
            cpu_s_per_source_hour: round_ms(per_hour(cpu_s)),
            gpu_s_per_source_hour: round_ms(per_hour(gpu_s)),
            usd_per_source_hour: round_micro(per_hour(usd)),
        }
    }
}

fn round_ms(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round_micro(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_source_hour_scales_usage_to_an_hour_of_source() {
        let mut render = StageUsage::default();
        render.add(Duration::from_secs(50), Duration::from_secs(90), Duration::ZERO);
        render.add(Duration::from_secs(10), Duration::from_secs(18), Duration::ZERO);
        let asr = StageUsage { wall_s: 10.0, cpu_s: 12.0, gpu_s: 6.0 };
        let prices = (0.05, 3.0);
        let cost = Cost::of([&render, &asr], 600.0, prices);
        assert_eq!((cost.cpu_s, cost.gpu_s), (120.0, 6.0));
        assert_eq!(cost.cpu_s_per_source_hour, 720.0, "ten minutes of source: six times");
        assert_eq!(cost.gpu_s_per_source_hour, 36.0);
        // 120 CPU-s at $0.05/h and 6 GPU-s at $3/h.
        assert_eq!(cost.usd, 0.006667);
        assert_eq!(cost.usd_per_source_hour, 0.04);
        assert_eq!(Cost::of([&render], 0.0, prices).usd_per_source_hour, 0.0, "no source read: no rate");
    }
}
