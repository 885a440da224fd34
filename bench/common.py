"""Helpers shared by the measurements: a fresh broker, isolated settings, the event set."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.publisher import PRODUCER_CONF
from pipeline.settings import Settings

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "var" / "bench"

#: librdkafka logs only warnings and errors (no "Purging ... background queue" notices).
QUIET_CLIENT: dict[str, Any] = {"log_level": 4}


class BenchError(RuntimeError):
    """A measurement could not be taken."""


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    load: list[float] | None = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    mem_total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        mem_total = None
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "memory_bytes": mem_total,
        "load_average_at_start": load,
    }


@contextmanager
def fresh_broker(name: str) -> Iterator[str]:
    """A Tansu broker started for this measurement alone, on a free port."""
    from pipeline.broker import EmbeddedBroker, free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    with EmbeddedBroker(bootstrap, log_path=WORK / "logs" / f"broker-{name}.log"):
        yield bootstrap


def bench_settings(bootstrap: str, root: Path, name: str, **extra: Any) -> Settings:
    """Settings of an isolated stack under *root* (own topics, chDB path, worker state)."""
    return Settings(
        kafka_bootstrap=bootstrap,
        clickhouse_url=f"chdb://{root / 'clickhouse'}",
        topic_prefix=f"bench-{name}",
        data_dir=root / "worker",
        worker_id=f"bench-{name}-worker",
        **extra,
    )


def settings_env(cfg: Settings, **overrides: str) -> dict[str, str]:
    """The environment that gives a child process *cfg*."""
    env = dict(os.environ)
    for key, value in cfg.model_dump().items():
        if value is not None:
            env[f"JOURNEYS_{key.upper()}"] = str(value)
    env.update(overrides)
    return env


@dataclass(frozen=True)
class EventSet:
    """Encoded ``Touchpoint`` values with their Kafka keys and event ids, in file order."""

    keys: list[bytes]
    values: list[bytes]
    event_ids: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> EventSet:
        return EventSet(
            self.keys[start:stop], self.values[start:stop], self.event_ids[start:stop], self.source
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump((self.keys, self.values, self.event_ids, self.source), f)

    @classmethod
    def load(cls, path: Path) -> EventSet:
        with path.open("rb") as f:
            keys, values, event_ids, source = pickle.load(f)  # noqa: S301 - our own file
        return cls(keys, values, event_ids, source)


def produce(
    bootstrap: str,
    topic: str,
    events: EventSet,
    conf: dict[str, Any] | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> float:
    """Produce every event of *events* to *topic*; returns the monotonic time of the first."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, **PRODUCER_CONF, **QUIET_CLIENT, **(conf or {})}
    )
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None and len(failed) < 5:
            failed.append(str(err))

    first = time.monotonic()
    for i, (key, value) in enumerate(zip(events.keys, events.values, strict=True)):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if on_sent is not None:
            on_sent(i)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        raise BenchError(f"{left} messages unacknowledged, errors: {failed}")
    return first


def fragment_main(
    description: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    measure: Callable[[argparse.Namespace], dict[str, Any]],
) -> int:
    """The ``main`` of a measurement module: parse arguments, measure, write the JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON fragment to write")
    add_args(parser)
    args = parser.parse_args()
    setup_logging()
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0
