"""Pull Transactions: ``/pulltransactions/v1/register`` and ``/pulltransactions/v1/query``.

The official remedy for missed C2B confirmations: every completed payment is listed here,
whether or not its confirmation reached the client (so ``drop_callback`` on C2B is only
recoverable through this API).

Query answers follow Daraja's quirks: ``Response`` nests the rows one level deeper than
expected (``[[row, …]]``), row keys are lowercase, ``OffSetValue`` is a *row* offset, and only
the last ``pull_window_h`` (48) hours are served — older parts of the window are silently
clipped. ``ResponseCode`` ``1000`` = rows, ``1001`` = none (``Response: [[]]``). ``msisdn`` is the
value the confirmation carried (masked for v2 registrations, hashed for v1).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.context import SimContext
from simulator.envelopes import bad_request
from simulator.faults import Api
from simulator.formats import iso_utc, money, parse_pull_date
from simulator.identifiers import new_request_id
from simulator.responding import admit
from simulator.state import C2BPayment
from simulator.validation import InvalidField, callback_url, own_short_code, text


async def register(ctx: SimContext, request: Request) -> Response:
    """``1000`` on first registration of the short code, ``1001`` when already registered."""
    body = await admit(ctx, request, Api.PULL)
    if isinstance(body, Response):
        return body
    try:
        short_code = own_short_code(body, ctx.config.short_code)
        request_type = text(body, "RequestType", max_len=20)
        nominated = text(body, "NominatedNumber", required=False, max_len=12)
        url = callback_url(body, "CallBackURL")
    except InvalidField as exc:
        return bad_request(exc.field_name)
    first = ctx.state.register_pull(short_code, {"RequestType": request_type,
                                                 "NominatedNumber": nominated, "CallBackURL": url})
    return JSONResponse({
        "ResponseRefID": new_request_id(),
        "ResponseStatus": "1000" if first else "1001",
        "ShortCode": short_code,
        "ResponseDescription": ("ShortCode Registered Successfully" if first
                                else "ShortCode already Registered"),
    })


def _date(body: dict[str, Any], name: str) -> datetime:
    try:
        return parse_pull_date(text(body, name, max_len=25))
    except ValueError:
        raise InvalidField(name) from None


def _offset(body: dict[str, Any]) -> int:
    value = text(body, "OffSetValue", required=False, max_len=10) or "0"
    if not value.isdigit():
        raise InvalidField("OffSetValue")
    return int(value)


def _row(payment: C2BPayment, organization_name: str) -> dict[str, Any]:
    return {
        "transactionId": payment.trans_id,
        "trxDate": iso_utc(payment.trans_time),
        "msisdn": payment.msisdn_sent,
        "sender": payment.first_name,
        "transactiontype": ("c2b-pay-bill-debit" if payment.transaction_type == "Pay Bill"
                            else "c2b-buy-goods-debit"),
        "billreference": payment.bill_ref_number,
        "amount": money(payment.amount),
        "organizationname": organization_name,
    }


async def query(ctx: SimContext, request: Request) -> Response:
    """One page of completed C2B payments in ``[StartDate, EndDate]`` ∩ the last 48 hours."""
    body = await admit(ctx, request, Api.PULL)
    if isinstance(body, Response):
        return body
    try:
        short_code = own_short_code(body, ctx.config.short_code)
        start, end = _date(body, "StartDate"), _date(body, "EndDate")
        if end < start:
            raise InvalidField("EndDate")
        offset = _offset(body)
    except InvalidField as exc:
        return bad_request(exc.field_name)
    now = ctx.now()
    start = max(start, now - timedelta(hours=ctx.config.pull_window_h))
    rows = sorted(
        (p for p in ctx.state.c2b_payments()
         if p.status == "completed" and p.short_code == short_code and start <= p.trans_time <= end),
        key=lambda p: p.trans_time,  # stable: same-second payments keep their order
    )
    page = [_row(p, ctx.config.organization_name)
            for p in rows[offset:offset + ctx.config.pull_page_size]]
    if not page:
        return JSONResponse({"ResponseRefID": new_request_id(), "ResponseCode": "1001",
                             "ResponseMessage": "No transactions found", "Response": [[]]})
    return JSONResponse({"ResponseRefID": new_request_id(), "ResponseCode": "1000",
                         "ResponseMessage": "Success", "Response": [page]})
