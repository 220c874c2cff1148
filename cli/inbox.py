"""Inbox commands: the callbacks as they arrived, for inspection."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli import context
from cli.output import emit_json, emit_table, fail
from db.inbox import INBOX_STATES, list_rows

inbox = typer.Typer(help="Callbacks as they arrived: refused, in suspense, or conflicting duplicates.")


@inbox.command("list")
def inbox_list(
    status: Annotated[str, typer.Option(help=f"One of {', '.join(INBOX_STATES)}.")] = "conflict",
    kind: Annotated[Optional[str], typer.Option(help="Only this kind, e.g. c2b_confirmation, b2c_result.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Inbox rows in one status, newest first. The default, ``conflict``, lists second bodies sent
    for a receipt already stored: kept beside the first, never applied (the first one's money
    counts, once)."""
    if status not in INBOX_STATES:
        raise fail(f"--status is one of {', '.join(INBOX_STATES)}", 2)
    with context.transaction() as session:
        rows = list_rows(session, status=status, kind=kind, limit=limit)
    if as_json:
        emit_json({"inbox": rows})
    else:
        emit_table(f"inbox rows {status}", [{**row, "body": row["body"][:120]} for row in rows],
                   ["id", "kind", "external_id", "reason", "received_at", "body"])
