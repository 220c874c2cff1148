"""Fault injection: the failures the money path must survive (docs/design.md §4), on demand.

A fault is one of nine modes, aimed at one API (``b2c`` by default) and optionally at requests
whose body fields equal given values (``{"OriginatorConversationID": "po_1"}``). Faults come
from two places:

* queued one-shot (or N-shot) via ``POST /sim/faults`` — deterministic, for tests;
* a probability mix in ``SimulatorConfig.fault_mix`` — for soak and chaos runs.

Each mode acts in one *phase* of a request, and a request takes at most one fault per phase:

* ``gateway`` — before anything is accepted: ``http_5xx``, ``spike_arrest`` (nothing is
  recorded, so the same OriginatorConversationID may be retried);
* ``response`` — how the synchronous answer is delivered: ``http_timeout_after_accept``,
  ``result_before_response``;
* ``callback`` — what happens to the asynchronous result: ``result_failure``,
  ``queue_timeout``, ``duplicate_result``, ``drop_callback``, ``slow_callback``.

So ``http_timeout_after_accept`` + ``drop_callback`` queued together for the same request gives
the hardest case: paid, no HTTP answer, no callback — only Transaction Status can tell.

``POST /sim/faults`` takes one object or a list, e.g.::

    {"mode": "result_failure", "result_code": 2040,
     "match": {"OriginatorConversationID": "po_42"}}
    [{"mode": "http_timeout_after_accept", "hang_s": 20}, {"mode": "drop_callback"}]
    {"mode": "duplicate_result", "api": "c2b", "copies": 5, "concurrent": true, "times": 3}
    {"mode": "result_failure", "api": "express", "result_code": 1037}
    {"mode": "http_5xx", "api": "sms"}          # Africa's Talking's SMS API answers 500
    {"mode": "recipient_failure", "api": "sms", "status_code": 406, "match": {"to": "+254711000001"}}

Common keys: ``mode`` (required), ``api`` (default ``b2c``), ``match`` (body field -> value,
compared as strings), ``times`` (default 1). Mode parameters: see ``PARAMS_OF``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.config import SimulatorConfig


class FaultMode(StrEnum):
    HTTP_TIMEOUT_AFTER_ACCEPT = "http_timeout_after_accept"
    HTTP_5XX = "http_5xx"
    SPIKE_ARREST = "spike_arrest"
    RESULT_FAILURE = "result_failure"
    QUEUE_TIMEOUT = "queue_timeout"
    DUPLICATE_RESULT = "duplicate_result"
    RESULT_BEFORE_RESPONSE = "result_before_response"
    DROP_CALLBACK = "drop_callback"
    SLOW_CALLBACK = "slow_callback"
    RECIPIENT_FAILURE = "recipient_failure"  # SMS: the answer gives this number a failure statusCode


class Phase(StrEnum):
    GATEWAY = "gateway"
    RESPONSE = "response"
    CALLBACK = "callback"


class Api(StrEnum):
    """The APIs a fault can aim at."""

    B2C = "b2c"
    C2B = "c2b"  # C2B simulate: the confirmation is its "result"
    TRANSACTION_STATUS = "transaction_status"
    ACCOUNT_BALANCE = "account_balance"
    OAUTH = "oauth"
    REGISTER_URL = "register_url"
    PULL = "pull"
    EXPRESS = "express"  # STK push: the STK callback is its "result"
    EXPRESS_QUERY = "express_query"  # STK query: synchronous, gateway faults only
    SMS = "sms"  # Africa's Talking's SMS send: the recipient's statusCode is its "result"


PHASE_OF: Mapping[FaultMode, Phase] = {
    FaultMode.HTTP_5XX: Phase.GATEWAY,
    FaultMode.SPIKE_ARREST: Phase.GATEWAY,
    FaultMode.HTTP_TIMEOUT_AFTER_ACCEPT: Phase.RESPONSE,
    FaultMode.RESULT_BEFORE_RESPONSE: Phase.RESPONSE,
    FaultMode.RESULT_FAILURE: Phase.CALLBACK,
    FaultMode.QUEUE_TIMEOUT: Phase.CALLBACK,
    FaultMode.DUPLICATE_RESULT: Phase.CALLBACK,
    FaultMode.DROP_CALLBACK: Phase.CALLBACK,
    FaultMode.SLOW_CALLBACK: Phase.CALLBACK,
    FaultMode.RECIPIENT_FAILURE: Phase.CALLBACK,
}

_ASYNC_APIS = frozenset({Api.B2C, Api.C2B, Api.TRANSACTION_STATUS, Api.ACCOUNT_BALANCE, Api.EXPRESS})
_RESULT_APIS = frozenset({Api.B2C, Api.TRANSACTION_STATUS, Api.ACCOUNT_BALANCE})

#: Which APIs each mode makes sense for. C2B has no result code and no QueueTimeOutURL; STK
#: (``express``) has a ResultCode (``result_failure`` defaults to 1032, cancelled) but no
#: QueueTimeOutURL.
APIS_OF: Mapping[FaultMode, frozenset[Api]] = {
    FaultMode.HTTP_5XX: frozenset(Api),
    FaultMode.SPIKE_ARREST: frozenset(Api),
    FaultMode.HTTP_TIMEOUT_AFTER_ACCEPT: _ASYNC_APIS | {Api.SMS},
    FaultMode.RESULT_BEFORE_RESPONSE: _ASYNC_APIS,
    FaultMode.RESULT_FAILURE: _RESULT_APIS | {Api.EXPRESS},
    FaultMode.QUEUE_TIMEOUT: _RESULT_APIS,
    FaultMode.DUPLICATE_RESULT: _ASYNC_APIS,
    FaultMode.DROP_CALLBACK: _ASYNC_APIS,
    FaultMode.SLOW_CALLBACK: _ASYNC_APIS,
    FaultMode.RECIPIENT_FAILURE: frozenset({Api.SMS}),
}

#: The optional parameters each mode accepts; anything else in the JSON is an error (typos in
#: a fault spec would otherwise silently test nothing).
PARAMS_OF: Mapping[FaultMode, frozenset[str]] = {
    FaultMode.HTTP_5XX: frozenset({"status_code"}),
    FaultMode.SPIKE_ARREST: frozenset({"status_code"}),
    FaultMode.HTTP_TIMEOUT_AFTER_ACCEPT: frozenset({"hang_s", "close_connection"}),
    FaultMode.RESULT_BEFORE_RESPONSE: frozenset(),
    FaultMode.RESULT_FAILURE: frozenset({"result_code", "result_desc"}),
    FaultMode.QUEUE_TIMEOUT: frozenset({"delay_ms"}),
    FaultMode.DUPLICATE_RESULT: frozenset({"copies", "concurrent", "delay_ms"}),
    FaultMode.DROP_CALLBACK: frozenset(),
    FaultMode.SLOW_CALLBACK: frozenset({"delay_ms"}),
    FaultMode.RECIPIENT_FAILURE: frozenset({"status_code"}),
}
_COMMON_KEYS = frozenset({"mode", "api", "match", "times"})


class FaultSpecError(ValueError):
    """A fault description that cannot be used; the message says why."""


@dataclass(frozen=True)
class Fault:
    """One fault to inject. Unset parameters fall back to the config's defaults when used."""

    mode: FaultMode
    api: Api = Api.B2C
    match: Mapping[str, str] = field(default_factory=dict)
    times: int = 1
    result_code: int | str | None = None
    result_desc: str | None = None
    delay_ms: int | None = None
    hang_s: float | None = None
    close_connection: bool = False
    status_code: int | None = None
    copies: int | None = None
    concurrent: bool = False
    id: str = ""

    @property
    def phase(self) -> Phase:
        return PHASE_OF[self.mode]

    def matches(self, api: Api, body: Mapping[str, Any] | None) -> bool:
        """True when this fault is aimed at this request."""
        if api != self.api:
            return False
        if not self.match:
            return True
        if body is None:
            return False
        return all(key in body and str(body[key]) == value for key, value in self.match.items())

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "mode": str(self.mode), "api": str(self.api),
                                "match": dict(self.match), "times": self.times}
        for name in sorted(PARAMS_OF[self.mode]):
            data[name] = getattr(self, name)
        return data


