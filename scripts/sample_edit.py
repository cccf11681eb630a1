#!/usr/bin/env python3
"""Writes an EDIT.json for the generated sample talk from its truth file (stdout).

Three clips show the three framings: `track` with a crop path that follows the true face, `fit`,
and `original` without captions (a stream copy). Until the analysis stages exist this stands in
for them with perfect knowledge, which is exactly what the render engine should be shown with.
"""
import json
import sys

truth = json.load(open(sys.argv[1]))
fps, height = truth["fps"], truth["height"]
words = [{"text": w["word"], "start": w["start"], "end": w["end"]} for s in truth["sentences"] for w in s["words"]]


def crop_path(start, end):
    w = height * 9 / 16
    keys = []
    for i in range(int(start * fps), int(end * fps) + 1, 3):
        cx, _ = truth["face_centers"][min(i, len(truth["face_centers"]) - 1)]
        keys.append({"t": round(i / fps, 3), "x": cx - w / 2, "y": 0, "w": w, "h": height})
    return keys


def sentence_span(first, last):
    s = truth["sentences"]
    return max(0.0, s[first]["start"] - 0.3), min(truth["duration"], s[last]["end"] + 0.3)


clips = []
for mode, (first, last) in [("track", (0, 2)), ("fit", (3, 4)), ("original", (5, 6))]:
    start, end = sentence_span(first, last)
    clip = {"start": round(start, 3), "end": round(end, 3), "mode": mode}
    if mode == "track":
        clip["crop_path"] = crop_path(start, end)
    if mode == "original":
        clip["captions"] = {"enabled": False}
    else:
        clip["words"] = words
    clip["meta"] = {"title": " ".join(truth["sentences"][i]["text"] for i in range(first, last + 1))}
    clips.append(clip)
json.dump({"version": 1, "source": "talk.mp4", "clips": clips}, sys.stdout, indent=1)
