"""Africa's Talking, parsed: the answer to an SMS send, a delivery report, a USSD request.

Pure functions; every shape is the one Africa's Talking documents (docs/notifications.md cites the
sources). Nothing here trusts its input: a field missing, too long or of the wrong type is an
``InvalidCallback`` naming it, never an exception of another kind.

The send answer (``POST /version1/messaging``, HTTP 201)::

    {"SMSMessageData": {"Message": "Sent to 1/1 Total Cost: KES 0.8000",
                        "Recipients": [{"statusCode": 101, "number": "+254711XXXYYY",
                                        "status": "Success", "cost": "KES 0.8000",
                                        "messageId": "ATXid_..."}]}}

A recipient's ``statusCode`` says what became of that number: 100 Processed, 101 Sent, 102 Queued
(taken); 401 RiskHold, 402 InvalidSenderId, 405 InsufficientBalance, 407 CouldNotRoute, 502
RejectedByGateway (refused before it went out: may be tried again); 403 InvalidPhoneNumber, 404
UnsupportedNumberType, 406 UserInBlacklist, 409 DoNotDisturbRejection (refused for this number:
trying again changes nothing). 500 InternalServerError, 501 GatewayError and any code not listed
say nothing sure: the send counts as one whose answer was lost (it may have gone out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schemas.callbacks import InvalidCallback

TAKEN_CODES = frozenset({100, 101, 102})
REFUSED_CODES = frozenset({403, 404, 406, 409})  # this number cannot be sent to
NOT_SENT_CODES = frozenset({401, 402, 405, 407, 502})  # refused before it went out: may be tried again
FIELD_CHARS_MAX = 200
USSD_TEXT_CHARS_MAX = 1000
_PHONE = re.compile(r"\+?\d{9,15}")

SendVerdict = Literal["sent", "refused", "not_sent", "unknown"]


@dataclass(frozen=True)
class SendAnswer:
    verdict: SendVerdict
    status: str  # the provider's words, e.g. "101 Success"
    message_id: str | None = None
    cost: str | None = None


def verdict_of(status_code: int) -> SendVerdict:
    if status_code in TAKEN_CODES:
        return "sent"
    if status_code in REFUSED_CODES:
        return "refused"
    if status_code in NOT_SENT_CODES:
        return "not_sent"
    return "unknown"


def same_number(a: object, b: str) -> bool:
    """``+254711…`` and ``254711…`` are one number."""
    return isinstance(a, str) and a.strip().lstrip("+") == b.strip().lstrip("+")


def _text(value: object, field: str, *, required: bool = True, max_chars: int = FIELD_CHARS_MAX) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidCallback(f"missing_field:{field}")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidCallback(f"invalid_field:{field}")
    value = str(value)
    if len(value) > max_chars or not value.isprintable():  # no control characters (NUL, newlines)
        raise InvalidCallback(f"invalid_field:{field}")
    return value


def parse_send_answer(body: object, number: str) -> SendAnswer:
    """What the send answer says of ``number`` (the one recipient we sent to). An answer that does
    not name it says nothing sure: ``unknown``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("SMSMessageData"), Mapping):
        raise InvalidCallback("missing_field:SMSMessageData")
    data = body["SMSMessageData"]
    recipients = data.get("Recipients")
    if not isinstance(recipients, list):
        raise InvalidCallback("missing_field:Recipients")
    for recipient in recipients[:100]:
        if isinstance(recipient, Mapping) and same_number(recipient.get("number"), number):
            code = recipient.get("statusCode")
            if isinstance(code, bool) or not isinstance(code, int):
                raise InvalidCallback("invalid_field:statusCode")
            status = _text(recipient.get("status"), "status", required=False) or ""
            message_id = _text(recipient.get("messageId"), "messageId", required=False)
            return SendAnswer(verdict_of(code), f"{code} {status}".strip(),
                              None if message_id in (None, "None") else message_id,
                              _text(recipient.get("cost"), "cost", required=False))
    message = _text(data.get("Message"), "Message", required=False) or "no recipient"
    if not recipients:  # the whole request refused before any number (e.g. "InvalidSenderId")
        return SendAnswer("not_sent", f"no recipient: {message}"[:FIELD_CHARS_MAX])
    return SendAnswer("unknown", f"our number not in the answer: {message}"[:FIELD_CHARS_MAX])


@dataclass(frozen=True)
class DeliveryReport:
    message_id: str
    status: str  # Sent, Submitted, Buffered, Rejected, Success, Failed, AbsentSubscriber, Expired
    phone_number: str | None
    failure_reason: str | None


def parse_delivery_report(form: Mapping[str, Any]) -> DeliveryReport:
    """A delivery report (form fields ``id``, ``status``, ``phoneNumber``, ``networkCode``,
    ``failureReason``, ``retryCount``)."""
    return DeliveryReport(
        message_id=_text(form.get("id"), "id"),  # type: ignore[arg-type]
        status=_text(form.get("status"), "status", max_chars=40),  # type: ignore[arg-type]
        phone_number=_text(form.get("phoneNumber"), "phoneNumber", required=False, max_chars=20),
        failure_reason=_text(form.get("failureReason"), "failureReason", required=False),
    )


@dataclass(frozen=True)
class UssdRequest:
    session_id: str
    phone_number: str
    text: str
    service_code: str | None


def parse_ussd_request(form: Mapping[str, Any]) -> UssdRequest:
    """A USSD request (form fields ``sessionId``, ``serviceCode``, ``phoneNumber``, ``text``,
    ``networkCode``); ``text`` is empty when the session opens."""
    phone = _text(form.get("phoneNumber"), "phoneNumber", max_chars=20)
    if not _PHONE.fullmatch(phone or ""):
        raise InvalidCallback("invalid_field:phoneNumber")
    return UssdRequest(
        session_id=_text(form.get("sessionId"), "sessionId"),  # type: ignore[arg-type]
        phone_number=phone,  # type: ignore[arg-type]
        text=_text(form.get("text"), "text", required=False, max_chars=USSD_TEXT_CHARS_MAX) or "",
        service_code=_text(form.get("serviceCode"), "serviceCode", required=False, max_chars=40),
    )
