#!/usr/bin/env bash
# Builds /tmp/gpuprep/bundle/cm: clipmill (stripped), GStreamer plugins + their library closure,
# gst tools, fonts. Unpacked on the remote at /tmp/cm.
set -euo pipefail
OUT=/tmp/gpuprep/bundle/cm
PLUGDIR=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
rm -rf "$OUT"; mkdir -p "$OUT"/{bin,lib,gst/plugins,fonts}
PLUGINS="coreelements app playback typefindfunctions pbtypes isomp4 matroska mpegtsdemux
 videoparsersbad audioparsers libav x264 nvcodec videoconvertscale videocrop videobox compositor
 videorate videofilter audioconvert audioresample volume audiotestsrc videotestsrc pango vpx aom
 opus opusparse vorbis ogg mpg123 a52dec voaacenc id3demux wavparse autodetect"
for p in $PLUGINS; do cp "$PLUGDIR/libgst$p.so" "$OUT/gst/plugins/"; done
cp /usr/lib/x86_64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner "$OUT/gst/"
cp /tmp/gpuprep/clipmill "$OUT/bin/clipmill"
cp /usr/bin/gst-inspect-1.0 /usr/bin/gst-launch-1.0 "$OUT/bin/"
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf "$OUT/fonts/"
cat > "$OUT/fonts/fonts.conf" <<'XML'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <dir>/tmp/cm/fonts</dir>
  <cachedir>/tmp/cm-fccache</cachedir>
  <config></config>
</fontconfig>
XML
# glibc/toolchain core (newer on Ubuntu 24.04) and the driver's libraries are not bundled.
SKIP='^(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|librt|libresolv|libutil|libgcc_s|libstdc\+\+|libcuda|libnvcuvid|libmvec|libanl|libnsl|libBrokenLocale|libthread_db|libcrypt)\.so'
# Libraries that libav* link for codecs, filters and protocols this work never uses: stand-ins
# with the same soname, versions and symbols (benches/gpu_box/mkstub.py; calling one aborts, naming it).
STUBS=" libcodec2.so.1.0 libflite.so.1 libflite_cmu_us_awb.so.1 libflite_cmu_us_kal.so.1
 libflite_cmu_us_kal16.so.1 libflite_cmu_us_rms.so.1 libflite_cmu_us_slt.so.1
 librsvg-2.so.2 libxml2.so.2 libSvtAv1Enc.so.1 librav1e.so.0
 libjxl.so.0.7 libjxl_threads.so.0.7 libopenmpt.so.0 libgme.so.0 libpocketsphinx.so.3
 libsphinxbase.so.3 libplacebo.so.208 libzmq.so.5 libssh-gcrypt.so.4 librist.so.4
 libsrt-gnutls.so.1.5 libbluray.so.2 libchromaprint.so.1 librabbitmq.so.4 libzvbi.so.0
 libshine.so.3 libtwolame.so.0 libxvidcore.so.4 libmfx.so.1 libOpenCL.so.1 libgsm.so.1
 libsnappy.so.1 liblilv-0.so.0 librubberband.so.2 libmysofa.so.1 libbs2b.so.0 libvidstab.so.1.1
 libzimg.so.2 libass.so.9 libspeex.so.1 libtheoraenc.so.1 libtheoradec.so.1 libmp3lame.so.0
 libwebp.so.7 libwebpmux.so.3 libopenjp2.so.7 libdav1d.so.6 libgnutls.so.30 libavfilter.so.8 libopenh264.so.7 "
STUBS=" $(echo $STUBS) "
[[ ${NO_STUBS:-0} == 1 ]] && STUBS=" "
declare -A seen
: > /tmp/gpuprep/bundle/edges.txt
queue=("$OUT"/bin/* "$OUT"/gst/gst-plugin-scanner "$OUT"/gst/plugins/*.so)
while ((${#queue[@]})); do
  f=${queue[0]}; queue=("${queue[@]:1}")
  declare -A where=()
  while read -r name path; do where[$name]=$path; done < <(ldd "$f" | awk '/=>/ {print $1, $3}')
  for name in $(readelf -d "$f" | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); print $5}'); do
    [[ "$name" =~ $SKIP ]] && continue
    echo "$name <- $(basename "$f")" >> /tmp/gpuprep/bundle/edges.txt
    [[ -n "${seen[$name]:-}" ]] && continue
    seen[$name]=1
    path=${where[$name]:-}
    if [[ -z "$path" || "$path" == not ]]; then echo "MISSING: $name (needed by $f)" >&2; exit 1; fi
    if [[ "$STUBS" == *" $name "* ]]; then
      python3 "$(dirname "$0")/mkstub.py" "$path" "$OUT/lib" >/dev/null
    else
      cp -L "$path" "$OUT/lib/$name"
      queue+=("$OUT/lib/$name")
    fi
  done
  unset where
done
for s in $STUBS; do
  [[ -e "$OUT/lib/$s" ]] || continue
  users=$(awk -v s="$s" '$1 == s {print $3}' /tmp/gpuprep/bundle/edges.txt | sort -u | tr '\n' ' ')
  echo "stub $s <- $users"
done > /tmp/gpuprep/bundle/stubs.txt
strip --strip-unneeded "$OUT"/lib/*.so* "$OUT"/gst/plugins/*.so "$OUT"/gst/gst-plugin-scanner "$OUT"/bin/gst-* 2>/dev/null || true
echo "libs: $(ls "$OUT/lib" | wc -l), plugins: $(ls "$OUT/gst/plugins" | wc -l)"
du -sh "$OUT"/*
