"""PgBouncer in transaction mode in front of PostgreSQL (docs/operations.md, "PgBouncer").

A real PgBouncer (Debian's package) is started on a free port in front of the test server, and the
system runs through it as processes: the ingest acknowledges callbacks, a worker applies them and
pays the drivers by B2C (the results coming back through the ingest), and the scheduler's sweeps
and reconciliation run. Only the session-level locks go to PostgreSQL itself
(``FLEETPAY_DATABASE_DIRECT_URL``): the scheduler's leadership and the daily close's. The first
test shows why: through the pooler, a session lock belongs to whoever gets that server next.

Everything here lives in databases and a Redis db of this module's own: the processes it starts
sweep, reconcile and close only what this module made.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import redis
from psycopg2.extras import RealDictCursor
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from db import ledger
from db.engine import lock_engine, make_engine, make_sessionmaker
from db.locks import advisory_lock
from db.migrate import upgrade
from db.models import (
    DailyClose,
    Driver,
    Payout,
    Posting,
    ReconciliationRun,
    SchedulerFiring,
)
from fleetpay.settings import Settings
from launcher.dev import wait_http
from money.close_undo import undo_close
from money.daily_close import CLOSE_LOCK_ID, CloseRefused, close_business_day, yesterday
from tests.support import (
    TOKEN,
    add_driver_with_vehicle,
    c2b_body,
    claim_empty_redis_db,
    fleetpay,
    fleetpay_argv,
    free_port,
    next_driver_code,
    next_receipt,
    pending_count,
    wait_until,
)
from workers.scheduler import LEADER_LOCK_ID

SOLO = "solo"  # a pooler database of one server connection, for the first test


@dataclass
class PgBouncer:
    port: int
    server_url: str  # the server it pools, as the run's admin reaches it

    def url(self, direct_url: str, *, database: str | None = None) -> str:
        """``direct_url`` through the pooler (``database``: one of its own databases instead)."""
        url = make_url(direct_url)
        pooled = url.set(host="127.0.0.1", port=self.port, query={}, database=database or url.database)
        return pooled.render_as_string(hide_password=False)

    def server_pids(self) -> set[int]:
        """The PostgreSQL backends the pooler holds (its admin console's ``SHOW SERVERS``)."""
        return {int(row["remote_pid"]) for row in rows(self.url(self.server_url, database="pgbouncer"), "SHOW SERVERS")}


def rows(url: str, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
    """One statement's rows, on a connection of its own in autocommit (PgBouncer's console takes no BEGIN)."""
    connection = psycopg2.connect(libpq(url), cursor_factory=RealDictCursor)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [dict(row) for row in cursor.fetchall()]
    finally:
        connection.close()


def libpq(url: str) -> str:
    """A URL as psycopg2 (libpq) takes it: ``postgresql://``, not SQLAlchemy's ``postgresql+psycopg2://``."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None)
    if found is None:
        pytest.skip("pgbouncer is not installed: apt-get install pgbouncer")
    return found


def server_host(server: URL) -> str:
    """The server's host, or the folder of its socket (the embedded pgserver's ``?host=``)."""
    return str(server.query.get("host") or server.host or "127.0.0.1")


def unprivileged(server: URL) -> list[str]:
    """PgBouncer refuses to run as root: it reads its files, then becomes the owner of the server's
    socket folder (who alone may enter it: pgserver's user), or nobody."""
    if os.geteuid() != 0:
        return []
    host = server_host(server)
    owner = Path(host).stat().st_uid if host.startswith("/") else 0
    return ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]


def pgbouncer_config(directory: Path, port: int, server: URL, solo_database: str) -> Path:
    """Transaction pooling in front of ``server``: every database by name, and ``solo``, one of
    them behind a single server connection. Clients are trusted; the server gets the password."""
    target = f"host={server_host(server)} port={server.port or 5432}"
    (directory / "users.txt").write_text(f'"{server.username}" "{server.password or ""}"\n')
    config = directory / "pgbouncer.ini"
    config.write_text(f"""[databases]
* = {target}
{SOLO} = {target} dbname={solo_database} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
admin_users = {server.username}
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
""")
    return config


def own_database(servers) -> str:  # type: ignore[no-untyped-def]
    """A migrated, empty database of the caller's own (dropped at the end of the run)."""
    name = f"{servers.database_name}_{uuid.uuid4().hex[:6]}"
    servers.admin(f'CREATE DATABASE "{name}" TEMPLATE "{servers.database_name}_tpl"')
    servers.extra_databases.append(name)
    return name


@pytest.fixture(scope="module")
def database(servers) -> str:  # type: ignore[no-untyped-def]
    """The direct URL of this module's database."""
    return servers.url_of(own_database(servers))


@pytest.fixture(scope="module")
def pgbouncer(servers, database: str, tmp_path_factory) -> Iterator[PgBouncer]:  # type: ignore[no-untyped-def]
    binary = pgbouncer_binary()
    directory = tmp_path_factory.mktemp("pgbouncer")
    server = make_url(servers.database_url)
    port = free_port()
    config = pgbouncer_config(directory, port, server, make_url(database).database or "")
    log = (directory / "pgbouncer.log").open("ab")
    process = subprocess.Popen([binary, *unprivileged(server), str(config)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    pooler = PgBouncer(port, servers.database_url)
    try:
        wait_until(lambda: process.poll() is not None or _answers(pooler.url(database)), timeout_s=15,
                   what="pgbouncer to listen")
        assert process.poll() is None, (directory / "pgbouncer.log").read_text()
        yield pooler
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _answers(url: str) -> bool:
    try:
        psycopg2.connect(libpq(url), connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(scope="module")
def pooled_sessions(pgbouncer: PgBouncer, database: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pgbouncer.url(database), pool_size=4)
    yield make_sessionmaker(engine)
    engine.dispose()


@dataclass
class System:
    """fleetpay's processes on this module's database through the pooler, and its own Redis db."""

    env: dict[str, str]
    ingest_url: str
    log: Path
    processes: list[subprocess.Popen[bytes]]

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            process = subprocess.Popen(fleetpay_argv(*args), env=env or self.env, start_new_session=True,
                                       stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def system(servers, pgbouncer: PgBouncer, database: str, tmp_path_factory) -> Iterator[System]:  # type: ignore[no-untyped-def]
    """The Daraja simulator, the ingest and a worker, every database URL through the pooler."""
    directory = tmp_path_factory.mktemp("system")
    redis_url = claim_empty_redis_db(servers.redis_url, owner=f"{servers.database_name}-pgbouncer")
    ingest_port, simulator_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if key != "FLEETPAY_BROKER_URL"}  # Redis, ours
    env.update(
        FLEETPAY_DATABASE_URL=pgbouncer.url(database),
        FLEETPAY_DATABASE_DIRECT_URL=database,
        FLEETPAY_DATABASE_POOL_SIZE="4",
        FLEETPAY_REDIS_URL=redis_url,
        FLEETPAY_PUBLIC_BASE_URL=f"http://127.0.0.1:{ingest_port}",
        FLEETPAY_DARAJA_BASE_URL=f"http://127.0.0.1:{simulator_port}",
        FLEETPAY_DARAJA_CERTIFICATE_PATH=str(directory / "simulator-cert.pem"),
        FLEETPAY_SMS_ENABLED="false",
        FLEETPAY_LOG_LEVEL="WARNING",
    )
    running = System(env, f"http://127.0.0.1:{ingest_port}", directory / "processes.log", [])
    try:
        running.start("simulator", "--port", str(simulator_port), "--result-delay-ms", "20")
        simulator = f"http://127.0.0.1:{simulator_port}"
        wait_http(f"{simulator}/healthz", timeout_s=60)
        Path(env["FLEETPAY_DARAJA_CERTIFICATE_PATH"]).write_bytes(httpx.get(f"{simulator}/sim/cert.pem").content)
        running.start("ingest", "--host", "127.0.0.1", "--port", str(ingest_port))
        running.start("worker", "--processes", "1", "--threads", "4", "--shutdown-timeout-s", "5")
        wait_http(f"{running.ingest_url}/readyz", timeout_s=60)
        yield running
    finally:
        for process in running.processes:
            running.stop(process)
        redis.Redis.from_url(redis_url).flushdb()  # the claim key with the rest


def advisory_holders(database: str, lock_id: int, *, granted: bool = True) -> list[int]:
    """The backends that hold (or wait for) advisory lock ``lock_id`` in ``database``, read directly."""
    return [int(row["pid"]) for row in rows(
        database,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((classid::bigint << 32) | objid::bigint) = %s AND granted = %s",
        (lock_id, granted),
    )]


def test_a_session_lock_taken_through_the_pooler_belongs_to_whoever_gets_the_server(pgbouncer, database) -> None:  # type: ignore[no-untyped-def]
    """Why the locks need the direct URL: two clients of one pooled server both "win" the lock, and
    it stays held after its taker has gone."""
    lock_id = 424_242
    first, second = (psycopg2.connect(libpq(pgbouncer.url(database, database=SOLO))) for _ in range(2))
    try:
        for client in (first, second):
            client.autocommit = True
        with first.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,))
            assert cursor.fetchone() == (True,)
        with second.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (lock_id,))
            assert cursor.fetchone() == (True,)  # a second holder: the lock protects nothing
        first.close()
        [holder] = advisory_holders(database, lock_id)  # its taker is gone; the lock is not
        assert holder in pgbouncer.server_pids()
    finally:
        with second.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")
        second.close()


def test_callbacks_are_acknowledged_applied_and_paid_out_through_the_pooler(system, pooled_sessions) -> None:  # type: ignore[no-untyped-def]
    """Three drivers, ten fares each delivered concurrently (five of them twice): each applied once,
    the shares paid by B2C, whose results come back through the ingest."""
    drivers = {}
    with pooled_sessions.begin() as session:
        for _ in range(3):
            code = next_driver_code()
            drivers[code] = add_driver_with_vehicle(session, driver_code=code, msisdn="254722000333")
    fares = [(code, next_receipt("B")) for code in drivers for _ in range(10)]
    bodies = [json.dumps(c2b_body(receipt, "100.00", drivers[code])).encode() for code, receipt in fares]

    def deliver(body: bytes) -> int:
        with httpx.Client(timeout=10) as client:
            return client.post(f"{system.ingest_url}/cb/{TOKEN}/c2b/confirm", content=body,
                               headers={"content-type": "application/json"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(deliver, bodies + bodies[::6])) == {200}
    receipts = [receipt for _, receipt in fares]
    wait_until(lambda: pending_count(pooled_sessions, receipts) == 0, timeout_s=60, what="the fares applied")

    def paid(code: str) -> list[tuple[str, int]]:
        with pooled_sessions() as session:
            return session.execute(select(Payout.state, Payout.amount_cents).join(Driver, Driver.id == Payout.driver_id)
                                   .where(Driver.code == code)).all()

    for code in drivers:
        wait_until(lambda code=code: {state for state, _ in paid(code)} == {"paid"}, timeout_s=60,  # type: ignore[misc]
                   what=f"{code}'s payouts")
        assert sum(amount for _, amount in paid(code)) == 50_000  # half of ten KES 100 fares
        with pooled_sessions() as session:
            driver_id = session.execute(select(Driver.id).where(Driver.code == code)).scalar_one()
            accounts = ledger.driver_accounts(session, driver_id)
            assert ledger.balance_cents(session, accounts.target) == 50_000
            assert ledger.balance_cents(session, accounts.payable) == 0
    with pooled_sessions() as session:
        keys = session.execute(select(Posting.idempotency_key, func.count()).where(
            Posting.idempotency_key.in_([f"c2b:{receipt}" for receipt in receipts])).group_by(Posting.idempotency_key)).all()
    assert len(keys) == len(receipts) and {count for _, count in keys} == {1}


def test_one_scheduler_leads_and_a_standby_takes_over_through_the_pooler(system, pgbouncer, database, pooled_sessions) -> None:  # type: ignore[no-untyped-def]
    """The leader's lock is held on a direct connection, never one of the pooler's; the jobs it fires
    (sweeps, the reconciliation with its exported snapshot) run through the pooler."""
    env = {**system.env, "FLEETPAY_SCHEDULE_SWEEP_S": "1", "FLEETPAY_SCHEDULE_RECONCILE_S": "2",
           "FLEETPAY_SCHEDULE_MPESA_RECONCILE_S": "3600", "FLEETPAY_SCHEDULER_STANDBY_POLL_S": "0.3"}
    since = time.time()

    def firings() -> list[tuple[str, str, str]]:
        with pooled_sessions() as session:
            return [tuple(row) for row in session.execute(  # type: ignore[misc]
                select(SchedulerFiring.job, SchedulerFiring.period, SchedulerFiring.instance)
                .where(SchedulerFiring.job == "sweep_inbox", SchedulerFiring.period >= str(int(since)))
            ).all()]

    schedulers = [system.start("scheduler", env=env) for _ in range(2)]
    try:
        wait_until(lambda: len(firings()) >= 4, timeout_s=30, what="four sweep periods")
        [(leader, _)] = Counter(instance for _, _, instance in firings()).most_common()  # one instance fired all
        [holder] = advisory_holders(database, LEADER_LOCK_ID)
        assert holder not in pgbouncer.server_pids()  # a direct connection
        wait_until(lambda: _checked(pooled_sessions, since), timeout_s=30, what="a reconciliation through the pooler")

        leader_process = next(process for process in schedulers if leader.endswith(f":{process.pid}"))
        system.stop(leader_process, signal.SIGKILL)
        wait_until(lambda: any(instance != leader for _, _, instance in firings()), timeout_s=30, what="the standby")
        seen = firings()
        assert len({period for _, period, _ in seen}) == len(seen)  # once per period
        [successor] = advisory_holders(database, LEADER_LOCK_ID)
        assert successor != holder and successor not in pgbouncer.server_pids()
    finally:
        for process in schedulers:
            system.stop(process)


def _checked(sessions: sessionmaker[Session], since: float) -> bool:
    """A scheduled reconciliation ran since ``since`` and found the books clean."""
    with sessions() as session:
        runs = session.execute(select(ReconciliationRun.discrepancies, ReconciliationRun.error).where(
            ReconciliationRun.kind == "check", ReconciliationRun.started_at >= datetime.fromtimestamp(since, UTC))).all()
    assert all(row == (0, None) for row in runs), runs
    return bool(runs)


def test_migrations_run_through_the_pooler(servers, pgbouncer) -> None:  # type: ignore[no-untyped-def]
    """``fleetpay migrate`` may be given the pooled URL: an empty database reaches the head (the
    concurrent index builds run outside a transaction, one statement each)."""
    name = f"{servers.database_name}_{uuid.uuid4().hex[:6]}"
    servers.admin(f'CREATE DATABASE "{name}"')
    servers.extra_databases.append(name)
    upgrade(pgbouncer.url(servers.url_of(name)))
    revision = "SELECT version_num FROM alembic_version"
    assert rows(servers.url_of(name), revision) == rows(servers.database_url, revision)


def test_fleetpay_migrate_goes_to_the_direct_url(servers) -> None:  # type: ignore[no-untyped-def]
    """With both URLs set, ``fleetpay migrate`` reaches PostgreSQL itself (compose starts it before
    PgBouncer may be up): here the pooled URL leads nowhere."""
    name = own_database(servers)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEETPAY_")} | {
        "FLEETPAY_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        "FLEETPAY_DATABASE_DIRECT_URL": servers.url_of(name),
    }
    assert "latest migration" in fleetpay("migrate", env=env).stdout


@pytest.fixture
def close_database(servers, pgbouncer: PgBouncer) -> Iterator[tuple[Settings, sessionmaker[Session]]]:  # type: ignore[no-untyped-def]
    """A database of the test's own (a close closes everyone): settings whose database URL goes
    through the pooler and whose direct URL does not, and sessions through the pooler."""
    direct = servers.url_of(own_database(servers))
    settings = Settings(database_url=pgbouncer.url(direct), database_direct_url=direct)
    engine = make_engine(pgbouncer.url(direct), pool_size=2)
    yield settings, make_sessionmaker(engine)
    engine.dispose()
    lock_engine(settings, engine).dispose()


def test_the_daily_close_locks_on_the_direct_url(close_database, pgbouncer) -> None:  # type: ignore[no-untyped-def]
    """While another holds the close lock, an undo is refused and a close waits (on a direct
    connection); once it is released the close runs through the pooler, and leaves no lock behind."""
    settings, sessions = close_database
    direct = settings.database_direct_url or ""
    code = next_driver_code()
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code=code)
    day = yesterday(settings) + timedelta(days=1)  # today: the driver was there (forced: it has not ended)
    other = make_engine(direct, pool_size=1)  # another process's close
    try:
        with advisory_lock(other, CLOSE_LOCK_ID, wait=False):
            with pytest.raises(CloseRefused, match="running now"):
                undo_close(sessions, day, settings, operator="amina", reason="a test")
            outcome: dict[str, object] = {}
            closing = threading.Thread(target=lambda: outcome.update(summary=close_business_day(
                sessions, day, settings, forced_reason="closed by a test before its driver existed")))
            closing.start()
            wait_until(lambda: bool(advisory_holders(direct, CLOSE_LOCK_ID, granted=False)), what="the close to wait")
            [waiting] = advisory_holders(direct, CLOSE_LOCK_ID, granted=False)
            assert waiting not in pgbouncer.server_pids()
            assert closing.is_alive()
        closing.join(timeout=30)
    finally:
        other.dispose()
    assert outcome["summary"].complete and outcome["summary"].closed["missed"] == 1  # type: ignore[attr-defined]
    with sessions() as session:
        assert session.execute(select(DailyClose.business_date)).scalars().all() == [day]
    assert advisory_holders(direct, CLOSE_LOCK_ID) == []
