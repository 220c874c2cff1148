"""M-Pesa Express (Lipa na M-Pesa Online, "STK push"): ``stkpush/v1/processrequest`` and
``stkpushquery/v1/query`` (docs/daraja.md §3, §9.2).

A push is settled at acceptance, like B2C: the simulated customer answers the prompt at once, so
by the time the synchronous answer leaves, the payment is made (a C2B payment to the short code,
in ``/sim/c2b``, Pull Transactions and Transaction Status) or has failed. Then, after
``result_delay_ms``:

* the STK callback goes to ``CallBackURL`` (samples/stk_callback_*.json);
* for ``CustomerPayBillOnline`` that was paid, *also* the C2B confirmation of the same receipt
  goes to the registered ConfirmationURL, with ``BillRefNumber = AccountReference``, as Daraja
  does for a paybill (docs/daraja.md §8.3). Buy Goods pushes send no confirmation here, and the
  ValidationURL is never asked about an STK payment (simulator choices, §9.2).

STK query answers ``500.001.1001 The transaction is being processed`` until ``result_delay_ms``
has passed, then the outcome (``ResultCode`` as a string). The query reveals the outcome even
when the callback was dropped or is slow: that is what it is for.

Synchronous refusals: ``400.002.02`` for malformed fields; ``500.001.1001 Merchant does not
exist`` for a BusinessShortCode other than ours; ``500.001.1001 Wrong credentials`` when
``Password`` is not ``base64(BusinessShortCode + passkey + Timestamp)``.

Well-formed pushes that M-Pesa would fail end in the callback: ``3`` (over KES 250,000),
``2028`` (a paybill push whose PartyB is not the BusinessShortCode), ``1037`` (PhoneNumber in
``unregistered_msisdns``: nobody to prompt), or whatever ``result_failure`` (api ``express``)
injects, ``1032`` (cancelled by the customer) by default.

Faults (api ``express``): ``http_5xx``, ``spike_arrest``, ``http_timeout_after_accept``,
``result_before_response``, ``result_failure``, ``duplicate_result``, ``drop_callback``,
``slow_callback`` (not ``queue_timeout``: STK has no QueueTimeOutURL). The paybill confirmation
takes the ``c2b`` callback faults (``drop_callback`` etc.), matched against the STK body. STK
query (api ``express_query``) takes the gateway faults.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.auth import calling_app
from simulator.callbacks import Callback
from simulator.context import SimContext
from simulator.envelopes import bad_request, merchant_error
from simulator.faults import Api, Fault, FaultMode, Phase
from simulator.formats import hashed_msisdn, is_msisdn, masked_msisdn, parse_amount, parse_compact_time
from simulator.identifiers import (
    new_conversation_id,
    new_merchant_request_id,
    new_originator_conversation_id,
)
from simulator.responding import admit, delivery_plan, finish_accepted
from simulator.results import c2b_notification, describe_stk, stk_callback, stk_query_result
from simulator.state import C2BPayment, STKRequest
from simulator.validation import InvalidField, callback_url, text

TRANSACTION_TYPES = {"CustomerPayBillOnline": "Pay Bill", "CustomerBuyGoodsOnline": "Buy Goods"}
STK_MAX_AMOUNT = 250_000
ACCEPTED_DESC = "Success. Request accepted for processing"
#: ``result_failure`` without a code: the customer cancelled the prompt.
DEFAULT_FAILURE_CODE = 1032
BEING_PROCESSED = "The transaction is being processed"


def stk_password(short_code: str, passkey: str, timestamp: str) -> str:
    """``base64(BusinessShortCode + passkey + Timestamp)``, as the client must compute it."""
    return base64.b64encode(f"{short_code}{passkey}{timestamp}".encode()).decode("ascii")


# --- the fields both APIs share ---------------------------------------------------------------
def _credentials(body: dict[str, Any]) -> tuple[str, str, str]:
    """``(BusinessShortCode, Password, Timestamp)``, checked for shape (raises InvalidField)."""
    short_code = text(body, "BusinessShortCode", max_len=10)
    if not short_code.isdigit():
        raise InvalidField("BusinessShortCode")
    password = text(body, "Password", max_len=1024)
    timestamp = text(body, "Timestamp", max_len=14)
    try:
        parse_compact_time(timestamp)
    except ValueError:
        raise InvalidField("Timestamp") from None
    return short_code, password, timestamp


def _credentials_refusal(ctx: SimContext, short_code: str, password: str,
                         timestamp: str) -> Response | None:
    """The merchant check M-Pesa makes before anything is accepted."""
    if short_code != ctx.config.short_code:
        return merchant_error("Merchant does not exist")
    expected = stk_password(short_code, ctx.config.passkey, timestamp)
    if not hmac.compare_digest(password.encode("utf-8"), expected.encode("ascii")):
        return merchant_error("Wrong credentials")
    return None


# --- STK push ---------------------------------------------------------------------------------
def _msisdn(body: dict[str, Any], name: str) -> str:
    value = text(body, name, max_len=12)
    if not is_msisdn(value):
        raise InvalidField(name)
    return value


def _parse_push(body: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a push (raises InvalidField naming the first bad one)."""
    short_code, password, timestamp = _credentials(body)
    transaction_type = text(body, "TransactionType", max_len=40)
    if transaction_type not in TRANSACTION_TYPES:
        raise InvalidField("TransactionType")
    amount = parse_amount(body.get("Amount"))
    if amount is None or amount < 1 or amount != amount.to_integral_value():
        raise InvalidField("Amount")
    party_a = _msisdn(body, "PartyA")
    party_b = text(body, "PartyB", max_len=10)
    if not party_b.isdigit():
        raise InvalidField("PartyB")
    return {
        "short_code": short_code, "password": password, "timestamp": timestamp,
        "transaction_type": transaction_type, "amount": amount, "party_a": party_a,
        "party_b": party_b, "phone_number": _msisdn(body, "PhoneNumber"),
        "callback_url": callback_url(body, "CallBackURL"),
        "account_reference": text(body, "AccountReference", max_len=12),
        "transaction_desc": text(body, "TransactionDesc", required=False, max_len=13),
    }


