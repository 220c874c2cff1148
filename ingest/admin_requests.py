"""Money requests over the ``/admin`` API: the console's four eyes, for scripts and other tools.

| route | body | answer |
|---|---|---|
| ``GET /admin/requests`` | | 200 ``{"requests": [...]}``: those waiting for a second person |
| ``POST /admin/requests`` | ``{"kind", "params", "reason"}`` (``schemas.money_requests``) | 201 the request (``state`` ``pending``; ``done`` when four eyes are off) |
| ``POST /admin/requests/{id}/approve`` | | 200 the request, run (``done`` or ``failed``, with ``outcome``) |
| ``POST /admin/requests/{id}/reject`` | ``{"note"?}`` | 200 the request, ``rejected`` |

The caller is the user whose token it is: an operator asks, an approver (not the one who asked)
decides, exactly as in the console, through the same ``money.requests`` functions. A request that
cannot be made or decided is 409 ``refused`` with the reason; a body we do not accept is 400
``bad_request``. The payouts of a request that ran go out with the next payout sweep
(``FLEETPAY_SCHEDULE_SWEEP_S``). The shared ``FLEETPAY_ADMIN_TOKEN`` is refused here (403): money moved by hand is
someone's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.admin import AdminApi, BadRequest, problem
from money import requests as money_requests
from schemas.money_requests import InvalidRequest, parse_money_request
from schemas.parsing import business_date

REJECT_NOTE_MAX_CHARS = 500


def document(request: money_requests.Decided) -> dict[str, Any]:
    return {"id": request.id, "kind": request.kind, "what": money_requests.describe(request), "state": request.state,
            "params": request.params, "reason": request.reason, "requested_by": request.requested_by,
            "decided_by": request.decided_by, "outcome": request.outcome}


def request_routes(api: AdminApi) -> list[Route]:
    settings = api.settings

    def today() -> date:
        return business_date(datetime.now(ZoneInfo(settings.timezone)), close_time=settings.close_time, tz=settings.timezone)

    def asker(request: Request) -> money_requests.Asker:
        return money_requests.Asker(request.state.caller.username, request.state.caller.role)

    async def run(work: Callable[[], money_requests.Decided], status_code: int) -> Response:
        try:
            done = await anyio.to_thread.run_sync(work)
        except money_requests.RequestRefused as refused:
            return problem(409, "refused", str(refused))
        except SQLAlchemyError as error:
            return problem(503, "database_unavailable", f"PostgreSQL is not answering ({error.__class__.__name__})")
        # The payouts of a request that ran are committed: the payout sweep sends them (the ingest
        # enqueues nothing but callbacks).
        return JSONResponse(document(done), status_code)

    async def listed(request: Request) -> Response:
        def work() -> Response:
            with api.sessions() as session:
                return JSONResponse({"requests": [document(money_requests.Decided.of(r)) for r in money_requests.pending(session)]})

        try:
            return await anyio.to_thread.run_sync(work)
        except SQLAlchemyError as error:
            return problem(503, "database_unavailable", f"PostgreSQL is not answering ({error.__class__.__name__})")

    async def ask(request: Request) -> Response:
        try:
            asked = parse_money_request(await api.body(request, frozenset({"kind", "params", "reason"})))
        except InvalidRequest as error:
            raise BadRequest(str(error)) from error
        return await run(lambda: money_requests.submit(api.sessions, asked.kind, asked.params, asker=asker(request),
                                                       reason=asked.reason, settings=settings, business_date=today()), 201)

    def decision(approve_it: bool) -> Callable[[Request], Any]:
        async def decide(request: Request) -> Response:
            raw = request.path_params["request_id"]
            if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
                raise BadRequest("a request id is a whole number")
            body = await api.body(request, frozenset() if approve_it else frozenset({"note"}), empty_ok=True)
            note = body.get("note", "")
            if not isinstance(note, str) or len(note) > REJECT_NOTE_MAX_CHARS:
                raise BadRequest(f"note is a string of at most {REJECT_NOTE_MAX_CHARS} characters")
            return await run(lambda: money_requests.settle(api.sessions, int(raw), approver=asker(request),
                                                           approve_it=approve_it, settings=settings,
                                                           business_date=today(), note=note), 200)

        return decide

    return [
        Route("/admin/requests", api.endpoint(listed), methods=["GET"]),
        Route("/admin/requests", api.endpoint(ask, role="operator", shared=False), methods=["POST"]),
        Route("/admin/requests/{request_id}/approve", api.endpoint(decision(True), role="approver", shared=False),
              methods=["POST"]),
        Route("/admin/requests/{request_id}/reject", api.endpoint(decision(False), role="approver", shared=False),
              methods=["POST"]),
    ]
