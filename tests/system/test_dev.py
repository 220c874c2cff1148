"""``fleetpay dev`` as a new user runs it: embedded servers, a simulated payment paid out,
Ctrl-C leaves no process behind, and a restart keeps the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import fleetpay, fleetpay_argv, free_port, wait_until



def bare_env() -> dict[str, str]:
    """No database or Redis configured: ``fleetpay dev`` must start its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETPAY_")} | {"FLEETPAY_LOG_LEVEL": "WARNING"}


def start_dev(cwd: Path, ingest_port: int, simulator_port: int, console_port: int | None = None, *,
              banner: list[str] | None = None) -> subprocess.Popen[str]:
    """``fleetpay dev --demo`` in ``cwd`` (its ``.env`` is read, as a user's would be); the banner's
    lines are appended to ``banner``."""
    process = subprocess.Popen(
        fleetpay_argv("dev", "--demo", "--ingest-port", str(ingest_port), "--simulator-port", str(simulator_port),
                      "--console-port", str(console_port or free_port())),
        cwd=cwd, env=bare_env(), stdout=subprocess.PIPE, stderr=(cwd / "dev-stderr.log").open("a"), text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith("fleetpay dev is running"):
            if banner is not None:
                banner += [line] + [process.stdout.readline() for _ in range(4)]
            return process
        assert time.monotonic() < deadline and process.poll() is None, f"fleetpay dev did not start:\n{_tail(cwd)}"
    raise AssertionError(f"fleetpay dev exited before it was running:\n{_tail(cwd)}")


def _tail(cwd: Path, lines: int = 40) -> str:
    """The end of dev's stderr, so that a failure says why."""
    log = cwd / "dev-stderr.log"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no stderr)"


