//! Per-tenant quotas: jobs in flight, source minutes per day, bytes stored. The limits come from
//! `[server.quotas]` (0: none) with per-tenant overrides; what a tenant uses comes from the job
//! store, and `Quotas::exceeded` says which limit, if any, refuses new work.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The window `source_minutes_per_day` counts over: the jobs created in the last 24 hours.
pub const WINDOW_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub jobs_in_flight: u64,
    pub source_minutes_per_day: u64,
    pub bytes_stored: u64,
    /// Overrides by tenant name; a limit left out is the default's.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantQuotas>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    pub jobs_in_flight: Option<u64>,
    pub source_minutes_per_day: Option<u64>,
    pub bytes_stored: Option<u64>,
}

/// One tenant's limits, 0 meaning none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub jobs_in_flight: u64,
    pub source_minutes_per_day: u64,
    pub bytes_stored: u64,
}

/// A limit a tenant has reached: its code, what to tell the client, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: u64,
}

impl Quotas {
    pub fn limits(&self, tenant: &str) -> Limits {
        let o = self.tenants.get(tenant).cloned().unwrap_or_default();
        Limits {
            jobs_in_flight: o.jobs_in_flight.unwrap_or(self.jobs_in_flight),
            source_minutes_per_day: o.source_minutes_per_day.unwrap_or(self.source_minutes_per_day),
            bytes_stored: o.bytes_stored.unwrap_or(self.bytes_stored),
        }
    }
}

impl Limits {
    pub fn any(&self) -> bool {
        self.jobs_in_flight > 0 || self.source_minutes_per_day > 0 || self.bytes_stored > 0
    }

    /// Which limit new work would pass, given what the tenant uses now (`extra_seconds`: a
    /// source about to be counted; 0 at submission, when its length is not known yet).
    pub fn exceeded(&self, in_flight: u64, source_seconds: f64, extra_seconds: f64, bytes_stored: u64) -> Option<Exceeded> {
        if self.jobs_in_flight > 0 && in_flight >= self.jobs_in_flight {
            let message = format!("{in_flight} jobs in flight; the tenant's limit is {}", self.jobs_in_flight);
            return Some(Exceeded { code: "quota_jobs_in_flight", message, retry_after_s: 5 });
        }
        let minutes = self.source_minutes_per_day as f64;
        let used = (source_seconds + extra_seconds) / 60.0;
        if minutes > 0.0 && (used > minutes || (extra_seconds == 0.0 && used >= minutes)) {
            let message = format!("{used:.1} minutes of source in the last 24 hours; the tenant's limit is {minutes:.0}");
            return Some(Exceeded { code: "quota_source_minutes", message, retry_after_s: 3600 });
        }
        if self.bytes_stored > 0 && bytes_stored >= self.bytes_stored {
            let message = format!("{bytes_stored} bytes stored; the tenant's limit is {}", self.bytes_stored);
            return Some(Exceeded { code: "quota_bytes_stored", message, retry_after_s: 3600 });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_override_replaces_only_the_limits_it_names() {
        let mut q = Quotas { jobs_in_flight: 4, source_minutes_per_day: 60, bytes_stored: 0, tenants: BTreeMap::new() };
        q.tenants.insert("big".into(), TenantQuotas { jobs_in_flight: Some(40), ..Default::default() });
        assert_eq!(q.limits("big"), Limits { jobs_in_flight: 40, source_minutes_per_day: 60, bytes_stored: 0 });
        assert_eq!(q.limits("small"), Limits { jobs_in_flight: 4, source_minutes_per_day: 60, bytes_stored: 0 });
    }

    #[test]
    fn each_limit_refuses_with_its_code_once_reached() {
        let l = Limits { jobs_in_flight: 2, source_minutes_per_day: 10, bytes_stored: 1000 };
        assert_eq!(l.exceeded(1, 0.0, 0.0, 0), None);
        assert_eq!(l.exceeded(2, 0.0, 0.0, 0).unwrap().code, "quota_jobs_in_flight");
        assert_eq!(l.exceeded(0, 600.0, 0.0, 0).unwrap().code, "quota_source_minutes");
        // A source that fits exactly is taken; one that goes past is not.
        assert_eq!(l.exceeded(0, 300.0, 300.0, 0), None);
        assert_eq!(l.exceeded(0, 300.0, 301.0, 0).unwrap().code, "quota_source_minutes");
        assert_eq!(l.exceeded(0, 0.0, 0.0, 1000).unwrap().code, "quota_bytes_stored");
        assert_eq!(Limits { jobs_in_flight: 0, source_minutes_per_day: 0, bytes_stored: 0 }.exceeded(999, 1e9, 1e9, u64::MAX), None);
    }
}
