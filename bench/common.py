"""Shared helpers of the benchmarks: throwaway databases and Redis dbs, child processes, the
machine's description, statistics, and a small pure-Python HTTP/1.1 load generator.

Everything a bench creates is removed by ``Resources.close()``: databases are named
``fpbench_<run>_…`` and dropped WITH (FORCE); the Redis db (one of 10–14, found empty and marked
at once) is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SAMPLES = REPO / "tests" / "samples"  # the Daraja payload samples (tests/samples/README.md)
PYTHON = sys.executable

ADMIN_URL = os.environ.get("FLEETPAY_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("FLEETPAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DBS = (10, 11, 12, 13, 14)
# 32+ characters: the ingest refuses to serve shorter tokens (or the placeholders).
TOKEN = "bench-callback-token-3e9a7c15b2d84f60"
ADMIN_TOKEN = "bench-admin-token-c41f8e2a9d6b7035e1"
REDIS_MARKER = "fpbench:owner"


def say(*parts: object) -> None:
    """Human progress, on stderr (stdout carries the one JSON document)."""
    print(f"[bench {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def c2b_body(trans_id: str, amount: str, account: str, at: str) -> dict[str, str]:
    """A C2B confirmation like Safaricom's (tests/support.py ``c2b_body`` reads the same sample)."""
    body: dict[str, str] = json.loads((SAMPLES / "c2b_confirmation.json").read_text())
    body.update(TransID=trans_id, TransAmount=amount, BillRefNumber=account, TransTime=at)
    return body


def nairobi_now_str() -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo("Africa/Nairobi")).strftime("%Y%m%d%H%M%S")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- statistics ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def steady_rates(stamps: Sequence[float], unit: str = "pps") -> dict[str, Any]:
    """Completion rate from sorted completion times: ``steady`` counts the events between the 5th
    and the 95th percentile over that span (start-up and stragglers left out); ``span`` is
    first-to-last."""
    n = len(stamps)
    lo, hi = int(n * 0.05), max(int(n * 0.95) - 1, 0)
    steady = (hi - lo) / (stamps[hi] - stamps[lo]) if n > 20 and stamps[hi] > stamps[lo] else float("nan")
    span = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 and stamps[-1] > stamps[0] else float("nan")
    return {f"steady_{unit}": rounded(steady), f"span_{unit}": rounded(span),
            "span_s": round(stamps[-1] - stamps[0], 3) if n > 1 else None}


def ratio(value: float, baseline: float) -> float | None:
    if not baseline or baseline != baseline or value != value:
        return None
    return round(value / baseline, 3)


def rounded(value: float, digits: int = 1) -> float:
    return round(value, digits) if value == value else value


# --- the machine ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with contextlib.suppress(Exception):
        import psycopg2

        with contextlib.closing(psycopg2.connect(ADMIN_URL)) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            info["postgresql"] = cur.fetchone()[0]
            cur.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync','synchronous_commit','shared_buffers','max_connections','commit_delay')"
            )
            info["postgresql_settings"] = dict(cur.fetchall())
    with contextlib.suppress(Exception):
        import redis

        info["redis"] = redis.Redis.from_url(f"{REDIS_BASE}/0").info("server")["redis_version"]
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        info["packages"] = {name: version(name) for name in ("uvicorn", "httptools", "uvloop", "starlette", "dramatiq", "SQLAlchemy", "psycopg2-binary", "redis")}
    return info


# --- throwaway databases and Redis ----------------------------------------------------------------


def database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


