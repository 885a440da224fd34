"""Restore of the batch engine's tasks: fence, replay the checkpoint log, read the
changelogs up to the last valid marker (``docs/reliability.md``)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pipeline.agents.checkpoint import EngineError, Mark, Replay, Task, fence_record, parse_tag
from pipeline.agents.messages import Out
from pipeline.agents.snapshots import parse_snapshots

if TYPE_CHECKING:
    from pipeline.agents.engine import Engine

log = logging.getLogger(__name__)


def restore(engine: Engine, assigned: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Fence, replay the checkpoint log, bring each table partition up to the last
    valid marker; the input offsets to resume from (the markers')."""
    started = time.monotonic()
    n = engine._log_partitions()
    tasks: list[Task] = []
    for topic, p in assigned:
        pairs = [(t, p if t.partitions > 1 else 0) for t in engine.stages[topic].tables]
        tasks.append(Task(topic, p, pairs, writer=uuid.uuid4().hex[:16]))

    def fenced(task: Task, _err: Any, msg: Any) -> None:
        task.fence = msg.offset()

    for task in tasks:
        out = Out(engine.checkpoint_log, task.topic.encode(), fence_record(task.writer))
        engine.output.send(out._replace(partition=task.partition % n), partial(fenced, task))
    engine._flush()
    # The checkpoint log, from the oldest fence a local store knows (or the start).
    replays: dict[int, Replay] = {}
    starts: dict[int, int] = {}
    for i, task in enumerate(tasks):
        marks = [table.stored_mark(p) for table, p in task.tables]
        if all(m is not None and m.marker is not None for m in marks):
            first = min((m for m in marks if m is not None), key=lambda m: m.fence)
            starts[i], replays[i] = first.fence, Replay(valid=dict(first.valid))
        else:
            starts[i], replays[i] = 0, Replay()
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for i, task in enumerate(tasks):
        key = (engine.checkpoint_log, task.partition % n)
        low, high = ranges.get(key, (starts[i], task.fence))
        ranges[key] = (min(low, starts[i]), max(high, task.fence))

    def replay(msg: Any) -> None:
        for i, task in enumerate(tasks):
            if (
                msg.partition() == task.partition % n
                and msg.key() == task.topic.encode()
                and starts[i] <= msg.offset() < task.fence
            ):
                replays[i].apply(msg.value())

    read_ranges(engine, ranges, replay)
    # A task without any marker may have a changelog written before markers
    # existed: read it up to a fence written now, untagged records only.
    legacy: dict[tuple[str, int], int] = {}

    def legacy_fenced(key: tuple[str, int], _err: Any, msg: Any) -> None:
        legacy[key] = msg.offset()

    for i, task in enumerate(tasks):
        if replays[i].last is None:
            for table, p in task.tables:
                fence = Out(table.changelog, b"\x00fence", None, partition=p)
                engine.output.send(fence, partial(legacy_fenced, (table.changelog, p)))
    if any(rp.last is None for rp in replays.values()):
        engine._flush()
    # The changelogs, from what each local store holds to the last valid marker.
    ranges = {}
    readers: dict[tuple[str, int], tuple[Replay, dict[str, bytes | None], set[str]]] = {}
    for i, task in enumerate(tasks):
        rp = replays[i]
        task.valid, task.input_offset = dict(rp.valid), rp.input_offset
        task.snapshots = parse_snapshots(rp.last.get("snapshots")) if rp.last else {}
        for table, p in task.tables:
            mark = table.stored_mark(p)
            # A snapshot holds every live key: nothing before it is needed, and the
            # janitor may have deleted it (a store older than it is rebuilt).
            snapshot = int(task.snapshots.get(table.name, {}).get("from", 0))
            start = snapshot
            if mark is not None and mark.marker is not None and rp.accepts(mark.marker):
                if mark.changelog + 1 >= snapshot:
                    start = mark.changelog + 1
                else:
                    table.wipe(p)
            else:
                if mark is not None and mark.marker is not None:
                    log.warning("%s[%d]: local store not covered by a marker", table.name, p)
                table.wipe(p)
            end = task.reached[table.name] = rp.reached(table.name)
            readers[(table.changelog, p)] = (rp, {}, set())
            if legacy.get((table.changelog, p), 0) > 0:
                ranges[(table.changelog, p)] = (0, legacy[(table.changelog, p)])
            elif end >= start:
                ranges[(table.changelog, p)] = (start, end)
    records = 0

    def apply(msg: Any) -> None:
        nonlocal records
        rp, changes, skipped = readers[(msg.topic(), msg.partition())]
        raw_key = msg.key() or b""
        if raw_key.startswith(b"\x00"):
            return  # a fence of the engine before checkpoint markers
        tag = parse_tag(msg.headers())
        if not (tag is None if (msg.topic(), msg.partition()) in legacy else rp.accepts(tag)):
            skipped.add(raw_key.decode("utf-8", "replace"))
            return
        value = msg.value()
        try:
            key = raw_key.decode()
            if value is not None:
                json.loads(value)
        except ValueError as exc:
            engine.counters.skipped_changelog += 1
            log.warning("%s[%d]@%d: unreadable, skipped: %s", *_where(msg), exc)
            return
        changes[key] = value
        records += 1

    read_ranges(engine, ranges, apply)
    for task in tasks:
        for table, p in task.tables:
            rp, changes, skipped = readers[(table.changelog, p)]
            mark = Mark(rp.marker, task.reached[table.name], task.fence, task.valid)
            table.save(p, changes, mark)
            if skipped:
                # Written again at the next checkpoint: a compacted changelog may
                # otherwise keep only a skipped record of these keys.
                engine.counters.skipped_changelog += len(skipped)
                table.rewrite(p, skipped)
            if changes and (table.changelog, p) in legacy:
                # Restored from untagged records: all written again, tagged.
                table.partition = p
                table.rewrite(p, list(table))
        engine._tasks[(task.topic, task.partition)] = task
    engine.counters.restored += records
    log.info(
        "engine restored %d changelog records into %d partitions in %.1f s",
        records,
        len(tasks),
        time.monotonic() - started,
    )
    return {
        (task.topic, task.partition): task.input_offset
        for task in tasks
        if task.input_offset is not None
    }


