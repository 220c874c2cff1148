"""The ingest bench's baseline: a bare JSON endpoint, served exactly as ``fleetpay ingest`` serves
the real one (``ingest.serving.serve`` with one process: uvicorn with httptools and uvloop,
log_level "warning", no access log). It reads the request body and answers the ingest's
acknowledgement; nothing else.

    python -m bench.bare_app --port 8123
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import serve_main

ACK = {"ResultCode": 0, "ResultDesc": "Success"}


async def confirm(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(ACK)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/cb/{token}/c2b/confirm", confirm, methods=["POST"]), Route("/healthz", healthz)])


if __name__ == "__main__":
    serve_main(app)
