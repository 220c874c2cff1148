"""Helpers shared by the tests: real servers on loopback, a fleet factory, payload builders."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import fleet
from db.models import Driver, Inbox, Payout

# Daraja payload samples, one copy for every test and bench (tests/samples/README.md).
SAMPLES = Path(__file__).resolve().parent / "samples"
# Secrets the test ingest runs with: random-looking and 32+ characters, as the ingest requires.
TOKEN = "test-callback-token-5f2c9e81d4a7b3c6e0f9"
ADMIN_TOKEN = "test-admin-token-8b1e4d7a2c9f6e3b0d5a"
SMS_API_KEY = "test-africas-talking-key-3c1d"
AT_TOKEN = "test-africas-talking-token-9d2b7e40c1f8a6"


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, and never one this process handed out before: a port
    chosen but not yet bound could otherwise be chosen twice (two servers, one port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a loopback port (free, by default) in a thread; yields its
    base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def fleetpay_argv(*args: str) -> list[str]:
    """``fleetpay ARGS`` as a user types it: the console script installed beside this Python."""
    script = Path(sys.executable).with_name("fleetpay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "cli", *args]


def fleetpay(
    *args: str,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout_s: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``fleetpay ARGS`` to its end, as a user runs it, with no terminal on stdin. ``env``
    replaces the environment (default: this one, with plain-text logs); ``database_url`` points
    the command at a database. With ``check`` a non-zero exit fails the test."""
    environment = dict(env if env is not None else {**os.environ, "FLEETPAY_LOG_JSON": "false"})
    if database_url:
        environment["FLEETPAY_DATABASE_URL"] = database_url
    result = subprocess.run(fleetpay_argv(*args), env=environment, cwd=cwd, capture_output=True, text=True,
                            timeout=timeout_s, stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def pending_count(sessions: sessionmaker[Session], external_ids: list[str]) -> int:
    """How many of these callbacks are stored but not yet processed (or not stored at all)."""
    with sessions() as session:
        done = session.execute(
            select(Inbox.external_id).where(Inbox.external_id.in_(external_ids), Inbox.status != "received")
        ).scalars()
        return len(set(external_ids) - set(done))


_vehicle_codes = itertools.count(200)  # codes below 200 are left to tests that use a sample's code
_receipts = itertools.count(1)
# Drivers in the shared test database: one counter for the whole run, so two tests never draw the
# same code (random codes collided: 100 drawn from a million clash about once in thirty runs).
# Codes below D400000 are left to tests that name a driver on purpose.
_driver_codes = itertools.count(400_000)


def next_vehicle_code() -> str:
    code = next(_vehicle_codes)
    assert code < 1000, "the test database ran out of 3-digit vehicle codes"
    return f"{code:03d}"


def next_driver_code() -> str:
    code = next(_driver_codes)
    assert code < 1_000_000, "the test database ran out of driver codes"
    return f"D{code:06d}"


_people = itertools.count(1)


def two_people(sessions: sessionmaker[Session]) -> tuple[str, str]:
    """Two console users of this run: an operator who asks for money to move, an approver who
    approves (four eyes)."""
    from db.users import add_user

    n = next(_people)
    with sessions.begin() as session:
        add_user(session, f"asker{n}", "operator", "a long enough password")
        add_user(session, f"approver{n}", "approver", "a long enough password")
    return f"asker{n}", f"approver{n}"


def approve_request(asked: subprocess.CompletedProcess[str], approver: str, database_url: str,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
    """Another user approves, from the shell, the request a money command made."""
    assert asked.returncode == 0, asked.stderr
    found = re.search(r'request"?:? (\d+)', asked.stdout)
    assert found, asked.stdout
    return fleetpay("requests", "approve", found.group(1), "--user", approver, database_url=database_url, check=check)


REDIS_CLAIM_KEY = "fleetpay:test-run"
REDIS_CLAIM_TTL_S = 6 * 3600  # a whole run takes minutes


def claim_empty_redis_db(url: str, *, owner: str) -> str:
    """The URL of an empty db on this Redis, claimed for ``owner``: the claim key is set only if
    absent (atomic), so two runs never take the same db; a db holding anything else is left alone."""
    for number in range(15, 0, -1):
        candidate = redis_db_url(url, number)
        client = redis.Redis.from_url(candidate)
        # The claim expires: a run killed outright (no teardown) does not hold the db for ever.
        if client.set(REDIS_CLAIM_KEY, owner, nx=True, ex=REDIS_CLAIM_TTL_S):
            if client.dbsize() == 1:
                return candidate
            client.delete(REDIS_CLAIM_KEY)  # someone else's data
    raise RuntimeError(f"no empty Redis db on {url}")


def redis_db_url(url: str, number: int) -> str:
    """``url`` naming db ``number``: its path (``redis://host:6379/3``), or ``?db=`` on a unix socket
    (the embedded Redis's ``unix:///…/redis.socket?db=0``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = urlencode({**dict(parse_qsl(parts.query)), "db": str(number)})
        return f"unix://{parts.netloc}{parts.path}?{query}"  # urlunsplit would drop the // of an empty host
    return urlunsplit((parts.scheme, parts.netloc, f"/{number}", parts.query, parts.fragment))


def next_receipt(prefix: str = "T") -> str:
    """A fresh 10-character M-Pesa-like receipt."""
    return f"{prefix}{next(_receipts):09d}"[:10]


def add_driver_with_vehicle(
    session: Session,
    *,
    driver_code: str,
    vehicle_code: str | None = None,
    msisdn: str = "254700000000",
    substitute: bool = False,
    **terms: Any,
) -> str:
    vehicle_code = vehicle_code or next_vehicle_code()
    fleet.add_vehicle(session, vehicle_code)
    fleet.add_driver(session, code=driver_code, name=driver_code, msisdn=msisdn, **terms)
    fleet.assign(session, driver_code=driver_code, vehicle_code=vehicle_code, substitute=substitute)
    return vehicle_code


def c2b_body(trans_id: str, amount: str, account: str, *, at: datetime | str = "20261124101500") -> dict[str, str]:
    when = at if isinstance(at, str) else at.strftime("%Y%m%d%H%M%S")
    body = json.loads((SAMPLES / "c2b_confirmation.json").read_text())
    body.update(TransID=trans_id, TransAmount=amount, BillRefNumber=account, TransTime=when)
    return body


def open_payouts(sessions: sessionmaker[Session], driver_code: str) -> int:
    with sessions() as session:
        return len(
            session.execute(
                select(Payout.id)
                .join(Driver, Driver.id == Payout.driver_id)
                .where(Driver.code == driver_code, Payout.state.not_in(("paid", "failed")))
            ).all()
        )
