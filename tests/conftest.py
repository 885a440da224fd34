"""Shared fixtures. Integration tests start their own broker on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[Any]:
    """A persistent embedded broker (Tansu on files through the local S3 endpoint) in
    *tmp_path*, for one test."""
    from pipeline.broker import EmbeddedBroker, free_port

    broker = EmbeddedBroker(
        f"127.0.0.1:{free_port()}",
        tmp_path / "log" / "broker.log",
        storage="s3",
        data_dir=tmp_path / "broker",
    )
    with broker:
        yield broker


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real Tansu broker on a free loopback port, for the whole session."""
    from pipeline.broker import EmbeddedBroker, free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    log_dir = Path(os.environ.get("JOURNEYS_TEST_LOGS", "/tmp/journeys-test-logs"))
    with EmbeddedBroker(bootstrap, log_path=log_dir / f"broker-{bootstrap.split(':')[1]}.log"):
        yield bootstrap


@pytest.fixture
def stack_settings(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings of an isolated stack: own topic prefix, chDB path and worker state."""
    prefix = "t" + format(abs(hash(request.node.nodeid)) % 10**8, "08d")
    return Settings(
        kafka_bootstrap=broker,
        clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}",
        topic_prefix=prefix,
        partitions=4,
        data_dir=tmp_path / "worker",
        worker_id=f"{prefix}-worker",
        sink_flush_ms=100,
    )


def settings_env(cfg: Settings) -> dict[str, str]:
    """The environment that gives a child process *cfg*."""
    from cli.stack import child_env

    return child_env(cfg)
