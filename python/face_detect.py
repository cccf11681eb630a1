"""Face detection over a raw frame file, behind clipmill's file IPC (see ipc.py).

Request: {"frames": "/path/frames.raw", "out": "/path/detections.json", "landmarks": true,
          "follow": false, "expected": 0}
(`follow`: the frame file is still being written, read it as it grows (see read_frames);
`expected`: about how many frames it will hold, for progress.)
Output:  {"backend": "mediapipe" | "haar", "width": W, "height": H,
          "frames": [{"t": seconds, "shot_change": bool,
                      "faces": [{"x", "y", "w", "h", "score",
                                 "landmarks": bool | null, "mouth_open": float | null,
                                 "mouth_motion": float | null}]}]}
Boxes are in frame-file pixels (top-left corner and size), best first. `shot_change` marks a frame
whose picture differs wholesale from the previous sampled one (a cut in the source).

Per face, for telling who speaks and for rejecting face-like patterns:
- `landmarks`: MediaPipe's face mesh, run on the box grown by 40%, found a face there whose
  landmarks span the box (centre inside it, width 0.5-2x). null when the mesh was not run: the
  request said "landmarks": false (default true), the backend is Haar, or the mesh did not load.
- `mouth_open`: the mesh's inner-lip gap (landmarks 13-14) over its face height (10-152): about
  0.02-0.03 closed, 0.06 for talk.mp4's parted lips, 0.08-0.12 speaking. Its spread over about a
  second tells speech from a still face better than any one value. null when the mesh did not
  run or found no face.
- `mouth_motion`: mean absolute change of luma (0-255) in the mouth region (lower third of the
  box, middle half of its width) since the previous sampled frame, at the same pixel coordinates,
  for both backends. null on the first frame and on a shot change. Head movement counts too: a
  still face reads 0-6, a speaking one 20-50, and so does a moving silent one, so trust it only
  where the box barely moved since the previous frame.

The frame file is written by src/media/frames.rs: a 32-byte header (magic b"CMFRAME1", then
little-endian u32 width, height, channels=3, fps numerator, fps denominator, reserved), then per
frame a u64 source timestamp in nanoseconds followed by width*height*3 bytes of RGB.

MediaPipe's full-range model sees a 192 px input, so a small face in a wide frame is missed; the
frame is therefore also run as square tiles, and detections are merged. OpenCV's Haar cascade is
the fallback when MediaPipe cannot load.

What it costs: a tiled pass is four detections (the frame and three tiles of a 16:9 frame), and
the mesh is about a quarter of one per face. So the tiles run on a key frame (the first, each shot
change, then one every two seconds) and on the frames between only while the last key frame's
tiles found a face the whole frame missed (a small face is there). The mesh runs on every face
of a frame with two or more (telling who speaks needs the mouth at every sample), and on a lone
face only at key frames (enough to confirm it is a face; the speaker of a one-face frame is not
in question).
A lone face is detected on every other frame only: a frame between two detections of the same
face (not a key frame, no small face about) gets their midpoint, marked `"tracked": true`; where
the two disagree, the frame is detected after all. Frames with two or more faces, or none, are
detected every time.
"""

import os
import struct
import sys
import time

import numpy as np

import ipc

HEADER = struct.Struct("<8s6I")
MAGIC = b"CMFRAME1"


