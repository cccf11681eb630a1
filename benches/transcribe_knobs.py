#!/usr/bin/env python3
"""Transcription knobs side by side: word error rate, wall time and real-time factor of the local
faster-whisper worker (python/transcribe.py, loaded in-process) at beam 1, beam 5 and batched, on
the CPU and, with --devices cpu,cuda, on the GPU, on one audio file with known words.

Usage: .venv/bin/python benches/transcribe_knobs.py --media target/fixtures/talk.mp4 \
           --truth target/fixtures/talk.truth.json [--reps 5] [--threads 0] [--devices cpu,cuda]

--threads takes a list too (--threads 1,0 --configs "beam 1"): each count is then a configuration
of its own, and the CPU time each took (this process's, all its threads) is compared as well.

The audio is extracted once to 16 kHz mono WAV with gst-launch-1.0 (as clipmill does); a .wav
given as --media is taken as that extraction already made (for a machine without GStreamer). Each
repetition runs every configuration once, in a rotated order, so a noisy neighbour on a shared
machine lands on all of them alike; models are loaded before timing starts. Words are compared
normalised (lower case, no punctuation, numbers spelled out: "300" = "three hundred"). A device's
compute type is the worker's default for it: int8 on the CPU, float16 on CUDA.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from argparse import Namespace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import transcribe  # noqa: E402  (the worker module itself, not a copy)

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n):
    """0..999,999 in words, American style without "and"."""
    if n >= 1000:
        return spell(n // 1000) + ["thousand"] + (spell(n % 1000) if n % 1000 else [])
    words = [ONES[n // 100], "hundred"] if n >= 100 else []
    r = n % 100
    if r >= 20:
        words += [TENS[r // 10]] + ([ONES[r % 10]] if r % 10 else [])
    elif r or not words:
        words.append(ONES[r])
    return words


def normalise(text):
    out = []
    for token in text.replace("-", " ").split():
        t = "".join(c for c in token.lower() if c.isalnum() or c in "$%")
        dollars, percent = t.startswith("$"), t.endswith("%")
        digits = t.strip("$%")
        if digits.isdigit() and int(digits) < 1_000_000:
            out += spell(int(digits)) + (["dollars"] if dollars else []) + (["percent"] if percent else [])
        elif any(c.isalnum() for c in t):
            out.append("".join(c for c in t if c.isalnum()))
    return out


def align(hyp, ref):
    """Word edit distance, and the (hyp, ref) index pairs of the words it matches."""
    d = [[i + j if not i * j else 0 for j in range(len(ref) + 1)] for i in range(len(hyp) + 1)]
    for i in range(1, len(hyp) + 1):
        for j in range(1, len(ref) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (hyp[i - 1] != ref[j - 1]))
    i, j, pairs = len(hyp), len(ref), []
    while i and j:
        if hyp[i - 1] == ref[j - 1] and d[i][j] == d[i - 1][j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j - 1] + 1:
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return d[-1][-1], pairs


def whole_words(pieces):
    """The worker's pieces joined as clipmill joins them: no leading space continues a word."""
    words = []
    for p in pieces:
        if p["text"].startswith(" ") or not words:
            words.append(dict(p, text=p["text"].strip()))
        else:
            words[-1]["text"] += p["text"].strip()
            words[-1]["end"] = p["end"]
    return words


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="0", help="CPU threads (0: the library's default), or a comma-separated list")
    ap.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda")
    ap.add_argument("--configs", default="beam 1,beam 5,batched", help="comma-separated subset")
    args = ap.parse_args()
    truth = json.load(open(args.truth))
    reference, ref_starts = [], []
    for w in (w for s in truth["sentences"] for w in s["words"]):
        for part in normalise(w["word"]):
            reference.append(part)
            ref_starts.append(w["start"])

    knobs = {"beam 1": (1, False), "beam 5": (5, False), "batched": (1, True)}
    devices, chosen = args.devices.split(","), args.configs.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    label = lambda t: f" threads {t or 'default'}" if len(threads) > 1 else ""
    configs = {f"{device} {knob}{label(t)}": (device, *knobs[knob], t) for device in devices for knob in chosen for t in threads}
    with tempfile.TemporaryDirectory(prefix="asr-knobs-") as tmp:
        wav = os.path.join(tmp, "audio.wav")
        if args.media.endswith(".wav"):
            wav = args.media
        else:
            subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={args.media}", "!", "decodebin", "!",
                            "audioconvert", "!", "audioresample", "!", "audio/x-raw,rate=16000,channels=1,format=S16LE",
                            "!", "wavenc", "!", "filesink", f"location={wav}"], check=True)
        with wave.open(wav) as f:
            audio_s = f.getnframes() / f.getframerate()
        decoders, loaded = {}, {}
        for name, (device, beam, batched, cpu_threads) in configs.items():
            options = Namespace(model="bundled", device=device, compute_type="auto", threads=cpu_threads,
                                beam_size=beam, batched=batched, batch_size=8)
            try:
                decoders[name], loaded[name] = transcribe.load(options)
                if device != "cpu":  # the first run pays for CUDA's kernels and allocations: not timed
                    transcribe.handle(decoders[name], {"audio": wav, "out": os.path.join(tmp, "warm.json"), "language": "en"})
            except Exception as e:  # a device this machine lacks: the rest still run
                print(f"{name}: not run: {type(e).__name__}: {e}")
                decoders.pop(name, None)
        results = {name: [] for name in decoders}
        names = list(decoders)
        for rep in range(args.reps):
            for k in range(len(names)):
                name = names[(rep + k) % len(names)]
                out = os.path.join(tmp, "out.json")
                started, cpu_started = time.monotonic(), time.process_time()
                transcribe.handle(decoders[name], {"audio": wav, "out": out, "language": "en"})
                wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
                hyp, starts = [], []
                for s in json.load(open(out))["segments"]:
                    for w in whole_words(s["words"]):
                        for part in normalise(w["text"]):
                            hyp.append(part)
                            starts.append(w["start"])
                errors, pairs = align(hyp, reference)
                wer = errors / len(reference)
                # How far the caption's word start is from the truth's, over the words it got right.
                offset = statistics.median(abs(starts[h] - ref_starts[r]) for h, r in pairs)
                results[name].append((wer, wall, offset, cpu))
                print(f"rep {rep + 1} {name:26} WER {wer:.3f} wall {wall:.2f} s CPU {cpu:.2f} s start error {offset:.3f} s", file=sys.stderr)
    print(f"{audio_s:.0f} s of audio, {len(reference)} reference words, {args.reps} interleaved repetitions, "
          f"threads={args.threads}")
    print("| configuration | compute | WER (min–max) | wall s (min / median / max) | real-time factor (median) | "
          "CPU s (median) | median word start error s |")
    print("|---|---|---|---|---|---|---|")
    median_wall, median_cpu = {}, {}
    for name, runs in results.items():
        wers, walls, offsets, cpus = zip(*runs)
        median_wall[name], median_cpu[name] = statistics.median(walls), statistics.median(cpus)
        print(f"| {name} | {loaded[name]['compute_type']} | {min(wers):.3f}–{max(wers):.3f} | {min(walls):.2f} / "
              f"{median_wall[name]:.2f} / {max(walls):.2f} | {audio_s / median_wall[name]:.0f}× | "
              f"{median_cpu[name]:.2f} | {min(offsets):.3f}–{max(offsets):.3f} |")
    first = label(threads[0])
    for device in devices[1:]:
        for knob in chosen:
            if f"{device} {knob}{first}" not in median_wall:
                continue
            ratio = median_wall[f"{devices[0]} {knob}{first}"] / median_wall[f"{device} {knob}{first}"]
            print(f"{knob}: {device} is {ratio:.1f}× as fast as {devices[0]} (median wall)")
    for device in devices:
        for knob in chosen:
            base = f"{device} {knob}{first}"
            for other in (f"{device} {knob}{label(t)}" for t in threads[1:]):
                if base in median_wall and other in median_wall:
                    print(f"{other} / {base}: wall {median_wall[other] / median_wall[base]:.2f}, "
                          f"CPU {median_cpu[other] / median_cpu[base]:.2f} (medians)")


if __name__ == "__main__":
    main()
