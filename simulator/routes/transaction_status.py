"""``POST /mpesa/transactionstatus/v1/query``: answers from the simulator's own record.

Looked up by ``TransactionID`` (a B2C receipt, the TransactionID of a failed B2C result, or a
C2B TransID) first, else by ``OriginalConversationID`` (our B2C OriginatorConversationID).

* paid B2C -> ``ResultCode 0``, ``TransactionStatus "Completed"`` (samples/transaction_status_result.json)
* failed B2C -> ``ResultCode 0``, ``TransactionStatus "Declined"``, the reason in ``TransactionReason``
* C2B -> ``Completed`` / ``Cancelled`` / ``Pending Authorized``
* unknown (never accepted, e.g. refused by ``http_5xx``) -> ``ResultCode "R000001"``,
  ``"The transaction could not be found."`` (a simulator choice; see results.NOT_FOUND_CODE)
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.context import SimContext
from simulator.envelopes import bad_request
from simulator.faults import Api, Fault
from simulator.responding import admit
from simulator.results import (
    NOT_FOUND_CODE,
    NOT_FOUND_DESC,
    failure,
    occasion_reference,
    status_of_b2c,
    status_of_c2b,
    transaction_status,
)
from simulator.routes.org_query import Accepted, answer_query, forced_or_refused, parse_org_query
from simulator.validation import InvalidField, text


def _status_parameters(ctx: SimContext, transaction_id: str,
                       original_id: str) -> list[tuple[str, Any]] | None:
    """The ResultParameters describing the transaction, or None when it is unknown."""
    state, config = ctx.state, ctx.config
    b2c = None
    if transaction_id:
        b2c = state.find_b2c(transaction_id=transaction_id)
        if b2c is None:
            c2b = state.find_c2b(transaction_id)
            if c2b is not None:
                return status_of_c2b(c2b, short_code=config.short_code,
                                     organization_name=config.organization_name)
    if b2c is None and original_id:
        b2c = state.find_b2c(originator_conversation_id=original_id)
    if b2c is None:
        return None
    payment = next((p for p in state.payments()
                    if b2c.receipt is not None and p.receipt == b2c.receipt), None)
    return status_of_b2c(b2c, payment, short_code=config.b2c_party,
                         organization_name=config.organization_name,
                         receiver_name=ctx.customer_name(b2c.party_b))


async def query(ctx: SimContext, request: Request) -> Response:
    body = await admit(ctx, request, Api.TRANSACTION_STATUS)
    if isinstance(body, Response):
        return body
    try:
        org_query = parse_org_query(body, command_id="TransactionStatusQuery")
        transaction_id = text(body, "TransactionID", required=False, max_len=40,
                              aliases=("Transaction ID",))
        original_id = text(body, "OriginalConversationID", required=False, max_len=128)
        if not transaction_id and not original_id:
            raise InvalidField("TransactionID")
    except InvalidField as exc:
        return bad_request(exc.field_name)

    def build(accepted: Accepted, callback_fault: Fault | None) -> dict[str, Any]:
        reference = occasion_reference(org_query.occasion)
        refused = forced_or_refused(ctx, org_query, accepted, callback_fault, reference)
        if refused is not None:
            return refused
        parameters = _status_parameters(ctx, transaction_id, original_id)
        if parameters is None:
            return failure(code=NOT_FOUND_CODE, desc=NOT_FOUND_DESC,
                           originator_conversation_id=accepted.originator_conversation_id,
                           conversation_id=accepted.conversation_id,
                           transaction_id=accepted.transaction_id, reference=reference)
        return transaction_status(originator_conversation_id=accepted.originator_conversation_id,
                                  conversation_id=accepted.conversation_id,
                                  transaction_id=accepted.transaction_id, parameters=parameters,
                                  occasion=org_query.occasion)

    return await answer_query(ctx, request, body, api=Api.TRANSACTION_STATUS, kind="ts",
                              query=org_query, build_result=build)

