//! The load generator itself works: small runs of its scenarios against the real (no-op) server,
//! checked for completeness only. Its speed figures belong to BENCHMARKS.md, never to a test.

use std::process::Command;

use serde_json::Value;

/// Runs `loadtest ARGS` and returns the JSON line it ends with.
fn loadtest(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest")).args(args).args(["--timeout-s", "60"]).output().expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadtest {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line in:\n{stdout}"));
    serde_json::from_str(line).expect("the last line is JSON")
}

#[test]
fn jobs_scenario_sees_every_no_op_job_end() {
    let r = loadtest(&["jobs", "--count", "300", "--concurrency", "8"]);
    assert_eq!((r["accepted"].as_u64(), r["done"].as_u64(), r["errors"].as_u64()), (Some(300), Some(300), Some(0)), "{r}");
    assert_eq!(r["events"], 300 * 15, "every stage started and finished, then done: {r}");
}

#[test]
fn watchers_scenario_with_servers_in_a_child_process_delivers_every_event_to_both_servers() {
    let r = loadtest(&["watchers", "--count", "50", "--jobs", "2", "--servers-process"]);
    for side in ["clipmill", "baseline"] {
        let s = &r[side];
        assert_eq!(s["connected"], 50, "{side}: {r}");
        assert_eq!(s["delivered"], s["expected"], "{side}: {r}");
        assert_eq!(s["expected"], 50 * 2 * 15, "{side}: {r}");
        assert_eq!(s["disconnects"], 0, "{side}: {r}");
    }
}

#[test]
fn soak_scenario_samples_the_server_process_while_the_mix_runs() {
    let r = loadtest(&["soak", "--minutes", "0.15", "--sample-s", "2", "--rate", "10", "--watchers", "10", "--stage-ms", "20", "--servers-process"]);
    assert!(r["accepted"].as_u64().unwrap() > 40, "{r}");
    assert!(r["cancels"].as_u64().unwrap() > 0 && r["reads"].as_u64().unwrap() > 40 && r["events"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{r}");
    assert!(samples.iter().all(|s| s["rss_mib"].as_f64().unwrap() > 0.0 && s["open_files"].as_u64().unwrap() > 0 && s["tasks"].as_f64().unwrap() > 0.0), "{r}");
}
