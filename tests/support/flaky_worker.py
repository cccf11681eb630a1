"""A worker on the real IPC loop (python/ipc.py) that misbehaves on request, to test the pool.

Request: {"mode": "ok" | "crash_once" | "crash" | "hang_once" | "stall_once" | "fail", "out": path}
(`stall_once`: reports progress for a while, then hangs, the first time.)
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import ipc  # noqa: E402


def add_arguments(parser):
    parser.add_argument("--state", required=True, help="a file that marks the first misbehaviour as done")


def load(args):
    return args.state, {}


def handle(state, request):
    mode = request["mode"]
    first = not os.path.exists(state)
    if mode in ("crash_once", "hang_once", "stall_once") and first:
        open(state, "w").close()
    if mode == "crash" or (mode == "crash_once" and first):
        print("worker is going down on purpose", file=sys.stderr, flush=True)
        os._exit(3)
    if mode == "hang_once" and first:
        time.sleep(60)
    if mode == "stall_once" and first:
        for i in range(3):
            ipc.progress(i / 10)
            time.sleep(1.1)
        time.sleep(60)
    if mode == "fail":
        raise ValueError("this request is bad")
    ipc.write_json_atomic(request["out"], {"pid": os.getpid()})


if __name__ == "__main__":
    ipc.run("flaky", add_arguments, load, handle)
