#!/usr/bin/env python3
"""Deterministic test-media generator for clipmill.

Usage: python scripts/gen_media.py --out DIR [--duration SECONDS] [--force]

Outputs (in DIR):
  talk.mp4          1920x1080 30 fps H.264 (yuv420p, keyframe every 60 frames) + AAC 48 kHz
                    stereo, --duration seconds (default 30): textured background, a real
                    face (from skimage.data.astronaut) moving on a known path, espeak-ng
                    speech with exact word times, and sync marks (one all-white frame plus a
                    60 ms 1 kHz beep starting at that frame's timestamp, in a silent gap).
                    Past SENTENCES (about 40 s), a long talk goes on with seeded made-up
                    sentences, so no stretch of it repeats another (a benchmark's 10-minute
                    talk gives as many different clips as it asks for).
  talk.truth.json   ground truth for talk.mp4 (format below).
  noface.mp4        10 s, same format, background + speech (and sync marks), no face.
  truncated.mp4     first 40% of talk.mp4's bytes (moov atom missing -> unreadable).
  random.mp4        200 KiB of seeded random bytes.
  noaudio.mp4       6 s, H.264 video only.
  audioonly.m4a     6 s, AAC audio only.
  mpeg4.mkv         8 s, 1920x1080 MPEG-4 Part 2 video (constant quantizer 3) + Vorbis in
                    Matroska, same content as talk.mp4 from t=0.
  mpeg4.truth.json  ground truth for mpeg4.mkv.
  interview.mp4     31 s, same format as talk.mp4, no sync marks: two people side by side (the
                    astronaut at x~560, a mirrored, darker and warmer copy at x~1360, both at
                    y=540, swaying a few px), two espeak-ng voices (en-us and en-us+f3) taking
                    turns of 0.4-4.9 s, one ~1.5 s stretch where both speak. Each mouth opens
                    only while that person's own audio is loud (3-frame RMS, per frame): face
                    mesh inner-lip gap / face height ~0.03 silent, ~0.08-0.12 speaking.
  interview.truth.json  (format below)
  scenery.mp4       20 s, same format: narration over scenery panning at 96 px/s, with no real
                    face but decoys: smiley posters (60-300 px, yellow, white, blue), a colour
                    wheel, 30 px astronaut heads, a full-size astronaut head Gaussian-blurred (sigma 20).
  scenery.truth.json
  repeat.mp4        60 s talk (face path as talk.mp4, restarted each loop): one 15 s block of
                    picture and speech played four times; no sync marks.
  repeat.truth.json
  cutshort.mp4      a 90 s talk muxed with the moov atom first (mp4mux faststart=true), cut to
                    its first 40% of bytes: the header declares 90 s, video decodes to 35.0 s.
  cutshort.truth.json
  broll.mp4         24 s, 1920x1080 30 fps H.264, no audio track: seven shots (hard cuts),
                    each a differently tinted panning background with a moving disc.
  broll.truth.json
  numbers.mp4       22 s like talk.mp4, sentences with currency, percentages, contractions and
                    an abbreviation ("It costs $1,500 today.").
  numbers.truth.json  ground truth for numbers.mp4; its words are the tokens as written.
  in_*              input kinds (codecs, containers, phone footage, 4K60, separate streams):
                    see scripts/gen_media_inputs.py; made alone when only they are missing.
  manifest.json     generator parameters and file sizes; outputs are regenerated only when
                    the parameters differ, a file is missing, or --force is given.

Truth JSON format (times in seconds, rounded to 3 decimals; coordinates in frame pixels):
  {"width": 1920, "height": 1080, "fps": 30, "duration": D,
   "face_size": [w, h],
   "sentences": [{"text": "Is it going to rain?", "start": s, "end": e,
                  "words": [{"word": "is", "start": s, "end": e}, ...]}, ...],
   "face_centers": [[x, y], ...],   # one per frame; face occupies x-w/2..x+w/2, y-h/2..y+h/2
   "sync_marks": [t1, t2, ...],     # frame round(t*fps) is all white; beep starts at t
   "beep_hz": 1000}
The scene fixtures' truth (scripts/gen_media_scenes.py) shares width/height/fps/duration and the
sentence shape above; a sentence may carry "speaker": 0|1.
  interview: {..., "speakers": [{"face_centers": [[x, y], ...] (per frame), "face_size": [w, h]},
                                {...}],                       # speaker 0 left, 1 right
              "turns": [{"speaker": 0|1, "start", "end", "text",
                         "words": [{"word", "start", "end"}, ...]}, ...],   # in start order
              "sentences": [{"speaker", "text", "start", "end", "words"}, ...],  # by start
              "mouth_open": [[o, ...], [o, ...]]}   # per speaker, per frame, 0 closed..1 wide
  scenery:   {..., "faces": [], "sentences": [...], "canvas_width": 3840,
              "pan_offsets": [x0, ...],               # per frame: frame shows canvas x0..x0+1920
              "decoys": [{"kind": "smiley" | "colour_wheel" | "small_face" |
                          "blurred_face", "box": [x, y, w, h]}, ...]}   # canvas coordinates
  repeat:    {..., "face_size", "face_centers", "sentences": [... all four loops ...],
              "loop": {"period": 15.0, "count": 4, "starts": [0, 15, 30, 45]}}
  cutshort:  {..., "duration": 90.0,                 # what was encoded
              "declared_duration": 90.021,          # the header's (mvhd; AAC runs a bit longer)
              "readable_duration": R,               # end of the last decodable video frame, 35.0
              "face_size", "face_centers" (readable frames only),
              "sentences": [... those ending by R ...]}
  broll:     {"width", "height", "fps", "duration": 24.0, "shots": [{"start", "end"}, ...]}

Word start/end are exact: each word is synthesized separately, trimmed to its audible part
and placed at a known sample; the source audio is exactly zero between words.

The background stays within 50..170, but the face photo is bright: ~13% of its pixels have all
channels > 200 (none > 250), so white captions are best isolated outside the face box or by
requiring all channels >= ~235. Frames are composed directly in I420 (BT.709, limited range)
because piping RGB through videoconvert was more than twice as slow.
"""
import argparse
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import skimage.data
from skimage.transform import rescale

