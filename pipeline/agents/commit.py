"""The batch engine's checkpoint: changelogs, a flush, markers, a flush, the local stores,
the group commit; the protocol, its steps and its failure cases are in
``docs/reliability.md``."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from pipeline.agents.checkpoint import (
    CHECKPOINT_HEADER,
    EngineError,
    Mark,
    Task,
    checkpoint_tag,
    marker_record,
)
from pipeline.agents.messages import Out
from pipeline.agents.snapshots import due, renewed_fence, snapshot_entry

if TYPE_CHECKING:
    from pipeline.agents.engine import Engine

log = logging.getLogger(__name__)


def checkpoint(engine: Engine) -> None:
    """One checkpoint of *engine* (:meth:`Engine.checkpoint`), calling ``engine.fault``
    with the name of each step as it is reached."""
    if engine._broken is not None:
        raise EngineError("a message was lost earlier; nothing more is committed") from (
            engine._broken
        )
    engine._last_checkpoint = time.monotonic()
    work: list[tuple[Task, list[dict[str, bytes | None]], int | None]] = []
    covered: set[tuple[str, int]] = set()
    snapshot: dict[tuple[str, int, str], int] = {}  # (topic, partition, table): first
    for task in engine._tasks.values():
        for table, p in task.tables:
            if due(task, table, p, engine.snapshots):
                table.partition = p
                table.rewrite(p, list(table))
                start = task.reached.get(table.name, -1) + 1
                snapshot[(task.topic, task.partition, table.name)] = start
        changes = [table.take_changes().get(p) or {} for table, p in task.tables]
        covered.update((table.name, p) for table, p in task.tables)
        position = engine._positions.get((task.topic, task.partition), task.input_offset)
        snapshotting = any(key[:2] == (task.topic, task.partition) for key in snapshot)
        if any(changes) or position != task.input_offset or snapshotting:
            work.append((task, changes, position))
    for table in engine.tables.values():
        for p in table.take_changes():
            if (table.name, p) not in covered:
                raise EngineError(f"table {table.name}[{p}] written outside its partitions")
    offsets = {k: v for k, v in engine._positions.items() if engine._committed.get(k) != v}
    if not work and not offsets:
        return
    reached: dict[tuple[str, int], int] = {}

    def note(_err: Any, msg: Any) -> None:
        key = (msg.topic(), msg.partition())
        reached[key] = max(reached.get(key, -1), msg.offset())

    n = engine._log_partitions()
    renewed: dict[tuple[str, int], int] = {}  # (topic, partition): the renewed fence

    def noted_fence(task_key: tuple[str, int], _err: Any, msg: Any) -> None:
        renewed[task_key] = msg.offset()

    for task, changes, _position in work:
        tag = ((CHECKPOINT_HEADER, checkpoint_tag(task.writer, task.seq + 1)),)
        for (table, p), dirty in zip(task.tables, changes, strict=True):
            for key, value in dirty.items():
                engine.output.send(Out(table.changelog, key.encode(), value, tag, p), note)
        task_key = (task.topic, task.partition)
        if any(key[:2] == task_key for key in snapshot):
            fence = Out(engine.checkpoint_log, task.topic.encode(), renewed_fence(task.writer))
            engine.output.send(
                fence._replace(partition=task.partition % n), partial(noted_fence, task_key)
            )
    engine.fault("changelogs")
    engine._flush()  # every output so far and every changelog record: acknowledged
    engine.fault("flushed")
    for task, _changes, position in work:
        task.seq += 1
        task.input_offset = position
        for table, p in task.tables:
            if (table.changelog, p) in reached:
                task.reached[table.name] = reached[(table.changelog, p)]
            first = snapshot.get((task.topic, task.partition, table.name))
            fence_at = renewed.get((task.topic, task.partition))
            if first is not None and fence_at is not None:
                entry = snapshot_entry(table.changelog, p, first, fence_at)
                task.snapshots[table.name] = entry
                task.snapshot_checked.pop(table.name, None)
                task.snapshot_age[table.name] = 0
            else:
                task.snapshot_age[table.name] = task.snapshot_age.get(table.name, 0) + 1
        record = marker_record(task.writer, task.seq, position, dict(task.reached), task.snapshots)
        engine.output.send(
            Out(engine.checkpoint_log, task.topic.encode(), record, (), task.partition % n)
        )
    engine.fault("marking")
    engine._flush()
    engine.fault("marked")
    for task, changes, _position in work:
        for (table, p), dirty in zip(task.tables, changes, strict=True):
            got = task.reached.get(table.name, -1)
            table.save(p, dirty, Mark((task.writer, task.seq), got, task.fence, task.valid))
    engine.fault("stored")
    if offsets and engine._consumer is not None:
        try:
            engine._consumer.commit(
                offsets=[engine.clients.tp(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
            engine._committed.update(offsets)
        except engine.clients.commit_errors as exc:
            # Fenced out of the group: the markers, not the commit, say where the
            # stateful stages resume; the next owner will redo what is not marked.
            log.warning("engine commit failed: %s", exc)
    engine.fault("committed")
    engine.counters.checkpoints += 1
