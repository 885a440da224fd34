"""The worker's batch engine: the hot path of the stream without Faust's per-event cost.

Faust consumed every touchpoint two or three times (``touchpoints``,
``identity-links``, ``person-touchpoints``), one event at a time through aiokafka's
fetcher, the conductor and the stream iterator (about 60 µs per event and hop on the
bench machine before any work), and every table write was a changelog message through
aiokafka. The steps themselves (:class:`~pipeline.agents.identity.IdentityRouter`,
:class:`~pipeline.agents.identity.IdentityOwner`,
:class:`~pipeline.agents.journeys.JourneyStep`) cost about a tenth of that. See
``docs/performance.md``.

The engine runs the same steps, unchanged, on batches consumed with confluent-kafka
(librdkafka), one consumer group for the three hot topics. Messages are processed one
by one in their partition's order, as before; their state lives in
:class:`StateTable` s: one rocksdict store per partition, a compacted changelog topic
per table, and writes kept in memory until the next checkpoint, so a key written many
times between two checkpoints is one changelog message.

**Checkpoint** (every ``commit_interval_s``, when partitions are revoked, and when the
worker stops), in this order:

1. every table's changed keys are produced to its changelog partition;
2. the producer is flushed: every output and changelog message so far is acknowledged;
3. the changed keys and each partition's changelog offset are written to the local
   store (one write batch);
4. the consumed offsets are committed.

So the local store is never ahead of the changelog, and outputs are never behind the
committed offsets. A worker killed at any point resumes from the committed offsets
(at least once, as with Faust) with the changelog's state.

**Restore**, when partitions are assigned: the engine produces a *fence* record to each
changelog partition and reads the changelog from the offset the local store has
reached up to its fence. Reading up to a fence rather than to the high watermark
also works on the embedded Tansu broker, whose high watermark lags behind
multi-record batches (``tests/integration/test_broker_quirks.py``).
"""

from __future__ import annotations

import heapq
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.agents.messages import UPSTREAM_HEADER, Out
from pipeline.agents.output import OutputError, OutputProducer
from pipeline.settings import Settings
from pipeline.topics import CONTROL_HEADER, TopicSpec, ensure_specs

log = logging.getLogger(__name__)

#: A step: (value, topic, partition, offset, upstream header, control header) -> outputs.
Step = Callable[[bytes, str, int, int, bytes | None, bytes | None], list[Out]]

#: Keys of the engine's own bookkeeping start with NUL; the steps' keys never do.
_OFFSET_KEY = b"\x00changelog-offset"
_FENCE_KEY = b"\x00fence"
_MISSING: Any = object()
#: confluent_kafka.KafkaError._PARTITION_EOF (librdkafka's end-of-partition event).
_PARTITION_EOF = -191


