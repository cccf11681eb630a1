#!/usr/bin/env python3
"""Checks on generated media (a developer tool, not part of the product).

  check_media.py frames VIDEO OUT.raw [--size 960x540] [--fps 5]
      decode VIDEO with gst-launch-1.0 into a clipmill frame file (the format face_detect.py
      documents), as src/media/frames.rs would write it
  check_media.py png VIDEO OUTDIR T [T ...] [--size 960x540] [--fps 5]
      save the sampled frames nearest to times T (seconds) as PNGs
  check_media.py faces VIDEO [--backend mediapipe|haar] [--landmarks|--no-landmarks]
      run python/face_detect.py --request on VIDEO's frames and print its JSON path
  check_media.py speakers VIDEO.mp4 DETECTIONS.json
      per speaker of interview.truth.json: mouth_open / mouth_motion while speaking vs silent
  check_media.py decoys DETECTIONS.json
      false positives per frame (size, score, landmarks) for scenery.mp4's detections
  check_media.py bench FRAMES.raw [--backend mediapipe|haar]
      milliseconds per sampled frame: the face worker's plan against tiles and face mesh on
      every frame, interleaved (3 rounds), and their ratio
  check_media.py mp4-duration FILE
      the movie duration the mp4 header (mvhd) declares
"""
import argparse
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct("<8s6I")


