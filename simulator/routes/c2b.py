"""C2B: ``registerurl`` and ``simulate`` (v1 and v2), with validation and confirmation callbacks.

A simulated payment goes: (validation, when enabled) -> money moves -> confirmation. The
payment is recorded for Pull Transactions and Transaction Status whether or not the
confirmation reaches the client, because on M-Pesa the money has moved either way.

Non-standard extensions of ``simulate`` (absent from Daraja; a real client never sends them):
``TransID`` (10 uppercase alphanumerics, unique) and ``TransTime`` (``YYYYMMDDHHmmss`` EAT)
override the generated values, and ``FirstName`` / ``MiddleName`` / ``LastName`` override the
payer's name. ``fleetpay simulate c2b --trans-id X`` uses ``TransID``; ``TransTime`` lets a
test place a payment in the past (e.g. outside the Pull window).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.callbacks import Callback
from simulator.config import RESPONSE_TYPES
from simulator.context import SimContext
from simulator.envelopes import bad_request, internal_error
from simulator.faults import Api, Fault, Phase
from simulator.formats import hashed_msisdn, is_msisdn, masked_msisdn, parse_amount, parse_compact_time
from simulator.identifiers import (
    is_receipt_like,
    new_conversation_id,
    new_legacy_originator_conversation_id,
    new_originator_conversation_id,
)
from simulator.responding import admit, delivery_plan, finish_accepted
from simulator.results import c2b_notification
from simulator.state import C2BPayment, C2BRegistration
from simulator.validation import InvalidField, callback_url, has_filtered_word, own_short_code, text

C2B_MAX_AMOUNT = 250_000
COMMAND_TYPES = {"CustomerPayBillOnline": "Pay Bill", "CustomerBuyGoodsOnline": "Buy Goods"}


# --- RegisterURL ------------------------------------------------------------------------------
def _registration_url(body: dict[str, Any], name: str) -> str:
    url = callback_url(body, name)
    if has_filtered_word(url):
        raise InvalidField(name)
    return url


async def register_url(ctx: SimContext, request: Request, *, version: str) -> Response:
    """Store Confirmation/Validation URLs for the short code.

    ``ResponseType`` must be exactly ``Completed`` or ``Cancelled``; URLs must be http(s) and
    free of Safaricom's filtered words. Re-registering replaces the URLs (sandbox behaviour)
    unless ``allow_reregistration`` is off.
    """
    body = await admit(ctx, request, Api.REGISTER_URL)
    if isinstance(body, Response):
        return body
    try:
        short_code = own_short_code(body, ctx.config.short_code)
        response_type = text(body, "ResponseType", max_len=20)
        if response_type not in RESPONSE_TYPES:
            raise InvalidField("ResponseType")
        confirmation_url = _registration_url(body, "ConfirmationURL")
        validation_url = _registration_url(body, "ValidationURL")
    except InvalidField as exc:
        return bad_request(exc.field_name)
    registration = C2BRegistration(short_code=short_code, response_type=response_type,
                                   confirmation_url=confirmation_url, validation_url=validation_url,
                                   version=version, registered_at=ctx.now())
    if not ctx.state.register_c2b(registration, allow_replace=ctx.config.allow_reregistration):
        return internal_error(500, "Urls are already registered")
    return JSONResponse({"OriginatorCoversationID": new_originator_conversation_id(),
                         "ResponseCode": "0", "ResponseDescription": "Success"})


# --- simulate ---------------------------------------------------------------------------------
def _whole_amount(body: dict[str, Any]) -> Decimal:
    amount = parse_amount(body.get("Amount"))
    if amount is None or amount != amount.to_integral_value() or not 1 <= amount <= C2B_MAX_AMOUNT:
        raise InvalidField("Amount")
    return amount


def _trans_time(ctx: SimContext, body: dict[str, Any]) -> datetime:
    override = text(body, "TransTime", required=False, max_len=14)
    if not override:
        return ctx.now().replace(microsecond=0)  # TransTime has whole seconds
    try:
        return parse_compact_time(override)
    except ValueError:
        raise InvalidField("TransTime") from None


def _parse_simulation(ctx: SimContext, body: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a simulate request (raises InvalidField)."""
    short_code = own_short_code(body, ctx.config.short_code)
    command_id = text(body, "CommandID", max_len=40)
    if command_id not in COMMAND_TYPES:
        raise InvalidField("CommandID")
    amount = _whole_amount(body)
    msisdn = text(body, "Msisdn", max_len=12)
    if not is_msisdn(msisdn):
        raise InvalidField("Msisdn")
    paybill = command_id == "CustomerPayBillOnline"
    bill_ref = text(body, "BillRefNumber", required=paybill, max_len=20)
    trans_id = text(body, "TransID", required=False, max_len=10)
    if trans_id and not is_receipt_like(trans_id):
        raise InvalidField("TransID")
    names = {key: text(body, key, required=False, max_len=50).upper()
             for key in ("FirstName", "MiddleName", "LastName")}
    return {"short_code": short_code, "command_id": command_id, "amount": amount, "msisdn": msisdn,
            "bill_ref": bill_ref if paybill else "", "trans_id": trans_id,
            "trans_time": _trans_time(ctx, body), "names": names}