class _Aligner:
    """The messages of one topic, handed out in timestamp order across its partitions.

    The journey stage keeps one event-time maximum per upstream ``touchpoints``
    partition; if one partition were processed far ahead of the others, their events
    would arrive late. librdkafka hands out what it fetched partition after partition,
    so the engine buffers this topic's messages and always processes the oldest head
    (by message timestamp; producers write in about event order, and a replay merges
    its files by event time). A partition's own order is never changed. While an
    assigned partition has nothing buffered but is behind the broker's high watermark,
    the others wait for it, at most ``max_wait_s`` at a time (as Kafka Streams does with
    ``max.task.idle.ms``), and not when ``max_buffered`` messages are waiting.
    """

    def __init__(self, max_wait_s: float = 0.5, max_buffered: int = 50_000) -> None:
        self.max_wait_s = max_wait_s
        self.max_buffered = max_buffered
        self.buffers: dict[int, deque[Any]] = {}
        self.count = 0
        self._waiting_since: float | None = None

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.buffers.setdefault(p, deque())

    def release(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.count -= len(self.buffers.pop(p, ()))

    def add(self, msg: Any) -> None:
        self.buffers.setdefault(msg.partition(), deque()).append(msg)
        self.count += 1

    def _blocked(self, behind: Callable[[int], bool]) -> bool:
        if self.count >= self.max_buffered:
            return False
        lagging = [p for p, buf in self.buffers.items() if not buf and behind(p)]
        if not lagging:
            self._waiting_since = None
            return False
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self.max_wait_s

    def ready(self, behind: Callable[[int], bool]) -> Iterator[Any]:
        """The messages that may be processed now, oldest first; *behind(p)* says whether
        partition *p* has messages at the broker that were not fetched yet."""
        if self.count == 0 or self._blocked(behind):
            return
        heap = [(buf[0].timestamp()[1], p) for p, buf in self.buffers.items() if buf]
        heapq.heapify(heap)
        while heap:
            _ts, p = heapq.heappop(heap)
            buf = self.buffers[p]
            yield buf.popleft()
            self.count -= 1
            if buf:
                heapq.heappush(heap, (buf[0].timestamp()[1], p))
            elif self._blocked(behind):
                return


class EngineError(RuntimeError):
    """The engine cannot go on (a changelog cannot be restored, outputs were lost)."""


def engine_group(settings: Settings) -> str:
    """The consumer group of the workers' engines (the worker's Faust app joins none)."""
    return f"{settings.worker_id}-engine"


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class StateTable(MutableMapping[str, Any]):
    """Key-value state of one step, partitioned like its input topic.

    Reads and writes go to :attr:`partition`, which the engine sets before each
    message (the partition of the message, or 0 for a one-partition table). Values
    are JSON; a read decodes a fresh copy, so a caller's changes reach the table
    only through ``table[key] = value``. Reading a partition this worker does not
    hold finds nothing (the identity router on a worker without the identity
    owner's partition); writing one is an error.
    """

    def __init__(self, name: str, changelog: str, partitions: int, root: Path) -> None:
        self.name = name
        self.changelog = changelog
        self.partitions = partitions
        self.root = root / name
        self.partition = 0
        self._dbs: dict[int, Any] = {}
        #: Writes since the last checkpoint: encoded value, or None for a delete.
        self._dirty: dict[int, dict[str, bytes | None]] = {}

    # -- the mapping ---------------------------------------------------------------------

    def _raw(self, key: str) -> bytes | None:
        p = self.partition
        dirty = self._dirty.get(p)
        if dirty is not None and key in dirty:
            return dirty[key]
        db = self._dbs.get(p)
        return None if db is None else db.get(key.encode())

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._raw(key)
        return default if raw is None else json.loads(raw)

    def __getitem__(self, key: str) -> Any:
        raw = self._raw(key)
        if raw is None:
            raise KeyError(key)
        return json.loads(raw)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._raw(key) is not None

    def __setitem__(self, key: str, value: Any) -> None:
        self._writable().setdefault(self.partition, {})[key] = _encode(value)

    def __delitem__(self, key: str) -> None:
        self._writable().setdefault(self.partition, {})[key] = None

    def _writable(self) -> dict[int, dict[str, bytes | None]]:
        if self.partition not in self._dbs:
            raise EngineError(f"table {self.name}: partition {self.partition} is not held here")
        return self._dirty

    def __iter__(self) -> Iterator[str]:
        p = self.partition
        dirty = self._dirty.get(p, {})
        db = self._dbs.get(p)
        if db is not None:
            for raw_key in db.keys():  # noqa: SIM118 - a raw-mode Rdict cannot be iterated
                if raw_key.startswith(b"\x00"):
                    continue
                key = raw_key.decode()
                if key not in dirty:
                    yield key
        yield from (key for key, value in dirty.items() if value is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- partitions, checkpoints, restore ------------------------------------------------

    @property
    def held(self) -> list[int]:
        return sorted(self._dbs)

    def holds(self, partition: int) -> bool:
        return partition in self._dbs

    def open(self, partition: int) -> Any:
        """The local store of *partition* (created when missing)."""
        from rocksdict import Options, Rdict

        db = self._dbs.get(partition)
        if db is None:
            path = self.root / str(partition)
            path.mkdir(parents=True, exist_ok=True)
            db = self._dbs[partition] = Rdict(str(path), options=Options(raw_mode=True))
        return db

    def close(self, partition: int) -> None:
        """Let *partition* go (its unsaved writes must have been checkpointed)."""
        self._dirty.pop(partition, None)
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def stored_offset(self, partition: int) -> int | None:
        raw = self.open(partition).get(_OFFSET_KEY)
        return None if raw is None else int(raw)

    def take_changes(self) -> dict[int, dict[str, bytes | None]]:
        """The writes since the last checkpoint (they stay readable until :meth:`save`)."""
        return {p: dirty for p, dirty in self._dirty.items() if dirty}

    def save(self, partition: int, changes: dict[str, bytes | None], offset: int) -> None:
        """Write *changes* and the changelog *offset* they reach to the local store."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        batch.put(_OFFSET_KEY, str(offset).encode())
        self._dbs[partition].write(batch)
        dirty = self._dirty.get(partition)
        if dirty is changes:
            del self._dirty[partition]

    def close_all(self) -> None:
        for partition in list(self._dbs):
            self.close(partition)


@dataclass
class Stage:
    """A step on one topic, and the tables whose partition follows that topic's."""

    topic: str
    step: Step
    tables: Sequence[StateTable] = ()
    #: Called with a partition of *topic* this worker no longer holds.
    release: Callable[[int], None] | None = None
    #: Process the partitions of *topic* in timestamp order (see :class:`_Aligner`).
    aligned: bool = False


@dataclass
class EngineCounters:
    """What the engine did since the worker started (for logs and metrics)."""

    processed: int = 0
    batches: int = 0
    checkpoints: int = 0
    restored: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self.settings = settings
        self.output = output
        self.batch_size = batch_size
        self.commit_interval_s = commit_interval_s
        self.group_id = engine_group(settings)
        self.root = settings.data_dir / "engine"
        self.stages: dict[str, Stage] = {}
        self.tables: dict[str, StateTable] = {}
        self._aligners: dict[str, _Aligner] = {}
        #: Aligned partitions whose end librdkafka reported since their last message.
        self._at_end: set[tuple[str, int]] = set()
        self._follows: dict[str, Callable[[Any], None]] = {}
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
        table = StateTable(name, f"{self.group_id}-{name}-changelog", partitions, self.root)
        self.tables[name] = table
        return table

    def stage(self, stage: Stage) -> None:
        """Run *stage*; its tables have one partition, or as many as its topic."""
        if stage.topic in self.stages:
            raise EngineError(f"two stages on {stage.topic}")
        self.stages[stage.topic] = stage
        if stage.aligned:
            self._aligners[stage.topic] = _Aligner()

    def follow(self, topic: str, apply: Callable[[Any], None]) -> None:
        """Read every partition of *topic* from its beginning on every worker, outside
        the group and without commits, and call *apply* with each message during
        :meth:`poll` (the model snapshots, which every journey stage needs)."""
        self._follows[topic] = apply

    def _start_follower(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._follower = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"{self.group_id}-follow",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "log.connection.close": False,
            }
        )
        assignment = []
        for topic in self._follows:
            meta = self._follower.list_topics(topic, timeout=15).topics.get(topic)
            if meta is None or meta.error is not None:
                raise EngineError(f"cannot follow topic {topic}: it does not exist")
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._follower.assign(assignment)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Create the changelog topics and subscribe (the assignment comes with polls)."""
        ensure_specs(
            self.settings,
            [
                TopicSpec(t.changelog, t.partitions, "state", compacted=True)
                for t in self.tables.values()
            ],
        )
        if self._consumer is None:
            from confluent_kafka import Consumer

            session_ms = int(self.settings.session_timeout_s * 1000)
            self._consumer = Consumer(
                {
                    **self.settings.kafka_config(),
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
                    self._follows[msg.topic()](msg)
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
        send = self.output.send
        for out in stage.step(msg.value(), topic, partition, offset, upstream, control):
            send(out)
        self._positions[(topic, partition)] = offset + 1
        per_topic = self.counters.per_topic
        per_topic[topic] = per_topic.get(topic, 0) + 1

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Changelogs out, every output acknowledged, local stores, then offsets.

        If an output or changelog message was lost, this raises, and every later
        checkpoint of this engine raises too: nothing may be committed past a lost
        message, so the worker must stop and resume from the last commit.
        """
        if self._broken is not None:
            raise EngineError("a message was lost earlier; nothing more is committed") from (
                self._broken
            )
        self._last_checkpoint = time.monotonic()
        pending: list[tuple[StateTable, int, dict[str, bytes | None]]] = []
        reached: dict[tuple[str, int], int] = {}

        def note(err: Any, msg: Any) -> None:
            key = (msg.topic(), msg.partition())
            reached[key] = max(reached.get(key, -1), msg.offset())

        for table in self.tables.values():
            for partition, changes in table.take_changes().items():
                for key, value in changes.items():
                    self.output.send(
                        Out(table.changelog, key.encode(), value, partition=partition), note
                    )
                pending.append((table, partition, changes))
        offsets = {k: v for k, v in self._positions.items() if self._committed.get(k) != v}
        if not pending and not offsets:
            return
        try:
            self.output.flush_sync()
        except OutputError as exc:
            self._broken = exc
            raise
        for table, partition, changes in pending:
            offset = reached.get((table.changelog, partition))
            if offset is None:
                raise EngineError(f"no changelog offset for {table.changelog}[{partition}]")
            table.save(partition, changes, offset)
        if offsets and self._consumer is not None:
            from confluent_kafka import TopicPartition

            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
            self._committed.update(offsets)
        self.counters.checkpoints += 1

    # -- rebalances ----------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        wanted: list[tuple[StateTable, int]] = []
        for tp in partitions:
            if tp.topic in self._aligners:
                self._aligners[tp.topic].assign([tp.partition])
            stage = self.stages.get(tp.topic)
            if stage is None:
                continue
            for table in stage.tables:
                p = tp.partition if table.partitions > 1 else 0
                if p not in table.held:
                    wanted.append((table, p))
        log.info(
            "engine assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing",
        )
        if wanted:
            self._restore(wanted)

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        if self._broken is None:
            self.checkpoint()
        self._release(partitions)

    def _on_lost(self, _consumer: Any, partitions: list[Any]) -> None:
        # The group went on without us: our writes since the last checkpoint are dropped
        # (their events are redelivered to the new owner from the committed offsets).
        self._release(partitions)

    def _release(self, partitions: list[Any]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._positions.pop(key, None)
            self._committed.pop(key, None)
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

    def _restore(self, wanted: list[tuple[StateTable, int]], timeout_s: float = 300.0) -> None:
        """Bring each (table, partition) up to its changelog: from the local store's
        offset to a fence record produced now."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        started = time.monotonic()
        fences: dict[tuple[str, int], int] = {}

        def fenced(err: Any, msg: Any) -> None:
            fences[(msg.topic(), msg.partition())] = msg.offset()

        for table, p in wanted:
            self.output.send(Out(table.changelog, _FENCE_KEY, None, partition=p), fenced)
        self.output.flush_sync()
        by_tp = {(t.changelog, p): t for t, p in wanted}
        assignment = []
        for table, p in wanted:
            stored = table.stored_offset(p)
            start = OFFSET_BEGINNING if stored is None else stored + 1
            if stored is not None and stored >= fences[(table.changelog, p)]:
                log.warning("%s[%d]: local store ahead of changelog; rebuilding", table.name, p)
                table.close(p)
                shutil.rmtree(table.root / str(p), ignore_errors=True)
                table.open(p)
                start = OFFSET_BEGINNING
            assignment.append(TopicPartition(table.changelog, p, start))
        reader = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"{self.group_id}-restore",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log.connection.close": False,
            }
        )
        left = set(by_tp)
        changes: dict[tuple[str, int], dict[str, bytes | None]] = {k: {} for k in by_tp}
        records = 0
        try:
            reader.assign(assignment)
            while left:
                if time.monotonic() - started > timeout_s:
                    raise EngineError(
                        "changelog restore did not reach its fence within "
                        f"{timeout_s:.0f} s: {', '.join(f'{t}[{p}]' for t, p in sorted(left))}"
                    )
                for msg in reader.consume(10_000, timeout=0.5):
                    if msg.error() is not None:
                        log.warning("changelog restore: %s", msg.error())
                        continue
                    key = (msg.topic(), msg.partition())
                    if key not in left:
                        continue
                    if (msg.offset() or 0) >= fences[key]:
                        left.discard(key)
                        reader.pause([TopicPartition(*key)])
                        continue
                    raw_key = msg.key() or b""
                    if raw_key.startswith(b"\x00"):
                        continue
                    changes[key][raw_key.decode()] = msg.value()
                    records += 1
        finally:
            reader.close()
        for (changelog, p), table in by_tp.items():
            table.open(p)
            table.save(p, changes[(changelog, p)], fences[(changelog, p)])
        self.counters.restored += records
        log.info(
            "engine restored %d changelog records into %d partitions in %.1f s",
            records,
            len(wanted),
            time.monotonic() - started,
        )
