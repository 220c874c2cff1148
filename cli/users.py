"""Users of the console: add, list, disable, enable, change a password."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import context
from cli.output import emit_json, emit_table, fail
from db import users as store
from fleetpay.passwords import WeakPassword
from fleetpay.people import BadName

users = typer.Typer(help="Users of the console: each with a role (viewer, operator, approver, admin) and a password.")

StdinFlag = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin (one line), not a prompt.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)


def _run(change, done: str) -> None:  # type: ignore[no-untyped-def]
    try:
        with context.transaction() as session:
            change(session)
    except (store.UserError, WeakPassword, BadName) as error:
        raise fail(str(error)) from error
    typer.echo(done)


@users.command("add")
def users_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="viewer (reads), operator (asks for money to move), approver (approves "
                                           "others' requests), admin (everything)")],
    password_stdin: StdinFlag = False,
) -> None:
    """Add a user (the password from a prompt, or from stdin with --password-stdin)."""
    if role not in store.USER_ROLES:
        raise fail(f"--role is one of {', '.join(store.USER_ROLES)}", 2)
    password = _password(password_stdin)
    _run(lambda session: store.add_user(session, username, role, password), f"user {username} added as {role}")


@users.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Users, with their role and whether they are disabled or locked out."""
    with context.transaction() as session:
        rows = store.list_users(session)
    if as_json:
        emit_json({"users": rows})
    else:
        emit_table("users", rows, ["username", "role", "disabled", "locked_until", "created_at"])


@users.command("disable")
def users_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Disable a user: they cannot log in, and a session they hold ends at their next click."""
    _run(lambda session: store.set_disabled(session, username, True), f"user {username} disabled")


@users.command("enable")
def users_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled user again."""
    _run(lambda session: store.set_disabled(session, username, False), f"user {username} enabled")


@users.command("password")
def users_password(username: Annotated[str, typer.Argument()], password_stdin: StdinFlag = False) -> None:
    """Set a user's password (and lift a lockout)."""
    password = _password(password_stdin)
    _run(lambda session: store.set_password(session, username, password), f"password of {username} set")
