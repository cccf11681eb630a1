#!/usr/bin/env bash
# Stage timings of `clipmill clip` on a generated 10-minute talk → 5 clips, on this machine:
# the normal (overlapping) run and the same job with every stage run one after another
# (--no-overlap), side by side, in one invocation. Prints a table and the ratio.
#   bash benches/clip_stages.sh [DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
media=target/bench-media-$duration
bash scripts/setup.sh >/dev/null
cargo build --release --locked -q --bin clipmill
.venv/bin/python scripts/gen_media.py --out "$media" --duration "$duration" >/dev/null
export CLIPMILL__LOG__FILTER=warn CLIPMILL__SCRATCH__DIR="$PWD/target/bench-scratch"

run() { # name, extra args
  rm -rf "target/bench-$1"
  ./target/release/clipmill clip "$media/talk.mp4" --out "target/bench-$1" --clips 5 "${@:2}" 2>/dev/null >/dev/null
}
run overlap
run sequential --no-overlap

.venv/bin/python - "$duration" <<'PY'
import json, sys
duration = float(sys.argv[1])
a = json.load(open("target/bench-overlap/clips.json"))["timings_ms"]
b = json.load(open("target/bench-sequential/clips.json"))["timings_ms"]
stages = ["fetch", "audio", "transcribe", "score", "faces", "render"]
print(f"{'stage':<12}{'overlapping (s)':>18}{'one after another (s)':>24}")
for s in stages + ["total"]:
    print(f"{s:<12}{a[s] / 1000:>18.1f}{b[s] / 1000:>24.1f}")
print(f"sum of stages, one after another: {sum(b[s] for s in stages) / 1000:.1f} s")
print(f"overlapping total / one-after-another total: {a['total'] / b['total']:.2f}")
print(f"ASR real-time factor (transcribe / audio length): {b['transcribe'] / 1000 / duration:.3f}")
PY
