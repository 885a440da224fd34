"""Snapshots that bound the batch engine's changelogs and checkpoint log on a broker
without log compaction (the persistent embedded broker), see ``docs/reliability.md``.

When a task's changelog partition has grown by more than :attr:`SnapshotPolicy.factor`
times its live keys (and at least :attr:`SnapshotPolicy.min_records`) since its last
snapshot, its next checkpoint writes every live key again and renews the writer's
fence in the checkpoint log. Its marker (and every later one) records, per table, the
changelog offset the snapshot starts at and the offset of that renewed fence. A
restore then needs the changelog only from that offset and the checkpoint log only
from that fence: :func:`floors` finds, from the checkpoint log alone, what may be
deleted, and the broker's janitor deletes the record batches below it. The Faust
table of the audiences agent frames its snapshots with two marker keys instead
(:func:`marked_floor`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.agents.checkpoint import Replay, StateTable, Task


@dataclass(frozen=True)
class SnapshotPolicy:
    """When a table partition is written whole again (``min_records`` 0: never): once
    its changelog has grown by ``min_records`` and ``factor`` times its live keys, or
    after ``max_age`` markers if it has none yet or was written since (so that the
    checkpoint log, which needs every table's snapshot, can be cut as well)."""

    min_records: int = 50_000
    factor: float = 2.0
    max_age: int = 10_000


def due(task: Task, table: StateTable, partition: int, policy: SnapshotPolicy) -> bool:
    """Whether *table*'s partition is due for a snapshot (see :class:`SnapshotPolicy`),
    counting its live keys only when the growth or the age alone could justify it."""
    if policy.min_records <= 0:
        return False
    reached = task.reached.get(table.name, -1)
    if reached < 0:
        return False  # nothing written: nothing to keep
    start = int(task.snapshots.get(table.name, {}).get("from", 0))
    grown = reached + 1 - start
    old = 0 < policy.max_age <= task.snapshot_age.get(table.name, 0)
    if not old and grown < max(policy.min_records, task.snapshot_checked.get(table.name, 0)):
        return False
    table.partition = partition
    live = sum(1 for _ in table)
    if grown > policy.factor * live:
        return True
    if old:
        task.snapshot_age[table.name] = 0
        return table.name not in task.snapshots or grown > live
    # Not yet: look again once it has grown past factor x live keys.
    task.snapshot_checked[table.name] = int(policy.factor * live) + 1
    return False


def snapshot_entry(topic: str, partition: int, start: int, fence: int) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "from": start, "fence": fence}


def floors(records: Iterable[tuple[int, bytes | None, bytes | None]]) -> dict[Any, int]:
    """What one checkpoint-log partition lets the janitor delete: ``{(changelog topic,
    partition): first offset to keep}`` and ``{None: first checkpoint-log offset to
    keep}``. Each stage's last *valid* marker counts (a zombie's marker after a newer
    fence moves nothing); the log itself is cut only when every stage in it has a
    snapshot of every table it has written."""
    replays: dict[bytes, Replay] = {}
    for _offset, key, value in records:
        replays.setdefault(key or b"", Replay()).apply(value)
    out: dict[Any, int] = {}
    log_floor: int | None = None
    cut_log = bool(replays)
    for replay in replays.values():
        last = replay.last
        if last is None:
            cut_log = False
            continue
        snapshots: dict[str, Any] = last.get("snapshots") or {}
        for entry in snapshots.values():
            out[(str(entry["topic"]), int(entry["partition"]))] = int(entry["from"])
        written = {t for t, offset in (last.get("changelogs") or {}).items() if int(offset) >= 0}
        if not snapshots or not written <= set(snapshots):
            cut_log = False
            continue
        fence = min(int(entry["fence"]) for entry in snapshots.values())
        log_floor = fence if log_floor is None else min(log_floor, fence)
    if cut_log and log_floor is not None:
        out[None] = log_floor
    return out


def parse_snapshots(raw: Any) -> dict[str, dict[str, Any]]:
    """A marker's ``snapshots`` field, checked (an older marker has none)."""
    if not isinstance(raw, dict):
        return {}
    try:
        return {
            str(name): snapshot_entry(
                str(e["topic"]), int(e["partition"]), int(e["from"]), int(e["fence"])
            )
            for name, e in raw.items()
        }
    except (KeyError, TypeError, ValueError):
        return {}


def renewed_fence(writer: str) -> bytes:
    """A fence that only confirms *writer* (see :meth:`Replay.apply`)."""
    return json.dumps({"kind": "fence", "writer": writer, "renew": True}).encode()


#: Table keys that frame a Faust table partition written whole again (the audiences
#: agent's): everything before the start marker of a framed snapshot is useless.
SNAPSHOT_START = "__snapshot-start__:{partition}"
SNAPSHOT_END = "__snapshot-end__:{partition}"


def marked_floor(
    records: Iterable[tuple[int, bytes | None, bytes | None]], starts: dict[bytes, int]
) -> int | None:
    """The offset of the start marker of the last snapshot that *records* (one changelog
    partition, in order) show complete, or None; *starts* keeps the start markers seen
    (token -> offset) across calls, so the partition can be read piece by piece."""
    start_prefix = SNAPSHOT_START.split("{", maxsplit=1)[0].encode()
    end_prefix = SNAPSHOT_END.split("{", maxsplit=1)[0].encode()
    floor: int | None = None
    for offset, key, value in records:
        if key is None or value is None:
            continue
        name = key.removeprefix(b'"')  # a table that serializes its keys as JSON strings
        if name.startswith(start_prefix):
            starts[value] = offset
        elif name.startswith(end_prefix) and value in starts:
            floor = starts[value]
            for token in [t for t, at in starts.items() if at <= floor]:
                del starts[token]
    return floor


def newest_floor(
    records: Iterable[tuple[int, bytes | None, bytes | None]], newest: dict[bytes, int]
) -> int | None:
    """For a topic of which only each key's newest record counts (the model snapshots):
    the first offset to keep, the oldest of those newest records. *newest* keeps each
    key's newest offset across calls, so the topic can be read piece by piece."""
    for offset, key, _value in records:
        newest[key or b""] = offset
    return min(newest.values()) if newest else None
