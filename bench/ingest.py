"""Ingest bench: the real callback server against a bare JSON endpoint served the same way.

Both servers run as their own processes, served alike (``ingest.serving.serve``: uvicorn with
httptools and uvloop, one process, log_level "warning", no access log); the real one with its
production defaults (group commit, JSON logs at INFO to a file, enqueue to a real Redis). The load
generator (``bench.common``, pure Python asyncio) runs in this process and sends real C2B
confirmation bodies, each with a TransID never sent before, to ``/cb/<token>/c2b/confirm``. No
worker runs: messages stay queued.

- max-rate: ``connections`` keep-alive connections in a closed loop for ``duration_s``;
  acknowledged requests per second (200 and the exact ``ResultCode 0`` body).
- offered-rate: an open-loop schedule at ``rate`` req/s; latency from each request's scheduled
  send time (no coordinated omission).

Measurements alternate bare / ingest, ``reps`` times; the figures are medians over the reps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from bench.common import (
    PYTHON,
    TOKEN,
    Child,
    Resources,
    c2b_body,
    fleetpay_env,
    free_port,
    max_rate,
    median,
    nairobi_now_str,
    offered_rate,
    post_bytes,
    ratio,
    rounded,
    say,
    wait_http,
)

ACK = b'{"ResultCode":0,"ResultDesc":"Success"}'
HOST = "127.0.0.1"
PLACEHOLDER = b"QQQQQQQQQQQQ"  # 12 characters, replaced by each request's TransID


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"reps": 1, "connections": 64, "max_duration_s": 2.0, "max_warmup_s": 0.5,
                "rate": 500, "offered_duration_s": 2.0, "offered_warmup_s": 0.5}
    return {"reps": 3, "connections": 64, "max_duration_s": 10.0, "max_warmup_s": 2.0,
            "rate": 500, "offered_duration_s": 10.0, "offered_warmup_s": 2.0}


class Requests:
    """Request bytes with a fresh TransID each (``B`` + run id + counter: 12 characters)."""

    def __init__(self, port: int, tag: str) -> None:
        body = c2b_body(PLACEHOLDER.decode(), "200.00", "025", nairobi_now_str())
        self.template = post_bytes(HOST, port, f"/cb/{TOKEN}/c2b/confirm", json.dumps(body).encode())
        self.tag = tag.encode()
        assert len(self.tag) == 4, tag
        self.counter = itertools.count()

    def __call__(self) -> bytes:
        trans_id = b"B%s%07d" % (self.tag, next(self.counter))
        assert len(trans_id) == len(PLACEHOLDER), trans_id  # Content-Length is the template's
        return self.template.replace(PLACEHOLDER, trans_id)


def measure(child: Child, port: int, requests: Requests, mode: str, s: dict[str, Any], database: str | None = None) -> dict[str, Any]:
    from bench.apply import backend_cpu_seconds

    pg0 = backend_cpu_seconds(database) if database else 0.0
    cpu0, t0 = child.cpu_seconds(), time.monotonic()
    if mode == "max_rate":
        result = asyncio.run(max_rate(
            HOST, port, requests, connections=s["connections"], duration_s=s["max_duration_s"],
            warmup_s=s["max_warmup_s"], expect=ACK, max_requests=200_000))
    else:
        result = asyncio.run(offered_rate(
            HOST, port, requests, rate=s["rate"], duration_s=s["offered_duration_s"],
            warmup_s=s["offered_warmup_s"], connections=s["connections"], expect=ACK))
    summary = result.summary()
    server_cpu = child.cpu_seconds() - cpu0
    summary["server_cpu_cores"] = round(server_cpu / (time.monotonic() - t0), 2)
    answered = max(result.answered_incl_warmup, 1)
    summary["server_cpu_ms_per_request"] = round(server_cpu * 1000 / answered, 3)
    if database:
        summary["postgres_cpu_ms_per_request"] = round((backend_cpu_seconds(database) - pg0) * 1000 / answered, 3)
    return summary


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    s = sizes(quick)
    database = res.create_database("ingest")
    res.reset_redis()
    env = fleetpay_env(res, database)
    bare_port, ingest_port = free_port(), free_port()
    say(f"ingest: starting the bare endpoint (:{bare_port}) and the real ingest (:{ingest_port})")
    bare = res.start("bare", [PYTHON, "-m", "bench.bare_app", "--host", HOST, "--port", str(bare_port)], env)
    ingest = res.start(
        "ingest", [PYTHON, "-m", "cli", "ingest", "--host", HOST, "--port", str(ingest_port)],
        {**env, "FLEETPAY_PUBLIC_BASE_URL": f"http://{HOST}:{ingest_port}"},
    )
    # Diagnostic only: the same ingest without its per-request INFO log line.
    quiet_port = free_port()
    quiet = res.start(
        "ingest-quiet", [PYTHON, "-m", "cli", "ingest", "--host", HOST, "--port", str(quiet_port)],
        {**env, "FLEETPAY_PUBLIC_BASE_URL": f"http://{HOST}:{quiet_port}", "FLEETPAY_LOG_LEVEL": "WARNING"},
    )
    wait_http(f"http://{HOST}:{bare_port}/healthz", bare)
    wait_http(f"http://{HOST}:{ingest_port}/readyz", ingest)
    wait_http(f"http://{HOST}:{quiet_port}/readyz", quiet)

    servers = {"bare": (bare, bare_port), "ingest": (ingest, ingest_port), "ingest_log_warning": (quiet, quiet_port)}
    reqs = {name: Requests(port, f"{res.run_id[:3]}{tag}") for (name, (_, port)), tag in zip(servers.items(), "biq", strict=True)}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        "max_rate": {"bare": [], "ingest": [], "ingest_log_warning": []}, "offered_rate": {"bare": [], "ingest": []}}
    for rep in range(s["reps"]):
        for mode in ("max_rate", "offered_rate"):
            for name in runs[mode]:
                child, port = servers[name]
                summary = measure(child, port, reqs[name], mode, s, database if name.startswith("ingest") else None)
                runs[mode][name].append(summary)
                say(f"ingest: rep {rep + 1}/{s['reps']} {mode:12s} {name:18s} "
                    f"{summary['throughput_rps']:8.1f} req/s  p50 {summary['p50_ms']} p95 {summary['p95_ms']} "
                    f"p99 {summary['p99_ms']} ms  errors {summary['errors']}  server {summary['server_cpu_cores']} cores, "
                    f"{summary['server_cpu_ms_per_request']} ms CPU/request")
                time.sleep(0.5)

    # Acknowledged means durable and queued: every ack has its inbox row and its message.
    import psycopg2

    from bench.common import database_url

    with psycopg2.connect(database_url(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM inbox WHERE kind = 'c2b_confirmation' AND status = 'received'")
        inbox_rows = cur.fetchone()[0]
    conn.close()
    queued = res.redis().hlen("fleetpay:fleetpay.msgs")
    sent_to_ingest = next(reqs["ingest"].counter) + next(reqs["ingest_log_warning"].counter)
    ingest.stop()
    quiet.stop()
    bare.stop()

    def med(mode: str, name: str, key: str) -> float:
        return median([r[key] for r in runs[mode][name] if r[key] is not None])

    max_bare, max_ingest = med("max_rate", "bare", "throughput_rps"), med("max_rate", "ingest", "throughput_rps")
    figures: dict[str, Any] = {
        "max_rate": {
            "connections": s["connections"],
            "bare_rps": rounded(max_bare),
            "ingest_rps": rounded(max_ingest),
            "ratio": ratio(max_ingest, max_bare),
            "target_ratio": 0.40,
            "met": (ratio(max_ingest, max_bare) or 0) >= 0.40,
            "per_rep_ratio": [ratio(i["throughput_rps"], b["throughput_rps"])
                              for b, i in zip(runs["max_rate"]["bare"], runs["max_rate"]["ingest"], strict=True)],
            "ingest_p99_ms_at_max": med("max_rate", "ingest", "p99_ms"),
            "bare_p99_ms_at_max": med("max_rate", "bare", "p99_ms"),
            "server_cpu_cores": {"bare": med("max_rate", "bare", "server_cpu_cores"),
                                 "ingest": med("max_rate", "ingest", "server_cpu_cores")},
            # Robust to other load on the machine: CPU time per answered request.
            "server_cpu_ms_per_request": {"bare": med("max_rate", "bare", "server_cpu_ms_per_request"),
                                          "ingest": med("max_rate", "ingest", "server_cpu_ms_per_request"),
                                          "ingest_postgres_backends": med("max_rate", "ingest", "postgres_cpu_ms_per_request")},
            "cpu_cost_ratio": ratio(med("max_rate", "bare", "server_cpu_ms_per_request"),
                                    med("max_rate", "ingest", "server_cpu_ms_per_request")),
        },
        "offered_rate": {"rate_rps": s["rate"]},
        "diagnostic_ingest_log_warning": {
            "note": "the same ingest with FLEETPAY_LOG_LEVEL=WARNING (no per-request log line); not the product default",
            "max_rate_rps": med("max_rate", "ingest_log_warning", "throughput_rps"),
            "ratio_to_bare": ratio(med("max_rate", "ingest_log_warning", "throughput_rps"), max_bare),
            "server_cpu_ms_per_request": med("max_rate", "ingest_log_warning", "server_cpu_ms_per_request"),
        },
    }
    offered = figures["offered_rate"]
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        offered[f"bare_{q}"] = med("offered_rate", "bare", q)
        offered[f"ingest_{q}"] = med("offered_rate", "ingest", q)
        offered[f"ratio_{q}"] = ratio(offered[f"ingest_{q}"], offered[f"bare_{q}"])
    offered["ingest_achieved_rps"] = med("offered_rate", "ingest", "throughput_rps")
    offered["ingest_errors"] = sum(r["errors"] for r in runs["offered_rate"]["ingest"])
    offered["target_p99_ms"] = 25.0
    offered["met"] = offered["ingest_p99_ms"] < 25.0 and offered["ingest_errors"] == 0
    return {
        "sizes": s,
        "figures": figures,
        "durability_check": {
            "requests_sent_to_ingest": sent_to_ingest,
            "inbox_rows_received": inbox_rows,
            "messages_queued": queued,
            "errors": sum(r["errors"] for m in runs.values() for name, rs in m.items() if name != "bare" for r in rs),
        },
        "runs": runs,
    }
