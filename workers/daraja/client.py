"""The Daraja client: B2C payments, Transaction Status, Account Balance, Pull Transactions.

One small interface (``DarajaClient``) over httpx, with explicit timeouts, the shared token cache
and the retry policy of ``workers.daraja.outcomes``. It never mints an OriginatorConversationID:
the caller passes the payout's own, every time.
"""

from __future__ import annotations

import base64
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import redis
import structlog
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from fleetpay.settings import Settings
from workers.daraja.credential import security_credential
from workers.daraja.outcomes import Answer, Outcome, classify
from workers.daraja.token_cache import TokenCache, parse_expires_in

log = structlog.get_logger("fleetpay.daraja")

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
PULL_PATH = "/pulltransactions/v1/query"
REGISTER_PATH = "/mpesa/c2b/v2/registerurl"
SIMULATE_PATH = "/mpesa/c2b/v2/simulate"
TOKEN_PATH = "/oauth/v1/generate?grant_type=client_credentials"
PULL_PAGES_MAX = 10_000
# Errors raised before a single byte of the request could have reached Daraja.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class DarajaError(RuntimeError):
    """Daraja could not be used at all (no token, no certificate): nothing was sent."""


class DarajaClient:
    """Parameters:
      settings: base URL, credentials, shortcode, callback URLs, timeouts and retries.
      tokens: the shared OAuth token cache.
      http: an httpx client (tests pass their own); by default one with the settings' timeouts.
    """

    def __init__(self, settings: Settings, tokens: TokenCache, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.http = http or httpx.Client(
            base_url=settings.daraja_base_url,
            timeout=httpx.Timeout(settings.daraja_timeout_s, connect=settings.daraja_connect_timeout_s),
        )

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis) -> DarajaClient:
        daraja: DarajaClient
        daraja = cls(settings, TokenCache(client, lambda: daraja.fetch_token()))
        return daraja

    # --- the APIs ---------------------------------------------------------------------------

    def b2c_payment(self, *, originator_conversation_id: str, msisdn: str, amount_cents: int, remarks: str) -> Answer:
        assert amount_cents > 0 and amount_cents % 100 == 0, "B2C pays whole shillings"
        return self.post(
            B2C_PATH,
            {
                "OriginatorConversationID": originator_conversation_id,
                "InitiatorName": self.settings.daraja_initiator_name,
                "SecurityCredential": self.credential,
                "CommandID": self.settings.b2c_command_id,
                "Amount": str(amount_cents // 100),
                "PartyA": self.settings.daraja_short_code,
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
            STATUS_PATH,
            {
                "Initiator": self.settings.daraja_initiator_name,
                "SecurityCredential": self.credential,
                "CommandID": "TransactionStatusQuery",
                "OriginalConversationID": originator_conversation_id,
                "PartyA": self.settings.daraja_short_code,
                "IdentifierType": "4",
                "ResultURL": self.settings.callback_url("status/result"),
                "QueueTimeOutURL": self.settings.callback_url("status/timeout"),
                "Remarks": "payout status",
                "Occasion": "fleetpay",
            },
        )

    def register_c2b_urls(self) -> Answer:
        """Point the paybill's C2B callbacks at our ingest (once in production; sandbox: freely)."""
        return self.post(
            REGISTER_PATH,
            {
                "ShortCode": self.settings.daraja_short_code,
                "ResponseType": "Completed",
                "ConfirmationURL": self.settings.callback_url("c2b/confirm"),
                "ValidationURL": self.settings.callback_url("c2b/validate"),
            },
        )

    def simulate_c2b(self, *, account: str, amount_kes: int, msisdn: str, trans_id: str | None = None) -> Answer:
        """Sandbox (and simulator) only: make a customer pay the paybill. ``TransID`` is the
        simulator's extension, to replay a known receipt."""
        body: dict[str, Any] = {
            "ShortCode": self.settings.daraja_short_code,
            "CommandID": "CustomerPayBillOnline",
            "Amount": str(amount_kes),
            "Msisdn": msisdn,
            "BillRefNumber": account,
        }
        if trans_id:
            body["TransID"] = trans_id
        return self.post(SIMULATE_PATH, body)

    def pull_transactions(self, *, start: str, end: str, offset: int) -> dict[str, Any]:
        """One page of C2B payments M-Pesa has for our shortcode (the last 48 h only)."""
        response = self.http.post(
            PULL_PATH,
            json={"ShortCode": self.settings.daraja_short_code, "StartDate": start, "EndDate": end, "OffSetValue": str(offset)},
            headers={"Authorization": f"Bearer {self.tokens.get()}"},
        )
        response.raise_for_status()
        return response.json()

    def pull_all(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every C2B payment M-Pesa lists for [start, end], page by page (bounded)."""
        rows: list[dict[str, Any]] = []
        for _ in range(PULL_PAGES_MAX):
            page = self.pull_transactions(
                start=start.strftime("%Y-%m-%d %H:%M:%S"), end=end.strftime("%Y-%m-%d %H:%M:%S"), offset=len(rows)
            )
            found = [row for group in page.get("Response") or [] for row in (group or [])]
            if str(page.get("ResponseCode")) != "1000" or not found:
                return rows
            rows.extend(found)
        raise RuntimeError("Pull Transactions kept paging past its bound")

    # --- plumbing ---------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any]) -> Answer:
        """POST with retries for what surely never reached Daraja; anything else is returned."""
        retrying = Retrying(
            retry=retry_if_result(lambda answer: answer.outcome is Outcome.NOT_SENT),
            stop=stop_after_attempt(self.settings.daraja_retries_max),
            wait=wait_exponential_jitter(multiplier=0.2, max=5),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        return retrying(self._attempt, path, body)

    def _attempt(self, path: str, body: dict[str, Any]) -> Answer:
        token = self.tokens.get()
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
            self.tokens.refresh(stale=token)
        return answer

    def fetch_token(self) -> tuple[str, int]:
        secret = f"{self.settings.daraja_consumer_key.get_secret_value()}:{self.settings.daraja_consumer_secret.get_secret_value()}"
        try:
            response = self.http.get(TOKEN_PATH, headers={"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()})
            response.raise_for_status()
            body = response.json()
            return str(body["access_token"]), parse_expires_in(body["expires_in"])
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise DarajaError(f"no Daraja token: {error!r}") from error

    @cached_property
    def credential(self) -> str:
        path = self.settings.daraja_certificate_path
        if not path:
            raise DarajaError("FLEETPAY_DARAJA_CERTIFICATE_PATH is not set")
        return security_credential(self.settings.daraja_initiator_password.get_secret_value(), Path(path).read_bytes())
