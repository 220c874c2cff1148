"""Africa's Talking's SMS API (``POST /version1/messaging``), and the simulator's record of it.

The request is a form: ``username``, ``to`` (comma-separated, ``+2547…``), ``message``, and
optionally ``from`` (sender ID), ``bulkSMSMode``, ``enqueue``; the app's API key comes in the
``apiKey`` header. A wrong username or key gets 401 ``The supplied authentication is invalid``; a
form without ``username``, ``to`` or ``message`` gets 400. Otherwise the answer is 201::

    {"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000",
                        "Recipients": [{"statusCode": 101, "number": "+254711XXXYYY",
                                        "status": "Success", "cost": "KES 0.8000",
                                        "messageId": "ATXid_…"}]}}

A number that is not ``+`` and 9 to 15 digits gets 403 ``InvalidPhoneNumber``. Faults (``api:
"sms"``): ``http_5xx`` and ``spike_arrest`` (nothing recorded), ``http_timeout_after_accept``
(recorded as sent, the answer held back or the connection dropped) and ``recipient_failure``
(that number's ``statusCode``, e.g. 406 UserInBlacklist; match it with ``{"to": "+2547…"}``).

``GET /sim/sms`` lists every message received (``?to=`` filters), in order, each recipient once.
"""

from __future__ import annotations

import hmac
import re
import secrets
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from simulator.auth import require_admin
from simulator.context import SimContext
from simulator.faults import Api, FaultMode, Phase
from simulator.responding import AbortedResponse, hang
from simulator.state import SmsMessage

COST_PER_SEGMENT = Decimal("0.8000")
MESSAGE_CHARS_MAX = 2000
STATUS_NAMES = {
    100: "Processed", 101: "Success", 102: "Queued", 401: "RiskHold", 402: "InvalidSenderId",
    403: "InvalidPhoneNumber", 404: "UnsupportedNumberType", 405: "InsufficientBalance", 406: "UserInBlacklist",
    407: "CouldNotRoute", 409: "DoNotDisturbRejection", 500: "InternalServerError", 501: "GatewayError",
    502: "RejectedByGateway",
}
_NUMBER = re.compile(r"\+\d{9,15}")
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)


def segments(message: str) -> int:
    """What the network charges: 160 GSM-7 characters in one SMS, 153 per part beyond; 70 / 67 in
    UCS-2 (any character outside GSM-7). Extension characters are counted once here (close enough
    for a record)."""
    gsm = all(char in _GSM7 for char in message)
    single, part = (160, 153) if gsm else (70, 67)
    return 1 if len(message) <= single else -(-len(message) // part)


async def send(ctx: SimContext, request: Request) -> Response:
    if request.method != "POST":
        return PlainTextResponse("Method Not Allowed", 405, headers={"Allow": "POST"})
    form: dict[str, Any] = dict(await request.form())
    key = request.headers.get("apikey", "")
    if not (hmac.compare_digest(key, ctx.config.sms_api_key)
            and hmac.compare_digest(str(form.get("username", "")), ctx.config.sms_username)):
        return PlainTextResponse("The supplied authentication is invalid", 401)
    for field in ("username", "to", "message"):
        if not form.get(field):
            return PlainTextResponse(f"Request is missing required form field '{field}'", 400)
    message = str(form["message"])
    if len(message) > MESSAGE_CHARS_MAX:
        return PlainTextResponse("The message is too long", 400)
    if (gateway := ctx.take_fault(Api.SMS, form, Phase.GATEWAY)) is not None:
        status = gateway.status_code or (500 if gateway.mode is FaultMode.HTTP_5XX else 429)
        return PlainTextResponse(HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error", status)
    response_fault = ctx.take_fault(Api.SMS, form, Phase.RESPONSE)
    parts = segments(message)
    recipients = []
    for number in [n.strip() for n in str(form["to"]).split(",") if n.strip()][:1000]:
        failure = ctx.take_fault(Api.SMS, {**form, "to": number}, Phase.CALLBACK)
        code = 403 if not _NUMBER.fullmatch(number) else (failure.status_code or 406) if failure else 101
        taken = code in (100, 101, 102)
        message_id = f"ATXid_{secrets.token_hex(16)}" if taken else None
        ctx.state.record_sms(SmsMessage(to=number, message=message, sender=form.get("from"), status_code=code,
                                        status=STATUS_NAMES.get(code, "Failed"), message_id=message_id,
                                        segments=parts, received_at=ctx.now()))
        recipients.append({"statusCode": code, "number": number, "status": STATUS_NAMES.get(code, "Failed"),
                           "cost": f"KES {COST_PER_SEGMENT * parts}" if taken else "0",
                           "messageId": message_id or "None"})
    sent = sum(1 for r in recipients if r["statusCode"] in (100, 101, 102))
    body = {"SMSMessageData": {
        "Message": f"Sent to {sent}/{len(recipients)} Total Cost: KES {COST_PER_SEGMENT * parts * sent}",
        "Recipients": recipients}}
    if response_fault is not None and response_fault.mode is FaultMode.HTTP_TIMEOUT_AFTER_ACCEPT:
        if response_fault.close_connection:
            await hang(request, response_fault.hang_s or 0.0)
            return AbortedResponse()
        await hang(request, ctx.config.hang_s if response_fault.hang_s is None else response_fault.hang_s)
    return JSONResponse(body, status_code=201)


async def messages(ctx: SimContext, request: Request) -> Response:
    """Every message received, each recipient once, in order (``?to=+2547…`` for one number)."""
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    wanted = request.query_params.get("to")
    found = [m.to_json() for m in ctx.state.sms_messages() if wanted is None or m.to == wanted]
    return JSONResponse({"messages": found, "count": len(found)})
