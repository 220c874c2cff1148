"""A Daraja (M-Pesa API) simulator: speaks Daraja like the sandbox, and is better for testing.

``build_app(SimulatorConfig(...))`` returns a Starlette app; serve it with uvicorn. The
simulator keeps its own record of every payment it made (``GET /sim/payments``), so a test can
prove "each payout paid exactly once" independently of what the client believes.
"""

from simulator.app import build_app
from simulator.apps import DarajaApp
from simulator.config import SimulatorConfig

__all__ = ["DarajaApp", "SimulatorConfig", "build_app"]
