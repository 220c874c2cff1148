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
from dataclasses import dataclass

from starlette.requests import Request

ROLE_RANK = {"viewer": 0, "operator": 1, "approver": 2, "admin": 3}


@dataclass(frozen=True)
class Viewer:
    username: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above (viewer < operator < approver < admin)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class NotAllowed(Exception):
    """The user may not do this (their role); the page says so (403)."""


class LoginNeeded(Exception):
    """No session, or an idle one: the login page (303)."""


def log_in(request: Request, username: str) -> None:
    request.session.clear()
    request.session.update({"user": username, "csrf": secrets.token_urlsafe(32), "seen": int(time.time())})


def log_out(request: Request) -> None:
    request.session.clear()


def session_user(request: Request, idle_timeout_s: int) -> str:
    """The username of a live session (and the session marked as used now); ``LoginNeeded``."""
    username, seen = request.session.get("user"), request.session.get("seen", 0)
    if not username or time.time() - seen > idle_timeout_s:
        request.session.clear()
        raise LoginNeeded()
    request.session["seen"] = int(time.time())
    return str(username)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(request: Request, submitted: object) -> None:
    expected = request.session.get("csrf")
    if not expected or not isinstance(submitted, str) or not hmac.compare_digest(expected, submitted):
        raise NotAllowed("the form's security token is missing or stale: reload the page and try again")
