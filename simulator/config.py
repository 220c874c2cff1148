"""The simulator's configuration: one immutable object, built by the caller, passed to ``build_app``.

Every knob that changes what a client observes lives here, so a test states its scenario in one
place (``SimulatorConfig(c2b_validation_enabled=True, fault_mix={"drop_callback": 0.1})``) and
nothing is read from the environment or from module globals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from simulator.apps import DarajaApp, resolve_apps
from simulator.faults import validate_fault_mix
from simulator.validation import has_filtered_word, is_callback_url

RESPONSE_TYPES = ("Completed", "Cancelled")
#: The passkey Daraja's sandbox publishes for its M-Pesa Express test shortcode 174379 (test-data
#: panel of the portal; quoted in safaricom/LNMOnlineAndroidSample and bdhobare/mpesa-android-sdk
#: issues). The simulator accepts it for its own shortcode: a sandbox-configured client just works.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """What the simulated Daraja account looks like and how it behaves.

    The defaults mirror ``fleetpay.settings.Settings`` (``sim-consumer-key`` etc.) so that an
    unconfigured fleetpay talks to an unconfigured simulator out of the box.
    """

    # --- the Daraja apps and the organisation -----------------------------------------------
    #: The default app: every product (C2B, B2C, M-Pesa Express).
    consumer_key: str = "sim-consumer-key"
    consumer_secret: str = "sim-consumer-secret"
    #: More apps, each limited to its products (``simulator.apps``):
    #: ``apps=(DarajaApp("k1", "s1", products=frozenset({"c2b"})), DarajaApp("k2", "s2",
    #: products=frozenset({"b2c"})))``. The default app stays unless one of these uses its key,
    #: which then replaces it. A token works only on its own app's products (``401.003.01``).
    apps: tuple[DarajaApp, ...] = ()
    short_code: str = "4165253"
    #: The B2C shortcode (PartyA of B2C, Transaction Status, Account Balance); None: ``short_code``.
    b2c_short_code: str | None = None
    organization_name: str = "SUNNY FLEET"
    initiator_name: str = "apiuser"
    initiator_password: str = "sim-initiator-password"
    #: M-Pesa Express: ``Password`` must be ``base64(short_code + passkey + Timestamp)``.
    passkey: str = SANDBOX_PASSKEY

    @property
    def b2c_party(self) -> str:
        """The shortcode B2C requests and their queries must name as PartyA."""
        return self.b2c_short_code or self.short_code

    # --- OAuth -------------------------------------------------------------------------------
    token_ttl_s: int = 3599
    #: Production and the v2 docs send ``"3599"``; the v3 page shows a number. Clients must
    #: parse both, so the simulator can send either.
    expires_in_as_string: bool = True
    #: Daraja: "each request invalidates the previous token". Set False to keep every token
    #: valid until it expires (useful to isolate token-churn bugs from other failures).
    single_active_token: bool = True
    #: HTTP status sent with ``404.001.03 Invalid Access Token``. Daraja's code prefix says 404;
    #: some gateways answer 401. Clients must refresh on both.
    invalid_token_http_status: int = 404

    # --- C2B ---------------------------------------------------------------------------------
    c2b_validation_enabled: bool = False
    #: C2B URLs registered when the app is built (and again after ``/sim/reset``), as if the
    #: one-time production registration had happened already. None: register via the API.
    c2b_confirmation_url: str | None = None
    c2b_validation_url: str | None = None
    #: The ResponseType of that pre-registration: what M-Pesa does when validation is on and
    #: the ValidationURL does not answer in time.
    response_type: str = "Completed"
    #: How long M-Pesa waits for the ValidationURL ("usually < 8 seconds").
    validation_timeout_s: float = 8.0
    #: Sandbox lets you re-register freely; production answers 500.003.1001 the second time.
    allow_reregistration: bool = True

    # --- B2C and the accounts ----------------------------------------------------------------
    #: Delay between the synchronous acceptance and the result callback.
    result_delay_ms: int = 50
    b2c_min_amount: int = 10
    b2c_max_amount: int = 250_000
    #: Charged per B2C payment to the Charges Paid account (shown as ``DebitPartyCharges``).
    b2c_charge: Decimal = Decimal("15.00")
    utility_opening_balance: Decimal = Decimal("1000000.00")
    working_opening_balance: Decimal = Decimal("0.00")
    #: MSISDNs that are not registered M-Pesa customers: B2C to them ends with ResultCode 2040.
    unregistered_msisdns: frozenset[str] = frozenset()
    #: MSISDN -> "FIRST MIDDLE LAST", as M-Pesa knows the customer. Others get a stable fake name.
    customer_names: Mapping[str, str] = field(default_factory=_empty)
    #: False makes the simulator accept a repeated OriginatorConversationID as a *new* payment,
    #: which proves that a client's own idempotency holds without Safaricom's help.
    detect_duplicate_originator_ids: bool = True

    # --- callbacks ---------------------------------------------------------------------------
    #: Timeout of every callback POST the simulator makes (Safaricom is said to wait ~5 s).
    callback_timeout_s: float = 5.0

    # --- faults ------------------------------------------------------------------------------
    #: Random faults: mode name (or ``"result_failure:<code>"``) -> probability per request.
    #: Probabilities of modes in the same phase must add up to at most 1.
    fault_mix: Mapping[str, float] = field(default_factory=_empty)
    #: The APIs the random mix applies to (queued faults choose their own API).
    fault_mix_apis: frozenset[str] = frozenset({"b2c"})
    #: Seed of the fault mix's random generator; None for a fresh random seed.
    fault_seed: int | None = None
    #: ``http_timeout_after_accept``: how long the response is held back (longer than clients wait).
    hang_s: float = 30.0
    #: ``slow_callback``: how long the callback is held back.
    slow_callback_delay_ms: int = 5_000
    #: ``queue_timeout``: time between the QueueTimeOutURL notice and the real result.
    queue_timeout_result_delay_ms: int = 200

    # --- Pull Transactions -------------------------------------------------------------------
    pull_window_h: int = 48
    pull_page_size: int = 100

    # --- the simulator's own admin routes ----------------------------------------------------
    #: Africa's Talking (SMS): the app's username and API key (``apiKey`` header).
    sms_username: str = "sandbox"
    sms_api_key: str = "sim-at-api-key"
    #: When set, ``/sim/...`` routes require ``Authorization: Bearer <admin_token>``.
    admin_token: str | None = None

    #: ``daraja_apps``, resolved once by ``__post_init__``.
    _resolved_apps: tuple[DarajaApp, ...] = field(default=(), init=False, repr=False, compare=False)

    @property
    def daraja_apps(self) -> tuple[DarajaApp, ...]:
        """Every app of the account: the default one (unless redefined) and ``apps``."""
        return self._resolved_apps

    def app_for(self, consumer_key: str) -> DarajaApp | None:
        return next((app for app in self.daraja_apps if app.consumer_key == consumer_key), None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "apps", tuple(self.apps))
        if not all(isinstance(app, DarajaApp) for app in self.apps):
            raise ValueError("apps must be DarajaApp(consumer_key, consumer_secret, products=...)")
        object.__setattr__(self, "_resolved_apps",
                           resolve_apps(self.consumer_key, self.consumer_secret, self.apps))
        if not self.passkey:
            raise ValueError("passkey must not be empty")
        if self.response_type not in RESPONSE_TYPES:
            raise ValueError(f"response_type must be one of {RESPONSE_TYPES}")
        if self.c2b_validation_url is not None and self.c2b_confirmation_url is None:
            raise ValueError("c2b_validation_url needs c2b_confirmation_url")
        for url in (self.c2b_confirmation_url, self.c2b_validation_url):
            if url is not None and (not is_callback_url(url) or has_filtered_word(url)):
                raise ValueError(f"{url!r} would be refused by RegisterURL")
        if self.token_ttl_s < 1:
            raise ValueError("token_ttl_s must be >= 1")
        if not 1 <= self.b2c_min_amount <= self.b2c_max_amount:
            raise ValueError("need 1 <= b2c_min_amount <= b2c_max_amount")
        if self.pull_page_size < 1 or self.pull_window_h < 1:
            raise ValueError("pull_page_size and pull_window_h must be >= 1")
        for name, value in (("result_delay_ms", self.result_delay_ms),
                            ("slow_callback_delay_ms", self.slow_callback_delay_ms),
                            ("queue_timeout_result_delay_ms", self.queue_timeout_result_delay_ms)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
        # Freeze mutable inputs so a config shared between apps cannot be changed underneath them.
        object.__setattr__(self, "customer_names", _frozen(self.customer_names))
        object.__setattr__(self, "fault_mix", _frozen(self.fault_mix))
        object.__setattr__(self, "unregistered_msisdns", frozenset(self.unregistered_msisdns))
        object.__setattr__(self, "fault_mix_apis", frozenset(self.fault_mix_apis))
        object.__setattr__(self, "b2c_charge", Decimal(self.b2c_charge))
        object.__setattr__(self, "utility_opening_balance", Decimal(self.utility_opening_balance))
        object.__setattr__(self, "working_opening_balance", Decimal(self.working_opening_balance))
        validate_fault_mix(self.fault_mix, self.fault_mix_apis)
