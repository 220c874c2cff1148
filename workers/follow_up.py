"""What a money request that ran leaves to the workers: its payouts to send and its status queries
to ask (``outcome["payout_ids"]``, ``outcome["status_checks"]``), enqueued once it is committed.

Nothing is lost if the broker does not take them: the payout sweep sends pending payouts and asks
the status queries a person wanted (``money.payouts.want_status_check``).
"""

from __future__ import annotations

from typing import Any

import structlog

from workers.check_payout_status import check_payout_status
from workers.send_payout import send_payouts

log = structlog.get_logger("fleetpay.requests")


def follow_up(outcome: dict[str, Any] | None) -> bool:
    """Enqueue what a request's outcome asks the workers to do; False when the broker did not take
    all of it (the payout sweep does the rest later)."""
    outcome = outcome or {}
    sent = send_payouts(outcome.get("payout_ids") or ())
    checks = outcome.get("status_checks") or ()
    try:
        for payout_id in checks:
            check_payout_status.send(payout_id)
    except Exception as error:  # noqa: BLE001 — committed and remembered: sweep_payouts asks
        log.warning("status_checks_not_enqueued_sweep_will_ask", error=str(error), status_checks=list(checks))
        return False
    return sent
