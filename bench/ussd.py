"""Benchmark: the drivers' USSD menu, as Africa's Talking asks for it, on a big fleet.

    .venv/bin/python -m bench ussd [--quick]

Loads 100,000 drivers and 2,000,000 ledger entries the way ``bench.reconcile`` does (``--quick``:
5,000 and 100,000), with the month ending today. Then it starts ``fleetpay ingest`` as a process
of its own and posts USSD forms for random drivers from ``CLIENTS`` threads at once: the opening
screen, today, my money, the last payouts, in equal shares. Each answer is checked (``CON …`` with
the driver's code or numbers).

It reports p50, p99 and max in ms against two floors measured in the same run: the ingest's own
``/healthz`` (the HTTP round trip, no database), and the same reads done in this process without
HTTP. The target is p99 under 500 ms: Africa's Talking ends a session whose answer is late, and
the driver sees an error.
"""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.common import Resources, fleetpay_env, free_port, percentile, say, wait_http
from bench.reconcile import Shape, business_today, load_month_to_today

AT_TOKEN = "bench-africas-talking-token-51c7e9a2d04b"  # Africa's Talking's own path token
REQUESTS = 2_000
CLIENTS = 8
TARGET_P99_MS = 500.0
SCREENS = ("", "1", "2", "3")


def _msisdn(driver: int) -> str:
    return "+2547" + f"{10_000_000 + driver:08d}"  # the loader's numbers (bench.reconcile)


def _latencies(call: Any, requests: int) -> list[float]:
    def one(n: int) -> float:
        started = time.perf_counter()
        call(n)
        return (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return sorted(pool.map(one, range(requests)))


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(times, 50), 1), "p99_ms": round(percentile(times, 99), 1),
            "max_ms": round(times[-1], 1)}


def _reads_alone(url: str, drivers: int, requests: int) -> dict[str, float]:
    """The menu's reads in this process (driver by number, balance, last payouts): the floor."""
    from db.balances import driver_by_msisdn, ussd_facts
    from db.engine import make_engine, make_sessionmaker
    from fleetpay.settings import Settings

    settings = Settings(database_url=url)
    sessions = make_sessionmaker(make_engine(url, pool_size=CLIENTS))
    today = business_today()

    def read(n: int) -> None:
        with sessions() as session:
            driver = driver_by_msisdn(session, _msisdn(random.randint(1, drivers)).removeprefix("+"))
            assert driver is not None
            ussd_facts(session, driver, today, settings)

    times = _latencies(read, requests)
    sessions.kw["bind"].dispose()
    return _summary(times)


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    from fleetpay.logs import configure_logging

    configure_logging(level="WARNING")  # stdout is the benchmark's one JSON document
    shape = Shape(5_000, 20) if quick else Shape(100_000, 20)
    name, url, loaded = load_month_to_today(res, "ussd", shape)
    port = free_port()
    child = res.start("ingest", [sys.executable, "-m", "cli", "ingest", "--port", str(port)],
                      fleetpay_env(res, name, FLEETPAY_AFRICAS_TALKING_TOKEN=AT_TOKEN))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", child)
    requests = 400 if quick else REQUESTS
    client = httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=CLIENTS))
    wrong: list[str] = []

    def dial(n: int) -> None:
        driver = random.randint(1, shape.drivers)
        text = SCREENS[n % len(SCREENS)]
        answer = client.post(f"/at/{AT_TOKEN}/ussd", data={
            "sessionId": f"ATUid_bench_{n}", "serviceCode": "*384*1234#", "phoneNumber": _msisdn(driver),
            "networkCode": "63902", "text": text})
        if answer.status_code != 200 or not answer.text.startswith("CON ") or (
                text == "" and f"D{driver:06d}" not in answer.text):
            wrong.append(f"{answer.status_code} {answer.text[:80]}")

    say("warming up")
    _latencies(dial, 50)
    say(f"dialling {requests} screens from {CLIENTS} clients")
    started = time.perf_counter()
    timed = _latencies(dial, requests)
    elapsed = time.perf_counter() - started
    floor = _latencies(lambda _: client.get("/healthz"), requests)
    client.close()
    if wrong:
        raise RuntimeError(f"{len(wrong)} wrong answers, e.g. {wrong[:3]}")
    result = _summary(timed)
    return {
        "benchmark": "ussd",
        "dataset": {"drivers": shape.drivers, "entries": loaded["rows"]["entries"]},
        "requests": requests,
        "clients": CLIENTS,
        "screens": list(SCREENS),
        "answers_per_s": round(requests / elapsed, 1),
        "ussd": result,
        "floor_http_healthz": _summary(floor),
        "floor_database_reads": _reads_alone(url, shape.drivers, requests),
        "target_p99_ms": TARGET_P99_MS,
        "under_target": result["p99_ms"] < TARGET_P99_MS,
    }
