"""The worker's batch engine: the hot path of the stream without Faust's per-event cost."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pipeline.agents import commit
from pipeline.agents.aligner import Aligner
from pipeline.agents.checkpoint import EngineError, Journal, KafkaClients, StateTable, Task
from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.agents.output import OutputError, OutputProducer, OutputTooLarge
from pipeline.agents.restore import restore
from pipeline.agents.snapshots import SnapshotPolicy
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, TopicSpec

__all__ = ["Engine", "EngineError", "Stage", "StateTable", "engine_group"]

log = logging.getLogger(__name__)

#: A step: (value, topic, partition, offset, upstream header, control header) -> outputs.
Step = Callable[[bytes, str, int, int, bytes | None, bytes | None], list[Out]]
#: Makes the dead letter of a message: (reason, raw value, topic, partition, offset).
DeadLetterMaker = Callable[[str, bytes, str, int, int], Out]

#: confluent_kafka.KafkaError._PARTITION_EOF (librdkafka's end-of-partition event).
_PARTITION_EOF = -191
#: Key + value bytes an output may have: librdkafka refuses more than message.max.bytes
#: (1,000,000 by default, headers and framing included) with MSG_SIZE_TOO_LARGE.
MAX_MESSAGE_BYTES = 990_000


def engine_group(settings: Settings) -> str:
    """The consumer group of the workers' engines (the worker's Faust app joins none)."""
    return f"{settings.worker_id}-engine"


def _no_fault(_step: str) -> None:
    return None


@dataclass
class Stage:
    """A step on one topic, and the tables whose partition follows that topic's."""

    topic: str
    step: Step
    tables: Sequence[StateTable] = ()
    #: Called with a partition of *topic* this worker no longer holds.
    release: Callable[[int], None] | None = None
    #: Process the partitions of *topic* in timestamp order (see :class:`Aligner`).
    aligned: bool = False


@dataclass
class EngineCounters:
    """What the engine did since the worker started (for logs and metrics)."""

    processed: int = 0
    batches: int = 0
    checkpoints: int = 0
    restored: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    #: Messages turned into dead letters by the engine (a step raised, outputs too big).
    dead_letters: int = 0
    #: Changelog records a restore skipped: undecodable, or of no valid checkpoint.
    skipped_changelog: int = 0


