"""Outbound callbacks: the POSTs the simulator makes to a client's URLs, and their bookkeeping.

Callbacks run as asyncio tasks tracked by the sender, so ``/sim/reset`` and app shutdown can
cancel whatever is still pending instead of leaking posts into the next test. Every attempt —
including deliberately dropped ones — is recorded with its HTTP status, because "what did the
client actually receive?" is half of every failure test.

The URLs posted to carry the client's secret token (``/cb/<token>/…``): no log line shows it. The
simulator's own lines name them through ``redact_callback_token``, and httpx's ``HTTP Request: POST
…`` lines pass through ``RedactCallbackTokens`` (installed on the ``httpx`` logger by ``build_app``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from simulator.formats import now_eat
from simulator.state import CallbackAttempt, SimulatorState

log = structlog.get_logger("simulator.callbacks")

_RESPONSE_RECORD_LIMIT = 2_000
_CALLBACK_TOKEN = re.compile(r"(/(?:cb|at)/)[^/?#\s\"']+")


def redact_callback_token(text: str) -> str:
    """``…/cb/<token>/c2b/confirm`` → ``…/cb/[redacted]/c2b/confirm`` (and Africa's Talking's
    ``…/at/<token>/ussd``): fit for a log line."""
    return _CALLBACK_TOKEN.sub(r"\1[redacted]", text)


class RedactCallbackTokens(logging.Filter):
    """A logging filter that rewrites a record's message with every callback token redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_callback_token(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_httpx_logs() -> None:
    """httpx logs every request's URL at INFO: redact the tokens in them (once per process)."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(existing, RedactCallbackTokens) for existing in httpx_log.filters):
        httpx_log.addFilter(RedactCallbackTokens())


@dataclass(frozen=True)
class DeliveryPlan:
    """How one callback is delivered: after a delay, once or several times, or not at all."""

    delay_ms: int = 0
    copies: int = 1
    concurrent: bool = False
    gap_ms: int = 0
    drop: bool = False


@dataclass(frozen=True)
class Callback:
    """One body to post to one URL. ``ref`` ties it to a transaction (OCID or TransID)."""

    kind: str
    url: str
    body: Mapping[str, Any]
    ref: str
    plan: DeliveryPlan = DeliveryPlan()


class CallbackSender:
    """Posts callbacks with one shared ``httpx.AsyncClient`` and tracks the tasks doing it."""

    def __init__(self, state: SimulatorState, *, timeout_s: float) -> None:
        self._state = state
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so that it belongs to the event loop that serves the app.
        # trust_env=False: callbacks go straight to the client, never through an env proxy.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, trust_env=False,
                                             follow_redirects=False)
        return self._client

    # --- task tracking -----------------------------------------------------------------------
    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background; failures are logged, never lost silently."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("callback task failed", exc_info=task.exception())

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        """Cancel every pending delivery and wait until they are gone."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Shutdown: cancel pending deliveries, then close the HTTP client."""
        await self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- delivery ----------------------------------------------------------------------------
    async def post(self, kind: str, url: str, body: Mapping[str, Any], ref: str, *, copy: int = 1,
                   timeout_s: float | None = None) -> tuple[CallbackAttempt, Any]:
        """POST once and record it. Returns the attempt and the parsed JSON answer (or None)."""
        sent_at = now_eat()
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        text: str | None = None
        answer: Any = None
        try:
            response = await self._http().post(
                url, json=dict(body),
                timeout=self._timeout if timeout_s is None else httpx.Timeout(timeout_s),
            )
            status_code = response.status_code
            text = response.text
            try:
                answer = response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                answer = None
        except httpx.TimeoutException as exc:
            error = f"timeout: {type(exc).__name__}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt = self._state.record_callback(
            kind=kind, url=url, ref=ref, body=dict(body), copy=copy, sent_at=sent_at,
            duration_ms=round((time.perf_counter() - started) * 1000, 1), status_code=status_code,
            error=error, response_body=None if text is None else text[:_RESPONSE_RECORD_LIMIT],
        )
        if error is not None or (status_code is not None and status_code >= 400):
            log.info("callback not acknowledged", kind=kind, url=redact_callback_token(url), ref=ref,
                     status_code=status_code, error=error and redact_callback_token(error))
        return attempt, answer

    async def deliver(self, callback: Callback) -> None:
        """Deliver one callback according to its plan (delay, copies, or a deliberate drop)."""
        plan = callback.plan
        if plan.delay_ms:
            await asyncio.sleep(plan.delay_ms / 1000)
        if plan.drop:
            self._state.record_callback(
                kind=callback.kind, url=callback.url, ref=callback.ref, body=dict(callback.body),
                copy=1, sent_at=now_eat(), duration_ms=None, status_code=None,
                error="dropped by fault injection", response_body=None, dropped=True,
            )
            return
        if plan.concurrent:
            await asyncio.gather(*(self.post(callback.kind, callback.url, callback.body,
                                             callback.ref, copy=n)
                                   for n in range(1, plan.copies + 1)))
            return
        for n in range(1, plan.copies + 1):
            if n > 1 and plan.gap_ms:
                await asyncio.sleep(plan.gap_ms / 1000)
            await self.post(callback.kind, callback.url, callback.body, callback.ref, copy=n)

    async def deliver_in_order(self, callbacks: Sequence[Callback]) -> None:
        """Deliver several callbacks one after another (a queue timeout, then the result)."""
        for callback in callbacks:
            await self.deliver(callback)