def read_frames(path, follow=False):
    """Yields (seconds, HxWx3 uint8 array, (width, height)) from a frame file, memory-mapped.

    With `follow` the file may still be being written, as PATH.part renamed to PATH once whole
    (src/media/frames.rs): frames are yielded as they arrive, and PATH whole is the end. Neither
    file there (for FOLLOW_WAIT_S at the start, or at all later) means the writer gave up."""
    if not follow:
        with open(path, "rb") as f:
            w, h = _header(f.read(HEADER.size), path)
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER.size)
        record = 8 + w * h * 3
        for i in range(len(data) // record):
            yield _frame(data[i * record:(i + 1) * record], w, h)
        return
    with _open_following(path) as f:
        header = _read_following(f, HEADER.size, path)
        w, h = _header(None if header is None else header.tobytes(), path)
        while (chunk := _read_following(f, 8 + w * h * 3, path)) is not None:
            yield _frame(chunk, w, h)


def _header(raw, path):
    magic, w, h, channels, _num, _den, _ = HEADER.unpack(raw or b"\0" * HEADER.size)
    if magic != MAGIC or channels != 3:
        raise ValueError(f"{path} is not a clipmill frame file")
    return w, h


def _frame(chunk, w, h):
    t = int.from_bytes(chunk[:8].tobytes(), "little") / 1e9
    return t, np.asarray(chunk[8:]).reshape(h, w, 3), (w, h)


def _open_following(path):
    waited = 0.0
    while waited < FOLLOW_WAIT_S:
        for name in (path, path + ".part"):
            try:
                return open(name, "rb")
            except FileNotFoundError:
                pass
        time.sleep(FOLLOW_POLL_S)
        waited += FOLLOW_POLL_S
    raise RuntimeError(f"{path} did not appear within {FOLLOW_WAIT_S:.0f} s")


def _read_following(f, n, path):
    """The next n bytes of a file being written, as an array; None at its end (the writer renamed
    it whole)."""
    buf = np.empty(n, np.uint8)
    view, got = memoryview(buf), 0
    while got < n:
        read = f.readinto(view[got:])
        if read:
            got += read
            continue
        if os.path.exists(path):
            # Whole now: what it holds past this point was written before the rename.
            read = f.readinto(view[got:])
            if not read:
                if got:
                    raise ValueError(f"{path} ends inside a frame")
                return None
            got += read
        elif not os.path.exists(path + ".part"):
            raise RuntimeError(f"{path} was abandoned by its writer")
        else:
            time.sleep(FOLLOW_POLL_S)
    return buf


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

    def detect(self, rgb, tiled=True):
        """(faces, whether a tile found one the whole frame missed)."""
        h, w, _ = rgb.shape
        boxes = []
        for x0, y0, side in [(0, 0, None)] + (tiles(w, h) if tiled else []):
            view = rgb if side is None else rgb[y0:y0 + side, x0:x0 + side]
            vh, vw, _ = view.shape
            result = self.model.process(np.ascontiguousarray(view))
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                boxes.append((x0 + b.xmin * vw, y0 + b.ymin * vh, b.width * vw, b.height * vh, d.score[0], side is not None))
        return merge(boxes)


class HaarDetector:
    name = "haar"

    def __init__(self):
        import cv2

        self.cv2 = cv2
        self.model = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
        if self.model.empty():
            raise RuntimeError("haar cascade did not load")

    # The cascade misses faces under about 40 px, so narrower frames are scanned enlarged to this.
    SCAN_WIDTH = 960

    def detect(self, rgb, tiled=True):
        """(faces, False): the cascade scans every scale of the whole frame, no tiles."""
        gray = self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY)
        scale = max(1.0, self.SCAN_WIDTH / gray.shape[1])
        if scale > 1:
            gray = self.cv2.resize(gray, None, fx=scale, fy=scale, interpolation=self.cv2.INTER_LINEAR)
        found, _, weights = self.model.detectMultiScale3(gray, 1.1, 5, minSize=(24, 24), outputRejectLevels=True)
        boxes = [(x / scale, y / scale, w / scale, h / scale, min(1.0, float(s) / 10.0), False) for (x, y, w, h), s in zip(found, weights)]
        return merge(boxes)


