"""How commands print: one JSON document on stdout with ``--json``, rich tables for people."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

console = Console()
errors = Console(stderr=True)
# Terminal control characters (ESC, BEL, C1 …) and bidirectional overrides: a stored body is the
# sender's text, never the terminal's orders nor a reordering of what an operator reads.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def cell(value: Any) -> Text:
    """A value as a table shows it: literal text (a ``[/]`` in a callback body is not markup), its
    control characters shown as ``?`` (line breaks and tabs as they are)."""
    return Text(CONTROL.sub("?", str(value)))


def emit_json(document: Any) -> None:
    typer.echo(json.dumps(document, default=str, sort_keys=False))


def emit_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(row.get(column, "")) for column in columns))
    console.print(table)


def emit(document: Mapping[str, Any], as_json: bool, title: str = "") -> None:
    if as_json:
        emit_json(document)
    else:
        emit_table(title, [{"field": k, "value": v} for k, v in document.items()], ["field", "value"])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error on stderr; ``raise fail(...)`` ends the command with ``code``."""
    errors.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, whatever the width
    return typer.Exit(code)


def kes(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d}"
