"""Users of the console: add, list, disable, enable, change a role or a password; each change is in the audit log."""

from __future__ import annotations

import os
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
    if done:
        typer.echo(done)


def _administer(change: str, username: str, done: str, **values: str) -> None:
    """A change to a user, recorded in the audit log as ``FLEETPAY_USER``'s (else ``shell``): the
    shell is where the first admin is made and where a locked-out fleet recovers."""
    by = os.environ.get("FLEETPAY_USER") or "shell"
    _run(lambda session: store.administer(session, change, username, by=by, **values), done)


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
    _administer("add", username, f"user {username} added as {role}", role=role, password=password)


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
    _administer("disable", username, f"user {username} disabled")


@users.command("enable")
def users_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled user again."""
    _administer("enable", username, f"user {username} enabled")


@users.command("role")
def users_role(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin")],
) -> None:
    """Change a user's role (at their next click)."""
    if role not in store.USER_ROLES:
        raise fail(f"--role is one of {', '.join(store.USER_ROLES)}", 2)
    _administer("role", username, f"user {username} is now {role}", role=role)


@users.command("password")
def users_password(username: Annotated[str, typer.Argument()], password_stdin: StdinFlag = False) -> None:
    """Set a user's password (and lift a lockout)."""
    password = _password(password_stdin)
    _administer("password", username, f"password of {username} set", password=password)


@users.command("token")
def users_token(
    username: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Option(help="What will use it, e.g. 'ops scripts' (shown in `users tokens`).")],
) -> None:
    """Make an API token for the /admin JSON API: it acts as this user, with their role. Printed
    once, on stdout; only its hash is kept."""
    made: list[tuple[int, str]] = []
    _run(lambda session: made.append(store.issue_token(session, username, name)), "")
    token_id, token = made[0]
    typer.echo(token)
    typer.echo(f"token {token_id} for {username} ({name}): keep it secret; `fleetpay users revoke-token {token_id}` "
               "ends it", err=True)


@users.command("tokens")
def users_tokens(username: Annotated[str, typer.Argument()], as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A user's API tokens (never the tokens themselves)."""
    try:
        with context.transaction() as session:
            rows = store.list_tokens(session, username)
    except store.UserError as error:
        raise fail(str(error)) from error
    if as_json:
        emit_json({"tokens": rows})
    else:
        emit_table(f"API tokens of {username}", rows, ["id", "name", "created_at", "last_used_at", "revoked_at"])


@users.command("revoke-token")
def users_revoke_token(token_id: Annotated[int, typer.Argument()]) -> None:
    """End an API token: the next call with it is refused."""
    _run(lambda session: store.revoke_token(session, token_id), f"token {token_id} revoked")
