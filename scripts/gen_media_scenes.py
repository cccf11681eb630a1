"""Scene fixtures for gen_media.py: interview, scenery, repeat, cutshort and broll.

Kept apart from gen_media.py (which documents every output and its truth format) so each file
stays small; `generate(out, tmp, base)` is called from gen_media.generate with that module as
`base`, whose constants and helpers (frame size, I420 conversion, gst-launch, encoders) it reuses.
"""
import math
import os
import re
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
from skimage.filters import gaussian
from skimage.transform import rescale

VOICES = [["-v", "en-us", "-s", "150"], ["-v", "en-us+f3", "-s", "165"]]

# The interview: (speaker, text, gap in seconds after the previous turn's end; negative = the
# turn starts that long before the previous one ends, so both speak at once).
INTERVIEW = [
    (0, "Welcome back to the show.", 0.5),
    (1, "Thanks for having me.", 0.5),
    (0, "How did you start?", 0.45),
    (1, "My father drove trains. I rode with him.", 0.5),
    (0, "Really?", 0.4),
    (1, "Yes.", 0.35),
    (0, "What was the best part?", 0.5),
    (1, "The mountains at night. The stars were very bright.", 0.5),
    (0, "That sounds wonderful.", -1.5),
    (1, "Right, exactly.", 0.45),
    (0, "Would you do it again?", 0.5),
    (1, "Every year if I could.", 0.5),
]
INTERVIEW_SECONDS = 31
SPEAKER_CENTERS = [(560, 540), (1360, 540)]
SWAY = [(6, 8.0), (5, 7.0)]     # per speaker: horizontal sway amplitude (px) and period (s)

# Mouth animation on the astronaut face (coordinates in make_face()'s 240x264 image): the inner
# edge of the upper lip is at MOUTH_Y; the part of each column below it, down to the image's
# bottom, is squeezed down by a gap that is dark mouth interior (or stretched up to close the
# photo's parted lips, a negative gap). The gap follows an ellipse MOUTH_HALF_W wide around MOUTH_X.
MOUTH_X, MOUTH_Y, MOUTH_HALF_W = 113, 188, 40
MOUTH_CLOSED, MOUTH_WIDE = -8, 22   # gap in px when silent / at full loudness
MOUTH_RMS_FULL = 0.08           # speech RMS (full scale 1, 100 ms window) that opens it fully
MOUTH_COLOUR = (45, 18, 22)

REPEAT_BLOCK = [
    "Good morning everyone.",
    "Today we talk about food.",
    "Is it going to rain?",
    "Please close the door.",
    "See you next week.",
]
REPEAT_PERIOD, REPEAT_COUNT = 15.0, 4

SCENERY_SENTENCES = [
    "We walk along the river.",
    "The hills are green in spring.",
    "A small bridge crosses the water.",
    "Children painted these posters.",
    "The path turns toward the old mill.",
    "Birds sing in the tall trees.",
]
SCENERY_SECONDS = 20

CUTSHORT_SECONDS, CUTSHORT_KEEP = 90, 0.4     # declared length; fraction of the bytes kept

BROLL_SHOTS = [0.0, 4.0, 7.0, 11.5, 14.0, 18.5, 21.0, 24.0]   # shot boundaries in seconds


# ---------------------------------------------------------------- audio


def synth_word(word, voice, tmp, cache, base):
    """espeak-ng audio of one word in one voice as float32, trimmed to its audible part."""
    key = (tuple(voice), word)
    if key not in cache:
        path = os.path.join(tmp, "word.wav")
        subprocess.run(["espeak-ng", *voice, "-w", path, word], check=True)
        with wave.open(path) as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (base.SR, 1, 2)
            x = np.frombuffer(f.readframes(f.getnframes()), np.int16)
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > base.SILENCE_THRESHOLD)
        cache[key] = x[loud[0]:loud[-1] + 1].astype(np.float32) / 32768.0
    return cache[key]


def sentences_of(text):
    return re.findall(r"[^.?!]+[.?!]", text)