class Resources:
    """The run's throwaway PostgreSQL databases, its Redis db, its temporary folder, its child
    processes; ``close()`` removes them all (also after a failure)."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.databases: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"fpbench-{self.run_id}-"))
        self.redis_db: int | None = None
        self.processes: list[Child] = []
        self._migrated_template: str | None = None

    # PostgreSQL
    def _admin(self, statement: str) -> None:
        import psycopg2

        conn = psycopg2.connect(ADMIN_URL)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, label: str, *, template: str | None = None) -> str:
        """A new database ``fpbench_<run>_<label>``, migrated (or copied from ``template``)."""
        name = f"fpbench_{self.run_id}_{label}"
        if template is None:
            template = self.migrated_template()
        for attempt in range(20):  # CREATE … TEMPLATE fails while a connection to it is closing
            try:
                self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                break
            except Exception as error:  # noqa: BLE001
                if "being accessed by other users" not in str(error) or attempt == 19:
                    raise
                time.sleep(0.25)
        self.databases.append(name)
        return name

    def migrated_template(self) -> str:
        if self._migrated_template is None:
            from db.migrate import upgrade

            name = f"fpbench_{self.run_id}_schema"
            self._admin(f'CREATE DATABASE "{name}"')
            self.databases.append(name)
            upgrade(database_url(name))
            self._migrated_template = name
        return self._migrated_template

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    # Redis
    def redis_url(self) -> str:
        if self.redis_db is None:
            import redis

            for number in REDIS_DBS:
                client = redis.Redis.from_url(f"{REDIS_BASE}/{number}")
                if client.dbsize() == 0 and client.set(REDIS_MARKER, self.run_id, nx=True) and client.dbsize() == 1:
                    self.redis_db = number
                    break
            else:
                raise RuntimeError(f"no empty Redis db among {REDIS_DBS} on {REDIS_BASE}")
        return f"{REDIS_BASE}/{self.redis_db}"

    def redis(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.redis_url())

    def reset_redis(self) -> None:
        """Empty our Redis db between measurements, keeping our marker."""
        client = self.redis()
        client.flushdb()
        client.set(REDIS_MARKER, self.run_id)

    # child processes
    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(name, argv, env, self.tmp / f"{name}.log")
        self.processes.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.processes):
            child.stop()
        self.processes.clear()
        for name in list(self.databases):
            try:
                self.drop_database(name)
            except Exception as error:  # noqa: BLE001
                say(f"could not drop database {name}: {error}")
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                self.redis().flushdb()
            self.redis_db = None
        if os.environ.get("FLEETPAY_BENCH_KEEP_LOGS"):
            say(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def resources() -> Iterator[Resources]:
    res = Resources()
    try:
        yield res
    finally:
        res.close()


def fleetpay_env(res: Resources, database: str, **overrides: str) -> dict[str, str]:
    """The environment of a fleetpay process of the bench (every location set explicitly, so no
    ``.env`` or ``.fleetpay/dev.env`` in the folder can redirect it)."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("FLEETPAY_")
    }
    env.update(
        PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        PYTHONUNBUFFERED="1",
        FLEETPAY_DATABASE_URL=database_url(database),
        FLEETPAY_REDIS_URL=res.redis_url(),
        FLEETPAY_CALLBACK_TOKEN=TOKEN,
        FLEETPAY_ADMIN_TOKEN=ADMIN_TOKEN,
        FLEETPAY_PUBLIC_BASE_URL="http://127.0.0.1:1",
        FLEETPAY_DARAJA_BASE_URL="http://127.0.0.1:1",
        FLEETPAY_DARAJA_CERTIFICATE_PATH=str(res.tmp / "simulator-cert.pem"),
        FLEETPAY_DATA_DIR=str(res.tmp / "data"),
    )
    env.update(overrides)
    return env