def _payer_names(ctx: SimContext, msisdn: str, overrides: dict[str, str]) -> tuple[str, str, str]:
    """Recent confirmations carry only a first name; overrides may set all three."""
    if any(overrides.values()):
        return overrides["FirstName"], overrides["MiddleName"], overrides["LastName"]
    return ctx.customer_name(msisdn).split(" ")[0], "", ""


async def _validate(ctx: SimContext, payment: C2BPayment,
                    registration: C2BRegistration) -> tuple[bool, str, str]:
    """Ask the ValidationURL. Returns (accepted, third-party id, what happened).

    A non-"0" ResultCode cancels the payment. No answer in time, a non-2xx status or a body
    without a ResultCode applies the registered ResponseType, as M-Pesa does.
    """
    attempt, answer = await ctx.callbacks.post(
        "c2b_validation", registration.validation_url, c2b_notification(payment, for_validation=True),
        payment.trans_id, timeout_s=ctx.config.validation_timeout_s)
    usable = (attempt.error is None and attempt.status_code is not None
              and 200 <= attempt.status_code < 300 and isinstance(answer, dict)
              and "ResultCode" in answer)
    if not usable:
        reason = attempt.error or f"HTTP {attempt.status_code}, no usable ResultCode"
        accepted = registration.response_type == "Completed"
        return accepted, "", f"default {registration.response_type} ({reason})"
    code = str(answer["ResultCode"]).strip()
    if code == "0":
        third_party = answer.get("ThirdPartyTransID")
        return True, "" if third_party is None else str(third_party), "accepted"
    return False, "", f"rejected {code}"


async def _settle_and_confirm(ctx: SimContext, payment: C2BPayment,
                              registration: C2BRegistration | None,
                              callback_fault: Fault | None, *, validate: bool) -> None:
    """Background part of a simulated payment: validation (if on), money, confirmation."""
    if validate and registration is not None:
        accepted, third_party, outcome = await _validate(ctx, payment, registration)
        if not accepted:
            ctx.state.cancel_c2b(payment.trans_id, validation=outcome)
            return
        payment = ctx.state.complete_c2b(payment.trans_id, third_party_trans_id=third_party,
                                         validation=outcome)
    if registration is None:
        return  # nothing registered: M-Pesa completes the payment and tells nobody
    await ctx.callbacks.deliver(Callback(
        kind="c2b_confirmation", url=registration.confirmation_url,
        body=c2b_notification(payment, for_validation=False), ref=payment.trans_id,
        plan=delivery_plan(callback_fault, ctx.config)))


async def simulate(ctx: SimContext, request: Request, *, version: str) -> Response:
    """Make a customer pay the paybill, then notify the registered URLs.

    Without validation the money moves before the synchronous answer; with validation it
    moves (or not) once the ValidationURL has answered, in the background.
    """
    body = await admit(ctx, request, Api.C2B)
    if isinstance(body, Response):
        return body
    try:
        fields = _parse_simulation(ctx, body)
    except InvalidField as exc:
        return bad_request(exc.field_name)
    state = ctx.state
    if fields["trans_id"]:
        if not state.claim_receipt(fields["trans_id"]):
            return bad_request("TransID")
        trans_id = fields["trans_id"]
    else:
        trans_id = state.mint_receipt(fields["trans_time"])
    registration = state.registration(fields["short_code"])
    msisdn = fields["msisdn"]
    hashed = registration is not None and registration.version == "v1"
    first, middle, last = _payer_names(ctx, msisdn, fields["names"])
    originator_id = (new_legacy_originator_conversation_id() if version == "v1"
                     else new_originator_conversation_id())
    payment = C2BPayment(
        trans_id=trans_id, originator_conversation_id=originator_id,
        conversation_id=new_conversation_id(ctx.now()),
        transaction_type=COMMAND_TYPES[fields["command_id"]], trans_time=fields["trans_time"],
        amount=fields["amount"], short_code=fields["short_code"], bill_ref_number=fields["bill_ref"],
        msisdn=msisdn, msisdn_sent=hashed_msisdn(msisdn) if hashed else masked_msisdn(msisdn),
        first_name=first, middle_name=middle, last_name=last,
    )
    state.add_c2b(payment)
    validate = (ctx.config.c2b_validation_enabled and registration is not None
                and bool(registration.validation_url))
    if not validate:
        payment = state.complete_c2b(trans_id, third_party_trans_id="", validation=None)
    response_fault = ctx.take_fault(Api.C2B, body, Phase.RESPONSE)
    callback_fault = ctx.take_fault(Api.C2B, body, Phase.CALLBACK)
    if version == "v1":
        answer = {"ConversationID": payment.conversation_id,
                  "OriginatorCoversationID": originator_id,
                  "ResponseDescription": "Accept the service request successfully."}
    else:
        answer = {"OriginatorCoversationID": originator_id, "ResponseCode": "0",
                  "ResponseDescription": "Accept the service request successfully."}
    return await finish_accepted(
        ctx, request, JSONResponse(answer), response_fault=response_fault,
        work=lambda: _settle_and_confirm(ctx, payment, registration, callback_fault,
                                         validate=validate))