class Engine:
    """Consume the stages' topics in batches, run their steps, checkpoint the state."""

    def __init__(
        self,
        settings: Settings,
        output: OutputProducer,
        *,
        batch_size: int = 500,
        commit_interval_s: float = 0.5,
        consumer: Any = None,
        clients: Any = None,
        dead_letter: DeadLetterMaker | None = None,
        align_wait_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.output = output
        self.batch_size = batch_size
        self.commit_interval_s = commit_interval_s
        self.clients = clients if clients is not None else KafkaClients(settings)
        self.dead_letter = dead_letter
        self.align_wait_s = align_wait_s
        self.max_message_bytes = MAX_MESSAGE_BYTES
        self.max_consecutive_failures = 1000
        #: When a table partition is written whole again, so that the changelogs and
        #: the checkpoint log can be cut on a broker without compaction.
        self.snapshots = SnapshotPolicy(min_records=settings.snapshot_min_records)
        self._failures = 0
        self.group_id = engine_group(settings)
        self.checkpoint_log = f"{self.group_id}-checkpoints"
        self.root = settings.data_dir / "engine"
        self.stages: dict[str, Stage] = {}
        self.tables: dict[str, StateTable] = {}
        self.journal = Journal()
        #: Called with the name of each checkpoint step as it is reached (the
        #: simulation harness crashes the engine there).
        self.fault: Callable[[str], None] = _no_fault
        self._tasks: dict[tuple[str, int], Task] = {}
        self._aligners: dict[str, Aligner] = {}
        #: Aligned partitions whose end librdkafka reported since their last message.
        self._at_end: set[tuple[str, int]] = set()
        self._follows: dict[str, Callable[[Any], list[Out] | None]] = {}
        self._follower: Any = None
        self._consumer = consumer
        self._positions: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._last_checkpoint = time.monotonic()
        self._broken: Exception | None = None
        self.counters = EngineCounters()

    # -- wiring --------------------------------------------------------------------------

    def table(self, name: str, partitions: int) -> StateTable:
        if name in self.tables:
            raise EngineError(f"table {name} defined twice")
        changelog = f"{self.group_id}-{name}-changelog"
        table = StateTable(name, changelog, partitions, self.root, journal=self.journal)
        self.tables[name] = table
        return table

    def stage(self, stage: Stage) -> None:
        """Run *stage*; its tables have one partition, or as many as its topic."""
        if stage.topic in self.stages:
            raise EngineError(f"two stages on {stage.topic}")
        self.stages[stage.topic] = stage
        if stage.aligned:
            self._aligners[stage.topic] = Aligner(self.align_wait_s)

    def follow(self, topic: str, apply: Callable[[Any], list[Out] | None]) -> None:
        """Read every partition of *topic* from its beginning on every worker, outside
        the group and without commits, and call *apply* with each message during
        :meth:`poll` (the model snapshots, which every journey stage needs); the
        outputs it returns (dead letters) are sent, and if it raises, the message is a
        dead letter."""
        self._follows[topic] = apply

    def _start_follower(self) -> None:
        self._follower = self.clients.consumer(
            {
                "group.id": f"{self.group_id}-follow",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "log.connection.close": False,
            }
        )
        assignment = []
        for topic in self._follows:
            for p in self.clients.partitions(self._follower, topic):
                assignment.append(self.clients.tp(topic, p, self.clients.OFFSET_BEGINNING))
        self._follower.assign(assignment)

    def _log_partitions(self) -> int:
        return max((t.partitions for t in self.tables.values()), default=1)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Create the changelog and checkpoint-log topics and subscribe (the assignment
        comes with polls)."""
        self.clients.ensure(
            [
                *(
                    TopicSpec(t.changelog, t.partitions, "state", compacted=True)
                    for t in self.tables.values()
                ),
                TopicSpec(self.checkpoint_log, self._log_partitions(), "checkpoints"),
            ]
        )
        if self._consumer is None:
            session_ms = int(self.settings.session_timeout_s * 1000)
            self._consumer = self.clients.consumer(
                {
                    "group.id": self.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": max(500, session_ms // 6),
                    "fetch.wait.max.ms": 20,
                    # End-of-partition events tell the aligner which partitions have
                    # nothing more to give (see _behind).
                    "enable.partition.eof": True,
                    "log.connection.close": False,
                }
            )
        if self._follows and self._follower is None:
            self._start_follower()
        self._consumer.subscribe(
            list(self.stages),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("engine consuming %s (group %s)", ", ".join(self.stages), self.group_id)

    def close(self) -> None:
        """Checkpoint, leave the group, close the stores."""
        if self._consumer is None:
            return
        try:
            if self._broken is None:
                self.checkpoint()
        finally:
            self._consumer.close()  # revokes: a checkpoint with nothing left to do
            self._consumer = None
            if self._follower is not None:
                self._follower.close()
                self._follower = None
            for table in self.tables.values():
                table.close_all()

    # -- the loop ------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        """Consume one batch (up to ``batch_size``), process it, checkpoint when due.

        Returns the number of messages processed. Rebalance callbacks run inside.
        """
        if self._consumer is None:
            return 0  # not started, or closed
        if self._follower is not None:
            for msg in self._follower.consume(1000, timeout=0):
                if msg.error() is None:
                    self._follow(msg)
        msgs = self._consumer.consume(self.batch_size, timeout=timeout)
        done = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == _PARTITION_EOF:
                    self._at_end.add((msg.topic(), msg.partition()))
                else:
                    log.warning("engine consume error: %s", err)
                continue
            aligner = self._aligners.get(msg.topic())
            if aligner is not None:
                self._at_end.discard((msg.topic(), msg.partition()))
                aligner.add(msg)
                continue
            self._process(msg)
            done += 1
        for topic, aligner in self._aligners.items():
            for msg in aligner.ready(partial(self._behind, topic)):
                self._process(msg)
                done += 1
        if done:
            self.counters.batches += 1
            self.counters.processed += done
        if time.monotonic() - self._last_checkpoint >= self.commit_interval_s:
            self.checkpoint()
        return done

    def _behind(self, topic: str, partition: int) -> bool:
        """Whether *topic[partition]* may have messages at the broker not consumed yet:
        librdkafka has not reported its end (``enable.partition.eof``) since the last
        message consumed from it. An empty partition reports its end at once."""
        return (topic, partition) not in self._at_end

    def _process(self, msg: Any) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        stage = self.stages[topic]
        for table in stage.tables:
            table.partition = partition if table.partitions > 1 else 0
        upstream = control = None
        headers = msg.headers()
        if headers:
            for name, value in headers:
                if name == UPSTREAM_HEADER:
                    upstream = value
                elif name == CONTROL_HEADER:
                    control = value
        value = msg.value()
        self.journal.entries.clear()
        try:
            outs = stage.step(value, topic, partition, offset, upstream, control)
            limit = self.max_message_bytes
            for out in outs:
                if len(out[2] or b"") + len(out[1]) > limit:  # value, key
                    size = len(out[2] or b"") + len(out[1])
                    raise OutputTooLarge(
                        f"an output to {out.topic} of {size} bytes is over the "
                        f"{limit}-byte message limit"
                    )
            self._failures = 0
        except Exception as exc:  # noqa: BLE001 - no message may stop the worker
            outs = [self._poisoned(exc, value, topic, partition, offset)]
        send = self.output.send
        try:
            for out in outs:
                send(out)
        except OutputTooLarge as exc:  # librdkafka's limit is lower than ours
            send(self._poisoned(exc, value, topic, partition, offset))
        self._positions[(topic, partition)] = offset + 1
        per_topic = self.counters.per_topic
        per_topic[topic] = per_topic.get(topic, 0) + 1

    def _poisoned(
        self, exc: Exception, value: bytes | None, topic: str, partition: int, offset: int
    ) -> Out:
        """Undo the message's table writes; its dead letter. Re-raised instead: without a
        dead-letter maker, for an I/O error (a full disk is no poison), and after
        :attr:`max_consecutive_failures` failures in a row (a bug or a broken store would
        otherwise turn every event into a dead letter)."""
        self.journal.rollback()
        self._failures += 1
        if self.dead_letter is None or isinstance(exc, OSError):
            raise exc
        if self._failures > self.max_consecutive_failures:
            raise EngineError(f"{self._failures} messages failed in a row; stopping") from exc
        self.counters.dead_letters += 1
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s[%d]@%d: dead letter: %s", topic, partition, offset, reason)
        return self.dead_letter(reason, value or b"", topic, partition, offset)

    def _follow(self, msg: Any) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.journal.entries.clear()  # a failure undoes this message's writes, no other's
        try:
            outs = self._follows[topic](msg) or []
        except Exception as exc:  # noqa: BLE001 - a bad snapshot must not stop the worker
            outs = [self._poisoned(exc, msg.value(), topic, partition, offset)]
        for out in outs:
            self.output.send(out)

    # -- checkpoints ---------------------------------------------------------------------

    def _flush(self) -> None:
        try:
            self.output.flush_sync()
        except OutputError as exc:
            self._broken = exc
            raise

    def checkpoint(self) -> None:
        """Changelogs out; every output and changelog record acknowledged; markers out
        and acknowledged; local stores; group offsets (``docs/reliability.md``). If a
        message was lost, this raises, and every later checkpoint of this engine raises
        too: nothing may be marked past a lost message, so the worker must stop and
        resume from the last marker."""
        commit.checkpoint(self)

    # -- rebalances ----------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        new: list[tuple[str, int]] = []
        for tp in partitions:
            if tp.topic in self._aligners:
                self._aligners[tp.topic].assign([tp.partition])
            stage = self.stages.get(tp.topic)
            if stage is not None and stage.tables and (tp.topic, tp.partition) not in self._tasks:
                new.append((tp.topic, tp.partition))
        log.info(
            "engine assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing",
        )
        seeks = self._restore(new) if new else {}
        # Resumed from the markers: the next checkpoint commits them (lag monitoring).
        self._positions.update(seeks)
        if seeks:
            consumer.assign(
                [
                    self.clients.tp(tp.topic, tp.partition, seeks[(tp.topic, tp.partition)])
                    if (tp.topic, tp.partition) in seeks
                    else tp
                    for tp in partitions
                ]
            )

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        if self._broken is None:
            self.checkpoint()
        self._release(partitions)

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        # The group went on without us: our writes since the last checkpoint are dropped
        # (their events are redelivered to the new owner from the last marker).
        self._release(partitions)

    def _release(self, partitions: list[Any]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._positions.pop(key, None)
            self._committed.pop(key, None)
            self._tasks.pop(key, None)
            if tp.topic in self._aligners:
                self._aligners[tp.topic].release([tp.partition])
                self._at_end.discard(key)
            stage = self.stages.get(tp.topic)
            if stage is None:
                continue
            for table in stage.tables:
                table.close(tp.partition if table.partitions > 1 else 0)
            if stage.release is not None:
                stage.release(tp.partition)
        if partitions:
            log.info(
                "engine released %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions)
            )

    def _restore(self, assigned: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return restore(self, assigned)
