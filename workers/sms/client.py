"""The SMS client: Africa's Talking's messaging API over httpx, behind one small interface.

``send(to, message)`` makes one request (``POST {base}/version1/messaging``, form ``username``,
``to``, ``message`` and ``from`` when a sender ID is set; header ``apiKey``) and says what became of
it, never raising for the provider's sake:

- an answer naming our number (``schemas.africas_talking.parse_send_answer``): sent, refused for
  this number, or not sent;
- an HTTP error status (401 bad key, 5xx): not sent (the gateway took nothing);
- no connection, or a connect timeout: not sent (the request never left);
- a timeout or a broken connection after the request left, or a success whose body cannot be
  read: ``None``, the answer is lost (it may well have been sent).

The API key travels in a header: neither httpx's request log lines (method and URL) nor the
errors kept on a notice ever show it.
"""

from __future__ import annotations

import httpx
import structlog

from fleetpay.settings import Settings
from schemas.africas_talking import SendAnswer, parse_send_answer
from schemas.callbacks import InvalidCallback
from schemas.json_body import decode_json

log = structlog.get_logger("fleetpay.sms")

SEND_PATH = "/version1/messaging"
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class SmsClient:
    """Parameters:
      settings: the Africa's Talking base URL, username, API key, sender ID and timeouts.
      http: an httpx client (tests may pass their own); by default one with the settings' timeouts.
    """

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self.http = http or httpx.Client(
            base_url=settings.sms_base_url,
            timeout=httpx.Timeout(settings.sms_timeout_s, connect=settings.sms_connect_timeout_s),
        )

    def send(self, to: str, message: str) -> tuple[SendAnswer | None, str | None]:
        """(the answer, or None when it was lost; what went wrong, or None)."""
        form = {"username": self.settings.sms_username, "to": to, "message": message}
        if self.settings.sms_sender_id:
            form["from"] = self.settings.sms_sender_id
        headers = {"apiKey": self.settings.sms_api_key.get_secret_value(), "Accept": "application/json"}
        try:
            response = self.http.post(SEND_PATH, data=form, headers=headers)
        except NOT_SENT_ERRORS as error:
            return SendAnswer("not_sent", f"no connection: {type(error).__name__}"), None
        except httpx.HTTPError as error:  # read timeout, reset, protocol error: it may have been sent
            return None, f"{type(error).__name__}: {error}"[:300]
        if response.status_code >= 300:
            return SendAnswer("not_sent", f"HTTP {response.status_code}: {response.text[:120]}"), None
        try:
            return parse_send_answer(decode_json(response.content), to), None
        except InvalidCallback as error:
            return None, f"unreadable answer: {error.reason}"
