"""How the ingest is served: uvicorn, one process unless told otherwise, with httptools and uvloop.

httptools and uvloop (``uvicorn[standard]``) are named rather than left to uvicorn's "auto", so
that a missing one stops the start instead of silently serving with the pure-Python h11 parser.
``bench/bare_app.py`` serves the ingest bench's baseline through this same function.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette


def serve(app: Starlette | str, *, host: str, port: int, workers: int | None = None) -> None:
    """Run ``app`` (an ASGI app, or an import string when ``workers`` > 1) until stopped."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