def speak(track, text, pos, voice, tmp, cache, base):
    """Adds `text` (one or more sentences) to `track` from sample `pos`; returns the sentences'
    truth (exact word times) and the sample just after the last word."""
    sec = lambda samples: round(samples / base.SR, 3)
    gap, sentence_gap = round(base.WORD_GAP * base.SR), round(0.35 * base.SR)
    out = []
    for sentence in sentences_of(text):
        words = []
        for word in re.findall(r"[a-z0-9]+", sentence.lower()):
            clip = synth_word(word, voice, tmp, cache, base)
            track[pos:pos + len(clip)] += clip
            words.append({"word": word, "start": sec(pos), "end": sec(pos + len(clip))})
            pos += len(clip) + gap
        out.append({"text": sentence.strip(), "start": words[0]["start"],
                    "end": words[-1]["end"], "words": words})
        pos += sentence_gap - gap
    return out, pos - sentence_gap


def narrate(n_samples, texts, tmp, cache, base, start=0.5, gap=0.9, voice=VOICES[0]):
    """Sentences one after another from `start` s, `gap` s apart, as long as they fit."""
    audio, sentences = np.zeros(n_samples, np.float32), []
    pos = round(start * base.SR)
    for text in texts:
        probe = np.zeros(n_samples + 10 * base.SR, np.float32)
        said, end = speak(probe, text, pos, voice, tmp, cache, base)
        if end > n_samples - round(base.TAIL * base.SR):
            break
        audio[pos:end] = probe[pos:end]
        sentences += said
        pos = end + round(gap * base.SR)
    return audio, sentences


def frame_rms(track, n_frames, spf, frames=3):
    """RMS of `track` in a window of `frames` video frames centred on each frame's timestamp."""
    half = frames * spf // 2
    padded = np.concatenate([np.zeros(half, np.float32), track, np.zeros(half + spf, np.float32)])
    return np.array([np.sqrt(np.mean(padded[i * spf:i * spf + 2 * half] ** 2))
                     for i in range(n_frames)])


# ---------------------------------------------------------------- pictures


def noise(h, w, seed, lo=50, hi=170, tint=(1.0, 1.0, 1.0), cells=((9, 16), (36, 64))):
    """Smooth colour noise like gen_media's background, any size, seed and tint (RGB uint8)."""
    rng = np.random.default_rng(seed)

    def blur_matrix(n, k):
        d = (np.arange(n)[:, None] + 0.5) * k / n - (np.arange(k)[None, :] + 0.5)
        m = np.exp(-2 * d ** 2)
        return m / m.sum(axis=1, keepdims=True)

    img = np.zeros((h, w, 3))
    for amp, (cy, cx) in zip((0.7, 0.3), cells):
        grid, wy, wx = rng.random((cy, cx, 3)), blur_matrix(h, cy), blur_matrix(w, cx)
        img += amp * np.stack([wy @ grid[..., c] @ wx.T for c in range(3)], axis=-1)
    img = (img - img.min()) / (img.max() - img.min())
    return np.clip(np.round((lo + (hi - lo) * img) * np.array(tint)), 0, 255).astype(np.uint8)


def mouth(face, gap):
    """The face with its mouth opened by `gap` px (negative: the photo's parted lips closed)."""
    h, w = face.shape[:2]
    x = np.arange(w)
    profile = np.sqrt(np.clip(1 - ((x - MOUTH_X) / MOUTH_HALF_W) ** 2, 0, None))
    g = gap * profile[None, :]
    y = np.arange(h, dtype=np.float64)[:, None]
    u = (y - MOUTH_Y - g) / (h - 1 - MOUTH_Y - g)
    src = np.where(y < MOUTH_Y, y, MOUTH_Y + np.clip(u, 0, 1) * (h - 1 - MOUTH_Y))
    out = face[np.round(src).astype(int), x[None, :]]
    out[(y >= MOUTH_Y) & (u < 0)] = MOUTH_COLOUR
    return out


def second_person(face):
    """A visibly different person: the face mirrored, darker and warmer."""
    tinted = face[:, ::-1].astype(np.float64) * np.array([0.86, 0.68, 0.55]) + np.array([8, 4, 0])
    return np.clip(np.round(tinted), 0, 255).astype(np.uint8)


