"""The actors' names, and the messages the ingest sends, without importing the actors.

The ingest only enqueues; importing the actor modules would bind them to a broker and open
database engines it does not need. The scheduler fires actors by these names.
"""

from __future__ import annotations

from dramatiq import Message

PROCESS_CALLBACK = "process_callback"
APPLY_CALLBACKS = "apply_callbacks"
SEND_PAYOUT = "send_payout"
CHECK_PAYOUT_STATUS = "check_payout_status"
SWEEP_INBOX = "sweep_inbox"
SWEEP_PAYOUTS = "sweep_payouts"
RECONCILE_BOOKS = "reconcile_books"
RECONCILE_MPESA = "reconcile_mpesa"
CLOSE_DAY = "close_day"
CHECK_FLOAT = "check_float"
SEND_NOTIFICATION = "send_notification"
SWEEP_NOTIFICATIONS = "sweep_notifications"


def process_callback_message(inbox_id: int, *, queue_name: str) -> Message:
    return Message(
        queue_name=queue_name, actor_name=PROCESS_CALLBACK, args=(inbox_id,), kwargs={}, options={}
    )


def apply_callbacks_messages(inbox_ids: list[int], *, queue_name: str, batch_max: int) -> list[Message]:
    """One ``apply_callbacks`` message per ``batch_max`` rows."""
    return [
        Message(queue_name=queue_name, actor_name=APPLY_CALLBACKS, args=(inbox_ids[start : start + batch_max],),
                kwargs={}, options={})
        for start in range(0, len(inbox_ids), batch_max)
    ]


def send_notification_message(notification_id: int, *, queue_name: str) -> Message:
    return Message(
        queue_name=queue_name, actor_name=SEND_NOTIFICATION, args=(notification_id,), kwargs={}, options={}
    )
