#!/usr/bin/env bash
# Two builds of the server side by side in one run: no-op job throughput (`loadtest jobs`) and
# fan-out latency (`loadtest watchers`) with the loadtest of git revision BEFORE and of the work
# tree, alternating, ROUNDS times each. Prints every run and the after / before ratios of the
# medians. BEFORE_BIN=path uses an already built `loadtest` as the before side instead of
# building BEFORE (into target/before-build, from a temporary worktree; a release build).
#
#   bash loadtest/before_after.sh BEFORE [ROUNDS] [JOBS] [WATCHERS]   (defaults: 3 rounds, 5000 jobs, 2000 watchers)
set -euo pipefail
cd "$(dirname "$0")/.."
before_rev=${1:?usage: before_after.sh BEFORE [ROUNDS] [JOBS] [WATCHERS]}
rounds=${2:-3}
jobs=${3:-5000}
watchers=${4:-2000}

cargo build --release --locked --bin loadtest 2>&1 | tail -1
before=${BEFORE_BIN:-}
if [[ -z $before ]]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$before_rev"
  (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target/before-build" cargo build --release --locked --bin loadtest 2>&1 | tail -1) || true
  before=target/before-build/release/loadtest
  git worktree remove --force "$tree"
fi
[[ -x $before ]] || { echo "before_after: no loadtest binary for $before_rev at $before" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$rounds"); do
  for side in before after; do
    bin=target/release/loadtest
    [[ $side == before ]] && bin=$before
    for scenario in jobs watchers; do
      case $scenario in
        jobs) args=(jobs --count "$jobs" --concurrency 32) ;;
        watchers) args=(watchers --count "$watchers" --jobs 10) ;;
      esac
      line=$("$bin" "${args[@]}" | tail -1)
      echo "{\"side\": \"$side\", \"round\": $round, \"run\": $line}" >>"$results"
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
figures = {}
for r in runs:
    run, side = r["run"], r["side"]
    if run["scenario"] == "jobs":
        shown = {"end-to-end jobs/s": run["e2e_per_s"], "submit jobs/s": run["submit_per_s"], "POST p99 ms": run["post_ms"]["p99"]}
    else:
        c = run["clipmill"]
        shown = {"fan-out p50 ms": c["latency_ms"]["p50"], "fan-out p99 ms": c["latency_ms"]["p99"],
                 "events delivered": c["delivered"] / c["expected"]}
    print(f"round {r['round']} {side:6} " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    for k, v in shown.items():
        figures.setdefault(k, {}).setdefault(side, []).append(v)
print("| figure | before (median) | after (median) | after / before |")
print("|---|---|---|---|")
for k, by in figures.items():
    b, a = statistics.median(by["before"]), statistics.median(by["after"])
    print(f"| {k} | {b:.4g} | {a:.4g} | {a / b:.2f} |")
PY
