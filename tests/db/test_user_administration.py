"""``db.users.administer``: there is always an enabled admin, even when two admins demote each other
at once; disabling a user ends their sessions for good; every change is recorded."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from db import users
from db.models import OperatorAction, User

PASSWORD = "a long enough password"


def test_the_last_admin_is_never_demoted_nor_disabled(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        users.administer(session, "add", "ada", by="shell", role="admin", password=PASSWORD)
        users.administer(session, "add", "ben", by="ada", role="operator", password=PASSWORD)
    for change, role in (("disable", None), ("role", "approver")):
        with fresh_sessions.begin() as session, pytest.raises(users.UserError, match="last admin"):
            users.administer(session, change, "ada", by="shell", role=role)
    with fresh_sessions.begin() as session:  # another admin first: then it may be done
        users.administer(session, "role", "ben", by="ada", role="admin")
        users.administer(session, "disable", "ada", by="ben")
    with fresh_sessions() as session:
        assert session.execute(select(User.username).where(User.role == "admin", User.disabled.is_(False))).scalars().all() == ["ben"]
        assert [a.action for a in session.execute(select(OperatorAction).order_by(OperatorAction.id)).scalars()] == [
            "user_added", "user_added", "user_role_changed", "user_disabled"]


def test_two_admins_demoting_each_other_at_once_leave_one_admin(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        users.administer(session, "add", "ada", by="shell", role="admin", password=PASSWORD)
        users.administer(session, "add", "ben", by="shell", role="admin", password=PASSWORD)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(by: str, whom: str) -> None:
        start.wait()
        try:
            with fresh_sessions.begin() as session:
                users.administer(session, "role", whom, by=by, role="viewer")
            outcomes.append("done")
        except users.UserError as refused:
            outcomes.append(str(refused))

    threads = [threading.Thread(target=demote, args=pair) for pair in (("ada", "ben"), ("ben", "ada"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("done") == 1 and any("last admin" in outcome for outcome in outcomes), outcomes
    with fresh_sessions() as session:
        assert len(session.execute(select(User.id).where(User.role == "admin")).all()) == 1


def test_disabling_ends_every_session_even_once_enabled_again(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        version = users.add_user(session, "cyd", "viewer", PASSWORD).session_version
    with fresh_sessions.begin() as session:
        users.administer(session, "disable", "cyd", by="shell")
        users.administer(session, "enable", "cyd", by="shell")
    with fresh_sessions() as session:
        assert users.get_user(session, "cyd").session_version > version  # a cookie from before is void


@pytest.mark.parametrize(("change", "values", "grants"), [
    ("add", {"role": "viewer", "password": PASSWORD}, True),
    ("password", {"password": "another long phrase"}, True),
    ("role", {"role": "admin"}, True),
    ("role", {"role": "viewer"}, False),
    ("disable", {}, False),
    ("enable", {}, False),
])
def test_with_four_eyes_on_only_the_shell_gives_anyone_a_second_identity(fresh_sessions, change, values, grants) -> None:  # type: ignore[no-untyped-def]
    with fresh_sessions.begin() as session:
        users.add_user(session, "eve", "operator", PASSWORD)
    whom = "fay" if change == "add" else "eve"
    if grants:
        with fresh_sessions.begin() as session, pytest.raises(users.UserError, match="done from the shell"):
            users.administer(session, change, whom, by="ada", may_grant=False, **values)
    with fresh_sessions.begin() as session:  # from the shell (or with four eyes off) it is done
        users.administer(session, change, whom, by="shell", may_grant=grants, **values)