def everything_of(process: subprocess.Popen[str], cwd: Path) -> set[int]:
    """The dev process's tree, plus the embedded servers (daemons, not children) of this folder."""
    pids = {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
    for candidate in psutil.process_iter(["pid", "cmdline"]):
        if any(str(cwd) in part for part in candidate.info["cmdline"] or []):
            pids.add(candidate.info["pid"])
    return pids


def stop(process: subprocess.Popen[str], cwd: Path) -> None:
    tree = everything_of(process, cwd)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
    wait_until(lambda: not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
               timeout_s=30, what="every process of fleetpay dev to exit")


def balance(cwd: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(fleetpay("balance", "D112006", "--json", cwd=cwd, env=bare_env()).stdout)


@pytest.mark.slow
def test_dev_runs_a_payment_end_to_end_and_keeps_its_data(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    banner: list[str] = []
    dev = start_dev(tmp_path, *ports, banner=banner)
    try:
        [console_line] = [line for line in banner if "console: http://127.0.0.1:" in line]
        console_url = console_line.split("console: ")[1].split()[0]
        assert console_url == f"http://127.0.0.1:{ports[2]}"
        assert "Log in" in httpx.get(f"{console_url}/login", timeout=10).text
        fleetpay("simulate", "c2b", "--account", "025", "--amount", "200", cwd=tmp_path, env=bare_env())
        wait_until(lambda: balance(tmp_path)["paid_out_cents"] == 10_000, timeout_s=60, what="the share to be paid")
        assert balance(tmp_path)["contributed_cents"] == 10_000
    finally:
        stop(dev, tmp_path)

    dev = start_dev(tmp_path, *ports)  # the data survived the restart
    try:
        assert balance(tmp_path)["paid_out_cents"] == 10_000
    finally:
        stop(dev, tmp_path)


@pytest.mark.slow
def test_a_fare_its_payout_and_the_close_each_send_their_sms_once_and_ussd_shows_the_numbers(tmp_path: Path) -> None:
    """The fare's confirmation is delivered 20 times at once, and the SMS API fails the first send."""
    ingest_port, simulator_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{simulator_port}"
    dev = start_dev(tmp_path, ingest_port, simulator_port)
    peter = "+254705912645"  # D112006 of the demo fleet, regular driver of vehicle 025
    try:
        httpx.post(f"{simulator}/sim/faults", timeout=10, json=[
            {"mode": "duplicate_result", "api": "c2b", "copies": 20, "concurrent": True},
            {"mode": "http_5xx", "api": "sms", "match": {"to": peter}},
        ]).raise_for_status()
        fleetpay("simulate", "c2b", "--account", "025", "--amount", "200", cwd=tmp_path, env=bare_env())
        wait_until(lambda: balance(tmp_path)["paid_out_cents"] == 10_000, timeout_s=60, what="the share to be paid")

        def notices() -> list[dict]:  # type: ignore[type-arg]
            return json.loads(fleetpay("drivers", "notices", "D112006", "--json", cwd=tmp_path, env=bare_env()).stdout)["notices"]

        wait_until(lambda: sorted((n["kind"], n["state"]) for n in notices()) == [("payment", "sent"), ("payout_paid", "sent")],
                   timeout_s=60, what="the fare's and the payout's SMS")
        screens = fleetpay("simulate", "ussd", "--msisdn", "254705912645", "--input", "1", cwd=tmp_path, env=bare_env()).stdout
        assert "paid KES 100 of KES 3,000 target. KES 2,900 to go." in screens, screens
        today = balance(tmp_path)["business_date"]
        fleetpay("close-day", "--date", today, "--force", "--reason", "the test closes today", cwd=tmp_path, env=bare_env())
        wait_until(lambda: any(n["kind"] == "daily_summary" and n["state"] == "sent" for n in notices()),
                   timeout_s=60, what="the day's summary")
        sent = httpx.get(f"{simulator}/sim/sms", params={"to": peter}, timeout=10).json()["messages"]
        receipt = json.loads(fleetpay("payouts", "list", "--json", cwd=tmp_path, env=bare_env()).stdout)
        paid_receipt = [p["receipt"] for p in receipt["payouts"] if p["driver"] == "D112006"][0]
        day = f"{today[8:10]}/{today[5:7]}"
        texts = [m["message"] for m in sent]
        assert sorted(texts) == sorted([
            next(t for t in texts if t.startswith("fleetpay: KES 200 received, ")),
            f"fleetpay: KES 100 sent to your M-Pesa, receipt {paid_receipt}.",
            f"fleetpay {day}: you paid KES 100 of KES 3,000 target. Shortfall KES 2,900 added to tomorrow. Missed days: 1/3.",
        ]), texts
        assert next(t for t in texts if "received" in t).endswith(
            "vehicle 025. Today KES 100 of KES 3,000 target. Your share KES 100.")
        assert [n["attempts"] for n in notices() if n["kind"] == "payment"] == [2]  # the first send got HTTP 500
    finally:
        stop(dev, tmp_path)


@pytest.mark.slow
def test_dev_with_a_daraja_url_uses_it_and_starts_no_simulator(tmp_path: Path) -> None:
    """A configured Daraja (the sandbox; here a simulator standing in for it) is used as is."""
    from simulator import SimulatorConfig, build_app
    from tests.support import serve

    with serve(build_app(SimulatorConfig(result_delay_ms=20))) as sandbox:
        ingest_port = free_port()  # chosen once the sandbox holds its own port, so they cannot be the same
        (tmp_path / "cert.pem").write_bytes(httpx.get(f"{sandbox}/sim/cert.pem").content)
        (tmp_path / ".env").write_text(f"FLEETPAY_DARAJA_BASE_URL={sandbox}\n"  # and Africa's Talking's SMS
                                       f"FLEETPAY_SMS_BASE_URL={sandbox}\n"
                                       f"FLEETPAY_DARAJA_CERTIFICATE_PATH={tmp_path / 'cert.pem'}\n")
        banner: list[str] = []
        dev = start_dev(tmp_path, ingest_port, free_port(), banner=banner)
        try:
            assert any("no simulator started" in line for line in banner), banner
            assert not [p for p in psutil.Process(dev.pid).children(recursive=True)
                        if "simulator" in " ".join(p.cmdline())]
            fleetpay("simulate", "c2b", "--account", "025", "--amount", "200", cwd=tmp_path, env=bare_env())
            wait_until(lambda: balance(tmp_path)["paid_out_cents"] == 10_000, timeout_s=60, what="the share to be paid")
            assert len(httpx.get(f"{sandbox}/sim/payments").json()["payments"]) == 1  # paid by the "sandbox"
        finally:
            stop(dev, tmp_path)


@pytest.mark.slow
def test_a_second_dev_in_the_same_folder_is_refused_and_sighup_stops_everything(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    dev = start_dev(tmp_path, *ports)
    try:
        second = subprocess.run(fleetpay_argv("dev", "--ingest-port", str(free_port()), "--simulator-port", str(free_port()),
                                              "--console-port", str(free_port())),
                                cwd=tmp_path, env=bare_env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"already runs in this folder (pid {dev.pid})" in second.stderr
        assert balance(tmp_path)["driver"] == "D112006"  # the first one still works, Redis included
        tree = everything_of(dev, tmp_path)
        dev.send_signal(signal.SIGHUP)  # the terminal was closed
        assert dev.wait(timeout=60) == 0
        wait_until(lambda: not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                   timeout_s=30, what="every process of fleetpay dev to exit")
    finally:
        if dev.poll() is None:
            stop(dev, tmp_path)


@pytest.mark.slow
def test_a_killed_dev_is_cleaned_up_by_the_next_and_ctrl_c_is_quick(tmp_path: Path) -> None:
    """A ``fleetpay dev`` killed outright leaves its children holding the ports and its pid in
    pgserver's handle file (PostgreSQL would then outlive every later run). The next run in the
    folder stops them, starts on the same ports, and its Ctrl-C stops everything within 15 s."""
    ports = (free_port(), free_port(), free_port())
    killed = start_dev(tmp_path, *ports)
    orphans = everything_of(killed, tmp_path) - {killed.pid}
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    assert [p for p in orphans if psutil.pid_exists(p)]  # what a kill leaves behind
    dev = start_dev(tmp_path, *ports)  # the same ports: the orphans had to go
    try:
        assert balance(tmp_path)["driver"] == "D112006"
        tree = everything_of(dev, tmp_path) | orphans
        started = time.monotonic()
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
        assert time.monotonic() - started < 15, "Ctrl-C must stop fleetpay dev within 15 s"
        wait_until(lambda: not [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                   timeout_s=15, what="every process of both runs to exit, PostgreSQL included")
    finally:
        if dev.poll() is None:
            stop(dev, tmp_path)
