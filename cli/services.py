"""Commands that run the system's processes, and the database migration."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from cli import context


def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Register a small fleet to try things with.")] = False,
    ingest_port: Annotated[int, typer.Option()] = 8000,
    simulator_port: Annotated[int, typer.Option()] = 8010,
    console_port: Annotated[int, typer.Option()] = 8020,
) -> None:
    """The whole system in one process tree: embedded PostgreSQL and Redis (unless their URLs are
    set), the Daraja simulator, the ingest, a worker, the scheduler and the console. Ctrl-C stops it all."""
    from launcher.dev import DevConfigError, DevPorts, run
    from fleetpay.settings import Settings

    # Not the dev.env of an earlier run: it names servers that are gone.
    own = Settings(_env_file=".env")  # type: ignore[call-arg]
    try:
        raise typer.Exit(run(own, demo=demo, ports=DevPorts(ingest_port, simulator_port, console_port)))
    except DevConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def migrate() -> None:
    """Apply database migrations (safe to re-run), on PostgreSQL itself when
    FLEETPAY_DATABASE_DIRECT_URL is set (not through PgBouncer)."""
    from db.migrate import upgrade

    current = context.settings()
    upgrade(current.database_direct_url or current.require_database_url())
    typer.echo("database is at the latest migration")


def ingest(
    host: Annotated[str, typer.Option()] = "0.0.0.0",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """The callback server. Refuses to start (exit 2, one line) with a placeholder or short
    callback or admin token."""
    from fleetpay.logs import configure_logging
    from fleetpay.settings import WeakSecrets
    from ingest.serving import serve

    current = context.settings()
    try:
        current.require_strong_secrets()  # here too: with --workers N each worker would fail alone
    except WeakSecrets as weak:
        typer.echo(f"error: {weak}", err=True)  # one line, whatever the terminal's width
        raise typer.Exit(2) from None
    configure_logging(level=current.log_level, json=current.log_json)
    serve(
        "ingest.asgi:app" if workers > 1 else _ingest_app(),
        host=host,
        port=port,
        workers=workers if workers > 1 else None,
    )


def console(
    host: Annotated[str, typer.Option(help="Bind the console to the internal network only.")] = "127.0.0.1",
    port: Annotated[Optional[int], typer.Option(help="Default FLEETPAY_CONSOLE_PORT (8020).")] = None,
) -> None:
    """The operator console (a web page): refuses to start (exit 2, one line) with a placeholder or
    short FLEETPAY_CONSOLE_SECRET. Create its users with `fleetpay users add`."""
    from console.app import build_app
    from fleetpay.logs import configure_logging
    from fleetpay.settings import WeakSecrets
    from ingest.serving import serve

    current = context.settings()
    try:
        app = build_app(current)
    except WeakSecrets as weak:
        typer.echo(f"error: {weak}", err=True)
        raise typer.Exit(2) from None
    configure_logging(level=current.log_level, json=current.log_json)
    serve(app, host=host, port=port or current.console_port)


def _ingest_app():  # type: ignore[no-untyped-def]
    from ingest.app import build_app

    return build_app(context.settings())


def worker(
    processes: Annotated[int, typer.Option(min=1)] = 2,
    threads: Annotated[int, typer.Option(min=1)] = 4,
    queues: Annotated[Optional[list[str]], typer.Option(help="Only these queues (repeatable).")] = None,
    shutdown_timeout_s: Annotated[
        int, typer.Option(min=1, help="On SIGTERM, how long work in flight may finish before it is cut (it is redelivered).")
    ] = 60,
) -> None:
    """dramatiq workers for every actor (wraps dramatiq's own CLI)."""
    argv = [sys.executable, "-m", "dramatiq", "workers.all", "--processes", str(processes), "--threads", str(threads),
            "--worker-shutdown-timeout", str(shutdown_timeout_s * 1000)]
    if queues:
        argv += ["--queues", *queues]
    os.execv(sys.executable, argv)


def sweep(
    older_than_s: Annotated[Optional[int], typer.Option(help="Default: FLEETPAY_INBOX_SWEEP_AFTER_S")] = None,
) -> None:
    """Re-enqueue inbox rows still waiting for a worker."""
    from workers.sweep_inbox import enqueue_stale_inbox_rows

    count = enqueue_stale_inbox_rows(context.sessions(), context.settings(), older_than_s=older_than_s)
    typer.echo(f"{count} inbox rows re-enqueued")
