#!/usr/bin/env bash
# Installs s3s-fs 0.14.1, the S3-compatible server the S3 blob store tests run against, into
# ${CLIPMILL_TOOLS:-$HOME/.cache/clipmill/tools}/bin, idempotently. 0.14.1 because newer releases
# need a newer rustc than the project's; the resolver fallback picks dependency versions that
# build with the installed toolchain.
set -euo pipefail
CLIPMILL_TOOLS="${CLIPMILL_TOOLS:-$HOME/.cache/clipmill/tools}"
if [[ -x "$CLIPMILL_TOOLS/bin/s3s-fs" ]]; then
  echo "install_s3s_fs: present at $CLIPMILL_TOOLS/bin/s3s-fs"
  exit 0
fi
mkdir -p "$CLIPMILL_TOOLS"
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback \
  cargo install --quiet s3s-fs --version 0.14.1 --features binary --root "$CLIPMILL_TOOLS" >&2
echo "install_s3s_fs: installed $CLIPMILL_TOOLS/bin/s3s-fs"
