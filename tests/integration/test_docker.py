"""The production images of docker-compose.yml, through testcontainers.

Kafka and ClickHouse run from the very images (and the same settings and users file)
that ``make up`` runs; the test migrates ClickHouse with ``journeys migrate``, checks
that the analyst can read and not write, and sends one touchpoint through Kafka. It
needs a Docker engine and is skipped, saying so, where none answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from pipeline.broker import free_port, kafka_answers
from pipeline.core.model import Identifier, Touchpoint, event_id_for
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from sinks.clickhouse import LockedClient, SinkError, connect
from tests.unit.test_compose import (
    USERS_XML,
    default_image,
    environment,
    interpolate,
    services,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

WRITER_PASSWORD = "writer-" + uuid.uuid4().hex[:8]
ANALYST_PASSWORD = "analyst-" + uuid.uuid4().hex[:8]
T = TypeVar("T")


def docker_engine_missing() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - every failure means "no engine" here
        return f"no Docker engine ({type(exc).__name__}: {str(exc)[:120]})"
    return None


@pytest.fixture(scope="module")
def engine() -> None:
    reason = docker_engine_missing()
    if reason is not None:
        pytest.skip(reason)


def eventually(probe: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            time.sleep(1.0)
    raise AssertionError(f"{what} not ready after {timeout:.0f}s: {last}")


@pytest.fixture(scope="module")
def kafka(engine: None) -> Iterator[str]:
    """The compose file's Kafka image and settings, its host listener on a free port."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    env = {k: interpolate(v) for k, v in environment(services()["kafka"]).items()}
    container = DockerContainer(default_image("kafka"))
    host = container.get_docker_client().host()
    env.update(
        KAFKA_LISTENERS=f"PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:{port}",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://localhost:9092,EXTERNAL://{host}:{port}",
        KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
    )
    for key, value in env.items():
        container.with_env(key, value)
    container.with_bind_ports(port, port)
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=180)
        bootstrap = f"{host}:{port}"
        eventually(lambda: kafka_answers(bootstrap) or _fail("no answer"), 60, "Kafka")
        yield bootstrap


@pytest.fixture(scope="module")
def clickhouse(engine: None) -> Iterator[dict[str, str]]:
    """The compose file's ClickHouse image, environment and users file."""
    from testcontainers.core.container import DockerContainer

    env = {k: interpolate(v) for k, v in environment(services()["clickhouse"]).items()}
    env.update(
        CLICKHOUSE_WRITER_PASSWORD=WRITER_PASSWORD, CLICKHOUSE_ANALYST_PASSWORD=ANALYST_PASSWORD
    )
    container = DockerContainer(default_image("clickhouse"))
    for key, value in env.items():
        container.with_env(key, value)
    container.with_exposed_ports(8123)
    container.with_volume_mapping(
        str(USERS_XML), "/etc/clickhouse-server/users.d/journeys.xml", "ro"
    )
    with container:
        base = f"{container.get_container_host_ip()}:{container.get_exposed_port(8123)}"
        urls = {
            "writer": f"http://journeys:{WRITER_PASSWORD}@{base}/journeys",
            "analyst": f"http://analyst:{ANALYST_PASSWORD}@{base}/journeys",
        }

        def writer_answers() -> None:
            client = connect(urls["writer"])
            try:
                client.query_rows("SELECT 1")
            finally:
                client.close()

        eventually(writer_answers, 180, "ClickHouse")
        yield urls


def _fail(message: str) -> Any:
    raise RuntimeError(message)


def journeys_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


def test_migrate_then_the_analyst_reads_and_cannot_write(clickhouse: dict[str, str]) -> None:
    done = journeys_cli("migrate", env={"JOURNEYS_CLICKHOUSE_URL": clickhouse["writer"]})
    assert done.returncode == 0, done.stderr
    assert WRITER_PASSWORD not in done.stdout + done.stderr
    again = journeys_cli("migrate", env={"JOURNEYS_CLICKHOUSE_URL": clickhouse["writer"]})
    assert again.returncode == 0 and "up to date" in again.stdout + again.stderr

    analyst: LockedClient = connect(clickhouse["analyst"])
    try:
        _, rows = analyst.query_rows(
            "SELECT name FROM system.tables WHERE database = 'journeys' ORDER BY name"
        )
        tables = {r[0] for r in rows}
        assert {"touchpoints", "identities", "journeys", "attribution", "dead_letters"} <= tables
        assert analyst.query_rows("SELECT count() FROM journeys.touchpoints FINAL")[1] == [(0,)]
        for statement in (
            "INSERT INTO journeys.dead_letters (source) VALUES ('x')",
            "CREATE TABLE journeys.scratch (x UInt8) ENGINE = Memory",
            "DROP TABLE journeys.touchpoints",
        ):
            with pytest.raises(Exception, match=r"(?i)readonly|not enough privileges"):
                analyst.command(statement)
    finally:
        analyst.close()


def test_a_wrong_password_is_refused_without_being_shown(clickhouse: dict[str, str]) -> None:
    url = clickhouse["analyst"].replace(ANALYST_PASSWORD, "wrong-" + ANALYST_PASSWORD)
    with pytest.raises(SinkError) as err:
        connect(url).query_rows("SELECT 1")
    assert ANALYST_PASSWORD not in str(err.value)


def test_one_touchpoint_through_kafka(kafka: str) -> None:
    from confluent_kafka import Consumer

    from connectors.publisher import Publisher
    from pipeline.topics import Topics, ensure_topics

    prefix = "docker" + uuid.uuid4().hex[:8]
    cfg = Settings(kafka_bootstrap=kafka, topic_prefix=prefix, partitions=2)
    ensure_topics(cfg)
    serde = AvroSerde.from_dir(cfg.schemas_dir, cfg.schema_registry_url)
    now = datetime.now(UTC).replace(microsecond=0)
    sent = Touchpoint(
        event_id=event_id_for("segment", "docker-1"),
        source="segment",
        source_event_id="docker-1",
        occurred_at=now,
        received_at=now,
        channel="email",
        event_type="email_click",
        identifiers=(Identifier("user_id", "u-docker"),),
    )
    publisher = Publisher(cfg, serde)
    publisher.touchpoint(sent)
    publisher.flush(30)

    consumer = Consumer(
        {
            **cfg.kafka_config(),
            "group.id": f"{prefix}-probe",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([Topics.from_settings(cfg).touchpoints.name])
    try:

        def received() -> Touchpoint:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                raise RuntimeError(f"nothing yet ({msg and msg.error()})")
            return Touchpoint.from_record(serde.decode(msg.value(), expect="Touchpoint"))

        got = eventually(received, 60, "the touchpoint")
    finally:
        consumer.close()
    assert got == sent
