"""The ingest never serves with a secret everyone knows: with the placeholder (or a short) callback or
admin token, ``fleetpay ingest`` stops at once with one line and a non-zero exit, and ``build_app``
refuses; only ``fleetpay dev`` (``FLEETPAY_DEV_MODE``, which it sets for its children alone) serves
them, and it generates strong tokens of its own anyway, kept in ``.fleetpay/dev.env``."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fleetpay.settings import (
    DEV_ENV_FILE,
    PLACEHOLDER_ADMIN_TOKEN,
    PLACEHOLDER_AT_TOKEN,
    PLACEHOLDER_CALLBACK_TOKEN,
    SECRET_MIN_CHARS,
    WeakSecrets,
)
from tests.support import ADMIN_TOKEN, TOKEN, fleetpay, fleetpay_argv, free_port, serve, wait_until

STRONG = "0123456789abcdef0123456789abcdef0123"
OTHER_STRONG = "fedcba9876543210fedcba9876543210fedc"

# (case, environment of the tokens, the start of the one error line)
WEAK = [
    ("both unset", {}, "error: FLEETPAY_CALLBACK_TOKEN is the placeholder 'change-me-callback-token'; "
                       "FLEETPAY_ADMIN_TOKEN is the placeholder 'change-me-admin-token': set each to"),
    ("callback placeholder", {"FLEETPAY_CALLBACK_TOKEN": PLACEHOLDER_CALLBACK_TOKEN, "FLEETPAY_ADMIN_TOKEN": STRONG},
     "error: FLEETPAY_CALLBACK_TOKEN is the placeholder 'change-me-callback-token': set it to"),
    ("admin placeholder", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_ADMIN_TOKEN": PLACEHOLDER_ADMIN_TOKEN},
     "error: FLEETPAY_ADMIN_TOKEN is the placeholder 'change-me-admin-token': set it to"),
    ("short callback", {"FLEETPAY_CALLBACK_TOKEN": "s3cret", "FLEETPAY_ADMIN_TOKEN": STRONG},
     f"error: FLEETPAY_CALLBACK_TOKEN is shorter than {SECRET_MIN_CHARS} characters: set it to"),
    ("short previous", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_CALLBACK_TOKEN_PREVIOUS": "old",
                        "FLEETPAY_ADMIN_TOKEN": OTHER_STRONG},
     f"error: FLEETPAY_CALLBACK_TOKEN_PREVIOUS is shorter than {SECRET_MIN_CHARS} characters: set it to"),
    ("short admin", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_ADMIN_TOKEN": "x" * (SECRET_MIN_CHARS - 1)},
     f"error: FLEETPAY_ADMIN_TOKEN is shorter than {SECRET_MIN_CHARS} characters: set it to"),
    ("admin is the callback token", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_ADMIN_TOKEN": STRONG},
     "error: FLEETPAY_ADMIN_TOKEN is also a callback token: set it to"),
    ("short Africa's Talking token", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_ADMIN_TOKEN": OTHER_STRONG,
                                      "FLEETPAY_AFRICAS_TALKING_TOKEN": "at-token"},
     f"error: FLEETPAY_AFRICAS_TALKING_TOKEN is shorter than {SECRET_MIN_CHARS} characters: set it to"),
    ("Africa's Talking given the callback token", {"FLEETPAY_CALLBACK_TOKEN": STRONG, "FLEETPAY_ADMIN_TOKEN": OTHER_STRONG,
                                                   "FLEETPAY_AFRICAS_TALKING_TOKEN": STRONG},
     "error: FLEETPAY_AFRICAS_TALKING_TOKEN is also the callback or admin token: set it to"),
]


def ingest_env(database_url: str, redis_url: str, **tokens: str) -> dict[str, str]:
    """A user's environment: no FLEETPAY_* of the test run but where the servers are."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEETPAY_")}
    return env | {"FLEETPAY_DATABASE_URL": database_url, "FLEETPAY_REDIS_URL": redis_url, **tokens}


