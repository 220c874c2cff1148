"""What Transaction Status and Account Balance share: the initiator fields and the result trip.

Both are "org API" queries: an initiator with a SecurityCredential asks about the short code,
gets a synchronous acknowledgement, and the answer is posted to ``ResultURL`` (after a notice
to ``QueueTimeOutURL`` under the ``queue_timeout`` fault).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.context import SimContext
from simulator.faults import Api, Fault, FaultMode, Phase
from simulator.identifiers import new_conversation_id, new_originator_conversation_id, zero_receipt
from simulator.responding import finish_accepted, result_callbacks
from simulator.results import describe, failure, queue_timeout
from simulator.validation import InvalidField, callback_url, text

ACCEPTED_DESC = "Accept the service request successfully."
IDENTIFIER_TYPES = ("1", "2", "4")


@dataclass(frozen=True)
class OrgQuery:
    """The fields every org query carries, checked."""

    initiator: str
    credential: str
    party_a: str
    identifier_type: str
    result_url: str
    queue_timeout_url: str
    remarks: str
    occasion: str


@dataclass(frozen=True)
class Accepted:
    """The IDs the gateway minted when it accepted a query."""

    originator_conversation_id: str
    conversation_id: str
    transaction_id: str


def parse_org_query(body: Mapping[str, Any], *, command_id: str) -> OrgQuery:
    """Check the shared fields (raises InvalidField). ``"Command ID"`` is accepted, as sampled."""
    if text(body, "CommandID", max_len=40, aliases=("Command ID",)) != command_id:
        raise InvalidField("CommandID")
    identifier_type = text(body, "IdentifierType", max_len=2)
    if identifier_type not in IDENTIFIER_TYPES:
        raise InvalidField("IdentifierType")
    return OrgQuery(
        initiator=text(body, "Initiator", max_len=100),
        credential=text(body, "SecurityCredential", max_len=8192),
        party_a=text(body, "PartyA", max_len=12),
        identifier_type=identifier_type,
        result_url=callback_url(body, "ResultURL"),
        queue_timeout_url=callback_url(body, "QueueTimeOutURL"),
        remarks=text(body, "Remarks", max_len=100),
        occasion=text(body, "Occasion", required=False, max_len=100, aliases=("Occassion",)),
    )


def forced_or_refused(ctx: SimContext, query: OrgQuery, accepted: Accepted,
                      callback_fault: Fault | None,
                      reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The failure result when the initiator is invalid or a ``result_failure`` is injected."""
    code: int | str | None = None
    desc = ""
    if not ctx.initiator_valid(query.initiator, query.credential) or query.party_a not in (ctx.config.short_code, ctx.config.b2c_party):
        code, desc = 2001, describe(2001)
    if callback_fault is not None and callback_fault.mode is FaultMode.RESULT_FAILURE:
        code = callback_fault.result_code if callback_fault.result_code is not None else 1
        desc = callback_fault.result_desc or describe(code)
    if code is None:
        return None
    return failure(code=code, desc=desc,
                   originator_conversation_id=accepted.originator_conversation_id,
                   conversation_id=accepted.conversation_id,
                   transaction_id=accepted.transaction_id, reference=reference)


async def answer_query(ctx: SimContext, request: Request, body: Mapping[str, Any], *, api: Api,
                       kind: str, query: OrgQuery,
                       build_result: Callable[[Accepted, Fault | None], dict[str, Any]]) -> Response:
    """Acknowledge the query and post its result (built now, from the simulator's record)."""
    now = ctx.now()
    accepted = Accepted(originator_conversation_id=new_originator_conversation_id(),
                        conversation_id=new_conversation_id(now),
                        transaction_id=zero_receipt(now))
    response_fault = ctx.take_fault(api, body, Phase.RESPONSE)
    callback_fault = ctx.take_fault(api, body, Phase.CALLBACK)
    result = build_result(accepted, callback_fault)
    notice = queue_timeout(originator_conversation_id=accepted.originator_conversation_id,
                           conversation_id=accepted.conversation_id,
                           transaction_id=accepted.transaction_id)
    callbacks = result_callbacks(ctx.config, kind=kind, ref=accepted.originator_conversation_id,
                                 result_url=query.result_url, result=result,
                                 queue_timeout_url=query.queue_timeout_url,
                                 queue_timeout_notice=notice, fault=callback_fault)
    answer = JSONResponse({"OriginatorConversationID": accepted.originator_conversation_id,
                           "ConversationID": accepted.conversation_id,
                           "ResponseCode": "0", "ResponseDescription": ACCEPTED_DESC})
    return await finish_accepted(ctx, request, answer, response_fault=response_fault,
                                 work=lambda: ctx.callbacks.deliver_in_order(callbacks))