def _natural_outcome(ctx: SimContext, fields: dict[str, Any]) -> int:
    """The ResultCode M-Pesa would reach for this push with a customer who pays."""
    if fields["amount"] > STK_MAX_AMOUNT:
        return 3
    if (fields["transaction_type"] == "CustomerPayBillOnline"
            and fields["party_b"] != fields["short_code"]):
        return 2028
    if fields["phone_number"] in ctx.config.unregistered_msisdns:
        return 1037
    return 0


def _pay(ctx: SimContext, fields: dict[str, Any], request: STKRequest) -> C2BPayment:
    """Move the money: the customer pays the short code (a completed C2B payment)."""
    state = ctx.state
    receipt = request.receipt or ""
    paybill = fields["transaction_type"] == "CustomerPayBillOnline"
    registration = state.registration(fields["short_code"])
    msisdn = fields["phone_number"]
    hashed = registration is not None and registration.version == "v1"
    state.add_c2b(C2BPayment(
        trans_id=receipt, originator_conversation_id=new_originator_conversation_id(),
        conversation_id=new_conversation_id(request.received_at),
        transaction_type=TRANSACTION_TYPES[fields["transaction_type"]],
        trans_time=request.processed_at.replace(microsecond=0), amount=fields["amount"],
        short_code=fields["short_code"],
        bill_ref_number=fields["account_reference"] if paybill else "",
        msisdn=msisdn, msisdn_sent=hashed_msisdn(msisdn) if hashed else masked_msisdn(msisdn),
        first_name=ctx.customer_name(msisdn).split(" ")[0], middle_name="", last_name="",
    ))
    return state.complete_c2b(receipt, third_party_trans_id="", validation=None)


