"""docker-compose.yml against what the product needs, without a Docker engine.

The file is read as YAML and checked for what `make up` relies on: every service has a
healthcheck and a pinned image behind a variable, every ``JOURNEYS_*`` variable is a
real setting (a typo would be silently ignored by pydantic-settings), ``depends_on``
names real services with real conditions, the durable data sits on named volumes, and
the ClickHouse analyst is read-only. Where a ``docker compose`` CLI exists, it must
accept the file too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.commands.collect import CollectorSettings
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
USERS_XML = REPO / "docker" / "clickhouse" / "users.d" / "journeys.xml"

#: The parts of the product and the `journeys` sub-command each one runs.
JOURNEYS_COMMANDS = {
    "migrate": ["journeys", "migrate"],
    "collector": ["journeys", "collect"],
    "worker": ["journeys", "worker"],
    "sink": ["journeys", "sink"],
}
INFRASTRUCTURE = {"kafka", "schema-registry", "clickhouse"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

_VARIABLE = re.compile(
    r"\$\$"  # an escaped dollar
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^{}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable interpolation of *text* with *env* (empty: the defaults)."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return arg if unset else str(value)
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return _VARIABLE.sub(one, text)


def variables(text: str) -> set[str]:
    """The variables *text* interpolates."""
    return {
        m.group("name") or m.group("bare") for m in _VARIABLE.finditer(text) if m.group(0) != "$$"
    }


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, in either of Compose's two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """``{dependency: condition}``; the short list form means ``service_started``."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def default_image(service: str) -> str:
    """The image *service* runs when no variable overrides it."""
    return interpolate(services()[service]["image"])


def env_names(model: type[Any]) -> set[str]:
    prefix = model.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in model.model_fields}


# ---- shape --------------------------------------------------------------------------


def test_it_has_every_part_of_the_product() -> None:
    found = services()
    missing = (INFRASTRUCTURE | set(JOURNEYS_COMMANDS)) - set(found)
    assert not missing, f"docker-compose.yml lacks the services {sorted(missing)}"
    for name, command in JOURNEYS_COMMANDS.items():
        assert found[name].get("command") == command, name
        assert "build" in found[name], f"{name} must be buildable from docker/Dockerfile"
        assert found[name]["build"]["dockerfile"] == "docker/Dockerfile", name


def test_kafka_runs_in_kraft_mode_with_a_listener_for_the_host() -> None:
    kafka = services()["kafka"]
    env = environment(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    advertised = interpolate(env["KAFKA_ADVERTISED_LISTENERS"]).split(",")
    listeners = {item.split("://")[0]: item.split("://")[1] for item in advertised}
    # The containers' bootstrap address is one the broker advertises ...
    journeys_env = environment(services()["worker"])
    assert journeys_env["JOURNEYS_KAFKA_BOOTSTRAP"] in listeners.values()
    # ... and the host's (README: JOURNEYS_KAFKA_BOOTSTRAP=localhost:9094) is published.
    assert "localhost:9094" in listeners.values()
    assert any(str(p).split(":")[-1] == "9094" for p in kafka.get("ports", []))
    assert env["KAFKA_LOG_DIRS"] in {v.split(":")[1] for v in kafka["volumes"]}


def test_two_workers_share_the_partitions() -> None:
    worker = services()["worker"]
    replicas = int(interpolate(str(worker["deploy"]["replicas"])))
    partitions = int(interpolate(environment(worker)["JOURNEYS_PARTITIONS"]))
    assert 2 <= replicas <= partitions
    # Replicas share nothing on disk: each keeps its own table state.
    assert not worker.get("volumes"), "replicas must not share one rocksdb data dir"
    assert "container_name" not in worker, "a fixed container name prevents replicas"


# ---- the properties every service needs ----------------------------------------------


def test_every_service_has_a_healthcheck() -> None:
    missing = []
    for name, service in services().items():
        check = service.get("healthcheck") or {}
        test = check.get("test")
        if check.get("disable") or not test or test in (["NONE"], "NONE"):
            missing.append(name)
    assert not missing, f"services without a healthcheck: {missing}"


def test_every_image_is_pinned_behind_a_variable() -> None:
    for name, service in services().items():
        image = service.get("image", "")
        match = re.fullmatch(r"\$\{(?P<var>[A-Z][A-Z0-9_]*_IMAGE):-(?P<default>[^}]+)\}", image)
        assert match, f"{name}: image {image!r} is not ${{SOMETHING_IMAGE:-repo:tag}}"
        repo, _, tag = match["default"].rpartition(":")
        assert repo and tag, f"{name}: {match['default']!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: tag {tag!r} is not pinned"


def test_every_journeys_variable_is_a_setting() -> None:
    """pydantic-settings ignores unknown JOURNEYS_* names, so a typo here is silent there."""
    settings = env_names(Settings)
    collector = settings | env_names(CollectorSettings)
    unknown = {}
    for name, service in services().items():
        known = collector if service.get("command") == JOURNEYS_COMMANDS["collector"] else settings
        bad = sorted(
            k for k in environment(service) if k.startswith("JOURNEYS_") and k not in known
        )
        if bad:
            unknown[name] = bad
    env_lines = re.findall(r"^\s*(?:ENV\s+)?(JOURNEYS_[A-Z0-9_]+)=", DOCKERFILE.read_text(), re.M)
    assert env_lines, "docker/Dockerfile sets no JOURNEYS_* variable: the parser is broken"
    if bad_dockerfile := sorted(set(env_lines) - settings):
        unknown["docker/Dockerfile"] = bad_dockerfile
    assert not unknown, f"JOURNEYS_* variables that are no setting: {unknown}"


def test_depends_on_names_services_with_valid_conditions() -> None:
    found = services()
    for name, service in found.items():
        for dep, condition in depends_on(service).items():
            assert dep in found, f"{name} depends on {dep!r}, which is no service"
            assert condition in CONDITIONS, f"{name} -> {dep}: condition {condition!r}"
            if condition == "service_healthy":
                assert found[dep].get("healthcheck"), f"{name} waits for {dep}'s health"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for dep in depends_on(found[name]):
            visit(dep, (*path, name))

    for name in found:
        visit(name, ())


def test_the_parts_wait_for_what_they_use() -> None:
    found = services()
    for name in ("collector", "worker", "sink"):
        assert depends_on(found[name]).get("kafka") == "service_healthy", name
        assert depends_on(found[name]).get("schema-registry") == "service_healthy", name
    assert depends_on(found["migrate"]).get("clickhouse") == "service_healthy"
    assert depends_on(found["sink"]).get("migrate") == "service_completed_successfully"


def test_one_shot_services_are_awaited_to_completion() -> None:
    """`docker compose up --wait` (make up) fails on an exited one-shot container unless a
    long-running service waits for it with service_completed_successfully."""
    found = services()
    awaited = {
        dep
        for service in found.values()
        for dep, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }
    one_shots = {name for name, s in found.items() if str(s.get("restart", "no")) == "no"}
    assert one_shots == awaited, f"one-shot {sorted(one_shots)} vs awaited {sorted(awaited)}"
    for name in set(found) - one_shots:
        assert found[name]["restart"] in ("always", "unless-stopped", "on-failure"), name


def test_durable_data_is_on_named_volumes() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/")):
                assert (REPO / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                used.add(source)
    assert used <= declared, f"undeclared named volumes {sorted(used - declared)}"
    for name, path in (("kafka", "/var/lib/kafka/data"), ("clickhouse", "/var/lib/clickhouse")):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services()[name]["volumes"]}
        assert mounts.get(path) in declared, f"{name} keeps {path} outside a named volume"


def test_healthchecks_use_the_script_the_image_ships() -> None:
    dockerfile = DOCKERFILE.read_text()
    for name in JOURNEYS_COMMANDS:
        test = services()[name]["healthcheck"]["test"]
        script = next((part for part in test if str(part).endswith("healthcheck.py")), None)
        assert script, f"{name}: healthcheck does not run docker/healthcheck.py"
        assert script == "/app/docker/healthcheck.py"
        assert "COPY docker/healthcheck.py docker/healthcheck.py" in dockerfile
        assert "WORKDIR /app" in dockerfile


# ---- ClickHouse users -----------------------------------------------------------------


def users_xml() -> ET.Element:
    return ET.parse(USERS_XML).getroot()


def test_the_users_file_is_mounted_into_the_server() -> None:
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services()["clickhouse"]["volumes"]}
    target = mounts.get("./docker/clickhouse/users.d/journeys.xml")
    assert target == "/etc/clickhouse-server/users.d/journeys.xml"


