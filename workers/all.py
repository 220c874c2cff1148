"""Every actor, for ``dramatiq workers.all`` (what ``fleetpay worker`` runs)."""

from workers.check_payout_status import check_payout_status
from workers.process_callback import process_callback
from workers.send_payout import send_payout
from workers.sweep_inbox import sweep_inbox
from workers.sweep_payouts import sweep_payouts

__all__ = ["check_payout_status", "process_callback", "send_payout", "sweep_inbox", "sweep_payouts"]
