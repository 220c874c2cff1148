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


def test_a_role_is_changed_from_the_shell_and_every_change_is_in_the_audit_log(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    import os

    from db.models import OperatorAction

    url = fresh_sessions.kw["bind"].url.render_as_string(hide_password=False)
    assert users(url, "add", "amina", "--role", "operator", "--password-stdin", stdin="a long secret phrase\n").returncode == 0
    changed = users(url, "role", "amina", "--role", "approver")
    assert changed.returncode == 0 and "user amina is now approver" in changed.stdout, changed.stderr
    assert users(url, "role", "amina", "--role", "boss").returncode == 2
    assert users(url, "role", "nobody", "--role", "viewer").returncode == 1
    os.environ["FLEETPAY_USER"] = "amina"  # named: the record says who; nobody demotes or disables themselves
    try:
        own = users(url, "disable", "amina")
        assert own.returncode == 1 and "another admin" in own.stderr
    finally:
        del os.environ["FLEETPAY_USER"]
    assert json.loads(users(url, "list", "--json").stdout)["users"][0]["role"] == "approver"
    with fresh_sessions() as session:
        record = [(a.action, a.subject, a.operator, a.detail) for a in session.execute(
            select(OperatorAction).where(OperatorAction.subject == "user:amina").order_by(OperatorAction.id)).scalars()]
    assert record == [("user_added", "user:amina", "shell", {"role": "operator"}),
                      ("user_role_changed", "user:amina", "shell", {"role": "approver"})]


def test_a_request_is_decided_from_the_shell_by_another_user(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    import os

    from db.models import MoneyRequest
    from money.requests import Asker, ask
    from tests.books.test_close_undo import deposit
    from tests.books.test_daily_close import D1, add, settings

    url = fresh_sessions.kw["bind"].url.render_as_string(hide_password=False)
    for name, role in (("amina", "approver"), ("bob", "approver"), ("vera", "viewer")):
        assert users(url, "add", name, "--role", role, "--password-stdin", stdin="a long secret phrase\n").returncode == 0
    add(fresh_sessions, "D710001", "711")
    deposit(fresh_sessions, "D710001", 10_000)
    with fresh_sessions.begin() as session:
        request_id = ask(session, "deposit_refund", {"driver": "D710001", "amount_cents": None}, asker=Asker("amina", "approver"),
                         reason="leaving", settings=settings(), business_date=D1).id

    def requests(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(fleetpay_argv("requests", *args), capture_output=True, text=True, timeout=60,
                              env={**os.environ, "FLEETPAY_DATABASE_URL": url, "FLEETPAY_LOG_JSON": "false"})

    [listed] = json.loads(requests("list", "--json").stdout)["requests"]
    assert (listed["id"], listed["requested_by"]) == (request_id, "amina")
    own = requests("approve", str(request_id), "--user", "amina")
    assert own.returncode == 1 and "four eyes" in own.stderr
    viewer = requests("approve", str(request_id), "--user", "vera")
    assert viewer.returncode == 1 and "cannot approve" in viewer.stderr
    done = requests("approve", str(request_id), "--user", "bob")
    assert done.returncode == 0 and "approved and done" in done.stdout, done.stderr
    with fresh_sessions() as session:
        assert session.get(MoneyRequest, request_id).state == "done"
    assert requests("approve", str(request_id), "--user", "bob").returncode == 1  # once
