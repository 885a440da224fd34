"""The audiences agent's table snapshots (issue 15): on a broker without compaction,
a changelog partition that outgrows its live keys is written whole again between two
markers, and replaying it from the last framed snapshot's start rebuilds the table."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.agents.audiences import AudienceStep, partition_for
from pipeline.agents.snapshots import marked_floor
from pipeline.core.model import to_millis
from pipeline.core.profiles import Signal
from pipeline.serde import AvroSerde
from pipeline.settings import REPO_ROOT, Settings
from pipeline.topics import Topics

P = 3
T0 = to_millis(datetime(2026, 9, 1, 9, 0, tzinfo=UTC))
Record = tuple[int, bytes | None, bytes | None]


def json_key(key: str) -> bytes:
    """How a Faust table with ``key_type=str`` serializes its keys."""
    return json.dumps(key).encode()


class Changelog(dict[str, Any]):
    """A table that keeps the changelog Faust would write, per partition: each key on
    the partition of the CRC32 of its serialized form."""

    def __init__(self, encode: Callable[[str], bytes]) -> None:
        super().__init__()
        self.encode = encode
        self.logs: list[list[Record]] = [[] for _ in range(P)]

    def _log(self, key: str, value: Any) -> None:
        raw = self.encode(key)
        log = self.logs[partition_for(raw, P)]
        log.append((len(log), raw, None if value is None else json.dumps(value).encode()))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._log(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._log(key, None)


def replay(log: list[Record], start: int) -> dict[str, Any]:
    """What a recovery that reads the changelog from *start* rebuilds."""
    out: dict[str, Any] = {}
    for _offset, key, value in log[start:]:
        assert key is not None
        name = json.loads(key) if key.startswith(b'"') else key.decode()
        if value is None:
            out.pop(name, None)
        else:
            out[name] = json.loads(value)
    return out


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde.from_dir(REPO_ROOT / "schemas")


def run(
    serde: AvroSerde,
    min_records: int,
    seed: int = 3,
    encode: Callable[[str], bytes] = str.encode,
) -> tuple[Changelog, AudienceStep]:
    topics = Topics.from_settings(Settings(topic_prefix="unit", partitions=P))
    table = Changelog(encode)
    step = AudienceStep(
        serde, topics, table, snapshot_min_records=min_records, changelog_key=encode
    )
    rng = random.Random(seed)
    kinds = [("cart_add", {"value": 9.0, "items": 1}), ("email_open", {"platform": "email"})]
    for n in range(600):
        person = f"person-{rng.randrange(25)}"
        kind, extra = rng.choice(kinds)
        if rng.random() < 0.05:
            kind, extra = "order", {"value": 5.0, "order_id": f"o{n}"}
        signal = Signal(f"e{n}", person, T0 + n * 600_000, kind, **extra)
        value = serde.encode("PersonSignal", signal.to_record())
        step.process(value, topics.person_signals.name, partition_for(person.encode(), P), n)
        if n % 4 == 3:
            step.flush()
    step.flush()
    return table, step


@pytest.mark.parametrize("encode", [str.encode, json_key], ids=["raw keys", "JSON keys"])
def test_a_replay_from_the_last_framed_snapshot_rebuilds_every_partition(
    serde: AvroSerde, encode: Callable[[str], bytes]
) -> None:
    table, step = run(serde, min_records=40, encode=encode)
    assert step.snapshots >= P  # every partition outgrew its keys more than once
    for p, log in enumerate(table.logs):
        floor = marked_floor(log, {})
        assert floor is not None and floor > 0, f"partition {p}: no snapshot"
        mine = {k: v for k, v in table.items() if partition_for(encode(k), P) == p}
        assert replay(log, floor) == mine
        assert replay(log, 0) == mine


def test_without_snapshots_nothing_is_framed(serde: AvroSerde) -> None:
    table, step = run(serde, min_records=0)
    assert step.snapshots == 0
    assert all(marked_floor(log, {}) is None for log in table.logs)


def test_an_unfinished_snapshot_moves_no_floor() -> None:
    log: list[Record] = [
        (0, b"__snapshot-start__:0:1", b'"a"'),
        (1, b"p1", b"{}"),
        (2, b"__snapshot-end__:0:1", b'"a"'),
        (3, b"p1", b"{}"),
        (4, b"__snapshot-start__:0:1", b'"b"'),  # crashed before its end marker
        (5, b"p1", b"{}"),
    ]
    starts: dict[bytes, int] = {}
    assert marked_floor(log[:4], starts) == 0
    assert marked_floor(log[4:], starts) is None  # read piece by piece: no new floor
    assert marked_floor([(6, b"__snapshot-end__:0:1", b'"b"')], starts) == 4


def test_a_released_partition_is_not_snapshotted_from_what_memory_still_holds(
    serde: AvroSerde,
) -> None:
    """After a rebalance took a partition away, this worker never writes its keys again
    (another worker owns them now), however much it had written before."""
    table, step = run(serde, min_records=10_000)  # writes counted, no snapshot yet
    step.release(0)
    step.snapshot_min_records = 1
    step.flush()
    assert marked_floor(table.logs[0], {}) is None
    assert all(marked_floor(log, {}) is not None for log in table.logs[1:])