class Landmarker:
    """MediaPipe face mesh on the area around one detected face."""

    GROW = 1.4          # crop side over box side
    MIN_SIDE = 256      # crops are upscaled to at least this, the mesh's detector wants ~128+ px

    def __init__(self):
        import cv2
        from mediapipe.python.solutions import face_mesh

        self.cv2 = cv2
        self.model = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)

    def measure(self, rgb, box):
        """(landmarks found in the box, mouth_open or None) for box = (x, y, w, h)."""
        x, y, w, h = box
        ih, iw, _ = rgb.shape
        side = max(w, h) * self.GROW
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x1, y1 = min(iw, int(cx + side / 2)), min(ih, int(cy + side / 2))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return False, None
        crop = rgb[y0:y1, x0:x1]
        scale = max(1.0, self.MIN_SIDE / min(crop.shape[:2]))
        if scale > 1:
            crop = self.cv2.resize(crop, None, fx=scale, fy=scale, interpolation=self.cv2.INTER_LINEAR)
        result = self.model.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return False, None
        ch, cw = crop.shape[:2]
        points = np.array([(p.x * cw, p.y * ch) for p in result.multi_face_landmarks[0].landmark]) / scale
        points += (x0, y0)
        span = points.max(axis=0) - points.min(axis=0)
        mid = (points.max(axis=0) + points.min(axis=0)) / 2
        plausible = bool(x <= mid[0] <= x + w and y <= mid[1] <= y + h and 0.5 * w <= span[0] <= 2 * w)
        height = np.linalg.norm(points[10] - points[152])
        mouth = np.linalg.norm(points[13] - points[14]) / height if height > 0 else None
        return plausible, None if mouth is None else round(float(mouth), 4)


LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def mouth_motion(rgb, previous, box):
    """Mean absolute luma change in the box's mouth region (lower third, middle half) between
    two frames, at the same pixel coordinates."""
    x, y, w, h = box
    x0, x1 = max(0, int(round(x + w / 4))), min(rgb.shape[1], int(round(x + 3 * w / 4)))
    y0, y1 = max(0, int(round(y + 2 * h / 3))), min(rgb.shape[0], int(round(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    now, before = (f[y0:y1, x0:x1].astype(np.float32) @ LUMA for f in (rgb, previous))
    return round(float(np.abs(now - before).mean()), 3)


def merge(boxes):
    """Drops boxes (x, y, w, h, score, from a tile) that mostly overlap a better one. Returns the
    faces, best first, and whether one of them was found by a tile only."""
    kept = []
    for b in sorted(boxes, key=lambda b: -b[4]):
        if all(iou(b, k) < 0.4 for k in kept):
            kept.append(b)
    faces = [{"x": round(float(x), 1), "y": round(float(y), 1), "w": round(float(w), 1), "h": round(float(h), 1),
              "score": round(float(s), 3)}
             for x, y, w, h, s, _ in kept]
    whole = [b for b in boxes if not b[5]]
    return faces, any(b[5] and all(iou(b, w) < 0.4 for w in whole) for b in kept)


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


def histogram(rgb):
    """A frame's coarse colour histogram, for telling shot changes."""
    small = rgb[::8, ::8].reshape(-1, 3) // 32
    return np.bincount(small[:, 0] * 64 + small[:, 1] * 8 + small[:, 2], minlength=512) / len(small)


def add_arguments(parser):
    parser.add_argument("--backend", default="auto", choices=["auto", "mediapipe", "haar"])


class Model:
    """The detector plus, with MediaPipe, the face mesh for landmarks and mouth opening."""

    def __init__(self, backend):
        self.detector = make_detector(backend)
        self.landmarker = None
        if self.detector.name == "mediapipe":
            try:
                self.landmarker = Landmarker()
            except Exception as e:  # detection still works without the mesh
                print(f"face mesh unavailable, no landmarks: {e}", file=sys.stderr)


def load(args):
    model = Model(args.backend)
    return model, {"backend": model.detector.name, "landmarks": model.landmarker is not None}


KEY_EVERY_S = 2.0
# A followed frame file (see read_frames) must appear within this long; it is polled this often.
FOLLOW_WAIT_S = 60.0
FOLLOW_POLL_S = 0.01
# Two detections closer than this overlap (intersection over union) are one face, followed.
TRACK_IOU = 0.5


class Stream:
    """Frames as they arrive, each with whether it is a shot change (its colours differ wholesale
    from the previous frame's) and a key frame (the first, each shot change, then one every two
    seconds)."""

    def __init__(self, frames):
        self.frames, self.records, self.cuts, self.keys = frames, [], [], []
        self.ended, self._hist, self._key_at = False, None, None

    def has(self, i):
        """Whether frame i exists, reading up to it if it has not arrived yet."""
        while len(self.records) <= i and not self.ended:
            try:
                t, rgb, size = next(self.frames)
            except StopIteration:
                self.ended = True
                break
            hist = histogram(rgb)
            cut = self._hist is not None and 0.5 * np.abs(hist - self._hist).sum() > 0.5
            key = self._key_at is None or cut or t - self._key_at >= KEY_EVERY_S
            self._hist, self._key_at = hist, t if key else self._key_at
            self.records.append((t, rgb, size))
            self.cuts.append(cut)
            self.keys.append(key)
        return i < len(self.records)


def between(a, b):
    """The face halfway between two detections of it, or None when they are not the same face."""
    if iou((a["x"], a["y"], a["w"], a["h"]), (b["x"], b["y"], b["w"], b["h"])) < TRACK_IOU:
        return None
    face = {k: round((a[k] + b[k]) / 2, 1) for k in ("x", "y", "w", "h")}
    return {**face, "score": min(a["score"], b["score"]), "tracked": True}


def detect_all(detector, stream, expected):
    """Faces per frame, frame by frame as they arrive. A frame between two others that each hold
    one face, and not a key frame, is not run through the detector: its face is the two
    neighbours' midpoint when they agree (the same face, a short way apart), and it is detected
    after all when they do not."""
    found, small_faces, waiting, i = [], False, None, 0
    while stream.has(i):
        ipc.progress(i / max(expected, i + 1))
        rgb, key = stream.records[i][1], stream.keys[i]
        skip = (not key and not small_faces and waiting is None and i > 0 and len(found[i - 1]) == 1
                and stream.has(i + 1) and not stream.keys[i + 1])
        if skip:
            found.append(None)
            waiting, i = i, i + 1
            continue
        faces, from_tiles = detector.detect(rgb, tiled=key or small_faces)
        found.append(faces)
        if key:
            small_faces = from_tiles
        if waiting is not None:
            w, waiting = waiting, None
            face = between(found[w - 1][0], faces[0]) if len(faces) == 1 else None
            found[w] = [face] if face else detector.detect(stream.records[w][1], tiled=False)[0]
        i += 1
    return found


def handle(model, request):
    landmarker = model.landmarker if request.get("landmarks", True) else None
    stream = Stream(read_frames(request["frames"], follow=request.get("follow", False)))
    found = detect_all(model.detector, stream, request.get("expected", 0))
    records = stream.records
    size = records[0][2] if records else (0, 0)
    frames, previous = [], None
    for (t, rgb, _), cut, key, faces in zip(records, stream.cuts, stream.keys, found):
        mesh = landmarker if key or len(faces) > 1 else None
        for face in faces:
            box = (face["x"], face["y"], face["w"], face["h"])
            measured, mouth = mesh.measure(rgb, box) if mesh else (None, None)
            face["landmarks"], face["mouth_open"] = measured, mouth
            face["mouth_motion"] = mouth_motion(rgb, previous, box) if previous is not None and not cut else None
        frames.append({"t": round(t, 4), "faces": faces, "shot_change": bool(cut)})
        previous = rgb
    ipc.write_json_atomic(request["out"], {"backend": model.detector.name, "width": size[0], "height": size[1], "frames": frames})


if __name__ == "__main__":
    ipc.run("faces", add_arguments, load, handle)
