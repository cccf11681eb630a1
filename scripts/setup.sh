#!/usr/bin/env bash
# Installs what clipmill needs on Debian 12, idempotently: GStreamer (dev files and plugins),
# espeak-ng and tesseract (test media and caption checks), PostgreSQL 15 (the store tests start a
# private server), and the Python venv (.venv) from the pinned python/requirements.txt. With
# --bench it also installs ffmpeg, the benchmark's baseline (the product never calls it).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  pkg-config gcc libc6-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  espeak-ng tesseract-ocr fonts-dejavu-core
  postgresql-15
  libgl1 libglib2.0-0
)
[[ "${1:-}" == "--bench" ]] && packages+=(ffmpeg)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  apt_get=("${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300)
  "${apt_get[@]}" update -q >/dev/null
  # Two apt runs at once can remove each other's downloads: retry once.
  "${apt_get[@]}" install --no-install-recommends "${missing[@]}" >/dev/null ||
    { sleep 5; "${apt_get[@]}" install --no-install-recommends "${missing[@]}" >/dev/null; }
fi

stamp=.venv/.requirements.sha256
want=$(sha256sum python/requirements.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: creating .venv from python/requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r python/requirements.txt
  echo "$want" > "$stamp"
fi
echo "setup: ok"
