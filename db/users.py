"""Users of the console: their role, their password hash, and the count of wrong passwords that
locks them out for a while."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import USER_ROLES, ApiToken, User
from fleetpay.passwords import hash_password, verify_password
from db.audit import record_action
from fleetpay.people import operator_name, same_person

__all__ = ["CHANGES", "USER_ROLES", "UserError", "WrongCurrentPassword", "add_user", "administer", "authenticate",
           "change_own_password", "end_sessions", "get_user", "grants_power", "issue_token", "list_tokens", "list_users",
           "revoke_token", "role_at_least", "set_disabled", "set_password", "set_role", "user_for_token"]

# viewer < operator < approver < admin: each may do what the ones before it may.
ROLE_RANK = {role: rank for rank, role in enumerate(USER_ROLES)}


def role_at_least(role: str, needed: str) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[needed]


TOKEN_PREFIX = "fpt_"  # so a token pasted where it should not be is recognised (secret scanners)
TOKEN_NAME_MAX_CHARS = 64
TOKEN_SHAPE = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43}")  # what issue_token makes, exactly
LAST_USED_EVERY = timedelta(minutes=5)  # a token's last use is noted at most this often (no write per call)


class UserError(ValueError):
    """An operation on users that cannot be done; the message says why."""


class WrongCurrentPassword(UserError):
    """A user changing their own password gave a wrong current one (counted like a wrong login)."""


def add_user(session: Session, username: str, role: str, password: str) -> User:
    name = operator_name(username)
    if role not in USER_ROLES:
        raise UserError(f"the role is one of {', '.join(USER_ROLES)}")
    taken = select(User.username).where(func.lower(User.username) == name.lower())  # amina and Amina are one person
    if existing := session.execute(taken.limit(1)).scalar():
        raise UserError(f"user {existing} exists")
    user = User(username=name, role=role, password_hash=hash_password(password))
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as error:  # added by someone else at the same moment
        raise UserError(f"user {name} exists") from error
    return user


def get_user(session: Session, username: str) -> User:
    user = session.execute(select(User).where(User.username == operator_name(username))).scalar_one_or_none()
    if user is None:
        raise UserError(f"no user {username}")
    return user


def list_users(session: Session) -> list[dict[str, Any]]:
    return [
        {"username": u.username, "role": u.role, "disabled": u.disabled, "locked_until": u.locked_until,
         "created_at": u.created_at}
        for u in session.execute(select(User).order_by(User.username)).scalars()
    ]


def set_password(session: Session, username: str, password: str) -> None:
    user = get_user(session, username)
    user.password_hash, user.failed_logins, user.locked_until = hash_password(password), 0, None
    user.session_version += 1  # sessions opened with the old password end
    _revoke_all(session, user)  # and so do the tokens: a new password is for a suspected compromise too


def set_disabled(session: Session, username: str, disabled: bool) -> None:
    user = get_user(session, username)
    user.disabled = disabled
    if disabled:  # enabling the user again brings back neither old sessions nor old tokens
        user.session_version += 1
        _revoke_all(session, user)


def set_role(session: Session, username: str, role: str) -> None:
    if role not in USER_ROLES:
        raise UserError(f"the role is one of {', '.join(USER_ROLES)}")
    get_user(session, username).role = role  # read at every request: it takes effect at the next click


# What an administrator may change about a user, and how the audit log names it.
CHANGES = {"add": "user_added", "role": "user_role_changed", "disable": "user_disabled", "enable": "user_enabled",
           "password": "user_password_set"}


def grants_power(session: Session, change: str, username: str, role: str | None) -> bool:
    """Whether a change could give its maker a second identity: adding a user or setting another's
    password (the maker knows it, so may log in as them), or raising a role. With four eyes on,
    only the shell does these (``administer(..., may_grant=False)`` refuses them)."""
    if change in ("add", "password"):
        return True
    return change == "role" and role in ROLE_RANK and ROLE_RANK[role] > ROLE_RANK[get_user(session, username).role]


def administer(session: Session, change: str, username: str, *, by: str, role: str | None = None,
               password: str | None = None, may_grant: bool = True) -> None:
    """One change to a user (``CHANGES``), recorded in the audit log as ``by``'s, in the caller's
    transaction. Nobody disables themselves or changes their own role, and the last enabled admin
    stays one; ``may_grant=False`` (the console, four eyes on) refuses what ``grants_power``.
    ``UserError``, ``WeakPassword`` and ``BadName`` say why a change is refused."""
    if change not in CHANGES:
        raise UserError(f"the change is one of {', '.join(CHANGES)}")
    if change in ("role", "disable") and same_person(by, username):
        raise UserError("nobody disables themselves or changes their own role: another admin does it")
    # The user changed and the enabled admins, locked in one statement in id order (no deadlock
    # with another change): what is checked below is what is changed.
    session.execute(select(User).where(or_(func.lower(User.username) == operator_name(username).lower(),
                                              and_(User.role == "admin", User.disabled.is_(False))))
                    .order_by(User.id).with_for_update().execution_options(populate_existing=True)).scalars().all()
    if not may_grant and grants_power(session, change, username, role):
        raise UserError("with four eyes on, adding a user, setting someone else's password and raising a role are done "
                        "from the shell (fleetpay users ...): whoever chooses a password could log in as that user "
                        "and approve their own requests")
    if change in ("role", "disable"):
        _keep_an_admin(session, username, role)
    if change == "add":
        add_user(session, username, role or "", password or "")
    elif change == "role":
        set_role(session, username, role or "")
    elif change == "password":
        set_password(session, username, password or "")
    else:
        set_disabled(session, username, change == "disable")
    record_action(session, action=CHANGES[change], subject=f"user:{operator_name(username)}", operator=by,
                  reason="user administration", detail={"role": role} if role else None)


def change_own_password(session: Session, username: str, current: str, new: str) -> None:
    """A user sets their own password, given the current one; recorded in the audit log."""
    user = session.execute(select(User).where(User.username == operator_name(username)).with_for_update()).scalar_one()
    if not verify_password(user.password_hash, current):
        raise WrongCurrentPassword("the current password is wrong")
    set_password(session, user.username, new)
    record_action(session, action="user_password_set", subject=f"user:{user.username}", operator=user.username,
                  reason="their own password")


def _keep_an_admin(session: Session, username: str, role: str | None) -> None:
    """Refuse to demote or disable the last enabled admin, under the admins' row locks (two admins
    demoting each other at once: one of them is refused)."""
    admins = session.execute(select(User.username).where(User.role == "admin", User.disabled.is_(False))
                             .order_by(User.id).with_for_update()).scalars().all()
    target = get_user(session, username)
    if role is not None and role == target.role:
        raise UserError(f"{target.username} is {role} already")
    leaving = target.username in admins and (role is None or role != "admin")
    if leaving and len(admins) == 1:
        raise UserError(f"{target.username} is the last admin: make another admin first")


def end_sessions(session: Session, username: str) -> None:
    """Void every session cookie of this user (a logout ends them all)."""
    session.execute(update(User).where(User.username == operator_name(username))
                    .values(session_version=User.session_version + 1))


def authenticate(
    session: Session, username: str, password: str, *, failures_max: int, lockout_s: int, now: datetime | None = None
) -> tuple[User | None, str | None]:
    """(the user, None) when the password is right; (None, why) otherwise: one answer, taking the
    same time, for a wrong username, a wrong password and a user locked out after ``failures_max``
    wrong passwords in a row (for ``lockout_s``, counted under the user's row lock), so the answer
    tells nobody which names exist; a disabled user is told so only with the right password."""
    current = now or datetime.now(timezone.utc)
    try:
        name = operator_name(username)
    except ValueError:
        verify_password(None, password)
        return None, "wrong username or password"
    user = session.execute(select(User).where(User.username == name).with_for_update()).scalar_one_or_none()
    if user is None:
        verify_password(None, password)
        return None, "wrong username or password"
    if user.locked_until is not None and user.locked_until > current:
        verify_password(user.password_hash, password)  # the same time, and the same answer, as a wrong password
        return None, "wrong username or password"
    if not verify_password(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= failures_max:
            user.locked_until, user.failed_logins = current + timedelta(seconds=lockout_s), 0
        return None, "wrong username or password"
    if user.disabled:
        return None, "this user is disabled"
    session.execute(update(User).where(User.id == user.id).values(failed_logins=0, locked_until=None))
    return user, None


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, username: str, name: str) -> tuple[int, str]:
    """A new API token for ``username`` (its id, and the token, shown this once)."""
    user = get_user(session, username)
    if user.disabled:
        raise UserError(f"user {user.username} is disabled")
    name = name.strip()
    if not name or len(name) > TOKEN_NAME_MAX_CHARS:
        raise UserError(f"a token's name says what uses it, in 1 to {TOKEN_NAME_MAX_CHARS} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_sha256=_sha256(token))
    session.add(row)
    session.flush()
    return row.id, token


def list_tokens(session: Session, username: str) -> list[dict[str, Any]]:
    user = get_user(session, username)
    return [
        {"id": t.id, "name": t.name, "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}
        for t in session.execute(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)).scalars()
    ]


def revoke_token(session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise UserError(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = func.now()


def user_for_token(session: Session, token: str) -> User | None:
    """The enabled user whose live token this is (and its last use noted), or None. Looked up by
    its SHA-256: what the database compares is a hash, never the token."""
    if not TOKEN_SHAPE.fullmatch(token):  # nothing else is looked up
        return None
    row = session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(
        ApiToken.token_sha256 == _sha256(token), ApiToken.revoked_at.is_(None), User.disabled.is_(False))).first()
    if row is None:
        return None
    used = row.ApiToken.last_used_at
    if used is None or used < datetime.now(timezone.utc) - LAST_USED_EVERY:
        row.ApiToken.last_used_at = func.now()
    return row.User


def _revoke_all(session: Session, user: User) -> None:
    session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=func.now()))
