#!/usr/bin/env bash
# Installs what clipmill needs on Debian 12, idempotently: GStreamer (dev files and plugins;
# textoverlay, the caption burner, is in gstreamer1.0-x),
# espeak-ng and tesseract (test media and caption checks), and the Python venv (.venv) from the
# pinned python/requirements.txt. With --bench it also installs ffmpeg, the benchmark's baseline
# (the product never calls it). With --test it also installs the servers the tests start privately
# (Redis, PostgreSQL and the S3-compatible s3s-fs): binaries only, no service is left running; and
# Chromium with its chromedriver for the dashboard's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=0 test=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    --test) test=1 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

packages=(
  pkg-config gcc libc6-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x
  espeak-ng tesseract-ocr fonts-dejavu-core
  libgl1 libglib2.0-0
)
((bench)) && packages+=(ffmpeg)
if ((test)); then
  # The dashboard's browser tests drive Debian's Chromium through its chromedriver.
  packages+=(chromium chromium-driver)
  command -v redis-server >/dev/null || packages+=(redis-server)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  apt_get=("${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300)
  # Packaged servers start themselves on install unless policy-rc.d says no: the tests run
  # private instances, and the machine should not be left with new services running.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    trap '"${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
  fi
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
if ((test)); then
  stamp=.venv/.requirements-test.sha256
  want=$(sha256sum python/requirements-test.txt | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setup: adding python/requirements-test.txt to .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r python/requirements-test.txt
    echo "$want" > "$stamp"
  fi
  bash scripts/install_s3s_fs.sh
fi
echo "setup: ok"