@pytest.mark.parametrize(("case", "tokens", "line"), WEAK, ids=[case for case, _, _ in WEAK])
def test_fleetpay_ingest_refuses_to_start_with_a_weak_token(tmp_path: Path, database_url, redis_url, case, tokens, line) -> None:  # type: ignore[no-untyped-def]
    port = str(free_port())
    result = fleetpay("ingest", "--host", "127.0.0.1", "--port", port, env=ingest_env(database_url, redis_url, **tokens),
                      cwd=tmp_path, check=False, timeout_s=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    [only] = result.stderr.splitlines()  # one line, whatever the terminal: no traceback, no log
    assert only.startswith(line), only
    assert 'secrets.token_hex(32)' in only
    for value in tokens.values():
        if value not in (PLACEHOLDER_CALLBACK_TOKEN, PLACEHOLDER_ADMIN_TOKEN):
            assert value not in only  # a (weak) secret is still a secret
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.parametrize(("case", "tokens", "line"), WEAK, ids=[case for case, _, _ in WEAK])
def test_build_app_refuses_a_weak_token(settings, engine, broker, case, tokens, line) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app

    changes = {
        "callback_token": SecretStr(tokens.get("FLEETPAY_CALLBACK_TOKEN", PLACEHOLDER_CALLBACK_TOKEN)),
        "admin_token": SecretStr(tokens.get("FLEETPAY_ADMIN_TOKEN", PLACEHOLDER_ADMIN_TOKEN)),
        "africas_talking_token": SecretStr(tokens.get("FLEETPAY_AFRICAS_TALKING_TOKEN", PLACEHOLDER_AT_TOKEN)),
    }
    if "FLEETPAY_CALLBACK_TOKEN_PREVIOUS" in tokens:
        changes["callback_token_previous"] = SecretStr(tokens["FLEETPAY_CALLBACK_TOKEN_PREVIOUS"])
    with pytest.raises(WeakSecrets) as refused:
        build_app(settings.model_copy(update=changes), engine=engine, broker=broker)
    assert str(refused.value).startswith(line.removeprefix("error: "))


def test_fleetpay_ingest_serves_with_strong_tokens(tmp_path: Path, database_url, redis_url) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = ingest_env(database_url, redis_url, FLEETPAY_CALLBACK_TOKEN=STRONG, FLEETPAY_ADMIN_TOKEN=OTHER_STRONG)
    process = subprocess.Popen(fleetpay_argv("ingest", "--host", "127.0.0.1", "--port", str(port)), env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        def healthy() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=60, what="fleetpay ingest to serve")
        placeholder = httpx.get(f"http://127.0.0.1:{port}/admin/dlq", timeout=5,
                                headers={"Authorization": f"Bearer {PLACEHOLDER_ADMIN_TOKEN}"})
        assert placeholder.status_code == 401
        assert httpx.post(f"http://127.0.0.1:{port}/cb/{PLACEHOLDER_CALLBACK_TOKEN}/c2b/confirm", json={}, timeout=5).status_code == 404
        assert httpx.post(f"http://127.0.0.1:{port}/cb/{STRONG}/c2b/confirm", json={}, timeout=5).status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_placeholders_open_nothing_on_the_test_ingest(ingest_url: str) -> None:
    assert (TOKEN, ADMIN_TOKEN) != (PLACEHOLDER_CALLBACK_TOKEN, PLACEHOLDER_ADMIN_TOKEN)
    assert min(len(TOKEN), len(ADMIN_TOKEN)) >= SECRET_MIN_CHARS
    admin = httpx.get(f"{ingest_url}/admin/dlq", headers={"Authorization": f"Bearer {PLACEHOLDER_ADMIN_TOKEN}"}, timeout=10)
    assert admin.status_code == 401
    assert httpx.post(f"{ingest_url}/cb/{PLACEHOLDER_CALLBACK_TOKEN}/c2b/confirm", json={}, timeout=10).status_code == 404
    assert httpx.post(f"{ingest_url}/at/{PLACEHOLDER_AT_TOKEN}/ussd", data={}, timeout=10).status_code == 404


def test_with_the_placeholder_africas_talking_urls_do_not_exist(settings, engine, broker) -> None:  # type: ignore[no-untyped-def]
    """An ingest that does not use Africa's Talking serves as before, its two URLs unknown."""
    from ingest.app import build_app

    plain = settings.model_copy(update={"africas_talking_token": SecretStr(PLACEHOLDER_AT_TOKEN)})
    with serve(build_app(plain, engine=engine, broker=broker)) as url:
        for token in (PLACEHOLDER_AT_TOKEN, TOKEN, ""):
            assert httpx.post(f"{url}/at/{token}/ussd", data={"sessionId": "x"}, timeout=10).status_code == 404


def test_under_fleetpay_dev_the_ingest_serves_even_placeholders(settings, engine, broker) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app

    dev = settings.model_copy(update={
        "callback_token": SecretStr(PLACEHOLDER_CALLBACK_TOKEN),
        "admin_token": SecretStr(PLACEHOLDER_ADMIN_TOKEN),
        "dev_mode": True,
    })
    with serve(build_app(dev, engine=engine, broker=broker)) as url:
        assert httpx.post(f"{url}/cb/{PLACEHOLDER_CALLBACK_TOKEN}/c2b/confirm", json={}, timeout=10).status_code == 400
        admin = httpx.get(f"{url}/admin/dlq", headers={"Authorization": f"Bearer {PLACEHOLDER_ADMIN_TOKEN}"}, timeout=10)
        assert admin.status_code == 200


# --- fleetpay dev's own tokens ---------------------------------------------------------------------------


def test_fleetpay_dev_generates_strong_tokens_once_and_keeps_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetpay.settings import Settings
    from launcher.dev import DevPorts, child_env, read_dev_env, write_dev_env

    monkeypatch.chdir(tmp_path)  # dev.env is where `fleetpay dev` runs
    bare = Settings(_env_file=None, callback_token=SecretStr(PLACEHOLDER_CALLBACK_TOKEN),  # type: ignore[call-arg]
                    admin_token=SecretStr(PLACEHOLDER_ADMIN_TOKEN), africas_talking_token=SecretStr(PLACEHOLDER_AT_TOKEN),
                    data_dir=str(tmp_path / "data"))
    first = child_env(bare, "postgresql://x/y", "redis://x/0", DevPorts())
    callback, admin = first["FLEETPAY_CALLBACK_TOKEN"], first["FLEETPAY_ADMIN_TOKEN"]
    assert re.fullmatch(r"[0-9a-f]{64}", callback) and re.fullmatch(r"[0-9a-f]{64}", admin) and callback != admin
    assert re.fullmatch(r"[0-9a-f]{64}", first["FLEETPAY_AFRICAS_TALKING_TOKEN"])
    assert "FLEETPAY_DEV_MODE" not in first  # the children get it; dev.env, read by every command here, never
    path = write_dev_env(first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path == Path(DEV_ENV_FILE)

    again = child_env(bare, "postgresql://x/y", "redis://x/0", DevPorts())  # a restart
    assert (again["FLEETPAY_CALLBACK_TOKEN"], again["FLEETPAY_ADMIN_TOKEN"]) == (callback, admin)
    assert read_dev_env() == first  # what commands run beside it read

    own = Settings(_env_file=None, callback_token=SecretStr(STRONG), admin_token=SecretStr(OTHER_STRONG),  # type: ignore[call-arg]
                   data_dir=str(tmp_path / "data"))
    mine = child_env(own, "postgresql://x/y", "redis://x/0", DevPorts())
    assert (mine["FLEETPAY_CALLBACK_TOKEN"], mine["FLEETPAY_ADMIN_TOKEN"]) == (STRONG, OTHER_STRONG)


def test_the_documented_env_files_ship_no_placeholder() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("docs/operations.md", "docker-compose.yml", "README.md"):
        text = (root / name).read_text()
        for line in text.splitlines():
            if re.match(r"\s*FLEETPAY_(CALLBACK|ADMIN)_TOKEN\s*[=:]", line):
                assert "change-me" not in line, f"{name}: {line}"
