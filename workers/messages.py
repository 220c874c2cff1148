"""Names of the messages the ingest and the scheduler send, without importing the actors.

The ingest only enqueues; importing the actor modules would bind them to a broker and open
database engines it does not need.
"""

from __future__ import annotations

from dramatiq import Message

PROCESS_CALLBACK = "process_callback"
SEND_PAYOUT = "send_payout"


def process_callback_message(inbox_id: int, *, queue_name: str) -> Message:
    return Message(
        queue_name=queue_name, actor_name=PROCESS_CALLBACK, args=(inbox_id,), kwargs={}, options={}
    )
