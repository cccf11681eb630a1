//! Prices for the cost figures a job reports (`job::usage::Cost`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Dollars per CPU-hour (one logical CPU busy for an hour).
    pub cpu_hour_usd: f64,
    /// Dollars per GPU-hour.
    pub gpu_hour_usd: f64,
}

impl CostConfig {
    /// Dollars per CPU-hour and per GPU-hour, as `job::Cost::of` takes them.
    pub fn prices(&self) -> (f64, f64) {
        (self.cpu_hour_usd, self.gpu_hour_usd)
    }
}
