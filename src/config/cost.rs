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
