"""Composing the embedded stack: the worker as a child process, the sink in-process.

The process that runs the sink owns the chDB data path, so it also serves
read-only queries for everyone else (see :mod:`sinks.query_server`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import SecretStr

from pipeline.broker import EmbeddedBroker, _die_with_parent
from pipeline.metrics import MetricsServer
from pipeline.serde import AvroSerde
from pipeline.settings import Settings
from sinks.clickhouse import LockedClient, connect, migrate
from sinks.query_server import QueryServer
from sinks.runner import ClickHouseSink, sink_metrics

log = logging.getLogger(__name__)

#: ``journeys run`` serves each process's metrics on its own port: the sink (in the
#: parent process) on ``JOURNEYS_METRICS_PORT``, its children on the ports after it.
Role = Literal["sink", "worker", "collector"]
METRICS_PORT_OFFSETS: dict[Role, int] = {"sink": 0, "worker": 1, "collector": 2}


def settings_for(cfg: Settings, role: Role) -> Settings:
    """*cfg* for the *role* process of the embedded stack (see
    :data:`METRICS_PORT_OFFSETS`); port 0 (any free port) stays 0 for each."""
    port = cfg.metrics_port
    if not port:
        return cfg
    return cfg.model_copy(update={"metrics_port": port + METRICS_PORT_OFFSETS[role]})


class SinkService:
    """Migrates ClickHouse, then runs the sink loop in a thread and serves queries."""

    def __init__(
        self, settings: Settings, serde: AvroSerde | None = None, serve_queries: bool = True
    ) -> None:
        self.settings = settings
        self.serde = serde or AvroSerde.from_dir(settings.schemas_dir, settings.schema_registry_url)
        self.client: LockedClient = connect(settings.clickhouse_url, settings.clickhouse_database)
        self.applied = migrate(
            self.client, settings.clickhouse_database, settings.clickhouse_cluster
        )
        self.sink = ClickHouseSink(settings, self.client, self.serde)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="clickhouse-sink", daemon=True)
        self.server: QueryServer | None = None
        self.reader: LockedClient | None = None
        if serve_queries and settings.clickhouse_url.startswith("chdb://"):
            # A client of its own: chDB keeps settings per client handle, and the
            # read-only setting of analysts' queries must not stick to the sink's.
            self.reader = connect(settings.clickhouse_url, settings.clickhouse_database)
            self.server = QueryServer(self.reader, settings.clickhouse_url)
        self.metrics: MetricsServer | None = None
        if settings.metrics_port is not None:
            self.metrics = MetricsServer(
                sink_metrics(self.sink.stats), settings.metrics_host, settings.metrics_port
            )
        self.error: BaseException | None = None
        #: Set by ``journeys run``: the embedded broker it started (None: an external
        #: one) and its child processes (the worker first).
        self.broker: EmbeddedBroker | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def _run(self) -> None:
        try:
            self.sink.run(self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the owner via .error
            log.exception("sink stopped")
            self.error = exc

    def start(self) -> SinkService:
        if self.metrics is not None:
            self.metrics.start()  # first: a port in use fails before anything runs
        if self.server is not None:
            self.server.start()
        self.thread.start()
        return self

    def query(self, sql: str) -> tuple[list[str], list[Sequence[Any]]]:
        return self.client.query_rows(sql)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        if self.server is not None:
            self.server.stop()
        if self.reader is not None:
            self.reader.close()
        self.client.close()
        if self.metrics is not None:
            self.metrics.stop()


def child_env(cfg: Settings) -> dict[str, str]:
    """The environment that gives a child ``journeys`` process exactly *cfg*."""
    env = dict(os.environ)
    for name, value in cfg.model_dump().items():
        key = f"JOURNEYS_{name.upper()}"
        if value is None:
            env.pop(key, None)
            continue
        env[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


def spawn(command: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``journeys COMMAND...`` as a child that dies with this process."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "cli.main", *command],
        env=env,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - no orphans
        start_new_session=True,  # the parent decides the shutdown order on Ctrl-C
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
