"""The simulator's own routes (``/sim/...``, ``/healthz``): not Daraja, for tests and operators.

They expose the simulator's record — the source of truth a test asserts against — and let a
test queue faults, replay callbacks and start over. Open by default; set
``SimulatorConfig.admin_token`` to require ``Authorization: Bearer <admin_token>``
(``/healthz`` and ``/sim/cert.pem`` stay open: clients need the certificate).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.auth import require_admin
from simulator.context import SimContext
from simulator.faults import FaultSpecError, parse_fault
from simulator.formats import money


def _error(message: str, status_code: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


async def healthz(ctx: SimContext, request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def certificate(ctx: SimContext, request: Request) -> Response:
    """The certificate to encrypt SecurityCredential with (the simulator's "M-Pesa public key")."""
    return Response(ctx.credentials.certificate_pem, media_type="application/x-pem-file")


async def queue_faults(ctx: SimContext, request: Request) -> Response:
    """Body: one fault object or a list of them. All are checked before any is queued."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    try:
        data: Any = await request.json()
    except ValueError:
        return _error("body must be JSON")
    specs = data if isinstance(data, list) else [data]
    try:
        faults = [parse_fault(spec) for spec in specs]
    except FaultSpecError as exc:
        return _error(str(exc))
    queued = [ctx.state.queue_fault(fault).to_json() for fault in faults]
    return JSONResponse({"queued": queued}, status_code=201)


async def list_faults(ctx: SimContext, request: Request) -> Response:
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"faults": [f.to_json() for f in ctx.state.pending_faults()]})


async def clear_faults(ctx: SimContext, request: Request) -> Response:
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"cleared": ctx.state.clear_faults()})


async def payments(ctx: SimContext, request: Request) -> Response:
    """Every B2C payment actually made. ``counts`` > 1 for an ID means it was paid twice."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    wanted = request.query_params.get("originator_conversation_id")
    made = [p for p in ctx.state.payments()
            if wanted is None or p.originator_conversation_id == wanted]
    counts = Counter(p.originator_conversation_id for p in made)
    return JSONResponse({
        "payments": [p.to_json() for p in made],
        "counts": dict(counts),
        "count": len(made),
        "total_amount": sum(int(p.amount) for p in made),
        "duplicate_attempts": ctx.state.duplicate_attempts(),
    })


async def b2c_requests(ctx: SimContext, request: Request) -> Response:
    """Every accepted B2C request and its outcome (paid or declined, with the ResultCode)."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"requests": [r.to_json() for r in ctx.state.b2c_requests()]})


async def c2b_payments(ctx: SimContext, request: Request) -> Response:
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"payments": [p.to_json() for p in ctx.state.c2b_payments()],
                         "registrations": [r.to_json() for r in ctx.state.registrations()]})


async def stk_requests(ctx: SimContext, request: Request) -> Response:
    """Every accepted M-Pesa Express push and its outcome (paid with a receipt, or the code)."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"requests": [r.to_json() for r in ctx.state.stk_requests()]})


async def callbacks(ctx: SimContext, request: Request) -> Response:
    """Every callback attempt; filter with ``?kind=b2c_result`` and/or ``?ref=<OCID or TransID>``."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    kind = request.query_params.get("kind")
    ref = request.query_params.get("ref")
    attempts = [a for a in ctx.state.callbacks(kind) if ref is None or a.ref == ref]
    return JSONResponse({"callbacks": [a.to_json() for a in attempts],
                         "pending": ctx.callbacks.pending})


async def replay_callback(ctx: SimContext, request: Request) -> Response:
    """Post a recorded callback again, unchanged: a late duplicate, on demand."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    try:
        attempt_id = int(request.path_params["attempt_id"])
    except ValueError:
        return _error("callback id must be an integer")
    original = ctx.state.callback(attempt_id)
    if original is None:
        return _error("no such callback", 404)
    attempt, _ = await ctx.callbacks.post(original.kind, original.url, original.body, original.ref,
                                          copy=original.copy + 1)
    return JSONResponse({"callback": attempt.to_json()})


async def balances(ctx: SimContext, request: Request) -> Response:
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    current = ctx.state.balances()
    return JSONResponse({"utility": money(current.utility), "working": money(current.working),
                         "charges_paid": money(current.charges_paid)})


async def expire_tokens(ctx: SimContext, request: Request) -> Response:
    """Invalidate every issued token now (what a mid-flight expiry looks like to a client)."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    return JSONResponse({"expired": ctx.state.expire_tokens()})


async def reset(ctx: SimContext, request: Request) -> Response:
    """Cancel pending callbacks and forget everything (tokens too).

    The certificate stays, and configured C2B URLs are registered again.
    """
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    await ctx.callbacks.cancel_all()
    ctx.state.reset()
    ctx.apply_preregistration()
    return JSONResponse({"reset": True})

