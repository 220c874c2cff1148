"""The one typed settings object, read from ``FLEETPAY_*`` environment variables or ``.env``.

Every business number of docs/rules.md is a setting here, not a constant in code. Money settings are
integer cents; durations carry their unit in the name. Secrets are ``SecretStr`` so that neither
logs nor ``repr`` ever show them.
"""

from __future__ import annotations

import re
from datetime import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Safaricom's published callback source addresses (docs/daraja.md §6); used only when the allowlist is on.
SAFARICOM_CALLBACK_IPS = (
    "196.201.214.200",
    "196.201.214.206",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.114",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.138",
    "196.201.212.129",
    "196.201.212.136",
    "196.201.212.74",
    "196.201.212.69",
)


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; we ship psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


# Written by `fleetpay dev` so that commands run beside it reach the same system; a `.env` of
# the user's own, and real environment variables, take precedence over it.
DEV_ENV_FILE = ".fleetpay/dev.env"

# The defaults of the two tokens: known to everyone, so never served (`require_strong_secrets`).
PLACEHOLDER_CALLBACK_TOKEN = "change-me-callback-token"
PLACEHOLDER_ADMIN_TOKEN = "change-me-admin-token"
PLACEHOLDER_CONSOLE_SECRET = "change-me-console-secret"
PLACEHOLDER_SMS_API_KEY = "sim-at-api-key"
PLACEHOLDER_AT_TOKEN = "change-me-africas-talking-token"
SECRET_MIN_CHARS = 32
URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
SECRET_HINT = (
    f"a random secret of at least {SECRET_MIN_CHARS} characters, e.g. "
    "`python3 -c \"import secrets; print(secrets.token_hex(32))\"` (docs/operations.md)"
)


class WeakSecrets(RuntimeError):
    """The ingest must not serve with these tokens; the message is one line for the operator."""


