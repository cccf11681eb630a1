"""Face detection over a raw frame file, behind clipmill's file IPC (see ipc.py).

Request: {"frames": "/path/frames.raw", "out": "/path/detections.json"}
Output:  {"backend": "mediapipe" | "haar", "width": W, "height": H,
          "frames": [{"t": seconds, "faces": [{"x", "y", "w", "h", "score"}], "shot_change": bool}]}
Boxes are in frame-file pixels (top-left corner and size), best first. `shot_change` marks a frame
whose picture differs wholesale from the previous sampled one (a cut in the source).

The frame file is written by src/media/frames.rs: a 32-byte header (magic b"CMFRAME1", then
little-endian u32 width, height, channels=3, fps numerator, fps denominator, reserved), then per
frame a u64 source timestamp in nanoseconds followed by width*height*3 bytes of RGB.

MediaPipe's full-range model sees a 192 px input, so a small face in a wide frame is missed; the
frame is therefore also run as square tiles, and detections are merged. OpenCV's Haar cascade is
the fallback when MediaPipe cannot load.
"""

import os
import struct
import sys

import numpy as np

import ipc

HEADER = struct.Struct("<8s6I")
MAGIC = b"CMFRAME1"


def read_frames(path):
    """Yields (seconds, HxWx3 uint8 array) from a frame file, memory-mapped."""
    with open(path, "rb") as f:
        magic, w, h, channels, _num, _den, _ = HEADER.unpack(f.read(HEADER.size))
    if magic != MAGIC or channels != 3:
        raise ValueError(f"{path} is not a clipmill frame file")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER.size)
    record = 8 + w * h * 3
    for i in range(len(data) // record):
        chunk = data[i * record:(i + 1) * record]
        t = int.from_bytes(chunk[:8].tobytes(), "little") / 1e9
        yield t, np.asarray(chunk[8:]).reshape(h, w, 3), (w, h)


def tiles(w, h):
    """Square tiles covering a frame (one when it is square already), as (x, y, size)."""
    side = min(w, h)
    if side == max(w, h):
        return [(0, 0, side)]
    count = int(np.ceil(max(w, h) / side)) + 1
    span = max(w, h) - side
    offsets = sorted({round(span * i / (count - 1)) for i in range(count)})
    return [(o, 0, side) if w > h else (0, o, side) for o in offsets]


class MediaPipeDetector:
    name = "mediapipe"

    def __init__(self):
        from mediapipe.python.solutions import face_detection

        self.model = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def detect(self, rgb):
        h, w, _ = rgb.shape
        boxes = []
        for x0, y0, side in [(0, 0, None)] + tiles(w, h):
            view = rgb if side is None else rgb[y0:y0 + side, x0:x0 + side]
            vh, vw, _ = view.shape
            result = self.model.process(np.ascontiguousarray(view))
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                boxes.append((x0 + b.xmin * vw, y0 + b.ymin * vh, b.width * vw, b.height * vh, d.score[0]))
        return merge(boxes)


class HaarDetector:
    name = "haar"

    def __init__(self):
        import cv2

        self.cv2 = cv2
        self.model = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        if self.model.empty():
            raise RuntimeError("haar cascade did not load")

    def detect(self, rgb):
        gray = self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY)
        found, _, weights = self.model.detectMultiScale3(gray, 1.1, 5, minSize=(24, 24), outputRejectLevels=True)
        boxes = [(x, y, w, h, min(1.0, float(s) / 10.0)) for (x, y, w, h), s in zip(found, weights)]
        return merge(boxes)


def merge(boxes):
    """Drops boxes that mostly overlap a better one; best first."""
    kept = []
    for b in sorted(boxes, key=lambda b: -b[4]):
        if all(iou(b, k) < 0.4 for k in kept):
            kept.append(b)
    return [{"x": round(float(x), 1), "y": round(float(y), 1), "w": round(float(w), 1), "h": round(float(h), 1),
             "score": round(float(s), 3)}
            for x, y, w, h, s in kept]


def iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def make_detector(backend):
    if backend in ("auto", "mediapipe"):
        try:
            return MediaPipeDetector()
        except Exception as e:  # a broken mediapipe install falls back to Haar
            if backend == "mediapipe":
                raise
            print(f"mediapipe unavailable, using haar: {e}", file=sys.stderr)
    return HaarDetector()


def shot_changes(frames):
    """Per frame, whether its coarse colour histogram differs wholesale from the previous one."""
    changes, previous = [], None
    for rgb in frames:
        small = rgb[::8, ::8].reshape(-1, 3) // 32
        hist = np.bincount(small[:, 0] * 64 + small[:, 1] * 8 + small[:, 2], minlength=512) / len(small)
        changes.append(previous is not None and 0.5 * np.abs(hist - previous).sum() > 0.5)
        previous = hist
    return changes


def add_arguments(parser):
    parser.add_argument("--backend", default="auto", choices=["auto", "mediapipe", "haar"])


def load(args):
    detector = make_detector(args.backend)
    return detector, {"backend": detector.name}


def handle(detector, request):
    times, faces, pictures, size = [], [], [], (0, 0)
    for t, rgb, size in read_frames(request["frames"]):
        times.append(round(t, 4))
        faces.append(detector.detect(rgb))
        pictures.append(rgb)
    cuts = shot_changes(pictures)
    frames = [{"t": t, "faces": f, "shot_change": bool(c)} for t, f, c in zip(times, faces, cuts)]
    ipc.write_json_atomic(request["out"], {"backend": detector.name, "width": size[0], "height": size[1], "frames": frames})


if __name__ == "__main__":
    ipc.run("faces", add_arguments, load, handle)
