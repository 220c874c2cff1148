"""Everything a route needs, bundled once per app by ``build_app``.

Routes receive the context explicitly (``functools.partial``) instead of reaching for globals,
so two simulators with different configs can run side by side in one process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator.callbacks import CallbackSender
from simulator.config import SimulatorConfig
from simulator.credentials import SimulatorCredentials, credential_matches
from simulator.faults import Api, Fault, FaultMix, Phase
from simulator.formats import now_eat
from simulator.state import C2BRegistration, SimulatorState

_FIRST_NAMES = ("JOHN", "JANE", "PETER", "MARY", "ALI", "GRACE", "KEVIN", "FAITH", "BRIAN", "MERCY")
_LAST_NAMES = ("KAMAU", "OTIENO", "WANJIKU", "MUTUA", "ODHIAMBO", "CHEBET", "NJOROGE", "AKINYI")


@dataclass
class SimContext:
    config: SimulatorConfig
    state: SimulatorState
    credentials: SimulatorCredentials
    callbacks: CallbackSender
    fault_mix: FaultMix

    def apply_preregistration(self) -> None:
        """Register the configured C2B URLs, as production's one-time registration would have."""
        config = self.config
        if config.c2b_confirmation_url is None:
            return
        self.state.register_c2b(C2BRegistration(
            short_code=config.short_code, response_type=config.response_type,
            confirmation_url=config.c2b_confirmation_url,
            validation_url=config.c2b_validation_url or "", version="v2",
            registered_at=self.now()), allow_replace=True)

    def now(self) -> datetime:
        return now_eat()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()

    def take_fault(self, api: Api, body: Mapping[str, Any] | None, phase: Phase) -> Fault | None:
        """A queued fault for this request and phase, else maybe one from the random mix."""
        queued = self.state.take_fault(api, body, phase)
        if queued is not None:
            return queued
        if api.value in self.config.fault_mix_apis:
            return self.fault_mix.draw(api, phase)
        return None

    def initiator_valid(self, initiator_name: str, security_credential: str) -> bool:
        """Does this initiator exist and does the credential decrypt to its password?"""
        name_ok = initiator_name == self.config.initiator_name
        credential_ok = credential_matches(security_credential, self.credentials.private_key,
                                           self.config.initiator_password)
        return name_ok and credential_ok

    def customer_name(self, msisdn: str) -> str:
        """The name M-Pesa holds for a customer: configured, else a stable made-up one."""
        configured = self.config.customer_names.get(msisdn)
        if configured:
            return configured.upper()
        seed = int(msisdn[-6:]) if msisdn[-6:].isdigit() else len(msisdn)
        return f"{_FIRST_NAMES[seed % len(_FIRST_NAMES)]} {_LAST_NAMES[(seed // 7) % len(_LAST_NAMES)]}"
