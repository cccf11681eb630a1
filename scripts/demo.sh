#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds clipmill, generates a
# sample talk video, and renders its clips (track, fit and original framing) into out/clips.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked
.venv/bin/python scripts/gen_media.py --out out/sample
.venv/bin/python scripts/sample_edit.py out/sample/talk.truth.json > out/sample/talk.edit.json
./target/release/clipmill render --input out/sample/talk.mp4 --edit out/sample/talk.edit.json --out out/clips
cat out/clips/clips.json
