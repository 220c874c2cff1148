"""Memory bench: resident memory (RSS, and USS: memory no other process shares) of each dramatiq
worker process of ``fleetpay worker --processes W --threads T``.

Baseline, same run: the same processes idle, once every worker process has said it is ready
(imports done, engine not yet connected). Then the apply bench's load (N payments spread over the
fleet plus a hot-driver batch) is enqueued; RSS is sampled every 0.25 s while it is processed
(peak) and read again once every row is processed (after). Target: under 150 MB per process.

Then the same at 100,000 drivers: a database loaded set-based (``bench.reconcile``'s loader,
100,000 drivers with their vehicles and accounts, a fare and a payout each), and N payments
from uniformly random drivers of the 100,000 (each paying the company by their driver code),
so every worker process meets tens of thousands of distinct drivers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.apply import (
    connect,
    vehicle_code,
    enqueue,
    fleet_template,
    preload_inbox,
    processed_count,
    rss_mb,
    start_workers,
    worker_processes,
)
from bench.apply import sizes as apply_sizes
from bench.common import Child, Resources, ratio, say

TARGET_MB = 150.0


def sizes(quick: bool) -> dict[str, Any]:
    a = apply_sizes(quick)
    return {"processes": a["processes"], "threads": a["threads"], "drivers": a["drivers"],
            "spread_n": a["spread_n"], "hot_n": a["hot_n"]}


def wait_ready(child: Child, processes: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"workers exited:\n{child.tail()}")
        text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
        if text.count("Worker process is ready for action") >= processes:
            time.sleep(1.0)  # let the consumers settle
            return
        time.sleep(0.1)
    raise TimeoutError("the worker processes did not say they were ready")


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    s = sizes(quick)
    fleet = measure(res, s, database=res.create_database("memory", template=fleet_template(res, s["drivers"])),
                    drivers=s["drivers"], code=vehicle_code)
    from bench.reconcile import Shape, load_month_to_today

    many = 5_000 if quick else 100_000
    database, _, _ = load_month_to_today(res, "memory_many", Shape(many, 7))
    large = measure(res, {**s, "spread_n": 2 * s["spread_n"], "hot_n": s["hot_n"]}, database=database, drivers=many,
                    code=lambda i: f"D{i + 1:06d}")
    return {
        "sizes": {**s, "large_fleet_drivers": many},
        "figures": {
            **fleet["figures"],
            "large_fleet": {"drivers": many, **large["figures"]},
            "met": fleet["figures"]["met"] and large["figures"]["met"],
        },
        "workers": fleet["workers"],
        "large_fleet_workers": large["workers"],
        "main_process": fleet["main_process"],
    }


def measure(res: Resources, s: dict[str, Any], *, database: str, drivers: int, code: Callable[[int], str]) -> dict[str, Any]:
    res.reset_redis()
    ids = preload_inbox(database, s["spread_n"], hot=False, tag=f"{res.run_id[:4]}ms", drivers=drivers, code=code)
    ids += preload_inbox(database, s["hot_n"], hot=True, tag=f"{res.run_id[:4]}mh", drivers=drivers, code=code)
    n = len(ids)
    conn = connect(database)
    child = start_workers(res, database, processes=s["processes"], threads=s["threads"])
    try:
        wait_ready(child, s["processes"])
        procs = worker_processes(child)
        idle = rss_mb(procs)
        main_idle = rss_mb([__import__("psutil").Process(child.pid)])
        say(f"memory: idle worker RSS {[p['rss_mb'] for p in idle]} MB; processing {n} payments")
        enqueue(res, ids)
        peak: dict[int, float] = {p["pid"]: p["rss_mb"] for p in idle}
        deadline = time.monotonic() + max(120.0, n / 20)
        while processed_count(conn) < n:
            if time.monotonic() > deadline or not child.alive():
                raise RuntimeError(f"only {processed_count(conn)}/{n} processed")
            for p in rss_mb(procs):
                peak[p["pid"]] = max(peak.get(p["pid"], 0.0), p["rss_mb"])
            time.sleep(0.25)
        after = rss_mb(procs)
        main_after = rss_mb([__import__("psutil").Process(child.pid)])
    finally:
        conn.close()
        child.stop()
        res.drop_database(database)
    max_after = max(p["rss_mb"] for p in after)
    max_idle = max(p["rss_mb"] for p in idle)
    max_peak = max(peak.values())
    say(f"memory: after {n} payments to {drivers} drivers, worker RSS {[p['rss_mb'] for p in after]} MB (peak {max_peak})")
    return {
        "figures": {
            "payments_processed": n,
            "max_worker_rss_mb": max_after,
            "max_worker_peak_rss_mb": max_peak,
            "max_idle_rss_mb": max_idle,
            "ratio_to_idle": ratio(max_after, max_idle),
            "target_mb": TARGET_MB,
            "met": max_peak < TARGET_MB,
        },
        "workers": {"idle": idle, "after": after, "peak_rss_mb": peak},
        "main_process": {"idle": main_idle, "after": main_after,
                         "note": "dramatiq's supervisor (forwards the workers' logs); not a worker"},
    }