def decode(video, size=(960, 540), fps=5):
    """Yields (seconds, HxWx3 RGB) frames of `video`, scaled and resampled to `fps`."""
    w, h = size
    cmd = ["gst-launch-1.0", "-q", "filesrc", f"location={video}", "!", "decodebin", "!",
           "videoconvert", "!", "videoscale", "!", f"video/x-raw,format=RGB,width={w},height={h}",
           "!", "videorate", "!", f"video/x-raw,framerate={fps}/1", "!", "fdsink", "fd=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    stride = (w * 3 + 3) & ~3  # GStreamer pads each RGB row to a multiple of 4 bytes
    size_bytes, k = stride * h, 0
    while True:
        data = proc.stdout.read(size_bytes)
        if len(data) < size_bytes:
            break
        yield k / fps, np.frombuffer(data, np.uint8).reshape(h, stride)[:, : w * 3].reshape(h, w, 3)
        k += 1
    proc.wait()


def write_frames(video, out, size=(960, 540), fps=5):
    with open(out, "wb") as f:
        f.write(HEADER.pack(b"CMFRAME1", size[0], size[1], 3, fps, 1, 0))
        n = 0
        for t, rgb in decode(video, size, fps):
            f.write(struct.pack("<Q", round(t * 1e9)))
            f.write(rgb.tobytes())
            n += 1
    return n


def run_detector(video, backend="mediapipe", landmarks=True, fps=5, workdir=None):
    workdir = Path(workdir or tempfile.mkdtemp(prefix="check_media-"))
    stem = Path(video).stem
    raw, out, req = workdir / f"{stem}.raw", workdir / f"{stem}.{backend}.json", workdir / "req.json"
    if not raw.exists():
        write_frames(video, raw, fps=fps)
    req.write_text(json.dumps({"frames": str(raw), "out": str(out), "landmarks": landmarks}))
    subprocess.run([sys.executable, str(ROOT / "python/face_detect.py"), "--backend", backend,
                    "--request", str(req)], check=True)
    return out


def speaking(turns, speaker, t, margin=0.1):
    return any(u["speaker"] == speaker and u["start"] - margin <= t <= u["end"] + margin
               for u in turns)


def silent(turns, speaker, t, margin=0.4):
    return not any(u["speaker"] == speaker and u["start"] - margin <= t <= u["end"] + margin
                   for u in turns)


def speakers(video, detections):
    truth = json.loads(Path(video).with_suffix(".truth.json").read_text())
    det = json.loads(Path(detections).read_text())
    sx = det["width"] / truth["width"]
    print(f"backend {det['backend']}")
    for s, spk in enumerate(truth["speakers"]):
        rows = {"speech": [], "silence": []}
        for k, frame in enumerate(det["frames"]):
            cx, cy = spk["face_centers"][min(round(frame["t"] * truth["fps"]),
                                             len(spk["face_centers"]) - 1)]
            near = [f for f in frame["faces"]
                    if abs(f["x"] + f["w"] / 2 - cx * sx) < 60 and abs(f["y"] + f["h"] / 2 - cy * sx) < 60]
            if not near:
                continue
            face = near[0]
            key = ("speech" if speaking(truth["turns"], s, frame["t"]) else
                   "silence" if silent(truth["turns"], s, frame["t"]) else None)
            if key:
                rows[key].append((face.get("mouth_open"), face.get("mouth_motion")))
        for field, i in (("mouth_open", 0), ("mouth_motion", 1)):
            parts = []
            for key in ("speech", "silence"):
                v = np.array([r[i] for r in rows[key] if r[i] is not None], float)
                parts.append(f"{key}: n={len(v)} median={np.median(v) if len(v) else float('nan'):.4f} "
                             f"mean={v.mean() if len(v) else float('nan'):.4f} "
                             f"p10-p90={np.percentile(v, 10) if len(v) else float('nan'):.4f}-"
                             f"{np.percentile(v, 90) if len(v) else float('nan'):.4f}")
            print(f"speaker {s} {field:12s} " + " | ".join(parts))


def decoys(detections, truth_path=None):
    det = json.loads(Path(detections).read_text())
    if truth_path:
        truth = json.loads(Path(truth_path).read_text())
        scale = truth["width"] / det["width"]
        kinds = {}
        for fr in det["frames"]:
            x0 = truth["pan_offsets"][min(round(fr["t"] * truth["fps"]), len(truth["pan_offsets"]) - 1)]
            for f in fr["faces"]:
                cx, cy = (f["x"] + f["w"] / 2) * scale + x0, (f["y"] + f["h"] / 2) * scale
                hit = [d for d in truth["decoys"] if d["box"][0] <= cx <= d["box"][0] + d["box"][2]
                       and d["box"][1] <= cy <= d["box"][1] + d["box"][3]]
                name = f"{hit[0]['kind']}@{hit[0]['box'][2]}px" if hit else "background"
                kinds.setdefault(name, []).append(f)
        def visible(box):   # sampled frames in which the decoy is wholly on screen
            return sum(1 for fr in det["frames"]
                       if 0 <= box[0] - truth["pan_offsets"][min(round(fr["t"] * truth["fps"]),
                                                                  len(truth["pan_offsets"]) - 1)]
                       <= truth["width"] - box[2])
        shown = {f"{d['kind']}@{d['box'][2]}px": visible(d["box"]) for d in truth["decoys"]}
        for name, fs in sorted(kinds.items()):
            w = np.array([f["w"] for f in fs]) * scale
            sc = np.array([f["score"] for f in fs])
            lm = sum(1 for f in fs if f.get("landmarks"))
            print(f"  {name:22s} n={len(fs):3d} of {shown.get(name, len(det['frames']))} frames shown, width(full-res px) {w.min():.0f}-{w.max():.0f} "
                  f"score {sc.min():.2f}-{sc.max():.2f} landmarks {lm}/{len(fs)}")
    frames = det["frames"]
    faces = [f for fr in frames for f in fr["faces"]]
    per_frame = [len(fr["faces"]) for fr in frames]
    print(f"backend {det['backend']}: {len(frames)} frames, {len(faces)} detections, "
          f"{sum(1 for n in per_frame if n)} frames with any, max {max(per_frame)} per frame")
    if faces:
        w = np.array([f["w"] for f in faces])
        s = np.array([f["score"] for f in faces])
        lm = [f.get("landmarks") for f in faces]
        print(f"  width px (960-wide frame): min {w.min():.0f} median {np.median(w):.0f} max {w.max():.0f}; "
              f"score: min {s.min():.2f} median {np.median(s):.2f} max {s.max():.2f}; "
              f"landmarks true: {sum(1 for x in lm if x)}/{len(lm)}")
        for f in sorted(faces, key=lambda f: -f["score"])[:8]:
            print("  ", {k: f.get(k) for k in ("x", "y", "w", "h", "score", "landmarks", "mouth_open")})


def bench(frames, backend, rounds=3):
    """The face worker's plan (python/face_detect.py handle: tiles and mesh where needed) against
    tiles and mesh on every frame, on the same frames, interleaved, in one run."""
    import time
    sys.path.insert(0, str(ROOT / "python"))
    import face_detect
    model = face_detect.Model(backend)
    records = list(face_detect.read_frames(frames))
    for _, rgb, _ in records[:3]:           # warm up
        model.detector.detect(rgb)

    def every_frame():
        faces = 0
        for _, rgb, _ in records:
            found, _ = model.detector.detect(rgb)
            faces += len(found)
            for f in found:
                if model.landmarker:
                    model.landmarker.measure(rgb, (f["x"], f["y"], f["w"], f["h"]))
        return faces

    def planned():
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "out.json"
            face_detect.handle(model, {"frames": str(frames), "out": str(out)})
            return sum(len(f["faces"]) for f in json.loads(out.read_text())["frames"])

    n = len(records)
    times = {"every frame": [], "planned": []}
    for _ in range(rounds):
        for name, run in (("every frame", every_frame), ("planned", planned)):
            start = time.perf_counter()
            faces = run()
            times[name].append(1000 * (time.perf_counter() - start) / n)
            print(f"{name}: {faces / n:.2f} faces/frame, {times[name][-1]:.1f} ms/frame")
    base, new = (sorted(times[k])[len(times[k]) // 2] for k in ("every frame", "planned"))
    print(f"{backend}: {n} frames {records[0][2]}; median ms/frame every frame {base:.1f}, planned {new:.1f}, "
          f"planned / every frame {new / base:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--size", default="960x540")
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--backend", default="mediapipe")
    ap.add_argument("--no-landmarks", action="store_true")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    if a.command == "frames":
        print(write_frames(a.args[0], a.args[1], size, a.fps), "frames")
    elif a.command == "png":
        from PIL import Image
        video, outdir, times = a.args[0], Path(a.args[1]), [float(t) for t in a.args[2:]]
        outdir.mkdir(parents=True, exist_ok=True)
        for t, rgb in decode(video, size, a.fps):
            if any(abs(t - want) < 0.5 / a.fps for want in times):
                Image.fromarray(rgb).save(outdir / f"{Path(video).stem}_{t:06.2f}.png")
    elif a.command == "faces":
        print(run_detector(a.args[0], a.backend, not a.no_landmarks, a.fps,
                           a.args[1] if len(a.args) > 1 else None))
    elif a.command == "speakers":
        speakers(a.args[0], a.args[1])
    elif a.command == "decoys":
        decoys(*a.args[:2])
    elif a.command == "bench":
        bench(a.args[0], a.backend)
    elif a.command == "mp4-duration":
        from gen_media_scenes import mvhd_seconds
        print(mvhd_seconds(a.args[0]))
    else:
        ap.error(f"unknown command {a.command}")


if __name__ == "__main__":
    main()
