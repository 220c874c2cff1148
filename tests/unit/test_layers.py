"""The folders are layers, in the order money moves, and no module imports from a layer above its own.

Lowest first: ``fleetpay`` (settings, logs, pure rules) → ``schemas`` (pure Daraja parsing) → ``db``
(storage) → ``money`` (every operation that moves money, one transaction each) → ``workers`` (actors
and queue plumbing) → ``ingest`` (the HTTP edge) and ``launcher`` (the dev process tree) → ``cli``.
The simulator stands apart: it plays Safaricom and imports none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("fleetpay", "schemas", "db", "money", "workers", "ingest", "console", "launcher", "cli")
RANK = {name: rank for rank, name in enumerate(LAYERS)}
SIDE_BY_SIDE = ("ingest", "console", "launcher")  # none imports another
RANK["console"] = RANK["launcher"] = RANK["ingest"]
ACTOR_NAMES = ("apply_callbacks", "process_callback", "send_payout", "check_payout_status", "sweep_inbox", "sweep_payouts",
               "reconcile_books", "reconcile_mpesa", "close_day", "check_float", "send_notification",
               "sweep_notifications")


def imports_of(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names imported) of every absolute import in ``path``, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_from_a_layer_above_its_own(layer: str) -> None:
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources(layer)
        for line, module, _ in imports_of(path)
        if RANK.get(module.split(".")[0], -1) > RANK[layer]
        or (module.split(".")[0] in SIDE_BY_SIDE and layer in SIDE_BY_SIDE and module.split(".")[0] != layer)
    ]
    assert not upward, "\n".join(upward)


def test_the_simulator_imports_nothing_of_fleetpay() -> None:
    ours = [f"{path.relative_to(ROOT)}:{line} imports {module}" for path in sources("simulator")
            for line, module, _ in imports_of(path) if module.split(".")[0] in RANK]
    assert not ours, "\n".join(ours)


def test_the_cli_writes_no_sql_and_runs_no_actor() -> None:
    """Commands parse, call one library function and print: no query of their own (only the session
    types, and the database's errors to explain them), and no actor called or imported (they reach
    actors through library functions)."""
    offending = []
    for path in sources("cli"):
        for line, module, names in imports_of(path):
            if module.split(".")[0] == "sqlalchemy" and module not in ("sqlalchemy.orm", "sqlalchemy.exc"):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if module.startswith("db.models"):
                offending.append(f"{path.relative_to(ROOT)}:{line} reads tables directly ({module})")
            if actors := set(names) & set(ACTOR_NAMES):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports the actor(s) {sorted(actors)}")
    assert not offending, "\n".join(offending)


def test_every_actor_name_is_declared_once() -> None:
    from workers import messages

    declared = {value for name, value in vars(messages).items() if name.isupper() and isinstance(value, str)}
    assert declared == set(ACTOR_NAMES)
    actor_files = {path.stem for path in sources("workers") if "@dramatiq.actor(" in path.read_text()}
    assert actor_files == set(ACTOR_NAMES), "one actor per file, named after it"
