"""Benchmark: the console's pages, as a browser asks for them, on a big fleet.

    .venv/bin/python -m bench console [--quick]

Loads a database the way ``bench.reconcile`` does (100,000 drivers and 10,000,000 ledger entries;
``--quick``: 5,000 and 100,000), adds users, payments in suspense, requests and an audit log, starts
``fleetpay console`` as a process of its own, logs in over HTTP and asks for every page (each
``REPEATS`` times, one at a time). Reported per page: p50, p95 and max in ms, against two floors
measured in the same run: the console's own ``/healthz`` (the HTTP round trip, no database) and
the same page's database reads done in this process without HTTP or templates. The target is
p95 under 300 ms for every page.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import httpx
from sqlalchemy import select

from bench.common import Resources, fleetpay_env, free_port, percentile, say, wait_http
from bench.reconcile import Shape, business_today, load_month_to_today

REPEATS = 30
TARGET_P95_MS = 300.0
PASSWORD = "bench password 2026"


def _seed(url: str) -> dict[str, Any]:
    """Users, 200 payments in suspense (through the real apply path), requests and actions."""
    from datetime import date

    from db import users
    from db.engine import make_engine, make_sessionmaker
    from db.models import Driver, Inbox, Payout
    from schemas.callbacks import body_digest, inbox_key
    from fleetpay.settings import Settings
    from money.callbacks import apply_callback
    from money.requests import Asker, ask

    settings = Settings(database_url=url)
    sessions = make_sessionmaker(make_engine(url, pool_size=2))
    with sessions.begin() as session:
        users.add_user(session, "omar", "operator", PASSWORD)
        users.add_user(session, "abby", "approver", PASSWORD)
        users.add_user(session, "adam", "admin", PASSWORD)  # sees every page, the users page too
    template = {"TransactionType": "Pay Bill", "TransTime": "20261024101500", "BusinessShortCode": "600000",
                "InvoiceNumber": "", "OrgAccountBalance": "", "ThirdPartyTransID": "", "MSISDN": "254708374149",
                "FirstName": "John"}
    ids = []
    with sessions.begin() as session:
        for n in range(200):
            body = {**template, "TransID": f"BENCH{n:05d}", "TransAmount": "150.00", "BillRefNumber": f"X{n}"}
            row = Inbox(kind="c2b_confirmation", external_id=body["TransID"], body=json.dumps(body))
            session.add(row)
            session.flush()
            ids.append(row.id)
    for inbox_id in ids:
        apply_callback(sessions, inbox_id, settings)
    with sessions.begin() as session:
        for n in range(50):
            ask(session, "unmatched_assign", {"trans_id": f"BENCH{n:05d}", "driver": "D000001", "as": "company"},
                asker=Asker("omar", "operator"), reason=f"bench {n}", settings=settings, business_date=date(2026, 10, 30))
    with sessions.begin() as session:  # a payout of D000001 with two results in the inbox: its evidence
        payout = session.execute(select(Payout).join(Driver, Driver.id == Payout.driver_id)
                                 .where(Driver.code == "D000001").order_by(Payout.id.desc()).limit(1)).scalar_one()
        for code in (0, 2001):
            body = {"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "bench",
                               "OriginatorConversationID": payout.originator_conversation_id,
                               "ConversationID": "AG_bench", "TransactionID": "BENCH00001"}}
            session.add(Inbox(kind="b2c_result", external_id=inbox_key("b2c_result", body, body_digest(body)),
                              body=json.dumps(body), status="processed", reason="bench"))
        payout_id = payout.id
    sessions.kw["bind"].dispose()
    return {"users": 3, "unmatched": 200, "requests": 50, "payout": payout_id}


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def _timed(client: httpx.Client, path: str, repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    times.sort()
    return {"p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1),
            "max_ms": round(times[-1], 1), "bytes": len(answer.content)}


def _reads(url: str, driver: str, repeats: int) -> dict[str, Any]:
    """The heaviest pages' database reads alone, in this process: the floor under the page."""
    from datetime import timedelta

    from db import fleet
    from db.engine import make_engine, make_sessionmaker
    from db.statements import dashboard, statement

    sessions = make_sessionmaker(make_engine(url, pool_size=1))
    today = business_today()
    out: dict[str, Any] = {}
    for name, read in (
        ("dashboard", lambda s: dashboard(s, today)),
        ("driver statement (7 days)", lambda s: statement(s, fleet.get_driver(s, driver).id, "payable",
                                                          today - timedelta(days=6), today)),
        ("drivers (first page)", lambda s: fleet.list_drivers(s, limit=100)),
    ):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            with sessions() as session:
                read(session)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[name] = {"p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1)}
    sessions.kw["bind"].dispose()
    return out


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    from fleetpay.logs import configure_logging

    configure_logging(level="WARNING")  # stdout is the benchmark's one JSON document
    shape = Shape(5_000, 20) if quick else Shape(100_000, 100)
    name, url, loaded = load_month_to_today(res, "console", shape)
    seeded = _seed(url)
    port = free_port()
    # Plain HTTP on loopback: the cookie's Secure flag would keep httpx from sending it back.
    env = fleetpay_env(res, name, FLEETPAY_CONSOLE_SECRET=secrets.token_hex(32), FLEETPAY_CONSOLE_COOKIE_SECURE="false")
    import sys

    child = res.start("console", [sys.executable, "-m", "cli", "console", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", child)
    client = httpx.Client(base_url=base, timeout=30)
    token = _csrf(client.get("/login").text)
    assert client.post("/login", data={"username": "adam", "password": PASSWORD, "csrf": token}).status_code == 303
    driver = "D000001"
    repeats = 10 if quick else REPEATS
    pages = {
        "dashboard": "/",
        "drivers": "/drivers",
        "drivers search": f"/drivers?q={driver}",
        "driver page (7-day statement)": f"/drivers/{driver}",
        "statement csv (30 days)": f"/drivers/{driver}/statement.csv?account=payable&since=2026-10-01&until=2026-10-30",
        "unmatched (200)": "/unmatched",
        "requests (50 waiting)": "/requests",
        "payouts": "/payouts",
        "payouts of one driver": f"/payouts?driver={driver}",
        "payouts paid": "/payouts?state=paid",
        "a payout's page (its evidence)": f"/payouts/{seeded['payout']}",
        "audit log": "/audit",
        "users (admin)": "/users",
    }
    say("timing pages")
    first_view = _timed(client, "/", 1)  # computes and stores the settled days' totals, once
    floor = _timed(client, "/healthz", repeats)
    timed = {page: _timed(client, path, repeats) for page, path in pages.items()}
    reads = _reads(url, driver, repeats)
    worst = max(timed.values(), key=lambda t: t["p95_ms"])
    return {
        "benchmark": "console",
        "dataset": {"drivers": shape.drivers, "entries": loaded["rows"]["entries"], "postings": loaded["rows"]["postings"],
                    **seeded},
        "repeats_per_page": repeats,
        "pages": timed,
        "floor_http_healthz": floor,
        "floor_database_reads": reads,
        "dashboard_first_view_ms": first_view["max_ms"],
        "target_p95_ms": TARGET_P95_MS,
        "worst_page_p95_ms": worst["p95_ms"],
        "every_page_under_target": all(t["p95_ms"] < TARGET_P95_MS for t in timed.values()),
    }
