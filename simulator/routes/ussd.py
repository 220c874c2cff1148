"""A USSD session, played as Africa's Talking plays it to the service's callback URL.

``POST /sim/ussd`` with ``{"url": "<the USSD callback URL>", "msisdn": "254711000001",
"input": "1*2", "service_code": "*384*1234#"}`` dials: it posts the form Africa's Talking posts
(``sessionId``, ``serviceCode``, ``phoneNumber`` as ``+254…``, ``networkCode``, ``text``) once for
the opening screen (``text`` empty) and once more for each choice, ``text`` holding every choice so
far joined by ``*``, and stops at the first answer that starts ``END`` (or is not ``CON``: the
gateway then ends the session). It answers ``{"session_id": …, "screens": [{"text": …,
"status": …, "response": …, "elapsed_ms": …}]}``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.auth import require_admin
from simulator.context import SimContext

SAFARICOM_NETWORK_CODE = "63902"
STEPS_MAX = 20
TIMEOUT_S = 10.0


async def session(ctx: SimContext, request: Request) -> Response:
    if (refusal := require_admin(ctx, request)) is not None:
        return refusal
    try:
        spec: Any = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be JSON"}, 400)
    if not isinstance(spec, dict) or not isinstance(spec.get("url"), str) or not isinstance(spec.get("msisdn"), str):
        return JSONResponse({"error": "url and msisdn are required strings"}, 400)
    choices = [c for c in str(spec.get("input") or "").split("*")][:STEPS_MAX] if spec.get("input") else []
    session_id = f"ATUid_{secrets.token_hex(16)}"
    phone = spec["msisdn"] if spec["msisdn"].startswith("+") else f"+{spec['msisdn']}"
    screens = []
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for step in range(len(choices) + 1):
            text = "*".join(choices[:step])
            form = {"sessionId": session_id, "serviceCode": str(spec.get("service_code") or "*384*1234#"),
                    "phoneNumber": phone, "networkCode": SAFARICOM_NETWORK_CODE, "text": text}
            started = time.perf_counter()
            try:
                answer = await client.post(spec["url"], data=form)
            except httpx.HTTPError as error:
                screens.append({"text": text, "status": None, "response": f"{type(error).__name__}: {error}"})
                break
            screens.append({"text": text, "status": answer.status_code, "response": answer.text,
                            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1)})
            if answer.status_code != 200 or not answer.text.startswith("CON "):
                break
    return JSONResponse({"session_id": session_id, "screens": screens})