import gen_media_inputs
import gen_media_scenes

GEN_VERSION = 3
SEED = 20240601
W, H, FPS = 1920, 1080, 30
SR = 22050                      # espeak-ng's native rate; resampled to 48 kHz by GStreamer
SPF = SR // FPS                 # 735 audio samples per video frame (exact)

SENTENCES = [
    "Good morning everyone.",
    "Today we talk about food.",
    "Is it going to rain?",
    "We counted three hundred birds.",
    "This is great news!",
    "The train leaves at nine.",
    "My sister likes to read.",
    "Please close the door.",
    "What time is it now?",
    "Thank you for coming!",
    "The coffee is very good.",
    "See you next week.",
]
# What a long talk says after SENTENCES: one of each list per sentence, in a seeded order.
NAMES = ["my brother", "the teacher", "our neighbour", "the pilot", "a farmer", "the doctor", "my friend", "the baker"]
VERBS = ["found", "painted", "sold", "carried", "counted", "cooked", "fixed", "lost"]
COUNTS = ["two", "four", "seven", "ten", "twelve", "twenty", "forty", "ninety"]
THINGS = ["red boxes", "old maps", "green apples", "small boats", "blue chairs", "warm coats", "new bikes", "wooden spoons"]
VOICE = ["-v", "en-us", "-s", "150"]
SILENCE_THRESHOLD = 200         # int16 amplitude below which espeak output counts as silence
LEAD_IN = 0.5                   # silence before the first word
WORD_GAP = 0.07
SENTENCE_GAP = 0.9
TAIL = 0.3                      # minimum silence after the last sentence

