"""The whole box on a batch: N real jobs (a generated talk, 5 clips each) submitted at once to
`clipmill serve`, against the same N run one after another through `clipmill clip`, in one
invocation. Reports clips per hour, CPU utilisation over each run (all cores, from /proc/stat)
and the time to the batch's first clip. faster-whisper does not choose the same clips on every
run, so it also reports the seconds of clip made, throughput in those, and what each stage's
CPU cost per second of clip on each side (from the job records and from clips.json). Run
through benches/batch.sh, which builds and makes the media first.

    python benches/batch.py TALK.mp4 JOBS WORKDIR
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CLIPS = 5
KEY = "bench-key"
BIN = "target/release/clipmill"


def cpu_meter():
    """Starts measuring; the function returned gives the busy share of every core since then."""

    def read():
        values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    total0, idle0 = read()

    def busy():
        total, idle = read()
        return 1 - (idle - idle0) / max(total - total0, 1)

    return busy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, content_type="application/json"):
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read() or b"{}")


def batch(talk, jobs, work):
    """N jobs at once on one server: (seconds, first clip after s, busy share, clips made)."""
    port = free_port()
    config = work / "serve.toml"
    config.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\ndata_dir = "{work}/data"\n[server.api_keys]\n{KEY} = "bench"\n'
        f'[scratch]\ndir = "{work}/scratch"\n'
    )
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([BIN, "--config", str(config), "serve"], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        # The uploads are made before the clock starts: the sequential side reads the file too.
        uploads = [call("POST", f"{base}/api/uploads", talk.read_bytes(), "application/octet-stream")["upload_id"] for _ in range(jobs)]
        busy = cpu_meter()
        started = time.monotonic()
        ids = [call("POST", f"{base}/api/jobs", json.dumps({"upload_id": u, "options": {"clips": CLIPS}}).encode())["id"] for u in uploads]
        first_clip = None
        while True:
            listed = {j["id"]: j for j in call("GET", f"{base}/api/jobs")["jobs"]}
            mine = [listed[i] for i in ids]
            if first_clip is None and any(j["clips"] for j in mine):
                first_clip = time.monotonic() - started
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in mine):
                break
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        share = busy()
        failed = [j["id"] for j in mine if j["status"] != "succeeded"]
        if failed:
            sys.exit(f"batch jobs failed: {failed} (see {work}/serve.log)")
        records = [call("GET", f"{base}/api/jobs/{i}") for i in ids]
        cpu = stage_cpu({s["stage"]: s["usage"] for s in r["stages"]} for r in records)
        return elapsed, first_clip, share, clips_made(c for r in records for c in r["clips"]), cpu
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def one_after_another(talk, jobs, work):
    """The same jobs through `clipmill clip`, one at a time: (seconds, busy share, clips made)."""
    busy = cpu_meter()
    started = time.monotonic()
    reports = []
    for i in range(jobs):
        out = work / f"clip-{i}"
        subprocess.run([BIN, "clip", str(talk), "--out", str(out), "--clips", str(CLIPS)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reports.append(json.loads((out / "clips.json").read_text()))
    elapsed, share = time.monotonic() - started, busy()
    return elapsed, share, clips_made(c for r in reports for c in r["clips"]), stage_cpu((r["usage"]["stages"] for r in reports), {"fetch": "download"})


def clips_made(clips):
    """(how many, their seconds)."""
    clips = list(clips)
    return len(clips), sum(c["end"] - c["start"] for c in clips)


def stage_cpu(per_job, names=None):
    """CPU seconds per stage, summed over the jobs (stages renamed by `names`)."""
    total = {}
    for stages in per_job:
        for stage, usage in stages.items():
            stage = (names or {}).get(stage, stage)
            total[stage] = total.get(stage, 0.0) + usage["cpu_s"]
    return total


def main():
    talk, jobs, work = Path(sys.argv[1]).resolve(), int(sys.argv[2]), Path(sys.argv[3]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CLIPMILL__LOG__FILTER"] = "warn"
    os.environ["CLIPMILL__SCRATCH__DIR"] = str(work / "scratch")
    b_s, first, b_busy, (b_clips, b_secs), b_cpu = batch(talk, jobs, work)
    s_s, s_busy, (s_clips, s_secs), s_cpu = one_after_another(talk, jobs, work)
    per_hour = lambda n, s: n / s * 3600
    minutes = json.loads(talk.with_suffix(".truth.json").read_text())["duration"] / 60 * jobs
    print(f"{jobs} jobs of {talk.name} ({minutes / jobs:.1f} min), {CLIPS} clips asked each, {os.cpu_count()} cores")
    print(f"{'':<28}{'batch (serve)':>16}{'one after another (clip)':>28}")
    print(f"{'wall (s)':<28}{b_s:>16.1f}{s_s:>28.1f}")
    print(f"{'clips made':<28}{b_clips:>16}{s_clips:>28}")
    print(f"{'jobs per hour':<28}{per_hour(jobs, b_s):>16.1f}{per_hour(jobs, s_s):>28.1f}")
    print(f"{'source minutes per hour':<28}{per_hour(minutes, b_s):>16.1f}{per_hour(minutes, s_s):>28.1f}")
    print(f"{'clips per hour':<28}{per_hour(b_clips, b_s):>16.0f}{per_hour(s_clips, s_s):>28.0f}")
    print(f"{'seconds of clip made':<28}{b_secs:>16.1f}{s_secs:>28.1f}")
    print(f"{'clip minutes per hour':<28}{per_hour(b_secs / 60, b_s):>16.1f}{per_hour(s_secs / 60, s_s):>28.1f}")
    print(f"{'CPU busy (all cores)':<28}{b_busy:>16.0%}{s_busy:>28.0%}")
    for stage in sorted(set(b_cpu) | set(s_cpu)):
        label = f"{stage} CPU-ms per clip-s"
        print(f"{label:<28}{b_cpu.get(stage, 0) / b_secs * 1000:>16.0f}{s_cpu.get(stage, 0) / s_secs * 1000:>28.0f}")
    print(f"first clip of the batch: {first:.1f} s = {first / b_s:.0%} of the batch")
    print(f"jobs per hour, batch / one after another: {s_s / b_s:.2f}")
    print(f"seconds of clip per hour, batch / one after another: {(b_secs / b_s) / (s_secs / s_s):.2f}")


if __name__ == "__main__":
    main()
