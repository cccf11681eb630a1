#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine with Rust and Python: installs what is
# missing, generates the test media, lints, and runs every test. Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test
export CLIPMILL_FIXTURES="${CLIPMILL_FIXTURES:-$PWD/target/fixtures}"
.venv/bin/python scripts/gen_media.py --out "$CLIPMILL_FIXTURES"

cargo clippy --all-targets --locked -- -D warnings
# Tests leave one-line notes of what they tried (target/suite-notes), printed above the summary.
rm -rf target/suite-notes
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
cat target/suite-notes/*.txt 2>/dev/null || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