# A sync mark goes into the gap after the first sentence ending at or after SYNC_FIRST, then
# after the first one ending at least SYNC_EVERY after the previous mark (-> about every 7 s).
SYNC_FIRST, SYNC_EVERY = 2.0, 5.5
SYNC_DELAY = 0.3                # silence between sentence end and beep (rounded up to a frame)
BEEP_HZ, BEEP_LEN, BEEP_AMP = 1000, 0.06, 0.8
# avenc_aac prepends 1024 priming samples (at 48 kHz) and GStreamer 1.22's mp4mux writes no
# edit list to hide them, so AAC audio is fed this much early to decode in sync with video.
AAC_PRIMING = round(1024 * SR / 48000)

FACE_BOX = (17, 193, 148, 308)  # (y0, y1, x0, x1) of the head in astronaut(): 160x176 px
FACE_SCALE = 1.5                # -> 240x264 px on screen


def face_center(t):
    """Face centre at time t (even pixel coordinates, so the face is chroma-aligned).

    10 s cycle: hold at x=500 for 1.5 s, glide to x=1400 in 3.5 s, hold 1.5 s, glide back;
    y bobs between 400 and 480 with a 6 s period.
    """
    p = t % 10.0
    ease = lambda s: (1 - math.cos(math.pi * s)) / 2
    if p < 1.5:
        u = 0.0
    elif p < 5.0:
        u = ease((p - 1.5) / 3.5)
    elif p < 6.5:
        u = 1.0
    else:
        u = 1.0 - ease((p - 6.5) / 3.5)
    x, y = 500 + 900 * u, 440 + 40 * math.sin(2 * math.pi * t / 6)
    return [2 * round(x / 2), 2 * round(y / 2)]


def make_background():
    """Smooth two-octave colour noise (RGB), values in 50..170."""
    rng = np.random.default_rng(SEED)

    def blur_matrix(n, cells):  # Gaussian interpolation weights from `cells` knots to n pixels
        d = (np.arange(n)[:, None] + 0.5) * cells / n - (np.arange(cells)[None, :] + 0.5)
        w = np.exp(-2 * d ** 2)
        return w / w.sum(axis=1, keepdims=True)

    img = np.zeros((H, W, 3))
    for amp, cy, cx in [(0.7, 9, 16), (0.3, 36, 64)]:
        grid, wy, wx = rng.random((cy, cx, 3)), blur_matrix(H, cy), blur_matrix(W, cx)
        img += amp * np.stack([wy @ grid[..., c] @ wx.T for c in range(3)], axis=-1)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(50 + 120 * img).astype(np.uint8)


def make_face():
    """The astronaut's head, scaled by FACE_SCALE (RGB, pixel values untouched otherwise)."""
    y0, y1, x0, x1 = FACE_BOX
    crop = skimage.data.astronaut()[y0:y1, x0:x1]
    face = rescale(crop, FACE_SCALE, order=1, channel_axis=-1, preserve_range=True)
    return np.round(face).astype(np.uint8)


def to_i420(rgb):
    """RGB image -> [Y, U, V] uint8 planes (BT.709 limited range, 2x2-averaged chroma)."""
    r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    sub = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))
    planes = [16 + y * 219 / 255, 128 + sub((b - y) / 1.8556) * 224 / 255,
              128 + sub((r - y) / 1.5748) * 224 / 255]
    return [np.round(p).astype(np.uint8) for p in planes]


def synth_word(word, tmp, cache):
    """espeak-ng audio of one word as int16, trimmed to its audible part."""
    if word not in cache:
        path = os.path.join(tmp, "word.wav")
        subprocess.run(["espeak-ng", *VOICE, "-w", path, word], check=True)
        with wave.open(path) as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (SR, 1, 2)
            x = np.frombuffer(f.readframes(f.getnframes()), np.int16)
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > SILENCE_THRESHOLD)
        cache[word] = x[loud[0]:loud[-1] + 1]
    return cache[word]


