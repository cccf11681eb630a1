#!/usr/bin/env bash
# The two ways one node runs its jobs (`server.execution`), side by side in one run: no-op job
# throughput (`loadtest jobs`) and fan-out latency (`loadtest watchers`) with each job in a job
# actor and with the stages run from the node's own queue (a cluster of one), alternating, ROUNDS
# times each. Prints every run and the stages / job-actor ratios of the medians.
#
#   bash loadtest/models.sh [ROUNDS] [JOBS] [WATCHERS]   (defaults: 3 rounds, 5000 jobs, 2000 watchers)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
jobs=${2:-5000}
watchers=${3:-2000}

cargo build --release --locked --bin loadtest 2>&1 | tail -1
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  for model in job_actor stages; do
    for scenario in jobs watchers; do
      case $scenario in
        jobs) args=(jobs --count "$jobs" --concurrency 32) ;;
        watchers) args=(watchers --count "$watchers" --jobs 10) ;;
      esac
      line=$(CLIPMILL__SERVER__EXECUTION=$model target/release/loadtest "${args[@]}" | tail -1)
      echo "{\"model\": \"$model\", \"round\": $round, \"run\": $line}" >>"$results"
    done
  done
done

python3 - "$results" <<'EOF'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
figures = {}
for r in runs:
    run, model = r["run"], r["model"]
    if run["scenario"] == "jobs":
        shown = {"end-to-end jobs/s": run["e2e_per_s"], "submit jobs/s": run["submit_per_s"], "POST p99 ms": run["post_ms"]["p99"]}
    else:
        c = run["clipmill"]
        shown = {"fan-out p50 ms": c["latency_ms"]["p50"], "fan-out p99 ms": c["latency_ms"]["p99"],
                 "events delivered": c["delivered"] / c["expected"]}
    print(f"round {r['round']} {model:9} " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    for k, v in shown.items():
        figures.setdefault(k, {}).setdefault(model, []).append(v)
print("| figure | job_actor (median) | stages (median) | stages / job_actor |")
print("|---|---|---|---|")
for k, by in figures.items():
    a, s = statistics.median(by["job_actor"]), statistics.median(by["stages"])
    print(f"| {k} | {a:.4g} | {s:.4g} | {s / a:.2f} |")
EOF