def _int_param(data: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FaultSpecError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _result_code(value: Any) -> int | str | None:
    """ResultCodes are numbers except the ``SFC_IC0003`` family; keep that distinction."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FaultSpecError("result_code must be a number or a code string")
    if isinstance(value, int):
        if value == 0:
            raise FaultSpecError("result_code 0 is success, not a failure")
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.lstrip("-").isdigit():
            return _result_code(int(text))
        return text
    raise FaultSpecError("result_code must be a number or a code string")


def parse_fault(data: object) -> Fault:
    """Build a Fault from its JSON description; raises FaultSpecError with the reason."""
    if not isinstance(data, Mapping):
        raise FaultSpecError("a fault must be a JSON object")
    try:
        mode = FaultMode(str(data.get("mode")))
    except ValueError:
        raise FaultSpecError(f"mode must be one of {[m.value for m in FaultMode]}") from None
    unknown = set(data) - _COMMON_KEYS - PARAMS_OF[mode]
    if unknown:
        raise FaultSpecError(f"{mode} does not take {sorted(unknown)}; it takes "
                             f"{sorted(_COMMON_KEYS | PARAMS_OF[mode])}")
    try:
        api = Api(data.get("api", Api.B2C))
    except ValueError:
        raise FaultSpecError(f"api must be one of {[a.value for a in Api]}") from None
    if api not in APIS_OF[mode]:
        raise FaultSpecError(f"{mode} applies to {sorted(a.value for a in APIS_OF[mode])}, not {api}")
    match = data.get("match") or {}
    if not isinstance(match, Mapping) or not all(isinstance(k, str) for k in match):
        raise FaultSpecError("match must be an object of body field -> value")
    times = _int_param(data, "times", 1, 1_000_000) or 1
    hang_s = data.get("hang_s")
    if hang_s is not None and (isinstance(hang_s, bool) or not isinstance(hang_s, (int, float))
                               or not 0 <= hang_s <= 3600):
        raise FaultSpecError("hang_s must be a number of seconds in [0, 3600]")
    for flag in ("close_connection", "concurrent"):
        if not isinstance(data.get(flag, False), bool):
            raise FaultSpecError(f"{flag} must be true or false")
    result_desc = data.get("result_desc")
    if result_desc is not None and not isinstance(result_desc, str):
        raise FaultSpecError("result_desc must be a string")
    return Fault(
        mode=mode,
        api=api,
        match={key: str(value) for key, value in match.items()},
        times=times,
        result_code=_result_code(data.get("result_code")),
        result_desc=result_desc,
        delay_ms=_int_param(data, "delay_ms", 0, 3_600_000),
        hang_s=None if hang_s is None else float(hang_s),
        close_connection=bool(data.get("close_connection", False)),
        status_code=_int_param(data, "status_code", 400, 599),
        copies=_int_param(data, "copies", 2, 50),
        concurrent=bool(data.get("concurrent", False)),
    )


def _mix_entry(name: str, api: Api) -> Fault:
    """``"drop_callback"`` or ``"result_failure:2040"`` -> the Fault it stands for."""
    mode_name, _, code = name.partition(":")
    spec: dict[str, Any] = {"mode": mode_name, "api": api}
    if code:
        spec["result_code"] = code
    return parse_fault(spec)


def validate_fault_mix(mix: Mapping[str, float], apis: frozenset[str]) -> None:
    """Reject a mix with unknown modes, bad probabilities or a phase whose odds exceed 1."""
    for api_name in apis:
        api = Api(api_name)
        totals: dict[Phase, float] = {}
        for name, probability in mix.items():
            if not 0.0 <= float(probability) <= 1.0:
                raise ValueError(f"fault_mix[{name!r}] must be a probability")
            try:
                fault = _mix_entry(name, api)
            except FaultSpecError as exc:
                raise ValueError(f"fault_mix[{name!r}] on {api}: {exc}") from None
            totals[fault.phase] = totals.get(fault.phase, 0.0) + float(probability)
        for phase, total in totals.items():
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault_mix: probabilities of {phase} modes add up to {total} > 1")


class FaultMix:
    """Draws random faults from ``SimulatorConfig.fault_mix`` (seeded, so runs can be replayed)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._rng = random.Random(config.fault_seed)
        self._apis = {Api(name) for name in config.fault_mix_apis}
        self._entries: dict[tuple[Api, Phase], list[tuple[float, Fault]]] = {}
        for api in self._apis:
            for name, probability in config.fault_mix.items():
                fault = replace(_mix_entry(name, api), id=f"mix:{name}")
                self._entries.setdefault((api, fault.phase), []).append((float(probability), fault))

    def draw(self, api: Api, phase: Phase) -> Fault | None:
        """At most one fault for this request and phase, by the configured odds."""
        entries = self._entries.get((api, phase))
        if not entries:
            return None
        roll = self._rng.random()
        for probability, fault in entries:
            if roll < probability:
                return fault
            roll -= probability
        return None
