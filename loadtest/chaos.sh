#!/usr/bin/env bash
# Chaos at full size (issue 15): tests/chaos.rs with 200 no-op jobs and five kill -9s of a single
# node at random moments, then a two-node cluster whose worker, Redis and Postgres go down in turn.
# Usage: bash loadtest/chaos.sh [JOBS] [KILLS]   (defaults 200 and 5). Prints one line per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLIPMILL_CHAOS_JOBS="${1:-200}" CLIPMILL_CHAOS_KILLS="${2:-5}"
cargo test --locked --test chaos -- --nocapture --test-threads 1 2>&1 | grep -oE 'chaos \(.*|test result.*|panicked.*'
