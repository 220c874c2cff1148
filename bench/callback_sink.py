"""The payouts bench's baseline receiver: answers every callback like the ingest does (200,
``ResultCode 0``) and only notes when it arrived. ``GET /stats`` gives the count and the arrival
times; ``POST /reset`` forgets them. Served like the ingest (uvicorn, one process).

    python -m bench.callback_sink --port 8124
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import serve_main

ACK = {"ResultCode": 0, "ResultDesc": "Success"}
arrivals: list[float] = []


async def callback(request: Request) -> JSONResponse:
    await request.body()
    arrivals.append(time.time())
    return JSONResponse(ACK)


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"count": len(arrivals), "arrivals": arrivals if request.query_params.get("all") else []})


async def reset(request: Request) -> JSONResponse:
    arrivals.clear()
    return JSONResponse({"reset": True})


app = Starlette(routes=[
    Route("/cb/{token}/{rest:path}", callback, methods=["POST"]),
    Route("/stats", stats),
    Route("/reset", reset, methods=["POST"]),
    Route("/healthz", lambda request: JSONResponse({"status": "ok"})),
])


if __name__ == "__main__":
    serve_main(app)
