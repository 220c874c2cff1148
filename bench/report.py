"""Render a results JSON of ``python -m bench`` as the Markdown tables of docs/benchmarks.md.

    .venv/bin/python -m bench.report bench/results/all.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "**yes**" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/all.json")
    doc = json.loads(path.read_text())
    m = doc["machine"]
    print(f"Run: `{doc['command']}` ({doc['mode']}), started {doc['started_at']}; "
          f"{m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_gib')} GiB, Python {m.get('python')}, "
          f"PostgreSQL {m.get('postgresql')}, Redis {m.get('redis')}; load average at start {m.get('loadavg_at_start')}.\n")
    print("| figure | value | baseline (same run) | ratio | target | met? |")
    print("|---|---:|---:|---:|---|---|")
    for row in doc["summary"]:
        print(f"| {row['figure']} | {cell(row['value'])} | {cell(row['baseline'])} | {cell(row['ratio'])} | "
              f"{row['target']} | {cell(row['met']) if row['met'] is not None else '–'} |")


if __name__ == "__main__":
    main()
