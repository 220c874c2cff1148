"""The end-to-end bench's peer: a synchronous webhook, the design fleetpay's queue replaces.

Each request is applied before it is answered: its body is stored as an inbox row, then applied
with fleetpay's own one-row path (``money.callbacks.apply_callback``: the same rules, locks and
ledger), in the request, each in its own transaction, on Starlette's thread pool; the answer is
the ingest's acknowledgement. Served exactly as ``fleetpay ingest`` serves the real ingest
(``ingest.serving.serve``: one process, uvicorn with httptools and uvloop). Settings come from
the environment, as the workers' do (instant payouts on: payouts are reserved, and, with no
worker, not sent).

    python -m bench.webhook_app --port 8123
"""

from __future__ import annotations

import json

from sqlalchemy.dialects.postgresql import insert
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.bare_app import ACK, healthz
from bench.common import serve_main
from db.engine import make_engine, make_sessionmaker
from db.models import Inbox
from fleetpay.settings import get_settings
from money.callbacks import apply_callback

settings = get_settings()
sessions = make_sessionmaker(make_engine(settings.require_database_url(), pool_size=settings.database_pool_size))
STORE = insert(Inbox).on_conflict_do_nothing(index_elements=["kind", "external_id"]).returning(Inbox.id)


def store_and_apply(body: bytes) -> None:
    trans_id = str(json.loads(body)["TransID"])
    with sessions.begin() as session:
        inbox_id = session.execute(STORE, {"kind": "c2b_confirmation", "external_id": trans_id, "body": body.decode(),
                                           "source_ip": "127.0.0.1"}).scalar_one_or_none()
    if inbox_id is not None:
        apply_callback(sessions, inbox_id, settings)


async def confirm(request: Request) -> JSONResponse:
    await run_in_threadpool(store_and_apply, await request.body())
    return JSONResponse(ACK)


app = Starlette(routes=[Route("/cb/{token}/c2b/confirm", confirm, methods=["POST"]), Route("/healthz", healthz)])


if __name__ == "__main__":
    serve_main(app)