class Child:
    """A child process in its own session (so it and its own children stop together), its output
    in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 — closed in stop()
        self.process = subprocess.Popen(
            argv, env=env, cwd=log_path.parent, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tree(self) -> list[psutil.Process]:
        """This process and its descendants."""
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self, timeout_s: float = 20) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def serve_main(app: Any) -> None:
    """The ``main()`` of a bench server (the bare endpoint, the callback sink): ``--host`` and
    ``--port`` from the command line, served by ``ingest.serving.serve`` as the ingest is."""
    import argparse

    from ingest.serving import serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(app, host=args.host, port=args.port)


def wait_http(url: str, child: Child | None = None, timeout_s: float = 60) -> None:
    from launcher.dev import wait_http as wait_answer

    def gone() -> str | None:
        return f"{child.name} exited:\n{child.tail()}" if child is not None and not child.alive() else None

    wait_answer(url, timeout_s, gone=gone)


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- a small HTTP/1.1 keep-alive client (pure Python, asyncio) ------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time. Much cheaper per request than a
    general client (no header objects, no URL parsing), so a Python load generator keeps up with a
    one-process uvicorn server on the same machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at < 0:
            raise HttpError(f"no content-length in {head[:200]!r}")
        end = lowered.find(b"\r\n", at + 2)
        length = int(lowered[at + 17 : end])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def post_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class LoadResult:
    mode: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0
    answered_incl_warmup: int = 0
    error_samples: list[str] = field(default_factory=list)

    def record(self, status: int, body: bytes, expect: bytes, latency_ms: float) -> None:
        """One counted answer: acknowledged (the exact expected body) or an error, kept as a sample."""
        self.requests += 1
        if status == 200 and body == expect:
            self.ok += 1
            self.latencies_ms.append(latency_ms)
        else:
            self.errors += 1
            self.error_samples.append(f"{status} {body[:120]!r}")

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "mode": self.mode,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": rounded(self.ok / self.duration_s if self.duration_s else float("nan")),
            "p50_ms": rounded(percentile(lat, 50), 2),
            "p95_ms": rounded(percentile(lat, 95), 2),
            "p99_ms": rounded(percentile(lat, 99), 2),
            "max_ms": rounded(lat[-1], 2) if lat else None,
            "client_cpu_s": round(self.client_cpu_s, 2),
            "error_samples": self.error_samples[:3],
        }


async def _open_all(host: str, port: int, n: int) -> list[Connection]:
    return list(await asyncio.gather(*(Connection.open(host, port) for _ in range(n))))


async def max_rate(
    host: str, port: int, make_request: Callable[[], bytes], *, connections: int, duration_s: float,
    warmup_s: float, expect: bytes, max_requests: int,
) -> LoadResult:
    """Closed loop: ``connections`` connections each send their next request as soon as the last
    is answered, for ``warmup_s`` (not counted) then ``duration_s`` (counted); stops early after
    ``max_requests`` in all."""
    result = LoadResult("max_rate")
    conns = await _open_all(host, port, connections)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    counted_from = begin + warmup_s
    stop_at = counted_from + duration_s
    sent = 0
    cpu0 = None

    async def run(conn: Connection) -> None:
        nonlocal sent, cpu0
        while sent < max_requests:
            now = loop.time()
            if now >= stop_at:
                return
            sent += 1
            if now >= counted_from and cpu0 is None:
                cpu0 = client_cpu_seconds()
            raw = make_request()
            try:
                status, body = await conn.request(raw)
            except Exception as error:  # noqa: BLE001
                result.errors += 1
                result.error_samples.append(repr(error))
                return
            done = loop.time()
            result.answered_incl_warmup += 1
            if now >= counted_from and done <= stop_at:
                result.record(status, body, expect, (done - now) * 1000)

    try:
        await asyncio.wait_for(asyncio.gather(*(run(c) for c in conns)), timeout=warmup_s + duration_s + 30)
    finally:
        for conn in conns:
            conn.close()
    result.duration_s = min(loop.time(), stop_at) - counted_from
    result.client_cpu_s = client_cpu_seconds() - (cpu0 if cpu0 is not None else client_cpu_seconds())
    return result


async def offered_rate(
    host: str, port: int, make_request: Callable[[], bytes], *, rate: float, duration_s: float,
    warmup_s: float, connections: int, expect: bytes,
) -> LoadResult:
    """Open loop: request i is due at ``start + i/rate`` whatever happened to earlier ones; its
    latency runs from that due time (so a stall shows in every request it delayed, no coordinated
    omission). A request waits for a free connection from a pool of ``connections``; that wait
    counts too. The first ``warmup_s`` are not counted. Bounded: rate × (warmup + duration)
    requests, and a deadline."""
    result = LoadResult("offered_rate")
    conns = await _open_all(host, port, connections)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in conns:
        pool.put_nowait(conn)
    loop = asyncio.get_running_loop()
    warm_n = int(rate * warmup_s)
    total = warm_n + int(rate * duration_s)
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        raw = make_request()
        try:
            status, body = await conn.request(raw)
        except Exception as error:  # noqa: BLE001
            if i >= warm_n:
                result.requests += 1
                result.errors += 1
                result.error_samples.append(repr(error))
            return  # the broken connection is not returned to the pool
        done = loop.time()
        pool.put_nowait(conn)
        result.answered_incl_warmup += 1
        if i >= warm_n:
            result.record(status, body, expect, (done - due) * 1000)

    cpu0 = None
    for i in range(total):
        due = start + i / rate
        if i == warm_n:
            cpu0 = client_cpu_seconds()
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    try:
        _, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:  # still unanswered 30 s after the schedule ended: counted as errors
            task.cancel()
        if pending:
            result.requests += len(pending)
            result.errors += len(pending)
            result.error_samples.append(f"{len(pending)} requests unanswered 30 s after the schedule ended")
    finally:
        for conn in conns:
            conn.close()
    result.duration_s = duration_s
    result.client_cpu_s = client_cpu_seconds() - (cpu0 if cpu0 is not None else client_cpu_seconds())
    return result


# --- output -------------------------------------------------------------------------------------


def save(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
