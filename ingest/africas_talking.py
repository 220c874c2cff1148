"""Africa's Talking's callbacks: the drivers' USSD menu, and SMS delivery reports.

Both are authenticated like every callback, by a secret path token of their own
(``FLEETPAY_AFRICAS_TALKING_TOKEN``: the M-Pesa callback token is never given to a second company;
while it is the placeholder these URLs do not exist) and, with the allowlist on, by the source
address (``FLEETPAY_AFRICAS_TALKING_IPS``). They are size-limited and come as forms
(``application/x-www-form-urlencoded``). A malformed request is kept in the inbox (``rejected``,
its reason) and answered 400 ``Rejected: <reason>``.

- ``POST /at/{token}/ussd``: the menu of ``fleetpay.ussd_menu``, answered at once (Africa's
  Talking waits a few seconds at most; the answer reads only indexed rows). The caller is who owns
  ``phoneNumber``; an unknown number gets a polite ``END``. A confirmed statement is written as a
  notice (one per driver and day) and sent by SMS, enqueued once the answer is sent. PostgreSQL
  down: ``END`` asking to try later (still 200: the phone shows it instead of the gateway's error).
- ``POST /at/{token}/sms/delivery``: stored in the inbox (``sms_delivery``), acknowledged
  ``200 OK``, applied by the worker onto its notice; never changes money.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import anyio.to_thread
import structlog
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect, Request
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse, Response

from db.balances import driver_by_msisdn, statement_facts, ussd_facts
from fleetpay import ussd_menu
from ingest.bodies import BodyTooLarge, body_text, read_limited
from ingest.callers import client_ip
from ingest.inbox_writer import DatabaseUnavailable, InboxRecord
from money.notices import statement_asked
from schemas.africas_talking import parse_delivery_report, parse_ussd_request
from schemas.callbacks import InvalidCallback
from schemas.parsing import business_date, normalise_msisdn
from workers.messages import send_notification_message

if TYPE_CHECKING:
    from ingest.app import Ingest

log = structlog.get_logger("fleetpay.ingest")

FORM_BYTES_MAX = 8 * 1024  # a USSD request or a delivery report is a few hundred bytes
FORM_FIELDS_MAX = 30
FORM_TYPE = "application/x-www-form-urlencoded"
USSD_KIND, DELIVERY_KIND = "ussd", "sms_delivery"
UNAVAILABLE = "END fleetpay is unavailable just now. Please try again in a few minutes."


def _rejected(reason: str, status_code: int = 400) -> Response:
    return PlainTextResponse(f"Rejected: {reason}", status_code)


class AfricasTalking:
    """The two routes, sharing the ingest's authentication and inbox."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.settings = ingest.settings

    async def read_form(self, request: Request, kind: str) -> dict[str, str] | Response:
        """The form's fields, or the answer refusing it (the refused body kept for inspection)."""
        if (refusal := self.ingest.authenticate(request, tokens=self.settings.africas_talking_tokens(),
                                                allowlist=self.settings.africas_talking_ips)) is not None:
            return refusal
        source_ip = client_ip(request, self.settings.trusted_proxies)
        try:
            raw = await read_limited(request, min(FORM_BYTES_MAX, self.settings.body_max_bytes))
        except BodyTooLarge as error:
            await self.keep(kind, error.prefix, f"body_too_large:{error.size}", source_ip)
            return _rejected("body_too_large", 413)
        except ClientDisconnect:
            return Response(status_code=400)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            await self.keep(kind, raw, "content_type", source_ip)
            return _rejected("content_type", 415)
        try:
            fields = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                               max_num_fields=FORM_FIELDS_MAX)
        except (UnicodeDecodeError, ValueError):
            await self.keep(kind, raw, "not_a_form", source_ip)
            return _rejected("not_a_form")
        return dict(fields)

    async def keep(self, kind: str, raw: bytes, reason: str, source_ip: str | None) -> None:
        digest = hashlib.sha256(reason.encode() + b"\n" + raw).hexdigest()
        await self.ingest.keep(InboxRecord(kind, f"rejected:{digest}", body_text(raw), "rejected", reason, source_ip))

    async def ussd(self, request: Request) -> Response:
        form = await self.read_form(request, USSD_KIND)
        if isinstance(form, Response):
            return form
        try:
            asked = parse_ussd_request(form)
        except InvalidCallback as error:
            await self.keep(USSD_KIND, json.dumps(form).encode(), error.reason,
                            client_ip(request, self.settings.trusted_proxies))
            return _rejected(error.reason)
        try:
            reply, notice_id = await anyio.to_thread.run_sync(self.menu, asked.session_id, asked.phone_number, asked.text)
        except Exception as error:  # noqa: BLE001 — PostgreSQL down: the phone says so
            log.error("ussd_unavailable", error=str(error))
            return PlainTextResponse(UNAVAILABLE)
        # Enqueued once the answer is sent: a slow Redis never makes the phone wait.
        return PlainTextResponse(reply.text, background=None if notice_id is None else BackgroundTask(
            anyio.to_thread.run_sync, self.send_notice, notice_id))

    def send_notice(self, notification_id: int) -> None:
        """Enqueue a committed notice; if Redis does not take it, the notice sweep sends it."""
        try:
            self.ingest.broker.enqueue(send_notification_message(notification_id,
                                                                 queue_name=self.settings.notice_queue_name))
        except Exception as error:  # noqa: BLE001 — committed: sweep_notifications sends it
            log.warning("notice_not_enqueued_sweep_will_send", notification_id=notification_id, error=str(error))

    def menu(self, session_id: str, phone_number: str, text: str) -> tuple[ussd_menu.Reply, int | None]:
        """The reply, and the statement notice it wrote (None if none)."""
        msisdn = normalise_msisdn(phone_number)
        today = business_date(datetime.now(self.ingest.tz), close_time=self.settings.close_time,
                              tz=self.settings.timezone)
        with Session(self.ingest.engine) as session, session.begin():
            driver = driver_by_msisdn(session, msisdn) if msisdn else None
            if driver is None:
                return ussd_menu.answer(text, None), None
            reply = ussd_menu.answer(text, ussd_facts(session, driver, today, self.settings))
            notice_id = None
            if reply.statement_requested:  # one a day: each is several paid segments
                facts = statement_facts(session, driver, today, self.settings.ussd_statement_days, self.settings)
                notice_id, same_session = statement_asked(session, driver, day=today, session_id=session_id, facts=facts)
                log.info("ussd_statement_asked", driver=driver.code, new=notice_id is not None)
                if notice_id is None and not same_session:  # a gateway re-posting our step: still "on its way"
                    reply = ussd_menu.statement_sent_already(driver.language or self.settings.sms_default_language)
        return reply, notice_id

    async def delivery_report(self, request: Request) -> Response:
        form = await self.read_form(request, DELIVERY_KIND)
        if isinstance(form, Response):
            return form
        source_ip = client_ip(request, self.settings.trusted_proxies)
        body = json.dumps(form, sort_keys=True)
        try:
            report = parse_delivery_report(form)
        except InvalidCallback as error:
            await self.keep(DELIVERY_KIND, body.encode(), error.reason, source_ip)
            return _rejected(error.reason)
        external_id = f"{report.message_id}:{report.status}"
        try:
            await self.ingest.writer.write(InboxRecord(DELIVERY_KIND, external_id, body, source_ip=source_ip,
                                                       body_digest=hashlib.sha256(body.encode()).hexdigest()))
        except DatabaseUnavailable:
            return PlainTextResponse("Temporarily unavailable", 503)
        return PlainTextResponse("OK")

    def endpoints(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        return {"ussd": self.ussd, "sms/delivery": self.delivery_report}
