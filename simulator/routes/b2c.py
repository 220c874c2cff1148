"""B2C ``paymentrequest`` (v3 with the client's OriginatorConversationID, v1 without).

The simulator settles a B2C request *at acceptance*: by the time the synchronous answer leaves,
the payment is either made (and in ``/sim/payments``) or declined. Only the result callback is
delayed (``result_delay_ms``). So Transaction Status never sees a half-finished payout, and
"the HTTP call timed out" always means "it may well have paid".

Malformed requests get ``400.002.02``; a repeated OriginatorConversationID gets ``500.002.1001``.
Well-formed requests that M-Pesa would refuse are accepted and fail in the result callback:
2001 (unknown initiator, credential not encrypted with ``/sim/cert.pem`` or wrong password,
PartyA not our short code), 2 / 3 (amount under / over the limits), 2040 (recipient in
``unregistered_msisdns``), 1 (Utility account cannot cover it).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.callbacks import Callback
from simulator.context import SimContext
from simulator.envelopes import bad_request, duplicate_originator_id
from simulator.faults import Api, Fault, FaultMode, Phase
from simulator.formats import is_msisdn, parse_amount
from simulator.identifiers import (
    new_conversation_id,
    new_legacy_originator_conversation_id,
    zero_receipt,
)
from simulator.responding import admit, finish_accepted, result_callbacks
from simulator.results import b2c_failure, b2c_success, describe, queue_timeout
from simulator.state import B2CPayment, B2CRequest
from simulator.validation import InvalidField, callback_url, text

COMMAND_IDS = ("SalaryPayment", "BusinessPayment", "PromotionPayment")
ACCEPTED_DESC = "Accept the service request successfully."


def _parse(body: dict[str, Any], *, version: str) -> dict[str, Any]:
    """The checked fields of a payment request (raises InvalidField for malformed ones)."""
    fields: dict[str, Any] = {}
    if version == "v3":
        fields["originator_id"] = text(body, "OriginatorConversationID", max_len=128)
    fields["initiator"] = text(body, "InitiatorName", max_len=100)
    fields["credential"] = text(body, "SecurityCredential", max_len=8192)
    fields["command_id"] = text(body, "CommandID", max_len=40)
    if fields["command_id"] not in COMMAND_IDS:
        raise InvalidField("CommandID")
    amount = parse_amount(body.get("Amount"))
    if amount is None or amount < 0 or amount != amount.to_integral_value():
        raise InvalidField("Amount")  # B2C pays whole shillings only
    fields["amount"] = amount
    fields["party_a"] = text(body, "PartyA", max_len=10)
    if not fields["party_a"].isdigit():
        raise InvalidField("PartyA")
    fields["party_b"] = text(body, "PartyB", max_len=12)
    if not is_msisdn(fields["party_b"]):
        raise InvalidField("PartyB")
    fields["remarks"] = text(body, "Remarks", min_len=2, max_len=100)
    fields["queue_timeout_url"] = callback_url(body, "QueueTimeOutURL")
    fields["result_url"] = callback_url(body, "ResultURL")
    fields["occasion"] = text(body, "Occassion", required=False, max_len=100, aliases=("Occasion",))
    return fields


def _natural_outcome(ctx: SimContext, fields: dict[str, Any]) -> int:
    """The ResultCode M-Pesa would reach for this request, before looking at the balance."""
    config = ctx.config
    amount: Decimal = fields["amount"]
    if (not ctx.initiator_valid(fields["initiator"], fields["credential"])
            or fields["party_a"] != config.b2c_party):
        return 2001
    if amount < config.b2c_min_amount:
        return 2
    if amount > config.b2c_max_amount:
        return 3
    if fields["party_b"] in config.unregistered_msisdns:
        return 2040
    return 0


def _settle(ctx: SimContext, fields: dict[str, Any], originator_id: str, conversation_id: str,
            version: str, callback_fault: Fault | None) -> tuple[B2CRequest, B2CPayment | None]:
    """Decide the outcome and, on success, move the money. Recorded before anything is sent."""
    now = ctx.now()
    code: int | str = _natural_outcome(ctx, fields)
    desc = describe(code)
    if callback_fault is not None and callback_fault.mode is FaultMode.RESULT_FAILURE:
        code = callback_fault.result_code if callback_fault.result_code is not None else 1
        desc = callback_fault.result_desc or describe(code)
    payment = None
    if code == 0:
        payment = ctx.state.pay_b2c(
            originator_conversation_id=originator_id, conversation_id=conversation_id,
            amount=fields["amount"], charge=ctx.config.b2c_charge, party_b=fields["party_b"],
            receiver_name=ctx.customer_name(fields["party_b"]), command_id=fields["command_id"],
            remarks=fields["remarks"], occasion=fields["occasion"], made_at=now)
        if payment is None:
            code, desc = 1, describe(1)
    request = B2CRequest(
        originator_conversation_id=originator_id, conversation_id=conversation_id, version=version,
        received_at=now, command_id=fields["command_id"], amount=fields["amount"],
        party_b=fields["party_b"], remarks=fields["remarks"], occasion=fields["occasion"],
        status="completed" if payment else "failed", result_code=code, result_desc=desc,
        # A failed result still carries a TransactionID (samples/b2c_result_failure.json).
        transaction_id=payment.receipt if payment else ctx.state.mint_receipt(now),
        receipt=payment.receipt if payment else None,
    )
    ctx.state.record_b2c_request(request)
    return request, payment


def _callbacks(ctx: SimContext, fields: dict[str, Any], request: B2CRequest,
               payment: B2CPayment | None, callback_fault: Fault | None) -> list[Callback]:
    """The result callback, preceded by a QueueTimeOutURL notice under ``queue_timeout``."""
    notice = queue_timeout(originator_conversation_id=request.originator_conversation_id,
                           conversation_id=request.conversation_id,
                           transaction_id=zero_receipt(request.received_at))
    return result_callbacks(ctx.config, kind="b2c", ref=request.originator_conversation_id,
                            result_url=fields["result_url"],
                            result=b2c_success(payment) if payment else b2c_failure(request),
                            queue_timeout_url=fields["queue_timeout_url"],
                            queue_timeout_notice=notice, fault=callback_fault)


async def payment_request(ctx: SimContext, request: Request, *, version: str) -> Response:
    """Accept (or refuse) a B2C payment and schedule its result callback."""
    body = await admit(ctx, request, Api.B2C)
    if isinstance(body, Response):
        return body
    try:
        fields = _parse(body, version=version)
    except InvalidField as exc:
        return bad_request(exc.field_name)
    originator_id = fields.get("originator_id") or new_legacy_originator_conversation_id()
    if not ctx.state.claim_originator_id(
            originator_id, detect_duplicates=ctx.config.detect_duplicate_originator_ids):
        return duplicate_originator_id()
    conversation_id = new_conversation_id(ctx.now())
    response_fault = ctx.take_fault(Api.B2C, body, Phase.RESPONSE)
    callback_fault = ctx.take_fault(Api.B2C, body, Phase.CALLBACK)
    record, payment = _settle(ctx, fields, originator_id, conversation_id, version, callback_fault)
    callbacks = _callbacks(ctx, fields, record, payment, callback_fault)
    answer = JSONResponse({"ConversationID": conversation_id,
                           "OriginatorConversationID": originator_id,
                           "ResponseCode": "0", "ResponseDescription": ACCEPTED_DESC})
    return await finish_accepted(ctx, request, answer, response_fault=response_fault,
                                 work=lambda: ctx.callbacks.deliver_in_order(callbacks))