def read_ranges(
    engine: Engine,
    ranges: dict[tuple[str, int], tuple[int, int]],
    apply: Callable[[Any], None],
    timeout_s: float = 300.0,
) -> None:
    """Call *apply* with each message of each (topic, partition) in its
    [first, last] offsets, in order: read until *last* (an acknowledged message) is
    reached, not to the high watermark, which lags on Tansu
    (``tests/integration/test_broker_quirks.py``)."""
    left = {k for k, (first, last) in ranges.items() if last >= first}
    if not left:
        return
    started = time.monotonic()
    begin = engine.clients.OFFSET_BEGINNING
    reader = engine.clients.consumer(
        {
            "group.id": f"{engine.group_id}-restore",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log.connection.close": False,
        }
    )
    try:
        reader.assign(
            [engine.clients.tp(t, p, ranges[(t, p)][0] or begin) for t, p in sorted(left)]
        )
        while left:
            if time.monotonic() - started > timeout_s:
                raise EngineError(
                    f"restore did not reach its last offsets within {timeout_s:.0f} s: "
                    + ", ".join(f"{t}[{p}]" for t, p in sorted(left))
                )
            for msg in reader.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    log.warning("restore: %s", msg.error())
                    continue
                key = (msg.topic(), msg.partition())
                if key not in left:
                    continue
                first, last = ranges[key]
                offset = msg.offset()
                if first <= offset <= last:
                    apply(msg)
                if offset >= last:
                    left.discard(key)
                    reader.pause([engine.clients.tp(*key)])
    finally:
        reader.close()


def _where(msg: Any) -> tuple[str, int, int]:
    return msg.topic(), msg.partition(), msg.offset()
