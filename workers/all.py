"""Every actor, for ``dramatiq workers.all`` (what ``fleetpay worker`` runs)."""

from workers.process_callback import process_callback
from workers.sweep_inbox import sweep_inbox

__all__ = ["process_callback", "sweep_inbox"]
