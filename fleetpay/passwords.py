"""Console passwords, hashed with argon2id (argon2-cffi's defaults, RFC 9106's second choice)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PASSWORD_MIN_CHARS = 10
_hasher = PasswordHasher()
# Checked against when the user does not exist, so a wrong username takes as long as a wrong password.
_DUMMY = _hasher.hash("not a password anyone has")


class WeakPassword(ValueError):
    """A password too short to keep; the message says the rule."""


def hash_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_CHARS:
        raise WeakPassword(f"a password has at least {PASSWORD_MIN_CHARS} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``stored_hash`` was made from (None: no such user, checked
    against a dummy hash all the same)."""
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False
