"""The SMS client: Africa's Talking's messaging API over httpx, behind one small interface.

``send(to, message)`` makes one request (``POST {base}/version1/messaging``, form ``username``,
``to``, ``message`` and ``from`` when a sender ID is set; header ``apiKey``) and says what became of
it, never raising for the provider's sake:

- an answer naming our number (``schemas.africas_talking.parse_send_answer``): sent, refused for
  this number, not sent, or unknown (a status that says nothing sure);
- 429 and 503 (overloaded: the request was turned away), any other 4xx (400 a bad form, 401 a
  bad key) and a 3xx (a redirect is not followed: a wrong base URL): not sent;
- no connection, a connect timeout, a request that could not be built: not sent (it never left);
- a timeout or a broken connection after the request left, any other 5xx (a 500, or a 504 from a
  proxy after the SMS was queued), a success whose body cannot be read or that does not name our
  number: ``None``, the answer is lost (it may well have been sent).

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
# Raised before a byte of the request left: a refused connection, a header httpx will not send.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError,
                   httpx.UnsupportedProtocol, httpx.InvalidURL, UnicodeEncodeError)
TURNED_AWAY = frozenset({429, 503})  # overloaded: the request was not processed


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
        # Errors are kept by their type only: an exception's text may quote the request's headers.
        try:
            response = self.http.post(SEND_PATH, data=form, headers=headers)
        except NOT_SENT_ERRORS as error:
            return SendAnswer("not_sent", f"not sent: {type(error).__name__}"), None
        except httpx.HTTPError as error:  # read timeout, reset, protocol error: it may have been sent
            return None, type(error).__name__
        status = response.status_code
        if status in TURNED_AWAY or 300 <= status < 500:  # a redirect or a refusal: nothing was processed
            return SendAnswer("not_sent", f"HTTP {status}: {_printable(response.text)}"), None
        if status >= 300:
            return None, f"HTTP {status}"
        try:
            answer = parse_send_answer(decode_json(response.content), to)
        except InvalidCallback as error:
            return None, f"unreadable answer: {error.reason}"
        return (None, answer.status) if answer.verdict == "unknown" else (answer, None)


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text[:120])
