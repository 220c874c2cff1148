"""Dead-letter commands: see what dramatiq gave up on, put it back on its queue, or drop it.

A dead letter is a message whose actor kept failing until its retries ran out
(``FLEETPAY_MESSAGE_RETRIES_MAX``); dramatiq keeps it 30 days. ``workers.dead_letters`` says where
and what is recorded. Ids are dramatiq's message ids, as ``dlq list`` and the worker logs show them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Optional
from zoneinfo import ZoneInfo

import typer

from cli import context
from cli.output import JsonFlag, console, emit, emit_json, emit_table, fail
from workers.dead_letters import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    DeadLetter,
    DeadLetterError,
    DeadLettersBusy,
    DeadLetterNotFound,
    DeadLetters,
    InvalidId,
    Moved,
    parse_duration,
)

dlq = typer.Typer(help="The dead-letter queue: messages whose retries ran out. Read, requeue, purge.")

QueueOption = Annotated[Optional[str], typer.Option("--queue", help="Only this queue's dead letters.")]
ActorOption = Annotated[Optional[str], typer.Option("--actor", help="Only this actor's, e.g. process_callback.")]
IdsArgument = Annotated[
    Optional[list[str]], typer.Argument(help="Message ids, as `fleetpay dlq list` shows them.", show_default=False)
]

LIST_COLUMNS = ("id", "actor", "queue", "reference", "retries", "enqueued", "dead-lettered", "last error")


@dlq.callback()
def _logs() -> None:
    """Requeues and purges are logged (to stderr), so operators' actions leave a trace."""
    from fleetpay.logs import configure_logging

    current = context.settings()
    configure_logging(level=current.log_level, json=current.log_json)


@contextmanager
def _dead_letters() -> Iterator[DeadLetters]:
    """The dead-letter sets of the configured broker; their errors as clear exits."""
    from workers.broker import build_broker, redis_client

    current = context.settings()
    try:
        dead = DeadLetters.from_settings(current, build_broker(current), redis_client(current))
    except RuntimeError as error:  # no Redis URL
        raise fail(str(error)) from error
    try:
        yield dead
    except (InvalidId, DeadLetterNotFound, DeadLettersBusy) as error:
        raise fail(str(error), 2 if isinstance(error, InvalidId) else 1) from error
    except DeadLetterError as error:
        raise fail(str(error), 2) from error
    finally:
        dead.close()


def _local(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(context.settings().timezone)).strftime("%Y-%m-%d %H:%M:%S")


def _table_row(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "actor": letter.actor,
        "queue": letter.queue,
        "reference": letter.reference or "-",
        "retries": letter.retries,
        "enqueued": _local(letter.enqueued_at),
        "dead-lettered": _local(letter.dead_lettered_at),
        "last error": letter.last_error or "-",
    }


def _depth_line(depth: dict[str, int]) -> str:
    return "dead letters by queue: " + ", ".join(f"{queue} {count}" for queue, count in depth.items())


@dlq.command("list")
def dlq_list(
    queue: QueueOption = None,
    actor: ActorOption = None,
    limit: Annotated[int, typer.Option(min=1, max=LIST_LIMIT_MAX)] = LIST_LIMIT_DEFAULT,
    as_json: JsonFlag = False,
) -> None:
    """Dead letters, newest first: id, actor, queue, inbox/payout reference, retries, times, last error."""
    with _dead_letters() as dead:
        letters = dead.list(queue=queue, actor=actor, limit=limit)
        depth = dead.depth()
    if as_json:
        emit_json({"dead_letters": [letter.summary() for letter in letters], "depth": depth})
        return
    emit_table("dead letters, newest first", [_table_row(letter) for letter in letters], LIST_COLUMNS)
    console.print(_depth_line(depth))
    console.print(
        f"Times are {context.settings().timezone}. 'last error' is the final one (for a dead letter from before "
        "fleetpay kept it: the last retried one). `dlq show ID` has the first failure's time when retries <= 1."
    )


@dlq.command("show")
def dlq_show(
    message_id: Annotated[str, typer.Argument(help="A message id, as `fleetpay dlq list` shows it.")],
    as_json: JsonFlag = False,
) -> None:
    """One dead letter in full: the message as dramatiq stored it, its final error and traceback."""
    with _dead_letters() as dead:
        letter = dead.get(message_id)
    document = letter.document()
    if as_json:
        emit_json(document)
        return
    fields = {key: value for key, value in document.items() if key not in ("traceback", "message")}
    for key in ("enqueued_at", "first_failed_at", "dead_lettered_at"):
        fields[key] = _local(getattr(letter, key)) if getattr(letter, key) else "unknown (dramatiq overwrote it)"
    message = document["message"]
    fields.update(args=message["args"], kwargs=message["kwargs"],
                  options={k: v for k, v in message["options"].items() if k != "traceback"})
    emit(fields, as_json=False, title=f"dead letter {letter.id}")
    console.print("[bold]traceback of the final failure[/]" if letter.failure
                  else "[bold]traceback of the last retried failure[/] (a dead letter from before the final one was kept)")
    console.print(letter.traceback or "(none kept: the message was never retried)", markup=False)


def _report(moved: Moved, verb: str, letters: Sequence[DeadLetter]) -> None:
    by_id = {letter.id: letter for letter in letters}
    for message_id in moved.done:
        letter = by_id[message_id]
        typer.echo(f"{verb} {message_id} ({letter.actor} {letter.reference or '-'})")
    typer.echo(f"{len(moved.done)} dead letter(s) {verb}")
    if moved.gone:
        raise fail(f"already taken by another requeue or purge: {', '.join(moved.gone)}")


@dlq.command("requeue")
def dlq_requeue(
    message_ids: IdsArgument = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter (of --actor / --queue).")] = False,
    actor: ActorOption = None,
    queue: QueueOption = None,
) -> None:
    """Put dead letters back on their queue, retries reset.

    Actors are idempotent, so a requeued message never applies a payment twice.
    """
    with _dead_letters() as dead:
        letters = dead.select(ids=message_ids, wide=all_, wide_name="--all", actor=actor, queue=queue)
        if not letters:
            typer.echo("no dead letters to requeue")
            return
        moved = dead.requeue(letters)
        if all_ and len(letters) == LIST_LIMIT_MAX:
            typer.echo(f"at most {LIST_LIMIT_MAX} at a time: run it again for the rest")
    _report(moved, "requeued", letters)


@dlq.command("purge")
def dlq_purge(
    message_ids: IdsArgument = None,
    older_than: Annotated[
        Optional[str], typer.Option("--older-than", help="Dead-lettered longer ago than this: 30m, 12h, 7d, 2w.")
    ] = None,
    actor: ActorOption = None,
    queue: QueueOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    try:
        age = None if older_than is None else parse_duration(older_than)
    except ValueError as error:
        raise fail(str(error), 2) from error
    with _dead_letters() as dead:
        letters = dead.select(ids=message_ids, wide=age is not None, wide_name="--older-than", older_than=age,
                              actor=actor, queue=queue)
        if not letters:
            typer.echo("no dead letters to purge")
            return
        if not yes:
            _confirm(f"Purge {len(letters)} dead letter(s) for good?")
        moved = dead.purge(letters)
    _report(moved, "purged", letters)


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise fail("purging deletes for good: pass --yes (there is no terminal to ask on)", 2)
    if not typer.confirm(question, default=False):
        raise fail("nothing purged")
