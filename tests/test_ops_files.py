"""The dashboard and alert rules kept as files (``ops/``) stay true to the metrics fleetpay serves
and to the thresholds docs/operations.md names; ``promtool check rules`` accepts the rules, and
their unit tests (``promtool test rules``) pass."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "fleetpay.json"
METRIC = re.compile(r"\bfleetpay_[a-z_]+")


def documented_metrics() -> set[str]:
    """The metrics of docs/operations.md's table (each with a threshold to alert on)."""
    table = [line for line in (ROOT / "docs" / "operations.md").read_text().splitlines() if line.startswith("| `fleetpay_")]
    return {METRIC.search(line).group(0) for line in table}  # type: ignore[union-attr]


def served_metrics() -> set[str]:
    """Every metric name fleetpay's own code declares (the ingest's counters and gauges)."""
    names: set[str] = set()
    for path in (ROOT / "ingest").rglob("*.py"):
        names |= set(re.findall(r'"(fleetpay_[a-z_]+)"', path.read_text()))
    return names


def alert_exprs() -> list[str]:
    rules = YAML(typ="safe").load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def known(name: str) -> bool:
    base = re.sub(r"_(bucket|count|sum|total)$", "", name)
    return name in served_metrics() or base in served_metrics() or base + "_total" in served_metrics()


def test_every_documented_threshold_has_an_alert() -> None:
    alerted = {metric for expr in alert_exprs() for metric in METRIC.findall(expr)}
    missing = {m for m in documented_metrics() if not any(a.startswith(m) or m.startswith(a) for a in alerted)}
    assert not missing, f"docs/operations.md names thresholds no alert watches: {sorted(missing)}"


def test_alerts_and_panels_name_only_metrics_fleetpay_serves() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = alert_exprs() + [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    unknown = {m for expr in exprs for m in METRIC.findall(expr) if not known(m)}
    assert not unknown, sorted(unknown)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def promtool() -> str:
    beside = Path(sys.executable).with_name("promtool")  # where .ci/run puts it
    found = shutil.which("promtool") or (str(beside) if beside.exists() else None)
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package ships it): the rules are only parsed")
    return found


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], check=False, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_fire_once_for_several_ingest_instances() -> None:
    """``ops/prometheus/alerts_test.yml``: two instances' counters add up, their shared gauges do not."""
    tested = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], check=False, capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