def _settle(ctx: SimContext, fields: dict[str, Any], app: str,
            callback_fault: Fault | None) -> tuple[STKRequest, C2BPayment | None]:
    """Decide the outcome and, on success, move the money. Recorded before anything is sent."""
    now = ctx.now()
    code: int | str = _natural_outcome(ctx, fields)
    desc = describe_stk(code)
    if callback_fault is not None and callback_fault.mode is FaultMode.RESULT_FAILURE:
        code = (callback_fault.result_code if callback_fault.result_code is not None
                else DEFAULT_FAILURE_CODE)
        desc = callback_fault.result_desc or describe_stk(code)
    request = STKRequest(
        merchant_request_id=new_merchant_request_id(),
        checkout_request_id=ctx.state.mint_checkout_request_id(now, fields["phone_number"]),
        business_short_code=fields["short_code"], transaction_type=fields["transaction_type"],
        amount=fields["amount"], party_a=fields["party_a"], party_b=fields["party_b"],
        phone_number=fields["phone_number"], account_reference=fields["account_reference"],
        transaction_desc=fields["transaction_desc"], callback_url=fields["callback_url"], app=app,
        received_at=now, processed_at=now + timedelta(milliseconds=ctx.config.result_delay_ms),
        result_code=code, result_desc=desc,
        receipt=ctx.state.mint_receipt(now) if code == 0 else None,
    )
    payment = _pay(ctx, fields, request) if request.receipt is not None else None
    ctx.state.record_stk(request)
    return request, payment


def _callbacks(ctx: SimContext, body: dict[str, Any], fields: dict[str, Any], request: STKRequest,
               payment: C2BPayment | None, callback_fault: Fault | None) -> list[Callback]:
    """The STK callback and, for a paid paybill push with URLs registered, the confirmation."""
    callbacks = [Callback("stk_result", request.callback_url, stk_callback(request),
                          request.checkout_request_id, delivery_plan(callback_fault, ctx.config))]
    registration = ctx.state.registration(fields["short_code"])
    if (payment is not None and fields["transaction_type"] == "CustomerPayBillOnline"
            and registration is not None):
        confirmation_fault = ctx.take_fault(Api.C2B, body, Phase.CALLBACK)
        callbacks.append(Callback(
            "c2b_confirmation", registration.confirmation_url,
            c2b_notification(payment, for_validation=False), payment.trans_id,
            delivery_plan(confirmation_fault, ctx.config)))
    return callbacks


async def push(ctx: SimContext, request: Request) -> Response:
    """Accept (or refuse) an STK push and schedule its callbacks."""
    body = await admit(ctx, request, Api.EXPRESS)
    if isinstance(body, Response):
        return body
    try:
        fields = _parse_push(body)
    except InvalidField as exc:
        return bad_request(exc.field_name)
    refusal = _credentials_refusal(ctx, fields["short_code"], fields["password"],
                                   fields["timestamp"])
    if refusal is not None:
        return refusal
    response_fault = ctx.take_fault(Api.EXPRESS, body, Phase.RESPONSE)
    callback_fault = ctx.take_fault(Api.EXPRESS, body, Phase.CALLBACK)
    record, payment = _settle(ctx, fields, calling_app(ctx, request) or "", callback_fault)
    callbacks = _callbacks(ctx, body, fields, record, payment, callback_fault)

    async def deliver() -> None:
        # The STK callback and the C2B confirmation travel independently, as on M-Pesa.
        await asyncio.gather(*(ctx.callbacks.deliver(callback) for callback in callbacks))

    answer = JSONResponse({"MerchantRequestID": record.merchant_request_id,
                           "CheckoutRequestID": record.checkout_request_id,
                           "ResponseCode": "0", "ResponseDescription": ACCEPTED_DESC,
                           "CustomerMessage": ACCEPTED_DESC})
    return await finish_accepted(ctx, request, answer, response_fault=response_fault, work=deliver)


# --- STK query --------------------------------------------------------------------------------
async def query(ctx: SimContext, request: Request) -> Response:
    """The outcome of a push, once M-Pesa has processed it."""
    body = await admit(ctx, request, Api.EXPRESS_QUERY)
    if isinstance(body, Response):
        return body
    try:
        short_code, password, timestamp = _credentials(body)
        checkout_id = text(body, "CheckoutRequestID", max_len=64)
    except InvalidField as exc:
        return bad_request(exc.field_name)
    refusal = _credentials_refusal(ctx, short_code, password, timestamp)
    if refusal is not None:
        return refusal
    record = ctx.state.find_stk(checkout_id)
    if record is None or record.business_short_code != short_code:
        return bad_request("CheckoutRequestID")
    if ctx.now() < record.processed_at:
        return merchant_error(BEING_PROCESSED)
    return JSONResponse(stk_query_result(record))
