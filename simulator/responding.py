"""How an API call ends: refused at the gateway, or accepted with its result work scheduled.

This is where the gateway- and response-phase faults act, the same way for every asynchronous
API, so B2C, C2B, Transaction Status and Account Balance cannot drift apart in how they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from simulator.auth import require_access_token
from simulator.callbacks import Callback, DeliveryPlan
from simulator.config import SimulatorConfig
from simulator.context import SimContext
from simulator.envelopes import internal_error, invalid_payload, spike_arrest
from simulator.faults import Api, Fault, FaultMode, Phase
from simulator.validation import read_json_object

_DISCONNECT_POLL_S = 0.05


class AbortedResponse(Response):
    """Starts a 200 response, sends part of the body, and drops the connection.

    The client sees a reset / incomplete read after the request was accepted: the classic
    ambiguous outcome ("did it pay?").
    """

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"512")]})
        await send({"type": "http.response.body", "body": b'{"ConversationID": "AG_', "more_body": True})
        # Returning without finishing the body makes the server close the connection.


def gateway_rejection(fault: Fault | None) -> Response | None:
    """The response of a gateway-phase fault (nothing was accepted), or None."""
    if fault is None:
        return None
    if fault.mode is FaultMode.HTTP_5XX:
        return internal_error(fault.status_code or 500)
    if fault.mode is FaultMode.SPIKE_ARREST:
        return spike_arrest(fault.status_code or 500)
    return None


async def admit(ctx: SimContext, request: Request, api: Api) -> dict[str, Any] | Response:
    """The gateway's checks before any POST API runs: live token of an app subscribed to
    ``api``'s product, JSON body, gateway faults.

    Returns the body, or the Response that refuses the call. A gateway fault refuses the call
    before anything is recorded, so the same request may be retried unchanged.
    """
    refusal = require_access_token(ctx, request, api)
    if refusal is not None:
        return refusal
    body = await read_json_object(request)
    if body is None:
        return invalid_payload()
    rejection = gateway_rejection(ctx.take_fault(api, body, Phase.GATEWAY))
    return body if rejection is None else rejection


def delivery_plan(fault: Fault | None, config: SimulatorConfig,
                  base_delay_ms: int | None = None) -> DeliveryPlan:
    """The DeliveryPlan of a result callback under a callback-phase fault (or none)."""
    delay = config.result_delay_ms if base_delay_ms is None else base_delay_ms
    if fault is None:
        return DeliveryPlan(delay_ms=delay)
    if fault.mode is FaultMode.DUPLICATE_RESULT:
        return DeliveryPlan(delay_ms=delay, copies=fault.copies or 2, concurrent=fault.concurrent,
                            gap_ms=fault.delay_ms or 0)
    if fault.mode is FaultMode.DROP_CALLBACK:
        return DeliveryPlan(delay_ms=delay, drop=True)
    if fault.mode is FaultMode.SLOW_CALLBACK:
        return DeliveryPlan(delay_ms=config.slow_callback_delay_ms if fault.delay_ms is None
                            else fault.delay_ms)
    return DeliveryPlan(delay_ms=delay)


def result_callbacks(config: SimulatorConfig, *, kind: str, ref: str, result_url: str,
                     result: dict[str, Any], queue_timeout_url: str,
                     queue_timeout_notice: dict[str, Any],
                     fault: Fault | None) -> list[Callback]:
    """The callbacks ending an org API call: the result, preceded by a QueueTimeOutURL
    notice under ``queue_timeout`` (the real result follows ``delay_ms`` later)."""
    if fault is not None and fault.mode is FaultMode.QUEUE_TIMEOUT:
        later = config.queue_timeout_result_delay_ms if fault.delay_ms is None else fault.delay_ms
        return [Callback(f"{kind}_queue_timeout", queue_timeout_url, queue_timeout_notice, ref,
                         DeliveryPlan(delay_ms=config.result_delay_ms)),
                Callback(f"{kind}_result", result_url, result, ref, DeliveryPlan(delay_ms=later))]
    return [Callback(f"{kind}_result", result_url, result, ref, delivery_plan(fault, config))]


async def hang(request: Request, seconds: float) -> None:
    """Hold the response back, but stop as soon as the client has given up waiting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(_DISCONNECT_POLL_S, max(0.0, deadline - loop.time())))


async def finish_accepted(ctx: SimContext, request: Request, response: Response, *,
                          response_fault: Fault | None,
                          work: Callable[[], Coroutine[Any, Any, None]]) -> Response:
    """Run the request's background work (its callbacks) and return the synchronous answer.

    * ``result_before_response``: the work (the result callback) completes first, then the
      HTTP answer is sent — the client's result handler runs before it knows the request was
      accepted.
    * ``http_timeout_after_accept``: the work runs as usual (money has moved already) but the
      answer is held back for ``hang_s`` (default ``config.hang_s``), or the connection is
      dropped when ``close_connection`` is set (after ``hang_s``, default 0).
    """
    if response_fault is not None and response_fault.mode is FaultMode.RESULT_BEFORE_RESPONSE:
        await work()
        return response
    ctx.callbacks.spawn(work())
    if response_fault is not None and response_fault.mode is FaultMode.HTTP_TIMEOUT_AFTER_ACCEPT:
        if response_fault.close_connection:
            await hang(request, response_fault.hang_s or 0.0)
            return AbortedResponse()
        await hang(request, ctx.config.hang_s if response_fault.hang_s is None
                    else response_fault.hang_s)
    return response