def talk_sentences():
    """SENTENCES, then made-up sentences without end, seeded."""
    yield from SENTENCES
    rng = np.random.default_rng(SEED)
    while True:
        name, verb, count, thing = (words[rng.integers(len(words))] for words in (NAMES, VERBS, COUNTS, THINGS))
        yield f"{name.capitalize()} {verb} {count} {thing}."


def build_audio(n_samples, tmp, cache, speech=None):
    """Speech + beeps for a clip of n_samples. Returns (float audio, sentences, sync frames).
    `speech` is (sentences, words of a sentence); the talk's by default."""
    if speech:
        sentences_spoken, words_of = itertools.cycle(speech[0]), speech[1]
    else:
        sentences_spoken, words_of = talk_sentences(), lambda text: re.findall(r"[a-z0-9]+", text.lower())
    audio = np.zeros(n_samples, np.float32)
    sec = lambda samples: round(samples / SR, 3)
    gap = round(WORD_GAP * SR)
    sentences, sync_frames = [], []
    pos, next_sync = round(LEAD_IN * SR), SYNC_FIRST
    beep = BEEP_AMP * np.sin(2 * np.pi * BEEP_HZ * np.arange(round(BEEP_LEN * SR)) / SR)
    for text in sentences_spoken:
        clips = [(w, synth_word(w, tmp, cache)) for w in words_of(text)]
        length = sum(len(c) for _, c in clips) + gap * (len(clips) - 1)
        if pos + length > n_samples - round(TAIL * SR):
            break
        words = []
        for word, clip in clips:
            audio[pos:pos + len(clip)] = clip / 32768.0
            words.append({"word": word, "start": sec(pos), "end": sec(pos + len(clip))})
            pos += len(clip) + gap
        end = pos - gap
        sentences.append({"text": text, "start": words[0]["start"], "end": words[-1]["end"],
                          "words": words})
        pos = end + round(SENTENCE_GAP * SR)
        frame = math.ceil((end + SYNC_DELAY * SR) / SPF)
        if end / SR >= next_sync and frame * SPF + len(beep) < n_samples:
            audio[frame * SPF:frame * SPF + len(beep)] = beep
            sync_frames.append(frame)
            next_sync = frame / FPS + SYNC_EVERY
    return audio, sentences, sync_frames


def write_wav(path, audio):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SR)
        f.writeframes(np.round(audio * 32767).astype("<i2").tobytes())


