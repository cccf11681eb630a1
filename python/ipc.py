"""The file-based IPC loop shared by clipmill's Python workers.

A worker loads its model once, then serves requests:

  worker.py --serve [model options]   long-lived: prints {"ready": true, ...} on stdout, then reads
                                      one JSON line per request from stdin, {"id": N, "request":
                                      "/path/req.json"}, and answers one JSON line per request,
                                      {"id": N, "ok": true} or {"id": N, "ok": false, "error": "..."},
                                      after any number of {"id": N, "progress": F} (see `progress`)
  worker.py --request req.json        one request, then exit (for debugging: `cat` the output)

The request file names the inputs and the output path; results are written to a temporary name
and renamed, so a result file is always complete. Logs go to stderr, never stdout.
"""

import argparse
import json
import os
import sys
import time
import traceback

# The request being served (its id) and when its progress was last said.
_serving = {"id": None, "said": 0.0}


def write_json_atomic(path, value):
    tmp = f"{path}.part"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def run(name, add_arguments, load, handle):
    """Parses arguments, loads the model with `load(args)`, then serves `handle(model, request)`."""
    parser = argparse.ArgumentParser(description=f"clipmill {name} worker")
    parser.add_argument("--serve", action="store_true", help="serve requests from stdin")
    parser.add_argument("--request", help="serve one request file and exit")
    add_arguments(parser)
    args = parser.parse_args()
    model, info = load(args)

    if args.request:
        with open(args.request) as f:
            handle(model, json.load(f))
        return
    if not args.serve:
        parser.error("give --serve or --request")

    reply({"ready": True, "worker": name, **info})
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        _serving.update(id=message["id"], said=0.0)
        try:
            with open(message["request"]) as f:
                handle(model, json.load(f))
            reply({"id": message["id"], "ok": True})
        except Exception as e:  # one bad request must not take the worker down
            traceback.print_exc(file=sys.stderr)
            reply({"id": message["id"], "ok": False, "error": f"{type(e).__name__}: {e}"})


def progress(fraction):
    """Says how far the request being served has got, at most once a second. A worker that has
    said so once and then goes silent for the server's `python.stall_s` is taken for hung: it is
    killed and replaced, and the request tried once more."""
    now = time.monotonic()
    if _serving["id"] is None or now - _serving["said"] < 1.0:
        return
    _serving["said"] = now
    reply({"id": _serving["id"], "progress": round(min(max(fraction, 0.0), 1.0), 4)})


def reply(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()