@dataclass(frozen=True)
class DarajaApp:
    """One Daraja app: the product it is used for, its credentials and its shortcode."""

    product: Literal["c2b", "b2c"]
    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    short_code: str


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEETPAY_", env_file=(DEV_ENV_FILE, ".env"), extra="ignore", frozen=True,
        hide_input_in_errors=True,  # a refused secret must not be printed back in the error
    )

    # --- where things live -----------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset under `fleetpay dev`: an embedded server is started.",
    )
    database_direct_url: str | None = Field(
        default=None,
        description="PostgreSQL itself, the same database, when FLEETPAY_DATABASE_URL goes through PgBouncer in "
        "transaction mode: only the session-level locks (the scheduler's leadership, the daily close's) use it. "
        "Unset: FLEETPAY_DATABASE_URL.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL: shared state (the OAuth token, failure records), and the broker unless "
        "FLEETPAY_BROKER_URL names another.",
    )
    broker_url: str | None = Field(
        default=None,
        description="The dramatiq broker: `redis://…` or `amqp://user:password@host:5672/vhost` (RabbitMQ, with "
        "publisher confirms). Unset: FLEETPAY_REDIS_URL.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    data_dir: str = Field(default=".fleetpay", description="Embedded servers' data (`fleetpay dev`).")

    # --- the HTTP edge ---------------------------------------------------------------------
    callback_token: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_CALLBACK_TOKEN),
        description="Secret path segment of every callback URL (`/cb/{token}/…`).",
    )
    callback_token_previous: SecretStr | None = Field(
        default=None,
        description="During a rotation, the old token: still accepted, never handed out. Unset it once "
        "Safaricom calls only the new URLs.",
    )
    admin_token: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_ADMIN_TOKEN), description="Bearer token of `/admin/…`."
    )
    dev_mode: bool = Field(
        default=False,
        description="Set by `fleetpay dev` for the processes it starts, and by nothing else: the ingest "
        "then serves even with placeholder or short tokens. Never set it in a deployment.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="How Safaricom reaches the ingest."
    )

    # --- the operator console ---------------------------------------------------------------
    console_port: int = Field(default=8020, ge=1, le=65535, description="`fleetpay console`'s port (never the callback port).")
    console_secret: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_CONSOLE_SECRET),
        description="Signs the console's session cookies; refused when a placeholder or short, outside `fleetpay dev`.",
    )
    console_idle_timeout_s: int = Field(default=1800, ge=60, description="A console session idle this long logs out.")
    console_cookie_secure: bool | None = Field(
        default=None,
        description="Send the console's cookie over HTTPS only; unset: yes, except under `fleetpay dev` (browsers "
        "count http://127.0.0.1 and localhost as secure, so an SSH tunnel works). Set false only on a trusted network.",
    )
    console_login_failures_max: int = Field(
        default=5, ge=1,
        description="Wrong logins from one address within the lockout time before it must wait; a user is locked out "
        "after four times as many wrong passwords in a row.",
    )
    console_lockout_s: int = Field(default=900, ge=1, description="How long a locked-out user waits.")
    four_eyes: bool = Field(
        default=True,
        description="Every money movement asked for in the console waits for another user's approval. A "
        "one-person fleet may turn it off; the audit log then says each action ran without a second person.",
    )
    body_max_bytes: int = Field(default=64 * 1024, ge=1024, description="Larger bodies get 413.")
    ip_allowlist_enabled: bool = False
    ip_allowlist: tuple[str, ...] = SAFARICOM_CALLBACK_IPS
    trusted_proxies: tuple[str, ...] = Field(
        default=(), description="Peers whose X-Forwarded-For is believed."
    )
    validation_default_result: Literal["accept", "reject"] = Field(
        default="accept",
        description="C2B validation answer when PostgreSQL is down (mirror the shortcode's ResponseType).",
    )
    group_commit_max_batch: int = Field(default=256, ge=1, le=10_000)
    apply_batch_max: int = Field(
        default=100, ge=1, le=1_000, description="Most callbacks a worker applies in one transaction."
    )
    enqueue_linger_ms: int = Field(
        default=50, ge=0, le=1_000,
        description="The ingest gathers acknowledged callbacks this long (or up to apply_batch_max) into one message.",
    )

    # --- the queue -------------------------------------------------------------------------
    queue_name: str = "fleetpay"
    payout_queue_name: str = "fleetpay_payouts"
    notice_queue_name: str = Field(default="fleetpay_notices", description="Drivers' SMS: never in the way of money.")
    message_retries_max: int = Field(default=8, ge=0, le=100)
    message_min_backoff_ms: int = Field(default=500, ge=10)
    message_max_backoff_ms: int = Field(default=60_000, ge=100)
    inbox_sweep_after_s: int = Field(
        default=30, ge=1, description="Inbox rows still `received` after this are re-enqueued."
    )
    sweep_batch_max: int = Field(default=1000, ge=1, le=100_000)

    # --- the scheduler ------------------------------------------------------------------
    schedule_sweep_s: int = Field(default=30, ge=1, description="Inbox and payout sweeps.")
    schedule_reconcile_s: int = Field(default=900, ge=1, description="Reconciliation check.")
    schedule_mpesa_reconcile_s: int = Field(default=900, ge=1, description="Pull Transactions reconciliation.")
    close_delay_s: int = Field(default=300, ge=0, description="The daily close runs this long after the close time.")
    scheduler_standby_poll_s: float = Field(default=5.0, gt=0, description="How often a standby tries to take over.")

    # --- the fleet's business rules (docs/rules.md) -----------------------------------------------
    timezone: str = "Africa/Nairobi"
    daily_target_cents: int = Field(default=300_000, ge=0)
    fare_percent: int = Field(default=50, ge=1, le=100)
    split_mode: Literal["whole_payment", "exact"] = "whole_payment"
    target_sharing: bool = True
    instant_payouts: bool = True
    close_time: time = time(0, 0)
    operating_hours_start: time = time(6, 0)
    operating_hours_end: time = time(0, 0)
    validation_operating_hours_code: str = Field(
        default="C2B00016", description="Validation answer outside operating hours."
    )
    termination_misses: int = Field(default=3, ge=1)
    bonus_enabled: bool = False
    bonus_cents: int = Field(default=0, ge=0)
    vehicle_code_digits: int = Field(default=3, ge=1, le=10)
    driver_code_pattern: str = r"D\d{6}"
    amount_max_cents: int = Field(default=25_000_000, ge=100, description="KES 250,000 (M-Pesa's cap).")

    # --- B2C ------------------------------------------------------------------------------
    b2c_minimum_cents: int = Field(default=1000, ge=100)
    b2c_command_id: Literal["BusinessPayment", "SalaryPayment", "PromotionPayment"] = (
        "BusinessPayment"
    )
    b2c_maximum_cents: int = Field(
        default=25_000_000, ge=1000, description="Largest B2C payment (KES 250,000): more goes out as several payouts."
    )
    daraja_base_url: str = "http://127.0.0.1:8010"
    # One Daraja app per product (Daraja grants an app "either B2C or C2B"): C2B (register URLs,
    # Pull) and B2C (payments, Transaction Status, Account Balance). Unset, a product uses the
    # shared key, secret and shortcode below.
    daraja_consumer_key: SecretStr = SecretStr("sim-consumer-key")
    daraja_consumer_secret: SecretStr = SecretStr("sim-consumer-secret")
    daraja_short_code: str = "4165253"
    daraja_c2b_consumer_key: SecretStr | None = None
    daraja_c2b_consumer_secret: SecretStr | None = None
    daraja_c2b_short_code: str | None = Field(default=None, description="The paybill (C2B, Pull).")
    daraja_b2c_consumer_key: SecretStr | None = None
    daraja_b2c_consumer_secret: SecretStr | None = None
    daraja_b2c_short_code: str | None = Field(default=None, description="The B2C shortcode (PartyA).")
    daraja_requests_per_second: int = Field(
        default=20, ge=1, le=10_000, description="Most requests per second to each Daraja app, across all workers."
    )
    daraja_initiator_name: str = "apiuser"
    daraja_initiator_password: SecretStr = SecretStr("sim-initiator-password")
    daraja_certificate_path: str | None = None
    daraja_timeout_s: float = Field(default=15.0, gt=0, description="Read timeout of a Daraja call.")
    daraja_connect_timeout_s: float = Field(default=3.0, gt=0)
    daraja_retries_max: int = Field(default=5, ge=1, le=20, description="Attempts for what surely was not sent.")
    daraja_status_not_found_codes: tuple[str, ...] = Field(
        default=("R000001",),
        description="Transaction Status result codes that prove a request never reached M-Pesa.",
    )
    payout_pending_after_s: int = Field(default=30, ge=1, description="Pending payouts older than this are (re)sent.")
    payout_submitting_stale_s: int = Field(default=120, ge=1, description="A claim this old lost its worker: unknown.")
    payout_submitted_stale_s: int = Field(default=300, ge=1, description="Accepted, no result this long: ask status.")
    payout_status_interval_s: int = Field(default=60, ge=1, description="Least time between two status queries.")
    payout_status_backoff_max_s: int = Field(
        default=3600, ge=1, description="The wait between status queries of one payout doubles up to this."
    )
    payout_status_queries_max: int = Field(
        default=12, ge=1, le=1000, description="Status queries of one payout before it goes to review."
    )
    payout_sends_max: int = Field(
        default=5, ge=1, le=100,
        description="Times one payout is sent (the same OriginatorConversationID) before a 'not found' sends it to review.",
    )
    daraja_status_error_codes: tuple[str, ...] = Field(
        default=("2001", "8006", "18", "20", "21", "2028"),
        description="Status result codes that mean our query itself is refused (credential, initiator, "
        "product): the payout goes to review at once.",
    )
    pull_enabled: bool = Field(
        default=False, description="Compare with M-Pesa's Pull Transactions (the shortcode must be registered for Pull)."
    )
    schedule_float_check_s: int = Field(default=3600, ge=60, description="Account Balance query of the B2C account.")
    float_low_cents: int = Field(
        default=1_000_000, ge=0, description="Below this the B2C utility account is reported low (KES 10,000)."
    )

    # --- drivers' SMS and USSD (Africa's Talking; docs/notifications.md) -------------------
    sms_enabled: bool = Field(
        default=True, description="Send drivers their notices by SMS. Off: each is kept and marked skipped."
    )
    sms_base_url: str = Field(
        default="https://api.africastalking.com",
        description="Africa's Talking API: https://api.africastalking.com (live), https://api.sandbox.africastalking.com "
        "(sandbox); unset under `fleetpay dev`: the simulator.",
    )
    sms_username: str = Field(default="sandbox", description="The Africa's Talking app's username.")
    sms_api_key: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_SMS_API_KEY),
        description="The app's API key; the placeholder sends nothing outside `fleetpay dev` (notices are skipped).",
    )
    sms_sender_id: str | None = Field(default=None, description="Alphanumeric sender ID or short code (`from`); unset: AT's default.")
    sms_default_language: Literal["en", "sw"] = Field(default="en", description="A driver's language unless set for them.")
    sms_timeout_s: float = Field(default=10.0, gt=0, description="Read timeout of a send.")
    sms_connect_timeout_s: float = Field(default=3.0, gt=0)
    sms_sending_stale_s: int = Field(
        default=120, ge=1, description="A send claimed this long ago lost its worker: its answer counts as lost."
    )
    notify_payment: bool = Field(default=True, description="SMS: a payment applied to the driver (optional kind).")
    notify_payout_paid: bool = Field(default=True, description="SMS: a payout paid, with its M-Pesa receipt.")
    notify_payout_delayed: bool = Field(default=True, description="SMS: a payout delayed (in doubt) or in review.")
    notify_daily_summary: bool = Field(default=True, description="SMS: the day's summary at the close (optional kind).")
    notify_termination_warning: bool = Field(default=True, description="SMS: one miss before termination.")
    notify_deposit_refund: bool = Field(default=True, description="SMS: a deposit refund on its way.")
    africas_talking_token: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_AT_TOKEN),
        description="Secret path segment of Africa's Talking's URLs (`/at/{token}/ussd`, `/at/{token}/sms/delivery`), never "
        "the M-Pesa callback token; with the placeholder those URLs do not exist (404).",
    )
    africas_talking_ips: tuple[str, ...] = Field(
        default=(), description="With the allowlist on, the addresses Africa's Talking calls the USSD and delivery-report "
        "URLs from (ask them); empty: those URLs refuse every caller while the allowlist is on.",
    )
    ussd_statement_days: int = Field(default=7, ge=1, le=31, description="Days in a statement asked for by USSD.")

    worker_metrics_enabled: bool = Field(
        default=False, description="Workers export dramatiq's Prometheus metrics on port 9191."
    )

    # --- logs ------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    @field_validator("sms_api_key")
    @classmethod
    def _printable_key(cls, key: SecretStr) -> SecretStr:
        """A key read from a file often ends in a newline; a control character in a header would
        be refused by the HTTP library with the key in its error message."""
        value = key.get_secret_value().strip()
        if not value.isascii() or not value.isprintable():
            raise ValueError("FLEETPAY_SMS_API_KEY must be printable ASCII")
        return SecretStr(value)

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _psycopg2(cls, url: str | None) -> str | None:
        return None if url is None else sqlalchemy_url(url)

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        """Settings that would fail later, and loudly, are refused when they are read."""
        if self.b2c_minimum_cents % 100 or self.b2c_maximum_cents % 100:
            raise ValueError("FLEETPAY_B2C_MINIMUM_CENTS and FLEETPAY_B2C_MAXIMUM_CENTS must be whole shillings")
        if self.b2c_maximum_cents < 2 * self.b2c_minimum_cents:
            raise ValueError("FLEETPAY_B2C_MAXIMUM_CENTS must be at least twice FLEETPAY_B2C_MINIMUM_CENTS")
        for product in ("c2b", "b2c"):
            key, secret = getattr(self, f"daraja_{product}_consumer_key"), getattr(self, f"daraja_{product}_consumer_secret")
            if (key is None) != (secret is None):
                raise ValueError(f"FLEETPAY_DARAJA_{product.upper()}_CONSUMER_KEY and _CONSUMER_SECRET go together")
        return self

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("FLEETPAY_DATABASE_URL is not set (or run `fleetpay dev`).")
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError("FLEETPAY_REDIS_URL is not set (or run `fleetpay dev`).")
        return self.redis_url

    def accepted_callback_tokens(self) -> tuple[str, ...]:
        """The tokens a callback URL may carry: the current one, and the previous during a rotation."""
        previous = self.callback_token_previous.get_secret_value() if self.callback_token_previous else None
        return (self.callback_token.get_secret_value(), *((previous,) if previous else ()))

    def weak_secrets(self) -> list[str]:
        """What is wrong with the tokens the ingest serves with, one phrase each (no secret in it):
        a placeholder, a token shorter than ``SECRET_MIN_CHARS``, the admin token reused as the
        callback token."""
        problems: list[str] = []
        tokens = (
            ("FLEETPAY_CALLBACK_TOKEN", self.callback_token),
            ("FLEETPAY_CALLBACK_TOKEN_PREVIOUS", self.callback_token_previous),
            ("FLEETPAY_ADMIN_TOKEN", self.admin_token),
            # The placeholder turns Africa's Talking's URLs off: not a weakness, unless it is short.
            ("FLEETPAY_AFRICAS_TALKING_TOKEN", None if self.africas_talking_tokens() == () else self.africas_talking_token),
        )
        for variable, secret in tokens:
            value = secret.get_secret_value() if secret is not None else ""
            if secret is None or (variable.endswith("_PREVIOUS") and not value):
                continue  # no previous token: nothing is accepted in its name
            if value in (PLACEHOLDER_CALLBACK_TOKEN, PLACEHOLDER_ADMIN_TOKEN):
                problems.append(f"{variable} is the placeholder {value!r}")
            elif len(value) < SECRET_MIN_CHARS:
                problems.append(f"{variable} is shorter than {SECRET_MIN_CHARS} characters")
        if self.admin_token.get_secret_value() in self.accepted_callback_tokens():
            problems.append("FLEETPAY_ADMIN_TOKEN is also a callback token")
        at_tokens = self.africas_talking_tokens()
        if at_tokens and at_tokens[0] in (*self.accepted_callback_tokens(), self.admin_token.get_secret_value()):
            problems.append("FLEETPAY_AFRICAS_TALKING_TOKEN is also the callback or admin token")
        if at_tokens and not URL_SAFE.fullmatch(at_tokens[0]):
            problems.append("FLEETPAY_AFRICAS_TALKING_TOKEN may hold only letters, digits and - _ . ~ (it is a URL's path)")
        return problems

    def require_console_secret(self) -> None:
        """``WeakSecrets`` unless the console's cookie secret is fit (or under ``fleetpay dev``)."""
        value = self.console_secret.get_secret_value()
        if self.dev_mode:
            return
        if value == PLACEHOLDER_CONSOLE_SECRET:
            raise WeakSecrets(f"FLEETPAY_CONSOLE_SECRET is the placeholder {value!r}: set it to {SECRET_HINT}")
        if len(value) < SECRET_MIN_CHARS:
            raise WeakSecrets(f"FLEETPAY_CONSOLE_SECRET is shorter than {SECRET_MIN_CHARS} characters: set it to {SECRET_HINT}")

    def require_strong_secrets(self) -> None:
        """``WeakSecrets`` unless every token the ingest serves with is fit for it (or under
        ``fleetpay dev``, `dev_mode`)."""
        if self.dev_mode:
            return
        if problems := self.weak_secrets():
            each = "each" if len(problems) > 1 else "it"
            raise WeakSecrets(f"{'; '.join(problems)}: set {each} to {SECRET_HINT}")

    def daraja_app(self, product: Literal["c2b", "b2c"]) -> DarajaApp:
        """The credentials and shortcode fleetpay uses for one Daraja product."""
        own = (
            (self.daraja_c2b_consumer_key, self.daraja_c2b_consumer_secret, self.daraja_c2b_short_code)
            if product == "c2b"
            else (self.daraja_b2c_consumer_key, self.daraja_b2c_consumer_secret, self.daraja_b2c_short_code)
        )
        key, secret, short_code = own
        return DarajaApp(
            product=product,
            consumer_key=(key or self.daraja_consumer_key).get_secret_value(),
            consumer_secret=(secret or self.daraja_consumer_secret).get_secret_value(),
            short_code=short_code or self.daraja_short_code,
        )

    def africas_talking_tokens(self) -> tuple[str, ...]:
        """The token of Africa's Talking's URLs, or none (they are off) while it is the placeholder."""
        value = self.africas_talking_token.get_secret_value()
        return () if value == PLACEHOLDER_AT_TOKEN else (value,)

    def africas_talking_url(self, route: str) -> str:
        """The URL Africa's Talking is given for one route (``ussd``, ``sms/delivery``)."""
        return f"{self.public_base_url.rstrip('/')}/at/{self.africas_talking_token.get_secret_value()}/{route}"

    def notice_on(self, kind: str) -> bool:
        """Is this kind of driver notice sent (``notify_<kind>``; a statement is asked for, so always)?"""
        return self.sms_enabled and bool(getattr(self, f"notify_{kind}", True))

    def sms_refusal(self) -> str | None:
        """Why no SMS may be sent with these settings (the placeholder key outside `fleetpay dev`), or None."""
        if not self.dev_mode and self.sms_api_key.get_secret_value() == PLACEHOLDER_SMS_API_KEY:
            return f"FLEETPAY_SMS_API_KEY is the placeholder {PLACEHOLDER_SMS_API_KEY!r}"
        return None

    def callback_url(self, route: str) -> str:
        """The URL Safaricom is given for one callback route, e.g. ``c2b/confirm``."""
        token = self.callback_token.get_secret_value()
        return f"{self.public_base_url.rstrip('/')}/cb/{token}/{route}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