def test_the_analyst_is_read_only() -> None:
    root = users_xml()
    profile_name = root.findtext("users/analyst/profile")
    assert profile_name, "no analyst user with a profile"
    assert root.findtext(f"profiles/{profile_name}/readonly") == "1"
    assert root.find(f"profiles/{profile_name}/constraints/readonly/readonly") is not None
    grants = [q.text or "" for q in root.findall("users/analyst/grants/query")]
    assert grants and all(g.strip().upper().startswith("GRANT SELECT ") for g in grants), grants


def test_the_sink_writes_as_a_user_that_can_write() -> None:
    env = environment(services()["sink"])
    url = env["JOURNEYS_CLICKHOUSE_URL"]
    user = re.match(r"https?://([^:@/]+)", url)
    assert user, url
    root = users_xml()
    writer = root.find(f"users/{user[1]}")
    assert writer is not None, f"{user[1]} (JOURNEYS_CLICKHOUSE_URL) is not in {USERS_XML.name}"
    profile = writer.findtext("profile") or "default"
    assert root.findtext(f"profiles/{profile}/readonly") in (None, "0")
    # Its password is the one in the URL: the same variable feeds both.
    password_env = writer.find("password").get("from_env")  # type: ignore[union-attr]
    clickhouse_env = environment(services()["clickhouse"])
    assert password_env in clickhouse_env, f"clickhouse does not set {password_env}"
    assert variables(clickhouse_env[password_env]) <= variables(url)
    assert interpolate(clickhouse_env[password_env]) in interpolate(url)


def test_every_password_comes_from_the_environment() -> None:
    root = users_xml()
    clickhouse_env = environment(services()["clickhouse"])
    for user in root.findall("users/*"):
        password = user.find("password")
        if user.tag == "default":
            assert [ip.text for ip in user.findall("networks/ip")] == ["::1", "127.0.0.1"]
            continue
        assert password is not None and not (password.text or "").strip(), user.tag
        assert password.get("from_env") in clickhouse_env, user.tag


# ---- the real CLI, where there is one -----------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        probe = subprocess.run(
            [docker, "compose", "version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


# ---- the helpers above ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {"A": "y"}, "y"),
        ("a$$b", {}, "a$b"),
        ("$A/${B}", {"A": "1", "B": "2"}, "1/2"),
        ("${H:--Xms1g -Xmx1g}", {}, "-Xms1g -Xmx1g"),
    ],
)
def test_interpolate(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_the_worker_healthcheck_asks_for_the_group_the_workers_join() -> None:
    """The workers consume in the engine's group (``<worker id>-engine``); a healthcheck
    looking for the Faust app id would find no member and mark every worker unhealthy."""
    import importlib.util

    from pipeline.settings import Settings

    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "docker" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.default_group(Settings(worker_id="w1")) == "w1-engine"
