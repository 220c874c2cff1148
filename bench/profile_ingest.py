"""Where the ingest's CPU goes: py-spy samples of the real ingest process (only samples holding the
GIL, i.e. running Python) under an open-loop load it can sustain, grouped by component.

Needs py-spy (``.venv/bin/pip install py-spy``; profiling only, not needed by ``python -m bench``)
and the same PostgreSQL/Redis as the benches. Prints one JSON document.

    .venv/bin/python -m bench.profile_ingest [--rate 250] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import PYTHON, fleetpay_env, free_port, offered_rate, resources, say, wait_http
from bench.ingest import ACK, HOST, Requests

# First match wins, in this order: a sample is counted once.
COMPONENTS = (
    ("inbox INSERT (one fixed unnest statement, psycopg2), in a worker thread", ("InboxWriter._insert",)),
    ("enqueue to Redis, one pipeline per batch, after the answers, in the same worker thread", ("Enqueuer.__call__",)),
    ("anyio thread hand-off (to_thread.run_sync)", ("run_sync_in_worker_thread", "WorkerThread.run (anyio")),
    ("JSON decode + payload validation", ("decode_json", "parse_c2b", "external_id (schemas")),
    ("structlog (per-request log line)", ("structlog/",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("HTTP parsing/writing (uvicorn httptools)", ("httptools", "h11/", "h11_impl.py")),
    ("Starlette routing, request, response", ("starlette/",)),
    ("asyncio event loop and the rest", ("",)),
)


def group(raw: Path) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for name, needles in COMPONENTS:
            if any(needle in stack for needle in needles):
                counts[name] += int(n)
                break
    return {name: round(100 * counts[name] / total, 1) for name, _ in COMPONENTS} | {"samples": total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy is needed: .venv/bin/pip install py-spy")
    with resources() as res:
        database = res.create_database("profile_ingest")
        res.reset_redis()
        port = free_port()
        child = res.start("ingest", [PYTHON, "-m", "cli", "ingest", "--host", HOST, "--port", str(port)],
                          fleetpay_env(res, database))
        wait_http(f"http://{HOST}:{port}/readyz", child)
        raw = res.tmp / "ingest.raw"
        requests = Requests(port, f"{res.run_id[:3]}p")
        recorder = subprocess.Popen([spy, "record", "--pid", str(child.pid), "--gil", "--nonblocking", "--rate", "250",
                                     "--format", "raw", "-o", str(raw), "--duration", str(int(args.seconds))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        say(f"profiling the ingest at {args.rate} req/s for {args.seconds} s")
        result = asyncio.run(offered_rate(HOST, port, requests, rate=args.rate, duration_s=args.seconds, warmup_s=0,
                                          connections=64, expect=ACK))
        recorder.wait(timeout=120)
        json.dump({"load": result.summary(), "share_of_gil_samples_pct": group(raw)}, sys.stdout, indent=2)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
