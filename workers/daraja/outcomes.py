"""What a Daraja answer means for money (pure): the retry policy, written down once.

| what happened | outcome | what fleetpay does |
|---|---|---|
| connect error, DNS failure, connect/pool timeout | ``NOT_SENT`` | retried at once with backoff (tenacity): the request never left |
| ``401.003.01`` (the app has no such product: one app's token on another product's API) | ``REJECTED`` | a configuration error: fail at once, the code in the payout's record |
| ``404.001.03`` / ``401.002.01`` / ``400.003.01`` / ``404.001.04`` (invalid token or header), HTTP 401 | ``NOT_SENT`` | refresh the shared token, retry |
| ``500.003.02`` spike arrest, ``500.003.03`` quota | ``NOT_SENT`` | retried with backoff: the gateway refused it before processing |
| HTTP 200, ``ResponseCode "0"`` | ``ACCEPTED`` | payout ``submitted``; the result comes by callback |
| ``500.002.1001`` Duplicate OriginatorConversationID | ``ACCEPTED`` | it was submitted before: wait for the result / status |
| other 4xx with an error code, or 200 with ``ResponseCode ≠ 0`` | ``REJECTED`` | payout ``failed``; the money returns to ``payable`` |
| read timeout, connection reset after sending, other 5xx | ``AMBIGUOUS`` | payout ``unknown``: only a Transaction Status query may decide; never a blind resend |

``NOT_SENT`` that is still failing after the retries sends the payout back to ``pending``: nothing
left this process, so the payout sweep sends it again later (with the same OriginatorConversationID).
A ``REJECTED`` answer to a *re-send* (an attempt after the first) is taken as ``AMBIGUOUS`` by
``workers.send_payout``: the gateway refuses some requests before its duplicate check, so the
refusal says nothing of the first attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

INVALID_TOKEN_CODES = frozenset({"404.001.03", "401.002.01", "400.003.01", "404.001.04"})
# The app is not subscribed to the API's product (docs/daraja.md §9): no fresh token can help.
NO_PRODUCT_CODE = "401.003.01"
THROTTLED_CODES = frozenset({"500.003.02", "500.003.03"})
DUPLICATE_ORIGINATOR_CODE = "500.002.1001"


class Outcome(StrEnum):
    NOT_SENT = "not_sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    code: str | None = None
    description: str | None = None
    conversation_id: str | None = None
    originator_conversation_id: str | None = None
    invalid_token: bool = False


def classify(status_code: int, body: Any) -> Answer:
    """Classify a synchronous Daraja answer (HTTP status and decoded JSON, or None)."""
    body = body if isinstance(body, dict) else {}
    error_code = str(body.get("errorCode") or "") or None
    description = str(body.get("errorMessage") or body.get("ResponseDescription") or "") or None
    if error_code == NO_PRODUCT_CODE:
        return Answer(Outcome.REJECTED, error_code, description)
    if status_code == 401 or error_code in INVALID_TOKEN_CODES:
        return Answer(Outcome.NOT_SENT, error_code, description, invalid_token=True)
    if error_code in THROTTLED_CODES:
        return Answer(Outcome.NOT_SENT, error_code, description)
    if error_code == DUPLICATE_ORIGINATOR_CODE:
        return Answer(Outcome.ACCEPTED, error_code, description)
    if status_code == 200 and "ResponseCode" in body:
        code = str(body["ResponseCode"])
        return Answer(
            Outcome.ACCEPTED if code == "0" else Outcome.REJECTED,
            code,
            description,
            conversation_id=body.get("ConversationID"),
            originator_conversation_id=body.get("OriginatorConversationID"),
        )
    if 400 <= status_code < 500 and error_code:
        return Answer(Outcome.REJECTED, error_code, description)
    return Answer(Outcome.AMBIGUOUS, error_code or str(status_code), description)
