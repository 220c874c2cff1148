"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema as vendored by
check-jsonschema (a dev dependency; by hand: ``check-jsonschema --builtin-schema
vendor.compose-spec docker-compose.yml``), as written and once interpolated with each settings
block docs/operations.md documents. Then our own invariants: every fleetpay service waits for the
migration, the worker's stop grace period outlives the shutdown timeout ``fleetpay worker``
really passes to dramatiq, Redis appends only, PostgreSQL keeps a volume and a healthcheck, the
simulator exists only in profile ``dev``, each service's command parses with the real CLI, the
image runs as an unprivileged user, and third-party images are pinned to a major version.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from dramatiq.cli import make_argument_parser
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML
from typer.main import get_command
from typer.testing import CliRunner

from cli import app
from fleetpay.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OPERATIONS = ROOT / "docs" / "operations.md"

#: Services built from this repository (they share the ``x-fleetpay`` anchor).
FLEETPAY_SERVICES = ("migrate", "ingest", "worker", "scheduler", "console", "simulator")
#: The fleetpay services that are the system itself; the simulator stands in for Safaricom.
SYSTEM_SERVICES = ("ingest", "worker", "scheduler")
ALL_SERVICES = {"postgres", "redis", "rabbitmq", "pgbouncer", *FLEETPAY_SERVICES}
#: Services that start only with their profile.
PROFILED = {"simulator": ["dev"], "rabbitmq": ["rabbitmq"], "pgbouncer": ["pgbouncer"]}
SECRETS = (
    "POSTGRES_PASSWORD",
    "FLEETPAY_CALLBACK_TOKEN",
    "FLEETPAY_ADMIN_TOKEN",
    "FLEETPAY_DARAJA_CONSUMER_KEY",
    "FLEETPAY_DARAJA_CONSUMER_SECRET",
    "FLEETPAY_DARAJA_INITIATOR_PASSWORD",
)


# --- loading -------------------------------------------------------------------------------------


def load_yaml(text: str) -> Any:
    """Safe YAML with merge keys (``<<: *fleetpay``), as compose reads it."""
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


