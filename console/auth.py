"""Who is asking: the console's login, its signed session cookie, CSRF tokens and roles.

The session (Starlette's ``SessionMiddleware``: a cookie signed with ``FLEETPAY_CONSOLE_SECRET``,
HttpOnly, SameSite=Strict, Secure behind HTTPS) holds the username, a CSRF token and when it was
last used; a session idle for ``console_idle_timeout_s`` is over. The user is read again from the
database on every request, so a disabled user or a changed role takes effect at once. Every form
carries the CSRF token, and a POST without the session's own is refused.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from starlette.requests import Request

from db.users import role_at_least

@dataclass(frozen=True)
class Viewer:
    username: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above (viewer < operator < approver < admin)."""
        return role_at_least(self.role, role)


class NotAllowed(Exception):
    """The user may not do this (their role); the page says so (403)."""


class LoginNeeded(Exception):
    """No session, or an idle one: the login page (303)."""


SESSION_MAX_S = 12 * 3600  # a session ends this long after its login, however busy


def log_in(request: Request, username: str, version: int) -> None:
    request.session.clear()
    now = int(time.time())
    request.session.update({"user": username, "v": version, "csrf": secrets.token_urlsafe(32), "seen": now,
                            "since": now})


def log_out(request: Request) -> None:
    request.session.clear()


def session_user(request: Request, idle_timeout_s: int) -> tuple[str, int]:
    """The username and session version of a live session (marked as used now); ``LoginNeeded``
    for none, an idle one, or one older than ``SESSION_MAX_S``."""
    username, seen, since = request.session.get("user"), request.session.get("seen", 0), request.session.get("since", 0)
    now = time.time()
    if not username or now - seen > idle_timeout_s or now - since > SESSION_MAX_S:
        request.session.clear()
        raise LoginNeeded()
    request.session["seen"] = int(now)
    return str(username), int(request.session.get("v", -1))


class LoginThrottle:
    """Wrong logins per client address: after ``failures_max`` within ``window_s`` the address waits
    out the window, whichever usernames it tried. A guesser is slowed without locking out the
    users it names (their own lockout needs four times as many wrong passwords in a row)."""

    def __init__(self, failures_max: int, window_s: int) -> None:
        self.failures_max, self.window_s = failures_max, window_s
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, address: str) -> deque[float]:
        times = self.failures[address]
        while times and time.monotonic() - times[0] > self.window_s:
            times.popleft()
        return times

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self.failures_max

    def failed(self, address: str) -> None:
        self._recent(address).append(time.monotonic())
        if len(self.failures) > 100_000:  # a flood of addresses must not grow memory for ever
            self.failures.clear()


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(request: Request, submitted: object) -> None:
    expected = request.session.get("csrf")
    if not expected or not isinstance(submitted, str) or not hmac.compare_digest(expected, submitted):
        raise NotAllowed("the form's security token is missing or stale: reload the page and try again")
