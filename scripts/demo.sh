#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds clipmill, generates a
# sample talk video, and turns it into scored, captioned, face-tracked vertical clips in out/clips
# (fetch → audio → transcribe → score → faces → render, all on this machine, nothing else running).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked --bin clipmill
.venv/bin/python scripts/gen_media.py --out out/sample
./target/release/clipmill clip out/sample/talk.mp4 --out out/clips --clips 3 --min-len 5 --max-len 12
cat out/clips/clips.json
