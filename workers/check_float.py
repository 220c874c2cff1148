"""``check_float()``: ask M-Pesa for the B2C shortcode's balances (Account Balance).

Idempotency: asking is harmless; each answer is one observation (``money.float_check``). The
scheduler runs it every ``schedule_float_check_s``; a query Daraja does not take is logged, and the
next period asks again.
"""

from __future__ import annotations

import dramatiq
import redis
import structlog

from money.float_check import record_float_query
from workers import runtime
from workers.daraja.client import DarajaError
from workers.daraja.outcomes import Outcome
from workers.messages import CHECK_FLOAT

log = structlog.get_logger("fleetpay.float")


@dramatiq.actor(actor_name=CHECK_FLOAT, queue_name=runtime.settings.payout_queue_name, max_retries=0)
def check_float() -> None:
    try:
        answer = runtime.daraja().account_balance()
    except (DarajaError, redis.RedisError) as error:  # the next period asks again: no dead letter
        log.warning("float_not_asked", error=str(error))
        return
    if answer.outcome is not Outcome.ACCEPTED or not answer.originator_conversation_id:
        log.warning("float_query_not_taken", outcome=answer.outcome, code=answer.code)
        return
    with runtime.sessions().begin() as session:
        record_float_query(session, answer.originator_conversation_id)
    log.info("float_asked", query=answer.originator_conversation_id)
