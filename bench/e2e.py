"""End-to-end bench: what a user sees, with every part of fleetpay running on this machine.

fleetpay side: a fresh database (a copy of the apply bench's fleet of 1,000 vehicles and
drivers), the real ingest (``fleetpay ingest``), the workers as docs/operations.md ("Scale the
workers") recommends (``fleetpay worker --queues fleetpay``, 2 processes x 4 threads, for the money path; one
process of 4 threads for the payouts and SMS queues), the scheduler (``fleetpay scheduler``) and
the Daraja simulator, all with the product's defaults: instant payouts on, so every driver's
share is paid out by B2C through the simulator (at most ``FLEETPAY_DARAJA_REQUESTS_PER_SECOND``,
20 a second: the rest wait in the payouts queue), whose result callbacks come back through the
ingest and are applied by the workers too. (Drivers' SMS notices are written and taken by the
workers; with no Africa's Talking key they are marked skipped, not sent.)

Load: real C2B confirmation bodies, each with a new TransID, to uniformly random vehicles,
offered open-loop (``bench.common.offered_rate``: latency from each request's due time, no
coordinated omission) at fixed rates (500 and 1,000 per second), and then at rising rates to find
the highest one the system sustains. Per step:

- acknowledgement latency (p50/p99) and errors, at the load generator;
- receipt-to-applied latency (p50/p99): ``inbox.processed_at − inbox.received_at`` of each of
  the step's rows (the database's clock at both ends);
- applied payments per second: the step's rows over the time from the first receipt to the last
  application (at an offered rate above what the workers keep up with, this is their rate while
  the ingest runs: ``saturated_applied_pps``); the backlog (rows still ``received``) the moment
  the schedule ends; the next step starts once every row is applied;
- the load average.

A rate is sustained when nothing errs, the acknowledgement p99 is under 25 ms and the
receipt-to-applied p99 is under 1 s. Baselines in the same run, once fleetpay is stopped:

- the synchronous webhook (``bench.webhook_app``): the inbox insert and fleetpay's one-row apply
  in the request, served the same way; its applied rate is its closed-loop maximum (64
  connections) and its latency at the offered 500 per second;
- the limit: the workers' batched statements in plain psycopg2 (``bench.apply_setbased``) over a
  preloaded inbox, as the apply bench runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import time
from typing import Any

import httpx

from bench.apply import connect, fleet_template, run_baseline, start_workers
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
    percentile,
    post_bytes,
    ratio,
    rounded,
    say,
    wait_http,
    wait_until,
)

HOST = "127.0.0.1"
ACK = b'{"ResultCode":0,"ResultDesc":"Success"}'
TRANS = b"QQQQQQQQQQQQ"  # 12 characters, replaced by each request's TransID
ACCOUNT = b"@@@"  # replaced by a vehicle code
ACK_P99_MS, APPLIED_P99_MS = 25.0, 1000.0
DRAIN_S = 90.0


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"reps": 1, "fixed_rates": [300], "search_from": 600, "search_steps": 1, "duration_s": 3.0,
                "warmup_s": 1.0, "connections": 64, "drivers": 200, "limit_n": 2000}
    return {"reps": 3, "fixed_rates": [500, 1000], "search_from": 750, "search_steps": 3, "duration_s": 10.0,
            "warmup_s": 2.0, "connections": 64, "drivers": 1000, "limit_n": 20000}


class Requests:
    """C2B confirmation requests to random vehicles, each with a new TransID (``E`` + tag + counter)."""

    def __init__(self, port: int, tag: str, drivers: int, seed: int = 11) -> None:
        body = json.dumps(c2b_body(TRANS.decode(), "200.00", ACCOUNT.decode(), nairobi_now_str())).encode()
        self.template = post_bytes(HOST, port, f"/cb/{TOKEN}/c2b/confirm", body)
        self.tag = tag.encode()
        assert len(self.tag) == 4, tag
        self.counter = itertools.count()
        self.drivers = drivers
        self.rng = random.Random(seed)

    def __call__(self) -> bytes:
        trans_id = b"E%s%07d" % (self.tag, next(self.counter))
        account = b"%03d" % self.rng.randrange(self.drivers)
        return self.template.replace(TRANS, trans_id).replace(ACCOUNT, account)


def waiting_rows(conn) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM inbox WHERE status = 'received'")
        return cur.fetchone()[0]


def step_rows(conn, tag: str) -> tuple[int, int, list[float], float]:  # type: ignore[no-untyped-def]
    """The step's rows: how many, how many still waiting, each one's receipt-to-applied latency
    (ms), and the seconds from the first receipt to the last application."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'received'), "
            "extract(epoch FROM max(processed_at) - min(received_at))::float8 FROM inbox "
            "WHERE kind = 'c2b_confirmation' AND external_id LIKE %s", (f"E{tag}%",))
        total, waiting, span = cur.fetchone()
        cur.execute(
            "SELECT extract(epoch FROM processed_at - received_at)::float8 * 1000 FROM inbox "
            "WHERE kind = 'c2b_confirmation' AND external_id LIKE %s AND processed_at IS NOT NULL "
            "ORDER BY 1", (f"E{tag}%",))
        return total, waiting, [ms for (ms,) in cur.fetchall()], span or 0.0


