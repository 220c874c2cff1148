"""Every actor, for ``dramatiq workers.all`` (what ``fleetpay worker`` runs)."""

from workers.apply_callbacks import apply_callbacks
from workers.check_float import check_float
from workers.check_payout_status import check_payout_status
from workers.close_day import close_day
from workers.process_callback import process_callback
from workers.reconcile_books import reconcile_books
from workers.reconcile_mpesa import reconcile_mpesa
from workers.send_notification import send_notification
from workers.send_payout import send_payout
from workers.sweep_inbox import sweep_inbox
from workers.sweep_notifications import sweep_notifications
from workers.sweep_payouts import sweep_payouts

__all__ = [
    "apply_callbacks",
    "check_float",
    "check_payout_status",
    "close_day",
    "process_callback",
    "reconcile_books",
    "reconcile_mpesa",
    "send_notification",
    "send_payout",
    "sweep_inbox",
    "sweep_notifications",
    "sweep_payouts",
]
