"""The Daraja client: B2C payments, Transaction Status, Account Balance, C2B URLs, Pull Transactions.

One small interface (``DarajaClient``) over httpx, with explicit timeouts, the retry policy of
``workers.daraja.outcomes``, and one Daraja app per product (docs/daraja.md §1): C2B calls (register
URLs, simulate, Pull) use the C2B app and the paybill, B2C calls (payment, Transaction Status,
Account Balance) the B2C app and its shortcode as PartyA. Each app has its own OAuth token, shared
by every worker through Redis, and its own rate limit, also shared through Redis (dramatiq's window
rate limiter): Daraja's spike arrest spreads an app's allowed rate over each second, so no burst of
worker threads goes past ``FLEETPAY_DARAJA_REQUESTS_PER_SECOND``. It never mints an
OriginatorConversationID: the caller passes the payout's own, every time.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import httpx
import redis
import structlog
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from fleetpay.settings import DarajaApp, Settings
from workers.daraja.credential import security_credential
from workers.daraja.outcomes import Answer, Outcome, classify
from workers.daraja.token_cache import TokenCache, parse_expires_in

log = structlog.get_logger("fleetpay.daraja")

Product = Literal["c2b", "b2c"]
B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
BALANCE_PATH = "/mpesa/accountbalance/v1/query"
PULL_PATH = "/pulltransactions/v1/query"
REGISTER_PATH = "/mpesa/c2b/v2/registerurl"
SIMULATE_PATH = "/mpesa/c2b/v2/simulate"
TOKEN_PATH = "/oauth/v1/generate?grant_type=client_credentials"
PULL_PAGES_MAX = 10_000
PULL_OK_CODES = frozenset({"1000", "1001"})  # success; none (docs/daraja.md §5.3)
RATE_LIMIT_WAIT_MAX_S = 30.0  # past this a request waiting for its slot counts as not sent
# Errors raised before a single byte of the request could have reached Daraja.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class DarajaError(RuntimeError):
    """Daraja could not be used at all (no token, no certificate): nothing was sent."""


class PullFailed(DarajaError):
    """Pull Transactions answered with an error (product not enabled, auth, timeout): one line."""


def app_key(app: DarajaApp) -> str:
    """Names an app in Redis keys without its secret: apps that share credentials share a token."""
    return hashlib.sha256(app.consumer_key.encode()).hexdigest()[:16]


class DarajaClient:
    """Parameters:
      settings: base URL, the apps' credentials and shortcodes, callback URLs, timeouts, retries,
        and the rate limit per app.
      client: the Redis client shared with the broker (tokens and rate limits live there).
      http: an httpx client (tests pass their own); by default one with the settings' timeouts.
    """

    def __init__(self, settings: Settings, client: redis.Redis, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.Client(
            base_url=settings.daraja_base_url,
            timeout=httpx.Timeout(settings.daraja_timeout_s, connect=settings.daraja_connect_timeout_s),
        )
        self.apps: dict[Product, DarajaApp] = {product: settings.daraja_app(product) for product in ("c2b", "b2c")}
        backend = RedisBackend(client=client)
        self.tokens: dict[Product, TokenCache] = {}
        self.limits: dict[Product, WindowRateLimiter] = {}
        for product, app in self.apps.items():
            self.tokens[product] = TokenCache(
                client, lambda app=app: self.fetch_token(app), key=f"fleetpay:daraja:token:{app_key(app)}"
            )
            self.limits[product] = WindowRateLimiter(
                backend, f"fleetpay:daraja:rate:{app_key(app)}", limit=settings.daraja_requests_per_second, window=1
            )

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis) -> DarajaClient:
        return cls(settings, client)

    # --- the APIs ---------------------------------------------------------------------------

    def b2c_payment(self, *, originator_conversation_id: str, msisdn: str, amount_cents: int, remarks: str) -> Answer:
        assert amount_cents > 0 and amount_cents % 100 == 0, "B2C pays whole shillings"
        assert amount_cents <= self.settings.b2c_maximum_cents, "a payout above the B2C maximum is split before"
        return self.post(
            "b2c",
            B2C_PATH,
            {
                "OriginatorConversationID": originator_conversation_id,
                "InitiatorName": self.settings.daraja_initiator_name,
                "SecurityCredential": self.credential,
                "CommandID": self.settings.b2c_command_id,
                "Amount": str(amount_cents // 100),
                "PartyA": self.apps["b2c"].short_code,
                "PartyB": msisdn,
                "Remarks": remarks[:100],
                "QueueTimeOutURL": self.settings.callback_url("b2c/timeout"),
                "ResultURL": self.settings.callback_url("b2c/result"),
                "Occassion": "fleetpay",  # sic: Daraja's spelling
            },
        )

    def transaction_status(self, *, originator_conversation_id: str) -> Answer:
        """Ask what became of the B2C request we sent as ``originator_conversation_id``; the
        answer comes to ``status/result``. Querying is harmless, so ambiguity only means 'later'."""
        return self.post(
            "b2c",
            STATUS_PATH,
            {
                "Initiator": self.settings.daraja_initiator_name,
                "SecurityCredential": self.credential,
                "CommandID": "TransactionStatusQuery",
                "OriginalConversationID": originator_conversation_id,
                "PartyA": self.apps["b2c"].short_code,
                "IdentifierType": "4",
                "ResultURL": self.settings.callback_url("status/result"),
                "QueueTimeOutURL": self.settings.callback_url("status/timeout"),
                "Remarks": "payout status",
                "Occasion": "fleetpay",
            },
        )

    def account_balance(self) -> Answer:
        """Ask the balances of the B2C shortcode's accounts (the Utility account pays B2C); the
        answer comes to ``balance/result``."""
        return self.post(
            "b2c",
            BALANCE_PATH,
            {
                "Initiator": self.settings.daraja_initiator_name,
                "SecurityCredential": self.credential,
                "CommandID": "AccountBalance",
                "PartyA": self.apps["b2c"].short_code,
                "IdentifierType": "4",
                "Remarks": "float check",
                "QueueTimeOutURL": self.settings.callback_url("balance/timeout"),
                "ResultURL": self.settings.callback_url("balance/result"),
            },
        )

    def register_c2b_urls(self) -> Answer:
        """Point the paybill's C2B callbacks at our ingest (once in production; sandbox: freely)."""
        return self.post(
            "c2b",
            REGISTER_PATH,
            {
                "ShortCode": self.apps["c2b"].short_code,
                "ResponseType": "Completed",
                "ConfirmationURL": self.settings.callback_url("c2b/confirm"),
                "ValidationURL": self.settings.callback_url("c2b/validate"),
            },
        )

    def simulate_c2b(self, *, account: str, amount_kes: int, msisdn: str, trans_id: str | None = None) -> Answer:
        """Sandbox (and simulator) only: make a customer pay the paybill. ``TransID`` is the
        simulator's extension, to replay a known receipt."""
        body: dict[str, Any] = {
            "ShortCode": self.apps["c2b"].short_code,
            "CommandID": "CustomerPayBillOnline",
            "Amount": str(amount_kes),
            "Msisdn": msisdn,
            "BillRefNumber": account,
        }
        if trans_id:
            body["TransID"] = trans_id
        return self.post("c2b", SIMULATE_PATH, body)

    def pull_transactions(self, *, start: str, end: str, offset: int) -> dict[str, Any]:
        """One page of C2B payments M-Pesa has for our paybill (the last 48 h only); ``PullFailed``
        with one line when Daraja refuses or does not answer."""
        body = {"ShortCode": self.apps["c2b"].short_code, "StartDate": start, "EndDate": end, "OffSetValue": str(offset)}
        for _ in range(2):  # once more with a fresh token if the cached one was refused
            token = self.tokens["c2b"].get()
            if not self._wait_for_slot("c2b"):
                raise PullFailed("Pull Transactions not asked: no request slot came free (rate limit)")
            try:
                response = self.http.post(PULL_PATH, json=body, headers={"Authorization": f"Bearer {token}"})
            except httpx.HTTPError as error:
                raise PullFailed(f"Pull Transactions did not answer: {error.__class__.__name__}") from error
            try:
                decoded = response.json()
            except ValueError:
                decoded = None
            if not classify(response.status_code, decoded).invalid_token:
                break
            self.tokens["c2b"].refresh(stale=token)
        if response.status_code != 200 or not isinstance(decoded, dict):
            code = decoded.get("errorCode") if isinstance(decoded, dict) else None
            message = decoded.get("errorMessage") if isinstance(decoded, dict) else None
            raise PullFailed(f"Pull Transactions refused: HTTP {response.status_code} {code or ''} {message or ''}".strip())
        return decoded

    def pull_all(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every C2B payment M-Pesa lists for [start, end], page by page (bounded)."""
        rows: list[dict[str, Any]] = []
        for _ in range(PULL_PAGES_MAX):
            page = self.pull_transactions(
                start=start.strftime("%Y-%m-%d %H:%M:%S"), end=end.strftime("%Y-%m-%d %H:%M:%S"), offset=len(rows)
            )
            code = str(page.get("ResponseCode"))
            if code not in PULL_OK_CODES:  # e.g. 500: a failure, not the end of the list
                raise PullFailed(f"Pull Transactions answered ResponseCode {code}: {page.get('ResponseMessage') or ''}".strip())
            found = [row for group in page.get("Response") or [] for row in (group or [])]
            if code == "1001" or not found:  # 1001: no (more) transactions
                return rows
            rows.extend(found)
        raise PullFailed("Pull Transactions kept paging past its bound")

    # --- plumbing ---------------------------------------------------------------------------

    def post(self, product: Product, path: str, body: dict[str, Any]) -> Answer:
        """POST with ``product``'s app, with retries for what surely never reached Daraja; anything
        else is returned."""
        retrying = Retrying(
            retry=retry_if_result(lambda answer: answer.outcome is Outcome.NOT_SENT),
            stop=stop_after_attempt(self.settings.daraja_retries_max),
            wait=wait_exponential_jitter(multiplier=0.2, max=5),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        return retrying(self._attempt, product, path, body)

    def _attempt(self, product: Product, path: str, body: dict[str, Any]) -> Answer:
        tokens = self.tokens[product]
        token = tokens.get()
        if not self._wait_for_slot(product):
            return Answer(Outcome.NOT_SENT, description="rate limit: no slot in time")
        try:
            response = self.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        except NOT_SENT_ERRORS as error:
            log.warning("daraja_not_sent", path=path, error=repr(error))
            return Answer(Outcome.NOT_SENT, description=repr(error))
        except httpx.TransportError as error:
            log.warning("daraja_ambiguous", path=path, error=repr(error))
            return Answer(Outcome.AMBIGUOUS, description=repr(error))
        try:
            decoded = response.json()
        except ValueError:
            decoded = None
        answer = classify(response.status_code, decoded)
        if answer.invalid_token:
            tokens.refresh(stale=token)
        return answer

    def _wait_for_slot(self, product: Product) -> bool:
        """Take one of the app's requests for this second (shared by every worker through Redis);
        False if none came free within ``RATE_LIMIT_WAIT_MAX_S``."""
        deadline = time.monotonic() + RATE_LIMIT_WAIT_MAX_S
        while True:
            with self.limits[product].acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return True
            if time.monotonic() > deadline:
                log.warning("daraja_rate_limit_wait_too_long", product=product)
                return False
            time.sleep(0.02 + random.random() * 0.05)  # the next second's slots, without a stampede

    def fetch_token(self, app: DarajaApp) -> tuple[str, int]:
        secret = f"{app.consumer_key}:{app.consumer_secret}"
        try:
            response = self.http.get(TOKEN_PATH, headers={"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()})
            response.raise_for_status()
            body = response.json()
            return str(body["access_token"]), parse_expires_in(body["expires_in"])
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise DarajaError(f"no Daraja token for the {app.product} app: {error!r}") from error

    @cached_property
    def credential(self) -> str:
        path = self.settings.daraja_certificate_path
        if not path:
            raise DarajaError("FLEETPAY_DARAJA_CERTIFICATE_PATH is not set")
        return security_credential(self.settings.daraja_initiator_password.get_secret_value(), Path(path).read_bytes())