def offer(conn, port: int, tag: str, rate: float, s: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    load = os.getloadavg()[0]
    result = asyncio.run(offered_rate(HOST, port, Requests(port, tag, s["drivers"]), rate=rate, duration_s=s["duration_s"],
                                      warmup_s=s["warmup_s"], connections=s["connections"], expect=ACK))
    acks = result.summary()
    _, backlog, _, _ = step_rows(conn, tag)
    with contextlib.suppress(TimeoutError):  # a step that does not drain in time is reported, not raised
        wait_until(lambda: step_rows(conn, tag)[1] == 0, timeout_s=DRAIN_S, what="the step's rows applied", poll_s=0.25)
    total, waiting, latencies, span = step_rows(conn, tag)
    with contextlib.suppress(TimeoutError):  # every step starts with nothing waiting
        wait_until(lambda: waiting_rows(conn) == 0, timeout_s=DRAIN_S, what="the backlog applied", poll_s=0.5)
    applied = {"p50_ms": rounded(percentile(latencies, 50), 1), "p99_ms": rounded(percentile(latencies, 99), 1),
               "max_ms": rounded(latencies[-1], 1) if latencies else None}
    sustained = (acks["errors"] == 0 and acks["p99_ms"] is not None and acks["p99_ms"] < ACK_P99_MS
                 and waiting == 0 and applied["p99_ms"] is not None and applied["p99_ms"] < APPLIED_P99_MS)
    return {
        "offered_rps": rate, "ack_p50_ms": acks["p50_ms"], "ack_p99_ms": acks["p99_ms"], "ack_errors": acks["errors"],
        "acknowledged_rps": acks["throughput_rps"], "applied_p50_ms": applied["p50_ms"], "applied_p99_ms": applied["p99_ms"],
        "applied_max_ms": applied["max_ms"], "rows": total, "backlog_at_end": backlog, "left_unapplied": waiting,
        "applied_pps": rounded((total - waiting) / span) if span else None, "load_average_1m_before": round(load, 2),
        "sustained": sustained, "error_samples": acks["error_samples"],
    }


def payouts_state(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM payouts GROUP BY state")
        return dict(cur.fetchall())


def run_fleetpay(res: Resources, sim_url: str, s: dict[str, Any], rep: int) -> dict[str, Any]:
    httpx.post(f"{sim_url}/sim/reset", timeout=10).raise_for_status()
    database = res.create_database(f"e2e_{rep}", template=fleet_template(res, s["drivers"]))
    res.reset_redis()
    port = free_port()
    env = {"FLEETPAY_PUBLIC_BASE_URL": f"http://{HOST}:{port}", "FLEETPAY_DARAJA_BASE_URL": sim_url,
           "FLEETPAY_INSTANT_PAYOUTS": "true"}
    children: list[Child] = [
        res.start(f"e2e-ingest-{rep}", [PYTHON, "-m", "cli", "ingest", "--host", HOST, "--port", str(port)],
                  fleetpay_env(res, database, **env)),
        # As docs/operations.md recommends: the money path's workers, and payouts and SMS on
        # workers of their own, so a Daraja that takes 20 requests a second never holds up a payment.
        start_workers(res, database, processes=2, threads=4, queues=("fleetpay",), **env),
        start_workers(res, database, processes=1, threads=4, queues=("fleetpay_payouts", "fleetpay_notices"), **env),
        res.start(f"e2e-scheduler-{rep}", [PYTHON, "-m", "cli", "scheduler"], fleetpay_env(res, database, **env)),
    ]
    conn = connect(database)
    steps: list[dict[str, Any]] = []
    try:
        wait_http(f"http://{HOST}:{port}/readyz", children[0])
        time.sleep(2)  # the workers' processes up
        tags = (f"{res.run_id[:2]}{rep}{n}" for n in itertools.count())

        def step(rate: float, kind: str) -> dict[str, Any]:
            cpu0, started = {c.name: c.cpu_seconds() for c in children}, time.monotonic()
            result = {"kind": kind, **offer(conn, port, next(tags)[:4], rate, s)}
            elapsed = time.monotonic() - started
            result["cpu_cores"] = {label: round((c.cpu_seconds() - cpu0[c.name]) / elapsed, 2)
                                   for label, c in zip(("ingest", "workers", "payout_workers", "scheduler"), children)}
            steps.append(result)
            say(f"e2e: rep {rep + 1}/{s['reps']} {kind:6s} {rate:6.0f}/s: ack p50 {result['ack_p50_ms']} p99 "
                f"{result['ack_p99_ms']} ms, applied p50 {result['applied_p50_ms']} p99 {result['applied_p99_ms']} ms, "
                f"{result['applied_pps']} applied/s, backlog {result['backlog_at_end']}, errors {result['ack_errors']}, "
                f"load {result['load_average_1m_before']}, cores {result['cpu_cores']} -> "
                f"{'sustained' if result['sustained'] else 'NOT sustained'}")
            return result

        for rate in s["fixed_rates"]:
            step(rate, "fixed")
        # The highest sustained rate: up by half while sustained, then halve the gap twice.
        low, high, rate = 0.0, None, float(s["search_from"])
        for _ in range(s["search_steps"]):
            if step(rate, "search")["sustained"]:
                low = rate
                rate = rate * 1.5 if high is None else (rate + high) / 2
            else:
                high = rate
                rate = (low + rate) / 2 if low else rate / 2
        payouts = payouts_state(conn)  # most still queued: B2C takes 20 a second
    finally:
        conn.close()
        for child in children:
            child.stop()
        res.drop_database(database)
    return {"steps": steps, "max_sustained_rps": max([x["offered_rps"] for x in steps if x["sustained"]], default=0.0),
            "payouts": payouts}


def run_webhook(res: Resources, s: dict[str, Any], rep: int) -> dict[str, Any]:
    database = res.create_database(f"e2e_webhook_{rep}", template=fleet_template(res, s["drivers"]))
    port = free_port()
    child = res.start(f"webhook-{rep}", [PYTHON, "-m", "bench.webhook_app", "--host", HOST, "--port", str(port)],
                      fleetpay_env(res, database, FLEETPAY_INSTANT_PAYOUTS="true"))
    conn = connect(database)
    try:
        wait_http(f"http://{HOST}:{port}/healthz", child)
        closed = asyncio.run(max_rate(HOST, port, Requests(port, f"W{res.run_id[:2]}{rep}", s["drivers"]),
                                      connections=s["connections"], duration_s=s["duration_s"], warmup_s=s["warmup_s"],
                                      expect=ACK, max_requests=200_000)).summary()
        at_500 = offer(conn, port, f"V{res.run_id[:2]}{rep}", min(500, s["fixed_rates"][0]), s)
    finally:
        conn.close()
        child.stop()
        res.drop_database(database)
    return {"applied_pps_closed_loop": closed["throughput_rps"], "closed_loop_p99_ms": closed["p99_ms"],
            "closed_loop_errors": closed["errors"], "offered": at_500}


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    s = sizes(quick)
    sim_port = free_port()
    sim_url = f"http://{HOST}:{sim_port}"
    simulator = res.start("e2e-simulator", [PYTHON, "-m", "cli", "simulator", "--host", HOST, "--port", str(sim_port),
                                            "--result-delay-ms", "10"], fleetpay_env(res, fleet_template(res, s["drivers"])))
    wait_http(f"{sim_url}/healthz", simulator)
    (res.tmp / "simulator-cert.pem").write_bytes(httpx.get(f"{sim_url}/sim/cert.pem", timeout=10).content)
    runs: dict[str, list[dict[str, Any]]] = {"fleetpay": [], "webhook": [], "limit": []}
    try:
        for rep in range(s["reps"]):
            runs["fleetpay"].append(run_fleetpay(res, sim_url, s, rep))
            webhook = run_webhook(res, s, rep)
            runs["webhook"].append(webhook)
            say(f"e2e: rep {rep + 1}/{s['reps']} webhook: {webhook['applied_pps_closed_loop']} applied/s closed-loop "
                f"(p99 {webhook['closed_loop_p99_ms']} ms); at {webhook['offered']['offered_rps']}/s ack p99 "
                f"{webhook['offered']['ack_p99_ms']} ms")
            limit = run_baseline(res, "spread", s["limit_n"], {"drivers": s["drivers"], "processes": 2, "threads": 4}, rep,
                                 module="bench.apply_setbased")
            runs["limit"].append(limit)
            say(f"e2e: rep {rep + 1}/{s['reps']} plain-SQL limit: {limit['steady_pps']} payments/s")
    finally:
        simulator.stop()

    def fixed(rate: float, key: str) -> float | None:
        values = [x[key] for r in runs["fleetpay"] for x in r["steps"] if x["kind"] == "fixed" and x["offered_rps"] == rate
                  and x[key] is not None]
        return median(values) if values else None

    best = median([r["max_sustained_rps"] for r in runs["fleetpay"]])
    top = max(s["fixed_rates"])
    webhook = median([r["applied_pps_closed_loop"] for r in runs["webhook"]])
    limit = median([r["steady_pps"] for r in runs["limit"]])
    at = {str(rate): {key: fixed(rate, key) for key in ("ack_p50_ms", "ack_p99_ms", "applied_p50_ms", "applied_p99_ms",
                                                         "applied_pps", "backlog_at_end", "load_average_1m_before")}
          for rate in s["fixed_rates"]}
    top = max(s["fixed_rates"])
    saturated = fixed(top, "applied_pps") or 0.0
    figures = {
        "offered": at,
        "saturated_applied_pps": rounded(saturated),
        "saturated_ratio_to_webhook": ratio(saturated, webhook),
        "max_sustained_rps": rounded(best),
        "webhook_applied_pps": rounded(webhook),
        "ratio_to_webhook": ratio(best, webhook),
        "plain_sql_limit_pps": rounded(limit),
        "ratio_to_limit": ratio(best, limit),
        "target": f"sustains {top}/s (ack p99 < {ACK_P99_MS:.0f} ms, receipt-to-applied p99 < 1 s) and >= 3x the webhook",
        "met": all(x["sustained"] for r in runs["fleetpay"] for x in r["steps"] if x["offered_rps"] == top)
        and (ratio(best, webhook) or 0) >= 3,
    }
    return {"sizes": s, "figures": figures, "runs": runs}
