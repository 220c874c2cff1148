"""How the ingest is served: uvicorn, one process unless told otherwise, with httptools and uvloop.

httptools and uvloop (``uvicorn[standard]``) are named rather than left to uvicorn's "auto", so
that a missing one stops the start instead of silently serving with the pure-Python h11 parser.
``bench/bare_app.py`` serves the ingest bench's baseline through this same function.

uvicorn's own proxy-header handling is off: it would believe ``X-Forwarded-For`` from any peer in
``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default) and hand the app the forged address as the caller,
so a request relayed by any local proxy could name a Safaricom address and pass the allowlist. The
app decides alone (``ingest.callers.client_ip``), believing the header only from
``FLEETPAY_TRUSTED_PROXIES``.

With ``workers`` > 1 the workers count into prometheus-client's multiprocess files
(``shared_metrics_dir``), so that ``/metrics`` adds them up whichever worker answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

# prometheus-client's switch to multiprocess mode, read when it is first imported.
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def uvicorn_options(*, host: str, port: int, workers: int | None = None) -> dict[str, Any]:
    """The uvicorn settings of ``fleetpay ingest`` (``serve``), also for tests that serve it alike."""
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,  # the app reads X-Forwarded-For itself, from trusted proxies only
    }


def uvicorn_config(app: Starlette | str, *, host: str, port: int) -> uvicorn.Config:
    """A one-process server's configuration, exactly as ``serve`` runs it."""
    return uvicorn.Config(app, **uvicorn_options(host=host, port=port))


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[None]:
    """prometheus-client's multiprocess mode for the uvicorn workers about to be spawned.

    Each worker is a fresh interpreter that inherits this environment, so its prometheus-client
    (imported with the app) writes every count to its own file in this directory, and whichever
    worker answers ``/metrics`` sums them all (``ingest.metrics.edge_registry``). The directory
    is new and private to this server, so no count of an earlier run or of another server is
    added in; it replaces any inherited ``PROMETHEUS_MULTIPROC_DIR`` and is removed at the end.
    The files of a worker that died stay: uvicorn starts another, and the totals go on from where
    they were rather than dropping (Prometheus would read a drop as a counter reset)."""
    directory = tempfile.mkdtemp(prefix="fleetpay-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIR_VARIABLE, None)
        shutil.rmtree(directory, ignore_errors=True)


def serve(app: Starlette | str, *, host: str, port: int, workers: int | None = None) -> None:
    """Run ``app`` (an ASGI app, or an import string when ``workers`` > 1) until stopped."""
    with shared_metrics_dir() if workers and workers > 1 else contextlib.nullcontext():
        uvicorn.run(app, **uvicorn_options(host=host, port=port, workers=workers))
