"""``POST /mpesa/accountbalance/v1/query``: the balances the simulator's own payments produced.

The result's ``AccountBalance`` is Daraja's one-string format, accounts joined by ``&`` and
fields by ``|``: ``Working Account|KES|0.00|0.00|0.00|0.00&Utility Account|KES|…``. The Utility
account is the opening balance plus C2B payments minus B2C payouts; Charges Paid is negative.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.context import SimContext
from simulator.envelopes import bad_request
from simulator.faults import Api, Fault
from simulator.responding import admit
from simulator.results import ab_reference, account_balance
from simulator.routes.org_query import Accepted, answer_query, forced_or_refused, parse_org_query
from simulator.validation import InvalidField


async def query(ctx: SimContext, request: Request) -> Response:
    body = await admit(ctx, request, Api.ACCOUNT_BALANCE)
    if isinstance(body, Response):
        return body
    try:
        org_query = parse_org_query(body, command_id="AccountBalance")
    except InvalidField as exc:
        return bad_request(exc.field_name)

    def build(accepted: Accepted, callback_fault: Fault | None) -> dict[str, Any]:
        refused = forced_or_refused(ctx, org_query, accepted, callback_fault, ab_reference())
        if refused is not None:
            return refused
        return account_balance(originator_conversation_id=accepted.originator_conversation_id,
                               conversation_id=accepted.conversation_id,
                               transaction_id=accepted.transaction_id,
                               balances=ctx.state.balances(), completed_at=ctx.now())

    return await answer_query(ctx, request, body, api=Api.ACCOUNT_BALANCE, kind="ab",
                              query=org_query, build_result=build)
