"""How the ingest is served: uvicorn, one process unless told otherwise, with httptools and uvloop.

httptools and uvloop (``uvicorn[standard]``) are named rather than left to uvicorn's "auto", so
that a missing one stops the start instead of silently serving with the pure-Python h11 parser.
``bench/bare_app.py`` serves the ingest bench's baseline through this same function.

uvicorn's own proxy-header handling is off: it would believe ``X-Forwarded-For`` from any peer in
``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default) and hand the app the forged address as the caller,
so a request relayed by any local proxy could name a Safaricom address and pass the allowlist. The
app decides alone (``ingest.callers.client_ip``), believing the header only from
``FLEETPAY_TRUSTED_PROXIES``.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.applications import Starlette


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


def serve(app: Starlette | str, *, host: str, port: int, workers: int | None = None) -> None:
    """Run ``app`` (an ASGI app, or an import string when ``workers`` > 1) until stopped."""
    uvicorn.run(app, **uvicorn_options(host=host, port=port, workers=workers))
