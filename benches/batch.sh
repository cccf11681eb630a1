#!/usr/bin/env bash
# N real jobs at once on `clipmill serve` against the same N through `clipmill clip` one after
# another, side by side in one invocation (benches/batch.py): clips per hour, CPU utilisation,
# time to the first clip.
#   bash benches/batch.sh [JOBS] [TALK_DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-4}
duration=${2:-240}
media=target/bench-media-$duration
bash scripts/setup.sh >/dev/null
cargo build --release --locked -q --bin clipmill
.venv/bin/python scripts/gen_media.py --out "$media" --duration "$duration" >/dev/null
rm -rf target/bench-batch
.venv/bin/python benches/batch.py "$media/talk.mp4" "$jobs" target/bench-batch