class Canvas:
    """One reusable I420 frame buffer with plane views, for pasting even-aligned pictures."""

    def __init__(self, base):
        W, H = base.W, base.H
        self.buf = np.empty(W * H * 3 // 2, np.uint8)
        self.views = [self.buf[:W * H].reshape(H, W),
                      self.buf[W * H:W * H * 5 // 4].reshape(H // 2, W // 2),
                      self.buf[W * H * 5 // 4:].reshape(H // 2, W // 2)]

    def fill(self, planes, x0=0):
        """Copies full planes, or a window of wider planes starting at even column x0."""
        for s, view, plane in zip((1, 2, 2), self.views, planes):
            view[:] = plane[:, x0 // s:x0 // s + view.shape[1]]

    def paste(self, planes, x0, y0, masks=None):
        """Pastes planes at even (x0, y0); with masks (one per plane), only where they are set."""
        for k, (s, view, plane) in enumerate(zip((1, 2, 2), self.views, planes)):
            ph, pw = plane.shape
            target = view[y0 // s:y0 // s + ph, x0 // s:x0 // s + pw]
            if masks is None:
                target[:] = plane
            else:
                target[masks[k]] = plane[masks[k]]


def even(v):
    return 2 * round(v / 2)


# ---------------------------------------------------------------- muxing


def mux(base, dest, tmp, frames=None, audio=None, mux_element="mp4mux"):
    """Encodes raw I420 `frames` (H.264) and float `audio` (AAC) into `dest`, atomically."""
    partial = dest.with_name(f".{dest.name}.partial")
    branches = [[*mux_element.split(), "name=m", "!", "filesink", f"location={partial}"]]
    if frames is not None:
        branches.append([*base.VIDEO_SRC, "!", *base.H264, "!", "m."])
    if audio is not None:
        wav = Path(tmp) / "audio.wav"
        lead = base.AAC_PRIMING
        base.write_wav(wav, np.clip(np.concatenate([audio[lead:], np.zeros(lead, np.float32)]), -1, 1))
        branches.append(["filesrc", f"location={wav}", "!", *base.AUDIO_CONV, "!", *base.AAC, "!", "m."])
    base.gst_launch(branches, frames)
    os.replace(partial, dest)


# ---------------------------------------------------------------- interview


def make_interview(dest, tmp, cache, base):
    n = INTERVIEW_SECONDS * base.FPS
    spf, sr = base.SPF, base.SR
    tracks = [np.zeros(2 * n * spf, np.float32) for _ in VOICES]
    turns, pos_end = [], 0
    for speaker, text, gap in INTERVIEW:
        start = max(0, pos_end + round(gap * sr))
        said, end = speak(tracks[speaker], text, start, VOICES[speaker], tmp, cache, base)
        turns.append({"speaker": speaker, "start": said[0]["start"], "end": said[-1]["end"],
                      "text": text, "words": [w for s in said for w in s["words"]],
                      "sentences": said})
        pos_end = max(pos_end, end) if gap < 0 else end
    assert pos_end < n * spf - round(0.5 * sr), f"interview runs to {pos_end / sr:.1f} s"
    tracks = [t[:n * spf] for t in tracks]

    face = base.make_face()
    fh, fw = face.shape[:2]
    looks = [lambda f: f, second_person]
    # The square root keeps the mouth well open through a word's quieter syllables.
    openness = [np.sqrt(np.clip(frame_rms(t, n, spf) / MOUTH_RMS_FULL, 0, 1)) for t in tracks]
    centers = [[[even(cx + a * math.sin(2 * math.pi * i / base.FPS / p)), cy] for i in range(n)]
               for (cx, cy), (a, p) in zip(SPEAKER_CENTERS, SWAY)]
    bg = base.to_i420(base.make_background())
    variants = {}

    def face_planes(speaker, gap):
        if (speaker, gap) not in variants:
            variants[speaker, gap] = base.to_i420(looks[speaker](mouth(face, gap)))
        return variants[speaker, gap]

    def frames():
        canvas = Canvas(base)
        for i in range(n):
            canvas.fill(bg)
            for s in range(2):
                gap = round(MOUTH_CLOSED + (MOUTH_WIDE - MOUTH_CLOSED) * openness[s][i])
                x, y = centers[s][i]
                canvas.paste(face_planes(s, gap), x - fw // 2, y - fh // 2)
            yield canvas.buf

    mux(base, dest, tmp, frames(), tracks[0] + tracks[1])
    sentences = sorted(({"speaker": t["speaker"], **s} for t in turns for s in t["sentences"]),
                       key=lambda s: s["start"])
    for t in turns:
        del t["sentences"]
    return {"width": base.W, "height": base.H, "fps": base.FPS, "duration": n / base.FPS,
            "speakers": [{"face_centers": c, "face_size": [fw, fh]} for c in centers],
            "turns": turns, "sentences": sentences,
            "mouth_open": [[round(float(v), 3) for v in o] for o in openness]}


# ---------------------------------------------------------------- scenery


def disk_mask(h, w, cy, cx, r):
    y, x = np.ogrid[:h, :w]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def smiley(r, face_rgb=(235, 205, 40), ink=(30, 25, 20)):
    """A flat smiley: a disc, two dark dots and a mouth line, on a light poster square."""
    side = 2 * r + 2 * (r // 4)
    img = np.full((side, side, 3), 240, np.uint8)
    c = side // 2
    img[disk_mask(side, side, c, c, r)] = face_rgb
    for dx in (-r // 3, r // 3):
        img[disk_mask(side, side, c - r // 4, c + dx, max(2, r // 8))] = ink
    y, x = np.ogrid[:side, :side]
    arc = (np.abs(np.hypot(y - (c - r // 6), x - c) - r * 0.6) < max(1.5, r / 20)) & (y > c + r // 6)
    img[arc] = ink
    return img


def colour_wheel(r):
    side = 2 * r + 20
    y, x = np.mgrid[:side, :side] - side / 2
    hue = (np.arctan2(y, x) / (2 * np.pi)) % 1.0
    sat = np.clip(np.hypot(x, y) / r, 0, 1)
    k = (hue[..., None] * 6 + np.array([5, 3, 1])) % 6
    rgb = 1 - sat[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    img = np.round(255 * rgb).astype(np.uint8)
    img[np.hypot(x, y) > r] = 200
    return img


def make_scenery(dest, tmp, cache, base):
    """Panning scenery with face-like decoys and no real face, under narration. (A drawn face, a
    skin-coloured oval with dot eyes, nose and mouth lines, was left out: MediaPipe scored it up
    to 0.97 and face mesh found landmarks on it, so no rule could call this file faceless.)"""
    n, W, H = SCENERY_SECONDS * base.FPS, base.W, base.H
    cw = 2 * W
    canvas = noise(H, cw, base.SEED + 1, 60, 200, tint=(0.8, 1.0, 0.75), cells=((6, 20), (24, 80)))
    head = base.make_face()
    decoys = []

    def place(kind, img, x, y):
        h, w = img.shape[:2]
        canvas[y:y + h, x:x + w] = img
        decoys.append({"kind": kind, "box": [x, y, w, h]})

    place("smiley", smiley(150), 150, 120)
    place("smiley", smiley(60), 700, 700)
    place("smiley", smiley(30), 1000, 200)
    place("smiley", smiley(130, face_rgb=(250, 250, 250)), 1250, 380)
    place("colour_wheel", colour_wheel(180), 1800, 100)
    place("blurred_face", np.round(gaussian(head, sigma=20, channel_axis=-1, preserve_range=True))
          .astype(np.uint8), 2300, 500)
    small = np.round(rescale(head, 30 / head.shape[1], order=1, channel_axis=-1,
                             preserve_range=True)).astype(np.uint8)
    for k in range(4):
        place("small_face", small, 2750 + 60 * k, 820 + (k % 2) * 20)
    place("smiley", smiley(100), 3100, 250)
    place("smiley", smiley(60, face_rgb=(120, 200, 250)), 3500, 700)

    planes = base.to_i420(canvas)
    offsets = [even((cw - W) * i / (n - 1)) for i in range(n)]

    def frames():
        c = Canvas(base)
        for x0 in offsets:
            c.fill(planes, x0)
            yield c.buf

    audio, sentences = narrate(n * base.SPF, SCENERY_SENTENCES, tmp, cache, base)
    mux(base, dest, tmp, frames(), audio)
    return {"width": W, "height": H, "fps": base.FPS, "duration": n / base.FPS, "faces": [],
            "sentences": sentences, "canvas_width": cw, "pan_offsets": offsets, "decoys": decoys}


# ---------------------------------------------------------------- repeat


def talk_frames(base, centers):
    """talk.mp4's picture (background, astronaut face at each centre): (frames, face size)."""
    face = base.make_face()
    fh, fw = face.shape[:2]
    bg, fp = base.to_i420(base.make_background()), base.to_i420(face)

    def frames():
        c = Canvas(base)
        for x, y in centers:
            c.fill(bg)
            c.paste(fp, x - fw // 2, y - fh // 2)
            yield c.buf

    return frames(), (fw, fh)


def shifted(span, dt):
    """A truth sentence or word moved by dt seconds (its words too)."""
    out = {**span, "start": round(span["start"] + dt, 3), "end": round(span["end"] + dt, 3)}
    if "words" in span:
        out["words"] = [shifted(w, dt) for w in span["words"]]
    return out


def make_repeat(dest, tmp, cache, base):
    """A talk whose 15 s audio+video block (face path and speech) is played four times."""
    period = round(REPEAT_PERIOD * base.FPS)
    block, sentences = narrate(period * base.SPF, REPEAT_BLOCK, tmp, cache, base, gap=0.8)
    assert len(sentences) == len(REPEAT_BLOCK), "repeat block does not fit its period"
    audio = np.tile(block, REPEAT_COUNT)
    centers = [base.face_center((i % period) / base.FPS) for i in range(period * REPEAT_COUNT)]
    frames, (fw, fh) = talk_frames(base, centers)
    mux(base, dest, tmp, frames, audio)
    all_sentences = [shifted(s, k * REPEAT_PERIOD) for k in range(REPEAT_COUNT) for s in sentences]
    return {"width": base.W, "height": base.H, "fps": base.FPS, "duration": len(centers) / base.FPS,
            "face_size": [fw, fh], "face_centers": centers, "sentences": all_sentences,
            "loop": {"period": REPEAT_PERIOD, "count": REPEAT_COUNT,
                     "starts": [k * REPEAT_PERIOD for k in range(REPEAT_COUNT)]}}


# ---------------------------------------------------------------- cutshort


def make_cutshort(dest, tmp, cache, base):
    """A talk muxed as MP4 with the moov atom first (faststart), so its header declares 90 s and
    indexes every sample, cut to its first 40% of bytes: demuxers read up to about 36 s."""
    n = CUTSHORT_SECONDS * base.FPS
    full = Path(tmp) / "cutshort_full.mp4"
    audio, sentences = narrate(n * base.SPF, base.SENTENCES * 4, tmp, cache, base)
    centers = [base.face_center(i / base.FPS) for i in range(n)]
    frames, (fw, fh) = talk_frames(base, centers)
    mux(base, full, tmp, frames, audio,
        f"mp4mux faststart=true faststart-file={Path(tmp) / 'faststart.tmp'}")
    data = full.read_bytes()
    base.write_atomic(dest, data[:round(len(data) * CUTSHORT_KEEP)])
    readable = readable_seconds(dest, base.FPS)
    return {"width": base.W, "height": base.H, "fps": base.FPS, "duration": n / base.FPS,
            "declared_duration": round(mvhd_seconds(dest), 3), "readable_duration": readable,
            "face_size": [fw, fh], "face_centers": centers[:round(readable * base.FPS)],
            "sentences": [s for s in sentences if s["end"] <= readable]}


def mvhd_seconds(path):
    """The movie duration an MP4's header (moov/mvhd) declares, in seconds."""
    data, pos = Path(path).read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"moov":
            inner = pos + 8
            while inner + 8 <= pos + size:
                isize, ikind = struct.unpack(">I4s", data[inner:inner + 8])
                if ikind == b"mvhd":
                    if data[inner + 8] == 1:    # version 1: 64-bit times
                        scale, duration = struct.unpack(">IQ", data[inner + 28:inner + 40])
                    else:
                        scale, duration = struct.unpack(">II", data[inner + 20:inner + 28])
                    return duration / scale
                inner += isize
        pos += size or len(data)
    raise ValueError(f"{path}: no moov/mvhd")


def readable_seconds(path, fps):
    """End (s, 3 decimals) of the last video frame that decodebin delivers from `path`."""
    out = subprocess.run(
        ["gst-launch-1.0", "-v", "filesrc", f"location={path}", "!", "decodebin", "name=d",
         "d.", "!", "video/x-raw", "!", "fakesink", "silent=false"],
        capture_output=True, text=True)
    pts = [int(h) * 3600 + int(m) * 60 + float(s)
           for h, m, s in re.findall(r"pts: (\d+):(\d\d):(\d\d\.\d+)", out.stdout)]
    assert pts, f"nothing readable in {path}: {out.stderr[-500:]}"
    return round(max(pts) + 1 / fps, 3)


# ---------------------------------------------------------------- broll


def make_broll(dest, tmp, base):
    """Video only: hard cuts between differently coloured, moving shots."""
    W, H, fps = base.W, base.H, base.FPS
    tints = [(1.3, 0.8, 0.5), (0.5, 0.9, 1.4), (0.7, 1.3, 0.6), (1.4, 1.3, 0.6), (1.0, 0.5, 1.2),
             (0.4, 0.5, 0.6), (1.5, 1.4, 1.3)]
    shots = [{"start": a, "end": b} for a, b in zip(BROLL_SHOTS, BROLL_SHOTS[1:])]
    plates, bounds = [], [round(t * fps) for t in BROLL_SHOTS]
    for k, tint in enumerate(tints[:len(shots)]):
        plate = noise(H, W + 400, base.SEED + 10 + k, 40, 170, tint=tint)
        plates.append(base.to_i420(plate))
    discs = []
    for k in range(len(shots)):
        side = 2 * (60 + 25 * k)
        colour = [(240, 240, 240), (20, 20, 20), (250, 60, 40)][k % 3]
        planes = base.to_i420(np.full((side, side, 3), colour, np.uint8))
        masks = [disk_mask(side // s, side // s, side / s / 2 - 0.5, side / s / 2 - 0.5, side / s / 2)
                 for s in (1, 2, 2)]
        discs.append((planes, masks, side))

    def frames():
        c = Canvas(base)
        for k in range(len(shots)):
            length = bounds[k + 1] - bounds[k]
            planes, masks, side = discs[k]
            for j in range(length):
                u = j / max(1, length - 1)
                pan = even(400 * (u if k % 2 == 0 else 1 - u))
                c.fill(plates[k], pan)
                x = even(100 + (W - side - 200) * u)
                y = even(H / 2 - side / 2 + 250 * math.sin(2 * math.pi * u + k))
                bx, by = max(0, x), max(0, min(H - side, y))
                c.paste(planes, bx, by, masks)
                yield c.buf

    mux(base, dest, tmp, frames())
    return {"width": W, "height": H, "fps": fps, "duration": bounds[-1] / fps, "shots": shots}


def generate(out, tmp, base):
    cache = {}
    truth = make_interview(out / "interview.mp4", tmp, cache, base)
    base.write_json(out / "interview.truth.json", truth)
    base.write_json(out / "scenery.truth.json", make_scenery(out / "scenery.mp4", tmp, cache, base))
    base.write_json(out / "repeat.truth.json", make_repeat(out / "repeat.mp4", tmp, cache, base))
    base.write_json(out / "cutshort.truth.json",
                    make_cutshort(out / "cutshort.mp4", tmp, cache, base))
    base.write_json(out / "broll.truth.json", make_broll(out / "broll.mp4", tmp, base))


OUTPUTS = ["interview.mp4", "interview.truth.json", "scenery.mp4", "scenery.truth.json",
           "repeat.mp4", "repeat.truth.json", "cutshort.mp4", "cutshort.truth.json",
           "broll.mp4", "broll.truth.json"]
