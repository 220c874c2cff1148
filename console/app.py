"""``fleetpay console``: the web page where a fleet's staff see the money and act on it.

A Starlette app of its own (never on the public callback port), server-rendered with Jinja2, no
JavaScript. Every page needs a logged-in user (``console.auth``); what a user may do is their
role's (viewer < operator < approver < admin), checked on the server for every route. Money moves
only through ``money.requests``: an operator asks, another person (approver or admin) approves, and
the same library function the CLI calls runs. Pages read through ``db.statements`` and the other
storage functions; nothing here decides about money.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.auth import (
    LoginNeeded,
    LoginThrottle,
    NotAllowed,
    Viewer,
    check_csrf,
    csrf_token,
    log_in,
    log_out,
    session_user,
)
from console.charts import bars
from db import fleet, notifications
from db.audit import recent_actions, record_action
from db.balances import driver_balance
from db.engine import make_engine, make_sessionmaker
from db.payouts import list_payouts, payout_detail
from db.statements import dashboard as dashboard_numbers
from db.reconcile import run_check
from db.statements import closes, reconciliations, statement
from db.users import (
    USER_ROLES,
    UserError,
    WrongCurrentPassword,
    administer,
    authenticate,
    change_own_password,
    end_sessions,
    get_user,
    list_users,
)
from fleetpay.passwords import WeakPassword
from fleetpay.people import BadName
from fleetpay.payout_states import OPEN, RESOLVABLE_STATES, STATE_ORDER
from fleetpay.settings import Settings
from money import requests as money_requests
from money.unmatched import list_unmatched, why_unmatched
from schemas.parsing import business_date

log = structlog.get_logger("fleetpay.console")

HERE = Path(__file__).parent
PAGE_ROWS = 100
ACCOUNTS = ("payable", "deposit", "target")
NOTICES_SHOWN = 10  # a driver's latest SMS on their page
# No script at all; styles from our own file; nothing may frame the console.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


# What may be asked about a payout from the payouts page, and the button's words.
PAYOUT_ACTIONS = (("payout_approve", "Ask to release"), ("payout_withdraw", "Ask to withdraw"),
                  ("payout_retry", "Ask to pay again"), ("payout_resolve", "Ask M-Pesa what became of it"))


def payout_actions(payout: dict[str, Any]) -> list[tuple[str, str]]:
    """The requests that make sense for a payout as listed (the library refuses the rest anyway)."""
    actions = dict(PAYOUT_ACTIONS)
    if payout["state"] == "pending" and payout["requires_approval"]:
        return [(kind, actions[kind]) for kind in ("payout_approve", "payout_withdraw")]
    if payout["state"] == "failed" and payout["result_code"] != "withdrawn":
        return [("payout_retry", actions["payout_retry"])]
    if payout["state"] in RESOLVABLE_STATES:
        return [("payout_resolve", actions["payout_resolve"])]
    return []


USER_CHANGE_DONE = {"add": "added", "role": "role changed", "disable": "disabled (their sessions and API tokens end)",
                    "enable": "enabled", "password": "password set (their sessions and API tokens end)"}
BODY_MAX_BYTES = 64 * 1024  # the console's forms are small; a bigger body is refused before it is read
USER_LOCKOUT_FACTOR = 4
NUMBER = re.compile(r"[0-9]{1,12}")


class BadInput(Exception):
    """A query, path or form value no page takes (a NUL, a number no shilling amount reaches): 400."""


def number(raw: str, what: str) -> int:
    """A whole number as typed: ASCII digits only, at most 12 (``int()`` takes '²' and 5,000 digits)."""
    if not NUMBER.fullmatch(raw):
        raise BadInput(f"{what} is a whole number of at most 12 digits")
    return int(raw)


def check_text(values: Any) -> None:
    for value in values:
        if isinstance(value, str) and ("\x00" in value or len(value) > 2_000):
            raise BadInput("a value holds a NUL character or is too long")


def kes(cents: int | None) -> str:
    cents = int(cents or 0)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


class BodyLimit:
    """Refuse (413) a request body over ``BODY_MAX_BYTES``, by its length or as it streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > BODY_MAX_BYTES:
            await PlainTextResponse("request too large", status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > BODY_MAX_BYTES:
                raise BadInput("request too large")
            return message

        await self.app(scope, counted, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


class Console:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session],
                 follow_up: Callable[[dict[str, Any] | None], bool]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.follow_up = follow_up
        self.throttle = LoginThrottle(settings.console_login_failures_max, settings.console_lockout_s)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["kes"] = kes
        self.templates.env.filters["when"] = lambda at: at.astimezone(ZoneInfo(settings.timezone)).strftime("%Y-%m-%d %H:%M") if at else ""

    # --- plumbing -----------------------------------------------------------------------------

    def today(self) -> date:
        now = datetime.now(ZoneInfo(self.settings.timezone))
        return business_date(now, close_time=self.settings.close_time, tz=self.settings.timezone)

    def viewer(self, request: Request) -> Viewer:
        username, version = session_user(request, self.settings.console_idle_timeout_s)
        with self.sessions() as session:
            try:
                user = get_user(session, username)
            except UserError:
                user = None
        if user is None or user.disabled or user.session_version != version:  # logged out, or a new password
            log_out(request)
            raise LoginNeeded()
        return Viewer(user.username, user.role)

    def render(self, request: Request, template: str, title: str, viewer: Viewer | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        flashes = request.session.pop("flashes", []) if viewer else []
        return self.templates.TemplateResponse(
            request, template, {"title": title, "viewer": viewer, "csrf": csrf_token(request), "flashes": flashes, **context},
            status_code=status,
        )

    def flash(self, request: Request, message: str, kind: str = "") -> None:
        request.session.setdefault("flashes", []).append((kind, message))

    def page(self, role: str = "viewer", *, post: bool = False) -> Callable[[Callable[..., Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
        """A route for users of ``role`` or above; a POST must carry the session's CSRF token."""
        def wrap(handler: Callable[..., Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    check_text([request.url.path, *request.query_params.values()])
                    viewer = self.viewer(request)
                    form = await request.form() if post else None
                    if post:
                        check_text(form.values())  # type: ignore[union-attr]
                        check_csrf(request, form.get("csrf") if form else None)
                    if not viewer.can(role):
                        raise NotAllowed(f"{'an' if viewer.role[0] in 'aeiou' else 'a'} {viewer.role} cannot do this: "
                                         f"it needs {'an' if role[0] in 'aeiou' else 'a'} {role} or above")
                    return await handler(request, viewer, form) if post else await handler(request, viewer)
                except LoginNeeded:
                    return RedirectResponse(path_of(request, "login"), status_code=303)
                except NotAllowed as refused:
                    return self.render(request, "error.html", "Not allowed", self._maybe(request), status=403,
                                       message=str(refused))
                except BadInput as bad:
                    return self.render(request, "error.html", "Not understood", self._maybe(request), status=400,
                                       message=str(bad))
                except Exception:  # noqa: BLE001 — a page never answers a bare 500
                    log.exception("console_page_failed", path=request.url.path)
                    return self.render(request, "error.html", "Something went wrong", None, status=500,
                                       message="the page could not be made; the error is in the console's log")
            return endpoint
        return wrap

    def _maybe(self, request: Request) -> Viewer | None:
        try:
            return self.viewer(request)
        except LoginNeeded:
            return None

    # --- login --------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.render(request, "login.html", "Log in", None)
        try:
            form = await request.form()
            check_csrf(request, form.get("csrf"))
        except NotAllowed as refused:
            return self.render(request, "login.html", "Log in", None, status=403, error=str(refused))
        except BadInput as bad:  # a body that outgrew the limit as it streamed
            return self.render(request, "login.html", "Log in", None, status=413, error=str(bad))
        username, password = str(form.get("username", ""))[:200], str(form.get("password", ""))[:1_000]
        address = request.client.host if request.client else "?"
        if self.throttle.blocked(address):
            log.warning("console_login_throttled", address=address)
            return self.render(request, "login.html", "Log in", None, status=429, username=username[:64],
                               error="too many wrong logins from here: wait a few minutes and try again")
        with self.sessions.begin() as session:
            user, why = authenticate(session, username.replace("\x00", ""), password.replace("\x00", ""),
                                     failures_max=USER_LOCKOUT_FACTOR * self.settings.console_login_failures_max,
                                     lockout_s=self.settings.console_lockout_s)
            name, version = (user.username, user.session_version) if user else (None, 0)
        if user is None:
            self.throttle.failed(address)
            log.warning("console_login_refused", username=username[:64], why=why, address=address)
            return self.render(request, "login.html", "Log in", None, status=401, error=why, username=username[:64])
        log_in(request, str(name), version)
        log.info("console_login", username=name)
        return RedirectResponse(path_of(request, "dashboard"), status_code=303)

    async def logout(self, request: Request) -> Response:
        """Ends every session of the user (the cookie alone could be replayed otherwise)."""
        try:
            username, _ = session_user(request, self.settings.console_idle_timeout_s)
            check_csrf(request, (await request.form()).get("csrf"))
            with self.sessions.begin() as session:
                end_sessions(session, username)
        except (LoginNeeded, NotAllowed, UserError):
            pass  # logging out is never refused
        log_out(request)
        return RedirectResponse(path_of(request, "login"), status_code=303)

    # --- pages --------------------------------------------------------------------------------

    async def dashboard(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions.begin() as session:  # it may store the totals of a settled day
            numbers = dashboard_numbers(session, self.today())
            waiting = len(money_requests.pending(session))
        in_flight = sum(count for state, count in numbers["payouts"].items() if state in OPEN - {"review", "reopened"})
        return self.render(request, "dashboard.html", "Dashboard", viewer, d=numbers, in_flight=in_flight,
                           pending_requests=waiting, chart=bars(numbers["chart"]))

    async def drivers(self, request: Request, viewer: Viewer) -> Response:
        q = request.query_params.get("q", "").strip().upper() or None
        after = request.query_params.get("after") or None
        with self.sessions() as session:
            rows = fleet.list_drivers(session, after_code=after, only_code=q, limit=PAGE_ROWS)
        next_after = rows[-1]["code"] if len(rows) == PAGE_ROWS else None
        return self.render(request, "drivers.html", "Drivers", viewer, rows=rows, q=q, next_after=next_after)

    def _statement(self, request: Request, code: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        today = self.today()
        account = request.query_params.get("account", "payable")
        if account not in ACCOUNTS:
            account = "payable"
        try:
            since = date.fromisoformat(request.query_params.get("since") or (today - timedelta(days=6)).isoformat())
            until = date.fromisoformat(request.query_params.get("until") or today.isoformat())
        except ValueError:
            since, until = today - timedelta(days=6), today
        with self.sessions() as session:
            balance = driver_balance(session, code, today, self.settings)
            [info] = fleet.list_drivers(session, only_code=code)
            driver = fleet.get_driver(session, code)
            found = statement(session, driver.id, account, since, until)
            info |= {"language": driver.language, "sms_opt_out": driver.sms_opt_out,
                     "notices": notifications.for_driver(session, code, limit=NOTICES_SHOWN)}
        return balance, info, found

    async def driver(self, request: Request, viewer: Viewer) -> Response:
        code = request.path_params["code"].upper()
        try:
            balance, info, found = self._statement(request, code)
        except fleet.FleetError as error:
            return self.render(request, "error.html", "No such driver", viewer, status=404, message=str(error))
        return self.render(request, "driver.html", f"Driver {code}", viewer, b=balance, info=info, s=found, accounts=ACCOUNTS)

    async def statement_csv(self, request: Request, viewer: Viewer) -> Response:
        code = request.path_params["code"].upper()
        try:
            _, _, found = self._statement(request, code)
        except fleet.FleetError as error:
            return PlainTextResponse(str(error), status_code=404)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["business_date", "at", "kind", "reference", "amount_kes", "balance_kes", "entry_id"])
        writer.writerow([found["since"], "", "opening", "", "", kes(found["opening_cents"]), ""])
        for e in found["entries"]:
            writer.writerow([e["business_date"], e["at"], e["kind"], e["reference"], kes(e["amount_cents"]),
                             kes(e["balance_cents"]), e["entry_id"]])
        name = f"statement-{code}-{found['account']}-{found['since']}-{found['until']}.csv"
        return Response(out.getvalue(), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def unmatched(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            rows = [{"trans_id": p.trans_id, "amount_cents": p.amount_cents, "account_ref": p.account_ref,
                     "trans_time": p.trans_time.astimezone(ZoneInfo(self.settings.timezone)).strftime("%Y-%m-%d %H:%M"),
                     "why": why_unmatched(session, p.account_ref, self.settings)} for p in list_unmatched(session)]
        return self.render(request, "unmatched.html", "Unmatched payments", viewer, rows=rows)

    async def ask(self, request: Request, viewer: Viewer, kind: str, params: dict[str, Any], reason: str,
                  back: str) -> Response:
        """Make a request; with four eyes off it runs now (and its payouts are sent)."""
        try:
            made = await anyio.to_thread.run_sync(lambda: money_requests.submit(
                self.sessions, kind, params, asker=money_requests.Asker(viewer.username, viewer.role), reason=reason,
                settings=self.settings, business_date=self.today()))
            state, outcome, request_id = made.state, made.outcome, made.id
        except money_requests.RequestRefused as refused:
            self.flash(request, f"Not asked: {refused}", "error")
            return RedirectResponse(back, status_code=303)
        if state == "pending":
            self.flash(request, f"Request {request_id} made: another person must approve it.")
        else:
            self._sent(outcome)
            self.flash(request, f"Request {request_id} ran ({state}).")
        return RedirectResponse(back, status_code=303)

    def _sent(self, outcome: dict[str, Any] | None) -> None:
        self.follow_up(outcome)  # committed; if Redis is down the payout sweep does it

    async def ask_assign(self, request: Request, viewer: Viewer, form: Any) -> Response:
        params = {"trans_id": request.path_params["trans_id"], "driver": str(form.get("driver", "")).strip().upper()}
        if form.get("as") in ("fare", "company"):
            params["as"] = form.get("as")
        return await self.ask(request, viewer, "unmatched_assign", params, str(form.get("reason", "")),
                              path_of(request, "unmatched"))

    async def sms_preferences(self, request: Request, viewer: Viewer, form: Any) -> Response:
        code = request.path_params["code"].upper()
        optional = form.get("optional")  # a field left out of the form changes nothing
        try:
            with self.sessions.begin() as session:
                fleet.set_sms_preferences(session, code, language=form.get("language"),
                                          opt_out=None if optional is None else optional == "off", by=viewer.username)
        except fleet.FleetError as error:
            self.flash(request, f"Not changed: {error}", "error")
        else:
            self.flash(request, f"SMS preferences of {code} saved.")
        return RedirectResponse(path_of(request, "driver", code=code), status_code=303)

    async def ask_refund(self, request: Request, viewer: Viewer, form: Any) -> Response:
        code = request.path_params["code"].upper()
        back = path_of(request, "driver", code=code)
        raw = str(form.get("amount_kes", "")).strip()
        params: dict[str, Any] = {"driver": code, "amount_cents": number(raw, "the amount (KES)") * 100 if raw else None}
        return await self.ask(request, viewer, "deposit_refund", params, str(form.get("reason", "")), back)

    async def requests_page(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            waiting = money_requests.pending(session)
            decided = [r for r in money_requests.recent(session) if r.state != "pending"][:50]
        return self.render(request, "requests.html", "Requests", viewer, waiting=waiting, decided=decided,
                           describe=money_requests.describe, four_eyes=self.settings.four_eyes)

    async def decide_request(self, request: Request, viewer: Viewer, form: Any) -> Response:
        request_id = number(str(request.path_params["request_id"]), "a request number")
        approve_it = form.get("decision") == "approve"
        try:
            decided = await anyio.to_thread.run_sync(lambda: money_requests.settle(
                self.sessions, request_id, approver=money_requests.Asker(viewer.username, viewer.role),
                approve_it=approve_it, settings=self.settings, business_date=self.today()))
            state, outcome = decided.state, decided.outcome
        except money_requests.RequestRefused as refused:
            self.flash(request, f"Not decided: {refused}", "error")
            return RedirectResponse(path_of(request, "requests_page"), status_code=303)
        if state == "done":
            self._sent(outcome)
        message = {"done": "approved and done", "rejected": "rejected", "running": "approved; still running (see the audit log)",
                   "failed": f"approved, but it could not run: {(outcome or {}).get('error')}"}[state]
        self.flash(request, f"Request {request_id} {message}.", "error" if state == "failed" else "")
        return RedirectResponse(path_of(request, "requests_page"), status_code=303)

    async def payouts(self, request: Request, viewer: Viewer) -> Response:
        state = request.query_params.get("state") or None
        driver = (request.query_params.get("driver") or "").strip().upper() or None
        after = request.query_params.get("after")
        with self.sessions() as session:
            rows = list_payouts(session, state=state if state in STATE_ORDER else None, driver_code=driver,
                                before_id=number(after, "a payout number") if after else None, limit=PAGE_ROWS)
        next_after = rows[-1]["id"] if len(rows) == PAGE_ROWS else None
        return self.render(request, "payouts.html", "Payouts", viewer, rows=rows, states=STATE_ORDER, state=state,
                           driver=driver, next_after=next_after, actions=payout_actions)

    async def payout(self, request: Request, viewer: Viewer) -> Response:
        payout_id = number(str(request.path_params["payout_id"]), "a payout number")
        with self.sessions() as session:
            found = payout_detail(session, payout_id)
        if found is None:
            return self.render(request, "error.html", "No such payout", viewer, status=404, message=f"no payout {payout_id}")
        return self.render(request, "payout.html", f"Payout {payout_id}", viewer, p=found, actions=payout_actions(found))

    async def ask_payout(self, request: Request, viewer: Viewer, form: Any) -> Response:
        kind = str(form.get("kind", ""))
        if kind not in dict(PAYOUT_ACTIONS):
            raise NotAllowed(f"no such payout action: {kind!r}")
        payout_id = number(str(request.path_params["payout_id"]), "a payout number")
        back = path_of(request, "payout", payout_id=payout_id) if form.get("back") == "payout" else path_of(request, "payouts")
        return await self.ask(request, viewer, kind, {"payout_id": payout_id}, str(form.get("reason", "")), back)

    async def vehicles(self, request: Request, viewer: Viewer) -> Response:
        after = request.query_params.get("after") or None
        with self.sessions() as session:
            rows = fleet.list_vehicles(session, after_code=after, limit=PAGE_ROWS)
        next_after = rows[-1]["code"] if len(rows) == PAGE_ROWS else None
        return self.render(request, "vehicles.html", "Vehicles", viewer, rows=rows, next_after=next_after)

    async def books(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            runs, days = reconciliations(session), closes(session)
        # Only the last close run can be undone (``money.close_undo``): the form is on its row.
        last_run = max(days, key=lambda c: c["closed_at"])["business_date"] if days else None
        return self.render(request, "books.html", "Books", viewer, runs=runs, closes=days, last_run=last_run)

    async def ask_fix(self, request: Request, viewer: Viewer, form: Any) -> Response:
        return await self.ask(request, viewer, "reconcile_fix", {}, str(form.get("reason", "")), path_of(request, "books"))

    async def ask_undo(self, request: Request, viewer: Viewer, form: Any) -> Response:
        try:
            day = date.fromisoformat(str(request.path_params["day"]))
        except ValueError as error:
            raise BadInput("a business day is written YYYY-MM-DD") from error
        return await self.ask(request, viewer, "close_undo", {"date": day.isoformat()}, str(form.get("reason", "")),
                              path_of(request, "books"))

    async def run_check(self, request: Request, viewer: Viewer, form: Any) -> Response:
        run_id, found = run_check(self.sessions)
        log.info("console_reconciliation_check", run_id=run_id, discrepancies=len(found), username=viewer.username)
        self.flash(request, f"Reconciliation {run_id}: " + ("the books reconcile." if not found else
                                                            f"{len(found)} discrepancies (fleetpay reconcile --json lists them)."),
                   "error" if found else "")
        return RedirectResponse(path_of(request, "books"), status_code=303)

    def _dead_letters(self):  # type: ignore[no-untyped-def]
        from workers.broker import build_broker
        from workers.dead_letters import DeadLetters

        return DeadLetters.from_settings(self.settings, build_broker(self.settings))

    def _read_dead_letters(self) -> tuple[list[Any], dict[str, int]]:
        dead = self._dead_letters()
        try:
            return dead.list(limit=PAGE_ROWS), dead.depth()
        finally:
            dead.close()

    async def dlq(self, request: Request, viewer: Viewer) -> Response:
        try:  # off the event loop: a RabbitMQ read walks its dead-letter queues
            (letters, depth), error = await anyio.to_thread.run_sync(self._read_dead_letters), None
        except Exception as unreachable:  # noqa: BLE001 — the broker or Redis down: say so, the rest of the console works
            letters, depth, error = [], {}, f"The broker or Redis cannot be reached ({unreachable.__class__.__name__})"
        return self.render(request, "dlq.html", "Dead letters", viewer, letters=letters, depth=depth, error=error)

    async def dlq_act(self, request: Request, viewer: Viewer, form: Any) -> Response:
        from workers.dead_letters import DeadLetterError

        act = form.get("act")
        if act not in ("requeue", "purge"):
            raise BadInput("requeue or purge")
        def act_on_it() -> Any:
            dead = self._dead_letters()
            try:
                letters = dead.find([str(request.path_params["message_id"])])
                return dead.requeue(letters) if act == "requeue" else dead.purge(letters)
            finally:
                dead.close()

        try:
            moved = await anyio.to_thread.run_sync(act_on_it)
        except DeadLetterError as error:
            self.flash(request, f"Not done: {error}", "error")
            return RedirectResponse(path_of(request, "dlq"), status_code=303)
        with self.sessions.begin() as session:
            record_action(session, action={"requeue": "dead_letter_requeued", "purge": "dead_letter_purged"}[act],
                          subject=str(request.path_params["message_id"]), operator=viewer.username, reason="console",
                          detail={"done": moved.done, "gone": moved.gone})
        done = {"requeue": "requeued", "purge": "purged"}[act]
        self.flash(request, f"{done}: {len(moved.done)}" + (f"; taken by someone else first: {len(moved.gone)}" if moved.gone else ""))
        return RedirectResponse(path_of(request, "dlq"), status_code=303)

    async def users_page(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            rows = list_users(session)
        return self.render(request, "users.html", "Users", viewer, rows=rows, roles=USER_ROLES, four_eyes=self.settings.four_eyes)

    async def change_user(self, request: Request, viewer: Viewer, form: Any) -> Response:
        """Add a user (``change=add`` and ``username`` in the form) or change one named in the path."""
        change = str(form.get("change", ""))
        username = str(form.get("username", "")) if change == "add" else str(request.path_params.get("username", ""))
        wanted = {"add": ("role", "password"), "role": ("role",), "password": ("password",)}.get(change, ())
        values = {key: str(form.get(key, "")) for key in wanted}
        def work() -> None:
            with self.sessions.begin() as session:
                administer(session, change, username, by=viewer.username, may_grant=not self.settings.four_eyes, **values)

        try:
            await anyio.to_thread.run_sync(work)  # argon2 takes a while: never on the event loop
        except (UserError, WeakPassword, BadName) as refused:
            self.flash(request, f"Not done: {refused}", "error")
        else:
            log.warning("console_user_changed", change=change, username=username, by=viewer.username)
            self.flash(request, f"{username}: {USER_CHANGE_DONE[change]}.")
        return RedirectResponse(path_of(request, "users_page"), status_code=303)

    async def account(self, request: Request, viewer: Viewer) -> Response:
        return self.render(request, "account.html", "My password", viewer)

    async def change_password(self, request: Request, viewer: Viewer, form: Any) -> Response:
        """The current password is asked, so a session left open is not a new password; wrong
        guesses count as wrong logins from that address (``LoginThrottle``)."""
        address = request.client.host if request.client else "?"
        if self.throttle.blocked(address):
            self.flash(request, "Not changed: too many wrong passwords from here: wait a few minutes", "error")
            return RedirectResponse(path_of(request, "account"), status_code=303)

        def work() -> None:
            with self.sessions.begin() as session:
                change_own_password(session, viewer.username, str(form.get("current", "")), str(form.get("password", "")))

        try:
            await anyio.to_thread.run_sync(work)
        except (UserError, WeakPassword) as refused:
            if isinstance(refused, WrongCurrentPassword):
                self.throttle.failed(address)
            self.flash(request, f"Not changed: {refused}", "error")
            return RedirectResponse(path_of(request, "account"), status_code=303)
        log.warning("console_own_password_set", username=viewer.username)
        return RedirectResponse(path_of(request, "login"), status_code=303)  # every session ended: log in again

    async def audit(self, request: Request, viewer: Viewer) -> Response:
        with self.sessions() as session:
            rows = recent_actions(session, limit=200)
        return self.render(request, "audit.html", "Audit log", viewer, rows=rows)


def build_app(settings: Settings, *, sessions: sessionmaker[Session] | None = None,
              follow_up: Callable[[dict[str, Any] | None], bool] | None = None) -> Starlette:
    """The console for ``settings``; refuses a placeholder or short cookie secret outside dev."""
    settings.require_console_secret()
    if sessions is None:
        sessions = make_sessionmaker(make_engine(settings.require_database_url(), pool_size=4))
    if follow_up is None:
        from workers.follow_up import follow_up as enqueue

        follow_up = enqueue
    console = Console(settings, sessions, follow_up)
    page = console.page
    routes = [
        Route("/login", console.login, methods=["GET", "POST"], name="login"),
        Route("/logout", console.logout, methods=["POST"], name="logout"),
        Route("/", page()(console.dashboard), name="dashboard"),
        Route("/drivers", page()(console.drivers), name="drivers"),
        Route("/drivers/{code}", page()(console.driver), name="driver"),
        Route("/drivers/{code}/statement.csv", page()(console.statement_csv), name="statement_csv"),
        Route("/drivers/{code}/refund", page("operator", post=True)(console.ask_refund), methods=["POST"], name="ask_refund"),
        Route("/drivers/{code}/sms", page("operator", post=True)(console.sms_preferences), methods=["POST"],
              name="sms_preferences"),
        Route("/unmatched", page()(console.unmatched), name="unmatched"),
        Route("/unmatched/{trans_id}/assign", page("operator", post=True)(console.ask_assign), methods=["POST"], name="ask_assign"),
        Route("/requests", page()(console.requests_page), name="requests_page"),
        Route("/requests/{request_id:int}", page("approver", post=True)(console.decide_request), methods=["POST"], name="decide_request"),
        Route("/payouts", page()(console.payouts), name="payouts"),
        Route("/payouts/{payout_id:int}", page()(console.payout), name="payout"),
        Route("/payouts/{payout_id:int}/ask", page("operator", post=True)(console.ask_payout), methods=["POST"], name="ask_payout"),
        Route("/audit", page()(console.audit), name="audit"),
        Route("/account", page()(console.account), name="account"),
        Route("/account", page(post=True)(console.change_password), methods=["POST"], name="change_password"),
        Route("/users", page("admin")(console.users_page), name="users_page"),
        Route("/users", page("admin", post=True)(console.change_user), methods=["POST"], name="add_user"),
        Route("/users/{username}", page("admin", post=True)(console.change_user), methods=["POST"], name="change_user"),
        Route("/dlq", page()(console.dlq), name="dlq"),
        Route("/dlq/{message_id}", page("admin", post=True)(console.dlq_act), methods=["POST"], name="dlq_act"),
        Route("/vehicles", page()(console.vehicles), name="vehicles"),
        Route("/books", page()(console.books), name="books"),
        Route("/books/check", page("operator", post=True)(console.run_check), methods=["POST"], name="run_check"),
        Route("/books/fix", page("operator", post=True)(console.ask_fix), methods=["POST"], name="ask_fix"),
        Route("/books/closes/{day}/undo", page("operator", post=True)(console.ask_undo), methods=["POST"], name="ask_undo"),
        Route("/healthz", lambda request: PlainTextResponse("ok"), name="healthz"),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    secure = settings.console_cookie_secure if settings.console_cookie_secure is not None else not settings.dev_mode
    return Starlette(routes=routes, middleware=[
        Middleware(SecurityHeaders),
        Middleware(BodyLimit),
        Middleware(SessionMiddleware, secret_key=settings.console_secret.get_secret_value(), session_cookie="fleetpay_console",
                   max_age=settings.console_idle_timeout_s, same_site="strict", https_only=secure),
    ])


def path_of(request: Request, name: str, **params: Any) -> str:
    """A route's path, for a redirect: never an absolute URL built from the Host header."""
    return request.url_for(name, **params).path
