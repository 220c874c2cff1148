"""``fleetpay users`` as an operator runs it: passwords from stdin, hashed, roles checked."""

from __future__ import annotations

import json
import subprocess

from sqlalchemy import select

from db.models import User
from tests.support import fleetpay_argv


def users(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(fleetpay_argv("users", *args), input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLEETPAY_DATABASE_URL": url, "FLEETPAY_LOG_JSON": "false"})


def test_users_are_added_listed_and_disabled(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    url = fresh_sessions.kw["bind"].url.render_as_string(hide_password=False)
    added = users(url, "add", "amina", "--role", "operator", "--password-stdin", stdin="a long secret phrase\n")
    assert added.returncode == 0 and "user amina added as operator" in added.stdout, added.stderr
    assert users(url, "add", "amina", "--role", "viewer", "--password-stdin", stdin="another long one\n").returncode == 1
    short = users(url, "add", "bob", "--role", "approver", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    bad_role = users(url, "add", "bob", "--role", "boss", "--password-stdin", stdin="a long secret phrase\n")
    assert bad_role.returncode == 2 and "--role is one of" in bad_role.stderr
    assert users(url, "disable", "amina").returncode == 0
    listed = json.loads(users(url, "list", "--json").stdout)["users"]
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [("amina", "operator", True)]
    with fresh_sessions() as session:
        stored = session.execute(select(User.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "a long secret phrase" not in stored
