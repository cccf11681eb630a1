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
runs = [json.load(open(f"target/bench-{name}/clips.json")) for name in ("overlap", "sequential")]
a, b = (run["timings_ms"] for run in runs)
# faster-whisper does not choose the same clips on every run: seconds of clip made, per run.
a_secs, b_secs = (sum(c["end"] - c["start"] for c in run["clips"]) for run in runs)
stages = ["fetch", "audio", "transcribe", "score", "faces", "render"]
print(f"{'stage':<12}{'overlapping (s)':>18}{'one after another (s)':>24}")
for s in stages + ["total"]:
    print(f"{s:<12}{a[s] / 1000:>18.1f}{b[s] / 1000:>24.1f}")
print(f"sum of stages, one after another: {sum(b[s] for s in stages) / 1000:.1f} s")
print(f"overlapping total / one-after-another total (their clips may differ): {a['total'] / b['total']:.2f}")
print(f"seconds of clip made: {a_secs:.1f} overlapping, {b_secs:.1f} one after another")
# Issue 17: the whole job against the render stage alone (its time with nothing beside it, in
# the run one after another), scaled to the same seconds of clip.
alone = b["render"] * a_secs / b_secs
print(f"whole job (overlapping) / render alone, same seconds of clip: {a['total'] / alone:.2f}")
print(f"whole job / render alone, one after another: {b['total'] / b['render']:.2f}")
print(f"ASR real-time factor (transcribe / audio length): {b['transcribe'] / 1000 / duration:.3f}")
PY
