"""Every `fleetpay …` command line that README.md and docs/ show names a real command, and only
flags that command has: the docs say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "tests" / "README.md"]
ALWAYS = {"--help", "--debug"}


def command_lines(text: str) -> set[str]:
    """``fleetpay …`` in inline code, and at the start of lines inside fenced code blocks."""
    found = {match.group(1) for match in re.finditer(r"`((?:\.venv/bin/)?fleetpay [^`]+)`", text)}
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        found |= {match.group(1).strip() for match in re.finditer(r"^\s*((?:\.venv/bin/)?fleetpay [^\n#]+)", block, re.M)}
    return {part.removeprefix(".venv/bin/") for line in found for part in re.split(r"\s*/\s*(?=fleetpay )|\s+&&\s+", line)}


def problems(line: str) -> list[str]:
    command = typer.main.get_command(app)
    words, path = line.split()[1:], ["fleetpay"]
    while words and isinstance(command, typer.core.TyperGroup) and words[0] in command.commands:
        command = command.commands[words[0]]
        path.append(words.pop(0))
    if isinstance(command, typer.core.TyperGroup) and words and re.fullmatch(r"[a-z-]+", words[0]):
        return [f"no command {' '.join([*path, words[0]])}"]
    options = {opt for param in command.params for opt in param.opts} | ALWAYS
    flags = {match.group(1) for word in words if (match := re.match(r"\[?(--[a-z][a-z-]*)", word))}
    return [f"{' '.join(path)} has no {flag}" for flag in sorted(flags - options)]


LINES = sorted({line for doc in DOCS for line in command_lines(doc.read_text())})


def test_the_docs_show_commands() -> None:
    assert len(LINES) > 40  # the extraction itself works


@pytest.mark.parametrize("line", LINES)
def test_every_command_and_flag_in_the_docs_exists(line: str) -> None:
    assert problems(line) == []