def render_frames(n, bg, face, centers, sync_frames):
    """Yield n raw I420 frames (one reused buffer): background, face at centers[i], or all
    white on sync frames."""
    bg_planes = to_i420(bg)
    face_planes = to_i420(face) if face is not None else None
    white = [p[0, 0] for p in to_i420(np.full((2, 2, 3), 255, np.uint8))]
    white_frame = np.repeat(np.array(white, np.uint8), [W * H, W * H // 4, W * H // 4])
    frame = np.empty(W * H * 3 // 2, np.uint8)
    plane_views = [frame[:W * H].reshape(H, W), frame[W * H:W * H * 5 // 4].reshape(H // 2, W // 2),
                   frame[W * H * 5 // 4:].reshape(H // 2, W // 2)]
    for i in range(n):
        if i in sync_frames:
            yield white_frame
            continue
        for view, plane in zip(plane_views, bg_planes):
            view[:] = plane
        if face is not None:
            fh, fw = face.shape[:2]
            x0, y0 = centers[i][0] - fw // 2, centers[i][1] - fh // 2
            for s, view, plane in zip((1, 2, 2), plane_views, face_planes):
                view[y0 // s:y0 // s + fh // s, x0 // s:x0 // s + fw // s] = plane
        yield frame


# GStreamer pipeline fragments (token lists; gst-launch escapes spaces inside a token).
# Constant-quantizer modes: x264's CRF mode gives run-to-run different output when threaded.
VIDEO_SRC = (f"fdsrc fd=0 blocksize={W * H * 3 // 2} ! rawvideoparse width={W} height={H} "
             f"format=i420 colorimetry=bt709 framerate={FPS}/1").split()
H264 = "x264enc speed-preset=ultrafast pass=quant quantizer=23 key-int-max=60 ! h264parse".split()
MPEG4 = "avenc_mpeg4 pass=quant quantizer=3 gop-size=60".split()  # its CBR mode blurs the face
AAC = "avenc_aac ! aacparse".split()
VORBIS = "vorbisenc".split()
AUDIO_CONV = ("wavparse ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 "
              "! audioconvert").split()


def gst_launch(branches, frames=None):
    """Run gst-launch-1.0 on the given pipeline branches, piping raw frames (if any) to fdsrc."""
    cmd = ["gst-launch-1.0", "-q", *itertools.chain(*branches)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if frames else subprocess.DEVNULL)
    try:
        for frame in frames or ():
            proc.stdin.write(frame)
    except BrokenPipeError:
        pass
    finally:
        if proc.stdin:
            proc.stdin.close()
    if proc.wait() != 0:
        sys.exit(f"gst-launch-1.0 failed ({proc.returncode}): {' '.join(cmd)}")


def make_clip(dest, seconds, tmp, cache, bg, face, video=None, audio=None, mux="mp4mux", speech=None):
    """Render one clip atomically; returns its truth dict."""
    n = round(seconds * FPS)
    samples, sentences, sync_frames = build_audio(n * SPF, tmp, cache, speech)
    centers = [face_center(i / FPS) for i in range(n)] if face is not None else []
    frames = render_frames(n, bg, face, centers, set(sync_frames)) if video else None
    partial = dest.with_name(f".{dest.name}.partial")
    branches = [[mux, "name=m", "!", "filesink", f"location={partial}"]]
    if video is MPEG4:
        # gst-libav 1.22.0's avenc_* elements emit invalid timestamps; AVI stores frames by
        # index, so a round trip through it restores exact N/fps timestamps.
        avi = Path(tmp) / "video.avi"
        gst_launch([[*VIDEO_SRC, "!", *MPEG4, "!", "avimux", "!", "filesink", f"location={avi}"]],
                   frames)
        branches.append(["filesrc", f"location={avi}", "!", "avidemux", "!", "mpeg4videoparse",
                         "!", "m."])
        frames = None
    elif video:
        branches.append([*VIDEO_SRC, "!", *video, "!", "m."])
    if audio:
        wav = Path(tmp) / "audio.wav"
        lead = AAC_PRIMING if audio is AAC else 0
        write_wav(wav, np.concatenate([samples[lead:], np.zeros(lead, np.float32)]))
        branches.append(["filesrc", f"location={wav}", "!", *AUDIO_CONV, "!", *audio, "!", "m."])
    gst_launch(branches, frames)
    os.replace(partial, dest)
    return {"width": W, "height": H, "fps": FPS, "duration": n / FPS,
            "face_size": [face.shape[1], face.shape[0]] if face is not None else None,
            "sentences": sentences, "face_centers": centers,
            "sync_marks": [round(f / FPS, 3) for f in sync_frames], "beep_hz": BEEP_HZ}


def write_atomic(path, data):
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_json(path, obj):
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


# Sentences whose currency, percentages, contractions and title faster-whisper tiny.en writes back
# as written from this espeak-ng speech (checked with python/transcribe.py --request: "$1,500" and
# "30%" come back as the pieces " $1" ",500" and " 30" "%"; "$20,000", "$300" and "U.S." came back
# otherwise, so they are not here). Some plain words are misheard ("grew" as "through"); the tests
# look at the written tokens.
NUMBER_SENTENCES = [
    "It costs $1,500 today.",
    "Sales grew 30% this year.",
    "We don't stop.",
    "Mr. Brown is here.",
    "Prices fell 12% last month.",
    "I can't wait.",
]


def written_words(text):
    """A sentence's tokens as written: "$1,500", "30%", "don't", "Mr."; sentence punctuation off."""
    return [t if re.fullmatch(r"(Mr|Mrs|Dr)\.|([A-Za-z]\.)+", t) else t.rstrip(".,?!")
            for t in text.split()]


def make_numbers(out, tmp, cache, bg, face):
    """numbers.mp4: like talk.mp4 (same face path), 22 s of NUMBER_SENTENCES spoken once each;
    its truth's words are the written tokens (each synthesized whole: espeak-ng reads "$1,500"
    as "one thousand five hundred dollars")."""
    truth = make_clip(out / "numbers.mp4", 22, tmp, cache, bg, face, H264, AAC,
                      speech=(NUMBER_SENTENCES, written_words))
    write_json(out / "numbers.truth.json", truth)


def generate(out, duration):
    bg, face, cache = make_background(), make_face(), {}
    with tempfile.TemporaryDirectory(prefix="gen_media-") as tmp:
        truth = make_clip(out / "talk.mp4", duration, tmp, cache, bg, face, H264, AAC)
        write_json(out / "talk.truth.json", truth)
        make_clip(out / "noface.mp4", 10, tmp, cache, bg, None, H264, AAC)
        make_clip(out / "noaudio.mp4", 6, tmp, cache, bg, face, video=H264)
        make_clip(out / "audioonly.m4a", 6, tmp, cache, bg, None, audio=AAC)
        truth = make_clip(out / "mpeg4.mkv", 8, tmp, cache, bg, face, MPEG4, VORBIS, "matroskamux")
        write_json(out / "mpeg4.truth.json", truth)
        gen_media_scenes.generate(out, tmp, sys.modules[__name__])
        make_numbers(out, tmp, cache, bg, face)
        gen_media_inputs.generate(out, tmp, sys.modules[__name__])
    talk = (out / "talk.mp4").read_bytes()
    write_atomic(out / "truncated.mp4", talk[:len(talk) * 2 // 5])
    write_atomic(out / "random.mp4", np.random.default_rng(SEED).bytes(200 * 1024))


OUTPUTS = ["talk.mp4", "talk.truth.json", "noface.mp4", "truncated.mp4", "random.mp4",
           "noaudio.mp4", "audioonly.m4a", "mpeg4.mkv", "mpeg4.truth.json"]
OUTPUTS += gen_media_scenes.OUTPUTS
OUTPUTS += ["numbers.mp4", "numbers.truth.json"]
OUTPUTS += gen_media_inputs.OUTPUTS


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--duration", type=float, default=30.0, help="talk.mp4 length in seconds")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = ap.parse_args()
    if args.duration < 5:
        ap.error("--duration must be at least 5 seconds")
    params = {"version": GEN_VERSION, "seed": SEED, "duration": args.duration}
    manifest_path = args.out / "manifest.json"
    if not args.force and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        current = manifest.get("params") == params
        missing = [f for f in OUTPUTS if not (args.out / f).exists()]
        if current and not missing:
            print(f"{args.out}: up to date (use --force to regenerate)")
            return
        # Only the input-kind fixtures missing (a checkout that predates them): make just those.
        inputs_only = current and set(missing) <= set(gen_media_inputs.OUTPUTS)
    else:
        inputs_only = False
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)   # outputs are incomplete until the manifest is back
    started = time.monotonic()
    if inputs_only:
        with tempfile.TemporaryDirectory(prefix="gen_media-") as tmp:
            gen_media_inputs.generate(args.out, tmp, sys.modules[__name__])
    else:
        generate(args.out, args.duration)
    files = {f: (args.out / f).stat().st_size for f in OUTPUTS}
    write_json(manifest_path, {"params": params, "files": files})
    print(f"{args.out}: generated {len(files)} files in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