# --- compose interpolation (the subset of the spec this file may use) ----------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset_or_empty = not value
        if op == ":-":
            return arg if unset_or_empty else value  # type: ignore[return-value]
        if op == "-":
            return arg if value is None else value
        if op == ":?":
            if unset_or_empty:
                raise MissingVariable(f"{name}: {arg}")
            return value  # type: ignore[return-value]
        if op == "?":
            if value is None:
                raise MissingVariable(f"{name}: {arg}")
            return value
        if op == ":+":
            return "" if unset_or_empty else arg
        if op == "+":
            return "" if value is None else arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def strings(node: Any) -> Iterator[str]:
    """Every string value of the document (comments are gone; keys are not interpolated)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables(compose: Any) -> Iterator[re.Match[str]]:
    for text in strings(compose):
        yield from (m for m in _VARIABLE.finditer(text) if not m["escaped"])


def required_variables(compose: Any) -> set[str]:
    return {m["name"] for m in variables(compose) if m["op"] in (":?", "?")}


def documented_settings() -> dict[str, dict[str, str]]:
    """The ```dotenv blocks of docs/operations.md: {"production": {...}, "dev": {...}, "past one
    host": {...}}; the last (profiles rabbitmq and pgbouncer) is added to the production block."""
    blocks = re.findall(r"^```dotenv\n(.*?)^```", OPERATIONS.read_text(), re.M | re.S)
    found: dict[str, dict[str, str]] = {}
    for block in blocks:
        env = dict(
            line.split("=", 1) for line in block.splitlines() if line.strip() and not line.startswith("#")
        )
        profiles = env.get("COMPOSE_PROFILES")
        found["production" if profiles is None else "dev" if profiles == "dev" else "past one host"] = env
    if "past one host" in found and "production" in found:
        found["past one host"] = found["production"] | found["past one host"]
    return found


# --- durations and the CLI -----------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration_s(text: str) -> float:
    """A compose duration (``10m10s``, ``1m30s``, ``90s``) in seconds."""
    parts = _DURATION_PART.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def entrypoint() -> list[str]:
    [value] = [rest for word, rest in final_stage() if word == "ENTRYPOINT"]
    return json.loads(value)


def parse_cli(args: list[str]) -> dict[str, Any]:
    """Parse ``fleetpay <args>`` with the real CLI, without running anything: the options."""
    group = get_command(app)  # typer's (vendored) click group
    parent = group.context_class(group, info_name="fleetpay")
    command = group.get_command(parent, args[0])
    assert command is not None, f"`fleetpay {args[0]}` is not a command"
    with command.make_context(args[0], list(args[1:]), parent=parent) as ctx:
        return dict(ctx.params)


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "use the exec (list) form of command"
    return [str(part) for part in command]


def published_container_ports(service: Mapping[str, Any]) -> Iterator[int]:
    for port in service.get("ports", []):
        yield int(str(port).rsplit(":", 1)[-1].split("/")[0])


# --- the schema ----------------------------------------------------------------------------------


def test_the_compose_file_matches_the_compose_spec(compose: dict[str, Any], validator: Draft202012Validator) -> None:
    assert schema_errors(validator, compose) == []


def test_the_schema_catches_a_typo(compose: dict[str, Any], validator: Draft202012Validator) -> None:
    """The validator is not vacuous: an unknown service key is refused."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["stop_grace_perod"] = broken["services"]["worker"].pop("stop_grace_period")
    assert schema_errors(validator, broken)


@pytest.mark.parametrize("which", ["production", "dev", "past one host"])
def test_with_the_documented_settings_it_interpolates_and_still_matches(
    compose: dict[str, Any], validator: Draft202012Validator, which: str
) -> None:
    documented = documented_settings()
    assert set(documented) == {"production", "dev", "past one host"}, "docs/operations.md documents the .env blocks"
    env = documented[which]
    missing = required_variables(compose) - set(env)
    assert not missing, f"docs/operations.md's {which} block lacks {sorted(missing)}"
    assert schema_errors(validator, interpolate(compose, env)) == []


def test_the_dev_settings_point_fleetpay_at_the_simulator() -> None:
    dev, production = documented_settings()["dev"], documented_settings()["production"]
    assert dev["COMPOSE_PROFILES"] == "dev"
    assert dev["FLEETPAY_DARAJA_BASE_URL"] == "http://simulator:8010"
    assert dev["FLEETPAY_PUBLIC_BASE_URL"] == "http://ingest:8000"  # the simulator calls back inside
    assert "COMPOSE_PROFILES" not in production
    assert production["FLEETPAY_DARAJA_BASE_URL"].startswith("https://")
    assert production["FLEETPAY_PUBLIC_BASE_URL"].startswith("https://")


def test_a_missing_secret_stops_compose(compose: dict[str, Any]) -> None:
    env = dict(documented_settings()["production"])
    del env["FLEETPAY_CALLBACK_TOKEN"]
    with pytest.raises(MissingVariable, match="FLEETPAY_CALLBACK_TOKEN"):
        interpolate(compose, env)


def test_the_check_jsonschema_cli_accepts_it() -> None:
    """What a developer runs by hand; also exercises check-jsonschema's own YAML loading."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the services --------------------------------------------------------------------------------


def test_the_services(services: dict[str, Any]) -> None:
    assert set(services) == ALL_SERVICES


def test_every_fleetpay_service_shares_the_anchor(compose: dict[str, Any], services: dict[str, Any]) -> None:
    shared = compose["x-fleetpay"]
    built_here = {name for name, service in services.items() if "build" in service}
    assert built_here == set(FLEETPAY_SERVICES)
    for name in FLEETPAY_SERVICES:
        for key in ("image", "build", "env_file", "environment", "init"):
            assert services[name][key] == shared[key], f"{name}.{key} differs from x-fleetpay"


def test_fleetpay_reaches_postgres_and_redis_in_the_compose_network(compose: dict[str, Any]) -> None:
    environment = compose["x-fleetpay"]["environment"]
    assert re.fullmatch(
        r"postgresql://fleetpay:\$\{POSTGRES_PASSWORD:\?[^}]+\}@\$\{POSTGRES_ENDPOINT:-postgres:5432\}/fleetpay",
        environment["FLEETPAY_DATABASE_URL"],
    )
    # The session-level locks never go through PgBouncer (docs/operations.md, "PgBouncer").
    assert re.fullmatch(
        r"postgresql://fleetpay:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/fleetpay",
        environment["FLEETPAY_DATABASE_DIRECT_URL"],
    )
    assert environment["FLEETPAY_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["FLEETPAY_BROKER_URL"] == "${FLEETPAY_BROKER_URL:-redis://redis:6379/0}"


def test_past_one_host_the_profiles_reach_rabbitmq_and_pgbouncer() -> None:
    scaled = documented_settings()["past one host"]
    assert set(scaled["COMPOSE_PROFILES"].split(",")) == {"rabbitmq", "pgbouncer"}
    assert scaled["FLEETPAY_BROKER_URL"].startswith("amqp://fleetpay:")
    assert scaled["FLEETPAY_BROKER_URL"].endswith("@rabbitmq:5672/fleetpay")
    assert scaled["POSTGRES_ENDPOINT"] == "pgbouncer:6432"


def test_rabbitmq_lets_an_hour_long_message_run(compose: dict[str, Any], services: dict[str, Any]) -> None:
    """The daily close and the reconciliation may run an hour (their actors' time limit); RabbitMQ's
    consumer timeout must be longer, or it takes the message back from a worker still running it."""
    [mounted] = services["rabbitmq"]["configs"]
    assert mounted["target"].startswith("/etc/rabbitmq/conf.d/")
    content = compose["configs"][mounted["source"]]["content"]
    timeout_ms = int(re.fullmatch(r"consumer_timeout = (\d+)\n?", content).group(1))
    assert timeout_ms > 3_600_000


def test_pgbouncer_pools_by_transaction_in_front_of_postgres(services: dict[str, Any]) -> None:
    pgbouncer = services["pgbouncer"]["environment"]
    assert (pgbouncer["POOL_MODE"], pgbouncer["DB_HOST"], pgbouncer["LISTEN_PORT"]) == ("transaction", "postgres", "6432")
    assert int(pgbouncer["DEFAULT_POOL_SIZE"]) >= 2  # the reconciliation reads on two connections


def test_rabbitmq_keeps_its_queues_on_a_volume_and_refuses_an_empty_password(compose: dict[str, Any], services: dict[str, Any]) -> None:
    rabbitmq = services["rabbitmq"]
    assert "rabbitmqdata:/var/lib/rabbitmq" in rabbitmq["volumes"] and "rabbitmqdata" in compose["volumes"]
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == "${RABBITMQ_PASSWORD:-}"
    assert '[ -n "$$RABBITMQ_DEFAULT_PASS" ] ||' in rabbitmq["entrypoint"][2]
    assert rabbitmq["hostname"] == "rabbitmq"


def test_every_fleetpay_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    settings = {f"FLEETPAY_{name.upper()}" for name in Settings.model_fields}
    named = set(compose["x-fleetpay"]["environment"])
    named |= {m["name"] or m["bare"] for m in variables(compose) if (m["name"] or m["bare"]).startswith("FLEETPAY_")}
    for env in documented_settings().values():
        named |= {key for key in env if key.startswith("FLEETPAY_")}
    assert named - settings == set()


def test_secrets_come_from_the_environment_never_from_the_file(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for key in SECRETS:
            if key in environment:
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", str(environment[key])), f"{name}.{key}"
    for match in variables(compose):  # never a default, anywhere
        assert not (match["name"] in SECRETS and match["op"] in ("-", ":-", "+", ":+")), match[0]
    assert required_variables(compose) >= set(SECRETS)


def test_every_fleetpay_service_waits_for_migrate(services: dict[str, Any]) -> None:
    for name in SYSTEM_SERVICES:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    migrate = services["migrate"]
    assert command_of(migrate) == ["migrate"]
    assert migrate["restart"] == "no"  # one-shot
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_conditions_are_satisfiable(services: dict[str, Any]) -> None:
    """service_healthy needs a healthcheck; service_completed_successfully needs a one-shot."""
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: use the long form of depends_on"
        for target, how in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert "dev" not in services[target].get("profiles", []), f"{name} needs the dev profile"
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must be one-shot"
            else:
                assert condition == "service_started"


def test_postgres_keeps_its_data_in_a_volume_and_has_a_healthcheck(compose: dict[str, Any], services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    data = [v for v in postgres["volumes"] if str(v).split(":")[1] == "/var/lib/postgresql/data"]
    assert len(data) == 1
    assert data[0].split(":")[0] in compose["volumes"]  # a named volume
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["environment"]["POSTGRES_USER"] == "fleetpay"
    assert postgres["environment"]["POSTGRES_DB"] == "fleetpay"


def test_redis_appends_only_to_a_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    redis = services["redis"]
    command = command_of(redis)
    assert command[command.index("--appendonly") + 1] == "yes"
    assert [v for v in redis["volumes"] if v.split(":")[1] == "/data" and v.split(":")[0] in compose["volumes"]]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_ingest_is_healthy_when_readyz_answers(services: dict[str, Any]) -> None:
    ingest = services["ingest"]
    test = ingest["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python" and "urllib.request" in test[3]
    assert "http://127.0.0.1:8000/readyz" in test[3]
    assert not {"curl", "wget"} & set(" ".join(test).split())  # not in the slim image


@pytest.mark.parametrize("name", FLEETPAY_SERVICES)
def test_each_command_parses_with_the_real_cli(services: dict[str, Any], name: str) -> None:
    assert entrypoint() == ["fleetpay"]
    params = parse_cli(command_of(services[name]))
    if "host" in params:  # a server: reachable from the other containers, on the port published
        assert params["host"] == "0.0.0.0"
        assert set(published_container_ports(services[name])) <= {params["port"]}
        assert str(params["port"]) in " ".join(services[name]["healthcheck"]["test"])


def test_the_worker_outlives_dramatiqs_shutdown_timeout(services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``fleetpay worker`` execs dramatiq: capture that argv, parse it with dramatiq's own parser,
    and read the worker shutdown timeout it really gets (its default unless a flag is passed)."""
    worker = services["worker"]
    assert command_of(worker)[:1] == ["worker"]
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: execs.append(list(argv)))
    result = CliRunner().invoke(app, command_of(worker))
    assert result.exit_code == 0, result.output
    [argv] = execs
    dramatiq_args = make_argument_parser().parse_args(argv[argv.index("dramatiq") + 1 :])
    assert dramatiq_args.processes == 2 and dramatiq_args.threads == 8
    shutdown_s = dramatiq_args.worker_shutdown_timeout / 1000
    grace_s = duration_s(worker["stop_grace_period"])
    assert shutdown_s < grace_s <= shutdown_s + 60, (shutdown_s, grace_s)
    assert worker["stop_signal"] == "SIGTERM"


def test_the_worker_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "scale" not in worker and "replicas" not in worker.get("deploy", {})


def test_one_scheduler(services: dict[str, Any]) -> None:
    scheduler = services["scheduler"]
    assert command_of(scheduler) == ["scheduler"]
    assert scheduler.get("deploy", {}).get("replicas", 1) == 1
    assert int(scheduler.get("scale", 1)) == 1


def test_the_simulator_rabbitmq_and_pgbouncer_run_only_in_their_profiles(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("profiles") == PROFILED.get(name), f"{name}: profiles {service.get('profiles')}"


def test_third_party_images_are_pinned_to_a_major_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        assert re.fullmatch(r"[a-z0-9][a-z0-9._/-]*:\d+(\.\d+)*(-[a-z0-9.]+)?", image), f"{name}: {image}"


# --- the image -----------------------------------------------------------------------------------


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0")


def test_the_image_is_slim_python_311_with_fleetpay_as_entrypoint() -> None:
    instructions = dockerfile_instructions()
    text = " ".join(rest for word, rest in instructions if word in ("ARG", "FROM"))
    assert "python:3.11-slim" in text
    assert entrypoint() == ["fleetpay"]
    assert "HEALTHCHECK" not in [word for word, _ in instructions]  # compose probes each service


def test_the_image_bakes_in_no_secret_and_no_dev_extra() -> None:
    for word, rest in dockerfile_instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"TOKEN|PASSWORD|SECRET|KEY", rest, re.I), rest
        if word == "RUN" and "pip install" in rest:
            assert "[dev]" not in rest and "[embedded]" not in rest, rest
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".env", ".git", ".venv"} <= ignored


def test_dependencies_are_a_layer_of_their_own() -> None:
    """Only pyproject.toml is copied before the dependencies are installed: a code change
    rebuilds the last layers, not the dependencies."""
    stage = final_stage()
    first_copy = next(rest for word, rest in stage if word == "COPY")
    assert first_copy.split()[0] == "pyproject.toml"
    install_deps = next(i for i, (word, rest) in enumerate(stage) if word == "RUN" and "pip install -r" in rest)
    copies_before = [rest for word, rest in stage[:install_deps] if word == "COPY"]
    assert copies_before == [first_copy]
