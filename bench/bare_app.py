"""The ingest bench's baseline: a bare JSON endpoint, served exactly as ``fleetpay ingest`` serves
the real one (uvicorn, one process, log_level "warning", no access log, same loop and HTTP
implementation). It reads the request body and answers the ingest's acknowledgement; nothing else.

    python -m bench.bare_app --port 8123
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ACK = {"ResultCode": 0, "ResultDesc": "Success"}


async def confirm(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse(ACK)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/cb/{token}/c2b/confirm", confirm, methods=["POST"]), Route("/healthz", healthz)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same call as fleetpay.cli.services.ingest with one worker.
    uvicorn.run(app, host=args.host, port=args.port, workers=None, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
